//! The pipeline's figures: deliveries by outcome, attempt latency and dead
//! letters by cause. In Lambda each is one CloudWatch embedded-metric-format
//! line on stdout (CloudWatch Logs turns it into metrics; no API call);
//! `webhooks dev` tallies them for its one-line summary. Dimensions are low
//! cardinality only (an outcome or a cause, never an org or an endpoint).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The CloudWatch namespace of every metric (the template's alarms and
/// dashboard name it too).
pub const NAMESPACE: &str = "DevSphereWebhooks";

/// Why a message went to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeadLetterCause {
    /// The receiver's doing: the schedule ran out, or it answered 410.
    Customer,
    /// The system's: a message that is no delivery task, names no delivery,
    /// or an operational notice the operator's webhook never took.
    Poison,
    /// The system's too: a delivery whose message SQS redrove twice (the
    /// sender could not get through it in 30 receives, twice), ended by the
    /// sweeper's redrive net (`redrive`).
    Redriven,
}

impl DeadLetterCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterCause::Customer => "customer",
            DeadLetterCause::Poison => "poison",
            DeadLetterCause::Redriven => "redriven",
        }
    }
}

/// What the dev summary counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Attempts by outcome (`delivered`, `retry`, `dead_lettered`).
    pub attempts: BTreeMap<&'static str, u64>,
    /// Dead letters by cause.
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// Every attempt's latency, for the percentiles (cleared by [`Tally::take`]).
    pub latencies_ms: Vec<u64>,
    /// Each first receipt's time on the queue.
    pub queue_ages_ms: Vec<u64>,
    /// Messages deferred by their endpoint's limits, by limit
    /// (`slow_lane`, `rate_limit`).
    pub deferrals: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// `attempts 12 (delivered 10, retry 2) · dead letters 0 · latency p50 8 ms p95 40 ms`
    pub fn summary(&self) -> String {
        let total: u64 = self.attempts.values().sum();
        let by = |m: &BTreeMap<&'static str, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let dead: u64 = self.dead_letters.values().sum();
        let pct = |values: &[u64], p: usize| {
            let mut l = values.to_vec();
            l.sort_unstable();
            l.get((l.len().saturating_sub(1)) * p / 100)
                .map_or("-".to_string(), |v| format!("{v} ms"))
        };
        format!(
            "stats: attempts {total} ({}) · dead letters {dead} ({}) · latency p50 {} p95 {} · queue age p95 {}",
            by(&self.attempts),
            by(&self.dead_letters),
            pct(&self.latencies_ms, 50),
            pct(&self.latencies_ms, 95),
            pct(&self.queue_ages_ms, 95),
        ) + &if self.deferrals.is_empty() {
            String::new()
        } else {
            format!(" · deferred ({})", by(&self.deferrals))
        }
    }
}

/// Where the figures go.
#[derive(Clone, Default)]
pub enum Metrics {
    /// Nowhere (tests, and `webhooks dev` without `--stats-every`).
    #[default]
    Off,
    /// One EMF line per figure on stdout (Lambda).
    Emf,
    /// Counted in memory (`webhooks dev --stats-every`).
    Tally(Arc<Mutex<Tally>>),
}

impl Metrics {
    /// One attempt, its outcome and latency.
    pub fn attempt(&self, outcome: &'static str, latency_ms: u64) {
        match self {
            Metrics::Off => {}
            Metrics::Emf => println!(
                "{}",
                emf(
                    &[("Outcome", outcome)],
                    &[
                        ("Attempts", "Count", 1),
                        ("AttemptLatency", "Milliseconds", latency_ms)
                    ]
                )
            ),
            Metrics::Tally(t) => {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                *t.attempts.entry(outcome).or_default() += 1;
                t.latencies_ms.push(latency_ms);
            }
        }
    }

    /// A message deferred, without an attempt, by its endpoint's `limit`.
    pub fn deferred(&self, limit: &'static str) {
        match self {
            Metrics::Off => {}
            Metrics::Emf => println!("{}", emf(&[("Limit", limit)], &[("Deferrals", "Count", 1)])),
            Metrics::Tally(t) => {
                *t.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .deferrals
                    .entry(limit)
                    .or_default() += 1;
            }
        }
    }

    /// How long a message waited on the queue before its first receipt.
    pub fn queue_age(&self, age: std::time::Duration) {
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        match self {
            Metrics::Off => {}
            Metrics::Emf => println!("{}", emf(&[], &[("QueueAgeAtReceipt", "Milliseconds", ms)])),
            Metrics::Tally(t) => t
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .queue_ages_ms
                .push(ms),
        }
    }

    /// One message sent to the dead-letter queue.
    pub fn dead_letter(&self, cause: DeadLetterCause) {
        match self {
            Metrics::Off => {}
            Metrics::Emf => println!(
                "{}",
                emf(&[("Cause", cause.as_str())], &[("DeadLetters", "Count", 1)])
            ),
            Metrics::Tally(t) => {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                *t.dead_letters.entry(cause.as_str()).or_default() += 1;
            }
        }
    }

    /// The figures counted since the last call (a `Tally` only).
    pub fn take(&self) -> Option<Tally> {
        match self {
            Metrics::Tally(t) => Some(std::mem::take(
                &mut *t.lock().unwrap_or_else(|p| p.into_inner()),
            )),
            _ => None,
        }
    }
}

/// One EMF line: the dimensions (name, value) and metrics (name, unit, value).
pub fn emf(dimensions: &[(&str, &str)], metrics: &[(&str, &str, u64)]) -> String {
    let mut line = serde_json::Map::new();
    let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let defs: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    line.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": defs,
            }],
        }),
    );
    for (k, v) in dimensions {
        line.insert((*k).into(), (*v).into());
    }
    for (name, _, value) in metrics {
        line.insert((*name).into(), (*value).into());
    }
    serde_json::Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_its_namespace_dimensions_and_metrics() {
        let line = emf(
            &[("Outcome", "delivered")],
            &[
                ("Attempts", "Count", 1),
                ("AttemptLatency", "Milliseconds", 42),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let def = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(def["Namespace"], NAMESPACE);
        assert_eq!(def["Dimensions"], serde_json::json!([["Outcome"]]));
        assert_eq!(def["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(v["Outcome"], "delivered");
        assert_eq!(v["Attempts"], 1);
        assert_eq!(v["AttemptLatency"], 42);
        assert!(v["_aws"]["Timestamp"].as_i64().unwrap() > 0);
    }

    #[test]
    fn a_tally_sums_up_in_one_line_and_starts_afresh() {
        let m = Metrics::Tally(Arc::default());
        m.attempt("delivered", 10);
        m.attempt("delivered", 30);
        m.attempt("retry", 20);
        m.dead_letter(DeadLetterCause::Customer);
        let t = m.take().unwrap();
        assert!(t.queue_ages_ms.is_empty());
        assert_eq!(
            t.summary(),
            "stats: attempts 3 (delivered 2, retry 1) · dead letters 1 (customer 1) · latency p50 20 ms p95 20 ms · queue age p95 -"
        );
        assert_eq!(m.take().unwrap(), Tally::default());
        m.queue_age(std::time::Duration::from_millis(7));
        assert!(m.take().unwrap().summary().ends_with("queue age p95 7 ms"));
    }

    #[test]
    fn a_dimensionless_emf_line_declares_an_empty_dimension_set() {
        let v: serde_json::Value =
            serde_json::from_str(&emf(&[], &[("QueueAgeAtReceipt", "Milliseconds", 3)])).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([[]])
        );
        assert_eq!(v["QueueAgeAtReceipt"], 3);
    }
}
