//! The endpoints table: endpoints per org.

use crate::clock::StoreClock;
use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use webhooks_domain::{Endpoint, EndpointSummary, Subscriber};
use webhooks_ports::{
    cursor, BackendError, Clock, Created, EndpointHealth, EndpointLookup, EndpointStore,
    OrgEndpoints, Page, Result, Updated,
};

/// Endpoints per org.
#[derive(Default)]
pub struct MemoryEndpointStore {
    endpoints: Mutex<BTreeMap<(String, String), Endpoint>>,
    clock: StoreClock,
}

impl MemoryEndpointStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` for the times it writes.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(MemoryEndpointStore {
            endpoints: Mutex::default(),
            clock: StoreClock::new(clock),
        })
    }
}

#[async_trait]
impl EndpointLookup for MemoryEndpointStore {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        Ok(lock(&self.endpoints)
            .get(&(org_id.to_string(), endpoint_id.to_string()))
            .cloned())
    }
}

#[async_trait]
impl OrgEndpoints for MemoryEndpointStore {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        let eps = lock(&self.endpoints);
        Ok(eps
            .range((org_id.to_string(), String::new())..)
            .take_while(|((org, _), _)| org == org_id)
            .map(|(_, e)| e.subscriber())
            .collect())
    }
}

#[async_trait]
impl EndpointHealth for MemoryEndpointStore {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        match lock(&self.endpoints).get_mut(&(org_id.to_string(), endpoint_id.to_string())) {
            Some(ep) if ep.enabled => {
                ep.disable(reason, self.clock.now());
                ep.version += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        if let Some(ep) =
            lock(&self.endpoints).get_mut(&(org_id.to_string(), endpoint_id.to_string()))
        {
            let before = ep.failing_since;
            match since {
                Some(t) => {
                    ep.failing_since.get_or_insert(t);
                }
                None => ep.failing_since = None,
            }
            if ep.failing_since != before {
                ep.version += 1;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EndpointStore for MemoryEndpointStore {
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created> {
        let key = (endpoint.org_id.clone(), endpoint.id.clone());
        let mut eps = lock(&self.endpoints);
        if eps.contains_key(&key) {
            return Err(BackendError::Permanent(format!(
                "endpoint {} exists",
                endpoint.id
            )));
        }
        // Counted and written under one lock: as atomic as DynamoDB's
        // transaction of the counter and the item.
        let limit = usize::try_from(max_per_org).unwrap_or(usize::MAX);
        let held = eps
            .range((endpoint.org_id.clone(), String::new())..)
            .take_while(|((org, _), _)| *org == endpoint.org_id)
            .take(limit)
            .count();
        if held >= limit {
            return Ok(Created::LimitReached);
        }
        eps.insert(key, endpoint.clone());
        Ok(Created::Written)
    }

    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>> {
        let after = match cursor {
            Some(c) => Some(cursor::decode(c, "ep_")?),
            None => None,
        };
        let eps = lock(&self.endpoints);
        let items: Vec<EndpointSummary> = eps
            .range((org_id.to_string(), after.clone().unwrap_or_default())..)
            .take_while(|((org, _), _)| org == org_id)
            .filter(|((_, id), _)| after.as_ref().is_none_or(|a| id > a))
            .take(limit + 1)
            .map(|(_, e)| e.summary())
            .collect();
        Ok(Page::from_overfetch(items, limit, |e| &e.id))
    }

    async fn summary(&self, org_id: &str, endpoint_id: &str) -> Result<Option<EndpointSummary>> {
        Ok(lock(&self.endpoints)
            .get(&(org_id.to_string(), endpoint_id.to_string()))
            .map(Endpoint::summary))
    }

    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        let mut eps = lock(&self.endpoints);
        match eps.get_mut(&(endpoint.org_id.clone(), endpoint.id.clone())) {
            Some(stored) if stored.version == endpoint.version => {
                *stored = endpoint.clone();
                stored.version += 1;
                Ok(Updated::Written)
            }
            Some(_) => Ok(Updated::Conflict),
            None => Ok(Updated::NotFound),
        }
    }

    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        Ok(lock(&self.endpoints)
            .remove(&(org_id.to_string(), endpoint_id.to_string()))
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use webhooks_domain::{Secret, Subscription};

    #[tokio::test]
    async fn listings_page_with_opaque_cursors() {
        let store = MemoryEndpointStore::new();
        for _ in 0..5 {
            let ep = Endpoint::new(
                "org",
                "https://x.test".into(),
                Subscription::All,
                Secret::generate(),
            );
            assert_eq!(store.create(&ep, 5).await.unwrap(), Created::Written);
        }
        let p1 = store.list("org", 2, None).await.unwrap();
        assert_eq!(p1.items.len(), 2);
        let p2 = store
            .list("org", 2, p1.next_cursor.as_deref())
            .await
            .unwrap();
        let p3 = store
            .list("org", 2, p2.next_cursor.as_deref())
            .await
            .unwrap();
        assert_eq!(p3.items.len(), 1);
        assert_eq!(p3.next_cursor, None);
        assert!(p1.items[1].id < p2.items[0].id);
        assert_eq!(
            store.list("org", 2, Some("garbage!")).await,
            Err(BackendError::InvalidCursor)
        );
        assert!(store.list("other", 2, None).await.unwrap().items.is_empty());
    }
}
