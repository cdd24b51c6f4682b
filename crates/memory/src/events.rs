//! The events table: events per org, with a change stream of inserts.

use crate::sync::lock;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use webhooks_domain::Event;
use webhooks_ports::{EventStore, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use webhooks_domain::EventType;

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
}
