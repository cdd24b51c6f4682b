//! An endpoint's health over a window: counts by outcome, failed attempts,
//! success rate and attempt latency percentiles (CONTRACT section 10).

use crate::delivery::{Delivery, DeliveryStatus};
use serde::Serialize;

/// Latency percentiles of the attempts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

/// The figures of `GET /v1/endpoints/{id}/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStats {
    pub delivered: u64,
    pub dead_lettered: u64,
    pub pending: u64,
    /// Attempts that did not get a 2xx (an error or another status).
    pub failed_attempts: u64,
    /// Delivered among the deliveries that finished (delivered or
    /// dead-lettered); `None` while none has.
    pub success_rate: Option<f64>,
    pub latency_ms: Latency,
}

impl EndpointStats {
    /// The figures of `deliveries` (canceled ones count in none).
    pub fn of<'a>(deliveries: impl IntoIterator<Item = &'a Delivery>) -> Self {
        let (mut delivered, mut dead_lettered, mut pending, mut failed_attempts) = (0, 0, 0, 0);
        let mut latencies = Vec::new();
        for d in deliveries {
            match d.status {
                DeliveryStatus::Delivered => delivered += 1,
                DeliveryStatus::DeadLettered => dead_lettered += 1,
                DeliveryStatus::Pending => pending += 1,
                DeliveryStatus::Canceled => {}
            }
            for a in &d.attempts {
                latencies.push(a.latency_ms);
                if !a.status_code.is_some_and(|s| (200..300).contains(&s)) {
                    failed_attempts += 1;
                }
            }
        }
        latencies.sort_unstable();
        let finished = delivered + dead_lettered;
        EndpointStats {
            delivered,
            dead_lettered,
            pending,
            failed_attempts,
            success_rate: (finished > 0).then(|| delivered as f64 / finished as f64),
            latency_ms: Latency {
                p50: percentile(&latencies, 50),
                p95: percentile(&latencies, 95),
            },
        }
    }
}

/// Upper bounds (ms) of the attempt-latency bins of the precomputed
/// figures; one more bin holds everything slower. A percentile read from
/// them is the upper bound of the bin it falls in (at most about 1.5 times
/// the true value).
pub const LATENCY_BINS_MS: [u64; 21] = [
    5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500,
    10_000, 15_000, 30_000,
];

/// The bin of an attempt's latency: an index into [`LATENCY_BINS_MS`], or its
/// length for the slowest.
pub fn latency_bin(ms: u64) -> usize {
    LATENCY_BINS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(LATENCY_BINS_MS.len())
}

/// The hour whose bucket counts a delivery: its creation time, cut to the hour.
pub fn bucket_hour(created_at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    created_at
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or(created_at)
}

/// What one write adds to the hourly bucket of a delivery's creation hour:
/// counts that may go down (a delivery leaves `pending`) and the attempts.
/// Deltas of one bucket add up ([`StatsDelta::merge`]), so a sender writes
/// each bucket once per batch, not once per attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    pub delivered: i64,
    pub dead_lettered: i64,
    pub pending: i64,
    pub failed_attempts: i64,
    /// Attempts per latency bin (empty when the write records none).
    pub latency: Vec<u64>,
}

impl StatsDelta {
    /// A delivery leaving `from` for `to` (`None`: counted in no status). A
    /// delivery counts as pending once it has an attempt.
    pub fn moved(from: Option<DeliveryStatus>, to: Option<DeliveryStatus>) -> StatsDelta {
        let mut d = StatsDelta::default();
        for (status, n) in [(from, -1), (to, 1)] {
            match status {
                Some(DeliveryStatus::Delivered) => d.delivered += n,
                Some(DeliveryStatus::DeadLettered) => d.dead_lettered += n,
                Some(DeliveryStatus::Pending) => d.pending += n,
                Some(DeliveryStatus::Canceled) | None => {}
            }
        }
        d
    }

    /// Attempt `number` recorded, leaving its delivery `to`: it was pending
    /// (counted from its first attempt on) or, for the first, not yet counted.
    pub fn attempt(
        number: u32,
        to: DeliveryStatus,
        status_code: Option<u16>,
        latency_ms: u64,
    ) -> StatsDelta {
        let from = (number > 1).then_some(DeliveryStatus::Pending);
        let mut latency = vec![0; latency_bin(latency_ms) + 1];
        if let Some(last) = latency.last_mut() {
            *last = 1;
        }
        StatsDelta {
            failed_attempts: i64::from(!status_code.is_some_and(|s| (200..300).contains(&s))),
            latency,
            ..StatsDelta::moved(from, Some(to))
        }
    }

