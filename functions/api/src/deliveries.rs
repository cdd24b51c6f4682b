//! Delivery routes: an endpoint's delivery log, one delivery, and sending
//! dead-lettered or canceled deliveries again.

use crate::auth::Caller;
use crate::endpoints;
use crate::errors::ApiError;
use crate::input::{self, json_object, naming, optional, present, required, BodyRule};
use crate::noted;
use crate::response::json;
use crate::views::{DeliveryDetail, DeliveryView, ListView, RequestView};
use crate::Api;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::time::parse_rfc3339;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::Page;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    #[serde(default, deserialize_with = "present")]
    since: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    cursor: Option<Box<RawValue>>,
}

/// `GET /v1/endpoints/{id}/deliveries`, newest first.
pub(crate) async fn list(
    api: &Api,
    caller: &Caller,
    endpoint_id: &str,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = input::ListQuery::from_request(req)?;
    let limit = query.limit()?;
    let status = query
        .status()
        .map(|s| {
            s.parse::<DeliveryStatus>()
                .map_err(|e| ApiError::invalid(naming("status", &e)))
        })
        .transpose()?;
    let endpoint = endpoints::load_summary(api, caller, endpoint_id).await?;
    let page = api
        .deliveries
        .list_for_endpoint(&endpoint.id, status, limit, query.cursor())
        .await?;
    let mine = Page {
        items: page
            .items
            .into_iter()
            .filter(|d| d.org_id == caller.org_id)
            .collect(),
        next_cursor: page.next_cursor,
    };
    // With the deliveries that are queued but have no record yet.
    let page = noted::merge_into_page(
        api,
        &caller.org_id,
        &endpoint,
        status,
        limit,
        query.cursor(),
        mine,
    )
    .await?;
    let shown: Vec<&Delivery> = page.items.iter().collect();
    let (data, cut_at) = within_response_budget(&shown)?;
    let next_cursor = match cut_at {
        // Cut short: the next page starts after the last delivery shown.
        Some(last) => Some(webhooks_ports::cursor::encode(&last.event_id)),
        None => page.next_cursor,
    };
    Ok(json(StatusCode::OK, &ListView { data, next_cursor }))
}

/// Most bytes of deliveries one page carries: a Lambda behind API Gateway
/// may answer at most 6 MB, and a delivery's log holds up to 1 KiB of
/// response body per attempt.
const RESPONSE_BUDGET: usize = 5 * 1024 * 1024;

/// The views of `deliveries` that fit the response budget (at least one),
/// each serialized once (the response reuses the bytes it measured), and
/// the last one shown when the page was cut short.
fn within_response_budget<'a>(
    deliveries: &[&'a Delivery],
) -> Result<(Vec<Box<RawValue>>, Option<&'a Delivery>), ApiError> {
    let mut views = Vec::with_capacity(deliveries.len());
    let mut bytes = 0;
    for (i, d) in deliveries.iter().enumerate() {
        let view = serde_json::value::to_raw_value(&DeliveryView::of(d)).map_err(|e| {
            tracing::error!(error = %e, "could not serialize a delivery");
            ApiError::Backend(webhooks_http::BackendFailure::Internal)
        })?;
        bytes += view.get().len();
        if bytes > RESPONSE_BUDGET && i > 0 {
            return Ok((views, Some(deliveries[i - 1])));
        }
        views.push(view);
    }
    Ok((views, None))
}

