//! Event routes: the event type catalogue and publishing events, one or a
//! batch at a time.

use crate::auth::Caller;
use crate::errors::ApiError;
use crate::input::{json_object, naming, optional, present, required, BodyRule};
use crate::response::json;
use crate::views::{EventTypeView, ListView};
use crate::Api;
use futures::stream::{self, StreamExt};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::Duration;
use webhooks_domain::event::validate_data;
use webhooks_domain::{Event, EventType};
use webhooks_pipeline::publish::{publish_claimed, Claim, PublishError};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(rename = "type", default, deserialize_with = "present")]
    event_type: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    idempotency_key: Option<Box<RawValue>>,
}

/// `GET /v1/event-types`
pub(crate) fn list_types() -> Response<Body> {
    json(
        StatusCode::OK,
        &ListView {
            data: EventType::ALL
                .iter()
                .map(|t| EventTypeView {
                    name: t.as_str(),
                    description: t.description(),
                })
                .collect(),
            next_cursor: None,
        },
    )
}

/// Most events in one `POST /v1/events/batch`.
pub const MAX_BATCH_EVENTS: usize = 100;
/// How many events of a batch are claimed and written at once.
const BATCH_WRITE_CONCURRENCY: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    #[serde(default, deserialize_with = "present")]
    events: Option<Box<RawValue>>,
}

/// An event that passed validation and may be written.
struct NewEvent {
    event_type: EventType,
    /// Kept as raw JSON: the receiver gets these bytes exactly.
    data: Box<RawValue>,
    idempotency_key: Option<String>,
}

impl NewEvent {
    /// Checks each field as `POST /v1/events` documents it; the error names
    /// the field.
    fn validate(body: PublishBody) -> Result<NewEvent, ApiError> {
        let type_name: String = required("type", body.event_type.as_deref())?;
        let event_type: EventType = type_name
            .parse()
            .map_err(|e| ApiError::invalid(naming("type", &e)))?;
        let data = body
            .data
            .ok_or_else(|| ApiError::invalid("data is required"))?;
        validate_data(&data).map_err(|e| ApiError::invalid(e.to_string()))?;
        let key = optional::<Option<String>>("idempotency_key", body.idempotency_key.as_deref())?
            .flatten();
        if let Some(key) = &key {
            let chars = key.chars().count();
            if !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&chars) {
                return Err(ApiError::invalid(format!(
                    "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
                )));
            }
        }
        Ok(NewEvent {
            event_type,
            data,
            idempotency_key: key,
        })
    }
}

/// `POST /v1/events`: writes the event to the org's stream; a repeated
/// idempotency key answers with the first event's id and writes nothing new.
pub(crate) async fn publish(
    api: &Api,
    caller: &Caller,
    body: &[u8],
    trace_id: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let body: PublishBody = json_object(body, BodyRule::Required)?;
    let event = NewEvent::validate(body)?;
    let id = write_event(api, &caller.org_id, event, trace_id).await?;
    Ok(accepted(&id))
}

/// `POST /v1/events/batch`: up to [`MAX_BATCH_EVENTS`] events, each
/// validated, claimed and written as `POST /v1/events` does it, answered 207
/// with one result per event in request order. A refused event writes
/// nothing and does not stop the others.
pub(crate) async fn publish_batch(
    api: &Api,
    caller: &Caller,
    body: &[u8],
    trace_id: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let body: BatchBody = json_object(body, BodyRule::Required)?;
    let items: Vec<Box<RawValue>> = required("events", body.events.as_deref())?;
    if !(1..=MAX_BATCH_EVENTS).contains(&items.len()) {
        return Err(ApiError::invalid(format!(
            "events must hold 1 to {MAX_BATCH_EVENTS} events; it holds {}",
            items.len()
        )));
    }
    let org_id = caller.org_id.as_str();
    let results: Vec<BatchResult> = stream::iter(items)
        .map(|item| {
            let trace_id = trace_id.clone();
            async move {
                let outcome = match batch_item(&item) {
                    Ok(event) => write_event(api, org_id, event, trace_id).await,
                    Err(e) => Err(e),
                };
                BatchResult::from(outcome)
            }
        })
        .buffered(BATCH_WRITE_CONCURRENCY)
        .collect()
        .await;
    Ok(json(
        StatusCode::MULTI_STATUS,
        &serde_json::json!({ "results": results }),
    ))
}

