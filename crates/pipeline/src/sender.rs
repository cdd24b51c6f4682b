//! The sender: each queued delivery is signed, POSTed, and then marked
//! delivered, put back on the queue for later, or dead-lettered.

use crate::http::{DeliveryClient, HttpOutcome};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use webhooks_domain::delivery::{next_step, AttemptResult, NextStep, STUCK_AFTER};
use webhooks_domain::retry::MAX_HIDE_PER_RECEIVE;
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::{Attempt, Delivery, DeliveryStatus, DeliveryTask, Endpoint, RetrySchedule};
use webhooks_ports::{
    Adapters, AttemptUpdate, BackendError, DeliveryStore, EndpointHealth, EndpointLookup, Lease,
    Queue, ReceivedMessage,
};

/// The error an attempt records when its endpoint is disabled.
pub const ENDPOINT_DISABLED: &str = "endpoint_disabled";

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub schedule: RetrySchedule,
    /// An endpoint that has not succeeded for this long is disabled.
    pub disable_failing_after: Duration,
    /// How long one attempt holds its delivery's lease: longer than the
    /// sender can take over one attempt (its 30 s Lambda timeout; the 15 s
    /// request timeout locally), so a live holder never loses it, and short
    /// enough that a crashed holder's delivery is taken up again when its
    /// message returns (the queue's 180 s visibility timeout).
    pub lease: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            schedule: RetrySchedule::default(),
            disable_failing_after: Duration::from_secs(5 * 86400),
            lease: Duration::from_secs(60),
        }
    }
}

/// What became of one queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Finished with: the message can be deleted.
    Done,
    /// Not finished: leave the message on the queue (a batch item failure);
    /// it has been hidden until its next attempt is due.
    Retry,
}

/// The sender step.
pub struct Sender {
    endpoints: Arc<dyn EndpointLookup>,
    health: Arc<dyn EndpointHealth>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    dead_letters: Arc<dyn Queue>,
    client: DeliveryClient,
    config: SenderConfig,
}

struct Job<'a> {
    message: &'a ReceivedMessage,
    task: DeliveryTask,
    /// When the batch reached the sender: SQS counts its 12 h limit on
    /// hiding a message from the receipt, just before.
    received: tokio::time::Instant,
}

impl Job<'_> {
    /// The longest this message can still be hidden from now.
    fn hide_limit(&self) -> Duration {
        MAX_HIDE_PER_RECEIVE.saturating_sub(self.received.elapsed())
    }
}

/// A message whose delivery is still pending and due, whose endpoint exists,
/// and which holds the lease on the delivery's next attempt.
struct Prepared<'a> {
    job: &'a Job<'a>,
    message: &'a ReceivedMessage,
    task: &'a DeliveryTask,
    /// The delivery as the lease left it.
    delivery: Delivery,
    endpoint: &'a Endpoint,
    /// This attempt's number, 1 for the first.
    number: u32,
}

/// An attempt made, and what follows it.
struct Attempted<'a> {
    prepared: Prepared<'a>,
    at: DateTime<Utc>,
    outcome: HttpOutcome,
    step: NextStep,
}

impl Sender {
    /// The sender over a backend's adapters.
    pub fn from_adapters(
        adapters: &Adapters,
        client: DeliveryClient,
        config: SenderConfig,
    ) -> Self {
        Sender::new(
            adapters.endpoints.clone(),
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            adapters.queue.clone(),
            adapters.dead_letters.clone(),
            client,
            config,
        )
    }

    pub fn new(
        endpoints: Arc<dyn EndpointLookup>,
        health: Arc<dyn EndpointHealth>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
        dead_letters: Arc<dyn Queue>,
        client: DeliveryClient,
        config: SenderConfig,
    ) -> Self {
        Sender {
            endpoints,
            health,
            deliveries,
            queue,
            dead_letters,
            client,
            config,
        }
    }

