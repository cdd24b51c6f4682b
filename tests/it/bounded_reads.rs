//! One request's DynamoDB work is bounded whatever the endpoint's partition
//! holds, counted on the emulator: a delivery listing filtered by status,
//! a recovery and a cancellation read as much for a partition of thousands
//! as for one of ten, and hand back a cursor to carry on from.

use crate::support::MotoBackend;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use webhooks_aws::items::DeliveryItem;
use webhooks_aws::request_counter::RequestCounter;
use webhooks_domain::{ids, Delivery, DeliveryStatus, Event, EventType};
use webhooks_pipeline::{Requeue, REQUEUE_PAGES_PER_CALL};
use webhooks_ports::{Adapters, DELIVERIES_EXAMINED_PER_PAGE};

const ORG: &str = "org_a";

/// Writes deliveries of `endpoint_id` straight to the table, 25 a request
/// (the test's setup, not under test): `statuses` oldest first.
async fn seed(
    backend: &MotoBackend,
    endpoint_id: &str,
    statuses: impl Iterator<Item = DeliveryStatus>,
) -> Vec<Delivery> {
    let made: Vec<Delivery> = statuses
        .map(|status| {
            let mut d = Delivery::new(ORG, endpoint_id, &ids::new_id("evt"), EventType::LeadWon);
            d.status = status;
            d
        })
        .collect();
    for chunk in made.chunks(25) {
        let writes: Vec<WriteRequest> = chunk
            .iter()
            .map(|d| {
                let item = serde_dynamo::to_item(DeliveryItem::from_delivery(d)).expect("item");
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("put"),
                    )
                    .build()
            })
            .collect();
        let out = backend
            .aws
            .dynamodb
            .batch_write_item()
            .request_items(backend.names.table("deliveries"), writes)
            .send()
            .await
            .expect("batch write");
        assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    }
    made
}

fn queries(counter: &RequestCounter) -> u64 {
    counter
        .snapshot()
        .iter()
        .filter(|((service, op), _)| service.eq_ignore_ascii_case("dynamodb") && op == "Query")
        .map(|(_, n)| n)
        .sum()
}

/// The endpoint of a partition of `delivered` delivered deliveries newer
/// than one dead-lettered delivery.
async fn partition(backend: &MotoBackend, delivered: usize) -> String {
    let ep = ids::new_id("ep");
    let statuses = std::iter::once(DeliveryStatus::DeadLettered)
        .chain(std::iter::repeat_n(DeliveryStatus::Delivered, delivered));
    seed(backend, &ep, statuses).await;
    ep
}

#[tokio::test]
async fn a_filtered_listing_reads_as_much_of_a_big_partition_as_of_a_small_one() {
    let (backend, counter, counted) = counted_backend("bounded-list").await;
    let small = partition(&backend, 10).await;
    let big = partition(&backend, 2 * DELIVERIES_EXAMINED_PER_PAGE + 500).await;
    let mut per_request = Vec::new();
    for ep in [&small, &big] {
        counter.reset();
        counted
            .deliveries
            .list_for_endpoint(ep, Some(DeliveryStatus::DeadLettered), 1, None)
            .await
            .expect("list");
        per_request.push(queries(&counter));
    }
    println!("Query requests of one filtered listing (10 rows, 2500 rows): {per_request:?}");
    let bound = webhooks_aws::deliveries::QUERIES_PER_PAGE as u64;
    assert!(
        per_request.iter().all(|&n| (1..=bound).contains(&n)),
        "{per_request:?}"
    );
}

/// A fresh moto backend, and adapters over it whose every AWS request the
/// counter records.
async fn counted_backend(name: &str) -> (MotoBackend, RequestCounter, Adapters) {
    let backend = MotoBackend::new(name).await;
    let counter = RequestCounter::new();
    let counted = backend.counted_adapters(&counter).await;
    (backend, counter, counted)
}

