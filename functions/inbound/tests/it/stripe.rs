//! `POST /inbound/stripe`.

use crate::{now, request, request_with_body, TestSystem, STRIPE_SECRET};
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use sha2::Sha256;
use std::time::Duration;
use webhooks_domain::EventType;
use webhooks_ports::{IdempotencyStore, InboundStore};

/// Stripe's scheme: `v1` is the hex HMAC-SHA256, keyed with the endpoint
/// secret, of `"{t}.{raw body}"`.
pub(crate) fn stripe_v1(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn signed_header(body: &str) -> String {
    let t = now();
    format!("t={t},v1={}", stripe_v1(STRIPE_SECRET, t, body))
}

pub(crate) fn post(header: Option<&str>, body: &str) -> lambda_http::Request {
    let mut headers = vec![("content-type", "application/json; charset=utf-8")];
    if let Some(h) = header {
        headers.push(("stripe-signature", h));
    }
    request(Method::POST, "/inbound/stripe", &headers, body)
}

pub(crate) fn event_body(id: &str, kind: &str, object: &str) -> String {
    format!(
        r#"{{
  "id": "{id}",
  "object": "event",
  "api_version": "2024-06-20",
  "created": 1700000000,
  "type": "{kind}",
  "livemode": false,
  "data": {{ "object": {object} }}
}}"#
    )
}

pub(crate) fn invoice(org: &str) -> String {
    format!(
        r#"{{"id":"in_1","object":"invoice","amount_paid":4900,"currency":"eur","metadata":{{"org_id":"{org}"}}}}"#
    )
}

async fn send_signed(h: &TestSystem, body: &str) -> crate::Reply {
    h.send(post(Some(&signed_header(body)), body)).await
}

#[tokio::test]
async fn invoice_paid_becomes_one_platform_event_for_the_org() {
    let h = TestSystem::new();
    let body = event_body("evt_paid_1", "invoice.paid", &invoice("org_a"));
    let reply = send_signed(&h, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, r#"{"received":true}"#);
    assert!(reply.content_type().starts_with("application/json"));

    let events = h.events_of("org_a").await;
    assert_eq!(events.len(), 1);
    assert_eq!(h.events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type, EventType::InvoicePaid);
    assert_eq!(e.org_id, "org_a");
    let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
    assert_eq!(data["source"], "stripe");
    assert_eq!(data["stripe_event_id"], "evt_paid_1");
    assert_eq!(data["stripe_type"], "invoice.paid");
    assert_eq!(data["object"]["id"], "in_1");
    assert_eq!(data["object"]["amount_paid"], 4900);

    let records = h.store.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].provider, "stripe");
    assert_eq!(records[0].provider_id, "evt_paid_1");
    assert_eq!(records[0].kind, "invoice.paid");
    assert_eq!(records[0].org_id.as_deref(), Some("org_a"));
    assert_eq!(records[0].raw, body);
}

#[tokio::test]
async fn a_repeated_event_is_processed_once() {
    let h = TestSystem::new();
    let body = event_body("evt_dup", "invoice.paid", &invoice("org_a"));
    for _ in 0..2 {
        let reply = send_signed(&h, &body).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, r#"{"received":true}"#);
    }
    assert_eq!(h.events_of("org_a").await.len(), 1);
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn a_retry_after_a_crash_writes_the_claimed_event_once() {
    let h = TestSystem::new();
    // An earlier attempt claimed an event id and stopped before writing it.
    let claimed = webhooks_domain::ids::new_id("evt");
    h.idempotency
        .claim("stripe:evt_crash", &claimed, Duration::from_secs(3600))
        .await
        .unwrap();
    let body = event_body("evt_crash", "invoice.payment_failed", &invoice("org_a"));
    assert_eq!(send_signed(&h, &body).await.status, StatusCode::OK);
    assert_eq!(send_signed(&h, &body).await.status, StatusCode::OK);
    let events = h.events_of("org_a").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, claimed);
}

