//! The net under deliveries never attempted: the reconciler finds lost
//! messages through the index of scheduled retries, which a delivery enters
//! only when an attempt fails (so a first-try success writes no index
//! entry). A never-attempted delivery whose message keeps failing (its
//! delivery or endpoint unreadable for an hour and a half) would otherwise
//! reach SQS's `maxReceiveCount` and be moved to the dead-letter queue,
//! where only the sweeper's redrive net finds it (`crate::redrive`, which
//! sends it again once and dead-letters it the second time); and a message
//! that waits out the queue's retention (14 days) is deleted. Its message
//! is renewed instead: sent
//! again as a new message (receive count 0, retention anew) and the worn
//! one finished, a day before the retention ends, and as soon as it has
//! been received more often than its delivery can spare before a first
//! attempt ([`worn_after`]): a message that waited behind its endpoint's
//! limits (deferrals spend receives) then starts its retries with the
//! receives its schedule needs, which the redrive would otherwise cut
//! short once they hold the delivery's retry chain.
//!
//! The copy is a new message id. A worn message that owns the delivery's
//! chain (the fan-out's message owns its delivery from its creation) hands
//! the chain to its copy (`DeliveryStore::hand_over`, one conditional
//! write, rare), with a lease: a receipt of the worn message running at the
//! same time (SQS hands a message out twice, rarely) may be making the
//! first attempt without a lease, and the copy's attempt waits until that
//! one has ended. If the hand-over fails, the copy takes the chain over
//! once the delivery is overdue by `STUCK_AFTER`, as every lost chain is.

use super::{MessageOutcome, Sender};
use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Duration;
use webhooks_domain::{Delivery, DeliveryTask};
use webhooks_ports::queue_settings::{MAX_RECEIVE_COUNT, QUEUE_RETENTION_SECS};
use webhooks_ports::ReceivedMessage;

/// A message this old is renewed: a day before the queue deletes it.
const RENEW_AGE: Duration = Duration::from_secs(QUEUE_RETENTION_SECS as u64 - 86_400);

/// Receives after which a message of a never-attempted delivery is worn:
/// one beyond the `spare` receives (beyond one per attempt) its schedule
/// leaves under SQS's `maxReceiveCount`, and never later than one receive
/// before that redrive.
pub(super) fn worn_after(spare: u32) -> u32 {
    spare
        .saturating_add(1)
        .min(MAX_RECEIVE_COUNT.saturating_sub(1))
}

/// Whether a copy of the message `message_id` of `delivery`, under a new
/// message id, would carry it on: never attempted, no live lease, and no
/// other message holding its retry chain (a lease taken and crashed before
/// its attempt was recorded) unless that chain is lost already. A chain
/// that is `message_id`'s own is handed to the copy (here, and by the
/// redrive net for a dead letter that owns its delivery's chain).
pub(crate) fn copy_carries_on(delivery: &Delivery, message_id: &str, now: DateTime<Utc>) -> bool {
    delivery.attempt_count == 0
        && delivery.lease_until.is_none_or(|t| t < now)
        && !delivery.chain_live_elsewhere(message_id, now)
}

/// Whether a message left for another try is worn, for a delivery the
/// reconciler cannot find (never attempted, or not read at all): received
/// `worn_at` times (see [`worn_after`]) when its copy would carry the
/// delivery on, or in any case one receive before SQS's redrive or a day
/// before its retention's end. Not while an attempt holds the lease: a
/// copy would be turned away by it; the next receive renews.
pub(super) fn is_worn(
    message: &ReceivedMessage,
    delivery: Option<&Delivery>,
    now: DateTime<Utc>,
    worn_at: u32,
) -> bool {
    let early = message.receive_count >= worn_at
        && delivery.is_some_and(|d| copy_carries_on(d, &message.message_id, now));
    let late = (message.receive_count >= MAX_RECEIVE_COUNT.saturating_sub(1)
        || message.age.is_some_and(|age| age >= RENEW_AGE))
        && delivery.is_none_or(|d| d.attempt_count == 0 && d.lease_until.is_none_or(|t| t < now));
    early || late
}

