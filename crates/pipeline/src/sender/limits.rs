//! Per-endpoint and per-org limits on the sender, so that one endpoint or
//! one org cannot starve the others: the slow lane (an endpoint whose POSTs
//! take long may hold only [`LaneConfig::slow_cap`] of the sender's
//! requests at once, and all of one org's slow endpoints together only
//! [`LaneConfig::org_slow_cap`] while another org has work here) and the
//! endpoint's declared `rate_limit` (a token bucket). One [`Limits`] per
//! sender, shared by every batch the process handles. A message over a
//! limit is deferred: hidden on the queue for a while, not POSTed, and not
//! counted as an attempt.
//!
//! Why a slow lane rather than a flat cap: the sender starts a batch's ten
//! POSTs at once, so a flat per-endpoint cap small enough to bound a
//! timing-out endpoint would also throttle a single fast endpoint (the
//! usual set-up). Only an endpoint whose POSTs take long holds the
//! sender's concurrency, so only such an endpoint is capped.

use super::rate::TokenBucket;
use super::{Job, MessageOutcome, Sender};
use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use webhooks_domain::delivery::STUCK_AFTER;
use webhooks_domain::{Delivery, Endpoint};

/// Most POSTs in flight at once, per process, to an endpoint in the slow
/// lane: a quarter of `webhooks dev`'s eight batches, two of a Lambda
/// environment's batch of ten.
pub const DEFAULT_SLOW_CAP: u32 = 2;
/// Most slow-lane POSTs in flight at once, per process, to all of one
/// org's endpoints together, while another org has work in the process:
/// half of `webhooks dev`'s eight batches, so that an org with many slow
/// endpoints cannot hold every poller.
pub const DEFAULT_ORG_SLOW_CAP: u32 = 4;
/// Another org counts as having work here for this long after its last
/// message reached the limits.
pub const OTHER_ORG_WINDOW: Duration = Duration::from_secs(30);
/// POSTs taking this long put their endpoint in the slow lane: receivers
/// that answer in time answer well within it.
pub const DEFAULT_SLOW_AFTER: Duration = Duration::from_secs(2);
/// The shortest deferral.
pub const MIN_DEFER: Duration = Duration::from_secs(1);
/// The longest deferral by the slow lane: a message comes back at least
/// this often to find a free slot.
pub const MAX_SLOW_DEFER: Duration = Duration::from_secs(300);
/// Most messages kept, over all endpoints, to be shown again at their
/// endpoint's first answer ([`Limits::await_first_answer`]); beyond that,
/// a message comes back after its deferral, as before. Only those hidden
/// within the last [`MIN_DEFER`] are kept (older ones are visible again),
/// so the sender's memory for them stays a few MiB whatever the bursts.
const MAX_AWAITING: usize = 10_000;
/// Endpoints remembered before idle ones are forgotten.
const MAX_REMEMBERED: usize = 10_000;
/// An endpoint idle this long is forgotten first.
const IDLE: Duration = Duration::from_secs(600);

/// The most deferrals a message of a delivery already attempted gets: half
/// of the receives that `schedule` leaves spare under the queue's
/// [`MAX_RECEIVE_COUNT`] even at its longest (every delay +20 %, every
/// `Retry-After` at 12 h). Each deferral spends a receive; the other half
/// stays for what the spare was for (failed handling, crashed
/// invocations), so deferrals never bring the queue's redrive on where it
/// would not have come without them. A delivery never attempted has no
/// such budget: its message is renewed (sent again as a new one) one
/// receive before the redrive (`renew.rs`), so it may wait as long as its
/// endpoint's limits need.
///
/// [`MAX_RECEIVE_COUNT`]: webhooks_ports::queue_settings::MAX_RECEIVE_COUNT
pub fn deferral_budget(schedule: &webhooks_domain::RetrySchedule) -> u32 {
    webhooks_ports::queue_settings::MAX_RECEIVE_COUNT.saturating_sub(schedule.max_receives()) / 2
}

