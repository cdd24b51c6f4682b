//! How each record is stored in DynamoDB: the item shapes, shared by the
//! adapters, the fan-out (which reads stream images) and the local runner
//! (which makes stream records for the embedded backend).

use crate::envelope::Sealed;
use crate::error::decode_error;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use webhooks_domain::endpoint::auth::OAuth2Client;
use webhooks_domain::endpoint::PreviousSecret;
use webhooks_domain::endpoint::{AuthInfo, CustomHeaders, EndpointAuth};
use webhooks_domain::time::{parse_rfc3339, rfc3339};
use webhooks_domain::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointSummary, Event, EventFilter, Secret,
    Subscriber, Subscription,
};
use webhooks_ports::BackendError;

/// How long events and deliveries are kept before DynamoDB's TTL removes them.
pub const RETENTION_DAYS: i64 = webhooks_ports::table_retention::RECORD_DAYS;

/// A string attribute: the one helper every table's adapter builds keys
/// and condition values with.
pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// The `expires_at` (Unix seconds) of an item kept [`RETENTION_DAYS`] from
/// `from`: an event's or a delivery's creation, a delivery's move to
/// pending or its last attempt while pending.
pub(crate) fn expires_at(from: DateTime<Utc>) -> i64 {
    (from + chrono::Duration::days(RETENTION_DAYS)).timestamp()
}

fn time(s: &str, what: &str) -> Result<DateTime<Utc>, BackendError> {
    parse_rfc3339(s).ok_or_else(|| decode_error(what, format!("bad time '{s}'")))
}

/// An item of the events table (key: `org_id`, `event_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventItem {
    pub org_id: String,
    pub event_id: String,
    pub event_type: String,
    pub created_at: String,
    /// The event's `data`, as the JSON text it was written with: a string
    /// attribute, or above [`COMPRESS_DATA_ABOVE`] bytes a binary one
    /// holding it deflated ([`StoredData`]).
    pub data: StoredData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub expires_at: i64,
}

impl EventItem {
    pub fn from_event(e: &Event) -> Self {
        EventItem {
            data: StoredData::of(e.data.get()),
            ..EventItem::from_event_fields(e)
        }
    }

    fn from_event_fields(e: &Event) -> Self {
        EventItem {
            org_id: e.org_id.clone(),
            event_id: e.id.clone(),
            event_type: e.event_type.as_str().to_string(),
            created_at: rfc3339(e.created_at),
            data: StoredData::Text(String::new()),
            target_endpoint: e.target_endpoint.clone(),
            trace_id: e.trace_id.clone(),
            expires_at: expires_at(e.created_at),
        }
    }

    /// The item of `e` with its `data` as text however long: the stream
    /// images the embedded backend makes (its store keeps events as they
    /// are, so there is nothing to deflate, and deflating only to inflate
    /// again was a fifth of `webhooks dev`'s CPU).
    pub fn from_event_with_text_data(e: &Event) -> Self {
        EventItem {
            data: StoredData::Text(e.data.get().to_string()),
            ..EventItem::from_event_fields(e)
        }
    }

    pub fn into_event(self) -> Result<Event, BackendError> {
        Ok(Event {
            event_type: self
                .event_type
                .parse()
                .map_err(|e| decode_error("event", e))?,
            created_at: time(&self.created_at, "event")?,
            data: RawValue::from_string(self.data.into_text()?)
                .map_err(|e| decode_error("event data", e))?,
            id: self.event_id,
            org_id: self.org_id,
            target_endpoint: self.target_endpoint,
            trace_id: self.trace_id,
        })
    }
}

/// Event `data` longer than this (in bytes of JSON text) is stored
/// deflated, so that an event with 1 KiB of data fits DynamoDB's 1 KB
/// write unit: the item's other attributes take about 150 bytes.
pub const COMPRESS_DATA_ABOVE: usize = 900;

/// The most bytes a stored `data` inflates to: twice the API's limit on
/// `data`, so a corrupt or hostile item cannot make a reader allocate
/// without bound.
const MAX_INFLATED_BYTES: usize = 2 * webhooks_domain::event::MAX_DATA_BYTES;

/// An event's `data` as stored: the JSON text as a string attribute (`S`),
/// or, when that is longer than [`COMPRESS_DATA_ABOVE`] and deflating
/// makes it shorter, the text deflated (raw DEFLATE, RFC 1951) as a binary
/// attribute (`B`) of the same name. Readers take either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredData {
    Text(String),
    Deflated(Bytes),
}

impl StoredData {
    /// How `text` is stored.
    pub fn of(text: &str) -> StoredData {
        if text.len() > COMPRESS_DATA_ABOVE {
            if let Some(deflated) = deflate(text.as_bytes()).filter(|d| d.len() < text.len()) {
                return StoredData::Deflated(Bytes(deflated));
            }
        }
        StoredData::Text(text.to_string())
    }

    /// The JSON text stored.
    pub fn into_text(self) -> Result<String, BackendError> {
        match self {
            StoredData::Text(text) => Ok(text),
            StoredData::Deflated(Bytes(bytes)) => inflate(&bytes),
        }
    }
}

