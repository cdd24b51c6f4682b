//! What a batch reads before its messages decide: the records of its
//! deliveries, and the notes of those without one that name a note
//! (`unrecorded`), in two rounds of reads at once.
//!
//! Most messages are the stream fan-out's, on their first receive, for a
//! delivery its note lists: a strong read of their records finds none and
//! costs a read unit each, the first try of nearly every delivery. So the
//! first round reads the notes of such messages beside the records of the
//! others, and the second reads, eventually consistently (half a unit), the
//! records of those whose note names them, beside the strong reads of the
//! rest and the notes of the others found without a record.
//!
//! Why the eventually consistent read is enough there: the note names
//! this very message, its first receive, so no attempt of it was made,
//! and while the note is young no one else creates the delivery's record
//! (the module `unrecorded` says who waits for what). What such a read
//! can miss is a record created within the last second or so, and two
//! makers could have made one: another receipt of this same message (an
//! SQS duplicate, already the door of at most one POST more) and a second
//! fan-out of the event that began just past the notes' deadline, when
//! this message had waited that long on the queue before its first
//! receive. A record missed so costs at most one POST more, with the same
//! `webhook-id`: the message attempts as its note says, its outcome's
//! create finds the record, and the message is left for its next receive
//! (`Sender::record_unleased_refused`), which reads strongly, as every
//! later one does, and goes by the record. A copy of a message (a
//! renewal's, the redrive net's), which may find a record made a moment
//! ago, is never named by a note and always reads strongly.

use super::unrecorded::NoteSeen;
use super::{Job, Sender};
use rustc_hash::FxHashMap;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::Delivery;
use webhooks_ports::BackendError;

/// A note by (org, key).
pub(super) type Notes = FxHashMap<(String, String), QueuedNote>;

/// What a batch read.
pub(super) struct BatchRead {
    /// The records found, by delivery id.
    pub deliveries: FxHashMap<String, Delivery>,
    /// The notes named by the messages whose delivery has no record.
    pub notes: Result<Notes, BackendError>,
}

/// Whether `job` is a candidate for the eventually consistent read: its
/// message's first receive, naming a note, not a copy. Its note decides.
fn first_receive_of_noted(job: &Job<'_>) -> bool {
    job.message.receive_count <= 1
        && job.task.queued.is_some()
        && job.task.stands_for.is_none()
        && !job.task.redriven
}

/// The (org, key) of the note `job` names, if any.
fn note_key(job: &Job<'_>) -> Option<(String, String)> {
    job.task
        .queued
        .as_ref()
        .map(|k| (job.task.org_id.clone(), k.clone()))
}

/// Whether `notes` hold the note `key` and it names `job`'s message for
/// its delivery.
fn named(notes: &Notes, key: &(String, String), job: &Job<'_>) -> bool {
    !matches!(
        NoteSeen::of(
            notes.get(key),
            &job.task.delivery_id,
            &job.message.message_id,
            job.task.stands_for.as_deref(),
        ),
        NoteSeen::Missing
    )
}

fn ids<'a, 'b: 'a>(jobs: impl IntoIterator<Item = &'a Job<'b>>) -> Vec<String> {
    jobs.into_iter()
        .map(|j| j.task.delivery_id.clone())
        .collect()
}

impl Sender {
    /// The batch's reads (see the module's documentation). A failed read
    /// of records fails the whole; a failed read of notes is kept as the
    /// batch's notes' error, for the messages that needed them.
    pub(super) async fn read_batch<'a>(
        &self,
        jobs: impl Iterator<Item = &'a Job<'a>>,
    ) -> Result<BatchRead, BackendError> {
        // Each first receive with its note's key (it names one), built once.
        let mut first: Vec<(&Job<'_>, (String, String))> = Vec::new();
        let mut others: Vec<&Job<'_>> = Vec::new();
        for job in jobs {
            match note_key(job).filter(|_| first_receive_of_noted(job)) {
                Some(key) => first.push((job, key)),
                None => others.push(job),
            }
        }
        let first_keys: Vec<(String, String)> = first.iter().map(|(_, k)| k.clone()).collect();
        let (recorded, first_notes) = futures::join!(
            self.records(ids(others.iter().copied()), false),
            self.read_notes(first_keys),
        );
        let mut deliveries = recorded?;

        let (eventual, strong): (Vec<_>, Vec<_>) = first
            .iter()
            .partition(|(j, key)| first_notes.as_ref().is_ok_and(|n| named(n, key, j)));
        let (eventual, strong) = (
            eventual.into_iter().map(|(j, _)| *j),
            strong.into_iter().map(|(j, _)| *j),
        );
        let other_keys: Vec<(String, String)> = others
            .iter()
            .filter(|j| !deliveries.contains_key(&j.task.delivery_id))
            .filter_map(|j| note_key(j))
            .collect();
        let (eventual, strong, other_notes) = futures::join!(
            self.records(ids(eventual), true),
            self.records(ids(strong), false),
            self.read_notes(other_keys),
        );
        deliveries.extend(eventual?);
        deliveries.extend(strong?);
        let notes = match (first_notes, other_notes) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Ok(a)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        Ok(BatchRead { deliveries, notes })
    }

    /// The records of `ids`, eventually consistent or not; no request for
    /// none.
    async fn records(
        &self,
        ids: Vec<String>,
        eventually: bool,
    ) -> Result<FxHashMap<String, Delivery>, BackendError> {
        let found = match (ids.is_empty(), eventually) {
            (true, _) => Vec::new(),
            (false, true) => self.deliveries.get_many_eventually(&ids).await?,
            (false, false) => self.deliveries.get_many(&ids).await?,
        };
        Ok(found.into_iter().map(|d| (d.id.clone(), d)).collect())
    }

    /// The notes of `keys`; no request for none.
    async fn read_notes(&self, keys: Vec<(String, String)>) -> Result<Notes, BackendError> {
        if keys.is_empty() {
            return Ok(Notes::default());
        }
        let notes = self.deliveries.notes(&keys).await?;
        Ok(notes
            .into_iter()
            .map(|n| ((n.org_id.clone(), n.key.clone()), n))
            .collect())
    }
}