/// How the sender shares its concurrency among endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneConfig {
    /// Most POSTs in flight at once to an endpoint in the slow lane;
    /// `None`: no cap.
    pub slow_cap: Option<u32>,
    /// Most slow-lane POSTs in flight at once to one org's endpoints
    /// together, while another org has had work here within
    /// [`OTHER_ORG_WINDOW`]; `None`: no cap. Applies only with `slow_cap`.
    pub org_slow_cap: Option<u32>,
    /// An endpoint is in the slow lane while its recent POSTs took this
    /// long on average, or one of its POSTs has run this long.
    pub slow_after: Duration,
}

/// On by default: [`DEFAULT_SLOW_CAP`] per endpoint,
/// [`DEFAULT_ORG_SLOW_CAP`] per org.
impl Default for LaneConfig {
    fn default() -> Self {
        LaneConfig {
            slow_cap: Some(DEFAULT_SLOW_CAP),
            org_slow_cap: Some(DEFAULT_ORG_SLOW_CAP),
            slow_after: DEFAULT_SLOW_AFTER,
        }
    }
}

impl LaneConfig {
    /// The slow lane on, at its defaults.
    pub fn capped() -> Self {
        LaneConfig::default()
    }

    /// No slow lane: only `rate_limit` defers.
    pub fn uncapped() -> Self {
        LaneConfig {
            slow_cap: None,
            org_slow_cap: None,
            ..LaneConfig::default()
        }
    }
}

/// Which limit deferred a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// The endpoint is slow and already holds its share of the sender.
    SlowLane,
    /// The endpoint is slow and its org's slow endpoints already hold the
    /// org's share of the sender, while another org has work here.
    OrgShare,
    /// The endpoint's `rate_limit`.
    RateLimit,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::SlowLane => "slow_lane",
            DeferReason::OrgShare => "org_share",
            DeferReason::RateLimit => "rate_limit",
        }
    }
}

/// What the limits say about a message.
#[derive(Debug)]
pub enum Admission {
    /// POST it now; the permit holds its place until dropped.
    Go(Permit),
    /// Hide it for `delay`, without an attempt.
    Defer {
        delay: Duration,
        reason: DeferReason,
        /// Deferred by the slow start alone (its endpoint has not answered
        /// yet): shown again at once if that answer comes in time
        /// ([`Limits::await_first_answer`]).
        until_first_answer: bool,
    },
}

/// The per-endpoint limits of one sender process.
pub struct Limits {
    config: LaneConfig,
    /// Receives of a message beyond one per attempt (deferrals, failures,
    /// re-hides) under which it may still be deferred ([`deferral_budget`]).
    budget: u32,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    endpoints: FxHashMap<String, Lane>,
    /// Slow-lane POSTs in flight per org.
    orgs: FxHashMap<String, u32>,
    /// The org whose message last reached the limits, and when; and the
    /// last other org before it: together, when any org other than a given
    /// one last had work here.
    latest: Option<(String, Instant)>,
    latest_other: Option<(String, Instant)>,
    next_post: u64,
    /// Messages the slow start hid, oldest first, each with its endpoint
    /// and when: shown again as soon as that endpoint first answers in
    /// time.
    awaiting: VecDeque<Awaiting>,
}

/// A message the slow start hid ([`Limits::await_first_answer`]).
struct Awaiting {
    at: Instant,
    endpoint_id: String,
    receipt: String,
}

impl State {
    /// Forgets the hidden messages that are visible again by now.
    fn prune_awaiting(&mut self, now: Instant) {
        while self
            .awaiting
            .front()
            .is_some_and(|a| now.saturating_duration_since(a.at) >= MIN_DEFER)
        {
            self.awaiting.pop_front();
        }
    }

    /// Takes `endpoint_id`'s hidden messages out: their receipts.
    fn take_awaiting(&mut self, endpoint_id: &str) -> Vec<String> {
        let mut receipts = Vec::new();
        self.awaiting.retain_mut(|a| {
            if a.endpoint_id == endpoint_id {
                receipts.push(std::mem::take(&mut a.receipt));
                false
            } else {
                true
            }
        });
        receipts
    }
}

