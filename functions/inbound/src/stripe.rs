//! Stripe: the `Stripe-Signature` check and the billing events that become
//! platform events.

use crate::crypto::hmac_sha256;
use crate::response::Rejection;
use crate::{bounded_raw, Inbound};
use crate::{received, STRIPE_CLAIM_TTL};
use hmac::Mac;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Duration;
use webhooks_domain::event::validate_data;
use webhooks_domain::Event;
use webhooks_domain::EventType;
use webhooks_pipeline::publish::{publish_claimed, Claim, PublishError};
use webhooks_ports::{BackendError, InboundRecord};

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No `t=` timestamp or no `v1=` signature.
    Malformed,
    /// No `v1` signature matches the payload.
    NoMatch,
    /// The timestamp is further than the tolerance from now, either way.
    OutsideTolerance,
}

impl SignatureError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            SignatureError::Malformed => {
                "Stripe-Signature header must carry t=<timestamp> and at least one v1=<signature>"
            }
            SignatureError::NoMatch => "no v1 signature in Stripe-Signature matches the payload",
            SignatureError::OutsideTolerance => {
                "the Stripe-Signature timestamp is outside the tolerance"
            }
        }
    }
}

/// Checks a `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=..][,v0=..]`):
/// some `v1` must be the HMAC-SHA256 of `"{t}.{raw body}"` keyed with the
/// endpoint secret, and `t` within `tolerance` of `now` (Unix seconds).
pub(crate) fn verify(
    header: &str,
    body: &[u8],
    secret: &str,
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = hmac_sha256(secret).ok_or(SignatureError::NoMatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures.iter().any(|s| {
        hex::decode(s)
            .map(|bytes| mac.clone().verify_slice(&bytes).is_ok())
            .unwrap_or(false)
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(())
}

/// A Stripe event, as far as this platform reads it.
#[derive(Debug)]
pub(crate) struct StripeEvent {
    pub id: String,
    pub kind: String,
    object: Option<Box<RawValue>>,
    /// `data.object` parsed, or `Null`.
    object_value: Value,
    previous_status: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    object: Option<Box<RawValue>>,
    #[serde(default)]
    previous_attributes: Option<Value>,
}

/// Longest accepted Stripe event id and org id.
const MAX_ID_LEN: usize = 255;

/// Why a (correctly signed) body is not a usable Stripe event.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MalformedEvent {
    #[error("body is not a Stripe event: not a JSON object")]
    NotAnObject,
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(#[source] serde_json::Error),
    #[error("event id must be 1 to {MAX_ID_LEN} characters long")]
    BadId,
    #[error("event type is empty")]
    EmptyType,
    #[error("data.object is not JSON: {0}")]
    ObjectNotJson(#[source] serde_json::Error),
}

impl StripeEvent {
    /// Reads an event body; the error says what is wrong with it.
    pub(crate) fn parse(body: &[u8]) -> Result<StripeEvent, MalformedEvent> {
        if !crate::looks_like_json_object(body) {
            return Err(MalformedEvent::NotAnObject);
        }
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(MalformedEvent::NotAnEvent)?;
        if envelope.id.is_empty() || envelope.id.len() > MAX_ID_LEN {
            return Err(MalformedEvent::BadId);
        }
        if envelope.kind.is_empty() {
            return Err(MalformedEvent::EmptyType);
        }
        let (object, previous) = match envelope.data {
            Some(d) => (d.object, d.previous_attributes),
            None => (None, None),
        };
        let object_value = match &object {
            Some(raw) => serde_json::from_str(raw.get()).map_err(MalformedEvent::ObjectNotJson)?,
            None => Value::Null,
        };
        let previous_status = previous
            .as_ref()
            .and_then(|p| p.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(StripeEvent {
            id: envelope.id,
            kind: envelope.kind,
            object,
            object_value,
            previous_status,
        })
    }

    /// `data.object.metadata.org_id`, when it is a usable org id.
    pub(crate) fn org_id(&self) -> Option<&str> {
        self.object_value
            .get("metadata")
            .and_then(|m| m.get("org_id"))
            .and_then(Value::as_str)
            .filter(|o| {
                !o.trim().is_empty() && o.len() <= MAX_ID_LEN && !o.chars().any(char::is_control)
            })
    }

    /// The platform event this Stripe event becomes, if any.
    pub(crate) fn platform_event_type(&self) -> Option<EventType> {
        match self.kind.as_str() {
            "invoice.paid" => Some(EventType::InvoicePaid),
            "invoice.payment_failed" => Some(EventType::PaymentFailed),
            "customer.subscription.deleted" => Some(EventType::BillingSuspended),
            "customer.subscription.updated" => {
                let now_unpaid =
                    self.object_value.get("status").and_then(Value::as_str) == Some("unpaid");
                // Stripe lists `status` in previous_attributes only when it
                // changed, so "turned unpaid" needs it there and different.
                let turned = self
                    .previous_status
                    .as_deref()
                    .is_some_and(|before| before != "unpaid");
                (now_unpaid && turned).then_some(EventType::BillingSuspended)
            }
            _ => None,
        }
    }

    /// The platform event's data: `{"source":"stripe","stripe_event_id":..,
    /// "stripe_type":..,"object":<data.object>}`, or the same without
    /// `object` (plus its `object_id`) when that is over the size limit.
    pub(crate) fn event_data(&self) -> Box<RawValue> {
        #[derive(Serialize)]
        struct Data<'a> {
            source: &'static str,
            stripe_event_id: &'a str,
            stripe_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            object: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            object_id: Option<&'a str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            object_omitted: bool,
        }
        let full = Data {
            source: "stripe",
            stripe_event_id: &self.id,
            stripe_type: &self.kind,
            object: self.object.as_deref(),
            object_id: None,
            object_omitted: false,
        };
        if let Some(raw) = to_raw(&full).filter(|r| validate_data(r).is_ok()) {
            return raw;
        }
        let summary = Data {
            object: None,
            object_id: self.object_value.get("id").and_then(Value::as_str),
            object_omitted: self.object.is_some(),
            ..full
        };
        to_raw(&summary)
            .filter(|r| validate_data(r).is_ok())
            .unwrap_or_else(|| {
                // Only an absurdly long event id or type gets here.
                RawValue::from_string(r#"{"source":"stripe"}"#.to_string())
                    .unwrap_or_else(|_| unreachable!("a constant JSON object"))
            })
    }
}

fn to_raw<T: Serialize>(value: &T) -> Option<Box<RawValue>> {
    serde_json::to_string(value)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
}

/// What configures the Stripe route's secret (the ARN in Lambda).
const STRIPE_SECRET_VARIABLE: &str =
    "STRIPE_WEBHOOK_SECRET_ARN (STRIPE_WEBHOOK_SECRET in webhooks dev)";

/// `POST /inbound/stripe`: verify, record, acknowledge, and turn billing
/// events into platform events.
impl Inbound {
    pub(crate) async fn stripe(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let body = req.body().as_ref();
        let now = self.clock.now().timestamp();
        Inbound::with_secret(
            &self.config.stripe_webhook_secret,
            STRIPE_SECRET_VARIABLE,
            |secret| {
                let signature = Inbound::signature(req, "stripe-signature", "Stripe-Signature")?;
                verify(signature, body, secret, self.config.stripe_tolerance, now)
                    .map_err(|e| Rejection::InvalidSignature(e.message().into()))
            },
        )
        .await?;
        let event =
            StripeEvent::parse(body).map_err(|e| Rejection::InvalidRequest(e.to_string()))?;
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
                received_at: self.clock.now(),
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
    /// Stripe retries after a crash between the two writes (see
    /// [`webhooks_pipeline::publish`]).
    async fn emit_stripe_event(
        &self,
        stripe_event: &StripeEvent,
        event_type: EventType,
        org_id: &str,
    ) -> Result<(), Rejection> {
        let now = self.clock.now();
        let event = Event::new_at(org_id, event_type, stripe_event.event_data(), now);
        let claim = Claim {
            key: &format!("stripe:{}", stripe_event.id),
            fingerprint: None,
            ttl: STRIPE_CLAIM_TTL,
        };
        let published = match publish_claimed(
            self.events.as_ref(),
            self.idempotency.as_ref(),
            &claim,
            event,
            now,
        )
        .await
        {
            Ok(p) => p,
            Err(PublishError::InProgress { retry_after }) => {
                return Err(Rejection::InProgress(retry_after))
            }
            Err(PublishError::Backend(e)) => return Err(e.into()),
            // A claim without a fingerprint matches any repeat.
            Err(e @ PublishError::Mismatch) => {
                return Err(BackendError::Permanent(e.to_string()).into())
            }
        };
        tracing::info!(
            stripe_event_id = %stripe_event.id, org_id, event_id = %published.id,
            event_type = event_type.as_str(), written = published.written,
            "Stripe billing event"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn accepts_any_matching_v1() {
        let body = r#"{"id":"evt_1"}"#;
        let good = sign("whsec_x", 1000, body);
        let header = format!("t=1000,v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(
            verify(&header, body.as_bytes(), "whsec_x", TOL, 1000),
            Ok(())
        );
        assert_eq!(
            verify(&header, body.as_bytes(), "whsec_y", TOL, 1000),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        let body = b"{}";
        for header in [
            "",
            "v1=00",
            "t=1000",
            "t=abc,v1=00",
            "t=1000,v0=00",
            "garbage",
        ] {
            assert_eq!(
                verify(header, body, "s", TOL, 1000),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        assert_eq!(
            verify("t=1000,v1=zz", body, "s", TOL, 1000),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn enforces_tolerance_both_ways() {
        let body = "{}";
        let header = |t: i64| format!("t={t},v1={}", sign("s", t, body));
        let now = 1_700_000_000;
        assert!(verify(&header(now - 300), body.as_bytes(), "s", TOL, now).is_ok());
        assert!(verify(&header(now + 300), body.as_bytes(), "s", TOL, now).is_ok());
        for t in [now - 301, now + 301] {
            assert_eq!(
                verify(&header(t), body.as_bytes(), "s", TOL, now),
                Err(SignatureError::OutsideTolerance)
            );
        }
    }

    fn event(kind: &str, object: &str, previous: Option<&str>) -> StripeEvent {
        let previous = previous
            .map(|p| format!(r#","previous_attributes":{p}"#))
            .unwrap_or_default();
        let body =
            format!(r#"{{"id":"evt_1","type":"{kind}","data":{{"object":{object}{previous}}}}}"#);
        StripeEvent::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn maps_billing_events() {
        let obj = r#"{"id":"in_1","metadata":{"org_id":"org_a"}}"#;
        assert_eq!(
            event("invoice.paid", obj, None).platform_event_type(),
            Some(EventType::InvoicePaid)
        );
        assert_eq!(
            event("invoice.payment_failed", obj, None).platform_event_type(),
            Some(EventType::PaymentFailed)
        );
        assert_eq!(
            event("customer.subscription.deleted", obj, None).platform_event_type(),
            Some(EventType::BillingSuspended)
        );
        let unpaid = r#"{"status":"unpaid","metadata":{"org_id":"org_a"}}"#;
        let sub = "customer.subscription.updated";
        assert_eq!(
            event(sub, unpaid, Some(r#"{"status":"past_due"}"#)).platform_event_type(),
            Some(EventType::BillingSuspended)
        );
        // Another change to an already-unpaid subscription: no second suspension.
        assert_eq!(event(sub, unpaid, None).platform_event_type(), None);
        assert_eq!(
            event(sub, unpaid, Some(r#"{"status":"unpaid"}"#)).platform_event_type(),
            None
        );
        assert_eq!(
            event(
                sub,
                r#"{"status":"active"}"#,
                Some(r#"{"status":"unpaid"}"#)
            )
            .platform_event_type(),
            None
        );
        assert_eq!(
            event("charge.succeeded", obj, None).platform_event_type(),
            None
        );
        assert_eq!(event("invoice.paid", obj, None).org_id(), Some("org_a"));
        assert_eq!(event("invoice.paid", "{}", None).org_id(), None);
        assert_eq!(
            event("invoice.paid", r#"{"metadata":{"org_id":""}}"#, None).org_id(),
            None
        );
    }

    #[test]
    fn refuses_bodies_that_are_not_events() {
        for body in [
            "",
            "not json",
            "[]",
            r#"["evt_1","invoice.paid",null]"#,
            r#"{"type":"x"}"#,
            r#"{"id":"evt_1"}"#,
            r#"{"id":"","type":"x"}"#,
        ] {
            assert!(StripeEvent::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn data_keeps_the_object_or_summarizes_it() {
        let e = event("invoice.paid", r#"{"id":"in_1", "amount_paid":100}"#, None);
        assert_eq!(
            e.event_data().get(),
            r#"{"source":"stripe","stripe_event_id":"evt_1","stripe_type":"invoice.paid","object":{"id":"in_1", "amount_paid":100}}"#
        );
        let big = format!(r#"{{"id":"in_2","lines":"{}"}}"#, "x".repeat(70 * 1024));
        let e = event("invoice.paid", &big, None);
        assert_eq!(
            e.event_data().get(),
            r#"{"source":"stripe","stripe_event_id":"evt_1","stripe_type":"invoice.paid","object_id":"in_2","object_omitted":true}"#
        );
    }
}
