//! The `webhooks` command's library: what `webhooks dev` is made of, usable
//! from tests and benchmarks.
//!
//! - [`event_sources`]: Lambda's event source mappings, locally: a DynamoDB
//!   stream (real, or the embedded store's) feeding the fan-out handler, and
//!   a queue feeding the sender handler with batch item failures honoured.
//! - [`gateway`]: API Gateway, locally: HTTP in, `lambda_http` requests with
//!   the JWT authorizer's claims to the handlers.
//! - [`backend`]: the handlers wired to memory or to DynamoDB/SQS.
//! - [`dev`]: all of it in one process, with graceful shutdown.
//! - [`token`]: HS256 tokens for the local authorizer.
//! - [`client`]: a typed client of the management API.
//! - [`commands`]: the commands that use it (`webhooks endpoints ...`).
//! - [`migrate`]: one-off migrations of a deployed stack's tables
//!   (`webhooks migrate seal-secrets`).

pub mod backend;
pub mod client;
pub mod commands;
pub mod dev;
pub mod event_sources;
pub mod gateway;
pub mod migrate;
pub mod token;
