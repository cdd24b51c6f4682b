use crate::sync::lock;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use webhooks_ports::queue_limits::{self, MAX_VISIBILITY};
use webhooks_ports::queue_settings::QUEUE_RETENTION_SECS;
use webhooks_ports::{BackendError, Queue, ReceivedMessage, Result};

/// An SQS queue in memory: a received message stays invisible for the
/// visibility timeout unless deleted, comes back with a higher receive count,
/// and moves to the dead-letter queue once received more than
/// `max_receive_count` times. It refuses what SQS refuses
/// ([`queue_limits`]): a message over 256 KiB or with a character SQS does
/// not carry, a batch request of more than ten entries or over 1 MiB, and a
/// visibility change that would hide a message for more than 12 h from its
/// receipt. Like SQS, it deletes a message once it has been in the queue
/// for the retention period (14 days), received or not.
pub struct MemoryQueue {
    state: Mutex<State>,
    changed: Notify,
    visibility_timeout: Duration,
    redrive: Option<(Arc<MemoryQueue>, u32)>,
}

/// How long SQS keeps a message: the queues are set to the maximum.
const RETENTION: Duration = Duration::from_secs(QUEUE_RETENTION_SECS as u64);

/// The queue's messages, indexed as SQS would need to serve them at
/// scale: by id, by when each becomes visible, and by receipt handle.
#[derive(Default)]
struct State {
    messages: BTreeMap<u64, Message>,
    /// (visible at, id) of every message: receives take the earliest.
    by_visibility: BTreeSet<(Instant, u64)>,
    receipts: HashMap<String, u64>,
    next_id: u64,
    next_receipt: u64,
}

struct Message {
    id: String,
    body: String,
    visible_at: Instant,
    receive_count: u32,
    receipt: Option<String>,
    /// When the current receipt was handed out.
    received_at: Instant,
    /// When it was sent: it is deleted after the retention period.
    sent_at: Instant,
}

impl State {
    fn remove(&mut self, seq: u64) -> Option<Message> {
        let m = self.messages.remove(&seq)?;
        self.by_visibility.remove(&(m.visible_at, seq));
        if let Some(r) = &m.receipt {
            self.receipts.remove(r);
        }
        Some(m)
    }

    fn set_visible_at(&mut self, seq: u64, at: Instant) {
        if let Some(m) = self.messages.get_mut(&seq) {
            self.by_visibility.remove(&(m.visible_at, seq));
            m.visible_at = at;
            self.by_visibility.insert((at, seq));
        }
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

    fn push(&self, body: String, receive_count: u32) {
        let mut st = lock(&self.state);
        st.next_id += 1;
        let seq = st.next_id;
        let now = Instant::now();
        st.messages.insert(
            seq,
            Message {
                id: format!("msg-{seq}"),
                body,
                visible_at: now,
                receive_count,
                receipt: None,
                received_at: now,
                sent_at: now,
            },
        );
        st.by_visibility.insert((now, seq));
    }

    /// Takes up to `max` visible messages, earliest visible first, moving
    /// over-received ones to the dead-letter queue and dropping those past
    /// retention. Returns the messages and the earliest time another
    /// message becomes visible.
    fn take_visible(&self, max: usize) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut to_dlq = Vec::new();
        let next_visible;
        {
            let mut st = lock(&self.state);
            while out.len() < max {
                let Some(&(at, seq)) = st.by_visibility.first() else {
                    break;
                };
                if at > now {
                    break;
                }
                let Some(m) = st.messages.get(&seq) else {
                    st.by_visibility.remove(&(at, seq));
                    continue;
                };
                if now.duration_since(m.sent_at) >= RETENTION {
                    st.remove(seq);
                    continue;
                }
                if let Some((_, max_receives)) = &self.redrive {
                    if m.receive_count >= *max_receives {
                        if let Some(m) = st.remove(seq) {
                            to_dlq.push(m.body);
                        }
                        continue;
                    }
                }
                st.next_receipt += 1;
                let receipt = format!("rh-{}", st.next_receipt);
                st.set_visible_at(seq, now + self.visibility_timeout);
                let old = st.messages.get_mut(&seq).and_then(|m| {
                    m.receive_count += 1;
                    m.received_at = now;
                    m.receipt.replace(receipt.clone())
                });
                if let Some(old) = old {
                    st.receipts.remove(&old);
                }
                st.receipts.insert(receipt.clone(), seq);
                if let Some(m) = st.messages.get(&seq) {
                    out.push(ReceivedMessage {
                        message_id: m.id.clone(),
                        body: m.body.clone(),
                        receipt_handle: receipt,
                        receive_count: m.receive_count,
                        age: Some(now.duration_since(m.sent_at)),
                    });
                }
            }
            next_visible = st.by_visibility.first().map(|(at, _)| *at);
        }
        if let Some((dlq, _)) = &self.redrive {
            for body in to_dlq {
                dlq.push(body, 0);
                dlq.changed.notify_waiters();
            }
        }
        (out, next_visible)
    }

