//! Issue 21, tenant isolation: does one org's traffic slow another org's
//! deliveries? An in-process `webhooks dev` with its default settings
//! ([`Settings::dev_defaults`]: memory backend, 15 s request timeout,
//! default retry schedule and slow lane) serves two orgs:
//!
//! - **A**, healthy: one endpoint answering 204 at once; A publishes
//!   `a_events` events, one every `a_every`. Each event's latency is its
//!   receipt at A's receiver minus its publication (a microsecond stamp in
//!   the event's data, as in `noisy`).
//! - **B**, the neighbour, publishing just before A starts:
//!   - *dead endpoint*: one endpoint whose receiver never answers (it holds
//!     each request four times the sender's timeout); `dead_events` events,
//!     one delivery each.
//!   - *big tenant*: `big_endpoints` endpoints answering 204 after
//!     `big_delay`; `big_events` events, each fanned out to all of them.
//!
//! B's events are all accepted before A's first publication; the fan-out
//! reads the event stream in order, so B's deliveries are queued ahead of
//! A's. Each scenario also runs A alone (same pace, same endpoint) on a
//! fresh system, and every measurement is repeated `runs` times; the
//! figures are medians of the runs, with each run's value kept.
//!
//! A's figures: p50, p99 and max over all its events, and how many were
//! delivered within `a_limit` after its last publication (an event not
//! delivered by then counts as slower than any). B's drain: from B's
//! first publication until every B delivery had its first attempt (dead
//! endpoint: the dead receiver counts the distinct deliveries it was sent,
//! held ones included) or was `delivered` (big tenant: read through the
//! API's delivery listing once the receivers saw every delivery), within
//! `drain_limit`.

use crate::dev::{self, ApiClient};
use crate::measure::round;
use crate::noisy::{latency_ms, now_us};
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use webhooks::backend::{Settings, System, DEFAULT_JWT_SECRET};
use webhooks_testkit::{Receiver, Reply};

/// The healthy org.
const ORG_A: &str = "org-a";
/// The neighbour.
const ORG_B: &str = "org-b";
/// Publishing requests in flight while B publishes its backlog.
const B_PUBLISH_CONCURRENCY: usize = 16;
/// How often B's drain is read through the API (big tenant).
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// How often the waits look at what arrived.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// The two neighbours.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// B's one endpoint never answers.
    DeadEndpoint,
    /// B has many slow endpoints and fans every event out to all.
    BigTenant,
}

impl Scenario {
    fn key(self) -> &'static str {
        match self {
            Scenario::DeadEndpoint => "dead_endpoint",
            Scenario::BigTenant => "big_tenant",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::DeadEndpoint => "dead endpoint",
            Scenario::BigTenant => "big tenant",
        }
    }
}

/// `webhooks-bench isolation`. Every size flag defaults to the issue's
/// sizes, or to the smaller ones of `--quick`; a flag given wins over both.
#[derive(clap::Args, Clone, Debug)]
pub struct IsolationArgs {
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [Scenario::DeadEndpoint, Scenario::BigTenant]
    )]
    scenarios: Vec<Scenario>,
    /// Smaller sizes, a check that runs in a few minutes in a debug build:
    /// 1 run, A 20 events, dead endpoint 100 events, big tenant 10
    /// endpoints x 40 events, A's limit 60 s, drain limit 180 s.
    #[arg(long)]
    quick: bool,
    /// Runs of each measurement (alone, with B); medians are reported
    /// [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Events A publishes [default: 60].
    #[arg(long)]
    a_events: Option<usize>,
    /// Milliseconds between two of A's publications [default: 50].
    #[arg(long)]
    a_every_ms: Option<u64>,
    /// Seconds after A's last publication within which its deliveries
    /// count as delivered [default: 120].
    #[arg(long)]
    a_limit_secs: Option<u64>,
    /// Events (one delivery each) B queues for its dead endpoint
    /// [default: 300].
    #[arg(long)]
    dead_events: Option<usize>,
    /// B's endpoints in the big tenant scenario [default: 50].
    #[arg(long)]
    big_endpoints: Option<usize>,
    /// Events B publishes in the big tenant scenario, each to every one of
    /// its endpoints [default: 100].
    #[arg(long)]
    big_events: Option<usize>,
    /// Milliseconds each big tenant endpoint takes to answer 204
    /// [default: 1000].
    #[arg(long)]
    big_delay_ms: Option<u64>,
    /// Seconds from B's first publication after which B's drain is
    /// reported as not reached [default: 240].
    #[arg(long)]
    drain_limit_secs: Option<u64>,
}

