//! The invariants, checked as the simulation runs and at its end.

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
#[derive(Default)]
pub struct Orphans {
    since: HashMap<String, DateTime<Utc>>,
}

impl Orphans {
    /// The longest a pending delivery may be without a message: the
    /// reconciler's threshold, a sweep period, and a minute of slack.
    pub fn limit(sweep_every: Duration) -> chrono::Duration {
        STUCK_AFTER
            + chrono::Duration::from_std(sweep_every).unwrap_or_default()
            + chrono::Duration::minutes(1)
    }

    /// Compares the pending deliveries with the queue's messages at `now`.
    pub fn check(
        &mut self,
        now: DateTime<Utc>,
        pending: &[String],
        queued: &HashSet<String>,
        limit: chrono::Duration,
        violations: &Violations,
    ) {
        let mut still = HashMap::new();
        for id in pending {
            if queued.contains(id) {
                continue;
            }
            let since = self.since.get(id).copied().unwrap_or(now);
            if now - since > limit {
                violations.add(format!(
                    "{id} pending without a queue message for {} min",
                    (now - since).num_minutes()
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

/// Slack on a retry's lateness: a crashed holder's lease (60 s) and
/// message visibility (180 s), or a lost message found by the reconciler.
fn late_slack(sweep_every: Duration) -> chrono::Duration {
    Orphans::limit(sweep_every) + chrono::Duration::seconds(240)
}

/// Checks every delivery at the end: each published event reached each
/// endpoint subscribed when it was published (delivered, dead-lettered with
/// its last error, or canceled with its deleted endpoint), nothing else
/// was created, attempt numbers run 1..n, and retries kept the schedule.
pub struct Final<'a> {
    pub events: &'a [Event],
    pub endpoints: &'a BTreeMap<String, Known>,
    pub deliveries: &'a [Delivery],
    pub schedule: &'a RetrySchedule,
    pub sweep_every: Duration,
    /// When the sweeper's cursor was seen past each event: its fan-out
    /// happened between its publication and then, and an endpoint off at
    /// any time in that span may or may not get it.
    pub swept_at: &'a HashMap<String, DateTime<Utc>>,
    /// Deliveries sent again by hand: their gaps follow no schedule.
    pub resent: &'a HashSet<String>,
    /// How many crashed sender invocations held each delivery's message.
    pub crash_holds: &'a HashMap<String, u32>,
    /// The `Retry-After` answered to (delivery, attempt).
    pub retry_after: &'a dyn Fn(&str, u32) -> Option<Duration>,
    /// How much later than its schedule the sender's per-endpoint limits
    /// may make a retry of this delivery (see [`deferral_slack`]).
    pub deferral_slack: &'a dyn Fn(&Delivery) -> chrono::Duration,
}

/// How late the sender's per-endpoint limits may make one retry: they
/// defer a message at most `max_deferrals` times
/// ([`deferral_budget`]), the slow lane for at most
/// [`MAX_SLOW_DEFER`] each, the rate limit for at most the time the
/// endpoint's whole backlog (`endpoint_deliveries`) takes at its rate.
/// Deferring is the limits' purpose, so a retry late by this much keeps
/// the schedule as the endpoint allows it.
///
/// [`deferral_budget`]: webhooks_pipeline::sender::limits::deferral_budget
/// [`MAX_SLOW_DEFER`]: webhooks_pipeline::sender::limits::MAX_SLOW_DEFER
pub fn deferral_slack(
    max_deferrals: u32,
    rate_limit: Option<u32>,
    endpoint_deliveries: usize,
) -> chrono::Duration {
    let by_rate = rate_limit.map_or(Duration::ZERO, |r| {
        Duration::from_secs_f64(endpoint_deliveries as f64 / f64::from(r.max(1)))
    });
    let each = by_rate.max(webhooks_pipeline::sender::limits::MAX_SLOW_DEFER);
    chrono::Duration::from_std(each * max_deferrals).unwrap_or(chrono::Duration::MAX)
}

impl Final<'_> {
    pub fn check(&self, violations: &Violations) {
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
        for d in self.deliveries {
            if !expected.contains(&d.id) {
                violations.add(format!(
                    "{} exists, but its endpoint was not subscribed when the event was published",
                    d.id
                ));
            }
            self.numbered(d, violations);
            if !self.resent.contains(&d.id) {
                self.on_schedule(d, violations);
            }
        }
    }

    fn finished(&self, d: &Delivery, endpoint_deleted: bool, violations: &Violations) {
        match d.status {
            DeliveryStatus::Delivered => {}
            DeliveryStatus::DeadLettered if d.last_error.is_some() => {}
            DeliveryStatus::DeadLettered => {
                violations.add(format!("{} dead-lettered without its last error", d.id))
            }
            DeliveryStatus::Canceled if endpoint_deleted => {}
            status => violations.add(format!(
                "{} ended {status} after {} attempts",
                d.id, d.attempt_count
            )),
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

    fn on_schedule(&self, d: &Delivery, violations: &Violations) {
        for pair in d.attempts.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let Some(delay) = self.schedule.delay_after(a.number) else {
                violations.add(format!(
                    "{} attempt {} after the schedule's last",
                    d.id, b.number
                ));
                continue;
            };
            let gap = b.at - a.at;
            let min = chrono::Duration::from_std(delay.mul_f64(0.8)).unwrap_or_default()
                - chrono::Duration::seconds(1);
            let asked = (self.retry_after)(&d.id, a.number)
                .map(|w| w.min(webhooks_domain::retry::MAX_RETRY_AFTER))
                .unwrap_or_default();
            // Each crash that held its message hides it for the queue's
            // visibility timeout (and its lease may outlive the crash).
            let crashes = i32::try_from(self.crash_holds.get(&d.id).copied().unwrap_or(0))
                .unwrap_or(i32::MAX);
            let max = chrono::Duration::from_std(delay.mul_f64(1.2).max(asked)).unwrap_or_default()
                + late_slack(self.sweep_every)
                + chrono::Duration::seconds(240) * crashes
                + (self.deferral_slack)(d);
            if gap < min {
                violations.add(format!(
                    "{} attempt {} came {} s after attempt {}, before the scheduled {} s (-20 %)",
                    d.id,
                    b.number,
                    gap.num_seconds(),
                    a.number,
                    delay.as_secs()
                ));
            } else if gap > max {
                violations.add(format!(
                    "{} attempt {} came {} s after attempt {}, later than the scheduled {} s (+20 %, Retry-After {} s)",
                    d.id,
                    b.number,
                    gap.num_seconds(),
                    a.number,
                    delay.as_secs(),
                    asked.as_secs()
                ));
            }
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
    /// long as its slowest POST (the request timeout) and no longer.
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
    pub holds: &'a [crate::ledger::Hold],
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
            .filter(|h| h.step_ended < self.attempted)
            .map(|h| chrono::Duration::from_std(h.hidden).unwrap_or_default() + pace.queue_wait())
            .sum();
        path + holds + FIRST_ATTEMPT_MARGIN
    }

    /// The receives before the attempt that left the message queued.
    pub fn held(&self) -> usize {
        self.holds
            .iter()
            .filter(|h| h.step_ended < self.attempted)
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
            status_code: Some(500),
            error: None,
            latency_ms: 1,
            response_body: None,
        }
    }

    fn violations_of(
        events: &[Event],
        known: &BTreeMap<String, Known>,
        d: &[Delivery],
    ) -> Vec<String> {
        let v = Violations::default();
        let schedule: RetrySchedule = "5m,1h".parse().unwrap();
        Final {
            events,
            endpoints: known,
            deliveries: d,
            schedule: &schedule,
            sweep_every: Duration::from_secs(300),
            swept_at: &HashMap::new(),
            resent: &HashSet::new(),
            crash_holds: &HashMap::new(),
            retry_after: &|_, _| None,
            deferral_slack: &|_| chrono::Duration::zero(),
        }
        .check(&v);
        v.all()
    }

    #[test]
    fn a_delivered_delivery_on_schedule_passes() {
        let (event, known, mut d) = world();
        d.status = DeliveryStatus::Delivered;
        d.attempts = vec![attempt(1, 1), attempt(2, 6)];
        d.attempt_count = 2;
        assert_eq!(violations_of(&[event], &known, &[d]), Vec::<String>::new());
    }

    #[test]
    fn a_missing_pending_early_or_misnumbered_delivery_is_caught() {
        let (event, known, d) = world();
        let missing = violations_of(std::slice::from_ref(&event), &known, &[]);
        assert!(missing[0].contains("never reached"), "{missing:?}");

        let pending = violations_of(
            std::slice::from_ref(&event),
            &known,
            std::slice::from_ref(&d),
        );
        assert!(pending[0].contains("ended pending"), "{pending:?}");

        let mut early = d.clone();
        early.status = DeliveryStatus::Delivered;
        early.attempts = vec![attempt(1, 1), attempt(2, 2)];
        early.attempt_count = 2;
        let early = violations_of(std::slice::from_ref(&event), &known, &[early]);
        assert!(early[0].contains("before the scheduled"), "{early:?}");

        let mut gap = d;
        gap.status = DeliveryStatus::Delivered;
        gap.attempts = vec![attempt(1, 1), attempt(3, 6)];
        gap.attempt_count = 3;
        let gap = violations_of(&[event], &known, &[gap]);
        assert!(gap.iter().any(|v| v.contains("attempt numbers")), "{gap:?}");
    }

    #[test]
    fn a_pending_delivery_without_a_message_is_reported_after_the_limit() {
        let v = Violations::default();
        let mut orphans = Orphans::default();
        let limit = Orphans::limit(Duration::from_secs(300));
        let pending = vec!["dlv_a".to_string(), "dlv_b".to_string()];
        let queued = HashSet::from(["dlv_b".to_string()]);
        orphans.check(at(0), &pending, &queued, limit, &v);
        orphans.check(at(20), &pending, &queued, limit, &v);
        assert!(v.all().is_empty(), "within the limit");
        orphans.check(at(22), &pending, &queued, limit, &v);
        assert_eq!(v.all().len(), 1);
        assert!(v.all()[0].starts_with("dlv_a"));
    }

    #[test]
    fn a_first_attempt_may_be_late_by_its_steps_and_its_holds_only() {
        use crate::ledger::Hold;
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
                step_ended: seconds(10),
                hidden: Duration::from_secs(180),
            },
            Hold {
                step_ended: seconds(300),
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
