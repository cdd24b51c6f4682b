//! A message whose delivery has no record yet. The stream's fan-out
//! writes none for a young event's deliveries: it notes them
//! ([`webhooks_domain::queued`]) and names the note in each message
//! (`DeliveryTask::queued`). The message that a confirmed note carries the
//! delivery by ([`QueuedNote::carries`]: no other note lists it) makes the
//! first attempt, without a lease, while no other message could take it
//! over (`STUCK_AFTER` after the note, less the lease), and the attempt's
//! outcome creates the record (one conditional create: the status and the
//! attempt at once). Nothing else writes a record of a noted delivery
//! meanwhile: the sweeper and a replayed fan-out leave what a note lists
//! alone, the reconciler reads only records, and a message of a contested
//! delivery waits until that time is over ([`Sender::after_others`]). So one write per first-try delivery, and the same
//! door as a recorded delivery's unleased first attempt: two receipts of
//! this same message at once may both POST it, with the same
//! `webhook-id`; the create keeps one record.
//!
//! Any other message without a record (no note named, or its note not
//! found) creates the record owned by itself first, as before
//! ([`Sender::adopt`]): a message sent before a fan-out stopped short of
//! its note, a message of a sweep. A copy of a message (a renewal's whose
//! record could not be made first, the redrive net's) names the note and
//! the message it stands for: it gives way to another note's message as
//! that message would have, and where the note names the message it
//! stands for, it creates the record first too. (Before, such copies
//! named no note and adopted the delivery at once, and could POST beside
//! another note's message.)

use super::{Job, MessageOutcome, Sender};
use chrono::{DateTime, Utc};
use std::time::Duration;
use webhooks_domain::delivery::STUCK_AFTER;
use webhooks_domain::event::MIN_SETTLE_WINDOW;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::{ids, Delivery, DeliveryStatus};

/// What the batch's read of the notes said of a message's note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoteSeen {
    /// The message names no note, or its delivery has a record.
    NotAsked,
    /// The note, confirmed, carries the delivery by this message; written
    /// at that time.
    Lists(DateTime<Utc>),
    /// The note names this message for the delivery, but its confirming
    /// read found another note listing it too ([`QueuedNote::contested`]).
    Contested,
    /// The note names this message for the delivery, but its fan-out has
    /// not confirmed it (yet); written at that time.
    Unconfirmed(DateTime<Utc>),
    /// No such note, or it does not name this message for the delivery.
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

impl NoteSeen {
    /// What `note` (the one the message names, if found) says of the
    /// message `message_id` for `delivery_id`; `stands_for`: the message a
    /// copy stands for ([`webhooks_domain::DeliveryTask::stands_for`]),
    /// whose naming counts as the copy's.
    pub(super) fn of(
        note: Option<&QueuedNote>,
        delivery_id: &str,
        message_id: &str,
        stands_for: Option<&str>,
    ) -> Self {
        match note {
            Some(n) if names(n, delivery_id, message_id, stands_for) => match n.confirmed_at {
                None => NoteSeen::Unconfirmed(n.created_at),
                Some(_) if n.contests(delivery_id) => NoteSeen::Contested,
                Some(_) => NoteSeen::Lists(n.created_at),
            },
            _ => NoteSeen::Missing,
        }
    }
}

/// What the notes of a delivery say to a message that its own note does
/// not carry, once it no longer waits for that note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Others {
    /// Another note carries it by another message: that one attempts it.
    Carried,
    /// Notes confirmed it contested, the last at this time: the message a
    /// note of them names may still make an attempt without a record until
    /// it would count as lost ([`STUCK_AFTER`] after that).
    Contested(DateTime<Utc>),
    /// No note carries or contests it: this message creates the record.
    Free,
}

/// Whether `note` names for `delivery_id` the message `message_id`, or
/// the one it stands for.
fn names(note: &QueuedNote, delivery_id: &str, message_id: &str, stands_for: Option<&str>) -> bool {
    note.names(delivery_id, message_id) || stands_for.is_some_and(|m| note.names(delivery_id, m))
}

/// What `notes` (those listing `delivery_id`) say to `message_id` (which
/// stands for `stands_for`, if a copy).
pub(super) fn others(
    notes: &[QueuedNote],
    delivery_id: &str,
    message_id: &str,
    stands_for: Option<&str>,
) -> Others {
    if notes
        .iter()
        .any(|n| n.carries(delivery_id) && !names(n, delivery_id, message_id, stands_for))
    {
        return Others::Carried;
    }
    notes
        .iter()
        .filter(|n| n.contests(delivery_id))
        .filter_map(|n| n.confirmed_at)
        .max()
        .map_or(Others::Free, Others::Contested)
}

