//! The endpoints table.

use crate::envelope::EnvelopeCipher;
use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::{endpoint_aad, s, EndpointItem, EndpointSecrets, StoredSecrets, SubscriberItem};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use webhooks_domain::time::rfc3339;
use webhooks_domain::{Endpoint, Subscriber};
use webhooks_ports::{
    cursor, BackendError, EndpointHealth, EndpointLookup, EndpointStore, OrgEndpoints, Page,
    Result, Updated,
};

/// Endpoints in DynamoDB (key: `org_id`, `endpoint_id`), their signing
/// secrets sealed under data keys of a KMS key (`crate::envelope`).
#[derive(Clone)]
pub struct DynamoEndpointStore {
    client: Client,
    table: String,
    cipher: Arc<EnvelopeCipher>,
}

impl DynamoEndpointStore {
    pub fn new(client: Client, table: impl Into<String>, cipher: Arc<EnvelopeCipher>) -> Self {
        DynamoEndpointStore {
            client,
            table: table.into(),
            cipher,
        }
    }

    /// The item of an endpoint, its secrets sealed.
    async fn seal_item(&self, e: &Endpoint) -> Result<HashMap<String, AttributeValue>> {
        let secrets = serde_json::to_vec(&EndpointSecrets::of(e))
            .map_err(|e| decode_error("endpoint secrets", e))?;
        let sealed = self
            .cipher
            .seal(&secrets, &endpoint_aad(&e.org_id, &e.id))
            .await?;
        serde_dynamo::to_item(EndpointItem::from_endpoint(e, sealed))
            .map_err(|e| decode_error("endpoint", e))
    }

    /// The endpoint of an item, its secrets opened.
    async fn open_item(&self, item: HashMap<String, AttributeValue>) -> Result<Endpoint> {
        let item: EndpointItem =
            serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
        let secrets = match item.stored_secrets()? {
            StoredSecrets::Sealed(sealed) => {
                let aad = endpoint_aad(&item.org_id, &item.endpoint_id);
                let json = self.cipher.open(&sealed, &aad).await?;
                serde_json::from_slice(&json).map_err(|e| decode_error("endpoint secrets", e))?
            }
            StoredSecrets::Plain(secrets) => secrets,
        };
        item.into_endpoint(secrets)
    }

