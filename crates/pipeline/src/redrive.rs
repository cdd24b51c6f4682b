//! The redrive net: what becomes of a delivery whose queue message SQS moved
//! to the dead-letter queue (after `maxReceiveCount`, 30, receives that did
//! not finish it: the deliveries table down for 90 minutes, an invocation
//! that dies at the message every time, a record or a dead-letter send that
//! keeps failing after the POST).
//!
//! The sweeper runs it every pass, before the orgs, within a budget
//! ([`RedriveBudget`]). It reads the dead-letter queue and, for each
//! delivery task there, the delivery:
//!
//! - **pending, never scheduled** (no `next_attempt_at`: out of the
//!   reconciler's `pending-by-org` index, so nothing else would ever find
//!   it): its message is lost. The first time, it is sent again as a new
//!   message marked [`DeliveryTask::redriven`], and the dead letter is
//!   deleted. A marked message redriven in its turn ends the delivery:
//!   `dead_lettered` with [`MESSAGE_REDRIVEN`] as its last error (one
//!   attempt recorded, no POST, as for a disabled endpoint), its figures
//!   moved, `delivery.dead_lettered` emitted; the message stays in the
//!   dead-letter queue as every dead-lettered delivery's does. So a
//!   delivery the sender can never get through (a crash loop) is tried
//!   twice, not for ever. Both wait while another message may still carry
//!   the delivery on (a live lease, or a chain not yet lost: the same test
//!   as the sender's renewal, `sender::renew::copy_carries_on`), and the
//!   dead-lettering takes the delivery's lease first, so it never ends a
//!   delivery under a running attempt.
//! - **no record**, and its event still there and younger than the
//!   records' TTL (30 days from creation, so a record made after the event
//!   cannot have expired yet): the fan-out sent the message and stopped
//!   before its create, and the sender never got to create it either. Sent
//!   again the same way (the sender creates the record on arrival); a
//!   second redrive creates it and dead-letters it as above. Otherwise the
//!   record is gone with its event (the sender's own dead letter of a
//!   delivery that has since expired): left for the operators, as is a
//!   task whose ids do not make its delivery id (not the fan-out's).
//! - **pending with a retry scheduled** (attempted, or queued again by
//!   hand): in the reconciler's index, which queues it again once overdue;
//!   the dead letter is deleted, nothing is queued here (no second message).
//! - **finished**, a poison message or an operational notice: left for the
//!   operators, hidden for SQS's 12 h so that a pass reads each at most
//!   twice a day (the sender's own dead letters go there too).
//!
//! (A dead letter the sender sent itself, for an attempt whose record then
//! failed, finds its delivery still pending and is settled the same way:
//! its own message is alive, so the copy or the reconciler's message is one
//! the fence drops.)
//!
//! On the happy path the dead-letter queue is empty and a pass costs one
//! empty receive. SQS's redrive is invisible to `NumberOfMessagesSent`, so
//! the counts here are the only trace of it: the sweeper reports them
//! (`RedrivenMessages`, `DeadLetters` with `Cause=redriven`).

use crate::ops::OpsNotifier;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::delivery::{delivery_id, STUCK_AFTER};
use webhooks_domain::ops::OpsNotice;
use webhooks_domain::retry::MAX_HIDE_PER_RECEIVE;
use webhooks_domain::stats::{bucket_hour, StatsDelta};
use webhooks_domain::{Attempt, Delivery, DeliveryStatus, DeliveryTask};
use webhooks_ports::table_retention::RECORD_DAYS;
use webhooks_ports::{
    Adapters, AttemptUpdate, BackendError, Clock, DeliveryStore, EndpointStatsStore, EventStore,
    Lease, Queue, QueueMessage, ReceivedMessage,
};

/// The last error of a delivery the net dead-lettered: its message was
/// redriven twice without an attempt being recorded.
pub const MESSAGE_REDRIVEN: &str = "message_redriven";

/// How long the net's lease on a delivery it dead-letters lasts: it
/// records at once.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// How much of the dead-letter queue one pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveBudget {
    /// Messages received per pass, at most.
    pub messages: usize,
    /// Time per pass, at most (checked between receives).
    pub time: Duration,
    /// How long each receive waits for a message: SQS long polling, so that
    /// an almost empty queue does not answer empty (a short poll asks only
    /// some of its servers).
    pub wait: Duration,
}

