use crate::support::*;
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use webhooks_domain::{Attempt, Delivery, DeliveryStatus, DeliveryTask, Event, EventType};
use webhooks_ports::{AttemptUpdate, DeliveryStore, EndpointStore, EventStore};

fn tasks(w: &TestSystem) -> Vec<DeliveryTask> {
    w.queue
        .bodies()
        .iter()
        .map(|b| serde_json::from_str(b).expect("a delivery task"))
        .collect()
}

#[tokio::test]
async fn an_endpoints_deliveries_page_newest_first() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let mut made = Vec::new();
    for i in 0..7 {
        let status = if i % 2 == 0 {
            DeliveryStatus::Delivered
        } else {
            DeliveryStatus::DeadLettered
        };
        made.push(w.delivery(ORG, &id, status).await.1.id);
    }
    made.reverse();

    let mut seen = Vec::new();
    let mut uri = format!("/v1/endpoints/{id}/deliveries?limit=3");
    loop {
        let r = w.manage("GET", &uri, "").await;
        assert_eq!(r.status, 200, "{}", r.json);
        for d in r.json["data"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_string());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/endpoints/{id}/deliveries?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, made);

    let r = w
        .manage(
            "GET",
            &format!("/v1/endpoints/{id}/deliveries?status=dead_lettered"),
            "",
        )
        .await;
    let data = r.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|d| d["status"] == "dead_lettered"));
    assert_eq!(r.json["next_cursor"], Value::Null);
}

#[tokio::test]
async fn delivery_listings_refuse_bad_parameters_and_other_orgs() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    w.delivery(ORG, &id, DeliveryStatus::Pending).await;
    let base = format!("/v1/endpoints/{id}/deliveries");
    for status in ["done", "PENDING", "1"] {
        w.manage("GET", &format!("{base}?status={status}"), "")
            .await
            .assert_invalid("status");
    }
    for limit in ["0", "251", "x"] {
        w.manage("GET", &format!("{base}?limit={limit}"), "")
            .await
            .assert_invalid("limit");
    }
    for cursor in ["%%%", "ZXBfMDE", "bm9wZQ"] {
        w.manage("GET", &format!("{base}?cursor={cursor}"), "")
            .await
            .assert_invalid("cursor");
    }
    w.call_as(OTHER_ORG, MANAGE, "GET", &base, "")
        .await
        .assert_error(404, "not_found");
    w.manage("GET", "/v1/endpoints/ep_missing/deliveries", "")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn one_delivery_shows_its_attempts() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let (event, d) = w.delivery(ORG, &id, DeliveryStatus::Pending).await;
    let at = Utc::now();
    w.deliveries
        .record_attempt(
            &d.id,
            &AttemptUpdate {
                attempt: Attempt {
                    number: 1,
                    at,
                    status_code: Some(500),
                    error: None,
                    latency_ms: 12,
                    response_body: Some("oops".into()),
                },
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(at + Duration::seconds(30)),
                last_error: Some("HTTP 500".into()),
                unleased_by: None,
            },
        )
        .await
        .unwrap();
    let r = w
        .manage("GET", &format!("/v1/deliveries/{}", d.id), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let v = &r.json;
    assert_eq!(v["id"], d.id.as_str());
    assert_eq!(v["endpoint_id"], id.as_str());
    assert_eq!(v["event_id"], event.id.as_str());
    assert_eq!(v["event_type"], "invoice.paid");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["last_error"], "HTTP 500");
    assert_eq!(
        v["next_attempt_at"],
        webhooks_domain::time::rfc3339(at + Duration::seconds(30))
    );
    assert_eq!(
        v["attempts"],
        json!([{
            "number": 1,
            "at": webhooks_domain::time::rfc3339(at),
            "status_code": 500,
            "error": null,
            "latency_ms": 12,
            "response_body": "oops"
        }])
    );
    for key in ["created_at", "updated_at"] {
        assert!(v[key].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn deliveries_of_other_orgs_and_malformed_ids_are_404() {
    let w = world();
    let theirs = w.create_endpoint_for(OTHER_ORG, &["*"]).await;
    let (_, d) = w
        .delivery(
            OTHER_ORG,
            theirs["id"].as_str().unwrap(),
            DeliveryStatus::DeadLettered,
        )
        .await;
    for path in [
        format!("/v1/deliveries/{}", d.id),
        format!("/v1/deliveries/{}", d.id.replace("dlv_", "dlv_x")),
        "/v1/deliveries/dlv_nope".to_string(),
        format!("/v1/deliveries/dlv_{}", "0".repeat(52)),
    ] {
        w.manage("GET", &path, "")
            .await
            .assert_error(404, "not_found");
        w.manage("POST", &format!("{path}/retry"), "")
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(w.status_of(&d.id).await, DeliveryStatus::DeadLettered);
    assert!(w.queue.is_empty());
}

#[tokio::test]
async fn retry_requeues_dead_lettered_and_canceled_deliveries() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    for status in [DeliveryStatus::DeadLettered, DeliveryStatus::Canceled] {
        let (event, d) = w.delivery(ORG, &id, status).await;
        let before = w.queue.len();
        let r = w
            .manage("POST", &format!("/v1/deliveries/{}/retry", d.id), "")
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
        assert_eq!(r.json, json!({"id": d.id, "status": "pending"}));
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Pending);
        assert_eq!(w.queue.len(), before + 1);
        let task = tasks(&w).pop().unwrap();
        assert_eq!(
            task,
            DeliveryTask {
                delivery_id: d.id.clone(),
                org_id: ORG.into(),
                endpoint_id: id.clone(),
                event_id: event.id.clone(),
                event_type: EventType::InvoicePaid,
                payload: event.payload().into(),
                trace_id: None,
                redriven: false,
                queued: None,
                stands_for: None,
            }
        );
    }
}

#[tokio::test]
async fn retry_refuses_pending_and_delivered_deliveries() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    for status in [DeliveryStatus::Pending, DeliveryStatus::Delivered] {
        let (_, d) = w.delivery(ORG, &id, status).await;
        w.manage("POST", &format!("/v1/deliveries/{}/retry", d.id), "")
            .await
            .assert_error(409, "conflict");
        assert_eq!(w.status_of(&d.id).await, status);
    }
    assert!(w.queue.is_empty());
}

