//! What each fuzz target does with one input. Shared, as source, by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the regression test
//! that replays the committed corpus under `cargo test`
//! (`tests/it/fuzz_corpus.rs`), so both exercise the same code.
//!
//! Inputs are plain text where that helps the corpus stay readable:
//!
//! - `standard_webhooks`: `secret\nmsg_id\ntimestamp\nwebhook-signature\nbody`
//! - `api_request`, `inbound_request`: an HTTP-like request,
//!   `METHOD TARGET\nname: value\n...\n\nbody`. Pseudo-headers steer the
//!   harness: `x-fuzz-scope`, `x-fuzz-org`, `x-fuzz-role`, `x-fuzz-anonymous`
//!   (API claims); `x-fuzz-sign` (inbound: sign the request correctly so the
//!   body parsers are reached). In the API target, `{ep}` and `{dlv}` in the
//!   target become the ids of an existing endpoint and delivery.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::signing::{
    standard_signature, verify_standard, verify_x_signature, webhook_signature_header, x_signature,
};
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, EventType, Secret, Subscription};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_fn_inbound::{Inbound, InboundConfig};
use webhooks_memory::{
    MemoryCursorStore, MemoryDeliveryStore, MemoryEndpointStore, MemoryEventStore,
    MemoryIdempotencyStore, MemoryInboundStore, MemoryQueue,
};
use webhooks_ports::{DeliveryStore, EndpointStore, InboundStore};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// An HTTP-like request read from fuzz input. Never fails: whatever is not
/// understood is dropped.
#[derive(Debug, Default)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn parse(data: &[u8]) -> RawRequest {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], data[i + 2..].to_vec()),
            None => (data, Vec::new()),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let first = lines.next().unwrap_or("");
        let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawRequest {
            method: method.trim().to_string(),
            target: target.trim().to_string(),
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request as API Gateway would hand it over, or `None` when it could
    /// never arrive (an invalid method, URI or header).
    fn to_request(&self, target: &str) -> Option<Request> {
        let mut b = lambda_http::http::Request::builder()
            .method(self.method.as_str())
            .uri(target);
        for (k, v) in &self.headers {
            if k.starts_with("x-fuzz-") {
                continue;
            }
            b = b.header(k.as_str(), v.as_str());
        }
        let body = match std::str::from_utf8(&self.body) {
            Ok(text) => Body::Text(text.to_string()),
            Err(_) => Body::Binary(self.body.clone()),
        };
        b.body(body).ok()
    }
}

fn context(claims: &[(&str, &str)]) -> RequestContext {
    webhooks_fn_api::auth::context_with_claims(claims)
}

/// Checks that an error answer has the contract's shape.
fn assert_error_shape(what: &str, status: u16, body: &[u8]) {
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what} -> {status} with a body that is not JSON: {e}"));
    let code = json["error"]["code"].as_str();
    let message = json["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
        "{what} -> {status} without error.code and error.message: {json}"
    );
}

/// Standard Webhooks verification of arbitrary header values: never panics,
/// and accepts exactly the headers that list the right `v1,` entry.
/// Returns whether the header verified.
pub fn standard_webhooks(data: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let secret_text = parts.next().unwrap_or("");
    let msg_id = parts.next().unwrap_or("");
    let timestamp_text = parts.next().unwrap_or("");
    let header = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    // A user-supplied secret is untrusted input too.
    let secret = Secret::parse(secret_text).unwrap_or_else(|_| {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("the spec's secret")
    });
    let Ok(timestamp) = timestamp_text.trim().parse::<i64>() else {
        // A receiver refuses a timestamp that is not a number; still, the
        // verifier must cope with any header.
        let _ = verify_standard(&secret, msg_id, 0, body, header);
        return None;
    };
    let expected = standard_signature(&secret, msg_id, timestamp, body);
    let verified = verify_standard(&secret, msg_id, timestamp, body, header);
    let listed = header.split(' ').any(|entry| entry == expected);
    assert_eq!(
        verified, listed,
        "verify_standard({header:?}) = {verified}, but the header does not list {expected:?} exactly"
    );
    let own = webhook_signature_header(&[&secret], msg_id, timestamp, body);
    assert!(verify_standard(&secret, msg_id, timestamp, body, &own));
    // X-Signature: only the right hex digest (any case) verifies.
    let x_verified = verify_x_signature(&secret, body, header);
    let x_expected = x_signature(&secret, body);
    assert_eq!(
        x_verified,
        header.len() == x_expected.len()
            && header.starts_with("sha256=")
            && header.eq_ignore_ascii_case(&x_expected),
        "verify_x_signature({header:?})"
    );
    Some(u16::from(verified || x_verified))
}

