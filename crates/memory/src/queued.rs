//! The stream fan-out's notes of queued deliveries
//! ([`webhooks_domain::queued`]), as the DynamoDB adapter keeps them in the
//! deliveries table: one item per (org, key), found by org and minute,
//! refused over DynamoDB's item size, and gone after the records' time to
//! live (and, in `webhooks dev`, past the same bound on their count as the
//! finished deliveries).

use crate::deliveries::MAX_ITEM_BYTES;
use crate::expiry::Retention;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet, VecDeque};
use webhooks_domain::queued::{noted_ranges, QueuedNote};
use webhooks_ports::{BackendError, NotesPage};

type NoteKey = (String, String);

/// The notes, by (org, key), and in the order they were written.
#[derive(Default)]
pub(crate) struct Notes {
    by_key: BTreeMap<NoteKey, QueuedNote>,
    written: VecDeque<(DateTime<Utc>, NoteKey)>,
}

/// The size DynamoDB counts for a note's item: each attribute's name and
/// value (`endpoint_id` = `queued#<org>`, `event_id` = the key, `d` = each
/// delivery id without its `dlv_`, a `:` and its message id, `created_at`,
/// `expires_at`).
pub fn note_item_size(note: &QueuedNote) -> usize {
    let ids: usize = note
        .delivery_ids
        .iter()
        .zip(&note.messages)
        .map(|(d, m)| d.strip_prefix("dlv_").unwrap_or(d).len() + 1 + m.len())
        .sum();
    "endpoint_id".len()
        + "queued#".len()
        + note.org_id.len()
        + "event_id".len()
        + note.key.len()
        + "d".len()
        + ids
        + "created_at".len()
        + 20
        + "expires_at".len()
        + 11
}

impl Notes {
    pub(crate) fn write(
        &mut self,
        note: &QueuedNote,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let size = note_item_size(note);
        if size > MAX_ITEM_BYTES {
            return Err(BackendError::Permanent(format!(
                "ValidationException: item size {size} has exceeded the maximum allowed size of {MAX_ITEM_BYTES}"
            )));
        }
        if note.delivery_ids.len() != note.messages.len() {
            return Err(BackendError::Permanent(
                "a note names one message per delivery".into(),
            ));
        }
        if note.delivery_ids.is_empty() {
            return Err(BackendError::Permanent(
                "ValidationException: an empty string set is not allowed".into(),
            ));
        }
        self.expire(retention, now);
        let key = (note.org_id.clone(), note.key.clone());
        if self
            .by_key
            .get(&key)
            .is_some_and(|n| self.live(n, retention, now))
        {
            return Ok(false);
        }
        // A string set: each (delivery, message) once.
        let mut seen = HashSet::new();
        let (delivery_ids, messages) = note
            .delivery_ids
            .iter()
            .zip(&note.messages)
            .filter(|(d, m)| seen.insert(((*d).clone(), (*m).clone())))
            .map(|(d, m)| (d.clone(), m.clone()))
            .unzip();
        let stored = QueuedNote {
            delivery_ids,
            messages,
            ..note.clone()
        };
        self.by_key.insert(key.clone(), stored);
        self.written.push_back((note.created_at, key));
        Ok(true)
    }

    /// Of `delivery_ids`, those a note of `org_id` lists.
    pub(crate) fn noted(
        &self,
        org_id: &str,
        delivery_ids: &[String],
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let wanted: HashSet<&str> = delivery_ids.iter().map(String::as_str).collect();
        let mut found: HashSet<String> = HashSet::new();
        for (from, to) in noted_ranges(delivery_ids) {
            let from = (org_id.to_string(), from);
            let to = (org_id.to_string(), to);
            for note in self.by_key.range(from..=to).map(|(_, n)| n) {
                if !self.live(note, retention, now) {
                    continue;
                }
                for d in &note.delivery_ids {
                    if wanted.contains(d.as_str()) {
                        found.insert(d.clone());
                    }
                }
            }
        }
        let mut found: Vec<String> = found.into_iter().collect();
        found.sort_unstable();
        found
    }

    pub(crate) fn get(
        &self,
        keys: &[(String, String)],
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Vec<QueuedNote> {
        let mut keys: Vec<&(String, String)> = keys.iter().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| self.by_key.get(k))
            .filter(|n| self.live(n, retention, now))
            .cloned()
            .collect()
    }

    pub(crate) fn between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> NotesPage {
        let lower = (org_id.to_string(), format!("{from}#"));
        let upper = (org_id.to_string(), format!("{to}$"));
        if lower > upper {
            return NotesPage::default();
        }
        let mut notes: Vec<QueuedNote> = Vec::new();
        let mut more = false;
        for note in self.by_key.range(lower..upper).map(|(_, n)| n) {
            if !self.live(note, retention, now) {
                continue;
            }
            if notes.len() >= limit {
                more = true;
                break;
            }
            notes.push(note.clone());
        }
        NotesPage { notes, more }
    }

    fn live(&self, note: &QueuedNote, retention: &Retention, now: DateTime<Utc>) -> bool {
        note.created_at + retention.ttl > now
    }

    /// Removes the notes past the time to live, and the oldest past the
    /// bound on the count.
    fn expire(&mut self, retention: &Retention, now: DateTime<Utc>) {
        while let Some((at, key)) = self.written.front() {
            let over = retention.max_kept.is_some_and(|m| self.written.len() >= m);
            if *at + retention.ttl > now && !over {
                break;
            }
            self.by_key.remove(key);
            self.written.pop_front();
        }
    }
}
