//! Payload filters in the fan-out (issue 25): what the endpoints that
//! filter an event out cost. They must add no request and no write; only
//! the match itself, in memory.

use crate::support::MotoBackend;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use webhooks_aws::request_counter::RequestCounter;
use webhooks_domain::{Endpoint, Event, EventFilter, EventType, Secret, Subscription};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::FanOut;
use webhooks_ports::{Adapters, Created, EndpointStore};

/// How many endpoints of the crowded org filter the event out.
const FILTERED_OUT: usize = 60;

fn endpoint(org: &str, pattern: serde_json::Value) -> Endpoint {
    let mut ep = Endpoint::new(
        org,
        "https://example.com/hook".into(),
        Subscription::All,
        Secret::generate(),
    );
    ep.filter = Some(EventFilter::parse(&pattern).expect("a valid pattern"));
    ep
}

/// One endpoint that takes the org's euro invoices, and `crowd` more that
/// want only dollars.
async fn org_with(store: &dyn EndpointStore, org: &str, crowd: usize) -> Endpoint {
    let taker = endpoint(org, json!({"data": {"currency": ["eur"]}}));
    assert_eq!(store.create(&taker, 1_000).await.unwrap(), Created::Written);
    for _ in 0..crowd {
        let other = endpoint(org, json!({"data": {"currency": ["usd"]}}));
        assert_eq!(store.create(&other, 1_000).await.unwrap(), Created::Written);
    }
    taker
}

fn euro_invoice(org: &str) -> Event {
    Event::new(
        org,
        EventType::InvoicePaid,
        RawValue::from_string(r#"{"amount":120,"currency":"eur"}"#.into()).unwrap(),
    )
}

/// Every request of one fan-out of one event of `org`.
async fn requests_of_one_fan_out(
    counted: &Adapters,
    counter: &RequestCounter,
    org: &str,
) -> BTreeMap<(String, String), u64> {
    counter.reset();
    let report = FanOut::from_adapters(counted)
        .fan_out(&[euro_invoice(org)])
        .await;
    assert_eq!((report.noted, report.enqueued), (1, 1), "{org}");
    assert_eq!(report.first_failure, None);
    counter.snapshot()
}

#[tokio::test]
async fn on_moto_endpoints_that_filter_an_event_out_cost_no_request() {
    let backend = MotoBackend::new("filter_cost").await;
    let store = backend.adapters.endpoints.as_ref();
    org_with(store, "alone", 0).await;
    let taker = org_with(store, "crowd", FILTERED_OUT).await;
    let counter = RequestCounter::new();
    let counted = backend.counted_adapters(&counter).await;

    let alone = requests_of_one_fan_out(&counted, &counter, "alone").await;
    let crowd = requests_of_one_fan_out(&counted, &counter, "crowd").await;
    println!("one event, 1 endpoint that takes it: {alone:?}");
    println!("the same beside {FILTERED_OUT} endpoints that filter it out: {crowd:?}");
    assert_eq!(alone, crowd, "filtered-out endpoints add no request");
    assert!(!alone.is_empty(), "the counter counted");
    // The stream's fan-out notes the delivery; its first attempt will
    // create the record. The note lists the taker's deliveries only.
    let noted: Vec<String> = backend
        .adapters
        .deliveries
        .notes_between("crowd", "0", "9", 10)
        .await
        .unwrap()
        .notes
        .into_iter()
        .flat_map(|n| n.delivery_ids.to_vec())
        .collect();
    assert_eq!(noted.len(), 1);
    let (endpoint, _) = webhooks_domain::delivery::parse_delivery_id(&noted[0]).unwrap();
    assert_eq!(endpoint, taker.id);
}

/// The CPU the matches add: one event fanned out, in memory, with and
/// without the endpoints that filter it out. Printed as a figure; the
/// deliveries and messages must be the same.
#[tokio::test]
async fn the_cpu_of_filtered_out_endpoints_per_event() {
    const EVENTS: usize = 2_000;
    let memory = MemoryBackend::new();
    org_with(memory.endpoints.as_ref(), "alone", 0).await;
    org_with(memory.endpoints.as_ref(), "crowd", FILTERED_OUT).await;
    let fanout = FanOut::from_adapters(&memory.adapters());
    let mut per_event = Vec::new();
    for org in ["alone", "crowd"] {
        let events: Vec<Event> = (0..EVENTS).map(|_| euro_invoice(org)).collect();
        let started = Instant::now();
        let mut created = 0;
        for chunk in events.chunks(100) {
            let report = fanout.fan_out(chunk).await;
            assert_eq!(report.first_failure, None);
            created += report.noted;
        }
        assert_eq!(created, EVENTS, "{org}: one delivery per event");
        per_event.push(started.elapsed() / u32::try_from(EVENTS).unwrap());
    }
    assert_eq!(memory.queue.len(), 2 * EVENTS);
    let extra = per_event[1].saturating_sub(per_event[0]);
    let per_endpoint_ns = extra.as_nanos() / FILTERED_OUT as u128;
    println!(
        "fan-out per event (memory, debug build): 1 endpoint {:?}; with {FILTERED_OUT} more that filter it out {:?}; about {per_endpoint_ns} ns per filtered-out endpoint",
        per_event[0], per_event[1]
    );
    // Generous: a match is a few map lookups; a regression to per-endpoint
    // parsing or I/O would be far over this.
    assert!(extra < Duration::from_millis(5), "{extra:?} per event");
}
