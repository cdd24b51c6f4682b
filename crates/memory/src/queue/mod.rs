mod behaviour;
mod fair;

pub use behaviour::{QueueEvent, QueueWatch, SqsBehaviour};

use crate::chance::Chance;
use crate::sync::lock;
use async_trait::async_trait;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use webhooks_ports::queue_limits::{self, MAX_VISIBILITY};
use webhooks_ports::queue_settings::QUEUE_RETENTION_SECS;
use webhooks_ports::{BackendError, Queue, QueueMessage, ReceivedMessage, Result};

/// An SQS queue in memory: a received message stays invisible for the
/// visibility timeout unless deleted, comes back with a higher receive count,
/// and moves to the dead-letter queue once received more than
/// `max_receive_count` times. It refuses what SQS refuses
/// ([`queue_limits`]): a message over 256 KiB or with a character SQS does
/// not carry, a `MessageGroupId` SQS would not take, a batch request of more
/// than ten entries or over 1 MiB, and a visibility change that would hide a
/// message for more than 12 h from its receipt. Like SQS, it deletes a
/// message once it has been in the queue for the retention period (14 days),
/// received or not.
///
/// It is a **fair queue**, as a standard SQS queue is when its messages carry
/// a `MessageGroupId`: while a tenant is a noisy neighbour (the thresholds AWS
/// documents, in [`fair`]), receives hand out the other tenants' messages
/// first. Otherwise messages come in the order they became visible.
///
/// What SQS does now and then within its contract (a message handed out
/// twice, a delete through a stale receipt that deletes it, whole-second
/// visibility) is off unless set ([`MemoryQueue::behave`]); a
/// [`QueueWatch`] follows every message ([`MemoryQueue::watch`]).
pub struct MemoryQueue {
    state: Mutex<State>,
    changed: Notify,
    visibility_timeout: Duration,
    redrive: Option<(Arc<MemoryQueue>, u32)>,
}

/// How long SQS keeps a message: the queues are set to the maximum.
const RETENTION: Duration = Duration::from_secs(QUEUE_RETENTION_SECS as u64);

/// The queue's messages, indexed as SQS would need to serve them at
/// scale: by id, by when each becomes visible (in all and per tenant), by
/// receipt handle, and those in flight.
struct State {
    messages: BTreeMap<u64, Message>,
    /// (visible at, id) of every message: receives take the earliest.
    by_visibility: BTreeSet<(Instant, u64)>,
    /// The same, per tenant (`None`: the messages sent without one).
    by_tenant: FxHashMap<Option<String>, BTreeSet<(Instant, u64)>>,
    /// (visible again at, id) of the messages in flight: received, and
    /// neither deleted nor visible again.
    in_flight: BTreeSet<(Instant, u64)>,
    fairness: fair::Fairness,
    receipts: FxHashMap<String, u64>,
    /// Receipts of earlier receives of messages still queued.
    stale: FxHashMap<String, u64>,
    next_id: u64,
    next_receipt: u64,
    behaviour: SqsBehaviour,
    chance: Chance,
    watch: Option<Arc<dyn QueueWatch>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            messages: BTreeMap::new(),
            by_visibility: BTreeSet::new(),
            by_tenant: FxHashMap::default(),
            in_flight: BTreeSet::new(),
            fairness: fair::Fairness::default(),
            receipts: FxHashMap::default(),
            stale: FxHashMap::default(),
            next_id: 0,
            next_receipt: 0,
            behaviour: SqsBehaviour::default(),
            chance: Chance::new(0),
            watch: None,
        }
    }
}

struct Message {
    id: String,
    body: String,
    tenant: Option<String>,
    visible_at: Instant,
    receive_count: u32,
    receipt: Option<String>,
    /// The receipts of its earlier receives.
    old_receipts: Vec<String>,
    /// When the current receipt was handed out.
    received_at: Instant,
    /// Whether the current receipt's processing time is counted already
    /// (the consumer deleted or re-hid the message).
    processed: bool,
    /// When it was sent: it is deleted after the retention period.
    sent_at: Instant,
}

