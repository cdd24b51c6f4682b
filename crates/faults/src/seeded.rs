//! Seeded random faults: a run's generator, switch and tally
//! ([`Faults`]), and the policy ([`Seeded`]) that draws from them at the
//! odds of its rules.

use crate::{Op, Policy, Side};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use webhooks_ports::{BackendError, Result};

/// SplitMix64: small, fast, and the same sequence for the same seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits, the precision of an f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator seeded by `seed` and some strings (FNV-1a, then SplitMix):
/// the same inputs always give the same sequence, whatever the timing.
pub fn rng_for(seed: u64, parts: &[&str]) -> Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    Rng::new(finalize(h))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run's faults: a switch, one seeded generator for every wrapper and
/// for the run's other faults (a receiver's answers, a crash), and a tally
/// by kind, so a run can report what it survived.
pub struct Faults {
    enabled: AtomicBool,
    rng: Mutex<Rng>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Faults {
    pub fn new(seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            enabled: AtomicBool::new(true),
            rng: Mutex::new(Rng::new(seed)),
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Turns injection on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Whether to inject now, with probability `p`; does not count.
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.enabled() && lock(&self.rng).chance(p)
    }

    /// `true` (and counted as `kind`) with probability `p`.
    pub fn roll(&self, kind: &'static str, p: f64) -> bool {
        let hit = self.chance(p);
        if hit {
            self.record(kind);
        }
        hit
    }

    /// A number in `0..n` from the run's generator.
    pub fn below(&self, n: u64) -> u64 {
        lock(&self.rng).below(n)
    }

    pub fn record(&self, kind: &'static str) {
        self.record_n(kind, 1);
    }

    pub fn record_n(&self, kind: &'static str, n: u64) {
        if n > 0 {
            *lock(&self.counts).entry(kind).or_insert(0) += n;
        }
    }

    /// Every count so far, by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.counts).clone()
    }

    pub fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}

/// The calls a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    Only(Op),
    /// Every call that changes what the port holds ([`Op::writes`]).
    Writes,
    /// Every other call.
    Reads,
}

impl Calls {
    fn cover(self, op: Op) -> bool {
        match self {
            Calls::Only(o) => o == op,
            Calls::Writes => op.writes(),
            Calls::Reads => !op.writes(),
        }
    }
}

impl From<Op> for Calls {
    fn from(op: Op) -> Calls {
        Calls::Only(op)
    }
}

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It answers an error.
    Fail,
    /// It never returns: the caller dies there (its invocation times out).
    Hang,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    calls: Calls,
    side: Side,
    fault: Fault,
    odds: f64,
    kind: &'static str,
}

/// Calls that fail at random: each rule is drawn, in the order given, at
/// each call it covers, from the run's [`Faults`] (so nothing happens while
/// they are switched off), and counted by its kind when it hits.
pub struct Seeded {
    faults: Arc<Faults>,
    rules: Vec<Rule>,
    /// Each message of a send is refused with these odds.
    refuse: Option<(f64, &'static str)>,
}

impl Seeded {
    pub fn new(faults: Arc<Faults>) -> Seeded {
        Seeded {
            faults,
            rules: Vec::new(),
            refuse: None,
        }
    }

    /// With odds `odds`, the `calls` fail before they reach the port:
    /// nothing is done.
    pub fn fail(self, calls: impl Into<Calls>, odds: f64, kind: &'static str) -> Self {
        self.rule(calls.into(), Side::Before, Fault::Fail, odds, kind)
    }

    /// With odds `odds`, the `calls` never return: the caller dies there,
    /// before the port has them (its invocation times out).
    pub fn hang(self, calls: impl Into<Calls>, odds: f64, kind: &'static str) -> Self {
        self.rule(calls.into(), Side::Before, Fault::Hang, odds, kind)
    }

    /// With odds `odds`, the `calls` that succeeded answer an error: they
    /// took effect and the caller is told they did not.
    pub fn fail_after(self, calls: impl Into<Calls>, odds: f64, kind: &'static str) -> Self {
        self.rule(calls.into(), Side::After, Fault::Fail, odds, kind)
    }

    /// With odds `odds` each message of a send is refused by the queue
    /// (counted per message).
    pub fn refusing(mut self, odds: f64, kind: &'static str) -> Self {
        self.refuse = Some((odds, kind));
        self
    }

    fn rule(
        mut self,
        calls: Calls,
        side: Side,
        fault: Fault,
        odds: f64,
        kind: &'static str,
    ) -> Self {
        self.rules.push(Rule {
            calls,
            side,
            fault,
            odds,
            kind,
        });
        self
    }

    /// The first rule of `side` covering `op` that hits.
    fn draw(&self, op: Op, side: Side) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.side == side && r.calls.cover(op))
            .find(|r| self.faults.roll(r.kind, r.odds))
    }
}

async fn strike(rule: Option<&Rule>) -> Result<()> {
    match rule {
        None => Ok(()),
        Some(r) if r.fault == Fault::Hang => std::future::pending().await,
        Some(r) => Err(BackendError::Transient(format!("injected: {}", r.kind))),
    }
}

impl Policy for Seeded {
    async fn before(&self, op: Op) -> Result<()> {
        strike(self.draw(op, Side::Before)).await
    }

    async fn after(&self, op: Op, ok: bool) -> Result<()> {
        if !ok {
            return Ok(());
        }
        strike(self.draw(op, Side::After)).await
    }

    fn refuse(&self, count: usize) -> Vec<usize> {
        let Some((odds, kind)) = self.refuse else {
            return Vec::new();
        };
        let refused: Vec<usize> = (0..count).filter(|_| self.faults.chance(odds)).collect();
        self.faults.record_n(kind, refused.len() as u64);
        refused
    }
}
