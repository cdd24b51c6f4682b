//! In-memory adapters for the embedded backend (`webhooks dev`) and fast
//! tests. They keep the promises of the services they stand for: conditional
//! writes that refuse duplicates, a change stream of new events, and a queue
//! with visibility timeouts, receive counts and redrive to a dead-letter queue.

mod inbound;
mod queue;
mod stores;

pub use inbound::MemoryInboundStore;
pub use queue::MemoryQueue;
pub use stores::{
    MemoryCursorStore, MemoryDeliveryStore, MemoryEndpointStore, MemoryEventStore,
    MemoryIdempotencyStore, StreamRecord,
};