impl Sender {
    /// Renews the worn messages among those left for another try;
    /// `delivery_of` gives the delivery id of a message (by index),
    /// `deliveries` the deliveries as read before the batch's attempts
    /// (`read`: that read answered; one missing then has no record).
    /// Never one of the `leased` (by index): such a message took its
    /// delivery's lease in this batch, which that read does not show; it
    /// holds the retry chain now (an attempt failed, or its record did and
    /// the lease is live), so its copy would be turned away and the
    /// delivery left without a message.
    pub(super) async fn renew_worn(
        &self,
        messages: &[ReceivedMessage],
        deliveries: &FxHashMap<String, Delivery>,
        delivery_of: &FxHashMap<usize, String>,
        leased: &FxHashSet<usize>,
        read: bool,
        outcomes: &mut [MessageOutcome],
    ) {
        let now = self.clock.now();
        for (i, message) in messages.iter().enumerate() {
            if outcomes[i] != MessageOutcome::Retry || leased.contains(&i) {
                continue;
            }
            let Some(id) = delivery_of.get(&i) else {
                continue;
            };
            // Read, and no record: a delivery never attempted (noted by the
            // stream's fan-out, or one this message would adopt), whose
            // copy carries it on as a fresh record's would.
            let unrecorded = (read && !deliveries.contains_key(id))
                .then(|| unrecorded_view(message, id, now))
                .flatten();
            if !is_worn(
                message,
                deliveries.get(id).or(unrecorded.as_ref()),
                now,
                self.worn_at,
            ) {
                continue;
            }
            // A noted delivery without a record gets one first, owned by
            // the worn message, so that its chain is handed to the copy as
            // any other's is (its note would let the copy attempt it
            // without a lease, beside a receipt of the worn one).
            let recorded;
            let mut unnoted = None;
            let delivery = match deliveries.get(id) {
                Some(d) => Some(d),
                None => match self.record_before_renewal(message).await {
                    Renewable::Recorded(d) => {
                        recorded = d;
                        Some(&recorded)
                    }
                    Renewable::AsBefore => None,
                    // The copy stands for the worn message: it decides by
                    // the note as that one would have, and creates the
                    // record before any attempt.
                    Renewable::Unrecorded(task) => {
                        unnoted = Some(task.to_message());
                        None
                    }
                },
            };
            // Its tenant as it came, or its delivery's org where the event
            // source did not pass the group id on.
            let mut copy = webhooks_ports::QueueMessage::again(message);
            if let Some(body) = unnoted {
                copy.body = body;
            }
            if copy.tenant.is_none() {
                copy.tenant = delivery.map(|d| webhooks_domain::tenant::org_tenant(&d.org_id));
            }
            match self.queue.send_batch_ids(&[copy]).await {
                Ok(ids) if ids.first().is_some_and(Option::is_some) => {
                    tracing::warn!(delivery_id = %id, receives = message.receive_count, "message nearly worn out before a first attempt; sent again as a new message");
                    let owned = delivery
                        .filter(|d| d.chain.as_deref() == Some(message.message_id.as_str()));
                    if let (Some(d), Some(Some(copy_id))) = (owned, ids.first()) {
                        self.hand_over(d, &message.message_id, copy_id, now).await;
                    }
                    outcomes[i] = MessageOutcome::Done;
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(delivery_id = %id, "could not renew a worn message; SQS will move it to the dead-letter queue");
                }
            }
        }
    }
}

/// What a worn message without a record is renewed with.
enum Renewable {
    /// The record, made (or found) for the renewal.
    Recorded(Delivery),
    /// No record: the copy adopts the delivery, as before notes.
    AsBefore,
    /// The record could not be made: the copy goes as this task, which
    /// names the note and the message the copy stands for.
    Unrecorded(DeliveryTask),
}

/// A delivery without a record as its message `message` sees it: never
/// attempted, owned by that message.
fn unrecorded_view(message: &ReceivedMessage, id: &str, now: DateTime<Utc>) -> Option<Delivery> {
    let (endpoint_id, event_id) = webhooks_domain::delivery::parse_delivery_id(id)?;
    Some(Delivery {
        chain: Some(message.message_id.clone()),
        ..Delivery::new_at(
            "",
            &endpoint_id,
            &event_id,
            webhooks_domain::EventType::LeadWon,
            now,
        )
    })
}

impl Sender {
    /// The record of a noted delivery whose worn message is renewed,
    /// created owned by that message (or the one created meanwhile) when
    /// its note carries the delivery by it. A message that names no note,
    /// or that its note does not carry it by, is renewed as before (its
    /// copy adopts the delivery, or gives way, as the message would have);
    /// one whose record could not be made goes standing for the worn
    /// message (`DeliveryTask::stands_for`).
    async fn record_before_renewal(&self, message: &ReceivedMessage) -> Renewable {
        let Ok(task) = DeliveryTask::from_message(&message.body) else {
            return Renewable::AsBefore;
        };
        let Some(key) = &task.queued else {
            return Renewable::AsBefore;
        };
        // Only the message its note carries the delivery by: another one
        // (its note unconfirmed or contested, or naming another message)
        // may not create the record while that one may attempt without
        // it; its copy, naming the same note, decides as it would have.
        let keys = [(task.org_id.clone(), key.clone())];
        let carried = match self.deliveries.notes(&keys).await {
            Ok(notes) => matches!(
                super::unrecorded::NoteSeen::of(
                    notes.first(),
                    &task.delivery_id,
                    &message.message_id,
                    task.stands_for.as_deref(),
                ),
                super::unrecorded::NoteSeen::Lists(_)
            ),
            // Not known which (a table outage, when messages wear out):
            // as before the notes were confirmed, the record is asked for
            // (in an outage that fails too, and the copy goes without the
            // note's key), so that the delivery keeps a message.
            Err(e) => {
                tracing::warn!(delivery_id = %task.delivery_id, error = %e, "could not read the note of a worn message");
                true
            }
        };
        if !carried {
            return Renewable::AsBefore;
        }
        let delivery = Delivery {
            chain: Some(message.message_id.clone()),
            ..Delivery::new_at(
                &task.org_id,
                &task.endpoint_id,
                &task.event_id,
                task.event_type,
                self.clock.now(),
            )
        };
        if delivery.id != task.delivery_id {
            return Renewable::AsBefore;
        }
        match self.deliveries.create_if_absent(&delivery).await {
            Ok(None) => Renewable::Recorded(delivery),
            Ok(Some(existing)) => Renewable::Recorded(existing),
            Err(e) => {
                tracing::warn!(delivery_id = %delivery.id, error = %e, "could not create the record of a noted delivery before renewing its message; its copy creates it");
                let mut copy = task;
                copy.stand_for(&message.message_id);
                Renewable::Unrecorded(copy)
            }
        }
    }

