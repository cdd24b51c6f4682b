//! The events table: the org's event stream. Its DynamoDB stream feeds the
//! fan-out.

use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::s;
use crate::items::{event_from_item, EventItem};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use webhooks_domain::Event;
use webhooks_ports::{BackendError, EventStore, Listed, Result, Undecodable};

/// Most keys one BatchGetItem takes.
const BATCH_GET_LIMIT: usize = 100;

/// Events in DynamoDB (key: `org_id`, `event_id`).
#[derive(Clone)]
pub struct DynamoEventStore {
    client: Client,
    table: String,
}

impl DynamoEventStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoEventStore {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(EventItem::from_event(event))
                .map_err(|e| decode_error("event", e))?;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("PutItem events", e)),
        }
    }

    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("event_id", s(event_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem events", e))?;
        out.item.map(event_from_item).transpose()
    }

    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>> {
        // Each id once: BatchGetItem refuses a key named twice.
        let mut ids: Vec<&String> = event_ids.iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET_LIMIT) {
            let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| {
                    HashMap::from([
                        ("org_id".to_string(), s(org_id)),
                        ("event_id".to_string(), s(id)),
                    ])
                })
                .collect();
            let mut rounds = 0;
            while !pending.is_empty() {
                rounds += 1;
                if rounds > 8 {
                    return Err(BackendError::Transient(
                        "BatchGetItem events: keys left unprocessed".into(),
                    ));
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| BackendError::Permanent(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| backend_error("BatchGetItem events", e))?;
                if let Some(mut responses) = out.responses {
                    let items = responses.remove(&self.table).unwrap_or_default();
                    found.extend(items.into_iter().map(listed_item));
                }
                if let Some(mut unprocessed) = out.unprocessed_keys {
                    if let Some(left) = unprocessed.remove(&self.table) {
                        pending = left.keys;
                        tokio::time::sleep(std::time::Duration::from_millis(20 * rounds)).await;
                    }
                }
            }
        }
        Ok(found)
    }

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>> {
        let mut listed = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        // A Query stops at `Limit` items or at 1 MB, whichever comes first:
        // read on until the page is full or the org's stream ends, so that
        // a short page means the end (large events fill 1 MB early).
        while listed.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("org_id = :o AND event_id > :a")
                .expression_attribute_values(":o", s(org_id))
                .expression_attribute_values(":a", s(after))
                .limit(i32::try_from(limit - listed.len()).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend_error("Query events", e))?;
            listed.extend(out.items.unwrap_or_default().into_iter().map(listed_item));
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(listed)
    }
}

/// An item of the org's stream as listed: the event, or its id and why it
/// cannot be read.
fn listed_item(item: HashMap<String, AttributeValue>) -> Listed {
    let event_id = item
        .get("event_id")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    event_from_item(item).map_err(|e| Undecodable {
        event_id,
        error: e.to_string(),
    })
}
