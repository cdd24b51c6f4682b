//! The invariants, checked as the simulation runs and at its end.

use crate::coverage::{Coverage, Path};
use crate::lateness::{explain, Rules};
use crate::ledger::{Recorded, Timeline};
use crate::receivers::Answer;
use crate::tap::whole_seconds;
use crate::Lateness;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use webhooks_domain::delivery::{delivery_id, STUCK_AFTER};
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, Event, RetrySchedule};

/// Every invariant violation seen, in order.
#[derive(Clone, Default)]
pub struct Violations(Arc<Mutex<Vec<String>>>);

impl Violations {
    pub fn add(&self, what: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }

    pub fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the simulation knows of an endpoint it made.
#[derive(Debug, Clone)]
pub struct Known {
    pub endpoint: Endpoint,
    /// When it was deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When it was seen turned off, and back on (`None`: still off).
    pub disabled: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

impl Known {
    /// Whether it was off at any time in `[from, to]`.
    fn off_during(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.disabled
            .iter()
            .any(|(off, on)| *off <= to && on.is_none_or(|on| on >= from))
    }
}

/// Pending deliveries without a queue message, and since when.
pub struct Orphans {
    since: HashMap<String, DateTime<Utc>>,
    /// The longest a pending delivery may be without a message.
    limit: chrono::Duration,
    /// What each sweep that missed it adds.
    period: chrono::Duration,
}

impl Orphans {
    /// Pending deliveries may be without a message for the reconciler's
    /// threshold, a sweep period (`period`, its jitter included) and a
    /// minute of slack, and a period more for each sweep that missed them.
    pub fn new(period: chrono::Duration) -> Self {
        Orphans {
            since: HashMap::new(),
            limit: STUCK_AFTER + period + chrono::Duration::minutes(1),
            period,
        }
    }

    /// The longest a pending delivery may be without a message when no
    /// sweep missed it.
    pub fn limit(&self) -> chrono::Duration {
        self.limit
    }

    /// Compares the pending deliveries (each with when it is due) with the
    /// queue's messages at `now`; `missed(id, since)`: the sweeps since
    /// then that did not finish or whose read of the index missed the
    /// delivery. A delivery without a message is the reconciler's from the
    /// later of the two: when its message went, and when it is due (a
    /// retry scheduled hours ahead waits for its time, as the reconciler
    /// looks only at what is overdue).
    pub fn check(
        &mut self,
        now: DateTime<Utc>,
        pending: &[(String, DateTime<Utc>)],
        queued: &HashSet<String>,
        missed: &dyn Fn(&str, DateTime<Utc>) -> i32,
        violations: &Violations,
    ) {
        let mut still = HashMap::new();
        for (id, due) in pending {
            if queued.contains(id) {
                continue;
            }
            let since = self.since.get(id).copied().unwrap_or(now);
            let from = since.max(*due);
            if now - from > self.limit + self.period * missed(id, from) {
                violations.add(format!(
                    "{id} pending without a queue message for {} min ({} min since it was due)",
                    (now - since).num_minutes(),
                    (now - from).num_minutes()
                ));
                // Reported once; the clock restarts.
                still.insert(id.clone(), now);
            } else {
                still.insert(id.clone(), since);
            }
        }
        self.since = still;
    }
}

/// Checks every delivery at the end: each published event reached each
/// endpoint subscribed when it was published, and no other; each ended as
/// its attempts say (delivered after a 2xx the receiver answered;
/// dead-lettered after a 410, or after the schedule's last attempt;
/// canceled with its deleted endpoint); attempt numbers run 1..n; each
/// retry came no earlier than the time it was scheduled for, which keeps
/// the schedule and `Retry-After`; and each wait for an attempt is
/// explained by what happened to the delivery in it ([`crate::lateness`]).
pub struct Final<'a> {
    pub events: &'a [Event],
    pub endpoints: &'a BTreeMap<String, Known>,
    pub deliveries: &'a [Delivery],
    pub schedule: &'a RetrySchedule,
    /// When the sweeper's cursor was seen past each event: its fan-out
    /// happened between its publication and then, and an endpoint off at
    /// any time in that span may or may not get it.
    pub swept_at: &'a HashMap<String, DateTime<Utc>>,
    /// Deliveries sent again by hand: their gaps follow no schedule.
    pub resent: &'a HashSet<String>,
    /// What the receiver answered to each POST of (delivery, attempt).
    pub answered: &'a dyn Fn(&str, u32) -> Vec<Answer>,
    /// Each delivery's timeline.
    pub timeline: &'a dyn Fn(&str) -> Timeline,
    pub rules: &'a Rules<'a>,
    /// How long the sender may hide a due message of this delivery: a
    /// deferral by its endpoint's limits, or a wait for a live lease.
    pub due_hide: &'a dyn Fn(&Delivery) -> Duration,
    pub coverage: &'a Coverage,
}

/// What the retries' waits came to.
#[derive(Debug, Clone, Default)]
pub struct Waits {
    /// How late each retry was after its scheduled time.
    pub retries: Lateness,
    /// How late each first attempt was after its first message.
    pub first: Lateness,
}

impl Final<'_> {
    pub fn check(&self, violations: &Violations) -> Waits {
        let by_id: HashMap<&str, &Delivery> =
            self.deliveries.iter().map(|d| (d.id.as_str(), d)).collect();
        let mut expected: HashSet<String> = HashSet::new();
        for event in self.events {
            for known in self.endpoints.values() {
                let ep = &known.endpoint;
                let subscribed = ep.org_id == event.org_id
                    && ep.subscription.matches(event.event_type)
                    && ep.created_at.timestamp() <= event.created_at.timestamp();
                if !subscribed {
                    continue;
                }
                let id = delivery_id(&ep.id, &event.id);
                expected.insert(id.clone());
                let published = event.created_at;
                let fanned_out_by = self
                    .swept_at
                    .get(&event.id)
                    .copied()
                    .filter(|at| *at >= published)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                let optional = known.deleted_at.is_some()
                    || known.off_during(published - chrono::Duration::seconds(2), fanned_out_by);
                match by_id.get(id.as_str()) {
                    None if optional => {}
                    None => violations.add(format!(
                        "{} never reached {} (no delivery)",
                        event.id, ep.id
                    )),
                    Some(d) => self.finished(d, known.deleted_at.is_some(), violations),
                }
            }
        }
        let mut waits = Waits::default();
        for d in self.deliveries {
            if !expected.contains(&d.id) {
                violations.add(format!(
                    "{} exists, but its endpoint was not subscribed when the event was published",
                    d.id
                ));
            }
            self.numbered(d, violations);
            self.answered_as_recorded(d, violations);
            if !self.resent.contains(&d.id) {
                self.on_time(d, &mut waits, violations);
            }
        }
        waits
    }

