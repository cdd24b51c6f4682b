//! The events table: events per org, with a change stream of inserts.

use crate::clock::StoreClock;
use crate::expiry::{Retention, EXPIRY_BUDGET};
use crate::sync::lock;
use async_trait::async_trait;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use webhooks_domain::Event;
use webhooks_ports::event_log::QUERY_PAGE_BYTES;
use webhooks_ports::{
    BackendError, Clock, EventLogQuery, EventStore, EventSummary, Listed, Page, Result, Undecodable,
};

/// One entry of the event store's change stream, like a DynamoDB stream
/// record of an INSERT.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Increasing position in the stream.
    pub sequence_number: u64,
    pub event: Event,
}

/// Events per org, with a change stream of inserts. Events expire (see
/// [`crate::expiry`]); the stream holds the events kept, in the order they
/// were written, and is trimmed with them.
#[derive(Default)]
pub struct MemoryEventStore {
    state: Mutex<State>,
    appended: Notify,
    clock: StoreClock,
    retention: Retention,
}

#[derive(Default)]
struct State {
    /// Shared with `stream`: each event is held once.
    events: BTreeMap<(String, String), Arc<Event>>,
    /// The change stream from position `trimmed` on (position p has
    /// sequence number p + 1).
    stream: VecDeque<Arc<Event>>,
    trimmed: usize,
    /// Positions below this have been read: only those may go for the bound
    /// on the count (the TTL takes what it takes, read or not).
    read: usize,
    /// Items stored under an org and event id that are no readable event
    /// (see [`MemoryEventStore::put_undecodable`]), with why.
    undecodable: BTreeMap<(String, String), String>,
}

impl State {
    fn end(&self) -> usize {
        self.trimmed + self.stream.len()
    }

    /// Removes the event if it is this very one (not one written again
    /// with the same id after it expired).
    fn forget(&mut self, event: &Arc<Event>) {
        let key = (event.org_id.clone(), event.id.clone());
        if self
            .events
            .get(&key)
            .is_some_and(|kept| Arc::ptr_eq(kept, event))
        {
            self.events.remove(&key);
        }
    }

    /// Trims the stream's oldest records, and their events: those past the
    /// TTL, and (once read) those over the bound; at most `budget`.
    fn expire(&mut self, retention: &Retention, now: chrono::DateTime<chrono::Utc>, budget: usize) {
        for _ in 0..budget {
            let Some(oldest) = self.stream.front() else {
                return;
            };
            let expired = oldest.created_at + retention.ttl <= now;
            let over = retention.over(self.stream.len()) && self.trimmed < self.read;
            if !(expired || over) {
                return;
            }
            if let Some(oldest) = self.stream.pop_front() {
                self.trimmed += 1;
                self.forget(&oldest);
            }
        }
    }
}

