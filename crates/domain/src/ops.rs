//! Operational notifications (CONTRACT section 10): what the platform's
//! operators must learn without polling. They are not org event types and
//! never reach org endpoints; they go to one operator URL, signed like any
//! delivery, as their own kind of queue message.

use crate::time::rfc3339;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// An operational event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpsEventType {
    /// The platform disabled an endpoint (410 Gone, or failing for the
    /// disable period).
    EndpointDisabled,
    /// A disabled endpoint was enabled again.
    EndpointEnabled,
    /// A delivery ended `dead_lettered` (its schedule ran out, or 410).
    DeliveryDeadLettered,
}

impl OpsEventType {
    /// The wire name (`endpoint.disabled`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OpsEventType::EndpointDisabled => "endpoint.disabled",
            OpsEventType::EndpointEnabled => "endpoint.enabled",
            OpsEventType::DeliveryDeadLettered => "delivery.dead_lettered",
        }
    }
}

/// One operational notification: an id (`evt_` + ULID, the receiver's
/// idempotency key), its type, and its body, made once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpsNotice {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The exact request body: `{id, type, created_at, data}`.
    pub payload: String,
}

impl OpsNotice {
    fn new(kind: OpsEventType, data: serde_json::Value, at: DateTime<Utc>) -> OpsNotice {
        let id = crate::ids::new_id("evt");
        let payload = json!({
            "id": id,
            "type": kind.as_str(),
            "created_at": rfc3339(at),
            "data": data,
        })
        .to_string();
        OpsNotice {
            id,
            event_type: kind.as_str().to_string(),
            payload,
        }
    }

    /// `endpoint.disabled`: `{endpoint_id, org_id, reason}`.
    pub fn endpoint_disabled(
        endpoint_id: &str,
        org_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> OpsNotice {
        OpsNotice::new(
            OpsEventType::EndpointDisabled,
            json!({"endpoint_id": endpoint_id, "org_id": org_id, "reason": reason}),
            at,
        )
    }

    /// `endpoint.enabled`: `{endpoint_id, org_id}`.
    pub fn endpoint_enabled(endpoint_id: &str, org_id: &str, at: DateTime<Utc>) -> OpsNotice {
        OpsNotice::new(
            OpsEventType::EndpointEnabled,
            json!({"endpoint_id": endpoint_id, "org_id": org_id}),
            at,
        )
    }

    /// `delivery.dead_lettered`: `{delivery_id, endpoint_id, org_id,
    /// event_type, last_error}`.
    pub fn delivery_dead_lettered(
        delivery: &crate::Delivery,
        last_error: Option<&str>,
        at: DateTime<Utc>,
    ) -> OpsNotice {
        OpsNotice::new(
            OpsEventType::DeliveryDeadLettered,
            json!({
                "delivery_id": delivery.id,
                "endpoint_id": delivery.endpoint_id,
                "org_id": delivery.org_id,
                "event_type": delivery.event_type.as_str(),
                "last_error": last_error,
            }),
            at,
        )
    }

    /// The `X-Webhook-Delivery` of this notice: `ops_` and its id's ULID.
    pub fn delivery_id(&self) -> String {
        format!(
            "ops_{}",
            crate::ids::body(&self.id, "evt").unwrap_or(&self.id)
        )
    }

    /// The delivery-queue message that makes the sender POST this notice:
    /// `{"ops_notice": {...}}`, which no [`crate::DeliveryTask`] reads as its own.
    pub fn to_message(&self) -> String {
        json!({ "ops_notice": self }).to_string()
    }

    /// The notice in a delivery-queue message, if it is one.
    pub fn from_message(body: &str) -> Option<OpsNotice> {
        // Every delivery task goes through here first: tell them apart by
        // the prefix `to_message` writes, without parsing their payload.
        if !body.starts_with("{\"ops_notice\":") {
            return None;
        }
        #[derive(Deserialize)]
        struct Message {
            ops_notice: OpsNotice,
        }
        serde_json::from_str::<Message>(body)
            .ok()
            .map(|m| m.ops_notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_through_its_queue_message_and_no_delivery_task_reads_it() {
        let at = Utc::now();
        let notice =
            OpsNotice::endpoint_disabled("ep_1", "acme", "the endpoint answered 410 Gone", at);
        let message = notice.to_message();
        assert_eq!(OpsNotice::from_message(&message), Some(notice.clone()));
        assert!(serde_json::from_str::<crate::DeliveryTask>(&message).is_err());
        let body: serde_json::Value = serde_json::from_str(&notice.payload).unwrap();
        assert_eq!(body["type"], "endpoint.disabled");
        assert_eq!(body["id"], notice.id.as_str());
        assert_eq!(body["created_at"], rfc3339(at).as_str());
        assert_eq!(
            body["data"],
            json!({"endpoint_id": "ep_1", "org_id": "acme", "reason": "the endpoint answered 410 Gone"})
        );
        assert!(notice.delivery_id().starts_with("ops_"));
    }

    #[test]
    fn an_ordinary_task_is_not_a_notice() {
        assert_eq!(OpsNotice::from_message(r#"{"delivery_id":"dlv_1"}"#), None);
        assert_eq!(OpsNotice::from_message("not json"), None);
    }
}
