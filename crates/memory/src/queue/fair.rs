//! Who is a noisy neighbour on an SQS fair queue, as AWS documents it
//! (SQS Developer Guide, "How Amazon SQS fair queues work"):
//!
//! - a tenant is its messages' `MessageGroupId`; a message without one is a
//!   tenant of its own;
//! - a tenant is **noisy** while it holds more than 10 % of the queue's
//!   in-flight messages and at least 30 of its own, or while its recent
//!   share of the consumers' processing time is over 10 %;
//! - while a noisy tenant has messages waiting, consumers get the quiet
//!   tenants' messages first; the noisy ones' only when no quiet message is
//!   waiting, from the noisy tenant with the fewest in flight first;
//! - nothing is dropped or throttled: noisy messages only wait longer, and
//!   a tenant is quiet again as soon as its shares fall back.
//!
//! In flight means received and neither deleted nor visible again (a
//! message hidden again by `ChangeMessageVisibility` stays in flight).
//! Processing time is a receipt's time until the consumer deleted or
//! re-hid the message, or until the visibility timeout ran out; "recent"
//! is an exponential decay with a [`PROCESSING_WINDOW`] time constant (AWS
//! gives no figure; its other rule, quiet after 5 minutes without sends,
//! is covered by that decay).

use rustc_hash::FxHashMap;
use std::time::Duration;
use tokio::time::Instant;

/// A tenant holding more than this share of in-flight messages, or of
/// recent processing time, is noisy.
pub const NOISY_SHARE: f64 = 0.10;
/// ... if it also has at least this many messages in flight (the
/// concurrency rule).
pub const MIN_NOISY_IN_FLIGHT: u32 = 30;
/// How long processing time counts as recent (the decay's time constant).
pub const PROCESSING_WINDOW: Duration = Duration::from_secs(60);
/// Recent processing time below this (seconds) is forgotten.
const NEGLIGIBLE_BUSY: f64 = 1e-3;

/// What the queue knows of each tenant's use of its consumers.
#[derive(Default)]
pub(super) struct Fairness {
    tenants: FxHashMap<String, Tenant>,
    /// Every in-flight message, untagged ones included.
    total_in_flight: u32,
}

struct Tenant {
    in_flight: u32,
    /// Recent processing time, in seconds, as of `busy_at`.
    busy: f64,
    busy_at: Instant,
}

impl Tenant {
    fn busy_at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.busy_at).as_secs_f64();
        self.busy * (-age / PROCESSING_WINDOW.as_secs_f64()).exp()
    }
}

/// The tenants' standing at one receive.
pub(super) struct Standing<'a> {
    fairness: &'a Fairness,
    total_busy: f64,
}

impl Standing<'_> {
    /// Whether `tenant` is noisy now; an untagged message never is (a
    /// tenant of one message).
    pub fn is_noisy(&self, tenant: Option<&str>, now: Instant) -> bool {
        let Some(t) = tenant.and_then(|t| self.fairness.tenants.get(t)) else {
            return false;
        };
        let total = f64::from(self.fairness.total_in_flight.max(1));
        let by_concurrency =
            t.in_flight >= MIN_NOISY_IN_FLIGHT && f64::from(t.in_flight) > NOISY_SHARE * total;
        let by_time = self.total_busy > 0.0 && t.busy_at(now) > NOISY_SHARE * self.total_busy;
        by_concurrency || by_time
    }

    /// Messages of `tenant` in flight.
    pub fn in_flight(&self, tenant: Option<&str>) -> u32 {
        tenant
            .and_then(|t| self.fairness.tenants.get(t))
            .map_or(0, |t| t.in_flight)
    }
}

impl Fairness {
    fn tenant(&mut self, id: &str, now: Instant) -> &mut Tenant {
        if !self.tenants.contains_key(id) {
            self.tenants.insert(
                id.to_string(),
                Tenant {
                    in_flight: 0,
                    busy: 0.0,
                    busy_at: now,
                },
            );
        }
        self.tenants
            .get_mut(id)
            .expect("the tenant was inserted just above")
    }

    /// A message of `tenant` was received.
    pub fn received(&mut self, tenant: Option<&str>, now: Instant) {
        self.total_in_flight += 1;
        if let Some(id) = tenant {
            self.tenant(id, now).in_flight += 1;
        }
    }

    /// A message of `tenant` left flight (deleted, or visible again).
    pub fn released(&mut self, tenant: Option<&str>) {
        self.total_in_flight = self.total_in_flight.saturating_sub(1);
        if let Some(t) = tenant.and_then(|id| self.tenants.get_mut(id)) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }

    /// A consumer spent `took` on a message of `tenant`.
    pub fn processed(&mut self, tenant: Option<&str>, took: Duration, now: Instant) {
        if let Some(id) = tenant {
            let t = self.tenant(id, now);
            t.busy = t.busy_at(now) + took.as_secs_f64();
            t.busy_at = now;
        }
    }

    /// The standing of every tenant at `now`; forgets tenants with
    /// nothing in flight and no recent processing time.
    pub fn standing(&mut self, now: Instant) -> Standing<'_> {
        self.tenants
            .retain(|_, t| t.in_flight > 0 || t.busy_at(now) >= NEGLIGIBLE_BUSY);
        let total_busy = self.tenants.values().map(|t| t.busy_at(now)).sum();
        Standing {
            fairness: self,
            total_busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn many_in_flight_makes_a_tenant_noisy_only_past_thirty_and_ten_percent() {
        let now = Instant::now();
        let mut f = Fairness::default();
        for _ in 0..29 {
            f.received(Some("a"), now);
        }
        assert!(!f.standing(now).is_noisy(Some("a"), now));
        f.received(Some("a"), now);
        assert!(f.standing(now).is_noisy(Some("a"), now));
        // 30 of 400 in flight is under 10 %.
        for _ in 0..370 {
            f.received(None, now);
        }
        assert!(!f.standing(now).is_noisy(Some("a"), now));
        assert!(!f.standing(now).is_noisy(None, now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_share_of_processing_time_makes_a_tenant_noisy_for_a_while() {
        let now = Instant::now();
        let mut f = Fairness::default();
        f.processed(Some("slow"), Duration::from_secs(15), now);
        f.processed(Some("fast"), Duration::from_millis(5), now);
        let s = f.standing(now);
        assert!(s.is_noisy(Some("slow"), now));
        assert!(!s.is_noisy(Some("fast"), now));
        // Alone again, a tenant's share is all there is; once its time has
        // decayed away it is forgotten.
        let later = now + PROCESSING_WINDOW * 20;
        let s = f.standing(later);
        assert!(!s.is_noisy(Some("slow"), later));
        assert!(f.tenants.is_empty());
    }
}
