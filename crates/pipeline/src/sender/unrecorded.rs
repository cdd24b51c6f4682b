//! A message whose delivery has no record yet. The stream's fan-out
//! writes none for a young event's deliveries: it notes them
//! ([`webhooks_domain::queued`]) and names the note in each message
//! (`DeliveryTask::queued`). The message its note lists makes the first
//! attempt, without a lease, and the attempt's outcome creates the record
//! (one conditional create: the status and the attempt at once). Nothing
//! else writes a record of a noted delivery meanwhile: the sweeper and a
//! replayed fan-out leave what a note lists alone, and the reconciler
//! reads only records. So one write per first-try delivery, and the same
//! door as a recorded delivery's unleased first attempt: two receipts of
//! this same message at once may both POST it, with the same
//! `webhook-id`; the create keeps one record.
//!
//! Any other message without a record (no note named, or its note not
//! found) creates the record owned by itself first, as before
//! ([`Sender::adopt`]): a message sent before a fan-out stopped short of
//! its note, a copy sent by the redrive net, a message of a sweep.

use super::{Job, MessageOutcome, Sender};
use chrono::{DateTime, Utc};
use std::time::Duration;
use webhooks_domain::event::MIN_SETTLE_WINDOW;
use webhooks_domain::{ids, Delivery, DeliveryStatus};

/// What the batch's read of the notes said of a message's note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoteSeen {
    /// The message names no note, or its delivery has a record.
    NotAsked,
    /// The note lists the delivery; written at that time.
    Lists(DateTime<Utc>),
    /// No such note, or it does not list the delivery.
    Missing,
    /// The read failed.
    Unread,
}

/// How long a message whose note is not there yet waits before it looks
/// again: the fan-out writes the note just after its sends.
const NOTE_WAIT: Duration = Duration::from_secs(5);

/// How long a message whose note is not there looks again at once, before
/// it is hidden: its fan-out writes the note just after the sends, and a
/// poller may receive the message before (in `webhooks dev` nearly always).
const NOTE_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(80),
    Duration::from_millis(200),
];

/// The longest a message waits for its note before its attempt goes on
/// (all of [`NOTE_RETRIES`]): a sender invocation's POSTs may start that
/// much after it does.
pub const NOTE_LOOKS_AT_MOST: Duration = NOTE_RETRIES[0]
    .saturating_add(NOTE_RETRIES[1])
    .saturating_add(NOTE_RETRIES[2]);

/// A delivery without a record, as this message goes on with it.
pub(super) struct Unrecorded {
    pub(super) delivery: Delivery,
    /// The note lists it: its first attempt creates the record.
    pub(super) by_note: bool,
}

impl Sender {
    /// The delivery of a message that found no record: as its note says
    /// (not written yet), or created owned by this message.
    pub(super) async fn without_record(
        &self,
        job: &Job<'_>,
        note: NoteSeen,
    ) -> Result<Unrecorded, MessageOutcome> {
        let task = &job.task;
        let note = match note {
            NoteSeen::Missing if !task.redriven => self.note_soon(job).await,
            seen => seen,
        };
        match note {
            NoteSeen::Lists(at) if !task.redriven => {
                let mut delivery = Delivery::new_at(
                    &task.org_id,
                    &task.endpoint_id,
                    &task.event_id,
                    task.event_type,
                    at,
                );
                delivery.chain = Some(job.message.message_id.clone());
                if delivery.id != task.delivery_id {
                    tracing::error!(message_id = %job.message.message_id, "no such delivery, and its task names another; moved to the dead-letter queue");
                    return Err(self.dead_letter_poison(job.message).await);
                }
                return Ok(Unrecorded {
                    delivery,
                    by_note: true,
                });
            }
            NoteSeen::Unread => {
                tracing::warn!("could not read the note of a delivery without a record; retrying");
                return Err(MessageOutcome::Retry);
            }
            NoteSeen::Missing if !task.redriven => {
                // The fan-out writes its note after its sends: looked at
                // again shortly, while the event is young enough to be
                // noted at all.
                let now = self.clock.now();
                let made = ids::made_at(&task.event_id, "evt").unwrap_or(now);
                let settled =
                    made + chrono::Duration::from_std(MIN_SETTLE_WINDOW).unwrap_or_default();
                if let Ok(left) = (settled - now).to_std() {
                    if !left.is_zero() {
                        let wait = left.min(NOTE_WAIT);
                        if let Err(e) = self
                            .queue
                            .change_visibility(&job.message.receipt_handle, wait)
                            .await
                        {
                            tracing::warn!(error = %e, "could not hide a message whose note is not written yet");
                        }
                        tracing::info!("its note is not written yet; back shortly");
                        return Err(MessageOutcome::Retry);
                    }
                }
                // Its fan-out stopped before the note. If another call
                // noted the delivery (a replay), that call's message
                // carries it on; otherwise this one does.
                match self
                    .deliveries
                    .noted(&task.org_id, std::slice::from_ref(&task.delivery_id))
                    .await
                {
                    Ok(noted) if !noted.is_empty() => {
                        tracing::info!("another fan-out's message carries this delivery; dropped without an attempt");
                        return Err(MessageOutcome::Done);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the notes of a delivery without a record; retrying");
                        return Err(MessageOutcome::Retry);
                    }
                }
            }
            _ => {}
        }
        Ok(Unrecorded {
            delivery: self.adopt(job).await?,
            by_note: false,
        })
    }

    /// The note of a message that found none, looked for again a few times
    /// within a third of a second.
    async fn note_soon(&self, job: &Job<'_>) -> NoteSeen {
        let Some(key) = &job.task.queued else {
            return NoteSeen::Missing;
        };
        let keys = [(job.task.org_id.clone(), key.clone())];
        for wait in NOTE_RETRIES {
            tokio::time::sleep(wait).await;
            match self.deliveries.notes(&keys).await {
                Ok(notes) => {
                    if let Some(n) = notes.first() {
                        return if n.names(&job.task.delivery_id, &job.message.message_id) {
                            NoteSeen::Lists(n.created_at)
                        } else {
                            NoteSeen::Missing
                        };
                    }
                }
                Err(_) => return NoteSeen::Unread,
            }
        }
        NoteSeen::Missing
    }

    /// The endpoint of a noted delivery without a record was deleted: the
    /// delivery is created canceled. If a record appeared meanwhile, the
    /// message comes back and finds it.
    pub(super) async fn cancel_unrecorded(&self, delivery: &Delivery) -> MessageOutcome {
        let canceled = Delivery {
            status: DeliveryStatus::Canceled,
            ..delivery.clone()
        };
        match self.deliveries.create_if_absent(&canceled).await {
            Ok(None) => {
                tracing::info!("endpoint deleted; delivery canceled");
                MessageOutcome::Done
            }
            Ok(Some(_)) => MessageOutcome::Retry,
            Err(e) => {
                tracing::warn!(error = %e, "could not cancel a delivery without a record; retrying");
                MessageOutcome::Retry
            }
        }
    }
}