impl Default for RedriveBudget {
    /// 1,000 messages or 30 s of the sweeper's 240: a dead-letter queue of
    /// up to 144,000 parked messages is read through every 12 h.
    fn default() -> Self {
        RedriveBudget {
            messages: 1_000,
            time: Duration::from_secs(30),
            wait: Duration::from_secs(1),
        }
    }
}

/// What one pass did with the messages it read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// Deliveries whose message was redriven, sent again.
    pub retried: usize,
    /// Deliveries whose message was redriven a second time, dead-lettered.
    pub dead_lettered: usize,
    /// Redriven messages of deliveries with a retry scheduled, left to the
    /// reconciler (deleted from the dead-letter queue).
    pub to_reconciler: usize,
    /// Messages left for the operators (hidden for 12 h).
    pub parked: usize,
    /// Messages of deliveries another message may still carry on, or that
    /// could not be settled now: looked at again by a later pass.
    pub waiting: usize,
    /// Whether the pass stopped at an error (the next one carries on).
    pub failed: bool,
}

impl Redriven {
    /// Delivery messages SQS redrove that this pass settled: the figure that
    /// pages (the sender failed one message 30 times).
    pub fn redriven(&self) -> usize {
        self.retried + self.dead_lettered + self.to_reconciler
    }
}

/// What became of one message.
enum Settled {
    Retried,
    DeadLettered,
    ToReconciler,
    Parked,
    Waiting,
}

/// The redrive net (run by the sweeper, once per pass).
pub struct RedriveNet {
    dead_letters: Arc<dyn Queue>,
    queue: Arc<dyn Queue>,
    deliveries: Arc<dyn DeliveryStore>,
    events: Arc<dyn EventStore>,
    stats: Option<Arc<dyn EndpointStatsStore>>,
    notifier: OpsNotifier,
    clock: Arc<dyn Clock>,
    budget: RedriveBudget,
}

impl RedriveNet {
    /// The net over a backend's adapters, emitting no notification.
    pub fn from_adapters(adapters: &Adapters) -> Self {
        RedriveNet {
            dead_letters: adapters.dead_letters.clone(),
            queue: adapters.queue.clone(),
            deliveries: adapters.deliveries.clone(),
            events: adapters.events.clone(),
            stats: Some(adapters.stats.clone()),
            notifier: OpsNotifier::default(),
            clock: adapters.clock.clone(),
            budget: RedriveBudget::default(),
        }
    }

    /// The same net, emitting `delivery.dead_lettered` through `notifier`.
    pub fn with_ops(mut self, notifier: OpsNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// The same net, within `budget` per pass.
    pub fn with_budget(mut self, budget: RedriveBudget) -> Self {
        self.budget = budget;
        self
    }

    /// One pass over the dead-letter queue, within its own budget and the
    /// sweep's `pass` (whichever ends first).
    pub async fn run(&self, pass: &crate::sweeper::Budget) -> Redriven {
        let started = tokio::time::Instant::now();
        let mut done = Redriven::default();
        let mut read = 0;
        while read < self.budget.messages && started.elapsed() < self.budget.time && !pass.spent() {
            let max = (self.budget.messages - read).min(10);
            let batch = match self.dead_letters.receive(max, self.budget.wait).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the dead-letter queue");
                    done.failed = true;
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            read += batch.len();
            if let Err(e) = self.settle_batch(&batch, &mut done).await {
                tracing::warn!(error = %e, "could not read the deliveries of dead letters; they are looked at again next pass");
                done.failed = true;
                break;
            }
        }
        if done.redriven() > 0 {
            tracing::warn!(
                retried = done.retried,
                dead_lettered = done.dead_lettered,
                to_reconciler = done.to_reconciler,
                "SQS redrove delivery messages to the dead-letter queue"
            );
        }
        done
    }

    /// One receive's messages: their deliveries read at once, then each
    /// settled.
    async fn settle_batch(
        &self,
        batch: &[ReceivedMessage],
        done: &mut Redriven,
    ) -> Result<(), BackendError> {
        let tasks: Vec<Option<DeliveryTask>> = batch
            .iter()
            .map(|m| DeliveryTask::from_message(&m.body).ok())
            .collect();
        let ids: Vec<String> = tasks
            .iter()
            .flatten()
            .map(|t| t.delivery_id.clone())
            .collect();
        let found: HashMap<String, Delivery> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.deliveries
                .get_many(&ids)
                .await?
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect()
        };
        let now = self.clock.now();
        let settled = join_all(batch.iter().zip(tasks).map(|(message, task)| {
            let delivery = task
                .as_ref()
                .and_then(|t| found.get(&t.delivery_id))
                .cloned();
            self.settle(message, task, delivery, now)
        }))
        .await;
        for s in settled {
            match s {
                Settled::Retried => done.retried += 1,
                Settled::DeadLettered => done.dead_lettered += 1,
                Settled::ToReconciler => done.to_reconciler += 1,
                Settled::Parked => done.parked += 1,
                Settled::Waiting => done.waiting += 1,
            }
        }
        Ok(())
    }

