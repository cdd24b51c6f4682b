//! Responses of the inbound routes: the provider's expected acknowledgement,
//! or `{"error":{"code":..,"message":..}}` with a status.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use webhooks_aws::runtime_secret::FAILED_FETCH_TTL;
use webhooks_http::{error, BackendFailure};
use webhooks_ports::BackendError;

/// Why an inbound request was not accepted. Nothing a caller sends produces
/// `Backend`.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// 501: the route's secret is not configured (a provider not in use);
    /// names the variable, never a value.
    NotConfigured(&'static str),
    /// 503: the route's secret could not be fetched; the provider retries.
    SecretUnavailable(webhooks_aws::runtime_secret::SecretError),
    /// 401: a missing or wrong signature, or a Stripe timestamp out of tolerance.
    InvalidSignature(String),
    /// 400: the body is signed but unusable.
    InvalidRequest(String),
    /// 403: a WhatsApp verification request with the wrong token or mode.
    Forbidden(String),
    /// 404: no such inbound route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed(&'static str),
    /// 503 with `Retry-After`: an earlier delivery of this provider event
    /// may still be writing its platform event; the provider retries.
    InProgress(std::time::Duration),
    /// 503 (transient) or 500: the stores failed; the provider retries.
    Backend(BackendError),
}

impl From<BackendError> for Rejection {
    fn from(e: BackendError) -> Self {
        Rejection::Backend(e)
    }
}

impl Rejection {
    pub(crate) fn into_response(self) -> Response<Body> {
        let (status, code, message) = match self {
            Rejection::NotConfigured(variable) => (
                StatusCode::NOT_IMPLEMENTED,
                "not_configured",
                format!("this route is not configured: {variable} is not set"),
            ),
            Rejection::SecretUnavailable(e) => {
                tracing::error!(error = %e, "inbound secret unavailable");
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "secret_unavailable",
                    "the route's secret cannot be read now; try again later",
                );
                // No fetch is tried again before then (runtime_secret.rs).
                let after = FAILED_FETCH_TTL.as_secs().max(1);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
                return response;
            }
            Rejection::InvalidSignature(m) => (StatusCode::UNAUTHORIZED, "invalid_signature", m),
            Rejection::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m),
            Rejection::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            Rejection::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such inbound route".to_string(),
            ),
            Rejection::MethodNotAllowed(allow) => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("this route accepts {allow}"),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return response;
            }
            Rejection::InProgress(wait) => {
                let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "in_progress",
                    &format!("an earlier delivery of this event is still being processed; retry in {secs} s"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return response;
            }
            Rejection::Backend(e) => {
                tracing::error!("inbound request not recorded");
                return BackendFailure::of(&e).into_response();
            }
        };
        error(status, code, &message)
    }
}

pub(crate) use webhooks_http::with_body;
