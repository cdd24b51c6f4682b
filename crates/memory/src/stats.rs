//! The stats table: each endpoint's hourly delivery figures.

use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use webhooks_domain::stats::{HourBucket, StatsDelta};
use webhooks_ports::{EndpointStatsStore, Result};

/// Hourly buckets by (endpoint, hour).
#[derive(Default)]
pub struct MemoryStatsStore {
    buckets: Mutex<BTreeMap<(String, DateTime<Utc>), HourBucket>>,
}

impl MemoryStatsStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl EndpointStatsStore for MemoryStatsStore {
    async fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) -> Result<()> {
        lock(&self.buckets)
            .entry((endpoint_id.to_string(), hour))
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