impl State {
    fn remove(&mut self, seq: u64, now: Instant) -> Option<Message> {
        self.land(seq, now);
        self.leave_flight(seq);
        let m = self.messages.remove(&seq)?;
        self.by_visibility.remove(&(m.visible_at, seq));
        self.untrack(&m.tenant, m.visible_at, seq);
        if let Some(r) = &m.receipt {
            self.receipts.remove(r);
        }
        for r in &m.old_receipts {
            self.stale.remove(r);
        }
        Some(m)
    }

    /// Tells the watch, if any.
    fn saw(&self, event: QueueEvent<'_>) {
        if let Some(w) = &self.watch {
            w.saw(event);
        }
    }

    fn untrack(&mut self, tenant: &Option<String>, at: Instant, seq: u64) {
        if let Some(set) = self.by_tenant.get_mut(tenant) {
            set.remove(&(at, seq));
            if set.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
    }

    fn set_visible_at(&mut self, seq: u64, at: Instant) {
        // The message's tenant is read where it lies (the fields are
        // borrowed apart), not copied: three times per message on its way
        // through the queue.
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        let old = m.visible_at;
        m.visible_at = at;
        self.by_visibility.remove(&(old, seq));
        self.by_visibility.insert((at, seq));
        match self.by_tenant.get_mut(&m.tenant) {
            Some(set) => {
                set.remove(&(old, seq));
                set.insert((at, seq));
            }
            None => {
                self.by_tenant
                    .insert(m.tenant.clone(), BTreeSet::from([(at, seq)]));
            }
        }
    }

    /// The consumer is done with the message's current receipt (deleted
    /// or re-hid it): its processing time counts, once.
    fn land(&mut self, seq: u64, now: Instant) {
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        if m.receipt.is_none() || m.processed || !self.in_flight.contains(&(m.visible_at, seq)) {
            return;
        }
        m.processed = true;
        let took = now.saturating_duration_since(m.received_at);
        self.fairness.processed(m.tenant.as_deref(), took, now);
    }

    /// Takes the message out of flight (deleted, or visible again now).
    fn leave_flight(&mut self, seq: u64) {
        let Some(m) = self.messages.get(&seq) else {
            return;
        };
        if self.in_flight.remove(&(m.visible_at, seq)) {
            self.fairness.released(m.tenant.as_deref());
        }
    }

    /// Messages whose visibility ran out are back on the queue: out of
    /// flight, their receipt's whole visibility counted as processing time
    /// unless the consumer finished earlier.
    fn expire_flights(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.in_flight.first() {
            if at > now {
                break;
            }
            self.in_flight.remove(&(at, seq));
            let Some(m) = self.messages.get_mut(&seq) else {
                continue;
            };
            if !m.processed {
                m.processed = true;
                let took = at.saturating_duration_since(m.received_at);
                self.fairness.processed(m.tenant.as_deref(), took, at);
            }
            self.fairness.released(m.tenant.as_deref());
        }
    }

    /// The visible message to hand out next, if any: the earliest visible
    /// of the quiet tenants (untagged messages among them), else the
    /// earliest of the noisy tenant with the fewest in flight.
    fn next_up(&mut self, now: Instant) -> Option<(Instant, u64)> {
        let &(first_at, first) = self.by_visibility.first()?;
        if first_at > now {
            return None;
        }
        // One tenant or none: nobody to be fair to.
        if self.by_tenant.len() <= 1 {
            return Some((first_at, first));
        }
        let standing = self.fairness.standing(now);
        let mut quiet: Option<(Instant, u64)> = None;
        let mut noisy: Option<(u32, Instant, u64)> = None;
        for (tenant, set) in &self.by_tenant {
            let Some(&(at, seq)) = set.first() else {
                continue;
            };
            if at > now {
                continue;
            }
            let tenant = tenant.as_deref();
            if standing.is_noisy(tenant, now) {
                let key = (standing.in_flight(tenant), at, seq);
                if noisy.is_none_or(|n| key < n) {
                    noisy = Some(key);
                }
            } else if quiet.is_none_or(|q| (at, seq) < q) {
                quiet = Some((at, seq));
            }
        }
        quiet.or(noisy.map(|(_, at, seq)| (at, seq)))
    }
}

impl MemoryQueue {
    /// A queue whose received messages stay hidden for `visibility_timeout`.
    pub fn new(visibility_timeout: Duration) -> Arc<Self> {
        Arc::new(MemoryQueue {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            visibility_timeout,
            redrive: None,
        })
    }

