//! What happened to each delivery before its first attempt, as the queue
//! saw it: when its first message was sent, and every receive of its
//! messages that ended without finishing the message, with how long that
//! receive hid it (a deferral or a hide for as long as the sender asked,
//! or the queue's whole visibility timeout when nothing was asked: a
//! crashed invocation, a throttled store call, a failed visibility
//! change). The first-attempt lateness invariant ([`crate::check`])
//! allows each such receive its hold and no more.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use webhooks_ports::{Clock, Queue, QueueMessage, ReceivedMessage, Result};

/// One receive of a delivery's message that left it on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When the step that received it ended: a first attempt made in that
    /// step is no later than this, one made after it came later.
    pub step_ended: DateTime<Utc>,
    /// How long the message was hidden from the receive on.
    pub hidden: Duration,
}

#[derive(Default)]
struct State {
    first_queued: HashMap<String, DateTime<Utc>>,
    /// Visibility changes that took effect, by receipt handle, not yet
    /// matched with their receive.
    changed: HashMap<String, Duration>,
    holds: HashMap<String, Vec<Hold>>,
}

/// The per-delivery record, shared by the queue wrapper and the world.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<State>>);

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the first message of `delivery_id` was sent, if one was.
    pub fn first_queued(&self, delivery_id: &str) -> Option<DateTime<Utc>> {
        self.state().first_queued.get(delivery_id).copied()
    }

    /// The receives of `delivery_id`'s messages that left it on the queue.
    pub fn holds(&self, delivery_id: &str) -> Vec<Hold> {
        self.state()
            .holds
            .get(delivery_id)
            .cloned()
            .unwrap_or_default()
    }

    /// A message of `delivery_id`, received with `receipt` in a step that
    /// ended at `step_ended`, was left on the queue (`finished`: false), or
    /// finished with; `visibility`: how long the queue hides a message it
    /// was not told otherwise about.
    pub fn received(
        &self,
        delivery_id: Option<String>,
        receipt: &str,
        finished: bool,
        step_ended: DateTime<Utc>,
        visibility: Duration,
    ) {
        let mut st = self.state();
        let changed = st.changed.remove(receipt);
        if finished {
            return;
        }
        if let Some(id) = delivery_id {
            st.holds.entry(id).or_default().push(Hold {
                step_ended,
                hidden: changed.unwrap_or(visibility),
            });
        }
    }
}

/// A queue that writes what it was asked to do, and did, in a [`Ledger`].
pub struct LedgerQueue {
    inner: Arc<dyn Queue>,
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    /// The delivery id a message body carries.
    delivery_of: fn(&str) -> Option<String>,
}

impl LedgerQueue {
    pub fn new(
        inner: Arc<dyn Queue>,
        ledger: Ledger,
        clock: Arc<dyn Clock>,
        delivery_of: fn(&str) -> Option<String>,
    ) -> Self {
        LedgerQueue {
            inner,
            ledger,
            clock,
            delivery_of,
        }
    }
}

#[async_trait]
impl Queue for LedgerQueue {
    async fn send_batch(&self, messages: &[QueueMessage]) -> Result<Vec<usize>> {
        let refused = self.inner.send_batch(messages).await?;
        let now = self.clock.now();
        let mut st = self.ledger.state();
        for (i, m) in messages.iter().enumerate() {
            if refused.contains(&i) {
                continue;
            }
            if let Some(id) = (self.delivery_of)(&m.body) {
                st.first_queued.entry(id).or_insert(now);
            }
        }
        Ok(refused)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.inner.change_visibility(receipt_handle, delay).await?;
        self.ledger
            .state()
            .changed
            .insert(receipt_handle.to_string(), delay);
        Ok(())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.inner.delete_batch(receipt_handles).await
    }
}
