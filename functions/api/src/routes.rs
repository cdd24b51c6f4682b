//! The route table: which operation serves a method and path, and what access
//! it needs. `docs/openapi.yaml` documents exactly [`ROUTES`] (a test checks).

use crate::auth::{SCOPE_EVENTS_WRITE, SCOPE_MANAGE};
use crate::errors::ApiError;

/// What the API can do; one per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Health,
    ListEventTypes,
    CreateEndpoint,
    ListEndpoints,
    GetEndpoint,
    UpdateEndpoint,
    DeleteEndpoint,
    RevealSecret,
    RotateSecret,
    SendTestEvent,
    ListDeliveries,
    RecoverDeliveries,
    GetDelivery,
    RetryDelivery,
    EndpointStats,
    PublishEvent,
    PublishEvents,
    ListEvents,
    GetEvent,
    CreatePortalSession,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// A token holding this scope (or `role: admin`).
    Scope(&'static str),
}

impl Operation {
    /// Who may call it.
    pub fn access(self) -> Access {
        match self {
            Operation::Health => Access::Public,
            Operation::ListEventTypes => Access::Authenticated,
            Operation::PublishEvent | Operation::PublishEvents => Access::Scope(SCOPE_EVENTS_WRITE),
            _ => Access::Scope(SCOPE_MANAGE),
        }
    }
}

/// Declares the table once, giving the public `(method, path)` list and the
/// operation of each entry in the same order.
macro_rules! route_table {
    ($( $method:literal $path:literal => $op:ident, )*) => {
        /// Every route: `(method, path pattern)`, with `{id}` standing for one
        /// path segment.
        pub const ROUTES: &[(&str, &str)] = &[ $( ($method, $path), )* ];
        const OPERATIONS: &[Operation] = &[ $( Operation::$op, )* ];
    };
}

route_table! {
    "GET" "/healthz" => Health,
    "GET" "/v1/event-types" => ListEventTypes,
    "POST" "/v1/endpoints" => CreateEndpoint,
    "GET" "/v1/endpoints" => ListEndpoints,
    "GET" "/v1/endpoints/{id}" => GetEndpoint,
    "PATCH" "/v1/endpoints/{id}" => UpdateEndpoint,
    "DELETE" "/v1/endpoints/{id}" => DeleteEndpoint,
    "GET" "/v1/endpoints/{id}/secret" => RevealSecret,
    "POST" "/v1/endpoints/{id}/rotate-secret" => RotateSecret,
    "POST" "/v1/endpoints/{id}/test" => SendTestEvent,
    "GET" "/v1/endpoints/{id}/deliveries" => ListDeliveries,
    "POST" "/v1/endpoints/{id}/recover" => RecoverDeliveries,
    "GET" "/v1/endpoints/{id}/stats" => EndpointStats,
    "GET" "/v1/deliveries/{id}" => GetDelivery,
    "POST" "/v1/deliveries/{id}/retry" => RetryDelivery,
    "POST" "/v1/events" => PublishEvent,
    "GET" "/v1/events" => ListEvents,
    "POST" "/v1/events/batch" => PublishEvents,
    "GET" "/v1/events/{id}" => GetEvent,
    "POST" "/v1/portal-sessions" => CreatePortalSession,
}

/// A request matched to its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// What to do.
    pub operation: Operation,
    /// The `{id}` segment, for routes that have one.
    pub id: Option<String>,
}

/// The operation for `method` and `path`: 404 when no route has the path,
/// 405 when routes have it but not with this method.
pub fn resolve(method: &str, path: &str) -> Result<Matched, ApiError> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let mut allowed: Vec<&'static str> = Vec::new();
    for (&(route_method, pattern), &operation) in ROUTES.iter().zip(OPERATIONS) {
        let Some(id) = match_path(pattern, path) else {
            continue;
        };
        if route_method == method {
            return Ok(Matched { operation, id });
        }
        allowed.push(route_method);
    }
    if allowed.is_empty() {
        Err(ApiError::not_found(format!("no route for {path}")))
    } else {
        Err(ApiError::MethodNotAllowed(allowed))
    }
}

/// `Some(id segment)` when `path` fits `pattern`.
fn match_path(pattern: &str, path: &str) -> Option<Option<String>> {
    let mut id = None;
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(id),
            (Some("{id}"), Some(segment)) if !segment.is_empty() => {
                id = Some(segment.to_string());
            }
            (Some(p), Some(segment)) if p == segment => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_to_its_own_operation() {
        assert_eq!(ROUTES.len(), OPERATIONS.len());
        for (i, (method, pattern)) in ROUTES.iter().enumerate() {
            let path = pattern.replace("{id}", "ep_x");
            let m = resolve(method, &path).unwrap();
            assert_eq!(m.operation, OPERATIONS[i], "{method} {pattern}");
            assert_eq!(m.id.is_some(), pattern.contains("{id}"));
        }
    }

    #[test]
    fn ids_are_taken_from_the_path() {
        let m = resolve("POST", "/v1/deliveries/dlv_1/retry").unwrap();
        assert_eq!(m.operation, Operation::RetryDelivery);
        assert_eq!(m.id.as_deref(), Some("dlv_1"));
        assert_eq!(
            resolve("GET", "/v1/endpoints/").unwrap().operation,
            Operation::ListEndpoints
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in [
            "/",
            "",
            "/v1",
            "/v1/endpoints//secret",
            "/v2/endpoints",
            "/v1/endpoints/a/b",
        ] {
            assert_eq!(
                resolve("GET", path).unwrap_err().code(),
                "not_found",
                "{path}"
            );
        }
        assert_eq!(
            resolve("PUT", "/v1/endpoints/ep_1").unwrap_err(),
            ApiError::MethodNotAllowed(vec!["GET", "PATCH", "DELETE"])
        );
        assert_eq!(
            resolve("DELETE", "/v1/events").unwrap_err().code(),
            "method_not_allowed"
        );
    }

    #[test]
    fn access_follows_the_contract() {
        assert_eq!(Operation::Health.access(), Access::Public);
        assert_eq!(Operation::ListEventTypes.access(), Access::Authenticated);
        assert_eq!(
            Operation::PublishEvent.access(),
            Access::Scope(SCOPE_EVENTS_WRITE)
        );
        assert_eq!(
            Operation::PublishEvents.access(),
            Access::Scope(SCOPE_EVENTS_WRITE)
        );
        assert_eq!(
            Operation::RetryDelivery.access(),
            Access::Scope(SCOPE_MANAGE)
        );
        for op in [Operation::ListEvents, Operation::GetEvent] {
            assert_eq!(op.access(), Access::Scope(SCOPE_MANAGE));
        }
    }

    #[test]
    fn the_event_log_shares_its_paths_with_publishing() {
        assert_eq!(
            resolve("GET", "/v1/events").unwrap().operation,
            Operation::ListEvents
        );
        assert_eq!(
            resolve("POST", "/v1/events").unwrap().operation,
            Operation::PublishEvent
        );
        let one = resolve("GET", "/v1/events/evt_1").unwrap();
        assert_eq!(
            (one.operation, one.id.as_deref()),
            (Operation::GetEvent, Some("evt_1"))
        );
        assert_eq!(
            resolve("POST", "/v1/events/batch").unwrap().operation,
            Operation::PublishEvents
        );
    }
}
