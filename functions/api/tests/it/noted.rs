//! Deliveries queued by the stream's fan-out that have no record yet: a
//! note lists them (`webhooks_domain::queued`), and their first attempt
//! creates the record. The routes that show deliveries show them
//! `pending` meanwhile, never another org's, and a record once there wins.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use webhooks_domain::delivery::{delivery_id, parse_delivery_id};
use webhooks_domain::queued::{assign_notes, QueuedNote};
use webhooks_domain::time::rfc3339;
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_faults::{Count, Faulty, Op, Script};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_ports::{Created, DeliveryStore, EndpointStore, EventStore};

/// An event of `org` made at `at`, stored.
async fn event_at(w: &TestSystem, org: &str, at: DateTime<Utc>) -> Event {
    let data = serde_json::value::RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
    let event = Event::new_at(org, EventType::InvoicePaid, data, at);
    assert!(w.events.put_if_absent(&event).await.unwrap());
    event
}

/// What one fan-out call of `org` writes at `at` for `delivery_ids`: its
/// notes, under the keys the fan-out gives them (`assign_notes`), in a
/// call of its own (the digest).
async fn note(w: &TestSystem, org: &str, delivery_ids: &[String], at: DateTime<Utc>) {
    let call = webhooks_domain::ids::new_id("q");
    let events: Vec<String> = delivery_ids
        .iter()
        .map(|id| parse_delivery_id(id).map(|(_, e)| e).unwrap_or_default())
        .collect();
    let items: Vec<(&str, &str, &str)> = delivery_ids
        .iter()
        .zip(&events)
        .map(|(d, e)| (org, e.as_str(), d.as_str()))
        .collect();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, key) in delivery_ids.iter().zip(assign_notes(&items)) {
        by_key
            .entry(format!("{key}.{call}"))
            .or_default()
            .push(id.clone());
    }
    for (key, ids) in by_key {
        w.deliveries
            .note_queued(&QueuedNote {
                org_id: org.to_string(),
                key,
                messages: ids.iter().map(|id| format!("msg-{id}")).collect(),
                delivery_ids: ids.into(),
                created_at: at,
                confirmed_at: Some(at),
                contested: Vec::new(),
            })
            .await
            .unwrap();
    }
}

/// A record of the delivery of `event` to `endpoint_id` with `status`.
async fn record(w: &TestSystem, endpoint_id: &str, event: &Event, status: DeliveryStatus) {
    let mut d = Delivery::new_at(
        &event.org_id,
        endpoint_id,
        &event.id,
        event.event_type,
        event.created_at,
    );
    d.status = status;
    assert_eq!(w.deliveries.create_if_absent(&d).await.unwrap(), None);
}

/// An endpoint of [`ORG`] for every event type, created `age` ago.
async fn endpoint_created_ago(w: &TestSystem, age: Duration) -> String {
    let mut ep = Endpoint::new(
        ORG,
        "https://example.com/hook".into(),
        Subscription::All,
        Secret::generate(),
    );
    ep.created_at = Utc::now() - age;
    ep.updated_at = ep.created_at;
    assert_eq!(
        w.endpoints.create(&ep, 100).await.unwrap(),
        Created::Written
    );
    ep.id
}

/// Every page of a listing, followed by its cursors: each page's ids and
/// statuses, in order.
async fn every_page(w: &TestSystem, org: &str, base: &str) -> Vec<Vec<(String, String)>> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut uri = base.to_string();
    loop {
        let r = w.call_as(org, MANAGE, "GET", &uri, "").await;
        assert_eq!(r.status, 200, "{}", r.json);
        pages.push(
            r.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["id"].as_str().unwrap().to_string(),
                        d["status"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        );
        assert!(pages.len() < 500, "the listing never ends");
        match r.json["next_cursor"].as_str() {
            Some(c) => uri = format!("{base}{sep}cursor={c}"),
            None => return pages,
        }
    }
}

