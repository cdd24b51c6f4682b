//! The operators' EventBridge bus through the real SDK on moto: a notice
//! put by `EventBridgeOpsBus` reaches a rule's SQS target with the source,
//! detail-type and detail the template documents.

use aws_sdk_eventbridge::types::Target;
use std::time::Duration;
use webhooks_aws::ops_bus::SOURCE;
use webhooks_aws::EventBridgeOpsBus;
use webhooks_domain::ops::OpsNotice;
use webhooks_ports::OpsBus;

#[tokio::test]
async fn a_notice_reaches_a_rule_on_the_ops_bus() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let prefix = webhooks_testkit::aws::unique_prefix("opsbus");
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus = format!("{prefix}-ops");
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("create bus");
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-ops-target"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("queue arn");
    events
        .put_rule()
        .name(format!("{prefix}-disabled"))
        .event_bus_name(&bus)
        .event_pattern(format!(
            r#"{{"source":["{SOURCE}"],"detail-type":["endpoint.disabled"]}}"#
        ))
        .send()
        .await
        .expect("put rule");
    events
        .put_targets()
        .rule(format!("{prefix}-disabled"))
        .event_bus_name(&bus)
        .targets(
            Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("put targets");

    let notice = OpsNotice::endpoint_disabled(
        "ep_1",
        "acme",
        "the endpoint answered 410 Gone",
        chrono::Utc::now(),
    );
    EventBridgeOpsBus::with_config(&config, &bus)
        .publish(&notice)
        .await
        .expect("published");

    let mut got = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        got.extend(out.messages.unwrap_or_default());
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1, "the rule's target got the notice once");
    let event: serde_json::Value =
        serde_json::from_str(got[0].body().unwrap_or_default()).expect("event json");
    assert_eq!(event["source"], SOURCE);
    assert_eq!(event["detail-type"], "endpoint.disabled");
    let payload: serde_json::Value = serde_json::from_str(&notice.payload).expect("payload");
    assert_eq!(event["detail"], payload);
}