fn deflate(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(bytes.len() / 2),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

fn inflate(bytes: &[u8]) -> Result<String, BackendError> {
    inflate_at_most(bytes, MAX_INFLATED_BYTES, "event data (deflated)")
}

/// `bytes` inflated, refused if they make more than `limit` bytes of text
/// (so a corrupt or hostile item cannot make a reader allocate without
/// bound) or are not UTF-8.
fn inflate_at_most(bytes: &[u8], limit: usize, what: &str) -> Result<String, BackendError> {
    use std::io::Read as _;
    let mut text = String::with_capacity(bytes.len() * 3);
    flate2::read::DeflateDecoder::new(bytes)
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| decode_error(what, e))?;
    if text.len() > limit {
        return Err(decode_error(
            what,
            format!("inflates to more than {limit} bytes"),
        ));
    }
    Ok(text)
}

/// DynamoDB's size of an item: each attribute's name and value.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter()
        .map(|(k, v)| k.len() as u64 + value_size(v))
        .sum()
}

/// DynamoDB's size of an attribute value (its documented rules: strings
/// and binaries by length, numbers about one byte per two digits plus one,
/// lists and maps 3 bytes plus one per element).
pub fn value_size(v: &AttributeValue) -> u64 {
    let number = |n: &str| {
        let digits = n
            .trim_start_matches('-')
            .replace('.', "")
            .trim_start_matches('0')
            .len() as u64;
        digits.div_ceil(2) + 1
    };
    match v {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|s| number(s)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| value_size(e) + 1).sum::<u64>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| k.len() as u64 + value_size(e) + 1)
                .sum::<u64>()
        }
        _ => 0,
    }
}

/// The most bytes a note's deflated entries inflate to: DynamoDB's item
/// limit (a note is cut at `NOTE_CAPACITY` deliveries, about 2.5 KB).
const MAX_NOTE_ENTRIES_BYTES: usize = 400 * 1024;

/// A note's deliveries as its item keeps them (attribute `d`): one line
/// per delivery, `<delivery id after dlv_>:<message tag>`, in the note's
/// order, deflated (raw DEFLATE) into a binary attribute. The lines of one
/// note share their endpoints and their events' minute, so deflating
/// keeps about a quarter of the text to a third: 55 deliveries of 5
/// endpoints take about 0.7 KB where the text took 3.4 KB, so the note and
/// its confirmation are one write unit each instead of four (issue 24).
pub(crate) fn packed_note_entries<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str)>,
) -> AttributeValue {
    let mut text = String::new();
    for (body, tag) in entries {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(body);
        text.push(':');
        text.push_str(tag);
    }
    match deflate(text.as_bytes()) {
        Some(deflated) => AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(deflated)),
        // Deflating into memory does not fail; were it to, the text is
        // what readers also take.
        None => AttributeValue::Ss(text.split('\n').map(str::to_string).collect()),
    }
}

/// What a note's `d` lists: each delivery id's body (after `dlv_`) and its
/// message tag. Takes the deflated lines and the string set that notes
/// written before them used.
pub(crate) fn note_entries(
    d: Option<&AttributeValue>,
) -> Result<Vec<(String, String)>, BackendError> {
    let split = |line: &str| {
        line.split_once(':')
            .map(|(body, tag)| (body.to_string(), tag.to_string()))
            .ok_or_else(|| decode_error("queued note", format!("bad entry '{line}'")))
    };
    match d {
        Some(AttributeValue::B(bytes)) => {
            let text = inflate_at_most(
                bytes.as_ref(),
                MAX_NOTE_ENTRIES_BYTES,
                "queued note entries (deflated)",
            )?;
            text.split('\n')
                .filter(|l| !l.is_empty())
                .map(split)
                .collect()
        }
        Some(AttributeValue::Ss(lines)) => lines.iter().map(|l| split(l)).collect(),
        _ => Err(decode_error("queued note", "no d")),
    }
}

