//! The ports as each Lambda of the simulation sees them, between the chaos
//! layer and the memory adapters: they keep times as DynamoDB keeps them
//! (the AWS adapter writes whole seconds, and a lease's end in
//! milliseconds), and they note what the pipeline did that the simulation
//! checks or counts: each attempt recorded and the retry it scheduled (in
//! the [`Ledger`]), a delivery adopted, a lease taken over, a message
//! renewed (in the [`Coverage`]). Nothing here changes what a call does
//! beyond the rounding.
//!
//! The sweeper's calls take time, as DynamoDB's and SQS's do from a
//! Lambda ([`STORE_LATENCY_MS`]): a pass over many orgs runs against its
//! time limit.
//!
//! They also hold the fan-out to what it must not do: queue a message for
//! a delivery that is finished, or for one it has just read pending and
//! never attempted (its message is on the queue, or on its way: a second
//! one only doubles the backlog). Each invocation's reads are its own
//! ([`one_invocation`]).

use crate::check::Violations;
use crate::coverage::{Coverage, Path};
use crate::ledger::{Ledger, Recorded};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::{Delivery, DeliveryStatus, Event};
use webhooks_ports::{
    Adapters, AttemptUpdate, CursorStore, DeliveryStore, EventLogQuery, EventStore, EventSummary,
    Lease, Listed, NotesPage, Page, Queue, QueueMessage, ReceivedMessage, Result,
};

tokio::task_local! {
    /// The deliveries one invocation read: id -> never attempted and
    /// pending when read.
    static READ: Arc<Mutex<HashMap<String, bool>>>;
}

/// Runs `work` as one invocation, whose reads the taps keep apart from
/// the others'.
pub async fn one_invocation<F: Future>(work: F) -> F::Output {
    READ.scope(Arc::default(), work).await
}

/// Notes what this invocation read.
fn remember(found: &[Delivery]) {
    let _ = READ.try_with(|read| {
        let mut read = read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in found {
            let waiting = d.status == DeliveryStatus::Pending
                && d.attempt_count == 0
                && d.next_attempt_at.is_none();
            read.insert(d.id.clone(), waiting);
        }
    });
}

/// Notes the deliveries this invocation found noted (no record, queued
/// by the stream's fan-out): waiting, as a never-attempted record is.
fn remember_noted(noted: &[String]) {
    let _ = READ.try_with(|read| {
        let mut read = read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in noted {
            read.entry(id.clone()).or_insert(true);
        }
    });
}

/// Whether this invocation read `id` pending and never attempted.
fn read_waiting(id: &str) -> bool {
    READ.try_with(|read| {
        read.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
            .unwrap_or(false)
    })
    .unwrap_or(false)
}

/// Which Lambda a set of taps serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    FanOut,
    Sender,
    Sweeper,
    Api,
}

/// A time as DynamoDB holds it: the AWS adapter writes RFC 3339 in whole
/// seconds.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A lease's end as the AWS adapter holds it: Unix milliseconds.
fn whole_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A delivery as its item holds it.
fn stored(d: &Delivery) -> Delivery {
    let mut d = d.clone();
    d.created_at = whole_seconds(d.created_at);
    d.updated_at = whole_seconds(d.updated_at);
    d.next_attempt_at = d.next_attempt_at.map(whole_seconds);
    d.lease_until = d.lease_until.map(whole_millis);
    for a in &mut d.attempts {
        a.at = whole_seconds(a.at);
    }
    d
}

/// How long one store or queue call of the sweeper takes, in
/// milliseconds: a DynamoDB or SQS request from a Lambda in its region.
pub const STORE_LATENCY_MS: std::ops::Range<u64> = 5..15;

/// Draws each call's latency.
pub struct Latency(Mutex<rand::rngs::StdRng>);