#[tokio::test]
async fn retry_requeues_a_pending_delivery_whose_message_was_lost() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let data = serde_json::value::RawValue::from_string("{}".into()).expect("json");
    let event = webhooks_domain::Event::new(ORG, webhooks_domain::EventType::LeadWon, data);
    w.events.put_if_absent(&event).await.expect("event");
    // Pending, but overdue by an hour: its queue message is gone (e.g.
    // redriven to the DLQ by SQS while the deliveries table was down).
    let mut d = Delivery::new(ORG, &id, &event.id, event.event_type);
    d.next_attempt_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    w.deliveries.create_if_absent(&d).await.expect("delivery");
    let r = w
        .manage("POST", &format!("/v1/deliveries/{}/retry", d.id), "")
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(w.queue.len(), 1);
    let task: webhooks_domain::DeliveryTask =
        serde_json::from_str(&w.queue.bodies()[0]).expect("task");
    assert_eq!(task.payload, event.payload());
    assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Pending);
}

#[tokio::test]
async fn retry_of_a_delivery_whose_endpoint_is_gone_is_404() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let (_, d) = w.delivery(ORG, &id, DeliveryStatus::DeadLettered).await;
    w.endpoints.delete(ORG, &id).await.unwrap();
    w.manage("POST", &format!("/v1/deliveries/{}/retry", d.id), "")
        .await
        .assert_error(404, "not_found");
    assert_eq!(w.status_of(&d.id).await, DeliveryStatus::DeadLettered);
    assert!(w.queue.is_empty());
}

/// A dead-lettered delivery created at `created_at`.
async fn dead_at(
    w: &TestSystem,
    endpoint_id: &str,
    created_at: chrono::DateTime<Utc>,
) -> (Event, Delivery) {
    let data = serde_json::value::RawValue::from_string("{}".into()).unwrap();
    let event = Event::new(ORG, EventType::LeadWon, data);
    w.events.put_if_absent(&event).await.unwrap();
    let mut d = Delivery::new(ORG, endpoint_id, &event.id, event.event_type);
    d.status = DeliveryStatus::DeadLettered;
    d.created_at = created_at;
    w.deliveries.create_if_absent(&d).await.unwrap();
    (event, d)
}

