//! The `webhooks_ports::Queue` contract, written once and run against every
//! implementation: the memory queue (on tokio's paused clock) and the SQS
//! adapter on the emulator. What one accepts and the other refuses shows up
//! here, so the stand-in cannot drift from SQS again.
//!
//! Each check is an `async fn` taking a [`QueueMaker`];
//! [`queue_contract_tests!`](crate::queue_contract_tests) turns them all into
//! `#[tokio::test]`s for one implementation.

pub use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use webhooks_ports::queue_limits::{MAX_MESSAGE_BYTES, MAX_VISIBILITY};
use webhooks_ports::{Queue, QueueMessage, ReceivedMessage};

/// A queue with its dead-letter queue.
pub struct QueuePair {
    pub queue: Arc<dyn Queue>,
    pub dead_letters: Arc<dyn Queue>,
}

/// How the contract gets queues of one implementation, and lets time pass
/// for them.
pub trait QueueMaker: Sync {
    /// A new, empty queue whose received messages stay hidden for
    /// `visibility` (whole seconds), moving to its dead-letter queue on the
    /// receive after the `max_receive_count`-th.
    fn make(&self, visibility: Duration, max_receive_count: u32) -> BoxFuture<'_, QueuePair>;
    /// Lets `d` pass for the queue: advances the paused clock, or waits.
    fn pass(&self, d: Duration) -> BoxFuture<'_, ()>;
}

const SECOND: Duration = Duration::from_secs(1);
/// A visibility timeout of one second, and a little more to see it end.
const VISIBILITY: Duration = SECOND;
const PAST_VISIBILITY: Duration = Duration::from_millis(1500);

/// Receives until `n` messages arrived (SQS hands out a sample per call) or
/// a few calls came back empty.
async fn receive_n(queue: &dyn Queue, n: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let mut empty = 0;
    while got.len() < n && empty < 3 {
        let batch = queue.receive(10, SECOND).await.expect("receive");
        if batch.is_empty() {
            empty += 1;
        }
        got.extend(batch);
    }
    got
}

/// Whether a message is visible right now (taking it if so).
async fn any_visible(queue: &dyn Queue) -> bool {
    !queue
        .receive(10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty()
}

fn bodies_of(messages: &[ReceivedMessage]) -> BTreeSet<String> {
    messages.iter().map(|m| m.body.clone()).collect()
}

/// Messages of no tenant, one per body.
fn untagged(bodies: &[String]) -> Vec<QueueMessage> {
    bodies.iter().map(QueueMessage::untagged).collect()
}

fn one(body: &str) -> [QueueMessage; 1] {
    [QueueMessage::untagged(body)]
}

/// Sent messages are received once each, hidden while received, and gone
/// once deleted.
pub async fn sent_messages_are_received_hidden_and_deleted(m: &impl QueueMaker) {
    let q = m.make(VISIBILITY, 5).await.queue;
    let sent: Vec<String> = (0..3).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    assert!(q
        .send_batch(&untagged(&sent))
        .await
        .expect("send")
        .is_empty());
    let got = receive_n(q.as_ref(), 3).await;
    assert_eq!(bodies_of(&got), sent.iter().cloned().collect());
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    assert!(
        !any_visible(q.as_ref()).await,
        "received messages are hidden"
    );
    let handles: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    q.delete_batch(&handles).await.expect("delete");
    m.pass(PAST_VISIBILITY).await;
    assert!(!any_visible(q.as_ref()).await, "deleted messages stay gone");
}

/// A received message not deleted comes back after the visibility timeout,
/// with a higher receive count and a new receipt handle.
pub async fn an_undeleted_message_comes_back_after_the_visibility_timeout(m: &impl QueueMaker) {
    let q = m.make(VISIBILITY, 5).await.queue;
    q.send_batch(&one("again")).await.expect("send");
    let first = receive_n(q.as_ref(), 1).await.remove(0);
    m.pass(PAST_VISIBILITY).await;
    let second = receive_n(q.as_ref(), 1).await.remove(0);
    assert_eq!(second.body, "again");
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt_handle, first.receipt_handle);
}

