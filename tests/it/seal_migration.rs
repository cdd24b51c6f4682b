//! `webhooks migrate seal-secrets` on the emulator: endpoints whose secrets
//! are in plaintext, or sealed without their version, are sealed with it
//! and read again; pages of the table at a time; counted; idempotent.

use crate::support::MotoBackend;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use webhooks::migrate::{seal_secrets, SealSecretsArgs, EXIT_INCOMPLETE, EXIT_OK};
use webhooks_aws::envelope::EnvelopeCipher;
use webhooks_aws::items::{unversioned_endpoint_aad, EndpointSecrets};
use webhooks_aws::request_counter::RequestCounter;
use webhooks_aws::seal_migration::{SealMigration, SealReport};
use webhooks_aws::AwsClients;
use webhooks_domain::{Endpoint, Secret, Subscription};
use webhooks_ports::Created;

type Item = HashMap<String, AttributeValue>;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// An endpoint of org_a, stored by the store (sealed with its version).
async fn stored_endpoint(backend: &MotoBackend) -> Endpoint {
    let mut ep = Endpoint::new(
        "org_a",
        "https://hooks.test/in".into(),
        Subscription::All,
        Secret::generate(),
    );
    // One previous secret inside its overlap, to carry over too.
    ep.rotate_secret(Secret::generate(), Utc::now(), chrono::Duration::hours(24));
    let created = backend
        .adapters
        .endpoints
        .create(&ep, 100)
        .await
        .expect("create");
    assert_eq!(created, Created::Written);
    ep
}

