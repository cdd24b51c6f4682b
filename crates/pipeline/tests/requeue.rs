//! Sending a delivery again by hand, against a queue whose send answers an
//! error after it took the message: the sender may already be POSTing the
//! delivery's next attempt when the retry puts things back. Neither that
//! nor a second retry may start the same attempt again while the first
//! POST is in flight.

use async_trait::async_trait;
use chrono::TimeZone;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use webhooks_domain::delivery::AttemptResult;
use webhooks_domain::{
    Attempt, Delivery, DeliveryStatus, Endpoint, Event, EventType, Secret, Subscription,
};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, HttpOutcome, Requeue, RequeueError, Sender, SenderConfig,
    Transport,
};
use webhooks_ports::{AttemptUpdate, BackendError, Clock, Queue, QueueMessage, ReceivedMessage};
use webhooks_testkit::clock::TokioClock;

/// The delivery queue, whose first send takes the messages and then
/// answers an error (the answer lost on the way back), once the test lets
/// it.
struct AcceptsThenErrors {
    inner: Arc<dyn Queue>,
    failed: AtomicBool,
    /// Told when the first send has taken its messages.
    taken: Notify,
    /// Waited for before that send answers.
    answer: Notify,
}

#[async_trait]
impl Queue for AcceptsThenErrors {
    async fn send_batch_ids(
        &self,
        messages: &[QueueMessage],
    ) -> webhooks_ports::Result<Vec<Option<String>>> {
        let ids = self.inner.send_batch_ids(messages).await?;
        if self.failed.swap(true, Ordering::SeqCst) {
            return Ok(ids);
        }
        self.taken.notify_one();
        self.answer.notified().await;
        Err(BackendError::Transient("connection reset".into()))
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> webhooks_ports::Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }
    async fn change_visibility(&self, handle: &str, delay: Duration) -> webhooks_ports::Result<()> {
        self.inner.change_visibility(handle, delay).await
    }
    async fn delete_batch(&self, handles: &[String]) -> webhooks_ports::Result<()> {
        self.inner.delete_batch(handles).await
    }
}

/// A receiver that holds every POST until the test opens the gate, and
/// counts the POSTs started.
struct HeldReceiver {
    started: AtomicUsize,
    posting: Notify,
    gate: Semaphore,
}

