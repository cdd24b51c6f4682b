//! Endpoint signing secrets at rest on the emulator (DynamoDB and KMS):
//! sealed in every item, opened only by the reads that sign or reveal (a
//! listing opens none), and signing deliveries with a cached data key.

use crate::support::{MotoBackend, MotoSystem};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use std::time::Duration;
use webhooks_aws::request_counter::RequestCounter;
use webhooks_domain::{DeliveryStatus, Endpoint, EventType, Secret, Subscription};
use webhooks_ports::{Created, Updated};
use webhooks_testkit::signatures::{verify_delivery, verify_standard};
use webhooks_testkit::Receiver;

const WAIT: Duration = Duration::from_secs(30);

/// A custom header's value: sealed with the secrets, never in plain.
const HEADER_VALUE: &str = "hdr-value-7d1c0b9e";
/// A password or client secret: sealed with the secrets, never in plain.
const AUTH_SECRET: &str = "auth-secret-52e4aa01";

/// Every item of the table as DynamoDB holds it, one text each.
async fn scan(backend: &MotoBackend, table: &str) -> Vec<String> {
    let out = backend
        .aws
        .dynamodb
        .scan()
        .table_name(backend.names.table(table))
        .send()
        .await
        .expect("scan");
    out.items
        .unwrap_or_default()
        .iter()
        .map(|item| format!("{item:?}"))
        .collect()
}

/// The secret's text as it would show in a plaintext item: the whole
/// string, and its key's base64 without the prefix.
fn traces(secret: &Secret) -> [String; 2] {
    let whole = secret.expose().to_string();
    let body = whole.trim_start_matches("whsec_").to_string();
    [whole, body]
}

fn new_endpoint(org: &str) -> Endpoint {
    Endpoint::new(
        org,
        "https://hooks.test/in".into(),
        Subscription::parse(&["invoice.paid"]).expect("types"),
        Secret::generate(),
    )
}

/// An endpoint's secrets, current first, as their strings.
fn secrets_of(ep: &Endpoint) -> Vec<String> {
    std::iter::once(&ep.secret)
        .chain(ep.previous_secrets.iter().map(|p| &p.secret))
        .map(|s| s.expose().to_string())
        .collect()
}

