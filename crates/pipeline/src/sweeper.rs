//! The sweeper: fans out events that the stream never handed to the fan-out
//! (lost or expired stream records), reading each org's events after its
//! cursor.

use crate::fanout::FanOut;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
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

    /// One pass over every org.
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
        let cutoff = Utc::now() - chrono::Duration::from_std(self.grace).unwrap_or_default();
        for (org, mut cursor) in orgs {
            report.orgs += 1;
            loop {
                let page = match self.events.list_after(&org, &cursor, PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(org_id = %org, error = %e, "could not read events");
                        report.failed_orgs += 1;
                        break;
                    }
                };
                let full = page.len() == PAGE;
                let due: Vec<_> = page
                    .into_iter()
                    .take_while(|e| e.created_at <= cutoff)
                    .collect();
                if due.is_empty() {
                    break;
                }
                let r = self.fanout.fan_out(&due).await;
                report.deliveries_created += r.created;
                report.enqueued += r.enqueued;
                if let Some(i) = r.first_failure {
                    report.events += i;
                    report.failed_orgs += 1;
                    break;
                }
                report.events += due.len();
                if r.created > 0 {
                    tracing::info!(org_id = %org, created = r.created, "sweeper fanned out missed events");
                }
                match due.last() {
                    Some(last) if full => cursor = last.id.clone(),
                    _ => break,
                }
            }
        }
        report
    }
}