/// The sizes of one benchmark run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    runs: usize,
    a_events: usize,
    a_every_ms: u64,
    a_limit_secs: u64,
    dead_events: usize,
    big_endpoints: usize,
    big_events: usize,
    big_delay_ms: u64,
    drain_limit_secs: u64,
}

/// Issue 21's sizes.
const FULL: Sizes = Sizes {
    runs: 3,
    a_events: 60,
    a_every_ms: 50,
    a_limit_secs: 120,
    dead_events: 300,
    big_endpoints: 50,
    big_events: 100,
    big_delay_ms: 1000,
    // The dead endpoint's 300 first attempts take about 38 min at the slow
    // lane's pace (2 at a time, 15 s each): the table gives how many were
    // made by then instead of waiting for all of them three times.
    drain_limit_secs: 240,
};

/// `--quick`.
const QUICK: Sizes = Sizes {
    runs: 1,
    a_events: 20,
    a_every_ms: 50,
    a_limit_secs: 60,
    dead_events: 100,
    big_endpoints: 10,
    big_events: 40,
    big_delay_ms: 1000,
    drain_limit_secs: 180,
};

impl IsolationArgs {
    /// The options of `webhooks-bench all`: the issue's sizes, `runs` runs.
    pub fn full(runs: usize) -> Self {
        IsolationArgs {
            scenarios: vec![Scenario::DeadEndpoint, Scenario::BigTenant],
            quick: false,
            runs: Some(runs),
            a_events: None,
            a_every_ms: None,
            a_limit_secs: None,
            dead_events: None,
            big_endpoints: None,
            big_events: None,
            big_delay_ms: None,
            drain_limit_secs: None,
        }
    }

