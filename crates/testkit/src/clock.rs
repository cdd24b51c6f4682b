//! A virtual clock for tests and the simulation: wall time that moves with
//! tokio's clock, so a test that pauses tokio's time (`start_paused`) and
//! advances it moves the stores' timestamps and the memory queue's
//! visibility together, by days if it likes, in no time.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::time::Instant;
use webhooks_ports::Clock;

/// `epoch` plus the tokio time elapsed since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: DateTime<Utc>,
    origin: Instant,
}

impl TokioClock {
    /// A clock that reads `epoch` now. Call it inside the runtime whose
    /// time it follows.
    pub fn starting_at(epoch: DateTime<Utc>) -> Arc<Self> {
        Arc::new(TokioClock {
            epoch,
            origin: Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed()).unwrap_or_default();
        self.epoch + elapsed
    }
}
