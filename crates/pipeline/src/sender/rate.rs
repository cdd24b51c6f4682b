//! An endpoint's declared `rate_limit`, as the sender keeps it per process:
//! a token bucket promising each message over the rate the next free token.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// How long a deferred message's reserved token is kept for it.
const PROMISE_KEPT: chrono::Duration = chrono::Duration::minutes(10);

/// An endpoint's `rate_limit` as a token bucket holding a second's worth
/// of tokens (GCRA: the time the next token is due). A message over the
/// rate is promised the next free token, so it is sent when it comes back
/// rather than queued behind newer messages again.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u32,
    /// When the bucket is empty again if no token is taken.
    next_due: DateTime<Utc>,
    /// Deferred messages, and when their token is due.
    promised: HashMap<String, DateTime<Utc>>,
    last_pruned: DateTime<Utc>,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens a second.
    pub fn new(rate: u32, now: DateTime<Utc>) -> Self {
        TokenBucket {
            rate: rate.max(1),
            next_due: now,
            promised: HashMap::new(),
            last_pruned: now,
        }
    }

    /// The endpoint's rate changed.
    pub fn set_rate(&mut self, rate: u32) {
        self.rate = rate.max(1);
    }

    fn interval(&self) -> chrono::Duration {
        chrono::Duration::nanoseconds(1_000_000_000 / i64::from(self.rate))
    }

    /// Takes a token for `message_id` at `now`, or promises it the next
    /// free one and says how long until it is due.
    pub fn take(&mut self, message_id: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        if let Some(due) = self.promised.get(message_id).copied() {
            if due <= now {
                self.promised.remove(message_id);
                return Ok(());
            }
            return Err((due - now).to_std().unwrap_or_default());
        }
        if now - self.last_pruned > chrono::Duration::seconds(10) {
            self.promised.retain(|_, due| *due > now - PROMISE_KEPT);
            self.last_pruned = now;
        }
        let interval = self.interval();
        // A second's worth of tokens may go at once.
        let burst = interval * i32::try_from(self.rate - 1).unwrap_or(i32::MAX);
        let next_due = self.next_due.max(now);
        let due = next_due - burst;
        self.next_due = next_due + interval;
        if due <= now {
            Ok(())
        } else {
            self.promised.insert(message_id.to_string(), due);
            Err((due - now).to_std().unwrap_or_default())
        }
    }

    /// Drops a promise (its message was sent without it).
    pub fn forget(&mut self, message_id: &str) {
        self.promised.remove(message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    fn ms(n: i64) -> chrono::Duration {
        chrono::Duration::milliseconds(n)
    }

    #[test]
    fn a_bucket_lets_a_seconds_worth_through_then_one_per_interval() {
        let mut b = TokenBucket::new(4, t0());
        for i in 0..4 {
            assert_eq!(b.take(&format!("m{i}"), t0()), Ok(()), "{i}");
        }
        assert_eq!(b.take("m4", t0()), Err(Duration::from_millis(250)));
        assert_eq!(b.take("m5", t0()), Err(Duration::from_millis(500)));
        // Each deferred message finds its token when it comes back, ahead
        // of newer ones.
        assert_eq!(b.take("m4", t0() + ms(250)), Ok(()));
        assert_eq!(
            b.take("m6", t0() + ms(250)),
            Err(Duration::from_millis(500))
        );
        assert_eq!(b.take("m5", t0() + ms(500)), Ok(()));
        // Back early: told to wait for its token again.
        assert_eq!(
            b.take("m6", t0() + ms(600)),
            Err(Duration::from_millis(150))
        );
        assert_eq!(b.take("m6", t0() + ms(750)), Ok(()));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_holds_no_more_than_a_second() {
        let mut b = TokenBucket::new(2, t0());
        assert!(b.take("a", t0()).is_ok());
        assert!(b.take("b", t0()).is_ok());
        assert!(b.take("c", t0()).is_err());
        let later = t0() + chrono::Duration::seconds(60);
        assert!(b.take("d", later).is_ok());
        assert!(b.take("e", later).is_ok());
        assert_eq!(b.take("f", later), Err(Duration::from_millis(500)));
    }

    #[test]
    fn a_rate_of_one_spaces_every_message_a_second_apart() {
        let mut b = TokenBucket::new(1, t0());
        assert!(b.take("a", t0()).is_ok());
        assert_eq!(b.take("b", t0()), Err(Duration::from_secs(1)));
        assert_eq!(b.take("c", t0()), Err(Duration::from_secs(2)));
    }
}
