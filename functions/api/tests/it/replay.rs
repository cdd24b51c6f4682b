//! A keyed publish repeated long after the first request stopped between
//! claiming its key and writing its event. By then the sweeper's cursor is
//! past the id the first request claimed; the event the repeat writes must
//! still be one the sweeper checks, so that a delivery is made even when
//! the stream loses its record too.

use crate::support::{request, MANAGE, ORG, WRITE};
use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::ids;
use webhooks_faults::{Faulty, Op, Script};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::Sweeper;
use webhooks_ports::{Clock, CursorStore, DeliveryStore, EventStore, IdempotencyStore, Queue};

/// A clock the test moves, starting at the system's time.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    fn advance(&self, by: Span) {
        *self.0.lock().unwrap() += by;
    }
}

async fn call(api: &Api, scope: &str, method: &str, uri: &str, body: String) -> (u16, Value) {
    let req = request(
        method,
        uri,
        body,
        Some(&[("org_id", ORG), ("scope", scope)]),
    );
    let response = webhooks_fn_api::handle(api, req).await.expect("an answer");
    let json = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

#[tokio::test]
async fn a_repeat_after_the_cursor_moved_on_is_swept_and_delivered() {
    let start = DateTime::<Utc>::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let clock = Arc::new(TestClock(Mutex::new(start)));
    let memory = MemoryBackend::with_clock(Duration::from_secs(180), clock.clone());
    let mut adapters = memory.adapters();
    // The events table's first write fails (throttled) after the key was
    // claimed.
    adapters.events = Arc::new(Faulty::new(
        memory.events.clone(),
        Arc::new(Script::new().fail(Op::PutEvent, 1..=1)),
    ));
    let api = Api::from_adapters(&adapters, ApiConfig::default());
    let sweeper = Sweeper::from_adapters(&adapters, Duration::from_secs(120));

    let endpoint = json!({"url": "https://example.com/hook", "event_types": ["*"]});
    let (status, endpoint) =
        call(&api, MANAGE, "POST", "/v1/endpoints", endpoint.to_string()).await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_string();

    // The first request claims its key, then its write fails.
    clock.advance(Span::seconds(1));
    let keyed = json!({"type": "invoice.paid", "data": {"n": 1}, "idempotency_key": "order-7"});
    let (status, _) = call(&api, WRITE, "POST", "/v1/events", keyed.to_string()).await;
    assert_eq!(status, 503);
    let claim_key = webhooks_fn_api::events::publish_claim_key(ORG, "order-7");
    let claimed = memory
        .idempotency
        .claim(&claim_key, "probe", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the key is claimed");
    let claimed = claimed.split(' ').next().unwrap().to_string();

    // Another event follows; once it is older than the settle window, a
    // sweep fans it out and moves the cursor past the claimed id.
    clock.advance(Span::seconds(1));
    let other = json!({"type": "lead_won", "data": {}});
    let (status, later) = call(&api, WRITE, "POST", "/v1/events", other.to_string()).await;
    assert_eq!(status, 202);
    let later = later["id"].as_str().unwrap().to_string();
    clock.advance(Span::minutes(10));
    let report = sweeper.sweep().await;
    assert_eq!((report.events, report.failed_orgs), (1, 0));
    let cursor = memory.cursors.get(ORG).await.unwrap().unwrap();
    assert_eq!(cursor, later);
    assert!(claimed < cursor);

    // The client tries again; the stream loses the record of what it
    // writes (nothing here reads the stream).
    let (status, replayed) = call(&api, WRITE, "POST", "/v1/events", keyed.to_string()).await;
    assert_eq!(status, 202, "{replayed}");
    let replayed = replayed["id"].as_str().unwrap().to_string();

    // The sweeps deliver it.
    clock.advance(Span::minutes(5));
    let report = sweeper.sweep().await;
    assert_eq!(report.failed_orgs, 0);
    let made = memory
        .deliveries
        .get(&delivery_id(&endpoint, &replayed))
        .await
        .unwrap();
    assert!(made.is_some(), "no delivery of the replayed event");
    let queued = memory.queue.receive(10, Duration::ZERO).await.unwrap();
    assert!(
        queued.iter().any(|m| m.body.contains(&replayed)),
        "the replayed event's delivery is queued"
    );
    // Under an id of its own: the client never saw the claimed one.
    assert_ne!(replayed, claimed);

    // Every later repeat answers the same id; one event for the key.
    let (status, again) = call(&api, WRITE, "POST", "/v1/events", keyed.to_string()).await;
    assert_eq!(
        (status, again["id"].as_str()),
        (202, Some(replayed.as_str()))
    );
    let stored: Vec<String> = memory
        .events
        .list_after(ORG, "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.expect("decodable").id)
        .collect();
    let mut expected = vec![later, replayed.clone()];
    expected.sort();
    assert_eq!(stored, expected);
    assert_eq!(
        ids::made_at(&replayed, "evt"),
        Some(start + Span::seconds(2) + Span::minutes(10))
    );
}

#[tokio::test]
async fn a_repeat_while_the_first_request_may_still_write_waits_for_it() {
    let start = DateTime::<Utc>::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let clock = Arc::new(TestClock(Mutex::new(start)));
    let memory = MemoryBackend::with_clock(Duration::from_secs(180), clock.clone());
    let mut adapters = memory.adapters();
    // The events table's first write fails (throttled) after the key was
    // claimed.
    adapters.events = Arc::new(Faulty::new(
        memory.events.clone(),
        Arc::new(Script::new().fail(Op::PutEvent, 1..=1)),
    ));
    let api = Api::from_adapters(&adapters, ApiConfig::default());
    let keyed =
        json!({"type": "invoice.paid", "data": {"n": 1}, "idempotency_key": "k"}).to_string();
    let (status, _) = call(&api, WRITE, "POST", "/v1/events", keyed.clone()).await;
    assert_eq!(status, 503);
    // A repeat 40 s on: a repeat made within the first 30 s may still be
    // writing the claimed id, so this one may not write another yet.
    clock.advance(Span::seconds(40));
    let req = request(
        "POST",
        "/v1/events",
        keyed.clone(),
        Some(&[("org_id", ORG), ("scope", WRITE)]),
    );
    let refused = webhooks_fn_api::handle(&api, req).await.unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "20");
    let body: Value = serde_json::from_slice(refused.body().as_ref()).unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_in_use");
    assert!(memory.events.is_empty());
    clock.advance(Span::seconds(20));
    let (status, first) = call(&api, WRITE, "POST", "/v1/events", keyed.clone()).await;
    assert_eq!(status, 202);
    let (_, again) = call(&api, WRITE, "POST", "/v1/events", keyed).await;
    assert_eq!(again, first);
    assert_eq!(memory.events.len(), 1);
}
