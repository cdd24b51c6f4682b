//! Delivery routes: an endpoint's delivery log, one delivery, and sending
//! dead-lettered or canceled deliveries again.

use crate::auth::Caller;
use crate::endpoints;
use crate::errors::ApiError;
use crate::input::{self, json_object, naming, present, required, BodyRule};
use crate::response::json;
use crate::views::{DeliveryView, ListView};
use crate::Api;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use webhooks_domain::delivery::parse_delivery_id;
use webhooks_domain::time::parse_rfc3339;
use webhooks_domain::{Delivery, DeliveryStatus, DeliveryTask, Event};

/// Dead-lettered deliveries read per page by a recovery.
const RECOVER_PAGE: usize = 100;
/// A pending delivery whose next attempt is this far overdue has lost its
/// queue message (for instance SQS redrove it while the deliveries table
/// was unavailable) and may be retried by hand.
const STUCK_AFTER_MINUTES: i64 = 15;
/// Deliveries prepared for requeueing at once.
const REQUEUE_CONCURRENCY: usize = 16;

/// A delivery just moved to pending, with the queue message that sends it.
struct Ready {
    delivery: Delivery,
    task: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    #[serde(default, deserialize_with = "present")]
    since: Option<Box<RawValue>>,
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
    let endpoint = endpoints::load(api, caller, endpoint_id).await?;
    let page = api
        .deliveries
        .list_for_endpoint(&endpoint.id, status, limit, query.cursor())
        .await?;
    Ok(json(
        StatusCode::OK,
        &ListView {
            data: page
                .items
                .iter()
                .filter(|d| d.org_id == caller.org_id)
                .map(DeliveryView::of)
                .collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

/// `GET /v1/deliveries/{id}`
pub(crate) async fn get(api: &Api, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let delivery = load(api, caller, id).await?;
    Ok(json(StatusCode::OK, &DeliveryView::of(&delivery)))
}

/// `POST /v1/deliveries/{id}/retry`: a dead-lettered or canceled delivery
/// becomes pending and is queued again.
pub(crate) async fn retry(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let delivery = load(api, caller, id).await?;
    let stuck = is_stuck(&delivery);
    if !stuck
        && !matches!(
            delivery.status,
            DeliveryStatus::DeadLettered | DeliveryStatus::Canceled
        )
    {
        return Err(ApiError::Conflict(format!(
            "the delivery is {}; only dead_lettered or canceled deliveries, or pending ones overdue by {STUCK_AFTER_MINUTES} minutes, can be retried",
            delivery.status
        )));
    }
    if api
        .endpoints
        .get(&caller.org_id, &delivery.endpoint_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(
            "the delivery's endpoint no longer exists",
        ));
    }
    let event = api
        .events
        .get(&caller.org_id, &delivery.event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the delivery's event no longer exists"))?;
    let task = task_body(&delivery, &event)?;
    if stuck {
        // Already pending: only its lost queue message is sent again.
        let rejected = api.queue.send_batch(std::slice::from_ref(&task)).await?;
        if !rejected.is_empty() {
            return Err(ApiError::ServiceUnavailable);
        }
        tracing::warn!(delivery_id = %delivery.id, "overdue pending delivery queued again");
        return Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "id": delivery.id, "status": DeliveryStatus::Pending }),
        ));
    }
    let moved = api
        .deliveries
        .transition(
            &delivery.id,
            &[DeliveryStatus::DeadLettered, DeliveryStatus::Canceled],
            DeliveryStatus::Pending,
        )
        .await?;
    if moved.is_none() {
        return Err(ApiError::Conflict(
            "the delivery changed state meanwhile; fetch it again".into(),
        ));
    }
    let id = delivery.id.clone();
    enqueue(api, vec![Ready { delivery, task }]).await?;
    tracing::info!(delivery_id = %id, "delivery retried");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": id, "status": DeliveryStatus::Pending }),
    ))
}

/// A pending delivery overdue by more than [`STUCK_AFTER_MINUTES`].
fn is_stuck(d: &Delivery) -> bool {
    let limit = chrono::Utc::now() - chrono::Duration::minutes(STUCK_AFTER_MINUTES);
    d.status == DeliveryStatus::Pending && d.next_attempt_at.is_none_or(|t| t < limit)
}

