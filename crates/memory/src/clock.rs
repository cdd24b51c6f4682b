//! The clock a memory store reads: the system's, unless a simulation sets a
//! virtual one.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use webhooks_ports::{Clock, SystemClock};

/// A store's clock, the system clock by default.
#[derive(Clone)]
pub struct StoreClock(Arc<dyn Clock>);

impl StoreClock {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        StoreClock(clock)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

impl Default for StoreClock {
    fn default() -> Self {
        StoreClock(SystemClock::shared())
    }
}
