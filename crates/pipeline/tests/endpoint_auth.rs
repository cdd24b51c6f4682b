//! An endpoint's custom headers and auth as the sender sends them
//! (CONTRACT section 12), against real HTTP servers on 127.0.0.1: the
//! receiver, and for OAuth 2.0 a token endpoint. The in-memory stores and
//! queue stand in for AWS.

use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::endpoint::CustomHeaders;
use webhooks_domain::{
    Delivery, DeliveryStatus, DeliveryTask, Endpoint, Event, EventType, Secret, Subscription,
};
use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, MessageOutcome, Sender, SenderConfig,
};
use webhooks_ports::{DeliveryStore, EndpointStore, Queue};
use webhooks_testkit::signatures::verify_delivery;
use webhooks_testkit::{Receiver, Reply};

struct World {
    endpoints: Arc<MemoryEndpointStore>,
    deliveries: Arc<MemoryDeliveryStore>,
    queue: Arc<MemoryQueue>,
    sender: Sender,
}

fn world(schedule: &str) -> World {
    let endpoints = MemoryEndpointStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let dlq = MemoryQueue::new(Duration::from_secs(30));
    let queue = MemoryQueue::with_redrive(Duration::from_secs(30), dlq.clone(), 30);
    let sender = Sender::new(
        endpoints.clone(),
        endpoints.clone(),
        deliveries.clone(),
        queue.clone(),
        dlq,
        DeliveryClient::new(DeliveryClientConfig {
            request_timeout: Duration::from_secs(5),
            allow_private: true,
            static_hosts: HashMap::new(),
        })
        .expect("client"),
        SenderConfig {
            schedule: schedule.parse().expect("schedule"),
            ..SenderConfig::default()
        },
    );
    World {
        endpoints,
        deliveries,
        queue,
        sender,
    }
}

impl World {
    async fn add(&self, ep: &Endpoint) {
        let created = self
            .endpoints
            .create(ep, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
            .await
            .expect("create");
        assert_eq!(created, webhooks_ports::Created::Written);
    }

    /// Queues a new event's task to `ep` and creates its delivery.
    async fn enqueue(&self, ep: &Endpoint) -> (Event, Delivery) {
        let event = Event::new(
            "org",
            EventType::InvoicePaid,
            RawValue::from_string(r#"{"x":1}"#.into()).expect("json"),
        );
        let d = Delivery::new("org", &ep.id, &event.id, event.event_type);
        let task = DeliveryTask {
            delivery_id: d.id.clone(),
            org_id: "org".into(),
            endpoint_id: ep.id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            payload: event.payload(),
            trace_id: None,
            redriven: false,
        };
        self.queue
            .send_batch(&[webhooks_ports::QueueMessage::task(&task)])
            .await
            .expect("send");
        self.deliveries.create_if_absent(&d).await.expect("create");
        (event, d)
    }

    /// Receives one batch (up to 10) and runs the sender over it.
    async fn run_once(&self) -> Vec<MessageOutcome> {
        let msgs = self
            .queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive");
        let outcomes = self.sender.process_batch(&msgs).await;
        let done: Vec<String> = msgs
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == MessageOutcome::Done)
            .map(|(m, _)| m.receipt_handle.clone())
            .collect();
        self.queue.delete_batch(&done).await.expect("delete");
        outcomes
    }

    async fn delivery(&self, id: &str) -> Delivery {
        self.deliveries.get(id).await.expect("get").expect("exists")
    }
}

fn endpoint(url: String) -> Endpoint {
    Endpoint::new("org", url, Subscription::All, Secret::generate())
}

fn headers(pairs: &[(&str, &str)]) -> CustomHeaders {
    CustomHeaders::new(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        false,
    )
    .expect("valid headers")
}

#[tokio::test]
async fn custom_headers_go_on_every_attempt_and_leave_the_signatures_over_the_body() {
    // Fails once, then accepts: two attempts.
    let rx = Receiver::start(|n, _| Reply::Status(if n == 0 { 503 } else { 204 })).await;
    let w = world("0s");
    let mut ep = endpoint(rx.url("/in"));
    ep.headers = headers(&[("X-Api-Key", "key-123"), ("X-Tenant", "acme corp")]);
    w.add(&ep).await;
    let (event, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    assert_eq!(w.delivery(&d.id).await.status, DeliveryStatus::Delivered);

    let got = rx.received();
    assert_eq!(got.len(), 2);
    for (n, req) in got.iter().enumerate() {
        assert_eq!(req.header("x-api-key"), Some("key-123"), "attempt {n}");
        assert_eq!(req.header("x-tenant"), Some("acme corp"), "attempt {n}");
        // Both signatures check with the body alone.
        verify_delivery(req, ep.secret.expose()).expect("signatures over the body");
        assert_eq!(req.body.as_ref(), event.payload().as_bytes());
        assert_eq!(req.header("authorization"), None);
    }
    assert_eq!(got[1].header("x-webhook-attempt"), Some("2"));
}

fn auth(value: serde_json::Value) -> webhooks_domain::endpoint::EndpointAuth {
    webhooks_domain::endpoint::EndpointAuth::parse(
        &value,
        &webhooks_domain::EndpointUrlPolicy::LOCAL,
    )
    .expect("valid auth")
}

#[tokio::test]
async fn basic_auth_goes_on_every_attempt_beside_the_custom_headers() {
    // A receiver that checks the header: 401 without the right credentials.
    // RFC 7617's example: base64("Aladdin:open sesame").
    let rx = Receiver::start(|n, req| {
        if req.header("authorization") != Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") {
            Reply::Status(401)
        } else if n == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    })
    .await;
    let w = world("0s");
    let mut ep = endpoint(rx.url("/in"));
    ep.auth = Some(auth(
        serde_json::json!({"type":"basic","username":"Aladdin","password":"open sesame"}),
    ));
    ep.headers = headers(&[("X-Tenant", "acme")]);
    w.add(&ep).await;
    let (_, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    let d = w.delivery(&d.id).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(
        d.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(500), Some(204)]
    );
    for req in rx.received() {
        assert_eq!(req.header("x-tenant"), Some("acme"));
        verify_delivery(&req, ep.secret.expose()).expect("signatures over the body");
    }
}