impl Latency {
    pub fn new(seed: u64) -> Arc<Self> {
        use rand::SeedableRng;
        Arc::new(Latency(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))))
    }

    async fn wait(&self) {
        use rand::Rng;
        let ms = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random_range(STORE_LATENCY_MS);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// What the taps write to.
#[derive(Clone)]
pub struct Taps {
    pub ledger: Ledger,
    pub coverage: Coverage,
    pub violations: Violations,
    /// The delivery id a message body carries.
    pub delivery_of: fn(&str) -> Option<String>,
    /// The sweeper's calls' latency.
    pub latency: Arc<Latency>,
}

impl Taps {
    /// The call's latency, for the Lambdas whose calls take time here.
    async fn wait(&self, role: Role) {
        if role == Role::Sweeper {
            self.latency.wait().await;
        }
    }
}

/// The adapters `plain` as the Lambda `role` sees them.
pub fn tapped(plain: &Adapters, role: Role, taps: &Taps) -> Adapters {
    Adapters {
        deliveries: Arc::new(DeliveryTap {
            inner: plain.deliveries.clone(),
            clock: plain.clock.clone(),
            role,
            taps: taps.clone(),
        }),
        events: Arc::new(EventTap {
            inner: plain.events.clone(),
            role,
            taps: taps.clone(),
        }),
        cursors: Arc::new(CursorTap {
            inner: plain.cursors.clone(),
            role,
            taps: taps.clone(),
        }),
        queue: Arc::new(QueueTap {
            inner: plain.queue.clone(),
            deliveries: plain.deliveries.clone(),
            dead_letters: false,
            role,
            taps: taps.clone(),
        }),
        dead_letters: Arc::new(QueueTap {
            inner: plain.dead_letters.clone(),
            deliveries: plain.deliveries.clone(),
            dead_letters: true,
            role,
            taps: taps.clone(),
        }),
        ..plain.clone()
    }
}

struct DeliveryTap {
    inner: Arc<dyn DeliveryStore>,
    clock: Arc<dyn webhooks_ports::Clock>,
    role: Role,
    taps: Taps,
}

impl DeliveryTap {
    /// Records read by this Lambda: the fan-out's and the sweeper's are
    /// remembered for the invocation ([`remember`]).
    fn read(&self, found: Vec<Delivery>) -> Vec<Delivery> {
        if matches!(self.role, Role::FanOut | Role::Sweeper) {
            remember(&found);
        }
        found
    }
}

#[async_trait]
impl DeliveryStore for DeliveryTap {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        self.taps.wait(self.role).await;
        let created = self.inner.create_if_absent(&stored(delivery)).await?;
        if created.is_none() && self.role == Role::Sender {
            // A record made before its first attempt (a message that came
            // before its record, or its note never came), or by that
            // attempt's outcome (a noted delivery).
            let path = if delivery.attempt_count == 0 && delivery.status == DeliveryStatus::Pending
            {
                Path::Adopt
            } else {
                Path::NotedFirst
            };
            self.taps.coverage.add(path);
            // Created by its first attempt: recorded, as a record's update
            // would have.
            if let Some(attempt) = delivery.attempts.last() {
                self.taps.ledger.recorded_by(
                    &delivery.id,
                    attempt.number,
                    webhooks_pipeline::sender::handling_message(),
                );
                let written = self.clock.now();
                self.taps.ledger.recorded(
                    &delivery.id,
                    Recorded {
                        number: attempt.number,
                        at: attempt.at,
                        next: delivery.next_attempt_at,
                        status_code: attempt.status_code,
                        written,
                    },
                );
            }
        }
        Ok(created)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.taps.wait(self.role).await;
        self.inner.get(delivery_id).await
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.taps.wait(self.role).await;
        let found = self.inner.get_many(delivery_ids).await?;
        Ok(self.read(found))
    }

    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.taps.wait(self.role).await;
        let found = self.inner.get_many_eventually(delivery_ids).await?;
        Ok(self.read(found))
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
        self.taps.wait(self.role).await;
        let before = self.inner.get(delivery_id).await?;
        let lease = self
            .inner
            .lease(
                delivery_id,
                attempts_made,
                chain,
                whole_millis(until),
                whole_millis(now),
                whole_seconds(stale_before),
            )
            .await?;
        if let (Lease::Granted(_), Some(before)) = (&lease, before) {
            // A lease still set was never cleared by a record: its holder
            // died, or its record failed, and it ran out.
            if before.lease_until.is_some() {
                self.taps.coverage.add(Path::LeaseTakeover);
            }
            if before.chain.as_deref().is_some_and(|c| c != chain) {
                self.taps.coverage.add(Path::ChainTakeover);
            }
        }
        Ok(lease)
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        self.taps.wait(self.role).await;
        let mut as_stored = update.clone();
        as_stored.attempt.at = whole_seconds(update.attempt.at);
        as_stored.next_attempt_at = update.next_attempt_at.map(whole_seconds);
        let done = self.inner.record_attempt(delivery_id, &as_stored).await?;
        if done {
            if update.unleased_by.is_some() && update.status == DeliveryStatus::Canceled {
                self.taps.coverage.add(Path::CanceledDuringFirst);
            }
            self.taps.ledger.recorded_by(
                delivery_id,
                update.attempt.number,
                webhooks_pipeline::sender::handling_message(),
            );
            let written = self.clock.now();
            self.taps.ledger.recorded(
                delivery_id,
                Recorded {
                    number: update.attempt.number,
                    at: update.attempt.at,
                    next: update.next_attempt_at,
                    status_code: update.attempt.status_code,
                    written,
                },
            );
        }
        Ok(done)
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.taps.wait(self.role).await;
        self.inner.transition(delivery_id, from, to).await
    }

    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.taps.wait(self.role).await;
        let moved = self
            .inner
            .hand_over(
                delivery_id,
                from,
                to,
                whole_millis(until),
                whole_millis(now),
            )
            .await?;
        if moved {
            self.taps.coverage.add(Path::HandOver);
        }
        Ok(moved)
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        self.taps.wait(self.role).await;
        self.inner
            .overdue(org_id, whole_seconds(before), limit, cursor)
            .await
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.taps.wait(self.role).await;
        self.inner
            .mark_requeued(
                delivery_id,
                attempts_made,
                whole_seconds(now),
                whole_seconds(stale_before),
            )
            .await
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
        self.taps.wait(self.role).await;
        self.inner
            .postpone(
                delivery_id,
                attempts_made,
                chain,
                whole_seconds(until),
                whole_millis(now),
                whole_seconds(stale_before),
            )
            .await
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        self.taps.wait(self.role).await;
        self.inner
            .list_for_endpoint(endpoint_id, status, limit, cursor)
            .await
    }

    async fn note_queued(&self, note: &QueuedNote) -> Result<bool> {
        self.taps.wait(self.role).await;
        self.inner.note_queued(note).await
    }

    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>> {
        self.taps.wait(self.role).await;
        let noted = self.inner.noted(org_id, delivery_ids).await?;
        if matches!(self.role, Role::FanOut | Role::Sweeper) {
            remember_noted(&webhooks_domain::queued::listed(&noted, delivery_ids));
        }
        Ok(noted)
    }

    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.taps.wait(self.role).await;
        let confirmed = self.inner.confirm_note(org_id, key, contested, at).await?;
        if confirmed {
            self.taps
                .coverage
                .add_n(Path::ContestedNote, contested.len() as u64);
        }
        Ok(confirmed)
    }

    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>> {
        self.taps.wait(self.role).await;
        self.inner.notes(keys).await
    }

    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage> {
        self.taps.wait(self.role).await;
        self.inner.notes_between(org_id, from, to, limit).await
    }
}

