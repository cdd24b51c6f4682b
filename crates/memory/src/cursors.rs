//! The cursors table: each org's position in its event stream.

use crate::sync::lock;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use webhooks_ports::{CursorStore, Result};

/// Per-org cursors.
#[derive(Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<BTreeMap<String, String>>,
    /// Where the sweeper's next pass starts.
    resume_at: Mutex<Option<String>>,
}

impl MemoryCursorStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl CursorStore for MemoryCursorStore {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        Ok(lock(&self.cursors).get(org_id).cloned())
    }

    async fn advance(&self, org_id: &str, to: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let cursor = cs.entry(org_id.to_string()).or_default();
        if to > cursor.as_str() {
            *cursor = to.to_string();
        }
        Ok(())
    }

    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        lock(&self.cursors)
            .entry(org_id.to_string())
            .or_insert_with(|| event_id.to_string());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        Ok(lock(&self.cursors)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn resume_at(&self) -> Result<Option<String>> {
        Ok(lock(&self.resume_at).clone())
    }

    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()> {
        *lock(&self.resume_at) = org_id.map(str::to_string);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursors_only_move_forward() {
        let c = MemoryCursorStore::new();
        c.ensure("o", "evt_b").await.unwrap();
        c.ensure("o", "evt_a").await.unwrap();
        c.advance("o", "evt_a").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_b"));
        c.advance("o", "evt_c").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_c"));
        assert_eq!(
            c.list().await.unwrap(),
            [("o".to_string(), "evt_c".to_string())]
        );
    }
}
