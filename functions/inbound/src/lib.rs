//! Lambda `inbound` (API Gateway HTTP API): provider webhooks from Stripe,
//! Twilio and WhatsApp. Each request is verified over its raw body, recorded
//! once, and acknowledged; Stripe billing events become platform events,
//! which the fan-out delivers like any other.
//!
//! | route | on success |
//! | --- | --- |
//! | `POST /inbound/stripe` | 200 `{"received":true}` |
//! | `POST /inbound/twilio` | 200 `<Response/>` (`text/xml`) |
//! | `GET /inbound/whatsapp` | 200, the `hub.challenge` (`text/plain`) |
//! | `POST /inbound/whatsapp` | 200 `{"received":true}` |
//!
//! A bad or missing signature is a 401 (`invalid_signature`) and nothing is
//! stored; a signed but unusable body is a 400 (`invalid_request`); a route
//! whose secret is not set is a 503 (`not_configured`).

mod crypto;
mod response;
mod stripe;
mod twilio;
mod whatsapp;

use chrono::Utc;
use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use response::{with_body, Rejection};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::env;
use webhooks_domain::{Event, EventType};
use webhooks_ports::{Adapters, EventStore, IdempotencyStore, InboundRecord, InboundStore};

/// How long a Stripe event id keeps the id of the platform event made from it.
const STRIPE_CLAIM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest raw body or message kept on a record; larger ones are cut (the
/// store's items are limited to 400 KB).
const MAX_RAW_BYTES: usize = 256 * 1024;

/// The providers' secrets and the public address the routes are reached at.
/// A `None` secret turns its route off (503 `not_configured`).
#[derive(Clone)]
pub struct InboundConfig {
    /// Stripe's endpoint signing secret (`whsec_...`).
    pub stripe_webhook_secret: Option<String>,
    pub twilio_auth_token: Option<String>,
    /// The token entered in Meta's webhook setup, echoed in the handshake.
    pub whatsapp_verify_token: Option<String>,
    pub whatsapp_app_secret: Option<String>,
    /// The origin Twilio calls (`https://api.example.com`), for the signed URL.
    pub public_base_url: Option<String>,
    /// How far a Stripe signature's timestamp may be from now, either way.
    pub stripe_tolerance: Duration,
}

impl Default for InboundConfig {
    /// Every route off, Stripe tolerance 300 s.
    fn default() -> Self {
        InboundConfig {
            stripe_webhook_secret: None,
            twilio_auth_token: None,
            whatsapp_verify_token: None,
            whatsapp_app_secret: None,
            public_base_url: None,
            stripe_tolerance: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for InboundConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "<set>" } else { "<not set>" };
        f.debug_struct("InboundConfig")
            .field("stripe_webhook_secret", &set(&self.stripe_webhook_secret))
            .field("twilio_auth_token", &set(&self.twilio_auth_token))
            .field("whatsapp_verify_token", &set(&self.whatsapp_verify_token))
            .field("whatsapp_app_secret", &set(&self.whatsapp_app_secret))
            .field("public_base_url", &self.public_base_url)
            .field("stripe_tolerance", &self.stripe_tolerance)
            .finish()
    }
}

impl InboundConfig {
    /// The Lambda's configuration: every secret and the public base URL are
    /// required, so a deployment missing one fails at start, naming it.
    pub fn from_env() -> Result<Self, env::EnvError> {
        Ok(InboundConfig {
            stripe_webhook_secret: Some(env::required("STRIPE_WEBHOOK_SECRET")?),
            twilio_auth_token: Some(env::required("TWILIO_AUTH_TOKEN")?),
            whatsapp_verify_token: Some(env::required("WHATSAPP_VERIFY_TOKEN")?),
            whatsapp_app_secret: Some(env::required("WHATSAPP_APP_SECRET")?),
            public_base_url: Some(env::required("WEBHOOKS_PUBLIC_BASE_URL")?),
            stripe_tolerance: Duration::from_secs(300),
        })
    }
}

/// The inbound routes with their stores and configuration.
pub struct Inbound {
    events: Arc<dyn EventStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    store: Arc<dyn InboundStore>,
    config: InboundConfig,
}

impl Inbound {
    /// The inbound routes over a backend's adapters.
    pub fn from_adapters(adapters: &Adapters, config: InboundConfig) -> Self {
        Inbound::new(
            adapters.events.clone(),
            adapters.idempotency.clone(),
            adapters.inbound.clone(),
            config,
        )
    }

    pub fn new(
        events: Arc<dyn EventStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        store: Arc<dyn InboundStore>,
        config: InboundConfig,
    ) -> Self {
        Inbound {
            events,
            idempotency,
            store,
            config,
        }
    }
}

/// Answers one request to an inbound route. Never `Err`: bad input is a 4xx,
/// a failing store a 5xx (so the provider retries).
pub async fn handle(inbound: &Inbound, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    Ok(inbound
        .answer(&req)
        .await
        .unwrap_or_else(Rejection::into_response))
}

enum Route {
    Stripe,
    Twilio,
    WhatsApp,
}

/// The route of a path; a stage prefix (`/prod/inbound/stripe`) is allowed.
fn route_of(path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/inbound/stripe") {
        Some(Route::Stripe)
    } else if path.ends_with("/inbound/twilio") {
        Some(Route::Twilio)
    } else if path.ends_with("/inbound/whatsapp") {
        Some(Route::WhatsApp)
    } else {
        None
    }
}

