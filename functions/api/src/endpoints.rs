//! Endpoint routes: register, list, read, change, delete, reveal and rotate
//! the secret, send a test event.

use crate::auth::Caller;
use crate::errors::ApiError;
use crate::input::{self, json_object, optional, optional_secret, present, required, BodyRule};
use crate::response::{empty, json, json_with_secret};
use crate::views::{EndpointView, HealthView, ListView, SecretView};
use crate::Api;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, Ordering};
use webhooks_domain::endpoint::{CustomHeaders, EndpointAuth, MAX_RATE_LIMIT};
use webhooks_domain::ops::OpsNotice;
use webhooks_domain::{
    ids, Endpoint, EndpointSummary, Event, EventFilter, EventType, Secret, Subscription,
};
use webhooks_pipeline::registration::register_endpoint;
use webhooks_ports::{Created, Updated};

/// Longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default, deserialize_with = "present")]
    url: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    event_types: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    secret: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    filter: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    headers: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    auth: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default, deserialize_with = "present")]
    url: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    event_types: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    enabled: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    filter: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    headers: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    auth: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default, deserialize_with = "present")]
    secret: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(default, deserialize_with = "present")]
    event_type: Option<Box<RawValue>>,
}

/// `POST /v1/endpoints`
pub(crate) async fn create(
    api: &Api,
    caller: &Caller,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = json_object(body, BodyRule::Required)?;
    let url = checked_url(api, required("url", body.url.as_deref())?)?;
    let subscription = subscription(required("event_types", body.event_types.as_deref())?)?;
    let description = description(
        optional::<Option<String>>("description", body.description.as_deref())?
            .flatten()
            .unwrap_or_default(),
    )?;
    let rate_limit = rate_limit(body.rate_limit.as_deref())?.flatten();
    let filter = filter(body.filter.as_deref())?.flatten();
    let auth = auth(api, body.auth.as_deref())?.flatten();
    let headers = headers(body.headers.as_deref(), auth.is_some())?
        .flatten()
        .unwrap_or_default();
    let secret = match optional_secret("secret", body.secret.as_deref())? {
        Some(s) => user_secret(&s)?,
        None => Secret::generate(),
    };
    let mut endpoint = Endpoint::new(&caller.org_id, url, subscription, secret);
    endpoint.description = description;
    endpoint.rate_limit = rate_limit;
    endpoint.filter = filter;
    endpoint.headers = headers;
    endpoint.auth = auth;
    let max = api.config.max_endpoints_per_org;
    match register_endpoint(api.cursors.as_ref(), api.endpoints.as_ref(), &endpoint, max).await? {
        Created::Written => {}
        Created::LimitReached => {
            tracing::info!(org_id = %caller.org_id, max, "endpoint refused: the org is at its limit");
            return Err(ApiError::LimitExceeded(format!(
                "this organization has reached its limit of {max} endpoints (max_endpoints_per_org); delete an endpoint to add another"
            )));
        }
    }
    tracing::info!(org_id = %caller.org_id, endpoint_id = %endpoint.id, "endpoint created");
    let mut response = json_with_secret(StatusCode::CREATED, &EndpointView::with_secret(&endpoint));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/endpoints/{}", endpoint.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/endpoints`
pub(crate) async fn list(
    api: &Api,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = input::ListQuery::from_request(req)?;
    let limit = query.limit()?;
    let page = api
        .endpoints
        .list(&caller.org_id, limit, query.cursor())
        .await?;
    let ids: Vec<&str> = page.items.iter().map(|e| e.id.as_str()).collect();
    let health = crate::stats::recent(api, &ids).await;
    Ok(json(
        StatusCode::OK,
        &ListView {
            data: page
                .items
                .iter()
                .zip(health)
                .map(|(ep, h)| EndpointView {
                    health: h.as_ref().map(HealthView::last_day),
                    ..EndpointView::summary(ep)
                })
                .collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

/// `GET /v1/endpoints/{id}`: no secret is opened.
pub(crate) async fn get(api: &Api, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let endpoint = load_summary(api, caller, id).await?;
    Ok(json(StatusCode::OK, &EndpointView::summary(&endpoint)))
}

/// `PATCH /v1/endpoints/{id}`
pub(crate) async fn update(
    api: &Api,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = json_object(body, BodyRule::Required)?;
    let url = optional::<String>("url", body.url.as_deref())?
        .map(|u| checked_url(api, u))
        .transpose()?;
    let subscription = optional::<Vec<String>>("event_types", body.event_types.as_deref())?
        .map(subscription)
        .transpose()?;
    let enabled = optional::<bool>("enabled", body.enabled.as_deref())?;
    let description = optional::<Option<String>>("description", body.description.as_deref())?
        .map(|d| description(d.unwrap_or_default()))
        .transpose()?;
    let rate_limit = rate_limit(body.rate_limit.as_deref())?;
    let filter = filter(body.filter.as_deref())?;
    let auth = auth(api, body.auth.as_deref())?;
    // Checked here beside the auth this PATCH sets (a 400 before any
    // read), and beside the stored one when the change is applied.
    let headers = headers(body.headers.as_deref(), matches!(auth, Some(Some(_))))?;

    if url.is_none()
        && subscription.is_none()
        && enabled.is_none()
        && description.is_none()
        && rate_limit.is_none()
        && filter.is_none()
        && headers.is_none()
        && auth.is_none()
    {
        let endpoint = load_summary(api, caller, id).await?;
        return Ok(json(StatusCode::OK, &EndpointView::summary(&endpoint)));
    }
    // Whether the write that lands turns a disabled endpoint on: the
    // versioned write lets exactly one PATCH make that transition.
    let enables = AtomicBool::new(false);
    let endpoint = modify(api, caller, id, |endpoint| {
        enables.store(
            enabled == Some(true) && !endpoint.enabled,
            Ordering::Relaxed,
        );
        if let Some(url) = &url {
            endpoint.url.clone_from(url);
        }
        if let Some(subscription) = &subscription {
            endpoint.subscription = subscription.clone();
        }
        if let Some(description) = &description {
            endpoint.description.clone_from(description);
        }
        if let Some(enabled) = enabled {
            endpoint.set_enabled(enabled);
        }
        if let Some(rate_limit) = rate_limit {
            endpoint.rate_limit = rate_limit;
        }
        if let Some(filter) = &filter {
            endpoint.filter.clone_from(filter);
        }
        if let Some(headers) = &headers {
            endpoint.headers = headers.clone().unwrap_or_default();
        }
        if let Some(auth) = &auth {
            endpoint.auth.clone_from(auth);
        }
        // `Authorization` among the stored headers, and auth set now.
        endpoint
            .headers
            .check_with_auth(endpoint.auth.is_some())
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        endpoint.updated_at = api.clock.now();
        Ok(())
    })
    .await?;
    if enables.load(Ordering::Relaxed) {
        api.ops
            .notify(OpsNotice::endpoint_enabled(
                &endpoint.id,
                &endpoint.org_id,
                api.clock.now(),
            ))
            .await;
    }
    Ok(json(StatusCode::OK, &EndpointView::public(&endpoint)))
}

/// `DELETE /v1/endpoints/{id}`: the endpoint goes, and its pending
/// deliveries end as `canceled`.
pub(crate) async fn delete(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    if ids::body(id, "ep").is_none() || !api.endpoints.delete(&caller.org_id, id).await? {
        return Err(endpoint_not_found());
    }
    tracing::info!(org_id = %caller.org_id, endpoint_id = %id, "endpoint deleted");
    // The endpoint is gone either way; a delivery left pending here (past
    // the bounded reads of one request, or after an error) is canceled by
    // the sender or the reconciler when it next comes up.
    match api.requeue.cancel_pending(id).await {
        Ok(c) if c.complete => {}
        Ok(c) => tracing::info!(
            endpoint_id = %id,
            canceled = c.canceled,
            "pending deliveries past this request's reads end canceled when next taken"
        ),
        Err(e) => {
            tracing::warn!(endpoint_id = %id, error = %e, "could not cancel every pending delivery")
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /v1/endpoints/{id}/secret`
pub(crate) async fn reveal_secret(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let endpoint = load(api, caller, id).await?;
    Ok(json_with_secret(
        StatusCode::OK,
        &SecretView {
            secret: endpoint.secret.expose(),
        },
    ))
}

/// `POST /v1/endpoints/{id}/rotate-secret`: the previous secret keeps
/// signing for the configured overlap.
pub(crate) async fn rotate_secret(
    api: &Api,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: RotateBody = json_object(body, BodyRule::Optional)?;
    let secret = match optional_secret("secret", body.secret.as_deref())? {
        Some(s) => user_secret(&s)?,
        None => Secret::generate(),
    };
    let endpoint = modify(api, caller, id, |endpoint| {
        endpoint.rotate_secret(secret.clone(), api.clock.now(), api.config.rotation_overlap);
        Ok(())
    })
    .await?;
    tracing::info!(org_id = %caller.org_id, endpoint_id = %id, "secret rotated");
    Ok(json_with_secret(
        StatusCode::OK,
        &SecretView {
            secret: endpoint.secret.expose(),
        },
    ))
}

/// `POST /v1/endpoints/{id}/test`: an event for this endpoint only,
/// subscribed or not.
pub(crate) async fn send_test(
    api: &Api,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let body: TestBody = json_object(body, BodyRule::Optional)?;
    let requested = optional::<Option<String>>("event_type", body.event_type.as_deref())?
        .flatten()
        .map(|name| {
            name.parse::<EventType>()
                .map_err(|e| ApiError::invalid(input::naming("event_type", &e)))
        })
        .transpose()?;
    let endpoint = load(api, caller, id).await?;
    let event = Event::test_for(&endpoint, requested);
    api.events.put_if_absent(&event).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "event_id": event.id, "event_type": event.event_type }),
    ))
}

/// The caller's endpoint `id`, or 404 (malformed, unknown, or another org's).
pub(crate) async fn load(api: &Api, caller: &Caller, id: &str) -> Result<Endpoint, ApiError> {
    if ids::body(id, "ep").is_none() {
        return Err(endpoint_not_found());
    }
    api.endpoints
        .get(&caller.org_id, id)
        .await?
        .ok_or_else(endpoint_not_found)
}

/// The caller's endpoint `id` without its secrets (none is opened), or 404
/// (malformed, unknown, or another org's).
pub(crate) async fn load_summary(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<EndpointSummary, ApiError> {
    if ids::body(id, "ep").is_none() {
        return Err(endpoint_not_found());
    }
    api.endpoints
        .summary(&caller.org_id, id)
        .await?
        .ok_or_else(endpoint_not_found)
}

/// How many times a change is read, applied and written before a write
/// race is answered with 409.
pub const MODIFY_ATTEMPTS: usize = 5;

/// Reads the caller's endpoint `id`, applies `change`, and writes it back
/// only if nothing else wrote it in between (its version); on a race, reads
/// it again and reapplies the change, so a PATCH racing a rotation or the
/// sender's 410 disable keeps both. A change that refuses the endpoint as
/// it finds it (a 400) writes nothing. Returns the endpoint as stored.
pub(crate) async fn modify(
    api: &Api,
    caller: &Caller,
    id: &str,
    change: impl Fn(&mut Endpoint) -> Result<(), ApiError>,
) -> Result<Endpoint, ApiError> {
    for _ in 0..MODIFY_ATTEMPTS {
        let mut endpoint = load(api, caller, id).await?;
        change(&mut endpoint)?;
        match api.endpoints.update(&endpoint).await? {
            Updated::Written => {
                endpoint.version += 1;
                return Ok(endpoint);
            }
            Updated::NotFound => return Err(endpoint_not_found()),
            Updated::Conflict => {
                tracing::info!(endpoint_id = %id, "endpoint changed while being updated; reading it again");
            }
        }
    }
    Err(ApiError::Conflict(
        "the endpoint kept changing while being updated; try again".to_string(),
    ))
}

fn endpoint_not_found() -> ApiError {
    ApiError::not_found("endpoint not found")
}

/// The URL as given (surrounding whitespace dropped), if the policy allows it.
fn checked_url(api: &Api, raw: String) -> Result<String, ApiError> {
    let url = raw.trim();
    api.config
        .url_policy
        .check(url)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(url.to_string())
}

fn subscription(names: Vec<String>) -> Result<Subscription, ApiError> {
    Subscription::parse(&names).map_err(|e| ApiError::invalid(input::naming("event_types", &e)))
}

fn description(text: String) -> Result<String, ApiError> {
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid(format!(
            "description is {chars} characters; the limit is {MAX_DESCRIPTION_CHARS}"
        )));
    }
    Ok(text)
}

/// A `rate_limit` field: absent (`None`), `null` to lift the limit
/// (`Some(None)`), or a whole number of deliveries per second from 1 to
/// [`MAX_RATE_LIMIT`].
fn rate_limit(raw: Option<&RawValue>) -> Result<Option<Option<u32>>, ApiError> {
    let invalid = || {
        ApiError::invalid(format!(
            "rate_limit must be a whole number of deliveries per second from 1 to {MAX_RATE_LIMIT}, or null for no limit"
        ))
    };
    match optional::<serde_json::Value>("rate_limit", raw)? {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_RATE_LIMIT).contains(n))
            .map(|n| Some(Some(n)))
            .ok_or_else(invalid),
    }
}

/// A `filter` field: absent (`None`), `null` to remove the filter
/// (`Some(None)`), or an event pattern, checked as `EventFilter::parse`
/// says (the error names the place: `filter.data.amount[0].numeric`).
fn filter(raw: Option<&RawValue>) -> Result<Option<Option<EventFilter>>, ApiError> {
    match optional::<serde_json::Value>("filter", raw)? {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(pattern) => EventFilter::parse(&pattern)
            .map(|f| Some(Some(f)))
            .map_err(|e| ApiError::invalid(e.to_string())),
    }
}

/// A `headers` field: absent (`None`), `null` to remove every custom
/// header (`Some(None)`), or `{name: value}` checked for an endpoint with
/// `auth` (`auth_set`) or without. The error names the header, never a
/// value (values are secrets).
fn headers(
    raw: Option<&RawValue>,
    auth_set: bool,
) -> Result<Option<Option<CustomHeaders>>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get().trim() == "null" => Ok(Some(None)),
        Some(raw) => CustomHeaders::parse_json(raw.get(), auth_set)
            .map(|h| Some(Some(h)))
            .map_err(|e| ApiError::invalid(e.to_string())),
    }
}

/// An `auth` field: absent (`None`), `null` to remove it (`Some(None)`),
/// or an auth object (`EndpointAuth::parse`; its `token_url` must pass the
/// endpoint URL policy). The error names the field and never holds a
/// password or client secret.
fn auth(api: &Api, raw: Option<&RawValue>) -> Result<Option<Option<EndpointAuth>>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    // Read as any JSON value: a typed decode's error could quote a secret.
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::invalid("auth must be an object or null"))?;
    if value.is_null() {
        return Ok(Some(None));
    }
    EndpointAuth::parse(&value, &api.config.url_policy)
        .map(|a| Some(Some(a)))
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// A caller-chosen secret; the error never contains it.
fn user_secret(value: &str) -> Result<Secret, ApiError> {
    Secret::parse(value).map_err(|e| ApiError::invalid(e.to_string()))
}
