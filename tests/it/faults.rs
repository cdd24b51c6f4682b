//! Faults to inject into a running pipeline. Every fault is decided by a
//! seeded generator and counted by kind, so a run can report what it
//! survived.
//!
//! - [`FaultyQueue`]: SQS calls that fail (a whole send, some entries of a
//!   batch, a visibility change, a delete).
//! - [`FaultyDeliveryStore`]: DynamoDB writes that fail before they apply, or
//!   after (the write happened, the caller is told it did not), and reads
//!   that fail.
//! - [`RecordAttemptOutage`]: a delivery store whose `record_attempt` is
//!   down for a while.
//!
//! The receiver that misbehaves on purpose is testkit's
//! ([`webhooks_testkit::Receiver`] with a [`webhooks_testkit::Reply`] per
//! request).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_memory::sync::lock;
use webhooks_ports::{
    AttemptUpdate, BackendError, DeliveryStore, Lease, Page, Queue, ReceivedMessage, Result,
};

/// SplitMix64: small, fast, and the same sequence for the same seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits, the precision of an f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator seeded by `seed` and some strings (FNV-1a, then SplitMix):
/// the same inputs always give the same sequence, whatever the timing.
pub fn rng_for(seed: u64, parts: &[&str]) -> Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    Rng::new(finalize(h))
}

/// Everything a run injects, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The receiver answered 500.
    Receiver500,
    /// The receiver answered 429 with `Retry-After`.
    Receiver429,
    /// The receiver held the request past the client's timeout.
    ReceiverTimeout,
    /// The receiver closed the connection without answering.
    ReceiverReset,
    /// The receiver sent its body slowly.
    ReceiverSlowBody,
    /// A request to an (endpoint, event) pair that always fails.
    ReceiverPoisoned,
    /// The sender was killed in the middle of a batch.
    SenderCrash,
    /// The fan-out died between creating deliveries and queueing them (its
    /// invocation timed out), and the stream batch was retried.
    FanOutCrash,
    /// A fan-out's `SendMessageBatch` failed as a whole: the deliveries were
    /// created and not queued.
    EnqueueFailed,
    /// Some entries of a fan-out's `SendMessageBatch` were refused.
    EnqueuePartiallyRejected,
    /// A send to the dead-letter queue failed.
    DeadLetterSendFailed,
    /// `ChangeMessageVisibility` failed.
    VisibilityChangeFailed,
    /// `DeleteMessageBatch` failed.
    DeleteFailed,
    /// A stream batch handed to the fan-out again.
    DuplicatedStreamBatch,
    /// A delivery-store write failed before it applied.
    StoreWriteFailed,
    /// A delivery-store write applied, and the caller was told it failed.
    StoreWriteAckLost,
    /// A delivery-store read failed.
    StoreReadFailed,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Receiver500 => "receiver_500",
            FaultKind::Receiver429 => "receiver_429_retry_after",
            FaultKind::ReceiverTimeout => "receiver_timeout",
            FaultKind::ReceiverReset => "receiver_connection_reset",
            FaultKind::ReceiverSlowBody => "receiver_slow_body",
            FaultKind::ReceiverPoisoned => "receiver_always_failing_pair",
            FaultKind::SenderCrash => "sender_crash_mid_batch",
            FaultKind::FanOutCrash => "fanout_crash_between_create_and_enqueue",
            FaultKind::EnqueueFailed => "fanout_enqueue_failed_after_create",
            FaultKind::EnqueuePartiallyRejected => "fanout_enqueue_entries_rejected",
            FaultKind::DeadLetterSendFailed => "dlq_send_failed",
            FaultKind::VisibilityChangeFailed => "sqs_change_visibility_failed",
            FaultKind::DeleteFailed => "sqs_delete_failed",
            FaultKind::DuplicatedStreamBatch => "duplicated_stream_batch",
            FaultKind::StoreWriteFailed => "delivery_store_write_failed",
            FaultKind::StoreWriteAckLost => "delivery_store_write_applied_but_failed",
            FaultKind::StoreReadFailed => "delivery_store_read_failed",
        }
    }
}

/// The run's fault switch, generator and tally, shared by every wrapper.
pub struct Faults {
    enabled: AtomicBool,
    rng: Mutex<Rng>,
    counts: Mutex<BTreeMap<FaultKind, u64>>,
}