impl State {
    /// `org`'s message reached the limits at `now`.
    fn seen(&mut self, org: &str, now: Instant) {
        match &mut self.latest {
            Some((latest, at)) if latest == org => *at = now,
            _ => {
                self.latest_other = self.latest.take();
                self.latest = Some((org.to_string(), now));
            }
        }
    }

    /// Whether an org other than `org` had work here within
    /// [`OTHER_ORG_WINDOW`] of `now`.
    fn others_active(&self, org: &str, now: Instant) -> bool {
        [&self.latest, &self.latest_other]
            .into_iter()
            .flatten()
            .any(|(o, at)| o != org && now.saturating_duration_since(*at) < OTHER_ORG_WINDOW)
    }
}

/// What is known of one endpoint.
struct Lane {
    /// POSTs in flight, by number, and when each started.
    in_flight: FxHashMap<u64, Instant>,
    /// Recent POSTs' duration, averaged (`None` before the first ends).
    average: Option<Duration>,
    /// When the last message the slow lane deferred was told to come back.
    line: Option<Instant>,
    bucket: Option<TokenBucket>,
    last_used: Instant,
}

impl Lane {
    fn new(now: Instant) -> Self {
        Lane {
            in_flight: FxHashMap::default(),
            average: None,
            line: None,
            bucket: None,
            last_used: now,
        }
    }

    fn is_slow(&self, slow_after: Duration, now: Instant) -> bool {
        self.average.is_some_and(|a| a >= slow_after)
            || self
                .in_flight
                .values()
                .any(|started| now.saturating_duration_since(*started) >= slow_after)
    }

    /// When a message the slow lane defers now should come back: a slot
    /// frees about every `average / cap`, so deferred messages are spread
    /// over the line at that pace rather than all coming back at once.
    fn defer_slow(&mut self, cap: u32, slow_after: Duration, now: Instant) -> Duration {
        let hold = self.average.unwrap_or(slow_after).max(slow_after);
        let spacing = hold / cap.max(1);
        let earliest = now + MIN_DEFER;
        let slot = match self.line {
            Some(line) if line + spacing > earliest => line + spacing,
            _ => earliest,
        };
        let slot = slot.min(now + MAX_SLOW_DEFER);
        self.line = Some(slot);
        slot - now
    }
}

impl Limits {
    /// Limits as `config` says; a message is deferred only while it has
    /// had fewer than `budget` receives beyond one per attempt.
    pub fn new(config: LaneConfig, budget: u32) -> Self {
        Limits {
            config,
            budget,
            state: Arc::default(),
        }
    }

