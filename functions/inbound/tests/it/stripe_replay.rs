//! A Stripe event retried long after the first delivery of it stopped
//! between claiming its platform event's id and writing the event (the
//! claim lives 7 days; Stripe retries for 3). By then the sweeper's cursor
//! is past the claimed id; the event the retry writes must still be one
//! the sweeper checks, so that a delivery is made even when the stream
//! loses its record too.

use crate::stripe::{event_body, invoice, post, stripe_v1};
use crate::{config, STRIPE_SECRET};
use chrono::{DateTime, Duration as Span, Utc};
use http::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{ids, Endpoint, Event, Secret, Subscription};
use webhooks_faults::{Faulty, Op, Script};
use webhooks_fn_inbound::Inbound;
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::Sweeper;
use webhooks_ports::{
    Clock, CursorStore, DeliveryStore, EndpointStore, EventStore, IdempotencyStore, Queue,
};

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

/// Stripe's POST of `body`, signed at the clock's time.
async fn deliver(inbound: &Inbound, clock: &TestClock, body: &str) -> StatusCode {
    let t = clock.now().timestamp();
    let header = format!("t={t},v1={}", stripe_v1(STRIPE_SECRET, t, body));
    webhooks_fn_inbound::handle(inbound, post(Some(&header), body))
        .await
        .expect("an answer")
        .status()
}

#[tokio::test]
async fn a_retry_after_the_cursor_moved_on_is_swept_and_delivered() {
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
    let inbound = Inbound::from_adapters(&adapters, config());
    let sweeper = Sweeper::from_adapters(&adapters, Duration::from_secs(120));
    let mut endpoint = Endpoint::new(
        "org_a",
        "https://example.com/hook".into(),
        Subscription::All,
        Secret::generate(),
    );
    endpoint.created_at = start;
    let created = memory.endpoints.create(&endpoint, 10).await.unwrap();
    assert_eq!(created, webhooks_ports::Created::Written);
    memory
        .cursors
        .ensure("org_a", &ids::id_floor_at("evt", start))
        .await
        .unwrap();

    // The first delivery of a billing event claims the platform event's
    // id, then its write fails: Stripe will retry.
    clock.advance(Span::seconds(1));
    let paid = event_body("evt_paid", "invoice.paid", &invoice("org_a"));
    assert_eq!(
        deliver(&inbound, &clock, &paid).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let claimed = memory
        .idempotency
        .claim("stripe:evt_paid", "probe", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the platform event's id is claimed");

    // Another billing event follows; a sweep fans it out once it is older
    // than the settle window, and moves the cursor past the claimed id.
    clock.advance(Span::seconds(1));
    let failed = event_body("evt_failed", "invoice.payment_failed", &invoice("org_a"));
    assert_eq!(deliver(&inbound, &clock, &failed).await, StatusCode::OK);
    clock.advance(Span::minutes(10));
    let report = sweeper.sweep().await;
    assert_eq!((report.events, report.failed_orgs), (1, 0));
    let cursor = memory.cursors.get("org_a").await.unwrap().unwrap();
    assert!(claimed < cursor);

    // Stripe retries the first event; the stream loses the record of what
    // it writes (nothing here reads the stream).
    assert_eq!(deliver(&inbound, &clock, &paid).await, StatusCode::OK);
    let events: Vec<Event> = memory
        .events
        .list_after("org_a", "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.expect("decodable"))
        .collect();
    assert_eq!(events.len(), 2, "one platform event per Stripe event");
    let retried = events
        .iter()
        .find(|e| e.data.get().contains("evt_paid"))
        .expect("the retried event's platform event")
        .id
        .clone();

    // The sweeps deliver it.
    clock.advance(Span::minutes(5));
    assert_eq!(sweeper.sweep().await.failed_orgs, 0);
    let made = memory
        .deliveries
        .get(&delivery_id(&endpoint.id, &retried))
        .await
        .unwrap();
    assert!(made.is_some(), "no delivery of the retried event");
    let queued = memory.queue.receive(10, Duration::ZERO).await.unwrap();
    assert!(queued.iter().any(|m| m.body.contains(&retried)));
    assert_ne!(retried, claimed);

    // Stripe's later retries write nothing more.
    assert_eq!(deliver(&inbound, &clock, &paid).await, StatusCode::OK);
    assert_eq!(memory.events.len(), 2);
}
