//! Inbound provider events and messages, and the routes of receiving
//! addresses to orgs.

use crate::clock::StoreClock;
use crate::expiry::EXPIRY_BUDGET;
use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use webhooks_ports::table_retention::INBOUND_DAYS;
use webhooks_ports::{Clock, InboundRecord, InboundStore, Result};

/// Inbound records keyed by (provider, provider id), recorded once each and
/// kept [`INBOUND_DAYS`] after their receipt.
#[derive(Default)]
pub struct MemoryInboundStore {
    records: Mutex<Records>,
    routes: Mutex<HashMap<(String, String), String>>,
    clock: StoreClock,
}

#[derive(Default)]
struct Records {
    in_order: VecDeque<InboundRecord>,
    keys: HashSet<(String, String)>,
}

impl Records {
    /// Removes the oldest records once past their retention, at most
    /// `budget` (lazy, as DynamoDB's TTL: a record received out of order
    /// waits behind the front).
    fn expire(&mut self, now: DateTime<Utc>, budget: usize) {
        for _ in 0..budget {
            let expired = self
                .in_order
                .front()
                .is_some_and(|r| r.received_at + chrono::Duration::days(INBOUND_DAYS) <= now);
            if !expired {
                return;
            }
            if let Some(r) = self.in_order.pop_front() {
                self.keys.remove(&(r.provider, r.provider_id));
            }
        }
    }
}

impl MemoryInboundStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` to expire records.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(MemoryInboundStore {
            clock: StoreClock::new(clock),
            ..Self::default()
        })
    }

    /// Every record, in the order they were recorded.
    pub fn records(&self) -> Vec<InboundRecord> {
        lock(&self.records).in_order.iter().cloned().collect()
    }

    /// Removes every expired record now (tests; writes do a little of it).
    pub fn expire(&self) {
        let now = self.clock.now();
        lock(&self.records).expire(now, usize::MAX);
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        lock(&self.records).in_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl InboundStore for MemoryInboundStore {
    async fn record(&self, record: &InboundRecord) -> Result<bool> {
        let now = self.clock.now();
        let mut records = lock(&self.records);
        records.expire(now, EXPIRY_BUDGET);
        let key = (record.provider.clone(), record.provider_id.clone());
        if !records.keys.insert(key) {
            return Ok(false);
        }
        records.in_order.push_back(record.clone());
        Ok(true)
    }

    async fn route(&self, provider: &str, address: &str) -> Result<Option<String>> {
        Ok(lock(&self.routes)
            .get(&(provider.to_string(), address.to_string()))
            .cloned())
    }

    async fn set_route(&self, provider: &str, address: &str, org_id: &str) -> Result<()> {
        lock(&self.routes).insert(
            (provider.to_string(), address.to_string()),
            org_id.to_string(),
        );
        Ok(())
    }

    async fn messages(&self, org_id: &str, limit: usize) -> Result<Vec<InboundRecord>> {
        let records = lock(&self.records);
        // Newest first; among equal times, the later recorded first.
        let mut messages: Vec<(usize, &InboundRecord)> = records
            .in_order
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_org_message() && r.org_id.as_deref() == Some(org_id))
            .collect();
        messages.sort_by(|(i, a), (j, b)| b.received_at.cmp(&a.received_at).then(j.cmp(i)));
        Ok(messages
            .into_iter()
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn message(provider: &str, id: &str, org: Option<&str>, age_secs: i64) -> InboundRecord {
        InboundRecord {
            provider: provider.into(),
            provider_id: id.into(),
            org_id: org.map(String::from),
            kind: InboundRecord::MESSAGE.into(),
            from: Some("+15550002222".into()),
            to: Some("+15550001111".into()),
            text: Some(format!("hello {id}")),
            raw: "{}".into(),
            received_at: Utc::now() - Duration::seconds(age_secs),
        }
    }

    #[tokio::test]
    async fn records_each_provider_id_once() {
        let store = MemoryInboundStore::new();
        let m = message("twilio", "SM1", Some("org_a"), 0);
        assert!(store.record(&m).await.unwrap());
        let mut again = m.clone();
        again.text = Some("changed".into());
        assert!(!store.record(&again).await.unwrap());
        // The same id from another provider is a different record.
        assert!(store
            .record(&message("whatsapp", "SM1", Some("org_a"), 0))
            .await
            .unwrap());
        assert_eq!(store.len(), 2);
        assert_eq!(store.records()[0].text.as_deref(), Some("hello SM1"));
    }

    #[tokio::test]
    async fn lists_an_orgs_messages_newest_first() {
        let store = MemoryInboundStore::new();
        store
            .record(&message("twilio", "old", Some("org_a"), 60))
            .await
            .unwrap();
        store
            .record(&message("whatsapp", "new", Some("org_a"), 1))
            .await
            .unwrap();
        store
            .record(&message("twilio", "other", Some("org_b"), 0))
            .await
            .unwrap();
        store
            .record(&message("twilio", "unrouted", None, 0))
            .await
            .unwrap();
        let mut stripe = message("stripe", "evt_1", Some("org_a"), 0);
        stripe.kind = "invoice.paid".into();
        store.record(&stripe).await.unwrap();

        let ids = |v: Vec<InboundRecord>| v.into_iter().map(|r| r.provider_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.messages("org_a", 10).await.unwrap()),
            ["new", "old"]
        );
        assert_eq!(ids(store.messages("org_a", 1).await.unwrap()), ["new"]);
        assert_eq!(ids(store.messages("org_b", 10).await.unwrap()), ["other"]);
        assert!(store.messages("org_c", 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn routes_addresses_to_orgs() {
        let store = MemoryInboundStore::new();
        assert_eq!(store.route("twilio", "+15550001111").await.unwrap(), None);
        store
            .set_route("twilio", "+15550001111", "org_a")
            .await
            .unwrap();
        assert_eq!(
            store
                .route("twilio", "+15550001111")
                .await
                .unwrap()
                .as_deref(),
            Some("org_a")
        );
        assert_eq!(store.route("whatsapp", "+15550001111").await.unwrap(), None);
        store
            .set_route("twilio", "+15550001111", "org_b")
            .await
            .unwrap();
        assert_eq!(
            store
                .route("twilio", "+15550001111")
                .await
                .unwrap()
                .as_deref(),
            Some("org_b")
        );
    }
}