    /// Adds `other` to this delta: one write of the sum counts as both.
    pub fn merge(&mut self, other: &StatsDelta) {
        self.delivered += other.delivered;
        self.dead_lettered += other.dead_lettered;
        self.pending += other.pending;
        self.failed_attempts += other.failed_attempts;
        add_bins(&mut self.latency, &other.latency);
    }

    /// Whether adding this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.delivered == 0
            && self.dead_lettered == 0
            && self.pending == 0
            && self.failed_attempts == 0
            && self.latency.iter().all(|n| *n == 0)
    }
}

fn add_bins(into: &mut Vec<u64>, bins: &[u64]) {
    if into.len() < bins.len() {
        into.resize(bins.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(bins) {
        *a += b;
    }
}

/// One endpoint's hour: the sums of every delta of the deliveries created in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourBucket {
    pub hour: chrono::DateTime<chrono::Utc>,
    pub delivered: i64,
    pub dead_lettered: i64,
    pub pending: i64,
    pub failed_attempts: i64,
    /// Attempts per latency bin (`LATENCY_BINS_MS.len() + 1` entries).
    pub latency: Vec<u64>,
}

impl HourBucket {
    /// Adds a delta (what the stores do, atomically, per write).
    pub fn add(&mut self, d: &StatsDelta) {
        self.delivered += d.delivered;
        self.dead_lettered += d.dead_lettered;
        self.pending += d.pending;
        self.failed_attempts += d.failed_attempts;
        add_bins(&mut self.latency, &d.latency);
    }
}

impl EndpointStats {
    /// The figures of hourly buckets (precomputed; no delivery is read).
    pub fn from_buckets(buckets: &[HourBucket]) -> Self {
        let sum = |f: fn(&HourBucket) -> i64| {
            u64::try_from(buckets.iter().map(f).sum::<i64>().max(0)).unwrap_or(0)
        };
        let (delivered, dead_lettered) = (sum(|b| b.delivered), sum(|b| b.dead_lettered));
        let mut bins = vec![0u64; LATENCY_BINS_MS.len() + 1];
        for b in buckets {
            for (i, n) in b.latency.iter().enumerate() {
                if let Some(slot) = bins.get_mut(i) {
                    *slot += n;
                }
            }
        }
        let finished = delivered + dead_lettered;
        EndpointStats {
            delivered,
            dead_lettered,
            pending: sum(|b| b.pending),
            failed_attempts: sum(|b| b.failed_attempts),
            success_rate: (finished > 0).then(|| delivered as f64 / finished as f64),
            latency_ms: Latency {
                p50: bin_percentile(&bins, 50),
                p95: bin_percentile(&bins, 95),
            },
        }
    }
}

/// The nearest-rank percentile of binned values: the upper bound of the bin
/// holding that rank (the slowest bin answers its lower bound).
fn bin_percentile(bins: &[u64], p: u64) -> Option<u64> {
    let total: u64 = bins.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (p * total).div_ceil(100).max(1);
    let mut seen = 0;
    for (i, n) in bins.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BINS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BINS_MS[LATENCY_BINS_MS.len() - 1]),
            );
        }
    }
    None
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Attempt;
    use crate::EventType;
    use chrono::Utc;

    fn delivery(status: DeliveryStatus, attempts: &[(Option<u16>, u64)]) -> Delivery {
        let ep = crate::ids::new_id("ep");
        let evt = crate::ids::new_id("evt");
        let mut d = Delivery::new("org", &ep, &evt, EventType::LeadWon);
        d.status = status;
        d.attempts = attempts
            .iter()
            .enumerate()
            .map(|(i, (code, ms))| Attempt {
                number: i as u32 + 1,
                at: Utc::now(),
                status_code: *code,
                error: code.is_none().then(|| "timeout".to_string()),
                latency_ms: *ms,
                response_body: None,
            })
            .collect();
        d
    }

    #[test]
    fn figures_of_a_known_run() {
        let ds = [
            delivery(DeliveryStatus::Delivered, &[(Some(200), 10)]),
            delivery(
                DeliveryStatus::Delivered,
                &[(Some(500), 30), (Some(204), 20)],
            ),
            delivery(DeliveryStatus::Delivered, &[(Some(201), 40)]),
            delivery(
                DeliveryStatus::DeadLettered,
                &[(None, 15_000), (Some(410), 50)],
            ),
            delivery(DeliveryStatus::Pending, &[]),
            delivery(DeliveryStatus::Canceled, &[]),
        ];
        let s = EndpointStats::of(&ds);
        assert_eq!((s.delivered, s.dead_lettered, s.pending), (3, 1, 1));
        assert_eq!(s.failed_attempts, 3);
        assert_eq!(s.success_rate, Some(0.75));
        // Latencies 10 20 30 40 50 15000: p50 is the 3rd, p95 the 6th.
        assert_eq!(s.latency_ms.p50, Some(30));
        assert_eq!(s.latency_ms.p95, Some(15_000));
    }

    #[test]
    fn buckets_kept_by_the_writes_give_the_figures_of_the_deliveries() {
        // The known run of `figures_of_a_known_run`, as its writes count it.
        let mut b = HourBucket::default();
        let run: [&[(Option<u16>, u64, DeliveryStatus)]; 4] = [
            &[(Some(200), 10, DeliveryStatus::Delivered)],
            &[
                (Some(500), 30, DeliveryStatus::Pending),
                (Some(204), 20, DeliveryStatus::Delivered),
            ],
            &[(Some(201), 40, DeliveryStatus::Delivered)],
            &[
                (None, 15_000, DeliveryStatus::Pending),
                (Some(410), 50, DeliveryStatus::DeadLettered),
            ],
        ];
        for attempts in run {
            for (i, (code, ms, to)) in attempts.iter().enumerate() {
                b.add(&StatsDelta::attempt(i as u32 + 1, *to, *code, *ms));
            }
        }
        // A fifth delivery, attempted once and still pending.
        b.add(&StatsDelta::attempt(
            1,
            DeliveryStatus::Pending,
            Some(503),
            5,
        ));
        let s = EndpointStats::from_buckets(&[b.clone()]);
        assert_eq!((s.delivered, s.dead_lettered, s.pending), (3, 1, 1));
        assert_eq!(s.failed_attempts, 4);
        assert_eq!(s.success_rate, Some(0.75));
        // Latencies 5 10 20 30 40 50 15000: p50 the 4th (30), p95 the 7th (15 000).
        assert_eq!(s.latency_ms.p50, Some(30));
        assert_eq!(s.latency_ms.p95, Some(15_000));
        // Retried by hand: dead-lettered -> pending.
        b.add(&StatsDelta::moved(
            Some(DeliveryStatus::DeadLettered),
            Some(DeliveryStatus::Pending),
        ));
        let s = EndpointStats::from_buckets(&[b]);
        assert_eq!((s.delivered, s.dead_lettered, s.pending), (3, 0, 2));
        assert_eq!(EndpointStats::from_buckets(&[]).success_rate, None);
    }

    #[test]
    fn merged_deltas_add_up_to_the_writes_they_replace() {
        let deltas = [
            StatsDelta::attempt(1, DeliveryStatus::Delivered, Some(200), 3),
            StatsDelta::attempt(1, DeliveryStatus::Pending, Some(500), 40),
            StatsDelta::attempt(2, DeliveryStatus::Delivered, Some(204), 3),
            StatsDelta::attempt(1, DeliveryStatus::DeadLettered, None, 30_001),
        ];
        let mut one_by_one = HourBucket::default();
        let mut merged = StatsDelta::default();
        assert!(merged.is_empty());
        for d in &deltas {
            one_by_one.add(d);
            merged.merge(d);
        }
        assert!(!merged.is_empty());
        let mut at_once = HourBucket::default();
        at_once.add(&merged);
        assert_eq!(at_once, one_by_one);
        assert_eq!(
            (at_once.delivered, at_once.pending, at_once.dead_lettered),
            (2, 0, 1)
        );
        assert_eq!(at_once.failed_attempts, 2);
        assert_eq!(at_once.latency[0], 2);
        assert_eq!(at_once.latency[LATENCY_BINS_MS.len()], 1);
        assert_eq!(at_once.latency.iter().sum::<u64>(), 4);
    }

    #[test]
    fn latency_bins_and_hours() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(5), 0);
        assert_eq!(latency_bin(6), 1);
        assert_eq!(latency_bin(30_001), LATENCY_BINS_MS.len());
        let t = crate::time::parse_rfc3339("2026-11-27T06:59:59Z").unwrap();
        assert_eq!(crate::time::rfc3339(bucket_hour(t)), "2026-11-27T06:00:00Z");
    }

    #[test]
    fn no_deliveries_no_rate_and_no_latency() {
        let s = EndpointStats::of(&[]);
        assert_eq!(s.success_rate, None);
        assert_eq!(
            s.latency_ms,
            Latency {
                p50: None,
                p95: None
            }
        );
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"delivered":0,"dead_lettered":0,"pending":0,"failed_attempts":0,
                "success_rate":null,"latency_ms":{"p50":null,"p95":null}})
        );
    }
}