    pub fn options(&self) -> Options {
        let d = if self.quick { QUICK } else { FULL };
        Options {
            scenarios: self.scenarios.clone(),
            runs: self.runs.unwrap_or(d.runs).max(1),
            a_events: self.a_events.unwrap_or(d.a_events).max(1),
            a_every: Duration::from_millis(self.a_every_ms.unwrap_or(d.a_every_ms)),
            a_limit: Duration::from_secs(self.a_limit_secs.unwrap_or(d.a_limit_secs)),
            dead_events: self.dead_events.unwrap_or(d.dead_events).max(1),
            big_endpoints: self.big_endpoints.unwrap_or(d.big_endpoints).max(1),
            big_events: self.big_events.unwrap_or(d.big_events).max(1),
            big_delay: Duration::from_millis(self.big_delay_ms.unwrap_or(d.big_delay_ms)),
            drain_limit: Duration::from_secs(self.drain_limit_secs.unwrap_or(d.drain_limit_secs)),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub runs: usize,
    pub a_events: usize,
    pub a_every: Duration,
    /// After A's last publication.
    pub a_limit: Duration,
    pub dead_events: usize,
    pub big_endpoints: usize,
    pub big_events: usize,
    pub big_delay: Duration,
    /// After B's first publication.
    pub drain_limit: Duration,
}

impl Options {
    /// B's deliveries in `scenario`.
    fn b_deliveries(&self, scenario: Scenario) -> usize {
        match scenario {
            Scenario::DeadEndpoint => self.dead_events,
            Scenario::BigTenant => self.big_events * self.big_endpoints,
        }
    }
}

/// The settings every pass runs with: `webhooks dev`'s defaults.
fn settings() -> Settings {
    Settings::dev_defaults()
}

/// A's figures of one pass: each event's latency in milliseconds, `None`
/// if it was not delivered within the limit.
#[derive(Debug, Clone)]
struct AFigures {
    /// Sorted, the undelivered (`None`) last.
    latencies: Vec<Option<f64>>,
}

impl AFigures {
    fn new(received: &HashMap<String, f64>, events: usize) -> Self {
        let mut delivered: Vec<f64> = received.values().copied().collect();
        delivered.sort_by(f64::total_cmp);
        let mut latencies: Vec<Option<f64>> = delivered.into_iter().map(Some).collect();
        latencies.resize(events.max(latencies.len()), None);
        AFigures { latencies }
    }

    /// The nearest rank at or below: `sorted[(n - 1) * p / 100]`.
    fn percentile(&self, p: usize) -> Option<f64> {
        let n = self.latencies.len();
        self.latencies
            .get(n.saturating_sub(1) * p / 100)
            .copied()
            .flatten()
    }

    fn max(&self) -> Option<f64> {
        self.latencies.last().copied().flatten()
    }

    fn delivered(&self) -> usize {
        self.latencies.iter().filter(|l| l.is_some()).count()
    }

    fn json(&self) -> Value {
        json!({
            "p50_ms": ms_json(self.percentile(50)),
            "p99_ms": ms_json(self.percentile(99)),
            "max_ms": ms_json(self.max()),
            "delivered": self.delivered(),
        })
    }
}

/// B's drain in one pass.
#[derive(Debug, Clone)]
struct BFigures {
    /// Seconds from B's first publication to its drain; `None`: not within
    /// the limit.
    drain_s: Option<f64>,
    /// Seconds until every B delivery had had its first attempt.
    first_attempts_s: Option<f64>,
    /// Distinct B deliveries whose request reached B's receivers.
    attempted: usize,
    /// Requests B's receivers got (retries included).
    requests: usize,
    /// B's deliveries `delivered` at the end (big tenant).
    delivered: Option<usize>,
}

impl BFigures {
    fn json(&self) -> Value {
        json!({
            "drain_s": self.drain_s.map(|s| round(s, 1)),
            "first_attempts_s": self.first_attempts_s.map(|s| round(s, 1)),
            "deliveries_attempted": self.attempted,
            "requests": self.requests,
            "deliveries_delivered": self.delivered,
        })
    }
}

/// One pass: A's figures, and B's if B was there.
struct PassFigures {
    a: AFigures,
    b: Option<BFigures>,
}

/// Runs every scenario and returns the figures as JSON (the `isolation`
/// section of `webhooks-bench all`).
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let s = settings();
    let cap = s
        .slow_lane_cap
        .map_or_else(|| "off".to_string(), |c| c.to_string());
    println!(
        "isolation: webhooks dev defaults: memory backend, request timeout {:?}, retry schedule {}, slow lane cap {cap}, {} pollers x batches of {}",
        s.request_timeout,
        s.schedule,
        dev::POLLERS,
        dev::BATCH,
    );
    let mut out = json!({
        "settings": {
            "backend": "memory",
            "request_timeout_s": s.request_timeout.as_secs_f64(),
            "retry_schedule": s.schedule.to_string(),
            "slow_lane_cap": s.slow_lane_cap,
            "pollers": dev::POLLERS,
            "batch": dev::BATCH,
        },
        "runs": opts.runs,
        "a": {
            "endpoints": 1,
            "events": opts.a_events,
            "every_ms": opts.a_every.as_millis(),
            "limit_s_after_last_publish": opts.a_limit.as_secs(),
        },
        "drain_limit_s": opts.drain_limit.as_secs(),
        "percentiles": "nearest rank at or below, sorted[(n - 1) * p / 100], over all of A's events; one not delivered within the limit counts as slower than any (null)",
    });
    let mut rows = Vec::new();
    for &scenario in &opts.scenarios {
        let mut alone = Vec::with_capacity(opts.runs);
        let mut with_b = Vec::with_capacity(opts.runs);
        for run in 1..=opts.runs {
            let a = pass(opts, scenario, false).await?.a;
            println!(
                "isolation: {} run {run}/{}: A alone: {}",
                scenario.label(),
                opts.runs,
                a_line(&a, opts.a_events)
            );
            alone.push(a);
            let p = pass(opts, scenario, true).await?;
            let b = p.b.context("a pass with B has B's figures")?;
            println!(
                "isolation: {} run {run}/{}: A with B: {}; B: {}",
                scenario.label(),
                opts.runs,
                a_line(&p.a, opts.a_events),
                b_line(&b, opts.drain_limit)
            );
            with_b.push((p.a, b));
        }
        let summary = Summary::new(&alone, &with_b);
        out[scenario.key()] = scenario_json(opts, scenario, &summary, &alone, &with_b);
        rows.push((scenario, summary));
    }
    println!("{}", table(opts, &rows));
    Ok(out)
}

/// The medians of one scenario's runs.
struct Summary {
    alone: Medians,
    with_b: Medians,
    drain_s: Option<f64>,
    /// B deliveries that had their first attempt (median over runs).
    attempted: Option<f64>,
    each: Each,
}

/// The medians of A's figures over runs.
struct Medians {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    delivered: Option<f64>,
}

impl Medians {
    fn new<'a>(runs: impl Iterator<Item = &'a AFigures> + Clone) -> Self {
        Medians {
            p50: median(runs.clone().map(|a| a.percentile(50))),
            p99: median(runs.clone().map(|a| a.percentile(99))),
            max: median(runs.clone().map(AFigures::max)),
            delivered: median(runs.map(|a| Some(a.delivered() as f64))),
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50_ms": ms_json(self.p50),
            "p99_ms": ms_json(self.p99),
            "max_ms": ms_json(self.max),
            // A whole number unless the median of an even count of runs.
            "delivered": self.delivered.map(|d| if d.fract() == 0.0 { json!(d as u64) } else { json!(d) }),
        })
    }
}