/// `change_visibility` hides a received message for the given time from
/// now; zero shows it at once.
pub async fn change_visibility_sets_when_a_message_is_seen_again(m: &impl QueueMaker) {
    let q = m.make(Duration::from_secs(30), 5).await.queue;
    q.send_batch(&one("later")).await.expect("send");
    let msg = receive_n(q.as_ref(), 1).await.remove(0);
    q.change_visibility(&msg.receipt_handle, Duration::ZERO)
        .await
        .expect("show now");
    let again = receive_n(q.as_ref(), 1).await.remove(0);
    assert_eq!(again.receive_count, 2);
    q.change_visibility(&again.receipt_handle, 2 * SECOND)
        .await
        .expect("hide 2 s");
    assert!(!any_visible(q.as_ref()).await);
    m.pass(Duration::from_millis(2500)).await;
    assert_eq!(receive_n(q.as_ref(), 1).await.len(), 1);
    assert!(q
        .change_visibility("not-a-receipt-handle", SECOND)
        .await
        .is_err());
}

/// No message stays hidden past 12 h from its receipt: a longer hide is
/// refused.
pub async fn no_hide_goes_past_12_hours_from_the_receipt(m: &impl QueueMaker) {
    let q = m.make(Duration::from_secs(30), 5).await.queue;
    q.send_batch(&one("long")).await.expect("send");
    let msg = receive_n(q.as_ref(), 1).await.remove(0);
    q.change_visibility(
        &msg.receipt_handle,
        MAX_VISIBILITY - Duration::from_secs(60),
    )
    .await
    .expect("just under 12 h from the receipt is allowed");
    m.pass(2 * SECOND).await;
    let refused = q
        .change_visibility(&msg.receipt_handle, MAX_VISIBILITY - SECOND)
        .await;
    assert!(refused.is_err(), "12 h + 1 s from the receipt was accepted");
    assert!(q
        .change_visibility(&msg.receipt_handle, MAX_VISIBILITY + SECOND)
        .await
        .is_err());
}

/// On the receive after the `max_receive_count`-th, the message moves to
/// the dead-letter queue, unchanged.
pub async fn redrive_moves_a_message_after_max_receive_count(m: &impl QueueMaker) {
    let pair = m.make(VISIBILITY, 2).await;
    pair.queue.send_batch(&one("poison")).await.expect("send");
    for n in 1..=2 {
        let msg = receive_n(pair.queue.as_ref(), 1).await.remove(0);
        assert_eq!(msg.receive_count, n);
        m.pass(PAST_VISIBILITY).await;
    }
    assert!(
        !any_visible(pair.queue.as_ref()).await,
        "received a third time"
    );
    let dead = receive_n(pair.dead_letters.as_ref(), 1).await;
    assert_eq!(bodies_of(&dead), BTreeSet::from(["poison".to_string()]));
}

/// A message SQS would refuse (over 256 KiB, a character outside its
/// ranges) is refused alone: its index is returned, the others are sent.
pub async fn messages_sqs_refuses_are_refused_alone(m: &impl QueueMaker) {
    let q = m.make(VISIBILITY, 5).await.queue;
    let at_limit = "y".repeat(MAX_MESSAGE_BYTES);
    let bodies = vec![
        "ok".to_string(),
        "x".repeat(MAX_MESSAGE_BYTES + 1),
        "not a character \u{FFFF}".to_string(),
        "nul \u{0}".to_string(),
        at_limit.clone(),
        "fine \u{FFFD} \u{10FFFF} \t\r\n".to_string(),
    ];
    let refused = q.send_batch(&untagged(&bodies)).await.expect("send");
    assert_eq!(refused, [1, 2, 3]);
    let got = receive_n(q.as_ref(), 3).await;
    assert_eq!(
        bodies_of(&got),
        BTreeSet::from([
            "ok".to_string(),
            at_limit,
            "fine \u{FFFD} \u{10FFFF} \t\r\n".to_string()
        ])
    );
}

