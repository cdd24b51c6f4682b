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
//! whose secret is not configured is a 501 (`not_configured`: a provider the
//! operator does not use needs no secret), and one whose secret cannot be
//! fetched a 503 (`secret_unavailable`, the provider retries).
//!
//! In Lambda each secret is a Secrets Manager ARN (`*_ARN`), fetched at run
//! time and cached; a failed check fetches it once more (rate-limited), so a
//! rotated secret works without a deploy.

mod crypto;
mod response;
mod stripe;
mod twilio;
mod whatsapp;

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use response::{with_body, Rejection};
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::env;
use webhooks_aws::runtime_secret::{ProviderSecret, SecretsManager};
use webhooks_ports::{
    Adapters, Clock, EventStore, IdempotencyStore, InboundRecord, InboundStore, SystemClock,
};

/// How long a Stripe event id keeps the id of the platform event made from it.
pub(crate) const STRIPE_CLAIM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest raw body or message kept on a record; larger ones are cut (the
/// store's items are limited to 400 KB).
const MAX_RAW_BYTES: usize = 256 * 1024;

/// The providers' secrets and the public address the routes are reached at.
/// A `None` secret turns its route off (501 `not_configured`).
#[derive(Clone)]
pub struct InboundConfig {
    /// Stripe's endpoint signing secret (`whsec_...`).
    pub stripe_webhook_secret: Option<ProviderSecret>,
    pub twilio_auth_token: Option<ProviderSecret>,
    /// The token entered in Meta's webhook setup, echoed in the handshake.
    pub whatsapp_verify_token: Option<ProviderSecret>,
    pub whatsapp_app_secret: Option<ProviderSecret>,
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
        let set = |s: &Option<ProviderSecret>| if s.is_some() { "<set>" } else { "<not set>" };
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
    /// The Lambda's configuration: each provider's secret is the Secrets
    /// Manager ARN in its `*_ARN` variable, fetched at run time (a provider
    /// without one answers 501); the public base URL is required, so a
    /// deployment missing it fails at start, naming it.
    pub fn from_env(secrets: &SecretsManager) -> Result<Self, env::EnvError> {
        let arn = |name: Option<String>| name.map(|arn| secrets.secret(arn));
        Ok(InboundConfig {
            stripe_webhook_secret: arn(env::optional("STRIPE_WEBHOOK_SECRET_ARN")),
            twilio_auth_token: arn(env::optional("TWILIO_AUTH_TOKEN_ARN")),
            whatsapp_verify_token: arn(env::optional("WHATSAPP_VERIFY_TOKEN_ARN")),
            whatsapp_app_secret: arn(env::optional("WHATSAPP_APP_SECRET_ARN")),
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
    /// What time it is: Stripe's signature tolerance, and the platform
    /// events made from Stripe's.
    clock: Arc<dyn Clock>,
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
        .with_clock(adapters.clock.clone())
    }

    /// The same routes, reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
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
            clock: SystemClock::shared(),
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
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn received() -> Response<Body> {
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
pub(crate) fn bounded_raw(bytes: &[u8]) -> String {
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
            Route::WhatsApp if method == Method::GET => self.whatsapp_handshake(req).await,
            Route::WhatsApp if method == Method::POST => self.whatsapp(req).await,
            Route::WhatsApp => Err(Rejection::MethodNotAllowed("GET, POST")),
            Route::Stripe | Route::Twilio => Err(Rejection::MethodNotAllowed("POST")),
        }
    }

    /// A setting of the route, or 501 naming the variable that is not set.
    fn configured<'a>(
        value: &'a Option<String>,
        variable: &'static str,
    ) -> Result<&'a str, Rejection> {
        value.as_deref().ok_or(Rejection::NotConfigured(variable))
    }

    /// The first link of every route's chain: `check` with the route's
    /// secret (501 when it has none, 503 when it cannot be fetched). When the
    /// check fails, it runs once more with the secret fetched again, if that
    /// changed: a rotation since the value was cached.
    async fn with_secret<T>(
        secret: &Option<ProviderSecret>,
        variable: &'static str,
        check: impl Fn(&str) -> Result<T, Rejection>,
    ) -> Result<T, Rejection> {
        let secret = secret.as_ref().ok_or(Rejection::NotConfigured(variable))?;
        let value = secret
            .current()
            .await
            .map_err(Rejection::SecretUnavailable)?;
        match check(&value) {
            Err(refused @ (Rejection::InvalidSignature(_) | Rejection::Forbidden(_))) => {
                match secret.refetched(&value).await {
                    Ok(Some(newer)) => check(&newer),
                    Ok(None) => Err(refused),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not fetch the secret again");
                        Err(refused)
                    }
                }
            }
            other => other,
        }
    }

    /// The signature header `name`, or 401 saying it is missing.
    fn signature<'a>(req: &'a Request, name: &str, shown: &str) -> Result<&'a str, Rejection> {
        header(req.headers(), name)
            .ok_or_else(|| Rejection::InvalidSignature(format!("the {shown} header is missing")))
    }

    /// The last links for a message (Twilio, WhatsApp): recorded once under
    /// its provider id, and logged with the org it was routed to.
    async fn record_message(&self, record: InboundRecord) -> Result<(), Rejection> {
        let first = self.store.record(&record).await?;
        log_message(
            &record.provider,
            &record.provider_id,
            record.to.as_deref(),
            record.org_id.as_deref(),
            first,
        );
        Ok(())
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
