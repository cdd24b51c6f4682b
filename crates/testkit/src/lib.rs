//! Helpers for tests that use real components: a webhook receiver on
//! 127.0.0.1 that records what it gets and answers as told (or, for the
//! benchmarks, only counts, in a process of its own), signature checks
//! written from the specifications (not from the code under test), and the
//! AWS emulator's configuration, and the queue port's contract suite.

pub mod aws;
pub mod clock;
pub mod queue_contract;
pub mod receiver;
pub mod signatures;

pub use receiver::{Exchange, Received, Receiver, Reply};
