//! What happened to each delivery, message by message: every message of it
//! the queue took (and when it left), every receive (when its handler
//! started, how it ended, until when it hid the message), and every
//! attempt the sender recorded with the retry it scheduled. The queue's
//! side comes from its [`QueueWatch`], the handlers' from the world, the
//! records from the store taps ([`crate::tap`]). The lateness invariants
//! ([`crate::lateness`]) explain each wait from these and nothing else.

use crate::coverage::{Coverage, Path};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use webhooks_memory::{QueueEvent, QueueWatch};
use webhooks_ports::Clock;

/// One receive of a message.
#[derive(Debug, Clone)]
pub struct Receive {
    pub receipt: String,
    /// When the queue handed it out.
    pub at: DateTime<Utc>,
    /// When its handler started (after the event source mapping held the
    /// batch a while); `None` until then.
    pub started: Option<DateTime<Utc>>,
    /// When the message is (or was) visible again after this receive: the
    /// visibility timeout from the receive, or what a visibility change
    /// through its receipt set; the receive itself for one handed out
    /// twice.
    pub until: DateTime<Utc>,
    /// The visibility changes made through its receipt: (when, for how
    /// long).
    pub hides: Vec<(DateTime<Utc>, Duration)>,
    /// How its handler ended with it, once known.
    pub outcome: Option<Outcome>,
    /// When the step that handled it ended.
    pub step_ended: Option<DateTime<Utc>>,
}

impl Receive {
    /// Whether its handler was running at `at` (and so may have made an
    /// attempt then).
    pub fn made(&self, at: DateTime<Utc>) -> bool {
        let started = self.started.unwrap_or(self.at).max(self.at);
        self.step_ended
            .is_some_and(|end| (started..=end).contains(&at))
    }
}

/// How a handler ended with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: the event source mapping deletes it.
    Done,
    /// Left on the queue.
    Retry,
    /// The invocation crashed or timed out.
    Crashed,
}

/// One message of a delivery.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub sent: DateTime<Utc>,
    pub receives: Vec<Receive>,
    /// When it left the queue (deleted, redriven, expired).
    pub gone: Option<DateTime<Utc>>,
}

/// An attempt as the sender recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recorded {
    pub number: u32,
    /// When its POST started (before the store rounds it).
    pub at: DateTime<Utc>,
    /// The retry it scheduled, if any (before the store rounds it).
    pub next: Option<DateTime<Utc>>,
    pub status_code: Option<u16>,
    /// When the record was written: a handler that read the delivery
    /// before then did not see it.
    pub written: DateTime<Utc>,
}

/// Everything the ledger holds of one delivery.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub messages: Vec<Message>,
    /// When its last message in the queue left it (it had none from then
    /// until the next was sent).
    pub emptied: Vec<DateTime<Utc>>,
    pub recorded: Vec<Recorded>,
    /// When a reconciler's pass missed it: its read of the index (the
    /// index had not caught up with its write), or its org's turn in a
    /// pass out of time stopped at an error.
    pub index_missed: Vec<DateTime<Utc>>,
}

impl Timeline {
    /// When its first message was sent, if one was.
    pub fn first_queued(&self) -> Option<DateTime<Utc>> {
        self.messages.iter().map(|m| m.sent).min()
    }

    /// Messages in the queue now.
    fn live(&self) -> usize {
        self.messages.iter().filter(|m| m.gone.is_none()).count()
    }
}

struct State {
    deliveries: HashMap<String, Timeline>,
    /// Message id -> (delivery id, index in its timeline).
    messages: HashMap<String, (String, usize)>,
    /// Receipt -> (message id, index of the receive).
    receipts: HashMap<String, (String, usize)>,
    /// The receipts after which SQS handed their message out again at
    /// once (it stayed visible, so another handler may have it too).
    duplicates: std::collections::HashSet<String>,
    /// Delivery -> (attempt number, the message whose handler recorded it).
    recorded_by: HashMap<String, Vec<(u32, Option<String>)>>,
    /// The messages the sender sent as copies of worn ones (renewals).
    renewals: std::collections::HashSet<String>,
    /// The messages SQS moved to the dead-letter queue.
    redriven: std::collections::HashSet<String>,
    /// The deliveries the sender sent to the dead-letter queue itself.
    sender_dead_letters: std::collections::HashSet<String>,
}

/// The per-delivery record, shared by the queue's watch, the taps and the
/// world.
#[derive(Clone)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    coverage: Coverage,
    /// The queue's visibility timeout.
    visibility: chrono::Duration,
    /// The delivery id a message body carries.
    delivery_of: fn(&str) -> Option<String>,
}