    /// One message, and its delivery as read (`None`: no record).
    async fn settle(
        &self,
        message: &ReceivedMessage,
        task: Option<DeliveryTask>,
        delivery: Option<Delivery>,
        now: DateTime<Utc>,
    ) -> Settled {
        let Some(task) = task else {
            // Poison, or an operational notice the operator never took.
            return self.park(message).await;
        };
        let delivery = match delivery {
            Some(d) => d,
            None if delivery_id(&task.endpoint_id, &task.event_id) != task.delivery_id => {
                return self.park(message).await;
            }
            None => match self.never_created(&task, now).await {
                Err(e) => {
                    tracing::warn!(delivery_id = %task.delivery_id, error = %e, "could not read the event of a dead letter; next pass");
                    return Settled::Waiting;
                }
                Ok(false) => return self.park(message).await,
                Ok(true) if !task.redriven => return self.retry(message, task, None).await,
                Ok(true) => match self.create(&task, now).await {
                    Some(d) => d,
                    None => return Settled::Waiting,
                },
            },
        };
        if delivery.status.is_terminal() {
            return self.park(message).await;
        }
        if delivery.next_attempt_at.is_some() {
            // The reconciler's: it queues the delivery again once overdue.
            self.delete(message).await;
            tracing::warn!(delivery_id = %delivery.id, "redriven message of a delivery with a retry scheduled; left to the reconciler");
            return Settled::ToReconciler;
        }
        // SQS keeps a message's id when it redrives it: a dead letter that
        // owns its delivery's chain (the fan-out's message owns a fresh
        // delivery from its creation) cannot carry it on from here, and
        // hands it to the message sent again.
        if !crate::sender::renew::copy_carries_on(&delivery, &message.message_id, now) {
            return self.wait(message, &delivery, now).await;
        }
        if task.redriven {
            self.dead_letter(message, delivery, now).await
        } else {
            self.retry(message, task, Some(&delivery)).await
        }
    }

    /// Whether the missing record of `task` was never created: its event
    /// is there and younger than the records' TTL, so the record, made
    /// after it, cannot have expired (and `webhooks dev`'s bound removes an
    /// event with its finished deliveries).
    async fn never_created(
        &self,
        task: &DeliveryTask,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let event = self.events.get(&task.org_id, &task.event_id).await?;
        Ok(event.is_some_and(|e| now - e.created_at < chrono::Duration::days(RECORD_DAYS)))
    }

    /// The record of a task redriven twice that was never created: created
    /// now, to be dead-lettered (`None` on an error).
    async fn create(&self, task: &DeliveryTask, now: DateTime<Utc>) -> Option<Delivery> {
        let delivery = Delivery::new_at(
            &task.org_id,
            &task.endpoint_id,
            &task.event_id,
            task.event_type,
            now,
        );
        match self.deliveries.create_if_absent(&delivery).await {
            Ok(None) => Some(delivery),
            Ok(Some(existing)) => Some(existing),
            Err(e) => {
                tracing::warn!(delivery_id = %task.delivery_id, error = %e, "could not create the delivery of a redriven message");
                None
            }
        }
    }

    /// Sends the task again, marked, hands it `delivery`'s chain if the
    /// dead letter owns it, and deletes the dead letter.
    async fn retry(
        &self,
        message: &ReceivedMessage,
        mut task: DeliveryTask,
        delivery: Option<&Delivery>,
    ) -> Settled {
        task.redriven = true;
        // SQS keeps a message's id when it redrives it: the copy stands
        // for the message a note may name, and gives way as it would have.
        task.stand_for(&message.message_id);
        match self
            .queue
            .send_batch_ids(&[QueueMessage::task(&task)])
            .await
        {
            Ok(ids) if ids.first().is_some_and(Option::is_some) => {
                let owned =
                    delivery.filter(|d| d.chain.as_deref() == Some(message.message_id.as_str()));
                if let (Some(d), Some(Some(new))) = (owned, ids.first()) {
                    let now = self.clock.now();
                    // With a lease that has already ended: no receipt of a
                    // message SQS redrove is still running (its visibility
                    // timeout outlasts the sender's invocations). If this
                    // fails, the new message takes the chain over once it
                    // is lost.
                    let handed = self
                        .deliveries
                        .hand_over(&d.id, &message.message_id, new, now, now)
                        .await;
                    if !matches!(handed, Ok(true)) {
                        tracing::warn!(delivery_id = %d.id, "the redriven message's chain was not handed to the message sent again");
                    }
                }
                self.delete(message).await;
                tracing::warn!(delivery_id = %task.delivery_id, "message redriven by SQS; its delivery was sent again");
                Settled::Retried
            }
            Ok(_) | Err(_) => {
                tracing::warn!(delivery_id = %task.delivery_id, "could not send a redriven delivery again; next pass");
                Settled::Waiting
            }
        }
    }

