//! The fault layer on the memory adapters: scripted and seeded faults at
//! each side of a call, refused messages, and calls that never return.

use std::sync::Arc;
use std::time::Duration;
use webhooks_faults::{Calls, Faults, Faulty, Op, Script, Seeded};
use webhooks_memory::{MemoryCursorStore, MemoryQueue};
use webhooks_ports::{CursorStore, Queue, QueueMessage};

fn messages(n: usize) -> Vec<QueueMessage> {
    (0..n)
        .map(|i| QueueMessage::new(format!("m{i}"), "org"))
        .collect()
}

#[tokio::test]
async fn scripted_sends_fail_before_the_queue_has_them() {
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let faulty = Faulty::new(queue.clone(), Arc::new(Script::new().fail(Op::Send, ..=2)));
    assert!(faulty.send_batch(&messages(1)).await.is_err());
    assert!(faulty.send_batch(&messages(1)).await.is_err());
    assert_eq!(queue.len(), 0);
    assert_eq!(
        faulty.send_batch(&messages(1)).await.unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(queue.len(), 1);
}

#[tokio::test]
async fn a_send_failed_after_it_took_effect_is_queued() {
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let faulty = Faulty::new(
        queue.clone(),
        Arc::new(Script::new().fail_after(Op::Send, 2..=2)),
    );
    assert!(faulty.send_batch(&messages(1)).await.is_ok());
    assert!(faulty.send_batch(&messages(1)).await.is_err());
    assert_eq!(
        queue.len(),
        2,
        "the send that answered an error was accepted"
    );
    assert!(faulty.send_batch(&messages(1)).await.is_ok());
}

#[tokio::test]
async fn seeded_faults_cover_the_calls_their_rule_names() {
    let cursors = MemoryCursorStore::new();
    let faults = Faults::new(7);
    let policy = Seeded::new(faults.clone()).fail(Calls::Writes, 1.0, "write");
    let faulty = Faulty::new(cursors.clone(), Arc::new(policy));
    assert!(faulty.ensure("org", "evt_1").await.is_err());
    assert_eq!(faulty.get("org").await.unwrap(), None, "reads go through");
    assert_eq!(
        cursors.get("org").await.unwrap(),
        None,
        "nothing was written"
    );
    faults.set_enabled(false);
    faulty.ensure("org", "evt_1").await.unwrap();
    assert_eq!(faults.counts().get("write"), Some(&1));
}

#[tokio::test]
async fn refused_messages_are_reported_and_not_sent() {
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let faults = Faults::new(1);
    let faulty = Faulty::new(
        queue.clone(),
        Arc::new(Seeded::new(faults.clone()).refusing(0.5, "refused")),
    );
    let refused = faulty.send_batch(&messages(40)).await.unwrap();
    assert!(!refused.is_empty() && refused.len() < 40, "{refused:?}");
    assert!(refused.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(queue.len() + refused.len(), 40);
    assert_eq!(faults.total(), refused.len() as u64);
    let sent: Vec<String> = queue.with_bodies(|b| b.map(str::to_string).collect());
    for i in refused {
        assert!(
            !sent.contains(&format!("m{i}")),
            "m{i} was refused and sent"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_never_returns_and_does_nothing() {
    let queue = MemoryQueue::new(Duration::from_secs(30));
    let faults = Faults::new(3);
    let faulty = Faulty::new(
        queue.clone(),
        Arc::new(Seeded::new(faults).hang(Op::Send, 1.0, "hang")),
    );
    let one = messages(1);
    let sent = tokio::time::timeout(Duration::from_secs(900), faulty.send_batch(&one));
    assert!(sent.await.is_err(), "the send returned");
    assert_eq!(queue.len(), 0);
}
