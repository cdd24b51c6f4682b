//! The idempotency table: keys seen before, with the value first stored.

use crate::error::{backend_error, is_condition_failure};
use crate::items::s;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::Utc;
use std::time::Duration;
use webhooks_ports::{BackendError, IdempotencyStore, Result};

/// Idempotency keys in DynamoDB (key: `key`; TTL attribute `expires_at`).
#[derive(Clone)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

impl DynamoIdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoIdempotencyStore {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        let now = Utc::now().timestamp();
        let expires = now + i64::try_from(ttl.as_secs()).unwrap_or(86400);
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", s(key))
            .item("value", s(value))
            .item("expires_at", AttributeValue::N(expires.to_string()))
            // TTL deletes lazily, so an expired key counts as absent.
            .condition_expression("attribute_not_exists(#k) OR expires_at < :now")
            .expression_attribute_names("#k", "key")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failure(&e) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("key", s(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| backend_error("GetItem idempotency", e))?;
                out.item
                    .and_then(|i| i.get("value").and_then(|v| v.as_s().ok().cloned()))
                    .map(Some)
                    .ok_or_else(|| {
                        BackendError::Transient(format!("idempotency key {key} vanished"))
                    })
            }
            Err(e) => Err(backend_error("PutItem idempotency", e)),
        }
    }
}
