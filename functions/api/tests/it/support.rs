//! A world of memory adapters around one `Api`, and requests carrying the
//! claims an API Gateway JWT authorizer would put in the request context.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::{Delivery, DeliveryStatus, EndpointUrlPolicy, Event, EventType};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_memory::{
    MemoryCursorStore, MemoryDeliveryStore, MemoryEndpointStore, MemoryEventStore,
    MemoryIdempotencyStore, MemoryQueue,
};
use webhooks_ports::{DeliveryStore, EventStore};

pub const MANAGE: &str = "webhooks:manage";
pub const WRITE: &str = "events:write";
pub const ORG: &str = "org_a";
pub const OTHER_ORG: &str = "org_b";

pub struct TestSystem {
    pub api: Api,
    pub events: Arc<MemoryEventStore>,
    pub endpoints: Arc<MemoryEndpointStore>,
    pub deliveries: Arc<MemoryDeliveryStore>,
    pub cursors: Arc<MemoryCursorStore>,
    pub idempotency: Arc<MemoryIdempotencyStore>,
    pub queue: Arc<MemoryQueue>,
}

/// The production URL policy, as in Lambda.
pub fn world() -> TestSystem {
    world_with(ApiConfig::default())
}

pub fn world_with(config: ApiConfig) -> TestSystem {
    let events = MemoryEventStore::new();
    let endpoints = MemoryEndpointStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let cursors = MemoryCursorStore::new();
    let idempotency = MemoryIdempotencyStore::new();
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let api = Api::new(
        events.clone(),
        endpoints.clone(),
        deliveries.clone(),
        cursors.clone(),
        idempotency.clone(),
        queue.clone(),
        config,
    );
    TestSystem {
        api,
        events,
        endpoints,
        deliveries,
        cursors,
        idempotency,
        queue,
    }
}

/// A world that accepts plain-http and loopback endpoints, as `webhooks dev`.
pub fn local_world() -> TestSystem {
    world_with(ApiConfig {
        url_policy: EndpointUrlPolicy::LOCAL,
        ..ApiConfig::default()
    })
}

/// The request context of a token with these claims.
pub fn context(claims: &[(&str, &str)]) -> RequestContext {
    webhooks_fn_api::auth::context_with_claims(claims)
}

/// A request; `claims: None` sends it without any request context.
pub fn request(
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    claims: Option<&[(&str, &str)]>,
) -> Request {
    let req = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("a valid test request");
    match claims {
        Some(claims) => req.with_request_context(context(claims)),
        None => req,
    }
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: lambda_http::http::HeaderMap,
    pub bytes: Vec<u8>,
    /// The body as JSON, `Null` when it is empty or not JSON.
    pub json: Value,
}

impl Reply {
    /// The error code, after checking the error body's shape.
    pub fn error_code(&self) -> &str {
        let error = &self.json["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.json
        );
        assert_eq!(
            self.json.as_object().map(|o| o.len()),
            Some(1),
            "{}",
            self.json
        );
        error["code"].as_str().expect("an error code")
    }

    pub fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or_default()
    }

    /// Asserts a 400 whose message names `field`.
    pub fn assert_invalid(&self, field: &str) {
        assert_eq!(self.status, 400, "{}", self.json);
        assert_eq!(self.error_code(), "invalid_request");
        assert!(
            self.error_message().contains(field),
            "message does not name {field}: {}",
            self.error_message()
        );
    }

    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.json);
        assert_eq!(self.error_code(), code);
    }
}

impl TestSystem {
    /// Sends a prepared request.
    pub async fn send(&self, req: Request) -> Reply {
        let response = webhooks_fn_api::handle(&self.api, req)
            .await
            .expect("handle never returns Err");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes: Vec<u8> = response.body().as_ref().to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !bytes.is_empty() {
            assert_eq!(headers["content-type"], "application/json");
        }
        Reply {
            status,
            headers,
            bytes,
            json,
        }
    }

    /// A request from `org` holding `scope`.
    pub async fn call_as(
        &self,
        org: &str,
        scope: &str,
        method: &str,
        uri: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.send(request(
            method,
            uri,
            body,
            Some(&[("org_id", org), ("scope", scope)]),
        ))
        .await
    }

    /// A `webhooks:manage` request from [`ORG`].
    pub async fn manage(&self, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        self.call_as(ORG, MANAGE, method, uri, body).await
    }

    /// Registers an endpoint for `org` through the API; returns its JSON.
    pub async fn create_endpoint_for(&self, org: &str, types: &[&str]) -> Value {
        let r = self
            .call_as(
                org,
                MANAGE,
                "POST",
                "/v1/endpoints",
                serde_json::json!({"url": "https://example.com/hook", "event_types": types})
                    .to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.json
    }

    /// Registers an endpoint for [`ORG`]; returns its id.
    pub async fn create_endpoint(&self, types: &[&str]) -> String {
        self.create_endpoint_for(ORG, types).await["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    /// Stores an event and a delivery of it to `endpoint_id` with `status`.
    pub async fn delivery(
        &self,
        org: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
    ) -> (Event, Delivery) {
        let data = serde_json::value::RawValue::from_string(r#"{"n": 1, "a": [true]}"#.into())
            .expect("valid JSON");
        let event = Event::new(org, EventType::InvoicePaid, data);
        self.events.put_if_absent(&event).await.expect("stored");
        let mut delivery = Delivery::new(org, endpoint_id, &event.id, event.event_type);
        delivery.status = status;
        if status != DeliveryStatus::Pending {
            delivery.next_attempt_at = None;
            delivery.last_error = Some("HTTP 500".into());
        }
        self.deliveries
            .create_if_absent(&delivery)
            .await
            .expect("stored");
        (event, delivery)
    }

    /// The stored status of a delivery.
    pub async fn status_of(&self, delivery_id: &str) -> DeliveryStatus {
        self.deliveries
            .get(delivery_id)
            .await
            .expect("read")
            .expect("exists")
            .status
    }
}
