//! One fault layer over the ports, for the simulation and the fault suites
//! alike, so the two cannot drift.
//!
//! [`Faulty`] wraps a store or a queue; each call it passes on is first
//! put to a [`Policy`] ([`Policy::before`]: fail it, so nothing is done, or
//! never return, as when the caller dies there), then made, then put to
//! the policy again ([`Policy::after`]: answer an error although the call
//! took effect, as a timeout after a commit or a send SQS accepted does).
//! A send may also have some of its messages refused
//! ([`Policy::refuse`]), as a partial `SendMessageBatch` failure.
//!
//! The policies:
//! - [`Script`]: the calls that fail, named by [`Op`] and number (the
//!   first three sends; the 2nd to the 31st `record_attempt`; every lease,
//!   after it took effect);
//! - [`Seeded`]: calls that fail at random, at the odds of its rules, from
//!   a seeded generator shared by a run ([`Faults`]), counted by kind;
//! - [`Count`]: fails nothing, counts the calls made, by op;
//! - the simulation's own (`webhooks_sim::chaos`): a crash, a throttle or
//!   a yield drawn at each side of every call, per Lambda invocation.

mod count;
mod ports;
mod script;
mod seeded;
mod switch;

pub use count::Count;
pub use ports::Faulty;
pub use script::Script;
pub use seeded::{rng_for, Calls, Faults, Rng, Seeded};
pub use switch::Switch;

use std::future::Future;
use std::sync::Arc;
use webhooks_ports::{Adapters, Result};

/// One call of a port, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    // EventStore
    PutEvent,
    GetEvent,
    GetEvents,
    ListEvents,
    EventLogPage,
    // EndpointStore and the three small ports it is made of
    GetEndpoint,
    ListSubscribers,
    DisableEndpoint,
    SetFailingSince,
    CreateEndpoint,
    ListEndpoints,
    EndpointSummary,
    UpdateEndpoint,
    DeleteEndpoint,
    // DeliveryStore
    CreateDelivery,
    GetDelivery,
    GetDeliveries,
    Lease,
    RecordAttempt,
    Transition,
    HandOver,
    Overdue,
    MarkRequeued,
    Postpone,
    ListDeliveries,
    NoteQueued,
    ConfirmNote,
    GetNoted,
    GetNotes,
    // CursorStore
    GetCursor,
    AdvanceCursor,
    EnsureCursor,
    ListCursors,
    GetResumeAt,
    SetResumeAt,
    // EndpointStatsStore
    AddStats,
    ReadStats,
    // Queue
    Send,
    Receive,
    ChangeVisibility,
    Delete,
}

impl Op {
    /// Whether the call changes what the port holds: a write, a send, a
    /// delete, and a receive (it hides the messages it takes).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Op::GetEvent
                | Op::GetEvents
                | Op::ListEvents
                | Op::EventLogPage
                | Op::GetEndpoint
                | Op::ListSubscribers
                | Op::ListEndpoints
                | Op::EndpointSummary
                | Op::GetDelivery
                | Op::GetDeliveries
                | Op::Overdue
                | Op::ListDeliveries
                | Op::GetNoted
                | Op::GetNotes
                | Op::GetCursor
                | Op::ListCursors
                | Op::GetResumeAt
                | Op::ReadStats
        )
    }
}

/// Which side of a call a fault is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Before the call reaches the port: it fails and nothing is done.
    Before,
    /// After it took effect: the caller is told it failed.
    After,
}

/// What happens at each side of a port call.
pub trait Policy: Send + Sync + 'static {
    /// Before `op` reaches the port: an error fails the call and nothing
    /// is done; a future that never ends is a caller that dies there.
    fn before(&self, op: Op) -> impl Future<Output = Result<()>> + Send;

    /// After `op` returned (`ok`: without an error): an error here is what
    /// the caller is told instead of the answer, whatever the call did.
    fn after(&self, op: Op, ok: bool) -> impl Future<Output = Result<()>> + Send;

    /// Which of a send's `count` messages the queue refuses (their indexes,
    /// ascending); the others are sent. None, unless a policy says so.
    fn refuse(&self, count: usize) -> Vec<usize> {
        let _ = count;
        Vec::new()
    }
}

/// The same adapters with `policy` at every call of their stores and
/// queues. The idempotency and inbound stores, which only the API's and the
/// inbound function's edges use, are left as they are.
pub fn wrap<P: Policy>(adapters: &Adapters, policy: Arc<P>) -> Adapters {
    Adapters {
        events: Arc::new(Faulty::new(adapters.events.clone(), policy.clone())),
        endpoints: Arc::new(Faulty::new(adapters.endpoints.clone(), policy.clone())),
        deliveries: Arc::new(Faulty::new(adapters.deliveries.clone(), policy.clone())),
        cursors: Arc::new(Faulty::new(adapters.cursors.clone(), policy.clone())),
        idempotency: adapters.idempotency.clone(),
        inbound: adapters.inbound.clone(),
        queue: Arc::new(Faulty::new(adapters.queue.clone(), policy.clone())),
        dead_letters: Arc::new(Faulty::new(adapters.dead_letters.clone(), policy.clone())),
        stats: Arc::new(Faulty::new(adapters.stats.clone(), policy)),
        clock: adapters.clock.clone(),
    }
}