/// One event of a batch, checked as the body of `POST /v1/events` is.
fn batch_item(item: &RawValue) -> Result<NewEvent, ApiError> {
    if !item.get().trim_start().starts_with('{') {
        return Err(ApiError::invalid("each of events must be a JSON object"));
    }
    let body: PublishBody = serde_json::from_str(item.get())
        .map_err(|e| ApiError::invalid(format!("invalid event: {e}")))?;
    NewEvent::validate(body)
}

/// One event's outcome in a batch's answer: `{"status":202,"id":...}` or
/// `{"status":<4xx|5xx>,"error":{"code":...,"message":...}}`.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult {
    Accepted { status: u16, id: String },
    Refused { status: u16, error: ErrorBody },
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl From<Result<String, ApiError>> for BatchResult {
    fn from(outcome: Result<String, ApiError>) -> Self {
        match outcome {
            Ok(id) => BatchResult::Accepted {
                status: StatusCode::ACCEPTED.as_u16(),
                id,
            },
            Err(e) => BatchResult::Refused {
                status: e.status().as_u16(),
                error: ErrorBody {
                    code: e.code(),
                    message: e.message(),
                },
            },
        }
    }
}

/// Claims the event's idempotency key (if any) and writes the event to the
/// org's stream; answers the id the caller should hold: the first event's
/// for a repeated key, else the new one's. A key reused with another type or
/// data is refused and writes nothing. (What a repeat does when the first
/// request never wrote its event: [`webhooks_pipeline::publish`].)
async fn write_event(
    api: &Api,
    org_id: &str,
    new: NewEvent,
    trace_id: Option<String>,
) -> Result<String, ApiError> {
    let NewEvent {
        event_type,
        data,
        idempotency_key,
    } = new;
    // Only a keyed request is compared with an earlier one.
    let fingerprint = idempotency_key
        .as_ref()
        .map(|_| body_fingerprint(event_type, &data));
    let now = api.clock.now();
    let mut event = Event::new_at(org_id, event_type, data, now);
    event.trace_id = trace_id;
    let (Some(key), Some(fingerprint)) = (idempotency_key, fingerprint) else {
        api.events.put_if_absent(&event).await?;
        tracing::info!(org_id = %org_id, event_id = %event.id, event_type = %event_type, "event published");
        return Ok(event.id);
    };
    let claim = Claim {
        key: &publish_claim_key(org_id, &key),
        fingerprint: Some(&fingerprint),
        ttl: IDEMPOTENCY_TTL,
    };
    match publish_claimed(api.events.as_ref(), api.idempotency.as_ref(), &claim, event, now).await {
        Ok(published) => {
            if published.written {
                tracing::info!(org_id = %org_id, event_id = %published.id, event_type = %event_type, "event published");
            }
            Ok(published.id)
        }
        Err(PublishError::Mismatch) => Err(ApiError::IdempotencyKeyMismatch(
            "idempotency_key was used before with a different type or data; use a new key for a new event".into(),
        )),
        Err(PublishError::InProgress { retry_after }) => Err(ApiError::KeyInUse(retry_after)),
        Err(PublishError::Backend(e)) => Err(e.into()),
    }
}

/// The idempotency claim of `key` in `org_id`. The org id's length comes
/// first, so org "a" with key "b:c" and org "a:b" with key "c" differ.
pub fn publish_claim_key(org_id: &str, key: &str) -> String {
    format!("events:{}:{org_id}:{key}", org_id.len())
}

/// What a repeated request must match to reuse a key: the type and the
/// data's exact bytes.
fn body_fingerprint(event_type: EventType, data: &RawValue) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(event_type.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(data.get().as_bytes());
    hex::encode(hash.finalize())
}

fn accepted(event_id: &str) -> Response<Body> {
    json(StatusCode::ACCEPTED, &serde_json::json!({ "id": event_id }))
}
