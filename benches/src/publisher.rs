//! The publisher the end-to-end benchmark starts as a child process
//! (`webhooks-bench publisher`), like the receiver, so the CPU time spent
//! making and sending events is not counted as the pipeline's: it publishes
//! N events through the API with the bench org's bearer token, 32 requests
//! in flight, through `POST /v1/events` or `POST /v1/events/batch`, prints
//! how long that took, and exits.
//!
//! The child says `ready` once its client is built, and publishes when told
//! `go` on its standard input (at once if that is closed), so a measured
//! pass need not include starting a process.

use crate::dev::{self, ApiClient};
use anyhow::{bail, Context as _};
use clap::ValueEnum;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The route events are published through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Route {
    /// `POST /v1/events`, one event per request.
    Single,
    /// `POST /v1/events/batch`, 100 events per request.
    Batch,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Single => "single",
            Route::Batch => "batch",
        }
    }
}

/// Events per `POST /v1/events/batch`.
pub const BATCH_EVENTS: usize = 100;

/// What to publish, and where.
#[derive(Debug, Clone)]
pub struct Job {
    pub base_url: String,
    pub events: usize,
    pub data_bytes: usize,
    pub concurrency: usize,
    pub route: Route,
}

/// Publishes `job` from this process; returns the seconds it took.
pub async fn publish(job: &Job) -> anyhow::Result<f64> {
    publish_with(job, &Client::new(job)?).await
}

/// What publishing needs, made before it starts.
pub struct Client {
    api: ApiClient,
    data: String,
}

impl Client {
    pub fn new(job: &Job) -> anyhow::Result<Self> {
        Ok(Client {
            api: ApiClient::new(&job.base_url)?,
            data: dev::event_data(job.data_bytes),
        })
    }
}

/// Publishes `job` with `client`; returns the seconds it took.
async fn publish_with(job: &Job, client: &Client) -> anyhow::Result<f64> {
    let Client { api, data } = client;
    let t0 = Instant::now();
    match job.route {
        Route::Single => api.publish(job.events, data, job.concurrency).await?,
        Route::Batch => {
            api.publish_batches(job.events, data, BATCH_EVENTS, job.concurrency)
                .await?
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// What a publisher child reports when it is done.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Seconds until every event was accepted.
    pub seconds: f64,
    /// The child's CPU seconds from `go` on (its start-up left out).
    pub cpu_seconds: f64,
}

/// The child's side: builds its client, says `ready`, waits for `go` (or
/// the end of its input), publishes on one thread and prints the seconds
/// it took and the CPU seconds it used meanwhile on stdout.
pub fn run(job: &Job) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(job)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let cpu = crate::measure::cpu_time();
    let seconds = runtime.block_on(publish_with(job, &client))?;
    let cpu = (crate::measure::cpu_time() - cpu).as_secs_f64();
    writeln!(out, "{seconds} {cpu}")?;
    Ok(())
}

/// What the child prints once it can publish.
const READY: &str = "ready";

/// A publisher running in a child process; killed when dropped.
pub struct PublisherProcess {
    child: Child,
    /// Its output, read line by line.
    stdout: Option<BufReader<ChildStdout>>,
    /// Where `go` is written, when it waits for it.
    stdin: Option<ChildStdin>,
}

impl PublisherProcess {
    /// Starts `webhooks-bench publisher` for `job`; it publishes as soon as
    /// it can.
    pub fn spawn(job: &Job) -> anyhow::Result<Self> {
        Self::start(job, false)
    }

    /// Starts `webhooks-bench publisher` for `job` and returns once it is
    /// ready; it publishes at [`PublisherProcess::go`].
    pub fn spawn_ready(job: &Job) -> anyhow::Result<Self> {
        let mut child = Self::start(job, true)?;
        let mut line = String::new();
        if let Some(stdout) = &mut child.stdout {
            stdout
                .read_line(&mut line)
                .context("reading the publisher's output")?;
        }
        if line.trim() != READY {
            bail!("the publisher printed {line:?}, not {READY:?}");
        }
        Ok(child)
    }

    /// Tells a publisher started by [`PublisherProcess::spawn_ready`] to
    /// publish.
    pub fn go(&mut self) -> anyhow::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"go\n")
                .context("telling the publisher to go")?;
        }
        Ok(())
    }

    fn start(job: &Job, waits: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut child = Command::new(exe)
            .args([
                "publisher",
                "--base-url",
                &job.base_url,
                "--events",
                &job.events.to_string(),
                "--data-bytes",
                &job.data_bytes.to_string(),
                "--concurrency",
                &job.concurrency.to_string(),
                "--route",
                job.route.as_str(),
            ])
            .stdin(if waits { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the publisher process")?;
        Ok(PublisherProcess {
            stdout: child.stdout.take().map(BufReader::new),
            stdin: child.stdin.take(),
            child,
        })
    }

    /// `None` while it runs; then what it reported, or why it failed.
    pub fn finished(&mut self) -> Option<anyhow::Result<Published>> {
        let status = match self.child.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) => status,
            Err(e) => return Some(Err(e).context("waiting for the publisher")),
        };
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        Some(if status.success() {
            parse_report(&out)
        } else {
            Err(anyhow::anyhow!(
                "the publisher failed ({status}); see its error above"
            ))
        })
    }
}

impl Drop for PublisherProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's `<seconds> <cpu seconds>` line, after its `ready`
/// when that was not read yet.
fn parse_report(out: &str) -> anyhow::Result<Published> {
    let report = out.strip_prefix(READY).unwrap_or(out);
    let mut fields = report.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(seconds)), Some(Ok(cpu_seconds)), None) => Ok(Published {
            seconds,
            cpu_seconds,
        }),
        _ => bail!("the publisher printed {out:?}, not its seconds and CPU seconds"),
    }
}

/// Refuses a job that cannot run.
pub fn check(job: &Job) -> anyhow::Result<()> {
    if job.events == 0 {
        bail!("--events must be at least 1");
    }
    if job.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_report_is_its_seconds_and_cpu_seconds() {
        let p = parse_report("1.25 0.5\n").expect("a report");
        assert_eq!((p.seconds, p.cpu_seconds), (1.25, 0.5));
        let p = parse_report("ready\n1.25 0.5\n").expect("a report after ready");
        assert_eq!((p.seconds, p.cpu_seconds), (1.25, 0.5));
        for bad in ["", "1.25", "1.25 x", "1 2 3"] {
            let e = parse_report(bad).expect_err(bad).to_string();
            assert!(e.contains("not its seconds and CPU seconds"), "{e}");
        }
    }
}
