//! Issue 14: `webhooks dev`'s memory over a long run. Starts the real
//! `webhooks dev` binary (memory backend) as a child process with a
//! receiver process, registers endpoints through the API, publishes through
//! `POST /v1/events/batch` (100 events per request) until N deliveries have
//! reached the receiver, and reports the child's peak RSS (`VmHWM`), its RSS
//! at the end (`VmRSS`) and the deliveries per second.
//!
//! The publisher stays at most `max_backlog` deliveries ahead of the
//! receiver, as a steady producer would: a pending delivery is never
//! forgotten, so a backlog of a million would measure the backlog, not
//! what a long run keeps.

use crate::dev::{self, ApiClient};
use crate::measure::{peak_rss_kib, round, rss_kib};
use crate::publisher::BATCH_EVENTS;
use crate::receiver;
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub deliveries: usize,
    /// Endpoints per event (every one subscribed to `*`).
    pub endpoints: usize,
    pub data_bytes: usize,
    /// Batch requests in flight.
    pub concurrency: usize,
    /// Most deliveries published but not yet received.
    pub max_backlog: usize,
    /// The `webhooks` binary.
    pub webhooks_bin: PathBuf,
    /// More arguments for `webhooks dev` (e.g. `--retain-deliveries`).
    pub dev_args: Vec<String>,
    /// Stop, and report it, if the child's RSS passes this (MiB).
    pub rss_limit_mib: u64,
    pub timeout: Duration,
    /// Where the child's log goes.
    pub log: PathBuf,
}

/// The `webhooks` binary next to this one (both built by `cargo build
/// --release -p webhooks-bench -p webhooks --bins`).
pub fn default_webhooks_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("webhooks")))
        .unwrap_or_else(|| PathBuf::from("webhooks"))
}

/// `webhooks dev` in a child process; stopped when dropped.
struct DevProcess {
    child: Child,
}

