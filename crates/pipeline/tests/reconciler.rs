//! The reconciler, on a virtual clock: a pending delivery whose queue
//! message is lost (redriven, expired, never sent) after a failed attempt
//! scheduled its retry is queued again once it is overdue, and goes on to be
//! delivered; one whose endpoint is gone ends canceled. Without the
//! reconciler both would stay pending for ever. A delivery never attempted
//! is not in the index the reconciler reads: its record is created only
//! after its message was sent, the sender renews a message before SQS
//! would drop it (`a_worn_message_of_a_delivery_never_attempted_is_renewed`),
//! and the redrive net settles one SQS redrove all the same (the tests
//! after "the redrive net" below). A sweep gives a delivery that merely
//! waits no second message (`a_sweep_gives_a_waiting_backlog_no_second_message`).

use async_trait::async_trait;
use chrono::TimeZone;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::delivery::{delivery_id, AttemptResult};
use webhooks_domain::{ids, DeliveryStatus, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_faults::{Faulty, Op, Script};
use webhooks_memory::MemoryBackend;
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, HttpOutcome, MessageOutcome, Sender,
    SenderConfig, Sweeper, Transport,
};
use webhooks_ports::queue_settings::MAX_RECEIVE_COUNT;
use webhooks_ports::{Adapters, BackendError, EndpointLookup, ReceivedMessage};
use webhooks_testkit::clock::TokioClock;

/// Every POST answered 200.
struct Accepting;

/// Every POST answered 503.
struct Unavailable;

#[async_trait]
impl Transport for Unavailable {
    async fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: webhooks_domain::Payload,
    ) -> HttpOutcome {
        HttpOutcome {
            result: AttemptResult::Responded {
                status: 503,
                retry_after: None,
            },
            latency_ms: 1,
            response_body: None,
        }
    }
}

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

struct World {
    adapters: Adapters,
    memory: MemoryBackend,
    endpoint: Endpoint,
    event: Event,
}

/// One org with one endpoint, and an event fanned out to it by the
/// stream: noted, with no record until its first attempt.
async fn a_fanned_out_event() -> World {
    fanned_out(false).await
}

/// [`a_fanned_out_event`], fanned out as a sweep (or a late stream) does:
/// its record created, owned by its message.
async fn a_recorded_event() -> World {
    fanned_out(true).await
}

async fn fanned_out(recorded: bool) -> World {
    let clock = TokioClock::starting_at(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
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
        .unwrap();
    assert_eq!(created, webhooks_ports::Created::Written);
    adapters
        .cursors
        .ensure("org", &ids::id_floor_at("evt", endpoint.created_at))
        .await
        .unwrap();
    let mut event = Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string("{}".into()).unwrap(),
    );
    event.created_at = endpoint.created_at + chrono::Duration::seconds(1);
    event.id = ids::id_floor_at("evt", event.created_at);
    adapters.events.put_if_absent(&event).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let fanout = FanOut::from_adapters(&adapters);
    let fanned = if recorded {
        fanout.fan_out_swept(std::slice::from_ref(&event)).await
    } else {
        fanout.fan_out(std::slice::from_ref(&event)).await
    };
    assert_eq!(fanned.enqueued, 1);
    assert_eq!(
        (fanned.created, fanned.noted),
        if recorded { (1, 0) } else { (0, 1) }
    );
    World {
        adapters,
        memory,
        endpoint,
        event,
    }
}

/// [`a_fanned_out_event`] whose first attempt fails and whose queue message
/// is then lost after the sweeper's cursor has moved over the event (so no
/// sweep of events looks at it again).
async fn a_delivery_that_lost_its_message() -> World {
    let w = a_fanned_out_event().await;
    let (adapters, event) = (&w.adapters, &w.event);
    let failing = Sender::from_adapters(
        adapters,
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_transport(Arc::new(Unavailable));
    let first = adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        failing.process_batch(&first).await,
        vec![MessageOutcome::Retry]
    );
    tokio::time::advance(Duration::from_secs(120)).await;
    Sweeper::new(
        adapters.events.clone(),
        adapters.cursors.clone(),
        Arc::new(FanOut::from_adapters(adapters)),
        Duration::from_secs(60),
    )
    .sweep()
    .await;
    assert_eq!(
        adapters.cursors.get("org").await.unwrap().as_deref(),
        Some(event.id.as_str())
    );
    // Lost: SQS redrove it, or its retention ran out.
    let lost = adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    let handles: Vec<String> = lost.into_iter().map(|m| m.receipt_handle).collect();
    adapters.queue.delete_batch(&handles).await.unwrap();
    assert!(w.memory.queue.is_empty());
    w
}

/// Endpoints that cannot be read (the table throttled for an hour and a half).
struct Unreadable;