async fn platform_types(kind: &str, object: &str, previous: Option<&str>) -> Vec<EventType> {
    let h = TestSystem::new();
    let mut body = event_body("evt_map", kind, object);
    if let Some(p) = previous {
        body = body.replace(
            r#""data": { "object":"#,
            &format!(r#""data": {{ "previous_attributes": {p}, "object":"#),
        );
        assert!(body.contains("previous_attributes"));
    }
    let reply = send_signed(&h, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(h.store.len(), 1, "recorded once whatever the type");
    h.events_of("org_a")
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn payment_failed_maps_to_payment_failed() {
    assert_eq!(
        platform_types("invoice.payment_failed", &invoice("org_a"), None).await,
        [EventType::PaymentFailed]
    );
}

#[tokio::test]
async fn deleted_or_unpaid_subscriptions_suspend_billing() {
    let sub = |status: &str| {
        format!(
            r#"{{"id":"sub_1","object":"subscription","status":"{status}","metadata":{{"org_id":"org_a"}}}}"#
        )
    };
    assert_eq!(
        platform_types("customer.subscription.deleted", &sub("canceled"), None).await,
        [EventType::BillingSuspended]
    );
    assert_eq!(
        platform_types(
            "customer.subscription.updated",
            &sub("unpaid"),
            Some(r#"{"status":"past_due"}"#)
        )
        .await,
        [EventType::BillingSuspended]
    );
    // Another change to a subscription that was already unpaid (Stripe then
    // leaves `status` out of previous_attributes) suspends nothing again.
    assert!(
        platform_types("customer.subscription.updated", &sub("unpaid"), None)
            .await
            .is_empty()
    );
    // Other updates, and one that leaves it unpaid, are not suspensions.
    assert!(platform_types(
        "customer.subscription.updated",
        &sub("active"),
        Some(r#"{"status":"unpaid"}"#)
    )
    .await
    .is_empty());
    assert!(platform_types(
        "customer.subscription.updated",
        &sub("unpaid"),
        Some(r#"{"status":"unpaid"}"#)
    )
    .await
    .is_empty());
}

#[tokio::test]
async fn other_types_are_acknowledged_and_ignored() {
    assert!(platform_types("charge.succeeded", &invoice("org_a"), None)
        .await
        .is_empty());
    assert!(platform_types("invoice.created", &invoice("org_a"), None)
        .await
        .is_empty());
}

#[tokio::test]
async fn an_event_without_org_id_is_recorded_but_makes_no_event() {
    let h = TestSystem::new();
    let body = event_body(
        "evt_noorg",
        "invoice.paid",
        r#"{"id":"in_9","metadata":{}}"#,
    );
    let reply = send_signed(&h, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, r#"{"received":true}"#);
    assert!(h.events.is_empty());
    let records = h.store.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].org_id, None);
}

#[tokio::test]
async fn several_v1_signatures_pass_when_one_matches() {
    let h = TestSystem::new();
    let body = event_body("evt_multi", "invoice.paid", &invoice("org_a"));
    let t = now();
    let header = format!(
        "t={t},v1={},v1={},v0={}",
        stripe_v1("whsec_rotated_out", t, &body),
        stripe_v1(STRIPE_SECRET, t, &body),
        stripe_v1("legacy", t, &body)
    );
    let reply = h.send(post(Some(&header), &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(h.events.len(), 1);
}

async fn assert_refused(header: Option<&str>, body: &str) {
    let h = TestSystem::new();
    let reply = h.send(post(header, body)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header:?}");
    assert_eq!(reply.error_code(), "invalid_signature");
    h.assert_nothing_stored();
    h.assert_unclaimed("evt_bad").await;
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let body = event_body("evt_bad", "invoice.paid", &invoice("org_a"));
    let header = signed_header(&body);
    let tampered = body.replace("4900", "1");
    assert_refused(Some(&header), &tampered).await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let body = event_body("evt_bad", "invoice.paid", &invoice("org_a"));
    let t = now();
    let header = format!("t={t},v1={}", stripe_v1("whsec_other", t, &body));
    assert_refused(Some(&header), &body).await;
}

#[tokio::test]
async fn a_missing_or_malformed_header_is_refused() {
    let body = event_body("evt_bad", "invoice.paid", &invoice("org_a"));
    assert_refused(None, &body).await;
    let t = now();
    let sig = stripe_v1(STRIPE_SECRET, t, &body);
    for header in [
        String::new(),
        format!("v1={sig}"),
        format!("t={t}"),
        format!("t=soon,v1={sig}"),
        format!("t={t},v0={sig}"),
        "garbage".to_string(),
    ] {
        assert_refused(Some(&header), &body).await;
    }
}

#[tokio::test]
async fn timestamps_outside_the_tolerance_are_refused() {
    let body = event_body("evt_bad", "invoice.paid", &invoice("org_a"));
    for t in [now() - 301 - 5, now() + 301 + 5, now() - 86_400] {
        let header = format!("t={t},v1={}", stripe_v1(STRIPE_SECRET, t, &body));
        assert_refused(Some(&header), &body).await;
    }
    // Inside the window, either way, is fine.
    for t in [now() - 240, now() + 240] {
        let h = TestSystem::new();
        let header = format!("t={t},v1={}", stripe_v1(STRIPE_SECRET, t, &body));
        assert_eq!(
            h.send(post(Some(&header), &body)).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_signed_malformed_body_is_a_400() {
    for body in [
        r#"{"id":"evt_bad","type":"invoice.paid""#,
        "not json",
        r#"{"type":"invoice.paid"}"#,
        "[]",
    ] {
        let h = TestSystem::new();
        let reply = send_signed(&h, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.error_code(), "invalid_request");
        h.assert_nothing_stored();
    }
}

#[tokio::test]
async fn an_unset_secret_is_a_501_naming_the_variable() {
    let mut config = crate::config();
    config.stripe_webhook_secret = None;
    let h = TestSystem::with(config);
    let body = event_body("evt_bad", "invoice.paid", &invoice("org_a"));
    let reply = send_signed(&h, &body).await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        reply.body,
        r#"{"error":{"code":"not_configured","message":"this route is not configured: STRIPE_WEBHOOK_SECRET_ARN (STRIPE_WEBHOOK_SECRET in webhooks dev) is not set"}}"#
    );
    h.assert_nothing_stored();
}

#[tokio::test]
async fn a_binary_body_is_verified_byte_for_byte() {
    let h = TestSystem::new();
    let body = event_body("evt_bin", "invoice.paid", &invoice("org_ü"));
    let req = request_with_body(
        Method::POST,
        "/inbound/stripe",
        &[("stripe-signature", &signed_header(&body))],
        lambda_http::Body::Binary(body.clone().into_bytes()),
    );
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    assert_eq!(h.events_of("org_ü").await.len(), 1);
}

#[tokio::test]
async fn other_methods_and_paths_are_refused() {
    let h = TestSystem::new();
    let reply = h
        .send(request(Method::GET, "/inbound/stripe", &[], ""))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers.get("allow").unwrap(), "POST");
    let reply = h
        .send(request(Method::POST, "/inbound/paypal", &[], "{}"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(h.store.messages("org_a", 10).await.unwrap().is_empty());
}
