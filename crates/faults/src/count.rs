//! A policy that fails nothing and counts every call that took effect, by
//! op: how many writes a path makes ("a first attempt makes one write").

use crate::{Op, Policy};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use webhooks_ports::Result;

/// Counts the calls that returned without an error, by op.
#[derive(Debug, Default)]
pub struct Count {
    made: Mutex<HashMap<Op, u64>>,
}

impl Count {
    pub fn new() -> Count {
        Count::default()
    }

    /// Calls of `op` made so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.lock().get(&op).copied().unwrap_or(0)
    }

    /// Calls made so far that change what a port holds ([`Op::writes`]).
    pub fn writes(&self) -> u64 {
        self.lock()
            .iter()
            .filter(|(op, _)| op.writes())
            .map(|(_, n)| n)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Op, u64>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Policy for Count {
    async fn before(&self, _: Op) -> Result<()> {
        Ok(())
    }

    async fn after(&self, op: Op, ok: bool) -> Result<()> {
        if ok {
            *self.lock().entry(op).or_insert(0) += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_counts_what_took_effect_and_which_were_writes() {
        let count = Count::new();
        count.after(Op::Lease, true).await.unwrap();
        count.after(Op::RecordAttempt, true).await.unwrap();
        count.after(Op::RecordAttempt, false).await.unwrap();
        count.after(Op::GetDeliveries, true).await.unwrap();
        assert_eq!(count.calls(Op::RecordAttempt), 1);
        assert_eq!(count.calls(Op::Lease), 1);
        assert_eq!(count.writes(), 2);
    }
}
