use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;
use webhooks_domain::EventType;
use webhooks_ports::{EventStore, IdempotencyStore};

#[tokio::test]
async fn event_types_are_listed_with_descriptions() {
    let w = world();
    let r = w.call_as(ORG, WRITE, "GET", "/v1/event-types", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["next_cursor"], Value::Null);
    let names: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(!t["description"].as_str().unwrap().is_empty());
            t["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "lead_won",
            "lead_lost",
            "proposal_accepted",
            "meeting.booked",
            "invoice.paid",
            "payment_failed",
            "project.completed",
            "task.completed",
            "client.created",
            "billing.suspended",
            "survey.submitted"
        ]
    );
}

/// The X-Ray trace API Gateway gives the publishing request is kept on the
/// event, so its deliveries' queue messages and the sender's logs carry it.
#[tokio::test]
async fn a_published_event_keeps_the_requests_trace() {
    let w = world();
    let mut req = request(
        "POST",
        "/v1/events",
        r#"{"type":"lead_won","data":{}}"#,
        Some(&[("org_id", ORG), ("scope", WRITE)]),
    );
    req.headers_mut().insert(
        "x-amzn-trace-id",
        "Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=1"
            .parse()
            .unwrap(),
    );
    let r = w.send(req).await;
    assert_eq!(r.status, 202, "{}", r.json);
    let event = w
        .events
        .get(ORG, r.json["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event.trace_id.as_deref(),
        Some("1-67891233-abcdef012345678912345678")
    );
    let plain = w
        .call_as(
            ORG,
            WRITE,
            "POST",
            "/v1/events",
            r#"{"type":"lead_won","data":{}}"#,
        )
        .await;
    let untraced = w
        .events
        .get(ORG, plain.json["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untraced.trace_id, None);
}

#[tokio::test]
async fn a_published_event_keeps_its_data_bytes() {
    let w = world();
    let body =
        r#"{"type":"invoice.paid","data":{"z": 1, "a": [1.50, "é"], "n": 12345678901234567890}}"#;
    let r = w.call_as(ORG, WRITE, "POST", "/v1/events", body).await;
    assert_eq!(r.status, 202, "{}", r.json);
    let id = r.json["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"));
    assert_eq!(r.json.as_object().unwrap().len(), 1);
    let event = w.events.get(ORG, id).await.unwrap().unwrap();
    assert_eq!(event.event_type, EventType::InvoicePaid);
    assert_eq!(
        event.data.get(),
        r#"{"z": 1, "a": [1.50, "é"], "n": 12345678901234567890}"#
    );
    assert_eq!(event.target_endpoint, None);
    assert!(w.events.get(OTHER_ORG, id).await.unwrap().is_none());
}

#[tokio::test]
async fn publishing_validates_each_field_and_names_it() {
    let w = world();
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(64 * 1024));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"data": {}}), "type"),
        (json!({"type": "invoice.created", "data": {}}), "type"),
        (json!({"type": 7, "data": {}}), "type"),
        (json!({"type": null, "data": {}}), "type"),
        (json!({"type": "lead_won"}), "data"),
        (json!({"type": "lead_won", "data": null}), "data"),
        (json!({"type": "lead_won", "data": [1]}), "data"),
        (json!({"type": "lead_won", "data": "x"}), "data"),
        (json!({"type": "lead_won", "data": 1}), "data"),
        (
            json!({"type": "lead_won", "data": {}, "idempotency_key": ""}),
            "idempotency_key",
        ),
        (
            json!({"type": "lead_won", "data": {}, "idempotency_key": "k".repeat(256)}),
            "idempotency_key",
        ),
        (
            json!({"type": "lead_won", "data": {}, "idempotency_key": 5}),
            "idempotency_key",
        ),
        (
            json!({"type": "lead_won", "data": {}, "org_id": "org_b"}),
            "org_id",
        ),
    ];
    for (body, field) in cases {
        w.call_as(ORG, WRITE, "POST", "/v1/events", body.to_string())
            .await
            .assert_invalid(field);
    }
    let r = w
        .call_as(
            ORG,
            WRITE,
            "POST",
            "/v1/events",
            format!(r#"{{"type":"lead_won","data":{big}}}"#),
        )
        .await;
    r.assert_invalid("data");
    assert!(w.events.is_empty());
    // The largest key is fine.
    let r = w
        .call_as(
            ORG,
            WRITE,
            "POST",
            "/v1/events",
            json!({"type": "lead_won", "data": {}, "idempotency_key": "é".repeat(255)}).to_string(),
        )
        .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_id_and_writes_nothing() {
    let w = world();
    let body =
        json!({"type": "lead_won", "data": {"n": 1}, "idempotency_key": "order-42"}).to_string();
    let first = w
        .call_as(ORG, WRITE, "POST", "/v1/events", body.clone())
        .await;
    assert_eq!(first.status, 202);
    let again = w
        .call_as(ORG, WRITE, "POST", "/v1/events", body.clone())
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json, first.json);
    assert_eq!(w.events.len(), 1);
    assert_eq!(w.events.read_stream(0, 10).len(), 1);

    // Keys are per organization.
    let theirs = w
        .call_as(OTHER_ORG, WRITE, "POST", "/v1/events", body)
        .await;
    assert_ne!(theirs.json["id"], first.json["id"]);
    // No key: a new event each time.
    let plain = json!({"type": "lead_won", "data": {}}).to_string();
    let a = w
        .call_as(ORG, WRITE, "POST", "/v1/events", plain.clone())
        .await;
    let b = w.call_as(ORG, WRITE, "POST", "/v1/events", plain).await;
    assert_ne!(a.json["id"], b.json["id"]);
    assert_eq!(w.events.len(), 4);
}