#[async_trait]
impl EndpointLookup for Unreadable {
    async fn get(&self, _: &str, _: &str) -> webhooks_ports::Result<Option<Endpoint>> {
        Err(BackendError::Transient("throttled".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_worn_message_of_a_delivery_never_attempted_is_renewed() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    let client = || DeliveryClient::new(DeliveryClientConfig::default()).unwrap();
    let unlucky = Sender::new(
        Arc::new(Unreadable),
        w.adapters.endpoints.clone(),
        w.adapters.deliveries.clone(),
        queue.clone(),
        w.adapters.dead_letters.clone(),
        client(),
        SenderConfig::default(),
    )
    .with_clock(w.adapters.clock.clone());
    // Receive after receive comes to nothing: its endpoint cannot be read.
    // Once it has used the receives its schedule can spare before a first
    // attempt (long before SQS would move it to the dead-letter queue,
    // where no reconciler would look for it), it is renewed.
    let worn_at = webhooks_pipeline::sender::limits::deferral_budget(
        &webhooks_domain::RetrySchedule::default(),
    ) + 1;
    assert!(worn_at < MAX_RECEIVE_COUNT);
    let mut last = Vec::new();
    for n in 1..=worn_at {
        last = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(last.len(), 1, "receive {n}");
        assert_eq!(last[0].receive_count, n);
        let expected = if n < worn_at {
            MessageOutcome::Retry
        } else {
            MessageOutcome::Done
        };
        assert_eq!(unlucky.process_batch(&last).await, vec![expected.clone()]);
        if expected == MessageOutcome::Done {
            // As the queue mapping does with a finished message.
            queue
                .delete_batch(&[last[0].receipt_handle.clone()])
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    let renewed = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].receive_count, 1);
    assert_ne!(renewed[0].message_id, last[0].message_id);
    assert_eq!(renewed[0].body, last[0].body);
    assert!(w.memory.dead_letters.is_empty());

    let sender = Sender::from_adapters(&w.adapters, client(), SenderConfig::default())
        .with_transport(Arc::new(Accepting));
    assert_eq!(
        sender.process_batch(&renewed).await,
        vec![MessageOutcome::Done]
    );
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 1));
}

/// Found by the simulation: a worn message of a noted delivery is renewed
/// once the delivery's record is made, owned by the worn message (the copy
/// then takes the chain by hand-over). When that create failed, the copy
/// was sent naming the note, which names the worn message, so the copy
/// gave way to a message that was finished: lost. Then such a copy went
/// without the note's key and adopted the delivery at once, which could
/// POST beside another note's message (below). Now it names the note and
/// stands for the worn message: the note names that one, so the copy
/// creates the record first, and delivers.
#[tokio::test(start_paused = true)]
async fn a_worn_noted_message_whose_record_cannot_be_made_is_renewed_standing_for_it() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    let client = || DeliveryClient::new(DeliveryClientConfig::default()).unwrap();
    // Its endpoint cannot be read, and creates fail.
    let unlucky = Sender::new(
        Arc::new(Unreadable),
        w.adapters.endpoints.clone(),
        Arc::new(Faulty::new(
            w.adapters.deliveries.clone(),
            Arc::new(Script::new().fail(Op::CreateDelivery, ..)),
        )),
        queue.clone(),
        w.adapters.dead_letters.clone(),
        client(),
        SenderConfig::default(),
    )
    .with_clock(w.adapters.clock.clone());
    let worn_at = webhooks_pipeline::sender::limits::deferral_budget(
        &webhooks_domain::RetrySchedule::default(),
    ) + 1;
    let mut worn = None;
    for n in 1..=worn_at {
        let got = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        let expected = if n < worn_at {
            MessageOutcome::Retry
        } else {
            let task: webhooks_domain::DeliveryTask = serde_json::from_str(&got[0].body).unwrap();
            worn = Some((got[0].message_id.clone(), task));
            MessageOutcome::Done
        };
        assert_eq!(unlucky.process_batch(&got).await, vec![expected.clone()]);
        if expected == MessageOutcome::Done {
            queue
                .delete_batch(&[got[0].receipt_handle.clone()])
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    let renewed = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(renewed.len(), 1);
    let task: webhooks_domain::DeliveryTask = serde_json::from_str(&renewed[0].body).unwrap();
    let (worn_id, worn) = worn.expect("the worn message");
    assert_eq!(task.queued, worn.queued, "the copy names the note");
    assert!(task.queued.is_some());
    assert_eq!(
        task.stands_for,
        Some(worn_id),
        "and stands for the worn one"
    );
    // A receipt of the worn message may still be attempting without a
    // record: the copy makes none before the record's create.
    let posts = Arc::new(CountingAccepting::default());
    let no_creates = failing_sender(&w, Op::CreateDelivery).with_transport(posts.clone());
    assert_eq!(
        no_creates.process_batch(&renewed).await,
        vec![MessageOutcome::Retry]
    );
    assert_eq!(posts.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    let sender = Sender::from_adapters(&w.adapters, client(), SenderConfig::default())
        .with_transport(Arc::new(Accepting));
    assert_eq!(
        sender.process_batch(&renewed).await,
        vec![MessageOutcome::Done]
    );
    delivered_once_by(&w, &renewed[0]).await;
}

/// `w`'s fanned-out message, received and held (the one its note names),
/// and a copy of it queued that stands for the message `stands_for` names,
/// redriven or not (a renewal's).
async fn held_and_copied(
    w: &World,
    stands_for: impl FnOnce(&ReceivedMessage) -> String,
    redriven: bool,
) -> Vec<ReceivedMessage> {
    let queue = &w.adapters.queue;
    let carrier = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(carrier.len(), 1);
    let mut task: webhooks_domain::DeliveryTask = serde_json::from_str(&carrier[0].body).unwrap();
    assert!(task.queued.is_some(), "the stream's message names its note");
    task.stands_for = Some(stands_for(&carrier[0]));
    task.redriven = redriven;
    queue
        .send_batch_ids(&[webhooks_ports::QueueMessage::new(
            task.to_message(),
            task.tenant(),
        )])
        .await
        .unwrap();
    carrier
}

/// A sender over `w` whose receivers accept, and the count of its POSTs.
fn counting_sender(w: &World) -> (Sender, Arc<CountingAccepting>) {
    let posts = Arc::new(CountingAccepting::default());
    let sender = Sender::from_adapters(
        &w.adapters,
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_transport(posts.clone());
    (sender, posts)
}

/// A copy (a renewal's whose record could not be made, or the redrive
/// net's) of a message its note does not name for the delivery, while the
/// message the note names is held and may still attempt it without a
/// record: the copy gives way, as the message it stands for would have.
/// Before, such copies named no note and adopted the delivery at once:
/// two first POSTs.
#[tokio::test(start_paused = true)]
async fn a_copy_standing_for_a_message_its_note_does_not_name_gives_way() {
    for redriven in [false, true] {
        let w = a_fanned_out_event().await;
        let queue = &w.adapters.queue;
        // A message of another fan-out of the same event, which the note
        // does not name, worn and copied.
        let carrier =
            held_and_copied(&w, |_| "a-message-the-note-does-not-name".into(), redriven).await;
        let (sender, posts) = counting_sender(&w);
        let count = || posts.0.load(std::sync::atomic::Ordering::SeqCst);
        if !redriven {
            // Young: it waits for its note a while first, as any message
            // its note does not name.
            let copy = queue.receive(10, Duration::ZERO).await.unwrap();
            assert_eq!(copy.len(), 1);
            assert_eq!(
                sender.process_batch(&copy).await,
                vec![MessageOutcome::Retry]
            );
            tokio::time::advance(Duration::from_secs(61)).await;
        }
        let copy: Vec<ReceivedMessage> = queue
            .receive(10, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.message_id != carrier[0].message_id)
            .collect();
        assert_eq!(copy.len(), 1, "redriven {redriven}");
        assert_eq!(
            sender.process_batch(&copy).await,
            vec![MessageOutcome::Done],
            "dropped: the note's message carries it"
        );
        assert_eq!(count(), 0, "the copy made no attempt");
        assert!(w
            .adapters
            .deliveries
            .get(&delivery_id(&w.endpoint.id, &w.event.id))
            .await
            .unwrap()
            .is_none());
        // The note's message makes the one first attempt.
        assert_eq!(
            sender.process_batch(&carrier).await,
            vec![MessageOutcome::Done]
        );
        assert_eq!(count(), 1);
        delivered_once_by(&w, &carrier[0]).await;
    }
}

/// `copy` (one message) handed to a sender: finished, after the one POST,
/// the delivery delivered by it.
async fn the_copy_delivers_once(w: &World, copy: &[ReceivedMessage]) {
    let (sender, posts) = counting_sender(w);
    assert_eq!(sender.process_batch(copy).await, vec![MessageOutcome::Done]);
    assert_eq!(posts.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    delivered_once_by(w, &copy[0]).await;
}

/// The redrive net's copy of the message the note names stands for it:
/// the note names it, so the copy creates the record first and delivers.
#[tokio::test(start_paused = true)]
async fn a_redriven_copy_of_the_notes_message_creates_the_record_and_delivers() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    let carrier = held_and_copied(&w, |m| m.message_id.clone(), true).await;
    // SQS moved the message to the dead-letter queue.
    queue
        .delete_batch(std::slice::from_ref(&carrier[0].receipt_handle))
        .await
        .unwrap();
    let copy = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(copy.len(), 1);
    the_copy_delivers_once(&w, &copy).await;
}

/// `w`'s store from now on: its eventually consistent reads do not see
/// a record for ten seconds after its creation.
fn reads_lag_ten_seconds(w: &World) {
    w.memory
        .deliveries
        .lag_reads(webhooks_memory::index_lag::IndexLag {
            usual: Duration::from_secs(10),
            slow_rate: 0.0,
            longest: Duration::ZERO,
            // The lag is 10 s x a draw in [0, 1): the test's steps run at
            // the creation's virtual instant, so any draw above zero outlasts
            // them (the lagging case's POST assertion fails otherwise).
            seed: 1,
        });
}

/// `w`'s delivery's record, created now owned by the message `chain`.
async fn recorded_for(w: &World, chain: &str) {
    let mut record = webhooks_domain::Delivery::new_at(
        "org",
        &w.endpoint.id,
        &w.event.id,
        w.event.event_type,
        w.event.created_at,
    );
    record.chain = Some(chain.to_string());
    let made = w.adapters.deliveries.create_if_absent(&record).await;
    assert!(made.unwrap().is_none());
}

/// The first receive of the message a note names reads its record
/// eventually consistently (`sender::batch_read`). What that can miss is a
/// record made a moment ago by another maker (a second fan-out just past
/// the notes' deadline): the cost is one POST more, never a second chain.
/// The message attempts as its note says, its create finds the record, it
/// is left for its next receive, and that receive, reading strongly, waits
/// for the record's chain without a POST (as a stand-by: no net would find
/// a never-attempted delivery whose message is lost). With reads that see
/// the record, the same message makes no POST at all.
#[tokio::test(start_paused = true)]
async fn a_record_the_first_receives_read_misses_costs_one_post_and_no_chain() {
    for lagging in [false, true] {
        let w = a_fanned_out_event().await;
        if lagging {
            reads_lag_ten_seconds(&w);
        }
        let queue = &w.adapters.queue;
        let carrier = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((carrier.len(), carrier[0].receive_count), (1, 1));
        recorded_for(&w, "a-second-fan-outs-message").await;
        let (sender, posts) = counting_sender(&w);
        let count = || posts.0.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = sender.process_batch(&carrier).await;
        let d = the_delivery(&w).await;
        assert_eq!(
            (d.status, d.attempt_count, d.chain.as_deref()),
            (
                DeliveryStatus::Pending,
                0,
                Some("a-second-fan-outs-message")
            ),
            "lagging {lagging}: the record stays its chain's"
        );
        assert_eq!(outcome, vec![MessageOutcome::Retry], "lagging {lagging}");
        if !lagging {
            assert_eq!(count(), 0, "it waits for the record's chain at once");
            continue;
        }
        assert_eq!(count(), 1, "the one POST more");
        tokio::time::advance(Duration::from_secs(181)).await;
        let again = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((again.len(), again[0].receive_count), (1, 2));
        assert_eq!(
            sender.process_batch(&again).await,
            vec![MessageOutcome::Retry]
        );
        assert_eq!(count(), 1, "its next receive read the record and waits");
        let d = the_delivery(&w).await;
        assert_eq!(d.chain.as_deref(), Some("a-second-fan-outs-message"));
    }
}

/// A renewal's copy whose record was made first, owned by it, still names
/// the note, which names the message it copied. On its first receive it
/// reads its record strongly (no note names it) and carries the delivery.
/// Read eventually consistently, it missed the record a moment old, gave
/// way to the note's message, which was gone, and left the delivery
/// pending without a message (the simulation found it, seed 11).
#[tokio::test(start_paused = true)]
async fn a_renewed_copy_owning_a_record_made_a_moment_ago_finds_it() {
    let w = a_fanned_out_event().await;
    reads_lag_ten_seconds(&w);
    let queue = &w.adapters.queue;
    let worn = queue.receive(10, Duration::ZERO).await.unwrap();
    let task: webhooks_domain::DeliveryTask = serde_json::from_str(&worn[0].body).unwrap();
    assert!(task.queued.is_some() && task.stands_for.is_none());
    let sent = queue
        .send_batch_ids(&[webhooks_ports::QueueMessage::new(
            task.to_message(),
            task.tenant(),
        )])
        .await
        .unwrap();
    let copy_id = sent[0].clone().unwrap();
    recorded_for(&w, &copy_id).await;
    queue
        .delete_batch(std::slice::from_ref(&worn[0].receipt_handle))
        .await
        .unwrap();
    let copy = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!((copy.len(), copy[0].receive_count), (1, 1));
    assert_eq!(copy[0].message_id, copy_id);
    the_copy_delivers_once(&w, &copy).await;
}

#[tokio::test(start_paused = true)]
async fn a_pending_delivery_without_a_message_is_queued_again_and_delivered() {
    let w = a_delivery_that_lost_its_message().await;
    let sweeper = Sweeper::from_adapters(&w.adapters, Duration::from_secs(60));
    // Not overdue yet: its message may only be late.
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    assert_eq!(sweeper.sweep().await.reconciled, 0);
    assert!(w.memory.queue.is_empty());
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    let report = sweeper.sweep().await;
    assert_eq!((report.reconciled, report.failed_orgs), (1, 0));

    let sender = Sender::from_adapters(
        &w.adapters,
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_transport(Arc::new(Accepting));
    let messages = w.adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        sender.process_batch(&messages).await,
        vec![MessageOutcome::Done]
    );
    let d = the_delivery(&w).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(d.attempt_count, 2);
    // Nothing left to reconcile.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(sweeper.sweep().await.reconciled, 0);
}

#[tokio::test(start_paused = true)]
async fn an_overdue_delivery_of_a_deleted_endpoint_ends_canceled() {
    let w = a_delivery_that_lost_its_message().await;
    // Deleted without its pending deliveries being canceled (the API's
    // cancellation stopped half-way, say).
    w.adapters
        .endpoints
        .delete("org", &w.endpoint.id)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(16 * 60)).await;
    let report = Sweeper::from_adapters(&w.adapters, Duration::from_secs(60))
        .sweep()
        .await;
    assert_eq!((report.reconciled, report.canceled), (0, 1));
    let d = the_delivery(&w).await;
    assert_eq!(d.status, DeliveryStatus::Canceled);
    assert!(w.memory.queue.is_empty());
}

/// Every POST answered 200, and counted.
#[derive(Default)]
struct CountingAccepting(std::sync::atomic::AtomicUsize);

#[async_trait]
impl Transport for CountingAccepting {
    async fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: webhooks_domain::Payload,
    ) -> HttpOutcome {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Accepting.post("", &[], "".into()).await
    }
}

/// Issue 22, defect 4: the reconciler sent the same overdue delivery again
/// at every pass (every 5 minutes) while its new message waited in the
/// queue, since the delivery stayed overdue until that message was leased.
/// Now queueing it again moves its next attempt to now: it is sent again
/// only once that message has waited STUCK_AFTER too (lost, or a backlog
/// that long), and then whichever message leases first makes the one POST.
#[tokio::test(start_paused = true)]
async fn a_requeued_delivery_is_not_sent_again_while_its_message_waits() {
    let w = a_delivery_that_lost_its_message().await;
    let sweeper = Sweeper::from_adapters(&w.adapters, Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(16 * 60)).await;
    let report = sweeper.sweep().await;
    assert_eq!((report.reconciled, report.failed_orgs), (1, 0));
    assert_eq!(w.memory.queue.len(), 1);
    let requeued_at = webhooks_ports::Clock::now(w.adapters.clock.as_ref());
    let d = the_delivery(&w).await;
    assert_eq!(d.next_attempt_at, Some(requeued_at), "due now");
    assert_eq!(d.chain, None, "the new message takes the chain over");
    // Its message waits in a backlog: nobody receives it for a while.
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        assert_eq!(sweeper.sweep().await.reconciled, 0);
    }
    assert_eq!(w.memory.queue.len(), 1, "not sent again while it waits");
    // Still not taken once STUCK_AFTER has passed: lost as far as anyone
    // can tell, so it is sent once more.
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    assert_eq!(sweeper.sweep().await.reconciled, 1);
    assert_eq!(w.memory.queue.len(), 2);
    // Both turn up at once: one POST, by whichever leased first.
    let (sender, transport) = counting_sender(&w);
    let messages = w.adapters.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 2);
    process_as_the_mapping_does(&w, &sender, &messages).await;
    assert_eq!(transport.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 2));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(sweeper.sweep().await.reconciled, 0);
}

