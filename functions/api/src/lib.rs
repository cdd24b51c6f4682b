//! Lambda `api`: the management API behind API Gateway (HTTP API, payload
//! v2). Endpoints, their secrets and deliveries, and publishing events; every
//! read and write is scoped to the caller's organization, taken from the JWT
//! claims that the gateway's authorizer (or `webhooks dev`) put in the
//! request context.
//!
//! [`handle`] only translates HTTP to the domain and back; the rules live in
//! `webhooks-domain`, storage behind the `webhooks-ports` traits.

pub mod auth;
mod deliveries;
mod endpoints;
pub mod errors;
mod event_log;
pub mod events;
pub mod input;
mod noted;
pub mod portal;
mod response;
pub mod routes;
mod stats;
mod views;

pub use routes::ROUTES;

use auth::Caller;
use errors::ApiError;
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use routes::{Access, Operation};
use std::sync::Arc;
use tracing::Instrument;
use webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG;
use webhooks_domain::EndpointUrlPolicy;
use webhooks_pipeline::Requeue;
use webhooks_ports::{
    Adapters, Clock, CursorStore, DeliveryStore, EndpointStatsStore, EndpointStore, EventStore,
    IdempotencyStore, Queue,
};

/// How the API behaves where deployments differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    /// Which endpoint URLs are accepted.
    pub url_policy: EndpointUrlPolicy,
    /// How long a rotated-out secret keeps signing.
    pub rotation_overlap: chrono::Duration,
    /// Most endpoints an org may have; `POST /v1/endpoints` past it is 422
    /// `limit_exceeded`.
    pub max_endpoints_per_org: u32,
}

impl Default for ApiConfig {
    /// Production: public `https` endpoints only, 24 h rotation overlap,
    /// 100 endpoints per org.
    fn default() -> Self {
        ApiConfig {
            url_policy: EndpointUrlPolicy::PRODUCTION,
            rotation_overlap: chrono::Duration::hours(24),
            max_endpoints_per_org: DEFAULT_MAX_ENDPOINTS_PER_ORG,
        }
    }
}

impl ApiConfig {
    /// Production's configuration with the deployment's settings from the
    /// environment: `WEBHOOKS_MAX_ENDPOINTS_PER_ORG` (the template's
    /// `MaxEndpointsPerOrg`; unset: 100).
    pub fn from_env() -> Result<Self, webhooks_aws::env::EnvError> {
        use webhooks_aws::env;
        let mut config = ApiConfig::default();
        if let Some(text) = env::optional("WEBHOOKS_MAX_ENDPOINTS_PER_ORG") {
            config.max_endpoints_per_org = parse_max_endpoints_per_org(&text)
                .map_err(|e| env::EnvError(format!("WEBHOOKS_MAX_ENDPOINTS_PER_ORG {e}")))?;
        }
        Ok(config)
    }
}

/// A configured maximum of endpoints per org: a whole number, at least 1
/// (the error does not repeat the text).
pub fn parse_max_endpoints_per_org(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {}", u32::MAX)),
    }
}

/// The API's storage and queue, and its configuration.
pub struct Api {
    events: Arc<dyn EventStore>,
    endpoints: Arc<dyn EndpointStore>,
    deliveries: Arc<dyn DeliveryStore>,
    cursors: Arc<dyn CursorStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    requeue: Requeue,
    config: ApiConfig,
    portal: Option<Arc<portal::PortalIssuer>>,
    clock: Arc<dyn Clock>,
    ops: webhooks_pipeline::OpsNotifier,
    /// The endpoints' hourly figures; without them (an API built by
    /// [`Api::new`]) stats are computed from the deliveries.
    stats: Option<Arc<dyn EndpointStatsStore>>,
}

impl Api {
    /// The API over a backend's adapters.
    pub fn from_adapters(adapters: &Adapters, config: ApiConfig) -> Self {
        let mut api = Api::new(
            adapters.events.clone(),
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            adapters.cursors.clone(),
            adapters.idempotency.clone(),
            adapters.queue.clone(),
            config,
        );
        api.requeue = Requeue::new(
            adapters.events.clone(),
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            adapters.queue.clone(),
        )
        .with_stats(adapters.stats.clone());
        api.stats = Some(adapters.stats.clone());
        api.with_clock(adapters.clock.clone())
    }

    /// The same API, reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.requeue = self.requeue.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// An API over these adapters; `queue` is the delivery queue that the
    /// sender consumes.
    pub fn new(
        events: Arc<dyn EventStore>,
        endpoints: Arc<dyn EndpointStore>,
        deliveries: Arc<dyn DeliveryStore>,
        cursors: Arc<dyn CursorStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        queue: Arc<dyn Queue>,
        config: ApiConfig,
    ) -> Self {
        Api {
            requeue: Requeue::new(events.clone(), endpoints.clone(), deliveries.clone(), queue),
            events,
            endpoints,
            deliveries,
            cursors,
            idempotency,
            config,
            portal: None,
            clock: webhooks_ports::SystemClock::shared(),
            ops: webhooks_pipeline::OpsNotifier::default(),
            stats: None,
        }
    }

    /// The same API, emitting `endpoint.enabled` through `ops` when a
    /// disabled endpoint is enabled again.
    pub fn with_ops(mut self, ops: webhooks_pipeline::OpsNotifier) -> Self {
        self.ops = ops;
        self
    }

