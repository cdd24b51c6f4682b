//! The fault rates, the scenarios (how much to push, how long to wait, how
//! often each fault happens) and the tests that run them; then two sustained
//! failures the storm does not reach.

use super::figures::print_and_check;
use super::harness::{memory_backend, moto_backend, run};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use webhooks::event_sources::{QueueMapping, StreamMapping, StreamSource};
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::delivery::AttemptResult;
use webhooks_domain::{DeliveryStatus, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_faults::{Faulty, Op, Script};
use webhooks_memory::MemoryBackend;
use webhooks_memory::{
    MemoryCursorStore, MemoryDeliveryStore, MemoryEndpointStore, MemoryEventStore, MemoryQueue,
};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, HttpOutcome, Sender, SenderConfig, Sweeper,
    Transport,
};
use webhooks_ports::{CursorStore, DeliveryStore, EndpointStore, EventStore};
use webhooks_testkit::Receiver;

/// How often each fault happens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rates {
    // The receiver, per request.
    pub(super) r500: f64,
    pub(super) r429: f64,
    pub(super) timeout: f64,
    pub(super) reset: f64,
    pub(super) slow_body: f64,
    /// Share of (endpoint, event) pairs whose every request fails (503).
    pub(super) poisoned_pairs: f64,
    // The pipeline around the receiver.
    /// Per sender invocation: killed at a random moment.
    pub(super) sender_crash: f64,
    /// Per fan-out queue send: the fan-out dies there (after the creates).
    pub(super) fanout_crash: f64,
    /// Per fan-out queue send: the whole send fails.
    pub(super) enqueue_fails: f64,
    /// Per queued message: refused within its batch.
    pub(super) enqueue_entry_rejected: f64,
    /// Per send to the dead-letter queue.
    pub(super) dlq_send_fails: f64,
    pub(super) visibility_change_fails: f64,
    pub(super) delete_fails: f64,
    /// Per turn of the loop driving the stream: a slice of past stream records is handed to
    /// the fan-out handler again.
    pub(super) duplicate_batch: f64,
    /// Per delivery-store call.
    pub(super) store: StoreRates,
}

/// How often a delivery-store call fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoreRates {
    /// A write fails and nothing is written.
    pub(super) write_fails: f64,
    /// A write is made, and the caller is told it failed (a timeout after
    /// the commit).
    pub(super) write_ack_lost: f64,
    pub(super) read_fails: f64,
}

pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) seed: u64,
    /// (org, events, endpoints subscribed to everything)
    pub(super) orgs: Vec<(&'static str, usize, usize)>,
    pub(super) schedule: &'static str,
    pub(super) request_timeout: Duration,
    pub(super) pollers: usize,
    /// A fan-out invocation (stream batch, duplicate batch, sweep) that takes
    /// longer is killed, as Lambda's timeout would.
    pub(super) fanout_invocation_limit: Duration,
    /// Faults on until quiescent or this long.
    pub(super) storm_limit: Duration,
    /// Then faults off, sweeps, until quiescent or this much longer.
    pub(super) drain_limit: Duration,
    /// Pause between publishing two events.
    pub(super) publish_every: Duration,
    /// How long one stream poll waits for records (moto: each poll is two
    /// requests, so not too often).
    pub(super) stream_wait: Duration,
    /// How often the run checks whether the pipeline has settled.
    pub(super) check_every: Duration,
    /// A sender poller's pause after an empty receive.
    pub(super) poll_idle: Duration,
    pub(super) rates: Rates,
}