    /// Its end state, by its cause.
    fn finished(&self, d: &Delivery, endpoint_deleted: bool, violations: &Violations) {
        let last = d.attempts.last();
        let code = last.and_then(|a| a.status_code);
        match d.status {
            DeliveryStatus::Delivered => {
                if !code.is_some_and(|c| (200..300).contains(&c)) {
                    violations.add(format!(
                        "{} delivered, but its last attempt answered {code:?}",
                        d.id
                    ));
                }
            }
            DeliveryStatus::DeadLettered => {
                // Sent again by hand after its whole schedule, a delivery
                // has attempts past it, and the first that fails ends it.
                let max = self.schedule.max_attempts();
                let exhausted = d.attempt_count == max
                    || (d.attempt_count > max && self.resent.contains(&d.id));
                if code == Some(410) {
                    self.coverage.add(Path::Gone410);
                } else if exhausted {
                    self.coverage.add(Path::Exhausted);
                } else {
                    violations.add(format!(
                        "{} dead-lettered after attempt {} of {} without a 410 (last {code:?})",
                        d.id,
                        d.attempt_count,
                        self.schedule.max_attempts()
                    ));
                }
                let kept = last.map(|a| match (a.status_code, &a.error) {
                    (Some(c), _) => format!("HTTP {c}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => String::new(),
                });
                if d.last_error.is_none() || d.last_error != kept {
                    violations.add(format!(
                        "{} dead-lettered with last error {:?}, its last attempt says {kept:?}",
                        d.id, d.last_error
                    ));
                }
            }
            DeliveryStatus::Canceled if endpoint_deleted => {}
            status => violations.add(format!(
                "{} ended {status} after {} attempts",
                d.id, d.attempt_count
            )),
        }
    }

    /// Every attempt recorded with an HTTP status got that status from the
    /// receiver, at one of the POSTs of that attempt number.
    fn answered_as_recorded(&self, d: &Delivery, violations: &Violations) {
        for a in &d.attempts {
            let Some(code) = a.status_code else { continue };
            let answers = (self.answered)(&d.id, a.number);
            if !answers.iter().any(|x| x.status == Some(code)) {
                violations.add(format!(
                    "{} attempt {} recorded HTTP {code}, which the receiver never answered to it",
                    d.id, a.number
                ));
            }
        }
    }

    fn numbered(&self, d: &Delivery, violations: &Violations) {
        let numbers: Vec<u32> = d.attempts.iter().map(|a| a.number).collect();
        let first = d
            .attempt_count
            .saturating_sub(u32::try_from(numbers.len()).unwrap_or(u32::MAX))
            + 1;
        let expected: Vec<u32> = (first..=d.attempt_count).collect();
        if numbers != expected {
            violations.add(format!(
                "{} attempt numbers {numbers:?}, expected {expected:?}",
                d.id
            ));
        }
    }

    /// Each retry at or after its scheduled time, that time within the
    /// schedule (its jitter, its `Retry-After`), and each wait explained.
    fn on_time(&self, d: &Delivery, waits: &mut Waits, violations: &Violations) {
        let timeline = (self.timeline)(&d.id);
        let margin = self.rules.margin;
        crate::lateness::check_hides(&d.id, &timeline, (self.due_hide)(d), margin, violations);
        let first_attempt = timeline.recorded.first().filter(|a| a.number == 1);
        if let (Some(first), Some(a)) = (timeline.first_queued(), first_attempt) {
            let e = explain(&timeline, first, a.at, self.rules);
            waits.first.add(e.lateness);
            self.report_unexplained(d, 1, &e, violations);
        }
        for pair in timeline.recorded.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.number != a.number + 1 {
                continue;
            }
            let Some(due) = a.next else {
                violations.add(format!(
                    "{} attempt {} after attempt {}, which scheduled none",
                    d.id, b.number, a.number
                ));
                continue;
            };
            self.scheduled_as_due(d, a, due, violations);
            if whole_seconds(b.at) < whole_seconds(due) {
                violations.add(format!(
                    "{} attempt {} at {}, before its retry was due at {due}",
                    d.id, b.number, b.at
                ));
            }
            let e = explain(&timeline, due, b.at, self.rules);
            waits.retries.add(e.lateness);
            self.report_unexplained(d, b.number, &e, violations);
        }
    }