impl DevProcess {
    fn spawn(opts: &Options, port: u16) -> anyhow::Result<Self> {
        if let Some(dir) = opts.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.log)
            .with_context(|| format!("opening {}", opts.log.display()))?;
        let child = Command::new(&opts.webhooks_bin)
            .arg("dev")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(&opts.dev_args)
            .env("WEBHOOKS_JWT_SECRET", dev::JWT_SECRET)
            .env("WEBHOOKS_BACKEND", "memory")
            // One log line per delivery would cost as much as the work.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", opts.webhooks_bin.display()))?;
        Ok(DevProcess { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has exited.
    fn check_alive(&mut self, log: &std::path::Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("webhooks dev exited ({status}); see {}", log.display());
        }
        Ok(())
    }
}

impl Drop for DevProcess {
    /// SIGTERM first, as a terminal or an orchestrator would stop it, so it
    /// shuts down as it does there (and a wrapper such as a profiler can
    /// write its data); SIGKILL if it has not exited once its grace is over.
    // kill(2): std's Child::kill sends SIGKILL only.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let stop_by = Instant::now() + webhooks::dev::SHUTDOWN_GRACE + Duration::from_secs(10);
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with our own child's pid; no memory is shared.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            while Instant::now() < stop_by {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn mib(kib: u64) -> f64 {
    round(kib as f64 / 1024.0, 1)
}

/// One run: returns its figures as JSON.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    if opts.deliveries == 0 || opts.endpoints == 0 {
        bail!("--deliveries and --endpoints must be at least 1");
    }
    let receiver = receiver::spawn(1)?;
    let port = free_port()?;
    let mut dev = DevProcess::spawn(opts, port)?;
    let base_url = format!("http://127.0.0.1:{port}");
    let api = ApiClient::new(&base_url)?;
    let started = Instant::now();
    let first = loop {
        dev.check_alive(&opts.log)?;
        match api.create_endpoint(&receiver.url()).await {
            Ok(ep) => break ep,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("webhooks dev did not answer within 30 s")),
        }
    };
    let mut endpoints = vec![first];
    while endpoints.len() < opts.endpoints {
        endpoints.push(api.create_endpoint(&receiver.url()).await?);
    }
    let e = opts.endpoints;
    let events = opts.deliveries.div_ceil(e);
    let deliveries = events * e;
    let data = dev::event_data(opts.data_bytes);
    let probe = reqwest::Client::builder().no_proxy().build()?;
    let base = receiver.count(&probe).await?;
    let received = |n: u64| usize::try_from(n.saturating_sub(base)).unwrap_or(usize::MAX);
    println!(
        "dev-rss: webhooks dev pid {} ({} {}), receiver pid {}; {deliveries} deliveries = {events} events x {e} endpoint(s) of {} B data, batches of {BATCH_EVENTS}, {} in flight, backlog at most {}",
        dev.pid(),
        opts.webhooks_bin.display(),
        opts.dev_args.join(" "),
        receiver.pid(),
        opts.data_bytes,
        opts.concurrency,
        opts.max_backlog,
    );

    let t0 = Instant::now();
    let chunk = opts.concurrency.max(1) * BATCH_EVENTS;
    let mut published = 0usize;
    let mut timeline = Vec::new();
    let step = (deliveries / 10).max(1);
    let mut next_mark = step;
    let mut over_limit = None;
    loop {
        dev.check_alive(&opts.log)?;
        let got = received(receiver.count(&probe).await?);
        let rss = rss_kib(Some(dev.pid())).unwrap_or(0);
        if got >= next_mark.min(deliveries) && next_mark <= deliveries {
            println!(
                "  {got} delivered, RSS {} MiB, {:.0} s",
                mib(rss),
                t0.elapsed().as_secs_f64()
            );
            timeline.push(json!([got, mib(rss)]));
            next_mark += step;
        }
        if rss / 1024 > opts.rss_limit_mib {
            over_limit = Some(got);
            break;
        }
        if got >= deliveries {
            break;
        }
        if t0.elapsed() > opts.timeout {
            bail!("{got} of {deliveries} deliveries within {:?}", opts.timeout);
        }
        let backlog = published * e - got.min(published * e);
        if published < events && backlog + chunk * e <= opts.max_backlog.max(chunk * e) {
            let n = chunk.min(events - published);
            api.publish_batches(n, &data, BATCH_EVENTS, opts.concurrency)
                .await?;
            published += n;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let got = received(receiver.count(&probe).await?);
    let peak = peak_rss_kib(Some(dev.pid())).unwrap_or(0);
    let end = rss_kib(Some(dev.pid())).unwrap_or(0);
    drop(dev);
    let summary = json!({
        "webhooks_bin": opts.webhooks_bin.display().to_string(),
        "dev_args": opts.dev_args,
        "deliveries": got,
        "asked_deliveries": deliveries,
        "endpoints_per_event": e,
        "data_bytes": opts.data_bytes,
        "max_backlog": opts.max_backlog,
        "seconds": round(seconds, 1),
        "deliveries_per_s": round(got as f64 / seconds, 0),
        "peak_rss_mib": mib(peak),
        "rss_at_end_mib": mib(end),
        "rss_timeline_mib": timeline,
        "stopped_over_rss_limit_at": over_limit,
        "target_peak_rss_mib": 256,
        "target_met": over_limit.is_none() && peak <= 256 * 1024,
    });
    println!(
        "dev-rss: {got} deliveries in {:.0} s ({} /s); webhooks dev peak RSS {} MiB, RSS at the end {} MiB{}",
        seconds,
        summary["deliveries_per_s"],
        summary["peak_rss_mib"],
        summary["rss_at_end_mib"],
        over_limit.map_or(String::new(), |n| format!(
            " (stopped at {n} deliveries: RSS over {} MiB)",
            opts.rss_limit_mib
        )),
    );
    Ok(summary)
}