    /// A queue with a redrive policy: on the receive after the
    /// `max_receive_count`-th, the message moves to `dead_letter` instead.
    pub fn with_redrive(
        visibility_timeout: Duration,
        dead_letter: Arc<MemoryQueue>,
        max_receive_count: u32,
    ) -> Arc<Self> {
        Arc::new(MemoryQueue {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            visibility_timeout,
            redrive: Some((dead_letter, max_receive_count)),
        })
    }

    /// Messages in the queue, visible or not.
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bodies of every message in the queue, for inspection.
    pub fn bodies(&self) -> Vec<String> {
        lock(&self.state)
            .messages
            .values()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Every message in the queue with its tenant, for inspection.
    pub fn messages(&self) -> Vec<QueueMessage> {
        lock(&self.state)
            .messages
            .values()
            .map(|m| QueueMessage {
                body: m.body.clone(),
                tenant: m.tenant.clone(),
            })
            .collect()
    }

    /// Reads the bodies of every message in the queue without copying them.
    pub fn with_bodies<R>(&self, read: impl FnOnce(&mut dyn Iterator<Item = &str>) -> R) -> R {
        let st = lock(&self.state);
        let mut bodies = st.messages.values().map(|m| m.body.as_str());
        read(&mut bodies)
    }

    /// When the next hidden message becomes visible (`now` if one is
    /// visible already): how far a simulation may move its clock at once.
    pub fn next_visible_at(&self) -> Option<Instant> {
        lock(&self.state).by_visibility.first().map(|(at, _)| *at)
    }

    /// Resolves at the queue's next change: a message sent, hidden again
    /// or made visible through a receipt. What an event source mapping's
    /// long poll wakes on, so that a simulation's poller that sleeps until
    /// its next known wake still receives a message sent meanwhile at once.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Departs from the tidy queue as `behaviour` says, from now on.
    pub fn behave(&self, behaviour: SqsBehaviour) {
        let mut st = lock(&self.state);
        st.chance = Chance::new(behaviour.seed);
        st.behaviour = behaviour;
    }

    /// Tells `watch` everything that happens to the queue's messages from
    /// now on.
    pub fn watch(&self, watch: Arc<dyn QueueWatch>) {
        lock(&self.state).watch = Some(watch);
    }

    /// Puts a message on the queue, under `id` (a message SQS redrives
    /// keeps its id) or a new one; its id.
    fn push(
        &self,
        body: String,
        tenant: Option<String>,
        receive_count: u32,
        id: Option<String>,
    ) -> String {
        let mut st = lock(&self.state);
        st.next_id += 1;
        let seq = st.next_id;
        let id = id.unwrap_or_else(|| format!("msg-{seq}"));
        let now = Instant::now();
        st.by_tenant
            .entry(tenant.clone())
            .or_default()
            .insert((now, seq));
        st.messages.insert(
            seq,
            Message {
                id: id.clone(),
                body,
                tenant,
                visible_at: now,
                receive_count,
                receipt: None,
                old_receipts: Vec::new(),
                received_at: now,
                processed: false,
                sent_at: now,
            },
        );
        st.by_visibility.insert((now, seq));
        if let Some(m) = st.messages.get(&seq) {
            st.saw(QueueEvent::Sent {
                id: &m.id,
                body: &m.body,
            });
        }
        id
    }

    /// Takes up to `max` visible messages, in fair-queue order, moving
    /// over-received ones to the dead-letter queue and dropping those past
    /// retention. Returns the messages and the earliest time another
    /// message becomes visible.
    fn take_visible(&self, max: usize) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut to_dlq = Vec::new();
        let mut again = Vec::new();
        let next_visible;
        {
            let mut st = lock(&self.state);
            st.expire_flights(now);
            while out.len() < max {
                let Some((at, seq)) = st.next_up(now) else {
                    break;
                };
                let Some(m) = st.messages.get(&seq) else {
                    // Never left behind by a removal; dropped if it were.
                    st.by_visibility.remove(&(at, seq));
                    st.by_tenant.retain(|_, set| {
                        set.remove(&(at, seq));
                        !set.is_empty()
                    });
                    continue;
                };
                if now.duration_since(m.sent_at) >= RETENTION {
                    st.saw(QueueEvent::Expired {
                        id: &m.id,
                        body: &m.body,
                    });
                    st.remove(seq, now);
                    continue;
                }
                if let Some((_, max_receives)) = &self.redrive {
                    if m.receive_count >= *max_receives {
                        st.saw(QueueEvent::Redriven {
                            id: &m.id,
                            body: &m.body,
                        });
                        if let Some(m) = st.remove(seq, now) {
                            to_dlq.push((m.body, m.tenant, m.id));
                        }
                        continue;
                    }
                }
                st.next_receipt += 1;
                let receipt = format!("rh-{}", st.next_receipt);
                let hidden_until = now + self.visibility_timeout;
                st.set_visible_at(seq, hidden_until);
                st.in_flight.insert((hidden_until, seq));
                let old = st.messages.get_mut(&seq).and_then(|m| {
                    m.receive_count += 1;
                    m.received_at = now;
                    m.processed = false;
                    let old = m.receipt.replace(receipt.clone());
                    if let Some(old) = &old {
                        m.old_receipts.push(old.clone());
                    }
                    old
                });
                if let Some(old) = old {
                    st.receipts.remove(&old);
                    st.stale.insert(old, seq);
                }
                st.receipts.insert(receipt.clone(), seq);
                let rate = st.behaviour.duplicate_rate;
                let duplicate = st.chance.one_in(rate);
                if duplicate {
                    again.push(seq);
                }
                if let Some(m) = st.messages.get(&seq) {
                    let tenant = m.tenant.clone();
                    st.saw(QueueEvent::Received {
                        id: &m.id,
                        body: &m.body,
                        receipt: &receipt,
                        receive_count: m.receive_count,
                        duplicate,
                    });
                    out.push(ReceivedMessage {
                        message_id: m.id.clone(),
                        body: m.body.clone(),
                        tenant: tenant.clone(),
                        receipt_handle: receipt,
                        receive_count: m.receive_count,
                        age: Some(now.duration_since(m.sent_at)),
                    });
                    st.fairness.received(tenant.as_deref(), now);
                }
            }
            // Handed out again: visible to the next receive (not this
            // one), out of flight until then.
            for seq in again {
                st.leave_flight(seq);
                st.set_visible_at(seq, now);
            }
            next_visible = st.by_visibility.first().map(|(at, _)| *at);
        }
        if let Some((dlq, _)) = &self.redrive {
            for (body, tenant, id) in to_dlq {
                let _ = dlq.push(body, tenant, 0, Some(id));
                dlq.changed.notify_waiters();
            }
        }
        (out, next_visible)
    }