impl Ledger {
    pub fn new(
        clock: Arc<dyn Clock>,
        coverage: Coverage,
        visibility: Duration,
        delivery_of: fn(&str) -> Option<String>,
    ) -> Self {
        Ledger {
            state: Arc::new(Mutex::new(State {
                deliveries: HashMap::new(),
                messages: HashMap::new(),
                receipts: HashMap::new(),
                duplicates: std::collections::HashSet::new(),
                recorded_by: HashMap::new(),
                renewals: std::collections::HashSet::new(),
                redriven: std::collections::HashSet::new(),
                sender_dead_letters: std::collections::HashSet::new(),
            })),
            clock,
            coverage,
            visibility: chrono::Duration::from_std(visibility).unwrap_or_default(),
            delivery_of,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything known of `delivery_id`.
    pub fn timeline(&self, delivery_id: &str) -> Timeline {
        self.state()
            .deliveries
            .get(delivery_id)
            .cloned()
            .unwrap_or_default()
    }

    /// When the first message of `delivery_id` was sent, if one was.
    pub fn first_queued(&self, delivery_id: &str) -> Option<DateTime<Utc>> {
        self.state()
            .deliveries
            .get(delivery_id)
            .and_then(Timeline::first_queued)
    }

    /// Whether a message of `delivery_id` is in the queue now.
    pub fn queued(&self, delivery_id: &str) -> bool {
        self.state()
            .deliveries
            .get(delivery_id)
            .is_some_and(|t| t.live() > 0)
    }

    /// The handler of the receive `receipt` started at `at`.
    pub fn started(&self, receipt: &str, at: DateTime<Utc>) {
        self.with_receive(receipt, |r| r.started = Some(at));
    }

    /// The handler of the receive `receipt` ended with it so, in a step
    /// that ended at `step_ended`.
    pub fn ended(&self, receipt: &str, outcome: Outcome, step_ended: DateTime<Utc>) {
        self.with_receive(receipt, |r| {
            r.outcome = Some(outcome);
            r.step_ended = Some(step_ended);
        });
    }

    /// The sender recorded attempt `recorded` of `delivery_id`.
    pub fn recorded(&self, delivery_id: &str, recorded: Recorded) {
        self.state()
            .deliveries
            .entry(delivery_id.to_string())
            .or_default()
            .recorded
            .push(recorded);
    }

    /// The handler of the message `message` recorded attempt `number` of
    /// `delivery_id`.
    pub fn recorded_by(&self, delivery_id: &str, number: u32, message: Option<String>) {
        self.state()
            .recorded_by
            .entry(delivery_id.to_string())
            .or_default()
            .push((number, message));
    }

    /// Whether attempt `number` of `delivery_id` was recorded by a handler
    /// of the message `message`.
    pub fn was_recorded_by(&self, delivery_id: &str, number: u32, message: &str) -> bool {
        self.state().recorded_by.get(delivery_id).is_some_and(|r| {
            r.iter()
                .any(|(n, m)| *n == number && m.as_deref() == Some(message))
        })
    }

    /// Whether SQS has the message `id` in two handlers at once now: two
    /// of its receives whose handlers have not ended, one of them followed
    /// by SQS handing the message out again at once (a duplicate receive).
    /// Only then may one message make its delivery's first attempt twice.
    pub fn twice_at_once(&self, id: &str) -> bool {
        let mut st = self.state();
        let duplicates = std::mem::take(&mut st.duplicates);
        let twice = Self::message(&mut st, id).is_some_and(|(t, m)| {
            let open: Vec<&Receive> = t.messages[m]
                .receives
                .iter()
                .filter(|r| r.outcome.is_none())
                .collect();
            open.len() >= 2 && open.iter().any(|r| duplicates.contains(&r.receipt))
        });
        st.duplicates = duplicates;
        twice
    }

    /// The sender sent the message `id` as the copy of a worn message.
    pub fn renewed(&self, id: &str) {
        self.state().renewals.insert(id.to_string());
    }

    /// Whether the message `id` is a renewal's copy.
    pub fn is_renewal(&self, id: &str) -> bool {
        self.state().renewals.contains(id)
    }

    /// Whether SQS redrove a message of `delivery_id` that had been
    /// renewed, and every message of it in the queue now is such a copy.
    /// The renewal's send answered an error after SQS took the copy (or the
    /// invocation died after it), or the worn message's delete failed: the
    /// worn one was left on the queue and redriven, and the redrive net,
    /// which sees only the dead letter and a record that still names it,
    /// cannot know of the copy. Its message is then a second one, and the
    /// chain keeps one of the two attempting.
    pub fn redriven_beside_renewal(&self, delivery_id: &str) -> bool {
        let st = self.state();
        let Some(t) = st.deliveries.get(delivery_id) else {
            return false;
        };
        let renewal = |m: &&Message| st.renewals.contains(&m.id);
        let mut live = t.messages.iter().filter(|m| m.gone.is_none()).peekable();
        if live.peek().is_none() || !live.all(|m| renewal(&m)) {
            return false;
        }
        t.messages
            .iter()
            .filter(|r| st.redriven.contains(&r.id))
            .filter_map(|r| r.gone)
            .any(|at| {
                t.messages
                    .iter()
                    .filter(renewal)
                    .any(|c| c.sent <= at && c.gone.is_none_or(|g| g >= at))
            })
    }

    /// The sender sent a dead letter of `delivery_id` to the dead-letter
    /// queue itself (after a 410 or its last attempt).
    pub fn dead_lettered_by(&self, delivery_id: &str) {
        self.state()
            .sender_dead_letters
            .insert(delivery_id.to_string());
    }

    /// Whether the sender sent a dead letter of `delivery_id` itself: one
    /// the redrive net reads while the delivery is still pending (its
    /// record failed after the send) settles it as a lost message, though
    /// its own message is alive.
    pub fn dead_lettered_by_sender(&self, delivery_id: &str) -> bool {
        self.state().sender_dead_letters.contains(delivery_id)
    }

    /// The reconciler's read of the index at `at` missed `delivery_id`.
    pub fn index_missed(&self, delivery_id: &str, at: DateTime<Utc>) {
        self.state()
            .deliveries
            .entry(delivery_id.to_string())
            .or_default()
            .index_missed
            .push(at);
    }

    fn with_receive(&self, receipt: &str, f: impl FnOnce(&mut Receive)) {
        let mut st = self.state();
        let Some((message, i)) = st.receipts.get(receipt).cloned() else {
            return;
        };
        let Some((delivery, m)) = st.messages.get(&message).cloned() else {
            return;
        };
        let receive = st
            .deliveries
            .get_mut(&delivery)
            .and_then(|t| t.messages.get_mut(m))
            .and_then(|m| m.receives.get_mut(i));
        if let Some(r) = receive {
            f(r);
        }
    }

    /// The message `id`'s place: its delivery's timeline and its index.
    fn message<'a>(st: &'a mut State, id: &str) -> Option<(&'a mut Timeline, usize)> {
        let (delivery, m) = st.messages.get(id)?.clone();
        st.deliveries.get_mut(&delivery).map(|t| (t, m))
    }

    /// The message `id` left the queue at `now`.
    fn gone(st: &mut State, id: &str, now: DateTime<Utc>) {
        if let Some((t, m)) = Self::message(st, id) {
            t.messages[m].gone = Some(now);
            if t.live() == 0 {
                t.emptied.push(now);
            }
        }
    }
}

impl QueueWatch for Ledger {
    fn saw(&self, event: QueueEvent<'_>) {
        let now = self.clock.now();
        let mut st = self.state();
        match event {
            QueueEvent::Sent { id, body } => {
                let Some(delivery) = (self.delivery_of)(body) else {
                    return;
                };
                let t = st.deliveries.entry(delivery.clone()).or_default();
                t.messages.push(Message {
                    id: id.to_string(),
                    sent: now,
                    receives: Vec::new(),
                    gone: None,
                });
                let m = t.messages.len() - 1;
                st.messages.insert(id.to_string(), (delivery, m));
            }
            QueueEvent::Received {
                id,
                receipt,
                duplicate,
                ..
            } => {
                if duplicate {
                    self.coverage.add(Path::SqsDuplicate);
                    st.duplicates.insert(receipt.to_string());
                }
                let visibility = self.visibility;
                let Some((t, m)) = Self::message(&mut st, id) else {
                    return;
                };
                let receives = &mut t.messages[m].receives;
                receives.push(Receive {
                    receipt: receipt.to_string(),
                    at: now,
                    started: None,
                    until: if duplicate { now } else { now + visibility },
                    hides: Vec::new(),
                    outcome: None,
                    step_ended: None,
                });
                let i = receives.len() - 1;
                st.receipts.insert(receipt.to_string(), (id.to_string(), i));
            }
            QueueEvent::Hidden {
                id, receipt, delay, ..
            } => {
                let Some(&(_, i)) = st.receipts.get(receipt) else {
                    return;
                };
                if let Some((t, m)) = Self::message(&mut st, id) {
                    if let Some(r) = t.messages[m].receives.get_mut(i) {
                        r.hides.push((now, delay));
                        r.until = now + chrono::Duration::from_std(delay).unwrap_or_default();
                    }
                }
            }
            QueueEvent::Deleted { id, stale, .. } => {
                if stale {
                    self.coverage.add(Path::StaleReceipt);
                }
                Self::gone(&mut st, id, now);
            }
            QueueEvent::KeptOnStaleDelete { .. } | QueueEvent::StaleVisibilityChange { .. } => {
                self.coverage.add(Path::StaleReceipt);
            }
            QueueEvent::Redriven { id, .. } => {
                self.coverage.add(Path::SqsRedrive);
                st.redriven.insert(id.to_string());
                Self::gone(&mut st, id, now);
            }
            QueueEvent::Expired { id, .. } => {
                self.coverage.add(Path::QueueRetention);
                Self::gone(&mut st, id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_ports::SystemClock;

    #[test]
    fn a_delivery_is_queued_while_a_message_of_it_is_in_the_queue() {
        let ledger = Ledger::new(
            SystemClock::shared(),
            Coverage::default(),
            Duration::from_secs(180),
            |body| Some(body.to_string()),
        );
        assert!(!ledger.queued("d"));
        ledger.saw(QueueEvent::Sent {
            id: "m1",
            body: "d",
        });
        assert!(ledger.queued("d"));
        // SQS redrove it: the delivery has no message left.
        ledger.saw(QueueEvent::Redriven {
            id: "m1",
            body: "d",
        });
        assert!(!ledger.queued("d"));
        ledger.saw(QueueEvent::Sent {
            id: "m2",
            body: "d",
        });
        assert!(ledger.queued("d"));
    }

    fn ledger() -> Ledger {
        Ledger::new(
            SystemClock::shared(),
            Coverage::default(),
            Duration::from_secs(180),
            |body| Some(body.to_string()),
        )
    }

    fn sent(ledger: &Ledger, id: &str) {
        ledger.saw(QueueEvent::Sent { id, body: "d" });
    }

    #[test]
    fn a_renewed_message_redriven_all_the_same_leaves_its_copy_unseen() {
        let ledger = ledger();
        sent(&ledger, "worn");
        sent(&ledger, "copy");
        ledger.renewed("copy");
        assert!(!ledger.redriven_beside_renewal("d"), "nothing redriven yet");
        ledger.saw(QueueEvent::Redriven {
            id: "worn",
            body: "d",
        });
        assert!(ledger.redriven_beside_renewal("d"));
        // The copy renewed in its turn: its own copy carries the delivery.
        sent(&ledger, "copy2");
        ledger.renewed("copy2");
        ledger.saw(QueueEvent::Deleted {
            id: "copy",
            body: "d",
            stale: false,
        });
        assert!(ledger.redriven_beside_renewal("d"));
    }

    #[test]
    fn a_dead_letter_the_sender_sent_itself_is_noted_by_delivery() {
        let ledger = ledger();
        assert!(!ledger.dead_lettered_by_sender("d"));
        ledger.dead_lettered_by("d");
        assert!(ledger.dead_lettered_by_sender("d"));
        assert!(!ledger.dead_lettered_by_sender("e"));
    }

    #[test]
    fn a_redriven_message_without_a_renewal_beside_it_is_no_exception() {
        // Redriven with no copy: the net's message is the only one.
        let ledger = ledger();
        sent(&ledger, "only");
        ledger.saw(QueueEvent::Redriven {
            id: "only",
            body: "d",
        });
        assert!(!ledger.redriven_beside_renewal("d"));
        // A copy sent after the redrive is not one the redrive outlived.
        sent(&ledger, "late");
        ledger.renewed("late");
        assert!(!ledger.redriven_beside_renewal("d"));
        // A message that is not a renewal is in the queue beside the copy.
        let ledger2 = self::ledger();
        sent(&ledger2, "worn");
        sent(&ledger2, "copy");
        ledger2.renewed("copy");
        sent(&ledger2, "other");
        ledger2.saw(QueueEvent::Redriven {
            id: "worn",
            body: "d",
        });
        assert!(!ledger2.redriven_beside_renewal("d"));
    }
}
