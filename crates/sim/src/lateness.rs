//! Lateness per gap: each wait for an attempt is explained by what happened
//! to that delivery in that gap, and by nothing else.
//!
//! A gap runs from when an attempt was due (the retry its predecessor
//! scheduled, jitter and `Retry-After` included; for a first attempt, its
//! first message) to the attempt. Every moment of it must be explained by
//! one of:
//!
//! - a message of the delivery **hidden** by the queue: received and in
//!   flight (its handler waiting to start, a crash or a failed call leaving
//!   it for the visibility timeout), or hidden by the sender (a deferral, a
//!   wait for a live lease, a retry's own hide, which starts when its POST
//!   has ended); each hide is checked against its cause separately
//!   ([`check_hides`]);
//! - a message **visible** and not yet received, for at most
//!   [`Rules::poll`] (the step in progress and one more), or for as long as
//!   the poller was saturated (every step that left visible messages on
//!   the queue explains itself and the wake after it);
//! - **no message** at all (the last one redriven, expired, or deleted
//!   while the delivery was pending): from when the delivery was overdue by
//!   the reconciler's threshold, one sweep period, and one more for each
//!   sweep since that did not finish or whose read of the index missed it.
//!
//! What is left is the gap's unexplained lateness; more than a second of
//! it (the store's whole seconds) is a violation.

use crate::check::Violations;
use crate::ledger::{Outcome, Receive, Recorded, Timeline};
use crate::tap::whole_seconds;
use chrono::{DateTime, Utc};
use std::time::Duration;
use webhooks_domain::delivery::STUCK_AFTER;

/// A sweep invocation, as the world saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// It went through every org without an error or a crash.
    pub complete: bool,
    /// It ran out of its time before it was done.
    pub cut: bool,
}

/// What explains a wait, besides the delivery's own timeline.
pub struct Rules<'a> {
    /// The longest a visible message waits for a receive while the poller
    /// keeps up: the step in progress when it becomes visible, the next
    /// one, and a second of margin.
    pub poll: chrono::Duration,
    /// How soon the world polls again after a step that left visible
    /// messages.
    pub busy: chrono::Duration,
    /// The steps that left visible messages on the queue, by start.
    pub saturated: &'a [Span],
    pub sweeps: &'a [Sweep],
    /// A pending delivery is overdue, for the reconciler, after this.
    pub stuck_after: chrono::Duration,
    /// The longest between two sweeps (the period and its jitter).
    pub sweep_period: chrono::Duration,
    /// Rounding: the store keeps whole seconds, the queue hides for whole
    /// seconds.
    pub margin: chrono::Duration,
}

/// A span of time, `[from, to]`.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// Intervals of explained time.
#[derive(Default)]
struct Cover(Vec<Span>);

impl Cover {
    fn add(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        if to > from {
            self.0.push((from, to));
        }
    }

    /// How much of `[from, to]` is not covered, and its longest hole.
    fn uncovered(
        mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> (chrono::Duration, Option<Span>) {
        self.0.sort();
        let mut at = from;
        let mut missing = chrono::Duration::zero();
        let mut hole: Option<Span> = None;
        let mut gap = |a: DateTime<Utc>, b: DateTime<Utc>| {
            if b > a {
                missing += b - a;
                if hole.is_none_or(|(x, y)| b - a > y - x) {
                    hole = Some((a, b));
                }
            }
        };
        for (a, b) in self.0 {
            if a > at {
                gap(at, a.min(to));
            }
            at = at.max(b);
            if at >= to {
                break;
            }
        }
        gap(at, to);
        (missing, hole)
    }
}

impl Rules<'_> {
    /// A message visible over `[from, to]` (received at `to`): explained
    /// for a poll, and while steps left visible messages behind.
    fn visible(&self, cover: &mut Cover, from: DateTime<Utc>, to: DateTime<Utc>) {
        cover.add(from, to.min(from + self.poll));
        let first = self
            .saturated
            .partition_point(|(_, end)| *end + self.busy < from);
        for (start, end) in &self.saturated[first..] {
            if *start >= to {
                break;
            }
            cover.add((*start).max(from), (*end + self.busy).min(to));
        }
    }