/// KMS requests of one operation so far.
fn kms_calls(counter: &RequestCounter, operation: &str) -> u64 {
    counter
        .snapshot()
        .iter()
        .filter(|((service, op), _)| service.eq_ignore_ascii_case("kms") && op == operation)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn a_scan_of_the_endpoints_table_shows_no_secret() {
    let backend = MotoBackend::new("sealed").await;
    let store = backend.adapters.endpoints.clone();
    let mut ep = new_endpoint("org_a");
    ep.headers = webhooks_domain::endpoint::CustomHeaders::new(
        vec![("X-Api-Key".into(), HEADER_VALUE.into())],
        false,
    )
    .expect("headers");
    ep.auth = Some(
        webhooks_domain::endpoint::EndpointAuth::parse(
            &serde_json::json!({"type": "basic", "username": "u", "password": AUTH_SECRET}),
            &webhooks_domain::EndpointUrlPolicy::PRODUCTION,
        )
        .expect("auth"),
    );
    let created = store
        .create(
            &ep,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    let mut every_secret = vec![ep.secret.clone()];
    // Two rotations: the current secret and two kept in the overlap.
    for _ in 0..2 {
        ep.rotate_secret(Secret::generate(), Utc::now(), chrono::Duration::hours(24));
        every_secret.push(ep.secret.clone());
        assert_eq!(store.update(&ep).await.expect("update"), Updated::Written);
        ep.version += 1;
    }
    let mut other = new_endpoint("org_b");
    other.auth = Some(
        webhooks_domain::endpoint::EndpointAuth::parse(
            &serde_json::json!({"type": "oauth2_client_credentials",
                "token_url": "https://auth.example.com/token", "client_id": "cid",
                "client_secret": AUTH_SECRET}),
            &webhooks_domain::EndpointUrlPolicy::PRODUCTION,
        )
        .expect("auth"),
    );
    let created = store
        .create(
            &other,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    every_secret.push(other.secret.clone());

    let items = scan(&backend, "endpoints").await;
    // Two endpoints, and each org's counter of its endpoints.
    assert_eq!(items.len(), 4);
    let mut counters = 0;
    for item in &items {
        assert!(!item.contains("whsec_"), "a secret in plain text: {item}");
        assert!(!item.contains(HEADER_VALUE), "a header value in plain text");
        assert!(!item.contains(AUTH_SECRET), "a password in plain text");
        for secret in &every_secret {
            for trace in traces(secret) {
                assert!(!item.contains(&trace), "a secret in an item");
            }
        }
        if item.contains("\"endpoint_count\"") {
            counters += 1;
            continue;
        }
        assert!(item.contains("\"secrets_sealed\"") && item.contains("\"secrets_key\""));
    }
    assert_eq!(counters, 2);

    // The reads that sign or reveal open them all.
    let read = store
        .get("org_a", &ep.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(secrets_of(&read), secrets_of(&ep));
    assert_eq!(read.previous_secrets.len(), 2);
    assert_eq!(read.headers, ep.headers, "the header values open with them");
    assert_eq!(read.auth, ep.auth, "and so do the auth's credentials");
    let page = store.list("org_a", 10, None).await.expect("list");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0], read.summary());
    // The fan-out's read has nothing to open.
    let subscribers = store.list_all("org_a").await.expect("list_all");
    assert_eq!(subscribers, vec![read.subscriber()]);
}

/// Another item's sealed secrets put onto endpoint `onto` (both of org_a):
/// what a write to the table that bypasses the store could do.
async fn move_sealed_secrets(backend: &MotoBackend, from: &str, onto: &str) {
    let table = backend.names.table("endpoints");
    let item_of = |id: &str| {
        let (ddb, table, id) = (backend.aws.dynamodb.clone(), table.clone(), id.to_string());
        async move {
            ddb.get_item()
                .table_name(table)
                .key("org_id", s("org_a"))
                .key("endpoint_id", s(&id))
                .send()
                .await
                .expect("get item")
                .item
                .expect("item")
        }
    };
    let mut moved = item_of(onto).await;
    let source = item_of(from).await;
    for attribute in ["secrets_key", "secrets_sealed"] {
        moved.insert(attribute.into(), source[attribute].clone());
    }
    backend
        .aws
        .dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(moved))
        .send()
        .await
        .expect("put item");
}

#[tokio::test]
async fn listings_and_summaries_open_no_secret_so_one_that_does_not_open_cannot_fail_them() {
    let backend = MotoBackend::new("listing").await;
    let store = backend.adapters.endpoints.clone();
    let (a, b) = (new_endpoint("org_a"), new_endpoint("org_a"));
    for ep in [&a, &b] {
        let created = store
            .create(ep, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
            .await
            .expect("create");
        assert_eq!(created, Created::Written);
    }
    move_sealed_secrets(&backend, &a.id, &b.id).await;
    assert!(store.get("org_a", &b.id).await.is_err(), "b does not open");

    // Another process, with no data key cached: a listing calls no KMS.
    let counter = RequestCounter::new();
    let cold = backend.counted_adapters(&counter).await;
    let page = cold.endpoints.list("org_a", 10, None).await.expect("list");
    let mut listed: Vec<_> = page.items.iter().map(|e| e.id.clone()).collect();
    listed.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    let read_a = store.get("org_a", &a.id).await.expect("get").expect("a");
    assert_eq!(
        page.items.iter().find(|e| e.id == a.id),
        Some(&read_a.summary())
    );
    // So does a read of one endpoint without its secrets.
    let summary = cold
        .endpoints
        .summary("org_a", &b.id)
        .await
        .expect("summary");
    assert_eq!(summary.map(|e| e.id), Some(b.id.clone()));
    assert_eq!(kms_calls(&counter, "Decrypt"), 0);
    assert_eq!(kms_calls(&counter, "GenerateDataKey"), 0);
}

#[tokio::test]
async fn sealed_secrets_moved_to_another_item_do_not_open() {
    let backend = MotoBackend::new("moved").await;
    let store = backend.adapters.endpoints.clone();
    let (a, b) = (new_endpoint("org_a"), new_endpoint("org_a"));
    let created = store
        .create(&a, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    let created = store
        .create(&b, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    move_sealed_secrets(&backend, &a.id, &b.id).await;
    let err = store.get("org_a", &b.id).await.expect_err("must not open");
    assert!(err.to_string().contains("do not open"), "{err}");
    assert!(!err.to_string().contains("whsec_"));
    let read = store
        .get("org_a", &a.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(secrets_of(&read), secrets_of(&a));
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

#[tokio::test]
async fn the_sender_signs_with_opened_secrets_and_one_decrypt_serves_every_delivery() {
    let receiver = Receiver::always(204).await;
    let backend = MotoBackend::new("signs").await;
    // The sender is another process: its own clients and data-key cache.
    let counter = RequestCounter::new();
    let sender_side = backend.counted_adapters(&counter).await;
    let mut sys = MotoSystem::with_sender_adapters(backend, sender_side, "1s", 0);

    let mut ep = sys
        .endpoint("org_a", receiver.url("/a"), &["invoice.paid"])
        .await;
    let old = ep.secret.clone();
    ep.rotate_secret(Secret::generate(), Utc::now(), chrono::Duration::hours(24));
    assert_eq!(
        sys.adapters.endpoints.update(&ep).await.expect("rotate"),
        Updated::Written
    );
    let second = sys
        .endpoint("org_a", receiver.url("/b"), &["invoice.paid"])
        .await;

    let mut events = Vec::new();
    for n in 0..5 {
        events.push(
            sys.publish("org_a", EventType::InvoicePaid, &format!(r#"{{"n":{n}}}"#))
                .await,
        );
    }
    for event in &events {
        for id in [&ep.id, &second.id] {
            assert!(
                sys.drive_until_status(id, &event.id, DeliveryStatus::Delivered, WAIT)
                    .await,
                "delivery did not complete"
            );
        }
    }

    let got = receiver.received();
    assert_eq!(got.len(), 10);
    for req in &got {
        if req.path == "/a" {
            // X-Signature with the current secret; webhook-signature with
            // both, the old one inside its overlap.
            verify_delivery(req, ep.secret.expose()).expect("current secret signs");
            verify_standard(req, old.expose()).expect("the previous secret still signs");
        } else {
            verify_delivery(req, second.secret.expose()).expect("its own secret signs");
        }
    }
    // Both endpoints were sealed under one data key by the writer, so ten
    // deliveries cost the sender one Decrypt and no GenerateDataKey.
    assert_eq!(kms_calls(&counter, "Decrypt"), 1);
    assert_eq!(kms_calls(&counter, "GenerateDataKey"), 0);
}

/// The raw item of endpoint `id` of org_a.
async fn raw_item(
    backend: &MotoBackend,
    id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    backend
        .aws
        .dynamodb
        .get_item()
        .table_name(backend.names.table("endpoints"))
        .key("org_id", s("org_a"))
        .key("endpoint_id", s(id))
        .send()
        .await
        .expect("get item")
        .item
        .expect("item")
}

async fn put_raw(backend: &MotoBackend, item: std::collections::HashMap<String, AttributeValue>) {
    backend
        .aws
        .dynamodb
        .put_item()
        .table_name(backend.names.table("endpoints"))
        .set_item(Some(item))
        .send()
        .await
        .expect("put item");
}

#[tokio::test]
async fn an_older_seal_of_the_same_endpoint_put_back_does_not_open() {
    let backend = MotoBackend::new("rollback").await;
    let store = backend.adapters.endpoints.clone();
    let mut ep = new_endpoint("org_a");
    let created = store
        .create(
            &ep,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    let before_rotation = raw_item(&backend, &ep.id).await;
    // The secret leaks; its owner rotates it (twice: no overlap left to
    // the leaked one).
    for _ in 0..2 {
        ep.rotate_secret(Secret::generate(), Utc::now(), chrono::Duration::zero());
        assert_eq!(store.update(&ep).await.expect("rotate"), Updated::Written);
        ep.version += 1;
    }
    // Health writes since do not stop the current seal opening.
    assert!(store
        .disable("org_a", &ep.id, "test")
        .await
        .expect("disable"));
    let read = store
        .get("org_a", &ep.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(read.secret.expose(), ep.secret.expose());

    // Whoever knows the leaked secret puts its seal back.
    let mut rolled_back = raw_item(&backend, &ep.id).await;
    for attribute in ["secrets_key", "secrets_sealed"] {
        rolled_back.insert(attribute.into(), before_rotation[attribute].clone());
    }
    put_raw(&backend, rolled_back).await;
    let err = store
        .get("org_a", &ep.id)
        .await
        .expect_err("an older seal must not open");
    assert!(err.to_string().contains("do not open"), "{err}");
}

#[tokio::test]
async fn a_plaintext_secret_is_refused_naming_the_endpoint_and_the_migration() {
    let backend = MotoBackend::new("plaintext").await;
    let store = backend.adapters.endpoints.clone();
    let ep = new_endpoint("org_a");
    let created = store
        .create(
            &ep,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    // An item as written before secrets were sealed.
    let mut plain = raw_item(&backend, &ep.id).await;
    plain.remove("secrets_key");
    plain.remove("secrets_sealed");
    plain.remove("secrets_version");
    plain.insert("secret".into(), s(ep.secret.expose()));
    put_raw(&backend, plain).await;

    let err = store
        .get("org_a", &ep.id)
        .await
        .expect_err("a plaintext secret must not be used");
    let message = err.to_string();
    assert!(message.contains(&ep.id), "{message}");
    assert!(
        message.contains("webhooks migrate seal-secrets"),
        "{message}"
    );
    for trace in traces(&ep.secret) {
        assert!(!message.contains(&trace), "the error shows the secret");
    }
    // A listing still shows it.
    let page = store.list("org_a", 10, None).await.expect("list");
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn the_sender_sends_the_sealed_headers_and_fetches_one_token_for_many_deliveries() {
    // The token endpoint: one token for client-1; a receiver that checks it
    // and the custom header.
    let tokens = Receiver::start(|n, req| {
        if req.header("authorization") == Some("Basic Y2xpZW50LTE6c2VjcmV0LTE=") {
            webhooks_testkit::Reply::StatusWithBody(
                200,
                format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#),
            )
        } else {
            webhooks_testkit::Reply::Status(401)
        }
    })
    .await;
    let receiver = Receiver::start(|_, req| {
        let ok = req.header("authorization") == Some("Bearer tok-0")
            && req.header("x-api-key") == Some(HEADER_VALUE);
        webhooks_testkit::Reply::Status(if ok { 204 } else { 401 })
    })
    .await;
    let mut sys = MotoSystem::new("oauth", "1s", 0).await;
    let mut ep = sys
        .endpoint("org_a", receiver.url("/a"), &["invoice.paid"])
        .await;
    ep.headers = webhooks_domain::endpoint::CustomHeaders::new(
        vec![("X-Api-Key".into(), HEADER_VALUE.into())],
        true,
    )
    .expect("headers");
    ep.auth = Some(
        webhooks_domain::endpoint::EndpointAuth::parse(
            &serde_json::json!({"type": "oauth2_client_credentials",
                "token_url": tokens.url("/token"), "client_id": "client-1",
                "client_secret": "secret-1"}),
            &webhooks_domain::EndpointUrlPolicy::LOCAL,
        )
        .expect("auth"),
    );
    assert_eq!(
        sys.adapters.endpoints.update(&ep).await.expect("update"),
        Updated::Written
    );
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(
            sys.publish("org_a", EventType::InvoicePaid, &format!(r#"{{"n":{n}}}"#))
                .await,
        );
    }
    for event in &events {
        assert!(
            sys.drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
                .await,
            "delivery did not complete"
        );
    }
    assert_eq!(receiver.count(), 5);
    assert_eq!(tokens.count(), 1, "one token for five deliveries");
}