/// The sender over `w`'s adapters, every POST answered by `transport`.
fn sender_answering(w: &World, transport: impl Transport + 'static) -> Sender {
    Sender::from_adapters(
        &w.adapters,
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_transport(Arc::new(transport))
}

/// `w`'s delivery, delivered at its first attempt, its chain `message`'s.
async fn delivered_once_by(w: &World, message: &ReceivedMessage) {
    let d = the_delivery(w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 1));
    assert_eq!(d.chain.as_deref(), Some(message.message_id.as_str()));
}

/// The delivery of `w`'s event.
async fn the_delivery(w: &World) -> webhooks_domain::Delivery {
    w.adapters
        .deliveries
        .get(&delivery_id(&w.endpoint.id, &w.event.id))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stream_batch_retried_after_its_sends_queues_no_copy_of_an_attempted_delivery() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    let first = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        sender_answering(&w, Unavailable)
            .process_batch(&first)
            .await,
        vec![MessageOutcome::Retry]
    );
    // Lambda retries the batch that timed out after its sends (here ten
    // times, its MaximumRetryAttempts): the delivery exists and has been
    // attempted, its own message carries its retry.
    let fanout = FanOut::from_adapters(&w.adapters);
    for _ in 0..10 {
        let r = fanout.fan_out(std::slice::from_ref(&w.event)).await;
        assert_eq!((r.created, r.existing, r.first_failure), (0, 1, None));
    }
    assert_eq!(w.memory.queue.len(), 1, "only the retry's own message");
    tokio::time::advance(Duration::from_secs(181)).await;
    let retry = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(
        sender_answering(&w, Accepting).process_batch(&retry).await,
        vec![MessageOutcome::Done]
    );
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 2));
}

