//! `GET /v1/endpoints/{id}/stats?since=RFC3339`: an endpoint's health over
//! the deliveries created since then (default: the last 24 hours).

use crate::auth::Caller;
use crate::endpoints;
use crate::errors::ApiError;
use crate::response::json;
use crate::Api;
use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use webhooks_domain::stats::{bucket_hour, EndpointStats};
use webhooks_domain::time::parse_rfc3339;
use webhooks_domain::{ids, Delivery};

/// The last day's figures of each endpoint, for a listing: one read of
/// its hourly buckets each, at once; `None` without precomputed figures or
/// when a read fails (the listing is still answered).
pub(crate) async fn recent(api: &Api, endpoint_ids: &[&str]) -> Vec<Option<EndpointStats>> {
    let stats = api.stats.clone();
    let Some(stats) = stats else {
        return vec![None; endpoint_ids.len()];
    };
    let from = bucket_hour(Utc::now() - chrono::Duration::hours(24));
    futures::future::join_all(endpoint_ids.iter().map(|id| {
        let stats = stats.clone();
        async move {
            let r = stats.read(id, from).await;
            r.ok().map(|b| EndpointStats::from_buckets(&b))
        }
    }))
    .await
}

/// Deliveries read per page.
const PAGE: usize = 100;
/// Most deliveries one call reads (newest first); older ones in the window
/// are left out until per-endpoint counters are kept.
const MAX_READ: usize = 10_000;

#[derive(Deserialize)]
struct StatsQuery {
    since: Option<String>,
}

pub(crate) async fn get(
    api: &Api,
    caller: &Caller,
    endpoint_id: &str,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let query: StatsQuery = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let since = since(query.since.as_deref(), api.clock.now())?;
    let endpoint = endpoints::load_summary(api, caller, endpoint_id).await?;
    // Precomputed: the hourly buckets from the hour of `since` on.
    let stats = api.stats.clone();
    if let Some(stats) = stats {
        let buckets = stats.read(&endpoint.id, bucket_hour(since)).await?;
        return Ok(json(StatusCode::OK, &EndpointStats::from_buckets(&buckets)));
    }
    let horizon = ids::id_floor_at("evt", since - chrono::Duration::hours(24));
    let mut window: Vec<Delivery> = Vec::new();
    let mut cursor: Option<String> = None;
    'pages: while window.len() < MAX_READ {
        let page = api
            .deliveries
            .list_for_endpoint(&endpoint.id, None, PAGE, cursor.as_deref())
            .await?;
        for d in page.items {
            // Listed newest event first. A delivery is created within its
            // event's stream retention (a day) or by a sweep soon after, so
            // once events are a day older than the window, none is left.
            if d.event_id.as_str() < horizon.as_str() {
                break 'pages;
            }
            if d.created_at >= since && d.org_id == caller.org_id {
                window.push(d);
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(json(StatusCode::OK, &EndpointStats::of(&window)))
}

/// The window's start: `since`, or 24 hours ago.
fn since(raw: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(now - chrono::Duration::hours(24)),
        Some(s) => parse_rfc3339(s).ok_or_else(|| {
            ApiError::invalid("since must be an RFC 3339 time, such as 2026-11-27T06:00:00Z")
        }),
    }
}