async fn raw_item(backend: &MotoBackend, id: &str) -> Item {
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

async fn put_raw(backend: &MotoBackend, item: Item) {
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

/// Makes `ep`'s item as written before sealing: its secrets in plaintext,
/// the previous one in the attributes of that time.
async fn make_plaintext(backend: &MotoBackend, ep: &Endpoint) {
    let mut item = raw_item(backend, &ep.id).await;
    for sealed in ["secrets_key", "secrets_sealed", "secrets_version"] {
        item.remove(sealed);
    }
    item.insert("secret".into(), s(ep.secret.expose()));
    let previous = &ep.previous_secrets[0];
    item.insert("previous_secret".into(), s(previous.secret.expose()));
    item.insert(
        "previous_secret_expires_at".into(),
        s(&webhooks_domain::time::rfc3339(previous.expires_at)),
    );
    put_raw(backend, item).await;
}

/// Makes `ep`'s item as sealed before the version was in the AAD, sealed
/// for the item `sealed_for` (itself, or another: one that cannot open).
async fn make_unversioned(
    backend: &MotoBackend,
    cipher: &EnvelopeCipher,
    ep: &Endpoint,
    sealed_for: &str,
) {
    let json = serde_json::to_vec(&EndpointSecrets::of(ep)).expect("json");
    let sealed = cipher
        .seal(&json, &unversioned_endpoint_aad("org_a", sealed_for))
        .await
        .expect("seal");
    let mut item = raw_item(backend, &ep.id).await;
    item.remove("secrets_version");
    item.insert(
        "secrets_key".into(),
        AttributeValue::B(Blob::new(sealed.wrapped_key)),
    );
    item.insert(
        "secrets_sealed".into(),
        AttributeValue::B(Blob::new(sealed.sealed)),
    );
    put_raw(backend, item).await;
}

fn secrets_of(ep: &Endpoint) -> Vec<String> {
    std::iter::once(&ep.secret)
        .chain(ep.previous_secrets.iter().map(|p| &p.secret))
        .map(|s| s.expose().to_string())
        .collect()
}

fn calls(counter: &RequestCounter, operation: &str) -> u64 {
    counter
        .snapshot()
        .iter()
        .filter(|((_, op), _)| op == operation)
        .map(|(_, n)| n)
        .sum()
}

/// The migration over `backend`'s table with clients `counter` tallies.
async fn migration(backend: &MotoBackend, counter: &RequestCounter) -> SealMigration {
    let config = webhooks_testkit::aws::emulator_config().await;
    let clients = AwsClients::counted(&config, counter);
    let cipher = Arc::new(EnvelopeCipher::new(
        clients.kms,
        backend.made.endpoint_secrets_key.clone(),
    ));
    SealMigration::new(clients.dynamodb, backend.names.table("endpoints"), cipher).page_size(2)
}

#[tokio::test]
async fn the_migration_seals_old_secrets_with_their_version_page_by_page_once() {
    let backend = MotoBackend::new("seal-migration").await;
    let store = backend.adapters.endpoints.clone();
    let config = webhooks_testkit::aws::emulator_config().await;
    let cipher = EnvelopeCipher::new(
        AwsClients::from_config(&config).kms,
        backend.made.endpoint_secrets_key.clone(),
    );
    let plain = stored_endpoint(&backend).await;
    make_plaintext(&backend, &plain).await;
    let unversioned = stored_endpoint(&backend).await;
    make_unversioned(&backend, &cipher, &unversioned, &unversioned.id).await;
    let current = stored_endpoint(&backend).await;
    let broken = stored_endpoint(&backend).await;
    make_unversioned(&backend, &cipher, &broken, &current.id).await;
    for refused in [&plain, &unversioned] {
        let err = store.get("org_a", &refused.id).await.expect_err("refused");
        assert!(
            err.to_string().contains("webhooks migrate seal-secrets"),
            "{err}"
        );
    }

    // A dry run counts what a run would do and writes nothing.
    let counter = RequestCounter::new();
    let dry = migration(&backend, &counter)
        .await
        .dry_run(true)
        .run(|_| {})
        .await
        .expect("dry run");
    assert_eq!(calls(&counter, "UpdateItem"), 0);
    let expected = |current: u64| SealReport {
        // Four endpoints and the org's counter item, two a page.
        pages: 3,
        endpoints: 4,
        current,
        sealed_plaintext: 1,
        resealed: 1,
        gone: 0,
        failed: vec![(
            "org_a".to_string(),
            broken.id.clone(),
            "sealed secrets do not open: altered, or sealed for another item".to_string(),
        )],
    };
    assert_eq!(dry, expected(1));

    let mut pages_seen = Vec::new();
    let first = migration(&backend, &counter)
        .await
        .run(|so_far| pages_seen.push(so_far.pages))
        .await
        .expect("run");
    assert_eq!(first, expected(1));
    assert_eq!(pages_seen, [1, 2, 3], "progress after every page");
    for ep in [&plain, &unversioned, &current] {
        let read = store
            .get("org_a", &ep.id)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(secrets_of(&read), secrets_of(ep));
        assert_eq!(read.version, ep.version, "the migration moves no version");
    }
    let sealed = raw_item(&backend, &plain.id).await;
    for gone in ["secret", "previous_secret", "previous_secret_expires_at"] {
        assert!(!sealed.contains_key(gone), "{gone} left in the item");
    }
    assert!(!format!("{sealed:?}").contains("whsec_"));
    assert!(store.get("org_a", &broken.id).await.is_err());

    // Again: every endpoint it can seal is current, and nothing is written.
    counter.reset();
    let second = migration(&backend, &counter)
        .await
        .run(|_| {})
        .await
        .expect("run again");
    let mut again = expected(3);
    again.sealed_plaintext = 0;
    again.resealed = 0;
    assert_eq!(second, again);
    assert_eq!(calls(&counter, "UpdateItem"), 0);
    assert_eq!(calls(&counter, "Scan"), 3);
}

#[tokio::test]
async fn the_command_reports_counts_and_fails_while_an_endpoint_is_left() {
    let backend = MotoBackend::new("seal-command").await;
    let config = webhooks_testkit::aws::emulator_config().await;
    let cipher = EnvelopeCipher::new(
        AwsClients::from_config(&config).kms,
        backend.made.endpoint_secrets_key.clone(),
    );
    let plain = stored_endpoint(&backend).await;
    make_plaintext(&backend, &plain).await;
    let broken = stored_endpoint(&backend).await;
    make_unversioned(&backend, &cipher, &broken, &plain.id).await;
    let args = SealSecretsArgs {
        endpoints_table: backend.names.table("endpoints"),
        kms_key: backend.made.endpoint_secrets_key.clone(),
        page_size: 100,
        dry_run: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = seal_secrets(&config, &args, &mut out, &mut err).await;
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(status, EXIT_INCOMPLETE, "{out}{err}");
    assert!(out.contains("1 sealed from plaintext"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(err.contains(&broken.id), "{err}");
    assert!(!format!("{out}{err}").contains("whsec_"));

    // Once the broken endpoint is gone, the command succeeds.
    assert!(backend
        .adapters
        .endpoints
        .delete("org_a", &broken.id)
        .await
        .expect("delete"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = seal_secrets(&config, &args, &mut out, &mut err).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status, EXIT_OK, "{out}");
    assert!(
        out.contains("1 already current, 0 deleted meanwhile, 0 failed"),
        "{out}"
    );
}
