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
//! the ones it names, and give way. Two fan-outs of overlapping but
//! different batches make different keys: each confirms its note after
//! reading the notes again ([`Listings::contested`]), and a delivery two notes
//! list is carried by at most one of them ([`QueuedNote::carries`]).

use crate::ids;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Deliveries one note lists at most: 36. The DynamoDB adapter deflates
/// a note's entries to about 22 bytes a delivery at worst (one endpoint:
/// a random event id and message tag each), so a full note with its keys
/// and times, confirmed, stays under 1 KB (about 910 bytes, with room for
/// a longer org id or a contested delivery): its write and its
/// confirmation are one write unit each, and its readers read one unit. A
/// note of 60, until stop 38, took some 1.2 KB: two write units for each
/// of its two writes. Fewer per note would add writes without saving
/// units.
pub const NOTE_CAPACITY: usize = 36;

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
    /// The deliveries whose messages were sent, each once. Shared: a note
    /// read out of a store is handed out without copying its lists.
    pub delivery_ids: Arc<[String]>,
    /// The queue message sent for each delivery, in the same order, as its
    /// [`message_tag`].
    pub messages: Arc<[String]>,
    pub created_at: DateTime<Utc>,
    /// When its fan-out confirmed it: having written it, the fan-out read
    /// the notes of its deliveries again and set down which of them another
    /// note lists too ([`QueuedNote::contested`]). Until then its messages
    /// wait: an unconfirmed note names no message for a first attempt.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The deliveries it lists that the confirming read found listed by
    /// another note as well (two fan-outs of overlapping batches at once).
    /// Its messages of them make no attempt without a record.
    pub contested: Vec<String>,
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

    /// Whether the confirming read found `delivery_id` listed by another
    /// note too.
    pub fn contests(&self, delivery_id: &str) -> bool {
        self.contested.iter().any(|d| d == delivery_id)
    }

    /// Whether the message this note names for `delivery_id` makes its
    /// first attempt without a record: the note is confirmed, lists it,
    /// and no other note does.
    pub fn carries(&self, delivery_id: &str) -> bool {
        self.confirmed_at.is_some() && self.lists(delivery_id) && !self.contests(delivery_id)
    }
}

/// Which notes list each delivery, of notes read once: finds the
/// contested deliveries of many notes against the same read without
/// going through every other note's list for each delivery (a fan-out
/// confirms some fifteen notes of 36 deliveries per batch against one read).
#[derive(Debug, Default)]
pub struct Listings<'a> {
    /// (org, delivery) -> the key of the one note that lists it, or `None`
    /// when notes of two keys do.
    by_delivery: std::collections::HashMap<(&'a str, &'a str), Option<&'a str>>,
}

impl<'a> Listings<'a> {
    pub fn of(notes: &'a [QueuedNote]) -> Self {
        let mut by_delivery = std::collections::HashMap::with_capacity(
            notes.iter().map(|n| n.delivery_ids.len()).sum(),
        );
        for n in notes {
            for d in n.delivery_ids.iter() {
                by_delivery
                    .entry((n.org_id.as_str(), d.as_str()))
                    .and_modify(|key: &mut Option<&str>| {
                        if *key != Some(n.key.as_str()) {
                            *key = None;
                        }
                    })
                    .or_insert(Some(n.key.as_str()));
            }
        }
        Listings { by_delivery }
    }

    /// Of the deliveries `own` lists, in its order, those that a note of
    /// its org under another key lists too: what a fan-out's confirming
    /// read of `own` sets down as contested.
    ///
    /// Why this closes the door of two fan-outs of overlapping batches at
    /// once: each writes its note, then reads the notes of its deliveries
    /// (strongly consistent). Of two such calls, the one whose read comes
    /// second finds the other's note, so at most one of them confirms a
    /// delivery uncontested; a message of a contested delivery waits until
    /// any other note's message could no longer make an attempt without a
    /// record, and then creates the record (one conditional create).
    pub fn contested(&self, own: &QueuedNote) -> Vec<String> {
        own.delivery_ids
            .iter()
            .filter(|d| {
                match self.by_delivery.get(&(own.org_id.as_str(), d.as_str())) {
                    None => false,
                    Some(Some(key)) => *key != own.key,
                    // Two keys list it: at least one is not `own`'s.
                    Some(None) => true,
                }
            })
            .cloned()
            .collect()
    }
}

