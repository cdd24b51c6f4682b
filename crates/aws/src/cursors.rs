//! The cursors table: each org's position in its event stream.

use crate::error::{backend_error, is_condition_failure};
use crate::items::s;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use webhooks_ports::{CursorStore, Result};

/// The item beside the cursors that holds where the sweeper's next pass
/// starts (attribute `resume_at`), under a reserved key that no org of the
/// platform is expected to have, and that [`CursorStore::list`] leaves out.
pub const RESUME_KEY: &str = "#sweep-resume";

/// Cursors in DynamoDB (key: `org_id`; attribute `cursor`).
#[derive(Clone)]
pub struct DynamoCursorStore {
    client: Client,
    table: String,
}

impl DynamoCursorStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoCursorStore {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl CursorStore for DynamoCursorStore {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem cursors", e))?;
        Ok(out
            .item
            .and_then(|i| i.get("cursor").and_then(|v| v.as_s().ok().cloned())))
    }

    async fn advance(&self, org_id: &str, to: &str) -> Result<()> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .update_expression("SET #c = :to")
            .condition_expression("attribute_not_exists(#c) OR #c < :to")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":to", s(to))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already as far or further.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(backend_error("UpdateItem cursors", e)),
        }
    }

    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .item("org_id", s(org_id))
            .item("cursor", s(event_id))
            .condition_expression("attribute_not_exists(org_id)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(backend_error("PutItem cursors", e)),
        }
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| backend_error("Scan cursors", e))?;
            for item in out.items.unwrap_or_default() {
                let org = item.get("org_id").and_then(|v| v.as_s().ok());
                let cursor = item.get("cursor").and_then(|v| v.as_s().ok());
                if let Some(o) = org.filter(|o| o.as_str() != RESUME_KEY) {
                    all.push((o.clone(), cursor.cloned().unwrap_or_default()));
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(all),
            }
        }
    }

    async fn resume_at(&self) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(RESUME_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem cursors", e))?;
        Ok(out
            .item
            .and_then(|i| i.get("resume_at").and_then(|v| v.as_s().ok().cloned())))
    }

    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("org_id", s(RESUME_KEY));
        let req = match org_id {
            Some(org) => req
                .update_expression("SET resume_at = :o")
                .expression_attribute_values(":o", s(org)),
            None => req.update_expression("REMOVE resume_at"),
        };
        req.send()
            .await
            .map_err(|e| backend_error("UpdateItem cursors", e))?;
        Ok(())
    }
}