    /// Handles a batch of queue messages concurrently, returning one outcome
    /// per message, in order.
    pub async fn process_batch(&self, messages: &[ReceivedMessage]) -> Vec<MessageOutcome> {
        let received = tokio::time::Instant::now();
        let mut outcomes = vec![MessageOutcome::Done; messages.len()];
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match serde_json::from_str::<DeliveryTask>(&message.body) {
                // A second message for a delivery already in this batch (a
                // replayed fan-out queues it again) would POST it twice at
                // once; it is finished with here.
                Ok(task)
                    if jobs
                        .iter()
                        .any(|(_, j)| j.task.delivery_id == task.delivery_id) =>
                {
                    tracing::info!(delivery_id = %task.delivery_id, "duplicate message in batch; dropped");
                }
                Ok(task) => jobs.push((
                    i,
                    Job {
                        message,
                        task,
                        received,
                    },
                )),
                Err(e) => {
                    tracing::error!(message_id = %message.message_id, error = %e, "malformed delivery message; moved to the dead-letter queue");
                    outcomes[i] = self.dead_letter_message(message).await;
                }
            }
        }
        if jobs.is_empty() {
            return outcomes;
        }

        // One read for the batch's deliveries.
        let ids: Vec<String> = jobs
            .iter()
            .map(|(_, j)| j.task.delivery_id.clone())
            .collect();
        let deliveries: HashMap<String, Delivery> = match self.deliveries.get_many(&ids).await {
            Ok(ds) => ds.into_iter().map(|d| (d.id.clone(), d)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read deliveries; the batch will be retried");
                for (i, _) in &jobs {
                    outcomes[*i] = MessageOutcome::Retry;
                }
                return outcomes;
            }
        };

        // Each endpoint once per batch.
        let mut keys: Vec<(String, String)> = jobs
            .iter()
            .map(|(_, j)| (j.task.org_id.clone(), j.task.endpoint_id.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let endpoints: HashMap<String, Result<Option<Endpoint>, BackendError>> =
            join_all(keys.into_iter().map(|(org, id)| async move {
                let r = self.endpoints.get(&org, &id).await;
                (id, r)
            }))
            .await
            .into_iter()
            .collect();

        let results = join_all(jobs.iter().map(|(_, job)| {
            let delivery = deliveries.get(&job.task.delivery_id);
            let endpoint = endpoints.get(&job.task.endpoint_id);
            self.process_one(job, delivery, endpoint)
        }))
        .await;
        for ((i, _), outcome) in jobs.iter().zip(results) {
            outcomes[*i] = outcome;
        }
        outcomes
    }

    /// One message, under a span naming its delivery, endpoint and attempt:
    /// prepared -> attempted -> recorded.
    async fn process_one(
        &self,
        job: &Job<'_>,
        delivery: Option<&Delivery>,
        endpoint: Option<&Result<Option<Endpoint>, BackendError>>,
    ) -> MessageOutcome {
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %job.task.delivery_id,
            endpoint_id = %job.task.endpoint_id,
            attempt = tracing::field::Empty,
        );
        async move {
            let prepared = match self.prepare(job, delivery, endpoint).await {
                Ok(p) => p,
                Err(finished) => return finished,
            };
            tracing::Span::current().record("attempt", prepared.number);
            let attempted = self.attempt(prepared).await;
            self.record(attempted).await
        }
        .instrument(span)
        .await
    }

