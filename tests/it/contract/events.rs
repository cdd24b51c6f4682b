//! `EventStore`: each org's events, written once, read back in id order.

use super::on_both_backends;
use serde_json::value::RawValue;
use std::time::Duration;
use webhooks_domain::{Event, EventType};
use webhooks_ports::{Adapters, Listed};

async fn event(org: &str, n: u32) -> Event {
    // Distinct milliseconds, so ids order as the events were made.
    tokio::time::sleep(Duration::from_millis(2)).await;
    Event::new(
        org,
        EventType::InvoicePaid,
        RawValue::from_string(format!(r#"{{"n":{n},"s":"é\u2028"}}"#)).unwrap(),
    )
}

async fn events_contract(a: Adapters) {
    let store = a.events;
    let first = event("o", 1).await;
    let second = event("o", 2).await;
    let third = event("o", 3).await;
    let theirs = event("p", 4).await;
    // Written out of id order, as concurrent writers commit.
    for e in [&third, &first, &theirs, &second] {
        assert!(store.put_if_absent(e).await.unwrap(), "first write");
    }
    assert!(!store.put_if_absent(&first).await.unwrap(), "written once");

    let back = store.get("o", &second.id).await.unwrap().expect("stored");
    assert_eq!(
        back.payload(),
        second.payload(),
        "the payload byte for byte"
    );
    assert_eq!(back.event_type, second.event_type);
    assert!(
        store.get("p", &second.id).await.unwrap().is_none(),
        "per org"
    );

    let ids = |v: Vec<Listed>| v.into_iter().map(|e| e.unwrap().id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_after("o", "evt_", 10).await.unwrap()),
        [first.id.clone(), second.id.clone(), third.id.clone()],
        "in id order, whatever the commit order"
    );
    assert_eq!(
        ids(store.list_after("o", &first.id, 10).await.unwrap()),
        [second.id.clone(), third.id.clone()],
        "after is exclusive"
    );
    assert_eq!(
        ids(store.list_after("o", "evt_", 2).await.unwrap()),
        [first.id.clone(), second.id.clone()],
        "at most the limit"
    );
    assert_eq!(
        ids(store.list_after("p", "evt_", 10).await.unwrap()),
        std::slice::from_ref(&theirs.id)
    );
    // Several at once, each once however often named, only the org's, the
    // missing left out.
    let wanted = [
        third.id.clone(),
        first.id.clone(),
        third.id.clone(),
        theirs.id.clone(),
        "evt_missing".to_string(),
    ];
    let mut many = ids(store.get_many("o", &wanted).await.unwrap());
    many.sort();
    assert_eq!(many, [first.id.clone(), third.id.clone()]);
    let back = store.get_many("o", std::slice::from_ref(&second.id)).await.unwrap();
    assert_eq!(
        back[0].as_ref().unwrap().payload(),
        second.payload(),
        "the payload byte for byte"
    );
    assert!(store.get_many("o", &[]).await.unwrap().is_empty());
}

on_both_backends!(events_contract, memory_events, moto_events);
