//! The sender: each queued delivery is signed, POSTed, and then marked
//! delivered, put back on the queue for later, or dead-lettered.

use crate::http::{DeliveryClient, HttpOutcome, Transport};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument;

mod adopt;
mod auth;
mod batch_read;
mod fence;
mod headers;
mod health;
pub mod limits;
mod notices;
mod post;
mod rate;
pub(crate) mod renew;
mod stats;
mod unrecorded;
use notices::outcome_name;
use unrecorded::NoteSeen;

pub use auth::{AUTH_FAILED, RENEW_AFTER_401_EVERY};
pub use headers::{delivery_headers, shown_headers, MASKED};
pub use unrecorded::NOTE_LOOKS_AT_MOST;
use webhooks_domain::delivery::{next_step, AttemptResult, NextStep};
use webhooks_domain::ops::OpsNotice;
use webhooks_domain::retry::MAX_HIDE_PER_RECEIVE;
use webhooks_domain::{Attempt, Delivery, DeliveryStatus, DeliveryTask, Endpoint, RetrySchedule};
use webhooks_ports::{
    Adapters, AttemptUpdate, BackendError, Clock, DeliveryStore, EndpointHealth, EndpointLookup,
    Queue, ReceivedMessage, SystemClock,
};

tokio::task_local! {
    /// The queue message whose delivery is being handled.
    static HANDLING: String;
}

/// The id of the queue message the sender is handling in the calling task
/// (its POST, its store calls), if any: for logs and for the simulation's
/// checks, which tell the receipts of one message from other messages.
pub fn handling_message() -> Option<String> {
    HANDLING.try_with(Clone::clone).ok()
}

/// What the sender keeps of an invocation's time to record its attempts
/// after the last POST is cut off.
pub const RECORD_MARGIN: Duration = Duration::from_secs(3);

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
    /// How much of the sender one endpoint may hold.
    pub lanes: limits::LaneConfig,
    /// How long the endpoints' figures counted by full batches may wait in
    /// the process before they are written ([`STATS_FLUSH_AFTER`]; zero:
    /// at the end of every batch).
    pub stats_flush_after: Duration,
}

/// How long a sender keeps the figures of its full batches before writing
/// them: one stats write per (endpoint, hour) per sender environment every
/// five seconds under a steady load, instead of one per batch.
pub const STATS_FLUSH_AFTER: Duration = Duration::from_secs(5);

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            schedule: RetrySchedule::default(),
            disable_failing_after: Duration::from_secs(5 * 86400),
            lease: Duration::from_secs(60),
            lanes: limits::LaneConfig::default(),
            stats_flush_after: STATS_FLUSH_AFTER,
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
    transport: Arc<dyn Transport>,
    config: SenderConfig,
    clock: Arc<dyn Clock>,
    /// Draws the retry delays' jitter.
    jitter: Mutex<StdRng>,
    ops: crate::ops::Ops,
    metrics: crate::metrics::Metrics,
    stats: Option<Arc<dyn webhooks_ports::EndpointStatsStore>>,
    /// Figures counted and not yet written to `stats`.
    tally: stats::Tally,
    /// Each endpoint's share of this process's sender.
    limits: limits::Limits,
    /// Receives after which a never-attempted delivery's message is
    /// renewed ([`renew::worn_after`]).
    worn_at: u32,
    /// Each endpoint's OAuth 2.0 token.
    tokens: auth::Tokens,
}

