//! The events table: the org's event stream. Its DynamoDB stream feeds the
//! fan-out.

use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::s;
use crate::items::{event_from_item, EventItem};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use webhooks_domain::Event;
use webhooks_ports::{EventStore, Result};

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

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Event>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("org_id = :o AND event_id > :a")
            .expression_attribute_values(":o", s(org_id))
            .expression_attribute_values(":a", s(after))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("Query events", e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(event_from_item)
            .collect()
    }
}
