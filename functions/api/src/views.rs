//! The JSON shapes the API answers with.

use serde::Serialize;
use webhooks_domain::endpoint::headers::MaskedHeader;
use webhooks_domain::endpoint::headers::MASK;
use webhooks_domain::endpoint::{AuthInfo, EndpointAuth};
use webhooks_domain::time::rfc3339;
use webhooks_domain::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointSummary, Event, EventFilter, EventType,
};
use webhooks_pipeline::sender::shown_headers;

/// One page of a listing: `{"data": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize)]
pub struct ListView<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An endpoint. `secret` appears only where the contract allows it
/// (creation); listings and reads leave it out entirely.
#[derive(Debug, Serialize)]
pub struct EndpointView<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub event_types: Vec<String>,
    pub description: &'a str,
    pub enabled: bool,
    pub disabled_reason: Option<&'a str>,
    /// Deliveries per second; `null`: unlimited.
    pub rate_limit: Option<u32>,
    /// The payload filter as set; `null`: none.
    pub filter: Option<&'a EventFilter>,
    /// The custom headers' names, each value masked: `{name: "********"}`.
    pub headers: MaskedHeaders,
    /// Its auth without the password or client secret; `null`: none.
    pub auth: Option<AuthInfo>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
    /// In listings: the last 24 hours' figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
}

/// An endpoint's health at a glance: its deliveries of the last 24 hours
/// (by the hour they were created).
#[derive(Debug, Serialize)]
pub struct HealthView {
    pub window_hours: u32,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub pending: u64,
    pub success_rate: Option<f64>,
}

impl HealthView {
    pub fn last_day(s: &webhooks_domain::stats::EndpointStats) -> Self {
        HealthView {
            window_hours: 24,
            delivered: s.delivered,
            dead_lettered: s.dead_lettered,
            pending: s.pending,
            success_rate: s.success_rate,
        }
    }
}

/// Custom header names as a JSON object whose every value is the mask, in
/// the order they were set.
#[derive(Debug)]
pub struct MaskedHeaders(pub Vec<String>);

impl Serialize for MaskedHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for name in &self.0 {
            map.serialize_entry(name, MASK)?;
        }
        map.end()
    }
}

impl<'a> EndpointView<'a> {
    /// The endpoint without its secret.
    pub fn public(ep: &'a Endpoint) -> Self {
        EndpointView {
            id: &ep.id,
            url: &ep.url,
            event_types: ep.subscription.names(),
            description: &ep.description,
            enabled: ep.enabled,
            disabled_reason: ep.disabled_reason.as_deref(),
            rate_limit: ep.rate_limit,
            filter: ep.filter.as_ref(),
            headers: MaskedHeaders(ep.headers.names()),
            auth: ep.auth.as_ref().map(EndpointAuth::info),
            created_at: rfc3339(ep.created_at),
            updated_at: rfc3339(ep.updated_at),
            secret: None,
            health: None,
        }
    }

    /// An endpoint read without its secret.
    pub fn summary(ep: &'a EndpointSummary) -> Self {
        EndpointView {
            id: &ep.id,
            url: &ep.url,
            event_types: ep.subscription.names(),
            description: &ep.description,
            enabled: ep.enabled,
            disabled_reason: ep.disabled_reason.as_deref(),
            rate_limit: ep.rate_limit,
            filter: ep.filter.as_ref(),
            headers: MaskedHeaders(ep.header_names.clone()),
            auth: ep.auth.clone(),
            created_at: rfc3339(ep.created_at),
            updated_at: rfc3339(ep.updated_at),
            secret: None,
            health: None,
        }
    }

    /// The endpoint with its current secret, for its creator.
    pub fn with_secret(ep: &'a Endpoint) -> Self {
        EndpointView {
            secret: Some(ep.secret.expose()),
            ..EndpointView::public(ep)
        }
    }
}

/// `{"secret": "whsec_..."}`.
#[derive(Debug, Serialize)]
pub struct SecretView<'a> {
    pub secret: &'a str,
}

/// A delivery with its attempt log.
#[derive(Debug, Serialize)]
pub struct DeliveryView<'a> {
    pub id: &'a str,
    pub endpoint_id: &'a str,
    pub event_id: &'a str,
    pub event_type: EventType,
    pub status: &'static str,
    /// Each `{number, at, status_code, error, latency_ms, response_body}`.
    pub attempts: &'a [Attempt],
    pub next_attempt_at: Option<String>,
    pub last_error: Option<&'a str>,
    pub created_at: String,
    pub updated_at: String,
}