impl Faults {
    pub fn new(seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            enabled: AtomicBool::new(true),
            rng: Mutex::new(Rng::new(seed)),
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Turns injection on or off (the receiver's answers are not affected).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Whether to inject now, with probability `p`; does not count.
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.enabled() && lock(&self.rng).chance(p)
    }

    /// `true` (and counted as `kind`) with probability `p`.
    pub fn roll(&self, kind: FaultKind, p: f64) -> bool {
        let hit = self.chance(p);
        if hit {
            self.record(kind);
        }
        hit
    }

    /// A number in `0..n` from the run's generator.
    pub fn below(&self, n: u64) -> u64 {
        lock(&self.rng).below(n)
    }

    pub fn record(&self, kind: FaultKind) {
        self.record_n(kind, 1);
    }

    pub fn record_n(&self, kind: FaultKind, n: u64) {
        if n > 0 {
            *lock(&self.counts).entry(kind).or_insert(0) += n;
        }
    }

    /// Every count so far, by kind name.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.counts)
            .iter()
            .map(|(k, v)| (k.name(), *v))
            .collect()
    }

    pub fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}

/// How often a [`FaultyQueue`] fails, per call (per entry for `reject_entry`).
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueFaults {
    /// A whole `send_batch` fails; counted as `send_kind`.
    pub send_fails: f64,
    pub send_kind: Option<FaultKind>,
    /// A `send_batch` never returns: the caller dies right there, between
    /// creating deliveries and queueing them, until its invocation times
    /// out. Counted as [`FaultKind::FanOutCrash`].
    pub send_hangs: f64,
    /// One entry of a sent batch is refused.
    pub reject_entry: f64,
    pub change_visibility_fails: f64,
    pub delete_fails: f64,
}

/// A queue whose calls fail at random.
pub struct FaultyQueue {
    pub inner: Arc<dyn Queue>,
    pub faults: Arc<Faults>,
    pub plan: QueueFaults,
}

impl FaultyQueue {
    pub fn wrap(inner: Arc<dyn Queue>, faults: Arc<Faults>, plan: QueueFaults) -> Arc<dyn Queue> {
        Arc::new(FaultyQueue {
            inner,
            faults,
            plan,
        })
    }
}

fn injected(what: &str) -> BackendError {
    BackendError::Transient(format!("injected: {what}"))
}

#[async_trait]
impl Queue for FaultyQueue {
    async fn send_batch(&self, bodies: &[webhooks_ports::QueueMessage]) -> Result<Vec<usize>> {
        if self
            .faults
            .roll(FaultKind::FanOutCrash, self.plan.send_hangs)
        {
            std::future::pending::<()>().await;
        }
        if let Some(kind) = self.plan.send_kind {
            if self.faults.roll(kind, self.plan.send_fails) {
                return Err(injected("SendMessageBatch failed"));
            }
        }
        if self.plan.reject_entry <= 0.0 || !self.faults.enabled() {
            return self.inner.send_batch(bodies).await;
        }
        // Refuse some entries, as a partial SendMessageBatch failure does.
        let refused: Vec<usize> = (0..bodies.len())
            .filter(|_| self.faults.chance(self.plan.reject_entry))
            .collect();
        self.faults
            .record_n(FaultKind::EnqueuePartiallyRejected, refused.len() as u64);
        let kept: Vec<usize> = (0..bodies.len()).filter(|i| !refused.contains(i)).collect();
        let to_send: Vec<webhooks_ports::QueueMessage> =
            kept.iter().map(|i| bodies[*i].clone()).collect();
        let mut failed = refused;
        match self.inner.send_batch(&to_send).await {
            Ok(rejected) => failed.extend(rejected.into_iter().map(|r| kept[r])),
            Err(e) => return Err(e),
        }
        failed.sort_unstable();
        Ok(failed)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        if self.faults.roll(
            FaultKind::VisibilityChangeFailed,
            self.plan.change_visibility_fails,
        ) {
            return Err(injected("ChangeMessageVisibility failed"));
        }
        self.inner.change_visibility(receipt_handle, delay).await
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        if self
            .faults
            .roll(FaultKind::DeleteFailed, self.plan.delete_fails)
        {
            return Err(injected("DeleteMessageBatch failed"));
        }
        self.inner.delete_batch(receipt_handles).await
    }
}