/// The management API on memory adapters, with one endpoint and one
/// dead-lettered delivery.
struct ApiWorld {
    api: Api,
    endpoint_id: String,
    delivery_id: String,
}

const ORG: &str = "org_fuzz";

async fn api_world() -> ApiWorld {
    let endpoints = MemoryEndpointStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let api = Api::new(
        MemoryEventStore::new(),
        endpoints.clone(),
        deliveries.clone(),
        MemoryCursorStore::new(),
        MemoryIdempotencyStore::new(),
        MemoryQueue::new(Duration::from_secs(30)),
        ApiConfig::default(),
    );
    let ep = Endpoint::new(
        ORG,
        "https://example.com/hooks".into(),
        Subscription::parse(&["*"]).expect("types"),
        Secret::generate(),
    );
    let created = endpoints
        .create(
            &ep,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("endpoint");
    assert_eq!(created, webhooks_ports::Created::Written);
    let d = Delivery::new(
        ORG,
        &ep.id,
        &webhooks_domain::ids::new_id("evt"),
        EventType::LeadWon,
    );
    deliveries.create_if_absent(&d).await.expect("delivery");
    deliveries
        .transition(
            &d.id,
            &[DeliveryStatus::Pending],
            DeliveryStatus::DeadLettered,
        )
        .await
        .expect("transition");
    ApiWorld {
        api,
        endpoint_id: ep.id,
        delivery_id: d.id,
    }
}

/// Any request to the management API: never a panic, never a 5xx, and every
/// error in the contract's shape. Returns the status, if the request could
/// be made at all.
pub fn api_request(data: &[u8]) -> Option<u16> {
    let raw = RawRequest::parse(data);
    block_on(async {
        let w = api_world().await;
        let target = raw
            .target
            .replace("{ep}", &w.endpoint_id)
            .replace("{dlv}", &w.delivery_id);
        let req = raw.to_request(&target)?;
        let req = if raw.header("x-fuzz-anonymous").is_some() {
            req
        } else {
            let org = raw.header("x-fuzz-org").unwrap_or(ORG);
            let scope = raw
                .header("x-fuzz-scope")
                .unwrap_or("webhooks:manage events:write");
            let mut claims = vec![("org_id", org), ("scope", scope)];
            if let Some(role) = raw.header("x-fuzz-role") {
                claims.push(("role", role));
            }
            req.with_request_context(context(&claims))
        };
        let what = format!("{} {}", raw.method, target);
        let resp = webhooks_fn_api::handle(&w.api, req)
            .await
            .expect("the API handler never returns Err");
        let status = resp.status().as_u16();
        let body: &[u8] = resp.body().as_ref();
        assert!(
            status < 500,
            "{what} -> {status}: {}",
            String::from_utf8_lossy(body)
        );
        if status >= 400 {
            assert_error_shape(&what, status, body);
        }
        Some(status)
    })
}

const STRIPE_SECRET: &str = "whsec_fuzzing_stripe_secret";
const TWILIO_TOKEN: &str = "fuzzing-twilio-token";
const WHATSAPP_VERIFY: &str = "fuzzing-verify-token";
const WHATSAPP_SECRET: &str = "fuzzing-app-secret";
const PUBLIC_BASE: &str = "https://hooks.example.com";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The signature header a provider would send for this request, written
/// from the providers' documentation.
fn provider_signature(
    raw: &RawRequest,
    path: &str,
    query: Option<&str>,
) -> Option<(String, String)> {
    let route = path.trim_end_matches('/');
    if route.ends_with("/inbound/stripe") {
        let t = chrono::Utc::now().timestamp().to_string();
        let mac = hmac_sha256(STRIPE_SECRET.as_bytes(), &[t.as_bytes(), b".", &raw.body]);
        Some((
            "stripe-signature".into(),
            format!("t={t},v1={}", hex::encode(mac)),
        ))
    } else if route.ends_with("/inbound/twilio") {
        let mut signed = format!("{PUBLIC_BASE}{path}");
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            signed.push('?');
            signed.push_str(q);
        }
        let json_body = query.is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "bodySHA256")
        });
        if !json_body {
            let mut params: Vec<(String, String)> = url::form_urlencoded::parse(&raw.body)
                .into_owned()
                .collect();
            params.sort();
            for (k, v) in params {
                signed.push_str(&k);
                signed.push_str(&v);
            }
        }
        let mac = hmac_sha1(TWILIO_TOKEN.as_bytes(), signed.as_bytes());
        Some(("x-twilio-signature".into(), STANDARD.encode(mac)))
    } else if route.ends_with("/inbound/whatsapp") {
        let mac = hmac_sha256(WHATSAPP_SECRET.as_bytes(), &[&raw.body]);
        Some((
            "x-hub-signature-256".into(),
            format!("sha256={}", hex::encode(mac)),
        ))
    } else {
        None
    }
}

