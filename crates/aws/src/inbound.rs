//! The inbound table: provider events and messages, recorded once each, the
//! messages of each org, and the routes of receiving addresses to orgs.
//!
//! | item | `pk` | `sk` |
//! | --- | --- | --- |
//! | record | `{provider}#{provider_id}` | `record` |
//! | org message | `org#{org_id}` | `msg#{received_at, RFC 3339 millis}#{provider}#{provider_id}` |
//! | route | `route#{provider}#{address}` | `route` |

use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::s;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use webhooks_domain::time::parse_rfc3339;
use webhooks_ports::{BackendError, InboundRecord, InboundStore, Result};

/// How long records and messages are kept before DynamoDB's TTL removes them.
pub const INBOUND_RETENTION_DAYS: i64 = webhooks_ports::table_retention::INBOUND_DAYS;

const RECORD_SK: &str = "record";
const ROUTE_SK: &str = "route";

/// Inbound records and routes in DynamoDB (key: `pk`, `sk`; TTL attribute
/// `expires_at`).
#[derive(Clone)]
pub struct DynamoInboundStore {
    client: Client,
    table: String,
}

impl DynamoInboundStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoInboundStore {
            client,
            table: table.into(),
        }
    }
}

/// An inbound record as stored, under either of its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InboundItem {
    pk: String,
    sk: String,
    provider: String,
    provider_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    raw: String,
    received_at: String,
    expires_at: i64,
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl InboundItem {
    fn new(r: &InboundRecord, pk: String, sk: String) -> Self {
        InboundItem {
            pk,
            sk,
            provider: r.provider.clone(),
            provider_id: r.provider_id.clone(),
            org_id: r.org_id.clone(),
            kind: r.kind.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            text: r.text.clone(),
            raw: r.raw.clone(),
            received_at: millis(r.received_at),
            expires_at: (r.received_at + chrono::Duration::days(INBOUND_RETENTION_DAYS))
                .timestamp(),
        }
    }

    fn into_record(self) -> Result<InboundRecord> {
        let received_at = parse_rfc3339(&self.received_at).ok_or_else(|| {
            decode_error("inbound record", format!("bad time '{}'", self.received_at))
        })?;
        Ok(InboundRecord {
            provider: self.provider,
            provider_id: self.provider_id,
            org_id: self.org_id,
            kind: self.kind,
            from: self.from,
            to: self.to,
            text: self.text,
            raw: self.raw,
            received_at,
        })
    }

    fn to_item(&self) -> Result<HashMap<String, AttributeValue>> {
        serde_dynamo::to_item(self).map_err(|e| decode_error("inbound record", e))
    }
}

fn record_pk(provider: &str, provider_id: &str) -> String {
    format!("{provider}#{provider_id}")
}

fn org_pk(org_id: &str) -> String {
    format!("org#{org_id}")
}

fn route_pk(provider: &str, address: &str) -> String {
    format!("route#{provider}#{address}")
}

/// Maps a failed transaction: a failed condition means the record exists.
fn transaction_outcome(
    e: aws_smithy_runtime_api::client::result::SdkError<
        TransactWriteItemsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Result<bool> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
        let codes: Vec<&str> = c
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code())
            .collect();
        if codes.contains(&"ConditionalCheckFailed") {
            return Ok(false);
        }
        if codes.iter().any(|c| {
            matches!(
                *c,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
            )
        }) {
            return Err(BackendError::Transient(format!(
                "TransactWriteItems inbound: cancelled ({})",
                codes.join(", ")
            )));
        }
    }
    Err(backend_error("TransactWriteItems inbound", e))
}

#[async_trait]
impl InboundStore for DynamoInboundStore {
    async fn record(&self, record: &InboundRecord) -> Result<bool> {
        let pk = record_pk(&record.provider, &record.provider_id);
        let item = InboundItem::new(record, pk, RECORD_SK.to_string()).to_item()?;
        let Some(org_id) = record.org_id.as_deref().filter(|_| record.is_org_message()) else {
            return match self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if is_condition_failure(&e) => Ok(false),
                Err(e) => Err(backend_error("PutItem inbound", e)),
            };
        };
        // The record and its org index entry are written together, so a
        // crash between them cannot leave a recorded message unlisted.
        let sk = format!(
            "msg#{}#{}#{}",
            millis(record.received_at),
            record.provider,
            record.provider_id
        );
        let index = InboundItem::new(record, org_pk(org_id), sk).to_item()?;
        let build = |e: aws_smithy_types::error::operation::BuildError| {
            BackendError::Permanent(format!("TransactWriteItems inbound: {e}"))
        };
        let put_record = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build)?;
        let put_index = Put::builder()
            .table_name(&self.table)
            .set_item(Some(index))
            .build()
            .map_err(build)?;
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_record).build())
            .transact_items(TransactWriteItem::builder().put(put_index).build())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => transaction_outcome(e),
        }
    }

    async fn route(&self, provider: &str, address: &str) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&route_pk(provider, address)))
            .key("sk", s(ROUTE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem inbound route", e))?;
        Ok(out
            .item
            .and_then(|i| i.get("org_id").and_then(|v| v.as_s().ok().cloned())))
    }

    async fn set_route(&self, provider: &str, address: &str, org_id: &str) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&route_pk(provider, address)))
            .item("sk", s(ROUTE_SK))
            .item("provider", s(provider))
            .item("address", s(address))
            .item("org_id", s(org_id))
            .send()
            .await
            .map_err(|e| backend_error("PutItem inbound route", e))?;
        Ok(())
    }

    async fn messages(&self, org_id: &str, limit: usize) -> Result<Vec<InboundRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :msg)")
            .expression_attribute_values(":pk", s(&org_pk(org_id)))
            .expression_attribute_values(":msg", s("msg#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| backend_error("Query inbound messages", e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item::<_, InboundItem>(item)
                    .map_err(|e| decode_error("inbound record", e))?
                    .into_record()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_time() {
        let t = parse_rfc3339("2026-11-27T06:00:00Z").unwrap();
        assert_eq!(millis(t), "2026-11-27T06:00:00.000Z");
        let later = t + chrono::Duration::milliseconds(5);
        assert!(millis(later) > millis(t));
        assert_eq!(record_pk("twilio", "SM1"), "twilio#SM1");
        assert_eq!(route_pk("whatsapp", "123"), "route#whatsapp#123");
    }

    #[test]
    fn items_round_trip() {
        let record = InboundRecord {
            provider: "whatsapp".into(),
            provider_id: "wamid.1".into(),
            org_id: Some("org_a".into()),
            kind: InboundRecord::MESSAGE.into(),
            from: Some("15550002222".into()),
            to: None,
            text: Some("hi".into()),
            raw: "{}".into(),
            received_at: parse_rfc3339("2026-11-27T06:00:00.123Z").unwrap(),
        };
        let item = InboundItem::new(&record, "org#org_a".into(), "msg#x".into());
        assert_eq!(item.expires_at, record.received_at.timestamp() + 90 * 86400);
        let map = item.to_item().unwrap();
        assert!(!map.contains_key("to"));
        let back: InboundItem = serde_dynamo::from_item(map).unwrap();
        assert_eq!(back.into_record().unwrap(), record);
    }
}
