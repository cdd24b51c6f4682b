//! Lambda `sweeper`: on a schedule, fans out events that the stream never
//! handed to the fan-out, from each org's cursor, and queues again the
//! overdue deliveries that lost their message; within the invocation's
//! time, less a margin.

use lambda_runtime::{Error, LambdaEvent};
use std::time::Duration;
use webhooks_aws::env::{self, EnvError};
use webhooks_domain::retry::parse_duration;
use webhooks_pipeline::{Budget, SweepReport, Sweeper};
use webhooks_ports::Adapters;

/// What a pass leaves of the invocation's time: after its budget it starts
/// no new work and finishes what is running (a page of events or of overdue
/// deliveries, a few seconds at worst), then notes where the next pass
/// starts.
pub const MARGIN: Duration = Duration::from_secs(40);

/// Handles one scheduled invocation; answers with what the sweep did.
pub async fn handle(
    sweeper: &Sweeper,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let budget = budget(event.context.deadline, now_ms);
    let r = sweeper.sweep_within(budget).await;
    Ok(report(&r))
}

/// The pass's budget: the invocation's time left (from its deadline, in
/// milliseconds since the epoch) less [`MARGIN`]; the sweeper's own
/// when the context carries no deadline.
pub fn budget(deadline_ms: u64, now_ms: u64) -> Budget {
    if deadline_ms == 0 {
        return Budget::of(webhooks_pipeline::sweeper::DEFAULT_BUDGET);
    }
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Budget::of(left.saturating_sub(MARGIN))
}

/// Logs the pass, prints its metrics, and makes the invocation's answer.
pub fn report(r: &SweepReport) -> serde_json::Value {
    tracing::info!(
        orgs = r.orgs,
        events = r.events,
        created = r.deliveries_created,
        enqueued = r.enqueued,
        failed_orgs = r.failed_orgs,
        reconciled = r.reconciled,
        canceled = r.canceled,
        undecodable_events = r.undecodable_events,
        unreadable_deliveries = r.unreadable_deliveries,
        out_of_time = r.out_of_time,
        orgs_not_reached = r.orgs_not_reached,
        "sweep"
    );
    // What the net under the stream found: deliveries the stream never
    // made, messages lost, and what the sweep could not get through.
    println!(
        "{}",
        webhooks_pipeline::metrics::emf(
            &[],
            &[
                (
                    "SweeperDeliveriesCreated",
                    "Count",
                    r.deliveries_created as u64
                ),
                ("SweeperFailedOrgs", "Count", r.failed_orgs as u64),
                ("SweeperRequeued", "Count", r.reconciled as u64),
                (
                    "SweeperUndecodableEvents",
                    "Count",
                    r.undecodable_events as u64
                ),
                ("SweeperOrgsNotReached", "Count", r.orgs_not_reached as u64),
            ]
        )
    );
    serde_json::json!({
        "orgs": r.orgs,
        "events": r.events,
        "deliveries_created": r.deliveries_created,
        "enqueued": r.enqueued,
        "failed_orgs": r.failed_orgs,
        "reconciled": r.reconciled,
        "canceled": r.canceled,
        "undecodable_events": r.undecodable_events,
        "unreadable_deliveries": r.unreadable_deliveries,
        "out_of_time": r.out_of_time,
        "orgs_not_reached": r.orgs_not_reached,
    })
}

/// The sweeper over `adapters`, configured from the environment.
pub fn from_env(adapters: &Adapters) -> Result<Sweeper, EnvError> {
    Ok(Sweeper::from_adapters(adapters, grace_from_env()?))
}

/// How old an event must be before the sweeper takes it from the stream
/// (`WEBHOOKS_SWEEP_GRACE`, default 2 minutes).
pub fn grace_from_env() -> Result<Duration, EnvError> {
    match env::optional("WEBHOOKS_SWEEP_GRACE") {
        Some(s) => parse_duration(&s).map_err(|e| EnvError(format!("WEBHOOKS_SWEEP_GRACE: {e}"))),
        None => Ok(Duration::from_secs(120)),
    }
}