#[tokio::test]
async fn a_key_claimed_by_a_request_that_crashed_still_gets_its_event() {
    let w = world();
    let claimed = webhooks_domain::ids::new_id("evt");
    w.idempotency
        .claim(
            &webhooks_fn_api::events::publish_claim_key(ORG, "k1"),
            &claimed,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let body =
        json!({"type": "task.completed", "data": {"t": 1}, "idempotency_key": "k1"}).to_string();
    let r = w
        .call_as(ORG, WRITE, "POST", "/v1/events", body.clone())
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json["id"], claimed.as_str());
    let event = w.events.get(ORG, &claimed).await.unwrap().unwrap();
    assert_eq!(event.event_type, EventType::TaskCompleted);
    let again = w.call_as(ORG, WRITE, "POST", "/v1/events", body).await;
    assert_eq!(again.json["id"], claimed.as_str());
    assert_eq!(w.events.len(), 1);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_writes_nothing() {
    let w = world();
    let first = json!({"type": "lead_won", "data": {"n": 1}, "idempotency_key": "k2"}).to_string();
    let r = w.call_as(ORG, WRITE, "POST", "/v1/events", first).await;
    assert_eq!(r.status, 202);
    for other in [
        json!({"type": "lead_won", "data": {"n": 2}, "idempotency_key": "k2"}),
        json!({"type": "lead_lost", "data": {"n": 1}, "idempotency_key": "k2"}),
    ] {
        let again = w
            .call_as(ORG, WRITE, "POST", "/v1/events", other.to_string())
            .await;
        again.assert_error(422, "idempotency_key_mismatch");
        assert!(again.error_message().contains("idempotency_key"));
    }
    assert_eq!(w.events.len(), 1);
}

#[tokio::test]
async fn keys_of_orgs_whose_ids_contain_colons_do_not_collide() {
    let w = world();
    // Org "a" with key "b:c" and org "a:b" with key "c" are different claims.
    let one = w
        .call_as(
            "a",
            WRITE,
            "POST",
            "/v1/events",
            json!({"type": "lead_won", "data": {}, "idempotency_key": "b:c"}).to_string(),
        )
        .await;
    let two = w
        .call_as(
            "a:b",
            WRITE,
            "POST",
            "/v1/events",
            json!({"type": "lead_won", "data": {}, "idempotency_key": "c"}).to_string(),
        )
        .await;
    assert_eq!((one.status, two.status), (202, 202));
    assert_ne!(one.json["id"], two.json["id"]);
    assert!(w
        .events
        .get("a:b", two.json["id"].as_str().unwrap())
        .await
        .unwrap()
        .is_some());
}

/// `POST /v1/events/batch` from `org` with these events.
async fn publish_batch(w: &TestSystem, org: &str, events: Vec<Value>) -> Reply {
    w.call_as(
        org,
        WRITE,
        "POST",
        "/v1/events/batch",
        json!({ "events": events }).to_string(),
    )
    .await
}

/// The results of a 207, after checking each one's shape.
fn results(r: &Reply) -> &[Value] {
    assert_eq!(r.status, 207, "{}", r.json);
    let results = r.json["results"].as_array().expect("results");
    for result in results {
        let status = result["status"].as_u64().expect("a status");
        if status == 202 {
            assert!(result["id"].as_str().unwrap().starts_with("evt_"));
            assert_eq!(result.as_object().unwrap().len(), 2, "{result}");
        } else {
            assert!(result["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert!(result["error"]["code"].is_string());
            assert_eq!(result.as_object().unwrap().len(), 2, "{result}");
        }
    }
    results
}

#[tokio::test]
async fn a_batch_answers_each_event_in_order_and_writes_only_the_valid_ones() {
    let w = world();
    let r = publish_batch(
        &w,
        ORG,
        vec![
            json!({"type": "lead_won", "data": {"n": 1}}),
            json!({"type": "invoice.created", "data": {}}),
            json!({"type": "invoice.paid", "data": {"a": [1.5, "é"]}}),
            json!({"type": "lead_won"}),
            json!({"type": "lead_won", "data": {}, "idempotency_key": ""}),
            json!({"type": "lead_won", "data": {}, "org_id": OTHER_ORG}),
            json!([1]),
            Value::Null,
            json!({"type": "task.completed", "data": {}, "idempotency_key": "k"}),
        ],
    )
    .await;
    let results = results(&r);
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 400, 202, 400, 400, 400, 400, 400, 202]);
    for (i, field) in [
        (1, "type"),
        (3, "data"),
        (4, "idempotency_key"),
        (5, "org_id"),
    ] {
        assert_eq!(results[i]["error"]["code"], "invalid_request");
        let message = results[i]["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{i}: {message}");
    }
    for i in [6, 7] {
        assert!(results[i]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON object"));
    }
    assert_eq!(w.events.len(), 3);
    let paid = w
        .events
        .get(ORG, results[2]["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.event_type, EventType::InvoicePaid);
    assert_eq!(paid.data.get(), r#"{"a":[1.5,"é"]}"#);
}

#[tokio::test]
async fn a_batch_item_keeps_its_data_bytes_and_the_requests_trace() {
    let w = world();
    let body = r#"{"events":[{"type":"invoice.paid","data":{"z": 1, "n": 12345678901234567890}}]}"#;
    let mut req = request(
        "POST",
        "/v1/events/batch",
        body,
        Some(&[("org_id", ORG), ("scope", WRITE)]),
    );
    req.headers_mut().insert(
        "x-amzn-trace-id",
        "Root=1-67891233-abcdef012345678912345678".parse().unwrap(),
    );
    let r = w.send(req).await;
    let id = results(&r)[0]["id"].as_str().unwrap().to_string();
    let event = w.events.get(ORG, &id).await.unwrap().unwrap();
    assert_eq!(event.data.get(), r#"{"z": 1, "n": 12345678901234567890}"#);
    assert_eq!(
        event.trace_id.as_deref(),
        Some("1-67891233-abcdef012345678912345678")
    );
}

#[tokio::test]
async fn batch_idempotency_keys_work_per_event_as_on_the_single_route() {
    let w = world();
    let single = w
        .call_as(
            ORG,
            WRITE,
            "POST",
            "/v1/events",
            json!({"type": "lead_won", "data": {"n": 1}, "idempotency_key": "k1"}).to_string(),
        )
        .await;
    assert_eq!(single.status, 202);
    let batch = vec![
        // The single route's key and body: its id.
        json!({"type": "lead_won", "data": {"n": 1}, "idempotency_key": "k1"}),
        // The same key, another body: refused.
        json!({"type": "lead_won", "data": {"n": 2}, "idempotency_key": "k1"}),
        // A new key: a new event, whose id a repeat of the batch gets again.
        json!({"type": "lead_lost", "data": {}, "idempotency_key": "k2"}),
        json!({"type": "lead_lost", "data": {}}),
    ];
    let first = publish_batch(&w, ORG, batch.clone()).await;
    let r = results(&first);
    assert_eq!(r[0], json!({"status": 202, "id": single.json["id"]}));
    assert_eq!(r[1]["status"], 422);
    assert_eq!(r[1]["error"]["code"], "idempotency_key_mismatch");
    assert_eq!(r[2]["status"], 202);
    assert_eq!(r[3]["status"], 202);
    assert_eq!(w.events.len(), 3);

    let again = publish_batch(&w, ORG, batch).await;
    let a = results(&again);
    assert_eq!(a[0], r[0]);
    assert_eq!(a[1], r[1]);
    assert_eq!(a[2], r[2]);
    assert_ne!(a[3]["id"], r[3]["id"], "no key: a new event each time");
    assert_eq!(w.events.len(), 4);

    // A key repeated inside one batch is one event.
    let twice = json!({"type": "survey.submitted", "data": {}, "idempotency_key": "k3"});
    let dup = publish_batch(&w, ORG, vec![twice.clone(), twice]).await;
    let d = results(&dup);
    assert_eq!(d[0], d[1]);
    assert_eq!(d[0]["status"], 202);
    assert_eq!(w.events.len(), 5);
}

#[tokio::test]
async fn a_batch_holds_1_to_100_events() {
    let w = world();
    let event = json!({"type": "lead_won", "data": {}});
    let full = publish_batch(&w, ORG, vec![event.clone(); 100]).await;
    let r = results(&full);
    assert_eq!(r.len(), 100);
    assert!(r.iter().all(|r| r["status"] == 202));
    assert_eq!(w.events.len(), 100);

    publish_batch(&w, ORG, vec![event.clone(); 101])
        .await
        .assert_invalid("events");
    publish_batch(&w, ORG, vec![])
        .await
        .assert_invalid("events");
    for body in [
        json!({}),
        json!({"events": null}),
        json!({"events": {"type": "lead_won", "data": {}}}),
        json!({"events": "x"}),
        json!({"events": [event], "org_id": OTHER_ORG}),
    ] {
        let field = if body.get("org_id").is_some() {
            "org_id"
        } else {
            "events"
        };
        w.call_as(ORG, WRITE, "POST", "/v1/events/batch", body.to_string())
            .await
            .assert_invalid(field);
    }
    for body in ["", "[]", "[{\"type\":\"lead_won\",\"data\":{}}]", "{"] {
        let r = w
            .call_as(ORG, WRITE, "POST", "/v1/events/batch", body)
            .await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(w.events.len(), 100);
}

#[tokio::test]
async fn a_batch_over_the_body_limit_is_refused_whole() {
    let w = world();
    let data = json!({"x": "a".repeat(60 * 1024)});
    let events = vec![json!({"type": "lead_won", "data": data}); 5];
    let r = publish_batch(&w, ORG, events).await;
    r.assert_error(413, "payload_too_large");
    assert!(w.events.is_empty());
}

#[tokio::test]
async fn batch_events_and_keys_belong_to_the_callers_org() {
    let w = world();
    let keyed = json!({"type": "lead_won", "data": {}, "idempotency_key": "shared"});
    let ours = publish_batch(&w, ORG, vec![keyed.clone()]).await;
    let theirs = publish_batch(&w, OTHER_ORG, vec![keyed]).await;
    let ours = results(&ours)[0]["id"].as_str().unwrap().to_string();
    let theirs = results(&theirs)[0]["id"].as_str().unwrap().to_string();
    assert_ne!(ours, theirs);
    assert!(w.events.get(ORG, &ours).await.unwrap().is_some());
    assert!(w.events.get(OTHER_ORG, &ours).await.unwrap().is_none());
    assert!(w.events.get(OTHER_ORG, &theirs).await.unwrap().is_some());
    assert!(w.events.get(ORG, &theirs).await.unwrap().is_none());
}

#[tokio::test]
async fn a_batch_needs_events_write() {
    let w = world();
    let body = json!({"events": [{"type": "lead_won", "data": {}}]}).to_string();
    w.call_as(ORG, MANAGE, "POST", "/v1/events/batch", body.clone())
        .await
        .assert_error(403, "forbidden");
    let r = w
        .send(request("POST", "/v1/events/batch", body, None))
        .await;
    assert_eq!(r.status, 401);
    assert!(w.events.is_empty());
}