/// Hands `messages` to `sender` and deletes those it finished with, as the
/// queue mapping does.
async fn process_as_the_mapping_does(w: &World, sender: &Sender, messages: &[ReceivedMessage]) {
    let outcomes = sender.process_batch(messages).await;
    let done: Vec<String> = messages
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| *o == MessageOutcome::Done)
        .map(|(m, _)| m.receipt_handle.clone())
        .collect();
    w.adapters.queue.delete_batch(&done).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worn_message_whose_first_attempt_fails_carries_its_retry() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    // Received and left until one receive before SQS's redrive (the
    // sender's invocations cut off before they got to it, say).
    for _ in 1..MAX_RECEIVE_COUNT - 1 {
        assert_eq!(queue.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    let worn = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(worn[0].receive_count, MAX_RECEIVE_COUNT - 1);
    // Its first attempt fails: the message now holds the delivery's retry
    // chain. Renewed, its copy would be turned away by that chain and the
    // delivery left pending with no message, out of the reconciler's reach
    // until it is overdue by STUCK_AFTER.
    process_as_the_mapping_does(&w, &sender_answering(&w, Unavailable), &worn).await;
    let accepting = sender_answering(&w, Accepting);
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(181)).await;
        let messages = queue.receive(10, Duration::ZERO).await.unwrap();
        process_as_the_mapping_does(&w, &accepting, &messages).await;
    }
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 2));
    assert!(w.memory.queue.is_empty());
    assert!(w.memory.dead_letters.is_empty());
}

