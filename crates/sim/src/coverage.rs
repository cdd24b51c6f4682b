//! How often each rare path ran, so that a green run also says what it
//! exercised (as TigerBeetle's VOPR and FoundationDB's simulator count
//! theirs). Counted where each happens, from the outside: the queue's
//! watch, the store and queue taps, and the world's own stand-ins for AWS;
//! nothing in the pipeline counts for the simulation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A rare path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// SQS moved a message to the dead-letter queue after its last receive.
    SqsRedrive,
    /// SQS deleted a message at the end of its retention.
    QueueRetention,
    /// The sender renewed a worn message (sent it again as a new one).
    Renew,
    /// The sender created the delivery of a message that arrived first.
    Adopt,
    /// A first attempt's outcome created the record of a delivery the
    /// stream's fan-out noted (the common path, counted to show it ran).
    NotedFirst,
    /// The reconciler queued a lost message again.
    ReconcilerRequeue,
    /// A lease taken over once the holder's had run out without a record
    /// (its invocation crashed, or its record failed).
    LeaseTakeover,
    /// A lease taken by another message than the chain's, the chain being
    /// lost.
    ChainTakeover,
    /// A message back before its delivery was due, hidden again: a retry
    /// delay longer than SQS can hide a message at once.
    Hop12h,
    /// A delete or visibility change through a stale receipt.
    StaleReceipt,
    /// SQS handed a message out again while its first receiver had it.
    SqsDuplicate,
    /// The event source mapping failed to delete a finished message.
    EsmDeleteFailed,
    /// A batch waited long (over 10 s) between its receipt and its
    /// handler's start.
    SlowHandlerStart,
    /// An event's write committed long after its id was made (a replay).
    LateCommit,
    /// The pending index did not show a delivery's write yet.
    IndexLagMissed,
    /// The pending index showed an entry the table had moved.
    IndexLagStale,
    /// A retry delayed by a `Retry-After` longer than its schedule.
    RetryAfterHonoured,
    /// A delivery dead-lettered after a 410.
    Gone410,
    /// A delivery dead-lettered after its whole schedule.
    Exhausted,
    /// A sweep that ran out of its invocation's time.
    SweepCutShort,
    /// A renewal handed its delivery's chain to the copy.
    HandOver,
    /// Two receipts of one message at once both POSTed its first attempt
    /// (the one extra POST the promise allows).
    TwinFirstPost,
    /// A first attempt made without a lease was recorded on a delivery
    /// canceled while it was made.
    CanceledDuringFirst,
    /// A fan-out's confirming read found one of its noted deliveries in
    /// another fan-out's note too (two fan-outs of overlapping batches at
    /// once), counted per delivery.
    ContestedNote,
}

impl Path {
    pub const ALL: [Path; 24] = [
        Path::SqsRedrive,
        Path::QueueRetention,
        Path::Renew,
        Path::Adopt,
        Path::NotedFirst,
        Path::ReconcilerRequeue,
        Path::LeaseTakeover,
        Path::ChainTakeover,
        Path::Hop12h,
        Path::StaleReceipt,
        Path::SqsDuplicate,
        Path::EsmDeleteFailed,
        Path::SlowHandlerStart,
        Path::LateCommit,
        Path::IndexLagMissed,
        Path::IndexLagStale,
        Path::RetryAfterHonoured,
        Path::Gone410,
        Path::Exhausted,
        Path::SweepCutShort,
        Path::HandOver,
        Path::TwinFirstPost,
        Path::CanceledDuringFirst,
        Path::ContestedNote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Path::SqsRedrive => "sqs-redrive",
            Path::QueueRetention => "queue-retention",
            Path::Renew => "renew",
            Path::Adopt => "adopt",
            Path::NotedFirst => "noted-first",
            Path::ReconcilerRequeue => "reconciler-requeue",
            Path::LeaseTakeover => "lease-takeover",
            Path::ChainTakeover => "chain-takeover",
            Path::Hop12h => "12h-hop",
            Path::StaleReceipt => "stale-receipt",
            Path::SqsDuplicate => "sqs-duplicate",
            Path::EsmDeleteFailed => "esm-delete-failed",
            Path::SlowHandlerStart => "slow-handler-start",
            Path::LateCommit => "late-commit",
            Path::IndexLagMissed => "index-lag-missed",
            Path::IndexLagStale => "index-lag-stale",
            Path::RetryAfterHonoured => "retry-after",
            Path::Gone410 => "dead-letter-410",
            Path::Exhausted => "dead-letter-exhausted",
            Path::SweepCutShort => "sweep-cut-short",
            Path::HandOver => "hand-over",
            Path::TwinFirstPost => "twin-first-post",
            Path::CanceledDuringFirst => "canceled-during-first",
            Path::ContestedNote => "contested-note",
        }
    }

    /// The paths every test run must reach at least once over its seeds.
    /// Queue retention is not among them: no message waits 14 days in a
    /// run (counted, for a longer one), nor are the races of one message
    /// received twice at once with a renewal or a delete (counted), nor
    /// two fan-outs of overlapping batches at once (a duplicate hand-over
    /// during a bisected retry; counted).
    pub fn required(self) -> bool {
        !matches!(
            self,
            Path::QueueRetention
                | Path::TwinFirstPost
                | Path::CanceledDuringFirst
                | Path::ContestedNote
        )
    }
}

/// The counters of one run, shared by everything that counts.
#[derive(Clone, Default)]
pub struct Coverage(Arc<[AtomicU64; Path::ALL.len()]>);

impl Coverage {
    pub fn add(&self, path: Path) {
        self.add_n(path, 1);
    }

    pub fn add_n(&self, path: Path, n: u64) {
        self.0[path as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Each path's count.
    pub fn counts(&self) -> Counts {
        Counts(
            Path::ALL
                .iter()
                .map(|p| self.0[*p as usize].load(Ordering::Relaxed))
                .collect(),
        )
    }
}

/// Counts by path, in [`Path::ALL`]'s order; summed over runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(Vec<u64>);

impl Default for Counts {
    fn default() -> Self {
        Counts(vec![0; Path::ALL.len()])
    }
}

impl Counts {
    pub fn get(&self, path: Path) -> u64 {
        self.0.get(path as usize).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The required paths never reached.
    pub fn missing(&self) -> Vec<Path> {
        Path::ALL
            .into_iter()
            .filter(|p| p.required() && self.get(*p) == 0)
            .collect()
    }

    /// `renew 3, adopt 12, ...`, every path.
    pub fn summary(&self) -> String {
        Path::ALL
            .iter()
            .map(|p| format!("{} {}", p.as_str(), self.get(*p)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
