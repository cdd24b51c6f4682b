//! The stream fan-out's notes of the deliveries it queued.
//!
//! A delivery the stream fans out has no record until its first attempt:
//! the outcome of that attempt creates it (one write per delivery on the
//! happy path, instead of a create before the POST and a record after).
//! What says that such a delivery exists, and is queued, is a note: one
//! item per org, minute of its events and fan-out call, listing the
//! deliveries whose messages that call sent. A replayed fan-out and the
//! sweeper read the notes so that they queue no second message; the API
//! shows a noted delivery without a record as `pending`; and the sender
//! makes the first attempt of a delivery without a record only for the
//! message its note names for it (the note's key is in the message).
//!
//! A note's key is made from what it lists (the minute, and a digest of its
//! deliveries), and its write is conditional: two fan-outs of the same
//! batch at once (the stream handing a batch over twice) make the same key,
//! and only the first one's note is written; the other's messages are not
//! the ones it names, and give way.

use crate::ids;
use chrono::{DateTime, Utc};

/// Deliveries one note lists at most: 60 entries of 61 bytes and the
/// item's keys fit in 4 KB, one read unit, so that a sender batch that
/// reads the note of its messages reads about one unit per note (a
/// bigger note costs its readers a unit per 4 KB, every batch; the writes
/// are the same bytes either way).
pub const NOTE_CAPACITY: usize = 60;

/// How much of a message id a note keeps: enough to tell the messages of
/// one delivery apart (two fan-outs of one batch at once), short enough to
/// keep a note small. The end of the id: random in SQS's UUIDs, and the
/// part that differs in ids made by counting.
pub const MESSAGE_TAG_LEN: usize = 8;

/// The part of `message_id` a note keeps: its last [`MESSAGE_TAG_LEN`]
/// characters.
pub fn message_tag(message_id: &str) -> &str {
    let count = message_id.chars().count();
    match message_id
        .char_indices()
        .nth(count.saturating_sub(MESSAGE_TAG_LEN))
    {
        Some((start, _)) => &message_id[start..],
        None => message_id,
    }
}

/// A note of queued deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedNote {
    pub org_id: String,
    /// `<minute of its events>#<fan-out call>`: see [`note_key`].
    pub key: String,
    /// The deliveries whose messages were sent, each once.
    pub delivery_ids: Vec<String>,
    /// The queue message sent for each delivery, in the same order, as its
    /// [`message_tag`].
    pub messages: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl QueuedNote {
    /// Whether the note lists `delivery_id`.
    pub fn lists(&self, delivery_id: &str) -> bool {
        self.delivery_ids.iter().any(|d| d == delivery_id)
    }

    /// The tag of the message the note names for `delivery_id`, if it
    /// lists it.
    pub fn owner(&self, delivery_id: &str) -> Option<&str> {
        self.delivery_ids
            .iter()
            .position(|d| d == delivery_id)
            .and_then(|i| self.messages.get(i))
            .map(String::as_str)
    }

    /// Whether the note names `message_id` for `delivery_id`.
    pub fn names(&self, delivery_id: &str, message_id: &str) -> bool {
        self.owner(delivery_id) == Some(message_tag(message_id))
    }
}

/// The minute of an event, from its id (`YYYYMMDDHHMM`; `x` for an id
/// that carries no time): the notes of an event's deliveries are found
/// under it.
pub fn minute_of_event(event_id: &str) -> String {
    match ids::made_at(event_id, "evt") {
        Some(t) => t.format("%Y%m%d%H%M").to_string(),
        None => "x".to_string(),
    }
}

/// The minute of a delivery's event, from the delivery's id.
pub fn minute_of_delivery(delivery_id: &str) -> String {
    match crate::delivery::parse_delivery_id(delivery_id) {
        Some((_, event_id)) => minute_of_event(&event_id),
        None => "x".to_string(),
    }
}

/// The key of a note: the minute of its events, then the digest of what
/// its fan-out call queued of that org and minute, and the note's place
/// among that call's notes of the minute.
pub fn note_key(minute: &str, digest: &str, part: usize) -> String {
    format!("{minute}#{digest}.{part}")
}