/// Found by the simulation once the slow lane was on by default: a
/// message worn early (it waited behind its endpoint's limits) asks for
/// its delivery's lease, the write takes effect but answers an error, and
/// the message was renewed: its copy was turned away by the chain the
/// lease gave the worn message, and the delivery, never attempted and out
/// of the reconciler's index, was left without a message for good. A
/// message that asked for the lease is never renewed in that batch.
#[tokio::test(start_paused = true)]
async fn a_message_whose_lease_answered_an_error_is_not_renewed() {
    let w = a_recorded_event().await;
    let queue = &w.adapters.queue;
    let worn_at = webhooks_pipeline::sender::limits::deferral_budget(
        &webhooks_domain::RetrySchedule::default(),
    ) + 1;
    // Receives spread over 15 minutes: the delivery is no longer fresh,
    // so its first attempt takes a lease (a fresh one's owner takes none).
    for _ in 1..worn_at {
        assert_eq!(queue.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        tokio::time::advance(Duration::from_secs(300)).await;
    }
    let worn = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(worn[0].receive_count, worn_at);
    let unlucky = Sender::new(
        w.adapters.endpoints.clone(),
        w.adapters.endpoints.clone(),
        // Its lease writes take effect but answer an error (a throttle
        // after the write, a lost response).
        Arc::new(Faulty::new(
            w.adapters.deliveries.clone(),
            Arc::new(Script::new().fail_after(Op::Lease, ..)),
        )),
        queue.clone(),
        w.adapters.dead_letters.clone(),
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_clock(w.adapters.clock.clone())
    .with_transport(Arc::new(Accepting));
    assert_eq!(
        unlucky.process_batch(&worn).await,
        vec![MessageOutcome::Retry]
    );
    assert_eq!(w.memory.queue.len(), 1, "no copy was sent");
    // The worn message, which holds the chain now, carries the delivery on.
    let accepting = sender_answering(&w, Accepting);
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(181)).await;
        let messages = queue.receive(10, Duration::ZERO).await.unwrap();
        process_as_the_mapping_does(&w, &accepting, &messages).await;
    }
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 1));
    assert!(w.memory.queue.is_empty());
}

// ---------------------------------------------------------------- the redrive net

/// `n` more events of `w`'s org, made now (by `w`'s clock) and stored.
async fn more_events(w: &World, n: usize) -> Vec<Event> {
    let now = webhooks_ports::Clock::now(w.adapters.clock.as_ref());
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = Event::new(
            "org",
            EventType::LeadWon,
            RawValue::from_string("{}".into()).unwrap(),
        );
        e.created_at = now;
        e.id = ids::id_at("evt", now, u128::try_from(i).unwrap() + 1);
        assert!(w.adapters.events.put_if_absent(&e).await.unwrap());
        events.push(e);
    }
    events
}

/// The delivery of `event` to `w`'s endpoint.
async fn delivery_of(w: &World, event: &Event) -> Option<webhooks_domain::Delivery> {
    w.adapters
        .deliveries
        .get(&delivery_id(&w.endpoint.id, &event.id))
        .await
        .unwrap()
}

