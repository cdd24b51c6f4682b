//! What keeps one attempt of a delivery at a time: a message back before
//! its delivery is due is hidden again (within SQS's 12 h from receipt),
//! and the lease fences the next attempt to the message that owns the
//! delivery's retry chain. A fresh delivery's first attempt, by the message
//! that owns it from its creation, takes no lease
//! ([`first_without_lease`]).

use super::{Job, MessageOutcome, Prepared, Sender};
use std::time::Duration;
use webhooks_domain::delivery::STUCK_AFTER;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{AttemptUpdate, Lease, ReceivedMessage};

impl Sender {
    /// The record of a first attempt made without a lease was refused. A
    /// delivery canceled while it ran (its endpoint deleted: nothing else
    /// moves a pending delivery out of pending meanwhile) takes the attempt
    /// as canceled, so the record says the POST happened; otherwise another
    /// receipt of this message recorded it first (or the chain moved on to
    /// a renewal's copy), and the message is left for the next receive, as
    /// a leased record refused is.
    pub(super) async fn record_unleased_refused(
        &self,
        prepared: &Prepared<'_>,
        update: AttemptUpdate,
    ) -> MessageOutcome {
        let me = prepared.message.message_id.as_str();
        let canceled = match self.deliveries.get(&prepared.delivery.id).await {
            Ok(Some(d)) => {
                d.status == DeliveryStatus::Canceled
                    && d.attempt_count.saturating_add(1) == prepared.number
                    && d.chain.as_deref() == Some(me)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "attempt not recorded, and the delivery could not be read; retrying");
                return MessageOutcome::Retry;
            }
        };
        if !canceled {
            tracing::warn!("attempt number already recorded; left for the next receive");
            return MessageOutcome::Retry;
        }
        let update = AttemptUpdate {
            status: DeliveryStatus::Canceled,
            next_attempt_at: None,
            ..update
        };
        match self
            .deliveries
            .record_attempt(&prepared.delivery.id, &update)
            .await
        {
            Ok(true) => {
                tracing::info!(
                    "delivery canceled while its first attempt ran; the attempt recorded on it"
                );
                self.count_attempt(&prepared.delivery, &update);
                MessageOutcome::Done
            }
            Ok(false) => MessageOutcome::Retry,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the attempt on the canceled delivery; retrying");
                MessageOutcome::Retry
            }
        }
    }

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

/// Whether `message_id` may make `delivery`'s first attempt without a
/// lease: the delivery is pending, never attempted, owned by this message
/// from its creation (the fan-out creates it with the id of the message it
/// sent for it; a message that arrives first creates it owned by itself)
/// and never leased since (a lease or a hand-over to a renewal's copy sets
/// `lease_until`, and only a record clears it), and fresh enough that no
/// other message can take the chain over as lost (overdue by
/// [`STUCK_AFTER`]) before the attempt has ended (within `lease`, as a
/// leased attempt). Every other message of the delivery is turned away by
/// the chain, so what this saves (one conditional write per delivery)
/// opens one door only: two receipts of this same message at once (SQS
/// hands a message out again, rarely, while its first receiver has it)
/// may both POST the first attempt, with the same `webhook-id` and attempt
/// number; the record's condition (pending, no attempt yet, this chain)
/// keeps one of them.
pub(super) fn first_without_lease(
    delivery: &Delivery,
    message_id: &str,
    now: chrono::DateTime<chrono::Utc>,
    lease: Duration,
) -> bool {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
    no_net_finds(delivery)
        && delivery.chain.as_deref() == Some(message_id)
        && delivery.lease_until.is_none()
        && now + lease < delivery.due_at() + STUCK_AFTER
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
