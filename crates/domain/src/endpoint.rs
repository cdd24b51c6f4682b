//! An organization's webhook endpoint: where to send, what, and how to sign.

use crate::event_type::EventType;
use crate::filter::EventFilter;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use url::{Host, Url};

pub mod auth;
pub mod headers;

pub use auth::{AuthInfo, EndpointAuth};
pub use headers::{added_headers, CustomHeaders, HeaderError, MaskedHeader};

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// Most earlier secrets kept signing at once: rotations faster than this
/// within one overlap drop the oldest (each adds a `v1,` entry to every
/// delivery's `webhook-signature`, so the list must stay short).
pub const MAX_PREVIOUS_SECRETS: usize = 10;

/// Highest `rate_limit` an endpoint may declare, in deliveries per second.
pub const MAX_RATE_LIMIT: u32 = 10_000;

/// Most endpoints an organization may have unless the deployment says
/// otherwise (`webhooks dev --max-endpoints-per-org`, the template's
/// `MaxEndpointsPerOrg`).
pub const DEFAULT_MAX_ENDPOINTS_PER_ORG: u32 = 100;

/// Which event types an endpoint receives: all (`["*"]`) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    All,
    Types(Vec<EventType>),
}

/// Why an `event_types` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("event_types must not be empty")]
    Empty,
    #[error("unknown event type '{0}'")]
    Unknown(String),
    #[error("'*' subscribes to all event types and must be the only entry")]
    WildcardNotAlone,
}

impl Subscription {
    /// Reads an `event_types` list: known names (duplicates dropped), or `["*"]`.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Subscription, SubscriptionError> {
        if names.is_empty() {
            return Err(SubscriptionError::Empty);
        }
        if names.iter().any(|n| n.as_ref() == "*") {
            return if names.len() == 1 {
                Ok(Subscription::All)
            } else {
                Err(SubscriptionError::WildcardNotAlone)
            };
        }
        let mut types = Vec::with_capacity(names.len());
        for n in names {
            let t: EventType = n
                .as_ref()
                .parse()
                .map_err(|_| SubscriptionError::Unknown(n.as_ref().to_string()))?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(Subscription::Types(types))
    }

    /// Whether events of this type are wanted.
    pub fn matches(&self, t: EventType) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Types(types) => types.contains(&t),
        }
    }

    /// The list as the API shows it.
    pub fn names(&self) -> Vec<String> {
        match self {
            Subscription::All => vec!["*".to_string()],
            Subscription::Types(types) => types.iter().map(|t| t.as_str().to_string()).collect(),
        }
    }
}

/// A secret that still signs for a while after a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub expires_at: DateTime<Utc>,
}

/// An endpoint as the fan-out sees it: which events it takes, and nothing to
/// reach, sign or authenticate with (no URL, secret, headers or auth), so
/// the fan-out never reads those.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// `ep_...`
    pub id: String,
    pub org_id: String,
    pub subscription: Subscription,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    /// Its payload filter; `None`: every event of a subscribed type.
    pub filter: Option<EventFilter>,
}

impl Subscriber {
    /// Whether a new event of this type is fanned out to this endpoint,
    /// before its payload filter is asked.
    pub fn wants(&self, t: EventType) -> bool {
        self.enabled && self.subscription.matches(t)
    }

    /// Whether its filter lets through an event whose body is `body`
    /// (`None`: a body that cannot be read, which only an endpoint without
    /// a filter takes). Called once [`Subscriber::wants`] said yes: the body
    /// is made (once per event) only for an endpoint that filters.
    pub fn passes<'b>(&self, body: impl FnOnce() -> Option<&'b serde_json::Value>) -> bool {
        match &self.filter {
            None => true,
            Some(filter) => body().is_some_and(|b| filter.matches(b)),
        }
    }
}

/// An endpoint as a listing shows it: everything but its secrets. A
/// listing reads these and opens no secret, so a secret that does not open
/// (or a key service that is down) cannot fail it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSummary {
    /// `ep_...`
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub subscription: Subscription,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub failing_since: Option<DateTime<Utc>>,
    pub rate_limit: Option<u32>,
    pub filter: Option<EventFilter>,
    /// The names of its custom headers, in order (their values are
    /// secrets, and not here).
    pub header_names: Vec<String>,
    /// What may be shown of its auth (no password or client secret).
    pub auth: Option<AuthInfo>,
}