/// `GET /v1/deliveries/{id}`: the delivery, with the request it sends
/// (its event read beside it: the event id is part of the delivery id).
pub(crate) async fn get(api: &Api, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let ids = parse_delivery_id(id);
    let event = async {
        match &ids {
            Some((_, event_id)) => api.events.get(&caller.org_id, event_id).await,
            None => Ok(None),
        }
    };
    // The headers its endpoint adds, masked (no secret is opened).
    let endpoint = async {
        match &ids {
            Some((endpoint_id, _)) => api.endpoints.summary(&caller.org_id, endpoint_id).await,
            None => Ok(None),
        }
    };
    let (record, event, endpoint) = futures::join!(record(api, caller, id), event, endpoint);
    let record = record?;
    let event = match event {
        Ok(event) => event,
        Err(e) if e.is_transient() => return Err(e.into()),
        // An event that can never be read leaves the delivery readable.
        Err(e) => {
            tracing::warn!(error = %e, "could not read a delivery's event");
            None
        }
    };
    let delivery = match (record, &event) {
        (Some(d), _) => d,
        // Queued, and its first attempt has not created its record yet.
        (None, Some(event)) => noted::one(api, &caller.org_id, id, event)
            .await?
            .ok_or_else(not_found)?,
        (None, None) => return Err(not_found()),
    };
    let added = match endpoint {
        Ok(Some(ep)) if ep.id == delivery.endpoint_id => ep.added_headers(),
        Ok(_) => Vec::new(),
        Err(e) if e.is_transient() => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a delivery's endpoint");
            Vec::new()
        }
    };
    let request = event
        .filter(|e| e.id == delivery.event_id)
        .map(|e| RequestView::of(&delivery, &e, &added));
    Ok(json(
        StatusCode::OK,
        &DeliveryDetail {
            delivery: DeliveryView::of(&delivery),
            request,
        },
    ))
}

/// `POST /v1/deliveries/{id}/retry`: a dead-lettered or canceled delivery
/// (or a pending one that lost its message) is queued again.
pub(crate) async fn retry(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let delivery = match record(api, caller, id).await? {
        Some(d) => d,
        None => return Err(unrecorded(api, caller, id).await),
    };
    let id = delivery.id.clone();
    api.requeue.retry(&caller.org_id, delivery).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": id, "status": DeliveryStatus::Pending }),
    ))
}

/// `POST /v1/endpoints/{id}/recover`: the dead-lettered deliveries of the
/// endpoint created since `since` are queued again, a bounded part of the
/// endpoint's deliveries per request: while `next_cursor` is not null, the
/// same request with `cursor` set to it goes on (as a listing's pages do).
pub(crate) async fn recover(
    api: &Api,
    caller: &Caller,
    endpoint_id: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: RecoverBody = json_object(body, BodyRule::Required)?;
    let since_text: String = required("since", body.since.as_deref())?;
    let since = parse_rfc3339(&since_text).ok_or_else(|| {
        ApiError::invalid("since must be an RFC 3339 time, such as 2026-11-27T06:00:00Z")
    })?;
    let cursor = optional::<Option<String>>("cursor", body.cursor.as_deref())?.flatten();
    let endpoint = endpoints::load_summary(api, caller, endpoint_id).await?;
    let recovered = api
        .requeue
        .recover(&caller.org_id, &endpoint.id, since, cursor.as_deref())
        .await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "requeued": recovered.requeued,
            "next_cursor": recovered.next_cursor,
        }),
    ))
}

fn not_found() -> ApiError {
    ApiError::not_found("delivery not found")
}

/// The caller's record of delivery `id`; `None` when the id is malformed,
/// unknown, or another org's.
async fn record(api: &Api, caller: &Caller, id: &str) -> Result<Option<Delivery>, ApiError> {
    if parse_delivery_id(id).is_none() {
        return Ok(None);
    }
    Ok(api
        .deliveries
        .get(id)
        .await?
        .filter(|d| d.org_id == caller.org_id))
}

/// Why delivery `id`, which has no record, cannot be retried: a queued
/// delivery (a note lists it) is pending, which a retry refuses (409), as
/// it refuses a recorded one just queued; one whose endpoint is gone, or
/// anything else, is 404, as for a recorded delivery.
async fn unrecorded(api: &Api, caller: &Caller, id: &str) -> ApiError {
    let Some((endpoint_id, event_id)) = parse_delivery_id(id) else {
        return not_found();
    };
    let noted = async {
        let (event, endpoint) = futures::join!(
            api.events.get(&caller.org_id, &event_id),
            api.endpoints.summary(&caller.org_id, &endpoint_id)
        );
        match (event?, endpoint?) {
            (Some(event), Some(_)) => noted::one(api, &caller.org_id, id, &event).await,
            _ => Ok(None),
        }
    };
    match noted.await {
        Ok(Some(_)) => ApiError::Conflict(
            "the delivery is pending: it is queued for its first attempt, and only dead_lettered or canceled deliveries can be retried".into(),
        ),
        Ok(None) => not_found(),
        Err(e) => e,
    }
}
