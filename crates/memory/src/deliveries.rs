//! The deliveries table: one delivery per (endpoint, event).

use crate::clock::StoreClock;
use crate::events::MemoryEventStore;
use crate::expiry::{DeliveryExpiry, DeliveryKey, Removed, Retention};
use crate::index_lag::{IndexLag, LagSeen, LaggingIndex};
use crate::queued::Notes;
use crate::read_lag::LaggingReads;
use crate::sync::lock;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{
    cursor, AttemptUpdate, BackendError, Clock, DeliveryStore, Lease, NotesPage, Page, Result,
    DELIVERIES_EXAMINED_PER_PAGE,
};

/// DynamoDB's item size limit; a write that would make a bigger item is
/// refused, as DynamoDB refuses it.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// A close upper estimate of a delivery's DynamoDB item size: attribute
/// names and values as UTF-8, plus a few bytes per attribute.
pub fn item_size(d: &Delivery) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let fixed = d.id.len()
        + d.org_id.len()
        + d.endpoint_id.len()
        + d.event_id.len()
        + d.event_type.as_str().len()
        + d.status.as_str().len()
        + opt(&d.last_error)
        + opt(&d.chain)
        + 4 * 32
        + 200;
    let attempts: usize = d
        .attempts
        .iter()
        .map(|a| 120 + opt(&a.error) + opt(&a.response_body))
        .sum();
    fixed + attempts
}

fn refuse_oversized(d: &Delivery) -> Result<()> {
    let size = item_size(d);
    if size > MAX_ITEM_BYTES {
        return Err(BackendError::Permanent(format!(
            "ValidationException: item size {size} has exceeded the maximum allowed size of {MAX_ITEM_BYTES}"
        )));
    }
    Ok(())
}

/// Deliveries keyed by (endpoint, event), like the DynamoDB table.
#[derive(Default)]
pub struct MemoryDeliveryStore {
    deliveries: Mutex<BTreeMap<(String, String), Delivery>>,
    /// The sparse index the reconciler reads, like DynamoDB's
    /// pending-by-org: (org, next attempt, id) of every pending delivery
    /// with a retry scheduled.
    /// Locked after `deliveries`, never before.
    pending: Mutex<BTreeSet<PendingKey>>,
    clock: StoreClock,
    /// What expires, and when (see [`crate::expiry`]); locked after
    /// `deliveries`, never with `pending`.
    expiry: Mutex<DeliveryExpiry>,
    retention: Retention,
    /// Where the events of deliveries removed for the bound go too.
    events: Option<Arc<MemoryEventStore>>,
    /// The index as DynamoDB's eventually consistent queries see it, when
    /// modelled ([`MemoryDeliveryStore::lag_index`]); locked after
    /// `pending`.
    lagging: Mutex<Option<LaggingIndex>>,
    /// What eventually consistent reads do not see yet, when modelled
    /// ([`MemoryDeliveryStore::lag_reads`]); locked after `deliveries`.
    lagging_reads: Mutex<Option<LaggingReads>>,
    /// The stream fan-out's notes of queued deliveries.
    notes: Mutex<Notes>,
}

type PendingKey = (String, DateTime<Utc>, String);

/// A delivery's entry in the pending index, if it has one.
fn pending_key(d: &Delivery) -> Option<PendingKey> {
    (d.status == DeliveryStatus::Pending)
        .then_some(d.next_attempt_at)
        .flatten()
        .map(|at| (d.org_id.clone(), at, d.id.clone()))
}

