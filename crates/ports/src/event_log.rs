//! The event log (`GET /v1/events`): a page of an org's events, newest
//! first, read with one bounded query of the events table whatever the
//! filters. What a page holds is decided here, once, for both adapters.
//!
//! The table's key is (`org_id`, `event_id`) and event ids are
//! time-ordered, so a time window is a range of ids and a page is one
//! `Query` over it, backwards. A type filter is a `FilterExpression` over
//! that range rather than an index: an index keyed by type would add a
//! write to every published event (the hottest write of the platform) for
//! a read people make by hand. The price is that a filtered page reads at
//! most [`TYPE_FILTER_READ_BUDGET`] events: a page of a rare type may come
//! back short, or empty, with a `next_cursor` to go on from where the read
//! stopped. The work per page stays bounded either way.

use crate::{cursor, BackendError, Page};
use chrono::{DateTime, Utc};
use webhooks_domain::ids::id_floor_at;
use webhooks_domain::EventType;

/// Most events one filtered page reads (DynamoDB's `Limit`, which counts
/// the items read, not those kept).
pub const TYPE_FILTER_READ_BUDGET: usize = 1000;

/// Most bytes one `Query` reads before it stops and hands back where it
/// got to (DynamoDB's 1 MB page); the memory adapter stops there too.
pub const QUERY_PAGE_BYTES: usize = 1024 * 1024;

/// Which of an org's events a page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogQuery {
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Only events created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Most events the page holds.
    pub limit: usize,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// An event as the log lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: String,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
}

/// The ids a page's read covers: from `low` up to `high`, both as key
/// bounds (DynamoDB's `BETWEEN` is inclusive); `high` itself is never
/// listed (it is the cursor, or the first id of `until`'s millisecond).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRange {
    pub low: String,
    pub high: String,
}

impl IdRange {
    /// Whether an id read in the range belongs on the page.
    pub fn lists(&self, id: &str) -> bool {
        id != self.high
    }
}

/// Above every event id (`evt_` and 26 lowercase base32 characters).
const ABOVE_ALL_IDS: &str = "evt_~";

impl EventLogQuery {
    /// The ids to read, newest first, or `None` when none can match (a
    /// window that ends before it starts, a cursor before `since`). A
    /// cursor this log did not hand out is [`BackendError::InvalidCursor`].
    pub fn id_range(&self) -> Result<Option<IdRange>, BackendError> {
        let low = match self.since {
            Some(t) => id_floor_at("evt", t),
            None => "evt_".to_string(),
        };
        let mut high = match self.until {
            Some(t) => id_floor_at("evt", t),
            None => ABOVE_ALL_IDS.to_string(),
        };
        if let Some(c) = &self.cursor {
            let after = cursor::decode(c, "evt_")?;
            if after < high {
                high = after;
            }
        }
        Ok((low < high).then_some(IdRange { low, high }))
    }

    /// Most events the page's read evaluates: the limit, one more to tell
    /// whether another page exists and one for the excluded `high` id; or
    /// the budget when a type filter drops some.
    pub fn read_budget(&self) -> usize {
        match self.event_type {
            Some(_) => TYPE_FILTER_READ_BUDGET.max(self.limit + 2),
            None => self.limit + 2,
        }
    }

    /// Whether a listed event passes the type filter.
    pub fn wants(&self, event_type: EventType) -> bool {
        self.event_type.is_none_or(|t| t == event_type)
    }

    /// The page of `listed` (the events the read kept, newest first) when
    /// the read stopped after the id `stopped_at` (its last evaluated key:
    /// more may follow) or ran to the end of the range (`None`).
    pub fn page(
        &self,
        mut listed: Vec<EventSummary>,
        stopped_at: Option<String>,
    ) -> Page<EventSummary> {
        let next = if listed.len() > self.limit {
            listed.truncate(self.limit);
            listed.last().map(|e| e.id.clone())
        } else {
            stopped_at
        };
        Page {
            items: listed,
            next_cursor: next.map(|id| cursor::encode(&id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn query() -> EventLogQuery {
        EventLogQuery {
            event_type: None,
            since: None,
            until: None,
            limit: 2,
            cursor: None,
        }
    }

    fn summary(id: &str) -> EventSummary {
        EventSummary {
            id: id.into(),
            event_type: EventType::LeadWon,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn ranges_come_from_the_window_and_the_cursor() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        let r = query().id_range().unwrap().unwrap();
        assert!(r.low == "evt_" && r.high.as_str() > "evt_zzzzzzzzzzzzzzzzzzzzzzzzzz");
        let windowed = EventLogQuery {
            since: Some(t),
            until: Some(t + chrono::Duration::hours(1)),
            ..query()
        };
        let r = windowed.id_range().unwrap().unwrap();
        assert_eq!(r.low, id_floor_at("evt", t));
        let inside = webhooks_domain::ids::id_at("evt", t + chrono::Duration::minutes(5), 7);
        assert!(r.low <= inside && inside < r.high);
        // A cursor below the window's end takes over; one above it does not.
        let early = webhooks_domain::ids::id_at("evt", t + chrono::Duration::minutes(1), 0);
        let with_cursor = EventLogQuery {
            cursor: Some(cursor::encode(&early)),
            ..windowed.clone()
        };
        assert_eq!(with_cursor.id_range().unwrap().unwrap().high, early);
        let late = webhooks_domain::ids::id_at("evt", t + chrono::Duration::hours(2), 0);
        let beyond = EventLogQuery {
            cursor: Some(cursor::encode(&late)),
            ..windowed.clone()
        };
        assert_eq!(beyond.id_range().unwrap().unwrap().high, r.high);
        // Empty windows read nothing.
        let backwards = EventLogQuery {
            since: windowed.until,
            until: windowed.since,
            ..query()
        };
        assert_eq!(backwards.id_range().unwrap(), None);
        let before = EventLogQuery {
            cursor: Some(cursor::encode("evt_")),
            ..windowed
        };
        assert_eq!(before.id_range().unwrap(), None);
        let bad = EventLogQuery {
            cursor: Some(cursor::encode("ep_x")),
            ..query()
        };
        assert_eq!(bad.id_range(), Err(BackendError::InvalidCursor));
    }

    #[test]
    fn pages_go_on_from_their_last_event_or_where_the_read_stopped() {
        let q = query();
        let full = q.page(
            vec![summary("evt_3"), summary("evt_2"), summary("evt_1")],
            None,
        );
        assert_eq!(full.items.len(), 2);
        assert_eq!(
            full.next_cursor
                .map(|c| cursor::decode(&c, "evt_").unwrap()),
            Some("evt_2".into())
        );
        let short = q.page(vec![summary("evt_3")], Some("evt_0".into()));
        assert_eq!(short.items.len(), 1);
        assert_eq!(
            short
                .next_cursor
                .map(|c| cursor::decode(&c, "evt_").unwrap()),
            Some("evt_0".into())
        );
        assert_eq!(q.page(vec![summary("evt_3")], None).next_cursor, None);
        assert_eq!(q.read_budget(), 4);
        let typed = EventLogQuery {
            event_type: Some(EventType::LeadWon),
            ..q
        };
        assert_eq!(typed.read_budget(), TYPE_FILTER_READ_BUDGET);
        assert!(typed.wants(EventType::LeadWon) && !typed.wants(EventType::LeadLost));
    }
}
