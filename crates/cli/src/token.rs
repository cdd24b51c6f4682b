//! Tokens for `webhooks dev`: HS256 JWTs carrying the claims API Gateway's
//! JWT authorizer hands to the API (`org_id`, `scope`, `role`).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--org must not be empty")]
    EmptyOrg,
    #[error("cannot sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token for `org_id` with the given space-separated scopes.
pub fn issue(
    secret: &str,
    org_id: &str,
    scope: &str,
    role: Option<&str>,
    ttl: Duration,
) -> Result<String, TokenError> {
    issue_for(secret, org_id, scope, role, ttl, &Audience::default())
}

/// Who a token is from and for: its `iss` and `aud` claims, when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    pub issuer: Option<String>,
    /// One value is written as a string, several as an array.
    pub audience: Vec<String>,
}

/// [`issue`], with `iss` and `aud` claims.
pub fn issue_for(
    secret: &str,
    org_id: &str,
    scope: &str,
    role: Option<&str>,
    ttl: Duration,
    audience: &Audience,
) -> Result<String, TokenError> {
    if org_id.trim().is_empty() {
        return Err(TokenError::EmptyOrg);
    }
    let now = chrono::Utc::now().timestamp();
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(format!("dev:{org_id}")));
    claims.insert("org_id".into(), Value::from(org_id));
    claims.insert("scope".into(), Value::from(scope));
    if let Some(r) = role {
        claims.insert("role".into(), Value::from(r));
    }
    if let Some(iss) = &audience.issuer {
        claims.insert("iss".into(), Value::from(iss.as_str()));
    }
    match audience.audience.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), Value::from(one.as_str()));
        }
        many => {
            claims.insert("aud".into(), Value::from(many.to_vec()));
        }
    }
    claims.insert("iat".into(), Value::from(now));
    claims.insert(
        "exp".into(),
        Value::from(now + i64::try_from(ttl.as_secs()).unwrap_or(86_400)),
    );
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(TokenError::from)
}

/// What `webhooks dev`'s gateway checks a bearer token against, as API
/// Gateway's JWT authorizer does: the HS256 secret, and the issuer and
/// audiences when they are configured.
#[derive(Clone)]
pub struct Verifier {
    secret: String,
    expected: Audience,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl From<String> for Verifier {
    /// The secret only: any issuer and audience.
    fn from(secret: String) -> Self {
        Verifier::new(secret, Audience::default())
    }
}

impl From<&str> for Verifier {
    /// The secret only: any issuer and audience.
    fn from(secret: &str) -> Self {
        Verifier::from(secret.to_string())
    }
}

impl Verifier {
    /// Tokens signed with `secret`; from `expected.issuer` if set, and for
    /// one of `expected.audience` if any.
    pub fn new(secret: String, expected: Audience) -> Self {
        Verifier { secret, expected }
    }

    /// The claims of `token` as API Gateway passes them (every value a
    /// string), or `None` when it is not valid here. As API Gateway does,
    /// the audience is matched against `aud`, or `client_id` when there is
    /// no `aud` (Cognito access tokens).
    pub fn verify(&self, token: &str) -> Option<HashMap<String, String>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        if let Some(iss) = &self.expected.issuer {
            validation.set_issuer(&[iss]);
            validation.set_required_spec_claims(&["exp", "iss"]);
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(self.secret.as_bytes()),
            &validation,
        )
        .ok()?
        .claims;
        if !self.expected.audience.is_empty() && !self.audience_matches(&claims) {
            return None;
        }
        Some(
            claims
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect(),
        )
    }

    fn audience_matches(&self, claims: &Map<String, Value>) -> bool {
        let accepted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| self.expected.audience.iter().any(|e| e == a))
        };
        match (claims.get("aud"), claims.get("client_id")) {
            (Some(Value::Array(auds)), _) => auds.iter().any(accepted),
            (Some(aud), _) => accepted(aud),
            (None, Some(client_id)) => accepted(client_id),
            (None, None) => false,
        }
    }
}

