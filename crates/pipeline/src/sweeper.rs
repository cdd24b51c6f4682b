//! The sweeper: fans out events that the stream never handed to the fan-out
//! (lost or expired stream records), reading each org's events after its
//! cursor, and runs the reconciler over each org's overdue deliveries. Each
//! pass first runs the redrive net over the dead-letter queue (`redrive`,
//! within its own share of the time), then the orgs.
//!
//! A pass runs within a time budget (the Lambda's time less a margin) and
//! is fair among orgs: each org gets turns of bounded work (a few pages of
//! events, a few pages of overdue deliveries), several orgs at once, round
//! robin, so an org with a huge backlog pages through it turn after turn
//! while every other org gets its first turn before that org gets its
//! second. When the budget runs out, no turn starts and those running stop
//! at their next page; the orgs whose first turn did not run go first in
//! the next pass (a resume point kept beside the cursors), save those of
//! the pass's first wave (eight), which had the whole budget for it: an org
//! whose turn cannot end within a pass takes its round with the others
//! rather than the head of every pass. So under permanent overload every
//! org gets a turn at least once every ⌈orgs / orgs a pass reaches⌉ passes.
//! The resume point is noted as the pass goes too (every
//! [`CHECKPOINT_ORGS`] orgs), so a pass the Lambda stops moves it on.

use crate::fanout::FanOut;
use crate::reconciler::{OrgProgress, Reconciler};
use crate::redrive::{RedriveNet, Redriven};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use webhooks_domain::{ids, Event};
use webhooks_ports::{Adapters, Clock, CursorStore, EventStore, Listed, SystemClock};

/// Events read per page.
const PAGE: usize = 100;
/// Pages of events one org's turn reads at most.
const EVENT_PAGES_PER_TURN: usize = 10;
/// Pages of overdue deliveries one org's turn reconciles at most (of
/// `reconciler::PAGE`, 500).
const OVERDUE_PAGES_PER_TURN: usize = 2;
/// Orgs whose turns run at once.
const ORG_CONCURRENCY: usize = 8;
/// A pass notes where it has got to each time this many more orgs have
/// had their first turn (one small write; about 940 a pass at 30 000 orgs),
/// so that a pass the Lambda stops (its timeout, a crash) moves the next
/// pass's start on too.
const CHECKPOINT_ORGS: usize = 32;
/// How long a pass may run unless told otherwise (the Lambda gives its
/// own deadline less a margin, see `webhooks_fn_sweeper`).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(180);
/// What a pass leaves of the invocation's time: after its budget it starts
/// no new work and finishes what is running (a page of events or of overdue
/// deliveries, a few seconds at worst), then notes where the next pass
/// starts. One sixth of the sweeper Lambda's 240 s.
pub const MARGIN: Duration = Duration::from_secs(40);

/// The budget of a pass in an invocation that is stopped after `limit`:
/// `limit` less the same share [`MARGIN`] is of 240 s.
pub fn budget_within(limit: Duration) -> Duration {
    limit.saturating_sub(limit.mul_f64(MARGIN.as_secs_f64() / 240.0))
}