    /// Until when a delivery without a message since `from` is explained
    /// to stay so: it is overdue for the reconciler `stuck_after` after
    /// `due`; the first sweep to start after that queues it again by its
    /// end, or the next one for each sweep in between that may have missed
    /// it ([`missed_passes`]); then a poll.
    fn lost_until(
        &self,
        from: DateTime<Utc>,
        due: DateTime<Utc>,
        missed: &[DateTime<Utc>],
        to: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let overdue = from.max(due + self.stuck_after);
        let passes = missed_passes(self.sweeps, from, to, missed) + 1;
        let by = match self
            .sweeps
            .iter()
            .filter(|s| s.start >= overdue)
            .nth(passes - 1)
        {
            Some(sweep) => sweep.end,
            None => overdue + self.sweep_period * i32::try_from(passes).unwrap_or(i32::MAX),
        };
        by + self.poll
    }
}

/// The sweeps in `[from, to)` that may not have reached a delivery: each
/// that crashed or failed, each whose read of the index missed it
/// (`missed`: an org whose turn stopped at an error in a pass cut short,
/// or that the pass did not reach at all), and one for passes cut by their
/// time limit (an org reached, but whose turn was cut, goes on in the
/// next; several cut passes in a row explain no more for it).
pub fn missed_passes(
    sweeps: &[Sweep],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    missed: &[DateTime<Utc>],
) -> usize {
    let within = |at: DateTime<Utc>| at >= from && at < to;
    let failed = sweeps
        .iter()
        .filter(|s| !s.complete && !s.cut && within(s.start))
        .count();
    let cut = usize::from(sweeps.iter().any(|s| s.cut && within(s.start)));
    failed + cut + missed.iter().filter(|at| within(**at)).count()
}

/// One gap's lateness and what of it nothing explains.
#[derive(Debug, Clone, Copy)]
pub struct Explained {
    pub lateness: chrono::Duration,
    pub unexplained: chrono::Duration,
    pub hole: Option<Span>,
}

/// Explains the wait of `timeline`'s delivery from `due` to an attempt at
/// `attempt` (see the module's doc).
pub fn explain(
    timeline: &Timeline,
    due: DateTime<Utc>,
    attempt: DateTime<Utc>,
    rules: &Rules<'_>,
) -> Explained {
    let lateness = (attempt - due).max(chrono::Duration::zero());
    if lateness <= rules.margin {
        return Explained {
            lateness,
            unexplained: chrono::Duration::zero(),
            hole: None,
        };
    }
    let mut cover = Cover::default();
    for m in timeline.messages.iter().filter(|m| m.sent < attempt) {
        let gone = m.gone.unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut visible_from = m.sent;
        for r in &m.receives {
            if r.at >= attempt {
                break;
            }
            rules.visible(&mut cover, visible_from, r.at.min(gone));
            // In flight until it is visible again; but the receive whose
            // handler made the attempt explains only its wait for its
            // handler: the attempt's POST starts as its handler does.
            let until = if r.made(attempt) {
                r.started.unwrap_or(r.at).max(r.at) + rules.margin
            } else {
                r.until
            };
            cover.add(r.at, until.min(gone));
            visible_from = r.until;
        }
        if visible_from < gone {
            rules.visible(&mut cover, visible_from, gone.min(attempt));
        }
    }
    for emptied in &timeline.emptied {
        if *emptied >= attempt {
            break;
        }
        let next_sent = timeline
            .messages
            .iter()
            .map(|m| m.sent)
            .filter(|s| s >= emptied)
            .min()
            .unwrap_or(attempt);
        let until = rules.lost_until(*emptied, due, &timeline.index_missed, next_sent);
        cover.add(*emptied, next_sent.min(until));
    }
    let (unexplained, hole) = cover.uncovered(due, attempt);
    Explained {
        lateness,
        unexplained: if unexplained > rules.margin {
            unexplained
        } else {
            chrono::Duration::zero()
        },
        hole,
    }
}

/// The attempts of one delivery as its ledger holds them, in order.
pub type Attempts<'a> = &'a [Recorded];

