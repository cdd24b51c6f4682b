//! HTTP answers shared by the `api` and `inbound` functions and the local
//! gateway of `webhooks dev`: the one error envelope
//! `{"error":{"code":"<snake_case>","message":"<human text>"}}`, JSON and
//! text bodies built without fallible steps, and what a backend failure
//! becomes.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;
use webhooks_ports::BackendError;

/// The body of every error answer.
pub fn error_body(code: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        code: &'a str,
        message: &'a str,
    }
    serde_json::to_string(&Envelope {
        error: Detail { code, message },
    })
    .unwrap_or_else(|_| INTERNAL_ERROR_BODY.to_string())
}

/// The error body of a response that could not be built.
const INTERNAL_ERROR_BODY: &str =
    r#"{"error":{"code":"internal_error","message":"internal error"}}"#;

/// An error answer: `status` with the envelope.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    with_body(status, "application/json", error_body(code, message))
}

/// A JSON response. Serializing our own view types cannot fail; if it ever
/// did, the answer is a bare 500 rather than a panic.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(text) => with_body(status, "application/json", text),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a response");
            with_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                INTERNAL_ERROR_BODY,
            )
        }
    }
}

/// A response with a text body of the given content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<String>,
) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// What a failed backend call is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendFailure {
    /// 503: throttled or unreachable; the same request may succeed soon.
    Unavailable,
    /// 500: a fault on our side; the details are only in the logs.
    Internal,
}

impl BackendFailure {
    /// Classifies (and logs) a backend error. Its text never reaches the
    /// caller: it may name tables or queues.
    pub fn of(e: &BackendError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "transient backend error");
            BackendFailure::Unavailable
        } else {
            tracing::error!(error = %e, "backend error");
            BackendFailure::Internal
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            BackendFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            BackendFailure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            BackendFailure::Unavailable => "service_unavailable",
            BackendFailure::Internal => "internal_error",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            BackendFailure::Unavailable => "the service is temporarily unavailable; try again",
            BackendFailure::Internal => "internal error",
        }
    }

    /// The answer, with `Retry-After: 1` when trying again may help.
    pub fn into_response(self) -> Response<Body> {
        let mut response = error(self.status(), self.code(), self.message());
        if self == BackendFailure::Unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_escapes_and_nests() {
        let v: serde_json::Value =
            serde_json::from_str(&error_body("invalid_request", "url \"x\" is bad")).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["message"], "url \"x\" is bad");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn backend_failures_hide_their_text() {
        let r = BackendFailure::of(&BackendError::Transient("table t1 throttled".into()))
            .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let body = match r.body() {
            Body::Text(t) => t.clone(),
            _ => String::new(),
        };
        assert!(!body.contains("t1"), "{body}");
        let r = BackendFailure::of(&BackendError::Permanent("no table".into())).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!r.headers().contains_key(header::RETRY_AFTER));
    }
}