/// The scenario's seed, or `FAULT_SEED` (decimal or 0x-hex) to try another.
fn seed(default: u64) -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_loses_nothing_under_faults() {
    let visibility = Duration::from_secs(1);
    let s = Scenario {
        name: "memory",
        seed: seed(0x5EED_0001),
        orgs: vec![("org_a", 400, 5), ("org_b", 200, 5)],
        schedule: "50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms",
        request_timeout: Duration::from_millis(300),
        pollers: 16,
        fanout_invocation_limit: Duration::from_secs(1),
        storm_limit: Duration::from_secs(35),
        drain_limit: Duration::from_secs(15),
        publish_every: Duration::ZERO,
        stream_wait: Duration::from_millis(20),
        check_every: Duration::from_millis(300),
        poll_idle: Duration::from_millis(20),
        rates: Rates {
            r500: 0.12,
            r429: 0.04,
            timeout: 0.04,
            reset: 0.06,
            slow_body: 0.06,
            poisoned_pairs: 0.01,
            sender_crash: 0.12,
            fanout_crash: 0.03,
            enqueue_fails: 0.08,
            enqueue_entry_rejected: 0.002,
            dlq_send_fails: 0.1,
            visibility_change_fails: 0.02,
            delete_fails: 0.02,
            duplicate_batch: 0.1,
            store: StoreRates {
                write_fails: 0.0004,
                write_ack_lost: 0.0002,
                read_fails: 0.005,
            },
        },
    };
    let f = run(s, memory_backend(visibility)).await;
    print_and_check(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_backend_loses_nothing_under_faults() {
    let visibility = Duration::from_secs(1);
    let s = Scenario {
        name: "moto",
        seed: seed(0x5EED_0002),
        orgs: vec![("org_a", 40, 3), ("org_b", 20, 3)],
        // SQS rounds each delay up to whole seconds.
        schedule: "1s,1s,1s,1s",
        request_timeout: Duration::from_millis(500),
        pollers: 4,
        fanout_invocation_limit: Duration::from_secs(3),
        storm_limit: Duration::from_secs(40),
        drain_limit: Duration::from_secs(15),
        publish_every: Duration::ZERO,
        stream_wait: Duration::from_millis(200),
        check_every: Duration::from_secs(1),
        poll_idle: Duration::from_millis(200),
        rates: Rates {
            r500: 0.12,
            r429: 0.04,
            timeout: 0.04,
            reset: 0.06,
            slow_body: 0.06,
            poisoned_pairs: 0.02,
            sender_crash: 0.15,
            fanout_crash: 0.1,
            enqueue_fails: 0.1,
            enqueue_entry_rejected: 0.01,
            dlq_send_fails: 0.1,
            visibility_change_fails: 0.02,
            delete_fails: 0.02,
            duplicate_batch: 0.2,
            store: StoreRates {
                write_fails: 0.002,
                write_ack_lost: 0.001,
                read_fails: 0.01,
            },
        },
    };
    let backend = moto_backend("faults", visibility).await;
    let f = run(s, backend).await;
    print_and_check(f);
}

// Two ways to lose a delivery that the storm above does not reach at its
// fault rates; each needs a sustained failure: the sweeper catches the
// dropped record, and the sweeper's redrive net and reconciler the message
// SQS redrove.

/// A small memory system around one endpoint: its stores (the tests add
/// the rest).
struct SmallSystem {
    events: Arc<MemoryEventStore>,
    deliveries: Arc<MemoryDeliveryStore>,
    cursors: Arc<MemoryCursorStore>,
    endpoint: Endpoint,
}

async fn small_system(url: String) -> SmallSystem {
    let s = SmallSystem {
        events: MemoryEventStore::new(),
        deliveries: MemoryDeliveryStore::new(),
        cursors: MemoryCursorStore::new(),
        endpoint: Endpoint::new(
            "org",
            url,
            Subscription::parse(&["*"]).expect("types"),
            Secret::generate(),
        ),
    };
    s.cursors
        .ensure(
            "org",
            &webhooks_domain::ids::id_floor_at("evt", s.endpoint.created_at),
        )
        .await
        .expect("cursor");
    s
}

fn an_event(n: u32) -> Event {
    Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string(format!(r#"{{"n":{n}}}"#)).expect("json"),
    )
}

#[tokio::test]

async fn a_stream_record_dropped_after_its_retries_is_still_delivered() {
    use webhooks::event_sources::STREAM_MAX_RETRIES;
    let receiver = Receiver::always(200).await;
    let sys = small_system(receiver.url("/")).await;
    let endpoints = MemoryEndpointStore::new();
    let created = endpoints
        .create(
            &sys.endpoint,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("endpoint");
    assert_eq!(created, webhooks_ports::Created::Written);
    let queue = MemoryQueue::new(Duration::from_secs(1));
    let dead_letters = MemoryQueue::new(Duration::from_secs(1));
    // SQS refuses the fan-out's sends for as long as the stream retries the
    // first event's record (its delivery is never queued, so never created).
    let fanout = Arc::new(FanOut::new(
        endpoints.clone(),
        sys.deliveries.clone(),
        Arc::new(Faulty::new(
            queue.clone(),
            Arc::new(Script::new().fail(Op::Send, ..=u64::from(STREAM_MAX_RETRIES) + 1)),
        )),
    ));
    let mut stream = StreamMapping::new(StreamSource::memory(sys.events.clone()), fanout.clone());
    let first = an_event(1);
    sys.events.put_if_absent(&first).await.expect("put");
    for _ in 0..=STREAM_MAX_RETRIES {
        stream.step(Duration::from_millis(10)).await;
    }
    // The stream gave up on it (Lambda: MaximumRetryAttempts, then the
    // on-failure queue). The next event goes through.
    let second = an_event(2);
    sys.events.put_if_absent(&second).await.expect("put");
    assert_eq!(stream.step(Duration::from_millis(100)).await, 1);
    // The sweeper is the net for dropped records.
    Sweeper::new(
        sys.events.clone(),
        sys.cursors.clone(),
        fanout,
        Duration::ZERO,
    )
    .sweep()
    .await;
    let sender = QueueMapping::new(
        queue.clone(),
        Arc::new(Sender::new(
            endpoints.clone(),
            endpoints.clone(),
            sys.deliveries.clone(),
            queue.clone(),
            dead_letters,
            DeliveryClient::new(DeliveryClientConfig {
                allow_private: true,
                ..DeliveryClientConfig::default()
            })
            .expect("client"),
            SenderConfig::default(),
        )),
    );
    while sender.step(Duration::from_millis(200)).await > 0 {}
    let status = |e: &Event| {
        let id = delivery_id(&sys.endpoint.id, &e.id);
        let ds = sys.deliveries.clone();
        async move { ds.get(&id).await.expect("get").map(|d| d.status) }
    };
    assert_eq!(status(&second).await, Some(DeliveryStatus::Delivered));
    assert_eq!(
        status(&first).await,
        Some(DeliveryStatus::Delivered),
        "the stream dropped the first event's record: only the sweeper makes its delivery"
    );
}

/// Answers 500 to the first POST and 200 to every later one.
struct FailsOnce(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl Transport for FailsOnce {
    async fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: webhooks_domain::Payload,
    ) -> HttpOutcome {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        HttpOutcome {
            result: AttemptResult::Responded {
                status: if n == 0 { 500 } else { 200 },
                retry_after: None,
            },
            latency_ms: 1,
            response_body: None,
        }
    }
}

/// The first attempt fails (500) and is recorded; then the deliveries
/// table refuses every record for as many receives as SQS's redrive policy
/// allows, and SQS moves the message to the dead-letter queue. The sweeper
/// settles it: its redrive net sees a delivery with a retry scheduled and
/// leaves it to the reconciler (no second message of its own), which
/// queues it again as overdue; it is delivered. On a virtual clock, with
/// the memory backend's SQS redrive and the sweeper as deployed.
#[tokio::test(start_paused = true)]
async fn a_delivery_whose_message_sqs_redrives_does_not_stay_pending() {
    use chrono::TimeZone;
    use webhooks_ports::queue_settings::MAX_RECEIVE_COUNT;
    let clock = webhooks_testkit::clock::TokioClock::starting_at(
        chrono::Utc
            .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .expect("time"),
    );
    let memory = MemoryBackend::with_clock(Duration::from_secs(180), clock.clone());
    let adapters = memory.adapters();
    let mut endpoint = Endpoint::new(
        "org",
        "https://receiver.test/".into(),
        Subscription::All,
        Secret::generate(),
    );
    endpoint.created_at = webhooks_ports::Clock::now(clock.as_ref());
    let created = adapters
        .endpoints
        .create(
            &endpoint,
            webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        )
        .await
        .expect("endpoint");
    assert_eq!(created, webhooks_ports::Created::Written);
    adapters
        .cursors
        .ensure(
            "org",
            &webhooks_domain::ids::id_floor_at("evt", endpoint.created_at),
        )
        .await
        .expect("cursor");
    let mut event = an_event(1);
    event.created_at = endpoint.created_at + chrono::Duration::seconds(1);
    event.id = webhooks_domain::ids::id_floor_at("evt", event.created_at);
    adapters.events.put_if_absent(&event).await.expect("put");
    tokio::time::advance(Duration::from_secs(2)).await;
    let fanned = FanOut::from_adapters(&adapters)
        .fan_out(std::slice::from_ref(&event))
        .await;
    assert_eq!(fanned.enqueued, 1);

    let posts = Arc::new(FailsOnce(std::sync::atomic::AtomicUsize::new(0)));
    let sender = QueueMapping::new(
        adapters.queue.clone(),
        Arc::new(
            Sender::new(
                adapters.endpoints.clone(),
                adapters.endpoints.clone(),
                Arc::new(Faulty::new(
                    adapters.deliveries.clone(),
                    Arc::new(
                        // The first attempt's outcome creates the record (the
                        // stream's fan-out noted the delivery); every record of
                        // an attempt after it fails.
                        Script::new().fail(Op::RecordAttempt, 1..=u64::from(MAX_RECEIVE_COUNT)),
                    ),
                )),
                adapters.queue.clone(),
                adapters.dead_letters.clone(),
                DeliveryClient::new(DeliveryClientConfig::default()).expect("client"),
                SenderConfig {
                    schedule: "1m,1m,1m".parse().expect("schedule"),
                    ..SenderConfig::default()
                },
            )
            .with_clock(clock.clone())
            .with_transport(posts.clone()),
        ),
    );
    while !memory.queue.is_empty() {
        sender.step(Duration::ZERO).await;
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    assert_eq!(memory.dead_letters.len(), 1, "SQS redrove it");
    let id = delivery_id(&endpoint.id, &event.id);
    let d = adapters
        .deliveries
        .get(&id)
        .await
        .expect("get")
        .expect("delivery");
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Pending, 1));

    let report = Sweeper::from_adapters(&adapters, Duration::from_secs(120))
        .sweep()
        .await;
    let r = &report.redriven;
    assert_eq!(
        (r.to_reconciler, r.retried, r.dead_lettered),
        (1, 0, 0),
        "{r:?}"
    );
    assert_eq!(report.reconciled, 1);
    assert!(memory.dead_letters.is_empty());
    assert_eq!(memory.queue.len(), 1, "one message: the reconciler's");
    while !memory.queue.is_empty() {
        sender.step(Duration::ZERO).await;
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    let d = adapters
        .deliveries
        .get(&id)
        .await
        .expect("get")
        .expect("delivery");
    let codes: Vec<Option<u16>> = d.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(codes, [Some(500), Some(200)]);
}
