//! What a delivery sent, as `GET /v1/deliveries/{id}` shows it (issue 25):
//! the real fan-out and sender POST to a real receiver on 127.0.0.1, and
//! the API's `request` must be the body it received, byte for byte, and
//! its headers, each value that derives from the secret masked. On the
//! memory backend and on DynamoDB and SQS (moto).

use crate::support::MotoBackend;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use webhooks::event_sources::QueueMapping;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{
    DeliveryStatus, Endpoint, Event, EventType, RetrySchedule, Secret, Subscription,
};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::sender::MASKED;
use webhooks_pipeline::{DeliveryClient, DeliveryClientConfig, FanOut, Sender, SenderConfig};
use webhooks_ports::Adapters;
use webhooks_testkit::{Receiver, Reply};

const ORG: &str = "org_request";

async fn get(api: &Api, org: &str, path: &str) -> (u16, Value) {
    let req = lambda_http::http::Request::builder()
        .method("GET")
        .uri(path)
        .body(lambda_http::Body::Empty)
        .expect("request");
    let req = lambda_http::RequestExt::with_request_context(
        req,
        webhooks_fn_api::auth::context_with_claims(&[
            ("org_id", org),
            ("scope", "webhooks:manage"),
        ]),
    );
    let r = webhooks_fn_api::handle(api, req)
        .await
        .expect("handle never returns Err");
    let json = serde_json::from_slice(r.body().as_ref()).unwrap_or_default();
    (r.status().as_u16(), json)
}

/// One event delivered in two attempts (the receiver fails the first), then
/// the delivery read through the API.
async fn the_request_shown_is_the_request_sent(adapters: Adapters) {
    let receiver = Receiver::start(|n, _| Reply::Status(if n == 0 { 500 } else { 204 })).await;
    let ep = Endpoint::new(
        ORG,
        receiver.url("/hooks"),
        Subscription::All,
        Secret::generate(),
    );
    let created = adapters
        .endpoints
        .create(&ep, 100)
        .await
        .expect("create endpoint");
    assert_eq!(created, webhooks_ports::Created::Written);
    // Data whose bytes a re-serialisation would change: spacing, key order,
    // an escaped character, a long number.
    let data = r#"{ "z": 1, "a": "caf\u00e9",  "n": 12345678901234567890 }"#;
    let event = Event::new(
        ORG,
        EventType::InvoicePaid,
        RawValue::from_string(data.into()).expect("json"),
    );
    assert!(adapters.events.put_if_absent(&event).await.expect("put"));
    let report = FanOut::from_adapters(&adapters)
        .fan_out(std::slice::from_ref(&event))
        .await;
    assert_eq!(report.enqueued, 1);

    let client = DeliveryClient::new(DeliveryClientConfig {
        request_timeout: Duration::from_secs(5),
        allow_private: true,
        ..DeliveryClientConfig::default()
    })
    .expect("client");
    let sender = Arc::new(Sender::from_adapters(
        &adapters,
        client,
        SenderConfig {
            schedule: "1s".parse::<RetrySchedule>().expect("schedule"),
            ..SenderConfig::default()
        },
    ));
    let mapping = QueueMapping::new(adapters.queue.clone(), sender);
    let id = delivery_id(&ep.id, &event.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        mapping.step(Duration::from_millis(200)).await;
        let d = adapters.deliveries.get(&id).await.expect("get");
        if d.is_some_and(|d| d.status == DeliveryStatus::Delivered) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let last = &got[1];

    let api = Api::from_adapters(&adapters, ApiConfig::default());
    let (status, v) = get(&api, ORG, &format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "delivered");
    let request = &v["request"];
    assert_eq!(
        request["body"].as_str().expect("a body string").as_bytes(),
        last.body.as_ref(),
        "the body shown is the body received, byte for byte"
    );
    assert!(request["body"].as_str().unwrap().contains(data));
    let shown = request["headers"].as_object().expect("headers");
    // Every header shown was received; each value the same, but for those
    // from the secret, which are masked.
    let mut masked = Vec::new();
    for (name, value) in shown {
        let sent = last
            .header(name)
            .unwrap_or_else(|| panic!("{name} shown but not sent"));
        if value == MASKED {
            masked.push(name.as_str());
            assert!(!sent.contains(MASKED));
        } else {
            assert_eq!(value, sent, "{name}");
        }
    }
    masked.sort_unstable();
    assert_eq!(masked, ["webhook-signature", "x-signature"]);
    for name in [
        "content-type",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "x-webhook-event",
        "x-webhook-delivery",
    ] {
        assert!(shown.contains_key(name), "{name}");
    }
    // The headers of the last attempt.
    assert_eq!(shown["x-webhook-attempt"], "2");
    // Nothing of the secret anywhere in the answer.
    let text = v.to_string();
    assert!(!text.contains(ep.secret.expose()));
    for sig in ["x-signature", "webhook-signature"] {
        assert!(!text.contains(last.header(sig).unwrap()));
    }

    // Another org sees no such delivery.
    let (status, _) = get(&api, "org_else", &format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn on_memory_a_delivery_shows_the_body_and_headers_it_sent() {
    the_request_shown_is_the_request_sent(MemoryBackend::new().adapters()).await;
}

#[tokio::test]
async fn on_moto_a_delivery_shows_the_body_and_headers_it_sent() {
    let backend = MotoBackend::new("delivery_request").await;
    the_request_shown_is_the_request_sent(backend.adapters).await;
}