/// Each run's values of the table's figures, for the lines under it.
struct Each {
    p99_alone: Vec<Option<f64>>,
    p99_with_b: Vec<Option<f64>>,
    drain_s: Vec<Option<f64>>,
}

impl Summary {
    fn new(alone: &[AFigures], with_b: &[(AFigures, BFigures)]) -> Self {
        Summary {
            alone: Medians::new(alone.iter()),
            with_b: Medians::new(with_b.iter().map(|(a, _)| a)),
            drain_s: median(with_b.iter().map(|(_, b)| b.drain_s)),
            attempted: median(with_b.iter().map(|(_, b)| Some(b.attempted as f64))),
            each: Each {
                p99_alone: alone.iter().map(|a| a.percentile(99)).collect(),
                p99_with_b: with_b.iter().map(|(a, _)| a.percentile(99)).collect(),
                drain_s: with_b.iter().map(|(_, b)| b.drain_s).collect(),
            },
        }
    }
}

fn scenario_json(
    opts: &Options,
    scenario: Scenario,
    summary: &Summary,
    alone: &[AFigures],
    with_b: &[(AFigures, BFigures)],
) -> Value {
    let b = match scenario {
        Scenario::DeadEndpoint => json!({
            "endpoints": 1,
            "events": opts.dead_events,
            "deliveries": opts.b_deliveries(scenario),
            "reply": format!("none: each request held {} s, past the sender's timeout", hold(&settings()).as_secs()),
            "drain": "B's first publication -> every B delivery's first attempt received by the dead receiver",
        }),
        Scenario::BigTenant => json!({
            "endpoints": opts.big_endpoints,
            "events": opts.big_events,
            "deliveries": opts.b_deliveries(scenario),
            "reply": format!("204 after {} ms", opts.big_delay.as_millis()),
            "drain": "B's first publication -> every B delivery `delivered` (API delivery listing, read every 250 ms once every delivery reached a receiver)",
        }),
    };
    let mut with = summary.with_b.json();
    with["b_drain_s"] = json!(summary.drain_s.map(|s| round(s, 1)));
    with["b_drained_runs"] = json!(with_b.iter().filter(|(_, b)| b.drain_s.is_some()).count());
    with["runs"] = with_b
        .iter()
        .map(|(a, b)| {
            let mut v = a.json();
            v["b"] = b.json();
            v
        })
        .collect();
    let mut al = summary.alone.json();
    al["runs"] = alone.iter().map(AFigures::json).collect();
    json!({
        "b": b,
        "alone": al,
        "with_b": with,
        "p50_ratio": ratio(summary.with_b.p50, summary.alone.p50).map(|r| round(r, 2)),
        "p99_ratio": ratio(summary.with_b.p99, summary.alone.p99).map(|r| round(r, 2)),
    })
}

