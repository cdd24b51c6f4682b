//! The event log (CONTRACT section 12): what the org published, newest
//! first, and one event with its data and where it went.

use crate::auth::Caller;
use crate::errors::ApiError;
use crate::input::{self, naming};
use crate::noted;
use crate::response::json;
use crate::views::ListView;
use crate::Api;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use webhooks_domain::delivery::{delivery_id, parse_delivery_id};
use webhooks_domain::time::rfc3339;
use webhooks_domain::{ids, DeliveryStatus, EventType};
use webhooks_ports::{EventLogQuery, EventSummary};

/// An entry of the log: `{id, type, created_at}`.
#[derive(Serialize)]
struct EventEntry<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: EventType,
    created_at: String,
}

impl<'a> EventEntry<'a> {
    fn of(e: &'a EventSummary) -> Self {
        EventEntry {
            id: &e.id,
            event_type: e.event_type,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// One event: `{id, type, created_at, data, deliveries}`.
#[derive(Serialize)]
struct EventDetail<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: EventType,
    created_at: String,
    /// The data as published, byte for byte.
    data: &'a RawValue,
    deliveries: Vec<DeliveryEntry<'a>>,
}

/// Where an event went: `{id, endpoint_id, status}`.
#[derive(Serialize)]
struct DeliveryEntry<'a> {
    id: &'a str,
    endpoint_id: &'a str,
    status: &'static str,
}

/// `GET /v1/events`: `?type=&since=&until=&limit=&cursor=`, newest first.
/// One bounded read per page (see `webhooks_ports::event_log`): with a
/// type, a page may hold fewer events than `limit`, even none, and still
/// have a `next_cursor`; the list ends when `next_cursor` is null.
pub(crate) async fn list(
    api: &Api,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = input::ListQuery::from_request(req)?;
    let event_type = query
        .event_type()
        .map(|name| {
            name.parse::<EventType>()
                .map_err(|e| ApiError::invalid(naming("type", &e)))
        })
        .transpose()?;
    let since = query.time("since")?;
    let until = query.time("until")?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(ApiError::invalid("until must be after since"));
        }
    }
    let log = EventLogQuery {
        event_type,
        since,
        until,
        limit: query.limit()?,
        cursor: query.cursor().map(str::to_string),
    };
    let page = api.events.log_page(&caller.org_id, &log).await?;
    Ok(json(
        StatusCode::OK,
        &ListView {
            data: page.items.iter().map(EventEntry::of).collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

/// `GET /v1/events/{id}`: the event, its data, and its deliveries. They
/// are found without an index: a delivery's id is made of its endpoint's
/// and its event's, so the deliveries of an event are read by key, one
/// batch of keys over the org's endpoints (those that existed when it was
/// published). A deleted endpoint's deliveries are no longer shown. A
/// delivery queued without a record yet (a note lists it) is `pending`.
pub(crate) async fn get(api: &Api, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let not_found = || ApiError::not_found("event not found");
    if ids::body(id, "evt").is_none() {
        return Err(not_found());
    }
    let event = api
        .events
        .get(&caller.org_id, id)
        .await?
        .ok_or_else(not_found)?;
    let endpoints = api.endpoints.list_all(&caller.org_id).await?;
    let keys: Vec<String> = endpoints
        .iter()
        .filter(|ep| ep.created_at.timestamp() <= event.created_at.timestamp())
        .map(|ep| delivery_id(&ep.id, &event.id))
        .collect();
    let mut deliveries = if keys.is_empty() {
        Vec::new()
    } else {
        api.deliveries.get_many(&keys).await?
    };
    // Queued deliveries whose first attempt has not created their record
    // yet are pending: a note lists them.
    let missing: Vec<String> = keys
        .into_iter()
        .filter(|k| !deliveries.iter().any(|d| d.id == *k))
        .collect();
    let queued = noted::listed(api, &caller.org_id, &missing).await?;
    deliveries.retain(|d| d.org_id == caller.org_id && d.event_id == event.id);
    let mut entries: Vec<(String, &str, &'static str)> = deliveries
        .iter()
        .map(|d| (d.endpoint_id.clone(), d.id.as_str(), d.status.as_str()))
        .collect();
    for id in missing.iter().filter(|k| queued.contains(*k)) {
        if let Some((endpoint_id, _)) = parse_delivery_id(id) {
            entries.push((endpoint_id, id, DeliveryStatus::Pending.as_str()));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(json(
        StatusCode::OK,
        &EventDetail {
            id: &event.id,
            event_type: event.event_type,
            created_at: rfc3339(event.created_at),
            data: &event.data,
            deliveries: entries
                .iter()
                .map(|(endpoint_id, id, status)| DeliveryEntry {
                    id,
                    endpoint_id,
                    status,
                })
                .collect(),
        },
    ))
}
