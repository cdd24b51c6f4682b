use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, Event};
use webhooks_ports::{
    cursor, AttemptUpdate, BackendError, CursorStore, DeliveryStore, EndpointStore, EventStore,
    IdempotencyStore, Page, Result,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-written
    // (every change is a single insert or field update), so carry on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One entry of the event store's change stream, like a DynamoDB stream
/// record of an INSERT.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Increasing position in the stream.
    pub sequence_number: u64,
    pub event: Event,
}

/// Events per org, with a change stream of inserts.
#[derive(Default)]
pub struct MemoryEventStore {
    events: Mutex<BTreeMap<(String, String), Event>>,
    stream: Mutex<Vec<StreamRecord>>,
    appended: Notify,
}

impl MemoryEventStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stream records from position `from` (0-based index), at most `limit`.
    pub fn read_stream(&self, from: usize, limit: usize) -> Vec<StreamRecord> {
        let stream = lock(&self.stream);
        stream.iter().skip(from).take(limit).cloned().collect()
    }

    /// Waits until the stream holds more than `len` records or `timeout` ends.
    pub async fn wait_for_stream(&self, len: usize, timeout: Duration) {
        let notified = self.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if lock(&self.stream).len() > len {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// How many events are stored.
    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        let key = (event.org_id.clone(), event.id.clone());
        {
            let mut events = lock(&self.events);
            if events.contains_key(&key) {
                return Ok(false);
            }
            events.insert(key, event.clone());
            let mut stream = lock(&self.stream);
            let sequence_number = stream.len() as u64 + 1;
            stream.push(StreamRecord {
                sequence_number,
                event: event.clone(),
            });
        }
        self.appended.notify_waiters();
        Ok(true)
    }

    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        Ok(lock(&self.events)
            .get(&(org_id.to_string(), event_id.to_string()))
            .cloned())
    }

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Event>> {
        let events = lock(&self.events);
        let start = (org_id.to_string(), after.to_string());
        Ok(events
            .range(start..)
            .take_while(|((org, _), _)| org == org_id)
            .filter(|((_, id), _)| id.as_str() > after)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

/// Endpoints per org.
#[derive(Default)]
pub struct MemoryEndpointStore {
    endpoints: Mutex<BTreeMap<(String, String), Endpoint>>,
}

impl MemoryEndpointStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl EndpointStore for MemoryEndpointStore {
    async fn create(&self, endpoint: &Endpoint) -> Result<()> {
        let key = (endpoint.org_id.clone(), endpoint.id.clone());
        let mut eps = lock(&self.endpoints);
        if eps.contains_key(&key) {
            return Err(BackendError::Permanent(format!(
                "endpoint {} exists",
                endpoint.id
            )));
        }
        eps.insert(key, endpoint.clone());
        Ok(())
    }

    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        Ok(lock(&self.endpoints)
            .get(&(org_id.to_string(), endpoint_id.to_string()))
            .cloned())
    }

    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Endpoint>> {
        let after = match cursor {
            Some(c) => Some(cursor::decode(c, "ep_")?),
            None => None,
        };
        let eps = lock(&self.endpoints);
        let mut items: Vec<Endpoint> = eps
            .range((org_id.to_string(), after.clone().unwrap_or_default())..)
            .take_while(|((org, _), _)| org == org_id)
            .filter(|((_, id), _)| after.as_ref().is_none_or(|a| id > a))
            .take(limit + 1)
            .map(|(_, e)| e.clone())
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| cursor::encode(&e.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn list_all(&self, org_id: &str) -> Result<Vec<Endpoint>> {
        let eps = lock(&self.endpoints);
        Ok(eps
            .range((org_id.to_string(), String::new())..)
            .take_while(|((org, _), _)| org == org_id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn update(&self, endpoint: &Endpoint) -> Result<bool> {
        let mut eps = lock(&self.endpoints);
        match eps.get_mut(&(endpoint.org_id.clone(), endpoint.id.clone())) {
            Some(stored) => {
                *stored = endpoint.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        Ok(lock(&self.endpoints)
            .remove(&(org_id.to_string(), endpoint_id.to_string()))
            .is_some())
    }

    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<()> {
        if let Some(ep) =
            lock(&self.endpoints).get_mut(&(org_id.to_string(), endpoint_id.to_string()))
        {
            ep.disable(reason, Utc::now());
        }
        Ok(())
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
            match since {
                Some(t) => {
                    ep.failing_since.get_or_insert(t);
                }
                None => ep.failing_since = None,
            }
        }
        Ok(())
    }
}

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
        let mut items: Vec<Delivery> = ds
            .range(lower..upper)
            .rev()
            .map(|(_, d)| d)
            .filter(|d| status.is_none_or(|s| d.status == s))
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| cursor::encode(&d.event_id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

/// Per-org cursors, with the oldest held (failed, not yet fanned out) event.
#[derive(Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<BTreeMap<String, CursorState>>,
}

#[derive(Default, Clone)]
struct CursorState {
    cursor: Option<String>,
    hold: Option<String>,
}

impl MemoryCursorStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl CursorStore for MemoryCursorStore {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        Ok(lock(&self.cursors)
            .get(org_id)
            .and_then(|c| c.cursor.clone()))
    }

    async fn advance(&self, org_id: &str, from: &str, to: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if let Some(h) = &state.hold {
            if h.as_str() >= from && h.as_str() <= to {
                state.hold = None;
            } else if h.as_str() < from {
                // An older event is still waiting to be fanned out.
                return Ok(());
            }
        }
        if state.cursor.as_deref().is_none_or(|c| to > c) {
            state.cursor = Some(to.to_string());
        }
        Ok(())
    }

    async fn hold(&self, org_id: &str, event_id: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if state.hold.as_deref().is_none_or(|h| event_id < h) {
            state.hold = Some(event_id.to_string());
        }
        Ok(())
    }

    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if state.cursor.is_none() {
            state.cursor = Some(event_id.to_string());
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        Ok(lock(&self.cursors)
            .iter()
            .map(|(k, v)| (k.clone(), v.cursor.clone().unwrap_or_default()))
            .collect())
    }
}

/// Idempotency keys with expiry.
#[derive(Default)]
pub struct MemoryIdempotencyStore {
    keys: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl MemoryIdempotencyStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        let now = Utc::now();
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
    use serde_json::value::RawValue;
    use webhooks_domain::{EventType, Secret, Subscription};

    fn event(org: &str) -> Event {
        Event::new(
            org,
            EventType::LeadWon,
            RawValue::from_string("{}".into()).unwrap(),
        )
    }

    #[tokio::test]
    async fn events_are_written_once_and_streamed() {
        let store = MemoryEventStore::new();
        let e = event("a");
        assert!(store.put_if_absent(&e).await.unwrap());
        assert!(!store.put_if_absent(&e).await.unwrap());
        let other = event("b");
        store.put_if_absent(&other).await.unwrap();
        let later = event("a");
        store.put_if_absent(&later).await.unwrap();
        let stream = store.read_stream(0, 10);
        assert_eq!(stream.len(), 3);
        assert_eq!(stream[2].sequence_number, 3);
        let after: Vec<String> = store
            .list_after("a", &e.id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(after, vec![later.id]);
    }

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
            store.create(&ep).await.unwrap();
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

    #[tokio::test]
    async fn cursors_only_move_forward() {
        let c = MemoryCursorStore::new();
        c.ensure("o", "evt_b").await.unwrap();
        c.ensure("o", "evt_a").await.unwrap();
        c.advance("o", "evt_a", "evt_a").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_b"));
        c.advance("o", "evt_c", "evt_c").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_c"));
    }

    #[tokio::test]
    async fn a_held_event_stops_the_cursor_until_it_is_fanned_out() {
        let c = MemoryCursorStore::new();
        c.ensure("o", "evt_a").await.unwrap();
        c.hold("o", "evt_c").await.unwrap();
        c.hold("o", "evt_d").await.unwrap();
        // A later batch does not move the cursor past the held event.
        c.advance("o", "evt_e", "evt_f").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_a"));
        // An earlier range still moves it, up to before the hold.
        c.advance("o", "evt_b", "evt_b").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_b"));
        // Fanning out the held event releases it.
        c.advance("o", "evt_c", "evt_f").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_f"));
        c.advance("o", "evt_g", "evt_g").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_g"));
        // An org known only by a hold is still listed for the sweeper.
        c.hold("new", "evt_x").await.unwrap();
        assert!(c
            .list()
            .await
            .unwrap()
            .contains(&("new".to_string(), String::new())));
    }

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
