//! `IdempotencyStore`: the first value claimed under a key, until it expires.

use super::on_both_backends;
use std::time::Duration;
use webhooks_ports::Adapters;

async fn idempotency_contract(a: Adapters) {
    let keys = a.idempotency;
    let day = Duration::from_secs(86_400);
    assert_eq!(keys.claim("k1", "first", day).await.unwrap(), None);
    assert_eq!(
        keys.claim("k1", "second", day).await.unwrap().as_deref(),
        Some("first"),
        "the value claimed first"
    );
    assert_eq!(
        keys.claim("k2", "other", day).await.unwrap(),
        None,
        "per key"
    );
    // Expired claims count as absent, though TTL deletes lazily.
    assert_eq!(
        keys.claim("short", "a", Duration::from_secs(1))
            .await
            .unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        keys.claim("short", "b", day).await.unwrap(),
        None,
        "an expired claim is free again"
    );
    assert_eq!(
        keys.claim("short", "c", day).await.unwrap().as_deref(),
        Some("b")
    );
}

on_both_backends!(idempotency_contract, memory_idempotency, moto_idempotency);