    /// The retry scheduled after attempt `a` for `due`: its delay with
    /// jitter (-20 % to +20 %), or the `Retry-After` of the answer it
    /// recorded, up to 12 h, when longer; never shorter than either.
    fn scheduled_as_due(
        &self,
        d: &Delivery,
        a: &Recorded,
        due: DateTime<Utc>,
        violations: &Violations,
    ) {
        let number = a.number;
        let Some(delay) = self.schedule.delay_after(number) else {
            violations.add(format!(
                "{} attempt {number} scheduled a retry after the schedule's last",
                d.id
            ));
            return;
        };
        // The answer recorded: one of that attempt's POSTs with its
        // status (a POST whose invocation died is sent again).
        let mut asked: Vec<Duration> = (self.answered)(&d.id, number)
            .iter()
            .filter(|x| x.status == a.status_code && a.status_code.is_some())
            .map(|x| match x.status {
                // Honoured on these only.
                Some(429 | 503) => x
                    .retry_after
                    .unwrap_or_default()
                    .min(webhooks_domain::retry::MAX_RETRY_AFTER),
                _ => Duration::ZERO,
            })
            .collect();
        if asked.is_empty() {
            asked.push(Duration::ZERO);
        }
        let ms = |x: Duration| chrono::Duration::from_std(x).unwrap_or_default();
        let waited = due - a.at;
        // A millisecond either way: the jitter's float.
        let ulp = chrono::Duration::milliseconds(1);
        let within = |asked: &Duration| {
            let min = ms(delay.mul_f64(0.8).max(*asked));
            let max = ms(delay.mul_f64(1.2).max(*asked));
            waited + ulp >= min && waited <= max + ulp
        };
        let Some(kept) = asked.iter().find(|x| within(x)) else {
            violations.add(format!(
                "{} attempt {number} scheduled its retry {:.1} s later, outside the schedule's {} s (-20 %/+20 %) and Retry-After {:?} s",
                d.id,
                waited.num_milliseconds() as f64 / 1000.0,
                delay.as_secs(),
                asked.iter().map(Duration::as_secs).collect::<Vec<_>>()
            ));
            return;
        };
        if *kept > delay.mul_f64(1.2) {
            self.coverage.add(Path::RetryAfterHonoured);
        }
        if waited > ms(webhooks_domain::retry::MAX_HIDE_PER_RECEIVE) {
            self.coverage.add(Path::Hop12h);
        }
    }

    fn report_unexplained(
        &self,
        d: &Delivery,
        number: u32,
        e: &crate::lateness::Explained,
        violations: &Violations,
    ) {
        if e.unexplained > chrono::Duration::zero() {
            let hole = e
                .hole
                .map(|(a, b)| format!(", the longest from {a} to {b}"))
                .unwrap_or_default();
            violations.add(format!(
                "{} attempt {number} came {:.1} s late, {:.1} s of it unexplained{hole}",
                d.id,
                e.lateness.num_milliseconds() as f64 / 1000.0,
                e.unexplained.num_milliseconds() as f64 / 1000.0
            ));
        }
    }
}

