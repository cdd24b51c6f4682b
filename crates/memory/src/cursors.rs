//! The cursors table: each org's position in its event stream.

use crate::sync::lock;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use webhooks_ports::{CursorStore, Result};

/// Per-org cursors, with the oldest held (failed, not yet fanned out) event.
#[derive(Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<BTreeMap<String, CursorState>>,
}

#[derive(Default, Clone)]
struct CursorState {
    cursor: Option<String>,
    hold: Option<String>,
}

impl MemoryCursorStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl CursorStore for MemoryCursorStore {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        Ok(lock(&self.cursors)
            .get(org_id)
            .and_then(|c| c.cursor.clone()))
    }

    async fn advance(&self, org_id: &str, from: &str, to: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if let Some(h) = &state.hold {
            if h.as_str() >= from && h.as_str() <= to {
                state.hold = None;
            } else if h.as_str() < from {
                // An older event is still waiting to be fanned out.
                return Ok(());
            }
        }
        if state.cursor.as_deref().is_none_or(|c| to > c) {
            state.cursor = Some(to.to_string());
        }
        Ok(())
    }

    async fn hold(&self, org_id: &str, event_id: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if state.hold.as_deref().is_none_or(|h| event_id < h) {
            state.hold = Some(event_id.to_string());
        }
        Ok(())
    }

    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        let mut cs = lock(&self.cursors);
        let state = cs.entry(org_id.to_string()).or_default();
        if state.cursor.is_none() {
            state.cursor = Some(event_id.to_string());
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        Ok(lock(&self.cursors)
            .iter()
            .map(|(k, v)| (k.clone(), v.cursor.clone().unwrap_or_default()))
            .collect())
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
        c.advance("o", "evt_a", "evt_a").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_b"));
        c.advance("o", "evt_c", "evt_c").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_c"));
    }

    #[tokio::test]
    async fn a_held_event_stops_the_cursor_until_it_is_fanned_out() {
        let c = MemoryCursorStore::new();
        c.ensure("o", "evt_a").await.unwrap();
        c.hold("o", "evt_c").await.unwrap();
        c.hold("o", "evt_d").await.unwrap();
        // A later batch does not move the cursor past the held event.
        c.advance("o", "evt_e", "evt_f").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_a"));
        // An earlier range still moves it, up to before the hold.
        c.advance("o", "evt_b", "evt_b").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_b"));
        // Fanning out the held event releases it.
        c.advance("o", "evt_c", "evt_f").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_f"));
        c.advance("o", "evt_g", "evt_g").await.unwrap();
        assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_g"));
        // An org known only by a hold is still listed for the sweeper.
        c.hold("new", "evt_x").await.unwrap();
        assert!(c
            .list()
            .await
            .unwrap()
            .contains(&("new".to_string(), String::new())));
    }
}