/// Whether `notes` (those listing the message's delivery) are only its own
/// note: the read its fan-out would have made to confirm that note, made
/// after the note's write all the same. A message whose unconfirmed note
/// is alone then creates the record owned by itself at once, before its
/// attempt (one conditional create: a message of another fan-out of the
/// same batch, which the note does not name, finds the record when it
/// stops waiting; a fan-out whose read comes later finds this note and
/// confirms its own contested). Otherwise it waits as for a note not
/// there, and then the notes decide (`Sender::after_others`).
fn alone_in(notes: &[QueuedNote], job: &Job<'_>) -> bool {
    notes
        .iter()
        .all(|n| job.task.queued.as_deref() == Some(n.key.as_str()))
}

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
            NoteSeen::Missing | NoteSeen::Unconfirmed(_) if !task.redriven => {
                self.note_soon(job).await
            }
            seen => seen,
        };
        // The delivery's notes, once read here.
        let mut read = None;
        let note = match note {
            NoteSeen::Unconfirmed(_) => {
                let notes = self.delivery_notes(job).await?;
                if alone_in(&notes, job) {
                    tracing::info!("its note is not confirmed, and no other lists the delivery: the record is created first");
                    return Ok(Unrecorded {
                        delivery: self.adopt(job).await?,
                        by_note: false,
                    });
                }
                read = Some(notes);
                NoteSeen::Missing
            }
            seen => seen,
        };
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        match note {
            // Too late for an attempt without a record: a contested
            // delivery's other messages take it over from STUCK_AFTER on,
            // so this one creates the record, as any lost chain's taker.
            NoteSeen::Lists(at) if !task.redriven && now + lease >= at + STUCK_AFTER => {
                tracing::info!("its note is too old for an attempt without a record; the record is created first");
            }
            // A copy of the message the note names (renewed, or redriven):
            // a receipt of that message may still be attempting without a
            // record, so the copy's attempt goes only after the record's
            // create (one conditional create: one owner).
            NoteSeen::Lists(_) if task.stands_for.is_some() => {
                tracing::info!("a copy of the message its note names; the record is created first");
            }
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
            NoteSeen::Contested if !task.redriven => return self.after_others(job, read).await,
            // The redrive net's copy of a message that its note does not
            // carry the delivery by (or that is contested): the notes
            // decide, as for that message, without waiting for a note (its
            // event is long past its settle window). A copy sent before
            // copies named the message they stand for adopts it, as then.
            NoteSeen::Missing | NoteSeen::Contested
                if task.redriven && task.stands_for.is_some() =>
            {
                return self.after_others(job, read).await;
            }
            NoteSeen::Missing if !task.redriven => {
                // The fan-out writes its note after its sends: looked at
                // again shortly, while the event is young enough to be
                // noted at all.
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
                // Its fan-out stopped before the note, or before it
                // confirmed it, or another fan-out's note names another
                // message: what the delivery's notes say decides.
                return self.after_others(job, read).await;
            }
            _ => {}
        }
        Ok(Unrecorded {
            delivery: self.adopt(job).await?,
            by_note: false,
        })
    }

    /// The notes that list the message's delivery (a strongly consistent
    /// range read); a failed read leaves the message for another try.
    async fn delivery_notes(&self, job: &Job<'_>) -> Result<Vec<QueuedNote>, MessageOutcome> {
        let task = &job.task;
        self.deliveries
            .noted(&task.org_id, std::slice::from_ref(&task.delivery_id))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not read the notes of a delivery without a record; retrying");
                MessageOutcome::Retry
            })
    }

    /// A message its note does not carry, no longer waiting for it: the
    /// delivery's notes decide. If another note carries the delivery (a
    /// replay's, or the other of two fan-outs at once), that note's message
    /// attempts it and this one is dropped. If notes found it contested
    /// (two fan-outs of overlapping events at once, each message named by
    /// its own note), the message of a note that did not see the other may
    /// still attempt it without a record until it would count as lost: this
    /// one waits until then, and creates the record (one conditional create
    /// for all of them), or finds the attempt's.
    /// `read`: the delivery's notes, if this receive read them already.
    async fn after_others(
        &self,
        job: &Job<'_>,
        read: Option<Vec<QueuedNote>>,
    ) -> Result<Unrecorded, MessageOutcome> {
        let task = &job.task;
        let notes = match read {
            Some(notes) => notes,
            None => self.delivery_notes(job).await?,
        };
        match others(
            &notes,
            &task.delivery_id,
            &job.message.message_id,
            task.stands_for.as_deref(),
        ) {
            Others::Carried => {
                tracing::info!(
                    "another fan-out's message carries this delivery; dropped without an attempt"
                );
                return Err(MessageOutcome::Done);
            }
            Others::Contested(at) => {
                let now = self.clock.now();
                if let Ok(left) = (at + STUCK_AFTER - now).to_std() {
                    if !left.is_zero() {
                        // Just past the moment, so that the next look finds
                        // it passed.
                        let wait = left.saturating_add(Duration::from_secs(1));
                        if let Err(e) = self
                            .queue
                            .change_visibility(&job.message.receipt_handle, wait)
                            .await
                        {
                            tracing::warn!(error = %e, "could not hide a message of a contested delivery");
                        }
                        tracing::info!(wait_s = wait.as_secs(), "two fan-outs noted this delivery at once; it waits until no message can attempt it without a record");
                        return Err(MessageOutcome::Retry);
                    }
                }
            }
            Others::Free => {}
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
        let mut last = NoteSeen::Missing;
        for wait in NOTE_RETRIES {
            tokio::time::sleep(wait).await;
            match self.deliveries.notes(&keys).await {
                Ok(notes) => {
                    last = NoteSeen::of(
                        notes.first(),
                        &job.task.delivery_id,
                        &job.message.message_id,
                        job.task.stands_for.as_deref(),
                    );
                    if !matches!(last, NoteSeen::Missing | NoteSeen::Unconfirmed(_)) {
                        return last;
                    }
                }
                Err(_) => return NoteSeen::Unread,
            }
        }
        last
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
