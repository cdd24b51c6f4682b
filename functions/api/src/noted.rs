//! Deliveries that a note lists and that have no record yet
//! ([`webhooks_domain::queued`]). The stream's fan-out queues a young
//! event's deliveries and notes them; each one's record is created by the
//! outcome of its first attempt. Until then the delivery is `pending`, and
//! the routes that show deliveries show it so (CONTRACT sections 4 and 12:
//! one delivery per endpoint and event, there as soon as the event is
//! fanned out). A record, once there, always wins over a note.

use crate::errors::ApiError;
use crate::Api;
use chrono::{DateTime, Duration, DurationRound, Utc};
use std::collections::{HashMap, HashSet};
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::queued::{minute_of_delivery, QueuedNote};
use webhooks_domain::{ids, Delivery, DeliveryStatus, EndpointSummary, Event};
use webhooks_ports::{cursor, Page, DELIVERIES_EXAMINED_PER_PAGE};

/// Notes asked for in one read.
const NOTES_PER_READ: usize = 100;

/// Most reads of notes one listing request makes: with a note per org,
/// minute and fan-out call, an org's notes of a long stretch are many, and
/// a request reads a bounded part of them. A listing that reaches the bound
/// ends its page where its reads stopped, with a `next_cursor` from there.
const MAX_NOTE_READS: usize = 20;

/// Most reads of the notes of the newest two minutes of a listing's
/// stretch, which are read to their end whatever [`MAX_NOTE_READS`] says,
/// so that every page moves on. Past it (an org whose fan-out wrote some
/// ten thousand notes in two minutes), the rest of those minutes' noted
/// deliveries are left out until their records exist.
const MAX_FIRST_READS: usize = 100;

/// The longest piece of a scan of notes, in minutes (about 45 days: notes
/// live 30).
const MAX_SPAN_MINUTES: i32 = 1 << 16;

/// Of `missing` (ids of deliveries of `org_id`'s events without a record),
/// those a note lists: the ones that are pending all the same.
pub(crate) async fn listed(
    api: &Api,
    org_id: &str,
    missing: &[String],
) -> Result<HashSet<String>, ApiError> {
    if missing.is_empty() {
        return Ok(HashSet::new());
    }
    let notes = api.deliveries.noted(org_id, missing).await?;
    Ok(webhooks_domain::queued::listed(&notes, missing)
        .into_iter()
        .collect())
}

/// The delivery `delivery_id` of `event` (read in `org_id`), which has no
/// record: pending, created when its note was written (as its record will
/// say), if a note lists it.
pub(crate) async fn one(
    api: &Api,
    org_id: &str,
    delivery_id: &str,
    event: &Event,
) -> Result<Option<Delivery>, ApiError> {
    let Some((endpoint_id, event_id)) = parse_delivery_id(delivery_id) else {
        return Ok(None);
    };
    if event_id != event.id || event.org_id != org_id {
        return Ok(None);
    }
    // The notes of its event's minute, which name when they were written.
    let minute = minute_of_delivery(delivery_id);
    let mut from = minute.clone();
    for _ in 0..MAX_NOTE_READS {
        let page = api
            .deliveries
            .notes_between(org_id, &from, &minute, NOTES_PER_READ)
            .await?;
        let written = page
            .notes
            .iter()
            .filter(|n| n.lists(delivery_id))
            .map(|n| n.created_at)
            .min();
        if let Some(at) = written {
            return Ok(Some(pending(org_id, &endpoint_id, event, at)));
        }
        match (page.more, page.notes.last()) {
            (true, Some(last)) => from = after(last),
            _ => return Ok(None),
        }
    }
    // A minute of more notes than this reads: asked by id instead, and
    // shown as created with its event.
    let noted = listed(api, org_id, &[delivery_id.to_string()]).await?;
    Ok(noted
        .contains(delivery_id)
        .then(|| pending(org_id, &endpoint_id, event, event.created_at)))
}