struct EventTap {
    inner: Arc<dyn EventStore>,
    role: Role,
    taps: Taps,
}

#[async_trait]
impl EventStore for EventTap {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        self.taps.wait(self.role).await;
        let mut event = event.clone();
        event.created_at = whole_seconds(event.created_at);
        self.inner.put_if_absent(&event).await
    }

    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        self.taps.wait(self.role).await;
        self.inner.get(org_id, event_id).await
    }

    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>> {
        self.taps.wait(self.role).await;
        self.inner.get_many(org_id, event_ids).await
    }

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>> {
        self.taps.wait(self.role).await;
        self.inner.list_after(org_id, after, limit).await
    }

    async fn log_page(&self, org_id: &str, query: &EventLogQuery) -> Result<Page<EventSummary>> {
        self.taps.wait(self.role).await;
        self.inner.log_page(org_id, query).await
    }
}

struct CursorTap {
    inner: Arc<dyn CursorStore>,
    role: Role,
    taps: Taps,
}

#[async_trait]
impl CursorStore for CursorTap {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        self.taps.wait(self.role).await;
        self.inner.get(org_id).await
    }

    async fn advance(&self, org_id: &str, to: &str) -> Result<()> {
        self.taps.wait(self.role).await;
        self.inner.advance(org_id, to).await
    }

    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        self.taps.wait(self.role).await;
        self.inner.ensure(org_id, event_id).await
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        self.taps.wait(self.role).await;
        self.inner.list().await
    }

    async fn resume_at(&self) -> Result<Option<String>> {
        self.taps.wait(self.role).await;
        self.inner.resume_at().await
    }

    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()> {
        self.taps.wait(self.role).await;
        self.inner.set_resume_at(org_id).await
    }
}