    /// Whether a message of the delivery `key`, received `extra_receives` times
    /// beyond one per attempt, may be POSTed to `endpoint` at `now` (the
    /// sender's clock; the slow lane goes by tokio's). `first_attempt`:
    /// its delivery was never attempted, so it may be deferred whatever
    /// its receives (see [`deferral_budget`]).
    pub fn admit(
        &self,
        key: &str,
        extra_receives: u32,
        first_attempt: bool,
        endpoint: &Endpoint,
        now: DateTime<Utc>,
    ) -> Admission {
        let instant = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        guard.seen(&endpoint.org_id, instant);
        let others_active = guard.others_active(&endpoint.org_id, instant);
        let State {
            endpoints,
            orgs,
            next_post,
            ..
        } = &mut *guard;
        if endpoints.len() >= MAX_REMEMBERED && !endpoints.contains_key(&endpoint.id) {
            endpoints.retain(|_, lane| {
                !lane.in_flight.is_empty()
                    || instant.saturating_duration_since(lane.last_used) < IDLE
            });
        }
        let may_defer = first_attempt || extra_receives < self.budget;
        let lane = endpoints
            .entry(endpoint.id.clone())
            .or_insert_with(|| Lane::new(instant));
        lane.last_used = instant;
        let mut in_slow_lane = false;
        if let Some(cap) = self.config.slow_cap {
            // Slow start: until one of its POSTs has ended, an endpoint is
            // held to the cap too, or a burst for an endpoint that never
            // answers would take every slot before anything is learnt.
            let unknown = lane.average.is_none();
            let slow = lane.is_slow(self.config.slow_after, instant);
            in_slow_lane = slow || unknown;
            let full = u32::try_from(lane.in_flight.len()).unwrap_or(u32::MAX) >= cap;
            let org_slow = orgs.get(&endpoint.org_id).copied().unwrap_or(0);
            let org_full = others_active
                && self
                    .config
                    .org_slow_cap
                    .is_some_and(|org_cap| org_slow >= org_cap);
            let reason = if full {
                Some(DeferReason::SlowLane)
            } else if org_full {
                Some(DeferReason::OrgShare)
            } else {
                None
            };
            if let (true, Some(reason)) = (in_slow_lane, reason) {
                if may_defer {
                    let delay = if slow {
                        lane.defer_slow(cap, self.config.slow_after, instant)
                    } else {
                        MIN_DEFER
                    };
                    return Admission::Defer {
                        delay,
                        reason,
                        until_first_answer: !slow,
                    };
                }
                tracing::warn!(
                    extra_receives,
                    reason = reason.as_str(),
                    "slow endpoint over its share, but this message cannot be deferred again without risking the queue's redrive; sent"
                );
            }
        }
        match (endpoint.rate_limit, &mut lane.bucket) {
            (None, bucket) => *bucket = None,
            (Some(rate), Some(bucket)) => bucket.set_rate(rate),
            (Some(rate), bucket) => *bucket = Some(TokenBucket::new(rate, now)),
        }
        if let Some(bucket) = &mut lane.bucket {
            if let Err(wait) = bucket.take(key, now) {
                if may_defer {
                    return Admission::Defer {
                        delay: wait.max(Duration::from_millis(1)),
                        reason: DeferReason::RateLimit,
                        until_first_answer: false,
                    };
                }
                bucket.forget(key);
                tracing::warn!(
                    extra_receives,
                    "endpoint over its rate limit, but this message cannot be deferred again without risking the queue's redrive; sent"
                );
            }
        }
        let number = *next_post;
        *next_post = number.wrapping_add(1);
        lane.in_flight.insert(number, instant);
        let org_slot = in_slow_lane.then(|| {
            *orgs.entry(endpoint.org_id.clone()).or_default() += 1;
            endpoint.org_id.clone()
        });
        Admission::Go(Permit {
            state: self.state.clone(),
            endpoint_id: endpoint.id.clone(),
            org_slot,
            number,
            started: instant,
            slow_after: self.config.slow_after,
            posted: false,
            ended: false,
        })
    }

    /// Keeps `receipt`, a message of `endpoint_id` that the slow start has
    /// just hidden ([`Admission::Defer`]'s `until_first_answer`), so that
    /// the endpoint's first answer, if it comes in time, shows it again at
    /// once ([`Permit::posted`]) instead of after its deferral. No poller
    /// waits for that answer. `false`: the endpoint answered in time
    /// meanwhile, so show the message again now.
    pub fn await_first_answer(&self, endpoint_id: &str, receipt: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.prune_awaiting(now);
        let Some(lane) = state.endpoints.get(endpoint_id) else {
            return true;
        };
        if lane.average.is_some() {
            return lane.is_slow(self.config.slow_after, now);
        }
        if state.awaiting.len() < MAX_AWAITING {
            state.awaiting.push_back(Awaiting {
                at: now,
                endpoint_id: endpoint_id.to_string(),
                receipt: receipt.to_string(),
            });
        }
        true
    }
}

/// Messages to show again now: the receipts of those the slow start
/// deferred for an endpoint that has just answered for the first time, in
/// time ([`Limits::await_first_answer`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released(pub Vec<String>);

/// A POST's place among its endpoint's in-flight POSTs; dropping it ends
/// the POST and teaches the lane how long it took.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
    endpoint_id: String,
    /// The org whose slow-lane share this POST holds, if it holds one.
    org_slot: Option<String>,
    number: u64,
    started: Instant,
    /// A POST at least this long is slow ([`LaneConfig::slow_after`]).
    slow_after: Duration,
    /// Whether a POST was made: only then does its time teach the lane.
    posted: bool,
    /// Whether its place has been given back.
    ended: bool,
}

