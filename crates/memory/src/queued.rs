//! The stream fan-out's notes of queued deliveries
//! ([`webhooks_domain::queued`]), as the DynamoDB adapter keeps them in the
//! deliveries table: one item per (org, key), found by org and key range,
//! refused over DynamoDB's item size, and gone after the records' time to
//! live (and, in `webhooks dev`, past the same bound on their count as the
//! finished deliveries).

use crate::deliveries::MAX_ITEM_BYTES;
use crate::expiry::Retention;
use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashSet, VecDeque};
use webhooks_domain::queued::{noted_ranges, QueuedNote};
use webhooks_ports::{BackendError, NotesPage};

type NoteKey = (String, String);

/// The notes, by (org, key), and in the order they were written.
#[derive(Default)]
pub(crate) struct Notes {
    by_key: BTreeMap<NoteKey, QueuedNote>,
    written: VecDeque<(DateTime<Utc>, NoteKey)>,
    /// org -> delivery id -> the keys of the notes that list it: what
    /// [`Notes::noted`] finds is what DynamoDB's range read finds, without
    /// going through every note of the range (`webhooks dev` at thousands
    /// of deliveries a second in one org). By org first, so that a lookup
    /// borrows its keys instead of building them.
    /// FxHash, as the expiry's map: ids the system made.
    by_delivery: FxHashMap<String, FxHashMap<String, Vec<String>>>,
}

