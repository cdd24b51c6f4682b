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
}