/// When the delivery was next due as a handler that read it at `read`
/// saw it: the retry scheduled by the last attempt recorded by then, or
/// (none yet) its first message; `None` once it is finished.
fn due_as_read(
    attempts: Attempts<'_>,
    first: Option<DateTime<Utc>>,
    read: DateTime<Utc>,
) -> Option<Option<DateTime<Utc>>> {
    match attempts.iter().rev().find(|a| a.written <= read) {
        Some(a) => a.next.map(Some),
        None => Some(first),
    }
}

/// Checks each visibility change of the delivery's messages against its
/// cause: a message not yet due is hidden until its due time and no later
/// (a retry's own hide, made when its POST has ended, from then); a due
/// message only for a deferral or a live lease, at most `due_hide`.
pub fn check_hides(
    delivery_id: &str,
    timeline: &Timeline,
    due_hide: Duration,
    margin: chrono::Duration,
    violations: &Violations,
) {
    let first = timeline.first_queued();
    let due_hide = chrono::Duration::from_std(due_hide).unwrap_or_default() + margin;
    for m in &timeline.messages {
        for r in &m.receives {
            for (at, delay) in &r.hides {
                let back = *at + chrono::Duration::from_std(*delay).unwrap_or_default();
                let fault = hide_fault(r, *at, back, &timeline.recorded, first, due_hide, margin)
                    .filter(|_| {
                        // A record written at the very instant the handler
                        // started (the sender's store calls take no time
                        // here, and a concurrent handler's POST may end
                        // then) may or may not have been read by it: the
                        // hide stands if it fits either order.
                        let started = r.started.unwrap_or(r.at);
                        let tied = timeline.recorded.iter().any(|a| a.written == started);
                        !tied || {
                            let unseen = timeline
                                .recorded
                                .iter()
                                .map(|a| Recorded {
                                    written: if a.written == started {
                                        started + chrono::Duration::nanoseconds(1)
                                    } else {
                                        a.written
                                    },
                                    ..*a
                                })
                                .collect::<Vec<_>>();
                            hide_fault(r, *at, back, &unseen, first, due_hide, margin).is_some()
                        }
                    });
                if let Some(why) = fault {
                    violations.add(format!(
                        "{delivery_id}: message {} hidden at {at} until {back}: {why}",
                        m.id
                    ));
                }
            }
        }
    }
}

/// What is wrong with a hide through receive `r` at `at` until `back`, if
/// anything.
fn hide_fault(
    r: &Receive,
    at: DateTime<Utc>,
    back: DateTime<Utc>,
    attempts: Attempts<'_>,
    first: Option<DateTime<Utc>>,
    due_hide: chrono::Duration,
    margin: chrono::Duration,
) -> Option<String> {
    let started = r.started.unwrap_or(r.at);
    // An attempt made and recorded while this receive was handled (by it,
    // or by a receive of the same message at once): its retry's hide.
    if let Some(a) = attempts
        .iter()
        .rev()
        .find(|a| a.at >= started && a.written <= at)
    {
        let n = a.number;
        return match a.next {
            Some(next) if back <= next + (at - a.at) + margin => None,
            Some(next) => Some(format!(
                "after attempt {n}, later than its retry at {next} and the POST's {} s",
                (at - a.at).num_seconds()
            )),
            // A last attempt's message is finished, never hidden; a lease
            // wait of a message received at once with it may be.
            None if back - at <= due_hide => None,
            None => Some(format!("after its last attempt {n}")),
        };
    }
    // The sender compares its clock with the due time as the store keeps
    // it: whole seconds.
    match due_as_read(attempts, first, started) {
        Some(Some(due)) if whole_seconds(due) > at => {
            (back > due + margin).then(|| format!("past its due time {due}"))
        }
        // A message of a never-attempted delivery turned away by another
        // message's live chain waits until that chain would be lost
        // (`STUCK_AFTER` after the delivery was due, at its creation, so
        // never longer than that), in case that message died with the
        // chain (sender/fence.rs).
        Some(_)
            if attempts.iter().all(|a| a.written > started)
                && back - at <= STUCK_AFTER + margin + margin =>
        {
            None
        }
        Some(_) => (back - at > due_hide).then(|| {
            format!(
                "a due message hidden for {} s, more than a deferral or a lease allows ({} s)",
                (back - at).num_seconds(),
                due_hide.num_seconds()
            )
        }),
        None => None,
    }
}

