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
