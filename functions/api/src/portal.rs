//! The org portal: `POST /v1/portal-sessions` mints a short-lived link, and
//! the page it opens (`GET /portal` and its assets) is served from here.
//!
//! A portal session is a JWT that this API signs itself, with its own issuer,
//! holding `org_id`, `scope: webhooks:manage` and `token_use: portal`, and
//! nothing more: it cannot publish events, act for another org, or mint
//! further sessions, and it stops working at `exp` (checked here too, with
//! no leeway). It travels in the URL fragment (`/portal#token=...`), which
//! browsers never send, so it never reaches a server or access log.
//!
//! - In AWS it is signed with RS256 by a key of the stack's own; the API
//!   publishes the issuer's OpenID discovery document and JWKS under
//!   `/portal-auth/`, and the template trusts that issuer in a second JWT
//!   authorizer on `/portal-api/v1/{proxy+}`, which the page calls. Requests
//!   there are served exactly like `/v1/...`.
//! - In `webhooks dev` it is signed with HS256 by the `--jwt-secret`, which
//!   the local gateway already verifies.

use crate::auth::{Caller, SCOPE_MANAGE};
use crate::errors::ApiError;
use crate::input::{json_object, optional, present, BodyRule};
use crate::response::json;
use crate::Api;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json as json_value, Map, Value};

/// Default lifetime of a portal session.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// Longest lifetime of a portal session.
pub const MAX_TTL_SECONDS: i64 = 86_400;
/// The `aud` claim of portal tokens (the portal authorizer's audience).
pub const AUDIENCE: &str = "webhooks-portal";
/// The `token_use` claim that marks a portal token.
pub const TOKEN_USE: &str = "portal";
/// Path prefix the page calls the API under; same routes as `/v1`.
pub const API_PREFIX: &str = "/portal-api";
/// Path prefix of the issuer's discovery document and keys.
pub const AUTH_PREFIX: &str = "/portal-auth";

const INDEX_HTML: &str = include_str!("../portal/index.html");
const APP_JS: &str = include_str!("../portal/app.js");
const APP_CSS: &str = include_str!("../portal/app.css");
const ICON_SVG: &str = include_str!("../portal/icon.svg");

/// The page's Content-Security-Policy: everything from this origin only,
/// no inline script or style, no plugins, no form posts elsewhere, and no
/// page of any origin may frame it (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'none'; object-src 'none'; frame-ancestors 'none'";

/// What signs portal tokens.
enum Signer {
    /// Shared secret (`webhooks dev`: its `--jwt-secret`).
    Hs256(EncodingKey),
    /// The stack's RSA key; the public half is published as a JWKS.
    Rs256 { key: EncodingKey, jwk: Box<Jwk> },
}

/// Mints portal sessions.
pub struct PortalIssuer {
    signer: Signer,
    issuer: String,
    base_url: Option<String>,
}

impl std::fmt::Debug for PortalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalIssuer")
            .field("issuer", &self.issuer)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Why the portal signing key cannot be used; never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("the portal signing key is not an RSA private key in PEM")]
    NotRsaPem,
    #[error("the portal signing key cannot be encoded")]
    Unencodable,
    #[error("the portal signing key has no usable public key")]
    NoPublicKey,
}

impl PortalIssuer {
    /// Signs with HS256 and `secret` (the local gateway's secret).
    pub fn hs256(secret: &[u8], issuer: &str) -> Self {
        PortalIssuer {
            signer: Signer::Hs256(EncodingKey::from_secret(secret)),
            issuer: issuer.to_string(),
            base_url: None,
        }
    }

