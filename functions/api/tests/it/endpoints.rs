use crate::support::*;
use base64::Engine as _;
use chrono::Utc;
use serde_json::{json, Value};
use webhooks_domain::{DeliveryStatus, EventType, Secret};
use webhooks_ports::EndpointHealth;
use webhooks_ports::EndpointLookup;
use webhooks_ports::OrgEndpoints;
use webhooks_ports::{CursorStore, EndpointStore, EventStore};

fn user_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    )
}

#[tokio::test]
async fn create_answers_201_with_the_endpoint_and_its_secret() {
    let w = world();
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            json!({
                "url": "https://example.com/hook",
                "event_types": ["invoice.paid", "lead_won"],
                "description": "billing"
            })
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let ep = &r.json;
    let id = ep["id"].as_str().unwrap();
    assert!(id.starts_with("ep_"));
    assert_eq!(ep["url"], "https://example.com/hook");
    assert_eq!(ep["event_types"], json!(["invoice.paid", "lead_won"]));
    assert_eq!(ep["description"], "billing");
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["disabled_reason"], Value::Null);
    assert!(ep["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ep["created_at"], ep["updated_at"]);
    let secret = ep["secret"].as_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(r.headers["location"], format!("/v1/endpoints/{id}"));
    assert_eq!(r.headers["cache-control"], "no-store");

    let stored = w.endpoints.get(ORG, id).await.unwrap().unwrap();
    assert_eq!(stored.secret.expose(), secret);
    // The sweeper now knows the org.
    assert!(w
        .cursors
        .get(ORG)
        .await
        .unwrap()
        .unwrap()
        .starts_with("evt_"));
}

#[tokio::test]
async fn create_keeps_a_valid_user_secret_and_defaults() {
    let w = world();
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            json!({"url": "https://example.com/x", "event_types": ["*"], "secret": user_secret(), "description": null})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["secret"], user_secret());
    assert_eq!(r.json["event_types"], json!(["*"]));
    assert_eq!(r.json["description"], "");
}

#[tokio::test]
async fn create_validates_each_field_and_names_it() {
    let w = world();
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let short_secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([1u8; 10])
    );
    let cases: Vec<(Value, &str)> = vec![
        (json!({"event_types": ["*"]}), "url"),
        (json!({"url": null, "event_types": ["*"]}), "url"),
        (json!({"url": 5, "event_types": ["*"]}), "url"),
        (json!({"url": "not a url", "event_types": ["*"]}), "url"),
        (
            json!({"url": "http://example.com/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "ftp://example.com/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://127.0.0.1/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://localhost/", "event_types": ["*"]}),
            "url",
        ),
        (json!({"url": long_url, "event_types": ["*"]}), "url"),
        (json!({"url": "https://example.com/"}), "event_types"),
        (
            json!({"url": "https://example.com/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["nope"]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*", "lead_won"]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": "lead_won"}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": [1]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": null}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "description": "x".repeat(1025)}),
            "description",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "description": 7}),
            "description",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "secret": "abc"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "secret": short_secret}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "secret": "whsec_!!!"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "secret": 12345}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "enabled": true}),
            "enabled",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["*"], "color": "red"}),
            "color",
        ),
    ];
    for (body, field) in cases {
        let r = w.manage("POST", "/v1/endpoints", body.to_string()).await;
        r.assert_invalid(field);
    }
    // A 1024-character description is fine.
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            json!({"url": "https://example.com/", "event_types": ["*"], "description": "é".repeat(1024)})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(w.endpoints.list_all(OTHER_ORG).await.unwrap().is_empty());
}

#[tokio::test]
async fn secret_errors_never_contain_the_secret() {
    let w = world();
    let almost = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 70])
    );
    for secret in [
        almost.as_str(),
        "whsec_not*base64*at*all",
        "sk_live_supersecretvalue",
    ] {
        let r = w
            .manage(
                "POST",
                "/v1/endpoints",
                json!({"url": "https://example.com/", "event_types": ["*"], "secret": secret})
                    .to_string(),
            )
            .await;
        r.assert_invalid("secret");
        let text = String::from_utf8_lossy(&r.bytes);
        assert!(
            !text.contains(secret.trim_start_matches("whsec_")),
            "{text}"
        );
    }
}