#[tokio::test]
async fn recover_requeues_every_dead_lettered_delivery_since_a_time() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let since = Utc::now() - Duration::hours(1);
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(dead_at(&w, &id, since - Duration::minutes(5)).await.1);
    }
    let mut recent = Vec::new();
    for _ in 0..130 {
        recent.push(dead_at(&w, &id, since + Duration::minutes(5)).await);
    }
    let (_, delivered) = w.delivery(ORG, &id, DeliveryStatus::Delivered).await;
    let other = w.create_endpoint(&["*"]).await;
    let (_, elsewhere) = dead_at(&w, &other, Utc::now()).await;

    let r = w
        .manage(
            "POST",
            &format!("/v1/endpoints/{id}/recover"),
            json!({"since": webhooks_domain::time::rfc3339(since)}).to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json, json!({"requeued": 130, "next_cursor": null}));
    for (event, d) in &recent {
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Pending);
        assert!(tasks(&w)
            .iter()
            .any(|t| t.delivery_id == d.id && t.payload == event.payload()));
    }
    for d in &old {
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::DeadLettered);
    }
    assert_eq!(w.status_of(&delivered.id).await, DeliveryStatus::Delivered);
    assert_eq!(
        w.status_of(&elsewhere.id).await,
        DeliveryStatus::DeadLettered
    );
    assert_eq!(w.queue.len(), 130);

    // An earlier `since` takes the older ones too.
    let r = w
        .manage(
            "POST",
            &format!("/v1/endpoints/{id}/recover"),
            json!({"since": "2000-01-01T00:00:00+02:00"}).to_string(),
        )
        .await;
    assert_eq!(r.json, json!({"requeued": 3, "next_cursor": null}));
}

#[tokio::test]
async fn recover_goes_on_from_its_cursor_a_bounded_part_of_the_endpoint_per_request() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let long_ago = Utc::now() - Duration::days(2);
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(dead_at(&w, &id, long_ago).await.1);
    }
    // Newer than those: more than one request examines.
    let newer = webhooks_pipeline::REQUEUE_PAGES_PER_CALL
        * webhooks_ports::DELIVERIES_EXAMINED_PER_PAGE
        + 50;
    for _ in 0..newer {
        let event_id = webhooks_domain::ids::new_id("evt");
        let mut d = Delivery::new(ORG, &id, &event_id, EventType::LeadWon);
        d.status = DeliveryStatus::Delivered;
        w.deliveries.create_if_absent(&d).await.unwrap();
    }
    let uri = format!("/v1/endpoints/{id}/recover");
    let first = w
        .manage("POST", &uri, r#"{"since":"2000-01-01T00:00:00Z"}"#)
        .await;
    assert_eq!(first.status, 202, "{}", first.json);
    assert_eq!(first.json["requeued"], 0);
    let cursor = first.json["next_cursor"]
        .as_str()
        .expect("a cursor to go on from")
        .to_string();
    let second = w
        .manage(
            "POST",
            &uri,
            json!({"since": "2000-01-01T00:00:00Z", "cursor": cursor}).to_string(),
        )
        .await;
    assert_eq!(second.json, json!({"requeued": 3, "next_cursor": null}));
    for d in &dead {
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Pending);
    }
    // A cursor this API did not hand out, or not a string, is refused.
    for bad in [json!("garbage!"), json!(5)] {
        w.manage(
            "POST",
            &uri,
            json!({"since": "2000-01-01T00:00:00Z", "cursor": bad}).to_string(),
        )
        .await
        .assert_invalid("cursor");
    }
}