/// Receives every message of the delivery queue, handling none (the
/// sender's invocations die at them), until SQS's redrive has moved them
/// all to the dead-letter queue.
async fn redrive_all(w: &World) {
    while !w.memory.queue.is_empty() {
        w.adapters.queue.receive(10, Duration::ZERO).await.unwrap();
        tokio::time::advance(Duration::from_secs(181)).await;
    }
}

/// The sweeper as deployed over `w` (its reconciler and redrive net), its
/// notices queued for the operator's webhook.
fn sweeper(w: &World) -> Sweeper {
    Sweeper::from_adapters(&w.adapters, Duration::from_secs(120)).with_ops(
        webhooks_pipeline::OpsNotifier::new(Some(w.adapters.queue.clone()), None),
    )
}

/// Issue 22, defect 1: receives 29 and 30 of a never-attempted delivery's
/// message take its lease and POST, and their record fails; a message
/// that leased in its batch is not renewed (its copy would be turned away
/// by the chain), so SQS redrives it on receive 31. The delivery, pending
/// with no attempt and no retry scheduled, is in no index, and the
/// sweeper's cursor is past its event: before the redrive net it stayed
/// pending for ever. The net sends it again and it is delivered.
#[tokio::test(start_paused = true)]
async fn a_worn_message_whose_first_attempt_is_not_recorded_is_not_left_pending() {
    let w = worn_down(true).await;
    // Every record of an attempt fails, writing nothing (the table
    // throttled).
    let unlucky = failing_sender(&w, Op::RecordAttempt);
    let queue = &w.adapters.queue;
    for n in [MAX_RECEIVE_COUNT - 1, MAX_RECEIVE_COUNT] {
        let worn = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(worn[0].receive_count, n);
        process_as_the_mapping_does(&w, &unlucky, &worn).await;
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert!(w.memory.queue.is_empty(), "SQS redrove it");
    assert_eq!(w.memory.dead_letters.len(), 1);
    let d = the_delivery(&w).await;
    assert_eq!(
        (d.status, d.attempt_count, d.next_attempt_at),
        (DeliveryStatus::Pending, 0, None)
    );

    tokio::time::advance(Duration::from_secs(3600)).await;
    let report = sweeper(&w).sweep().await;
    let messages = queue.receive(10, Duration::ZERO).await.unwrap();
    process_as_the_mapping_does(&w, &sender_answering(&w, Accepting), &messages).await;
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 1));
    assert_eq!((report.redriven.retried, report.failed_orgs), (1, 0));
    assert!(w.memory.dead_letters.is_empty(), "settled: deleted");
    assert!(w.memory.queue.is_empty());
}

/// A noted delivery's message worn the same way: 85 minutes after its note
/// it makes no attempt without a record (its note carries it only while no
/// other message could take it over, `STUCK_AFTER` less the lease), but
/// creates the record first. With that create failing, it is renewed at
/// receive 29 (no lease taken), its copy standing for it, and the copy
/// creates the record and delivers: never left pending, nothing
/// redriven.
#[tokio::test(start_paused = true)]
async fn a_worn_message_of_an_old_noted_delivery_is_renewed_and_delivered() {
    let w = worn_down(false).await;
    let unlucky = failing_sender(&w, Op::CreateDelivery);
    let queue = &w.adapters.queue;
    let worn = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(worn[0].receive_count, MAX_RECEIVE_COUNT - 1);
    process_as_the_mapping_does(&w, &unlucky, &worn).await;
    assert!(delivery_of(&w, &w.event).await.is_none(), "still no record");
    tokio::time::advance(Duration::from_secs(181)).await;
    let copy = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(copy.len(), 1, "the worn message renewed");
    assert_eq!(copy[0].receive_count, 1);
    assert_ne!(copy[0].message_id, worn[0].message_id);
    process_as_the_mapping_does(&w, &sender_answering(&w, Accepting), &copy).await;
    let d = the_delivery(&w).await;
    assert_eq!((d.status, d.attempt_count), (DeliveryStatus::Delivered, 1));
    assert!(w.memory.dead_letters.is_empty(), "nothing redriven");
    assert!(w.memory.queue.is_empty());
}