/// From when a delivery could first be attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Its event's commit: its first message came out of the event's first
    /// fan-out by the stream, which went through, so the whole way from the
    /// commit is the pipeline's (stream, fan-out, queue, sender).
    Committed(DateTime<Utc>),
    /// Its first message: its event's fan-out was retried, given up (the
    /// sweeper's), or came from elsewhere. What came before is the
    /// stream's and the sweeper's, bounded by the cursor and orphan checks.
    Queued(DateTime<Utc>),
}

impl Ready {
    pub fn at(self) -> DateTime<Utc> {
        match self {
            Ready::Committed(t) | Ready::Queued(t) => t,
        }
    }
}

/// How long the simulation's steps and the stream may take, which bound a
/// first attempt's lateness.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The longest a step takes: every invocation of a step runs at once,
    /// and the next step starts when all have ended, so a step lasts as
    /// long as its slowest sender: a cold start, the looks for a note its
    /// fan-out has not written yet, then a POST up to the request timeout.
    pub step: Duration,
    /// The longest the stream takes to hand a committed record over.
    pub stream_lag: Duration,
}

impl Pace {
    fn step(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.step).unwrap_or_default()
    }

    /// The longest a visible message of a quiet org waits to be received:
    /// the step in progress when it becomes visible, and one step more.
    /// That one is the fair queue's: a tenant's messages are handed out in
    /// arrival order with the quiet ones until the queue sees it as noisy
    /// (30 in flight, or over 10 % of the recent processing time), which
    /// one step of its slow POSTs makes it; so at most one step of a noisy
    /// tenant not yet seen as noisy (at the start, after a lull) comes
    /// ahead of a quiet message, and otherwise only other quiet tenants'
    /// short bursts (a few steps of quick POSTs, seconds in all).
    pub fn queue_wait(&self) -> chrono::Duration {
        self.step() * 2
    }
}

/// A quiet org's delivery's first attempt, and what delayed it.
#[derive(Debug, Clone, Copy)]
pub struct FirstAttempt<'a> {
    pub ready: Ready,
    /// From a commit: steps that began with its stream batch due and left
    /// it for later, behind the batches fanned out at once.
    pub stream_waits: u32,
    pub attempted: DateTime<Utc>,
    /// Every receive of its messages that left it on the queue.
    pub holds: &'a [Hold],
    /// How long the attempt waited on handlers: the batch of the receive
    /// that made it, waiting for its handler, or one of the delivery's
    /// messages received before it whose handler had not started
    /// ([`crate::lateness::handler_wait`]).
    pub handler_delay: chrono::Duration,
}

/// One receive of a delivery's message that left it on the queue (not
/// the one whose handler made the attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When the queue handed it out.
    pub received: DateTime<Utc>,
    /// How long the message was hidden from the receive on (its handler's
    /// wait to start included).
    pub hidden: Duration,
}

/// What a first attempt may be late by beyond its steps: the world polls
/// for due work every 200 ms between steps.
pub const FIRST_ATTEMPT_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

impl FirstAttempt<'_> {
    pub fn lateness(&self) -> chrono::Duration {
        (self.attempted - self.ready.at()).max(chrono::Duration::zero())
    }

    /// How late it may be at `pace`. From a commit: the stream's lag, the
    /// step in progress when its batch is due (and each step that left the
    /// batch for later), then the step fanning it out, in which its message
    /// is sent, and the message's [`Pace::queue_wait`]. From a first
    /// message, its queue wait. And for each receive before the attempt
    /// that left its message on the queue: the time it hid the message (a
    /// deferral, or the queue's visibility timeout after a crash, a
    /// throttled store call or a failed visibility change) and the queue
    /// wait once it is visible again. Nothing else: the fair queue hands a
    /// quiet org's messages out before a noisy one's, so a queue full of
    /// the noisy orgs' messages adds nothing, and the slow lane keeps their
    /// slow POSTs from holding every step for long.
    pub fn allowed(&self, pace: Pace) -> chrono::Duration {
        let step = pace.step();
        let waits = i32::try_from(self.stream_waits).unwrap_or(i32::MAX);
        let path = match self.ready {
            Ready::Committed(_) => {
                chrono::Duration::from_std(pace.stream_lag).unwrap_or_default()
                    + step * (1 + waits)
                    + pace.queue_wait()
            }
            Ready::Queued(_) => pace.queue_wait(),
        };
        let holds: chrono::Duration = self
            .holds
            .iter()
            .filter(|h| h.received < self.attempted)
            .map(|h| chrono::Duration::from_std(h.hidden).unwrap_or_default() + pace.queue_wait())
            .sum();
        path + holds + self.handler_delay + FIRST_ATTEMPT_MARGIN
    }

    /// The receives before the attempt that left the message queued.
    pub fn held(&self) -> usize {
        self.holds
            .iter()
            .filter(|h| h.received < self.attempted)
            .count()
    }

    /// Adds a violation if it came later than [`FirstAttempt::allowed`].
    pub fn check(&self, delivery_id: &str, pace: Pace, violations: &Violations) {
        let (late, allowed) = (self.lateness(), self.allowed(pace));
        if late > allowed {
            let from = match self.ready {
                Ready::Committed(_) => "its event's commit",
                Ready::Queued(_) => "its first message",
            };
            violations.add(format!(
                "{delivery_id} (a quiet org's) first attempted {:.1} s after {from}, over the {:.1} s allowed ({} receives held it)",
                late.num_milliseconds() as f64 / 1000.0,
                allowed.num_milliseconds() as f64 / 1000.0,
                self.held()
            ));
        }
    }
}