impl Serialize for StoredData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoredData::Text(text) => s.serialize_str(text),
            StoredData::Deflated(bytes) => bytes.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StoredData;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a binary attribute")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StoredData, E> {
                Ok(StoredData::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<StoredData, E> {
                Ok(StoredData::Text(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<StoredData, E> {
                Ok(StoredData::Deflated(Bytes(v.to_vec())))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<StoredData, E> {
                Ok(StoredData::Deflated(Bytes(v)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Reads an event from a DynamoDB item (a table read or a stream image).
pub fn event_from_item<I: Into<serde_dynamo::Item>>(item: I) -> Result<Event, BackendError> {
    let item: EventItem = serde_dynamo::from_item(item).map_err(|e| decode_error("event", e))?;
    item.into_event()
}

/// An item of the endpoints table (key: `org_id`, `endpoint_id`). The
/// signing secrets are sealed ([`EndpointSecrets`], sealed by
/// `crate::envelope` for [`endpoint_aad`]): a scan, a backup or an export
/// shows none of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointItem {
    pub org_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// The KMS-wrapped data key that sealed `secrets_sealed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<Bytes>,
    /// [`EndpointSecrets`] as JSON, sealed with AES-256-GCM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_sealed: Option<Bytes>,
    /// The endpoint's `version` when its secrets were sealed, part of their
    /// [`endpoint_aad`]. Absent on items sealed before it was (the
    /// migration re-seals those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_version: Option<u64>,
    /// The plaintext secrets of items written before sealing: never
    /// written, never used to sign; `webhooks migrate seal-secrets` reads
    /// them once to seal them.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default, skip_serializing)]
    pub previous_secrets: Vec<PreviousSecretItem>,
    #[serde(default, skip_serializing)]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing)]
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// Bumped by every write; the condition of every versioned update.
    #[serde(default)]
    pub version: u64,
    /// Deliveries per second the endpoint takes; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// The payload filter as compact JSON text; absent: none. In plain, not
    /// sealed: the fan-out reads it (projected, see [`SubscriberItem`]) and
    /// it holds no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The names of its custom headers, in order, for reads that open no
    /// secret; their values are sealed with the signing secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_names: Vec<String>,
    /// What reads show of its auth ([`AuthInfo`] as JSON text: the type,
    /// username, token URL, client id and scope), for reads that open no
    /// secret. The credentials the sender uses, password and client secret
    /// included, are sealed with the signing secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_info: Option<String>,
}

/// Shown auth as stored.
fn stored_auth_info(text: Option<&str>) -> Result<Option<AuthInfo>, BackendError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| decode_error("endpoint auth", e)))
        .transpose()
}

/// A stored payload filter, read back as it was checked when set.
fn stored_filter(text: Option<&str>) -> Result<Option<EventFilter>, BackendError> {
    text.map(|t| EventFilter::from_json(t).map_err(|e| decode_error("endpoint filter", e)))
        .transpose()
}

/// Bytes stored as a DynamoDB binary attribute (`B`).
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a binary attribute")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// A previous secret inside an endpoint's secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecretItem {
    pub secret: String,
    pub expires_at: String,
}

/// A custom header inside an endpoint's secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderItem {
    pub name: String,
    pub value: String,
}

/// An endpoint's auth inside its secrets: every credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AuthItem {
    #[serde(rename = "basic")]
    Basic { username: String, password: String },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl AuthItem {
    fn of(auth: &EndpointAuth) -> AuthItem {
        match auth {
            EndpointAuth::Basic { username, password } => AuthItem::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            EndpointAuth::OAuth2ClientCredentials(c) => AuthItem::OAuth2ClientCredentials {
                token_url: c.token_url.clone(),
                client_id: c.client_id.clone(),
                client_secret: c.client_secret.clone(),
                scope: c.scope.clone(),
            },
        }
    }

    fn into_auth(self) -> EndpointAuth {
        match self {
            AuthItem::Basic { username, password } => EndpointAuth::Basic { username, password },
            AuthItem::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => EndpointAuth::OAuth2ClientCredentials(OAuth2Client {
                token_url,
                client_id,
                client_secret,
                scope,
            }),
        }
    }
}

/// What is sealed into an endpoint item: the current secret and every
/// previous one still inside its overlap, newest first, the values of its
/// custom headers, and its auth's credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSecrets {
    pub secret: String,
    #[serde(default)]
    pub previous_secrets: Vec<PreviousSecretItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthItem>,
}

impl std::fmt::Debug for EndpointSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EndpointSecrets(whsec_***, {} previous, {} headers, auth: {})",
            self.previous_secrets.len(),
            self.headers.len(),
            self.auth.is_some()
        )
    }
}

