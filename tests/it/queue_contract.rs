//! The queue contract on SqsQueue against the emulator: the same checks as
//! the memory queue's (crates/testkit/tests/queue_contract_memory.rs), on
//! fresh queues with a unique prefix, in real time.

use aws_sdk_sqs::types::QueueAttributeName;
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::queue::SqsQueue;
use webhooks_testkit::queue_contract::{BoxFuture, QueueMaker, QueuePair};

struct Moto;

async fn create(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k, v);
    }
    req.send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

impl QueueMaker for Moto {
    fn make(&self, visibility: Duration, max_receive_count: u32) -> BoxFuture<'_, QueuePair> {
        Box::pin(async move {
            let config = webhooks_testkit::aws::emulator_config().await;
            let sqs = aws_sdk_sqs::Client::new(&config);
            let prefix = webhooks_testkit::aws::unique_prefix("queue-contract");
            let dlq = create(&sqs, &format!("{prefix}-dlq"), Vec::new()).await;
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("queue attributes")
                .attributes
                .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
                .expect("queue arn");
            let redrive = format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#
            );
            let queue = create(
                &sqs,
                &format!("{prefix}-q"),
                vec![
                    (QueueAttributeName::RedrivePolicy, redrive),
                    (
                        QueueAttributeName::VisibilityTimeout,
                        visibility.as_secs().max(1).to_string(),
                    ),
                ],
            )
            .await;
            QueuePair {
                queue: Arc::new(SqsQueue::new(sqs.clone(), queue)),
                dead_letters: Arc::new(SqsQueue::new(sqs, dlq)),
            }
        })
    }

    fn pass(&self, d: Duration) -> BoxFuture<'_, ()> {
        // Real time: the emulator keeps its own clock.
        Box::pin(tokio::time::sleep(d))
    }
}

webhooks_testkit::queue_contract_tests!(#[tokio::test], Moto);

/// What moto does with a fair queue's tenants: it takes and returns each
/// message's `MessageGroupId` on a standard queue (the contract check
/// above), but ignores it when it hands messages out. A quiet tenant's
/// messages sent behind a noisy tenant's 40 in-flight messages come after
/// the noisy tenant's others, where SQS (and the memory queue, whose unit
/// tests show it) hands out the quiet ones first. So fairness is proven on
/// the memory queue (unit tests, the simulation, `webhooks-bench
/// isolation`), and on moto only that the tenant travels.
#[tokio::test]
async fn moto_keeps_message_group_ids_but_not_fair_queue_order() {
    use webhooks_ports::QueueMessage;
    let q = Moto.make(Duration::from_secs(60), 5).await.queue;
    let noisy: Vec<QueueMessage> = (0..60)
        .map(|i| QueueMessage::new(format!("noisy-{i}"), "org:noisy"))
        .collect();
    assert!(q.send_batch(&noisy).await.expect("send").is_empty());
    let mut in_flight = 0;
    while in_flight < 40 {
        let got = q
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(!got.is_empty(), "moto handed out nothing");
        in_flight += got.len();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let quiet: Vec<QueueMessage> = (0..5)
        .map(|i| QueueMessage::new(format!("quiet-{i}"), "org:quiet"))
        .collect();
    assert!(q.send_batch(&quiet).await.expect("send").is_empty());
    let got = q
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|m| m.tenant.as_deref() == Some("org:noisy")),
        "moto now orders by tenant; the memory queue's fair order can be checked against it: {:?}",
        got.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
}
