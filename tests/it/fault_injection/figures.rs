//! What a run found: the figures, printed, added to
//! `target/fault-injection.json`, and checked.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use webhooks_memory::sync::lock;

/// Everything a run counted.
#[derive(Debug, Default)]
pub(super) struct Figures {
    pub(super) scenario: String,
    pub(super) seed: u64,
    pub(super) events: usize,
    pub(super) endpoints: usize,
    pub(super) deliveries_expected: usize,
    pub(super) delivery_records: usize,
    pub(super) delivered: usize,
    pub(super) dead_lettered: usize,
    pub(super) lost: Vec<String>,
    pub(super) unexpected_records: usize,
    pub(super) dead_lettered_without_error: usize,
    pub(super) delivered_never_accepted: usize,
    pub(super) requests: usize,
    pub(super) bad_signatures: usize,
    pub(super) unknown_requests: usize,
    pub(super) extra_requests: usize,
    pub(super) duplicates: usize,
    pub(super) pairs_with_duplicates: usize,
    pub(super) attempts_recorded: usize,
    pub(super) faults: BTreeMap<&'static str, u64>,
    pub(super) faults_total: u64,
    pub(super) quiescent_under_faults: bool,
    pub(super) quiescent: bool,
    pub(super) storm_secs: f64,
    pub(super) total_secs: f64,
    /// Messages left in the delivery queue, visible or not, at the end:
    /// what keeps a run whose deliveries all finished from settling.
    pub(super) delivery_queue_depth: usize,
    pub(super) dead_letter_queue_depth: usize,
}

impl Figures {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "seed": self.seed,
            "events": self.events,
            "endpoints": self.endpoints,
            "deliveries_pushed": self.deliveries_expected,
            "delivery_records": self.delivery_records,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost.len(),
            "lost_examples": self.lost.iter().take(10).collect::<Vec<_>>(),
            "unexpected_records": self.unexpected_records,
            "dead_lettered_without_error": self.dead_lettered_without_error,
            "delivered_never_accepted": self.delivered_never_accepted,
            "receiver_requests": self.requests,
            "bad_signatures": self.bad_signatures,
            "requests_for_unknown_pairs": self.unknown_requests,
            "requests_beyond_first_per_pair": self.extra_requests,
            "duplicates": self.duplicates,
            "pairs_with_duplicates": self.pairs_with_duplicates,
            "attempts_recorded": self.attempts_recorded,
            "faults_injected": self.faults,
            "faults_injected_total": self.faults_total,
            "quiescent_with_faults_on": self.quiescent_under_faults,
            "quiescent": self.quiescent,
            "storm_seconds": (self.storm_secs * 10.0).round() / 10.0,
            "total_seconds": (self.total_secs * 10.0).round() / 10.0,
            "delivery_queue_messages": self.delivery_queue_depth,
            "dead_letter_queue_messages": self.dead_letter_queue_depth,
        })
    }

    fn print(&self) {
        println!(
            "== fault injection: {} (seed {:#x}) ==",
            self.scenario, self.seed
        );
        println!(
            "deliveries pushed: {} ({} events x endpoints), records: {}, delivered: {}, dead-lettered: {}",
            self.deliveries_expected, self.events, self.delivery_records, self.delivered, self.dead_lettered
        );
        println!(
            "lost: {}   duplicates (2xx accepted again for the same endpoint+webhook-id): {} over {} pairs",
            self.lost.len(),
            self.duplicates,
            self.pairs_with_duplicates
        );
        println!(
            "receiver requests: {} ({} beyond the first per endpoint+webhook-id), attempts recorded: {}, bad signatures: {}",
            self.requests, self.extra_requests, self.attempts_recorded, self.bad_signatures
        );
        println!("faults injected: {} in all", self.faults_total);
        for (k, v) in &self.faults {
            println!("  {k:<45} {v}");
        }
        println!(
            "quiescent with faults on: {}, quiescent: {}, storm {:.1} s, total {:.1} s, queue messages: {}, DLQ messages: {}",
            self.quiescent_under_faults, self.quiescent, self.storm_secs, self.total_secs, self.delivery_queue_depth, self.dead_letter_queue_depth
        );
    }

    /// Adds this run to `target/fault-injection.json` under its scenario name.
    fn save(&self) {
        static FILE: Mutex<()> = Mutex::new(());
        let _guard = lock(&FILE);
        let dir = std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("fault-injection.json");
        let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        all.insert(self.scenario.clone(), self.to_json());
        let text = serde_json::to_string_pretty(&all).expect("json");
        if let Err(e) = std::fs::write(&path, text) {
            println!("could not write {}: {e}", path.display());
        } else {
            println!("figures written to {}", path.display());
        }
    }

    fn assert_nothing_lost(&self) {
        assert!(
            self.lost.is_empty(),
            "{} (endpoint, event) pairs not delivered nor dead-lettered, e.g. {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
        assert_eq!(
            self.delivery_records, self.deliveries_expected,
            "one record per pair"
        );
        assert_eq!(
            self.unexpected_records, 0,
            "records for pairs that should not exist"
        );
        assert_eq!(
            self.dead_lettered_without_error, 0,
            "dead-lettered deliveries must keep their last error"
        );
        assert_eq!(
            self.delivered_never_accepted, 0,
            "a delivery marked delivered that the receiver never accepted"
        );
        assert_eq!(self.bad_signatures, 0, "every request is signed");
        assert_eq!(
            self.unknown_requests, 0,
            "requests to unsubscribed endpoints"
        );
        assert!(self.quiescent, "the pipeline never settled");
    }
}

/// Prints and saves the figures, then fails the test if anything was lost
/// or no fault was injected.
pub(super) fn print_and_check(f: Figures) {
    f.print();
    f.save();
    f.assert_nothing_lost();
    assert!(f.faults_total > 0, "no fault was injected");
}
