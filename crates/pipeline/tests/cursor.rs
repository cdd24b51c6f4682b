//! The sweeper's cursor against hostile commit orders and failures: event
//! ids are made before their write commits, so a later id can commit (and
//! be fanned out) first; a stream record can be lost; a fan-out can fail.
//! Whatever the order, every event is fanned out, and the cursor keeps
//! moving.

use async_trait::async_trait;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{ids, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::{FanOut, Sweeper};
use webhooks_ports::{Adapters, BackendError, EventStore, Queue, ReceivedMessage};

/// A queue that refuses every send while `down` is set.
struct SwitchableQueue {
    inner: Arc<dyn Queue>,
    down: AtomicBool,
}

#[async_trait]
impl Queue for SwitchableQueue {
    async fn send_batch(
        &self,
        bodies: &[webhooks_ports::QueueMessage],
    ) -> webhooks_ports::Result<Vec<usize>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Transient("injected: queue down".into()));
        }
        self.inner.send_batch(bodies).await
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> webhooks_ports::Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }
    async fn change_visibility(&self, r: &str, d: Duration) -> webhooks_ports::Result<()> {
        self.inner.change_visibility(r, d).await
    }
    async fn delete_batch(&self, r: &[String]) -> webhooks_ports::Result<()> {
        self.inner.delete_batch(r).await
    }
}

struct Org {
    adapters: Adapters,
    queue: Arc<SwitchableQueue>,
    endpoint: Endpoint,
}

async fn org_with_an_endpoint() -> Org {
    let memory = MemoryBackend::new();
    let mut adapters = memory.adapters();
    let queue = Arc::new(SwitchableQueue {
        inner: adapters.queue.clone(),
        down: AtomicBool::new(false),
    });
    adapters.queue = queue.clone();
    let endpoint = Endpoint::new(
        "org",
        "https://receiver.test/hooks".into(),
        Subscription::All,
        Secret::generate(),
    );
    let created = adapters
        .endpoints
        .create(
            &endpoint,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .unwrap();
    assert_eq!(created, webhooks_ports::Created::Written);
    adapters
        .cursors
        .ensure("org", &ids::id_floor_at("evt", endpoint.created_at))
        .await
        .unwrap();
    Org {
        adapters,
        queue,
        endpoint,
    }
}

/// An event made now (its id is taken now), not yet written.
async fn made() -> Event {
    // Distinct milliseconds, so ids order as the events were made.
    tokio::time::sleep(Duration::from_millis(3)).await;
    Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string("{}".into()).unwrap(),
    )
}

async fn delivered_to(org: &Org, event: &Event) -> bool {
    org.adapters
        .deliveries
        .get(&delivery_id(&org.endpoint.id, &event.id))
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn an_event_that_commits_after_a_later_id_is_still_swept() {
    let org = org_with_an_endpoint().await;
    let fanout = FanOut::from_adapters(&org.adapters);
    let early = made().await;
    let late = made().await;
    // The later id commits first and the stream hands it over...
    assert!(org.adapters.events.put_if_absent(&late).await.unwrap());
    assert_eq!(
        fanout
            .fan_out(std::slice::from_ref(&late))
            .await
            .first_failure,
        None
    );
    // ...then the earlier one commits, and its stream record is lost.
    assert!(org.adapters.events.put_if_absent(&early).await.unwrap());

    let sweeper = Sweeper::from_adapters(&org.adapters, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(3)).await;
    sweeper.sweep().await;
    assert!(
        delivered_to(&org, &early).await,
        "the early event was never fanned out"
    );
    assert!(delivered_to(&org, &late).await);
}

#[tokio::test]
async fn a_failed_fan_out_never_freezes_the_cursor() {
    let org = org_with_an_endpoint().await;
    let fanout = FanOut::from_adapters(&org.adapters);
    let early = made().await;
    let late = made().await;
    assert!(org.adapters.events.put_if_absent(&late).await.unwrap());
    assert_eq!(
        fanout
            .fan_out(std::slice::from_ref(&late))
            .await
            .first_failure,
        None
    );
    assert!(org.adapters.events.put_if_absent(&early).await.unwrap());
    // The earlier event's fan-out fails, and the stream gives up on it.
    org.queue.down.store(true, Ordering::SeqCst);
    assert_eq!(
        fanout
            .fan_out(std::slice::from_ref(&early))
            .await
            .first_failure,
        Some(0)
    );
    org.queue.down.store(false, Ordering::SeqCst);

    // Later events keep coming; the sweeps catch up on everything.
    let later = made().await;
    assert!(org.adapters.events.put_if_absent(&later).await.unwrap());
    assert_eq!(
        fanout
            .fan_out(std::slice::from_ref(&later))
            .await
            .first_failure,
        None
    );
    let sweeper = Sweeper::from_adapters(&org.adapters, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(3)).await;
    sweeper.sweep().await;
    assert!(
        delivered_to(&org, &early).await,
        "the failed event was never fanned out"
    );
    let cursor = org
        .adapters
        .cursors
        .get("org")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        cursor >= later.id,
        "the cursor is stuck at {cursor}, before {}",
        later.id
    );
}

