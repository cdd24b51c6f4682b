//! `POST /inbound/twilio`.

use crate::{request, request_with_body, TestSystem, BASE_URL, TWILIO_TOKEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use webhooks_ports::{InboundRecord, InboundStore};

/// Twilio's scheme: base64 HMAC-SHA1, keyed with the auth token, of the full
/// URL followed by each POST parameter's name and value, sorted by name
/// (repeated names by value).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

const NUMBER: &str = "+15550001111";

fn sms(sid: &str, text: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ToCountry", "US".into()),
        ("SmsMessageSid", sid.into()),
        ("NumMedia", "0".into()),
        ("SmsSid", sid.into()),
        ("SmsStatus", "received".into()),
        ("Body", text.into()),
        ("To", NUMBER.into()),
        ("MessageSid", sid.into()),
        ("AccountSid", "AC0123".into()),
        ("From", "+15550002222".into()),
        ("ApiVersion", "2010-04-01".into()),
    ]
}

fn as_refs<'a>(params: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A form POST to `path_and_query`, signed over `signed_url`.
fn post(
    path_and_query: &str,
    signed_url: &str,
    params: &[(&str, &str)],
    token: &str,
) -> lambda_http::Request {
    let signature = twilio_signature(token, signed_url, params);
    request(
        Method::POST,
        path_and_query,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", &signature),
        ],
        &form(params),
    )
}

async fn routed_harness() -> TestSystem {
    let h = TestSystem::new();
    h.store.set_route("twilio", NUMBER, "org_a").await.unwrap();
    h
}

fn assert_ack(reply: &crate::Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.content_type(), "text/xml");
    assert_eq!(reply.body, "<Response/>");
}

#[tokio::test]
async fn a_signed_message_is_recorded_for_the_numbers_org() {
    let h = routed_harness().await;
    let params = sms("SM0001", "Hello & welcome: 100% ü+1");
    let url = format!("{BASE_URL}/inbound/twilio");
    let reply = h
        .send(post(
            "/inbound/twilio",
            &url,
            &as_refs(&params),
            TWILIO_TOKEN,
        ))
        .await;
    assert_ack(&reply);
    let messages = h.store.messages("org_a", 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.provider, "twilio");
    assert_eq!(m.provider_id, "SM0001");
    assert_eq!(m.kind, InboundRecord::MESSAGE);
    assert_eq!(m.from.as_deref(), Some("+15550002222"));
    assert_eq!(m.to.as_deref(), Some(NUMBER));
    assert_eq!(m.text.as_deref(), Some("Hello & welcome: 100% ü+1"));
    assert_eq!(m.raw, form(&as_refs(&params)));
    assert!(h.events.is_empty(), "messages make no platform events");
}

