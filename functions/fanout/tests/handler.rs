//! The fan-out handler on a Lambda event built from a JSON fixture.

use async_trait::async_trait;
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::{Endpoint, Secret, Subscription};
use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
use webhooks_pipeline::FanOut;
use webhooks_ports::{BackendError, EndpointStore, Queue, ReceivedMessage};

fn fixture() -> aws_lambda_events::event::dynamodb::Event {
    serde_json::from_str(include_str!("fixtures/stream-batch.json")).expect("fixture parses")
}

/// The fixture's org's endpoint, registered before the fixture's events
/// were published (2026-11-27T06:00:00Z).
fn fixture_endpoint() -> Endpoint {
    let mut ep = Endpoint::new(
        "org_fixture",
        "https://example.com".into(),
        Subscription::All,
        Secret::generate(),
    );
    ep.created_at = webhooks_domain::time::parse_rfc3339("2026-11-01T00:00:00Z").expect("time");
    ep
}

#[tokio::test]
async fn inserts_are_fanned_out_and_bad_records_are_skipped() {
    let endpoints = MemoryEndpointStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let ep = fixture_endpoint();
    let created = endpoints
        .create(
            &ep,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, webhooks_ports::Created::Written);
    let fanout = FanOut::new(endpoints, deliveries.clone(), queue.clone());
    let resp = webhooks_fn_fanout::handle(&fanout, LambdaEvent::new(fixture(), Context::default()))
        .await
        .expect("handler never errors");
    assert!(
        resp.batch_item_failures.is_empty(),
        "a malformed record must not block the stream"
    );
    let all = deliveries.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].event_id, "evt_01jdx0000000000000000000aa");
    assert_eq!(queue.len(), 1);
}

struct DownQueue;

#[async_trait]
impl Queue for DownQueue {
    async fn send_batch_ids(
        &self,
        _: &[webhooks_ports::QueueMessage],
    ) -> webhooks_ports::Result<Vec<Option<String>>> {
        Err(BackendError::Transient("SQS is down".into()))
    }
    async fn receive(&self, _: usize, _: Duration) -> webhooks_ports::Result<Vec<ReceivedMessage>> {
        Ok(vec![])
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> webhooks_ports::Result<()> {
        Ok(())
    }
    async fn delete_batch(&self, _: &[String]) -> webhooks_ports::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_transient_failure_reports_the_first_failed_record() {
    let endpoints = MemoryEndpointStore::new();
    let created = endpoints
        .create(
            &fixture_endpoint(),
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("create");
    assert_eq!(created, webhooks_ports::Created::Written);
    let fanout = FanOut::new(endpoints, MemoryDeliveryStore::new(), Arc::new(DownQueue));
    let resp = webhooks_fn_fanout::handle(&fanout, LambdaEvent::new(fixture(), Context::default()))
        .await
        .expect("handler never errors");
    let ids: Vec<Option<String>> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(ids, vec![Some("111".to_string())]);
}

#[test]
fn the_lag_is_the_oldest_records_wait_since_its_write() {
    let batch = fixture();
    let oldest = batch
        .records
        .iter()
        .map(|r| r.change.approximate_creation_date_time)
        .min()
        .expect("records");
    let now = oldest + chrono::Duration::milliseconds(1500);
    assert_eq!(webhooks_fn_fanout::lag_ms(&batch, now), Some(1500));
    let empty = aws_lambda_events::event::dynamodb::Event::default();
    assert_eq!(webhooks_fn_fanout::lag_ms(&empty, now), None);
}
