//! What the memory backend lets go of, as the tables' TTL does, so a
//! long-running `webhooks dev` stays within bounded memory.
//!
//! Like DynamoDB, the stores keep an item until some time after its
//! `expires_at` (events 30 days after creation; deliveries 30 days after
//! their creation, their last move to pending or their last attempt
//! recorded while pending, whichever is latest; inbound records 90 days
//! after receipt, stats buckets 35 days after their hour, idempotency keys
//! when their claim runs out), reading the backend's
//! [`Clock`](webhooks_ports::Clock), so a simulation's virtual days expire
//! them too. Removal is lazy and cheap: each write pops a few entries off the
//! front of a first-in first-out queue (or, for pending deliveries, an
//! ordered set), never scanning a table; until then an expired item can
//! still be read, as in DynamoDB.
//!
//! A pending delivery expires like any other item, as DynamoDB's TTL removes
//! it: one still being retried never does, since each attempt and each move
//! to pending pushes its `expires_at` 30 days on.
//!
//! What DynamoDB does not have: [`Retention::max_kept`] also bounds how many
//! finished deliveries and events are kept (`webhooks dev` publishes a
//! million deliveries in minutes, far inside any TTL). The oldest finished
//! delivery goes first, and its event with it, as the TTL removes an event
//! and its deliveries together (so the sweeper never finds an event whose
//! deliveries are gone and makes them again).

use chrono::{DateTime, Duration, Utc};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::table_retention::RECORD_DAYS;

/// Most queue entries one write pops for the TTL: the removal work a write
/// pays for is bounded, and still outpaces the one entry it adds.
pub(crate) const EXPIRY_BUDGET: usize = 16;

/// How long events and finished deliveries are kept, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// From creation until an event or a finished delivery is removed.
    pub ttl: Duration,
    /// At most this many finished deliveries, and at most this many events,
    /// are kept; the oldest go first. `None`: no bound, as in DynamoDB.
    pub max_kept: Option<usize>,
}

impl Retention {
    /// `webhooks dev`'s bound on finished deliveries and events.
    pub const DEFAULT_MAX_KEPT: usize = 50_000;

    /// As the tables are deployed: the TTL, no bound on the count.
    pub fn as_deployed() -> Self {
        Retention {
            ttl: Duration::days(RECORD_DAYS),
            max_kept: None,
        }
    }

    /// The deployed TTL, and at most `max_kept` finished deliveries and
    /// events (`webhooks dev`).
    pub fn bounded(max_kept: usize) -> Self {
        Retention {
            max_kept: Some(max_kept),
            ..Self::as_deployed()
        }
    }

    /// Whether more than the bound are kept.
    pub(crate) fn over(&self, kept: usize) -> bool {
        self.max_kept.is_some_and(|max| kept > max)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::as_deployed()
    }
}

/// Keys in the order they were written, each with the time it expires:
/// popped from the front only. Entries out of time order (an item created
/// earlier but written later) wait behind the front, which is what makes
/// expiry lazy rather than exact.
#[derive(Debug)]
pub(crate) struct ExpiryQueue<K> {
    entries: VecDeque<(DateTime<Utc>, K)>,
}

impl<K> Default for ExpiryQueue<K> {
    fn default() -> Self {
        ExpiryQueue {
            entries: VecDeque::new(),
        }
    }
}