/// A fanned-out delivery (`recorded`: created, else noted) whose message
/// was received 28 times, its event long behind the sweeper's cursor (no
/// sweep of events looks at it).
async fn worn_down(recorded: bool) -> World {
    let w = fanned_out(recorded).await;
    w.adapters
        .cursors
        .advance("org", &w.event.id)
        .await
        .unwrap();
    for _ in 1..MAX_RECEIVE_COUNT - 1 {
        let received = w.adapters.queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(received.len(), 1);
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    w
}

/// A sender over `w` every `op` of whose deliveries store fails, writing
/// nothing; its receivers accept.
fn failing_sender(w: &World, op: Op) -> Sender {
    Sender::new(
        w.adapters.endpoints.clone(),
        w.adapters.endpoints.clone(),
        Arc::new(Faulty::new(
            w.adapters.deliveries.clone(),
            Arc::new(Script::new().fail(op, ..)),
        )),
        w.adapters.queue.clone(),
        w.adapters.dead_letters.clone(),
        DeliveryClient::new(DeliveryClientConfig::default()).unwrap(),
        SenderConfig::default(),
    )
    .with_clock(w.adapters.clock.clone())
    .with_transport(Arc::new(Accepting))
}

/// Every message in the dead-letter queue is settled by what its delivery
/// needs: a never-attempted delivery (with or without a record) is sent
/// again; one with a retry scheduled is the reconciler's (no second
/// message); finished deliveries, poison and records gone with their event
/// are left for the operators, hidden so that the next pass does not read
/// them again.
#[tokio::test(start_paused = true)]
async fn each_dead_letter_is_settled_by_what_its_delivery_needs() {
    let w = a_fanned_out_event().await;
    let queue = &w.adapters.queue;
    let [attempted, delivered, unrecorded]: [Event; 3] =
        more_events(&w, 3).await.try_into().unwrap();
    FanOut::from_adapters(&w.adapters)
        .fan_out(&[attempted.clone(), delivered.clone()])
        .await;
    let task = |e: &Event| {
        let d = webhooks_domain::Delivery::new("org", &w.endpoint.id, &e.id, e.event_type);
        webhooks_ports::QueueMessage::task(&d.task(e, e.payload()))
    };
    // The fan-out of `unrecorded` sent its message and stopped before the
    // create (and the sweeper's cursor is past it, so only the net is
    // left to find it).
    queue.send_batch(&[task(&unrecorded)]).await.unwrap();
    w.adapters
        .cursors
        .advance("org", &unrecorded.id)
        .await
        .unwrap();
    // `attempted` fails its first attempt, `delivered` is delivered.
    let first = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 4);
    for m in &first {
        if m.body.contains(&attempted.id) {
            process_as_the_mapping_does(
                &w,
                &sender_answering(&w, Unavailable),
                std::slice::from_ref(m),
            )
            .await;
        } else if m.body.contains(&delivered.id) {
            process_as_the_mapping_does(
                &w,
                &sender_answering(&w, Accepting),
                std::slice::from_ref(m),
            )
            .await;
        }
    }
    assert_eq!(
        delivery_of(&w, &delivered).await.unwrap().status,
        DeliveryStatus::Delivered
    );
    // In the dead-letter queue already: a duplicate message of `delivered`
    // that SQS redrove, the sender's dead letter of a delivery that has
    // since expired with its event (never stored here), and poison.
    let expired = Event::new(
        "org",
        EventType::LeadWon,
        RawValue::from_string("{}".into()).unwrap(),
    );
    w.adapters
        .dead_letters
        .send_batch(&[
            task(&delivered),
            task(&expired),
            webhooks_ports::QueueMessage::untagged("not json"),
        ])
        .await
        .unwrap();
    redrive_all(&w).await;
    assert_eq!(w.memory.dead_letters.len(), 6);

    let report = sweeper(&w).sweep().await;
    let r = &report.redriven;
    assert_eq!(
        (
            r.retried,
            r.to_reconciler,
            r.parked,
            r.dead_lettered,
            r.waiting
        ),
        (2, 1, 3, 0, 0),
        "{r:?}"
    );
    assert_eq!(report.reconciled, 1, "the reconciler queued `attempted`");
    assert_eq!(w.memory.dead_letters.len(), 3, "the parked ones");
    let tasks: Vec<webhooks_domain::DeliveryTask> = w
        .memory
        .queue
        .bodies()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let mut queued: Vec<(&str, bool)> = tasks
        .iter()
        .map(|t| (t.event_id.as_str(), t.redriven))
        .collect();
    queued.sort_unstable();
    let mut expected = vec![
        (w.event.id.as_str(), true),
        (unrecorded.id.as_str(), true),
        (attempted.id.as_str(), false),
    ];
    expected.sort_unstable();
    assert_eq!(
        queued, expected,
        "one message each, none from the net for `attempted`"
    );

    // The parked ones are not read again by the next pass.
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(
        sweeper(&w).sweep().await.redriven,
        webhooks_pipeline::Redriven::default()
    );

    let accepting = sender_answering(&w, Accepting);
    while !w.memory.queue.is_empty() {
        let messages = queue.receive(10, Duration::ZERO).await.unwrap();
        process_as_the_mapping_does(&w, &accepting, &messages).await;
        tokio::time::advance(Duration::from_secs(181)).await;
    }
    for (e, attempts) in [(&w.event, 1), (&unrecorded, 1), (&attempted, 2)] {
        let d = delivery_of(&w, e).await.unwrap();
        assert_eq!(
            (d.status, d.attempt_count),
            (DeliveryStatus::Delivered, attempts)
        );
    }
    assert!(delivery_of(&w, &expired).await.is_none(), "not made again");
    assert_eq!(w.memory.dead_letters.len(), 3);
}

/// A delivery whose message SQS redrives again after the net sent it once
/// (a crash loop) ends dead-lettered with its cause, counted and notified
/// as any dead letter, instead of going round for ever.
#[tokio::test(start_paused = true)]
async fn a_delivery_whose_message_is_redriven_twice_ends_dead_lettered_with_its_cause() {
    let w = a_fanned_out_event().await;
    redrive_all(&w).await;
    assert_eq!(sweeper(&w).sweep().await.redriven.retried, 1);
    redrive_all(&w).await;
    assert_eq!(w.memory.dead_letters.len(), 1);
    let report = sweeper(&w).sweep().await;
    assert_eq!(
        (report.redriven.dead_lettered, report.redriven.retried),
        (1, 0)
    );
    let d = the_delivery(&w).await;
    assert_eq!(d.status, DeliveryStatus::DeadLettered);
    assert_eq!(
        d.last_error.as_deref(),
        Some(webhooks_pipeline::redrive::MESSAGE_REDRIVEN)
    );
    assert_eq!(d.attempt_count, 1);
    assert_eq!(
        d.attempts[0].error.as_deref(),
        Some(webhooks_pipeline::redrive::MESSAGE_REDRIVEN)
    );
    assert_eq!(d.attempts[0].status_code, None);
    // Its message stays in the dead-letter queue, as every dead-lettered
    // delivery's does; the operators are told.
    assert_eq!(w.memory.dead_letters.len(), 1);
    let notices: Vec<webhooks_domain::ops::OpsNotice> = w
        .memory
        .queue
        .bodies()
        .iter()
        .filter_map(|b| webhooks_domain::ops::OpsNotice::from_message(b))
        .collect();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].event_type, "delivery.dead_lettered");
    assert!(notices[0].payload.contains("message_redriven"));
    let figures = w
        .adapters
        .stats
        .read(&w.endpoint.id, d.created_at - chrono::Duration::hours(1))
        .await
        .unwrap();
    let dead: i64 = figures.iter().map(|b| b.dead_lettered).sum();
    assert_eq!(dead, 1);
}

