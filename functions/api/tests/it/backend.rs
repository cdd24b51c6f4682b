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
    async fn send_batch(&self, bodies: &[webhooks_ports::QueueMessage]) -> Result<Vec<usize>> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok((0..bodies.len()).collect()),
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