/// Where each delivery goes among a fan-out call's notes: grouped by org
/// and minute of the event, at most [`NOTE_CAPACITY`] per note, under a
/// key made from the group (the same deliveries make the same keys).
/// `items` are `(org, event id, delivery id)`; the answer gives, in the
/// same order, each one's note key.
pub fn assign_notes(items: &[(&str, &str, &str)]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    let minutes: Vec<String> = items.iter().map(|(_, e, _)| minute_of_event(e)).collect();
    let mut groups: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for ((org, _, d), minute) in items.iter().zip(&minutes) {
        groups.entry((*org, minute.as_str())).or_default().push(*d);
    }
    let digests: BTreeMap<(&str, &str), String> = groups
        .into_iter()
        .map(|(group, mut ids)| {
            ids.sort_unstable();
            let mut hash = Sha256::new();
            for id in ids {
                hash.update(id.as_bytes());
                hash.update(b"\n");
            }
            (group, hex::encode(&hash.finalize()[..8]))
        })
        .collect();
    let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    items
        .iter()
        .zip(&minutes)
        .map(|((org, _, _), minute)| {
            let group = (*org, minute.as_str());
            let n = count.entry(group).or_insert(0);
            let part = *n / NOTE_CAPACITY;
            *n += 1;
            note_key(minute, &digests[&group], part)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_minute_comes_from_its_id() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T10:31:59.900Z")
            .unwrap()
            .with_timezone(&Utc);
        let evt = ids::id_at("evt", t, 7);
        assert_eq!(minute_of_event(&evt), "202612051031");
        let dlv = crate::delivery::delivery_id(&ids::id_at("ep", t, 1), &evt);
        assert_eq!(minute_of_delivery(&dlv), "202612051031");
        assert_eq!(minute_of_event("evt_not-an-id"), "x");
    }

    #[test]
    fn a_note_keeps_a_tag_of_each_message() {
        assert_eq!(
            message_tag("0f1e2d3c-4b5a-4000-8000-00000a1b2c3d"),
            "0a1b2c3d"
        );
        assert_eq!(message_tag("msg-7"), "msg-7");
        // Ids made by counting differ at their end.
        assert_ne!(message_tag("msg-10276"), message_tag("msg-10278"));
        let note = QueuedNote {
            org_id: "o".into(),
            key: "k".into(),
            delivery_ids: vec!["d1".into()],
            messages: vec![message_tag("4b5a-0f1e2d3c").into()],
            created_at: Utc::now(),
        };
        assert!(note.names("d1", "4b5a-0f1e2d3c"));
        assert!(!note.names("d1", "4b5a-99999999"));
        assert!(!note.names("d2", "4b5a-0f1e2d3c"));
    }

    #[test]
    fn notes_split_by_org_minute_and_capacity() {
        let t = Utc::now();
        let a = ids::id_at("evt", t, 1);
        let b = ids::id_at("evt", t + chrono::Duration::minutes(2), 2);
        let ids: Vec<String> = (0..NOTE_CAPACITY + 1).map(|i| format!("d{i}")).collect();
        let mut items: Vec<(&str, &str, &str)> =
            ids.iter().map(|d| ("o1", a.as_str(), d.as_str())).collect();
        items.push(("o2", &a, "d0"));
        items.push(("o1", &b, "d0"));
        let keys = assign_notes(&items);
        let m = minute_of_event(&a);
        let (digest, part) = keys[0]
            .strip_prefix(&format!("{m}#"))
            .unwrap()
            .split_once('.')
            .unwrap();
        assert_eq!(part, "0");
        assert_eq!(keys[NOTE_CAPACITY - 1], format!("{m}#{digest}.0"));
        assert_eq!(keys[NOTE_CAPACITY], format!("{m}#{digest}.1"));
        assert!(keys[NOTE_CAPACITY + 1].starts_with(&format!("{m}#")));
        assert_ne!(keys[NOTE_CAPACITY + 1], keys[0], "another org's group");
        assert!(keys[NOTE_CAPACITY + 2].starts_with(&format!("{}#", minute_of_event(&b))));
        // The same deliveries, in another order, make the same keys.
        let mut again = items.clone();
        again.reverse();
        let mut k1 = assign_notes(&items);
        let mut k2 = assign_notes(&again);
        k1.sort();
        k2.sort();
        assert_eq!(k1, k2);
    }
}
