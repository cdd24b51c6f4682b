//! The sweeper's cursor against hostile commit orders and failures: event
//! ids are made before their write commits, so a later id can commit (and
//! be fanned out) first; a stream record can be lost; a fan-out can fail.
//! Whatever the order, every event is fanned out, and the cursor keeps
//! moving.

use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{ids, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_faults::{Faulty, Op, Switch};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::{FanOut, Sweeper};
use webhooks_ports::Adapters;

struct Org {
    adapters: Adapters,
    /// Refuses every send while on.
    queue_down: Arc<Switch>,
    endpoint: Endpoint,
}

async fn org_with_an_endpoint() -> Org {
    let memory = MemoryBackend::new();
    let mut adapters = memory.adapters();
    let queue_down = Arc::new(Switch::new(&[Op::Send]));
    adapters.queue = Arc::new(Faulty::new(adapters.queue.clone(), queue_down.clone()));
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
        queue_down,
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

/// Whether the event's delivery was made: recorded, or noted by the
/// stream's fan-out until its first attempt.
async fn delivered_to(org: &Org, event: &Event) -> bool {
    let id = delivery_id(&org.endpoint.id, &event.id);
    let deliveries = &org.adapters.deliveries;
    deliveries.get(&id).await.unwrap().is_some()
        || !deliveries
            .noted("org", std::slice::from_ref(&id))
            .await
            .unwrap()
            .is_empty()
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
    org.queue_down.set(true);
    assert_eq!(
        fanout
            .fan_out(std::slice::from_ref(&early))
            .await
            .first_failure,
        Some(0)
    );
    org.queue_down.set(false);

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
    // Its listings fail while on (a throttled table).
    let events_down = Arc::new(Switch::new(&[Op::ListEvents]));
    adapters.events = Arc::new(Faulty::new(adapters.events.clone(), events_down.clone()));
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
        queue_down: Arc::new(Switch::new(&[])),
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
    events_down.set(true);
    let report = sweeper.sweep().await;
    assert_eq!((report.failed_orgs, report.events), (1, 0));
    assert!(adapters.cursors.get("org").await.unwrap().unwrap() < before.id);

    events_down.set(false);
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
