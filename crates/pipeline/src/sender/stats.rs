//! The endpoint's hourly figures, kept with every attempt recorded (one
//! `ADD` write to the bucket of the delivery's creation hour).

use super::Sender;
use webhooks_domain::stats::{bucket_hour, StatsDelta};
use webhooks_domain::Delivery;
use webhooks_ports::AttemptUpdate;

impl Sender {
    /// Counts an attempt just recorded (and the status it left its delivery
    /// in). A failure is logged: the figures are a summary, the delivery's
    /// record is the truth.
    pub(super) async fn count_attempt(&self, delivery: &Delivery, update: &AttemptUpdate) {
        let stats = self.stats.clone();
        let Some(stats) = stats else {
            return;
        };
        let delta = StatsDelta::attempt(
            update.attempt.number,
            update.status,
            update.attempt.status_code,
            update.attempt.latency_ms,
        );
        let r = stats
            .add(
                &delivery.endpoint_id,
                bucket_hour(delivery.created_at),
                &delta,
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not update the endpoint's figures");
        }
    }
}