/// How often a [`FaultyDeliveryStore`] fails, per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFaults {
    /// A write fails and nothing is written.
    pub write_fails: f64,
    /// A write is made, and the caller is told it failed (a timeout after
    /// the commit).
    pub write_ack_lost: f64,
    pub read_fails: f64,
}

/// A delivery store whose calls fail at random.
pub struct FaultyDeliveryStore {
    pub inner: Arc<dyn DeliveryStore>,
    pub faults: Arc<Faults>,
    pub plan: StoreFaults,
}

impl FaultyDeliveryStore {
    pub fn wrap(
        inner: Arc<dyn DeliveryStore>,
        faults: Arc<Faults>,
        plan: StoreFaults,
    ) -> Arc<dyn DeliveryStore> {
        Arc::new(FaultyDeliveryStore {
            inner,
            faults,
            plan,
        })
    }

    fn before_write(&self) -> Result<()> {
        if self
            .faults
            .roll(FaultKind::StoreWriteFailed, self.plan.write_fails)
        {
            return Err(injected("delivery write failed"));
        }
        Ok(())
    }

    fn after_write<T>(&self, r: Result<T>) -> Result<T> {
        let v = r?;
        if self
            .faults
            .roll(FaultKind::StoreWriteAckLost, self.plan.write_ack_lost)
        {
            return Err(injected("delivery write timed out after it applied"));
        }
        Ok(v)
    }

    fn before_read(&self) -> Result<()> {
        if self
            .faults
            .roll(FaultKind::StoreReadFailed, self.plan.read_fails)
        {
            return Err(injected("delivery read failed"));
        }
        Ok(())
    }
}

#[async_trait]
impl DeliveryStore for FaultyDeliveryStore {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        self.before_write()?;
        let r = self.inner.create_if_absent(delivery).await;
        self.after_write(r)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.before_read()?;
        self.inner.get(delivery_id).await
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.before_read()?;
        self.inner.get_many(delivery_ids).await
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
        self.before_write()?;
        let r = self
            .inner
            .lease(delivery_id, attempts_made, chain, until, now, stale_before)
            .await;
        self.after_write(r)
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        self.before_write()?;
        let r = self.inner.record_attempt(delivery_id, update).await;
        self.after_write(r)
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.before_write()?;
        let r = self.inner.transition(delivery_id, from, to).await;
        self.after_write(r)
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        self.before_read()?;
        self.inner
            .list_for_endpoint(endpoint_id, status, limit, cursor)
            .await
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        self.before_read()?;
        self.inner.overdue(org_id, before, limit, cursor).await
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.before_write()?;
        let r = self
            .inner
            .mark_requeued(delivery_id, attempts_made, now, stale_before)
            .await;
        self.after_write(r)
    }
}

/// A delivery store in which `record_attempt` fails for a while: it works
/// for the first `works_first` calls, then fails for the next `then_fails`
/// (a storage outage), then works again.
pub struct RecordAttemptOutage {
    pub inner: Arc<dyn DeliveryStore>,
    calls: Mutex<usize>,
    works_first: usize,
    then_fails: usize,
}

impl RecordAttemptOutage {
    pub fn wrap(
        inner: Arc<dyn DeliveryStore>,
        works_first: usize,
        then_fails: usize,
    ) -> Arc<dyn DeliveryStore> {
        Arc::new(RecordAttemptOutage {
            inner,
            calls: Mutex::new(0),
            works_first,
            then_fails,
        })
    }
}

#[async_trait]
impl DeliveryStore for RecordAttemptOutage {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        self.inner.create_if_absent(delivery).await
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.inner.get(delivery_id).await
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.inner.get_many(delivery_ids).await
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
        self.inner
            .lease(delivery_id, attempts_made, chain, until, now, stale_before)
            .await
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        let n = {
            let mut calls = lock(&self.calls);
            *calls += 1;
            *calls
        };
        if n > self.works_first && n <= self.works_first + self.then_fails {
            return Err(injected("delivery table unavailable"));
        }
        self.inner.record_attempt(delivery_id, update).await
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.inner.transition(delivery_id, from, to).await
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        self.inner
            .list_for_endpoint(endpoint_id, status, limit, cursor)
            .await
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        self.inner.overdue(org_id, before, limit, cursor).await
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .mark_requeued(delivery_id, attempts_made, now, stale_before)
            .await
    }
}