struct Job<'a> {
    message: &'a ReceivedMessage,
    task: DeliveryTask,
    /// When the batch reached the sender: SQS counts its 12 h limit on
    /// hiding a message from the receipt, just before.
    received: tokio::time::Instant,
    /// When the POST must have ended, so that the attempt is still recorded
    /// before the invocation's own deadline.
    post_deadline: Option<tokio::time::Instant>,
    /// Whether this message asked for its delivery's lease: a lease write
    /// that answered an error may still have been made, so the message may
    /// hold the delivery's retry chain whatever the answer.
    lease_asked: std::sync::atomic::AtomicBool,
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
    /// The endpoint's place for this POST (none for a disabled endpoint).
    permit: Option<limits::Permit>,
    /// Made without a lease: the first attempt, by the message that owns
    /// the delivery from its creation.
    unleased: bool,
    /// The delivery has no record: its note lists it, and this attempt's
    /// outcome creates it (`unrecorded`).
    unrecorded: bool,
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
        .with_clock(adapters.clock.clone())
        .with_stats(adapters.stats.clone())
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
        let budget = limits::deferral_budget(&config.schedule);
        Sender {
            limits: limits::Limits::new(config.lanes.clone(), budget),
            worn_at: renew::worn_after(budget),
            endpoints,
            health,
            deliveries,
            queue,
            dead_letters,
            transport: Arc::new(client),
            config,
            clock: SystemClock::shared(),
            jitter: Mutex::new(StdRng::from_os_rng()),
            ops: crate::ops::Ops::default(),
            metrics: crate::metrics::Metrics::default(),
            stats: None,
            tally: stats::Tally::default(),
            tokens: auth::Tokens::default(),
        }
    }

    /// OAuth 2.0 token requests this sender has made (each endpoint's
    /// token is kept and shared by its deliveries).
    pub fn token_fetches(&self) -> u64 {
        self.tokens.fetch_count()
    }

    /// The same sender, reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same sender, POSTing through `transport` instead of its HTTP
    /// client (a simulation's receivers).
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// The same sender, drawing jitter from a generator seeded with `seed`,
    /// so that a simulation replays exactly.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = Mutex::new(StdRng::seed_from_u64(seed));
        self
    }
    /// The same sender, keeping each endpoint's hourly figures in `stats`
    /// with every attempt it records.
    pub fn with_stats(mut self, stats: Arc<dyn webhooks_ports::EndpointStatsStore>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The same sender, reporting its figures to `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same sender, emitting operational notifications and POSTing
    /// them to the operator's webhook as `ops` says.
    pub fn with_ops(mut self, ops: crate::ops::Ops) -> Self {
        self.ops = ops;
        self
    }

    /// Handles a batch of queue messages concurrently, returning one outcome
    /// per message, in order.
    pub async fn process_batch(&self, messages: &[ReceivedMessage]) -> Vec<MessageOutcome> {
        self.process_batch_within(messages, None).await
    }

    /// [`Sender::process_batch`] within `budget` (the Lambda invocation's
    /// remaining time): a POST still running [`RECORD_MARGIN`] before the
    /// budget ends is cut off as a timeout, so every attempt made is
    /// recorded, whatever request timeout is configured.
    pub async fn process_batch_within(
        &self,
        messages: &[ReceivedMessage],
        budget: Option<Duration>,
    ) -> Vec<MessageOutcome> {
        let received = tokio::time::Instant::now();
        let post_deadline = budget.map(|b| received + b.saturating_sub(RECORD_MARGIN));
        for m in messages.iter().filter(|m| m.receive_count == 1) {
            if let Some(age) = m.age {
                self.metrics.queue_age(age);
            }
        }
        // Operational notices go to the operator's webhook, beside the deliveries.
        let notices: Vec<(usize, OpsNotice)> = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| OpsNotice::from_message(&m.body).map(|n| (i, n)))
            .collect();
        let hide_limit = MAX_HIDE_PER_RECEIVE.saturating_sub(received.elapsed());
        let (mut outcomes, notice_outcomes) = futures::join!(
            self.process_tasks(messages, received, post_deadline, &notices),
            join_all(notices.iter().map(|(i, n)| self.deliver_notice(
                &messages[*i],
                n,
                hide_limit
            )))
        );
        for ((i, _), outcome) in notices.iter().zip(notice_outcomes) {
            outcomes[*i] = outcome;
        }
        self.write_stats_if_due(messages.len()).await;
        outcomes
    }

    /// The batch's delivery tasks (every message but the `notices`).
    async fn process_tasks(
        &self,
        messages: &[ReceivedMessage],
        received: tokio::time::Instant,
        post_deadline: Option<tokio::time::Instant>,
        notices: &[(usize, OpsNotice)],
    ) -> Vec<MessageOutcome> {
        let mut outcomes = vec![MessageOutcome::Done; messages.len()];
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if notices.iter().any(|(n, _)| *n == i) {
                continue;
            }
            match DeliveryTask::from_message(&message.body) {
                Ok(task) => jobs.push((
                    i,
                    Job {
                        message,
                        task,
                        received,
                        post_deadline,
                        lease_asked: std::sync::atomic::AtomicBool::new(false),
                    },
                )),
                Err(e) => {
                    tracing::error!(message_id = %message.message_id, error = %e, "malformed delivery message; moved to the dead-letter queue");
                    outcomes[i] = self.dead_letter_poison(message).await;
                }
            }
        }
        if jobs.is_empty() {
            return outcomes;
        }

        // The batch's records, and the notes of those without one
        // (`batch_read`: two rounds of reads at once).
        let delivery_of: FxHashMap<usize, String> = jobs
            .iter()
            .map(|(i, j)| (*i, j.task.delivery_id.clone()))
            .collect();
        let (deliveries, notes) = match self.read_batch(jobs.iter().map(|(_, j)| j)).await {
            Ok(read) => (read.deliveries, read.notes),
            Err(e) => {
                tracing::warn!(error = %e, "could not read deliveries; the batch will be retried");
                for (i, _) in &jobs {
                    outcomes[*i] = MessageOutcome::Retry;
                }
                self.renew_worn(
                    messages,
                    &FxHashMap::default(),
                    &delivery_of,
                    &FxHashSet::default(),
                    false,
                    &mut outcomes,
                )
                .await;
                return outcomes;
            }
        };
        let note_seen = |job: &Job<'_>| -> NoteSeen {
            let Some(key) = &job.task.queued else {
                return NoteSeen::NotAsked;
            };
            if deliveries.contains_key(&job.task.delivery_id) {
                return NoteSeen::NotAsked;
            }
            match &notes {
                Err(_) => NoteSeen::Unread,
                // The note, confirmed, names this message for the delivery:
                // another fan-out's message of the same deliveries gives way.
                Ok(notes) => NoteSeen::of(
                    notes.get(&(job.task.org_id.clone(), key.clone())),
                    &job.task.delivery_id,
                    &job.message.message_id,
                    job.task.stands_for.as_deref(),
                ),
            }
        };
        if let Err(e) = &notes {
            tracing::warn!(error = %e, "could not read the notes of deliveries without a record");
        }

        // A second message for a delivery in this batch (a replayed fan-out
        // queues it again) would POST it twice at once: one is kept, the
        // one that owns the delivery's retry chain if it is here (dropping
        // the owner would leave the delivery without a message). The others
        // are finished with when the kept one is known to own the chain;
        // otherwise (no owner here, or a note that could not be read) they
        // are left for their next receive, where their own read decides.
        let mut kept: FxHashMap<String, (usize, bool)> = FxHashMap::default();
        for (slot, (_, job)) in jobs.iter().enumerate() {
            // The chain's owner: the record's, or the one its note names.
            let owner = deliveries
                .get(&job.task.delivery_id)
                .and_then(|d| d.chain.as_deref())
                == Some(job.message.message_id.as_str())
                || matches!(note_seen(job), NoteSeen::Lists(_));
            match kept.entry(job.task.delivery_id.clone()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((slot, owner));
                }
                std::collections::hash_map::Entry::Occupied(mut o) if owner => {
                    o.insert((slot, owner));
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
        let mut deduped = Vec::with_capacity(jobs.len());
        for (slot, (i, job)) in jobs.into_iter().enumerate() {
            match kept.get(job.task.delivery_id.as_str()) {
                Some((k, _)) if *k == slot => deduped.push((i, job)),
                Some((_, true)) => {
                    tracing::info!(delivery_id = %job.task.delivery_id, "duplicate message in batch; dropped");
                }
                _ => {
                    tracing::info!(delivery_id = %job.task.delivery_id, "duplicate message in batch; left for its next receive");
                    outcomes[i] = MessageOutcome::Retry;
                }
            }
        }
        let jobs = deduped;

        // Each endpoint once per batch.
        let mut keys: Vec<(String, String)> = jobs
            .iter()
            .map(|(_, j)| (j.task.org_id.clone(), j.task.endpoint_id.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let endpoints: FxHashMap<String, Result<Option<Endpoint>, BackendError>> =
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
            HANDLING.scope(
                job.message.message_id.clone(),
                self.process_one(job, delivery, note_seen(job), endpoint),
            )
        }))
        .await;
        // The messages that took their delivery's lease here hold its retry
        // chain now, whatever the read before said.
        let mut leased: FxHashSet<usize> = FxHashSet::default();
        for ((i, _), (outcome, took_lease)) in jobs.iter().zip(results) {
            outcomes[*i] = outcome;
            if took_lease {
                leased.insert(*i);
            }
        }
        self.renew_worn(
            messages,
            &deliveries,
            &delivery_of,
            &leased,
            true,
            &mut outcomes,
        )
        .await;
        outcomes
    }

    /// One message, under a span naming its delivery, endpoint and attempt:
    /// prepared -> attempted -> recorded. With its outcome, whether it took
    /// the delivery's lease (and so holds its retry chain).
    async fn process_one(
        &self,
        job: &Job<'_>,
        delivery: Option<&Delivery>,
        note: NoteSeen,
        endpoint: Option<&Result<Option<Endpoint>, BackendError>>,
    ) -> (MessageOutcome, bool) {
        let span = tracing::info_span!(
            "delivery",
            delivery_id = %job.task.delivery_id,
            endpoint_id = %job.task.endpoint_id,
            attempt = tracing::field::Empty,
            trace_id = job.task.trace_id.as_deref().unwrap_or(""),
        );
        async move {
            let prepared = match self.prepare(job, delivery, note, endpoint).await {
                Ok(p) => p,
                // A lease asked for and answered with an error may have
                // been taken: this message may hold the chain.
                Err(finished) => {
                    let maybe_leased = job.lease_asked.load(std::sync::atomic::Ordering::Relaxed);
                    return (finished, maybe_leased);
                }
            };
            tracing::Span::current().record("attempt", prepared.number);
            let attempted = self.attempt(prepared).await;
            (self.record(attempted).await, true)
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
        note: NoteSeen,
        endpoint: Option<&'a Result<Option<Endpoint>, BackendError>>,
    ) -> Result<Prepared<'a>, MessageOutcome> {
        let found;
        let mut unrecorded = false;
        let delivery = match delivery {
            Some(d) => d,
            None => {
                let u = self.without_record(job, note).await?;
                unrecorded = u.by_note;
                found = u.delivery;
                &found
            }
        };
        if delivery.status.is_terminal() {
            tracing::info!(status = %delivery.status, "already finished; skipped");
            return Err(MessageOutcome::Done);
        }
        // A message of another live retry chain (a replayed fan-out, an
        // overlapping sweep) is finished here, without a write; the chain's
        // own message carries the delivery on.
        let now = self.clock.now();
        if delivery.chain_live_elsewhere(&job.message.message_id, now) {
            if fence::no_net_finds(delivery) {
                return Err(self.wait_for_chain(job.message, delivery).await);
            }
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
            Some(Ok(None)) if unrecorded => return Err(self.cancel_unrecorded(delivery).await),
            Some(Ok(None)) => return Err(self.cancel(delivery).await),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not read endpoint; retrying");
                return Err(MessageOutcome::Retry);
            }
            None => return Err(MessageOutcome::Retry),
        };
        // Over its endpoint's limits, the message waits, before the lease:
        // no attempt is taken, nothing written.
        let permit = if endpoint.enabled {
            // Receives beyond this one and one per earlier attempt.
            let extra_receives = job
                .message
                .receive_count
                .saturating_sub(delivery.attempt_count.saturating_add(1));
            match self.limits.admit(
                // Copies of one delivery's message (a requeue, a renewal,
                // SQS's own) hold one place in its endpoint's line.
                &delivery.id,
                extra_receives,
                // Renewed before its receives run short (renew.rs).
                renew::copy_carries_on(delivery, &job.message.message_id, now),
                endpoint,
                now,
            ) {
                limits::Admission::Go(permit) => Some(permit),
                limits::Admission::Defer {
                    delay,
                    reason,
                    until_first_answer,
                } => {
                    return Err(self
                        .defer(job, delivery, delay, reason, until_first_answer)
                        .await)
                }
            }
        } else {
            None
        };
        // The first attempt of a delivery this message owns from its
        // creation needs no lease: no other message can take the chain
        // before the attempt ends (fence::first_without_lease).
        // So does a noted delivery's, whatever its age: nothing but its
        // note's message attempts it before its record exists.
        let unleased = unrecorded
            || fence::first_without_lease(
                delivery,
                &job.message.message_id,
                now,
                self.config.lease,
            );
        let delivery = if unleased {
            delivery.clone()
        } else {
            job.lease_asked
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.lease(job.message, delivery).await?
        };
        Ok(Prepared {
            permit,
            job,
            message: job.message,
            task: &job.task,
            number: delivery.attempt_count.saturating_add(1),
            delivery,
            endpoint,
            unleased,
            unrecorded,
        })
    }

    /// The endpoint was deleted: its pending deliveries end canceled. A
    /// delivery the move leaves alone (under a live lease: an attempt under
    /// way, or a renewal's hand-over to this very message) keeps its
    /// message, which comes back and cancels it once the lease has ended
    /// (or finds it finished); finishing the message then would leave the
    /// delivery pending with no message.
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
            Ok(Some(_)) => {
                tracing::info!("endpoint deleted; delivery canceled");
                MessageOutcome::Done
            }
            Ok(None) => {
                tracing::info!(
                    "endpoint deleted; the delivery is under a live lease, canceled when it ends"
                );
                MessageOutcome::Retry
            }
            Err(_) => MessageOutcome::Retry,
        }
    }

    /// Signs and POSTs (or, for a disabled endpoint, fails at once) and
    /// decides what follows.
    async fn attempt<'a>(&self, mut prepared: Prepared<'a>) -> Attempted<'a> {
        let permit = prepared.permit.take();
        let at = self.clock.now();
        let outcome = if prepared.endpoint.enabled {
            let post = self.send(prepared.task, prepared.endpoint, prepared.number, at);
            match prepared.job.post_deadline {
                None => post.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, post).await {
                    Ok(outcome) => outcome,
                    Err(_) => HttpOutcome {
                        result: AttemptResult::Failed {
                            error: "timeout".to_string(),
                        },
                        latency_ms: u64::try_from(prepared.job.received.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        response_body: None,
                    },
                },
            }
        } else {
            HttpOutcome {
                result: AttemptResult::Failed {
                    error: ENDPOINT_DISABLED.to_string(),
                },
                latency_ms: 0,
                response_body: None,
            }
        };
        if let Some(permit) = permit {
            self.release(permit.posted()).await;
        }
        let step = next_step(
            prepared.number,
            &outcome.result,
            &self.config.schedule,
            &mut *self.jitter.lock().unwrap_or_else(PoisonError::into_inner),
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
        self.metrics
            .attempt(outcome_name(&step), attempt.latency_ms);

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
            unleased_by: prepared
                .unleased
                .then(|| prepared.message.message_id.clone()),
        };
        // A noted delivery's record is created by its first attempt's
        // outcome; any other's is updated.
        let recorded = if prepared.unrecorded {
            self.deliveries
                .create_if_absent(&update.apply(&prepared.delivery))
                .await
                .map(|existing| existing.is_none())
        } else {
            self.deliveries
                .record_attempt(&prepared.delivery.id, &update)
                .await
        };
        match recorded {
            Ok(true) => {}
            Ok(false) if prepared.unleased => {
                return self.record_unleased_refused(&prepared, update).await;
            }
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
        self.count_attempt(&prepared.delivery, &update);
        self.update_health(prepared.endpoint, &step, at).await;
        if update.status == DeliveryStatus::DeadLettered {
            self.notify_dead_lettered(&prepared.delivery, update.last_error.as_deref(), at)
                .await;
        }

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

    /// Moves a message to the dead-letter queue, unchanged.
    pub(crate) async fn dead_letter_message(&self, message: &ReceivedMessage) -> MessageOutcome {
        match self
            .dead_letters
            .send_batch(&[webhooks_ports::QueueMessage::again(message)])
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
