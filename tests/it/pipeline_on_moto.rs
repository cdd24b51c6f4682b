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
async fn a_fanout_whose_queue_sends_fail_still_ends_delivered() {
    let receiver = Receiver::always(200).await;
    // The fan-out's first two queue sends fail: it creates no record (the
    // message goes first), and the stream's retry queues and creates it.
    let mut sys = MotoSystem::new("crash", "1s", 2).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys.publish("org", EventType::TaskCompleted, "{}").await;
    let ok = sys
        .drive_until_status(&ep.id, &event.id, DeliveryStatus::Delivered, WAIT)
        .await;
    assert!(ok, "the stream's retry queued and created the delivery");
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
    // The stream record is never read (this system's stream mapping is not
    // driven): no delivery, no message.
    let event = sys.publish("org", EventType::SurveySubmitted, "{}").await;
    let report = sys.sweeper().sweep().await;
    assert_eq!(report.events, 1);
    assert_eq!((report.deliveries_created, report.enqueued), (1, 1));
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

/// Receives the delivery queue's messages as often as its redrive policy
/// allows, handling none (the sender's invocations die at them) and making
/// each visible again at once, until SQS moves them to the dead-letter
/// queue.
async fn redrive_on_moto(sys: &MotoSystem) {
    for _ in 0..=webhooks_ports::queue_settings::MAX_RECEIVE_COUNT {
        let got = sys
            .adapters
            .queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive");
        for m in &got {
            sys.adapters
                .queue
                .change_visibility(&m.receipt_handle, Duration::ZERO)
                .await
                .expect("visible again");
        }
    }
    assert!(sys
        .adapters
        .queue
        .receive(10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty());
}

/// Issue 22, defect 1, on SQS's own redrive: a never-attempted delivery
/// whose message SQS moves to the dead-letter queue is sent again once by
/// the sweeper's redrive net; when that message is redriven too, the
/// delivery ends dead-lettered with its cause, its message parked in the
/// dead-letter queue.
#[tokio::test]
async fn a_delivery_whose_message_sqs_redrives_is_sent_again_then_dead_lettered() {
    let receiver = Receiver::always(200).await;
    let sys = MotoSystem::new("redrive", "1s", 0).await;
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    let event = sys.publish("org", EventType::LeadWon, "{}").await;
    let fanned = sys.fanout.fan_out(std::slice::from_ref(&event)).await;
    assert_eq!((fanned.noted, fanned.enqueued), (1, 1));
    // The sweeper's cursor is past the event: no sweep of events looks at it.
    sys.adapters
        .cursors
        .advance("org", &event.id)
        .await
        .expect("cursor");
    let sweeper = webhooks_pipeline::Sweeper::from_adapters(&sys.adapters, Duration::ZERO);

    redrive_on_moto(&sys).await;
    let r = sweeper.sweep().await.redriven;
    assert_eq!(
        (r.retried, r.dead_lettered, r.failed),
        (1, 0, false),
        "{r:?}"
    );
    let again = sys
        .adapters
        .queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    let task: webhooks_domain::DeliveryTask = serde_json::from_str(&again[0].body).expect("a task");
    assert!(task.redriven, "marked as sent again by the net");
    sys.adapters
        .queue
        .change_visibility(&again[0].receipt_handle, Duration::ZERO)
        .await
        .expect("visible again");

    redrive_on_moto(&sys).await;
    let r = sweeper.sweep().await.redriven;
    assert_eq!((r.retried, r.dead_lettered), (0, 1), "{r:?}");
    let d = delivery_of(&sys, &ep.id, &event.id)
        .await
        .expect("delivery");
    assert_eq!(d.status, DeliveryStatus::DeadLettered);
    assert_eq!(
        d.last_error.as_deref(),
        Some(webhooks_pipeline::redrive::MESSAGE_REDRIVEN)
    );
    assert_eq!(receiver.count(), 0);
    // Parked (hidden for 12 h): the next pass does not read it again.
    assert_eq!(sweeper.sweep().await.redriven, Default::default());
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

/// Issue 24: an event whose `data` is over 900 bytes is stored deflated, a
/// binary attribute, so 1 KiB of invoice-like data makes an item under
/// DynamoDB's 1 KB write unit; every reader (a read, the listing the
/// sweeper makes, the stream image the fan-out gets) gives back the text
/// it was written with, and the receiver gets it byte for byte. A small
/// event stays a string, and reads as before.
#[tokio::test]
async fn large_event_data_is_stored_deflated_and_read_back_as_written() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let receiver = Receiver::always(204).await;
    let backend = crate::support::MotoBackend::new("deflated").await;
    let dynamodb = backend.aws.dynamodb.clone();
    let events_table = backend.names.table("events");
    let adapters = backend.adapters.clone();
    let mut sys = MotoSystem::with_sender_adapters(backend, adapters, "1s", 0);
    let ep = sys.endpoint("org", receiver.url("/"), &["*"]).await;
    // About 1 KiB, with the repetition of a real payload: keys repeat,
    // ids and amounts do not.
    let lines: Vec<String> = (1..=19u64)
        .map(|n| {
            format!(
                r#"{{"sku":"SKU-{:08x}","qty":{},"unit_amount":{}}}"#,
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32,
                n % 7 + 1,
                (n * 7919) % 100_000
            )
        })
        .collect();
    let data = format!(
        r#"{{"invoice":"in_1","currency":"eur","note":"é\u2028","lines":[{}]}}"#,
        lines.join(",")
    );
    assert!((1000..=1100).contains(&data.len()), "{}", data.len());
    let large = sys.publish("org", EventType::InvoicePaid, &data).await;
    let small = sys
        .publish("org", EventType::InvoicePaid, r#"{"amount":1}"#)
        .await;

    let raw = |id: String| {
        let (dynamodb, table) = (dynamodb.clone(), events_table.clone());
        async move {
            dynamodb
                .get_item()
                .table_name(table)
                .key("org_id", AttributeValue::S("org".into()))
                .key("event_id", AttributeValue::S(id))
                .send()
                .await
                .expect("get")
                .item
                .expect("stored")
        }
    };
    let item = raw(large.id.clone()).await;
    let Some(AttributeValue::B(deflated)) = item.get("data") else {
        panic!("data stored as binary: {:?}", item.get("data"));
    };
    assert!(deflated.as_ref().len() < data.len() / 2);
    // DynamoDB's item size; one write unit is 1 KB.
    let size = webhooks_aws::items::item_size(&item);
    assert!(size <= 1024, "{size} bytes: more than one write unit");
    let item = raw(small.id.clone()).await;
    assert_eq!(
        item.get("data"),
        Some(&AttributeValue::S(r#"{"amount":1}"#.into()))
    );

    // A read, the sweeper's listing, the fan-out's stream image.
    let back = sys
        .adapters
        .events
        .get("org", &large.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(back.data.get(), data);
    assert_eq!(back.payload(), large.payload());
    let listed = sys
        .adapters
        .events
        .list_after("org", "evt_", 10)
        .await
        .expect("list");
    let texts: Vec<String> = listed
        .into_iter()
        .map(|e| e.expect("decodes").data.get().to_string())
        .collect();
    assert_eq!(texts, [data.clone(), r#"{"amount":1}"#.to_string()]);
    for e in [&large, &small] {
        let delivered = sys
            .drive_until_status(&ep.id, &e.id, DeliveryStatus::Delivered, WAIT)
            .await;
        assert!(delivered, "{} was not delivered", e.id);
    }
    let got = receiver.received();
    for e in [&large, &small] {
        let payload = e.payload();
        assert!(
            got.iter().any(|r| r.body.as_ref() == payload.as_bytes()),
            "no request carried {}'s payload unchanged",
            e.id
        );
    }
}
