//! The inbound routes end to end on the memory adapters. Each provider's
//! signing side is written here from its documentation, independently of
//! the verifiers under test.

mod stripe;
mod stripe_replay;
mod twilio;
mod whatsapp;

use http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::Event;
use webhooks_fn_inbound::{Inbound, InboundConfig};
use webhooks_memory::{MemoryEventStore, MemoryIdempotencyStore, MemoryInboundStore};
use webhooks_ports::{EventStore, IdempotencyStore};

pub const STRIPE_SECRET: &str = "whsec_test_c2VjcmV0";
pub const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
pub const VERIFY_TOKEN: &str = "meta-verify-token";
pub const APP_SECRET: &str = "meta-app-secret";
pub const BASE_URL: &str = "https://hooks.example.com";

pub fn config() -> InboundConfig {
    InboundConfig {
        stripe_webhook_secret: Some(STRIPE_SECRET.into()),
        twilio_auth_token: Some(TWILIO_TOKEN.into()),
        whatsapp_verify_token: Some(VERIFY_TOKEN.into()),
        whatsapp_app_secret: Some(APP_SECRET.into()),
        public_base_url: Some(BASE_URL.into()),
        stripe_tolerance: Duration::from_secs(300),
    }
}

/// The handler over fresh memory stores.
pub struct TestSystem {
    pub inbound: Inbound,
    pub events: Arc<MemoryEventStore>,
    pub idempotency: Arc<MemoryIdempotencyStore>,
    pub store: Arc<MemoryInboundStore>,
}

impl Default for TestSystem {
    fn default() -> Self {
        Self::with(config())
    }
}

impl TestSystem {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(config: InboundConfig) -> Self {
        let events = MemoryEventStore::new();
        let idempotency = MemoryIdempotencyStore::new();
        let store = MemoryInboundStore::new();
        let inbound = Inbound::new(events.clone(), idempotency.clone(), store.clone(), config);
        TestSystem {
            inbound,
            events,
            idempotency,
            store,
        }
    }

    pub async fn send(&self, req: lambda_http::Request) -> Reply {
        let resp = webhooks_fn_inbound::handle(&self.inbound, req)
            .await
            .expect("the handler never errors");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8(resp.body().as_ref().to_vec()).expect("UTF-8 body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The org's platform events, in id order.
    pub async fn events_of(&self, org_id: &str) -> Vec<Event> {
        self.events
            .list_after(org_id, "", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.expect("a readable event"))
            .collect()
    }

    /// Checks that a refused request left no trace in the stores.
    pub fn assert_nothing_stored(&self) {
        assert!(self.events.is_empty(), "no platform event");
        assert!(self.store.is_empty(), "no inbound record");
    }

    /// Checks that no platform event id was claimed for a Stripe event (a
    /// fresh claim of its key succeeds).
    pub async fn assert_unclaimed(&self, stripe_event_id: &str) {
        let claim = self
            .idempotency
            .claim(
                &format!("stripe:{stripe_event_id}"),
                "probe",
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(claim, None, "no idempotency claim");
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The `error.code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A request as API Gateway hands it to the function: raw body as text.
pub fn request(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> lambda_http::Request {
    request_with_body(
        method,
        uri,
        headers,
        lambda_http::Body::Text(body.to_string()),
    )
}

pub fn request_with_body(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: lambda_http::Body,
) -> lambda_http::Request {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("a valid test request")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
