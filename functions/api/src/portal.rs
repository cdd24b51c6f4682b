//! The org portal: `POST /v1/portal-sessions` mints a short-lived link, and
//! the page it opens (`GET /portal` and its assets) is served from here.
//!
//! A portal session is a JWT that this API signs itself, with its own issuer,
//! holding `org_id`, `scope: webhooks:manage` and `token_use: portal`, and
//! nothing more: it cannot publish events, act for another org, or mint
//! further sessions; it never outlives the token that opened it, and it
//! stops working at `exp` (no leeway). It travels in the URL fragment
//! (`/portal#token=...`), which browsers never send, so it never reaches a
//! server or access log.
//!
//! The page calls the API under `/portal-api/v1/...`, served exactly like
//! `/v1/...` except for who the caller is: no gateway authorizer stands in
//! front of those routes, and this function checks the bearer token itself
//! (signed by one of its keys; `iss`, `aud`, `token_use`, `nbf`, `exp`). So
//! the stack needs no second JWT authorizer, whose issuer API Gateway would
//! have to fetch from this very API while creating it (which failed the
//! first deploy), and no public discovery document or JWKS.
//!
//! - In AWS tokens are signed with RS256 by a key of the stack's own, read
//!   from Secrets Manager; several keys check, so a key rotates with no
//!   window ([`keys`]). A secret that cannot be used turns the portal off,
//!   never the API ([`source`]).
//! - In `webhooks dev` they are signed with HS256 by the `--jwt-secret`.

pub mod keys;
mod source;

use crate::auth::{Caller, SCOPE_MANAGE};
use crate::errors::ApiError;
use crate::input::{json_object, optional, present, BodyRule};
use crate::response::json;
use crate::Api;
use keys::{PortalKeys, SigningKeyError, TokenRefusal};
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json as json_value, Map, Value};
use source::{KeySource, SecretKeys};
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::runtime_secret::ProviderSecret;

pub use source::RECHECK_INTERVAL;

/// Default lifetime of a portal session.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// Longest lifetime of a portal session.
pub const MAX_TTL_SECONDS: i64 = 86_400;
/// The `aud` claim of portal tokens.
pub const AUDIENCE: &str = "webhooks-portal";
/// The `token_use` claim that marks a portal token.
pub const TOKEN_USE: &str = "portal";
/// Path prefix the page calls the API under; same routes as `/v1`.
pub const API_PREFIX: &str = "/portal-api";

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

/// What the API answers, on `/portal-api`, while it has no usable keys.
const UNAVAILABLE: &str = "portal sessions are not available here";

/// Mints portal sessions and checks their tokens.
pub struct PortalIssuer {
    keys: KeySource,
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

impl PortalIssuer {
    fn with_keys(keys: KeySource, issuer: &str) -> Self {
        PortalIssuer {
            keys,
            issuer: issuer.trim_end_matches('/').to_string(),
            base_url: None,
        }
    }

    /// Signs and checks with HS256 and `secret` (`webhooks dev`).
    pub fn hs256(secret: &[u8], issuer: &str) -> Self {
        Self::with_keys(
            KeySource::Fixed(Arc::new(PortalKeys::hs256(secret))),
            issuer,
        )
    }

    /// Signs with RS256 and the RSA private key of `pem`, and checks with it
    /// and any public keys after it ([`PortalKeys::from_pem`]). The error
    /// never contains the key.
    pub fn rs256_pem(pem: &str, issuer: &str) -> Result<Self, SigningKeyError> {
        Ok(Self::with_keys(
            KeySource::Fixed(Arc::new(PortalKeys::from_pem(pem)?)),
            issuer,
        ))
    }