/// The table of every scenario, and each run's values under it.
fn table(opts: &Options, rows: &[(Scenario, Summary)]) -> String {
    let limit = opts.a_limit;
    let mut t = format!(
        "\nisolation: medians of {} run(s); `> {} s`: not delivered within {} s of A's last publication\n\n",
        opts.runs,
        limit.as_secs(),
        limit.as_secs()
    );
    t.push_str("| scenario | A p50 alone | A p99 alone | A p50 with B | A p99 with B | ratio p50 / p99 | A delivered | B drain |\n");
    t.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (scenario, s) in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} / {} | {}/{} | {} |",
            scenario.label(),
            fmt_ms(s.alone.p50, limit),
            fmt_ms(s.alone.p99, limit),
            fmt_ms(s.with_b.p50, limit),
            fmt_ms(s.with_b.p99, limit),
            fmt_ratio(ratio(s.with_b.p50, s.alone.p50)),
            fmt_ratio(ratio(s.with_b.p99, s.alone.p99)),
            s.with_b.delivered.map_or("?".into(), |d| format!("{d}")),
            opts.a_events,
            match (s.drain_s, s.attempted) {
                (None, Some(n)) => format!(
                    "{} ({n:.0} of {} first attempts made)",
                    fmt_drain(None, opts.drain_limit),
                    opts.b_deliveries(*scenario)
                ),
                _ => fmt_drain(s.drain_s, opts.drain_limit),
            },
        );
    }
    t.push('\n');
    for (scenario, s) in rows {
        let list = |v: &[Option<f64>], f: &dyn Fn(Option<f64>) -> String| {
            v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            t,
            "{}: each run: A p99 alone {}; A p99 with B {}; B drain {}",
            scenario.label(),
            list(&s.each.p99_alone, &|x| fmt_ms(x, limit)),
            list(&s.each.p99_with_b, &|x| fmt_ms(x, limit)),
            list(&s.each.drain_s, &|x| fmt_drain(x, opts.drain_limit)),
        );
    }
    t
}

/// How long the dead receiver holds a request: well past the sender's
/// timeout, so every attempt times out.
fn hold(settings: &Settings) -> Duration {
    settings.request_timeout * 4
}

/// A's events received so far: latency by event id (the first receipt).
type Arrivals = Arc<Mutex<HashMap<String, f64>>>;

/// The distinct B deliveries that reached a receiver, the requests, and
/// when the last of `expected` deliveries arrived.
#[derive(Default)]
struct BSeen {
    deliveries: HashSet<String>,
    requests: usize,
    all_at: Option<Instant>,
}

/// Counts a request to one of B's receivers.
fn see(seen: &Mutex<BSeen>, expected: usize, request: &webhooks_testkit::Received) {
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    s.requests += 1;
    if let Some(id) = request.header("x-webhook-delivery") {
        if s.deliveries.insert(id.to_string()) && s.deliveries.len() == expected {
            s.all_at = Some(Instant::now());
        }
    }
}

/// One pass on a fresh system: A alone, or A with B of `scenario`.
async fn pass(opts: &Options, scenario: Scenario, with_b: bool) -> anyhow::Result<PassFigures> {
    let settings = settings();
    let arrivals: Arrivals = Arc::default();
    let a_receiver = {
        let arrivals = arrivals.clone();
        Receiver::start(move |_, request| {
            if let (Some(ms), Some(id)) = (latency_ms(&request.body), request.header("webhook-id"))
            {
                arrivals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(id.to_string())
                    .or_insert(ms);
            }
            Reply::Status(204)
        })
        .await
    };
    let expected_b = opts.b_deliveries(scenario);
    let seen: Arc<Mutex<BSeen>> = Arc::default();
    let mut b_receivers = Vec::new();
    if with_b {
        let (count, reply) = match scenario {
            Scenario::DeadEndpoint => (1, Reply::Delay(hold(&settings), 204)),
            Scenario::BigTenant => (opts.big_endpoints, Reply::Delay(opts.big_delay, 204)),
        };
        for _ in 0..count {
            let seen = seen.clone();
            let reply = reply.clone();
            b_receivers.push(
                Receiver::start(move |_, request| {
                    see(&seen, expected_b, request);
                    reply.clone()
                })
                .await,
            );
        }
    }

    let system = System::build(&settings).await?;
    let running = system.start(dev::loopback().await?, DEFAULT_JWT_SECRET.into())?;
    let result = measure(
        opts,
        scenario,
        &running.base_url(),
        &a_receiver,
        &b_receivers,
        &arrivals,
        &seen,
    )
    .await;
    if !running.stop().await {
        eprintln!(
            "isolation: some in-flight work did not finish within {:?} of the stop",
            webhooks::dev::SHUTDOWN_GRACE
        );
    }
    // The receivers go after the system, their held requests with them.
    drop(b_receivers);
    drop(a_receiver);
    result
}

