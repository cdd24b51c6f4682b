//! Backend failures: throttling is 503 (try again), anything else a generic
//! 500 that shows no details; a queue that refuses a retried delivery leaves
//! it as it was.

use crate::support::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::{DeliveryStatus, Endpoint, EndpointSummary, Subscriber};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_ports::{
    BackendError, Created, EndpointHealth, EndpointLookup, EndpointStore, OrgEndpoints, Page,
    Queue, ReceivedMessage, Result, Updated,
};

struct FailingEndpoints(BackendError);

#[async_trait]
impl EndpointLookup for FailingEndpoints {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Endpoint>> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl OrgEndpoints for FailingEndpoints {
    async fn list_all(&self, _: &str) -> Result<Vec<Subscriber>> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl EndpointHealth for FailingEndpoints {
    async fn disable(&self, _: &str, _: &str, _: &str) -> Result<bool> {
        Err(self.0.clone())
    }
    async fn set_failing_since(&self, _: &str, _: &str, _: Option<DateTime<Utc>>) -> Result<()> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl EndpointStore for FailingEndpoints {
    async fn create(&self, _: &Endpoint, _: u32) -> Result<Created> {
        Err(self.0.clone())
    }
    async fn list(&self, _: &str, _: usize, _: Option<&str>) -> Result<Page<EndpointSummary>> {
        Err(self.0.clone())
    }
    async fn summary(&self, _: &str, _: &str) -> Result<Option<EndpointSummary>> {
        Err(self.0.clone())
    }
    async fn update(&self, _: &Endpoint) -> Result<Updated> {
        Err(self.0.clone())
    }
    async fn delete(&self, _: &str, _: &str) -> Result<bool> {
        Err(self.0.clone())
    }
}

/// A queue that refuses everything, by error or by rejecting each message.
struct RefusingQueue {
    error: Option<BackendError>,
}

#[async_trait]
impl Queue for RefusingQueue {
    async fn send_batch_ids(
        &self,
        bodies: &[webhooks_ports::QueueMessage],
    ) -> Result<Vec<Option<String>>> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(vec![None; bodies.len()]),
        }
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<ReceivedMessage>> {
        Ok(Vec::new())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<()> {
        Ok(())
    }
    async fn delete_batch(&self, _: &[String]) -> Result<()> {
        Ok(())
    }
}

fn with_endpoints(w: &TestSystem, endpoints: Arc<dyn EndpointStore>) -> Api {
    Api::new(
        w.events.clone(),
        endpoints,
        w.deliveries.clone(),
        w.cursors.clone(),
        w.idempotency.clone(),
        w.queue.clone(),
        ApiConfig::default(),
    )
}

fn with_queue(w: &TestSystem, queue: Arc<dyn Queue>) -> Api {
    Api::new(
        w.events.clone(),
        w.endpoints.clone(),
        w.deliveries.clone(),
        w.cursors.clone(),
        w.idempotency.clone(),
        queue,
        ApiConfig::default(),
    )
}

#[tokio::test]
async fn transient_backend_errors_are_503_and_permanent_ones_a_bare_500() {
    let mut w = world();
    w.api = with_endpoints(
        &w,
        Arc::new(FailingEndpoints(BackendError::Transient(
            "throttled".into(),
        ))),
    );
    let r = w.manage("GET", "/v1/endpoints", "").await;
    r.assert_error(503, "service_unavailable");
    assert!(r.headers.contains_key("retry-after"));

    w.api = with_endpoints(
        &w,
        Arc::new(FailingEndpoints(BackendError::Permanent(
            "ResourceNotFoundException: table t-endpoints".into(),
        ))),
    );
    let r = w
        .manage(
            "POST",
            "/v1/endpoints",
            r#"{"url":"https://example.com/","event_types":["*"]}"#,
        )
        .await;
    r.assert_error(500, "internal_error");
    assert!(!r.error_message().contains("table"));
    assert!(!String::from_utf8_lossy(&r.bytes).contains("whsec_"));
    // Bad input is still refused before any backend call.
    w.manage("POST", "/v1/endpoints", "[]")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_retry_the_queue_refuses_is_503_and_leaves_the_delivery_as_it_was() {
    let mut w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let mut refused = Vec::new();
    for (error, status) in [
        (None, DeliveryStatus::DeadLettered),
        (
            Some(BackendError::Transient("SQS throttled".into())),
            DeliveryStatus::Canceled,
        ),
    ] {
        let (_, d) = w.delivery(ORG, &ep, status).await;
        w.api = with_queue(&w, Arc::new(RefusingQueue { error }));
        w.manage("POST", &format!("/v1/deliveries/{}/retry", d.id), "")
            .await
            .assert_error(503, "service_unavailable");
        assert_eq!(w.status_of(&d.id).await, status);
        refused.push((d.id, status));
    }
    let r = w
        .manage(
            "POST",
            &format!("/v1/endpoints/{ep}/recover"),
            r#"{"since":"2000-01-01T00:00:00Z"}"#,
        )
        .await;
    r.assert_error(503, "service_unavailable");
    for (id, status) in refused {
        assert_eq!(w.status_of(&id).await, status);
    }
}

/// The memory endpoints, but every secret fails to open (a seal altered or
/// put back, KMS down): reads that show no secret must not care.
struct SecretsDoNotOpen(Arc<webhooks_memory::MemoryEndpointStore>);

fn do_not_open() -> BackendError {
    BackendError::Permanent(
        "sealed secrets do not open: altered, or sealed for another item".into(),
    )
}

#[async_trait]
impl EndpointLookup for SecretsDoNotOpen {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Endpoint>> {
        Err(do_not_open())
    }
}

#[async_trait]
impl OrgEndpoints for SecretsDoNotOpen {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        self.0.list_all(org_id).await
    }
}

#[async_trait]
impl EndpointHealth for SecretsDoNotOpen {
    async fn disable(&self, org_id: &str, id: &str, reason: &str) -> Result<bool> {
        self.0.disable(org_id, id, reason).await
    }
    async fn set_failing_since(
        &self,
        org_id: &str,
        id: &str,
        t: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.0.set_failing_since(org_id, id, t).await
    }
}

#[async_trait]
impl EndpointStore for SecretsDoNotOpen {
    async fn create(&self, e: &Endpoint, max: u32) -> Result<Created> {
        self.0.create(e, max).await
    }
    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>> {
        self.0.list(org_id, limit, cursor).await
    }
    async fn summary(&self, org_id: &str, id: &str) -> Result<Option<EndpointSummary>> {
        self.0.summary(org_id, id).await
    }
    async fn update(&self, e: &Endpoint) -> Result<Updated> {
        self.0.update(e).await
    }
    async fn delete(&self, org_id: &str, id: &str) -> Result<bool> {
        self.0.delete(org_id, id).await
    }
}

#[tokio::test]
async fn routes_that_show_no_secret_do_not_open_it() {
    let mut w = world();
    let ep = w.create_endpoint(&["*"]).await;
    let (_, dead) = w.delivery(ORG, &ep, DeliveryStatus::DeadLettered).await;
    w.api = with_endpoints(&w, Arc::new(SecretsDoNotOpen(w.endpoints.clone())));
    for (method, uri, body, status) in [
        ("GET", "/v1/endpoints".to_string(), "", 200),
        ("GET", format!("/v1/endpoints/{ep}"), "", 200),
        ("GET", format!("/v1/endpoints/{ep}/deliveries"), "", 200),
        ("GET", format!("/v1/endpoints/{ep}/stats"), "", 200),
        (
            "POST",
            format!("/v1/endpoints/{ep}/recover"),
            r#"{"since":"2000-01-01T00:00:00Z"}"#,
            202,
        ),
    ] {
        let r = w.manage(method, &uri, body).await;
        assert_eq!(
            r.status,
            status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
    assert_eq!(w.status_of(&dead.id).await, DeliveryStatus::Pending);
    // A read of another org's endpoint is still a 404.
    let r = w
        .call_as(OTHER_ORG, MANAGE, "GET", &format!("/v1/endpoints/{ep}"), "")
        .await;
    r.assert_error(404, "not_found");
    // Those that need the secret fail, and say nothing of it.
    let r = w
        .manage("GET", &format!("/v1/endpoints/{ep}/secret"), "")
        .await;
    r.assert_error(500, "internal_error");
}
