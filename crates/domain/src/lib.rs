//! The webhook platform's rules, free of I/O: what an event, an endpoint and a
//! delivery are, how payloads are signed, how secrets look, and when a failed
//! delivery is tried again.

pub mod address;
pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod event_type;
pub mod filter;
pub mod ids;
pub mod ops;
pub mod payload;
pub mod queued;
pub mod retry;
pub mod secret;
pub mod signing;
pub mod stats;
pub mod tenant;
pub mod time;

pub use delivery::{Attempt, Delivery, DeliveryStatus, DeliveryTask};
pub use endpoint::{Endpoint, EndpointSummary, EndpointUrlPolicy, Subscriber, Subscription};
pub use event::Event;
pub use event_type::EventType;
pub use filter::EventFilter;
pub use payload::Payload;
pub use retry::RetrySchedule;
pub use secret::Secret;
