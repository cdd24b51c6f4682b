//! The sweeper: fans out events that the stream never handed to the fan-out
//! (lost or expired stream records), reading each org's events after its
//! cursor.

use crate::fanout::FanOut;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::ids;
use webhooks_ports::{Adapters, CursorStore, EventStore};

const PAGE: usize = 100;

/// The sweeper step.
pub struct Sweeper {
    events: Arc<dyn EventStore>,
    cursors: Arc<dyn CursorStore>,
    fanout: Arc<FanOut>,
    grace: Duration,
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
}

impl Sweeper {
    /// The sweeper over a backend's adapters, with a fan-out of its own.
    pub fn from_adapters(adapters: &Adapters, grace: Duration) -> Self {
        Sweeper::new(
            adapters.events.clone(),
            adapters.cursors.clone(),
            Arc::new(FanOut::from_adapters(adapters)),
            grace,
        )
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
        }
    }

    /// One pass over every org: the events after its cursor that are
    /// older than the settle window are checked (their missing deliveries
    /// created and queued), and the cursor moves over those fully done. It
    /// stops at the first event that could not be fanned out, so that event
    /// is checked again next time; nothing can hold the cursor for longer.
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
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
            Utc::now() - chrono::Duration::from_std(self.grace).unwrap_or_default(),
        );
        for (org, cursor) in orgs {
            report.orgs += 1;
            if !self
                .sweep_org(&org, cursor, &settled_below, &mut report)
                .await
            {
                report.failed_orgs += 1;
            }
        }
        report
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
            let r = self.fanout.fan_out_checked(&settled).await;
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
