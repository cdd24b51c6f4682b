//! Custom headers on endpoints (CONTRACT section 12): set on create,
//! replaced or removed by PATCH, shown on every read as names with masked
//! values, and refused with a 400 naming the header when the platform or
//! HTTP owns it; nothing is written then.

use crate::support::*;
use serde_json::{json, Value};
use webhooks_ports::{EndpointLookup, EndpointStore};

const VALUE: &str = "sk_live_4f8a-never-shown";

async fn create_with(w: &TestSystem, headers: Value) -> Reply {
    w.manage(
        "POST",
        "/v1/endpoints",
        json!({"url": "https://example.com/hook", "event_types": ["invoice.paid"], "headers": headers})
            .to_string(),
    )
    .await
}

/// What the store holds for the endpoint: its headers' names and values.
async fn stored(w: &TestSystem, id: &str) -> Vec<(String, String)> {
    w.endpoints
        .get(ORG, id)
        .await
        .unwrap()
        .unwrap()
        .headers
        .pairs()
        .to_vec()
}

async fn endpoint_count(w: &TestSystem) -> usize {
    w.endpoints.list(ORG, 100, None).await.unwrap().items.len()
}

#[tokio::test]
async fn headers_are_kept_and_every_read_masks_their_values() {
    let w = world();
    let r = create_with(&w, json!({"X-Api-Key": VALUE, "X-Tenant": "acme"})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let masked = json!({"X-Api-Key": "********", "X-Tenant": "********"});
    assert_eq!(r.json["headers"], masked);
    let id = r.json["id"].as_str().unwrap().to_string();

    let read = w.manage("GET", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(read.json["headers"], masked);
    let list = w.manage("GET", "/v1/endpoints", "").await;
    assert_eq!(list.json["data"][0]["headers"], masked);
    for reply in [&r, &read, &list] {
        assert!(!String::from_utf8_lossy(&reply.bytes).contains(VALUE));
    }
    assert_eq!(
        stored(&w, &id).await,
        vec![
            ("X-Api-Key".to_string(), VALUE.to_string()),
            ("X-Tenant".to_string(), "acme".to_string())
        ]
    );
}

#[tokio::test]
async fn without_headers_reads_show_an_empty_object() {
    let w = world();
    let ep = w.create_endpoint_for(ORG, &["*"]).await;
    assert_eq!(ep["headers"], json!({}));
    let r = create_with(&w, Value::Null).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["headers"], json!({}));
}

#[tokio::test]
async fn names_the_platform_or_http_owns_are_400s_naming_the_header_and_write_nothing() {
    let w = world();
    for name in [
        "Host",
        "Content-Length",
        "content-type",
        "User-Agent",
        "X-Signature",
        "X-Webhook-Event",
        "X-Webhook-Anything",
        "webhook-id",
        "Webhook-Signature",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    ] {
        let r = create_with(&w, json!({ "X-Fine": "v", name: VALUE })).await;
        r.assert_invalid(name);
        assert!(!r.error_message().contains(VALUE));
    }
    for (headers, named) in [
        (json!({"Bad Name": "v"}), "Bad Name"),
        (
            json!({"X-Key": format!("{VALUE}\r\nX-Injected: 1")}),
            "X-Key",
        ),
        (json!({"X-Key": ""}), "X-Key"),
        (json!({"X-Key": 42}), "X-Key"),
        (json!({"X-Key": "a", "x-key": "b"}), "x-key"),
        (json!(["X-Key", VALUE]), "headers"),
        (json!("X-Key: v"), "headers"),
    ] {
        let r = create_with(&w, headers.clone()).await;
        r.assert_invalid(named);
        assert!(!r.error_message().contains(VALUE), "{headers}");
    }
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    create_with(&w, Value::Object(many.clone()))
        .await
        .assert_invalid("headers has 21 entries; the limit is 20");
    assert_eq!(
        endpoint_count(&w).await,
        0,
        "a refused create writes nothing"
    );
    let twenty: serde_json::Map<String, Value> = many.into_iter().take(20).collect();
    assert_eq!(create_with(&w, Value::Object(twenty)).await.status, 201);
    // Authorization is the endpoint's own when it has no auth.
    let r = create_with(&w, json!({"Authorization": "Token abc"})).await;
    assert_eq!(r.status, 201, "{}", r.json);
}

#[tokio::test]
async fn patch_replaces_keeps_and_removes_headers() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let uri = format!("/v1/endpoints/{id}");

    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"headers": {"X-Api-Key": VALUE}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["headers"], json!({"X-Api-Key": "********"}));
    assert!(!String::from_utf8_lossy(&r.bytes).contains(VALUE));

    // Another field's change leaves them as they are.
    let r = w
        .manage("PATCH", &uri, json!({"description": "x"}).to_string())
        .await;
    assert_eq!(r.json["headers"], json!({"X-Api-Key": "********"}));
    assert_eq!(
        stored(&w, &id).await,
        vec![("X-Api-Key".to_string(), VALUE.to_string())]
    );

    // A refused set changes nothing, the other fields of the PATCH included.
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"headers": {"Host": "evil.test"}, "description": "y"}).to_string(),
        )
        .await;
    r.assert_invalid("Host");
    let read = w.manage("GET", &uri, "").await;
    assert_eq!(read.json["description"], "x");
    assert_eq!(
        stored(&w, &id).await,
        vec![("X-Api-Key".to_string(), VALUE.to_string())]
    );

    // A new object replaces the whole set.
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"headers": {"X-Other": "o"}}).to_string(),
        )
        .await;
    assert_eq!(r.json["headers"], json!({"X-Other": "********"}));
    assert_eq!(
        stored(&w, &id).await,
        vec![("X-Other".to_string(), "o".to_string())]
    );

    let r = w
        .manage("PATCH", &uri, json!({"headers": null}).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["headers"], json!({}));
    assert!(stored(&w, &id).await.is_empty());
}