    /// Hands `delivery`'s chain from the worn message `from` to its copy
    /// `to`, with a lease (the module's comment says why). The worn message
    /// is finished whatever comes of it: if the chain stays with it, the
    /// copy waits for it (`fence::wait_for_chain`) and takes it over once
    /// it is lost.
    async fn hand_over(&self, delivery: &Delivery, from: &str, to: &str, now: DateTime<Utc>) {
        let until = now
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(1));
        match self
            .deliveries
            .hand_over(&delivery.id, from, to, until, now)
            .await
        {
            Ok(true) => {
                tracing::info!(delivery_id = %delivery.id, "chain handed to the renewed message")
            }
            Ok(false) => {
                tracing::warn!(delivery_id = %delivery.id, "chain not handed to the renewed message (the delivery moved on); the copy takes it over once it is lost")
            }
            Err(e) => {
                tracing::warn!(delivery_id = %delivery.id, error = %e, "could not hand the chain to the renewed message; the copy takes it over once it is lost")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::EventType;

    fn message(receive_count: u32) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m1".into(),
            receipt_handle: "r1".into(),
            body: "{}".into(),
            tenant: None,
            receive_count,
            age: None,
        }
    }

    #[test]
    fn only_never_attempted_or_unread_deliveries_near_the_limits_are_worn() {
        let mut d = Delivery::new("org", "ep_1", "evt_1", EventType::LeadWon);
        let now = d.created_at;
        let near = MAX_RECEIVE_COUNT - 1;
        let is_worn = |m: &ReceivedMessage, d: Option<&Delivery>, now| is_worn(m, d, now, near);
        assert!(!is_worn(&message(near - 1), Some(&d), now));
        assert!(is_worn(&message(near), Some(&d), now));
        assert!(is_worn(&message(near), None, now), "unread");
        let mut old = message(1);
        old.age = Some(Duration::from_secs(13 * 86_400));
        assert!(is_worn(&old, Some(&d), now), "a day before retention ends");
        old.age = Some(Duration::from_secs(12 * 86_400));
        assert!(!is_worn(&old, Some(&d), now));
        d.lease_until = Some(now + chrono::Duration::seconds(1));
        assert!(
            !is_worn(&message(near), Some(&d), now),
            "a live lease would turn the copy away"
        );
        d.lease_until = Some(now - chrono::Duration::seconds(1));
        assert!(is_worn(&message(near), Some(&d), now));
        d.attempt_count = 1;
        assert!(
            !is_worn(&message(MAX_RECEIVE_COUNT), Some(&d), now),
            "the reconciler finds an attempted delivery"
        );
    }

    #[test]
    fn a_message_is_worn_once_it_used_the_receives_its_schedule_can_spare() {
        let default =
            crate::sender::limits::deferral_budget(&webhooks_domain::RetrySchedule::default());
        assert_eq!(worn_after(default), default + 1);
        assert_eq!(worn_after(0), 1);
        assert_eq!(worn_after(100), MAX_RECEIVE_COUNT - 1);
        let mut d = Delivery::new("org", "ep_1", "evt_1", EventType::LeadWon);
        let now = d.created_at;
        let at = worn_after(default);
        assert!(!is_worn(&message(at - 1), Some(&d), now, at));
        assert!(is_worn(&message(at), Some(&d), now, at));
        assert!(
            !is_worn(&message(at), None, now, at),
            "unread: only near the redrive"
        );
        // A message that owns the chain hands it to its copy: worn early.
        d.chain = Some("m1".into());
        assert!(is_worn(&message(at), Some(&d), now, at));
        // Another message that took the lease and crashed holds the chain:
        // a copy would be turned away until the chain is lost
        // (STUCK_AFTER), so it is not worn early...
        d.chain = Some("m0".into());
        assert!(!is_worn(&message(at), Some(&d), now, at));
        // ... only once the chain is lost, or near the redrive.
        let later = now + webhooks_domain::delivery::STUCK_AFTER + chrono::Duration::seconds(1);
        assert!(is_worn(&message(at), Some(&d), later, at));
        assert!(is_worn(&message(MAX_RECEIVE_COUNT - 1), Some(&d), now, at));
    }
}