impl EndpointSummary {
    /// The headers the sender adds for this endpoint beyond the platform's
    /// own, values masked (see [`added_headers`]).
    pub fn added_headers(&self) -> Vec<MaskedHeader> {
        added_headers(&self.header_names, self.auth.as_ref().map(AuthInfo::scheme))
    }
}

/// A registered webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `ep_...`
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub subscription: Subscription,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: Secret,
    /// Every earlier secret still inside its overlap, newest first.
    pub previous_secrets: Vec<PreviousSecret>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the current run of failures began; `None` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Bumped by every write of the stored endpoint; a write made from an
    /// older read is refused (optimistic concurrency).
    pub version: u64,
    /// Most deliveries per second the endpoint takes (1 to
    /// [`MAX_RATE_LIMIT`]); `None`: as fast as the sender goes.
    pub rate_limit: Option<u32>,
    /// Its payload filter (CONTRACT section 12): an event of a subscribed
    /// type makes a delivery only when this matches its body. Not a
    /// secret: stored in plain and read by the fan-out with the
    /// subscription. (Headers and auth, which are secrets, go with the
    /// sealed secrets instead, and the fan-out never reads them.)
    pub filter: Option<EventFilter>,
    /// Extra headers sent with every attempt (CONTRACT section 12). Their
    /// values are secrets: sealed at rest with the signing secrets.
    pub headers: CustomHeaders,
    /// How the sender authenticates to it (CONTRACT section 12); its
    /// password or client secret is sealed with the signing secrets.
    pub auth: Option<EndpointAuth>,
}

impl Endpoint {
    /// A new enabled endpoint.
    pub fn new(org_id: &str, url: String, subscription: Subscription, secret: Secret) -> Endpoint {
        let now = Utc::now();
        Endpoint {
            id: crate::ids::new_id("ep"),
            org_id: org_id.to_string(),
            url,
            subscription,
            description: String::new(),
            enabled: true,
            disabled_reason: None,
            secret,
            previous_secrets: Vec::new(),
            created_at: now,
            updated_at: now,
            failing_since: None,
            version: 0,
            rate_limit: None,
            filter: None,
            headers: CustomHeaders::none(),
            auth: None,
        }
    }

    /// Whether a new event of this type is fanned out to this endpoint.
    pub fn wants(&self, t: EventType) -> bool {
        self.enabled && self.subscription.matches(t)
    }

    /// What the fan-out needs of this endpoint.
    pub fn subscriber(&self) -> Subscriber {
        Subscriber {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            subscription: self.subscription.clone(),
            enabled: self.enabled,
            created_at: self.created_at,
            filter: self.filter.clone(),
        }
    }

    /// What a listing shows of this endpoint.
    pub fn summary(&self) -> EndpointSummary {
        EndpointSummary {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            url: self.url.clone(),
            subscription: self.subscription.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            failing_since: self.failing_since,
            rate_limit: self.rate_limit,
            filter: self.filter.clone(),
            header_names: self.headers.names(),
            auth: self.auth.as_ref().map(EndpointAuth::info),
        }
    }

    /// The headers the sender adds for this endpoint beyond the platform's
    /// own, values masked (see [`added_headers`]).
    pub fn added_headers(&self) -> Vec<MaskedHeader> {
        added_headers(
            &self.headers.names(),
            self.auth.as_ref().map(|a| a.info().scheme()),
        )
    }

    /// The secrets that sign a delivery made at `now`: the current one, then
    /// every previous one whose overlap lasts, newest first.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let mut secrets = vec![&self.secret];
        secrets.extend(
            self.previous_secrets
                .iter()
                .filter(|p| p.expires_at > now)
                .map(|p| &p.secret),
        );
        secrets
    }

    /// Makes `new` the current secret; the old one keeps signing for
    /// `overlap`, and so does every earlier one still inside its own overlap
    /// (a second rotation within the overlap drops nothing). Expired ones go,
    /// and at most [`MAX_PREVIOUS_SECRETS`] are kept.
    pub fn rotate_secret(&mut self, new: Secret, now: DateTime<Utc>, overlap: chrono::Duration) {
        let old = std::mem::replace(&mut self.secret, new);
        self.previous_secrets.retain(|p| p.expires_at > now);
        self.previous_secrets.insert(
            0,
            PreviousSecret {
                secret: old,
                expires_at: now + overlap,
            },
        );
        self.previous_secrets.truncate(MAX_PREVIOUS_SECRETS);
        self.updated_at = now;
    }

    /// Turns the endpoint off, saying why.
    pub fn disable(&mut self, reason: &str, now: DateTime<Utc>) {
        self.enabled = false;
        self.disabled_reason = Some(reason.to_string());
        self.updated_at = now;
    }

    /// Turns the endpoint on or off by hand. Enabling a disabled endpoint
    /// starts afresh: its reason and its run of failures are cleared, so one
    /// more failure does not disable it again at once. Disabling by hand
    /// keeps the failure state as it is.
    pub fn set_enabled(&mut self, enabled: bool) {
        if enabled && !self.enabled {
            self.enabled = true;
            self.disabled_reason = None;
            self.failing_since = None;
        } else if !enabled {
            self.enabled = false;
        }
    }
}