#[async_trait]
impl Transport for HeldReceiver {
    async fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: webhooks_domain::Payload,
    ) -> HttpOutcome {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.posting.notify_one();
        let _ = self.gate.acquire().await;
        HttpOutcome {
            result: AttemptResult::Responded {
                status: 200,
                retry_after: None,
            },
            latency_ms: 1,
            response_body: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_send_errors_after_the_queue_took_it_never_starts_an_attempt_twice() {
    let clock = TokioClock::starting_at(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let memory = MemoryBackend::with_clock(Duration::from_secs(180), clock.clone());
    let adapters = memory.adapters();
    let now = clock.now();

    // A delivery whose one attempt failed and that was dead-lettered.
    let mut endpoint = Endpoint::new(
        "org",
        "https://receiver.test/".into(),
        Subscription::All,
        Secret::generate(),
    );
    endpoint.created_at = now;
    let created = adapters.endpoints.create(&endpoint, 10).await.unwrap();
    assert_eq!(created, webhooks_ports::Created::Written);
    let mut event = Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string("{}".into()).unwrap(),
    );
    event.created_at = now;
    adapters.events.put_if_absent(&event).await.unwrap();
    let delivery = Delivery::new_at("org", &endpoint.id, &event.id, event.event_type, now);
    adapters
        .deliveries
        .create_if_absent(&delivery)
        .await
        .unwrap();
    let dead = AttemptUpdate {
        attempt: Attempt {
            number: 1,
            at: now,
            status_code: Some(500),
            error: None,
            latency_ms: 3,
            response_body: None,
        },
        status: DeliveryStatus::DeadLettered,
        next_attempt_at: None,
        last_error: Some("HTTP 500".into()),
        unleased_by: None,
    };
    assert!(adapters
        .deliveries
        .record_attempt(&delivery.id, &dead)
        .await
        .unwrap());
    let read = || async {
        adapters
            .deliveries
            .get(&delivery.id)
            .await
            .unwrap()
            .unwrap()
    };

    let queue = Arc::new(AcceptsThenErrors {
        inner: adapters.queue.clone(),
        failed: AtomicBool::new(false),
        taken: Notify::new(),
        answer: Notify::new(),
    });
    let requeue = Arc::new(
        Requeue::new(
            adapters.events.clone(),
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            queue.clone(),
        )
        .with_clock(adapters.clock.clone()),
    );
    let receiver = Arc::new(HeldReceiver {
        started: AtomicUsize::new(0),
        posting: Notify::new(),
        gate: Semaphore::new(0),
    });
    let sender = Arc::new(
        Sender::from_adapters(
            &adapters,
            DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
            SenderConfig::default(),
        )
        .with_transport(receiver.clone()),
    );

    // The retry moves the delivery to pending and sends its message; the
    // queue takes it, and the send's answer is slow to come back.
    let first_retry = tokio::spawn({
        let requeue = requeue.clone();
        let dead = read().await;
        async move { requeue.retry("org", dead).await }
    });
    queue.taken.notified().await;
    // Meanwhile the sender receives the message, leases attempt 2 and POSTs.
    let message = adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(message.len(), 1);
    let first_post = tokio::spawn({
        let sender = sender.clone();
        async move { sender.process_batch(&message).await }
    });
    receiver.posting.notified().await;
    // The send answers its error; the retry puts back what it can.
    queue.answer.notify_one();
    let first = first_retry.await.unwrap();
    let after_first = read().await;
    // The user, told or not, retries again.
    let second = requeue.retry("org", after_first.clone()).await;
    // Whatever that queued is received, while the first POST is in flight.
    let more = adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    let second_post = tokio::spawn({
        let sender = sender.clone();
        async move { sender.process_batch(&more).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        receiver.started.load(Ordering::SeqCst),
        1,
        "attempt 2 POSTed twice at once (first retry: {first:?}, second: {second:?})"
    );

    // The retry went through: its message reached the sender.
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(after_first.status, DeliveryStatus::Pending);
    assert!(
        matches!(second, Err(RequeueError::NotRetryable(_))),
        "{second:?}"
    );
    // The POST in flight records its outcome.
    receiver.gate.add_permits(10);
    first_post.await.unwrap();
    second_post.await.unwrap();
    let done = read().await;
    assert_eq!(
        (done.status, done.attempt_count),
        (DeliveryStatus::Delivered, 2)
    );
    assert_eq!(receiver.started.load(Ordering::SeqCst), 1);
}

/// A receiver that answers every POST 200 at once.
struct Accepting;

#[async_trait]
impl Transport for Accepting {
    async fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: webhooks_domain::Payload,
    ) -> HttpOutcome {
        HttpOutcome {
            result: AttemptResult::Responded {
                status: 200,
                retry_after: None,
            },
            latency_ms: 1,
            response_body: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_delivery_retried_by_hand_near_the_end_of_its_ttl_keeps_its_attempts() {
    let clock = TokioClock::starting_at(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let memory = MemoryBackend::with_clock(Duration::from_secs(180), clock.clone());
    let adapters = memory.adapters();
    let created = clock.now();
    let mut endpoint = Endpoint::new(
        "org",
        "https://receiver.test/".into(),
        Subscription::All,
        Secret::generate(),
    );
    endpoint.created_at = created;
    let made = adapters.endpoints.create(&endpoint, 10).await.unwrap();
    assert_eq!(made, webhooks_ports::Created::Written);
    let mut event = Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string("{}".into()).unwrap(),
    );
    event.created_at = created;
    adapters.events.put_if_absent(&event).await.unwrap();
    let delivery = Delivery::new_at("org", &endpoint.id, &event.id, event.event_type, created);
    adapters
        .deliveries
        .create_if_absent(&delivery)
        .await
        .unwrap();
    let dead = AttemptUpdate {
        attempt: Attempt {
            number: 1,
            at: created,
            status_code: Some(500),
            error: None,
            latency_ms: 3,
            response_body: None,
        },
        status: DeliveryStatus::DeadLettered,
        next_attempt_at: None,
        last_error: Some("HTTP 500".into()),
        unleased_by: None,
    };
    assert!(adapters
        .deliveries
        .record_attempt(&delivery.id, &dead)
        .await
        .unwrap());

    // Retried by hand 29 days after it was made; its message waits (the
    // sender is backed up).
    tokio::time::advance(Duration::from_secs(29 * 86400)).await;
    let requeue = Requeue::new(
        adapters.events.clone(),
        adapters.endpoints.clone(),
        adapters.deliveries.clone(),
        adapters.queue.clone(),
    )
    .with_clock(adapters.clock.clone());
    let dead = adapters
        .deliveries
        .get(&delivery.id)
        .await
        .unwrap()
        .unwrap();
    requeue.retry("org", dead).await.unwrap();

    // Two days on, past its creation's 30 days, the TTL has not taken it.
    tokio::time::advance(Duration::from_secs(2 * 86400)).await;
    memory.expire();
    let kept = adapters.deliveries.get(&delivery.id).await.unwrap();
    let kept = kept.expect("a pending delivery deleted by the TTL");
    assert_eq!(
        (kept.status, kept.attempt_count),
        (DeliveryStatus::Pending, 1)
    );
    assert_eq!(kept.attempts.len(), 1);

    // Its message makes attempt 2, not a first attempt all over again.
    let sender = Sender::from_adapters(
        &adapters,
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_transport(Arc::new(Accepting));
    let messages = adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 1);
    sender.process_batch(&messages).await;
    let done = adapters
        .deliveries
        .get(&delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.attempt_count),
        (DeliveryStatus::Delivered, 2)
    );
    let numbers: Vec<u32> = done.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2]);
}
