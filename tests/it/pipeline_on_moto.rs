//! The outbound pipeline on DynamoDB, DynamoDB Streams and SQS (moto):
//! stream -> fanout -> SQS -> sender -> a real receiver.

use crate::support::MotoSystem;
use std::time::Duration;
use webhooks_domain::{Delivery, DeliveryStatus, EventType};
use webhooks_pipeline::Sweeper;
use webhooks_testkit::signatures::verify_delivery;
use webhooks_testkit::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(30);

async fn delivery_of(sys: &MotoSystem, ep: &str, evt: &str) -> Option<Delivery> {
    let id = webhooks_domain::delivery::delivery_id(ep, evt);
    sys.adapters
        .deliveries
        .get(&id)
        .await
        .expect("get delivery")
}

async fn status_of(sys: &MotoSystem, ep: &str, evt: &str) -> Option<DeliveryStatus> {
    delivery_of(sys, ep, evt).await.map(|d| d.status)
}

#[tokio::test]
async fn an_event_is_streamed_fanned_out_queued_signed_and_delivered() {
    let receiver = Receiver::always(204).await;
    let mut sys = MotoSystem::new("deliver", "1s,1s", 0).await;
    let ep = sys
        .endpoint("org_a", receiver.url("/hooks"), &["invoice.paid"])
        .await;
    let _other = sys
        .endpoint("org_a", receiver.url("/other"), &["lead_won"])
        .await;
    let _other_org = sys.endpoint("org_b", receiver.url("/b"), &["*"]).await;
    let event = sys
        .publish(
            "org_a",
            EventType::InvoicePaid,
            r#"{"invoice":"in_1","amount":4200}"#,
        )
        .await;

    let delivered = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
        .await;
    assert!(delivered, "delivery did not complete");

    let got = receiver.received();
    assert_eq!(
        got.len(),
        1,
        "exactly one request, to the subscribed endpoint only"
    );
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks");
    verify_delivery(req, ep.secret.expose()).expect("signatures verify");
    assert_eq!(req.body.as_ref(), event.payload().as_bytes());
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("webhook-id"), Some(event.id.as_str()));
    assert_eq!(req.header("x-webhook-event"), Some("invoice.paid"));
    assert_eq!(req.header("x-webhook-attempt"), Some("1"));
    assert!(req
        .header("user-agent")
        .is_some_and(|u| u.starts_with("devsphere-webhooks/")));
    let d = delivery_of(&sys, &ep.id, &event.id)
        .await
        .expect("delivery");
    assert_eq!(req.header("x-webhook-delivery"), Some(d.id.as_str()));
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].status_code, Some(204));
    // Only the sweeper moves the cursor, over events it has checked; the
    // stream's fan-out left nothing for it to create.
    let report = sys.sweeper().sweep().await;
    assert_eq!((report.events, report.deliveries_created), (1, 0));
    assert_eq!(
        sys.adapters.cursors.get("org_a").await.expect("cursor"),
        Some(event.id.clone())
    );
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_third_attempt() {
    let receiver = Receiver::start(|n, _| {
        if n < 2 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let mut sys = MotoSystem::new("retry", "1s,1s,1s", 0).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys
        .publish("org", EventType::LeadWon, r#"{"lead":"l1"}"#)
        .await;
    let ok = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
        .await;
    assert!(ok, "not delivered after retries");
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let attempts: Vec<&str> = got
        .iter()
        .filter_map(|r| r.header("x-webhook-attempt"))
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    for r in &got {
        assert_eq!(
            r.header("webhook-id"),
            Some(event.id.as_str()),
            "webhook-id is stable across retries"
        );
        verify_delivery(r, ep.secret.expose()).expect("every attempt is signed");
    }
    let d = delivery_of(&sys, &ep.id, &event.id)
        .await
        .expect("delivery");
    let codes: Vec<Option<u16>> = d.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_is_dead_lettered() {
    let receiver = Receiver::start(|_, _| Reply::StatusWithBody(500, "boom".into())).await;
    let mut sys = MotoSystem::new("dlq", "1s,1s", 0).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys.publish("org", EventType::PaymentFailed, "{}").await;
    let ok = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::DeadLettered, WAIT)
        .await;
    assert!(ok, "never dead-lettered");
    assert_eq!(
        receiver.count(),
        3,
        "three attempts for a two-delay schedule"
    );
    let d = delivery_of(&sys, &ep.id, &event.id)
        .await
        .expect("delivery");
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(
        d.attempts
            .last()
            .and_then(|a| a.response_body.clone())
            .as_deref(),
        Some("boom")
    );
    let in_dlq = sys
        .adapters
        .dead_letters
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive dlq");
    assert_eq!(in_dlq.len(), 1, "the message is in the dead-letter queue");
    assert!(in_dlq[0].body.contains(&d.id));
    // Nothing is left on the delivery queue.
    assert!(sys
        .adapters
        .queue
        .receive(10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty());
}

#[tokio::test]
async fn a_duplicated_stream_record_yields_one_delivery() {
    let receiver = Receiver::always(200).await;
    let mut sys = MotoSystem::new("dup", "1s", 0).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys.publish("org", EventType::ClientCreated, "{}").await;
    // The same record three times, as a replaying stream would hand it over.
    let record = webhooks_aws::stream::insert_record(&event, 1).expect("record");
    let mut batch = aws_lambda_events::event::dynamodb::Event::default();
    batch.records = vec![record.clone(), record.clone(), record];
    let resp = webhooks_fn_fanout::fan_out_records(&sys.fanout, batch.clone()).await;
    assert!(resp.batch_item_failures.is_empty());
    webhooks_fn_fanout::fan_out_records(&sys.fanout, batch).await;
    let ok = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
        .await;
    assert!(ok);
    let page = sys
        .adapters
        .deliveries
        .list_for_endpoint(&ep.id, None, 10, None)
        .await
        .expect("list");
    assert_eq!(
        page.items.len(),
        1,
        "one delivery record per (endpoint, event)"
    );
    assert_eq!(page.items[0].attempts.len(), 1, "and it was attempted once");
}

#[tokio::test]
async fn a_crash_between_create_and_enqueue_still_ends_delivered() {
    let receiver = Receiver::always(200).await;
    // The fan-out's first two queue sends fail, as if it died after the
    // conditional create.
    let mut sys = MotoSystem::new("crash", "1s", 2).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys.publish("org", EventType::TaskCompleted, "{}").await;
    let ok = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
        .await;
    assert!(ok, "the stream retry re-queued the created delivery");
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn the_sweeper_delivers_what_the_stream_lost() {
    let receiver = Receiver::always(200).await;
    let sys = MotoSystem::new("sweep", "1s", 0).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    sys.adapters
        .cursors
        .ensure("org", "evt_0")
        .await
        .expect("cursor");
    let event = sys.publish("org", EventType::SurveySubmitted, "{}").await;
    // A delivery created before a crash, never queued; the stream record is
    // never read (this system's stream mapping is not driven).
    sys.adapters
        .deliveries
        .create_if_absent(&Delivery::new("org", &ep.id, &event.id, event.event_type))
        .await
        .expect("create");
    let report = sys.sweeper().sweep().await;
    assert_eq!(report.events, 1);
    assert_eq!(report.enqueued, 1);
    for _ in 0..50 {
        if sys.sender.step(Duration::from_millis(200)).await > 0 && receiver.count() > 0 {
            break;
        }
    }
    assert_eq!(
        status_of(&sys, &ep.id, &event.id).await,
        Some(DeliveryStatus::Delivered)
    );
    assert_eq!(
        sys.adapters.cursors.get("org").await.expect("cursor"),
        Some(event.id.clone())
    );
    // A second sweep finds nothing new.
    assert_eq!(sys.sweeper().sweep().await.enqueued, 0);
}

#[tokio::test]
async fn malformed_queue_messages_are_set_aside() {
    let sys = MotoSystem::new("poison", "1s", 0).await;
    sys.adapters
        .queue
        .send_batch(&[webhooks_ports::QueueMessage::untagged("not json")])
        .await
        .expect("send");
    let mut n = 0;
    for _ in 0..20 {
        n += sys.sender.step(Duration::from_millis(200)).await;
        if n > 0 {
            break;
        }
    }
    assert_eq!(n, 1);
    let dlq = sys
        .adapters
        .dead_letters
        .receive(10, Duration::from_secs(1))
        .await
        .expect("dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].body, "not json");
    assert!(sys
        .adapters
        .queue
        .receive(10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty());
}

/// Ten events of 64 KiB of data whose characters all double in the task
/// message (escaped quotes, U+FFFF): about 1.3 MB of task messages, more
/// than one SendMessageBatch takes, and a character SQS does not carry. All
/// are delivered, each body byte for byte the event's payload.
#[tokio::test]
async fn large_events_of_the_worst_characters_are_all_delivered_byte_for_byte() {
    let receiver = Receiver::always(204).await;
    let mut sys = MotoSystem::new("large", "1s,1s", 0).await;
    let ep = sys
        .endpoint("org_a", receiver.url("/hooks"), &["invoice.paid"])
        .await;
    let unit = "\\\"\u{FFFF}";
    let n = (webhooks_domain::event::MAX_DATA_BYTES - 8) / unit.len();
    let mut events = Vec::new();
    for i in 0..10 {
        let data = format!(r#"{{"x":"{}","i":{i}}}"#, unit.repeat(n - 2));
        events.push(sys.publish("org_a", EventType::InvoicePaid, &data).await);
    }
    for event in &events {
        let delivered = sys
            .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
            .await;
        assert!(delivered, "{} was not delivered", event.id);
    }
    let got = receiver.received();
    assert_eq!(got.len(), 10);
    for event in &events {
        let payload = event.payload();
        assert!(
            got.iter().any(|r| r.body.as_ref() == payload.as_bytes()),
            "no request carried {}'s payload unchanged",
            event.id
        );
    }
}

/// Issue 22: one item of the events table that cannot be decoded (here
/// written raw, without its `data`) used to fail every listing of its org's
/// events, so the sweeper stopped at it for good. It is passed over, logged
/// and counted; the events around it are fanned out and the cursor moves
/// past it.
#[tokio::test]
async fn the_sweeper_passes_over_an_undecodable_event() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let receiver = Receiver::always(200).await;
    let backend = crate::support::MotoBackend::new("undecodable").await;
    let dynamodb = backend.aws.dynamodb.clone();
    let events_table = backend.names.table("events");
    let adapters = backend.adapters.clone();
    let sys = MotoSystem::with_sender_adapters(backend, adapters, "1s", 0);
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let before = sys.publish("org", EventType::SurveySubmitted, "{}").await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let broken = webhooks_domain::ids::new_id("evt");
    tokio::time::sleep(Duration::from_millis(3)).await;
    let after = sys.publish("org", EventType::SurveySubmitted, "{}").await;
    dynamodb
        .put_item()
        .table_name(&events_table)
        .item("org_id", AttributeValue::S("org".into()))
        .item("event_id", AttributeValue::S(broken.clone()))
        .item("event_type", AttributeValue::S("survey.submitted".into()))
        .send()
        .await
        .expect("put a raw item");
    let listed = sys
        .adapters
        .events
        .list_after("org", "evt_", 10)
        .await
        .expect("the listing itself works");
    assert_eq!(listed.len(), 3);
    assert!(
        matches!(&listed[1], Err(u) if u.event_id == broken),
        "{listed:?}"
    );

    let sweeper = Sweeper::from_adapters(&sys.adapters, Duration::ZERO);
    let report = sweeper.sweep().await;
    assert_eq!(report.failed_orgs, 0, "{report:?}");
    assert_eq!((report.undecodable_events, report.events), (1, 2));
    for e in [&before, &after] {
        assert_eq!(
            status_of(&sys, &ep.id, &e.id).await,
            Some(DeliveryStatus::Pending),
            "created and queued"
        );
    }
    assert_eq!(
        sys.adapters.cursors.get("org").await.expect("cursor"),
        Some(after.id.clone())
    );
    assert_eq!(sweeper.sweep().await.undecodable_events, 0);
}
