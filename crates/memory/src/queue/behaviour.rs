//! What SQS does within its contract that a tidy queue in memory need not:
//! a standard queue delivers at least once, so a message can be handed out
//! again while its first receiver still works on it; a delete through the
//! receipt of an earlier receive may delete the message or silently keep
//! it; visibility is set in whole seconds. Off by default (tests and
//! `webhooks dev` get the tidy queue); a simulation turns each on and
//! follows every message through a [`QueueWatch`].

use std::time::Duration;

/// How far the queue departs from the tidy behaviour; all off by default.
#[derive(Debug, Clone, Default)]
pub struct SqsBehaviour {
    /// Chance that a received message is handed out again at once (another
    /// server's copy): it stays visible, the next receive gets it too, and
    /// the first receipt is stale from then on.
    pub duplicate_rate: f64,
    /// Chance that a delete through a stale receipt (the message has been
    /// received again since) deletes it anyway; otherwise the delete
    /// answers success and the message stays. A visibility change through
    /// a stale receipt always fails, as in SQS.
    pub stale_delete_deletes: f64,
    /// Visibility changes take whole seconds, rounded up, as SQS takes an
    /// integer number of seconds and the SQS adapter rounds up.
    pub whole_seconds: bool,
    /// Seeds the draws, so that a simulation replays exactly.
    pub seed: u64,
}

impl SqsBehaviour {
    /// `delay` as the queue applies it.
    pub(super) fn visibility(&self, delay: Duration) -> Duration {
        if self.whole_seconds && delay.subsec_nanos() > 0 {
            Duration::from_secs(delay.as_secs() + 1)
        } else {
            delay
        }
    }
}

/// One thing that happened to one of the queue's messages (`id` is its
/// message id, `body` what it carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEvent<'a> {
    Sent {
        id: &'a str,
        body: &'a str,
    },
    /// Handed out with `receipt`; `duplicate`: left visible, so the next
    /// receive gets it too.
    Received {
        id: &'a str,
        body: &'a str,
        receipt: &'a str,
        receive_count: u32,
        duplicate: bool,
    },
    /// Hidden for `delay` from now by a visibility change through `receipt`.
    Hidden {
        id: &'a str,
        body: &'a str,
        receipt: &'a str,
        delay: Duration,
    },
    /// Deleted; `stale`: through the receipt of an earlier receive.
    Deleted {
        id: &'a str,
        body: &'a str,
        stale: bool,
    },
    /// A delete through a stale receipt that kept the message.
    KeptOnStaleDelete {
        id: &'a str,
        body: &'a str,
    },
    /// A visibility change through a stale receipt, refused.
    StaleVisibilityChange {
        id: &'a str,
        body: &'a str,
    },
    /// Moved to the dead-letter queue on the receive after the last.
    Redriven {
        id: &'a str,
        body: &'a str,
    },
    /// Deleted at the end of its retention.
    Expired {
        id: &'a str,
        body: &'a str,
    },
}

/// Follows a queue's messages. Called under the queue's lock, as each
/// thing happens: it must not call the queue.
pub trait QueueWatch: Send + Sync {
    fn saw(&self, event: QueueEvent<'_>);
}
