//! The queue contract on the memory queue, on tokio's paused clock.

use std::time::Duration;
use webhooks_memory::MemoryQueue;
use webhooks_testkit::queue_contract::{BoxFuture, QueueMaker, QueuePair};

struct Memory;

impl QueueMaker for Memory {
    fn make(&self, visibility: Duration, max_receive_count: u32) -> BoxFuture<'_, QueuePair> {
        Box::pin(async move {
            let dead_letters = MemoryQueue::new(Duration::from_secs(30));
            let queue =
                MemoryQueue::with_redrive(visibility, dead_letters.clone(), max_receive_count);
            QueuePair {
                queue,
                dead_letters,
            }
        })
    }

    fn pass(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::advance(d))
    }
}

webhooks_testkit::queue_contract_tests!(#[tokio::test(start_paused = true)], Memory);
