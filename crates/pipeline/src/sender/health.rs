//! What attempts teach about an endpoint: a run of failures, its end, and
//! disabling on 410 Gone or after failing for the configured period.

use super::Sender;
use chrono::{DateTime, Utc};
use webhooks_domain::delivery::NextStep;
use webhooks_domain::Endpoint;

impl Sender {
    /// Keeps the endpoint's health up to date, writing only on a change.
    pub(super) async fn update_health(
        &self,
        endpoint: &Endpoint,
        step: &NextStep,
        now: DateTime<Utc>,
    ) {
        let (org, id) = (&endpoint.org_id, &endpoint.id);
        let result = match step {
            NextStep::Delivered if endpoint.failing_since.is_some() => {
                self.health.set_failing_since(org, id, None).await
            }
            NextStep::Delivered => Ok(()),
            NextStep::Gone => {
                self.disable_endpoint(endpoint, "the endpoint answered 410 Gone", now)
                    .await
            }
            // The schedule ran out and the delivery was reported dead: the
            // run of failures ends with it, so a failure days later does not
            // find a stale run and disable the endpoint at once.
            NextStep::DeadLetter if endpoint.failing_since.is_some() => {
                self.health.set_failing_since(org, id, None).await
            }
            NextStep::DeadLetter => Ok(()),
            _ if !endpoint.enabled => Ok(()),
            _ => match endpoint.failing_since {
                None => self.health.set_failing_since(org, id, Some(now)).await,
                Some(since) => {
                    let limit = chrono::Duration::from_std(self.config.disable_failing_after)
                        .unwrap_or(chrono::Duration::days(5));
                    if now - since >= limit {
                        tracing::warn!(endpoint_id = %id, "endpoint disabled after failing since {since}");
                        self.disable_endpoint(
                            endpoint,
                            &format!(
                                "failing without a success since {}",
                                webhooks_domain::time::rfc3339(since)
                            ),
                            now,
                        )
                        .await
                    } else {
                        Ok(())
                    }
                }
            },
        };
        if let Err(e) = result {
            tracing::warn!(endpoint_id = %id, error = %e, "could not update endpoint health");
        }
    }
}
