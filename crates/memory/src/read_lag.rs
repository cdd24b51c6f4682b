//! A table's eventually consistent reads as DynamoDB serves them: such a
//! read may not see a write of the moment before. Modelled for the one
//! miss that can change what a reader does: a record created a moment ago
//! is left out, as if not there yet. (A record updated a moment ago and
//! read as it was is not modelled: the one caller, the sender, decides
//! nothing on a record found without a conditional write that checks it.)
//! The lag of each creation is drawn as an index's is
//! ([`IndexLag`](crate::index_lag::IndexLag)). Off by default; a
//! simulation turns it on.

use crate::chance::Chance;
use crate::index_lag::IndexLag;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};

/// Creations that eventually consistent reads may not see yet.
pub(crate) struct LaggingReads {
    lag: IndexLag,
    chance: Chance,
    /// Each recent creation's id -> when reads see it.
    visible_at: HashMap<String, DateTime<Utc>>,
    /// The same, in creation order, for letting go of them.
    order: VecDeque<(DateTime<Utc>, String)>,
}

impl LaggingReads {
    pub fn new(lag: IndexLag) -> Self {
        LaggingReads {
            chance: Chance::new(lag.seed),
            lag,
            visible_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The record `id` was created at `now`.
    pub fn created(&mut self, id: &str, now: DateTime<Utc>) {
        let lag = if self.chance.one_in(self.lag.slow_rate) {
            self.lag.longest.mul_f64(self.chance.unit())
        } else {
            self.lag.usual.mul_f64(self.chance.unit())
        };
        let at = now + chrono::Duration::from_std(lag).unwrap_or_default();
        self.visible_at.insert(id.to_string(), at);
        self.order.push_back((at, id.to_string()));
        self.forget_seen(now);
    }

    /// Whether an eventually consistent read at `now` leaves `id` out.
    pub fn hides(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        self.forget_seen(now);
        self.visible_at.get(id).is_some_and(|at| *at > now)
    }

    /// Lets go of the oldest creations every read sees by `now` (those
    /// behind a slower one wait for it: the map stays small either way).
    fn forget_seen(&mut self, now: DateTime<Utc>) {
        while let Some((at, id)) = self.order.front() {
            if *at > now {
                break;
            }
            if self.visible_at.get(id) == Some(at) {
                self.visible_at.remove(id);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lag(usual_ms: u64) -> IndexLag {
        IndexLag {
            usual: Duration::from_millis(usual_ms),
            slow_rate: 0.0,
            longest: Duration::ZERO,
            seed: 3,
        }
    }

    #[test]
    fn a_creation_is_hidden_for_at_most_its_lag_and_then_forgotten() {
        let t0 = Utc::now();
        let mut reads = LaggingReads::new(lag(1000));
        reads.created("a", t0);
        let at = reads.visible_at["a"];
        assert!(at > t0 && at <= t0 + chrono::Duration::seconds(1), "{at}");
        assert!(reads.hides("a", t0));
        assert!(!reads.hides("b", t0), "never created here: read as it is");
        assert!(!reads.hides("a", at), "seen from its time on");
        assert!(reads.visible_at.is_empty() && reads.order.is_empty());
    }

    #[test]
    fn without_lag_nothing_is_hidden() {
        let t0 = Utc::now();
        let mut reads = LaggingReads::new(lag(0));
        reads.created("a", t0);
        assert!(!reads.hides("a", t0));
    }
}