/// Any number of messages, of any total size, is sent: cut into requests of
/// at most ten entries and 1 MiB.
pub async fn batches_are_cut_by_count_and_bytes(m: &impl QueueMaker) {
    let q = m.make(Duration::from_secs(30), 5).await.queue;
    let bodies: Vec<String> = (0..12)
        .map(|i| format!("{i:02}{}", "z".repeat(200 * 1024)))
        .collect();
    let refused = q.send_batch(&untagged(&bodies)).await.expect("send");
    assert!(refused.is_empty(), "refused {refused:?}");
    let got = receive_n(q.as_ref(), 12).await;
    assert_eq!(bodies_of(&got), bodies.iter().cloned().collect());
}

/// A message's tenant (`MessageGroupId`, which makes a standard queue a
/// fair queue) is accepted on a standard queue and comes back with the
/// message; a message without one comes back without one; a group id SQS
/// would refuse (over 128 characters, or other than letters, digits and
/// punctuation) is refused alone.
pub async fn a_tenant_travels_with_its_message(m: &impl QueueMaker) {
    let q = m.make(Duration::from_secs(30), 5).await.queue;
    let refused = q
        .send_batch(&[
            QueueMessage::new("of acme", "org:acme"),
            QueueMessage::untagged("of nobody"),
            QueueMessage::new("bad group", "no spaces allowed"),
            QueueMessage::new("long group", "g".repeat(129)),
            QueueMessage::new("of globex", "org:globex"),
        ])
        .await
        .expect("send");
    assert_eq!(refused, [2, 3]);
    let got = receive_n(q.as_ref(), 3).await;
    let tenants: BTreeSet<(String, Option<String>)> = got
        .iter()
        .map(|m| (m.body.clone(), m.tenant.clone()))
        .collect();
    assert_eq!(
        tenants,
        BTreeSet::from([
            ("of acme".to_string(), Some("org:acme".to_string())),
            ("of globex".to_string(), Some("org:globex".to_string())),
            ("of nobody".to_string(), None),
        ])
    );
}

/// `send_batch_ids` answers, in order, the id of each message the queue
/// took (the id its receives carry, every time) and none for one refused.
pub async fn a_send_answers_each_message_id(m: &impl QueueMaker) {
    let q = m.make(VISIBILITY, 5).await.queue;
    let bodies = vec![
        "first".to_string(),
        "not a character \u{FFFF}".to_string(),
        "third".to_string(),
    ];
    let ids = q.send_batch_ids(&untagged(&bodies)).await.expect("send");
    assert_eq!(ids.len(), 3);
    assert!(ids[1].is_none(), "refused: no id");
    let (first, third) = (ids[0].clone().expect("id"), ids[2].clone().expect("id"));
    assert_ne!(first, third);
    for _ in 0..2 {
        let got = receive_n(q.as_ref(), 2).await;
        let by_body: BTreeSet<(String, String)> = got
            .iter()
            .map(|m| (m.body.clone(), m.message_id.clone()))
            .collect();
        assert_eq!(
            by_body,
            BTreeSet::from([
                ("first".to_string(), first.clone()),
                ("third".to_string(), third.clone())
            ])
        );
        m.pass(PAST_VISIBILITY).await;
    }
}

/// Every contract check as a `#[tokio::test]` for one queue implementation:
/// `queue_contract_tests!(#[tokio::test(start_paused = true)], maker())`.
#[macro_export]
macro_rules! queue_contract_tests {
    (#[$test:meta], $maker:expr) => {
        $crate::queue_contract_tests!(@each #[$test], $maker,
            sent_messages_are_received_hidden_and_deleted,
            an_undeleted_message_comes_back_after_the_visibility_timeout,
            change_visibility_sets_when_a_message_is_seen_again,
            no_hide_goes_past_12_hours_from_the_receipt,
            redrive_moves_a_message_after_max_receive_count,
            messages_sqs_refuses_are_refused_alone,
            batches_are_cut_by_count_and_bytes,
            a_tenant_travels_with_its_message,
            a_send_answers_each_message_id,
        );
    };
    (@each #[$test:meta], $maker:expr, $($name:ident,)*) => {
        $(
            #[$test]
            async fn $name() {
                $crate::queue_contract::$name(&$maker).await;
            }
        )*
    };
}
