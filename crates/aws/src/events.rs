//! The events table: the org's event stream. Its DynamoDB stream feeds the
//! fan-out.

use crate::batch_get::{batch_get_items, Consistency};
use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::s;
use crate::items::{event_from_item, EventItem};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use webhooks_domain::time::parse_rfc3339;
use webhooks_domain::Event;
use webhooks_ports::{EventLogQuery, EventStore, EventSummary, Listed, Page, Result, Undecodable};

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
        let keys = ids
            .into_iter()
            .map(|id| {
                HashMap::from([
                    ("org_id".to_string(), s(org_id)),
                    ("event_id".to_string(), s(id)),
                ])
            })
            .collect();
        let items = batch_get_items(
            &self.client,
            &self.table,
            keys,
            Consistency::Strong,
            "events",
        )
        .await?;
        Ok(items.into_iter().map(listed_item).collect())
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

    /// One backward `Query` over the window's ids, `Limit` the read budget,
    /// the type a `FilterExpression`, projected to what the log shows.
    async fn log_page(&self, org_id: &str, query: &EventLogQuery) -> Result<Page<EventSummary>> {
        let Some(range) = query.id_range()? else {
            return Ok(query.page(Vec::new(), None));
        };
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#o = :o AND #e BETWEEN :low AND :high")
            .expression_attribute_names("#o", "org_id")
            .expression_attribute_names("#e", "event_id")
            .expression_attribute_names("#t", "event_type")
            .expression_attribute_names("#c", "created_at")
            .expression_attribute_values(":o", s(org_id))
            .expression_attribute_values(":low", s(&range.low))
            .expression_attribute_values(":high", s(&range.high))
            .projection_expression("#e, #t, #c")
            .scan_index_forward(false)
            .limit(i32::try_from(query.read_budget()).unwrap_or(i32::MAX))
            .consistent_read(true);
        if let Some(t) = query.event_type {
            q = q
                .filter_expression("#t = :t")
                .expression_attribute_values(":t", s(t.as_str()));
        }
        let out = q
            .send()
            .await
            .map_err(|e| backend_error("Query events (log)", e))?;
        let mut listed = Vec::new();
        for item in out.items.unwrap_or_default() {
            let item: SummaryItem =
                serde_dynamo::from_item(item).map_err(|e| decode_error("event", e))?;
            let summary = item.into_summary()?;
            if range.lists(&summary.id) && query.wants(summary.event_type) {
                listed.push(summary);
            }
        }
        let stopped_at = out
            .last_evaluated_key
            .and_then(|k| k.get("event_id").and_then(|v| v.as_s().ok().cloned()));
        Ok(query.page(listed, stopped_at))
    }
}

/// The attributes of an event item the log shows.
#[derive(serde::Deserialize)]
struct SummaryItem {
    event_id: String,
    event_type: String,
    created_at: String,
}

impl SummaryItem {
    fn into_summary(self) -> Result<EventSummary> {
        Ok(EventSummary {
            event_type: self
                .event_type
                .parse()
                .map_err(|e| decode_error("event", e))?,
            created_at: parse_rfc3339(&self.created_at)
                .ok_or_else(|| decode_error("event", format!("bad time '{}'", self.created_at)))?,
            id: self.event_id,
        })
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