    /// One `SendMessageBatch` request as SQS takes it: all of it, or none
    /// when SQS would refuse it (more than ten entries, over 1 MiB, a
    /// message over 256 KiB or with a forbidden character).
    pub fn send_request(&self, bodies: &[String]) -> Result<()> {
        queue_limits::check_batch(bodies)
            .map_err(|e| BackendError::Permanent(format!("SendMessageBatch: {e}")))?;
        for body in bodies {
            self.push(body.clone(), 0);
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<usize>> {
        // Cut as the SQS adapter cuts, each batch a request SQS would take.
        let plan = queue_limits::plan_batches(bodies);
        let mut refused: Vec<usize> = plan.refused.iter().map(|(i, _)| *i).collect();
        for batch in plan.batches {
            let chunk: Vec<String> = batch.iter().map(|i| bodies[*i].clone()).collect();
            if self.send_request(&chunk).is_err() {
                refused.extend(batch);
            }
        }
        refused.sort_unstable();
        Ok(refused)
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
            let seq = *st.receipts.get(receipt_handle).ok_or_else(invalid)?;
            let received_at = st.messages.get(&seq).ok_or_else(invalid)?.received_at;
            let now = Instant::now();
            if (now + delay).duration_since(received_at) > MAX_VISIBILITY {
                return Err(BackendError::Permanent(format!(
                    "ChangeMessageVisibility: hiding the message for {} s more would take it past {} s from its receipt",
                    delay.as_secs_f64(),
                    MAX_VISIBILITY.as_secs()
                )));
            }
            st.set_visible_at(seq, now + delay);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        let mut st = lock(&self.state);
        for handle in receipt_handles {
            if let Some(seq) = st.receipts.get(handle).copied() {
                st.remove(seq);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn received_messages_hide_until_the_timeout() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&["a".into()]).await.unwrap();
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
        q.send_batch(&["old".into()]).await.unwrap();
        tokio::time::advance(RETENTION - Duration::from_secs(60)).await;
        q.send_batch(&["young".into()]).await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "young");
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn change_visibility_sets_the_next_appearance() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send_batch(&["a".into()]).await.unwrap();
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
        q.send_batch(&["a".into()]).await.unwrap();
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
        assert!(q.send_request(&eleven).is_err());
        let big = vec!["x".repeat(queue_limits::MAX_MESSAGE_BYTES); 5];
        assert!(q.send_request(&big).is_err());
        assert!(q.send_request(&["\u{FFFE}".to_string()]).is_err());
        assert!(q.send_request(&["\\ufffe".to_string()]).is_ok());
        assert_eq!(q.len(), 1);
        // Through the port, the same bodies are cut into requests it takes.
        assert!(q.send_batch(&eleven).await.unwrap().is_empty());
        assert!(q.send_batch(&big).await.unwrap().is_empty());
        assert_eq!(q.len(), 1 + 11 + 5);
        let refused = q
            .send_batch(&["ok".into(), "\u{FFFF}".into(), "x".repeat(300_000)])
            .await
            .unwrap();
        assert_eq!(refused, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_messages_are_gone_and_stale_receipts_do_nothing() {
        let q = MemoryQueue::new(Duration::from_secs(1));
        q.send_batch(&["a".into()]).await.unwrap();
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
        q.send_batch(&["poison".into()]).await.unwrap();
        for _ in 0..2 {
            assert_eq!(q.receive(1, Duration::ZERO).await.unwrap().len(), 1);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
        assert!(q.is_empty());
        assert_eq!(dlq.bodies(), vec!["poison".to_string()]);
    }
}
