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

/// Verifies a bearer token and returns its claims as API Gateway passes
/// them: every value a string.
pub fn verify(secret: &str, token: &str) -> Option<HashMap<String, String>> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    Some(
        data.claims
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
}