    /// Checks that the message's delivery is still to be attempted, is due,
    /// and its endpoint exists, and takes the lease on its next attempt;
    /// otherwise finishes the message here, or hides it again until due.
    async fn prepare<'a>(
        &self,
        job: &'a Job<'a>,
        delivery: Option<&'a Delivery>,
        endpoint: Option<&'a Result<Option<Endpoint>, BackendError>>,
    ) -> Result<Prepared<'a>, MessageOutcome> {
        let Some(delivery) = delivery else {
            tracing::error!(message_id = %job.message.message_id, "no such delivery; moved to the dead-letter queue");
            return Err(self.dead_letter_message(job.message).await);
        };
        if delivery.status.is_terminal() {
            tracing::info!(status = %delivery.status, "already finished; skipped");
            return Err(MessageOutcome::Done);
        }
        // A message of another live retry chain (a replayed fan-out, an
        // overlapping sweep) is finished here, without a write; the chain's
        // own message carries the delivery on. A chain whose next attempt
        // is overdue by STUCK_AFTER has lost its message: the lease below
        // lets this one take it over.
        let now = Utc::now();
        let live_elsewhere = delivery
            .chain
            .as_deref()
            .is_some_and(|c| c != job.message.message_id)
            && delivery
                .next_attempt_at
                .is_some_and(|t| t >= now - STUCK_AFTER);
        if live_elsewhere {
            tracing::info!(
                "another message holds this delivery's retry chain; dropped without an attempt"
            );
            return Err(MessageOutcome::Done);
        }
        if let Some(due) = delivery.next_attempt_at {
            if let Ok(early) = (due - now).to_std() {
                if !early.is_zero() {
                    return Err(self.hide_until_due(job, early).await);
                }
            }
        }
        let endpoint = match endpoint {
            Some(Ok(Some(ep))) => ep,
            Some(Ok(None)) => return Err(self.cancel(delivery).await),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not read endpoint; retrying");
                return Err(MessageOutcome::Retry);
            }
            None => return Err(MessageOutcome::Retry),
        };
        let delivery = self.lease(job.message, delivery).await?;
        Ok(Prepared {
            job,
            message: job.message,
            task: &job.task,
            number: delivery.attempt_count.saturating_add(1),
            delivery,
            endpoint,
        })
    }

    /// The message came back before its delivery is due (a wait longer than
    /// SQS can hide a message at once, or a hide that failed): it is hidden
    /// again for the rest of the wait, as far as SQS allows from this
    /// receipt, without an attempt.
    async fn hide_until_due(&self, job: &Job<'_>, early: Duration) -> MessageOutcome {
        let hide = early.min(job.hide_limit());
        match self
            .queue
            .change_visibility(&job.message.receipt_handle, hide)
            .await
        {
            Ok(()) => tracing::info!(
                due_in_secs = early.as_secs(),
                hidden_for_secs = hide.as_secs(),
                "not due yet; hidden again without an attempt"
            ),
            // It comes back after the queue's visibility timeout and is
            // checked again then.
            Err(e) => tracing::warn!(error = %e, "not due yet, and could not hide it again"),
        }
        MessageOutcome::Retry
    }

    /// The fence: one conditional write makes this message the holder of
    /// the delivery's next attempt. A message that loses is finished without
    /// a POST: its delivery is finished or has another live retry chain
    /// (whose message carries it on; if that one is lost, the delivery goes
    /// overdue and the next message received takes the chain over).
    async fn lease(
        &self,
        message: &ReceivedMessage,
        read: &Delivery,
    ) -> Result<Delivery, MessageOutcome> {
        let now = Utc::now();
        let until = now
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(1));
        match self
            .deliveries
            .lease(
                &read.id,
                read.attempt_count,
                &message.message_id,
                until,
                now,
                now - STUCK_AFTER,
            )
            .await
        {
            Ok(Lease::Granted(d)) => Ok(d),
            Ok(Lease::Refused(Some(d)))
                if d.status == webhooks_domain::DeliveryStatus::Pending
                    && d.chain.as_deref() == Some(message.message_id.as_str()) =>
            {
                // This message owns the chain, so it is never finished here
                // (deleting it, even through an older receipt, would leave
                // the delivery without a message): the count it read is
                // stale, or
                // its own attempt holds the lease: the same message received
                // twice at once, or back after a failure that left its lease
                // behind. Hidden until the lease ends, so that waiting does
                // not use up its receives.
                tracing::info!("this message's lease is still live; back when it ends");
                if let Some(until) = d.lease_until.filter(|t| *t >= now) {
                    let wait = (until - now).to_std().unwrap_or_default() + Duration::from_secs(1);
                    if let Err(e) = self
                        .queue
                        .change_visibility(&message.receipt_handle, wait)
                        .await
                    {
                        tracing::warn!(error = %e, "could not hide the message until its lease ends");
                    }
                }
                Err(MessageOutcome::Retry)
            }
            Ok(Lease::Refused(current)) => {
                tracing::info!(
                    status = current.as_ref().map_or("gone", |d| d.status.as_str()),
                    attempts = current.as_ref().map_or(0, |d| d.attempt_count),
                    "another message holds this delivery's retry chain, or it is finished; dropped without an attempt"
                );
                Err(MessageOutcome::Done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the delivery's lease; retrying");
                Err(MessageOutcome::Retry)
            }
        }
    }

    /// The endpoint was deleted: its pending deliveries end canceled.
    async fn cancel(&self, delivery: &Delivery) -> MessageOutcome {
        match self
            .deliveries
            .transition(
                &delivery.id,
                &[DeliveryStatus::Pending],
                DeliveryStatus::Canceled,
            )
            .await
        {
            Ok(_) => {
                tracing::info!("endpoint deleted; delivery canceled");
                MessageOutcome::Done
            }
            Err(_) => MessageOutcome::Retry,
        }
    }

    /// Signs and POSTs (or, for a disabled endpoint, fails at once) and
    /// decides what follows.
    async fn attempt<'a>(&self, prepared: Prepared<'a>) -> Attempted<'a> {
        let at = Utc::now();
        let outcome = if prepared.endpoint.enabled {
            let headers = delivery_headers(prepared.task, prepared.endpoint, prepared.number, at);
            self.client
                .post(
                    &prepared.endpoint.url,
                    &headers,
                    prepared.task.payload.clone(),
                )
                .await
        } else {
            HttpOutcome {
                result: AttemptResult::Failed {
                    error: ENDPOINT_DISABLED.to_string(),
                },
                latency_ms: 0,
                response_body: None,
            }
        };
        let step = next_step(
            prepared.number,
            &outcome.result,
            &self.config.schedule,
            &mut rand::rng(),
        );
        Attempted {
            prepared,
            at,
            outcome,
            step,
        }
    }

    /// Records the attempt, updates the endpoint's health, and leaves the
    /// message for its retry, finishes it, or dead-letters it.
    async fn record(&self, attempted: Attempted<'_>) -> MessageOutcome {
        let Attempted {
            prepared,
            at,
            outcome,
            step,
        } = attempted;
        let (status_code, error) = match &outcome.result {
            AttemptResult::Responded { status, .. } => (Some(*status), None),
            AttemptResult::Failed { error } => (None, Some(error.clone())),
        };
        let attempt = Attempt {
            number: prepared.number,
            at,
            status_code,
            error: error.clone(),
            latency_ms: outcome.latency_ms,
            response_body: outcome.response_body,
        };
        let last_error = match (&step, status_code, &error) {
            (NextStep::Delivered, _, _) => None,
            (_, Some(code), _) => Some(format!("HTTP {code}")),
            (_, None, Some(e)) => Some(e.clone()),
            _ => None,
        };
        tracing::info!(
            event_id = %prepared.delivery.event_id,
            event_type = %prepared.delivery.event_type,
            status = status_code.map(i64::from).unwrap_or(-1),
            error = error.as_deref().unwrap_or(""),
            latency_ms = attempt.latency_ms,
            next = ?step,
            "delivery attempt"
        );

        let (status, next_attempt_at) = match step {
            NextStep::Delivered => (DeliveryStatus::Delivered, None),
            NextStep::RetryAfter(d) => (
                DeliveryStatus::Pending,
                Some(at + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(12))),
            ),
            NextStep::DeadLetter | NextStep::Gone => (DeliveryStatus::DeadLettered, None),
        };

        // The dead-letter message goes first: if recording fails after it,
        // the retry finds the delivery still pending, not lost.
        if status == DeliveryStatus::DeadLettered
            && self.dead_letter_message(prepared.message).await == MessageOutcome::Retry
        {
            return MessageOutcome::Retry;
        }
        let update = AttemptUpdate {
            attempt,
            status,
            next_attempt_at,
            last_error,
        };
        match self
            .deliveries
            .record_attempt(&prepared.delivery.id, &update)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // The lease ran out and another receipt recorded this attempt
                // number first. Left on the queue, not deleted: it may be this
                // very message, received again, that carries the chain on; the
                // next receive's lease decides.
                tracing::warn!("attempt number already recorded; left for the next receive");
                return MessageOutcome::Retry;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record attempt; retrying");
                return MessageOutcome::Retry;
            }
        }
        self.update_health(prepared.endpoint, &step, at).await;

        match step {
            NextStep::RetryAfter(d) => {
                // As long as SQS allows from this receipt; when the message
                // comes back before `next_attempt_at`, it is hidden again.
                let hide = d.min(prepared.job.hide_limit());
                if let Err(e) = self
                    .queue
                    .change_visibility(&prepared.message.receipt_handle, hide)
                    .await
                {
                    // The message reappears after the queue's own timeout
                    // instead, and is hidden again until it is due.
                    tracing::warn!(error = %e, "could not delay the retry");
                }
                MessageOutcome::Retry
            }
            _ => MessageOutcome::Done,
        }
    }

    /// Keeps the endpoint's health up to date, writing only on a change.
    async fn update_health(&self, endpoint: &Endpoint, step: &NextStep, now: DateTime<Utc>) {
        let (org, id) = (&endpoint.org_id, &endpoint.id);
        let result = match step {
            NextStep::Delivered if endpoint.failing_since.is_some() => {
                self.health.set_failing_since(org, id, None).await
            }
            NextStep::Delivered => Ok(()),
            NextStep::Gone => {
                self.health
                    .disable(org, id, "the endpoint answered 410 Gone")
                    .await
            }
            // The schedule ran out and the delivery was reported dead: the
            // run of failures ends with it, so a failure days later does not
            // find a stale run and disable the endpoint at once.
            NextStep::DeadLetter if endpoint.failing_since.is_some() => {
                self.health.set_failing_since(org, id, None).await
            }
            NextStep::DeadLetter => Ok(()),
            _ if !endpoint.enabled => Ok(()),
            _ => match endpoint.failing_since {
                None => self.health.set_failing_since(org, id, Some(now)).await,
                Some(since) => {
                    let limit = chrono::Duration::from_std(self.config.disable_failing_after)
                        .unwrap_or(chrono::Duration::days(5));
                    if now - since >= limit {
                        tracing::warn!(endpoint_id = %id, "endpoint disabled after failing since {since}");
                        self.health
                            .disable(
                                org,
                                id,
                                &format!(
                                    "failing without a success since {}",
                                    webhooks_domain::time::rfc3339(since)
                                ),
                            )
                            .await
                    } else {
                        Ok(())
                    }
                }
            },
        };
        if let Err(e) = result {
            tracing::warn!(endpoint_id = %id, error = %e, "could not update endpoint health");
        }
    }

    /// Moves a message to the dead-letter queue, unchanged.
    async fn dead_letter_message(&self, message: &ReceivedMessage) -> MessageOutcome {
        match self
            .dead_letters
            .send_batch(std::slice::from_ref(&message.body))
            .await
        {
            Ok(rejected) if rejected.is_empty() => MessageOutcome::Done,
            Ok(_) | Err(_) => {
                tracing::warn!(message_id = %message.message_id, "could not reach the dead-letter queue; retrying");
                MessageOutcome::Retry
            }
        }
    }
}

/// Every header of a delivery attempt (CONTRACT section 2).
pub fn delivery_headers(
    task: &DeliveryTask,
    endpoint: &Endpoint,
    attempt: u32,
    at: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let body = task.payload.as_bytes();
    let timestamp = at.timestamp();
    vec![
        ("content-type", "application/json".to_string()),
        ("x-signature", x_signature(&endpoint.secret, body)),
        ("webhook-id", task.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            webhook_signature_header(
                &endpoint.signing_secrets(at),
                &task.event_id,
                timestamp,
                body,
            ),
        ),
        ("x-webhook-event", task.event_type.as_str().to_string()),
        ("x-webhook-delivery", task.delivery_id.clone()),
        ("x-webhook-attempt", attempt.to_string()),
    ]
}