impl Permit {
    /// The POST was made (and has ended, or been cut off). If it was the
    /// endpoint's first answer, and in time, the messages the slow start
    /// deferred meanwhile are to be shown again now.
    pub fn posted(mut self) -> Released {
        self.posted = true;
        self.end()
    }

    /// Gives the place back, and teaches the lane the POST's time if one
    /// was made.
    fn end(&mut self) -> Released {
        if std::mem::replace(&mut self.ended, true) {
            return Released::default();
        }
        let took = self.started.elapsed();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(org) = &self.org_slot {
            if let Some(n) = state.orgs.get_mut(org) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.orgs.remove(org);
                }
            }
        }
        let Some(lane) = state.endpoints.get_mut(&self.endpoint_id) else {
            return Released::default();
        };
        lane.in_flight.remove(&self.number);
        if !self.posted {
            return Released::default();
        }
        let first = lane.average.is_none();
        // Recent POSTs weigh most: a slow endpoint that answers quickly
        // again leaves the slow lane within a few POSTs.
        lane.average = Some(match lane.average {
            None => took,
            Some(a) => a.mul_f64(0.6) + took.mul_f64(0.4),
        });
        if !first {
            return Released::default();
        }
        state.prune_awaiting(Instant::now());
        let receipts = state.take_awaiting(&self.endpoint_id);
        if took >= self.slow_after {
            // Slow: they come back after their deferral, to the slow lane.
            return Released::default();
        }
        Released(receipts)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "State({} endpoints)", self.endpoints.len())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.end();
    }
}

impl Sender {
    /// Hides a message that is over its endpoint's limit for `delay`,
    /// without an attempt: it comes back then and is tried again.
    pub(super) async fn defer(
        &self,
        job: &Job<'_>,
        delivery: &Delivery,
        delay: Duration,
        reason: DeferReason,
        until_first_answer: bool,
    ) -> MessageOutcome {
        let hide = delay.min(job.hide_limit());
        self.metrics.deferred(reason.as_str());
        self.note_long_wait(job, delivery, hide).await;
        let receipt = &job.message.receipt_handle;
        match self.queue.change_visibility(receipt, hide).await {
            Ok(())
                if until_first_answer
                    && !self
                        .limits
                        .await_first_answer(&delivery.endpoint_id, receipt) =>
            {
                // The endpoint answered in time while it was being hidden.
                self.release(Released(vec![receipt.clone()])).await;
            }
            Ok(()) => tracing::info!(
                reason = reason.as_str(),
                deferred_ms = u64::try_from(hide.as_millis()).unwrap_or(u64::MAX),
                "over the endpoint's limit; deferred without an attempt"
            ),
            // It comes back after the queue's visibility timeout instead.
            Err(e) => {
                tracing::warn!(error = %e, reason = reason.as_str(), "over the endpoint's limit, and could not defer it")
            }
        }
        MessageOutcome::Retry
    }

    /// Shows again at once the messages the slow start deferred for an
    /// endpoint that has now answered in time. A receipt that is no longer
    /// current (the message came back and was received again) is refused
    /// by the queue, and the message goes on as it is.
    pub(super) async fn release(&self, released: Released) {
        if released.0.is_empty() {
            return;
        }
        let count = released.0.len();
        let shown = futures::future::join_all(
            released
                .0
                .iter()
                .map(|receipt| self.queue.change_visibility(receipt, Duration::ZERO)),
        )
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
        tracing::info!(
            count,
            shown,
            "the endpoint answered in time; the messages its slow start deferred are shown again"
        );
    }