#[tokio::test]
async fn the_same_message_sid_is_processed_once() {
    let h = routed_harness().await;
    let params = sms("SM0002", "twice");
    let url = format!("{BASE_URL}/inbound/twilio");
    for _ in 0..2 {
        let reply = h
            .send(post(
                "/inbound/twilio",
                &url,
                &as_refs(&params),
                TWILIO_TOKEN,
            ))
            .await;
        assert_ack(&reply);
    }
    assert_eq!(h.store.len(), 1);
    assert_eq!(h.store.messages("org_a", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unrouted_number_is_recorded_without_org() {
    let h = TestSystem::new();
    let params = sms("SM0003", "who?");
    let url = format!("{BASE_URL}/inbound/twilio");
    let reply = h
        .send(post(
            "/inbound/twilio",
            &url,
            &as_refs(&params),
            TWILIO_TOKEN,
        ))
        .await;
    assert_ack(&reply);
    let records = h.store.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].org_id, None);
    assert_eq!(records[0].provider_id, "SM0003");
}

#[tokio::test]
async fn the_signed_url_includes_the_query_string() {
    let h = routed_harness().await;
    let params = sms("SM0004", "query");
    let path = "/inbound/twilio?account=acme&b=a%20b";
    let url = format!("{BASE_URL}{path}");
    let reply = h
        .send(post(path, &url, &as_refs(&params), TWILIO_TOKEN))
        .await;
    assert_ack(&reply);
    // Signed without the query, it does not match.
    let h = routed_harness().await;
    let bare = format!("{BASE_URL}/inbound/twilio");
    let reply = h
        .send(post(path, &bare, &as_refs(&params), TWILIO_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_stored();
}

#[tokio::test]
async fn the_url_is_accepted_with_or_without_its_port() {
    let params = sms("SM0005", "port");
    let params = as_refs(&params);
    // Twilio may sign the default port in.
    let h = routed_harness().await;
    let with_default = "https://hooks.example.com:443/inbound/twilio?x=1";
    assert_ack(
        &h.send(post(
            "/inbound/twilio?x=1",
            with_default,
            &params,
            TWILIO_TOKEN,
        ))
        .await,
    );

    // A base URL with an explicit port: signed with it, or without it.
    let mut config = crate::config();
    config.public_base_url = Some("https://hooks.example.com:8443/".into());
    for signed in [
        "https://hooks.example.com:8443/inbound/twilio",
        "https://hooks.example.com/inbound/twilio",
    ] {
        let h = TestSystem::with(config.clone());
        h.store.set_route("twilio", NUMBER, "org_a").await.unwrap();
        assert_ack(
            &h.send(post("/inbound/twilio", signed, &params, TWILIO_TOKEN))
                .await,
        );
        assert_eq!(h.store.len(), 1);
    }
    // Another port is another URL.
    let h = TestSystem::with(config);
    let reply = h
        .send(post(
            "/inbound/twilio",
            "https://hooks.example.com:9999/inbound/twilio",
            &params,
            TWILIO_TOKEN,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_parameter_names_are_signed_in_value_order() {
    let h = routed_harness().await;
    let mut params = sms("SM0006", "media");
    params.push(("MediaUrl", "https://api.twilio.com/b".into()));
    params.push(("MediaUrl", "https://api.twilio.com/a".into()));
    params.push(("Digits", "5678".into()));
    params.push(("Digits", "1234".into()));
    let url = format!("{BASE_URL}/inbound/twilio");
    let reply = h
        .send(post(
            "/inbound/twilio",
            &url,
            &as_refs(&params),
            TWILIO_TOKEN,
        ))
        .await;
    assert_ack(&reply);
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn tampered_unsigned_or_wrongly_signed_requests_are_refused() {
    let params = sms("SM0007", "original");
    let params = as_refs(&params);
    let url = format!("{BASE_URL}/inbound/twilio");
    let signature = twilio_signature(TWILIO_TOKEN, &url, &params);
    let tampered = form(&params).replace("original", "changed");
    let cases = [
        (Some(signature.as_str()), tampered),
        (None, form(&params)),
        (Some("not base64!"), form(&params)),
    ];
    for (signature, body) in cases {
        let h = routed_harness().await;
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(s) = signature {
            headers.push(("x-twilio-signature", s));
        }
        let reply = h
            .send(request(Method::POST, "/inbound/twilio", &headers, &body))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code(), "invalid_signature");
        h.assert_nothing_stored();
    }
    let h = routed_harness().await;
    let reply = h
        .send(post("/inbound/twilio", &url, &params, "another-token"))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_stored();
}

fn json_request(body: &str, body_hash: &str, signed_token: &str) -> lambda_http::Request {
    let path = format!("/inbound/twilio?bodySHA256={body_hash}");
    // A JSON body: the signature covers the full URL only.
    let signature = twilio_signature(signed_token, &format!("{BASE_URL}{path}"), &[]);
    request(
        Method::POST,
        &path,
        &[
            ("content-type", "application/json"),
            ("x-twilio-signature", &signature),
        ],
        body,
    )
}

#[tokio::test]
async fn a_json_body_is_checked_against_body_sha256() {
    let body = format!(
        r#"{{"MessageSid":"SM0008","From":"+15550002222","To":"{NUMBER}","Body":"json hello"}}"#
    );
    let good_hash = hex::encode(Sha256::digest(body.as_bytes()));

    let h = routed_harness().await;
    assert_ack(&h.send(json_request(&body, &good_hash, TWILIO_TOKEN)).await);
    let messages = h.store.messages("org_a", 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].provider_id, "SM0008");
    assert_eq!(messages[0].text.as_deref(), Some("json hello"));

    let bad_hash = hex::encode(Sha256::digest(b"another body"));
    let h = routed_harness().await;
    let reply = h.send(json_request(&body, &bad_hash, TWILIO_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_stored();

    // The right hash of a body that was then changed.
    let h = routed_harness().await;
    let changed = body.replace("json hello", "json bye!!");
    let reply = h
        .send(json_request(&changed, &good_hash, TWILIO_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_stored();

    let h = routed_harness().await;
    let reply = h
        .send(json_request(&body, &good_hash, "another-token"))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_stored();

    // Signed, hashed, but not JSON.
    let h = routed_harness().await;
    let not_json = "MessageSid=SM1";
    let hash = hex::encode(Sha256::digest(not_json.as_bytes()));
    let reply = h.send(json_request(not_json, &hash, TWILIO_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    h.assert_nothing_stored();
}

#[tokio::test]
async fn a_base64_delivered_body_verifies_the_same() {
    let h = routed_harness().await;
    let params = sms("SM0009", "binary");
    let params = as_refs(&params);
    let url = format!("{BASE_URL}/inbound/twilio");
    let signature = twilio_signature(TWILIO_TOKEN, &url, &params);
    let req = request_with_body(
        Method::POST,
        "/inbound/twilio",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", &signature),
        ],
        lambda_http::Body::Binary(form(&params).into_bytes()),
    );
    assert_ack(&h.send(req).await);
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn unset_secrets_are_a_501_naming_the_variable() {
    let params = sms("SM0010", "x");
    let params = as_refs(&params);
    let url = format!("{BASE_URL}/inbound/twilio");
    let mut config = crate::config();
    config.twilio_auth_token = None;
    let h = TestSystem::with(config);
    let reply = h
        .send(post("/inbound/twilio", &url, &params, TWILIO_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        reply.body,
        r#"{"error":{"code":"not_configured","message":"this route is not configured: TWILIO_AUTH_TOKEN_ARN (TWILIO_AUTH_TOKEN in webhooks dev) is not set"}}"#
    );
    let mut config = crate::config();
    config.public_base_url = None;
    let h = TestSystem::with(config);
    let reply = h
        .send(post("/inbound/twilio", &url, &params, TWILIO_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(reply.error_code(), "not_configured");
    assert!(reply.body.contains("WEBHOOKS_PUBLIC_BASE_URL"));
    assert!(!reply.body.contains(TWILIO_TOKEN));
    h.assert_nothing_stored();
}
