//! Nothing is lost: thousands of deliveries through the real pipeline (the
//! stream mapping and the fan-out handler, the queue mapping and the sender
//! handler, the sweeper) while the receiver fails at random and the suite
//! breaks everything it can: the sender dies mid-batch, the fan-out dies
//! between creating deliveries and queueing them, stream batches arrive
//! twice, SQS calls and delivery-store writes fail.
//!
//! Afterwards every (endpoint, event) pair must be accounted for: exactly one
//! delivery record, `delivered` (and the receiver did accept it) or
//! `dead_lettered` with its last error. The figures (deliveries, faults by
//! kind, lost, duplicates) are printed (`--nocapture`) and written to
//! `target/fault-injection.json`.
//!
//! Runs on the memory backend (3000 deliveries) and on moto (180).
//!
//! - `scenarios`: the fault rates, the scenarios and the tests.
//! - `harness`: the faulty system (the backend's adapters wrapped in the
//!   shared fault layer, `webhooks_faults`, at the scenario's odds), the
//!   loops that drive it, and the accounting of what came out.
//! - `kinds`: every fault a run injects, by name.
//! - `figures`: what a run found, printed, saved and checked.

mod figures;
mod harness;
mod kinds;
mod scenarios;