    /// A retry deferred past the time the reconciler would take its
    /// message for lost ([`STUCK_AFTER`] after it was due, less
    /// [`POSTPONE_MARGIN`]) is noted on the delivery: its next attempt
    /// moves to when the message comes back, and this message owns it. A
    /// backlog over an endpoint's `rate_limit` then waits in its line once,
    /// instead of the reconciler queueing a copy of every waiting delivery
    /// each pass, each copy joining the line and lengthening it. A delivery
    /// never attempted is not the reconciler's (its message is renewed),
    /// and a failed note leaves the message waiting as before.
    async fn note_long_wait(&self, job: &Job<'_>, delivery: &Delivery, hide: Duration) {
        let Some(due) = delivery.next_attempt_at else {
            return;
        };
        let now = self.clock.now();
        let back = now + chrono::Duration::from_std(hide).unwrap_or_default();
        if back < due + STUCK_AFTER - POSTPONE_MARGIN {
            return;
        }
        match self
            .deliveries
            .postpone(
                &delivery.id,
                delivery.attempt_count,
                &job.message.message_id,
                back,
                now,
                now - STUCK_AFTER,
            )
            .await
        {
            Ok(true) => tracing::info!(until = %back, "long deferral noted on the delivery"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not note a long deferral"),
        }
    }
}

/// How long before the reconciler would take a waiting message for lost
/// its wait is noted: its pass runs every few minutes.
pub const POSTPONE_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::{Secret, Subscription};