/// How long a sweep pass may go on: past its deadline it starts no new
/// work. On tokio's clock: real time in a Lambda, virtual time in tests
/// and in the simulation, whose clock is tokio's paused one.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    /// No limit.
    pub fn unlimited() -> Self {
        Budget { deadline: None }
    }

    /// `time` from now.
    pub fn of(time: Duration) -> Self {
        Budget {
            deadline: Instant::now().checked_add(time),
        }
    }

    /// Whether its time is up.
    pub fn spent(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The sweeper step.
pub struct Sweeper {
    events: Arc<dyn EventStore>,
    cursors: Arc<dyn CursorStore>,
    fanout: Arc<FanOut>,
    grace: Duration,
    clock: Arc<dyn Clock>,
    reconciler: Option<Reconciler>,
    redrive: Option<RedriveNet>,
    budget: Duration,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Orgs with a cursor.
    pub orgs: usize,
    pub events: usize,
    pub deliveries_created: usize,
    pub enqueued: usize,
    /// Orgs whose sweep stopped at an error (tried again next time).
    pub failed_orgs: usize,
    /// Those orgs' ids: each waits its round in the rotation.
    pub failed_org_ids: Vec<String>,
    /// Pending deliveries without a queue message, queued again.
    pub reconciled: usize,
    /// Pending deliveries of deleted endpoints, canceled.
    pub canceled: usize,
    /// What the redrive net did with the dead-letter queue.
    pub redriven: Redriven,
    /// Events that cannot be read, passed over (each logged at error with
    /// its id).
    pub undecodable_events: usize,
    /// Overdue deliveries passed over because they or their events cannot
    /// be read (tried again next pass).
    pub unreadable_deliveries: usize,
    /// The pass ran out of time before all its work was done.
    pub out_of_time: bool,
    /// Orgs whose first turn did not run to its end in the time: the next
    /// pass starts with them. Their overdue deliveries wait for a later
    /// pass (the simulation's lateness rules count one pass more for each).
    pub not_reached_org_ids: Vec<String>,
}

impl SweepReport {
    /// How many orgs the pass did not reach.
    pub fn orgs_not_reached(&self) -> usize {
        self.not_reached_org_ids.len()
    }

    fn add(&mut self, other: &SweepReport) {
        self.events += other.events;
        self.deliveries_created += other.deliveries_created;
        self.enqueued += other.enqueued;
        self.reconciled += other.reconciled;
        self.canceled += other.canceled;
        self.undecodable_events += other.undecodable_events;
        self.unreadable_deliveries += other.unreadable_deliveries;
    }
}

/// One org's work in a pass, carried from one of its turns to the next.
struct OrgWork {
    org: String,
    /// Its place in this pass's order.
    place: usize,
    /// How far its events have been checked.
    cursor: String,
    events_done: bool,
    overdue: OrgProgress,
    /// Its first turn ran to its end.
    reached: bool,
    failed: bool,
}

impl OrgWork {
    fn finished(&self) -> bool {
        self.events_done && self.overdue.done()
    }
}

/// Where a turn's reading of an org's events stopped.
enum Swept {
    /// At the end of what has settled.
    Done,
    /// At the turn's share, or out of time: more next turn.
    More,
    /// At an error: the org's next pass tries again.
    Failed,
}

impl Sweeper {
    /// The sweeper over a backend's adapters, with a fan-out, a reconciler
    /// and a redrive net of its own.
    pub fn from_adapters(adapters: &Adapters, grace: Duration) -> Self {
        let mut sweeper = Sweeper::new(
            adapters.events.clone(),
            adapters.cursors.clone(),
            Arc::new(FanOut::from_adapters(adapters)),
            grace,
        );
        sweeper.clock = adapters.clock.clone();
        sweeper.reconciler = Some(Reconciler::from_adapters(adapters));
        sweeper.redrive = Some(RedriveNet::from_adapters(adapters));
        sweeper
    }

    /// The same sweeper, running `net` over the dead-letter queue each pass.
    pub fn with_redrive(mut self, net: RedriveNet) -> Self {
        self.redrive = Some(net);
        self
    }

    /// The same sweeper, its redrive net emitting `delivery.dead_lettered`
    /// through `notifier`.
    pub fn with_ops(mut self, notifier: crate::ops::OpsNotifier) -> Self {
        self.redrive = self.redrive.take().map(|net| net.with_ops(notifier));
        self
    }

    /// `grace`: events younger than this are left to the stream.
    pub fn new(
        events: Arc<dyn EventStore>,
        cursors: Arc<dyn CursorStore>,
        fanout: Arc<FanOut>,
        grace: Duration,
    ) -> Self {
        Sweeper {
            events,
            cursors,
            fanout,
            grace,
            clock: SystemClock::shared(),
            reconciler: None,
            redrive: None,
            budget: DEFAULT_BUDGET,
        }
    }

    /// The same sweeper, each [`Sweeper::sweep`] within `budget`.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// One pass within the sweeper's budget ([`DEFAULT_BUDGET`] unless set).
    pub async fn sweep(&self) -> SweepReport {
        self.sweep_within(Budget::of(self.budget)).await
    }

    /// One pass, starting no new work once `budget` is spent. Each step of
    /// a pass runs within the same budget; a step added to the pass takes
    /// its share the same way, checking the budget between bounded pieces
    /// of work.
    pub async fn sweep_within(&self, budget: Budget) -> SweepReport {
        let mut report = SweepReport::default();
        if let Some(net) = &self.redrive {
            report.redriven = net.run(&budget).await;
        }
        self.sweep_orgs(&budget, &mut report).await;
        report
    }

    /// Every org, in turns: the events after its cursor that are older
    /// than the settle window are checked (their missing deliveries created
    /// and queued), and the cursor moves over those fully done; it stops at
    /// the first event that could not be fanned out, so that event is
    /// checked again next time, and passes over (logging) one that cannot
    /// be read, so nothing can hold the cursor for longer. Then its overdue
    /// deliveries are queued again.
    async fn sweep_orgs(&self, budget: &Budget, report: &mut SweepReport) {
        let mut orgs = match self.cursors.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not list cursors");
                report.failed_orgs += 1;
                return;
            }
        };
        report.orgs = orgs.len();
        let resume = match self.cursors.resume_at().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not read where the last sweep stopped; starting from the first org");
                None
            }
        };
        // In org order, from where the last pass ran out of time.
        orgs.sort_unstable();
        let start = resume
            .as_ref()
            .map_or(0, |r| orgs.partition_point(|(o, _)| o < r));
        orgs.rotate_left(start);
        // Every id below this was made more than the settle window ago: its
        // write has committed by now, or never will.
        let settled_below = ids::id_floor_at(
            "evt",
            self.clock.now() - chrono::Duration::from_std(self.grace).unwrap_or_default(),
        );
        let mut waiting: VecDeque<OrgWork> = orgs
            .into_iter()
            .enumerate()
            .map(|(place, (org, cursor))| OrgWork {
                org,
                place,
                cursor,
                events_done: false,
                overdue: OrgProgress::default(),
                reached: false,
                failed: false,
            })
            .collect();
        if self.reconciler.is_none() {
            for w in &mut waiting {
                w.overdue = OrgProgress::finished();
            }
        }
        let mut ended: Vec<OrgWork> = Vec::with_capacity(waiting.len());
        let mut running = FuturesUnordered::new();
        // The pass notes where it has got to as it goes, so that one the
        // Lambda stops (its timeout, a crash) moves the next pass's start
        // on all the same: else every such pass would start where the last
        // one that ended did, and the orgs late in the order would wait for
        // a pass that ends.
        let names: Vec<String> = waiting.iter().map(|w| w.org.clone()).collect();
        let mut unreached: BTreeSet<usize> = (0..names.len()).collect();
        let mut noted = resume.clone();
        let mut reached_since_noted = 0usize;
        loop {
            while running.len() < ORG_CONCURRENCY && !budget.spent() {
                let Some(work) = waiting.pop_front() else {
                    break;
                };
                running.push(self.turn(work, &settled_below, budget));
            }
            let Some((work, done)) = running.next().await else {
                break;
            };
            report.add(&done);
            if work.reached && unreached.remove(&work.place) {
                reached_since_noted += 1;
                if reached_since_noted >= CHECKPOINT_ORGS {
                    reached_since_noted = 0;
                    let at = unreached
                        .range(ORG_CONCURRENCY..)
                        .next()
                        .or_else(|| unreached.iter().next())
                        .and_then(|&p| names.get(p).cloned());
                    if at.is_some() && at != noted {
                        match self.cursors.set_resume_at(at.as_deref()).await {
                            Ok(()) => noted = at,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not note how far the sweep has got")
                            }
                        }
                    }
                }
            }
            if work.finished() {
                ended.push(work);
            } else {
                // Back of the line: every other org's turn comes first.
                waiting.push_back(work);
            }
        }
        ended.extend(waiting);
        report.failed_org_ids = ended
            .iter()
            .filter(|w| w.failed)
            .map(|w| w.org.clone())
            .collect();
        report.failed_orgs += report.failed_org_ids.len();
        report.out_of_time = ended.iter().any(|w| !w.finished());
        let not_reached = ended.iter().filter(|w| !w.reached);
        report.not_reached_org_ids = not_reached.clone().map(|w| w.org.clone()).collect();
        // The next pass starts with the first org not reached, but not with
        // one of this pass's first wave: those had the whole budget for
        // their first turn, and putting one that could not end it first
        // again would hold every org after the next pass's reach back for
        // as long as its backlog lasts. It waits its round with the others.
        // (An org whose turn stopped at an error waits its round too: the
        // resume point is one place in the rotation, and moving it back to
        // a failed org would push back every org not reached after it.)
        let next = not_reached
            .clone()
            .filter(|w| w.place >= ORG_CONCURRENCY)
            .min_by_key(|w| w.place)
            .or_else(|| not_reached.min_by_key(|w| w.place))
            .map(|w| w.org.clone());
        if report.orgs_not_reached() > 0 {
            tracing::warn!(
                not_reached = report.orgs_not_reached(),
                resume_at = next.as_deref().unwrap_or(""),
                "sweep ran out of time; the next one starts with the orgs it did not reach"
            );
        }
        if next != noted {
            if let Err(e) = self.cursors.set_resume_at(next.as_deref()).await {
                tracing::warn!(error = %e, "could not note where the next sweep starts");
            }
        }
    }

    /// One turn of one org: a bounded share of its events, then of its
    /// overdue deliveries. Stops early when the budget is spent.
    async fn turn(
        &self,
        mut work: OrgWork,
        settled_below: &str,
        budget: &Budget,
    ) -> (OrgWork, SweepReport) {
        let mut report = SweepReport::default();
        let mut cut = false;
        if !work.events_done {
            match self
                .sweep_events(
                    &work.org,
                    &mut work.cursor,
                    settled_below,
                    budget,
                    &mut report,
                )
                .await
            {
                Swept::Done => work.events_done = true,
                Swept::More => cut = budget.spent(),
                Swept::Failed => {
                    work.events_done = true;
                    work.failed = true;
                }
            }
        }
        if let Some(reconciler) = &self.reconciler {
            for _ in 0..OVERDUE_PAGES_PER_TURN {
                if work.overdue.done() {
                    break;
                }
                if budget.spent() {
                    cut = true;
                    break;
                }
                match reconciler
                    .reconcile_page(&work.org, &mut work.overdue)
                    .await
                {
                    Ok(r) => {
                        report.reconciled += r.requeued;
                        report.canceled += r.canceled;
                        report.unreadable_deliveries += r.unreadable;
                    }
                    Err(e) => {
                        tracing::warn!(org_id = %work.org, error = %e, "could not reconcile pending deliveries");
                        work.failed = true;
                    }
                }
            }
        }
        work.reached |= !cut;
        (work, report)
    }

    /// Checks a turn's share of the org's events from `cursor` on (which
    /// it moves along).
    async fn sweep_events(
        &self,
        org: &str,
        cursor: &mut String,
        settled_below: &str,
        budget: &Budget,
        report: &mut SweepReport,
    ) -> Swept {
        for _ in 0..EVENT_PAGES_PER_TURN {
            if budget.spent() {
                return Swept::More;
            }
            let page = match self.events.list_after(org, cursor, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(org_id = %org, error = %e, "could not read events");
                    return Swept::Failed;
                }
            };
            let settled: Vec<Listed> = page
                .into_iter()
                .take_while(|l| listed_id(l) < settled_below)
                .collect();
            let Some(last) = settled.last().map(|l| listed_id(l).to_string()) else {
                return Swept::Done;
            };
            let count = settled.len();
            // The events to fan out, each with its place in the page, and
            // the items that cannot be read.
            let mut ids: Vec<String> = Vec::with_capacity(count);
            let mut events: Vec<Event> = Vec::with_capacity(count);
            let mut places: Vec<usize> = Vec::with_capacity(count);
            let mut unreadable = Vec::new();
            for (i, item) in settled.into_iter().enumerate() {
                ids.push(listed_id(&item).to_string());
                match item {
                    Ok(e) => {
                        events.push(e);
                        places.push(i);
                    }
                    Err(u) => unreadable.push((i, u)),
                }
            }
            let r = if events.is_empty() {
                crate::FanOutReport::default()
            } else {
                self.fanout.fan_out_swept(&events).await
            };
            report.deliveries_created += r.created;
            report.enqueued += r.enqueued;
            if r.created > 0 {
                tracing::info!(org_id = %org, created = r.created, "sweeper fanned out missed events");
            }
            // Done: the page's items before its first event that failed.
            let done = r
                .first_failure
                .map_or(count, |i| places.get(i).copied().unwrap_or(count));
            report.events += places.iter().filter(|&&p| p < done).count();
            for (_, u) in unreadable.iter().filter(|(i, _)| *i < done) {
                tracing::error!(org_id = %org, event_id = %u.event_id, error = %u.error, "event cannot be read; the sweeper passes over it");
                report.undecodable_events += 1;
            }
            // The cursor moves over what is done, up to the first failure.
            if let Some(through) = done.checked_sub(1).and_then(|i| ids.get(i)) {
                if let Err(e) = self.cursors.advance(org, through).await {
                    // Not fatal: the next sweep checks these events again.
                    tracing::warn!(org_id = %org, error = %e, "could not advance cursor");
                }
            }
            if r.first_failure.is_some() {
                return Swept::Failed;
            }
            // A short page, or one cut at the settle window, is the end.
            if count < PAGE {
                return Swept::Done;
            }
            *cursor = last;
        }
        Swept::More
    }
}

/// The event id of a listed item.
fn listed_id(item: &Listed) -> &str {
    match item {
        Ok(e) => &e.id,
        Err(u) => &u.event_id,
    }
}