/// The event's deliveries as `GET /v1/events/{id}` shows them.
async fn event_deliveries(w: &TestSystem, org: &str, event_id: &str) -> Value {
    let r = w
        .call_as(org, MANAGE, "GET", &format!("/v1/events/{event_id}"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["deliveries"].clone()
}

#[tokio::test]
async fn a_queued_delivery_without_a_record_is_pending_on_every_route() {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let event = event_at(&w, ORG, Utc::now()).await;
    let id = delivery_id(&ep, &event.id);
    let noted_at = event.created_at + Duration::milliseconds(40);
    note(&w, ORG, std::slice::from_ref(&id), noted_at).await;

    assert_eq!(
        event_deliveries(&w, ORG, &event.id).await,
        json!([{"id": id, "endpoint_id": ep, "status": "pending"}])
    );

    let r = w.manage("GET", &format!("/v1/deliveries/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let v = &r.json;
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["endpoint_id"], ep.as_str());
    assert_eq!(v["event_id"], event.id.as_str());
    assert_eq!(v["event_type"], "invoice.paid");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["attempts"], json!([]));
    assert_eq!(v["last_error"], Value::Null);
    // Created when its note was written, as its record will be; due since.
    assert_eq!(v["created_at"], rfc3339(noted_at));
    assert_eq!(v["next_attempt_at"], rfc3339(noted_at));
    assert_eq!(v["request"]["body"], event.payload().as_str());

    let base = format!("/v1/endpoints/{ep}/deliveries");
    let r = w.manage("GET", &base, "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["next_cursor"], Value::Null);
    let data = r.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", r.json);
    assert_eq!(data[0]["id"], id.as_str());
    assert_eq!(data[0]["status"], "pending");
    assert_eq!(data[0]["event_type"], "invoice.paid");
    assert_eq!(data[0]["attempts"], json!([]));
    assert_eq!(data[0]["created_at"], rfc3339(noted_at));
    let pending = w.manage("GET", &format!("{base}?status=pending"), "").await;
    assert_eq!(pending.json["data"], r.json["data"]);
    let delivered = w
        .manage("GET", &format!("{base}?status=delivered"), "")
        .await;
    assert_eq!(delivered.json["data"], json!([]));

    // Pending and just queued: nothing to retry.
    w.manage("POST", &format!("/v1/deliveries/{id}/retry"), "")
        .await
        .assert_error(409, "conflict");
    assert!(w.queue.is_empty());
    assert_eq!(
        w.deliveries.get(&id).await.unwrap(),
        None,
        "nothing written"
    );
    // Its endpoint deleted: 404, as for a recorded delivery.
    w.endpoints.delete(ORG, &ep).await.unwrap();
    w.manage("POST", &format!("/v1/deliveries/{id}/retry"), "")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn another_orgs_notes_are_never_shown() {
    let w = world();
    let mine = w.create_endpoint(&["*"]).await;
    let theirs = w.create_endpoint_for(OTHER_ORG, &["*"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // My delivery, listed in another org's note only.
    let my_event = event_at(&w, ORG, Utc::now()).await;
    let my_id = delivery_id(&mine, &my_event.id);
    note(&w, OTHER_ORG, std::slice::from_ref(&my_id), Utc::now()).await;
    assert_eq!(event_deliveries(&w, ORG, &my_event.id).await, json!([]));
    w.manage("GET", &format!("/v1/deliveries/{my_id}"), "")
        .await
        .assert_error(404, "not_found");
    let r = w
        .manage("GET", &format!("/v1/endpoints/{mine}/deliveries"), "")
        .await;
    assert_eq!(r.json["data"], json!([]), "{}", r.json);

    // Their delivery, noted by them: theirs to see, 404 to me.
    let their_event = event_at(&w, OTHER_ORG, Utc::now()).await;
    let their_id = delivery_id(&theirs, &their_event.id);
    note(&w, OTHER_ORG, std::slice::from_ref(&their_id), Utc::now()).await;
    let seen = w
        .call_as(
            OTHER_ORG,
            MANAGE,
            "GET",
            &format!("/v1/deliveries/{their_id}"),
            "",
        )
        .await;
    assert_eq!(seen.json["status"], "pending", "{}", seen.json);
    for path in [
        format!("/v1/deliveries/{their_id}"),
        format!("/v1/events/{}", their_event.id),
        format!("/v1/endpoints/{theirs}/deliveries"),
    ] {
        w.manage("GET", &path, "")
            .await
            .assert_error(404, "not_found");
    }
    w.manage("POST", &format!("/v1/deliveries/{their_id}/retry"), "")
        .await
        .assert_error(404, "not_found");

    // A note of mine that names their delivery (their event is not mine),
    // or my endpoint's delivery of their event: neither is shown.
    let crossed = delivery_id(&mine, &their_event.id);
    note(&w, ORG, &[their_id.clone(), crossed.clone()], Utc::now()).await;
    for id in [&their_id, &crossed] {
        w.manage("GET", &format!("/v1/deliveries/{id}"), "")
            .await
            .assert_error(404, "not_found");
    }
    let r = w
        .manage("GET", &format!("/v1/endpoints/{mine}/deliveries"), "")
        .await;
    assert_eq!(r.json["data"], json!([]), "{}", r.json);
}

#[tokio::test]
async fn a_record_wins_over_its_note() {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let event = event_at(&w, ORG, Utc::now()).await;
    let id = delivery_id(&ep, &event.id);
    note(&w, ORG, std::slice::from_ref(&id), Utc::now()).await;
    record(&w, &ep, &event, DeliveryStatus::Delivered).await;

    assert_eq!(
        event_deliveries(&w, ORG, &event.id).await,
        json!([{"id": id, "endpoint_id": ep, "status": "delivered"}])
    );
    let r = w.manage("GET", &format!("/v1/deliveries/{id}"), "").await;
    assert_eq!(r.json["status"], "delivered", "{}", r.json);
    let base = format!("/v1/endpoints/{ep}/deliveries");
    let pages = every_page(&w, ORG, &base).await;
    assert_eq!(pages.concat(), [(id.clone(), "delivered".to_string())]);
    let pages = every_page(&w, ORG, &format!("{base}?status=pending")).await;
    assert_eq!(pages.concat(), [], "a finished delivery is not pending");
}

#[tokio::test]
async fn pages_mix_records_and_noted_deliveries_and_lose_none() {
    let w = world();
    let ep = endpoint_created_ago(&w, Duration::days(3)).await;
    let other = endpoint_created_ago(&w, Duration::days(3)).await;
    let now = Utc::now();
    // Newest first: what each listing must show, once each.
    let mut all = Vec::new();
    let mut pending = Vec::new();
    for k in 0..30 {
        // Spread over two days, several in some minutes.
        let at = now - Duration::minutes(97 * (k / 2)) - Duration::seconds(k % 2);
        let event = event_at(&w, ORG, at).await;
        let id = delivery_id(&ep, &event.id);
        let noted_at = at + Duration::milliseconds(5);
        let beside = delivery_id(&other, &event.id);
        let (status, noted) = match k % 3 {
            0 => (DeliveryStatus::Delivered, false),
            1 => (DeliveryStatus::Pending, true),
            _ => (DeliveryStatus::DeadLettered, true),
        };
        if noted {
            note(&w, ORG, &[beside.clone(), id.clone()], noted_at).await;
        } else {
            note(&w, ORG, &[beside], noted_at).await;
        }
        // Noted and pending: no record yet. The others have one.
        if !(noted && status == DeliveryStatus::Pending) {
            record(&w, &ep, &event, status).await;
        }
        all.push((event.id.clone(), id.clone(), status.as_str().to_string()));
        if status == DeliveryStatus::Pending {
            pending.push((event.id, id, status.as_str().to_string()));
        }
    }
    // A pending record too, unnoted.
    let event = event_at(&w, ORG, now - Duration::minutes(5)).await;
    record(&w, &ep, &event, DeliveryStatus::Pending).await;
    let id = delivery_id(&ep, &event.id);
    all.push((event.id.clone(), id.clone(), "pending".into()));
    pending.push((event.id, id, "pending".into()));
    for list in [&mut all, &mut pending] {
        list.sort_by(|a, b| b.0.cmp(&a.0));
    }
    let expect = |list: &Vec<(String, String, String)>| -> Vec<(String, String)> {
        list.iter()
            .map(|(_, id, s)| (id.clone(), s.clone()))
            .collect()
    };

    let base = format!("/v1/endpoints/{ep}/deliveries");
    for limit in [1, 3, 4, 250] {
        let pages = every_page(&w, ORG, &format!("{base}?limit={limit}")).await;
        assert!(pages.iter().all(|p| p.len() <= limit));
        assert_eq!(pages.concat(), expect(&all), "limit {limit}");
        let pages = every_page(&w, ORG, &format!("{base}?status=pending&limit={limit}")).await;
        assert_eq!(pages.concat(), expect(&pending), "pending, limit {limit}");
    }
    // The noted deliveries of the other endpoint are its own.
    let pages = every_page(&w, ORG, &format!("/v1/endpoints/{other}/deliveries")).await;
    assert_eq!(pages.concat().len(), 30);
    assert!(pages.concat().iter().all(|(_, s)| s == "pending"));
}

#[tokio::test]
async fn a_listing_reads_a_bounded_part_of_many_notes_and_loses_no_row() {
    let w = world();
    let ep = endpoint_created_ago(&w, Duration::days(3)).await;
    let other = endpoint_created_ago(&w, Duration::days(3)).await;
    let now = Utc::now();
    // 2,500 notes, one a minute, of another endpoint's deliveries: more
    // than one request reads. Among them, this endpoint's deliveries.
    let mut expected = Vec::new();
    for k in 0..2_500 {
        let at = now - Duration::minutes(k);
        let event_id = webhooks_domain::ids::new_id_at("evt", at);
        let mut ids = vec![delivery_id(&other, &event_id)];
        if k % 250 == 7 {
            let event = event_at(&w, ORG, at).await;
            let id = delivery_id(&ep, &event.id);
            ids = vec![delivery_id(&other, &event.id), id.clone()];
            if k % 500 == 7 {
                record(&w, &ep, &event, DeliveryStatus::Delivered).await;
                expected.push((id, "delivered".to_string()));
            } else {
                expected.push((id, "pending".to_string()));
            }
        }
        note(&w, ORG, &ids, at).await;
    }
    let pages = every_page(&w, ORG, &format!("/v1/endpoints/{ep}/deliveries?limit=250")).await;
    assert_eq!(pages.concat(), expected);
    assert!(
        pages.len() > 1,
        "the reads of notes stop before the end of the stretch"
    );
    let ids: HashSet<String> = pages.concat().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), expected.len());
}

#[tokio::test]
async fn a_minutes_notes_past_one_read_are_read_to_the_end() {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let other = w.create_endpoint(&["*"]).await;
    let event = event_at(&w, ORG, Utc::now()).await;
    let id = delivery_id(&ep, &event.id);
    // 250 fan-out calls noted the same minute; the last lists this one.
    for _ in 0..249 {
        let beside = event_at(&w, ORG, event.created_at).await;
        note(&w, ORG, &[delivery_id(&other, &beside.id)], Utc::now()).await;
    }
    let noted_at = Utc::now() + Duration::milliseconds(1);
    note(&w, ORG, std::slice::from_ref(&id), noted_at).await;

    let r = w.manage("GET", &format!("/v1/deliveries/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["created_at"], rfc3339(noted_at));
    let pages = every_page(&w, ORG, &format!("/v1/endpoints/{ep}/deliveries")).await;
    assert_eq!(pages.concat(), [(id.clone(), "pending".to_string())]);
    let pages = every_page(
        &w,
        ORG,
        &format!("/v1/endpoints/{other}/deliveries?limit=100"),
    )
    .await;
    assert_eq!(pages.concat().len(), 249);
}

#[tokio::test]
async fn a_pending_listing_passes_many_finished_noted_deliveries() {
    let w = world();
    let ep = endpoint_created_ago(&w, Duration::days(1)).await;
    let now = Utc::now();
    let mut noted_ids = Vec::new();
    let mut waiting = Vec::new();
    for k in 0..1_300 {
        let event = event_at(&w, ORG, now - Duration::milliseconds(40 * k)).await;
        let id = delivery_id(&ep, &event.id);
        if k % 400 == 399 {
            waiting.push((id.clone(), "pending".to_string()));
        } else {
            record(&w, &ep, &event, DeliveryStatus::Delivered).await;
        }
        noted_ids.push(id);
    }
    note(&w, ORG, &noted_ids, now).await;
    let base = format!("/v1/endpoints/{ep}/deliveries");
    let pages = every_page(&w, ORG, &format!("{base}?status=pending&limit=2")).await;
    assert_eq!(pages.concat(), waiting);
    let pages = every_page(&w, ORG, &format!("{base}?limit=250")).await;
    assert_eq!(pages.concat().len(), 1_300);
}

/// The API over `w`'s stores, its deliveries seen through `policy`.
fn api_with_deliveries(w: &TestSystem, policy: Arc<impl webhooks_faults::Policy + 'static>) -> Api {
    Api::new(
        w.events.clone(),
        w.endpoints.clone(),
        Arc::new(Faulty::new(w.deliveries.clone(), policy)),
        w.cursors.clone(),
        w.idempotency.clone(),
        w.queue.clone(),
        ApiConfig::default(),
    )
}

async fn status_of(api: &Api, uri: &str) -> u16 {
    let req = request("GET", uri, "", Some(&[("org_id", ORG), ("scope", MANAGE)]));
    webhooks_fn_api::handle(api, req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn notes_that_cannot_be_read_are_a_503_never_a_missing_delivery() {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let event = event_at(&w, ORG, Utc::now()).await;
    let id = delivery_id(&ep, &event.id);
    note(&w, ORG, std::slice::from_ref(&id), Utc::now()).await;
    let api = api_with_deliveries(
        &w,
        Arc::new(Script::new().fail(Op::GetNotes, ..).fail(Op::GetNoted, ..)),
    );
    for uri in [
        format!("/v1/deliveries/{id}"),
        format!("/v1/events/{}", event.id),
        format!("/v1/endpoints/{ep}/deliveries"),
        format!("/v1/endpoints/{ep}/deliveries?status=pending"),
    ] {
        assert_eq!(status_of(&api, &uri).await, 503, "{uri}");
    }
    // No note is read where a record answers, or where none can show.
    let (_, recorded) = w.delivery(ORG, &ep, DeliveryStatus::Delivered).await;
    for uri in [
        format!("/v1/deliveries/{}", recorded.id),
        format!("/v1/endpoints/{ep}/deliveries?status=delivered"),
    ] {
        assert_eq!(status_of(&api, &uri).await, 200, "{uri}");
    }
}

#[tokio::test]
async fn a_listing_makes_a_bounded_number_of_reads_of_notes() {
    let w = world();
    let ep = endpoint_created_ago(&w, Duration::days(3)).await;
    let other = endpoint_created_ago(&w, Duration::days(3)).await;
    let now = Utc::now();
    // 3,000 fan-out calls, one a minute, of another endpoint's deliveries.
    for k in 0..3_000 {
        let at = now - Duration::minutes(k);
        let event_id = webhooks_domain::ids::new_id_at("evt", at);
        note(&w, ORG, &[delivery_id(&other, &event_id)], at).await;
    }
    let count = Arc::new(Count::new());
    let api = api_with_deliveries(&w, count.clone());
    let mut uri = format!("/v1/endpoints/{ep}/deliveries");
    let mut requests = 0;
    loop {
        let before = count.calls(Op::GetNotes);
        let req = request("GET", &uri, "", Some(&[("org_id", ORG), ("scope", MANAGE)]));
        let response = webhooks_fn_api::handle(&api, req).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        requests += 1;
        let reads = count.calls(Op::GetNotes) - before;
        assert!(reads <= 20, "{reads} reads of notes in one request");
        let v: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(v["data"], json!([]));
        match v["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/endpoints/{ep}/deliveries?cursor={c}"),
            None => break,
        }
        assert!(requests < 50, "the listing never ends");
    }
    assert!(requests > 1, "3,000 notes take more than one request");
}