    fn endpoint(rate_limit: Option<u32>) -> Endpoint {
        let mut ep = Endpoint::new(
            "org",
            "https://x.test/".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.rate_limit = rate_limit;
        ep
    }

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    fn ms(n: i64) -> chrono::Duration {
        chrono::Duration::milliseconds(n)
    }

    fn go(a: Admission) -> Permit {
        match a {
            Admission::Go(p) => p,
            other => panic!("expected to go, got {other:?}"),
        }
    }

    fn deferred(a: Admission) -> (Duration, DeferReason) {
        let (delay, reason, _) = deferral(a);
        (delay, reason)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_endpoint_is_never_capped() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let ep = endpoint(None);
        // Slow start: two at once until a POST has ended...
        let first = go(limits.admit("first", 0, false, &ep, t0()));
        let _second = go(limits.admit("second", 0, false, &ep, t0()));
        let (delay, reason) = deferred(limits.admit("third", 0, false, &ep, t0()));
        assert_eq!((delay, reason), (MIN_DEFER, DeferReason::SlowLane));
        // ... and no cap once one ended quickly.
        first.posted();
        let permits: Vec<Permit> = (0..50)
            .map(|i| go(limits.admit(&format!("m{i}"), 0, false, &ep, t0())))
            .collect();
        assert_eq!(permits.len(), 50);
    }

    /// A deferral's delay and reason, and whether it waits for the
    /// endpoint's first answer.
    fn deferral(a: Admission) -> (Duration, DeferReason, bool) {
        match a {
            Admission::Defer {
                delay,
                reason,
                until_first_answer,
            } => (delay, reason, until_first_answer),
            Admission::Go(_) => panic!("expected a deferral"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_answer_in_time_shows_the_slow_starts_deferrals_again() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let ep = endpoint(None);
        let first = go(limits.admit("first", 0, false, &ep, t0()));
        let second = go(limits.admit("second", 0, false, &ep, t0()));
        for i in 0..3 {
            assert_eq!(
                deferral(limits.admit(&format!("held{i}"), 0, false, &ep, t0())),
                (MIN_DEFER, DeferReason::SlowLane, true)
            );
            assert!(limits.await_first_answer(&ep.id, &format!("r{i}")));
        }
        // A deferral older than the shortest is back on the queue already.
        tokio::time::advance(MIN_DEFER).await;
        assert!(limits.await_first_answer(&ep.id, "r3"));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(first.posted(), Released(vec!["r3".to_string()]));
        // Known now: a message hidden meanwhile is to be shown at once,
        // and the next answer shows nothing.
        assert!(!limits.await_first_answer(&ep.id, "late"));
        assert_eq!(second.posted(), Released::default());
    }

    #[tokio::test(start_paused = true)]
    async fn the_messages_kept_for_a_first_answer_are_bounded_and_each_endpoints_own() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let (a, b) = (endpoint(None), endpoint(None));
        let first_a = go(limits.admit("a0", 0, false, &a, t0()));
        let _b = go(limits.admit("b0", 0, false, &b, t0()));
        assert!(limits.await_first_answer(&b.id, "b-held"));
        for i in 0..MAX_AWAITING + 5 {
            assert!(limits.await_first_answer(&a.id, &format!("a{i}")));
        }
        let kept = |l: &Limits| l.state.lock().map(|s| s.awaiting.len()).unwrap_or(0);
        assert_eq!(kept(&limits), MAX_AWAITING);
        tokio::time::advance(Duration::from_millis(5)).await;
        let released = first_a.posted();
        // A's, as many as were kept (B's one took a place), and not B's.
        assert_eq!(released.0.len(), MAX_AWAITING - 1);
        assert!(released.0.iter().all(|r| r.starts_with('a')));
        assert_eq!(kept(&limits), 1);
        // Once visible again (a deferral's time), nothing is kept for it.
        tokio::time::advance(MIN_DEFER).await;
        assert!(limits.await_first_answer(&b.id, "b-later"));
        assert_eq!(kept(&limits), 1, "only the new one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_answer_out_of_time_shows_nothing_again() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let ep = endpoint(None);
        let first = go(limits.admit("first", 0, false, &ep, t0()));
        let _second = go(limits.admit("second", 0, false, &ep, t0()));
        let _ = deferral(limits.admit("held", 0, false, &ep, t0()));
        assert!(limits.await_first_answer(&ep.id, "r"));
        tokio::time::advance(DEFAULT_SLOW_AFTER).await;
        assert_eq!(first.posted(), Released::default());
        // Slow: once its two slots are taken again, its deferrals are the
        // slow lane's, kept to the end.
        let _third = go(limits.admit("held2", 0, false, &ep, t0()));
        let (_, reason, until_first_answer) = deferral(limits.admit("held3", 0, false, &ep, t0()));
        assert_eq!((reason, until_first_answer), (DeferReason::SlowLane, false));
        assert!(limits.await_first_answer(&ep.id, "r2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_deferral_does_not_wait_for_an_answer() {
        let limits = Limits::new(LaneConfig::uncapped(), 10);
        let ep = endpoint(Some(1));
        let _a = go(limits.admit("a", 0, false, &ep, t0()));
        let (_, reason, until_first_answer) = deferral(limits.admit("b", 0, false, &ep, t0()));
        assert_eq!(
            (reason, until_first_answer),
            (DeferReason::RateLimit, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_endpoint_holds_at_most_its_cap() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let slow = endpoint(None);
        let other = endpoint(None);
        // Its first two POSTs go (slow start); once one has run past
        // `slow_after`, the endpoint is slow and the rest wait for a slot.
        let first: Vec<Permit> = (0..2)
            .map(|i| go(limits.admit(&format!("m{i}"), 0, false, &slow, t0())))
            .collect();
        tokio::time::advance(DEFAULT_SLOW_AFTER).await;
        let (delay, reason) = deferred(limits.admit("m3", 0, false, &slow, t0()));
        assert_eq!(reason, DeferReason::SlowLane);
        assert!(delay >= MIN_DEFER && delay <= MAX_SLOW_DEFER, "{delay:?}");
        // Deferred messages are spread out, not sent back all at once.
        let (next, _) = deferred(limits.admit("m4", 0, false, &slow, t0()));
        assert!(next > delay, "{next:?} after {delay:?}");
        // Other endpoints are untouched.
        let _other = go(limits.admit("o", 0, false, &other, t0()));
        let _other2 = go(limits.admit("o2", 0, false, &other, t0()));
        // The slow POSTs end: its average keeps it slow, capped at two.
        first.into_iter().for_each(|p| drop(p.posted()));
        let a = go(limits.admit("m5", 0, false, &slow, t0()));
        let b = go(limits.admit("m6", 0, false, &slow, t0()));
        deferred(limits.admit("m7", 0, false, &slow, t0()));
        a.posted();
        b.posted();
        // Fast answers bring it back to the fast lane.
        for i in 0..6 {
            go(limits.admit(&format!("f{i}"), 0, false, &slow, t0())).posted();
        }
        let many: Vec<Permit> = (0..5)
            .map(|i| go(limits.admit(&format!("g{i}"), 0, false, &slow, t0())))
            .collect();
        assert_eq!(many.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn no_cap_means_no_deferral() {
        let config = LaneConfig {
            slow_cap: None,
            ..LaneConfig::default()
        };
        let limits = Limits::new(config, 10);
        let ep = endpoint(None);
        let _held: Vec<Permit> = (0..3)
            .map(|i| go(limits.admit(&format!("m{i}"), 0, false, &ep, t0())))
            .collect();
        tokio::time::advance(Duration::from_secs(30)).await;
        let _more = go(limits.admit("m3", 0, false, &ep, t0()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_defers_by_the_time_to_the_next_token() {
        let limits = Limits::new(LaneConfig::capped(), 10);
        let ep = endpoint(Some(1));
        drop(go(limits.admit("a", 0, false, &ep, t0())));
        let (delay, reason) = deferred(limits.admit("b", 0, false, &ep, t0()));
        assert_eq!(
            (delay, reason),
            (Duration::from_secs(1), DeferReason::RateLimit)
        );
        drop(go(limits.admit("b", 0, false, &ep, t0() + ms(1000))));
        // The limit lifted: everything goes.
        let open = endpoint(None);
        let mut lifted = open.clone();
        lifted.id.clone_from(&ep.id);
        for i in 0..10 {
            drop(go(limits.admit(
                &format!("c{i}"),
                0,
                false,
                &lifted,
                t0() + ms(1000),
            )));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_out_of_deferrals_is_sent_over_the_limit() {
        let limits = Limits::new(LaneConfig::capped(), 3);
        let ep = endpoint(Some(1));
        drop(go(limits.admit("a", 0, false, &ep, t0())));
        deferred(limits.admit("b", 2, false, &ep, t0()));
        drop(go(limits.admit("c", 3, false, &ep, t0())));
    }

    fn endpoint_of(org: &str) -> Endpoint {
        Endpoint::new(
            org,
            "https://x.test/".into(),
            Subscription::All,
            Secret::generate(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_orgs_slow_endpoints_share_its_slots_while_another_org_has_work() {
        let limits = Limits::new(LaneConfig::default(), 10);
        let slow: Vec<Endpoint> = (0..3).map(|_| endpoint_of("noisy")).collect();
        // Alone in the process: each new endpoint may hold its own cap.
        let mut held: Vec<Permit> = Vec::new();
        for ep in &slow {
            for i in 0..2 {
                held.push(go(limits.admit(
                    &format!("{}-{i}", ep.id),
                    0,
                    false,
                    ep,
                    t0(),
                )));
            }
        }
        assert_eq!(held.len(), 6);
        held.clear();
        // Another org has work here: the noisy org's slow-lane POSTs
        // together stop at its share.
        let quiet = endpoint_of("quiet");
        drop(go(limits.admit("q", 0, false, &quiet, t0())));
        for ep in &slow[..2] {
            for i in 0..2 {
                held.push(go(limits.admit(
                    &format!("{}-b{i}", ep.id),
                    0,
                    false,
                    ep,
                    t0(),
                )));
            }
        }
        assert_eq!(held.len(), DEFAULT_ORG_SLOW_CAP as usize);
        let (_, reason) = deferred(limits.admit("over", 0, false, &slow[2], t0()));
        assert_eq!(reason, DeferReason::OrgShare);
        // The quiet org is not held up by it.
        drop(go(limits.admit("q2", 0, false, &quiet, t0())));
        // A slot freed is a slot to take.
        held.pop();
        drop(go(limits.admit("next", 0, false, &slow[2], t0())));
        // Once the other org has been idle for the window, the share lifts.
        tokio::time::advance(OTHER_ORG_WINDOW).await;
        let _more = go(limits.admit("alone", 0, false, &slow[2], t0()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_may_wait_past_the_budget_a_retry_may_not() {
        let limits = Limits::new(LaneConfig::default(), 3);
        let ep = endpoint(None);
        let _held: Vec<Permit> = (0..2)
            .map(|i| go(limits.admit(&format!("m{i}"), 0, false, &ep, t0())))
            .collect();
        // Far past the budget, a never-attempted delivery still waits:
        // its message is renewed before SQS's redrive.
        deferred(limits.admit("first", 25, true, &ep, t0()));
        // A retry out of deferrals is sent over the cap.
        drop(go(limits.admit("retry", 3, false, &ep, t0())));
    }
}
