//! `EventStore`: each org's events, written once, read back in id order.

use super::on_both_backends;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use serde_json::value::RawValue;
use std::time::Duration;
use webhooks_domain::{ids, Event, EventType};
use webhooks_ports::{cursor, Adapters, BackendError, EventLogQuery, EventStore, Listed};

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
    let back = store
        .get_many("o", std::slice::from_ref(&second.id))
        .await
        .unwrap();
    assert_eq!(
        back[0].as_ref().unwrap().payload(),
        second.payload(),
        "the payload byte for byte"
    );
    assert!(store.get_many("o", &[]).await.unwrap().is_empty());
}

on_both_backends!(events_contract, memory_events, moto_events);

/// An event of `org` made at `t` (its id and its time).
fn event_at(org: &str, t: DateTime<Utc>, event_type: EventType, entropy: u128) -> Event {
    let mut e = Event::new(
        org,
        event_type,
        RawValue::from_string(format!(r#"{{"at":"{t}"}}"#)).unwrap(),
    );
    e.id = ids::id_at("evt", t, entropy);
    e.created_at = t;
    e
}

fn log_query(limit: usize) -> EventLogQuery {
    EventLogQuery {
        event_type: None,
        since: None,
        until: None,
        limit,
        cursor: None,
    }
}

/// Every page of `query` from the first: the ids of each.
async fn all_pages(
    store: &dyn EventStore,
    org: &str,
    mut query: EventLogQuery,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = store.log_page(org, &query).await.expect("a page");
        assert!(
            page.items.len() <= query.limit,
            "{} > {}",
            page.items.len(),
            query.limit
        );
        pages.push(page.items.iter().map(|e| e.id.clone()).collect());
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return pages,
        }
        assert!(pages.len() < 50, "pages never end");
    }
}

/// The event log: newest first, by type and time window, paged with
/// cursors that neither skip nor repeat, one org only.
async fn event_log_contract(a: Adapters) {
    let store = a.events;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
    let types = [
        EventType::InvoicePaid,
        EventType::LeadWon,
        EventType::InvoicePaid,
    ];
    let events: Vec<Event> = (0..9)
        .map(|i| {
            event_at(
                "o",
                t0 + Span::seconds(i),
                types[i as usize % 3],
                1 + i as u128,
            )
        })
        .collect();
    // Written newest first, and one of another org in between.
    for e in events.iter().rev() {
        assert!(store.put_if_absent(e).await.unwrap());
    }
    let theirs = event_at("p", t0 + Span::seconds(3), EventType::InvoicePaid, 99);
    assert!(store.put_if_absent(&theirs).await.unwrap());
    let newest_first = |pick: &dyn Fn(&Event) -> bool| -> Vec<String> {
        events
            .iter()
            .rev()
            .filter(|e| pick(e))
            .map(|e| e.id.clone())
            .collect()
    };

    let first = store.log_page("o", &log_query(4)).await.unwrap();
    assert_eq!(first.items[0].id, events[8].id);
    assert_eq!(first.items[0].event_type, events[8].event_type);
    assert_eq!(first.items[0].created_at, t0 + Span::seconds(8));
    let pages = all_pages(store.as_ref(), "o", log_query(4)).await;
    assert_eq!(
        pages.concat(),
        newest_first(&|_| true),
        "every event once, newest first"
    );
    assert_eq!(pages[0].len(), 4);

    let paid = EventLogQuery {
        event_type: Some(EventType::InvoicePaid),
        ..log_query(2)
    };
    let pages = all_pages(store.as_ref(), "o", paid).await;
    assert_eq!(
        pages.concat(),
        newest_first(&|e| e.event_type == EventType::InvoicePaid),
        "only the type"
    );

    let window = EventLogQuery {
        since: Some(t0 + Span::seconds(2)),
        until: Some(t0 + Span::seconds(6)),
        ..log_query(3)
    };
    let pages = all_pages(store.as_ref(), "o", window.clone()).await;
    let in_window = newest_first(&|e| {
        e.created_at >= t0 + Span::seconds(2) && e.created_at < t0 + Span::seconds(6)
    });
    assert_eq!(in_window.len(), 4);
    assert_eq!(
        pages.concat(),
        in_window,
        "since inclusive, until exclusive"
    );
    let typed_window = EventLogQuery {
        event_type: Some(EventType::LeadWon),
        ..window
    };
    assert_eq!(
        all_pages(store.as_ref(), "o", typed_window).await.concat(),
        newest_first(&|e| {
            e.event_type == EventType::LeadWon
                && e.created_at >= t0 + Span::seconds(2)
                && e.created_at < t0 + Span::seconds(6)
        })
    );

    let empty = EventLogQuery {
        since: Some(t0 + Span::seconds(6)),
        until: Some(t0 + Span::seconds(2)),
        ..log_query(3)
    };
    let page = store.log_page("o", &empty).await.unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    assert_eq!(
        all_pages(store.as_ref(), "p", log_query(10)).await.concat(),
        [theirs.id]
    );
    assert!(store
        .log_page("nobody", &log_query(10))
        .await
        .unwrap()
        .items
        .is_empty());
    let forged = EventLogQuery {
        cursor: Some(cursor::encode("ep_01")),
        ..log_query(3)
    };
    assert_eq!(
        store.log_page("o", &forged).await,
        Err(BackendError::InvalidCursor)
    );
}

on_both_backends!(event_log_contract, memory_event_log, moto_event_log);
