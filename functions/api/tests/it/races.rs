//! Writes of one endpoint racing each other (issue 10, defect 5): a PATCH, a
//! rotation and the sender's health writes, each read-modify-write made from
//! its own read. Reads here are slow, so every race interleaves: both read,
//! then both write.

use crate::support::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::{Endpoint, EndpointSummary, Subscriber};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_memory::MemoryEndpointStore;
use webhooks_ports::{
    Created, EndpointHealth, EndpointLookup, EndpointStore, OrgEndpoints, Page, Result, Updated,
};

/// The memory store, with a pause after each read: the window in which a
/// concurrent write lands between a read and the write made from it.
struct SlowReads(Arc<MemoryEndpointStore>);

#[async_trait]
impl EndpointLookup for SlowReads {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        let read = self.0.get(org_id, endpoint_id).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        read
    }
}

#[async_trait]
impl OrgEndpoints for SlowReads {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        self.0.list_all(org_id).await
    }
}

#[async_trait]
impl EndpointHealth for SlowReads {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        self.0.disable(org_id, endpoint_id, reason).await
    }
    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.0.set_failing_since(org_id, endpoint_id, since).await
    }
}

#[async_trait]
impl EndpointStore for SlowReads {
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created> {
        self.0.create(endpoint, max_per_org).await
    }
    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>> {
        self.0.list(org_id, limit, cursor).await
    }
    async fn summary(&self, org_id: &str, endpoint_id: &str) -> Result<Option<EndpointSummary>> {
        self.0.summary(org_id, endpoint_id).await
    }
    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        self.0.update(endpoint).await
    }
    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        self.0.delete(org_id, endpoint_id).await
    }
}

/// A world whose API reads endpoints slowly.
fn slow_world() -> TestSystem {
    let mut w = world();
    w.api = Api::new(
        w.events.clone(),
        Arc::new(SlowReads(w.endpoints.clone())),
        w.deliveries.clone(),
        w.cursors.clone(),
        w.idempotency.clone(),
        w.queue.clone(),
        ApiConfig::default(),
    );
    w
}

#[tokio::test]
async fn a_patch_racing_a_rotation_keeps_both() {
    let w = slow_world();
    let id = w.create_endpoint(&["*"]).await;
    for round in 0..20 {
        let description = format!("round {round}");
        let patch_body = serde_json::json!({ "description": description }).to_string();
        let patch_uri = format!("/v1/endpoints/{id}");
        let rotate_uri = format!("/v1/endpoints/{id}/rotate-secret");
        let (patched, rotated) = tokio::join!(
            w.manage("PATCH", &patch_uri, patch_body),
            w.manage("POST", &rotate_uri, "")
        );
        assert_eq!(patched.status, 200, "{}", patched.json);
        assert_eq!(rotated.status, 200, "{}", rotated.json);
        let stored = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
        assert_eq!(
            Some(stored.secret.expose()),
            rotated.json["secret"].as_str(),
            "round {round}: the rotation answered 200 but its secret was undone"
        );
        assert_eq!(stored.description, description, "round {round}");
    }
}

#[tokio::test]
async fn a_patch_does_not_undo_the_senders_disable_or_failure_run() {
    let w = slow_world();
    let id = w.create_endpoint(&["*"]).await;
    let patch_uri = format!("/v1/endpoints/{id}");
    for round in 0..10 {
        let since = Utc::now();
        let (patched, ()) = tokio::join!(
            w.manage(
                "PATCH",
                &patch_uri,
                serde_json::json!({ "description": format!("round {round}") }).to_string()
            ),
            async {
                // Lands while the PATCH holds its read.
                tokio::time::sleep(Duration::from_millis(1)).await;
                w.endpoints
                    .set_failing_since(ORG, &id, Some(since))
                    .await
                    .unwrap();
                w.endpoints
                    .disable(ORG, &id, "the endpoint answered 410 Gone")
                    .await
                    .unwrap();
            }
        );
        assert_eq!(patched.status, 200, "{}", patched.json);
        let stored = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
        assert!(!stored.enabled, "round {round}: the 410 disable was undone");
        assert_eq!(stored.failing_since, Some(since), "round {round}");
        assert_eq!(stored.description, format!("round {round}"));
        // Enabled again by hand for the next round (which clears the run).
        let r = w.manage("PATCH", &patch_uri, r#"{"enabled":true}"#).await;
        assert_eq!(r.json["enabled"], true);
    }
}

#[tokio::test]
async fn every_write_moves_the_version_and_a_stale_write_is_refused() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let read = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    let v0 = read.version;
    w.endpoints.disable(ORG, &id, "x").await.unwrap();
    let mut stale = read.clone();
    stale.description = "from a stale read".into();
    assert_eq!(w.endpoints.update(&stale).await.unwrap(), Updated::Conflict);
    let now = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    assert_eq!(now.version, v0 + 1);
    assert_eq!(now.description, "");
}
