//! An endpoint's `auth` (CONTRACT section 12): how the sender proves itself
//! to a receiver that cannot check an HMAC (one behind a corporate gateway).
//!
//! - `basic`: `Authorization: Basic base64(username:password)` on each POST.
//! - `oauth2_client_credentials`: `Authorization: Bearer <token>`, the token
//!   fetched from `token_url` with the client credentials grant (RFC 6749
//!   section 4.4), the client authenticating with HTTP Basic (section
//!   2.3.1). The fetch, its cache and its retry after a 401 are the
//!   sender's; what a token request and a token answer are is here.
//!
//! The password and the client secret are write-only: stored sealed, used
//! by the sender, never shown. [`AuthInfo`] is what reads show.

use crate::endpoint::EndpointUrlPolicy;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest username, password, client id or client secret, in characters.
pub const MAX_AUTH_FIELD_LEN: usize = 1024;
/// Longest `scope`, in characters.
pub const MAX_SCOPE_LEN: usize = 1024;
/// How long a token is kept when its answer gives no `expires_in`.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// The longest a token is kept, whatever its `expires_in` says.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// Longest access token accepted from a token endpoint, in bytes.
pub const MAX_ACCESS_TOKEN_LEN: usize = 16 * 1024;

/// How the sender authenticates to an endpoint. `Debug` shows no password
/// or client secret.
#[derive(Clone, PartialEq, Eq)]
pub enum EndpointAuth {
    Basic { username: String, password: String },
    OAuth2ClientCredentials(OAuth2Client),
}

/// An OAuth 2.0 client of the client credentials grant.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2Client {
    /// Where tokens come from (checked as endpoint URLs are).
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Space-separated scopes to ask for; `None`: the server's default.
    pub scope: Option<String>,
}

impl std::fmt::Debug for EndpointAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EndpointAuth({:?}, secrets ***)", self.info())
    }
}

/// What reads show of an endpoint's `auth`: its type and the parts that
/// are not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AuthInfo {
    #[serde(rename = "basic")]
    Basic { username: String },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        scope: Option<String>,
    },
}

impl AuthInfo {
    /// The scheme of the `Authorization` header it makes.
    pub fn scheme(&self) -> &'static str {
        match self {
            AuthInfo::Basic { .. } => "Basic",
            AuthInfo::OAuth2ClientCredentials { .. } => "Bearer",
        }
    }
}

/// Why an `auth` object was refused. Names the field; never holds a
/// password or a client secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);

impl AuthError {
    fn new(message: impl Into<String>) -> AuthError {
        AuthError(message.into())
    }
}

const TYPES: &str = "\"basic\" or \"oauth2_client_credentials\"";

/// A string field of `auth`: present, a string, not empty, no control
/// characters, at most `max` characters. The error names the field and never
/// shows its value (a password, a client secret).
fn text_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<String, AuthError> {
    let value = match object.get(name) {
        None | Some(Value::Null) => return Err(AuthError::new(format!("auth.{name} is required"))),
        Some(Value::String(s)) => s,
        Some(_) => return Err(AuthError::new(format!("auth.{name} must be a string"))),
    };
    if value.is_empty() {
        return Err(AuthError::new(format!("auth.{name} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(AuthError::new(format!(
            "auth.{name} is longer than {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(AuthError::new(format!(
            "auth.{name} has a control character"
        )));
    }
    Ok(value.clone())
}

/// Whether `scope` is space-separated RFC 6749 scope tokens.
fn is_scope(scope: &str) -> bool {
    scope.split(' ').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    })
}

