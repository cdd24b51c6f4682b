//! `GET` and `POST /inbound/whatsapp`.

use crate::{request, TestSystem, APP_SECRET, VERIFY_TOKEN};
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use sha2::Sha256;
use webhooks_ports::InboundStore;

/// Meta's scheme: `sha256=` and the hex HMAC-SHA256 of the raw body, keyed
/// with the app secret.
fn hub_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn post(signature: Option<&str>, body: &str) -> lambda_http::Request {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = signature {
        headers.push(("x-hub-signature-256", s));
    }
    request(Method::POST, "/inbound/whatsapp", &headers, body)
}

fn handshake(query: &str) -> lambda_http::Request {
    request(Method::GET, &format!("/inbound/whatsapp?{query}"), &[], "")
}

const PHONE_NUMBER_ID: &str = "106540352242922";

/// A notification as the Cloud API sends it: two text messages, and a
/// second change with a delivery status.
fn notification() -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[
{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_NUMBER_ID}"}},
"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"16505551234"}}],
"messages":[
 {{"from":"16505551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1749416383","type":"text","text":{{"body":"Does it come in another color?"}}}},
 {{"from":"16505551234","id":"wamid.second","timestamp":"1749416390","type":"text","text":{{"body":"And in XL?"}}}}
]}},"field":"messages"}},
{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_NUMBER_ID}"}},
"statuses":[{{"id":"wamid.out","status":"delivered","timestamp":"1749416400","recipient_id":"16505551234"}}]}},"field":"messages"}}
]}}]}}"#
    )
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge() {
    let h = TestSystem::new();
    let reply = h
        .send(handshake(&format!(
            "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1158201444");
    assert!(reply.content_type().starts_with("text/plain"));
}

#[tokio::test]
async fn the_handshake_refuses_a_wrong_token_or_mode() {
    let h = TestSystem::new();
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".to_string(),
        "hub.mode=subscribe&hub.challenge=1".to_string(),
        format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        format!("hub.verify_token={VERIFY_TOKEN}x&hub.mode=subscribe&hub.challenge=1"),
    ] {
        let reply = h.send(handshake(&query)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{query}");
        assert_ne!(reply.body, "1");
    }
    let mut config = crate::config();
    config.whatsapp_verify_token = None;
    let reply = TestSystem::with(config)
        .send(handshake(&format!(
            "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"
        )))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        reply.body,
        r#"{"error":{"code":"not_configured","message":"this route is not configured: WHATSAPP_VERIFY_TOKEN_ARN (WHATSAPP_VERIFY_TOKEN in webhooks dev) is not set"}}"#
    );
}

#[tokio::test]
async fn each_message_is_recorded_once_for_the_numbers_org() {
    let h = TestSystem::new();
    h.store
        .set_route("whatsapp", PHONE_NUMBER_ID, "org_w")
        .await
        .unwrap();
    let body = notification();
    for _ in 0..2 {
        let reply = h
            .send(post(Some(&hub_signature(APP_SECRET, &body)), &body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(h.store.len(), 2, "two messages, each once; no status");
    let messages = h.store.messages("org_w", 10).await.unwrap();
    assert_eq!(messages.len(), 2);
    let first = messages
        .iter()
        .find(|m| m.provider_id.starts_with("wamid.HBg"))
        .unwrap();
    assert_eq!(first.provider, "whatsapp");
    assert_eq!(first.from.as_deref(), Some("16505551234"));
    assert_eq!(first.to.as_deref(), Some(PHONE_NUMBER_ID));
    assert_eq!(
        first.text.as_deref(),
        Some("Does it come in another color?")
    );
    let raw: serde_json::Value = serde_json::from_str(&first.raw).unwrap();
    assert_eq!(raw["type"], "text");
    assert!(h.events.is_empty());
}

#[tokio::test]
async fn unrouted_and_status_only_notifications() {
    let h = TestSystem::new();
    let body = notification();
    let reply = h
        .send(post(Some(&hub_signature(APP_SECRET, &body)), &body))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(h.store.records().iter().all(|r| r.org_id.is_none()));
    assert_eq!(h.store.len(), 2);

    let h = TestSystem::new();
    let statuses = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1"},"statuses":[{"id":"wamid.s","status":"read"}]},"field":"messages"}]}]}"#;
    let reply = h
        .send(post(Some(&hub_signature(APP_SECRET, statuses)), statuses))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn tampered_unsigned_or_wrongly_signed_posts_are_refused() {
    let body = notification();
    let good = hub_signature(APP_SECRET, &body);
    let other = hub_signature("another-secret", &body);
    let bare_hex = good.trim_start_matches("sha256=").to_string();
    let tampered = body.replace("another color", "another colour");
    let cases = [
        (Some(good.as_str()), tampered.as_str()),
        (None, body.as_str()),
        (Some(other.as_str()), body.as_str()),
        (Some(bare_hex.as_str()), body.as_str()),
        (Some("sha256=xyz"), body.as_str()),
    ];
    for (signature, body) in cases {
        let h = TestSystem::new();
        h.store
            .set_route("whatsapp", PHONE_NUMBER_ID, "org_w")
            .await
            .unwrap();
        let reply = h.send(post(signature, body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(reply.error_code(), "invalid_signature");
        h.assert_nothing_stored();
    }
}

#[tokio::test]
async fn a_signed_malformed_body_is_a_400() {
    let h = TestSystem::new();
    let body = r#"{"entry":[{"changes":[{"value":{"messages":"#;
    let reply = h
        .send(post(Some(&hub_signature(APP_SECRET, body)), body))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_request");
    h.assert_nothing_stored();

    let mut config = crate::config();
    config.whatsapp_app_secret = None;
    let body = notification();
    let reply = TestSystem::with(config)
        .send(post(Some(&hub_signature(APP_SECRET, &body)), &body))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert!(reply
        .body
        .contains("WHATSAPP_APP_SECRET_ARN (WHATSAPP_APP_SECRET in webhooks dev) is not set"));
}