#[tokio::test]
async fn an_endpoint_gets_no_event_published_before_it_existed() {
    let org = org_with_an_endpoint().await;
    let mut old = made().await;
    old.created_at = org.endpoint.created_at - chrono::Duration::seconds(1);
    assert!(org.adapters.events.put_if_absent(&old).await.unwrap());
    FanOut::from_adapters(&org.adapters)
        .fan_out(std::slice::from_ref(&old))
        .await;
    assert!(!delivered_to(&org, &old).await);
}

/// Events whose `list_after` fails while `down` is set (a throttled table).
struct SwitchableEvents {
    inner: Arc<dyn EventStore>,
    down: AtomicBool,
}

#[async_trait]
impl EventStore for SwitchableEvents {
    async fn put_if_absent(&self, event: &Event) -> webhooks_ports::Result<bool> {
        self.inner.put_if_absent(event).await
    }
    async fn get(&self, org_id: &str, event_id: &str) -> webhooks_ports::Result<Option<Event>> {
        self.inner.get(org_id, event_id).await
    }
    async fn get_many(
        &self,
        org_id: &str,
        event_ids: &[String],
    ) -> webhooks_ports::Result<Vec<webhooks_ports::Listed>> {
        self.inner.get_many(org_id, event_ids).await
    }
    async fn list_after(
        &self,
        org_id: &str,
        after: &str,
        limit: usize,
    ) -> webhooks_ports::Result<Vec<webhooks_ports::Listed>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Transient("injected: throttled".into()));
        }
        self.inner.list_after(org_id, after, limit).await
    }
}

/// Issue 22: one event item that could not be decoded failed every listing
/// of its org's events, so the org's sweep stopped there for good. Now it
/// is passed over (logged at error with its id, counted in the report), the
/// events around it are fanned out, and the cursor moves past it; while a
/// read that may succeed later still stops the org's sweep, to be tried
/// again next pass.
#[tokio::test]
async fn an_undecodable_event_is_passed_over_and_a_failed_read_is_retried() {
    let memory = MemoryBackend::new();
    let mut adapters = memory.adapters();
    let events = Arc::new(SwitchableEvents {
        inner: adapters.events.clone(),
        down: AtomicBool::new(false),
    });
    adapters.events = events.clone();
    let endpoint = Endpoint::new(
        "org",
        "https://receiver.test/hooks".into(),
        Subscription::All,
        Secret::generate(),
    );
    let created = adapters
        .endpoints
        .create(
            &endpoint,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .unwrap();
    assert_eq!(created, webhooks_ports::Created::Written);
    adapters
        .cursors
        .ensure("org", &ids::id_floor_at("evt", endpoint.created_at))
        .await
        .unwrap();
    let org = Org {
        adapters: adapters.clone(),
        queue: Arc::new(SwitchableQueue {
            inner: adapters.queue.clone(),
            down: AtomicBool::new(false),
        }),
        endpoint,
    };
    let before = made().await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let broken = ids::new_id("evt");
    let after = made().await;
    for e in [&before, &after] {
        assert!(adapters.events.put_if_absent(e).await.unwrap());
    }
    memory
        .events
        .put_undecodable("org", &broken, "missing field `data`");
    tokio::time::sleep(Duration::from_millis(3)).await;
    let sweeper = Sweeper::from_adapters(&adapters, Duration::ZERO);

    // The table is throttled: the org's sweep stops, the cursor stays.
    events.down.store(true, Ordering::SeqCst);
    let report = sweeper.sweep().await;
    assert_eq!((report.failed_orgs, report.events), (1, 0));
    assert!(adapters.cursors.get("org").await.unwrap().unwrap() < before.id);

    events.down.store(false, Ordering::SeqCst);
    let report = sweeper.sweep().await;
    assert_eq!(report.failed_orgs, 0);
    assert_eq!(report.undecodable_events, 1);
    assert_eq!(report.events, 2);
    assert!(delivered_to(&org, &before).await);
    assert!(delivered_to(&org, &after).await);
    assert_eq!(
        adapters.cursors.get("org").await.unwrap().as_deref(),
        Some(after.id.as_str()),
        "past the undecodable event"
    );
    // Passed over once: not counted (nor logged) again.
    let report = sweeper.sweep().await;
    assert_eq!((report.undecodable_events, report.failed_orgs), (0, 0));
}
