//! Who is calling: on `/v1`, the claims that the API Gateway JWT authorizer
//! (or `webhooks dev`, playing it) put in the request context; under
//! `/portal-api`, the portal session token that this function checks itself
//! (`crate::portal`).

use crate::errors::ApiError;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use std::collections::HashMap;

/// Manage endpoints and their deliveries.
pub const SCOPE_MANAGE: &str = "webhooks:manage";
/// Publish events.
pub const SCOPE_EVENTS_WRITE: &str = "events:write";

/// The authorizer part of a request context holding these JWT claims: what
/// API Gateway's JWT authorizer puts there, and what `webhooks dev`'s
/// gateway, the tests and the simulation put there in its place.
pub fn authorizer_with_claims(
    claims: HashMap<String, String>,
) -> lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizer {
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
    };
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims;
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    authorizer
}

/// A whole HTTP API (payload v2) request context holding these claims.
pub fn context_with_claims(claims: &[(&str, &str)]) -> RequestContext {
    let claims = claims
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut ctx = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
    ctx.authorizer = Some(authorizer_with_claims(claims));
    RequestContext::ApiGatewayV2(ctx)
}

/// The authenticated caller: a tenant and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant every read and write is scoped to.
    pub org_id: String,
    /// From the `scope` claim (and any the authorizer lists).
    pub scopes: Vec<String>,
    /// `role: admin` holds every scope, within its own organization.
    pub admin: bool,
    /// When the caller's token stops working (its `exp`), if it says.
    pub expires_at: Option<i64>,
    /// A portal session (checked by this function under `/portal-api`),
    /// rather than a token of the platform's identity provider.
    pub portal: bool,
}

impl Caller {
    /// The caller of `req`, or 401 when the request carries no JWT claims or
    /// no `org_id`.
    pub fn from_request(req: &Request) -> Result<Caller, ApiError> {
        let jwt = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref())
            }
            _ => None,
        };
        let Some(jwt) = jwt else {
            return Err(ApiError::Unauthorized(
                "missing or invalid bearer token".into(),
            ));
        };
        Caller::from_claims(&jwt.claims, jwt.scopes.as_deref())
    }

    /// The caller described by the claims of a platform token; `granted`
    /// are scopes the authorizer listed separately. A portal session's
    /// claims are refused (401): portal tokens are checked, and accepted,
    /// only under `/portal-api`.
    pub fn from_claims(
        claims: &HashMap<String, String>,
        granted: Option<&[String]>,
    ) -> Result<Caller, ApiError> {
        if claims.get("token_use").map(String::as_str) == Some(crate::portal::TOKEN_USE) {
            return Err(ApiError::Unauthorized(
                "a portal session token is accepted only by the portal (under /portal-api)".into(),
            ));
        }
        let org_id = claims
            .get("org_id")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the token has no org_id claim".into()))?;
        let mut scopes: Vec<String> = claims.get("scope").map(|s| words(s)).unwrap_or_default();
        for s in granted.unwrap_or_default() {
            scopes.extend(words(s));
        }
        let admin = claims
            .get("role")
            .is_some_and(|r| words(r).iter().any(|w| w == "admin"));
        Ok(Caller {
            org_id: org_id.to_string(),
            scopes,
            admin,
            expires_at: claims.get("exp").and_then(|e| unix_seconds(e)),
            portal: false,
        })
    }

    /// The caller of a checked portal session token.
    pub fn portal_session(org_id: &str, scope: &str, expires_at: i64) -> Caller {
        Caller {
            org_id: org_id.to_string(),
            scopes: words(scope),
            admin: false,
            expires_at: Some(expires_at),
            portal: true,
        }
    }

    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.admin || self.scopes.iter().any(|s| s == scope)
    }

    /// 403 unless the caller holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this request needs the '{scope}' scope"
            )))
        }
    }
}

/// A NumericDate claim as API Gateway passes it (`"1700000000"`, or with a
/// fraction), in whole seconds; `None` if it is not a finite number.
fn unix_seconds(claim: &str) -> Option<i64> {
    let seconds = claim.trim().parse::<f64>().ok().filter(|s| s.is_finite())?;
    // `as` saturates at i64's bounds.
    Some(seconds.floor() as i64)
}

/// The words of a space-separated claim. API Gateway hands over claims that
/// were JSON arrays as `[a b]`, so brackets, quotes and commas are dropped.
fn words(claim: &str) -> Vec<String> {
    claim
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '"')))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn scopes_are_space_separated() {
        let c = Caller::from_claims(
            &claims(&[
                ("org_id", "org_1"),
                ("scope", "webhooks:manage events:write"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(c.org_id, "org_1");
        assert!(c.has_scope(SCOPE_MANAGE));
        assert!(c.has_scope(SCOPE_EVENTS_WRITE));
        assert!(!c.admin);
    }

    #[test]
    fn array_claims_in_api_gateway_form_are_understood() {
        let c = Caller::from_claims(
            &claims(&[("org_id", "o"), ("scope", "[webhooks:manage events:write]")]),
            None,
        )
        .unwrap();
        assert_eq!(c.scopes, vec!["webhooks:manage", "events:write"]);
        let admin =
            Caller::from_claims(&claims(&[("org_id", "o"), ("role", "[admin]")]), None).unwrap();
        assert!(admin.has_scope(SCOPE_MANAGE));
    }

    #[test]
    fn authorizer_scopes_count_too() {
        let c = Caller::from_claims(
            &claims(&[("org_id", "o")]),
            Some(&["events:write".to_string()]),
        )
        .unwrap();
        assert!(c.require(SCOPE_EVENTS_WRITE).is_ok());
        assert_eq!(c.require(SCOPE_MANAGE).unwrap_err().code(), "forbidden");
    }

    #[test]
    fn org_id_is_required() {
        for c in [
            claims(&[]),
            claims(&[("org_id", "  ")]),
            claims(&[("scope", "x")]),
        ] {
            assert_eq!(
                Caller::from_claims(&c, None).unwrap_err().code(),
                "unauthorized"
            );
        }
    }

    #[test]
    fn the_token_expiry_is_read_in_whole_seconds() {
        let c = |exp: &str| {
            Caller::from_claims(&claims(&[("org_id", "o"), ("exp", exp)]), None)
                .unwrap()
                .expires_at
        };
        assert_eq!(c("1700000000"), Some(1_700_000_000));
        assert_eq!(c(" 1700000000.9 "), Some(1_700_000_000));
        for bad in ["", "soon", "NaN", "inf"] {
            assert_eq!(c(bad), None, "{bad}");
        }
        let none = Caller::from_claims(&claims(&[("org_id", "o")]), None).unwrap();
        assert_eq!(none.expires_at, None);
        assert!(!none.portal);
    }

    #[test]
    fn portal_session_claims_are_refused_as_platform_claims() {
        let e = Caller::from_claims(
            &claims(&[
                ("org_id", "o"),
                ("scope", "webhooks:manage"),
                ("token_use", "portal"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), "unauthorized");
        assert!(e.message().contains("/portal-api"));
    }

    #[test]
    fn other_roles_grant_nothing() {
        let c = Caller::from_claims(&claims(&[("org_id", "o"), ("role", "administrator")]), None)
            .unwrap();
        assert!(!c.has_scope(SCOPE_MANAGE));
    }
}