    /// Ends a delivery whose second message was redriven too, under its
    /// lease; its message stays in the dead-letter queue.
    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Settled {
        // Under the dead letter's own id when it owns the chain (SQS keeps
        // the id of a message it redrives).
        let chain = if delivery.chain.as_deref() == Some(message.message_id.as_str()) {
            message.message_id.clone()
        } else {
            format!("redrive:{}", message.message_id)
        };
        let leased = match self
            .deliveries
            .lease(
                &delivery.id,
                delivery.attempt_count,
                &chain,
                now + LEASE,
                now,
                now - STUCK_AFTER,
            )
            .await
        {
            Ok(Lease::Granted(d)) => d,
            Ok(Lease::Refused(_)) | Err(_) => return Settled::Waiting,
        };
        let update = AttemptUpdate {
            attempt: Attempt {
                number: leased.attempt_count.saturating_add(1),
                at: now,
                status_code: None,
                error: Some(MESSAGE_REDRIVEN.to_string()),
                latency_ms: 0,
                response_body: None,
            },
            status: DeliveryStatus::DeadLettered,
            next_attempt_at: None,
            last_error: Some(MESSAGE_REDRIVEN.to_string()),
            unleased_by: None,
        };
        match self.deliveries.record_attempt(&leased.id, &update).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Settled::Waiting,
        }
        tracing::error!(delivery_id = %leased.id, "message redriven twice; delivery dead-lettered");
        let stats = self.stats.clone();
        if let Some(stats) = stats {
            let delta = StatsDelta {
                failed_attempts: 1,
                ..StatsDelta::moved(None, Some(DeliveryStatus::DeadLettered))
            };
            if let Err(e) = stats
                .add(&leased.endpoint_id, bucket_hour(leased.created_at), &delta)
                .await
            {
                tracing::warn!(delivery_id = %leased.id, error = %e, "could not update the endpoint's figures");
            }
        }
        self.notifier
            .notify(OpsNotice::delivery_dead_lettered(
                &leased,
                Some(MESSAGE_REDRIVEN),
                now,
            ))
            .await;
        self.park(message).await;
        Settled::DeadLettered
    }

    /// Hides a message until another message's claim on its delivery has
    /// run out (its lease ends, or its chain is lost).
    async fn wait(
        &self,
        message: &ReceivedMessage,
        delivery: &Delivery,
        now: DateTime<Utc>,
    ) -> Settled {
        let until = [
            delivery.lease_until,
            delivery
                .chain
                .as_ref()
                .map(|_| delivery.due_at() + STUCK_AFTER),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        let hide = (until - now).to_std().unwrap_or_default() + Duration::from_secs(1);
        self.hide(message, hide.min(MAX_HIDE_PER_RECEIVE)).await;
        Settled::Waiting
    }

    /// Leaves a message for the operators, out of the next passes' way.
    async fn park(&self, message: &ReceivedMessage) -> Settled {
        self.hide(message, MAX_HIDE_PER_RECEIVE).await;
        Settled::Parked
    }

    async fn hide(&self, message: &ReceivedMessage, hide: Duration) {
        if let Err(e) = self
            .dead_letters
            .change_visibility(&message.receipt_handle, hide)
            .await
        {
            // It is read again sooner, and settled the same way.
            tracing::warn!(message_id = %message.message_id, error = %e, "could not hide a dead letter");
        }
    }

    async fn delete(&self, message: &ReceivedMessage) {
        if let Err(e) = self
            .dead_letters
            .delete_batch(std::slice::from_ref(&message.receipt_handle))
            .await
        {
            // Read again next pass and settled again: left to the
            // reconciler once more, or sent again once more (a second
            // message, which the lease's fence drops).
            tracing::warn!(message_id = %message.message_id, error = %e, "could not delete a dead letter");
        }
    }
}
