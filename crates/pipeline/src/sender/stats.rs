//! The endpoint's hourly figures, kept with the attempts recorded: each
//! attempt's delta is added to a tally in the process, and the tally is
//! written at the end of each batch, one `ADD` per (endpoint, hour) bucket
//! it touched, not one per attempt (a batch of ten deliveries to one
//! endpoint costs one write, not ten).

use super::Sender;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use webhooks_domain::stats::{bucket_hour, StatsDelta};
use webhooks_domain::Delivery;
use webhooks_ports::AttemptUpdate;

/// Deltas not yet written, by (endpoint, bucket hour).
#[derive(Default)]
pub(super) struct Tally(Mutex<HashMap<(String, DateTime<Utc>), StatsDelta>>);

impl Tally {
    fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((endpoint_id.to_string(), hour))
            .or_default()
            .merge(delta);
    }

    fn take(&self) -> HashMap<(String, DateTime<Utc>), StatsDelta> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Sender {
    /// Counts an attempt just recorded (and the status it left its delivery
    /// in), to be written by [`Sender::write_stats`].
    pub(super) fn count_attempt(&self, delivery: &Delivery, update: &AttemptUpdate) {
        if self.stats.is_none() {
            return;
        }
        let delta = StatsDelta::attempt(
            update.attempt.number,
            update.status,
            update.attempt.status_code,
            update.attempt.latency_ms,
        );
        self.tally.add(
            &delivery.endpoint_id,
            bucket_hour(delivery.created_at),
            &delta,
        );
    }

    /// Writes what was counted since the last call, one write per bucket.
    /// A failure is logged: the figures are a summary, the deliveries'
    /// records are the truth (as a crash between recording an attempt and
    /// this write loses its count, and nothing else).
    pub(super) async fn write_stats(&self) {
        let stats = self.stats.clone();
        let Some(stats) = stats else {
            return;
        };
        let tally = self.tally.take();
        join_all(
            tally
                .iter()
                .filter(|(_, delta)| !delta.is_empty())
                .map(|((endpoint_id, hour), delta)| {
                    let stats = stats.clone();
                    async move {
                        if let Err(e) = stats.add(endpoint_id, *hour, delta).await {
                            tracing::warn!(endpoint_id = %endpoint_id, error = %e, "could not update the endpoint's figures");
                        }
                    }
                }),
        )
        .await;
    }
}