struct QueueTap {
    inner: Arc<dyn Queue>,
    /// The table itself, to see what a message is queued for.
    deliveries: Arc<dyn DeliveryStore>,
    /// The dead-letter queue: only the sender's own dead letters are noted.
    dead_letters: bool,
    role: Role,
    taps: Taps,
}

/// Whether a message is the redrive net's (its task marked redriven).
fn redrive_net(body: &str) -> bool {
    webhooks_domain::DeliveryTask::from_message(body).is_ok_and(|t| t.redriven)
}

impl QueueTap {
    /// Whether the redrive net's message for this body's delivery may be a
    /// second one: a renewal's copy it cannot see
    /// ([`Ledger::redriven_beside_renewal`]), or the delivery's own message
    /// after the sender dead-lettered it and its record failed (README: the
    /// copy or that message is one the fence drops).
    fn beside_own_message(&self, body: &str) -> bool {
        (self.taps.delivery_of)(body).is_some_and(|id| {
            self.taps.ledger.redriven_beside_renewal(&id)
                || self.taps.ledger.dead_lettered_by_sender(&id)
        })
    }

    /// A fan-out (the stream's or the sweeper's) queues a message only for
    /// a delivery it found missing, or whose message is gone. (The sweeper's reconciler queues
    /// deliveries it read overdue, with a retry scheduled: those it may.
    /// And it runs alongside the senders, which may finish a delivery
    /// between its read and its send: only the stream's fan-out, whose
    /// read and send are one moment, is held to finished ones.)
    async fn check_fan_out(&self, messages: &[QueueMessage]) {
        // The redrive net's message for a delivery whose worn message was
        // renewed and redriven all the same may be a second one
        // ([`Ledger::redriven_beside_renewal`]): not a doubled backlog.
        let ids: Vec<String> = messages
            .iter()
            .filter(|m| !(redrive_net(&m.body) && self.beside_own_message(&m.body)))
            .filter_map(|m| (self.taps.delivery_of)(&m.body))
            .collect();
        let Ok(now) = self.deliveries.get_many(&ids).await else {
            return;
        };
        // Noted, with no record: queued again only if the fan-out's read
        // missed the note.
        for id in &ids {
            if !now.iter().any(|d| &d.id == id) && read_waiting(id) && self.taps.ledger.queued(id) {
                self.taps.violations.add(format!(
                    "a fan-out queued {id} again, which it had read noted and never attempted: the backlog doubles"
                ));
            }
        }
        for d in now {
            if d.status.is_terminal() && self.role == Role::FanOut {
                self.taps.violations.add(format!(
                    "a fan-out queued a message for {}, which is {}",
                    d.id, d.status
                ));
            } else if read_waiting(&d.id) && self.taps.ledger.queued(&d.id) {
                // Doubled only if its message is still queued: one SQS
                // redrove (or a retention expired) leaves it none, and
                // the redrive net or the reconciler queuing it again is
                // what keeps it from being lost (seed 11 with the outage
                // model: redriven after 30 throttled receives, sent again
                // by the redrive net).
                self.taps.violations.add(format!(
                    "a fan-out queued {} again, which it had read pending and never attempted: the backlog doubles",
                    d.id
                ));
            }
        }
    }
}

#[async_trait]
impl Queue for QueueTap {
    async fn send_batch_ids(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>> {
        if self.dead_letters {
            // Notes the deliveries the sender dead-lettered itself.
            let ids = self.inner.send_batch_ids(messages).await?;
            if self.role == Role::Sender {
                for (m, id) in messages.iter().zip(&ids) {
                    if let (Some(delivery), Some(_)) = ((self.taps.delivery_of)(&m.body), id) {
                        self.taps.ledger.dead_lettered_by(&delivery);
                    }
                }
            }
            return Ok(ids);
        }
        self.taps.wait(self.role).await;
        if matches!(self.role, Role::FanOut | Role::Sweeper) {
            self.check_fan_out(messages).await;
        }
        let ids = self.inner.send_batch_ids(messages).await?;
        // The sender sends delivery messages only to renew worn ones.
        if self.role == Role::Sender {
            for id in ids.iter().flatten() {
                self.taps.ledger.renewed(id);
            }
            let sent = ids.iter().flatten().count();
            self.taps
                .coverage
                .add_n(Path::Renew, u64::try_from(sent).unwrap_or(0));
        }
        Ok(ids)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.inner.change_visibility(receipt_handle, delay).await
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.inner.delete_batch(receipt_handles).await
    }
}