/// The lease's condition, which a long deferral's note shares: pending,
/// with `attempts_made` attempts, no live lease at `now`, and its chain
/// free, `chain`'s, or lost (due before `stale_before`).
fn leasable(
    d: &Delivery,
    attempts_made: u32,
    chain: &str,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> bool {
    let owner_ok = match &d.chain {
        None => true,
        Some(c) if c == chain => true,
        Some(_) => d.due_at() < stale_before,
    };
    d.status == DeliveryStatus::Pending
        && d.attempt_count == attempts_made
        && d.lease_until.is_none_or(|t| t < now)
        && owner_ok
}

impl MemoryDeliveryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty store that reads `clock` for the times it writes.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<Self> {
        Self::with_retention(clock, Retention::as_deployed(), None)
    }

    /// An empty store that reads `clock`, keeps finished deliveries as
    /// `retention` says, and removes from `events` the event of each
    /// delivery removed for the bound on the count.
    pub fn with_retention(
        clock: Arc<dyn Clock>,
        retention: Retention,
        events: Option<Arc<MemoryEventStore>>,
    ) -> Arc<Self> {
        Arc::new(MemoryDeliveryStore {
            deliveries: Mutex::default(),
            pending: Mutex::default(),
            clock: StoreClock::new(clock),
            expiry: Mutex::default(),
            retention,
            events,
            lagging: Mutex::default(),
            lagging_reads: Mutex::default(),
            notes: Mutex::default(),
        })
    }

    /// From now on, `overdue` reads the index as DynamoDB's queries of a
    /// global secondary index do: behind the table by `lag` (see
    /// [`crate::index_lag`]). Set before the first write.
    pub fn lag_index(&self, lag: IndexLag) {
        *lock(&self.lagging) = Some(LaggingIndex::new(lag));
    }

    /// From now on, `get_many_eventually` reads as DynamoDB's eventually
    /// consistent reads may: a record created less than its drawn `lag`
    /// ago is left out (see [`crate::read_lag`]). Set before the first
    /// write.
    pub fn lag_reads(&self, lag: IndexLag) {
        *lock(&self.lagging_reads) = Some(LaggingReads::new(lag));
    }

    /// The records of `delivery_ids` that exist; `eventually`: as an
    /// eventually consistent read sees them (without those its lag hides,
    /// when modelled).
    fn read_many(&self, delivery_ids: &[String], eventually: bool) -> Vec<Delivery> {
        let ds = lock(&self.deliveries);
        // The strong read takes neither the lag's lock nor the clock.
        let mut lagging = eventually.then(|| (lock(&self.lagging_reads), self.clock.now()));
        delivery_ids
            .iter()
            .filter(|id| match lagging.as_mut() {
                Some((reads, now)) => reads.as_mut().is_none_or(|r| !r.hides(id, *now)),
                None => true,
            })
            .filter_map(|id| key_of(id).and_then(|k| ds.get(&k).cloned()))
            .collect()
    }

    /// What `overdue` showed since the last call that the table did not
    /// say (nothing unless the index lags).
    pub fn take_index_lag_seen(&self) -> LagSeen {
        lock(&self.lagging)
            .as_mut()
            .map(LaggingIndex::take_seen)
            .unwrap_or_default()
    }

    /// Notes a delivery that has just finished, and removes what is past
    /// its retention (see [`crate::expiry`]).
    fn retire(&self, ds: &mut BTreeMap<DeliveryKey, Delivery>, key: &DeliveryKey) {
        let now = self.clock.now();
        let gone = lock(&self.expiry).finished(ds, key, &self.retention, now);
        self.forget(gone);
    }

    /// Notes a pending delivery's `expires_at`, `retention`'s TTL from `from`
    /// (its creation, its move to pending, its last attempt), and removes
    /// what has expired (see [`crate::expiry`]).
    fn keep_pending(
        &self,
        ds: &mut BTreeMap<DeliveryKey, Delivery>,
        key: &DeliveryKey,
        from: DateTime<Utc>,
    ) {
        let now = self.clock.now();
        let mut expiry = lock(&self.expiry);
        expiry.set(key, from + self.retention.ttl, true);
        let gone = expiry.expire(ds, &self.retention, now, crate::expiry::EXPIRY_BUDGET);
        drop(expiry);
        self.forget(gone);
    }

    /// Takes what expiry removed out of the pending index, and the events
    /// of deliveries removed for the bound out of the events.
    fn forget(&self, gone: Removed) {
        if !gone.pending.is_empty() {
            let mut pending = lock(&self.pending);
            for key in gone.pending.iter().filter_map(pending_key) {
                pending.remove(&key);
            }
        }
        if let Some(events) = &self.events {
            for (org, event) in gone.events {
                events.remove(&org, &event);
            }
        }
    }

    /// Removes what has expired now, however much (tests; each write does a
    /// little of it).
    pub fn expire(&self) {
        let now = self.clock.now();
        let mut ds = lock(&self.deliveries);
        let gone = lock(&self.expiry).expire(&mut ds, &self.retention, now, usize::MAX);
        self.forget(gone);
    }

    /// Every delivery, for tests and benchmarks.
    pub fn all(&self) -> Vec<Delivery> {
        lock(&self.deliveries).values().cloned().collect()
    }

    /// Moves a delivery's pending-index entry from `old` to its own.
    fn reindex(&self, old: Option<PendingKey>, now: &Delivery) {
        let new = pending_key(now);
        if old != new {
            let mut pending = lock(&self.pending);
            if let Some(old) = &old {
                pending.remove(old);
            }
            if let Some(new) = &new {
                pending.insert(new.clone());
            }
            if let Some(lagging) = lock(&self.lagging).as_mut() {
                lagging.write(&now.id, old, new, self.clock.now());
            }
        }
    }

    /// The ids of `org_id`'s pending deliveries with a retry due before
    /// `before`, as the table has them (not as a lagging index read would):
    /// what a simulation inspects as it runs.
    pub fn due_before(&self, org_id: &str, before: DateTime<Utc>) -> Vec<String> {
        let from = (org_id.to_string(), DateTime::<Utc>::MIN_UTC, String::new());
        let to = (org_id.to_string(), before, String::new());
        if from >= to {
            return Vec::new();
        }
        lock(&self.pending)
            .range(from..to)
            .map(|(_, _, id)| id.clone())
            .collect()
    }

    /// How many deliveries there are.
    pub fn len(&self) -> usize {
        lock(&self.deliveries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The (id, org) of every delivery with this status, without copying
    /// the deliveries: what a simulation inspects as it runs.
    pub fn ids_with_status(&self, status: DeliveryStatus) -> Vec<(String, String)> {
        lock(&self.deliveries)
            .values()
            .filter(|d| d.status == status)
            .map(|d| (d.id.clone(), d.org_id.clone()))
            .collect()
    }

    /// The pending deliveries' ids, each with when it is due (its next
    /// attempt, or its creation when never attempted).
    pub fn pending_due(&self) -> Vec<(String, DateTime<Utc>)> {
        lock(&self.deliveries)
            .values()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .map(|d| (d.id.clone(), d.due_at()))
            .collect()
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
        let mut ds = lock(&self.deliveries);
        // One search of the table, whether the record is there or not.
        let key = match ds.entry((delivery.endpoint_id.clone(), delivery.event_id.clone())) {
            Entry::Occupied(existing) => return Ok(Some(existing.get().clone())),
            Entry::Vacant(slot) => {
                refuse_oversized(delivery)?;
                let key = slot.key().clone();
                slot.insert(delivery.clone());
                key
            }
        };
        if let Some(reads) = lock(&self.lagging_reads).as_mut() {
            reads.created(&delivery.id, self.clock.now());
        }
        self.reindex(None, delivery);
        if delivery.status == DeliveryStatus::Pending {
            // Created by its first attempt (a delivery the stream noted),
            // its time to live starts at that attempt, as a record's would.
            let from = delivery.created_at.max(delivery.updated_at);
            self.keep_pending(&mut ds, &key, from);
        } else {
            lock(&self.expiry).set(&key, delivery.created_at + self.retention.ttl, false);
            self.retire(&mut ds, &key);
        }
        Ok(None)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(None);
        };
        Ok(lock(&self.deliveries).get(&key).cloned())
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        Ok(self.read_many(delivery_ids, false))
    }

    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        Ok(self.read_many(delivery_ids, true))
    }

    async fn lease(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Lease> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(Lease::Refused(None));
        };
        let mut ds = lock(&self.deliveries);
        let Some(d) = ds.get_mut(&key) else {
            return Ok(Lease::Refused(None));
        };
        if leasable(d, attempts_made, chain, now, stale_before) {
            d.chain = Some(chain.to_string());
            d.lease_until = Some(until);
            Ok(Lease::Granted(d.clone()))
        } else {
            Ok(Lease::Refused(Some(d.clone())))
        }
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(false);
        };
        let mut ds = lock(&self.deliveries);
        // Made without a lease: by the chain's own message, and recorded
        // on a delivery canceled meanwhile as such.
        let canceled_meanwhile =
            update.unleased_by.is_some() && update.status == DeliveryStatus::Canceled;
        let from = if canceled_meanwhile {
            DeliveryStatus::Canceled
        } else {
            DeliveryStatus::Pending
        };
        match ds.get_mut(&key) {
            Some(d)
                if d.status == from
                    && update.attempt.number.checked_sub(1) == Some(d.attempt_count)
                    && update
                        .unleased_by
                        .as_ref()
                        .is_none_or(|by| d.chain.as_ref() == Some(by)) =>
            {
                let next = update.apply(d);
                refuse_oversized(&next)?;
                let old = pending_key(d);
                *d = next;
                self.reindex(old, d);
                if d.status == DeliveryStatus::Pending {
                    // Still being retried: its time to live starts again.
                    self.keep_pending(&mut ds, &key, update.attempt.at);
                } else {
                    self.retire(&mut ds, &key);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(false);
        };
        let mut ds = lock(&self.deliveries);
        match ds.get_mut(&key) {
            Some(d)
                if d.status == DeliveryStatus::Pending
                    && d.attempt_count == 0
                    && d.chain.as_deref() == Some(from)
                    && d.lease_until.is_none_or(|t| t < now) =>
            {
                d.chain = Some(to.to_string());
                d.lease_until = Some(until);
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
        let now = self.clock.now();
        match ds.get_mut(&key) {
            Some(d) if from.contains(&d.status) => {
                // A live lease is an attempt under way: it stays with its
                // delivery, which it may record on.
                let leased = d.lease_until.is_some_and(|t| t >= now);
                if leased && d.status == DeliveryStatus::Pending && to != DeliveryStatus::Pending {
                    return Ok(None);
                }
                let old = pending_key(d);
                d.status = to;
                d.updated_at = now;
                d.next_attempt_at = (to == DeliveryStatus::Pending).then_some(now);
                if to == DeliveryStatus::Pending && !leased {
                    d.chain = None;
                    d.lease_until = None;
                }
                self.reindex(old, d);
                let after = d.clone();
                if to == DeliveryStatus::Pending {
                    self.keep_pending(&mut ds, &key, now);
                } else {
                    self.retire(&mut ds, &key);
                }
                Ok(Some(after))
            }
            _ => Ok(None),
        }
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        // After the cursor's key, or from the org's first.
        let (start, excluded) = match cursor {
            Some(c) => {
                let (at, id) = cursor::decode_pair(c)?;
                let at = DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| BackendError::InvalidCursor)?
                    .with_timezone(&Utc);
                ((org_id.to_string(), at, id), true)
            }
            None => (
                (org_id.to_string(), DateTime::<Utc>::MIN_UTC, String::new()),
                false,
            ),
        };
        let end = (org_id.to_string(), before, String::new());
        if start >= end {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let from = if excluded {
            Bound::Excluded(start)
        } else {
            Bound::Included(start)
        };
        let to = Bound::Excluded(end);
        let keys: Vec<PendingKey> = {
            let pending = lock(&self.pending);
            match lock(&self.lagging).as_mut() {
                // The index as a query sees it, behind its table.
                Some(lagging) => {
                    lagging.query_keys((from, to), limit + 1, &pending, self.clock.now())
                }
                None => pending.range((from, to)).take(limit + 1).cloned().collect(),
            }
        };
        let page = Page::from_overfetch(keys, limit, |(_, _, id)| id);
        // The cursor holds the last key's place: its time and its id.
        let next_cursor = page.next_cursor.and(page.items.last()).map(|(_, at, id)| {
            cursor::encode_pair(&at.to_rfc3339_opts(SecondsFormat::Nanos, true), id)
        });
        Ok(Page {
            items: page.items.into_iter().map(|(_, _, id)| id).collect(),
            next_cursor,
        })
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(false);
        };
        let mut ds = lock(&self.deliveries);
        match ds.get_mut(&key) {
            Some(d)
                if d.status == DeliveryStatus::Pending
                    && d.attempt_count == attempts_made
                    && d.lease_until.is_none_or(|t| t < now)
                    && d.due_at() < stale_before =>
            {
                let old = pending_key(d);
                d.next_attempt_at = Some(now);
                d.chain = None;
                self.reindex(old, d);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn postpone(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key_of(delivery_id) else {
            return Ok(false);
        };
        let mut ds = lock(&self.deliveries);
        let Some(d) = ds.get_mut(&key) else {
            return Ok(false);
        };
        if leasable(d, attempts_made, chain, now, stale_before) {
            let old = pending_key(d);
            d.chain = Some(chain.to_string());
            d.next_attempt_at = Some(until);
            self.reindex(old, d);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn note_queued(&self, note: &QueuedNote) -> Result<bool> {
        lock(&self.notes).write(note, &self.retention, self.clock.now())
    }

    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>> {
        Ok(lock(&self.notes).noted(org_id, delivery_ids, &self.retention, self.clock.now()))
    }

    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        lock(&self.notes).confirm(
            org_id,
            key,
            contested,
            at,
            &self.retention,
            self.clock.now(),
        )
    }

    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>> {
        Ok(lock(&self.notes).get(keys, &self.retention, self.clock.now()))
    }

    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage> {
        Ok(lock(&self.notes).between(org_id, from, to, limit, &self.retention, self.clock.now()))
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
        // As DynamoDB's adapter: at most the budget examined, matching or not.
        let budget = DELIVERIES_EXAMINED_PER_PAGE.max(limit + 1);
        let mut items: Vec<Delivery> = Vec::new();
        let mut last_examined: Option<&str> = None;
        let mut newest_first = ds.range(lower..upper).rev().map(|(_, d)| d).peekable();
        for (examined, d) in (1..).zip(newest_first.by_ref()) {
            last_examined = Some(d.event_id.as_str());
            if status.is_none_or(|s| d.status == s) {
                items.push(d.clone());
            }
            if items.len() > limit || examined >= budget {
                break;
            }
        }
        // The end of the partition: nothing to carry on from.
        if newest_first.peek().is_none() {
            last_examined = None;
        }
        Ok(Page::from_examined(
            items,
            limit,
            |d| &d.event_id,
            last_examined,
        ))
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
