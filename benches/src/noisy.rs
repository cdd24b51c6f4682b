//! Issue 14, noisy neighbours: `H` healthy endpoints and one whose receiver
//! never answers (it holds every request past the sender's timeout) take
//! the same events, published at a steady pace through an in-process
//! `webhooks dev` (memory backend). Each healthy delivery's latency is the
//! time from its publication (stamped in the event's data) to its receipt.
//! The healthy endpoints' p50 and p99 with the noisy endpoint present are
//! divided by the same figures of a run without it, with the slow lane's
//! cap off (before) and on (after), in the same run.

use crate::dev::{self, ApiClient};
use crate::measure::round;
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webhooks::backend::{Backend, System};
use webhooks_testkit::{Receiver, Reply};

/// `webhooks-bench noisy`.
#[derive(clap::Args, Clone, Debug)]
pub struct NoisyArgs {
    /// Healthy endpoints (one more never answers).
    #[arg(long, default_value_t = 4)]
    healthy: usize,
    /// Events per pass, each to every endpoint.
    #[arg(long, default_value_t = 600)]
    events: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// The sender's request timeout in seconds (`webhooks dev
    /// --request-timeout`), kept short for the benchmark.
    #[arg(long, default_value_t = 3.0)]
    request_timeout_secs: f64,
    /// The slow lane's cap of the "after" pass (`webhooks dev --slow-lane-cap`).
    #[arg(long, default_value_t = webhooks_pipeline::sender::limits::DEFAULT_SLOW_CAP)]
    cap: u32,
    /// Upper bound of one pass, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

impl NoisyArgs {
    /// The options of `webhooks-bench all`: the defaults.
    pub fn defaults() -> anyhow::Result<Self> {
        use clap::{Args as _, FromArgMatches as _};
        let matches =
            NoisyArgs::augment_args(clap::Command::new("noisy")).try_get_matches_from(["noisy"])?;
        Ok(NoisyArgs::from_arg_matches(&matches)?)
    }

    pub fn options(&self) -> Options {
        Options {
            healthy: self.healthy,
            events: self.events,
            rate: self.rate,
            request_timeout: Duration::from_secs_f64(self.request_timeout_secs.max(0.1)),
            cap: self.cap,
            timeout: Duration::from_secs(self.timeout_secs),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Healthy endpoints.
    pub healthy: usize,
    /// Events published per pass (each to every endpoint).
    pub events: usize,
    /// Events published per second.
    pub rate: f64,
    /// The sender's request timeout: how long each noisy POST holds.
    pub request_timeout: Duration,
    /// The slow lane's cap in the "after" pass.
    pub cap: u32,
    /// Upper bound of one pass.
    pub timeout: Duration,
}

/// The healthy deliveries' latencies of one pass, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
}

/// Runs the three passes (no noisy endpoint; noisy with the cap off;
/// noisy with the cap on) and returns their figures as JSON.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let baseline = pass(opts, false, Some(opts.cap)).await?;
    println!(
        "noisy: baseline (no noisy endpoint) p50 {:.1} ms p99 {:.1} ms",
        baseline.p50, baseline.p99
    );
    let before = pass(opts, true, None).await?;
    let after = pass(opts, true, Some(opts.cap)).await?;
    let figures = |name: &str, l: Latency| {
        let (r50, r99) = (l.p50 / baseline.p50, l.p99 / baseline.p99);
        println!(
            "noisy: {name}: p50 {:.1} ms p99 {:.1} ms, / baseline p50 {r50:.2} p99 {r99:.2}",
            l.p50, l.p99
        );
        json!({
            "p50_ms": round(l.p50, 1),
            "p99_ms": round(l.p99, 1),
            "p50_ratio": round(r50, 2),
            "p99_ratio": round(r99, 2),
        })
    };
    Ok(json!({
        "healthy_endpoints": opts.healthy,
        "events": opts.events,
        "events_per_s": opts.rate,
        "request_timeout_s": opts.request_timeout.as_secs_f64(),
        "slow_lane_cap": opts.cap,
        "target_p99_ratio": 1.5,
        "baseline": { "p50_ms": round(baseline.p50, 1), "p99_ms": round(baseline.p99, 1) },
        "cap_off": figures("noisy endpoint, cap off (before)", before),
        "cap_on": figures(&format!("noisy endpoint, cap {} (after)", opts.cap), after),
    }))
}

/// One pass on a fresh system: publishes, waits for every healthy
/// delivery, and returns their latencies.
async fn pass(opts: &Options, noisy: bool, cap: Option<u32>) -> anyhow::Result<Latency> {
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let healthy = {
        let latencies = latencies.clone();
        Receiver::start(move |_, request| {
            if let Some(ms) = latency_ms(&request.body) {
                latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(ms);
            }
            Reply::Status(204)
        })
        .await
    };
    // Holds every request well past the sender's timeout.
    let hold = opts.request_timeout * 10;
    let slow = Receiver::start(move |_, _| Reply::Delay(hold, 204)).await;

    let mut settings = dev::settings(Backend::Memory, None);
    settings.request_timeout = opts.request_timeout;
    settings.slow_lane_cap = cap;
    let system = System::build(&settings).await?;
    let running = system.start(dev::loopback().await?, dev::JWT_SECRET.into())?;
    let api = ApiClient::new(&running.base_url())?;
    for i in 0..opts.healthy {
        api.create_endpoint(&healthy.url(&format!("/h{i}"))).await?;
    }
    if noisy {
        api.create_endpoint(&slow.url("/noisy")).await?;
    }

    let expected = opts.events * opts.healthy;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(0.1)));
    let mut publishes = Vec::with_capacity(opts.events);
    for _ in 0..opts.events {
        ticks.tick().await;
        let api = api.clone();
        let data = format!(r#"{{"sent_us":{}}}"#, now_us());
        publishes.push(tokio::spawn(async move { api.publish(1, &data, 1).await }));
    }
    for p in publishes {
        p.await.context("the publisher panicked")??;
    }
    let arrived = healthy.wait_for(expected, opts.timeout).await;
    running.stop().await;
    if !arrived {
        bail!(
            "{} of {expected} healthy deliveries arrived within {:?}",
            healthy.count(),
            opts.timeout
        );
    }
    let mut l = latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    l.sort_by(f64::total_cmp);
    let at = |p: usize| l.get(l.len().saturating_sub(1) * p / 100).copied();
    match (at(50), at(99)) {
        (Some(p50), Some(p99)) => Ok(Latency { p50, p99 }),
        _ => bail!("no healthy delivery carried its publication time"),
    }
}

/// Microseconds since the Unix epoch: the publication stamp of an event.
pub(crate) fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Milliseconds since the `sent_us` stamped in a delivery's body.
pub(crate) fn latency_ms(body: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(r#""sent_us":"#)? + r#""sent_us":"#.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let sent: u128 = digits.parse().ok()?;
    Some(now_us().saturating_sub(sent) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_publication_stamp_is_read_from_the_body() {
        let body = br#"{"id":"evt_1","data":{"sent_us":1}}"#;
        assert!(super::latency_ms(body).is_some_and(|ms| ms > 0.0));
        assert_eq!(super::latency_ms(b"{}"), None);
    }
}