impl EndpointSecrets {
    pub fn of(e: &Endpoint) -> Self {
        EndpointSecrets {
            secret: e.secret.expose().to_string(),
            previous_secrets: e
                .previous_secrets
                .iter()
                .map(|p| PreviousSecretItem {
                    secret: p.secret.expose().to_string(),
                    expires_at: rfc3339(p.expires_at),
                })
                .collect(),
            headers: e
                .headers
                .pairs()
                .iter()
                .map(|(name, value)| HeaderItem {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            auth: e.auth.as_ref().map(AuthItem::of),
        }
    }
}

/// The additional authenticated data of an endpoint's sealed secrets: its
/// key and the endpoint version they were sealed at, so sealed secrets
/// copied onto another item do not open there, nor does an older seal of
/// the same endpoint put back in place of the current one.
pub fn endpoint_aad(org_id: &str, endpoint_id: &str, secrets_version: u64) -> Vec<u8> {
    format!(
        "endpoint-v2:{}:{org_id}:{endpoint_id}:{secrets_version}",
        org_id.len()
    )
    .into_bytes()
}

/// The additional authenticated data of secrets sealed before the version
/// was part of it: only `webhooks migrate seal-secrets` opens these, to
/// seal them again for [`endpoint_aad`].
pub fn unversioned_endpoint_aad(org_id: &str, endpoint_id: &str) -> Vec<u8> {
    format!("endpoint:{}:{org_id}:{endpoint_id}", org_id.len()).into_bytes()
}

/// How an item holds its secrets.
#[derive(Debug)]
pub enum StoredSecrets {
    /// Sealed under a data key for [`endpoint_aad`] at endpoint `version`.
    Sealed { sealed: Sealed, version: u64 },
    /// Sealed for [`unversioned_endpoint_aad`]: refused until the
    /// migration seals them again.
    SealedUnversioned(Sealed),
    /// In plaintext (items written before sealing): refused until the
    /// migration seals them.
    Plain(EndpointSecrets),
}

impl EndpointItem {
    /// The item of `e`, whose secrets `sealed` holds, sealed for
    /// [`endpoint_aad`] at `e.version` (the version this item stores).
    pub fn from_endpoint(e: &Endpoint, sealed: Sealed) -> Self {
        EndpointItem {
            org_id: e.org_id.clone(),
            endpoint_id: e.id.clone(),
            url: e.url.clone(),
            event_types: e.subscription.names(),
            description: e.description.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            secrets_key: Some(Bytes(sealed.wrapped_key)),
            secrets_sealed: Some(Bytes(sealed.sealed)),
            secrets_version: Some(e.version),
            secret: None,
            previous_secrets: Vec::new(),
            previous_secret: None,
            previous_secret_expires_at: None,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            failing_since: e.failing_since.map(rfc3339),
            version: e.version,
            rate_limit: e.rate_limit,
            filter: e.filter.as_ref().map(EventFilter::to_json),
            header_names: e.headers.names(),
            auth_info: match &e.auth {
                Some(a) => serde_json::to_string(&a.info()).ok(),
                None => None,
            },
        }
    }

    /// Where this item's secrets are.
    pub fn stored_secrets(&self) -> Result<StoredSecrets, BackendError> {
        match (&self.secrets_key, &self.secrets_sealed, &self.secret) {
            (Some(key), Some(sealed), _) => {
                let sealed = Sealed {
                    wrapped_key: key.0.clone(),
                    sealed: sealed.0.clone(),
                };
                Ok(match self.secrets_version {
                    Some(version) => StoredSecrets::Sealed { sealed, version },
                    None => StoredSecrets::SealedUnversioned(sealed),
                })
            }
            (None, None, Some(secret)) => {
                let mut previous_secrets = self.previous_secrets.clone();
                if let (Some(s), Some(t)) =
                    (&self.previous_secret, &self.previous_secret_expires_at)
                {
                    previous_secrets.push(PreviousSecretItem {
                        secret: s.clone(),
                        expires_at: t.clone(),
                    });
                }
                Ok(StoredSecrets::Plain(EndpointSecrets {
                    secret: secret.clone(),
                    previous_secrets,
                    headers: Vec::new(),
                    auth: None,
                }))
            }
            _ => Err(decode_error("endpoint", "no secret, or half a sealed one")),
        }
    }

    /// The endpoint, with its secrets as opened.
    pub fn into_endpoint(self, secrets: EndpointSecrets) -> Result<Endpoint, BackendError> {
        let secret = |s: &str| Secret::parse(s).map_err(|e| decode_error("endpoint secret", e));
        let previous_secrets = secrets
            .previous_secrets
            .iter()
            .map(|p| {
                Ok(PreviousSecret {
                    secret: secret(&p.secret)?,
                    expires_at: time(&p.expires_at, "endpoint")?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let headers = CustomHeaders::from_stored(
            secrets
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        );
        Ok(Endpoint {
            headers,
            auth: secrets.auth.map(AuthItem::into_auth),
            filter: stored_filter(self.filter.as_deref())?,
            subscription: Subscription::parse(&self.event_types)
                .map_err(|e| decode_error("endpoint", e))?,
            secret: secret(&secrets.secret)?,
            previous_secrets,
            version: self.version,
            created_at: time(&self.created_at, "endpoint")?,
            updated_at: time(&self.updated_at, "endpoint")?,
            failing_since: match &self.failing_since {
                Some(t) => Some(time(t, "endpoint")?),
                None => None,
            },
            id: self.endpoint_id,
            org_id: self.org_id,
            url: self.url,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            rate_limit: self.rate_limit,
        })
    }
}

/// The attributes of an endpoint item a listing reads, and only those: a
/// read projected to them carries no secret, sealed or not, and opens none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummaryItem {
    pub org_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub failing_since: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub header_names: Vec<String>,
    #[serde(default)]
    pub auth_info: Option<String>,
}

impl EndpointSummaryItem {
    /// The attributes to project a listing's read to.
    pub const ATTRIBUTES: [&'static str; 14] = [
        "org_id",
        "endpoint_id",
        "url",
        "event_types",
        "description",
        "enabled",
        "disabled_reason",
        "created_at",
        "updated_at",
        "failing_since",
        "rate_limit",
        "filter",
        "header_names",
        "auth_info",
    ];

    pub fn into_summary(self) -> Result<EndpointSummary, BackendError> {
        Ok(EndpointSummary {
            subscription: Subscription::parse(&self.event_types)
                .map_err(|e| decode_error("endpoint", e))?,
            created_at: time(&self.created_at, "endpoint")?,
            updated_at: time(&self.updated_at, "endpoint")?,
            failing_since: match &self.failing_since {
                Some(t) => Some(time(t, "endpoint")?),
                None => None,
            },
            id: self.endpoint_id,
            org_id: self.org_id,
            url: self.url,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            rate_limit: self.rate_limit,
            filter: stored_filter(self.filter.as_deref())?,
            header_names: self.header_names,
            auth: stored_auth_info(self.auth_info.as_deref())?,
        })
    }
}

/// The attributes of an endpoint item the fan-out reads, and only those: a
/// read projected to them never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberItem {
    pub org_id: String,
    pub endpoint_id: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: String,
    #[serde(default)]
    pub filter: Option<String>,
}

impl SubscriberItem {
    /// The attributes to project a read of the endpoints table to.
    pub const ATTRIBUTES: [&'static str; 6] = [
        "org_id",
        "endpoint_id",
        "event_types",
        "enabled",
        "created_at",
        "filter",
    ];

    pub fn into_subscriber(self) -> Result<Subscriber, BackendError> {
        Ok(Subscriber {
            filter: stored_filter(self.filter.as_deref())?,
            subscription: Subscription::parse(&self.event_types)
                .map_err(|e| decode_error("endpoint", e))?,
            created_at: time(&self.created_at, "endpoint")?,
            id: self.endpoint_id,
            org_id: self.org_id,
            enabled: self.enabled,
        })
    }
}

/// One attempt inside a delivery item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptItem {
    pub number: u32,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl AttemptItem {
    pub fn from_attempt(a: &Attempt) -> Self {
        AttemptItem {
            number: a.number,
            at: rfc3339(a.at),
            status_code: a.status_code,
            error: a.error.clone(),
            latency_ms: a.latency_ms,
            response_body: a.response_body.clone(),
        }
    }

    fn into_attempt(self) -> Result<Attempt, BackendError> {
        Ok(Attempt {
            number: self.number,
            at: time(&self.at, "attempt")?,
            status_code: self.status_code,
            error: self.error,
            latency_ms: self.latency_ms,
            response_body: self.response_body,
        })
    }
}

/// An item of the deliveries table (key: `endpoint_id`, `event_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryItem {
    pub endpoint_id: String,
    pub event_id: String,
    pub delivery_id: String,
    pub org_id: String,
    pub event_type: String,
    pub status: String,
    #[serde(default)]
    pub attempts: Vec<AttemptItem>,
    /// Every attempt recorded; items written before it count their list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: i64,
    /// The queue message that owns the attempts (see `Delivery::chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The end of the current attempt's lease, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
}

impl DeliveryItem {
    pub fn from_delivery(d: &Delivery) -> Self {
        DeliveryItem {
            endpoint_id: d.endpoint_id.clone(),
            event_id: d.event_id.clone(),
            delivery_id: d.id.clone(),
            org_id: d.org_id.clone(),
            event_type: d.event_type.as_str().to_string(),
            status: d.status.as_str().to_string(),
            attempts: d.attempts.iter().map(AttemptItem::from_attempt).collect(),
            attempt_count: Some(d.attempt_count),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            // Pending: from its creation or, created by its first attempt
            // (a delivery the stream noted), from that attempt, as a
            // recorded attempt renews it.
            expires_at: expires_at(if d.status == DeliveryStatus::Pending {
                d.created_at.max(d.updated_at)
            } else {
                d.created_at
            }),
            chain: d.chain.clone(),
            lease_until: d.lease_until.map(|t| t.timestamp_millis()),
        }
    }

    pub fn into_delivery(self) -> Result<Delivery, BackendError> {
        let attempt_count = self
            .attempt_count
            .unwrap_or(u32::try_from(self.attempts.len()).unwrap_or(u32::MAX));
        Ok(Delivery {
            attempt_count,
            lease_until: match self.lease_until {
                Some(ms) => Some(
                    DateTime::<Utc>::from_timestamp_millis(ms)
                        .ok_or_else(|| decode_error("delivery", format!("bad lease {ms}")))?,
                ),
                None => None,
            },
            chain: self.chain,
            event_type: self
                .event_type
                .parse()
                .map_err(|e| decode_error("delivery", e))?,
            status: self
                .status
                .parse::<DeliveryStatus>()
                .map_err(|e| decode_error("delivery", e))?,
            attempts: self
                .attempts
                .into_iter()
                .map(AttemptItem::into_attempt)
                .collect::<Result<_, _>>()?,
            next_attempt_at: match &self.next_attempt_at {
                Some(t) => Some(time(t, "delivery")?),
                None => None,
            },
            created_at: time(&self.created_at, "delivery")?,
            updated_at: time(&self.updated_at, "delivery")?,
            id: self.delivery_id,
            org_id: self.org_id,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            last_error: self.last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;
    use webhooks_domain::EventType;

    #[test]
    fn endpoints_round_trip_through_items() {
        let mut ep = Endpoint::new(
            "org",
            "https://x.test/h".into(),
            Subscription::parse(&["lead_won"]).unwrap(),
            Secret::generate(),
        );
        ep.created_at = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        ep.updated_at = ep.created_at;
        ep.rate_limit = Some(25);
        ep.headers = CustomHeaders::new(
            vec![
                ("X-Api-Key".into(), "key-value-1".into()),
                ("X-Tenant".into(), "t2".into()),
            ],
            false,
        )
        .unwrap();
        ep.auth = Some(
            EndpointAuth::parse(
                &serde_json::json!({"type": "oauth2_client_credentials",
                    "token_url": "https://auth.x.test/token", "client_id": "cid",
                    "client_secret": "client-secret-9", "scope": "a b"}),
                &webhooks_domain::EndpointUrlPolicy::PRODUCTION,
            )
            .unwrap(),
        );
        ep.rotate_secret(
            Secret::generate(),
            ep.created_at,
            chrono::Duration::hours(1),
        );
        let sealed = Sealed {
            wrapped_key: vec![1, 2, 3],
            sealed: vec![4, 5, 6],
        };
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EndpointItem::from_endpoint(&ep, sealed.clone())).unwrap();
        assert_eq!(item["secrets_key"], AttributeValue::B(vec![1, 2, 3].into()));
        assert!(!item.contains_key("secret") && !item.contains_key("previous_secrets"));
        // The header names are in plain for reads; their values only sealed.
        assert_eq!(
            item["header_names"],
            AttributeValue::L(vec![
                AttributeValue::S("X-Api-Key".into()),
                AttributeValue::S("X-Tenant".into())
            ])
        );
        assert!(!format!("{item:?}").contains("key-value-1"));
        // What reads show of the auth is in plain; its secret only sealed.
        assert!(matches!(&item["auth_info"], AttributeValue::S(t) if t.contains("cid")));
        assert!(!format!("{item:?}").contains("client-secret-9"));
        let back: EndpointItem = serde_dynamo::from_item(item).unwrap();
        match back.stored_secrets().unwrap() {
            StoredSecrets::Sealed { sealed: s, version } => {
                assert_eq!(s, sealed);
                assert_eq!(version, ep.version);
            }
            other => panic!("{other:?}"),
        }
        let raw: HashMap<String, AttributeValue> = serde_dynamo::to_item(&back).unwrap();
        let summary: EndpointSummaryItem = serde_dynamo::from_item(raw).unwrap();
        assert_eq!(summary.into_summary().unwrap(), ep.summary());
        let secrets = EndpointSecrets::of(&ep);
        assert!(!format!("{secrets:?}").contains("key-value-1"));
        assert!(!format!("{secrets:?}").contains("client-secret-9"));
        assert_eq!(back.into_endpoint(secrets).unwrap(), ep);
    }

    #[test]
    fn plaintext_items_of_before_sealing_are_recognised() {
        let mut item: HashMap<String, AttributeValue> = HashMap::new();
        for (k, v) in [
            ("org_id", "org"),
            ("endpoint_id", "ep_1"),
            ("url", "https://x.test/h"),
            ("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("previous_secret", "whsec_C2FtcGxlc2VjcmV0c2FtcGxlc2VjcmV0"),
            ("previous_secret_expires_at", "2026-01-02T00:00:00Z"),
            ("created_at", "2026-01-01T00:00:00Z"),
            ("updated_at", "2026-01-01T00:00:00Z"),
        ] {
            item.insert(k.into(), AttributeValue::S(v.into()));
        }
        item.insert(
            "event_types".into(),
            AttributeValue::L(vec![AttributeValue::S("*".into())]),
        );
        item.insert("enabled".into(), AttributeValue::Bool(true));
        let back: EndpointItem = serde_dynamo::from_item(item).unwrap();
        let StoredSecrets::Plain(secrets) = back.stored_secrets().unwrap() else {
            panic!("a plaintext item reads as plaintext");
        };
        let ep = back.into_endpoint(secrets).unwrap();
        assert_eq!(ep.previous_secrets.len(), 1);
        assert_eq!(
            ep.rate_limit, None,
            "items without a rate limit are unlimited"
        );
    }

    #[test]
    fn events_keep_their_data_text() {
        let e = Event::new(
            "org",
            EventType::MeetingBooked,
            RawValue::from_string(r#"{"z": 1,"a":2}"#.into()).unwrap(),
        );
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(&e)).unwrap();
        let back = event_from_item(item).unwrap();
        assert_eq!(back.payload(), {
            let mut e2 = e.clone();
            e2.created_at = back.created_at;
            e2.payload()
        });
        assert_eq!(back.data.get(), r#"{"z": 1,"a":2}"#);
    }

    fn event_with(data: &str) -> Event {
        Event::new(
            "org",
            EventType::InvoicePaid,
            RawValue::from_string(data.to_string()).unwrap(),
        )
    }

    /// An invoice-like `data` of about `bytes` bytes, as compressible as a
    /// real one (ids and amounts differ, the keys repeat).
    fn invoice_data(bytes: usize) -> String {
        let mut lines = Vec::new();
        let mut n = 0u64;
        while lines.iter().map(|l: &String| l.len() + 1).sum::<usize>() < bytes - 40 {
            n += 1;
            lines.push(format!(
                r#"{{"sku":"SKU-{:08x}","qty":{},"unit_amount":{}}}"#,
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32,
                n % 7 + 1,
                (n * 7919) % 100_000
            ));
        }
        format!(r#"{{"invoice":"in_{n:x}","lines":[{}]}}"#, lines.join(","))
    }

    #[test]
    fn small_data_is_stored_as_text_large_data_deflated() {
        let small = r#"{"amount":1200,"currency":"eur"}"#;
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(&event_with(small))).unwrap();
        assert_eq!(item["data"], AttributeValue::S(small.into()));
        assert_eq!(event_from_item(item).unwrap().data.get(), small);

        let large = invoice_data(1024);
        assert!(large.len() > COMPRESS_DATA_ABOVE, "{}", large.len());
        let event = event_with(&large);
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(&event)).unwrap();
        let AttributeValue::B(deflated) = &item["data"] else {
            panic!("stored as binary: {:?}", item["data"]);
        };
        assert!(
            deflated.as_ref().len() < large.len() / 2,
            "{}",
            deflated.as_ref().len()
        );
        let back = event_from_item(item).unwrap();
        assert_eq!(back.data.get(), large, "the same text, byte for byte");
        assert_eq!(back.id, event.id);
    }

    #[test]
    fn the_embedded_backends_stream_images_keep_data_as_text() {
        let large = invoice_data(2000);
        let event = event_with(&large);
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event_with_text_data(&event)).unwrap();
        assert_eq!(item["data"], AttributeValue::S(large.clone()));
        let written: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(&event)).unwrap();
        let mut rest = item.clone();
        rest.remove("data");
        let mut written_rest = written;
        written_rest.remove("data");
        assert_eq!(rest, written_rest, "the same item but for data's form");
        assert_eq!(event_from_item(item).unwrap().data.get(), large);
    }

    #[test]
    fn noisy_data_reads_back_as_written() {
        // Text deflate barely shortens: pseudo-random base64.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: String = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [(x % 64) as usize],
                )
            })
            .collect();
        let data = format!(r#"{{"blob":"{noise}"}}"#);
        let stored = StoredData::of(&data);
        if let StoredData::Deflated(b) = &stored {
            assert!(b.0.len() < data.len());
        }
        assert_eq!(stored.into_text().unwrap(), data);
    }

    #[test]
    fn stream_images_in_lambdas_json_read_both_forms() {
        // Lambda hands the fan-out the NewImage as JSON, binaries in base64.
        let large = invoice_data(2000);
        let item: serde_dynamo::Item =
            serde_dynamo::to_item(EventItem::from_event(&event_with(&large))).unwrap();
        let json = serde_json::to_string(&item).unwrap();
        assert!(json.contains(r#""data":{"B":""#), "{json}");
        let image: serde_dynamo::Item = serde_json::from_str(&json).unwrap();
        assert_eq!(event_from_item(image).unwrap().data.get(), large);
        let image: serde_dynamo::Item = serde_json::from_value(serde_json::json!({
            "org_id": {"S": "o"}, "event_id": {"S": "evt_1"},
            "event_type": {"S": "invoice.paid"},
            "created_at": {"S": "2026-01-01T00:00:00Z"},
            "data": {"S": "{\"a\":1}"}, "expires_at": {"N": "1"}
        }))
        .unwrap();
        assert_eq!(event_from_item(image).unwrap().data.get(), r#"{"a":1}"#);
    }

    #[test]
    fn corrupt_or_bomb_deflated_data_is_an_error() {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(&event_with("{}"))).unwrap();
        item.insert(
            "data".into(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                0xff, 0x00, 0x13,
            ])),
        );
        assert!(event_from_item(item.clone()).is_err());
        // A megabyte of spaces deflates to about a kilobyte.
        let bomb = deflate(&vec![b' '; 1 << 20]).unwrap();
        assert!(bomb.len() < 4096);
        item.insert(
            "data".into(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bomb)),
        );
        let err = event_from_item(item).unwrap_err();
        assert!(err.to_string().contains("inflates to more than"), "{err}");
    }

    #[test]
    fn malformed_items_are_errors_not_panics() {
        let mut item: HashMap<String, AttributeValue> = HashMap::new();
        item.insert("org_id".into(), AttributeValue::S("o".into()));
        assert!(event_from_item(item.clone()).is_err());
        item.insert("event_id".into(), AttributeValue::S("evt_1".into()));
        item.insert("event_type".into(), AttributeValue::S("nope".into()));
        item.insert(
            "created_at".into(),
            AttributeValue::S("2026-01-01T00:00:00Z".into()),
        );
        item.insert("data".into(), AttributeValue::S("{}".into()));
        item.insert("expires_at".into(), AttributeValue::N("1".into()));
        assert!(event_from_item(item).is_err());
    }

    /// A note as the fan-out writes one: `events` events of one minute to
    /// each of `endpoints` endpoints, each delivery with its message tag.
    fn note_lines(endpoints: usize, events: usize) -> Vec<(String, String)> {
        let t = parse_rfc3339("2026-12-05T10:00:00Z").unwrap();
        let eps: Vec<String> = (0..endpoints)
            .map(|i| webhooks_domain::ids::new_id_at("ep", t - chrono::Duration::days(i as i64)))
            .collect();
        let mut lines = Vec::new();
        for e in 0..events {
            let evt = webhooks_domain::ids::new_id_at(
                "evt",
                t + chrono::Duration::milliseconds(e as i64 * 900),
            );
            for ep in &eps {
                let body =
                    webhooks_domain::delivery::delivery_id(ep, &evt)["dlv_".len()..].to_string();
                let tag = format!("{:08x}", rand::random::<u32>());
                lines.push((body, tag));
            }
        }
        lines
    }

    #[test]
    fn a_notes_entries_round_trip_deflated_and_fit_one_write_unit() {
        let lines = note_lines(5, 11);
        let packed = packed_note_entries(lines.iter().map(|(b, t)| (b.as_str(), t.as_str())));
        let AttributeValue::B(bytes) = &packed else {
            panic!("not deflated: {packed:?}");
        };
        let text: usize = lines.iter().map(|(b, t)| b.len() + 1 + t.len()).sum();
        // 55 deliveries: 3.4 KB of text; deflated, with the note's other
        // attributes (about 200 bytes), under one 1 KB write unit.
        assert!(text > 3000, "{text}");
        assert!(bytes.as_ref().len() < 800, "{} B", bytes.as_ref().len());
        assert_eq!(note_entries(Some(&packed)).unwrap(), lines);
        // One endpoint: every event is new, about a third of the text.
        let lines = note_lines(1, 50);
        let packed = packed_note_entries(lines.iter().map(|(b, t)| (b.as_str(), t.as_str())));
        let AttributeValue::B(bytes) = &packed else {
            panic!("not deflated");
        };
        assert!(bytes.as_ref().len() < 1200, "{} B", bytes.as_ref().len());
        assert_eq!(note_entries(Some(&packed)).unwrap(), lines);
    }

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        assert_eq!(value_size(&AttributeValue::N("12345".into())), 4);
        assert_eq!(value_size(&AttributeValue::N("-0.5".into())), 2);
        assert_eq!(
            value_size(&AttributeValue::L(vec![AttributeValue::S("ab".into())])),
            6
        );
        let item: HashMap<String, AttributeValue> =
            [("k".to_string(), AttributeValue::S("x".repeat(9)))].into();
        assert_eq!(item_size(&item), 10);
    }