/// Any request to the inbound routes: never a panic, never a 5xx (every
/// secret is configured and the memory stores do not fail). Returns the
/// status, if the request could be made at all.
pub fn inbound_request(data: &[u8]) -> Option<u16> {
    let mut raw = RawRequest::parse(data);
    block_on(async {
        let store = MemoryInboundStore::new();
        store
            .set_route("twilio", "+15550001111", "org_fuzz")
            .await
            .expect("route");
        store
            .set_route("whatsapp", "1234567890", "org_fuzz")
            .await
            .expect("route");
        let inbound = Inbound::new(
            MemoryEventStore::new(),
            MemoryIdempotencyStore::new(),
            store as Arc<dyn InboundStore>,
            InboundConfig {
                stripe_webhook_secret: Some(STRIPE_SECRET.into()),
                twilio_auth_token: Some(TWILIO_TOKEN.into()),
                whatsapp_verify_token: Some(WHATSAPP_VERIFY.into()),
                whatsapp_app_secret: Some(WHATSAPP_SECRET.into()),
                public_base_url: Some(PUBLIC_BASE.into()),
                stripe_tolerance: Duration::from_secs(300),
            },
        );
        let target = raw.target.clone();
        // Only a target that parses as a URI can arrive at all.
        let uri = target.parse::<lambda_http::http::Uri>().ok()?;
        if raw.header("x-fuzz-sign").is_some() {
            if let Some((name, value)) = provider_signature(&raw, uri.path(), uri.query()) {
                raw.headers.retain(|(k, _)| *k != name);
                raw.headers.push((name, value));
            }
        }
        let req = raw.to_request(&target)?;
        let what = format!("{} {}", raw.method, target);
        let resp = webhooks_fn_inbound::handle(&inbound, req)
            .await
            .expect("the inbound handler never returns Err");
        let status = resp.status().as_u16();
        let body: &[u8] = resp.body().as_ref();
        assert!(
            status < 500,
            "{what} -> {status}: {}",
            String::from_utf8_lossy(body)
        );
        Some(status)
    })
}