/// A page of `endpoint`'s delivery records (`page`: the caller's, newest
/// first, read from `cursor` with `status` and `limit`), with the noted
/// deliveries without a record of the same stretch of events merged in,
/// when the status asked for is `pending` or none. The stretch runs from
/// the cursor (or the newest event) down to where the records' page ends
/// (its `next_cursor`), or else to the endpoint's creation. The answer is
/// newest first, at most `limit`, and its `next_cursor` goes on after its
/// last delivery when it was cut there, or from where what is known of the
/// stretch stops (the reads of notes are bounded), or as the records' did.
pub(crate) async fn merge_into_page(
    api: &Api,
    org_id: &str,
    endpoint: &EndpointSummary,
    status: Option<DeliveryStatus>,
    limit: usize,
    cursor: Option<&str>,
    page: Page<Delivery>,
) -> Result<Page<Delivery>, ApiError> {
    if status.is_some_and(|s| s != DeliveryStatus::Pending) {
        return Ok(page);
    }
    // This page's event ids are those strictly between the two.
    let upper = cursor.map(|c| cursor::decode(c, "evt_")).transpose()?;
    let lower = page
        .next_cursor
        .as_deref()
        .map(|c| cursor::decode(c, "evt_"))
        .transpose()?;
    let minute = Duration::minutes(1);
    let hi = upper
        .as_deref()
        .and_then(|id| ids::made_at(id, "evt"))
        .unwrap_or_else(|| api.clock.now() + minute);
    // An event of the second the endpoint was created in may be its.
    let lo = lower
        .as_deref()
        .and_then(|id| ids::made_at(id, "evt"))
        .unwrap_or(endpoint.created_at - minute);
    let scan = read_notes(api, org_id, minute_start(lo), minute_start(hi)).await?;
    // Below this event id nothing is known yet: the page ends there.
    let mut known_from = scan.known_from.map(|t| ids::id_floor_at("evt", t));

    // The endpoint's noted deliveries of the stretch that are not on the
    // page, each once, as its earliest note says, newest first.
    let recorded: HashSet<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    let mut lines: HashMap<String, Line> = HashMap::new();
    for note in &scan.notes {
        for id in note.delivery_ids.iter() {
            let Some((endpoint_id, event_id)) = parse_delivery_id(id) else {
                continue;
            };
            let in_stretch = upper.as_deref().is_none_or(|u| event_id.as_str() < u)
                && lower.as_deref().is_none_or(|l| event_id.as_str() > l)
                && known_from.as_deref().is_none_or(|k| event_id.as_str() >= k);
            if endpoint_id != endpoint.id || !in_stretch || recorded.contains(id.as_str()) {
                continue;
            }
            let line = lines.entry(id.clone()).or_insert(Line {
                id: id.clone(),
                event_id,
                at: note.created_at,
            });
            line.at = line.at.min(note.created_at);
        }
    }
    let mut lines: Vec<Line> = lines.into_values().collect();
    lines.sort_unstable_by(|a, b| b.event_id.cmp(&a.event_id));

    // Those without a record: no more than one over the limit are needed,
    // and no more are looked up than a page of records examines (a
    // `pending` listing may pass many noted deliveries that have finished).
    let mut unrecorded: Vec<Line> = Vec::new();
    let mut checked = 0;
    for chunk in lines.chunks(100) {
        if unrecorded.len() > limit {
            break;
        }
        if checked >= DELIVERIES_EXAMINED_PER_PAGE {
            // Known down to the last one looked up.
            known_from = Some(lines[checked - 1].event_id.clone());
            break;
        }
        let ids: Vec<String> = chunk.iter().map(|l| l.id.clone()).collect();
        let found: HashSet<String> = api
            .deliveries
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        checked += chunk.len();
        unrecorded.extend(chunk.iter().filter(|l| !found.contains(&l.id)).cloned());
    }

    let mut rows: Vec<Row> = page.items.into_iter().map(Row::Record).collect();
    rows.extend(unrecorded.into_iter().map(Row::Noted));
    if let Some(k) = &known_from {
        rows.retain(|r| r.event_id() >= k.as_str());
    }
    rows.sort_by(|a, b| b.event_id().cmp(a.event_id()));
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| cursor::encode(r.event_id()))
    } else if let Some(k) = &known_from {
        Some(cursor::encode(k))
    } else {
        page.next_cursor
    };
    Ok(Page {
        items: shown(api, org_id, &endpoint.id, rows).await?,
        next_cursor,
    })
}

/// A delivery a note lists.
#[derive(Clone)]
struct Line {
    id: String,
    event_id: String,
    /// When the earliest note listing it was written.
    at: DateTime<Utc>,
}

/// A delivery of a listing: a record, or a noted one without a record.
enum Row {
    Record(Delivery),
    Noted(Line),
}

impl Row {
    fn event_id(&self) -> &str {
        match self {
            Row::Record(d) => &d.event_id,
            Row::Noted(line) => &line.event_id,
        }
    }
}

/// The deliveries of `rows`, a noted one with its event's type (one whose
/// event cannot be read is left out: it is shown once its record exists).
async fn shown(
    api: &Api,
    org_id: &str,
    endpoint_id: &str,
    rows: Vec<Row>,
) -> Result<Vec<Delivery>, ApiError> {
    let event_ids: Vec<String> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Noted(line) => Some(line.event_id.clone()),
            Row::Record(_) => None,
        })
        .collect();
    let mut events: HashMap<String, Event> = HashMap::new();
    if !event_ids.is_empty() {
        for listed in api.events.get_many(org_id, &event_ids).await? {
            match listed {
                Ok(event) => {
                    events.insert(event.id.clone(), event);
                }
                Err(e) => {
                    tracing::warn!(event_id = %e.event_id, error = %e.error, "a noted delivery's event cannot be read; not listed");
                }
            }
        }
    }
    Ok(rows
        .into_iter()
        .filter_map(|r| match r {
            Row::Record(d) => Some(d),
            Row::Noted(line) => events
                .get(&line.event_id)
                .map(|event| pending(org_id, endpoint_id, event, line.at)),
        })
        .collect())
}

