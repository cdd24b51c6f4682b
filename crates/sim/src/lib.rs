//! A deterministic simulation of the whole pipeline, in the spirit of
//! FoundationDB's and TigerBeetle's: one seed determines everything, the
//! clock is virtual (tokio's paused clock, which the memory queue and the
//! stores read through the `Clock` port), so days of retries pass in
//! milliseconds. It drives the real fan-out, sender, sweeper (with its
//! reconciler) and management API through the ports; only AWS's side is
//! stood in for: the memory adapters (as strict as DynamoDB and SQS), the
//! stream's and the queue's event source mappings, and the receivers.
//!
//! - [`chaos`]: crashes, failures and interleavings at every port call;
//! - [`receivers`]: endpoints that answer 2xx, 4xx, 410, 429 with
//!   `Retry-After`, time out or reset, some down for days;
//! - [`world`]: orgs (quiet ones, noisy ones, random ones), endpoints,
//!   publishers, the drivers and the API calls;
//! - [`tap`]: the ports as each Lambda sees them, in DynamoDB's whole
//!   seconds, noting what the pipeline recorded;
//! - [`ledger`]: what happened to each delivery, message by message;
//! - [`lateness`]: each wait for an attempt explained by what happened in
//!   it;
//! - [`coverage`]: how often each rare path ran;
//! - [`outage`]: the deliveries table throttled for a while;
//! - [`check`]: the invariants.

pub mod chaos;
pub mod check;
pub mod coverage;
pub mod lateness;
pub mod ledger;
pub mod outage;
pub mod receivers;
pub mod tap;
pub mod world;

use coverage::Counts;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use webhooks_domain::Delivery;

/// What an org is in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Healthy endpoints that answer quickly and a small share of the
    /// events: the tenant the fair queue and the slow lane are for. Its
    /// first attempts are held to a bound.
    Quiet,
    /// A noisy neighbour: one of its endpoints never answers (every POST
    /// takes the whole request timeout), and it publishes a large share of
    /// the events, so hundreds of deliveries wait for that endpoint.
    DeadEndpoint,
    /// A noisy neighbour: many endpoints subscribed to everything, each
    /// answering 2xx in about a second, and a large share of the events.
    BigTenant,
    /// Endpoints of random behaviours.
    Other,
    /// One of the many small orgs of a crowded world: one healthy
    /// endpoint and a few events each.
    Crowd,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Quiet => "quiet",
            Role::DeadEndpoint => "dead-endpoint",
            Role::BigTenant => "big-tenant",
            Role::Other => "other",
            Role::Crowd => "crowd",
        }
    }
}

/// First-attempt lateness of a set of deliveries, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    ms: Vec<u64>,
    sorted: bool,
}

impl Lateness {
    pub fn add(&mut self, late: chrono::Duration) {
        self.ms
            .push(u64::try_from(late.num_milliseconds()).unwrap_or(0));
        self.sorted = false;
    }

    pub fn merge(&mut self, other: &Lateness) {
        self.ms.extend_from_slice(&other.ms);
        self.sorted = false;
    }

    pub fn count(&self) -> usize {
        self.ms.len()
    }

    /// The `p`-th percentile (0 to 100), in seconds.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if !self.sorted {
            self.ms.sort_unstable();
            self.sorted = true;
        }
        if self.ms.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1] as f64 / 1000.0
    }

    /// `n=… p50 … p99 … max …` (seconds).
    pub fn summary(&mut self) -> String {
        format!(
            "n={} p50 {:.1} s p99 {:.1} s max {:.1} s",
            self.count(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0)
        )
    }
}

/// What one seed's run came to.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub events: usize,
    pub deliveries: usize,
    /// POSTs the receivers got (attempts, crashed ones included).
    pub posts: u64,
    pub by_status: BTreeMap<String, usize>,
    pub virtual_days: f64,
    pub invocations: u64,
    /// Invocations that crashed or timed out.
    pub crashed: u64,
    /// Stream records never handed to the fan-out (aged out, given up).
    pub stream_dropped: usize,
    pub violations: Vec<String>,
    /// First-attempt lateness, by the role of the delivery's org.
    pub lateness: BTreeMap<Role, Lateness>,
    /// The same, of the quiet orgs' deliveries that nothing held up: no
    /// receive left their message queued, no stream batch waited.
    pub quiet_fault_free: Lateness,
    /// The most deliveries of the dead endpoint pending at once.
    pub dead_backlog: usize,
    /// The longest step of the simulation (every invocation at once).
    pub longest_step: std::time::Duration,
    /// A hash of every delivery's final state: the same seed gives the
    /// same digest.
    pub digest: u64,
    /// How late each retry came after the time it was scheduled for.
    pub retry_lateness: Lateness,
    /// How late each first attempt came after its first message.
    pub first_lateness: Lateness,
    /// How often each rare path ran.
    pub coverage: Counts,
    /// What kind of world it was: `crowded` (many small orgs against the
    /// sweeper's time limit), `overloaded` (crowded so that every sweep
    /// runs out of time), `outage` (its deliveries table throttled for a
    /// while).
    pub kind: Vec<&'static str>,
}

