//! What keeps one attempt of a delivery at a time: a message back before
//! its delivery is due is hidden again (within SQS's 12 h from receipt),
//! and the lease fences the next attempt to the message that owns the
//! delivery's retry chain.

use super::{Job, MessageOutcome, Sender};
use std::time::Duration;
use webhooks_domain::delivery::STUCK_AFTER;
use webhooks_domain::Delivery;
use webhooks_ports::{Lease, ReceivedMessage};

impl Sender {
    /// The message came back before its delivery is due (a wait longer than
    /// SQS can hide a message at once, or a hide that failed): it is hidden
    /// again for the rest of the wait, as far as SQS allows from this
    /// receipt, without an attempt.
    pub(super) async fn hide_until_due(&self, job: &Job<'_>, early: Duration) -> MessageOutcome {
        let hide = early.min(job.hide_limit());
        match self
            .queue
            .change_visibility(&job.message.receipt_handle, hide)
            .await
        {
            Ok(()) => tracing::info!(
                due_in_secs = early.as_secs(),
                hidden_for_secs = hide.as_secs(),
                "not due yet; hidden again without an attempt"
            ),
            // It comes back after the queue's visibility timeout and is
            // checked again then.
            Err(e) => tracing::warn!(error = %e, "not due yet, and could not hide it again"),
        }
        MessageOutcome::Retry
    }

    /// A message turned away by another message's live retry chain on a
    /// delivery no net finds ([`no_net_finds`]) is not finished: the chain's
    /// holder may have died with its message gone (a concurrent receipt of
    /// the same message finished it, renewed as this copy), and then this
    /// message is the delivery's last. It waits, hidden, and looks again:
    /// just after the holder's live lease ends (the common case: the holder
    /// has recorded its attempt, and this copy is finished then), else one
    /// lease later, and never later than when the chain would be lost
    /// ([`STUCK_AFTER`] after the delivery was due), when it takes the chain
    /// over. So a copy lingers in the queue about as long as the attempt it
    /// waits for, not for the whole wait.
    pub(super) async fn wait_for_chain(
        &self,
        message: &ReceivedMessage,
        current: &Delivery,
    ) -> MessageOutcome {
        let now = self.clock.now();
        // Never attempted, it was due at its creation: at most STUCK_AFTER
        // and a second, well within what SQS hides a message for.
        let until_lost = (current.due_at() + STUCK_AFTER - now)
            .to_std()
            .unwrap_or_default();
        let hide = chain_check_in(current, now, self.config.lease).min(until_lost)
            + Duration::from_secs(1);
        tracing::info!(
            wait_secs = hide.as_secs(),
            "another message holds this never-attempted delivery's retry chain; back when that chain would be lost"
        );
        if let Err(e) = self
            .queue
            .change_visibility(&message.receipt_handle, hide)
            .await
        {
            tracing::warn!(error = %e, "could not hide the message until the chain would be lost");
        }
        MessageOutcome::Retry
    }

    /// The fence: one conditional write makes this message the holder of
    /// the delivery's next attempt. A message that loses is finished without
    /// a POST: its delivery is finished or has another live retry chain
    /// (whose message carries it on; if that one is lost, the delivery goes
    /// overdue and the next message received takes the chain over).
    pub(super) async fn lease(
        &self,
        message: &ReceivedMessage,
        read: &Delivery,
    ) -> Result<Delivery, MessageOutcome> {
        let now = self.clock.now();
        let until = now
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(1));
        match self
            .deliveries
            .lease(
                &read.id,
                read.attempt_count,
                &message.message_id,
                until,
                now,
                now - STUCK_AFTER,
            )
            .await
        {
            Ok(Lease::Granted(d)) => Ok(d),
            Ok(Lease::Refused(Some(d)))
                if d.status == webhooks_domain::DeliveryStatus::Pending
                    && d.chain.as_deref() == Some(message.message_id.as_str()) =>
            {
                // This message owns the chain, so it is never finished here
                // (deleting it, even through an older receipt, would leave
                // the delivery without a message): the count it read is
                // stale, or
                // its own attempt holds the lease: the same message received
                // twice at once, or back after a failure that left its lease
                // behind. Hidden until the lease ends, so that waiting does
                // not use up its receives.
                tracing::info!("this message's lease is still live; back when it ends");
                if let Some(until) = d.lease_until.filter(|t| *t >= now) {
                    let wait = (until - now).to_std().unwrap_or_default() + Duration::from_secs(1);
                    if let Err(e) = self
                        .queue
                        .change_visibility(&message.receipt_handle, wait)
                        .await
                    {
                        tracing::warn!(error = %e, "could not hide the message until its lease ends");
                    }
                }
                Err(MessageOutcome::Retry)
            }
            Ok(Lease::Refused(Some(current))) if no_net_finds(&current) => {
                Err(self.wait_for_chain(message, &current).await)
            }
            Ok(Lease::Refused(current)) => {
                tracing::info!(
                    status = current.as_ref().map_or("gone", |d| d.status.as_str()),
                    attempts = current.as_ref().map_or(0, |d| d.attempt_count),
                    "another message holds this delivery's retry chain, or it is finished; dropped without an attempt"
                );
                Err(MessageOutcome::Done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the delivery's lease; retrying");
                Err(MessageOutcome::Retry)
            }
        }
    }
}

/// How long a message waiting for another message's chain waits before it
/// looks again: until the holder's live lease ends, or, with no live lease
/// (the holder died before its attempt, its message may yet come back and
/// lease again), one `lease` more.
fn chain_check_in(
    delivery: &Delivery,
    now: chrono::DateTime<chrono::Utc>,
    lease: Duration,
) -> Duration {
    delivery
        .lease_until
        .filter(|until| *until > now)
        .and_then(|until| (until - now).to_std().ok())
        .unwrap_or(lease)
}

/// Whether no net would find `delivery` should the message holding its
/// retry chain be lost: pending and never attempted, it is in no index of
/// scheduled retries (the reconciler finds only those), and the sweeper's
/// redrive net sees only what SQS redrove.
pub(super) fn no_net_finds(delivery: &Delivery) -> bool {
    delivery.status == webhooks_domain::DeliveryStatus::Pending
        && delivery.attempt_count == 0
        && delivery.next_attempt_at.is_none()
}