#[tokio::test]
async fn local_policy_allows_plain_http_to_loopback() {
    let w = local_world();
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            json!({"url": "http://127.0.0.1:9000/hook", "event_types": ["*"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["url"], "http://127.0.0.1:9000/hook");
}

#[tokio::test]
async fn listings_page_and_never_show_secrets() {
    let w = world();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(w.create_endpoint(&["*"]).await);
    }
    w.create_endpoint_for(OTHER_ORG, &["*"]).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/endpoints?limit=2".to_string();
    let mut pages = 0;
    loop {
        let r = w.manage("GET", &uri, "").await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert!(!String::from_utf8_lossy(&r.bytes).contains("whsec_"));
        let data = r.json["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        for ep in data {
            assert!(ep.get("secret").is_none());
            seen.push(ep["id"].as_str().unwrap().to_string());
        }
        pages += 1;
        match r.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/endpoints?limit=2&cursor={c}"),
            None => {
                assert_eq!(r.json["next_cursor"], Value::Null);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    let all = w.manage("GET", "/v1/endpoints", "").await;
    assert_eq!(all.json["data"].as_array().unwrap().len(), 5);
    assert_eq!(all.json["next_cursor"], Value::Null);
    let other = w
        .call_as(OTHER_ORG, MANAGE, "GET", "/v1/endpoints", "")
        .await;
    assert_eq!(other.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn listings_refuse_bad_limits_and_cursors() {
    let w = world();
    w.create_endpoint(&["*"]).await;
    for limit in ["0", "251", "-1", "ten", "1e3", "99999999999999999999999"] {
        w.manage("GET", &format!("/v1/endpoints?limit={limit}"), "")
            .await
            .assert_invalid("limit");
    }
    assert_eq!(
        w.manage("GET", "/v1/endpoints?limit=250", "").await.status,
        200
    );
    for cursor in ["garbage!", "AAAA", "ZXZ0XzAx", &"x".repeat(5000)] {
        w.manage("GET", &format!("/v1/endpoints?cursor={cursor}"), "")
            .await
            .assert_invalid("cursor");
    }
    // Unknown parameters are ignored; an empty cursor is no cursor.
    assert_eq!(
        w.manage("GET", "/v1/endpoints?foo=1&cursor=", "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn get_shows_one_endpoint_of_the_callers_org_only() {
    let w = world();
    let id = w.create_endpoint(&["lead_won"]).await;
    let r = w.manage("GET", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["id"], id.as_str());
    assert!(r.json.get("secret").is_none());
    for key in [
        "id",
        "url",
        "event_types",
        "description",
        "enabled",
        "disabled_reason",
        "created_at",
        "updated_at",
    ] {
        assert!(r.json.get(key).is_some(), "{key}");
    }
    w.call_as(OTHER_ORG, MANAGE, "GET", &format!("/v1/endpoints/{id}"), "")
        .await
        .assert_error(404, "not_found");
    for missing in [
        "ep_nope".to_string(),
        format!("ep_{}", "0".repeat(26)),
        "%00".to_string(),
        "x".repeat(3000),
    ] {
        w.manage("GET", &format!("/v1/endpoints/{missing}"), "")
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn patch_changes_what_it_names() {
    let w = world();
    let id = w.create_endpoint(&["lead_won"]).await;
    let before = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = w
        .manage(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            json!({"url": "https://example.org/new", "event_types": ["invoice.paid"], "description": "new"})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["url"], "https://example.org/new");
    assert_eq!(r.json["event_types"], json!(["invoice.paid"]));
    assert_eq!(r.json["description"], "new");
    assert!(r.json.get("secret").is_none());
    let after = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    assert!(after.updated_at > before.updated_at);
    assert_eq!(after.secret, before.secret);
    assert_eq!(after.created_at, before.created_at);

    // An empty patch changes nothing.
    let r = w
        .manage("PATCH", &format!("/v1/endpoints/{id}"), "{}")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.endpoints.get(ORG, &id).await.unwrap().unwrap(), after);

    // Description null clears it.
    let r = w
        .manage(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            r#"{"description":null}"#,
        )
        .await;
    assert_eq!(r.json["description"], "");
}

#[tokio::test]
async fn re_enabling_clears_the_disabled_reason_and_failure_run() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    w.endpoints
        .set_failing_since(ORG, &id, Some(Utc::now()))
        .await
        .unwrap();
    w.endpoints
        .disable(ORG, &id, "endpoint answered 410 Gone")
        .await
        .unwrap();
    let r = w.manage("GET", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(r.json["enabled"], false);
    assert_eq!(r.json["disabled_reason"], "endpoint answered 410 Gone");

    let r = w
        .manage(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            r#"{"enabled": true}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["enabled"], true);
    assert_eq!(r.json["disabled_reason"], Value::Null);
    let stored = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    assert_eq!(stored.failing_since, None);

    let r = w
        .manage(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            r#"{"enabled": false}"#,
        )
        .await;
    assert_eq!(r.json["enabled"], false);
}

#[tokio::test]
async fn patch_validates_like_create_and_refuses_other_fields() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let uri = format!("/v1/endpoints/{id}");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"url": "http://example.com/"}), "url"),
        (json!({"url": null}), "url"),
        (json!({"event_types": []}), "event_types"),
        (json!({"event_types": ["bogus"]}), "event_types"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"enabled": null}), "enabled"),
        (json!({"description": "x".repeat(1025)}), "description"),
        (json!({"secret": user_secret()}), "secret"),
        (json!({"id": "ep_other"}), "id"),
    ];
    for (body, field) in cases {
        w.manage("PATCH", &uri, body.to_string())
            .await
            .assert_invalid(field);
    }
    w.manage("PATCH", &uri, "")
        .await
        .assert_error(400, "invalid_request");
    w.call_as(OTHER_ORG, MANAGE, "PATCH", &uri, r#"{"enabled":false}"#)
        .await
        .assert_error(404, "not_found");
    assert!(w.endpoints.get(ORG, &id).await.unwrap().unwrap().enabled);
}

#[tokio::test]
async fn delete_answers_204_and_cancels_the_newest_pending_deliveries() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let mut pending = Vec::new();
    for _ in 0..230 {
        pending.push(w.delivery(ORG, &id, DeliveryStatus::Pending).await.1);
    }
    let (_, delivered) = w.delivery(ORG, &id, DeliveryStatus::Delivered).await;
    let (_, dead) = w.delivery(ORG, &id, DeliveryStatus::DeadLettered).await;

    w.call_as(
        OTHER_ORG,
        MANAGE,
        "DELETE",
        &format!("/v1/endpoints/{id}"),
        "",
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(w.status_of(&pending[0].id).await, DeliveryStatus::Pending);

    let r = w.manage("DELETE", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(r.status, 204);
    assert!(r.bytes.is_empty());
    // One request's work is bounded (README, "Bounded reads"): it cancels
    // the newest pending deliveries, two pages of them; the older ones end
    // canceled when the sender next takes their message or the reconciler
    // finds them overdue (crates/pipeline/tests/reconciler.rs).
    let bound = webhooks_pipeline::REQUEUE_PAGES_PER_CALL * 100;
    let (older, newer) = pending.split_at(pending.len() - bound);
    for d in newer {
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Canceled);
    }
    for d in older {
        assert_eq!(w.status_of(&d.id).await, DeliveryStatus::Pending);
    }
    assert_eq!(w.status_of(&delivered.id).await, DeliveryStatus::Delivered);
    assert_eq!(w.status_of(&dead.id).await, DeliveryStatus::DeadLettered);
    w.manage("GET", &format!("/v1/endpoints/{id}"), "")
        .await
        .assert_error(404, "not_found");
    w.manage("DELETE", &format!("/v1/endpoints/{id}"), "")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn the_secret_is_revealed_to_its_org_only() {
    let w = world();
    let created = w.create_endpoint_for(ORG, &["*"]).await;
    let id = created["id"].as_str().unwrap();
    let r = w
        .manage("GET", &format!("/v1/endpoints/{id}/secret"), "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, json!({"secret": created["secret"]}));
    assert_eq!(r.headers["cache-control"], "no-store");
    w.call_as(
        OTHER_ORG,
        MANAGE,
        "GET",
        &format!("/v1/endpoints/{id}/secret"),
        "",
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn rotation_returns_the_new_secret_and_keeps_the_old_one_signing() {
    let w = world();
    let created = w.create_endpoint_for(ORG, &["*"]).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap();

    let r = w
        .manage("POST", &format!("/v1/endpoints/{id}/rotate-secret"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let new = r.json["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    assert_eq!(r.json.as_object().unwrap().len(), 1);

    let stored = w.endpoints.get(ORG, id).await.unwrap().unwrap();
    let live: Vec<&str> = stored
        .signing_secrets(Utc::now())
        .into_iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(live, vec![new.as_str(), old]);
    assert_eq!(
        stored
            .signing_secrets(Utc::now() + chrono::Duration::hours(25))
            .len(),
        1
    );
    let revealed = w
        .manage("GET", &format!("/v1/endpoints/{id}/secret"), "")
        .await;
    assert_eq!(revealed.json["secret"], new.as_str());

    // A chosen secret, then bad ones.
    let r = w
        .manage(
            "POST",
            &format!("/v1/endpoints/{id}/rotate-secret"),
            json!({"secret": user_secret()}).to_string(),
        )
        .await;
    assert_eq!(r.json["secret"], user_secret());
    for body in [r#"{"secret":"nope"}"#, r#"{"secret":1}"#, r#"{"other":1}"#] {
        let r = w
            .manage("POST", &format!("/v1/endpoints/{id}/rotate-secret"), body)
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert!(!String::from_utf8_lossy(&r.bytes).contains("nope"));
    }
    w.call_as(
        OTHER_ORG,
        MANAGE,
        "POST",
        &format!("/v1/endpoints/{id}/rotate-secret"),
        "",
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn test_events_target_their_endpoint() {
    let w = world();
    let id = w.create_endpoint(&["invoice.paid", "lead_won"]).await;
    let r = w
        .manage("POST", &format!("/v1/endpoints/{id}/test"), "")
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["event_type"], "invoice.paid");
    let event_id = r.json["event_id"].as_str().unwrap();
    let event = w.events.get(ORG, event_id).await.unwrap().unwrap();
    assert_eq!(event.target_endpoint.as_deref(), Some(id.as_str()));
    assert_eq!(event.event_type, EventType::InvoicePaid);
    assert_eq!(event.data.get(), r#"{"test":true}"#);

    let r = w
        .manage(
            "POST",
            &format!("/v1/endpoints/{id}/test"),
            r#"{"event_type":"survey.submitted"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json["event_type"], "survey.submitted");

    let all = w.create_endpoint(&["*"]).await;
    let r = w
        .manage("POST", &format!("/v1/endpoints/{all}/test"), "{}")
        .await;
    assert_eq!(r.json["event_type"], "client.created");

    for body in [r#"{"event_type":"nope"}"#, r#"{"event_type":3}"#] {
        w.manage("POST", &format!("/v1/endpoints/{id}/test"), body)
            .await
            .assert_invalid("event_type");
    }
    w.call_as(
        OTHER_ORG,
        MANAGE,
        "POST",
        &format!("/v1/endpoints/{id}/test"),
        "",
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(w.events.len(), 3);
}

#[tokio::test]
async fn rate_limit_is_optional_checked_and_kept() {
    let w = world();
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            json!({"url": "https://example.com/r", "event_types": ["*"], "rate_limit": 50})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["rate_limit"], 50);
    let id = r.json["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/endpoints/{id}");
    assert_eq!(
        w.endpoints.get(ORG, &id).await.unwrap().unwrap().rate_limit,
        Some(50)
    );
    assert_eq!(w.manage("GET", &uri, "").await.json["rate_limit"], 50);
    // Absent: unlimited.
    let unlimited = w.create_endpoint(&["*"]).await;
    let r = w
        .manage("GET", &format!("/v1/endpoints/{unlimited}"), "")
        .await;
    assert_eq!(r.json["rate_limit"], Value::Null);

    let r = w.manage("PATCH", &uri, r#"{"rate_limit": 10000}"#).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["rate_limit"], 10000);
    // Other changes keep it.
    let r = w.manage("PATCH", &uri, r#"{"description": "x"}"#).await;
    assert_eq!(r.json["rate_limit"], 10000);
    // null lifts it.
    let r = w.manage("PATCH", &uri, r#"{"rate_limit": null}"#).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["rate_limit"], Value::Null);
    assert_eq!(
        w.endpoints.get(ORG, &id).await.unwrap().unwrap().rate_limit,
        None
    );

    // Refused with the field named, and nothing written.
    let count = |w: &TestSystem| {
        let endpoints = w.endpoints.clone();
        async move { endpoints.list(ORG, 100, None).await.unwrap().items.len() }
    };
    let before = count(&w).await;
    let stored = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!(2.0),
        json!("5"),
        json!(10_001),
        json!(u64::MAX),
        json!(1e20),
        json!(true),
        json!([5]),
    ] {
        let create =
            json!({"url": "https://example.com/x", "event_types": ["*"], "rate_limit": bad});
        w.manage("POST", "/v1/endpoints", create.to_string())
            .await
            .assert_invalid("rate_limit");
        w.manage("PATCH", &uri, json!({ "rate_limit": bad }).to_string())
            .await
            .assert_invalid("rate_limit");
    }
    assert_eq!(count(&w).await, before);
    assert_eq!(w.endpoints.get(ORG, &id).await.unwrap().unwrap(), stored);
}

// ---- Endpoints per org (CONTRACT section 11) ----

/// A world whose orgs may have at most `max` endpoints.
fn world_with_limit(max: u32) -> TestSystem {
    world_with(webhooks_fn_api::ApiConfig {
        max_endpoints_per_org: max,
        ..webhooks_fn_api::ApiConfig::default()
    })
}

/// `POST /v1/endpoints` from `org` with a URL of its own; the reply.
async fn try_create(w: &TestSystem, org: &str, url: &str) -> Reply {
    w.call_as(
        org,
        MANAGE,
        "POST",
        "/v1/endpoints",
        json!({"url": url, "event_types": ["*"]}).to_string(),
    )
    .await
}

/// The org's stored endpoint URLs, from the store itself.
async fn stored_urls(w: &TestSystem, org: &str) -> Vec<String> {
    let page = w.endpoints.list(org, 1000, None).await.unwrap();
    assert_eq!(page.next_cursor, None);
    page.items.into_iter().map(|e| e.url).collect()
}

/// Fills `org` with `n` endpoints through the API.
async fn fill(w: &TestSystem, org: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            w.create_endpoint_for(org, &["*"]).await["id"]
                .as_str()
                .expect("an id")
                .to_string(),
        );
    }
    ids
}

/// Asserts a 422 `limit_exceeded` that names the limit and its value.
fn assert_limit_exceeded(r: &Reply, max: u32) {
    r.assert_error(422, "limit_exceeded");
    let message = r.error_message();
    assert!(
        message.contains("max_endpoints_per_org") && message.contains(&format!(" {max} ")),
        "the message does not name the limit of {max}: {message}"
    );
    assert!(!String::from_utf8_lossy(&r.bytes).contains("whsec_"));
    assert!(!r.headers.contains_key("location"));
}

#[tokio::test]
async fn the_101st_endpoint_is_422_limit_exceeded_and_writes_nothing() {
    let w = world();
    fill(&w, ORG, 100).await;
    let before = stored_urls(&w, ORG).await;
    let cursor = w.cursors.get(ORG).await.unwrap();
    let r = try_create(&w, ORG, "https://example.com/the-101st").await;
    assert_limit_exceeded(&r, 100);
    assert_eq!(
        r.error_message(),
        "this organization has reached its limit of 100 endpoints (max_endpoints_per_org); delete an endpoint to add another"
    );
    // Nothing written: the same endpoints, the same cursor, nothing listed.
    assert_eq!(stored_urls(&w, ORG).await, before);
    assert!(!before.iter().any(|u| u.ends_with("the-101st")));
    assert_eq!(w.cursors.get(ORG).await.unwrap(), cursor);
    let listed = w.manage("GET", "/v1/endpoints?limit=250", "").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(100));
    // Asking again changes nothing.
    assert_limit_exceeded(&try_create(&w, ORG, "https://example.com/again").await, 100);
    assert_eq!(stored_urls(&w, ORG).await.len(), 100);
}

#[tokio::test]
async fn deleting_an_endpoint_frees_a_slot_for_one_more() {
    let w = world();
    let ids = fill(&w, ORG, 100).await;
    assert_limit_exceeded(&try_create(&w, ORG, "https://example.com/full").await, 100);
    let r = w
        .manage("DELETE", &format!("/v1/endpoints/{}", ids[17]), "")
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    // A delete of nothing (already gone) frees nothing more.
    let r = w
        .manage("DELETE", &format!("/v1/endpoints/{}", ids[17]), "")
        .await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = try_create(&w, ORG, "https://example.com/freed").await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_limit_exceeded(&try_create(&w, ORG, "https://example.com/next").await, 100);
    let urls = stored_urls(&w, ORG).await;
    assert_eq!(urls.len(), 100);
    assert!(urls.iter().any(|u| u.ends_with("/freed")));
    assert!(!urls.iter().any(|u| u.ends_with("/next")));
}

#[tokio::test]
async fn another_orgs_endpoints_never_count() {
    let w = world();
    fill(&w, ORG, 100).await;
    assert_limit_exceeded(&try_create(&w, ORG, "https://example.com/a").await, 100);
    // The second org starts from nothing, and can fill up on its own.
    let ids = fill(&w, OTHER_ORG, 100).await;
    assert_eq!(stored_urls(&w, OTHER_ORG).await.len(), 100);
    assert_limit_exceeded(
        &try_create(&w, OTHER_ORG, "https://example.com/b").await,
        100,
    );
    // Its deletes free its own slots, not the first org's.
    let r = w
        .call_as(
            OTHER_ORG,
            MANAGE,
            "DELETE",
            &format!("/v1/endpoints/{}", ids[0]),
            "",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    assert_limit_exceeded(&try_create(&w, ORG, "https://example.com/c").await, 100);
    assert_eq!(
        try_create(&w, OTHER_ORG, "https://example.com/d")
            .await
            .status,
        201
    );
    assert_eq!(stored_urls(&w, ORG).await.len(), 100);
}

#[tokio::test]
async fn a_configured_limit_holds_instead_of_100() {
    let w = world_with_limit(3);
    fill(&w, ORG, 3).await;
    let r = try_create(&w, ORG, "https://example.com/fourth").await;
    assert_limit_exceeded(&r, 3);
    assert!(
        r.error_message().contains("limit of 3 endpoints"),
        "{}",
        r.error_message()
    );
    assert!(!r.error_message().contains("100"), "{}", r.error_message());
    assert_eq!(stored_urls(&w, ORG).await.len(), 3);
    // A limit of one: the first endpoint fills the org.
    let w = world_with_limit(1);
    fill(&w, OTHER_ORG, 1).await;
    assert_limit_exceeded(&try_create(&w, OTHER_ORG, "https://example.com/2").await, 1);
}

#[tokio::test]
async fn creates_racing_for_the_last_slot_pass_once() {
    let w = world_with_limit(3);
    fill(&w, ORG, 2).await;
    let urls: Vec<String> = (0..5)
        .map(|i| format!("https://example.com/racer-{i}"))
        .collect();
    let (a, b, c, d, e) = tokio::join!(
        try_create(&w, ORG, &urls[0]),
        try_create(&w, ORG, &urls[1]),
        try_create(&w, ORG, &urls[2]),
        try_create(&w, ORG, &urls[3]),
        try_create(&w, ORG, &urls[4]),
    );
    let replies = [a, b, c, d, e];
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_limit_exceeded(r, 3);
    }
    assert_eq!(stored_urls(&w, ORG).await.len(), 3);
}