/// A header's value, when present and printable.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn received() -> Response<Body> {
    with_body(StatusCode::OK, "application/json", r#"{"received":true}"#)
}

/// Whether a body's JSON starts as an object (serde would also read a
/// struct from an array).
pub(crate) fn looks_like_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// A record's raw text, cut at a character boundary when over the limit.
fn bounded_raw(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX_RAW_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_RAW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Inbound {
    async fn answer(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let route = route_of(req.uri().path()).ok_or(Rejection::NotFound)?;
        let method = req.method();
        match route {
            Route::Stripe if method == Method::POST => self.stripe(req).await,
            Route::Twilio if method == Method::POST => self.twilio(req).await,
            Route::WhatsApp if method == Method::GET => self.whatsapp_handshake(req),
            Route::WhatsApp if method == Method::POST => self.whatsapp(req).await,
            Route::WhatsApp => Err(Rejection::MethodNotAllowed("GET, POST")),
            Route::Stripe | Route::Twilio => Err(Rejection::MethodNotAllowed("POST")),
        }
    }

    async fn stripe(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let secret = self
            .config
            .stripe_webhook_secret
            .as_deref()
            .ok_or(Rejection::NotConfigured("STRIPE_WEBHOOK_SECRET"))?;
        let body = req.body().as_ref();
        let signature = header(req.headers(), "stripe-signature").ok_or_else(|| {
            Rejection::InvalidSignature("the Stripe-Signature header is missing".into())
        })?;
        stripe::verify(
            signature,
            body,
            secret,
            self.config.stripe_tolerance,
            Utc::now().timestamp(),
        )
        .map_err(|e| Rejection::InvalidSignature(e.message().into()))?;
        let event = stripe::StripeEvent::parse(body)
            .map_err(|e| Rejection::InvalidRequest(e.to_string()))?;
        let org_id = event.org_id();
        let first = self
            .store
            .record(&InboundRecord {
                provider: "stripe".into(),
                provider_id: event.id.clone(),
                org_id: org_id.map(str::to_string),
                kind: event.kind.clone(),
                from: None,
                to: None,
                text: None,
                raw: bounded_raw(body),
                received_at: Utc::now(),
            })
            .await?;
        match (event.platform_event_type(), org_id) {
            (None, _) => tracing::info!(
                stripe_event_id = %event.id, stripe_type = %event.kind, first,
                "Stripe event acknowledged; not a billing event"
            ),
            (Some(_), None) => tracing::warn!(
                stripe_event_id = %event.id, stripe_type = %event.kind, first,
                "unroutable Stripe event: no data.object.metadata.org_id"
            ),
            // Also on a repeat: an earlier attempt may have recorded the
            // Stripe event and stopped before writing the platform event.
            (Some(event_type), Some(org_id)) => {
                self.emit_stripe_event(&event, event_type, org_id).await?;
            }
        }
        Ok(received())
    }

    /// Writes the platform event for a Stripe event exactly once, even when
    /// Stripe retries after a crash between the two writes.
    async fn emit_stripe_event(
        &self,
        stripe_event: &stripe::StripeEvent,
        event_type: EventType,
        org_id: &str,
    ) -> Result<(), Rejection> {
        let mut event = Event::new(org_id, event_type, stripe_event.event_data());
        let claimed = self
            .idempotency
            .claim(
                &format!("stripe:{}", stripe_event.id),
                &event.id,
                STRIPE_CLAIM_TTL,
            )
            .await?;
        let written = match claimed {
            None => self.events.put_if_absent(&event).await?,
            Some(existing) => {
                if self.events.get(org_id, &existing).await?.is_some() {
                    false
                } else {
                    event.id = existing;
                    self.events.put_if_absent(&event).await?
                }
            }
        };
        tracing::info!(
            stripe_event_id = %stripe_event.id, org_id, event_id = %event.id,
            event_type = event_type.as_str(), written,
            "Stripe billing event"
        );
        Ok(())
    }

    async fn twilio(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let token = self
            .config
            .twilio_auth_token
            .as_deref()
            .ok_or(Rejection::NotConfigured("TWILIO_AUTH_TOKEN"))?;
        let base = self
            .config
            .public_base_url
            .as_deref()
            .ok_or(Rejection::NotConfigured("WEBHOOKS_PUBLIC_BASE_URL"))?;
        let body = req.body().as_ref();
        let signature = header(req.headers(), "x-twilio-signature").ok_or_else(|| {
            Rejection::InvalidSignature("the X-Twilio-Signature header is missing".into())
        })?;
        let query = req.uri().query();
        let url = twilio::public_url(base, req.uri().path(), query);
        let invalid = || Rejection::InvalidSignature("X-Twilio-Signature does not match".into());
        let params: HashMap<String, String> = match twilio::body_sha256_param(query) {
            // A JSON body: the signature covers the URL, the URL the body's hash.
            Some(body_sha256) => {
                let signed = twilio::signature_valid(token, &url, &[], signature);
                if !(signed & twilio::body_hash_valid(body, &body_sha256)) {
                    return Err(invalid());
                }
                let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                    .map_err(|e| {
                        Rejection::InvalidRequest(format!("body is not a JSON object: {e}"))
                    })?;
                json.into_iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k, s)),
                        _ => None,
                    })
                    .collect()
            }
            None => {
                let form = twilio::form_params(body);
                if !twilio::signature_valid(token, &url, &form, signature) {
                    return Err(invalid());
                }
                // The first value of each name.
                let mut params = HashMap::new();
                for (k, v) in form {
                    params.entry(k).or_insert(v);
                }
                params
            }
        };
        let ack = with_body(StatusCode::OK, "text/xml", "<Response/>");
        let get = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        let Some(sid) = get("MessageSid")
            .or_else(|| get("SmsMessageSid"))
            .or_else(|| get("SmsSid"))
        else {
            tracing::info!("Twilio request without a MessageSid acknowledged");
            return Ok(ack);
        };
        if !params.contains_key("Body") && params.contains_key("MessageStatus") {
            tracing::info!(message_sid = %sid, "Twilio status callback acknowledged");
            return Ok(ack);
        }
        if sid.len() > 255 {
            return Err(Rejection::InvalidRequest("MessageSid is too long".into()));
        }
        let to = get("To");
        let org_id = match &to {
            Some(to) => self.store.route("twilio", to).await?,
            None => None,
        };
        let first = self
            .store
            .record(&InboundRecord {
                provider: "twilio".into(),
                provider_id: sid.clone(),
                org_id: org_id.clone(),
                kind: InboundRecord::MESSAGE.into(),
                from: get("From"),
                to: to.clone(),
                text: params.get("Body").cloned(),
                raw: bounded_raw(body),
                received_at: Utc::now(),
            })
            .await?;
        log_message("twilio", &sid, to.as_deref(), org_id.as_deref(), first);
        Ok(ack)
    }

    fn whatsapp_handshake(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let expected = self
            .config
            .whatsapp_verify_token
            .as_deref()
            .ok_or(Rejection::NotConfigured("WHATSAPP_VERIFY_TOKEN"))?;
        let mut query: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            query.entry(k.into_owned()).or_insert(v.into_owned());
        }
        let mode_ok = query.get("hub.mode").map(String::as_str) == Some("subscribe");
        let token_ok = query
            .get("hub.verify_token")
            .is_some_and(|t| crypto::strings_equal(t, expected));
        if !(mode_ok & token_ok) {
            return Err(Rejection::Forbidden(
                "hub.mode must be subscribe and hub.verify_token must match".into(),
            ));
        }
        let challenge = query
            .get("hub.challenge")
            .ok_or_else(|| Rejection::InvalidRequest("hub.challenge is missing".into()))?;
        Ok(with_body(StatusCode::OK, "text/plain", challenge.clone()))
    }

    async fn whatsapp(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let secret = self
            .config
            .whatsapp_app_secret
            .as_deref()
            .ok_or(Rejection::NotConfigured("WHATSAPP_APP_SECRET"))?;
        let body = req.body().as_ref();
        let signature = header(req.headers(), "x-hub-signature-256").ok_or_else(|| {
            Rejection::InvalidSignature("the X-Hub-Signature-256 header is missing".into())
        })?;
        if !whatsapp::signature_valid(secret, signature, body) {
            return Err(Rejection::InvalidSignature(
                "X-Hub-Signature-256 does not match".into(),
            ));
        }
        let messages =
            whatsapp::messages(body).map_err(|e| Rejection::InvalidRequest(e.to_string()))?;
        let mut routes: HashMap<String, Option<String>> = HashMap::new();
        for message in messages {
            let org_id = match &message.phone_number_id {
                Some(number) => match routes.get(number) {
                    Some(org) => org.clone(),
                    None => {
                        let org = self.store.route("whatsapp", number).await?;
                        routes.insert(number.clone(), org.clone());
                        org
                    }
                },
                None => None,
            };
            let first = self
                .store
                .record(&InboundRecord {
                    provider: "whatsapp".into(),
                    provider_id: message.id.clone(),
                    org_id: org_id.clone(),
                    kind: InboundRecord::MESSAGE.into(),
                    from: message.from,
                    to: message.phone_number_id.clone(),
                    text: message.text,
                    raw: bounded_raw(message.raw.as_bytes()),
                    received_at: Utc::now(),
                })
                .await?;
            log_message(
                "whatsapp",
                &message.id,
                message.phone_number_id.as_deref(),
                org_id.as_deref(),
                first,
            );
        }
        Ok(received())
    }
}

fn log_message(provider: &str, id: &str, to: Option<&str>, org_id: Option<&str>, first: bool) {
    match org_id {
        Some(org_id) => tracing::info!(provider, message_id = id, org_id, first, "inbound message"),
        None => tracing::warn!(
            provider,
            message_id = id,
            to = to.unwrap_or(""),
            first,
            "unrouted inbound message: no org owns this address"
        ),
    }
}