#[tokio::test]
async fn recover_wants_a_valid_since_and_the_callers_endpoint() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let uri = format!("/v1/endpoints/{id}/recover");
    for body in [
        "{}",
        r#"{"since": null}"#,
        r#"{"since": 5}"#,
        r#"{"since": "yesterday"}"#,
        r#"{"since": "2026-13-01T00:00:00Z"}"#,
    ] {
        w.manage("POST", &uri, body).await.assert_invalid("since");
    }
    w.manage("POST", &uri, r#"{"since":"2026-01-01T00:00:00Z","x":1}"#)
        .await
        .assert_invalid("x");
    w.manage("POST", &uri, "")
        .await
        .assert_error(400, "invalid_request");
    w.call_as(
        OTHER_ORG,
        MANAGE,
        "POST",
        &uri,
        r#"{"since":"2020-01-01T00:00:00Z"}"#,
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_page_of_long_delivery_logs_stays_under_lambdas_response_limit() {
    let w = world();
    let endpoint_id = w.create_endpoint(&["*"]).await;
    // 100 deliveries, each with 60 attempts that kept 1 KiB of response
    // body: about 7 MB of JSON, over the 6 MB a Lambda may answer.
    for n in 0..100 {
        let event_id = webhooks_domain::ids::new_id("evt");
        let mut d = Delivery::new(ORG, &endpoint_id, &event_id, EventType::LeadWon);
        d.attempts = (1..=60)
            .map(|number| Attempt {
                number,
                at: Utc::now(),
                status_code: Some(500),
                error: None,
                latency_ms: 12,
                response_body: Some(format!("{n:04}").repeat(256)),
            })
            .collect();
        w.deliveries.create_if_absent(&d).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut uri = format!("/v1/endpoints/{endpoint_id}/deliveries?limit=100");
    let mut pages = 0;
    loop {
        let r = w.manage("GET", &uri, "").await;
        assert_eq!(r.status, 200);
        assert!(
            r.bytes.len() < 6 * 1024 * 1024,
            "a page of {} bytes is over Lambda's limit",
            r.bytes.len()
        );
        for d in r.json["data"].as_array().unwrap() {
            assert!(
                seen.insert(d["id"].as_str().unwrap().to_string()),
                "a delivery twice"
            );
        }
        pages += 1;
        match r.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/endpoints/{endpoint_id}/deliveries?limit=100&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 100, "every delivery on some page");
    assert!(pages >= 2);
}

#[tokio::test]
async fn stats_count_the_window_by_outcome() {
    let w = world();
    let endpoint_id = w.create_endpoint(&["*"]).await;
    let attempt = |number, status_code, latency_ms| Attempt {
        number,
        at: Utc::now(),
        status_code,
        error: status_code.is_none().then(|| "timeout".to_string()),
        latency_ms,
        response_body: None,
    };
    let runs: [(DeliveryStatus, Vec<Attempt>, i64); 5] = [
        (
            DeliveryStatus::Delivered,
            vec![attempt(1, Some(200), 10)],
            0,
        ),
        (
            DeliveryStatus::Delivered,
            vec![attempt(1, Some(500), 30), attempt(2, Some(204), 20)],
            0,
        ),
        (DeliveryStatus::DeadLettered, vec![attempt(1, None, 40)], 0),
        (DeliveryStatus::Pending, vec![], 0),
        // Two days old: outside the default window.
        (
            DeliveryStatus::DeadLettered,
            vec![attempt(1, Some(500), 90)],
            48,
        ),
    ];
    for (status, attempts, hours_ago) in runs {
        let created_at = Utc::now() - Duration::hours(hours_ago);
        // The event was published (its id made) just before the delivery.
        let event_id = format!(
            "{}{:06}",
            &webhooks_domain::ids::id_floor_at("evt", created_at)[..24],
            w.deliveries.all().len()
        );
        let mut d = Delivery::new(ORG, &endpoint_id, &event_id, EventType::LeadWon);
        d.status = status;
        d.attempts = attempts;
        d.created_at = created_at;
        w.deliveries.create_if_absent(&d).await.unwrap();
    }
    let r = w
        .manage("GET", &format!("/v1/endpoints/{endpoint_id}/stats"), "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"delivered": 2, "dead_lettered": 1, "pending": 1, "failed_attempts": 2,
            "success_rate": 2.0 / 3.0, "latency_ms": {"p50": 20, "p95": 40}})
    );
    let since = (Utc::now() - Duration::hours(72)).to_rfc3339();
    let all = w
        .manage(
            "GET",
            &format!(
                "/v1/endpoints/{endpoint_id}/stats?since={}",
                since.replace('+', "%2B")
            ),
            "",
        )
        .await;
    assert_eq!(all.json["dead_lettered"], 2);
    assert_eq!(all.json["failed_attempts"], 3);

    w.manage(
        "GET",
        &format!("/v1/endpoints/{endpoint_id}/stats?since=yesterday"),
        "",
    )
    .await
    .assert_invalid("since");
    // Another org's endpoint is not found.
    let theirs = w
        .call_as(
            OTHER_ORG,
            MANAGE,
            "GET",
            &format!("/v1/endpoints/{endpoint_id}/stats"),
            "",
        )
        .await;
    assert_eq!(theirs.status, 404);
}

#[tokio::test]
async fn one_delivery_shows_the_request_it_sends() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let (event, d) = w.delivery(ORG, &id, DeliveryStatus::Pending).await;
    let r = w
        .manage("GET", &format!("/v1/deliveries/{}", d.id), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // The body as the fan-out queues it for the sender.
    assert_eq!(r.json["request"]["body"], event.payload());
    assert!(event.payload().contains(r#"{"n": 1, "a": [true]}"#));
    // Not attempted yet: the headers of its first attempt, when due.
    let headers = &r.json["request"]["headers"];
    assert_eq!(headers["x-webhook-attempt"], "1");
    assert_eq!(
        headers["webhook-timestamp"],
        d.created_at.timestamp().to_string()
    );
    assert_eq!(headers["x-webhook-delivery"], d.id.as_str());
    assert_eq!(headers["x-webhook-event"], "invoice.paid");
    assert_eq!(headers["webhook-id"], event.id.as_str());
    assert_eq!(headers["x-signature"], webhooks_pipeline::sender::MASKED);
    assert_eq!(
        headers["webhook-signature"],
        webhooks_pipeline::sender::MASKED
    );
    // In the order they are sent.
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    let at = |name: &str| text.find(&format!("\"{name}\":")).unwrap();
    assert!(at("content-type") < at("user-agent"));
    assert!(at("user-agent") < at("x-signature"));
    assert!(at("webhook-signature") < at("x-webhook-attempt"));
    // A listing shows no request.
    let list = w
        .manage("GET", &format!("/v1/endpoints/{id}/deliveries"), "")
        .await;
    assert!(list.json["data"][0].get("request").is_none());
}

#[tokio::test]
async fn a_delivery_whose_event_is_gone_shows_no_request() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let event = Event::new(
        ORG,
        EventType::LeadWon,
        serde_json::value::to_raw_value(&json!({})).unwrap(),
    );
    let d = Delivery::new(ORG, &id, &event.id, event.event_type);
    w.deliveries.create_if_absent(&d).await.unwrap();
    let r = w
        .manage("GET", &format!("/v1/deliveries/{}", d.id), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["id"], d.id.as_str());
    assert_eq!(r.json["request"], Value::Null);
}

/// The event store fails every read: with a transient error (the caller
/// may try again), or with one that will never pass.
struct EventReads(webhooks_ports::BackendError);

impl webhooks_faults::Policy for EventReads {
    async fn before(&self, op: webhooks_faults::Op) -> webhooks_ports::Result<()> {
        match op {
            webhooks_faults::Op::GetEvent => Err(self.0.clone()),
            _ => Ok(()),
        }
    }
    async fn after(&self, _: webhooks_faults::Op, _: bool) -> webhooks_ports::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_read_leaves_the_delivery_readable() {
    use webhooks_ports::BackendError;
    for (error, status) in [
        (BackendError::Transient("throttled".into()), 503),
        (BackendError::Permanent("undecodable".into()), 200),
    ] {
        let w = world();
        let id = w.create_endpoint(&["*"]).await;
        let (_, d) = w.delivery(ORG, &id, DeliveryStatus::Delivered).await;
        let api = webhooks_fn_api::Api::new(
            std::sync::Arc::new(webhooks_faults::Faulty::new(
                w.events.clone(),
                std::sync::Arc::new(EventReads(error)),
            )),
            w.endpoints.clone(),
            w.deliveries.clone(),
            w.cursors.clone(),
            w.idempotency.clone(),
            w.queue.clone(),
            webhooks_fn_api::ApiConfig::default(),
        );
        let req = request(
            "GET",
            &format!("/v1/deliveries/{}", d.id),
            "",
            Some(&[("org_id", ORG), ("scope", MANAGE)]),
        );
        let response = webhooks_fn_api::handle(&api, req).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        if status == 200 {
            let v: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
            assert_eq!(
                (v["id"].as_str(), &v["request"]),
                (Some(d.id.as_str()), &Value::Null)
            );
        }
    }
}
