//! The `webhooks` command's library: what `webhooks dev` is made of, usable
//! from tests.
//!
//! - [`event_sources`]: Lambda's event source mappings, locally: a DynamoDB
//!   stream (real, or the embedded store's) feeding the fan-out handler, and
//!   a queue feeding the sender handler with batch item failures honoured.

pub mod event_sources;