    /// One `SendMessageBatch` request as SQS takes it: all of it, or none
    /// when SQS would refuse it (more than ten entries, over 1 MiB, a
    /// message over 256 KiB or with a forbidden character, a group id SQS
    /// would not take).
    pub fn send_request(&self, messages: &[QueueMessage]) -> Result<()> {
        self.send_request_ids(messages).map(drop)
    }

    /// [`MemoryQueue::send_request`], answering each message's id.
    fn send_request_ids<M: std::borrow::Borrow<QueueMessage>>(
        &self,
        messages: &[M],
    ) -> Result<Vec<String>> {
        queue_limits::check_batch(messages)
            .map_err(|e| BackendError::Permanent(format!("SendMessageBatch: {e}")))?;
        let ids = messages
            .iter()
            .map(|m| {
                let m = m.borrow();
                self.push(m.body.clone(), m.tenant.clone(), 0, None)
            })
            .collect();
        self.changed.notify_waiters();
        Ok(ids)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_batch_ids(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>> {
        // Cut as the SQS adapter cuts, each batch a request SQS would take.
        let plan = queue_limits::plan_batches(messages);
        let mut ids: Vec<Option<String>> = vec![None; messages.len()];
        for batch in plan.batches {
            let chunk: Vec<&QueueMessage> = batch.iter().map(|i| &messages[*i]).collect();
            if let Ok(sent) = self.send_request_ids(&chunk) {
                for (i, id) in batch.into_iter().zip(sent) {
                    ids[i] = Some(id);
                }
            }
        }
        Ok(ids)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, next_visible) = self.take_visible(max.clamp(1, 10));
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let wake = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        {
            let mut st = lock(&self.state);
            let invalid = || BackendError::Permanent("receipt handle is invalid or expired".into());
            let Some(seq) = st.receipts.get(receipt_handle).copied() else {
                if let Some(m) = st
                    .stale
                    .get(receipt_handle)
                    .and_then(|s| st.messages.get(s))
                {
                    st.saw(QueueEvent::StaleVisibilityChange {
                        id: &m.id,
                        body: &m.body,
                    });
                }
                return Err(invalid());
            };
            let delay = st.behaviour.visibility(delay);
            let received_at = st.messages.get(&seq).ok_or_else(invalid)?.received_at;
            let now = Instant::now();
            if (now + delay).duration_since(received_at) > MAX_VISIBILITY {
                return Err(BackendError::Permanent(format!(
                    "ChangeMessageVisibility: hiding the message for {} s more would take it past {} s from its receipt",
                    delay.as_secs_f64(),
                    MAX_VISIBILITY.as_secs()
                )));
            }
            st.expire_flights(now);
            st.land(seq, now);
            let (hidden_until, tenant) = st
                .messages
                .get(&seq)
                .map(|m| (m.visible_at, m.tenant.clone()))
                .ok_or_else(invalid)?;
            let was_in_flight = st.in_flight.remove(&(hidden_until, seq));
            st.set_visible_at(seq, now + delay);
            // Hidden again, it stays in flight; made visible, it is back.
            if was_in_flight {
                if delay.is_zero() {
                    st.fairness.released(tenant.as_deref());
                } else {
                    st.in_flight.insert((now + delay, seq));
                }
            }
            if let Some(m) = st.messages.get(&seq) {
                st.saw(QueueEvent::Hidden {
                    id: &m.id,
                    body: &m.body,
                    receipt: receipt_handle,
                    delay,
                });
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        let mut st = lock(&self.state);
        let now = Instant::now();
        for handle in receipt_handles {
            let (seq, stale) = match (st.receipts.get(handle), st.stale.get(handle)) {
                (Some(seq), _) => (*seq, false),
                (None, Some(seq)) => (*seq, true),
                (None, None) => continue,
            };
            // Through a stale receipt SQS may delete it or keep it.
            let rate = st.behaviour.stale_delete_deletes;
            let deleted = !stale || st.chance.one_in(rate);
            if let Some(m) = st.messages.get(&seq) {
                let (id, body) = (&m.id, &m.body);
                st.saw(if deleted {
                    QueueEvent::Deleted { id, body, stale }
                } else {
                    QueueEvent::KeptOnStaleDelete { id, body }
                });
            }
            if deleted {
                st.remove(seq, now);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> QueueMessage {
        QueueMessage::untagged(body)
    }

    fn msgs(bodies: &[String]) -> Vec<QueueMessage> {
        bodies.iter().map(QueueMessage::untagged).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn received_messages_hide_until_the_timeout() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&[msg("a")]).await.unwrap();
        let first = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(31)).await;
        let again = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt_handle, first[0].receipt_handle);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_older_than_the_retention_period_are_gone() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&[msg("old")]).await.unwrap();
        tokio::time::advance(RETENTION - Duration::from_secs(60)).await;
        q.send_batch(&[msg("young")]).await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "young");
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_on_changes_wakes_when_a_message_is_sent() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        let sender = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            sender.send_batch(&[msg("a")]).await.unwrap();
        });
        let start = Instant::now();
        tokio::select! {
            () = q.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => panic!("slept through the send"),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn change_visibility_sets_the_next_appearance() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&[msg("a")]).await.unwrap();
        let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        q.change_visibility(&m.receipt_handle, Duration::from_secs(2))
            .await
            .unwrap();
        // A long poll wakes up when the message becomes visible.
        let got = q.receive(1, Duration::from_secs(20)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(q
            .change_visibility("rh-unknown", Duration::ZERO)
            .await
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn no_message_stays_hidden_past_12_hours_from_its_receipt() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&[msg("a")]).await.unwrap();
        let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        q.change_visibility(&m.receipt_handle, MAX_VISIBILITY)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let e = q
            .change_visibility(&m.receipt_handle, MAX_VISIBILITY)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("43200 s from its receipt"), "{e}");
        q.change_visibility(&m.receipt_handle, MAX_VISIBILITY - Duration::from_secs(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn requests_sqs_refuses_are_refused() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        let eleven = vec!["a".to_string(); 11];
        assert!(q.send_request(&msgs(&eleven)).is_err());
        let big = vec!["x".repeat(queue_limits::MAX_MESSAGE_BYTES); 5];
        assert!(q.send_request(&msgs(&big)).is_err());
        assert!(q.send_request(&[msg("\u{FFFE}")]).is_err());
        assert!(q.send_request(&[msg("\\ufffe")]).is_ok());
        assert_eq!(q.len(), 1);
        // Through the port, the same bodies are cut into requests it takes.
        assert!(q.send_batch(&msgs(&eleven)).await.unwrap().is_empty());
        assert!(q.send_batch(&msgs(&big)).await.unwrap().is_empty());
        assert_eq!(q.len(), 1 + 11 + 5);
        let refused = q
            .send_batch(&[msg("ok"), msg("\u{FFFF}"), msg(&"x".repeat(300_000))])
            .await
            .unwrap();
        assert_eq!(refused, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_messages_are_gone_and_stale_receipts_do_nothing() {
        let q = MemoryQueue::new(Duration::from_secs(1));
        q.send_batch(&[msg("a")]).await.unwrap();
        let old = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        tokio::time::advance(Duration::from_secs(2)).await;
        let new = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        q.delete_batch(&[old.receipt_handle]).await.unwrap();
        assert_eq!(q.len(), 1);
        q.delete_batch(&[new.receipt_handle]).await.unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn redrive_moves_over_received_messages_to_the_dead_letter_queue() {
        let dlq = MemoryQueue::new(Duration::from_secs(30));
        let q = MemoryQueue::with_redrive(Duration::from_secs(1), dlq.clone(), 2);
        q.send_batch(&[msg("poison")]).await.unwrap();
        for _ in 0..2 {
            assert_eq!(q.receive(1, Duration::ZERO).await.unwrap().len(), 1);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
        assert!(q.is_empty());
        assert_eq!(dlq.bodies(), vec!["poison".to_string()]);
    }

    fn of(tenant: &str, n: usize) -> Vec<QueueMessage> {
        (0..n)
            .map(|i| QueueMessage::new(format!("{tenant}-{i}"), tenant))
            .collect()
    }

    async fn drain(q: &MemoryQueue, n: usize) -> Vec<ReceivedMessage> {
        let mut got = Vec::new();
        while got.len() < n {
            let batch = q.receive(10, Duration::ZERO).await.unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_comes_back_with_its_messages() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&[QueueMessage::new("a", "org:acme"), msg("b")])
            .await
            .unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].tenant.as_deref(), Some("org:acme"));
        assert_eq!(got[1].tenant, None);
        // A group id SQS refuses is refused here too.
        assert_eq!(
            q.send_batch(&[QueueMessage::new("c", "a space")])
                .await
                .unwrap(),
            [0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_noisy_tenant_messages_come_in_order() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        for i in 0..6 {
            let tenant = if i % 2 == 0 { "org:a" } else { "org:b" };
            q.send_batch(&[QueueMessage::new(format!("m{i}"), tenant)])
                .await
                .unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_with_many_in_flight_waits_behind_quiet_ones() {
        let q = MemoryQueue::new(Duration::from_secs(300));
        q.send_batch(&of("org:noisy", 100)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        // Forty of its messages in flight: over 10 % and at least 30.
        assert_eq!(drain(&q, 40).await.len(), 40);
        q.send_batch(&of("org:quiet", 5)).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        let tenants: Vec<&str> = got.iter().filter_map(|m| m.tenant.as_deref()).collect();
        assert_eq!(tenants[..5], ["org:quiet"; 5]);
        assert_eq!(tenants[5..], ["org:noisy"; 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn under_thirty_in_flight_a_busy_tenant_keeps_its_place() {
        let q = MemoryQueue::new(Duration::from_secs(300));
        q.send_batch(&of("org:busy", 50)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(drain(&q, 20).await.len(), 20);
        q.send_batch(&of("org:other", 5)).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert!(got.iter().all(|m| m.tenant.as_deref() == Some("org:busy")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_taking_most_of_the_consumers_time_waits_behind_quiet_ones() {
        let q = MemoryQueue::new(Duration::from_secs(300));
        // One slow message of "slow" (held 20 s), one quick one of "fast".
        q.send_batch(&[
            QueueMessage::new("s", "org:slow"),
            QueueMessage::new("f", "org:fast"),
        ])
        .await
        .unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        let handle = |t: &str| {
            got.iter()
                .find(|m| m.tenant.as_deref() == Some(t))
                .map(|m| m.receipt_handle.clone())
                .unwrap()
        };
        q.delete_batch(&[handle("org:fast")]).await.unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        q.delete_batch(&[handle("org:slow")]).await.unwrap();
        // Now "slow" sends first, "fast" after; "fast" is served first.
        q.send_batch(&of("org:slow", 3)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        q.send_batch(&of("org:fast", 3)).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        let tenants: Vec<&str> = got.iter().filter_map(|m| m.tenant.as_deref()).collect();
        assert_eq!(
            tenants,
            ["org:fast", "org:fast", "org:fast", "org:slow", "org:slow", "org:slow"]
        );
        // Long after, its time is forgotten: order is by arrival again.
        q.delete_batch(
            &got.iter()
                .map(|m| m.receipt_handle.clone())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        tokio::time::advance(fair::PROCESSING_WINDOW * 20).await;
        q.send_batch(&of("org:slow", 1)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        q.send_batch(&of("org:fast", 1)).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].tenant.as_deref(), Some("org:slow"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_message_stays_in_flight_and_counts() {
        let q = MemoryQueue::new(Duration::from_secs(300));
        q.send_batch(&of("org:noisy", 40)).await.unwrap();
        let got = drain(&q, 40).await;
        // Hidden again (a deferral), still in flight: still noisy.
        for m in &got {
            q.change_visibility(&m.receipt_handle, Duration::from_secs(60))
                .await
                .unwrap();
        }
        q.send_batch(&of("org:noisy", 5)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        q.send_batch(&of("org:quiet", 1)).await.unwrap();
        let got = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].tenant.as_deref(), Some("org:quiet"));
        // Back on the queue after their deferral they are out of flight,
        // and a deferral took none of the consumers' time: nothing makes
        // "noisy" noisy any more, and order is by arrival again.
        tokio::time::advance(Duration::from_secs(61)).await;
        q.send_batch(&of("org:quiet", 1)).await.unwrap();
        let got = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].tenant.as_deref(), Some("org:noisy"));
    }

    #[tokio::test(start_paused = true)]
    async fn among_noisy_tenants_the_one_with_fewest_in_flight_goes_first() {
        let q = MemoryQueue::new(Duration::from_secs(300));
        q.send_batch(&of("org:a", 60)).await.unwrap();
        // a: 40 in flight, noisy.
        assert_eq!(drain(&q, 40).await.len(), 40);
        tokio::time::advance(Duration::from_millis(1)).await;
        q.send_batch(&of("org:b", 60)).await.unwrap();
        // b is quiet, so it is served until it has 30 in flight itself.
        let got = drain(&q, 30).await;
        assert!(got.iter().all(|m| m.tenant.as_deref() == Some("org:b")));
        // Both noisy now: b has fewer in flight (30 against 40).
        let got = q.receive(5, Duration::ZERO).await.unwrap();
        assert!(got.iter().all(|m| m.tenant.as_deref() == Some("org:b")));
    }

    /// Every event a watch saw, as text.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl QueueWatch for Seen {
        fn saw(&self, event: QueueEvent<'_>) {
            let what = match event {
                QueueEvent::Sent { body, .. } => format!("sent {body}"),
                QueueEvent::Received {
                    body,
                    receive_count,
                    duplicate,
                    ..
                } => format!("received {body} #{receive_count} dup={duplicate}"),
                QueueEvent::Hidden { body, delay, .. } => {
                    format!("hidden {body} {} ms", delay.as_millis())
                }
                QueueEvent::Deleted { body, stale, .. } => format!("deleted {body} stale={stale}"),
                QueueEvent::KeptOnStaleDelete { body, .. } => format!("kept {body}"),
                QueueEvent::StaleVisibilityChange { body, .. } => format!("stale hide {body}"),
                QueueEvent::Redriven { body, .. } => format!("redriven {body}"),
                QueueEvent::Expired { body, .. } => format!("expired {body}"),
            };
            lock(&self.0).push(what);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_handed_out_twice_leaves_its_first_receipt_stale() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        let seen = Arc::new(Seen::default());
        q.watch(seen.clone());
        q.behave(SqsBehaviour {
            duplicate_rate: 1.0,
            stale_delete_deletes: 0.0,
            ..SqsBehaviour::default()
        });
        q.send_batch(&[msg("a")]).await.unwrap();
        let first = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1, "once per receive");
        // The next receive, at the same instant, gets it again.
        q.behave(SqsBehaviour::default());
        let second = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(second[0].message_id, first[0].message_id);
        assert_eq!(second[0].receive_count, 2);
        // The first receipt is stale: no visibility change, and a delete
        // through it may keep the message (here it does).
        assert!(q
            .change_visibility(&first[0].receipt_handle, Duration::from_secs(5))
            .await
            .is_err());
        q.behave(SqsBehaviour {
            stale_delete_deletes: 0.0,
            ..SqsBehaviour::default()
        });
        q.delete_batch(std::slice::from_ref(&first[0].receipt_handle))
            .await
            .unwrap();
        assert_eq!(q.len(), 1);
        // ... or delete it.
        q.behave(SqsBehaviour {
            stale_delete_deletes: 1.0,
            ..SqsBehaviour::default()
        });
        q.delete_batch(std::slice::from_ref(&first[0].receipt_handle))
            .await
            .unwrap();
        assert!(q.is_empty());
        assert_eq!(
            *lock(&seen.0),
            [
                "sent a",
                "received a #1 dup=true",
                "received a #2 dup=false",
                "stale hide a",
                "kept a",
                "deleted a stale=true"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_whole_seconds_a_visibility_change_rounds_up() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.behave(SqsBehaviour {
            whole_seconds: true,
            ..SqsBehaviour::default()
        });
        q.send_batch(&[msg("a")]).await.unwrap();
        let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        q.change_visibility(&m.receipt_handle, Duration::from_millis(1200))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(q.receive(1, Duration::ZERO).await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_sees_redrives_and_expiries() {
        let dlq = MemoryQueue::new(Duration::from_secs(30));
        let q = MemoryQueue::with_redrive(Duration::from_secs(1), dlq, 1);
        let seen = Arc::new(Seen::default());
        q.watch(seen.clone());
        q.send_batch(&[msg("poison")]).await.unwrap();
        q.receive(1, Duration::ZERO).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        q.send_batch(&[msg("old")]).await.unwrap();
        assert!(q.receive(1, Duration::ZERO).await.unwrap()[0].body == "old");
        tokio::time::advance(RETENTION).await;
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(
            *lock(&seen.0),
            [
                "sent poison",
                "received poison #1 dup=false",
                "sent old",
                "redriven poison",
                "received old #1 dup=false",
                "expired old"
            ]
        );
    }
}