/// A delivery of `event` to `endpoint_id` without a record, as its first
/// attempt will create it: pending, never attempted, created `at`.
fn pending(org_id: &str, endpoint_id: &str, event: &Event, at: DateTime<Utc>) -> Delivery {
    Delivery::new_at(org_id, endpoint_id, &event.id, event.event_type, at)
}

/// The notes read of a stretch of minutes.
struct Scan {
    notes: Vec<QueuedNote>,
    /// All notes from this minute on were read; `None`: all of the stretch.
    known_from: Option<DateTime<Utc>>,
}

/// `org_id`'s notes of the minutes `lo` to `hi`, newest minutes first, in
/// bounded reads: a piece of the stretch at a time, from the top, each
/// piece read to its end (in key order, which is oldest first within it),
/// the pieces growing while they come back in one read. What a request may
/// read ([`MAX_NOTE_READS`]) can stop the scan; it then says from which
/// minute on it read everything.
async fn read_notes(
    api: &Api,
    org_id: &str,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> Result<Scan, ApiError> {
    let minute = Duration::minutes(1);
    let mut notes = Vec::new();
    let mut reads = 0;
    let mut top = hi;
    let mut span = 2;
    let mut first = true;
    while top >= lo {
        let bottom = top
            .checked_sub_signed(minute * (span - 1))
            .map_or(lo, |b| b.max(lo));
        let budget = if first {
            MAX_FIRST_READS
        } else {
            MAX_NOTE_READS.saturating_sub(reads)
        };
        let piece = read_piece(api, org_id, bottom, top, budget).await?;
        reads += piece.reads;
        if !piece.complete {
            if first {
                tracing::warn!(
                    org_id,
                    "too many notes in two minutes; some noted deliveries left out of a listing"
                );
            } else {
                return Ok(Scan {
                    notes,
                    known_from: Some(top + minute),
                });
            }
        }
        notes.extend(piece.notes);
        if piece.reads == 1 {
            span = (span * 4).min(MAX_SPAN_MINUTES);
        }
        top = bottom - minute;
        first = false;
    }
    Ok(Scan {
        notes,
        known_from: None,
    })
}

/// The notes of one piece of a scan.
struct Piece {
    notes: Vec<QueuedNote>,
    reads: usize,
    /// Read to the end within the budget.
    complete: bool,
}

/// `org_id`'s notes of the minutes `bottom` to `top`, in at most `budget`
/// reads, each read going on after the last note of the one before.
async fn read_piece(
    api: &Api,
    org_id: &str,
    bottom: DateTime<Utc>,
    top: DateTime<Utc>,
    budget: usize,
) -> Result<Piece, ApiError> {
    let to = minute_key(top);
    let mut from = minute_key(bottom);
    let mut piece = Piece {
        notes: Vec::new(),
        reads: 0,
        complete: false,
    };
    while piece.reads < budget {
        let page = api
            .deliveries
            .notes_between(org_id, &from, &to, NOTES_PER_READ)
            .await?;
        piece.reads += 1;
        let next = page.notes.last().map(after);
        piece.notes.extend(page.notes);
        match (page.more, next) {
            (true, Some(next)) => from = next,
            (true, None) => return Ok(piece),
            (false, _) => {
                piece.complete = true;
                return Ok(piece);
            }
        }
    }
    Ok(piece)
}

/// Where the notes after `note` start: `notes_between` reads its range from
/// `<from>#` on, and every key is `<minute>#...`, so a key as `from` starts
/// just after that note (the port's "more from the last one's key on").
fn after(note: &QueuedNote) -> String {
    note.key.clone()
}

/// `YYYYMMDDHHMM`, as the notes' keys name minutes.
fn minute_key(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M").to_string()
}

/// The start of `t`'s minute.
fn minute_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_named_as_the_notes_name_them() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T10:31:59.900Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(minute_key(t), "202612051031");
        assert_eq!(minute_key(minute_start(t)), "202612051031");
        assert_eq!(minute_start(t).timestamp() % 60, 0);
        let evt = ids::id_at("evt", t, 9);
        assert_eq!(
            minute_key(t),
            webhooks_domain::queued::minute_of_event(&evt)
        );
        // Every id of a minute is at or above the floor of its start.
        assert!(ids::id_floor_at("evt", minute_start(t)) <= evt);
    }
}
