//! The outbound pipeline's steps, written against the ports so that the
//! Lambda functions and `webhooks dev` run the same code:
//!
//! - [`fanout`]: a new event becomes one delivery per subscribed endpoint,
//!   created once and queued;
//! - [`sender`]: a queued delivery is signed, POSTed, and then marked
//!   delivered, retried later, or dead-lettered;
//! - [`sweeper`]: events the stream never handed to the fan-out are fanned
//!   out from each organization's cursor, fairly among orgs and within a
//!   time budget;
//! - [`reconciler`]: pending deliveries that lost their queue message are
//!   queued again (the sweeper runs it);
//! - [`redrive`]: what SQS moved to the dead-letter queue is sent again
//!   once, left to the reconciler, or dead-lettered (the sweeper runs it);
//! - [`ops`]: operational notifications to the platform's operators;
//! - [`requeue`]: deliveries sent again by hand, or canceled with their
//!   endpoint;
//! - [`publish`]: events written under an idempotency claim (the api's
//!   keyed publish, Stripe's billing events), never behind the cursor.

pub mod fanout;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod publish;
pub mod reconciler;
pub mod redrive;
pub mod registration;
mod requeue;
pub mod sender;
pub mod sweeper;

pub use fanout::{FanOut, FanOutReport};
pub use http::{ClientBuildError, DeliveryClient, DeliveryClientConfig, HttpOutcome, Transport};
pub use metrics::Metrics;
pub use ops::{Ops, OpsEndpoint, OpsNotifier};
pub use reconciler::{OrgProgress, Reconciled, Reconciler};
pub use redrive::{RedriveBudget, RedriveNet, Redriven};
pub use requeue::{
    Canceled, Recovered, Requeue, RequeueError, Unstuck, PAGES_PER_CALL as REQUEUE_PAGES_PER_CALL,
};
pub use sender::{MessageOutcome, Sender, SenderConfig};
pub use sweeper::{Budget, SweepReport, Sweeper};
