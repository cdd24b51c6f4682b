//! The idempotency table: keys seen before, with expiry.

use crate::clock::StoreClock;
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
            clock: StoreClock::new(clock),
        })
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        let now = self.clock.now();
        let mut keys = lock(&self.keys);
        if let Some((existing, expires)) = keys.get(key) {
            if *expires > now {
                return Ok(Some(existing.clone()));
            }
        }
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        keys.insert(key.to_string(), (value.to_string(), expires));
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