/// What endpoint URLs are allowed: production wants `https` to public hosts;
/// local development also allows plain `http` and loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointUrlPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl EndpointUrlPolicy {
    /// `https` only, public addresses only.
    pub const PRODUCTION: EndpointUrlPolicy = EndpointUrlPolicy {
        allow_http: false,
        allow_private: false,
    };
    /// Anything goes, for `webhooks dev`.
    pub const LOCAL: EndpointUrlPolicy = EndpointUrlPolicy {
        allow_http: true,
        allow_private: true,
    };

    /// Checks an endpoint URL, returning it normalised.
    pub fn check(&self, raw: &str) -> Result<Url, UrlError> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong(raw.len()));
        }
        let url = Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(UrlError::NotHttps),
            other => return Err(UrlError::Scheme(other.to_string())),
        }
        let host = url.host().ok_or(UrlError::NoHost)?;
        if !self.allow_private {
            let private = match host {
                Host::Ipv4(ip) => !crate::address::is_public(IpAddr::V4(ip)),
                Host::Ipv6(ip) => !crate::address::is_public(IpAddr::V6(ip)),
                Host::Domain(d) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal")
                }
            };
            if private {
                return Err(UrlError::PrivateAddress);
            }
        }
        Ok(url)
    }
}

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url is {0} characters; the limit is {MAX_URL_LEN}")]
    TooLong(usize),
    #[error("url is not a valid URL: {0}")]
    Invalid(String),
    #[error("url must use https")]
    NotHttps,
    #[error("url scheme '{0}' is not supported; use https")]
    Scheme(String),
    #[error("url has no host")]
    NoHost,
    #[error("url points to a private, loopback or link-local address")]
    PrivateAddress,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_and_match() {
        assert_eq!(Subscription::parse(&["*"]), Ok(Subscription::All));
        assert_eq!(
            Subscription::parse::<&str>(&[]),
            Err(SubscriptionError::Empty)
        );
        assert_eq!(
            Subscription::parse(&["*", "lead_won"]),
            Err(SubscriptionError::WildcardNotAlone)
        );
        assert_eq!(
            Subscription::parse(&["lead_won", "nope"]),
            Err(SubscriptionError::Unknown("nope".into()))
        );
        let s = Subscription::parse(&["invoice.paid", "lead_won", "invoice.paid"]).unwrap();
        assert_eq!(s.names(), vec!["invoice.paid", "lead_won"]);
        assert!(s.matches(EventType::LeadWon));
        assert!(!s.matches(EventType::LeadLost));
        assert!(Subscription::All.matches(EventType::SurveySubmitted));
    }

    #[test]
    fn added_headers_are_the_custom_ones_then_authorization_all_masked() {
        let mut ep = Endpoint::new(
            "org",
            "https://x.test".into(),
            Subscription::All,
            Secret::generate(),
        );
        assert!(ep.added_headers().is_empty());
        ep.headers =
            CustomHeaders::new(vec![("X-Api-Key".into(), "k-secret".into())], true).unwrap();
        ep.auth = Some(
            EndpointAuth::parse(
                &serde_json::json!({"type":"basic","username":"u","password":"p-secret"}),
                &EndpointUrlPolicy::PRODUCTION,
            )
            .unwrap(),
        );
        let shown = ep.added_headers();
        assert_eq!(
            shown
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect::<Vec<_>>(),
            [
                ("X-Api-Key", "********"),
                ("Authorization", "Basic ********")
            ]
        );
        assert_eq!(ep.summary().added_headers(), shown);
        assert_eq!(
            ep.summary().auth,
            Some(AuthInfo::Basic {
                username: "u".into()
            })
        );
    }

    #[test]
    fn production_policy_wants_public_https() {
        let p = EndpointUrlPolicy::PRODUCTION;
        assert!(p.check("https://example.com/hook").is_ok());
        assert_eq!(p.check("http://example.com/"), Err(UrlError::NotHttps));
        assert_eq!(
            p.check("ftp://example.com/"),
            Err(UrlError::Scheme("ftp".into()))
        );
        for url in [
            "https://127.0.0.1/",
            "https://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[2002:a00:1::1]/",
            "https://localhost:8443/",
        ] {
            assert_eq!(p.check(url), Err(UrlError::PrivateAddress), "{url}");
        }
        assert!(matches!(p.check("not a url"), Err(UrlError::Invalid(_))));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(p.check(&long), Err(UrlError::TooLong(_))));
    }

    #[test]
    fn local_policy_allows_loopback_http() {
        assert!(EndpointUrlPolicy::LOCAL
            .check("http://127.0.0.1:9000/x")
            .is_ok());
    }

    #[test]
    fn enabling_clears_the_failure_state_and_disabling_keeps_it() {
        let mut ep = Endpoint::new(
            "org",
            "https://x.test".into(),
            Subscription::All,
            Secret::generate(),
        );
        let since = Utc::now() - chrono::Duration::days(6);
        ep.failing_since = Some(since);
        ep.disable("failing", Utc::now());
        ep.set_enabled(true);
        assert!(ep.enabled);
        assert_eq!(ep.disabled_reason, None);
        assert_eq!(ep.failing_since, None);

        ep.failing_since = Some(since);
        ep.set_enabled(false);
        assert!(!ep.enabled);
        assert_eq!(ep.failing_since, Some(since));
        // Enabling an enabled endpoint changes nothing.
        ep.set_enabled(true);
        ep.failing_since = Some(since);
        ep.set_enabled(true);
        assert_eq!(ep.failing_since, Some(since));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_overlap() {
        let mut ep = Endpoint::new(
            "org",
            "https://example.com".into(),
            Subscription::All,
            Secret::generate(),
        );
        let old = ep.secret.clone();
        let now = Utc::now();
        ep.rotate_secret(Secret::generate(), now, chrono::Duration::hours(24));
        let live = ep.signing_secrets(now);
        assert_eq!(live.len(), 2);
        assert_eq!(live[1], &old);
        assert_ne!(live[0], &old);
        assert_eq!(
            ep.signing_secrets(now + chrono::Duration::hours(25)).len(),
            1
        );
    }

    #[test]
    fn a_second_rotation_within_the_overlap_keeps_the_first_secret() {
        let mut ep = Endpoint::new(
            "org",
            "https://example.com".into(),
            Subscription::All,
            Secret::generate(),
        );
        let first = ep.secret.clone();
        let t0 = Utc::now();
        let day = chrono::Duration::hours(24);
        ep.rotate_secret(Secret::generate(), t0, day);
        let second = ep.secret.clone();
        let t1 = t0 + chrono::Duration::hours(1);
        ep.rotate_secret(Secret::generate(), t1, day);
        let live = ep.signing_secrets(t1);
        assert_eq!(live.len(), 3);
        assert_eq!(live[1], &second);
        assert_eq!(live[2], &first);
        // Each leaves when its own overlap ends.
        let after_first = t0 + day + chrono::Duration::seconds(1);
        assert_eq!(ep.signing_secrets(after_first).len(), 2);
        assert_eq!(ep.signing_secrets(t1 + day).len(), 1);
        // A rotation after both overlaps keeps only the one it replaces.
        ep.rotate_secret(Secret::generate(), t1 + day * 2, day);
        assert_eq!(ep.previous_secrets.len(), 1);
    }

    #[test]
    fn rotations_keep_a_bounded_number_of_previous_secrets() {
        let mut ep = Endpoint::new(
            "org",
            "https://example.com".into(),
            Subscription::All,
            Secret::generate(),
        );
        let now = Utc::now();
        for _ in 0..(MAX_PREVIOUS_SECRETS + 5) {
            ep.rotate_secret(Secret::generate(), now, chrono::Duration::hours(24));
        }
        assert_eq!(ep.signing_secrets(now).len(), MAX_PREVIOUS_SECRETS + 1);
    }
}
