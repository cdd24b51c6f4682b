//! Lambda `sweeper`: on a schedule, fans out events that the stream never
//! handed to the fan-out, from each org's cursor.

use lambda_runtime::{Error, LambdaEvent};
use std::time::Duration;
use webhooks_aws::env::{self, EnvError};
use webhooks_domain::event::MIN_SETTLE_WINDOW;
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
        Some(s) => parse_grace(&s).map_err(|e| EnvError(format!("WEBHOOKS_SWEEP_GRACE: {e}"))),
        None => Ok(Duration::from_secs(120)),
    }
}

/// A settle window: a duration no shorter than [`MIN_SETTLE_WINDOW`], the
/// least that covers every event write (a shorter one would move the cursor
/// past an event still to be written).
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    let grace = parse_duration(text).map_err(|e| e.to_string())?;
    if grace < MIN_SETTLE_WINDOW {
        return Err(format!(
            "must be at least {} s: an event may be written up to that long after its id is made",
            MIN_SETTLE_WINDOW.as_secs()
        ));
    }
    Ok(grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settle_window_shorter_than_the_writes_is_refused() {
        assert_eq!(parse_grace("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_grace("60s"), Ok(MIN_SETTLE_WINDOW));
        assert!(parse_grace("30s").unwrap_err().contains("at least 60 s"));
        assert!(parse_grace("soon").is_err());
    }
}
