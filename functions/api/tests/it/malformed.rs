//! Nothing a caller sends may produce a 5xx: garbage bodies, wrong types,
//! nulls, huge numbers, invalid UTF-8, deep nesting, odd query strings.

use crate::support::*;
use serde_json::{json, Value};
use webhooks_domain::DeliveryStatus;
use webhooks_fn_api::input::MAX_BODY_BYTES;
use webhooks_fn_api::ROUTES;

fn assert_not_5xx(r: &Reply, what: &str) {
    assert!(r.status < 500, "{what} -> {} {}", r.status, r.json);
    if r.status >= 400 {
        r.error_code();
    }
}

/// A world with one endpoint and one dead-lettered delivery; the route's
/// pattern filled with their ids.
async fn setup(pattern: &str) -> (TestSystem, String) {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let (_, d) = w.delivery(ORG, &ep, DeliveryStatus::DeadLettered).await;
    let id = if pattern.starts_with("/v1/deliveries") {
        d.id
    } else {
        ep
    };
    let path = pattern.replace("{id}", &id);
    (w, path)
}

fn garbage_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "\n",
        "garbage",
        "{",
        "}",
        "{}",
        "[]",
        "[1,2]",
        "42",
        "-1e999999",
        "null",
        "true",
        "\"str\"",
        "{\"a\"}",
        "{'a': 1}",
        "{\"url\": 1e999999}",
        "{\"url\":\"\\ud800\"}",
        "\u{feff}{}",
        "{\"data\": {\"x\": 1e999999}}",
        "{} trailing",
        "{}{}",
        "{\"type\":\"lead_won\",\"type\":\"lead_won\",\"data\":{}}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, b'{', b'}']);
    bodies.push(b"{\"url\":\"\xff\xfe\",\"event_types\":[\"*\"]}".to_vec());
    bodies.push(b"{\"type\":\"lead_won\",\"data\":{\"x\":\"\xc3\"}}".to_vec());
    bodies.push("[".repeat(200_000).into_bytes());
    bodies.push(format!("{{\"data\":{}", "{\"a\":".repeat(40_000)).into_bytes());
    bodies.push(
        format!(
            r#"{{"type":"lead_won","data":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
    );
    bodies
}

fn bad_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(0),
        json!(-1),
        json!(1.5e308),
        serde_json::from_str("123456789012345678901234567890").unwrap(),
        json!(true),
        json!(""),
        json!([]),
        json!({}),
        json!("x".repeat(10_000)),
        json!([null]),
        json!([[]]),
        json!({"nested": {"deep": [1, 2, 3]}}),
    ]
}

const FIELDS: &[&str] = &[
    "url",
    "event_types",
    "description",
    "secret",
    "enabled",
    "type",
    "data",
    "idempotency_key",
    "since",
    "event_type",
];

/// A body the route accepts, to which one bad field is added.
fn base_body(method: &str, pattern: &str) -> Value {
    match (method, pattern) {
        ("POST", "/v1/endpoints") => json!({"url": "https://example.com/", "event_types": ["*"]}),
        ("POST", "/v1/events") => json!({"type": "lead_won", "data": {}}),
        ("POST", "/v1/endpoints/{id}/recover") => json!({"since": "2020-01-01T00:00:00Z"}),
        _ => json!({}),
    }
}

#[tokio::test]
async fn garbage_bodies_never_give_5xx() {
    for (method, pattern) in ROUTES {
        let (w, path) = setup(pattern).await;
        for body in garbage_bodies() {
            let what = format!(
                "{method} {pattern} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            let r = w.manage(method, &path, body).await;
            assert_not_5xx(&r, &what);
        }
    }
}

#[tokio::test]
async fn wrong_types_and_nulls_in_every_field_never_give_5xx() {
    for (method, pattern) in ROUTES {
        if *method == "DELETE" {
            continue;
        }
        let (w, path) = setup(pattern).await;
        for field in FIELDS {
            for value in bad_values() {
                let mut body = base_body(method, pattern);
                body[*field] = value.clone();
                let what = format!("{method} {pattern} {field}={value:.40}");
                let r = w.manage(method, &path, body.to_string()).await;
                assert_not_5xx(&r, &what);
                // Arrays of the same values, as whole bodies.
                let r = w.manage(method, &path, json!([value]).to_string()).await;
                assert_not_5xx(&r, &what);
            }
        }
    }
}

#[tokio::test]
async fn odd_query_strings_never_give_5xx() {
    let queries = [
        "limit=%ff",
        "limit=1&limit=2",
        "cursor=%ZZ",
        "status=%00",
        "=&&&==",
        "limit=18446744073709551616",
        "limit=%20",
        "status=pending&status=delivered",
        &format!("cursor={}", "A".repeat(10_000)),
        "cursor[]=1&limit[x]=2",
    ];
    for (method, pattern) in ROUTES {
        if *method != "GET" {
            continue;
        }
        let (w, path) = setup(pattern).await;
        for q in &queries {
            let r = w.manage(method, &format!("{path}?{q}"), "").await;
            assert_not_5xx(&r, &format!("{path}?{q}"));
        }
    }
}

#[tokio::test]
async fn bodies_over_256_kib_are_413() {
    let w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let too_big = format!(
        r#"{{"type":"lead_won","data":{{"x":"{}"}}}}"#,
        "a".repeat(MAX_BODY_BYTES)
    );
    for (method, path, scope) in [
        ("POST", "/v1/events".to_string(), WRITE),
        ("POST", "/v1/endpoints".to_string(), MANAGE),
        ("PATCH", format!("/v1/endpoints/{ep}"), MANAGE),
        ("POST", format!("/v1/endpoints/{ep}/rotate-secret"), MANAGE),
    ] {
        let r = w.call_as(ORG, scope, method, &path, too_big.clone()).await;
        r.assert_error(413, "payload_too_large");
        // Garbage of that size too: the size is checked first.
        let r = w
            .call_as(ORG, scope, method, &path, vec![0xffu8; MAX_BODY_BYTES + 1])
            .await;
        r.assert_error(413, "payload_too_large");
    }
    // Exactly at the limit is read (and here refused as too much data).
    let padding = MAX_BODY_BYTES - r#"{"type":"lead_won","data":{"x":""}}"#.len();
    let at_limit = format!(
        r#"{{"type":"lead_won","data":{{"x":"{}"}}}}"#,
        "a".repeat(padding)
    );
    assert_eq!(at_limit.len(), MAX_BODY_BYTES);
    w.call_as(ORG, WRITE, "POST", "/v1/events", at_limit)
        .await
        .assert_invalid("data");
    assert!(w.events.is_empty());
}