impl EndpointAuth {
    /// Reads an `auth` object; `token_url` must pass `policy`, as endpoint
    /// URLs do (the sender's SSRF guard checks it again when it connects).
    pub fn parse(value: &Value, policy: &EndpointUrlPolicy) -> Result<EndpointAuth, AuthError> {
        let Value::Object(object) = value else {
            return Err(AuthError::new(format!(
                "auth must be an object with a \"type\": {TYPES}, or null for none"
            )));
        };
        let kind = match object.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(AuthError::new(format!("auth.type must be {TYPES}"))),
            None => return Err(AuthError::new(format!("auth.type is required: {TYPES}"))),
        };
        let allowed: &[&str] = match kind {
            "basic" => &["type", "username", "password"],
            "oauth2_client_credentials" => {
                &["type", "token_url", "client_id", "client_secret", "scope"]
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(AuthError::new(format!(
                    "auth.type {shown:?} is not supported: {TYPES}"
                )));
            }
        };
        if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(64).collect();
            return Err(AuthError::new(format!(
                "auth: unknown field {shown:?} for type {kind:?} (expected {})",
                allowed[1..].join(", ")
            )));
        }
        match kind {
            "basic" => {
                let username = text_field(object, "username", MAX_AUTH_FIELD_LEN)?;
                if username.contains(':') {
                    return Err(AuthError::new(
                        "auth.username must not contain ':' (HTTP Basic cannot carry it)",
                    ));
                }
                let password = text_field(object, "password", MAX_AUTH_FIELD_LEN)?;
                Ok(EndpointAuth::Basic { username, password })
            }
            _ => {
                let token_url = text_field(object, "token_url", crate::endpoint::MAX_URL_LEN)?;
                let token_url = policy
                    .check(token_url.trim())
                    .map_err(|e| AuthError::new(format!("auth.token_url: {e}")))?
                    .to_string();
                let client_id = text_field(object, "client_id", MAX_AUTH_FIELD_LEN)?;
                let client_secret = text_field(object, "client_secret", MAX_AUTH_FIELD_LEN)?;
                let scope = match object.get("scope") {
                    None | Some(Value::Null) => None,
                    Some(_) => {
                        let scope = text_field(object, "scope", MAX_SCOPE_LEN)?;
                        if !is_scope(&scope) {
                            return Err(AuthError::new(
                                "auth.scope must be scope names separated by single spaces \
                                 (printable ASCII, no '\"' or '\\')",
                            ));
                        }
                        Some(scope)
                    }
                };
                Ok(EndpointAuth::OAuth2ClientCredentials(OAuth2Client {
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                }))
            }
        }
    }

    /// What reads show of it.
    pub fn info(&self) -> AuthInfo {
        match self {
            EndpointAuth::Basic { username, .. } => AuthInfo::Basic {
                username: username.clone(),
            },
            EndpointAuth::OAuth2ClientCredentials(c) => AuthInfo::OAuth2ClientCredentials {
                token_url: c.token_url.clone(),
                client_id: c.client_id.clone(),
                scope: c.scope.clone(),
            },
        }
    }

    /// The `Authorization` value of a `basic` auth; `None` for OAuth 2.0,
    /// whose token the sender fetches.
    pub fn basic_authorization(&self) -> Option<String> {
        match self {
            EndpointAuth::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
            EndpointAuth::OAuth2ClientCredentials(_) => None,
        }
    }

    /// A digest of everything the credentials are: a cached token belongs
    /// to the credentials it was fetched with, so a changed `auth` never
    /// uses a token of the one before.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        match self {
            EndpointAuth::Basic { username, password } => {
                part("basic");
                part(username);
                part(password);
            }
            EndpointAuth::OAuth2ClientCredentials(c) => {
                part("oauth2_client_credentials");
                part(&c.token_url);
                part(&c.client_id);
                part(&c.client_secret);
                part(c.scope.as_deref().unwrap_or(""));
            }
        }
        h.finalize().into()
    }
}

impl OAuth2Client {
    /// The body of the token request: `grant_type=client_credentials`, and
    /// the scope when there is one (`application/x-www-form-urlencoded`).
    pub fn token_request_body(&self) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        form.finish()
    }

    /// The token request's `Authorization`: HTTP Basic with the client id
    /// and secret, each form-urlencoded first (RFC 6749 section 2.3.1).
    pub fn client_authorization(&self) -> String {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!(
                "{}:{}",
                encode(&self.client_id),
                encode(&self.client_secret)
            ))
        )
    }
}

/// A bearer token as a token endpoint answered it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    /// Seconds it lasts from the answer: its `expires_in`, or
    /// [`DEFAULT_TOKEN_LIFETIME_SECS`] without one, at most
    /// [`MAX_TOKEN_LIFETIME_SECS`].
    pub lifetime_secs: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(***, {} s)", self.lifetime_secs)
    }
}

impl AccessToken {
    /// The `Authorization` value that carries it.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// How long before its end a token is fetched again: a tenth of its
    /// life, at most a minute, so a token never expires on the way.
    pub fn refresh_margin_secs(&self) -> f64 {
        (self.lifetime_secs as f64 / 10.0).min(60.0)
    }
}

/// A short, log-safe text from a token endpoint's answer (its OAuth
/// `error` code): printable ASCII, at most 64 characters.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    (!code.is_empty()).then_some(code)
}

