//! Failures as the API reports them: a status code and
//! `{"error":{"code":"<snake_case>","message":"<human text>"}}`.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use webhooks_http::{error, BackendFailure};
use webhooks_pipeline::RequeueError;
use webhooks_ports::BackendError;

/// Why a request was not served. Every variant maps to one status and code;
/// nothing a caller sends can produce `Internal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the message names the offending field.
    InvalidRequest(String),
    /// 401: no usable claims.
    Unauthorized(String),
    /// 403: the token lacks the route's scope.
    Forbidden(String),
    /// 404: no such thing in the caller's organization.
    NotFound(String),
    /// 405: the path exists, the method does not; lists the allowed methods.
    MethodNotAllowed(Vec<&'static str>),
    /// 409: the resource is not in a state that allows this.
    Conflict(String),
    /// 422: an idempotency key reused with a different request.
    IdempotencyKeyMismatch(String),
    /// 503 with `Retry-After`: an earlier request with this idempotency key
    /// may still be writing its event; try again after this long.
    KeyInUse(std::time::Duration),
    /// 422: a limit of the platform reached (CONTRACT section 11); the
    /// message names the limit.
    LimitExceeded(String),
    /// 413: the body is over the limit.
    PayloadTooLarge(String),
    /// 503: a backend is throttling or unreachable; try again. 500: a
    /// fault on our side (details are only in the logs).
    Backend(BackendFailure),
}

impl ApiError {
    /// A 400 with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    /// A 404 with this message.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(message.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::KeyInUse(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::LimitExceeded(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Backend(f) => f.status(),
        }
    }

    /// The stable, snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdempotencyKeyMismatch(_) => "idempotency_key_mismatch",
            ApiError::KeyInUse(_) => "idempotency_key_in_use",
            ApiError::LimitExceeded(_) => "limit_exceeded",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Backend(f) => f.code(),
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::IdempotencyKeyMismatch(m)
            | ApiError::LimitExceeded(m)
            | ApiError::PayloadTooLarge(m) => m.clone(),
            ApiError::MethodNotAllowed(allow) => {
                format!("method not allowed here; use {}", allow.join(", "))
            }
            ApiError::KeyInUse(wait) => format!(
                "an earlier request with this idempotency_key may still be writing its event; retry in {} s",
                retry_after_secs(*wait)
            ),
            ApiError::Backend(f) => f.message().to_string(),
        }
    }

    /// The error as an HTTP response.
    pub fn into_response(self) -> Response<Body> {
        if let ApiError::Backend(failure) = self {
            return failure.into_response();
        }
        let mut response = error(self.status(), self.code(), &self.message());
        if let ApiError::MethodNotAllowed(allow) = &self {
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, v);
            }
        }
        if let ApiError::KeyInUse(wait) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(*wait)),
            );
        }
        response
    }
}

/// A wait in whole seconds, rounded up, at least one.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::InvalidCursor => {
                ApiError::invalid("cursor is not a next_cursor value returned by this listing")
            }
            e => ApiError::Backend(BackendFailure::of(&e)),
        }
    }
}

impl From<RequeueError> for ApiError {
    fn from(e: RequeueError) -> Self {
        match e {
            RequeueError::NotRetryable(_) | RequeueError::Changed => {
                ApiError::Conflict(e.to_string())
            }
            RequeueError::EndpointGone | RequeueError::EventGone => {
                ApiError::not_found(e.to_string())
            }
            RequeueError::QueueRefused => ApiError::Backend(BackendFailure::Unavailable),
            RequeueError::Backend(b) => b.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_to_503_500_and_400() {
        assert_eq!(
            ApiError::from(BackendError::Transient("throttled".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let internal = ApiError::from(BackendError::Permanent("table gone".into()));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message().contains("table"));
        let cursor = ApiError::from(BackendError::InvalidCursor);
        assert_eq!(cursor.code(), "invalid_request");
        assert!(cursor.message().contains("cursor"));
    }

    #[test]
    fn a_limit_reached_is_422_limit_exceeded_with_its_message() {
        let e = ApiError::LimitExceeded("at most 3 endpoints (max_endpoints_per_org)".into());
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code(), "limit_exceeded");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: serde_json::Value = serde_json::from_slice(r.body().as_ref()).unwrap();
        assert_eq!(body["error"]["code"], "limit_exceeded");
        assert_eq!(
            body["error"]["message"],
            "at most 3 endpoints (max_endpoints_per_org)"
        );
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let r = ApiError::MethodNotAllowed(vec!["GET", "PATCH"]).into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, PATCH");
    }
}
