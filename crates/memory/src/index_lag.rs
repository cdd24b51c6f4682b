//! A global secondary index as DynamoDB keeps one: updated asynchronously
//! after each write to its table, so a query may miss a write made a
//! moment ago, or still show an entry the table has since moved or
//! removed. Usually the lag is a fraction of a second; now and then (a
//! throttled index, a busy partition) it is much longer. Off by default;
//! a simulation turns it on for the `pending-by-org` index.

use crate::chance::Chance;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Duration;

/// How far behind its table the index runs.
#[derive(Debug, Clone)]
pub struct IndexLag {
    /// Every write reaches the index within this long...
    pub usual: Duration,
    /// ... but this share of them, which take up to `longest`.
    pub slow_rate: f64,
    pub longest: Duration,
    /// Seeds the draws, so that a simulation replays exactly.
    pub seed: u64,
}

/// An entry of the index: (org, next attempt, delivery id).
pub type Key = (String, DateTime<Utc>, String);

/// A write on its way to the index: the entry it removes, the one it adds.
type Move = (Option<Key>, Option<Key>);

/// What a query of the lagging index showed that the table did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagSeen {
    /// Deliveries the index did not show yet (their write had not reached
    /// it), with when.
    pub missed: Vec<(String, DateTime<Utc>)>,
    /// Entries shown that the table had moved or removed.
    pub stale: usize,
}

/// The index as queries see it, and the writes on their way to it.
pub struct LaggingIndex {
    lag: IndexLag,
    chance: Chance,
    view: BTreeSet<Key>,
    /// (arrives at, order) -> (remove, insert).
    in_transit: BTreeMap<(DateTime<Utc>, u64), Move>,
    /// When each delivery's latest write arrives: a later write of the
    /// same item never overtakes it.
    arrives: HashMap<String, DateTime<Utc>>,
    order: u64,
    seen: LagSeen,
}

impl LaggingIndex {
    pub fn new(lag: IndexLag) -> Self {
        LaggingIndex {
            chance: Chance::new(lag.seed),
            lag,
            view: BTreeSet::new(),
            in_transit: BTreeMap::new(),
            arrives: HashMap::new(),
            order: 0,
            seen: LagSeen::default(),
        }
    }

    /// The table moved delivery `id`'s entry from `old` to `new` at `now`.
    pub fn write(&mut self, id: &str, old: Option<Key>, new: Option<Key>, now: DateTime<Utc>) {
        let lag = if self.chance.one_in(self.lag.slow_rate) {
            self.lag.longest.mul_f64(self.chance.unit())
        } else {
            self.lag.usual.mul_f64(self.chance.unit())
        };
        let mut at = now + chrono::Duration::from_std(lag).unwrap_or_default();
        if let Some(previous) = self.arrives.get(id) {
            at = at.max(*previous);
        }
        self.arrives.insert(id.to_string(), at);
        self.order += 1;
        self.in_transit.insert((at, self.order), (old, new));
    }

    /// The writes that have reached the index by `now`.
    fn arrive(&mut self, now: DateTime<Utc>) {
        while let Some(entry) = self.in_transit.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, (old, new)) = entry.remove_entry();
            if let Some(old) = old {
                self.view.remove(&old);
            }
            if let Some(new) = new {
                self.view.insert(new);
            }
        }
        self.arrives.retain(|_, at| *at > now);
    }

    /// The ids of the entries in `from..to` as a query at `now` sees them,
    /// at most `limit`; `table` holds the entries the table says are in
    /// range.
    pub fn query(
        &mut self,
        from: &Key,
        to: &Key,
        limit: usize,
        table: &BTreeSet<Key>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let range = (Bound::Included(from.clone()), Bound::Excluded(to.clone()));
        self.query_keys(range, limit, table, now)
            .into_iter()
            .map(|k| k.2)
            .collect()
    }

    /// The entries in `range` as a query at `now` sees them, at most
    /// `limit`, in key order; `table` holds the entries the table says are
    /// in range.
    pub fn query_keys(
        &mut self,
        range: (Bound<Key>, Bound<Key>),
        limit: usize,
        table: &BTreeSet<Key>,
        now: DateTime<Utc>,
    ) -> Vec<Key> {
        self.arrive(now);
        let shown: Vec<&Key> = self.view.range(range.clone()).collect();
        self.seen.stale += shown.iter().filter(|k| !table.contains(*k)).count();
        for key in table.range(range) {
            if !self.view.contains(key) {
                self.seen.missed.push((key.2.clone(), now));
            }
        }
        shown.into_iter().take(limit).cloned().collect()
    }

    /// What the queries since the last call showed that the table did not.
    pub fn take_seen(&mut self) -> LagSeen {
        std::mem::take(&mut self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, at: DateTime<Utc>) -> Key {
        ("org".into(), at, id.into())
    }

    #[test]
    fn a_query_misses_a_write_until_it_arrives_and_shows_what_moved() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let secs = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut index = LaggingIndex::new(IndexLag {
            usual: Duration::ZERO,
            slow_rate: 1.0,
            longest: Duration::from_secs(10),
            seed: 1,
        });
        let (from, to) = (key("", DateTime::<Utc>::MIN_UTC), key("", secs(1000)));
        let mut table = BTreeSet::new();
        table.insert(key("a", secs(0)));
        index.write("a", None, Some(key("a", secs(0))), t0);
        assert!(index.query(&from, &to, 10, &table, t0).is_empty());
        assert_eq!(index.take_seen().missed, [("a".to_string(), t0)]);
        assert_eq!(index.query(&from, &to, 10, &table, secs(10)), ["a"]);
        // Rescheduled beyond the range: shown until the move arrives.
        table.clear();
        index.write(
            "a",
            Some(key("a", secs(0))),
            Some(key("a", secs(2000))),
            secs(10),
        );
        assert_eq!(index.query(&from, &to, 10, &table, secs(10)), ["a"]);
        assert_eq!(index.take_seen().stale, 1);
        assert!(index.query(&from, &to, 10, &table, secs(20)).is_empty());
    }
}
