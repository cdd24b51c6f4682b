//! The event log (CONTRACT section 12): `GET /v1/events` and
//! `GET /v1/events/{id}`, scope `webhooks:manage`, one org's events only.

use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{DeliveryStore, EventStore};

/// Publishes an event of `org` through the API; returns its id.
async fn publish(w: &TestSystem, org: &str, event_type: &str, data: &str) -> String {
    // Distinct milliseconds: ids order as the events were published.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let r = w
        .call_as(
            org,
            WRITE,
            "POST",
            "/v1/events",
            format!(r#"{{"type":"{event_type}","data":{data}}}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_log_lists_the_orgs_events_newest_first_in_pages() {
    let w = world();
    let mut published = Vec::new();
    for i in 0..5 {
        let t = if i % 2 == 0 {
            "invoice.paid"
        } else {
            "lead_won"
        };
        published.push(publish(&w, ORG, t, &format!(r#"{{"n":{i}}}"#)).await);
    }
    publish(&w, OTHER_ORG, "invoice.paid", "{}").await;
    published.reverse();

    let first = w.manage("GET", "/v1/events?limit=2", "").await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(ids(&first.json), published[..2]);
    let entry = first.json["data"][0].as_object().unwrap();
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "id", "type"]);
    assert_eq!(entry["type"], "invoice.paid");
    assert!(entry["created_at"].as_str().unwrap().ends_with('Z'));

    let mut all = ids(&first.json);
    let mut cursor = first.json["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let page = w
            .manage("GET", &format!("/v1/events?limit=2&cursor={c}"), "")
            .await;
        assert_eq!(page.status, 200, "{}", page.json);
        all.extend(ids(&page.json));
        cursor = page.json["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(all, published, "every event once");

    let paid = w.manage("GET", "/v1/events?type=invoice.paid", "").await;
    let expected: Vec<String> = [&published[0], &published[2], &published[4]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(ids(&paid.json), expected);
    assert_eq!(paid.json["next_cursor"], Value::Null);

    let theirs = w.call_as(OTHER_ORG, MANAGE, "GET", "/v1/events", "").await;
    assert_eq!(ids(&theirs.json).len(), 1);
}

#[tokio::test]
async fn the_log_takes_a_time_window() {
    let w = world();
    let before = publish(&w, ORG, "lead_won", "{}").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = chrono::Utc::now();
    let inside = publish(&w, ORG, "lead_won", "{}").await;
    let since = webhooks_domain::time::rfc3339(since);
    // Second precision is what RFC 3339 times here carry; the window is
    // open at its start, so an event of the same second is inside.
    let r = w
        .manage("GET", &format!("/v1/events?since={since}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let got = ids(&r.json);
    assert!(got.contains(&inside) && !got.contains(&before), "{got:?}");
    let r = w
        .manage("GET", &format!("/v1/events?until={since}"), "")
        .await;
    assert_eq!(ids(&r.json), [before]);
}

#[tokio::test]
async fn bad_log_queries_are_400s_naming_the_parameter() {
    let w = world();
    for (query, field) in [
        ("type=nope", "type"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("cursor=bm9wZQ", "cursor"),
        (
            "since=2026-11-27T07:00:00Z&until=2026-11-27T06:00:00Z",
            "until",
        ),
    ] {
        w.manage("GET", &format!("/v1/events?{query}"), "")
            .await
            .assert_invalid(field);
    }
}

#[tokio::test]
async fn one_event_shows_its_data_and_where_it_went() {
    let w = world();
    let paid = w.create_endpoint(&["invoice.paid"]).await;
    let all = w.create_endpoint(&["*"]).await;
    let data = r#"{"amount": 150,"currency":"eur","é":"\u2028"}"#;
    let id = publish(&w, ORG, "invoice.paid", data).await;
    // What the fan-out would have made: one delivery each.
    for (ep, status) in [
        (&paid, DeliveryStatus::Delivered),
        (&all, DeliveryStatus::Pending),
    ] {
        let mut d = Delivery::new(ORG, ep, &id, webhooks_domain::EventType::InvoicePaid);
        d.status = status;
        w.deliveries.create_if_absent(&d).await.unwrap();
    }
    let r = w.manage("GET", &format!("/v1/events/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["id"], id);
    assert_eq!(r.json["type"], "invoice.paid");
    assert!(r.json["created_at"].as_str().unwrap().ends_with('Z'));
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(
        text.contains(&format!(r#""data":{data}"#)),
        "data byte for byte: {text}"
    );
    let mut expected = vec![
        json!({"id": delivery_id(&paid, &id), "endpoint_id": paid, "status": "delivered"}),
        json!({"id": delivery_id(&all, &id), "endpoint_id": all, "status": "pending"}),
    ];
    expected.sort_by_key(|d| d["endpoint_id"].as_str().unwrap().to_string());
    assert_eq!(r.json["deliveries"], json!(expected));

    let quiet = publish(&w, ORG, "lead_lost", "{}").await;
    let r = w.manage("GET", &format!("/v1/events/{quiet}"), "").await;
    assert_eq!(r.json["deliveries"], json!([]));
}

#[tokio::test]
async fn another_orgs_event_and_malformed_ids_are_404() {
    let w = world();
    let theirs = publish(&w, OTHER_ORG, "lead_won", "{}").await;
    for id in [
        theirs.as_str(),
        "evt_nope",
        "nope",
        "ep_01jd0000000000000000000000",
    ] {
        w.manage("GET", &format!("/v1/events/{id}"), "")
            .await
            .assert_error(404, "not_found");
    }
    assert!(w.events.get(OTHER_ORG, &theirs).await.unwrap().is_some());
}

#[tokio::test]
async fn the_log_needs_the_manage_scope() {
    let w = world();
    let id = publish(&w, ORG, "lead_won", "{}").await;
    for uri in ["/v1/events".to_string(), format!("/v1/events/{id}")] {
        w.call_as(ORG, WRITE, "GET", &uri, "")
            .await
            .assert_error(403, "forbidden");
        w.send(request("GET", &uri, "", None))
            .await
            .assert_error(401, "unauthorized");
    }
}