/// Publishes B's backlog (if any) and A's events, and waits for both.
async fn measure(
    opts: &Options,
    scenario: Scenario,
    base_url: &str,
    a_receiver: &Receiver,
    b_receivers: &[Receiver],
    arrivals: &Arrivals,
    seen: &Arc<Mutex<BSeen>>,
) -> anyhow::Result<PassFigures> {
    let api_a = ApiClient::for_org(base_url, ORG_A, DEFAULT_JWT_SECRET)?;
    let api_b = ApiClient::for_org(base_url, ORG_B, DEFAULT_JWT_SECRET)?;
    api_a.create_endpoint(&a_receiver.url("/a")).await?;
    let mut b_endpoints = Vec::with_capacity(b_receivers.len());
    for (i, r) in b_receivers.iter().enumerate() {
        b_endpoints.push(api_b.create_endpoint(&r.url(&format!("/b{i}"))).await?.id);
    }

    // B's backlog, all accepted before A's first event.
    let b_start = Instant::now();
    if !b_receivers.is_empty() {
        let events = match scenario {
            Scenario::DeadEndpoint => opts.dead_events,
            Scenario::BigTenant => opts.big_events,
        };
        api_b
            .publish(events, r#"{"tenant":"b"}"#, B_PUBLISH_CONCURRENCY)
            .await
            .context("publishing B's events")?;
    }

    // A, at its pace; each publication is its own task, so a slow answer
    // does not delay the next.
    let mut ticks = tokio::time::interval(opts.a_every.max(Duration::from_millis(1)));
    let mut publishes = Vec::with_capacity(opts.a_events);
    for _ in 0..opts.a_events {
        ticks.tick().await;
        let api = api_a.clone();
        let data = format!(r#"{{"sent_us":{}}}"#, now_us());
        publishes.push(tokio::spawn(async move { api.publish(1, &data, 1).await }));
    }
    let a_deadline = Instant::now() + opts.a_limit;
    for p in publishes {
        p.await.context("a publisher panicked")??;
    }

    let wait_a = async {
        loop {
            let snapshot = arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if snapshot.len() >= opts.a_events || Instant::now() >= a_deadline {
                return snapshot;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    };
    let wait_b = async {
        if b_receivers.is_empty() {
            return Ok(None);
        }
        let b_deadline = b_start + opts.drain_limit;
        let expected = opts.b_deliveries(scenario);
        // Every delivery reached a receiver (its first attempt).
        let first = loop {
            let at = seen.lock().unwrap_or_else(PoisonError::into_inner).all_at;
            if at.is_some() || Instant::now() >= b_deadline {
                break at;
            }
            tokio::time::sleep(WAIT_POLL).await;
        };
        let (drain, delivered) = match (scenario, first) {
            (Scenario::DeadEndpoint, at) => (at, None),
            (Scenario::BigTenant, None) => (
                None,
                Some(count_delivered(&api_b, &b_endpoints, expected).await?),
            ),
            (Scenario::BigTenant, Some(_)) => loop {
                let delivered = count_delivered(&api_b, &b_endpoints, expected).await?;
                let now = Instant::now();
                if delivered >= expected {
                    break (Some(now), Some(delivered));
                }
                if now >= b_deadline {
                    break (None, Some(delivered));
                }
                tokio::time::sleep(DRAIN_POLL).await;
            },
        };
        let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let secs = |at: Option<Instant>| {
            at.map(|t| t.duration_since(b_start).as_secs_f64())
                .filter(|s| *s <= opts.drain_limit.as_secs_f64())
        };
        anyhow::Ok(Some(BFigures {
            drain_s: secs(drain),
            first_attempts_s: secs(first),
            attempted: s.deliveries.len(),
            requests: s.requests,
            delivered,
        }))
    };
    let (received, b) = tokio::join!(wait_a, wait_b);
    let b = b?;
    if received.is_empty() && opts.a_events > 0 && b.is_none() {
        bail!(
            "none of A's {} events arrived within {:?} with A alone",
            opts.a_events,
            opts.a_limit
        );
    }
    Ok(PassFigures {
        a: AFigures::new(&received, opts.a_events),
        b,
    })
}

/// B's deliveries `delivered`, over all its endpoints, read through the
/// API.
async fn count_delivered(
    api: &ApiClient,
    endpoints: &[String],
    expected: usize,
) -> anyhow::Result<usize> {
    // Enough pages of 250 for every delivery on one endpoint, and one more.
    let pages = expected / 250 + 2;
    let mut total = 0;
    for id in endpoints {
        total += api.count_deliveries(id, "delivered", pages).await?;
    }
    Ok(total)
}

/// The median of `values`, `None` (not reached) counting as larger than
/// any value; of an even count, the mean of the middle two.
fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<Option<f64>> = values.collect();
    v.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let n = v.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        Some((v[n / 2 - 1]? + v[n / 2]?) / 2.0)
    }
}

fn ratio(with: Option<f64>, alone: Option<f64>) -> Option<f64> {
    match (with, alone) {
        (Some(w), Some(a)) if a > 0.0 => Some(w / a),
        _ => None,
    }
}

fn ms_json(ms: Option<f64>) -> Value {
    json!(ms.map(|m| round(m, 1)))
}

fn fmt_ms(ms: Option<f64>, limit: Duration) -> String {
    match ms {
        None => format!("> {} s", limit.as_secs()),
        Some(m) if m >= 1000.0 => format!("{:.1} s", m / 1000.0),
        Some(m) => format!("{m:.1} ms"),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.2}"),
    }
}

fn fmt_drain(s: Option<f64>, limit: Duration) -> String {
    match s {
        Some(s) => format!("{s:.1} s"),
        None => format!("not drained within {} s", limit.as_secs()),
    }
}

fn a_line(a: &AFigures, events: usize) -> String {
    format!(
        "p50 {} p99 {} max {}, {}/{events} delivered",
        fmt_ms(a.percentile(50), Duration::ZERO),
        fmt_ms(a.percentile(99), Duration::ZERO),
        fmt_ms(a.max(), Duration::ZERO),
        a.delivered()
    )
}

fn b_line(b: &BFigures, limit: Duration) -> String {
    let delivered = b
        .delivered
        .map(|d| format!(", {d} delivered"))
        .unwrap_or_default();
    format!(
        "drain {}, every first attempt {} ({} deliveries attempted, {} requests{delivered})",
        fmt_drain(b.drain_s, limit),
        b.first_attempts_s
            .map_or_else(|| "not within the limit".into(), |s| format!("at {s:.1} s")),
        b.attempted,
        b.requests,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undelivered_event_is_slower_than_any() {
        let received: HashMap<String, f64> = (0..3).map(|i| (format!("e{i}"), i as f64)).collect();
        let a = AFigures::new(&received, 4);
        assert_eq!(a.delivered(), 3);
        assert_eq!(a.percentile(50), Some(1.0));
        assert_eq!(a.percentile(99), Some(2.0));
        assert_eq!(a.max(), None);
    }

    #[test]
    fn the_median_puts_not_reached_last() {
        assert_eq!(median([Some(3.0), None, Some(1.0)].into_iter()), Some(3.0));
        assert_eq!(median([None, None, Some(1.0)].into_iter()), None);
        assert_eq!(median([Some(2.0), Some(4.0)].into_iter()), Some(3.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn quick_sizes_yield_to_flags() {
        let mut args = IsolationArgs::full(3);
        args.quick = true;
        args.dead_events = Some(7);
        let o = args.options();
        assert_eq!((o.runs, o.dead_events, o.a_events), (3, 7, QUICK.a_events));
        assert_eq!(
            IsolationArgs::full(3)
                .options()
                .b_deliveries(Scenario::BigTenant),
            5000
        );
    }
}
