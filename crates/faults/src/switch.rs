//! A switch: some ops fail while it is on (a table throttled, a queue down,
//! for as long as a test says), and work again once it is off.

use crate::{Op, Policy};
use std::sync::atomic::{AtomicBool, Ordering};
use webhooks_ports::{BackendError, Result};

/// Fails `ops` before they reach the port while on; off when made.
#[derive(Debug)]
pub struct Switch {
    ops: Vec<Op>,
    on: AtomicBool,
}

impl Switch {
    pub fn new(ops: &[Op]) -> Switch {
        Switch {
            ops: ops.to_vec(),
            on: AtomicBool::new(false),
        }
    }

    /// From now on its ops fail (`true`) or work (`false`).
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }
}

impl Policy for Switch {
    async fn before(&self, op: Op) -> Result<()> {
        if self.on.load(Ordering::SeqCst) && self.ops.contains(&op) {
            return Err(BackendError::Transient(format!("injected: {op:?} is down")));
        }
        Ok(())
    }

    async fn after(&self, _: Op, _: bool) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn its_ops_fail_only_while_it_is_on() {
        let switch = Switch::new(&[Op::Send]);
        assert!(switch.before(Op::Send).await.is_ok());
        switch.set(true);
        assert!(switch.before(Op::Send).await.is_err());
        assert!(switch.before(Op::Receive).await.is_ok());
        switch.set(false);
        assert!(switch.before(Op::Send).await.is_ok());
    }
}