    /// Signs with RS256 and an RSA private key in PEM (PKCS#1 or PKCS#8).
    /// The error never contains the key.
    pub fn rs256_pem(pem: &str, issuer: &str) -> Result<Self, SigningKeyError> {
        use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
        use rsa::pkcs8::DecodePrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem.trim())
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem.trim()))
            .map_err(|_| SigningKeyError::NotRsaPem)?;
        let der = private
            .to_pkcs1_der()
            .map_err(|_| SigningKeyError::Unencodable)?;
        let key = EncodingKey::from_rsa_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)
            .map_err(|_| SigningKeyError::NoPublicKey)?;
        jwk.common.key_id = Some(key_id(&jwk));
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        Ok(PortalIssuer {
            signer: Signer::Rs256 {
                key,
                jwk: Box::new(jwk),
            },
            issuer: issuer.trim_end_matches('/').to_string(),
            base_url: None,
        })
    }

    /// Links point at `base_url` (scheme and host, no trailing slash)
    /// rather than at the request's own host.
    pub fn with_base_url(mut self, base_url: Option<String>) -> Self {
        self.base_url = base_url
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        self
    }

    /// The `iss` of portal tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A signed portal token for `org_id`, valid until `expires_at`.
    pub fn token(&self, org_id: &str, now: i64, expires_at: i64) -> Result<String, ApiError> {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(self.issuer.as_str()));
        claims.insert("sub".into(), Value::from(format!("portal:{org_id}")));
        claims.insert("aud".into(), Value::from(AUDIENCE));
        claims.insert("org_id".into(), Value::from(org_id));
        claims.insert("scope".into(), Value::from(SCOPE_MANAGE));
        claims.insert("token_use".into(), Value::from(TOKEN_USE));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("nbf".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(expires_at));
        let (header, key) = match &self.signer {
            Signer::Hs256(key) => (Header::new(Algorithm::HS256), key),
            Signer::Rs256 { key, jwk } => {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = jwk.common.key_id.clone();
                (header, key)
            }
        };
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
            tracing::error!(error = %e, "could not sign a portal token");
            ApiError::Backend(webhooks_http::BackendFailure::Internal)
        })
    }

    /// The public keys, when tokens are signed with RS256.
    pub fn jwks(&self) -> Option<JwkSet> {
        match &self.signer {
            Signer::Rs256 { jwk, .. } => Some(JwkSet {
                keys: vec![jwk.as_ref().clone()],
            }),
            Signer::Hs256(_) => None,
        }
    }
}

/// The key's RFC 7638 thumbprint (base64url SHA-256 of its canonical JWK),
/// so a new key gets a new id and verifiers fetch it.
fn key_id(jwk: &Jwk) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => {
            let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, rsa.e, rsa.n);
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(canonical.as_bytes()))
        }
        _ => "portal".to_string(),
    }
}

/// The secret `webhooks dev` signs portal tokens with; never printed.
#[derive(Clone)]
pub struct DevSigningSecret(pub String);

impl std::fmt::Debug for DevSigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSigningSecret(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    #[serde(default, deserialize_with = "present")]
    ttl_seconds: Option<Box<RawValue>>,
}

/// `POST /v1/portal-sessions` -> 201 `{url, expires_at}`: a session that
/// ends after `ttl_seconds`, or with the caller's own token if sooner.
pub(crate) async fn create_session(
    api: &Api,
    caller: &Caller,
    req: &Request,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: SessionBody = json_object(body, BodyRule::Optional)?;
    let ttl = ttl_seconds(body.ttl_seconds.as_deref())?;
    if is_portal_token(req) {
        return Err(ApiError::Forbidden(
            "a portal session cannot open another portal session".into(),
        ));
    }
    let Some(issuer) = api.portal.as_deref() else {
        return Err(ApiError::not_found("the portal is not configured here"));
    };
    let now = chrono::Utc::now().timestamp();
    let expires_at = session_end(now, ttl, caller.expires_at)?;
    let token = issuer.token(&caller.org_id, now, expires_at)?;
    let base = issuer
        .base_url
        .clone()
        .unwrap_or_else(|| request_origin(req));
    let expires = chrono::DateTime::from_timestamp(expires_at, 0)
        .map(webhooks_domain::time::rfc3339)
        .unwrap_or_default();
    tracing::info!(org_id = %caller.org_id, ttl_seconds = expires_at - now, "portal session opened");
    let mut response = json(
        StatusCode::CREATED,
        &json_value!({ "url": format!("{base}/portal#token={token}"), "expires_at": expires }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// When a session opened at `now` for `ttl` seconds ends: never after the
/// `exp` of the caller's own token, which must still be valid.
fn session_end(now: i64, ttl: i64, caller_expires_at: Option<i64>) -> Result<i64, ApiError> {
    let end = match caller_expires_at {
        Some(exp) if exp <= now => {
            return Err(ApiError::Unauthorized(
                "the bearer token has expired".into(),
            ))
        }
        Some(exp) => exp.min(now + ttl),
        None => now + ttl,
    };
    Ok(end)
}

/// The requested lifetime: [`DEFAULT_TTL_SECONDS`], or 1 to [`MAX_TTL_SECONDS`].
fn ttl_seconds(raw: Option<&RawValue>) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "ttl_seconds must be an integer from 1 to {MAX_TTL_SECONDS}"
        ))
    };
    match optional::<Option<Value>>("ttl_seconds", raw)?.flatten() {
        None => Ok(DEFAULT_TTL_SECONDS),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=MAX_TTL_SECONDS).contains(n))
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// `scheme://host` of the request, for links when no base URL is configured.
fn request_origin(req: &Request) -> String {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("127.0.0.1:8080");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// The authorizer's claims of the request, if any.
fn claims(req: &Request) -> Option<&std::collections::HashMap<String, String>> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| &j.claims),
        _ => None,
    }
}