/// An outage's backlog, which no quiet org's first attempt is held to the
/// bound in: an outage makes every org's backlog at once.
#[derive(Debug, Clone, Copy)]
pub struct OutageBacklog<'a> {
    /// Each outage's start and end.
    pub outages: &'a [(DateTime<Utc>, DateTime<Utc>)],
    /// The first step that left no visible message behind after the first
    /// sweep since an outage's end.
    pub caught_up: Option<DateTime<Utc>>,
}

impl OutageBacklog<'_> {
    /// Whether a delivery whose event was committed at `committed` and
    /// whose first message was sent at `queued` is in an outage's backlog:
    /// - queued from an outage's start until the queue caught up;
    /// - or its event committed before an outage's end and its first
    ///   message sent after its start, wherever that message was sent (the
    ///   stream gave it up while the table refused it, or it was lost, or
    ///   its endpoint was off then): the sweeper fans out every org's such
    ///   events together once the table answers, in waves as long as its
    ///   passes take to catch up (many in a crowded world);
    /// - or queued behind messages of its own org's backlog that were
    ///   still waiting to be received (`own`): an overloaded sweeper's
    ///   waves reach a quiet org minutes after the queue first caught up,
    ///   and its new messages wait behind its own backlog, which the fair
    ///   queue does not reorder (seed 473 of `make sim-long`).
    pub fn holds(
        &self,
        committed: Option<DateTime<Utc>>,
        queued: Option<DateTime<Utc>>,
        own: &OwnBacklog,
    ) -> bool {
        queued.is_some_and(|q| self.made(committed, q) || own.waiting_at(q))
    }

    /// The first two rules of [`OutageBacklog::holds`]: what the outage
    /// itself queued, which makes each org's own backlog.
    pub fn made(&self, committed: Option<DateTime<Utc>>, queued: DateTime<Utc>) -> bool {
        self.outages.iter().any(|(from, until)| {
            let before_caught_up = queued >= *from && self.caught_up.is_none_or(|c| queued <= c);
            let committed_during = committed.is_some_and(|c| c <= *until) && queued >= *from;
            before_caught_up || committed_during
        })
    }
}

/// An org's deliveries in an outage's backlog ([`OutageBacklog::holds`]):
/// when each was first queued, and first received.
#[derive(Debug, Default)]
pub struct OwnBacklog {
    spans: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

impl OwnBacklog {
    /// One of them: first queued at `queued`, first received at
    /// `received` (`None` if never).
    pub fn add(&mut self, queued: DateTime<Utc>, received: Option<DateTime<Utc>>) {
        self.spans.push((queued, received));
    }

