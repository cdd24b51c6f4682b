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
use webhooks_ports::{Adapters, BackendError, Queue, ReceivedMessage};

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