    /// The same API, minting portal sessions with `issuer` and accepting
    /// them under `/portal-api` (`POST /v1/portal-sessions` is 404 without
    /// one).
    pub fn with_portal(mut self, issuer: portal::PortalIssuer) -> Self {
        self.portal = Some(Arc::new(issuer));
        self
    }

    /// `endpoint.enabled` notices as the environment configures them: queued
    /// for the sender when an operator webhook is set
    /// (`WEBHOOKS_OPS_WEBHOOK_URL`; the sender holds its secret), published
    /// on the EventBridge bus `WEBHOOKS_OPS_EVENT_BUS` when set.
    pub fn with_ops_from_env(self, adapters: &Adapters, aws: &webhooks_aws::SdkConfig) -> Self {
        use webhooks_aws::env;
        let queue = env::optional("WEBHOOKS_OPS_WEBHOOK_URL").map(|_| adapters.queue.clone());
        let bus = env::optional("WEBHOOKS_OPS_EVENT_BUS").map(|name| {
            Arc::new(webhooks_aws::EventBridgeOpsBus::with_config(aws, name))
                as Arc<dyn webhooks_ports::OpsBus>
        });
        self.with_ops(webhooks_pipeline::OpsNotifier::new(queue, bus))
    }
}

/// Serves one request. Every failure, bad input included, is an HTTP
/// response with a JSON error body; the `Err` case is never used.
pub async fn handle(api: &Api, req: Request) -> Result<Response<Body>, Error> {
    let started = std::time::Instant::now();
    let request_id = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    );
    async move {
        let response = serve(api, &req)
            .await
            .unwrap_or_else(ApiError::into_response);
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "served"
        );
        Ok(response)
    }
    .instrument(span)
    .await
}

async fn serve(api: &Api, req: &Request) -> Result<Response<Body>, ApiError> {
    if let Some(page) = portal::public_resource(req) {
        return Ok(page);
    }
    let path = req.uri().path();
    let portal_path = portal::api_path(path);
    let matched = routes::resolve(req.method().as_str(), portal_path.unwrap_or(path))?;
    let operation = matched.operation;
    // The health check is the only public route.
    if operation.access() == Access::Public {
        return Ok(health());
    }
    // `/v1`: the gateway's authorizer checked the token; `/portal-api`: no
    // authorizer, this function checks the portal session's token itself.
    let caller = match portal_path {
        Some(_) => portal::caller(api, req).await?,
        None => Caller::from_request(req)?,
    };
    if let Access::Scope(scope) = operation.access() {
        caller.require(scope)?;
    }
    let body = input::body_bytes(req)?;
    let id = matched.id.as_deref().unwrap_or_default();
    match operation {
        Operation::Health => Ok(health()),
        Operation::ListEventTypes => Ok(events::list_types()),
        Operation::PublishEvent => events::publish(api, &caller, body, trace_id(req)).await,
        Operation::PublishEvents => events::publish_batch(api, &caller, body, trace_id(req)).await,
        Operation::ListEvents => event_log::list(api, &caller, req).await,
        Operation::GetEvent => event_log::get(api, &caller, id).await,
        Operation::CreateEndpoint => endpoints::create(api, &caller, body).await,
        Operation::ListEndpoints => endpoints::list(api, &caller, req).await,
        Operation::GetEndpoint => endpoints::get(api, &caller, id).await,
        Operation::UpdateEndpoint => endpoints::update(api, &caller, id, body).await,
        Operation::DeleteEndpoint => endpoints::delete(api, &caller, id).await,
        Operation::RevealSecret => endpoints::reveal_secret(api, &caller, id).await,
        Operation::RotateSecret => endpoints::rotate_secret(api, &caller, id, body).await,
        Operation::SendTestEvent => endpoints::send_test(api, &caller, id, body).await,
        Operation::ListDeliveries => deliveries::list(api, &caller, id, req).await,
        Operation::RecoverDeliveries => deliveries::recover(api, &caller, id, body).await,
        Operation::GetDelivery => deliveries::get(api, &caller, id).await,
        Operation::RetryDelivery => deliveries::retry(api, &caller, id).await,
        Operation::EndpointStats => stats::get(api, &caller, id, req).await,
        Operation::CreatePortalSession => portal::create_session(api, &caller, req, body).await,
    }
}

/// The X-Ray trace root API Gateway gave the request, kept on its events.
fn trace_id(req: &Request) -> Option<String> {
    req.headers()
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .and_then(webhooks_domain::event::trace_root)
}

fn health() -> Response<Body> {
    response::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_limit_is_a_whole_number_of_at_least_one() {
        assert_eq!(parse_max_endpoints_per_org("100"), Ok(100));
        assert_eq!(parse_max_endpoints_per_org(" 3 "), Ok(3));
        assert_eq!(parse_max_endpoints_per_org("1"), Ok(1));
        for refused in ["0", "-1", "", "1.5", "ten", "4294967296"] {
            let e = parse_max_endpoints_per_org(refused).unwrap_err();
            assert!(e.contains("at least") || e.contains("from 1"), "{e}");
        }
        assert_eq!(ApiConfig::default().max_endpoints_per_org, 100);
    }
}