/// Reads a token endpoint's answer (`status`, body): a 2xx JSON object
/// with `access_token`, `token_type` `Bearer` (any case; absent is taken
/// as bearer) and maybe `expires_in` (a number, or a string of digits).
/// The error is the reason an attempt records after `auth_failed: `; it
/// never holds the token or the body beyond the OAuth `error` code.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, String> {
    if !(200..300).contains(&status) {
        return Err(match error_code(body) {
            Some(code) => format!("the token endpoint answered HTTP {status} ({code})"),
            None => format!("the token endpoint answered HTTP {status}"),
        });
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| "the token endpoint's answer is not JSON".to_string())?;
    let token = match v.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err("the token endpoint's answer has no access_token".to_string()),
    };
    if token.len() > MAX_ACCESS_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err("the token endpoint's access_token cannot be sent in a header".to_string());
    }
    match v.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => {
            return Err("the token endpoint's token_type is not Bearer".to_string());
        }
    }
    let expires_in = match v.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let lifetime_secs = match expires_in {
        Some(s) if s.is_finite() && s > 0.0 => (s as u64).min(MAX_TOKEN_LIFETIME_SECS),
        Some(_) => 0,
        None => DEFAULT_TOKEN_LIFETIME_SECS,
    };
    Ok(AccessToken {
        token: token.clone(),
        lifetime_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LOCAL: EndpointUrlPolicy = EndpointUrlPolicy::LOCAL;
    const PROD: EndpointUrlPolicy = EndpointUrlPolicy::PRODUCTION;

    fn err(v: Value, policy: &EndpointUrlPolicy) -> String {
        EndpointAuth::parse(&v, policy).unwrap_err().to_string()
    }

    #[test]
    fn basic_auth_makes_its_header_and_shows_no_password() {
        let auth = EndpointAuth::parse(
            &json!({"type":"basic","username":"Aladdin","password":"open sesame"}),
            &PROD,
        )
        .unwrap();
        // RFC 7617's own example.
        assert_eq!(
            auth.basic_authorization().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(
            serde_json::to_value(auth.info()).unwrap(),
            json!({"type":"basic","username":"Aladdin"})
        );
        assert!(!format!("{auth:?}").contains("sesame"));
        assert_eq!(auth.info().scheme(), "Basic");
    }

    #[test]
    fn oauth2_is_read_and_shown_without_its_secret() {
        let auth = EndpointAuth::parse(
            &json!({"type":"oauth2_client_credentials","token_url":"https://auth.example.com/token",
                    "client_id":"c1","client_secret":"s3cr3t","scope":"hooks:write read"}),
            &PROD,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(auth.info()).unwrap(),
            json!({"type":"oauth2_client_credentials","token_url":"https://auth.example.com/token",
                   "client_id":"c1","scope":"hooks:write read"})
        );
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        assert_eq!(auth.basic_authorization(), None);
        let EndpointAuth::OAuth2ClientCredentials(c) = &auth else {
            panic!()
        };
        assert_eq!(
            c.token_request_body(),
            "grant_type=client_credentials&scope=hooks%3Awrite+read"
        );
        // base64("c1:s3cr3t")
        assert_eq!(c.client_authorization(), "Basic YzE6czNjcjN0");
        let back: AuthInfo = serde_json::from_value(serde_json::to_value(auth.info()).unwrap())
            .expect("the shown form reads back");
        assert_eq!(back, auth.info());
        // The fingerprint follows every credential.
        let mut other = c.clone();
        other.client_secret = "changed".into();
        assert_ne!(
            EndpointAuth::OAuth2ClientCredentials(other).fingerprint(),
            auth.fingerprint()
        );
    }

    #[test]
    fn bad_auth_objects_are_refused_naming_the_field_never_the_secret() {
        let secret = "never-echo-me";
        assert!(err(json!("basic"), &PROD).contains("auth must be an object"));
        assert!(err(json!({}), &PROD).contains("auth.type is required"));
        assert!(err(json!({"type":"digest"}), &PROD).contains("not supported"));
        assert!(err(json!({"type":"basic","password":secret}), &PROD)
            .contains("auth.username is required"));
        assert!(err(json!({"type":"basic","username":"u"}), &PROD)
            .contains("auth.password is required"));
        assert!(err(
            json!({"type":"basic","username":"a:b","password":secret}),
            &PROD
        )
        .contains("':'"));
        for bad in [
            json!(5),
            json!(""),
            json!("a\nb"),
            json!("x".repeat(MAX_AUTH_FIELD_LEN + 1)),
        ] {
            let m = err(json!({"type":"basic","username":"u","password":bad}), &PROD);
            assert!(m.starts_with("auth.password"), "{m}");
        }
        let m = err(
            json!({"type":"basic","username":"u","password":secret,"extra":secret}),
            &PROD,
        );
        assert!(m.contains("\"extra\"") && !m.contains(secret), "{m}");
        let oauth = |f: Value| {
            let mut o = json!({"type":"oauth2_client_credentials","token_url":"https://a.example.com/t",
                "client_id":"c","client_secret":secret});
            for (k, v) in f.as_object().unwrap() {
                o[k] = v.clone();
            }
            o
        };
        assert!(EndpointAuth::parse(&oauth(json!({})), &PROD).is_ok());
        assert!(EndpointAuth::parse(&oauth(json!({"scope": null})), &PROD).is_ok());
        for (fields, want) in [
            (
                json!({"token_url": "http://a.example.com/t"}),
                "auth.token_url: url must use https",
            ),
            (
                json!({"token_url": "https://127.0.0.1/t"}),
                "auth.token_url: url points to a private",
            ),
            (
                json!({"token_url": "https://169.254.169.254/latest"}),
                "auth.token_url: url points to a private",
            ),
            (json!({"token_url": "not a url"}), "auth.token_url"),
            (json!({"client_id": ""}), "auth.client_id must not be empty"),
            (
                json!({"client_secret": 7}),
                "auth.client_secret must be a string",
            ),
            (json!({"scope": "a  b"}), "auth.scope"),
            (json!({"scope": "a\"b"}), "auth.scope"),
            (json!({"scope": ""}), "auth.scope must not be empty"),
            (json!({"username": "u"}), "unknown field \"username\""),
        ] {
            let m = err(oauth(fields.clone()), &PROD);
            assert!(m.starts_with(want) || m.contains(want), "{fields}: {m}");
            assert!(!m.contains(secret), "{m}");
        }
        // Local development may fetch tokens from loopback.
        assert!(
            EndpointAuth::parse(&oauth(json!({"token_url": "http://127.0.0.1:9/t"})), &LOCAL)
                .is_ok()
        );
    }

    #[test]
    fn token_answers_are_read_as_rfc_6749_says() {
        let ok = |body: Value| parse_token_response(200, body.to_string().as_bytes());
        let t = ok(json!({"access_token":"tok","token_type":"Bearer","expires_in":3600})).unwrap();
        assert_eq!(t.token, "tok");
        assert_eq!(t.lifetime_secs, 3600);
        assert_eq!(t.authorization(), "Bearer tok");
        assert_eq!(t.refresh_margin_secs(), 60.0);
        assert_eq!(
            ok(json!({"access_token":"t","token_type":"bearer","expires_in":"20"}))
                .unwrap()
                .lifetime_secs,
            20
        );
        assert_eq!(
            ok(json!({"access_token":"t","expires_in":20}))
                .unwrap()
                .refresh_margin_secs(),
            2.0
        );
        assert_eq!(
            ok(json!({"access_token":"t"})).unwrap().lifetime_secs,
            DEFAULT_TOKEN_LIFETIME_SECS
        );
        assert_eq!(
            ok(json!({"access_token":"t","expires_in":1e12}))
                .unwrap()
                .lifetime_secs,
            MAX_TOKEN_LIFETIME_SECS
        );
        assert_eq!(
            ok(json!({"access_token":"t","expires_in":0}))
                .unwrap()
                .lifetime_secs,
            0
        );
        assert!(ok(json!({"access_token":"t","token_type":"mac"}))
            .unwrap_err()
            .contains("Bearer"));
        assert!(ok(json!({"token_type":"Bearer"}))
            .unwrap_err()
            .contains("no access_token"));
        assert!(ok(json!({"access_token":"a\r\nb"}))
            .unwrap_err()
            .contains("cannot be sent"));
        assert!(parse_token_response(200, b"<html>")
            .unwrap_err()
            .contains("not JSON"));
        assert_eq!(
            parse_token_response(
                401,
                br#"{"error":"invalid_client","error_description":"secret s3cr3t wrong"}"#
            )
            .unwrap_err(),
            "the token endpoint answered HTTP 401 (invalid_client)"
        );
        assert_eq!(
            parse_token_response(503, b"down").unwrap_err(),
            "the token endpoint answered HTTP 503"
        );
        assert!(!format!("{t:?}").contains("tok"));
    }
}