    /// RS256 with the keys that `secret` holds, looked at again every
    /// `recheck` ([`RECHECK_INTERVAL`] in the Lambda). No usable value means
    /// no sessions, never a failure.
    pub fn from_secret(secret: ProviderSecret, issuer: &str, recheck: Duration) -> Self {
        Self::with_keys(KeySource::Secret(SecretKeys::new(secret, recheck)), issuer)
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

    /// The keys in use, `None` while there are none that work (reading
    /// them, in AWS, when they are due).
    pub async fn keys(&self) -> Option<Arc<PortalKeys>> {
        self.keys.current().await
    }

    /// A signed portal token for `org_id`, valid from `now` until
    /// `expires_at`; `None` while there are no usable keys.
    pub async fn token(
        &self,
        org_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<String>, ApiError> {
        let Some(keys) = self.keys().await else {
            return Ok(None);
        };
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
        keys.sign(&claims).map(Some).map_err(|e| {
            tracing::error!(error = %e, "could not sign a portal token");
            ApiError::Backend(webhooks_http::BackendFailure::Internal)
        })
    }

    /// The caller a portal token stands for, or 401 (saying so when it has
    /// expired).
    pub async fn caller(&self, token: &str, now: i64) -> Result<Caller, ApiError> {
        let Some(keys) = self.keys().await else {
            return Err(ApiError::Unauthorized(UNAVAILABLE.into()));
        };
        match keys.verify(token, &self.issuer, now) {
            Ok(claims) => Ok(Caller::portal_session(
                &claims.org_id,
                &claims.scope,
                claims.exp,
            )),
            Err(TokenRefusal::Expired) => Err(ApiError::Unauthorized(
                "the portal session has expired; open a new one".into(),
            )),
            Err(TokenRefusal::Invalid) => Err(ApiError::Unauthorized(
                "missing or invalid portal session token".into(),
            )),
        }
    }
}

impl Api {
    /// Portal sessions as the Lambda's environment sets them: RS256 with the
    /// keys of the Secrets Manager secret whose ARN is
    /// `PORTAL_SIGNING_KEY_ARN`, as issuer `PORTAL_ISSUER`, links under
    /// `WEBHOOKS_PUBLIC_BASE_URL`; none without an ARN. Never fails: a
    /// secret that cannot be read or used is logged as an error and leaves
    /// the portal off until it can, while `/healthz` and `/v1` serve.
    pub async fn with_portal_from_env(
        self,
        secrets: &webhooks_aws::runtime_secret::SecretsManager,
    ) -> Self {
        use webhooks_aws::env;
        let Some(arn) = env::optional("PORTAL_SIGNING_KEY_ARN") else {
            return self;
        };
        let Some(issuer) = env::optional("PORTAL_ISSUER") else {
            tracing::error!(
                "PORTAL_SIGNING_KEY_ARN is set but PORTAL_ISSUER is not: no portal sessions"
            );
            return self;
        };
        let issuer = PortalIssuer::from_secret(secrets.secret(arn), &issuer, RECHECK_INTERVAL)
            .with_base_url(env::optional("WEBHOOKS_PUBLIC_BASE_URL"));
        self.with_portal_loaded(issuer).await
    }

    /// The same API with `issuer`, whose keys are read now, so that a cold
    /// start logs at once whether portal sessions work.
    pub async fn with_portal_loaded(self, issuer: PortalIssuer) -> Self {
        let _ = issuer.keys().await;
        self.with_portal(issuer)
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
    if caller.portal {
        return Err(ApiError::Forbidden(
            "a portal session cannot open another portal session".into(),
        ));
    }
    let not_configured = || ApiError::not_found("the portal is not configured here");
    let issuer = api.portal.as_deref().ok_or_else(not_configured)?;
    let now = chrono::Utc::now().timestamp();
    let expires_at = session_end(now, ttl, caller.expires_at)?;
    let token = issuer
        .token(&caller.org_id, now, expires_at)
        .await?
        .ok_or_else(not_configured)?;
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

/// The API path a request under `/portal-api` addresses (`/portal-api/v1/...`
/// is `/v1/...`); `None` for every other path.
pub(crate) fn api_path(path: &str) -> Option<&str> {
    match path.strip_prefix(API_PREFIX) {
        Some(rest) if rest.starts_with("/v1/") || rest == "/v1" => Some(rest),
        _ => None,
    }
}

/// The caller of a `/portal-api` request: its bearer token, checked here
/// (the gateway has no authorizer on these routes); claims a gateway may
/// have put in the request context are never read.
pub(crate) async fn caller(api: &Api, req: &Request) -> Result<Caller, ApiError> {
    let Some(issuer) = api.portal.as_deref() else {
        return Err(ApiError::Unauthorized(UNAVAILABLE.into()));
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("missing or invalid portal session token".into()))?;
    issuer.caller(token, chrono::Utc::now().timestamp()).await
}

/// The page and its assets; `None` for every other path.
pub(crate) fn public_resource(req: &Request) -> Option<Response<Body>> {
    let path = req.uri().path();
    if path != "/portal" && !path.starts_with("/portal/") {
        return None;
    }
    if req.method() != lambda_http::http::Method::GET && req.method() != "HEAD" {
        return Some(ApiError::MethodNotAllowed(vec!["GET", "HEAD"]).into_response());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_under_the_portal_prefix_are_v1_paths() {
        assert_eq!(api_path("/portal-api/v1/endpoints"), Some("/v1/endpoints"));
        assert_eq!(api_path("/portal-api/v1"), Some("/v1"));
        assert_eq!(api_path("/portal-api/healthz"), None);
        assert_eq!(api_path("/portal-apix/v1/endpoints"), None);
        assert_eq!(api_path("/v1/endpoints"), None);
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
