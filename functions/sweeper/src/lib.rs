//! Lambda `sweeper`: on a schedule, settles what SQS redrove to the
//! dead-letter queue, fans out events that the stream never handed to the
//! fan-out, from each org's cursor, and queues again the overdue deliveries
//! that lost their message; within the invocation's time, less a margin.

use lambda_runtime::{Error, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::env::{self, EnvError};
use webhooks_domain::event::MIN_SETTLE_WINDOW;
use webhooks_domain::retry::parse_duration;
use webhooks_pipeline::metrics::DeadLetterCause;
use webhooks_pipeline::{Budget, SweepReport, Sweeper};
use webhooks_ports::Adapters;

/// What a pass leaves of the invocation's time.
pub use webhooks_pipeline::sweeper::MARGIN;

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
        orgs_not_reached = r.orgs_not_reached(),
        redriven = r.redriven.redriven(),
        redrive_dead_lettered = r.redriven.dead_lettered,
        "sweep"
    );
    // What the net under the stream found: deliveries the stream never
    // made, messages lost, what the sweep could not get through, and what
    // SQS redrove to the dead-letter queue (no SQS metric counts a redrive:
    // NumberOfMessagesSent leaves it out).
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
                (
                    "SweeperOrgsNotReached",
                    "Count",
                    r.orgs_not_reached() as u64
                ),
                ("RedrivenMessages", "Count", r.redriven.redriven() as u64),
            ]
        )
    );
    if r.redriven.dead_lettered > 0 {
        println!(
            "{}",
            webhooks_pipeline::metrics::emf(
                &[("Cause", DeadLetterCause::Redriven.as_str())],
                &[("DeadLetters", "Count", r.redriven.dead_lettered as u64)]
            )
        );
    }
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
        "orgs_not_reached": r.orgs_not_reached(),
        "redriven": r.redriven.redriven(),
        "redrive_dead_lettered": r.redriven.dead_lettered,
    })
}

/// The sweeper over `adapters`, configured from the environment; its
/// redrive net's `delivery.dead_lettered` notices are queued for the
/// sender when an operator webhook is set (`WEBHOOKS_OPS_WEBHOOK_URL`; the
/// sender holds its secret) and published on the EventBridge bus
/// `WEBHOOKS_OPS_EVENT_BUS` when set.
pub fn from_env(adapters: &Adapters, aws: &webhooks_aws::SdkConfig) -> Result<Sweeper, EnvError> {
    let queue = env::optional("WEBHOOKS_OPS_WEBHOOK_URL").map(|_| adapters.queue.clone());
    let bus = env::optional("WEBHOOKS_OPS_EVENT_BUS").map(|name| {
        Arc::new(webhooks_aws::EventBridgeOpsBus::with_config(aws, name))
            as Arc<dyn webhooks_ports::OpsBus>
    });
    Ok(Sweeper::from_adapters(adapters, grace_from_env()?)
        .with_ops(webhooks_pipeline::OpsNotifier::new(queue, bus)))
}

/// The shortest settle window: an event may be written up to
/// [`MIN_SETTLE_WINDOW`] after its id is made, so a shorter one could move a
/// cursor over an event still to commit.
pub const MIN_GRACE: Duration = MIN_SETTLE_WINDOW;
/// The longest settle window: past an hour the net under the stream is too
/// late to be one.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// How old an event must be before the sweeper takes it from the stream
/// (`WEBHOOKS_SWEEP_GRACE`, default 2 minutes, from [`MIN_GRACE`] to
/// [`MAX_GRACE`]: the template's `SweepGrace` pattern allows the same).
pub fn grace_from_env() -> Result<Duration, EnvError> {
    match env::optional("WEBHOOKS_SWEEP_GRACE") {
        Some(s) => parse_grace(&s).map_err(|e| EnvError(format!("WEBHOOKS_SWEEP_GRACE: {e}"))),
        None => Ok(Duration::from_secs(120)),
    }
}

/// A settle window from its text, within [`MIN_GRACE`] and [`MAX_GRACE`].
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    let grace = parse_duration(s).map_err(|e| e.to_string())?;
    if !(MIN_GRACE..=MAX_GRACE).contains(&grace) {
        return Err(format!(
            "'{s}' is outside 60s to 60m (an event may be written up to {} s after its id is made; longer leaves missed events too long)",
            MIN_SETTLE_WINDOW.as_secs()
        ));
    }
    Ok(grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_is_between_a_minute_and_an_hour() {
        assert_eq!(parse_grace("60s"), Ok(MIN_SETTLE_WINDOW));
        assert_eq!(parse_grace("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_grace("60m"), Ok(Duration::from_secs(3600)));
        for refused in ["30s", "59s", "0s", "61m", "2h", "soon"] {
            let e = parse_grace(refused).expect_err(refused);
            assert!(e.contains(refused), "{e}");
        }
    }
}
