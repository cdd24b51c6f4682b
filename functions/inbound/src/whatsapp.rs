//! WhatsApp Cloud API (Meta): the verification handshake, the
//! `X-Hub-Signature-256` check, and the messages of a notification.

use crate::crypto::hmac_sha256;
use crate::received;
use crate::response::with_body;
use crate::response::Rejection;
use crate::{bounded_raw, Inbound};
use chrono::Utc;
use hmac::Mac;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use webhooks_ports::InboundRecord;

/// Whether `header` is `sha256=<hex HMAC-SHA256(app secret, raw body)>`.
pub(crate) fn signature_valid(app_secret: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex_signature) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_signature) else {
        return false;
    };
    let Some(mut mac) = hmac_sha256(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// One message of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub id: String,
    pub from: Option<String>,
    /// `value.metadata.phone_number_id`: the business number that received it.
    pub phone_number_id: Option<String>,
    /// `text.body` of a text message.
    pub text: Option<String>,
    /// The message's JSON as sent.
    pub raw: String,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    entry: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Option<Vec<Change>>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    value: Option<ChangeValue>,
}

#[derive(Deserialize)]
struct ChangeValue {
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    messages: Option<Vec<Box<RawValue>>>,
}

/// A JSON string, or a number written as text.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a (correctly signed) body is not a usable WhatsApp notification.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MalformedNotification {
    #[error("body is not a WhatsApp notification: not a JSON object")]
    NotAnObject,
    #[error("body is not a WhatsApp notification: {0}")]
    NotANotification(#[source] serde_json::Error),
    #[error("a message is not JSON: {0}")]
    MessageNotJson(#[source] serde_json::Error),
    #[error("a message has no string id")]
    MessageWithoutId,
}

/// The messages of a notification, across all its entries and changes
/// (statuses and other fields carry none). Messages without an id are left
/// out; the message says what is wrong with a body that is not a
/// notification.
pub(crate) fn messages(body: &[u8]) -> Result<Vec<Message>, MalformedNotification> {
    if !crate::looks_like_json_object(body) {
        return Err(MalformedNotification::NotAnObject);
    }
    let notification: Notification =
        serde_json::from_slice(body).map_err(MalformedNotification::NotANotification)?;
    let mut out = Vec::new();
    let changes = notification
        .entry
        .unwrap_or_default()
        .into_iter()
        .flat_map(|e| e.changes.unwrap_or_default());
    for value in changes.filter_map(|c| c.value) {
        let phone_number_id = text(
            value
                .metadata
                .as_ref()
                .and_then(|m| m.get("phone_number_id")),
        );
        for raw in value.messages.unwrap_or_default() {
            let message: Value =
                serde_json::from_str(raw.get()).map_err(MalformedNotification::MessageNotJson)?;
            let Some(id) = message
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
            else {
                return Err(MalformedNotification::MessageWithoutId);
            };
            out.push(Message {
                id,
                from: text(message.get("from")),
                phone_number_id: phone_number_id.clone(),
                text: text(message.get("text").and_then(|t| t.get("body"))),
                raw: raw.get().to_string(),
            });
        }
    }
    Ok(out)
}

/// `GET /inbound/whatsapp` (the handshake) and `POST /inbound/whatsapp`:
/// verify, record each message, acknowledge.
impl Inbound {
    pub(crate) async fn whatsapp_handshake(
        &self,
        req: &Request,
    ) -> Result<Response<Body>, Rejection> {
        let mut query: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            query.entry(k.into_owned()).or_insert(v.into_owned());
        }
        Inbound::with_secret(
            &self.config.whatsapp_verify_token,
            "WHATSAPP_VERIFY_TOKEN_ARN (WHATSAPP_VERIFY_TOKEN in webhooks dev)",
            |expected| {
                let mode_ok = query.get("hub.mode").map(String::as_str) == Some("subscribe");
                let token_ok = query
                    .get("hub.verify_token")
                    .is_some_and(|t| crate::crypto::strings_equal(t, expected));
                if mode_ok & token_ok {
                    Ok(())
                } else {
                    Err(Rejection::Forbidden(
                        "hub.mode must be subscribe and hub.verify_token must match".into(),
                    ))
                }
            },
        )
        .await?;
        let challenge = query
            .get("hub.challenge")
            .ok_or_else(|| Rejection::InvalidRequest("hub.challenge is missing".into()))?;
        Ok(with_body(StatusCode::OK, "text/plain", challenge.clone()))
    }

    pub(crate) async fn whatsapp(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let body = req.body().as_ref();
        Inbound::with_secret(
            &self.config.whatsapp_app_secret,
            "WHATSAPP_APP_SECRET_ARN (WHATSAPP_APP_SECRET in webhooks dev)",
            |secret| {
                let signature =
                    Inbound::signature(req, "x-hub-signature-256", "X-Hub-Signature-256")?;
                if signature_valid(secret, signature, body) {
                    Ok(())
                } else {
                    Err(Rejection::InvalidSignature(
                        "X-Hub-Signature-256 does not match".into(),
                    ))
                }
            },
        )
        .await?;
        let messages = messages(body).map_err(|e| Rejection::InvalidRequest(e.to_string()))?;
        let mut routes: HashMap<String, Option<String>> = HashMap::new();
        for message in messages {
            let org_id = match &message.phone_number_id {
                Some(number) => match routes.get(number) {
                    Some(org) => org.clone(),
                    None => {
                        let org = self.store.route("whatsapp", number).await?;
                        routes.insert(number.clone(), org.clone());
                        org
                    }
                },
                None => None,
            };
            self.record_message(InboundRecord {
                provider: "whatsapp".into(),
                provider_id: message.id,
                org_id,
                kind: InboundRecord::MESSAGE.into(),
                from: message.from,
                to: message.phone_number_id,
                text: message.text,
                raw: bounded_raw(message.raw.as_bytes()),
                received_at: Utc::now(),
            })
            .await?;
        }
        Ok(received())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_message_of_every_change() {
        let body = r#"{"object":"whatsapp_business_account","entry":[
            {"id":"1","changes":[
                {"field":"messages","value":{"messaging_product":"whatsapp",
                    "metadata":{"display_phone_number":"15550001111","phone_number_id":"111"},
                    "messages":[
                        {"from":"15550002222","id":"wamid.A","timestamp":"1","type":"text","text":{"body":"hi"}},
                        {"from":"15550003333","id":"wamid.B","timestamp":"2","type":"image","image":{"id":"m"}}
                    ]}},
                {"field":"messages","value":{"metadata":{"phone_number_id":"111"},
                    "statuses":[{"id":"wamid.S","status":"delivered"}]}}
            ]},
            {"id":"2","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"222"},
                "messages":[{"from":"15550004444","id":"wamid.C","type":"text","text":{"body":"yo"}}]}}]}
        ]}"#;
        let got = messages(body.as_bytes()).unwrap();
        let ids: Vec<_> = got.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["wamid.A", "wamid.B", "wamid.C"]);
        assert_eq!(got[0].text.as_deref(), Some("hi"));
        assert_eq!(got[0].from.as_deref(), Some("15550002222"));
        assert_eq!(got[0].phone_number_id.as_deref(), Some("111"));
        assert_eq!(got[1].text, None);
        assert_eq!(got[2].phone_number_id.as_deref(), Some("222"));
        assert!(got[0]
            .raw
            .starts_with(r#"{"from":"15550002222","id":"wamid.A""#));
    }

    #[test]
    fn statuses_only_and_empty_notifications_hold_no_messages() {
        assert!(
            messages(br#"{"entry":[{"changes":[{"value":{"statuses":[{"id":"s"}]}}]}]}"#)
                .unwrap()
                .is_empty()
        );
        assert!(messages(b"{}").unwrap().is_empty());
    }

    #[test]
    fn refuses_bodies_that_are_not_notifications() {
        for body in [
            "",
            "nope",
            "[]",
            "[[]]",
            r#"{"entry":{}}"#,
            r#"{"entry":[{"changes":"x"}]}"#,
            r#"{"entry":[{"changes":[{"value":{"messages":[{"from":"x"}]}}]}]}"#,
            r#"{"entry":[{"changes":[{"value":{"messages":[{"id":42}]}}]}]}"#,
        ] {
            assert!(messages(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn checks_the_signature_header() {
        use sha2::Sha256;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(b"{}");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert!(signature_valid(
            "app-secret",
            &format!("sha256={hex}"),
            b"{}"
        ));
        assert!(signature_valid(
            "app-secret",
            &format!("sha256={}", hex.to_uppercase()),
            b"{}"
        ));
        assert!(!signature_valid("app-secret", &hex, b"{}"));
        assert!(!signature_valid("other", &format!("sha256={hex}"), b"{}"));
        assert!(!signature_valid(
            "app-secret",
            &format!("sha256={hex}"),
            b"{ }"
        ));
        assert!(!signature_valid("app-secret", "sha256=zz", b"{}"));
    }
}
