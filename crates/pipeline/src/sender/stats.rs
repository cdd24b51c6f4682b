//! The endpoint's hourly figures, kept with the attempts recorded: each
//! attempt's delta is added to a tally in the process, and the tally is
//! written one `ADD` per (endpoint, hour) bucket it touched, not one per
//! attempt. The tally outlives a batch: it is written at the end of the
//! batch in which its oldest figure reaches [`SenderConfig::stats_flush_after`],
//! or at the end of a batch of fewer than ten messages (the queue had no
//! more at hand, so this environment may now sit idle, and be reclaimed),
//! or by [`Sender::flush_stats`]. Under a steady load a sender environment
//! so writes each bucket once every few seconds, however many batches it
//! handles.
//!
//! [`SenderConfig::stats_flush_after`]: super::SenderConfig::stats_flush_after

use super::Sender;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use rustc_hash::FxHashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use webhooks_domain::stats::{bucket_hour, StatsDelta};
use webhooks_domain::Delivery;
use webhooks_ports::queue_limits::MAX_BATCH_ENTRIES;
use webhooks_ports::AttemptUpdate;

type Buckets = FxHashMap<(String, DateTime<Utc>), StatsDelta>;

/// Deltas not yet written, by (endpoint, bucket hour), and when the oldest
/// of them was counted.
#[derive(Default)]
pub(super) struct Tally(Mutex<TallyState>);

#[derive(Default)]
struct TallyState {
    buckets: Buckets,
    since: Option<DateTime<Utc>>,
}

impl Tally {
    fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta, now: DateTime<Utc>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.since.get_or_insert(now);
        state
            .buckets
            .entry((endpoint_id.to_string(), hour))
            .or_default()
            .merge(delta);
    }

    /// Everything counted, when `due` says so of the oldest figure's time.
    fn take_if(&self, due: impl FnOnce(DateTime<Utc>) -> bool) -> Buckets {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match state.since {
            Some(since) if due(since) => std::mem::take(&mut *state).buckets,
            _ => Buckets::default(),
        }
    }
}

/// Whether a tally whose oldest figure was counted at `since` is written at
/// the end of a batch of `batch_len` messages, at `now`.
fn due(since: DateTime<Utc>, now: DateTime<Utc>, flush_after: Duration, batch_len: usize) -> bool {
    batch_len < MAX_BATCH_ENTRIES
        || now
            .signed_duration_since(since)
            .to_std()
            .unwrap_or_default()
            >= flush_after
}

impl Sender {
    /// Counts an attempt just recorded (and the status it left its delivery
    /// in), to be written by a later flush.
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
            self.clock.now(),
        );
    }

    /// At the end of a batch of `batch_len` messages: writes the tally if
    /// it is due (see the module's documentation).
    pub(super) async fn write_stats_if_due(&self, batch_len: usize) {
        let now = self.clock.now();
        let flush_after = self.config.stats_flush_after;
        let buckets = self
            .tally
            .take_if(|since| due(since, now, flush_after, batch_len));
        self.write_stats(buckets).await;
    }

    /// Writes every figure counted and not yet written, one write per
    /// (endpoint, hour): what a process that is about to stop, or whose
    /// queue ran dry, calls.
    pub async fn flush_stats(&self) {
        let buckets = self.tally.take_if(|_| true);
        self.write_stats(buckets).await;
    }

    /// Writes `buckets`, one write each. A failure is logged: the figures
    /// are a summary, the deliveries' records are the truth (as a crash
    /// before this write loses its counts, and nothing else).
    async fn write_stats(&self, buckets: Buckets) {
        // A clone by name, as tests/infra reads the grants from the code.
        let stats = self.stats.clone();
        let Some(stats) = stats else {
            return;
        };
        join_all(
            buckets
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).expect("a time")
    }

    #[test]
    fn a_full_batch_waits_for_the_age_a_partial_one_does_not() {
        let five = Duration::from_secs(5);
        assert!(!due(at(0), at(4), five, 10));
        assert!(due(at(0), at(5), five, 10));
        assert!(due(at(0), at(0), five, 9));
        assert!(due(at(0), at(0), Duration::ZERO, 10));
        // A clock that went back counts as no time.
        assert!(!due(at(3), at(0), five, 10));
    }

    #[test]
    fn the_tally_is_taken_whole_or_not_at_all() {
        let t = Tally::default();
        let one = StatsDelta::attempt(1, webhooks_domain::DeliveryStatus::Delivered, Some(200), 3);
        assert!(t.take_if(|_| true).is_empty());
        t.add("ep_a", at(0), &one, at(1));
        t.add("ep_a", at(0), &one, at(2));
        t.add("ep_b", at(0), &one, at(3));
        assert!(
            t.take_if(|since| since > at(1)).is_empty(),
            "the oldest is at 1"
        );
        let taken = t.take_if(|since| since == at(1));
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&("ep_a".to_string(), at(0))].delivered, 2);
        // Empty again, its age with it.
        assert!(t.take_if(|_| true).is_empty());
        t.add("ep_a", at(0), &one, at(9));
        assert!(t.take_if(|since| since == at(9)).len() == 1);
    }
}
