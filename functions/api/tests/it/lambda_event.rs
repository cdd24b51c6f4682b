//! Requests as Lambda receives them from API Gateway (HTTP API, payload v2),
//! parsed by lambda_http itself: claims, path, query and body all arrive.

use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};

fn gateway_event(
    method: &str,
    path: &str,
    query: &str,
    body: Option<&[u8]>,
    claims: Value,
) -> String {
    let (body, encoded) = match body {
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (Value::String(text.to_string()), false),
            Err(_) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                true,
            ),
        },
        None => (Value::Null, false),
    };
    let mut ctx = json!({
        "accountId": "123456789012",
        "apiId": "abc123",
        "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
        "domainPrefix": "abc123",
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.7",
            "userAgent": "curl/8"
        },
        "requestId": "req-1",
        "routeKey": "ANY /v1/{proxy+}",
        "stage": "$default",
        "time": "27/Nov/2026:06:00:00 +0000",
        "timeEpoch": 1795759200000u64
    });
    if !claims.is_null() {
        ctx["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    json!({
        "version": "2.0",
        "routeKey": "ANY /v1/{proxy+}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "content-type": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com"
        },
        "requestContext": ctx,
        "body": body,
        "isBase64Encoded": encoded
    })
    .to_string()
}

async fn send_event(w: &TestSystem, event: &str) -> Reply {
    let req = lambda_http::request::from_str(event).expect("a valid API Gateway event");
    w.send(req).await
}

#[tokio::test]
async fn a_gateway_event_with_jwt_claims_is_served() {
    let w = world();
    let claims = json!({"org_id": ORG, "scope": "webhooks:manage events:write", "sub": "user-1"});
    let create = gateway_event(
        "POST",
        "/v1/endpoints",
        "",
        Some(br#"{"url":"https://example.com/h","event_types":["lead_won"]}"#),
        claims.clone(),
    );
    let r = send_event(&w, &create).await;
    assert_eq!(r.status, 201, "{}", r.json);

    w.create_endpoint(&["*"]).await;
    let list = gateway_event("GET", "/v1/endpoints", "limit=1", None, claims.clone());
    let r = send_event(&w, &list).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1);
    assert!(r.json["next_cursor"].is_string());

    let health = gateway_event("GET", "/healthz", "", None, Value::Null);
    assert_eq!(send_event(&w, &health).await.status, 200);
}

#[tokio::test]
async fn a_gateway_event_without_claims_is_401() {
    let w = world();
    let list = gateway_event("GET", "/v1/endpoints", "", None, Value::Null);
    send_event(&w, &list)
        .await
        .assert_error(401, "unauthorized");
    let no_org = gateway_event("GET", "/v1/endpoints", "", None, json!({"scope": MANAGE}));
    send_event(&w, &no_org)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_base64_body_of_invalid_utf8_is_400() {
    let w = world();
    let claims = json!({"org_id": ORG, "scope": WRITE});
    let event = gateway_event("POST", "/v1/events", "", Some(&[0xff, 0x00, 0xfe]), claims);
    send_event(&w, &event)
        .await
        .assert_error(400, "invalid_request");
}