/// `POST /v1/endpoints/{id}/recover`: every dead-lettered delivery of the
/// endpoint created since `since` is queued again.
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
    let endpoint = endpoints::load(api, caller, endpoint_id).await?;
    let mut requeued = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = api
            .deliveries
            .list_for_endpoint(
                &endpoint.id,
                Some(DeliveryStatus::DeadLettered),
                RECOVER_PAGE,
                cursor.as_deref(),
            )
            .await?;
        let mut candidates = Vec::with_capacity(page.items.len());
        for d in page.items {
            if d.org_id == caller.org_id && d.created_at >= since {
                candidates.push(d);
            }
        }
        requeued += requeue_dead_lettered(api, &caller.org_id, candidates).await?;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    tracing::info!(endpoint_id = %endpoint.id, requeued, "deliveries recovered");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "requeued": requeued }),
    ))
}

/// Makes each dead-lettered delivery pending and queues it; returns how many
/// were queued. A delivery whose event is gone is left as it is.
async fn requeue_dead_lettered(
    api: &Api,
    org_id: &str,
    candidates: Vec<Delivery>,
) -> Result<usize, ApiError> {
    let mut work: Vec<BoxFuture<'_, Result<Option<Ready>, ApiError>>> = Vec::new();
    for d in candidates {
        work.push(Box::pin(prepare_requeue(api, org_id, d)));
    }
    let prepared: Vec<_> = stream::iter(work)
        .buffer_unordered(REQUEUE_CONCURRENCY)
        .collect()
        .await;
    let mut ready = Vec::new();
    let mut first_error = None;
    for p in prepared {
        match p {
            Ok(Some(item)) => ready.push(item),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Those already moved to pending must be queued even if others failed.
    let queued = enqueue(api, ready).await?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(queued),
    }
}

/// Moves a dead-lettered delivery to pending and makes its task; `None` when
/// its event is gone or it is no longer dead-lettered.
async fn prepare_requeue(
    api: &Api,
    org_id: &str,
    delivery: Delivery,
) -> Result<Option<Ready>, ApiError> {
    let Some(event) = api.events.get(org_id, &delivery.event_id).await? else {
        tracing::warn!(delivery_id = %delivery.id, event_id = %delivery.event_id, "event gone; not requeued");
        return Ok(None);
    };
    let task = task_body(&delivery, &event)?;
    let moved = api
        .deliveries
        .transition(
            &delivery.id,
            &[DeliveryStatus::DeadLettered],
            DeliveryStatus::Pending,
        )
        .await?;
    Ok(moved.map(|_| Ready { delivery, task }))
}

/// Queues the tasks of deliveries just moved to pending. Any the queue does
/// not take go back to their previous status, and the call fails with 503.
async fn enqueue(api: &Api, items: Vec<Ready>) -> Result<usize, ApiError> {
    if items.is_empty() {
        return Ok(0);
    }
    let bodies: Vec<String> = items.iter().map(|r| r.task.clone()).collect();
    let rejected = match api.queue.send_batch(&bodies).await {
        Ok(rejected) => rejected,
        Err(e) => {
            revert(api, items.iter().map(|r| &r.delivery)).await;
            return Err(e.into());
        }
    };
    if rejected.is_empty() {
        return Ok(items.len());
    }
    tracing::warn!(
        rejected = rejected.len(),
        "the queue refused some delivery tasks"
    );
    revert(
        api,
        rejected
            .iter()
            .filter_map(|&i| items.get(i).map(|r| &r.delivery)),
    )
    .await;
    Err(ApiError::ServiceUnavailable)
}

/// Puts deliveries that could not be queued back in their earlier status.
async fn revert(api: &Api, deliveries: impl Iterator<Item = &Delivery>) {
    for d in deliveries {
        if let Err(e) = api
            .deliveries
            .transition(&d.id, &[DeliveryStatus::Pending], d.status)
            .await
        {
            tracing::error!(delivery_id = %d.id, error = %e, "could not restore status after a failed enqueue");
        }
    }
}

/// The caller's delivery `id`, or 404 (malformed, unknown, or another org's).
async fn load(api: &Api, caller: &Caller, id: &str) -> Result<Delivery, ApiError> {
    let not_found = || ApiError::not_found("delivery not found");
    if parse_delivery_id(id).is_none() {
        return Err(not_found());
    }
    api.deliveries
        .get(id)
        .await?
        .filter(|d| d.org_id == caller.org_id)
        .ok_or_else(not_found)
}

/// The queue message that makes the sender attempt `delivery` (the same
/// shape the fan-out queues).
fn task_body(delivery: &Delivery, event: &Event) -> Result<String, ApiError> {
    let task = DeliveryTask {
        delivery_id: delivery.id.clone(),
        org_id: delivery.org_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        event_id: event.id.clone(),
        event_type: event.event_type,
        payload: event.payload(),
    };
    serde_json::to_string(&task).map_err(|e| {
        tracing::error!(delivery_id = %delivery.id, error = %e, "could not serialize a delivery task");
        ApiError::Internal
    })
}
