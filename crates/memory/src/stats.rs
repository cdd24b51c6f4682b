//! The stats table: each endpoint's hourly delivery figures.

use crate::clock::StoreClock;
use crate::expiry::{expire, ExpiryQueue, EXPIRY_BUDGET};
use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use webhooks_domain::stats::{HourBucket, StatsDelta};
use webhooks_ports::table_retention::STATS_DAYS;
use webhooks_ports::{Clock, EndpointStatsStore, Result};

type BucketKey = (String, DateTime<Utc>);

/// Hourly buckets by (endpoint, hour), each kept [`STATS_DAYS`] after its
/// hour.
#[derive(Default)]
pub struct MemoryStatsStore {
    buckets: Mutex<BTreeMap<BucketKey, HourBucket>>,
    /// The buckets in the order they were made; locked after `buckets`.
    expiring: Mutex<ExpiryQueue<BucketKey>>,
    clock: StoreClock,
}

impl MemoryStatsStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` to expire buckets.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(MemoryStatsStore {
            clock: StoreClock::new(clock),
            ..Self::default()
        })
    }

    /// How many buckets are stored.
    pub fn len(&self) -> usize {
        lock(&self.buckets).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire_buckets(&self, buckets: &mut BTreeMap<BucketKey, HourBucket>, budget: usize) {
        expire(
            &mut lock(&self.expiring),
            self.clock.now(),
            budget,
            |_, key| {
                buckets.remove(&key);
            },
        );
    }

    /// Removes every expired bucket now (tests; writes do a little of it).
    pub fn expire(&self) {
        self.expire_buckets(&mut lock(&self.buckets), usize::MAX);
    }
}

#[async_trait]
impl EndpointStatsStore for MemoryStatsStore {
    async fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) -> Result<()> {
        let mut buckets = lock(&self.buckets);
        self.expire_buckets(&mut buckets, EXPIRY_BUDGET);
        let key = (endpoint_id.to_string(), hour);
        if !buckets.contains_key(&key) {
            lock(&self.expiring).push(hour + chrono::Duration::days(STATS_DAYS), key.clone());
        }
        buckets
            .entry(key)
            .or_insert_with(|| HourBucket {
                hour,
                ..HourBucket::default()
            })
            .add(delta);
        Ok(())
    }

    async fn read(&self, endpoint_id: &str, from_hour: DateTime<Utc>) -> Result<Vec<HourBucket>> {
        Ok(lock(&self.buckets)
            .range((endpoint_id.to_string(), from_hour)..)
            .take_while(|((ep, _), _)| ep == endpoint_id)
            .map(|(_, b)| b.clone())
            .collect())
    }
}