/// Whether the request carries a portal token.
fn is_portal_token(req: &Request) -> bool {
    claims(req).is_some_and(|c| c.get("token_use").map(String::as_str) == Some(TOKEN_USE))
}

/// 401 when the request carries a portal token past its `exp` (no leeway,
/// whatever the authorizer allowed).
pub(crate) fn check_expiry(req: &Request) -> Result<(), ApiError> {
    if !is_portal_token(req) {
        return Ok(());
    }
    let exp = claims(req)
        .and_then(|c| c.get("exp"))
        .and_then(|e| e.trim().parse::<f64>().ok());
    match exp {
        Some(exp) if exp > chrono::Utc::now().timestamp() as f64 => Ok(()),
        _ => Err(ApiError::Unauthorized(
            "the portal session has expired; open a new one".into(),
        )),
    }
}

/// The API path a request addresses: `/portal-api/v1/...` is `/v1/...`.
pub(crate) fn api_path(path: &str) -> &str {
    match path.strip_prefix(API_PREFIX) {
        Some(rest) if rest.starts_with("/v1/") || rest == "/v1" => rest,
        _ => path,
    }
}

/// The public portal resources (the page, its assets, the issuer's
/// discovery document and keys); `None` for every other path.
pub(crate) fn public_resource(api: &Api, req: &Request) -> Option<Response<Body>> {
    let path = req.uri().path();
    let is_portal = path == "/portal" || path.starts_with("/portal/");
    let is_auth = path.starts_with("/portal-auth/");
    if !is_portal && !is_auth {
        return None;
    }
    if req.method() != lambda_http::http::Method::GET && req.method() != "HEAD" {
        return Some(ApiError::MethodNotAllowed(vec!["GET", "HEAD"]).into_response());
    }
    if is_auth {
        return Some(auth_resource(api, path));
    }
    let (content_type, body) = match path {
        "/portal" => ("text/html; charset=utf-8", INDEX_HTML),
        "/portal/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/portal/app.css" => ("text/css; charset=utf-8", APP_CSS),
        "/portal/icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => return Some(ApiError::not_found(format!("no portal file {path}")).into_response()),
    };
    let mut response = Response::new(Body::Text(body.to_string()));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // For browsers older than frame-ancestors.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

fn auth_resource(api: &Api, path: &str) -> Response<Body> {
    let Some(issuer) = api.portal.as_deref() else {
        return ApiError::not_found("the portal issuer is not configured here").into_response();
    };
    let Some(jwks) = issuer.jwks() else {
        return ApiError::not_found("portal tokens here are not signed with a public key")
            .into_response();
    };
    let mut response = match path.strip_prefix(AUTH_PREFIX) {
        Some("/.well-known/openid-configuration") => json(
            StatusCode::OK,
            &json_value!({
                "issuer": issuer.issuer,
                "jwks_uri": format!("{}/.well-known/jwks.json", issuer.issuer),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }),
        ),
        Some("/.well-known/jwks.json") => json(StatusCode::OK, &jwks),
        _ => return ApiError::not_found(format!("no such document {path}")).into_response(),
    };
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{AlgorithmParameters, CommonParameters, RSAKeyParameters, RSAKeyType};

    #[test]
    fn key_ids_are_rfc_7638_thumbprints() {
        // The example of RFC 7638, section 3.1.
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
                e: "AQAB".into(),
            }),
        };
        assert_eq!(key_id(&jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn api_paths_under_the_portal_prefix_are_v1_paths() {
        assert_eq!(api_path("/portal-api/v1/endpoints"), "/v1/endpoints");
        assert_eq!(api_path("/portal-api/v1"), "/v1");
        assert_eq!(api_path("/portal-api/healthz"), "/portal-api/healthz");
        assert_eq!(
            api_path("/portal-apix/v1/endpoints"),
            "/portal-apix/v1/endpoints"
        );
        assert_eq!(api_path("/v1/endpoints"), "/v1/endpoints");
    }

    #[test]
    fn a_session_ends_with_the_token_that_opened_it_if_sooner() {
        assert_eq!(session_end(1000, 3600, None), Ok(4600));
        assert_eq!(session_end(1000, 3600, Some(1600)), Ok(1600));
        assert_eq!(session_end(1000, 60, Some(9000)), Ok(1060));
        assert_eq!(session_end(1000, 60, Some(1060)), Ok(1060));
        for expired in [1000, 999, 0, i64::MIN] {
            assert_eq!(
                session_end(1000, 60, Some(expired)).map_err(|e| e.code()),
                Err("unauthorized")
            );
        }
    }

    #[test]
    fn the_dev_secret_is_never_printed() {
        let s = DevSigningSecret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