    /// A full note as the fan-out writes it for one endpoint (every event
    /// new: the least deflating can keep), under an org id and a key of
    /// their real lengths, confirmed: its item stays within one 1 KB write
    /// unit, so its write and its confirmation cost one unit each.
    #[test]
    fn a_full_confirmed_note_is_one_write_unit() {
        use webhooks_domain::queued::{assign_notes, NOTE_CAPACITY};
        let org = "org_01kt0m77z84genem3wba1ez3rq";
        let lines = note_lines(1, NOTE_CAPACITY);
        let ids: Vec<String> = lines.iter().map(|(b, _)| format!("dlv_{b}")).collect();
        let events: Vec<String> = ids
            .iter()
            .map(|d| webhooks_domain::delivery::parse_delivery_id(d).unwrap().1)
            .collect();
        let items: Vec<(&str, &str, &str)> = ids
            .iter()
            .zip(&events)
            .map(|(d, e)| (org, e.as_str(), d.as_str()))
            .collect();
        let key = assign_notes(&items).remove(0);
        let at = parse_rfc3339("2026-12-05T10:00:00Z").unwrap();
        let item: HashMap<String, AttributeValue> = [
            ("endpoint_id", AttributeValue::S(format!("queued#{org}"))),
            ("event_id", AttributeValue::S(key)),
            (
                "d",
                packed_note_entries(lines.iter().map(|(b, t)| (b.as_str(), t.as_str()))),
            ),
            ("created_at", AttributeValue::S(rfc3339(at))),
            ("expires_at", AttributeValue::N(expires_at(at).to_string())),
            ("c", AttributeValue::S(rfc3339(at))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let size = item_size(&item);
        assert!(size <= 1024, "{size} B");
    }

    #[test]
    fn notes_written_as_string_sets_still_read() {
        let set = AttributeValue::Ss(vec!["aaa:1".into(), "bbb:2".into()]);
        let mut read = note_entries(Some(&set)).unwrap();
        read.sort();
        assert_eq!(
            read,
            vec![("aaa".into(), "1".into()), ("bbb".into(), "2".into())]
        );
    }

    #[test]
    fn corrupt_or_bomb_note_entries_are_errors() {
        let blob = |b: Vec<u8>| AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b));
        assert!(note_entries(Some(&blob(vec![0xff, 0x00, 0x13]))).is_err());
        let err = note_entries(Some(&blob(deflate(&vec![b'a'; 1 << 20]).unwrap()))).unwrap_err();
        assert!(err.to_string().contains("inflates to more than"), "{err}");
        let no_colon = blob(deflate(b"abc").unwrap());
        assert!(note_entries(Some(&no_colon))
            .unwrap_err()
            .to_string()
            .contains("bad entry"));
        assert!(note_entries(None).is_err());
    }
}
