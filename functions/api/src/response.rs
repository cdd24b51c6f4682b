//! Building responses without fallible steps: JSON bodies and empty ones.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

pub use webhooks_http::json;

/// A JSON response that shows a signing secret: never cached.
pub fn json_with_secret<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut response = json(status, value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A response without a body (204).
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    response
}