impl<K> ExpiryQueue<K> {
    pub fn push(&mut self, expires: DateTime<Utc>, key: K) {
        self.entries.push_back((expires, key));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The oldest entry, if it has expired by `now`.
    pub fn pop_expired(&mut self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, K)> {
        if self.entries.front().is_some_and(|(at, _)| *at <= now) {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// The oldest entry, expired or not.
    pub fn pop_oldest(&mut self) -> Option<(DateTime<Utc>, K)> {
        self.entries.pop_front()
    }
}

/// Pops what has expired by `now`, at most `budget` entries, handing each
/// to `remove`.
pub(crate) fn expire<K>(
    queue: &mut ExpiryQueue<K>,
    now: DateTime<Utc>,
    budget: usize,
    mut remove: impl FnMut(DateTime<Utc>, K),
) {
    for _ in 0..budget {
        match queue.pop_expired(now) {
            Some((at, key)) => remove(at, key),
            None => break,
        }
    }
}

/// A delivery's key in the deliveries table: (endpoint, event).
pub(crate) type DeliveryKey = (String, String);

/// What leaves the deliveries table at once: the pending deliveries the TTL
/// removed (their entries in the pending index go with them), and the
/// (org, event) of the deliveries removed for the bound on the count, whose
/// events go with them.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub pending: Vec<Delivery>,
    pub events: Vec<(String, String)>,
}

/// When each delivery expires, as DynamoDB's TTL reads its `expires_at`:
/// set at its creation and moved on by every move to pending and every
/// attempt recorded while it stays pending (see the deliveries store). The
/// TTL removes a delivery pending or not, as DynamoDB's does.
#[derive(Default)]
pub(crate) struct DeliveryExpiry {
    /// Each delivery's `expires_at`, and whether `pending` holds it.
    /// (FxHash: the ids are the system's own, and SipHash was the cost of
    /// every write here.)
    expires: FxHashMap<DeliveryKey, Expiry>,
    /// The pending deliveries by when they expire: exact, and small (few
    /// deliveries are pending at once).
    pending: BTreeSet<(DateTime<Utc>, DeliveryKey)>,
    /// The finished deliveries, in the order they finished. A delivery
    /// retried by hand after it finished is pending again: its entry is
    /// passed over, and it gets a new one when it finishes again.
    finished: ExpiryQueue<DeliveryKey>,
}

/// A delivery's `expires_at`, and whether it is in the pending set: a
/// delivery never pending (nearly all of them: created delivered) is then
/// not looked for there, which took a copy of its key each time.
#[derive(Clone, Copy)]
struct Expiry {
    at: DateTime<Utc>,
    pending: bool,
}

impl DeliveryExpiry {
    /// Notes `key`'s delivery's new `expires_at`, and whether it is pending.
    pub fn set(&mut self, key: &DeliveryKey, expires: DateTime<Utc>, pending: bool) {
        let new = Expiry {
            at: expires,
            pending,
        };
        if let Some(old) = self.expires.insert(key.clone(), new) {
            if old.pending {
                self.pending.remove(&(old.at, key.clone()));
            }
        }
        if pending {
            self.pending.insert((expires, key.clone()));
        }
    }

    /// Notes that `key`'s delivery has just finished (its `expires_at` as it
    /// was), then removes from `deliveries` what is past its time or over
    /// `retention`'s bound by `now`.
    pub fn finished(
        &mut self,
        deliveries: &mut BTreeMap<DeliveryKey, Delivery>,
        key: &DeliveryKey,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Removed {
        if let Some(e) = self.expires.get_mut(key) {
            if e.pending {
                e.pending = false;
                self.pending.remove(&(e.at, key.clone()));
            }
            self.finished.push(e.at, key.clone());
        }
        self.expire(deliveries, retention, now, EXPIRY_BUDGET)
    }

    /// Removes from `deliveries` those past their `expires_at` (at most
    /// `budget` looked at of the pending, and of the finished) and the
    /// finished ones over the bound, oldest first.
    pub fn expire(
        &mut self,
        deliveries: &mut BTreeMap<DeliveryKey, Delivery>,
        retention: &Retention,
        now: DateTime<Utc>,
        budget: usize,
    ) -> Removed {
        let mut removed = Removed::default();
        for _ in 0..budget {
            let Some(first) = self.pending.first().filter(|(at, _)| *at <= now).cloned() else {
                break;
            };
            self.pending.remove(&first);
            let (_, key) = first;
            self.expires.remove(&key);
            if let Some(d) = deliveries.remove(&key) {
                removed.pending.push(d);
            }
        }
        let expires = &mut self.expires;
        expire(&mut self.finished, now, budget, |_, key| {
            let finished = deliveries
                .get(&key)
                .is_some_and(|d| d.status != DeliveryStatus::Pending);
            if finished && expires.get(&key).is_some_and(|e| e.at <= now) {
                deliveries.remove(&key);
                expires.remove(&key);
            }
        });
        while retention.over(self.finished.len()) {
            let Some((_, key)) = self.finished.pop_oldest() else {
                break;
            };
            let finished = deliveries
                .get(&key)
                .is_some_and(|d| d.status != DeliveryStatus::Pending);
            if finished {
                if let Some(d) = deliveries.remove(&key) {
                    self.expires.remove(&key);
                    removed.events.push((d.org_id, d.event_id));
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_pops_only_what_has_expired_from_its_front() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let mut q = ExpiryQueue::default();
        q.push(t0 + Duration::seconds(10), "a");
        q.push(t0 + Duration::seconds(5), "b");
        q.push(t0 + Duration::seconds(20), "c");
        let mut gone = Vec::new();
        expire(&mut q, t0 + Duration::seconds(9), 10, |_, k| gone.push(k));
        // "b" has expired, but waits behind "a".
        assert!(gone.is_empty());
        expire(&mut q, t0 + Duration::seconds(10), 10, |_, k| gone.push(k));
        assert_eq!(gone, ["a", "b"]);
        assert_eq!(q.len(), 1);
        expire(&mut q, t0 + Duration::seconds(30), 0, |_, k| gone.push(k));
        assert_eq!(q.len(), 1, "a budget of nothing removes nothing");
    }

    #[test]
    fn deployed_retention_has_no_bound() {
        assert!(!Retention::as_deployed().over(usize::MAX));
        assert!(Retention::bounded(2).over(3));
        assert!(!Retention::bounded(2).over(2));
        assert_eq!(Retention::default().ttl, Duration::days(30));
    }
}

/// The memory backend as a whole: what expires, when, and what never does.
#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::MemoryBackend;
    use serde_json::value::RawValue;
    use std::sync::{Arc, Mutex};
    use webhooks_domain::ids::new_id;
    use webhooks_domain::{Attempt, Event, EventType};
    use webhooks_ports::{AttemptUpdate, Clock, DeliveryStore, EventStore, IdempotencyStore};

    /// A clock the test moves.
    struct TestClock(Mutex<DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    impl TestClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    fn backend(retention: Retention) -> (MemoryBackend, Arc<TestClock>) {
        let start = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Arc::new(TestClock(Mutex::new(start)));
        let backend = MemoryBackend::with_retention(
            std::time::Duration::from_secs(30),
            clock.clone(),
            retention,
        );
        (backend, clock)
    }

    /// An event written now, and a pending delivery of it to a new endpoint.
    async fn published(m: &MemoryBackend, endpoint: &str) -> (Event, Delivery) {
        let now = m.clock.now();
        let mut event = Event::new(
            "org",
            EventType::LeadWon,
            RawValue::from_string("{}".into()).unwrap(),
        );
        event.created_at = now;
        m.events.put_if_absent(&event).await.unwrap();
        let d = Delivery::new_at("org", endpoint, &event.id, event.event_type, now);
        assert_eq!(m.deliveries.create_if_absent(&d).await.unwrap(), None);
        (event, d)
    }

    /// Records a successful first attempt: the delivery is finished.
    async fn deliver(m: &MemoryBackend, d: &Delivery) {
        let update = AttemptUpdate {
            attempt: Attempt {
                number: 1,
                at: m.clock.now(),
                status_code: Some(204),
                error: None,
                latency_ms: 3,
                response_body: None,
            },
            status: DeliveryStatus::Delivered,
            next_attempt_at: None,
            last_error: None,
            unleased_by: None,
        };
        assert!(m.deliveries.record_attempt(&d.id, &update).await.unwrap());
    }

    async fn exists(m: &MemoryBackend, d: &Delivery) -> bool {
        m.deliveries.get(&d.id).await.unwrap().is_some()
    }

    async fn listed(m: &MemoryBackend, endpoint: &str) -> Vec<String> {
        m.deliveries
            .list_for_endpoint(endpoint, None, 100, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|d| d.id)
            .collect()
    }

    #[tokio::test]
    async fn deliveries_and_events_expire_after_the_ttl_by_the_clock() {
        let (m, clock) = backend(Retention::as_deployed());
        let ep = new_id("ep");
        let (event, done) = published(&m, &ep).await;
        let (_, waiting) = published(&m, &ep).await;
        deliver(&m, &done).await;

        clock.advance(Duration::days(29));
        m.expire();
        assert!(exists(&m, &done).await, "kept until the TTL");
        assert!(m.events.get("org", &event.id).await.unwrap().is_some());

        clock.advance(Duration::days(1));
        m.expire();
        // Gone as DynamoDB's TTL deletes them: not read, not listed. A
        // pending delivery too, when nothing moved its time on.
        assert!(!exists(&m, &done).await);
        assert!(!exists(&m, &waiting).await);
        assert!(m.events.get("org", &event.id).await.unwrap().is_none());
        assert!(listed(&m, &ep).await.is_empty());
        assert!(m
            .deliveries
            .get_many(&[done.id.clone(), waiting.id.clone()])
            .await
            .unwrap()
            .is_empty());
        assert!(m
            .events
            .list_after("org", "", 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.as_ref().is_ok_and(|e| e.id != event.id)));
        assert_eq!(m.deliveries.len(), 0);
    }

    /// A failed attempt that schedules a retry: the delivery stays pending.
    async fn retry_later(m: &MemoryBackend, d: &Delivery, number: u32) {
        let now = m.clock.now();
        let update = AttemptUpdate {
            attempt: Attempt {
                number,
                at: now,
                status_code: Some(503),
                error: None,
                latency_ms: 3,
                response_body: None,
            },
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(now + Duration::hours(1)),
            last_error: Some("HTTP 503".into()),
            unleased_by: None,
        };
        assert!(m.deliveries.record_attempt(&d.id, &update).await.unwrap());
    }

    #[tokio::test]
    async fn a_move_to_pending_and_an_attempt_while_pending_renew_the_ttl() {
        let (m, clock) = backend(Retention::as_deployed());
        let ep = new_id("ep");
        let (_, retried) = published(&m, &ep).await;
        let (_, retrying) = published(&m, &ep).await;
        // Dead-lettered at once, then retried by hand on day 29.
        m.deliveries
            .transition(
                &retried.id,
                &[DeliveryStatus::Pending],
                DeliveryStatus::DeadLettered,
            )
            .await
            .unwrap();
        retry_later(&m, &retrying, 1).await;
        clock.advance(Duration::days(29));
        m.deliveries
            .transition(
                &retried.id,
                &[DeliveryStatus::DeadLettered],
                DeliveryStatus::Pending,
            )
            .await
            .unwrap()
            .expect("pending again");
        retry_later(&m, &retrying, 2).await;
        clock.advance(Duration::days(2));
        m.expire();
        for d in [&retried, &retrying] {
            assert!(exists(&m, d).await, "expired while being retried");
        }
        assert_eq!(
            m.deliveries
                .get(&retrying.id)
                .await
                .unwrap()
                .unwrap()
                .attempt_count,
            2
        );
        let org_due = |m: MemoryBackend| async move {
            m.deliveries
                .overdue("org", m.clock.now(), 10, None)
                .await
                .unwrap()
        };
        assert_eq!(org_due(m.clone()).await.items.len(), 2);
        // Thirty days after the last of it, both go, out of the index too.
        clock.advance(Duration::days(28));
        m.expire();
        assert!(!exists(&m, &retried).await);
        assert!(!exists(&m, &retrying).await);
        assert!(org_due(m.clone()).await.items.is_empty());
    }

    #[tokio::test]
    async fn writes_expire_as_they_go_without_a_sweep() {
        let (m, clock) = backend(Retention::as_deployed());
        let ep = new_id("ep");
        let (_, old) = published(&m, &ep).await;
        deliver(&m, &old).await;
        m.idempotency
            .claim("k", "old", std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        clock.advance(Duration::days(31));
        // Only writes: a new event, a delivery finishing, a claim.
        let (_, new) = published(&m, &ep).await;
        deliver(&m, &new).await;
        m.idempotency
            .claim("other", "v", std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(!exists(&m, &old).await);
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.idempotency.len(), 1, "the expired key is gone");
        // The stream starts at what is kept, its numbering unchanged.
        let stream = m.events.read_stream(0, 10);
        assert_eq!(stream.len(), 1);
        assert_eq!(stream[0].sequence_number, 2);
    }

    #[tokio::test]
    async fn a_bound_keeps_the_last_finished_deliveries_and_never_a_pending_one() {
        let (m, _clock) = backend(Retention::bounded(3));
        let ep = new_id("ep");
        let mut all = Vec::new();
        for _ in 0..10 {
            all.push(published(&m, &ep).await);
        }
        // Ten pending: none goes, whatever the bound.
        assert_eq!(m.deliveries.len(), 10);
        m.events.read_stream(0, usize::MAX);
        for (_, d) in &all[..6] {
            deliver(&m, d).await;
        }
        // The last three finished are kept, and the four pending.
        assert_eq!(m.deliveries.len(), 7);
        for (i, (event, d)) in all.iter().enumerate() {
            let kept = i >= 3;
            assert_eq!(exists(&m, d).await, kept, "delivery {i}");
            if !kept {
                // Its event went with it, so the sweeper cannot make it again.
                assert!(m.events.get("org", &event.id).await.unwrap().is_none());
            }
        }
        assert_eq!(listed(&m, &ep).await.len(), 7);
        // A removed delivery's pair can be written again, as after a TTL
        // deletion; a kept one still refuses a duplicate.
        let (_, first) = &all[0];
        assert_eq!(m.deliveries.create_if_absent(first).await.unwrap(), None);
        let (_, kept) = &all[5];
        assert!(m.deliveries.create_if_absent(kept).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_delivery_retried_by_hand_is_pending_and_kept() {
        let (m, _clock) = backend(Retention::bounded(1));
        let ep = new_id("ep");
        let (_, retried) = published(&m, &ep).await;
        m.deliveries
            .transition(
                &retried.id,
                &[DeliveryStatus::Pending],
                DeliveryStatus::DeadLettered,
            )
            .await
            .unwrap();
        m.deliveries
            .transition(
                &retried.id,
                &[DeliveryStatus::DeadLettered],
                DeliveryStatus::Pending,
            )
            .await
            .unwrap();
        for _ in 0..3 {
            let (_, d) = published(&m, &ep).await;
            deliver(&m, &d).await;
        }
        assert!(exists(&m, &retried).await, "pending again, so kept");
        assert_eq!(m.deliveries.len(), 2);
    }

    #[tokio::test]
    async fn the_bound_on_events_waits_for_the_stream_to_be_read() {
        let (m, _clock) = backend(Retention::bounded(2));
        for _ in 0..5 {
            published(&m, &new_id("ep")).await;
        }
        // Unread: the fan-out has not seen them, so all are kept.
        assert_eq!(m.events.len(), 5);
        let read = m.events.read_stream(0, usize::MAX);
        assert_eq!(read.len(), 5);
        published(&m, &new_id("ep")).await;
        assert_eq!(m.events.len(), 2);
        let rest = m.events.read_stream(5, 10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].sequence_number, 6);
    }
}