impl<'a> DeliveryView<'a> {
    pub fn of(d: &'a Delivery) -> Self {
        DeliveryView {
            id: &d.id,
            endpoint_id: &d.endpoint_id,
            event_id: &d.event_id,
            event_type: d.event_type,
            status: d.status.as_str(),
            attempts: &d.attempts,
            // A pending delivery never attempted is due since its creation.
            next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.due_at())),
            last_error: d.last_error.as_deref(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// `GET /v1/deliveries/{id}`: the delivery and the request its attempts
/// send; `request` is null once its event is gone (past retention).
#[derive(Debug, Serialize)]
pub struct DeliveryDetail<'a> {
    #[serde(flatten)]
    pub delivery: DeliveryView<'a>,
    pub request: Option<RequestView>,
}

/// What a delivery POSTs: `{"body": "...", "headers": {name: value}}`, the
/// body byte for byte as the sender sends it, and the headers of its last
/// attempt (of its first, timestamped when due, before any), each value
/// that derives from a secret masked.
#[derive(Debug, Serialize)]
pub struct RequestView {
    pub body: String,
    pub headers: OrderedHeaders,
}

/// Headers as a JSON object, in the order they are sent.
#[derive(Debug)]
pub struct OrderedHeaders(pub Vec<(String, String)>);

impl Serialize for OrderedHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl RequestView {
    /// The request of `delivery` of `event`, built as the sender builds it
    /// (the task the fan-out queues, [`shown_headers`] of it); `added`: the
    /// endpoint's own headers, masked (none once the endpoint is gone).
    pub fn of(delivery: &Delivery, event: &Event, added: &[MaskedHeader]) -> Self {
        let task = delivery.task(event, event.payload());
        let (attempt, at) = match delivery.attempts.last() {
            Some(last) => (last.number, last.at),
            None => (1, delivery.due_at()),
        };
        let headers = OrderedHeaders(
            shown_headers(&task, attempt, at, added)
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        );
        RequestView {
            body: task.payload.as_str().to_string(),
            headers,
        }
    }
}

/// An entry of `GET /v1/event-types`.
#[derive(Debug, Serialize)]
pub struct EventTypeView {
    pub name: &'static str,
    pub description: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::{Secret, Subscription};

    #[test]
    fn endpoints_show_their_secret_only_when_asked() {
        let mut ep = Endpoint::new(
            "org",
            "https://example.com/hook".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.headers = webhooks_domain::endpoint::CustomHeaders::new(
            vec![
                ("X-Zeta".into(), "zeta-value".into()),
                ("X-Alpha".into(), "alpha-value".into()),
            ],
            false,
        )
        .unwrap();
        let public = serde_json::to_value(EndpointView::public(&ep)).unwrap();
        assert!(public.get("secret").is_none());
        assert_eq!(public["event_types"], serde_json::json!(["*"]));
        assert_eq!(public["disabled_reason"], serde_json::Value::Null);
        // Header names in the order set, every value masked.
        let text = serde_json::to_string(&EndpointView::public(&ep)).unwrap();
        assert!(
            text.contains(r#""headers":{"X-Zeta":"********","X-Alpha":"********"}"#),
            "{text}"
        );
        assert!(!text.contains("zeta-value") && !text.contains("alpha-value"));
        let full = serde_json::to_value(EndpointView::with_secret(&ep)).unwrap();
        assert_eq!(full["secret"], ep.secret.expose());
        let summary = ep.summary();
        let listed = serde_json::to_value(EndpointView::summary(&summary)).unwrap();
        assert_eq!(listed, public, "a listing shows what a read shows");
    }

    #[test]
    fn deliveries_show_nulls_where_not_applicable() {
        let mut d = Delivery::new("org", "ep_1", "evt_1", EventType::LeadWon);
        let fresh = serde_json::to_value(DeliveryView::of(&d)).unwrap();
        assert_eq!(fresh["next_attempt_at"], rfc3339(d.created_at));
        d.status = DeliveryStatus::DeadLettered;
        d.attempts.push(Attempt {
            number: 1,
            at: d.created_at,
            status_code: None,
            error: Some("timeout".into()),
            latency_ms: 15000,
            response_body: None,
        });
        let v = serde_json::to_value(DeliveryView::of(&d)).unwrap();
        assert_eq!(v["status"], "dead_lettered");
        assert_eq!(v["next_attempt_at"], serde_json::Value::Null);
        assert_eq!(v["attempts"][0]["status_code"], serde_json::Value::Null);
        assert_eq!(v["attempts"][0]["error"], "timeout");
        assert_eq!(v["attempts"][0]["at"], rfc3339(d.created_at));
    }
}
