//! The headers of a delivery attempt, both signatures included, named in
//! one place ([`headers`]): the sender sends them, and the API shows them
//! with every secret-derived value masked ([`shown_headers`]).

use crate::http::USER_AGENT;
use chrono::{DateTime, Utc};
use webhooks_domain::endpoint::headers::MaskedHeader;
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::{DeliveryTask, Endpoint};

/// What a value shown in place of a secret-derived one reads: the mask of
/// the endpoints' header values too.
pub const MASKED: &str = webhooks_domain::endpoint::headers::MASK;

/// The values of a delivery's headers that derive from the endpoint's
/// secrets: the real ones when sending, masked ones when showing.
trait SecretValues {
    /// `X-Signature` of `body`.
    fn x_signature(&self, body: &[u8]) -> String;
    /// `webhook-signature` of `body` sent at `timestamp` as `msg_id`.
    fn webhook_signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String;
}

/// The endpoint's secrets live at `at`.
struct Signing<'a> {
    endpoint: &'a Endpoint,
    at: DateTime<Utc>,
}

impl SecretValues for Signing<'_> {
    fn x_signature(&self, body: &[u8]) -> String {
        x_signature(&self.endpoint.secret, body)
    }

    fn webhook_signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        webhook_signature_header(
            &self.endpoint.signing_secrets(self.at),
            msg_id,
            timestamp,
            body,
        )
    }
}

/// No secret at all: each value that would derive from one is [`MASKED`].
struct Masked;

impl SecretValues for Masked {
    fn x_signature(&self, _body: &[u8]) -> String {
        MASKED.to_string()
    }

    fn webhook_signature(&self, _msg_id: &str, _timestamp: i64, _body: &[u8]) -> String {
        MASKED.to_string()
    }
}

/// Every header of attempt `attempt` of `task` at `at`, in the order
/// sent: the platform's (CONTRACT section 2), then the endpoint's own
/// (`added`: its custom headers and its `Authorization`, section 12). The
/// one list of them: a header added here is sent and shown alike (a value
/// from a secret goes through [`SecretValues`], so that it is masked where
/// shown). The signatures are over the body alone, so the endpoint's
/// headers never change them; none of them can be a platform header
/// (refused when they were set).
fn headers<'a>(
    task: &DeliveryTask,
    attempt: u32,
    at: DateTime<Utc>,
    secrets: &impl SecretValues,
    added: impl IntoIterator<Item = (&'a str, String)>,
) -> Vec<(&'a str, String)> {
    let body = task.payload.as_bytes();
    let timestamp = at.timestamp();
    let mut headers: Vec<(&'a str, String)> = vec![
        ("content-type", "application/json".to_string()),
        ("user-agent", USER_AGENT.to_string()),
        ("x-signature", secrets.x_signature(body)),
        ("webhook-id", task.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            secrets.webhook_signature(&task.event_id, timestamp, body),
        ),
        ("x-webhook-event", task.event_type.as_str().to_string()),
        ("x-webhook-delivery", task.delivery_id.clone()),
        ("x-webhook-attempt", attempt.to_string()),
    ];
    headers.extend(added);
    headers
}

/// Every header of a delivery attempt, signed with `endpoint`'s secrets,
/// with its custom headers and `authorization` (made from its auth).
pub fn delivery_headers<'a>(
    task: &DeliveryTask,
    endpoint: &'a Endpoint,
    attempt: u32,
    at: DateTime<Utc>,
    authorization: Option<String>,
) -> Vec<(&'a str, String)> {
    let custom = endpoint
        .headers
        .pairs()
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()));
    let auth = authorization.map(|value| ("authorization", value));
    headers(
        task,
        attempt,
        at,
        &Signing { endpoint, at },
        custom.chain(auth),
    )
}

/// The same headers as [`delivery_headers`], with each value that derives
/// from a secret [`MASKED`]: what a delivery's request shows (no secret is
/// read for it). `added`: the endpoint's own headers, masked already
/// (`EndpointSummary::added_headers`).
pub fn shown_headers<'a>(
    task: &DeliveryTask,
    attempt: u32,
    at: DateTime<Utc>,
    added: &'a [MaskedHeader],
) -> Vec<(&'a str, String)> {
    let added = added.iter().map(|h| (h.name.as_str(), h.value.clone()));
    headers(task, attempt, at, &Masked, added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::{Delivery, Event, EventType, Secret, Subscription};

    fn task() -> (DeliveryTask, Endpoint) {
        let ep = Endpoint::new(
            "org",
            "https://example.com/hook".into(),
            Subscription::All,
            Secret::generate(),
        );
        let data = serde_json::value::to_raw_value(&serde_json::json!({"amount": 4200})).unwrap();
        let event = Event::new("org", EventType::InvoicePaid, data);
        let d = Delivery::new("org", &ep.id, &event.id, event.event_type);
        (d.task(&event, event.payload()), ep)
    }

    #[test]
    fn shown_headers_are_the_sent_ones_with_the_signatures_masked() {
        let (task, ep) = task();
        let at = Utc::now();
        let sent = delivery_headers(&task, &ep, 3, at, None);
        let shown = shown_headers(&task, 3, at, &[]);
        let names = |h: &[(&str, String)]| h.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&sent), names(&shown));
        for ((name, sent), (_, shown)) in sent.iter().zip(&shown) {
            if name.contains("signature") {
                assert_eq!(shown, MASKED, "{name}");
                assert!(!shown.contains(sent.as_str()));
            } else {
                assert_eq!(shown, sent, "{name}");
            }
        }
        let value = |n: &str| shown.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(value("user-agent"), USER_AGENT);
        assert_eq!(value("webhook-timestamp"), at.timestamp().to_string());
        assert_eq!(value("x-webhook-attempt"), "3");
        assert_eq!(value("webhook-id"), task.event_id);
    }
}
