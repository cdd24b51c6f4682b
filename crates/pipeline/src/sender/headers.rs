//! The headers of a delivery attempt, both signatures included.

use chrono::{DateTime, Utc};
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::{DeliveryTask, Endpoint};

/// Every header of a delivery attempt: the platform's (CONTRACT section
/// 2), then the endpoint's custom headers and its `Authorization` (section
/// 12: `authorization`, made from its auth). The signatures are over the
/// body alone, so these never change them; none of them can be a platform
/// header (refused when they were set).
pub fn delivery_headers<'a>(
    task: &DeliveryTask,
    endpoint: &'a Endpoint,
    attempt: u32,
    at: DateTime<Utc>,
    authorization: Option<String>,
) -> Vec<(&'a str, String)> {
    let body = task.payload.as_bytes();
    let timestamp = at.timestamp();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-signature", x_signature(&endpoint.secret, body)),
        ("webhook-id", task.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            webhook_signature_header(
                &endpoint.signing_secrets(at),
                &task.event_id,
                timestamp,
                body,
            ),
        ),
        ("x-webhook-event", task.event_type.as_str().to_string()),
        ("x-webhook-delivery", task.delivery_id.clone()),
        ("x-webhook-attempt", attempt.to_string()),
    ];
    headers.extend(
        endpoint
            .headers
            .pairs()
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone())),
    );
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    headers
}