/// Verifies a bearer token signed with `secret`, whatever its issuer and
/// audience; see [`Verifier::verify`].
pub fn verify(secret: &str, token: &str) -> Option<HashMap<String, String>> {
    Verifier::from(secret.to_string()).verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_with_their_secret_only() {
        let t = issue(
            "s3cret",
            "org_1",
            "webhooks:manage events:write",
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        let claims = verify("s3cret", &t).unwrap();
        assert_eq!(claims["org_id"], "org_1");
        assert_eq!(claims["scope"], "webhooks:manage events:write");
        assert!(verify("other", &t).is_none());
        assert!(verify("s3cret", "not.a.token").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = issue("s", "org", "x", Some("admin"), Duration::ZERO).unwrap();
        // Expiry has a default leeway of 60 s; an hour-old token is out.
        let mut claims = Map::new();
        claims.insert("org_id".into(), Value::from("org"));
        claims.insert(
            "exp".into(),
            Value::from(chrono::Utc::now().timestamp() - 3600),
        );
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(verify("s", &old).is_none());
        assert_eq!(verify("s", &t).unwrap()["role"], "admin");
    }

    fn expecting(issuer: Option<&str>, audience: &[&str]) -> Verifier {
        Verifier::new(
            "s".into(),
            Audience {
                issuer: issuer.map(str::to_string),
                audience: audience.iter().map(|a| a.to_string()).collect(),
            },
        )
    }

    fn signed(claims: serde_json::Value) -> String {
        let mut claims = claims;
        claims["exp"] = Value::from(chrono::Utc::now().timestamp() + 600);
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap()
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        use serde_json::json;
        let v = expecting(Some("https://idp.example.com/"), &["api", "admin"]);
        let ok = [
            json!({"org_id": "o", "iss": "https://idp.example.com/", "aud": "api"}),
            json!({"org_id": "o", "iss": "https://idp.example.com/", "aud": ["other", "admin"]}),
            // Cognito access tokens: client_id instead of aud.
            json!({"org_id": "o", "iss": "https://idp.example.com/", "client_id": "api"}),
        ];
        for claims in ok {
            assert!(v.verify(&signed(claims.clone())).is_some(), "{claims}");
        }
        let refused = [
            json!({"org_id": "o"}),
            json!({"org_id": "o", "aud": "api"}),
            json!({"org_id": "o", "iss": "https://idp.example.com/"}),
            json!({"org_id": "o", "iss": "https://other.example.com/", "aud": "api"}),
            json!({"org_id": "o", "iss": "https://idp.example.com/", "aud": "elsewhere"}),
            json!({"org_id": "o", "iss": "https://idp.example.com/", "aud": ["x", "y"]}),
            // aud decides when both are there, as in API Gateway.
            json!({"org_id": "o", "iss": "https://idp.example.com/", "aud": "x", "client_id": "api"}),
        ];
        for claims in refused {
            assert!(v.verify(&signed(claims.clone())).is_none(), "{claims}");
        }
        // Unconfigured: any issuer and audience.
        let any = expecting(None, &[]);
        assert!(any
            .verify(&signed(json!({"org_id": "o", "iss": "x", "aud": "y"})))
            .is_some());
    }

    #[test]
    fn issued_tokens_carry_the_issuer_and_audiences() {
        let audience = Audience {
            issuer: Some("https://idp.example.com/".into()),
            audience: vec!["api".into(), "admin".into()],
        };
        let t = issue_for("s", "o", "x", None, Duration::from_secs(60), &audience).unwrap();
        let claims = Verifier::new("s".into(), audience).verify(&t).unwrap();
        assert_eq!(claims["iss"], "https://idp.example.com/");
        assert_eq!(claims["aud"], r#"["api","admin"]"#);
    }
}
