//! The idempotency table: keys seen before, with expiry.

use crate::clock::StoreClock;
use crate::expiry::{expire, ExpiryQueue, EXPIRY_BUDGET};
use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhooks_ports::{Clock, IdempotencyStore, Result};

/// Idempotency keys with expiry.
#[derive(Default)]
pub struct MemoryIdempotencyStore {
    keys: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    /// The keys in the order they were claimed, to remove them once
    /// expired; locked after `keys`.
    expiring: Mutex<ExpiryQueue<String>>,
    clock: StoreClock,
}

impl MemoryIdempotencyStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` for expiry.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(MemoryIdempotencyStore {
            keys: Mutex::default(),
            expiring: Mutex::default(),
            clock: StoreClock::new(clock),
        })
    }

    /// How many keys are stored, expired or not.
    pub fn len(&self) -> usize {
        lock(&self.keys).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the expired keys at the front of the queue, at most `budget`.
    fn expire_keys(
        &self,
        keys: &mut HashMap<String, (String, DateTime<Utc>)>,
        now: DateTime<Utc>,
        budget: usize,
    ) {
        expire(&mut lock(&self.expiring), now, budget, |at, key| {
            // Claimed again since: its entry is the later one.
            if keys.get(&key).is_some_and(|(_, expires)| *expires == at) {
                keys.remove(&key);
            }
        });
    }

    /// Removes every expired key now (tests; claims do a little of it).
    pub fn expire(&self) {
        let now = self.clock.now();
        self.expire_keys(&mut lock(&self.keys), now, usize::MAX);
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        let now = self.clock.now();
        let mut keys = lock(&self.keys);
        self.expire_keys(&mut keys, now, EXPIRY_BUDGET);
        if let Some((existing, expires)) = keys.get(key) {
            if *expires > now {
                return Ok(Some(existing.clone()));
            }
        }
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        keys.insert(key.to_string(), (value.to_string(), expires));
        lock(&self.expiring).push(expires, key.to_string());
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idempotency_keys_return_the_first_value() {
        let s = MemoryIdempotencyStore::new();
        assert_eq!(
            s.claim("k", "1", Duration::from_secs(60)).await.unwrap(),
            None
        );
        assert_eq!(
            s.claim("k", "2", Duration::from_secs(60))
                .await
                .unwrap()
                .as_deref(),
            Some("1")
        );
    }
}