    /// A page of the org's items, oldest first; only the `projection`
    /// attributes when given.
    async fn query_items(
        &self,
        org_id: &str,
        limit: Option<usize>,
        start_after: Option<&str>,
        projection: Option<&[&str]>,
    ) -> Result<(
        Vec<HashMap<String, AttributeValue>>,
        Option<HashMap<String, AttributeValue>>,
    )> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :o")
            .expression_attribute_names("#pk", "org_id")
            .expression_attribute_values(":o", s(org_id))
            .consistent_read(true);
        if let Some(attributes) = projection {
            let mut names = Vec::with_capacity(attributes.len());
            for (i, a) in attributes.iter().enumerate() {
                let name = format!("#p{i}");
                q = q.expression_attribute_names(&name, *a);
                names.push(name);
            }
            q = q.projection_expression(names.join(", "));
        }
        if let Some(l) = limit {
            q = q.limit(i32::try_from(l).unwrap_or(i32::MAX));
        }
        if let Some(after) = start_after {
            q = q
                .exclusive_start_key("org_id", s(org_id))
                .exclusive_start_key("endpoint_id", s(after));
        }
        let out = q
            .send()
            .await
            .map_err(|e| backend_error("Query endpoints", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// An attribute-level write of the sender's (health), which touches only
    /// the attributes it names and bumps the version, so a concurrent
    /// read-modify-write of the API notices it; a no-op when `condition`
    /// (beyond existence) does not hold.
    async fn update_existing(
        &self,
        org_id: &str,
        endpoint_id: &str,
        expression: &str,
        condition: Option<&str>,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool> {
        let condition = match condition {
            Some(c) => format!("attribute_exists(endpoint_id) AND {c}"),
            None => "attribute_exists(endpoint_id)".to_string(),
        };
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .update_expression(format!("{expression} ADD version :one"))
            .condition_expression(condition)
            .expression_attribute_values(":one", AttributeValue::N("1".into()));
        for (k, v) in values {
            u = u.expression_attribute_values(k, v);
        }
        match u.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem endpoints", e)),
        }
    }
}

#[async_trait]
impl EndpointLookup for DynamoEndpointStore {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem endpoints", e))?;
        match out.item {
            Some(item) => Ok(Some(self.open_item(item).await?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl OrgEndpoints for DynamoEndpointStore {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        let mut all = Vec::new();
        let mut start: Option<String> = None;
        loop {
            // Projected: the fan-out's reads never carry a secret.
            let (items, lek) = self
                .query_items(
                    org_id,
                    None,
                    start.as_deref(),
                    Some(&SubscriberItem::ATTRIBUTES),
                )
                .await?;
            for item in items {
                let item: SubscriberItem =
                    serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
                all.push(item.into_subscriber()?);
            }
            match lek.and_then(|k| k.get("endpoint_id").and_then(|v| v.as_s().ok().cloned())) {
                Some(next) => start = Some(next),
                None => return Ok(all),
            }
        }
    }
}

#[async_trait]
impl EndpointHealth for DynamoEndpointStore {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        // Only the write that finds it enabled turns it off (and says so).
        self.update_existing(
            org_id,
            endpoint_id,
            "SET enabled = :f, disabled_reason = :r, updated_at = :u",
            Some("enabled = :t"),
            vec![
                (":t", AttributeValue::Bool(true)),
                (":f", AttributeValue::Bool(false)),
                (":r", s(reason)),
                (":u", s(&rfc3339(Utc::now()))),
            ],
        )
        .await
    }

    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let changed = match since {
            Some(t) => {
                self.update_existing(
                    org_id,
                    endpoint_id,
                    "SET failing_since = :t",
                    Some("attribute_not_exists(failing_since)"),
                    vec![(":t", s(&rfc3339(t)))],
                )
                .await
            }
            None => {
                self.update_existing(
                    org_id,
                    endpoint_id,
                    "REMOVE failing_since",
                    Some("attribute_exists(failing_since)"),
                    vec![],
                )
                .await
            }
        };
        changed.map(|_| ())
    }
}

#[async_trait]
impl EndpointStore for DynamoEndpointStore {
    async fn create(&self, endpoint: &Endpoint) -> Result<()> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.seal_item(endpoint).await?))
            .condition_expression("attribute_not_exists(endpoint_id)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(BackendError::Permanent(format!(
                "endpoint {} exists",
                endpoint.id
            ))),
            Err(e) => Err(backend_error("PutItem endpoints", e)),
        }
    }

    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Endpoint>> {
        let after = match cursor {
            Some(c) => Some(cursor::decode(c, "ep_")?),
            None => None,
        };
        // One more than asked tells whether another page exists.
        let (items, _) = self
            .query_items(org_id, Some(limit + 1), after.as_deref(), None)
            .await?;
        let mut endpoints = Vec::with_capacity(items.len());
        for item in items {
            endpoints.push(self.open_item(item).await?);
        }
        Ok(Page::from_overfetch(endpoints, limit, |e| &e.id))
    }

    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        let mut next = endpoint.clone();
        next.version = endpoint.version + 1;
        // Items written before versions have none: version 0.
        let condition = if endpoint.version == 0 {
            "attribute_exists(endpoint_id) AND (attribute_not_exists(version) OR version = :v)"
        } else {
            "attribute_exists(endpoint_id) AND version = :v"
        };
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.seal_item(&next).await?))
            .condition_expression(condition)
            .expression_attribute_values(":v", AttributeValue::N(endpoint.version.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
        {
            Ok(_) => Ok(Updated::Written),
            Err(e) if is_condition_failure(&e) => {
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let exists = match old {
                    Some(item) => !item.is_empty(),
                    // Not every emulator returns the old item; read it.
                    None => self.get(&endpoint.org_id, &endpoint.id).await?.is_some(),
                };
                Ok(if exists {
                    Updated::Conflict
                } else {
                    Updated::NotFound
                })
            }
            Err(e) => Err(backend_error("PutItem endpoints", e)),
        }
    }

    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| backend_error("DeleteItem endpoints", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