/// The requeue use cases over `adapters`.
fn requeue(adapters: &Adapters) -> Requeue {
    Requeue::new(
        adapters.events.clone(),
        adapters.endpoints.clone(),
        adapters.deliveries.clone(),
        adapters.queue.clone(),
    )
}

#[tokio::test]
async fn recover_and_cancel_read_a_bounded_part_per_call_and_recover_goes_on() {
    let (backend, counter, counted) = counted_backend("bounded-requeue").await;
    // Three dead-lettered deliveries (their events stored, so they can be
    // sent again) and three pending ones, older than thousands delivered.
    let ep = ids::new_id("ep");
    let mut statuses = vec![DeliveryStatus::DeadLettered; 3];
    statuses.extend([DeliveryStatus::Pending; 3]);
    statuses.extend(std::iter::repeat_n(
        DeliveryStatus::Delivered,
        2 * DELIVERIES_EXAMINED_PER_PAGE + 500,
    ));
    let made = seed(&backend, &ep, statuses.into_iter()).await;
    for d in &made[..3] {
        let data = serde_json::value::RawValue::from_string("{}".into()).expect("json");
        let mut event = Event::new(ORG, d.event_type, data);
        event.id = d.event_id.clone();
        assert!(backend
            .adapters
            .events
            .put_if_absent(&event)
            .await
            .expect("event"));
    }
    let bound = (REQUEUE_PAGES_PER_CALL * webhooks_aws::deliveries::QUERIES_PER_PAGE) as u64;
    let requeue = requeue(&counted);
    let since = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;

    let mut cursor: Option<String> = None;
    let mut calls = Vec::new();
    let mut requeued = 0;
    loop {
        counter.reset();
        let r = requeue
            .recover(ORG, &ep, since, cursor.as_deref())
            .await
            .expect("recover");
        calls.push(queries(&counter));
        requeued += r.requeued;
        match r.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(calls.len() < 10, "recover never ends: {calls:?}");
    }
    println!("Query requests of each recover call over 2506 rows: {calls:?}");
    assert!(
        calls.len() >= 2,
        "one call read the whole partition: {calls:?}"
    );
    assert!(calls.iter().all(|&n| n <= bound), "{calls:?} over {bound}");
    assert_eq!(requeued, 3);
    for d in &made[..3] {
        let now = backend
            .adapters
            .deliveries
            .get(&d.id)
            .await
            .expect("get")
            .expect("d");
        assert_eq!(now.status, DeliveryStatus::Pending);
    }

    counter.reset();
    let canceled = requeue.cancel_pending(&ep).await.expect("cancel");
    println!(
        "Query requests of one cancellation over 2506 rows: {}",
        queries(&counter)
    );
    assert!(queries(&counter) <= bound);
    assert!(
        !canceled.complete,
        "the pending ones are past this call's reads"
    );
}

/// The request counter bills a `BatchGetItem` per key asked, found or
/// not, and half when eventually consistent: the sender's first receives
/// of noted messages read their records so (`sender::batch_read`), and
/// the cost benchmark measures it. The eventually consistent read really
/// asks DynamoDB for `ConsistentRead=false`.
#[tokio::test]
async fn a_batch_read_is_billed_per_key_and_half_when_eventually_consistent() {
    let (backend, counter, counted) = counted_backend("batch-units").await;
    let ep = ids::new_id("ep");
    let made = seed(&backend, &ep, std::iter::once(DeliveryStatus::Delivered)).await;
    let mut asked = vec![made[0].id.clone()];
    for _ in 0..3 {
        asked.push(webhooks_domain::delivery::delivery_id(
            &ep,
            &ids::new_id("evt"),
        ));
    }
    let mut units = Vec::new();
    for eventually in [false, true] {
        counter.reset();
        let read = match eventually {
            false => counted.deliveries.get_many(&asked).await,
            true => counted.deliveries.get_many_eventually(&asked).await,
        };
        assert_eq!(read.expect("read").len(), 1, "eventually {eventually}");
        units.push(counter.batch_get_read_units());
    }
    assert_eq!(units, vec![4.0, 2.0]);
}
