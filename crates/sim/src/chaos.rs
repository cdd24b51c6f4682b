//! Crashes, failures and interleavings at every port call: the
//! simulation's policy on the shared fault layer (`webhooks_faults`). Each
//! Lambda invocation of the simulation runs inside an [`Invocation`] scope;
//! every store and queue call it makes goes through [`gate`] before and
//! after the real call, which may yield to the other invocations (so
//! concurrent ones interleave at every step), fail the call as a throttle
//! or timeout would (after the write, too: a timeout after commit), or
//! crash the invocation there: it never runs another line, as when Lambda
//! times out or the process dies between two steps.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use webhooks_faults::{Op, Policy};
use webhooks_ports::{Adapters, BackendError, Result};

tokio::task_local! {
    static INVOCATION: Arc<Invocation>;
}

/// How hostile one invocation's port calls are.
#[derive(Debug, Clone, Copy)]
pub struct Hostility {
    /// Chance that a call yields to the other invocations first.
    pub yield_rate: f64,
    /// Chance that a call fails (before or after taking effect).
    pub fail_rate: f64,
    /// Chance that the invocation dies at a call (before or after it).
    pub crash_rate: f64,
}

impl Hostility {
    /// No chaos at all.
    pub const NONE: Hostility = Hostility {
        yield_rate: 0.0,
        fail_rate: 0.0,
        crash_rate: 0.0,
    };
}

/// One Lambda invocation, as the chaos layer sees it.
pub struct Invocation {
    rng: Mutex<StdRng>,
    hostility: Hostility,
    crashed: Notify,
}

impl Invocation {
    pub fn new(seed: u64, hostility: Hostility) -> Arc<Self> {
        Arc::new(Invocation {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hostility,
            crashed: Notify::new(),
        })
    }

    fn draw(&self) -> (bool, bool, bool) {
        let h = self.hostility;
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        (
            rng.random_bool(h.yield_rate),
            rng.random_bool(h.fail_rate),
            rng.random_bool(h.crash_rate),
        )
    }
}

/// Runs `work` as the invocation `ctx`: its output, or `None` if it
/// crashed (the work is dropped where it stood), or ran past `timeout`.
pub async fn invoke<F: Future>(
    ctx: Arc<Invocation>,
    timeout: Duration,
    work: F,
) -> Option<F::Output> {
    let watch = ctx.clone();
    INVOCATION
        .scope(ctx, async move {
            tokio::select! {
                biased;
                () = watch.crashed.notified() => None,
                r = tokio::time::timeout(timeout, work) => r.ok(),
            }
        })
        .await
}

/// The chaos at one side of a port call.
pub async fn gate() -> Result<()> {
    let Ok(ctx) = INVOCATION.try_with(Arc::clone) else {
        return Ok(());
    };
    let (yields, fails, crashes) = ctx.draw();
    if yields {
        tokio::task::yield_now().await;
    }
    if crashes {
        ctx.crashed.notify_one();
        std::future::pending::<()>().await;
    }
    if fails {
        return Err(BackendError::Transient("simulated: throttled".into()));
    }
    Ok(())
}

/// The simulation's policy: the chaos of the invocation a call is made in,
/// at both sides of it.
struct Chaos;

impl Policy for Chaos {
    async fn before(&self, _: Op) -> Result<()> {
        gate().await
    }

    async fn after(&self, _: Op, _: bool) -> Result<()> {
        gate().await
    }
}

/// The same adapters with chaos around every store and queue call.
pub fn chaotic(adapters: &Adapters) -> Adapters {
    webhooks_faults::wrap(adapters, Arc::new(Chaos))
}
