//! The sweeper: fans out events that the stream never handed to the fan-out
//! (lost or expired stream records), reading each org's events after its
//! cursor. Each pass first runs the redrive net over the dead-letter queue
//! (`redrive`), then, per org, the sweep and the reconciler.

use crate::fanout::FanOut;
use crate::reconciler::Reconciler;
use crate::redrive::{RedriveNet, Redriven};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::ids;
use webhooks_ports::{Adapters, Clock, CursorStore, EventStore, SystemClock};

const PAGE: usize = 100;

/// The sweeper step.
pub struct Sweeper {
    events: Arc<dyn EventStore>,
    cursors: Arc<dyn CursorStore>,
    fanout: Arc<FanOut>,
    grace: Duration,
    clock: Arc<dyn Clock>,
    reconciler: Option<Reconciler>,
    redrive: Option<RedriveNet>,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub orgs: usize,
    pub events: usize,
    pub deliveries_created: usize,
    pub enqueued: usize,
    /// Orgs whose sweep stopped at an error (tried again next time).
    pub failed_orgs: usize,
    /// Pending deliveries without a queue message, queued again.
    pub reconciled: usize,
    /// Pending deliveries of deleted endpoints, canceled.
    pub canceled: usize,
    /// What the redrive net did with the dead-letter queue.
    pub redriven: Redriven,
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
        }
    }

    /// One pass over every org: the events after its cursor that are
    /// older than the settle window are checked (their missing deliveries
    /// created and queued), and the cursor moves over those fully done. It
    /// stops at the first event that could not be fanned out, so that event
    /// is checked again next time; nothing can hold the cursor for longer.
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        if let Some(net) = &self.redrive {
            report.redriven = net.run().await;
        }
        let orgs = match self.cursors.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not list cursors");
                report.failed_orgs += 1;
                return report;
            }
        };
        // Every id below this was made more than the settle window ago: its
        // write has committed by now, or never will.
        let settled_below = ids::id_floor_at(
            "evt",
            self.clock.now() - chrono::Duration::from_std(self.grace).unwrap_or_default(),
        );
        for (org, cursor) in orgs {
            report.orgs += 1;
            let swept = self
                .sweep_org(&org, cursor, &settled_below, &mut report)
                .await;
            let reconciled = self.reconcile_org(&org, &mut report).await;
            if !(swept && reconciled) {
                report.failed_orgs += 1;
            }
        }
        report
    }

    /// Queues again the org's pending deliveries that lost their message;
    /// `false` on an error.
    async fn reconcile_org(&self, org: &str, report: &mut SweepReport) -> bool {
        let Some(reconciler) = &self.reconciler else {
            return true;
        };
        match reconciler.reconcile_org(org).await {
            Ok(r) => {
                report.reconciled += r.requeued;
                report.canceled += r.canceled;
                true
            }
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "could not reconcile pending deliveries");
                false
            }
        }
    }

    /// Sweeps one org from `cursor`; `false` if it stopped at an error.
    async fn sweep_org(
        &self,
        org: &str,
        mut cursor: String,
        settled_below: &str,
        report: &mut SweepReport,
    ) -> bool {
        loop {
            let page = match self.events.list_after(org, &cursor, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(org_id = %org, error = %e, "could not read events");
                    return false;
                }
            };
            let settled: Vec<_> = page
                .into_iter()
                .take_while(|e| e.id.as_str() < settled_below)
                .collect();
            let Some(last) = settled.last() else {
                return true;
            };
            let r = self.fanout.fan_out(&settled).await;
            report.deliveries_created += r.created;
            report.enqueued += r.enqueued;
            if r.created > 0 {
                tracing::info!(org_id = %org, created = r.created, "sweeper fanned out missed events");
            }
            let done = r.first_failure.unwrap_or(settled.len());
            report.events += done;
            // The cursor moves over what is done, up to the first failure.
            if let Some(through) = done.checked_sub(1).and_then(|i| settled.get(i)) {
                if let Err(e) = self.cursors.advance(org, &through.id).await {
                    // Not fatal: the next sweep checks these events again.
                    tracing::warn!(org_id = %org, error = %e, "could not advance cursor");
                }
            }
            if r.first_failure.is_some() {
                return false;
            }
            // A short page, or one cut at the settle window, is the end.
            if settled.len() < PAGE {
                return true;
            }
            cursor = last.id.clone();
        }
    }
}