/// Of `wanted`, those that one of `notes` lists, each once, sorted.
pub fn listed(notes: &[QueuedNote], wanted: &[String]) -> Vec<String> {
    let mut found: Vec<String> = wanted
        .iter()
        .filter(|d| notes.iter().any(|n| n.lists(d)))
        .cloned()
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The minute of an event, from its id (`YYYYMMDDHHMM`; `x` for an id
/// that carries no time): the notes of an event's deliveries are found
/// under it.
pub fn minute_of_event(event_id: &str) -> String {
    match ids::made_at(event_id, "evt") {
        Some(t) => minute_text(t),
        None => "x".to_string(),
    }
}

/// `t`'s minute as `YYYYMMDDHHMM`, what `t.format("%Y%m%d%H%M")` writes,
/// without parsing the format each time (the fan-out and the sender name
/// an event's minute for every delivery they note or look up).
pub fn minute_text(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let Ok(year) = u32::try_from(t.year()) else {
        return t.format("%Y%m%d%H%M").to_string();
    };
    if year > 9999 {
        // chrono writes a sign before a year of five digits.
        return t.format("%Y%m%d%H%M").to_string();
    }
    let mut text = String::with_capacity(12);
    for (value, digits) in [
        (year, 4),
        (t.month(), 2),
        (t.day(), 2),
        (t.hour(), 2),
        (t.minute(), 2),
    ] {
        for place in (0..digits).rev() {
            let digit = value / 10u32.pow(place) % 10;
            text.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
    }
    text
}

/// The minute of a delivery's event, from the delivery's id.
pub fn minute_of_delivery(delivery_id: &str) -> String {
    match crate::delivery::parse_delivery_id(delivery_id) {
        Some((_, event_id)) => minute_of_event(&event_id),
        None => "x".to_string(),
    }
}

/// The seconds one note's events span at most, beyond its first: a note
/// lists deliveries of events made from its first second to this many
/// seconds after it (within one minute). A fan-out's batch (the stream's
/// batching window is 1 s) usually makes one note per org, and a replay
/// finds the notes listing its deliveries among those whose first second
/// is at most this much before its own events' (see [`noted_ranges`]), so
/// its read grows with its own batch, not with the org's rate.
pub const NOTE_SPAN_SECS: u32 = 2;

/// The second (0 to 59) of an event within its minute, from its id (0 for
/// an id that carries no time, whose minute is `x`).
pub fn second_of_event(event_id: &str) -> u32 {
    use chrono::Timelike;
    ids::made_at(event_id, "evt").map_or(0, |t| t.second())
}

/// The key of a note: the minute of its events and the second of its
/// first one, then the digest of the deliveries it groups, and the note's
/// place among that group's notes. Keys sort by minute, then second.
pub fn note_key(minute: &str, second: u32, digest: &str, part: usize) -> String {
    format!("{minute}#{second:02}.{digest}.{part}")
}

/// The ranges of note keys (`from`, `to`, both included) in which every
/// note listing one of `delivery_ids` lies: per minute of their events,
/// from [`NOTE_SPAN_SECS`] before their first second to their last.
pub fn noted_ranges(delivery_ids: &[String]) -> Vec<(String, String)> {
    use chrono::Timelike;
    use std::collections::BTreeMap;
    // First and last second per minute of the events (`None`: an event id
    // that carries no time, minute `x`, second 0). A batch's deliveries
    // come event by event, so an event's time is decoded once, and no
    // id is copied.
    let mut minutes: BTreeMap<Option<DateTime<Utc>>, (u32, u32)> = BTreeMap::new();
    let mut last: Option<(&str, Option<DateTime<Utc>>)> = None;
    for id in delivery_ids {
        let Some(event) = crate::delivery::event_body_of_delivery(id) else {
            continue;
        };
        let at = match last {
            Some((body, at)) if body == event => at,
            _ => ids::body_made_at(event),
        };
        last = Some((event, at));
        let minute = at.and_then(|t| t.with_nanosecond(0)?.with_second(0));
        let second = at.map_or(0, |t| t.second());
        minutes
            .entry(minute)
            .and_modify(|(a, b)| {
                *a = (*a).min(second);
                *b = (*b).max(second);
            })
            .or_insert((second, second));
    }
    let mut ranges: Vec<(String, (u32, u32))> = minutes
        .into_iter()
        .map(|(minute, seconds)| (minute.map_or_else(|| "x".to_string(), minute_text), seconds))
        .collect();
    ranges.sort_unstable();
    ranges
        .into_iter()
        .map(|(minute, (first, last))| {
            (
                format!("{minute}#{:02}", first.saturating_sub(NOTE_SPAN_SECS)),
                // `.` follows the second in a key; `/` is the next character.
                format!("{minute}#{last:02}/"),
            )
        })
        .collect()
}

/// A delivery in [`assign_notes`]: its org, its event's minute and
/// second, its event, its id, and its index among the items. Sorted, the
/// members of a group (org and minute) are together, in order of second,
/// then event by event: the order the fan-out sends their messages in.
type Member<'a> = (&'a str, &'a str, u32, &'a str, &'a str, usize);

/// Where each delivery goes among a fan-out call's notes: grouped by org
/// and minute of the event, then into spans of [`NOTE_SPAN_SECS`] from
/// the first event second of each, at most [`NOTE_CAPACITY`] per note,
/// under a key made from the group (the same deliveries make the same
/// keys, in whatever order they come). A note holds whole events where it
/// can (a span's deliveries fill it event by event), so the messages one
/// receive of the queue hands out together, sent one after the other,
/// name few notes: the sender reads each named note (a read unit each).
/// `items` are `(org, event id, delivery id)`; the answer gives, in the
/// same order, each one's note key.
pub fn assign_notes(items: &[(&str, &str, &str)]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    // Each event's minute and second, read from its id once for all its
    // deliveries (they come together, one per endpoint).
    let mut times: Vec<(&str, String, u32)> = Vec::new();
    let mut time_of = Vec::with_capacity(items.len());
    for (_, e, _) in items {
        if times.last().is_none_or(|(last, _, _)| last != e) {
            times.push((e, minute_of_event(e), second_of_event(e)));
        }
        time_of.push(times.len() - 1);
    }
    // One list, sorted into groups, instead of a list grown per group.
    let mut members: Vec<Member<'_>> = items
        .iter()
        .zip(time_of)
        .enumerate()
        .map(|(i, ((org, e, d), t))| {
            let (_, minute, second) = &times[t];
            (*org, minute.as_str(), *second, *e, *d, i)
        })
        .collect();
    members.sort_unstable();
    let mut keys = vec![String::new(); items.len()];
    let mut rest = members.as_slice();
    while let Some(&(org, minute, first, _, _, _)) = rest.first() {
        // The span from `first` within the group of (org, minute).
        let end = rest
            .iter()
            .position(|&(o, m, second, _, _, _)| {
                o != org || m != minute || second > first + NOTE_SPAN_SECS
            })
            .unwrap_or(rest.len());
        let (span, after) = rest.split_at(end);
        let mut hash = Sha256::new();
        for (_, _, _, _, d, _) in span {
            hash.update(d.as_bytes());
            hash.update(b"\n");
        }
        let digest = hex::encode(&hash.finalize()[..8]);
        for (n, (_, _, _, _, _, i)) in span.iter().enumerate() {
            keys[*i] = note_key(minute, first, &digest, n / NOTE_CAPACITY);
        }
        rest = after;
    }
    keys
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
            delivery_ids: vec!["d1".into()].into(),
            messages: vec![message_tag("4b5a-0f1e2d3c").into()].into(),
            created_at: Utc::now(),
            confirmed_at: None,
            contested: Vec::new(),
        };
        assert!(note.names("d1", "4b5a-0f1e2d3c"));
        assert!(!note.names("d1", "4b5a-99999999"));
        assert!(!note.names("d2", "4b5a-0f1e2d3c"));
    }

    fn listing(key: &str, ids: &[&str]) -> QueuedNote {
        QueuedNote {
            org_id: "o".into(),
            key: key.into(),
            delivery_ids: ids.iter().map(|d| d.to_string()).collect(),
            messages: ids.iter().map(|_| "m".to_string()).collect(),
            created_at: Utc::now(),
            confirmed_at: None,
            contested: Vec::new(),
        }
    }

    fn contested_by(own: &QueuedNote, others: &[QueuedNote]) -> Vec<String> {
        Listings::of(others).contested(own)
    }

    #[test]
    fn a_delivery_another_note_lists_is_contested() {
        let own = listing("k1", &["d1", "d2", "d3"]);
        let mut other_org = listing("k3", &["d3"]);
        other_org.org_id = "p".into();
        let others = [own.clone(), listing("k2", &["d2", "d9"]), other_org];
        assert_eq!(contested_by(&own, &others), vec!["d2".to_string()]);
        assert!(contested_by(&own, std::slice::from_ref(&own)).is_empty());
        // The same note read twice is still one key.
        assert!(contested_by(&own, &[own.clone(), own.clone()]).is_empty());
        // Two other keys, and own's among three.
        let three = [own.clone(), listing("k2", &["d1"]), listing("k4", &["d1"])];
        assert_eq!(contested_by(&own, &three), vec!["d1".to_string()]);
        let two_others = [listing("k2", &["d3"]), listing("k4", &["d3"])];
        assert_eq!(contested_by(&own, &two_others), vec!["d3".to_string()]);
        assert_eq!(
            listed(
                &others,
                &["d9".into(), "d1".into(), "d7".into(), "d1".into()]
            ),
            vec!["d1".to_string(), "d9".to_string()]
        );
    }

    #[test]
    fn only_a_confirmed_note_carries_what_no_other_lists() {
        let mut note = listing("k1", &["d1", "d2"]);
        assert!(!note.carries("d1"), "unconfirmed");
        note.confirmed_at = Some(Utc::now());
        note.contested = vec!["d2".into()];
        assert!(note.carries("d1"));
        assert!(!note.carries("d2"), "contested");
        assert!(!note.carries("d3"), "not listed");
    }

    #[test]
    fn notes_split_by_org_minute_and_capacity() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T10:31:20.100Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = ids::id_at("evt", t, 1);
        let b = ids::id_at("evt", t + chrono::Duration::minutes(2), 2);
        let ids: Vec<String> = (0..NOTE_CAPACITY + 1).map(|i| format!("d{i}")).collect();
        let mut items: Vec<(&str, &str, &str)> =
            ids.iter().map(|d| ("o1", a.as_str(), d.as_str())).collect();
        items.push(("o2", &a, "d0"));
        items.push(("o1", &b, "d0"));
        let keys = assign_notes(&items);
        let m = minute_of_event(&a);
        let (digest, _) = keys[0]
            .strip_prefix(&format!("{m}#20."))
            .unwrap()
            .split_once('.')
            .unwrap();
        let first: Vec<&String> = keys[..=NOTE_CAPACITY].iter().collect();
        let full = format!("{m}#20.{digest}.0");
        let over = format!("{m}#20.{digest}.1");
        assert_eq!(first.iter().filter(|k| ***k == full).count(), NOTE_CAPACITY);
        assert_eq!(first.iter().filter(|k| ***k == over).count(), 1);
        assert!(keys[NOTE_CAPACITY + 1].starts_with(&format!("{m}#20.")));
        assert_ne!(keys[NOTE_CAPACITY + 1], keys[0], "another org's group");
        assert!(keys[NOTE_CAPACITY + 2].starts_with(&format!("{}#20.", minute_of_event(&b))));
        // The same deliveries, in another order, make the same keys, each
        // delivery under the same one.
        let mut again = items.clone();
        again.reverse();
        let mut k2 = assign_notes(&again);
        k2.reverse();
        assert_eq!(keys, k2);
    }

    /// Events `seconds` of one minute, one delivery each.
    fn events_at(seconds: &[u32]) -> Vec<(String, String)> {
        let minute = DateTime::parse_from_rfc3339("2026-12-05T10:31:00Z")
            .unwrap()
            .with_timezone(&Utc);
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = minute + chrono::Duration::milliseconds(i64::from(*s) * 1000 + 7);
                let event = ids::id_at("evt", at, i as u128);
                let delivery = crate::delivery::delivery_id(&ids::id_at("ep", at, 1), &event);
                (event, delivery)
            })
            .collect()
    }

    /// Five endpoints' deliveries of 20 events of one second, in the
    /// order the fan-out sends them (event by event): whole events fill
    /// each note, so ten messages sent one after the other (a receive of
    /// ten) name at most two notes. Sorted by delivery id (endpoint by
    /// endpoint), as before, they named five or six.
    #[test]
    fn a_note_holds_whole_events_in_the_order_their_messages_go() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T10:31:20.100Z")
            .unwrap()
            .with_timezone(&Utc);
        let endpoints: Vec<String> = (0..5).map(|i| ids::id_at("ep", t, i)).collect();
        let events: Vec<String> = (0..20).map(|i| ids::id_at("evt", t, 100 + i)).collect();
        let deliveries: Vec<(String, String)> = events
            .iter()
            .flat_map(|e| {
                endpoints
                    .iter()
                    .map(move |ep| (e.clone(), crate::delivery::delivery_id(ep, e)))
            })
            .collect();
        let items: Vec<(&str, &str, &str)> = deliveries
            .iter()
            .map(|(e, d)| ("o", e.as_str(), d.as_str()))
            .collect();
        let keys = assign_notes(&items);
        for window in keys.windows(10) {
            let mut named: Vec<&String> = window.iter().collect();
            named.sort();
            named.dedup();
            assert!(named.len() <= 2, "{named:?}");
        }
        // Each note but the last is full, and keys go in sending order.
        let mut counts: Vec<(String, usize)> = Vec::new();
        for k in &keys {
            match counts.last_mut() {
                Some((last, n)) if last == k => *n += 1,
                _ => counts.push((k.clone(), 1)),
            }
        }
        let sizes: Vec<usize> = counts.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            sizes,
            [NOTE_CAPACITY, NOTE_CAPACITY, 100 - 2 * NOTE_CAPACITY]
        );
    }

    #[test]
    fn a_note_spans_a_few_seconds_of_its_events() {
        let events = events_at(&[3, 4, 5, 6, 8, 30]);
        let items: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|(e, d)| ("o", e.as_str(), d.as_str()))
            .collect();
        let keys = assign_notes(&items);
        let firsts: Vec<&str> = keys.iter().map(|k| &k[13..15]).collect();
        assert_eq!(firsts, ["03", "03", "03", "06", "06", "30"]);
        assert_eq!(keys[0], keys[2]);
        assert_ne!(keys[2], keys[3]);
    }

    #[test]
    fn the_noted_ranges_hold_every_note_listing_the_deliveries() {
        // A batch's notes, then replays of parts of it (as a stream's
        // bisection or partial failure makes them): each finds the notes
        // that list its deliveries within its ranges, whatever notes the
        // first call made.
        let events = events_at(&[0, 1, 2, 2, 3, 7, 8, 11, 12, 13, 14, 40, 59]);
        let items: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|(e, d)| ("o", e.as_str(), d.as_str()))
            .collect();
        let keys = assign_notes(&items);
        for from in 0..events.len() {
            for to in from..events.len() {
                let replay: Vec<String> =
                    events[from..=to].iter().map(|(_, d)| d.clone()).collect();
                let ranges = noted_ranges(&replay);
                for key in &keys[from..=to] {
                    assert!(
                        ranges.iter().any(|(a, b)| a <= key && key <= b),
                        "{key} outside {ranges:?}"
                    );
                }
            }
        }
        // And a range reads no note that starts after its last second.
        let ranges = noted_ranges(&[events[7].1.clone()]);
        assert_eq!(ranges.len(), 1);
        assert!(keys[11].as_str() > ranges[0].1.as_str());
        assert!(keys[4].as_str() < ranges[0].0.as_str());
    }

    /// `noted_ranges` as first written: every id parsed and every time
    /// formatted with chrono's `%Y%m%d%H%M`.
    fn noted_ranges_by_chrono(delivery_ids: &[String]) -> Vec<(String, String)> {
        use std::collections::BTreeMap;
        let mut seconds: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for id in delivery_ids {
            let Some((_, event_id)) = crate::delivery::parse_delivery_id(id) else {
                continue;
            };
            let at = ids::made_at(&event_id, "evt");
            let minute = at.map_or_else(|| "x".to_string(), |t| t.format("%Y%m%d%H%M").to_string());
            let second = at.map_or(0, |t| chrono::Timelike::second(&t));
            seconds
                .entry(minute)
                .and_modify(|(a, b)| {
                    *a = (*a).min(second);
                    *b = (*b).max(second);
                })
                .or_insert((second, second));
        }
        seconds
            .into_iter()
            .map(|(minute, (first, last))| {
                (
                    format!("{minute}#{:02}", first.saturating_sub(NOTE_SPAN_SECS)),
                    format!("{minute}#{last:02}/"),
                )
            })
            .collect()
    }

    #[test]
    fn a_minute_is_written_as_chrono_writes_it() {
        let mut times: Vec<DateTime<Utc>> =
            [0_i64, 59_999, 60_000, 951_782_400_000, 4_102_444_799_999]
                .iter()
                .filter_map(|ms| DateTime::from_timestamp_millis(*ms))
                .collect();
        // The last millisecond a ULID carries is in the year 10889.
        times.extend(DateTime::from_timestamp_millis((1_i64 << 48) - 1));
        times.extend(DateTime::from_timestamp_millis(253_402_300_799_999));
        times.extend(DateTime::from_timestamp_millis(253_402_300_800_000));
        for _ in 0..2000 {
            let ms = rand::random::<u64>() % (1_u64 << 48);
            times.extend(DateTime::from_timestamp_millis(i64::try_from(ms).unwrap()));
        }
        for t in times {
            assert_eq!(minute_text(t), t.format("%Y%m%d%H%M").to_string(), "{t}");
        }
    }

    #[test]
    fn the_noted_ranges_are_those_chrono_gave() {
        // Batches of events at random times over a few minutes, each
        // event's deliveries together, with ids that carry no time and ids
        // that are no delivery's mixed in.
        for round in 0..200 {
            let base = 1_700_000_000_000_i64 + round * 7_919;
            let mut ids: Vec<String> = Vec::new();
            for _ in 0..(round % 40 + 1) {
                let at = DateTime::from_timestamp_millis(
                    base + i64::from(rand::random::<u32>() % 240_000),
                )
                .unwrap();
                let event = ids::id_at("evt", at, rand::random::<u128>());
                for _ in 0..(round % 5 + 1) {
                    let endpoint = ids::new_id("ep");
                    ids.push(crate::delivery::delivery_id(&endpoint, &event));
                }
            }
            if round % 7 == 0 {
                // A body of the right shape that is no ULID (`u`).
                ids.push(format!("dlv_{}", "u".repeat(52)));
                ids.push("not a delivery".to_string());
            }
            assert_eq!(
                noted_ranges(&ids),
                noted_ranges_by_chrono(&ids),
                "round {round}"
            );
        }
    }
}