/// Runs the world of `seed` with about `target` deliveries to its end, on a
/// runtime of its own whose clock is paused.
pub fn run(seed: u64, target: usize) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let failed = |what: String| Report {
        seed,
        events: 0,
        deliveries: 0,
        posts: 0,
        by_status: BTreeMap::new(),
        virtual_days: 0.0,
        invocations: 0,
        crashed: 0,
        stream_dropped: 0,
        violations: vec![what],
        lateness: BTreeMap::new(),
        quiet_fault_free: Lateness::default(),
        dead_backlog: 0,
        longest_step: std::time::Duration::ZERO,
        digest: 0,
        retry_lateness: Lateness::default(),
        first_lateness: Lateness::default(),
        coverage: Counts::default(),
        kind: Vec::new(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => return failed(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        match world::World::new(seed, target).await {
            Ok(w) => w.run().await,
            Err(e) => failed(e.to_string()),
        }
    })
}

/// A hash of the deliveries' final states, their attempts included.
pub fn digest(deliveries: &[Delivery]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for d in deliveries {
        d.id.hash(&mut h);
        d.status.as_str().hash(&mut h);
        d.attempt_count.hash(&mut h);
        for a in &d.attempts {
            a.number.hash(&mut h);
            a.at.timestamp_micros().hash(&mut h);
            a.status_code.hash(&mut h);
            a.error.hash(&mut h);
        }
    }
    h.finish()
}

impl Report {
    /// Quiet orgs' first attempts measured.
    pub fn quiet_first_attempts(&self) -> usize {
        self.lateness.get(&Role::Quiet).map_or(0, Lateness::count)
    }

    /// `quiet n=… p50 …; quiet without faults …; dead-endpoint …` for
    /// every role measured.
    pub fn lateness_summary(&self) -> String {
        summarize(self.lateness.clone(), self.quiet_fault_free.clone())
    }
}

/// One line of each role's lateness figures, the quiet orgs' fault-free
/// ones after theirs.
pub fn summarize(mut lateness: BTreeMap<Role, Lateness>, mut quiet_fault_free: Lateness) -> String {
    let mut parts = Vec::new();
    for (role, l) in &mut lateness {
        parts.push(format!("{} {}", role.as_str(), l.summary()));
        if *role == Role::Quiet {
            parts.push(format!(
                "quiet without faults {}",
                quiet_fault_free.summary()
            ));
        }
    }
    parts.join("; ")
}

/// Every report's lateness figures together: by role, and the quiet
/// orgs' fault-free ones.
pub fn lateness_of(reports: &[Report]) -> (BTreeMap<Role, Lateness>, Lateness) {
    let mut all: BTreeMap<Role, Lateness> = BTreeMap::new();
    let mut fault_free = Lateness::default();
    for r in reports {
        for (role, l) in &r.lateness {
            all.entry(*role).or_default().merge(l);
        }
        fault_free.merge(&r.quiet_fault_free);
    }
    (all, fault_free)
}

/// The coverage counts of every report, summed.
pub fn coverage_of(reports: &[Report]) -> Counts {
    let mut all = Counts::default();
    for r in reports {
        all.merge(&r.coverage);
    }
    all
}

/// Every report's retry lateness, together.
pub fn retry_lateness_of(reports: &[Report]) -> Lateness {
    let mut all = Lateness::default();
    for r in reports {
        all.merge(&r.retry_lateness);
    }
    all
}

/// The one command that replays a seed.
pub fn replay_command(seed: u64, target: usize) -> String {
    format!("cargo run --release -p webhooks-sim -- --seed {seed} --deliveries {target}")
}

/// Runs seeds `from..from + count` on `threads` threads, calling `each`
/// with every report as it comes; the reports in seed order.
pub fn run_seeds(
    from: u64,
    count: u64,
    target: usize,
    threads: usize,
    each: impl Fn(&Report) + Sync,
) -> Vec<Report> {
    let next = std::sync::atomic::AtomicU64::new(from);
    let reports = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if seed >= from + count {
                    break;
                }
                let report = run(seed, target);
                each(&report);
                reports
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(report);
            });
        }
    });
    let mut reports = reports
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reports.sort_by_key(|r| r.seed);
    reports
}
