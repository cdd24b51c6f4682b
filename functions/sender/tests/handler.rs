//! The sender handler on a Lambda event built from a JSON fixture.

use lambda_runtime::{Context, LambdaEvent};
use std::time::Duration;
use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
use webhooks_pipeline::{DeliveryClient, DeliveryClientConfig, Sender, SenderConfig};

#[tokio::test]
async fn a_message_that_is_not_a_task_goes_to_the_dead_letter_queue() {
    let dlq = MemoryQueue::new(Duration::from_secs(30));
    let sender = Sender::new(
        MemoryEndpointStore::new(),
        MemoryEndpointStore::new(),
        MemoryDeliveryStore::new(),
        MemoryQueue::new(Duration::from_secs(30)),
        dlq.clone(),
        DeliveryClient::new(DeliveryClientConfig::default()).expect("client"),
        SenderConfig::default(),
    );
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("fixtures/sqs-batch.json")).expect("fixture parses");
    let resp = webhooks_fn_sender::handle(&sender, LambdaEvent::new(event, Context::default()))
        .await
        .expect("handler never errors");
    assert!(resp.batch_item_failures.is_empty(), "never retried forever");
    assert_eq!(
        dlq.bodies(),
        vec![r#"{"not": "a delivery task"}"#.to_string()]
    );
}

#[test]
// set_var/remove_var: this test binary's only environment change.
#[allow(unsafe_code)]
fn settings_name_the_bad_variable() {
    // Only this test touches these variables in this binary.
    unsafe { std::env::set_var("WEBHOOKS_RETRY_SCHEDULE", "1s,soon") };
    let err = webhooks_fn_sender::settings_from_env().expect_err("bad schedule");
    assert!(err.to_string().contains("WEBHOOKS_RETRY_SCHEDULE"), "{err}");
    // Fifteen retries a 12 h Retry-After can each stretch over two receives
    // need more than the queue's 30 before SQS dead-letters the message.
    unsafe { std::env::set_var("WEBHOOKS_RETRY_SCHEDULE", vec!["1s"; 15].join(",")) };
    let err = webhooks_fn_sender::settings_from_env().expect_err("too many receives");
    assert!(err.to_string().contains("WEBHOOKS_RETRY_SCHEDULE"), "{err}");
    assert!(err.to_string().contains("maxReceiveCount of 30"), "{err}");
    unsafe { std::env::set_var("WEBHOOKS_RETRY_SCHEDULE", "1s,2s,4s") };
    let (schedule, timeout) = webhooks_fn_sender::settings_from_env().expect("valid");
    assert_eq!(schedule.max_attempts(), 4);
    assert_eq!(timeout, Duration::from_secs(15));
    unsafe { std::env::remove_var("WEBHOOKS_RETRY_SCHEDULE") };
}
