//! The headers of a delivery attempt, both signatures included.

use chrono::{DateTime, Utc};
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::{DeliveryTask, Endpoint};

/// Every header of a delivery attempt (CONTRACT section 2).
pub fn delivery_headers(
    task: &DeliveryTask,
    endpoint: &Endpoint,
    attempt: u32,
    at: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let body = task.payload.as_bytes();
    let timestamp = at.timestamp();
    vec![
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
    ]
}