/// Whether a receive ended without finishing its message.
pub fn held(r: &Receive) -> bool {
    matches!(r.outcome, Some(Outcome::Retry | Outcome::Crashed))
}

/// How long a first attempt at `attempted` waited on handlers that had
/// its delivery's messages: the receive that made it waited for its
/// handler's start; any other receive handed out before it whose handler
/// had not started by then (an invoke throttled and retried, with the
/// batch held) kept that message from making the attempt all that time,
/// while another message of the delivery (a retried fan-out's) made it.
pub fn handler_wait(receives: &[&Receive], attempted: DateTime<Utc>) -> chrono::Duration {
    receives
        .iter()
        .filter_map(|r| {
            if r.made(attempted) {
                r.started.map(|s| s - r.at)
            } else if r.at <= attempted && r.started.is_none_or(|s| s > attempted) {
                Some(attempted - r.at)
            } else {
                None
            }
        })
        .max()
        .unwrap_or_default()
        .max(chrono::Duration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Message, Receive};

    #[test]
    fn a_first_attempt_waits_on_its_own_handler_and_on_a_parked_one() {
        // The receive that made the attempt at 40 started 3 s after it.
        let made = Receive {
            started: Some(at(33)),
            step_ended: Some(at(45)),
            ..receive(30, 210)
        };
        assert_eq!(handler_wait(&[&made], at(40)), chrono::Duration::seconds(3));
        // Another message's receive at 2, its handler throttled until 100:
        // it waited 38 s by the attempt.
        let parked = Receive {
            started: Some(at(100)),
            step_ended: Some(at(101)),
            ..receive(2, 182)
        };
        assert_eq!(
            handler_wait(&[&made, &parked], at(40)),
            chrono::Duration::seconds(38)
        );
        // A receive whose handler ran and left its message, or one after
        // the attempt, is no wait on a handler.
        let ran = receive(2, 182);
        let after = receive(50, 230);
        assert_eq!(
            handler_wait(&[&made, &ran, &after], at(40)),
            chrono::Duration::seconds(3)
        );
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(seconds)
    }

    fn receive(from: i64, until: i64) -> Receive {
        Receive {
            receipt: format!("r{from}"),
            at: at(from),
            started: Some(at(from)),
            until: at(until),
            hides: Vec::new(),
            outcome: Some(Outcome::Retry),
            step_ended: Some(at(from + 15)),
        }
    }

    fn message(sent: i64, receives: Vec<Receive>, gone: Option<i64>) -> Message {
        Message {
            id: format!("m{sent}"),
            sent: at(sent),
            receives,
            gone: gone.map(at),
        }
    }

    fn rules<'a>(
        saturated: &'a [(DateTime<Utc>, DateTime<Utc>)],
        sweeps: &'a [Sweep],
    ) -> Rules<'a> {
        Rules {
            poll: chrono::Duration::seconds(31),
            busy: chrono::Duration::milliseconds(200),
            saturated,
            sweeps,
            stuck_after: chrono::Duration::minutes(15),
            sweep_period: chrono::Duration::seconds(330),
            margin: chrono::Duration::seconds(1),
        }
    }

    fn unexplained(t: &Timeline, due: i64, attempt: i64, rules: &Rules<'_>) -> i64 {
        explain(t, at(due), at(attempt), rules)
            .unexplained
            .num_seconds()
    }

    #[test]
    fn a_visible_message_waits_a_poll_unless_the_poller_is_saturated() {
        // Hidden by its retry until 100, received at 200.
        let t = Timeline {
            messages: vec![message(0, vec![receive(0, 100), receive(200, 380)], None)],
            ..Timeline::default()
        };
        assert_eq!(unexplained(&t, 100, 131, &rules(&[], &[])), 0);
        assert_eq!(unexplained(&t, 100, 200, &rules(&[], &[])), 69);
        // Steps that left visible messages behind explain the rest.
        let busy = [(at(120), at(150)), (at(150), at(199))];
        assert_eq!(unexplained(&t, 100, 200, &rules(&busy, &[])), 0);
    }

    #[test]
    fn a_hold_explains_its_time_and_a_poll_after_it() {
        // Due at 100; received at 110, crashed: hidden to 290, back at 300.
        let t = Timeline {
            messages: vec![message(
                0,
                vec![receive(0, 100), receive(110, 290), receive(300, 480)],
                None,
            )],
            ..Timeline::default()
        };
        assert_eq!(unexplained(&t, 100, 300, &rules(&[], &[])), 0);
        // An attempt 10 s into the handler of the receive at 300.
        assert_eq!(unexplained(&t, 100, 310, &rules(&[], &[])), 9);
    }

    #[test]
    fn a_lost_message_is_explained_for_the_reconciler_and_a_sweep_more_per_miss() {
        // Due at 100; its message redriven at 150; a new one at `sent`.
        let t = |sent: i64| Timeline {
            messages: vec![
                message(0, vec![receive(0, 100), receive(110, 150)], Some(150)),
                message(sent, vec![receive(sent + 1, sent + 181)], None),
            ],
            emptied: vec![at(150)],
            ..Timeline::default()
        };
        // Overdue at 100 + 900, a sweep period, a poll: by 1361.
        assert_eq!(unexplained(&t(1361), 100, 1362, &rules(&[], &[])), 0);
        assert_eq!(unexplained(&t(1400), 100, 1401, &rules(&[], &[])), 39);
        let failed = [Sweep {
            start: at(1100),
            end: at(1101),
            complete: false,
            cut: false,
        }];
        assert_eq!(unexplained(&t(1400), 100, 1401, &rules(&[], &failed)), 0);
        let mut missed = t(1400);
        missed.index_missed.push(at(1100));
        assert_eq!(unexplained(&missed, 100, 1401, &rules(&[], &[])), 0);
    }

    #[test]
    fn each_hide_is_checked_against_its_cause() {
        let check = |r: Receive| {
            // Attempt 1 at 10 (a POST of 5 s), its retry due at 100.
            let t = Timeline {
                messages: vec![message(0, vec![r], None)],
                recorded: vec![Recorded {
                    number: 1,
                    at: at(10),
                    next: Some(at(100)),
                    status_code: Some(500),
                    written: at(15),
                }],
                ..Timeline::default()
            };
            let v = Violations::default();
            let margin = chrono::Duration::seconds(1);
            check_hides("d", &t, Duration::from_secs(300), margin, &v);
            v.all()
        };
        let hidden = |from: i64, hide_at: i64, delay: u64| {
            let mut r = receive(from, hide_at + i64::try_from(delay).unwrap_or(0));
            r.hides = vec![(at(hide_at), Duration::from_secs(delay))];
            r
        };
        // The retry's own hide, from when its POST ended.
        assert!(check(hidden(9, 15, 91)).is_empty());
        assert_eq!(check(hidden(9, 15, 97)).len(), 1);
        // Back early, hidden again until due, not later.
        assert!(check(hidden(50, 50, 51)).is_empty());
        assert_eq!(check(hidden(50, 50, 60)).len(), 1);
        // Read before the record: due, deferred.
        assert!(check(hidden(12, 12, 200)).is_empty());
        // Due: a deferral or a lease wait, at most 300 s.
        assert!(check(hidden(120, 120, 300)).is_empty());
        assert_eq!(check(hidden(120, 120, 400)).len(), 1);
    }

    #[test]
    fn a_record_written_as_the_handler_starts_may_not_have_been_read() {
        // Attempt 1 (by another message) at 10, written at 15, retry due
        // at 20; this message's handler started at 15 and found the
        // delivery never attempted, its chain held by the other message's
        // lease: it waits 61 s for that lease.
        let check = |started: i64| {
            let mut r = receive(12, 76);
            r.started = Some(at(started));
            r.hides = vec![(at(started), Duration::from_secs(61))];
            let t = Timeline {
                messages: vec![message(0, vec![r], None)],
                recorded: vec![Recorded {
                    number: 1,
                    at: at(10),
                    next: Some(at(20)),
                    status_code: Some(500),
                    written: at(15),
                }],
                ..Timeline::default()
            };
            let v = Violations::default();
            check_hides(
                "d",
                &t,
                Duration::from_secs(30),
                chrono::Duration::seconds(1),
                &v,
            );
            v.all()
        };
        assert!(check(15).is_empty(), "{:?}", check(15));
        // Started after the write: it read the retry, due at 20.
        assert_eq!(check(16).len(), 1);
    }
}