    /// Whether one of them was queued by `at` and not yet received.
    pub fn waiting_at(&self, at: DateTime<Utc>) -> bool {
        self.spans
            .iter()
            .any(|(queued, received)| *queued <= at && received.is_none_or(|r| r > at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::{Attempt, EventType, Secret, Subscription};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    fn world() -> (Event, BTreeMap<String, Known>, Delivery) {
        let mut ep = Endpoint::new(
            "org",
            "https://a.test/".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.created_at = at(0);
        let mut event = Event::new(
            "org",
            EventType::LeadWon,
            serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        );
        event.created_at = at(1);
        let d = Delivery::new_at("org", &ep.id, &event.id, event.event_type, at(1));
        let known = BTreeMap::from([(
            ep.id.clone(),
            Known {
                endpoint: ep,
                deleted_at: None,
                disabled: Vec::new(),
            },
        )]);
        (event, known, d)
    }

    fn attempt(number: u32, minute: i64) -> Attempt {
        Attempt {
            number,
            at: at(minute),
            status_code: Some(503),
            error: None,
            latency_ms: 1,
            response_body: None,
        }
    }

    /// One message, received for each attempt and hidden by it until the
    /// retry it scheduled; `attempts`: (number, minute, retry's minute).
    fn timeline(attempts: &[(u32, i64, Option<i64>)]) -> Timeline {
        use crate::ledger::{Message, Outcome, Receive, Recorded};
        let receives = attempts
            .iter()
            .map(|(_, minute, next)| Receive {
                receipt: format!("r{minute}"),
                at: at(*minute),
                started: Some(at(*minute)),
                until: next.map_or(at(*minute), at),
                hides: Vec::new(),
                outcome: Some(Outcome::Retry),
                step_ended: Some(at(*minute)),
            })
            .collect();
        Timeline {
            messages: vec![Message {
                id: "m1".into(),
                sent: at(1),
                receives,
                gone: None,
            }],
            emptied: Vec::new(),
            recorded: attempts
                .iter()
                .map(|(number, minute, next)| Recorded {
                    number: *number,
                    at: at(*minute),
                    next: next.map(at),
                    status_code: Some(503),
                    written: at(*minute),
                })
                .collect(),
            index_missed: Vec::new(),
        }
    }

    fn violations_of(
        events: &[Event],
        known: &BTreeMap<String, Known>,
        d: &[Delivery],
        ledger: &Timeline,
        retry_after: Option<Duration>,
    ) -> Vec<String> {
        violations_with(events, known, d, ledger, retry_after, &HashSet::new())
    }

    /// As [`violations_of`], with the deliveries in `resent` sent again by
    /// hand.
    fn violations_with(
        events: &[Event],
        known: &BTreeMap<String, Known>,
        d: &[Delivery],
        ledger: &Timeline,
        retry_after: Option<Duration>,
        resent: &HashSet<String>,
    ) -> Vec<String> {
        let v = Violations::default();
        let schedule: RetrySchedule = "5m,1h".parse().unwrap();
        let rules = Rules {
            poll: chrono::Duration::seconds(31),
            busy: chrono::Duration::milliseconds(200),
            saturated: &[],
            sweeps: &[],
            stuck_after: STUCK_AFTER,
            sweep_period: chrono::Duration::seconds(330),
            margin: chrono::Duration::seconds(1),
        };
        // The receiver answered what each attempt recorded.
        let answered = |id: &str, n: u32| {
            d.iter()
                .filter(|x| x.id == id)
                .flat_map(|x| &x.attempts)
                .filter(|a| a.number == n)
                .map(|a| Answer {
                    status: a.status_code,
                    retry_after: retry_after.filter(|_| n == 1),
                })
                .collect()
        };
        Final {
            events,
            endpoints: known,
            deliveries: d,
            schedule: &schedule,
            swept_at: &HashMap::new(),
            resent,
            answered: &answered,
            timeline: &|_| ledger.clone(),
            rules: &rules,
            due_hide: &|_| Duration::from_secs(300),
            coverage: &Coverage::default(),
        }
        .check(&v);
        v.all()
    }

    fn ok(code: u16) -> impl Fn(Attempt) -> Attempt {
        move |mut a| {
            a.status_code = Some(code);
            a
        }
    }

    #[test]
    fn a_delivered_delivery_on_schedule_passes() {
        let (event, known, mut d) = world();
        d.status = DeliveryStatus::Delivered;
        d.attempts = vec![attempt(1, 1), ok(200)(attempt(2, 6))];
        d.attempt_count = 2;
        let t = timeline(&[(1, 1, Some(6)), (2, 6, None)]);
        let v = violations_of(&[event], &known, &[d], &t, None);
        assert_eq!(v, Vec::<String>::new());
    }

    #[test]
    fn a_missing_pending_early_or_misnumbered_delivery_is_caught() {
        let (event, known, d) = world();
        let none = Timeline::default();
        let events = std::slice::from_ref(&event);
        let missing = violations_of(events, &known, &[], &none, None);
        assert!(missing[0].contains("never reached"), "{missing:?}");

        let pending = violations_of(events, &known, std::slice::from_ref(&d), &none, None);
        assert!(pending[0].contains("ended pending"), "{pending:?}");

        let mut early = d.clone();
        early.status = DeliveryStatus::Delivered;
        early.attempts = vec![attempt(1, 1), ok(200)(attempt(2, 2))];
        early.attempt_count = 2;
        let t = timeline(&[(1, 1, Some(6)), (2, 2, None)]);
        let early = violations_of(events, &known, &[early], &t, None);
        assert!(
            early.iter().any(|v| v.contains("before its retry was due")),
            "{early:?}"
        );

        let mut gap = d;
        gap.status = DeliveryStatus::Delivered;
        gap.attempts = vec![attempt(1, 1), ok(200)(attempt(3, 6))];
        gap.attempt_count = 3;
        let gap = violations_of(&[event], &known, &[gap], &none, None);
        assert!(gap.iter().any(|v| v.contains("attempt numbers")), "{gap:?}");
    }

    #[test]
    fn a_retry_keeps_its_schedule_and_its_retry_after_as_an_early_bound() {
        let (event, known, mut d) = world();
        d.status = DeliveryStatus::Delivered;
        d.attempts = vec![attempt(1, 1), ok(200)(attempt(2, 11))];
        d.attempt_count = 2;
        let events = std::slice::from_ref(&event);
        let ten_minutes = Some(Duration::from_secs(600));
        // Ten minutes after a 5-minute delay: only with a Retry-After.
        let t = timeline(&[(1, 1, Some(11)), (2, 11, None)]);
        let late = violations_of(events, &known, std::slice::from_ref(&d), &t, None);
        assert!(late[0].contains("outside the schedule"), "{late:?}");
        let v = violations_of(events, &known, std::slice::from_ref(&d), &t, ten_minutes);
        assert_eq!(v, Vec::<String>::new());
        // A Retry-After of 10 minutes, and a retry scheduled after 5.
        d.attempts[1] = ok(200)(attempt(2, 6));
        let t = timeline(&[(1, 1, Some(6)), (2, 6, None)]);
        let early = violations_of(events, &known, &[d], &t, ten_minutes);
        assert!(early[0].contains("Retry-After [600] s"), "{early:?}");
    }

    #[test]
    fn an_end_state_needs_its_cause() {
        let (event, known, mut d) = world();
        let events = std::slice::from_ref(&event);
        let t = timeline(&[(1, 1, None)]);
        // Dead-lettered after attempt 1 of 3: only by a 410.
        d.status = DeliveryStatus::DeadLettered;
        d.attempts = vec![attempt(1, 1)];
        d.attempt_count = 1;
        d.last_error = Some("HTTP 503".into());
        let v = violations_of(events, &known, std::slice::from_ref(&d), &t, None);
        assert!(v[0].contains("without a 410"), "{v:?}");
        d.attempts = vec![ok(410)(attempt(1, 1))];
        d.last_error = Some("HTTP 410".into());
        let v = violations_of(events, &known, std::slice::from_ref(&d), &t, None);
        assert_eq!(v, Vec::<String>::new());
        // ... its last error is its last attempt's.
        d.last_error = Some("HTTP 503".into());
        let v = violations_of(events, &known, std::slice::from_ref(&d), &t, None);
        assert!(v[0].contains("its last attempt says"), "{v:?}");
        // Delivered: after a 2xx.
        d.status = DeliveryStatus::Delivered;
        d.attempts = vec![attempt(1, 1)];
        let v = violations_of(events, &known, &[d], &t, None);
        assert!(v[0].contains("delivered, but"), "{v:?}");
    }

    #[test]
    fn a_delivery_sent_again_after_its_schedule_ends_at_its_next_failure() {
        let (event, known, mut d) = world();
        let events = std::slice::from_ref(&event);
        // Schedule "5m,1h": 3 attempts; a fourth only after a resend.
        d.status = DeliveryStatus::DeadLettered;
        d.attempts = vec![
            attempt(1, 1),
            attempt(2, 6),
            attempt(3, 66),
            attempt(4, 200),
        ];
        d.attempt_count = 4;
        d.last_error = Some("HTTP 503".into());
        let t = timeline(&[
            (1, 1, Some(6)),
            (2, 6, Some(66)),
            (3, 66, None),
            (4, 200, None),
        ]);
        let v = violations_of(events, &known, std::slice::from_ref(&d), &t, None);
        assert!(
            v.iter().any(|x| x.contains("attempt 4 of 3 without a 410")),
            "{v:?}"
        );
        let resent = HashSet::from([d.id.clone()]);
        let v = violations_with(events, &known, &[d], &t, None, &resent);
        assert!(!v.iter().any(|x| x.contains("without a 410")), "{v:?}");
    }

    #[test]
    fn a_pending_delivery_without_a_message_is_reported_after_the_limit() {
        let v = Violations::default();
        let mut orphans = Orphans::new(chrono::Duration::seconds(300));
        // Both due at once; a third's retry is hours ahead.
        let pending = vec![
            ("dlv_a".to_string(), at(0)),
            ("dlv_b".to_string(), at(0)),
            ("dlv_c".to_string(), at(600)),
        ];
        let queued = HashSet::from(["dlv_b".to_string()]);
        let missed_none = |_: &str, _| 0;
        orphans.check(at(0), &pending, &queued, &missed_none, &v);
        orphans.check(at(20), &pending, &queued, &missed_none, &v);
        assert!(v.all().is_empty(), "within the limit");
        // A sweep that missed it allows a period more.
        orphans.check(at(22), &pending, &queued, &|_, _| 1, &v);
        assert!(v.all().is_empty(), "within the limit and a period");
        orphans.check(at(22), &pending, &queued, &missed_none, &v);
        assert_eq!(v.all().len(), 1);
        assert!(v.all()[0].starts_with("dlv_a"));
        // Without a message long before it is due, a delivery is the
        // reconciler's only once it is: reported only past the limit
        // after its due time.
        orphans.check(at(610), &pending, &queued, &missed_none, &v);
        assert_eq!(v.all().len(), 2, "{:?}", v.all());
        assert!(!v.all().iter().any(|m| m.starts_with("dlv_c")));
        orphans.check(at(630), &pending, &queued, &missed_none, &v);
        assert!(v.all().iter().any(|m| m.starts_with("dlv_c")));
    }

    #[test]
    fn a_quiet_orgs_delivery_queued_behind_its_own_outage_backlog_is_in_it() {
        // Seed 473 of `make sim-long`, in minutes: an outage from 0 to 120,
        // the queue caught up at 123 (the first sweep after it, cut short,
        // reached other orgs), and this org's backlog queued by a later
        // sweep at 133 and received one by one until 134.
        let outages = [(at(0), at(120))];
        let backlog = OutageBacklog {
            outages: &outages,
            caught_up: Some(at(123)),
        };
        let mut own = OwnBacklog::default();
        own.add(at(133), Some(at(133)));
        own.add(at(133), Some(at(134)));
        own.add(at(133), None);
        let none = OwnBacklog::default();
        // The first two rules: queued before the queue caught up, or its
        // event committed during the outage.
        assert!(backlog.holds(Some(at(121)), Some(at(122)), &none));
        assert!(backlog.holds(Some(at(60)), Some(at(133)), &none));
        assert!(!backlog.holds(Some(at(130)), Some(at(133)), &none));
        assert!(!backlog.holds(Some(at(60)), None, &none));
        // Queued while its own org's backlog was still waiting: in it.
        assert!(backlog.holds(Some(at(130)), Some(at(133)), &own));
        // Once every message of that backlog was received, or before the
        // first was queued: not in it.
        let mut received = OwnBacklog::default();
        received.add(at(133), Some(at(134)));
        assert!(received.waiting_at(at(133)));
        assert!(!received.waiting_at(at(134)));
        assert!(!received.waiting_at(at(132)));
        assert!(!backlog.holds(Some(at(134)), Some(at(135)), &received));
    }

    #[test]
    fn a_first_attempt_may_be_late_by_its_steps_and_its_holds_only() {
        let pace = Pace {
            step: Duration::from_secs(15),
            stream_lag: Duration::from_secs(2),
        };
        let committed = at(0);
        let seconds = |s: i64| committed + chrono::Duration::seconds(s);
        let fa = |ready, attempted, holds| FirstAttempt {
            ready,
            stream_waits: 0,
            attempted,
            holds,
            handler_delay: chrono::Duration::zero(),
        };
        let v = Violations::default();
        // From the commit: the stream's lag, the step in progress, the
        // fan-out's step and the queue's wait of two; from a first message
        // the queue's wait; a second of margin.
        fa(Ready::Committed(committed), seconds(2 + 15 + 30 + 1), &[]).check("a", pace, &v);
        fa(Ready::Queued(committed), seconds(31), &[]).check("b", pace, &v);
        assert!(v.all().is_empty(), "{:?}", v.all());
        fa(Ready::Committed(committed), seconds(49), &[]).check("c", pace, &v);
        fa(Ready::Queued(committed), seconds(32), &[]).check("d", pace, &v);
        assert_eq!(v.all().len(), 2, "{:?}", v.all());
        // A stream batch left for later allows a step more.
        let waited = FirstAttempt {
            stream_waits: 1,
            ..fa(Ready::Committed(committed), seconds(63), &[])
        };
        waited.check("e", pace, &v);
        assert_eq!(v.all().len(), 2, "{:?}", v.all());
        // A receive that left the message hidden for the visibility
        // timeout allows that and the queue's wait again; one in the
        // attempt's own step (its retry's hide) allows nothing.
        let held = [
            Hold {
                received: seconds(10),
                hidden: Duration::from_secs(180),
            },
            Hold {
                received: seconds(300),
                hidden: Duration::from_secs(180),
            },
        ];
        let late = fa(Ready::Queued(committed), seconds(241), &held);
        assert_eq!(late.held(), 1);
        assert_eq!(
            late.allowed(pace),
            chrono::Duration::seconds(30 + 180 + 30 + 1)
        );
        late.check("f", pace, &v);
        assert_eq!(v.all().len(), 2, "{:?}", v.all());
        fa(Ready::Queued(committed), seconds(242), &held).check("g", pace, &v);
        assert_eq!(v.all().len(), 3, "{:?}", v.all());
    }
}
