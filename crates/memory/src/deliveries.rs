//! The deliveries table: one delivery per (endpoint, event).

use crate::sync::lock;
use async_trait::async_trait;
use chrono::Utc;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{cursor, AttemptUpdate, DeliveryStore, Page, Result};

/// Deliveries keyed by (endpoint, event), like the DynamoDB table.
#[derive(Default)]
pub struct MemoryDeliveryStore {
    deliveries: Mutex<BTreeMap<(String, String), Delivery>>,
}

impl MemoryDeliveryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every delivery, for tests and benchmarks.
    pub fn all(&self) -> Vec<Delivery> {
        lock(&self.deliveries).values().cloned().collect()
    }

    /// How many deliveries have each status.
    pub fn count_by_status(&self) -> HashMap<DeliveryStatus, usize> {
        let mut counts = HashMap::new();
        for d in lock(&self.deliveries).values() {
            *counts.entry(d.status).or_insert(0) += 1;
        }
        counts
    }
}

fn key_of(delivery_id: &str) -> Option<(String, String)> {
    parse_delivery_id(delivery_id)
}

#[async_trait]
impl DeliveryStore for MemoryDeliveryStore {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        let key = (delivery.endpoint_id.clone(), delivery.event_id.clone());
        let mut ds = lock(&self.deliveries);
        if let Some(existing) = ds.get(&key) {
            return Ok(Some(existing.clone()));
        }
        ds.insert(key, delivery.clone());
        Ok(None)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(None);
        };
        Ok(lock(&self.deliveries).get(&key).cloned())
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        let ds = lock(&self.deliveries);
        Ok(delivery_ids
            .iter()
            .filter_map(|id| key_of(id).and_then(|k| ds.get(&k).cloned()))
            .collect())
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(false);
        };
        let mut ds = lock(&self.deliveries);
        match ds.get_mut(&key) {
            Some(d) if d.status == DeliveryStatus::Pending => {
                d.attempts.push(update.attempt.clone());
                d.status = update.status;
                d.next_attempt_at = update.next_attempt_at;
                d.last_error.clone_from(&update.last_error);
                d.updated_at = update.attempt.at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(None);
        };
        let mut ds = lock(&self.deliveries);
        match ds.get_mut(&key) {
            Some(d) if from.contains(&d.status) => {
                let now = Utc::now();
                d.status = to;
                d.updated_at = now;
                d.next_attempt_at = (to == DeliveryStatus::Pending).then_some(now);
                Ok(Some(d.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        let before = match cursor {
            Some(c) => Some(cursor::decode(c, "evt_")?),
            None => None,
        };
        let ds = lock(&self.deliveries);
        let lower = (endpoint_id.to_string(), String::new());
        let upper = (
            endpoint_id.to_string(),
            before.clone().unwrap_or_else(|| "\u{10FFFF}".to_string()),
        );
        let items: Vec<Delivery> = ds
            .range(lower..upper)
            .rev()
            .map(|(_, d)| d)
            .filter(|d| status.is_none_or(|s| d.status == s))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, limit, |d| &d.event_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use webhooks_domain::EventType;

    #[tokio::test]
    async fn deliveries_are_unique_per_pair_and_transitions_are_guarded() {
        let store = MemoryDeliveryStore::new();
        let ep = webhooks_domain::ids::new_id("ep");
        let evt = webhooks_domain::ids::new_id("evt");
        let d = Delivery::new("org", &ep, &evt, EventType::LeadWon);
        assert_eq!(store.create_if_absent(&d).await.unwrap(), None);
        let again = Delivery::new("org", &ep, &evt, EventType::LeadWon);
        assert_eq!(
            store.create_if_absent(&again).await.unwrap().map(|x| x.id),
            Some(d.id.clone())
        );
        let done = store
            .transition(&d.id, &[DeliveryStatus::Pending], DeliveryStatus::Canceled)
            .await
            .unwrap();
        assert_eq!(done.map(|x| x.status), Some(DeliveryStatus::Canceled));
        assert_eq!(
            store
                .transition(&d.id, &[DeliveryStatus::Pending], DeliveryStatus::Delivered)
                .await
                .unwrap(),
            None
        );
    }
}
