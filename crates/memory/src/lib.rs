//! In-memory adapters for the embedded backend (`webhooks dev`) and fast
//! tests. They keep the promises of the services they stand for: conditional
//! writes that refuse duplicates, a change stream of new events, and a queue
//! with visibility timeouts, receive counts and redrive to a dead-letter queue.
//! What the tables' TTL removes, they remove too (see [`expiry`]).

mod chance;
mod clock;
mod cursors;
mod deliveries;
mod endpoints;
mod events;
pub mod expiry;
mod idempotency;
mod inbound;
pub mod index_lag;
mod queue;
mod queued;
mod read_lag;
mod stats;
pub mod sync;

pub use cursors::MemoryCursorStore;
pub use deliveries::MemoryDeliveryStore;
pub use endpoints::MemoryEndpointStore;
pub use events::{MemoryEventStore, StreamRecord};
pub use expiry::Retention;
pub use idempotency::MemoryIdempotencyStore;
pub use inbound::MemoryInboundStore;
pub use queue::{MemoryQueue, QueueEvent, QueueWatch, SqsBehaviour};
pub use queued::note_item_size;
pub use stats::MemoryStatsStore;

use std::sync::Arc;
use std::time::Duration;
use webhooks_ports::queue_settings::{DELIVERY_QUEUE_VISIBILITY_SECS, MAX_RECEIVE_COUNT};
use webhooks_ports::{Adapters, Clock, SystemClock};

/// The one place the memory adapters are built: every store, and the
/// delivery queue with its redrive to the dead-letter queue set up as in
/// AWS. The fields keep the concrete types for what only memory offers (the
/// events' change stream, counts for tests and benchmarks).
#[derive(Clone)]
pub struct MemoryBackend {
    pub events: Arc<MemoryEventStore>,
    pub endpoints: Arc<MemoryEndpointStore>,
    pub deliveries: Arc<MemoryDeliveryStore>,
    pub cursors: Arc<MemoryCursorStore>,
    pub idempotency: Arc<MemoryIdempotencyStore>,
    pub inbound: Arc<MemoryInboundStore>,
    pub stats: Arc<MemoryStatsStore>,
    pub queue: Arc<MemoryQueue>,
    pub dead_letters: Arc<MemoryQueue>,
    pub clock: Arc<dyn Clock>,
}

impl MemoryBackend {
    /// Empty stores and queues, the delivery queue's visibility timeout as
    /// deployed.
    pub fn new() -> Self {
        Self::with_visibility(Duration::from_secs(u64::from(
            DELIVERY_QUEUE_VISIBILITY_SECS,
        )))
    }

    /// Empty stores and queues, with this visibility timeout on the delivery
    /// queue (tests that need what a crash leaves behind to come back soon).
    pub fn with_visibility(visibility: Duration) -> Self {
        Self::with_clock(visibility, SystemClock::shared())
    }

    /// Empty stores and queues that read `clock` for the times they write
    /// (a simulation's virtual clock). The queues keep time with tokio's
    /// clock, which a simulation pauses and advances in step with `clock`.
    pub fn with_clock(visibility: Duration, clock: Arc<dyn Clock>) -> Self {
        Self::with_retention(visibility, clock, Retention::as_deployed())
    }

    /// Empty stores and queues that read `clock`, and keep events and
    /// finished deliveries as `retention` says (`webhooks dev` bounds
    /// their count).
    pub fn with_retention(
        visibility: Duration,
        clock: Arc<dyn Clock>,
        retention: Retention,
    ) -> Self {
        let events = MemoryEventStore::with_retention(clock.clone(), retention);
        let dead_letters = MemoryQueue::new(Duration::from_secs(30));
        let queue = MemoryQueue::with_redrive(visibility, dead_letters.clone(), MAX_RECEIVE_COUNT);
        MemoryBackend {
            deliveries: MemoryDeliveryStore::with_retention(
                clock.clone(),
                retention,
                Some(events.clone()),
            ),
            events,
            endpoints: MemoryEndpointStore::with_clock(clock.clone()),
            cursors: MemoryCursorStore::new(),
            idempotency: MemoryIdempotencyStore::with_clock(clock.clone()),
            inbound: MemoryInboundStore::with_clock(clock.clone()),
            stats: MemoryStatsStore::with_clock(clock.clone()),
            queue,
            dead_letters,
            clock,
        }
    }

    /// Removes everything that has expired by the clock now, in every
    /// store (tests; writes do a little of it each).
    pub fn expire(&self) {
        self.deliveries.expire();
        self.events.expire();
        self.idempotency.expire();
        self.inbound.expire();
        self.stats.expire();
    }

    /// The same adapters behind the ports.
    pub fn adapters(&self) -> Adapters {
        Adapters {
            events: self.events.clone(),
            endpoints: self.endpoints.clone(),
            deliveries: self.deliveries.clone(),
            cursors: self.cursors.clone(),
            idempotency: self.idempotency.clone(),
            inbound: self.inbound.clone(),
            stats: self.stats.clone(),
            queue: self.queue.clone(),
            dead_letters: self.dead_letters.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}
