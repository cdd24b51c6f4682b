//! Scripted faults: which calls fail, by op and by number.

use crate::{Op, Policy, Side};
use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};
use std::sync::{Mutex, PoisonError};
use webhooks_ports::{BackendError, Result};

#[derive(Debug, Clone)]
struct Scripted {
    op: Op,
    side: Side,
    /// The calls of `op` that fail, numbered from 1.
    calls: (Bound<u64>, Bound<u64>),
}

/// A script of failing calls: "the first three sends", "the 2nd to the
/// 31st `record_attempt`", "every lease, after it took effect". Calls are
/// numbered from 1 per op, at the side the fault is at.
#[derive(Debug, Default)]
pub struct Script {
    steps: Vec<Scripted>,
    made: Mutex<HashMap<(Op, Side), u64>>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// The `calls` of `op` (`..=3`: the first three; `..`: every one) fail
    /// before they reach the port: nothing is done.
    pub fn fail(self, op: Op, calls: impl RangeBounds<u64>) -> Script {
        self.step(op, Side::Before, calls)
    }

    /// The `calls` of `op` take effect, and the caller is told they failed
    /// (a throttle after the write, a lost response, a send SQS accepted).
    pub fn fail_after(self, op: Op, calls: impl RangeBounds<u64>) -> Script {
        self.step(op, Side::After, calls)
    }

    fn step(mut self, op: Op, side: Side, calls: impl RangeBounds<u64>) -> Script {
        self.steps.push(Scripted {
            op,
            side,
            calls: (calls.start_bound().cloned(), calls.end_bound().cloned()),
        });
        self
    }

    /// Counts this call of `op` at `side`: an error if the script fails it.
    fn call(&self, op: Op, side: Side) -> Result<()> {
        let n = {
            let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            let n = made.entry((op, side)).or_insert(0);
            *n += 1;
            *n
        };
        let scripted = self
            .steps
            .iter()
            .any(|s| s.op == op && s.side == side && s.calls.contains(&n));
        if scripted {
            return Err(BackendError::Transient(format!(
                "injected: call {n} of {op:?} failed"
            )));
        }
        Ok(())
    }
}

impl Policy for Script {
    async fn before(&self, op: Op) -> Result<()> {
        self.call(op, Side::Before)
    }

    async fn after(&self, op: Op, ok: bool) -> Result<()> {
        let r = self.call(op, Side::After);
        // A call that failed by itself is not failed again.
        if ok {
            r
        } else {
            Ok(())
        }
    }
}