/// The size DynamoDB counts for a note's item, at most: each attribute's
/// name and value (`endpoint_id` = `queued#<org>`, `event_id` = the key,
/// `d` = each delivery id without its `dlv_`, a `:` and its message tag,
/// `created_at`, `expires_at`). The DynamoDB adapter stores `d`'s lines
/// deflated, about a third of this text; the text is the bound, so what
/// this store takes DynamoDB takes too.
pub fn note_item_size(note: &QueuedNote) -> usize {
    let ids: usize = note
        .delivery_ids
        .iter()
        .zip(note.messages.iter())
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
        + note.confirmed_at.map_or(0, |_| "c".len() + 20)
        + note
            .contested
            .iter()
            .map(|d| d.strip_prefix("dlv_").unwrap_or(d).len())
            .sum::<usize>()
        + if note.contested.is_empty() {
            0
        } else {
            "x".len()
        }
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
        // A string set: each (delivery, message) once. A note without a
        // repeat (every one the fan-out writes) keeps its shared lists.
        let mut seen = HashSet::new();
        let pairs = || note.delivery_ids.iter().zip(note.messages.iter());
        let stored = if pairs().all(|pair| seen.insert(pair)) {
            note.clone()
        } else {
            seen.clear();
            let (delivery_ids, messages): (Vec<String>, Vec<String>) = pairs()
                .filter(|pair| seen.insert(*pair))
                .map(|(d, m)| (d.clone(), m.clone()))
                .unzip();
            QueuedNote {
                delivery_ids: delivery_ids.into(),
                messages: messages.into(),
                ..note.clone()
            }
        };
        let index = match self.by_delivery.get_mut(note.org_id.as_str()) {
            Some(index) => index,
            None => self.by_delivery.entry(note.org_id.clone()).or_default(),
        };
        for d in stored.delivery_ids.iter() {
            match index.get_mut(d.as_str()) {
                Some(keys) => keys.push(note.key.clone()),
                None => {
                    index.insert(d.clone(), vec![note.key.clone()]);
                }
            }
        }
        if let Some(old) = self.by_key.insert(key.clone(), stored) {
            self.unindex(&old);
        }
        self.written.push_back((note.created_at, key));
        Ok(true)
    }

    /// The notes of `org_id` in the ranges DynamoDB reads that list one
    /// of `delivery_ids`, each once, in key order.
    pub(crate) fn noted(
        &self,
        org_id: &str,
        delivery_ids: &[String],
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Vec<QueuedNote> {
        let ranges = noted_ranges(delivery_ids);
        let in_range = |key: &str| {
            ranges
                .iter()
                .any(|(a, b)| a.as_str() <= key && key <= b.as_str())
        };
        let mut found: BTreeMap<&str, &QueuedNote> = BTreeMap::new();
        let Some(index) = self.by_delivery.get(org_id) else {
            return Vec::new();
        };
        for id in delivery_ids {
            let Some(keys) = index.get(id.as_str()) else {
                continue;
            };
            for key in keys {
                if !in_range(key) || found.contains_key(key.as_str()) {
                    continue;
                }
                if let Some(n) = self
                    .by_key
                    .get(&(org_id.to_string(), key.clone()))
                    .filter(|n| self.live(n, retention, now))
                {
                    found.insert(key, n);
                }
            }
        }
        found.into_values().cloned().collect()
    }

    /// Confirms a live note, as DynamoDB's conditional update would:
    /// `false` if there is none, refused past the item size.
    pub(crate) fn confirm(
        &mut self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let k = (org_id.to_string(), key.to_string());
        let Some(note) = self.by_key.get(&k).filter(|n| self.live(n, retention, now)) else {
            return Ok(false);
        };
        let mut contested = contested.to_vec();
        contested.sort_unstable();
        contested.dedup();
        let confirmed = QueuedNote {
            confirmed_at: Some(at),
            contested,
            ..note.clone()
        };
        let size = note_item_size(&confirmed);
        if size > MAX_ITEM_BYTES {
            return Err(BackendError::Permanent(format!(
                "ValidationException: item size {size} has exceeded the maximum allowed size of {MAX_ITEM_BYTES}"
            )));
        }
        self.by_key.insert(k, confirmed);
        Ok(true)
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

    /// Takes a note that is gone out of the index by delivery.
    fn unindex(&mut self, note: &QueuedNote) {
        let Some(index) = self.by_delivery.get_mut(note.org_id.as_str()) else {
            return;
        };
        for d in note.delivery_ids.iter() {
            if let Some(keys) = index.get_mut(d.as_str()) {
                keys.retain(|k| k != &note.key);
                if keys.is_empty() {
                    index.remove(d.as_str());
                }
            }
        }
        if index.is_empty() {
            self.by_delivery.remove(note.org_id.as_str());
        }
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
            if let Some(note) = self.by_key.remove(key) {
                self.unindex(&note);
            }
            self.written.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use webhooks_domain::queued::{minute_of_event, note_key, second_of_event};

    fn note(org: &str, event: &str, call: &str, ids: &[String], at: DateTime<Utc>) -> QueuedNote {
        QueuedNote {
            org_id: org.into(),
            key: note_key(&minute_of_event(event), second_of_event(event), call, 0),
            delivery_ids: ids.to_vec().into(),
            messages: ids.iter().map(|_| "m".to_string()).collect(),
            created_at: at,
            confirmed_at: None,
            contested: Vec::new(),
        }
    }

    #[test]
    fn a_note_gone_past_its_ttl_or_the_bound_lists_nothing_any_more() {
        let now = Utc::now();
        let retention = Retention {
            ttl: Duration::hours(1),
            max_kept: Some(3),
        };
        let event = webhooks_domain::ids::new_id_at("evt", now);
        let endpoints: Vec<String> = (0..4).map(|_| webhooks_domain::ids::new_id("ep")).collect();
        let d = |i: usize| webhooks_domain::delivery::delivery_id(&endpoints[i], &event);
        let mut notes = Notes::default();
        for i in 0..3 {
            let n = note("o", &event, &format!("c{i}"), &[d(i)], now);
            assert!(notes.write(&n, &retention, now).unwrap());
        }
        let all: Vec<String> = (0..4).map(d).collect();
        let mut first = vec![d(0), d(1), d(2)];
        first.sort();
        let listed = |notes: &Notes, at| {
            webhooks_domain::queued::listed(&notes.noted("o", &all, &retention, at), &all)
        };
        assert_eq!(listed(&notes, now), first);
        assert!(notes.noted("other", &all, &retention, now).is_empty());
        // A fourth note pushes the first out (the bound on the count).
        let n = note("o", &event, "c3", &[d(3)], now);
        assert!(notes.write(&n, &retention, now).unwrap());
        assert!(!listed(&notes, now).contains(&d(0)));
        assert_eq!(notes.indexed(), 3, "the index follows the notes");
        // Past the TTL, nothing is listed, and the index empties with the
        // notes at the next write.
        let later = now + Duration::hours(2);
        assert!(listed(&notes, later).is_empty());
        let n = note("o", &event, "c4", &[d(0)], later);
        assert!(notes.write(&n, &retention, later).unwrap());
        assert_eq!(notes.indexed(), 1);
        assert_eq!(listed(&notes, later), vec![d(0)]);
        // The last note of an org gone, the org leaves the index too.
        let later = later + Duration::hours(2);
        let n = note("p", &event, "c5", &[d(1)], later);
        assert!(notes.write(&n, &retention, later).unwrap());
        assert_eq!(notes.by_delivery.keys().collect::<Vec<_>>(), ["p"]);
    }

    impl Notes {
        /// The (org, delivery) pairs indexed.
        fn indexed(&self) -> usize {
            self.by_delivery.values().map(FxHashMap::len).sum()
        }
    }

    use std::sync::Arc;

    #[test]
    fn a_repeated_pair_is_stored_once_and_a_note_without_one_keeps_its_lists() {
        let now = Utc::now();
        let retention = Retention {
            ttl: Duration::hours(1),
            max_kept: None,
        };
        let event = webhooks_domain::ids::new_id_at("evt", now);
        let d =
            || webhooks_domain::delivery::delivery_id(&webhooks_domain::ids::new_id("ep"), &event);
        let (a, b) = (d(), d());
        let mut notes = Notes::default();
        // As a string set: the repeated (delivery, message) pair once.
        let repeated = note("o", &event, "c0", &[a.clone(), b.clone(), a.clone()], now);
        assert!(notes.write(&repeated, &retention, now).unwrap());
        let stored = notes.get(&[("o".into(), repeated.key.clone())], &retention, now);
        assert_eq!(stored.len(), 1);
        assert_eq!(&stored[0].delivery_ids[..], &[a.clone(), b.clone()][..]);
        assert_eq!(stored[0].messages.len(), 2);
        // Without a repeat, the note is stored as it is, its lists shared.
        let plain = note("o", &event, "c1", &[a.clone(), b.clone()], now);
        assert!(notes.write(&plain, &retention, now).unwrap());
        let stored = notes.get(&[("o".into(), plain.key.clone())], &retention, now);
        assert_eq!(stored, vec![plain.clone()]);
        assert!(Arc::ptr_eq(&stored[0].delivery_ids, &plain.delivery_ids));
    }
}