impl MemoryEventStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` to expire events, and keeps them
    /// as `retention` says.
    pub fn with_retention(clock: Arc<dyn Clock>, retention: Retention) -> Arc<Self> {
        Arc::new(MemoryEventStore {
            state: Mutex::default(),
            appended: Notify::new(),
            clock: StoreClock::new(clock),
            retention,
        })
    }

    /// Stream records from position `from` (0-based index), at most
    /// `limit`. Records trimmed before they were read are skipped, as a
    /// DynamoDB stream's are after 24 hours.
    pub fn read_stream(&self, from: usize, limit: usize) -> Vec<StreamRecord> {
        let mut state = lock(&self.state);
        let start = from.max(state.trimmed);
        let records: Vec<StreamRecord> = state
            .stream
            .iter()
            .skip(start - state.trimmed)
            .take(limit)
            .zip(start..)
            .map(|(event, position)| StreamRecord {
                sequence_number: position as u64 + 1,
                event: Event::clone(event),
            })
            .collect();
        state.read = state.read.max(start + records.len());
        records
    }

    /// Waits until the stream holds more than `len` records or `timeout` ends.
    pub async fn wait_for_stream(&self, len: usize, timeout: Duration) {
        let notified = self.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if lock(&self.state).end() > len {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// How many events are stored.
    pub fn len(&self) -> usize {
        lock(&self.state).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes what has expired now, however much (tests; writes do a
    /// little of it each).
    pub fn expire(&self) {
        let now = self.clock.now();
        lock(&self.state).expire(&self.retention, now, usize::MAX);
    }

    /// Stores an item under `org_id` and `event_id` that cannot be read as
    /// an event, as a damaged item (or one a later version wrote) sits in
    /// the DynamoDB table: listed as [`Undecodable`], and a failed read for
    /// `get`. It is on no change stream.
    pub fn put_undecodable(&self, org_id: &str, event_id: &str, error: &str) {
        lock(&self.state).undecodable.insert(
            (org_id.to_string(), event_id.to_string()),
            error.to_string(),
        );
    }

    /// Removes an event whose finished deliveries are being removed (see
    /// [`crate::expiry`]); its stream record stays until it is trimmed.
    pub(crate) fn remove(&self, org_id: &str, event_id: &str) {
        lock(&self.state)
            .events
            .remove(&(org_id.to_string(), event_id.to_string()));
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        let key = (event.org_id.clone(), event.id.clone());
        let now = self.clock.now();
        {
            let mut state = lock(&self.state);
            if state.events.contains_key(&key) {
                return Ok(false);
            }
            let event = Arc::new(event.clone());
            state.events.insert(key, event.clone());
            state.stream.push_back(event);
            state.expire(&self.retention, now, EXPIRY_BUDGET);
        }
        self.appended.notify_waiters();
        Ok(true)
    }

    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        let state = lock(&self.state);
        let key = (org_id.to_string(), event_id.to_string());
        if let Some(error) = state.undecodable.get(&key) {
            return Err(BackendError::Permanent(format!(
                "stored event is malformed: {error}"
            )));
        }
        Ok(state.events.get(&key).map(|e| Event::clone(e)))
    }

    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>> {
        let state = lock(&self.state);
        let mut ids: Vec<&String> = event_ids.iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let key = (org_id.to_string(), id.clone());
            if let Some(error) = state.undecodable.get(&key) {
                found.push(Err(Undecodable {
                    event_id: id.clone(),
                    error: error.clone(),
                }));
            } else if let Some(e) = state.events.get(&key) {
                found.push(Ok(Event::clone(e)));
            }
        }
        Ok(found)
    }

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>> {
        let state = lock(&self.state);
        let start = (org_id.to_string(), after.to_string());
        let after_start = |(org, id): &(String, String)| org == org_id && id.as_str() > after;
        let events = state
            .events
            .range(start.clone()..)
            .take_while(|(key, _)| key.0 == org_id)
            .filter(|(key, _)| after_start(key))
            .take(limit)
            .map(|((_, id), e)| (id.clone(), Ok(Event::clone(e))));
        let undecodable = state
            .undecodable
            .range(start..)
            .take_while(|(key, _)| key.0 == org_id)
            .filter(|(key, _)| after_start(key))
            .take(limit)
            .map(|((_, id), error)| {
                let item = Undecodable {
                    event_id: id.clone(),
                    error: error.clone(),
                };
                (id.clone(), Err(item))
            });
        // Both in id order, merged.
        let mut merged: Vec<(String, Listed)> = events.chain(undecodable).collect();
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        merged.truncate(limit);
        Ok(merged.into_iter().map(|(_, l)| l).collect())
    }

    /// As DynamoDB's backward `Query` with `Limit` and a `FilterExpression`:
    /// the read stops after the budget or the 1 MB page (counting each
    /// event's stored bytes), whichever comes first, and says where.
    async fn log_page(&self, org_id: &str, query: &EventLogQuery) -> Result<Page<EventSummary>> {
        let Some(range) = query.id_range()? else {
            return Ok(query.page(Vec::new(), None));
        };
        let state = lock(&self.state);
        let from = (org_id.to_string(), range.low.clone());
        let to = (org_id.to_string(), range.high.clone());
        let budget = query.read_budget();
        let mut read = 0;
        let mut bytes = 0;
        let mut listed = Vec::new();
        let mut stopped_at = None;
        for ((_, id), event) in state.events.range(from..=to).rev() {
            read += 1;
            bytes += stored_bytes(event);
            if range.lists(id) && query.wants(event.event_type) {
                listed.push(EventSummary {
                    id: id.clone(),
                    event_type: event.event_type,
                    created_at: event.created_at,
                });
            }
            if read >= budget || bytes >= QUERY_PAGE_BYTES {
                stopped_at = Some(id.clone());
                break;
            }
        }
        Ok(query.page(listed, stopped_at))
    }
}

/// About the bytes of an event's item, as DynamoDB sizes reads: its data
/// and its other attributes.
fn stored_bytes(event: &Event) -> usize {
    const OTHER_ATTRIBUTES: usize = 200;
    event.data.get().len() + event.org_id.len() + OTHER_ATTRIBUTES
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

    fn log_query(event_type: Option<EventType>, limit: usize) -> EventLogQuery {
        EventLogQuery {
            event_type,
            since: None,
            until: None,
            limit,
            cursor: None,
        }
    }

    #[tokio::test]
    async fn a_filtered_log_page_reads_at_most_its_budget_and_says_where_it_stopped() {
        use webhooks_ports::event_log::TYPE_FILTER_READ_BUDGET;
        let store = MemoryEventStore::new();
        let mut rare = event("a");
        rare.event_type = EventType::LeadLost;
        store.put_if_absent(&rare).await.unwrap();
        for _ in 0..TYPE_FILTER_READ_BUDGET + 10 {
            store.put_if_absent(&event("a")).await.unwrap();
        }
        let mut query = log_query(Some(EventType::LeadLost), 50);
        let first = store.log_page("a", &query).await.unwrap();
        assert!(
            first.items.is_empty(),
            "the budget ends before the rare event"
        );
        query.cursor = first.next_cursor;
        assert!(query.cursor.is_some());
        let second = store.log_page("a", &query).await.unwrap();
        let ids: Vec<String> = second.items.into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [rare.id]);
        assert_eq!(second.next_cursor, None);
    }

    #[tokio::test]
    async fn a_log_page_stops_at_a_megabyte_of_events() {
        let store = MemoryEventStore::new();
        let data = format!(r#"{{"x":"{}"}}"#, "a".repeat(60 * 1024));
        for _ in 0..30 {
            let e = Event::new(
                "a",
                EventType::LeadWon,
                RawValue::from_string(data.clone()).unwrap(),
            );
            store.put_if_absent(&e).await.unwrap();
        }
        let mut query = log_query(None, 100);
        let first = store.log_page("a", &query).await.unwrap();
        assert!(
            (16..=18).contains(&first.items.len()),
            "{}",
            first.items.len()
        );
        query.cursor = first.next_cursor;
        let second = store.log_page("a", &query).await.unwrap();
        assert_eq!(first.items.len() + second.items.len(), 30);
        assert_eq!(second.next_cursor, None);
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
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(after, vec![later.id]);
    }
}
