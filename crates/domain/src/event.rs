//! A platform event and the exact bytes its deliveries carry.

use crate::event_type::EventType;
use crate::ids;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

/// The trace id in an `X-Amzn-Trace-Id` header (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=...;Sampled=1`),
/// if it has a well-formed root.
pub fn trace_root(header: &str) -> Option<String> {
    let root = header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))?;
    let ok = root.len() <= 64
        && root.starts_with("1-")
        && root.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then(|| root.to_string())
}

/// Largest accepted `data`, in bytes of JSON.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// How long after making an event id a request may still write its event:
/// every request that publishes ends within it (API Gateway ends a request
/// at 29 s, and the api and inbound functions time out at 10 s).
pub const WRITE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// The shortest settle window the sweeper may be given: every event id
/// made longer ago than this has been written, or never will be. Twice
/// [`WRITE_WINDOW`], because a repeated request may write the id that the
/// request before it made, if that was made within the write window, and
/// takes up to a write window itself.
pub const MIN_SETTLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The fields of a delivery's request body, in order.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: EventType,
    created_at: String,
    data: &'a RawValue,
}

/// Something that happened in an organization.
#[derive(Debug, Clone)]
pub struct Event {
    /// `evt_...`, time-ordered; the receiver's idempotency key.
    pub id: String,
    pub org_id: String,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    /// The caller's JSON object, kept as written.
    pub data: Box<RawValue>,
    /// Set on test events: only this endpoint receives it, subscribed or not.
    pub target_endpoint: Option<String>,
    /// The X-Ray trace of the request that published it (`1-...`), carried
    /// in its deliveries' queue messages to the sender's logs.
    pub trace_id: Option<String>,
}

/// Why event data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDataError {
    #[error("data must be a JSON object")]
    NotAnObject,
    #[error("data is {0} bytes; the limit is {MAX_DATA_BYTES}")]
    TooLarge(usize),
}

impl Event {
    /// A new event with a fresh id, created now.
    pub fn new(org_id: &str, event_type: EventType, data: Box<RawValue>) -> Event {
        Event {
            id: ids::new_id("evt"),
            org_id: org_id.to_string(),
            event_type,
            created_at: Utc::now(),
            data,
            target_endpoint: None,
            trace_id: None,
        }
    }

    /// A new event with a fresh id, created at `now` (the publishing step's
    /// clock).
    pub fn new_at(
        org_id: &str,
        event_type: EventType,
        data: Box<RawValue>,
        now: DateTime<Utc>,
    ) -> Event {
        Event {
            id: ids::new_id_at("evt", now),
            org_id: org_id.to_string(),
            event_type,
            created_at: now,
            data,
            target_endpoint: None,
            trace_id: None,
        }
    }

    /// A test event for `endpoint` only, subscribed or not: `{"test":true}`
    /// of `event_type`, or of the endpoint's first subscribed type (or
    /// `client.created` for an endpoint subscribed to everything).
    pub fn test_for(endpoint: &crate::Endpoint, event_type: Option<EventType>) -> Event {
        let event_type = event_type.unwrap_or(match &endpoint.subscription {
            crate::Subscription::Types(types) => {
                types.first().copied().unwrap_or(EventType::ClientCreated)
            }
            crate::Subscription::All => EventType::ClientCreated,
        });
        let data = serde_json::value::to_raw_value(&serde_json::json!({ "test": true }))
            .expect("a constant JSON object serializes");
        let mut event = Event::new(&endpoint.org_id, event_type, data);
        event.target_endpoint = Some(endpoint.id.clone());
        event
    }

    /// The request body every delivery of this event sends, byte for byte:
    /// `{"id":..,"type":..,"created_at":..,"data":..}`.
    pub fn payload(&self) -> String {
        serde_json::to_string(&self.body())
            .expect("a payload of strings and valid JSON always serializes")
    }

    /// The same text as [`Event::payload`], as a JSON value known valid
    /// (serialized, never parsed again).
    pub fn payload_json(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(&self.body())
            .expect("a payload of strings and valid JSON always serializes")
    }

    fn body(&self) -> Body<'_> {
        Body {
            id: &self.id,
            event_type: self.event_type,
            created_at: crate::time::rfc3339(self.created_at),
            data: &self.data,
        }
    }

    /// The body its receivers get ([`Event::payload`]) as a JSON value, for
    /// payload filters to match; `None` when it cannot be read as one (data
    /// nested deeper than serde_json's parser follows, 128 levels).
    pub fn filter_body(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.payload()).ok()
    }
}

/// Checks that `data` is a JSON object within the size limit.
pub fn validate_data(data: &RawValue) -> Result<(), EventDataError> {
    let text = data.get();
    if text.len() > MAX_DATA_BYTES {
        return Err(EventDataError::TooLarge(text.len()));
    }
    if !text.trim_start().starts_with('{') {
        return Err(EventDataError::NotAnObject);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn payload_keeps_data_bytes_and_field_order() {
        let mut e = Event::new("org_1", EventType::InvoicePaid, raw(r#"{"b":1, "a":[2]}"#));
        e.id = "evt_x".into();
        e.created_at = crate::time::parse_rfc3339("2026-11-27T06:00:00Z").unwrap();
        assert_eq!(
            e.payload(),
            r#"{"id":"evt_x","type":"invoice.paid","created_at":"2026-11-27T06:00:00Z","data":{"b":1, "a":[2]}}"#
        );
    }

    #[test]
    fn the_settle_window_covers_a_write_finished_by_a_repeated_request() {
        assert!(MIN_SETTLE_WINDOW >= 2 * WRITE_WINDOW);
    }

    #[test]
    fn data_must_be_a_small_object() {
        assert_eq!(validate_data(&raw("[1]")), Err(EventDataError::NotAnObject));
        assert_eq!(
            validate_data(&raw("\"x\"")),
            Err(EventDataError::NotAnObject)
        );
        assert!(validate_data(&raw("{}")).is_ok());
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_DATA_BYTES));
        assert!(matches!(
            validate_data(&raw(&big)),
            Err(EventDataError::TooLarge(_))
        ));
    }
}
