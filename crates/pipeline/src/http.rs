//! The HTTP client that sends deliveries: one per process, shared by every
//! concurrent attempt. It follows no redirects, bounds each attempt's total
//! time and the response bytes it reads, and (unless told otherwise) refuses
//! to connect to private addresses, checking the addresses it actually
//! connects to, after DNS resolution.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhooks_domain::address::is_public;
use webhooks_domain::delivery::{truncate_body, AttemptResult, MAX_LOGGED_RESPONSE};
use webhooks_domain::retry::parse_retry_after;
use webhooks_domain::Payload;

/// The `User-Agent` every delivery carries.
pub const USER_AGENT: &str = concat!("devsphere-webhooks/", env!("CARGO_PKG_VERSION"));

/// The error an attempt records when the destination is not allowed.
pub const BLOCKED_DESTINATION: &str = "blocked_destination";

/// How the delivery client behaves.
#[derive(Debug, Clone)]
pub struct DeliveryClientConfig {
    /// Total time for one attempt: connect, send, and read the response.
    pub request_timeout: Duration,
    /// Allow loopback, private and link-local destinations (local dev only).
    pub allow_private: bool,
    /// Names resolved from this table instead of DNS (tests, and operators
    /// who pin hosts).
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
}

impl Default for DeliveryClientConfig {
    fn default() -> Self {
        DeliveryClientConfig {
            request_timeout: Duration::from_secs(15),
            allow_private: false,
            static_hosts: HashMap::new(),
        }
    }
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOutcome {
    pub result: AttemptResult,
    pub latency_ms: u64,
    /// The first 1 KiB of the response body, if there was a response.
    pub response_body: Option<String>,
}

/// What the sender POSTs through: the [`DeliveryClient`] everywhere but in
/// simulations, which answer for their receivers on a virtual clock.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `body` to `url` with `headers`; every problem is an
    /// [`AttemptResult::Failed`], never an error. The body is shared, not
    /// copied: the request sends the bytes the task was read into.
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Payload) -> HttpOutcome;

    /// POSTs a token request (`body`, a form) to an OAuth 2.0 token
    /// endpoint and answers its status and up to [`MAX_TOKEN_RESPONSE`]
    /// bytes of body; `Err` says why there was no answer (log-safe). A
    /// transport that reaches no token endpoint (a simulation's) says so.
    async fn request_token(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<TokenAnswer, String> {
        let _ = (url, headers, body);
        Err("this transport reaches no token endpoint".to_string())
    }
}

/// What a token endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub status: u16,
    /// At most [`MAX_TOKEN_RESPONSE`] bytes of it.
    pub body: Vec<u8>,
}

/// The most of a token endpoint's answer that is read: a token answer with
/// a large JWT is a few KiB; more is cut off (and fails to parse).
pub const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

#[async_trait::async_trait]
impl Transport for DeliveryClient {
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Payload) -> HttpOutcome {
        DeliveryClient::post(self, url, headers, body).await
    }

    async fn request_token(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<TokenAnswer, String> {
        DeliveryClient::request_token(self, url, headers, body).await
    }
}

/// The shared delivery client.
#[derive(Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    allow_private: bool,
}

#[derive(Debug)]
struct BlockedDestination;

impl std::fmt::Display for BlockedDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(BLOCKED_DESTINATION)
    }
}

impl std::error::Error for BlockedDestination {}

/// Resolves names and drops every address that may not be reached, so the
/// connection can only go to an address that was checked.
struct GuardedResolver {
    allow_private: bool,
    static_hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let hosts = self.static_hosts.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = match hosts.get(&host) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    Box::new(BlockedDestination) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client could not be set up (its TLS roots, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// The roots a receiver's certificate must chain to: Mozilla's, compiled in
/// (`webpki-root-certs`), not the system store: the AWS SDK's client reads
/// the system store already, and reading it a second time here (some 150
/// files) slowed the sender's cold start. Receivers are public HTTPS
/// endpoints, which Mozilla's roots are made for.
fn trust_anchors() -> impl Iterator<Item = reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
}

impl DeliveryClient {
    pub fn new(config: DeliveryClientConfig) -> Result<Self, ClientBuildError> {
        let resolver = GuardedResolver {
            allow_private: config.allow_private,
            static_hosts: Arc::new(config.static_hosts),
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .dns_resolver(resolver)
            .no_proxy()
            .tls_certs_only(trust_anchors())
            .build()
            .map_err(ClientBuildError)?;
        Ok(DeliveryClient {
            http,
            allow_private: config.allow_private,
        })
    }

    /// POSTs `body` to `url` with `headers` and reports what happened. Never
    /// fails: every problem becomes an [`AttemptResult::Failed`].
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Payload) -> HttpOutcome {
        let started = Instant::now();
        let elapsed = |s: Instant| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX);
        let failed = |error: String, s: Instant| HttpOutcome {
            result: AttemptResult::Failed { error },
            latency_ms: elapsed(s),
            response_body: None,
        };
        let parsed = match self.destination(url) {
            Ok(u) => u,
            Err(e) => return failed(e, started),
        };
        let mut req = self
            .http
            .post(parsed)
            .body(reqwest::Body::from(bytes::Bytes::from_owner(body)));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return failed(describe(&e), started),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        // Read at most what the log keeps; the rest is never downloaded.
        let mut kept: Vec<u8> = Vec::new();
        while kept.len() < MAX_LOGGED_RESPONSE {
            match resp.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    if (200..300).contains(&status) {
                        // The receiver said yes; a broken body does not undo it.
                        break;
                    }
                    return failed(describe(&e), started);
                }
            }
        }
        HttpOutcome {
            result: AttemptResult::Responded {
                status,
                retry_after,
            },
            latency_ms: elapsed(started),
            response_body: (!kept.is_empty()).then(|| truncate_body(&kept)),
        }
    }
}

impl DeliveryClient {
    /// The URL to connect to, if it may be reached: a literal IP never goes
    /// through the guarded resolver, so it is checked here.
    fn destination(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid_url: {e}"))?;
        if !self.allow_private {
            let literal = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(|ip| !is_public(ip)) {
                return Err(BLOCKED_DESTINATION.to_string());
            }
        }
        Ok(parsed)
    }

    /// POSTs a token request through the same guarded client as every
    /// delivery (no redirects, private addresses refused after DNS, the
    /// same timeout), reading at most [`MAX_TOKEN_RESPONSE`] bytes back.
    pub async fn request_token(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<TokenAnswer, String> {
        let parsed = self.destination(url)?;
        let mut req = self.http.post(parsed).body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let mut resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let mut body: Vec<u8> = Vec::new();
        while body.len() < MAX_TOKEN_RESPONSE {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(describe(&e)),
            }
        }
        body.truncate(MAX_TOKEN_RESPONSE);
        Ok(TokenAnswer { status, body })
    }
}

/// A short, log-safe description of a request error.
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.is::<BlockedDestination>() {
            return BLOCKED_DESTINATION.to_string();
        }
        source = s.source();
    }
    if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        format!("connection_failed: {}", root_cause(e))
    } else {
        format!("request_failed: {}", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
