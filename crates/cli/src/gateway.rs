//! The local stand-in for API Gateway: an HTTP server that turns each request
//! into the `lambda_http` request the Lambda would get and hands it to the
//! same handler functions. As the template's JWT authorizer does on `/v1`
//! routes only, it verifies the HS256 bearer token (and its issuer and
//! audience, when configured) and fills in its claims; every other route
//! (health, portal page, `/portal-api`, inbound) has no authorizer.

use crate::token;
use aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body the gateway passes on (API Gateway's is 10 MB; the
/// handlers enforce their own, smaller limits).
const MAX_BODY: usize = 1024 * 1024;

/// What serves each route family.
pub struct Gateway {
    pub api: Arc<webhooks_fn_api::Api>,
    pub inbound: Option<Arc<webhooks_fn_inbound::Inbound>>,
    /// What a `/v1` bearer token is checked against.
    pub tokens: token::Verifier,
}

type HttpResponse = hyper::Response<Full<Bytes>>;

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = webhooks_http::error_body(code, message);
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

impl Gateway {
    /// Answers one HTTP request.
    pub async fn answer(&self, req: hyper::Request<Incoming>) -> HttpResponse {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    413,
                    "payload_too_large",
                    "request body is larger than 1 MiB",
                )
            }
        };
        let path = parts.uri.path().to_string();
        let inbound = path.starts_with("/inbound/");
        let claims = if !has_authorizer(&path) {
            None
        } else {
            parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .and_then(|t| self.tokens.verify(t.trim()))
        };
        let request = to_lambda_request(parts, body, claims);
        let result = if inbound {
            match &self.inbound {
                Some(h) => webhooks_fn_inbound::handle(h, request).await,
                None => return error(404, "not_found", "inbound webhooks are not configured"),
            }
        } else {
            webhooks_fn_api::handle(&self.api, request).await
        };
        match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let bytes = match body {
                    lambda_http::Body::Empty => Bytes::new(),
                    lambda_http::Body::Text(t) => Bytes::from(t),
                    lambda_http::Body::Binary(b) => Bytes::from(b),
                    _ => Bytes::new(),
                };
                hyper::Response::from_parts(parts, Full::new(bytes))
            }
            Err(e) => {
                tracing::error!(error = %e, "handler failed");
                error(500, "internal_error", "the request could not be handled")
            }
        }
    }
}

/// Whether the template puts the JWT authorizer in front of `path`: the
/// `/v1` routes only.
fn has_authorizer(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The request as Lambda would receive it from an HTTP API.
pub fn to_lambda_request(
    parts: http::request::Parts,
    body: Bytes,
    claims: Option<std::collections::HashMap<String, String>>,
) -> lambda_http::Request {
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.http.method = parts.method.clone();
    ctx.http.path = Some(parts.uri.path().to_string());
    ctx.http.source_ip = Some("127.0.0.1".to_string());
    ctx.stage = Some("$default".to_string());
    ctx.request_id = Some(uuid_like());
    if let Some(claims) = claims {
        ctx.authorizer = Some(webhooks_fn_api::auth::authorizer_with_claims(claims));
    }
    let query: std::collections::HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let body = if body.is_empty() {
        lambda_http::Body::Empty
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => lambda_http::Body::Text(text),
            Err(e) => lambda_http::Body::Binary(e.into_bytes()),
        }
    };
    http::Request::from_parts(parts, body)
        .with_query_string_parameters(query)
        .with_request_context(RequestContext::ApiGatewayV2(ctx))
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("local-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Serves until `stop` turns true, then lets open requests finish (up to
/// `grace`).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let gw = gateway.clone();
                let service = service_fn(move |req| {
                    let gw = gw.clone();
                    async move { Ok::<_, std::convert::Infallible>(gw.answer(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}
