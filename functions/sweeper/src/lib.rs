//! Lambda `sweeper`: on a schedule, fans out events that the stream never
//! handed to the fan-out, from each org's cursor.

use lambda_runtime::{Error, LambdaEvent};
use std::time::Duration;
use webhooks_aws::env::{self, EnvError};
use webhooks_domain::retry::parse_duration;
use webhooks_pipeline::Sweeper;
use webhooks_ports::Adapters;

/// Handles one scheduled invocation; answers with what the sweep did.
pub async fn handle(
    sweeper: &Sweeper,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let r = sweeper.sweep().await;
    tracing::info!(
        orgs = r.orgs,
        events = r.events,
        created = r.deliveries_created,
        enqueued = r.enqueued,
        failed_orgs = r.failed_orgs,
        "sweep"
    );
    // What the net under the stream found: deliveries the stream never made.
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
            ]
        )
    );
    Ok(serde_json::json!({
        "orgs": r.orgs,
        "events": r.events,
        "deliveries_created": r.deliveries_created,
        "enqueued": r.enqueued,
        "failed_orgs": r.failed_orgs,
    }))
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