/// While another message holds the delivery's lease, the net waits (the
/// dead letter hidden until the lease ends) instead of sending a copy.
#[tokio::test(start_paused = true)]
async fn the_net_waits_while_another_message_holds_the_lease() {
    let w = a_recorded_event().await;
    redrive_all(&w).await;
    let now = webhooks_ports::Clock::now(w.adapters.clock.as_ref());
    let id = delivery_id(&w.endpoint.id, &w.event.id);
    let lease = w
        .adapters
        .deliveries
        .lease(
            &id,
            0,
            "another",
            now + chrono::Duration::seconds(60),
            now,
            now - webhooks_domain::delivery::STUCK_AFTER,
        )
        .await
        .unwrap();
    assert!(matches!(lease, webhooks_ports::Lease::Granted(_)));
    assert_eq!(sweeper(&w).sweep().await.redriven.waiting, 1);
    assert!(w.memory.queue.is_empty());
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        sweeper(&w).sweep().await.redriven,
        webhooks_pipeline::Redriven::default(),
        "hidden until the lease ends"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(sweeper(&w).sweep().await.redriven.retried, 1);
    assert_eq!(w.memory.queue.len(), 1);
}

/// Issue 22, defect 5: a sweep re-queued every pending, never-attempted
/// delivery of the events it settled, so every delivery that merely waits
/// (a backlog, a deferral) got a second message.
#[tokio::test(start_paused = true)]
async fn a_sweep_gives_a_waiting_backlog_no_second_message() {
    let w = a_fanned_out_event().await;
    let events = more_events(&w, 999).await;
    let r = FanOut::from_adapters(&w.adapters).fan_out(&events).await;
    assert_eq!((r.noted, r.enqueued), (999, 999));
    assert_eq!(w.memory.queue.len(), 1_000);
    // Nobody sends: the backlog waits.
    tokio::time::advance(Duration::from_secs(180)).await;
    let report = sweeper(&w).sweep().await;
    assert_eq!((report.events, report.deliveries_created), (1_000, 0));
    assert_eq!(report.enqueued, 0);
    assert_eq!(w.memory.queue.len(), 1_000);
    assert_eq!(
        w.adapters.cursors.get("org").await.unwrap(),
        events.last().map(|e| e.id.clone())
    );
}

/// Receives every visible message and runs `sender` over them, batch after
/// batch, deleting those finished; how many messages it handled.
async fn drain_visible(w: &World, sender: &Sender) -> usize {
    let queue = &w.adapters.queue;
    let mut handled = 0;
    loop {
        let batch = queue.receive(10, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            return handled;
        }
        handled += batch.len();
        let outcomes = sender.process_batch(&batch).await;
        let done: Vec<String> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == MessageOutcome::Done)
            .map(|(m, _)| m.receipt_handle.clone())
            .collect();
        queue.delete_batch(&done).await.unwrap();
    }
}

/// Retries over their endpoint's `rate_limit` wait their turn in its line.
/// Those whose turn comes after the reconciler would take their message
/// for lost are noted on their delivery, so a sweep meanwhile queues no
/// copy of them. Before, it queued a copy of each, every copy took a
/// place of its own in the line and lengthened it, and the next sweep
/// queued more: after a table outage, a storm of messages (simulation,
/// outage seeds 74 and 92).
#[tokio::test(start_paused = true)]
async fn a_rate_limited_backlog_of_retries_gets_no_copies_from_the_reconciler() {
    const N: usize = 1_300;
    let w = a_fanned_out_event().await;
    let events = more_events(&w, N - 1).await;
    let r = FanOut::from_adapters(&w.adapters).fan_out(&events).await;
    assert_eq!(r.enqueued, N - 1);
    // Every first attempt fails; each retry is scheduled a few seconds on.
    assert_eq!(
        drain_visible(&w, &sender_answering(&w, Unavailable)).await,
        N
    );
    // The endpoint declares one request a second from now on.
    let mut ep = w
        .adapters
        .endpoints
        .get("org", &w.endpoint.id)
        .await
        .unwrap()
        .unwrap();
    ep.rate_limit = Some(1);
    assert_eq!(
        w.adapters.endpoints.update(&ep).await.unwrap(),
        webhooks_ports::Updated::Written
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    // Every retry is due: one goes, the others are deferred a second apart,
    // the last about 22 minutes on.
    let sender = sender_answering(&w, Accepting);
    assert_eq!(drain_visible(&w, &sender).await, N);
    assert_eq!(w.memory.queue.len(), N - 1);
    // Sixteen minutes on, each retry delivered in its turn, a sweep runs:
    // the retries still waiting are overdue by more than STUCK_AFTER.
    for _ in 0..16 * 60 {
        tokio::time::advance(Duration::from_secs(1)).await;
        drain_visible(&w, &sender).await;
    }
    let waiting = w.memory.queue.len();
    assert!(waiting > 300, "{waiting} retries still waiting their turn");
    let report = sweeper(&w).sweep().await;
    assert_eq!(report.reconciled, 0, "copies queued of waiting retries");
    assert_eq!(w.memory.queue.len(), waiting);
    // And each is delivered in its turn, once.
    for _ in 0..10 * 60 {
        tokio::time::advance(Duration::from_secs(1)).await;
        drain_visible(&w, &sender).await;
    }
    assert!(w.memory.queue.is_empty());
    for e in std::iter::once(&w.event).chain(&events) {
        let d = delivery_of(&w, e).await.unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered, "{}", d.id);
        assert_eq!(d.attempt_count, 2, "{}", d.id);
    }
}
