//! Issue 7 items 1 and 2: events published through the API of an
//! in-process `webhooks dev` (memory backend) until every delivery is
//! `delivered`, then, in the same run, the same number of signed POSTs of
//! the same bodies straight to the same receiver (the ceiling).
//!
//! The receiver runs in a process of its own, and so does the publisher
//! (issue 14), so neither's CPU time counts as the pipeline's; `--publisher
//! in-process` publishes from this process as before, for comparison.

use crate::dev::{self, ApiClient, CreatedEndpoint};
use crate::measure::{cpu_time, median, peak_rss_kib, process_cpu_time, reset_peak_rss, round};
use crate::publisher::{self, Published, PublisherProcess, Route};
use crate::receiver::{self, ReceiverProcess};
use anyhow::{bail, Context as _};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhooks::backend::{Backend, System};
use webhooks::dev::Running;
use webhooks::event_sources::{QueueMapping, StreamMapping};
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::{DeliveryStatus, Event, EventType, Secret};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: usize,
    pub endpoints: Vec<usize>,
    pub runs: usize,
    pub data_bytes: usize,
    /// Publishing requests in flight.
    pub publish_concurrency: usize,
    /// Upper bound of one pipeline run.
    pub timeout: Duration,
    /// Receiver worker threads (1: a current-thread runtime).
    pub receiver_threads: usize,
    /// Where the publisher runs.
    pub publisher: PublisherMode,
    /// The route events are published through.
    pub publish_route: Route,
}

/// Where the events are published from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublisherMode {
    /// A child process (`webhooks-bench publisher`), like the receiver.
    Process,
    /// A task of this process: its CPU time counts as the pipeline's.
    InProcess,
}

/// The publisher of one pass, wherever it runs.
enum Publishing {
    /// In-process, not started yet.
    Waiting(publisher::Job),
    Task(tokio::task::JoinHandle<anyhow::Result<f64>>),
    Child(PublisherProcess),
}

impl Publishing {
    /// Ready to publish (a child started and its client built; a task is
    /// spawned at [`Publishing::go`]), so the pass's clock need not count
    /// a process's start.
    fn ready(opts: &Options, base_url: &str) -> anyhow::Result<Self> {
        let job = publisher::Job {
            base_url: base_url.to_string(),
            events: opts.events,
            data_bytes: opts.data_bytes,
            concurrency: opts.publish_concurrency,
            route: opts.publish_route,
        };
        Ok(match opts.publisher {
            PublisherMode::Process => Publishing::Child(PublisherProcess::spawn_ready(&job)?),
            PublisherMode::InProcess => Publishing::Waiting(job),
        })
    }

    /// Publishing starts.
    fn go(&mut self) -> anyhow::Result<()> {
        match self {
            Publishing::Child(child) => child.go(),
            Publishing::Waiting(job) => {
                let job = job.clone();
                *self =
                    Publishing::Task(tokio::spawn(async move { publisher::publish(&job).await }));
                Ok(())
            }
            Publishing::Task(_) => Ok(()),
        }
    }

    /// `None` while publishing; then its seconds and, for a child, its CPU
    /// seconds (a task's are the pipeline's), or why it failed.
    async fn finished(&mut self) -> Option<anyhow::Result<(f64, Option<f64>)>> {
        match self {
            Publishing::Child(child) => child
                .finished()
                .map(|r| r.map(|p: Published| (p.seconds, Some(p.cpu_seconds)))),
            Publishing::Task(task) if task.is_finished() => Some(match task.await {
                Ok(r) => r.map(|s| (s, None)).context("publishing events"),
                Err(e) => Err(anyhow::anyhow!("the publisher panicked: {e}")),
            }),
            Publishing::Task(_) | Publishing::Waiting(_) => None,
        }
    }

    fn stop(self) {
        match self {
            Publishing::Task(task) => task.abort(),
            Publishing::Child(child) => drop(child),
            Publishing::Waiting(_) => {}
        }
    }
}

/// One measured pass.
#[derive(Debug, Clone, Copy)]
struct Pass {
    count: usize,
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
    /// Pipeline only: events accepted by the API per second.
    events_per_s: Option<f64>,
    /// The receiver process's CPU seconds during the pass.
    receiver_cpu_seconds: Option<f64>,
    /// Pipeline only: the publisher process's CPU seconds.
    publisher_cpu_seconds: Option<f64>,
}

impl Pass {
    fn per_second(&self) -> f64 {
        self.count as f64 / self.seconds
    }

    fn cpu_per_1000(&self) -> f64 {
        self.cpu_seconds * 1000.0 / self.count as f64
    }

    /// The receiver's CPU seconds per 1000 POSTs it answered.
    fn receiver_cpu_per_1000(&self) -> f64 {
        self.receiver_cpu_seconds
            .map_or(f64::NAN, |c| c * 1000.0 / self.count as f64)
    }

    /// The publisher's CPU seconds per 1000 deliveries.
    fn publisher_cpu_per_1000(&self) -> f64 {
        self.publisher_cpu_seconds
            .map_or(f64::NAN, |c| c * 1000.0 / self.count as f64)
    }

    /// Every process's CPU seconds per 1000 deliveries: this one's, the
    /// receiver's and the publisher's.
    fn total_cpu_per_1000(&self) -> f64 {
        let others = self.receiver_cpu_seconds.unwrap_or(f64::NAN)
            + self.publisher_cpu_seconds.unwrap_or(0.0);
        (self.cpu_seconds + others) * 1000.0 / self.count as f64
    }
}

/// The most of the ceiling a pipeline pass with `endpoints` per event
/// could reach on this machine, whatever the pipeline did, as measured in
/// the same run: every core busy, and the pipeline spending nothing but
/// the publisher's request for each event (as the publisher spent),
/// accepting it as cheaply as the bare receiver answers a POST (as the
/// ceiling's receiver spent), and each delivery's POST as the ceiling's
/// (its client's CPU, and its receiver's answer as in this pass). No
/// fan-out, store, queue or check costs anything here, so a real pipeline
/// stays below it. `None` without the publisher's CPU (an in-process
/// publisher's is the pipeline's).
fn bound(p: &Pass, c: &Pass, endpoints: usize) -> Option<f64> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let publisher = p.publisher_cpu_seconds?;
    let per_delivery_ms = publisher * 1000.0 / p.count as f64
        + c.receiver_cpu_per_1000() / endpoints.max(1) as f64
        + c.cpu_per_1000()
        + p.receiver_cpu_per_1000();
    let most_per_s = cores * 1000.0 / per_delivery_ms;
    Some(most_per_s / c.per_second()).filter(|b| b.is_finite())
}

/// Runs every endpoint count `runs` times, pipeline then ceiling, and
/// returns the medians as JSON.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let receiver = receiver::spawn(opts.receiver_threads)?;
    println!(
        "e2e: receiver pid {} on port {} ({} thread(s)); publisher {:?} through the {} route; {} events of {} B data; {} pollers x {} = {} in flight",
        receiver.pid(),
        receiver.port,
        opts.receiver_threads,
        opts.publisher,
        opts.publish_route.as_str(),
        opts.events,
        opts.data_bytes,
        dev::POLLERS,
        dev::BATCH,
        dev::POLLERS * dev::BATCH
    );
    let mut per_endpoints = Vec::new();
    for &e in &opts.endpoints {
        let mut pipeline = Vec::new();
        let mut ceiling = Vec::new();
        for r in 1..=opts.runs {
            let (p, endpoints) = pipeline_pass(opts, e, &receiver).await?;
            let c = ceiling_pass(opts, &endpoints, &receiver).await?;
            println!(
                "  E={e} run {r}: pipeline {:.0} deliveries/s ({:.3} CPU s/1000, peak RSS {:.1} MiB, events accepted at {:.0}/s); ceiling {:.0} POST/s ({:.3} CPU s/1000); ratio {:.2}",
                p.per_second(),
                p.cpu_per_1000(),
                p.peak_rss_kib as f64 / 1024.0,
                p.events_per_s.unwrap_or(f64::NAN),
                c.per_second(),
                c.cpu_per_1000(),
                p.per_second() / c.per_second()
            );
            println!(
                "    CPU s/1000 deliveries by process: pipeline {:.4} + publisher {:.4} + receiver {:.4} = {:.4}; ceiling {:.4} + receiver {:.4} = {:.4}",
                p.cpu_per_1000(),
                p.publisher_cpu_per_1000(),
                p.receiver_cpu_per_1000(),
                p.total_cpu_per_1000(),
                c.cpu_per_1000(),
                c.receiver_cpu_per_1000(),
                c.total_cpu_per_1000(),
            );
            if let Some(b) = bound(&p, &c, e) {
                println!(
                    "    bound: with every core busy and the pipeline spending only the publish request (accepted as cheaply as the bare receiver answers) and the ceiling's POST, at most {b:.2} of the ceiling"
                );
            }
            pipeline.push(p);
            ceiling.push(c);
        }
        let m = |v: &[Pass], f: fn(&Pass) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let ratios: Vec<f64> = pipeline
            .iter()
            .zip(&ceiling)
            .map(|(p, c)| p.per_second() / c.per_second())
            .collect();
        let cpu_ratios: Vec<f64> = pipeline
            .iter()
            .zip(&ceiling)
            .map(|(p, c)| p.cpu_per_1000() / c.cpu_per_1000())
            .collect();
        let bounds: Vec<f64> = pipeline
            .iter()
            .zip(&ceiling)
            .filter_map(|(p, c)| bound(p, c, e))
            .collect();
        let summary = json!({
            "endpoints_per_event": e,
            "events": opts.events,
            "deliveries": opts.events * e,
            "runs": opts.runs,
            "pipeline": {
                "deliveries_per_s": round(m(&pipeline, Pass::per_second), 1),
                "cpu_s_per_1000_deliveries": round(m(&pipeline, Pass::cpu_per_1000), 4),
                "peak_rss_mib": round(m(&pipeline, |p| p.peak_rss_kib as f64 / 1024.0), 1),
                "seconds": round(m(&pipeline, |p| p.seconds), 3),
                "events_accepted_per_s": round(m(&pipeline, |p| p.events_per_s.unwrap_or(f64::NAN)), 1),
                "publisher_cpu_s_per_1000_deliveries": round(m(&pipeline, Pass::publisher_cpu_per_1000), 4),
                "receiver_cpu_s_per_1000_deliveries": round(m(&pipeline, Pass::receiver_cpu_per_1000), 4),
                "all_processes_cpu_s_per_1000_deliveries": round(m(&pipeline, Pass::total_cpu_per_1000), 4),
                "each_run_deliveries_per_s": pipeline.iter().map(|p| round(p.per_second(), 1)).collect::<Vec<_>>(),
            },
            "ceiling": {
                "posts_per_s": round(m(&ceiling, Pass::per_second), 1),
                "cpu_s_per_1000_posts": round(m(&ceiling, Pass::cpu_per_1000), 4),
                "receiver_cpu_s_per_1000_posts": round(m(&ceiling, Pass::receiver_cpu_per_1000), 4),
                "all_processes_cpu_s_per_1000_posts": round(m(&ceiling, Pass::total_cpu_per_1000), 4),
                "seconds": round(m(&ceiling, |p| p.seconds), 3),
                "each_run_posts_per_s": ceiling.iter().map(|p| round(p.per_second(), 1)).collect::<Vec<_>>(),
            },
            "ratio_pipeline_to_ceiling": round(median(&ratios), 3),
            "each_run_ratio": ratios.iter().map(|r| round(*r, 3)).collect::<Vec<_>>(),
            "cpu_ratio_pipeline_to_ceiling": round(median(&cpu_ratios), 2),
            // `bound`: the most any pipeline could reach by this method here.
            "ratio_bound_requests_only": (!bounds.is_empty()).then(|| round(median(&bounds), 3)),
        });
        println!(
            "E={e} medians of {} runs: pipeline {} deliveries/s, {} CPU s/1000, peak RSS {} MiB; ceiling {} POST/s, {} CPU s/1000; pipeline/ceiling {} (CPU per delivery x{}); bound by this method {}",
            opts.runs,
            summary["pipeline"]["deliveries_per_s"],
            summary["pipeline"]["cpu_s_per_1000_deliveries"],
            summary["pipeline"]["peak_rss_mib"],
            summary["ceiling"]["posts_per_s"],
            summary["ceiling"]["cpu_s_per_1000_posts"],
            summary["ratio_pipeline_to_ceiling"],
            summary["cpu_ratio_pipeline_to_ceiling"],
            summary["ratio_bound_requests_only"],
        );
        per_endpoints.push(summary);
    }
    Ok(json!({
        "publisher": match opts.publisher {
            PublisherMode::Process => "own process",
            PublisherMode::InProcess => "in the pipeline's process",
        },
        "publish_route": opts.publish_route.as_str(),
        "receiver_threads": opts.receiver_threads,
        "in_flight": dev::POLLERS * dev::BATCH,
        "publish_concurrency": opts.publish_concurrency,
        "data_bytes": opts.data_bytes,
        "results": per_endpoints,
    }))
}

/// One pipeline pass with `e` endpoints; returns the endpoints for the
/// ceiling pass.
async fn pipeline_pass(
    opts: &Options,
    e: usize,
    receiver: &ReceiverProcess,
) -> anyhow::Result<(Pass, Vec<CreatedEndpoint>)> {
    let system = System::build(&dev::settings(Backend::Memory, None)).await?;
    let deliveries = system
        .memory
        .as_ref()
        .map(|m| m.deliveries.clone())
        .context("the memory backend exposes its delivery store")?;
    let running = system.start(dev::loopback().await?, dev::JWT_SECRET.into())?;
    let api = ApiClient::new(&running.base_url())?;
    let mut endpoints = Vec::new();
    for _ in 0..e {
        endpoints.push(api.create_endpoint(&receiver.url()).await?);
    }
    let expected = opts.events * e;
    let probe = reqwest::Client::builder().no_proxy().build()?;
    let base = receiver.count(&probe).await?;
    // Started before the clock, as the ceiling's client is built before its.
    let mut publisher = Publishing::ready(opts, &running.base_url())?;

    reset_peak_rss();
    let receiver_cpu0 = process_cpu_time(receiver.pid());
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    // Seconds the publisher took to have every event accepted, and its CPU
    // seconds.
    let mut published: Option<(f64, Option<f64>)> = None;
    publisher.go()?;
    // Wait cheaply on the receiver's count, then confirm in the store that
    // every delivery is recorded `delivered` (scanning the store is costly
    // at 100 000 deliveries, so it is done rarely until the end).
    let mut last_scan = Instant::now();
    let mut received_all = false;
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(if received_all { 2 } else { 20 })).await;
        if !received_all {
            received_all = receiver.count(&probe).await? >= base + expected as u64;
        }
        if received_all || last_scan.elapsed() > Duration::from_secs(5) {
            last_scan = Instant::now();
            let counts = deliveries.count_by_status();
            let got = |s| counts.get(&s).copied().unwrap_or(0);
            if got(DeliveryStatus::Delivered) >= expected {
                break Ok(());
            }
            if got(DeliveryStatus::DeadLettered) + got(DeliveryStatus::Canceled) > 0 {
                break Err(anyhow::anyhow!("deliveries failed: {counts:?}"));
            }
        }
        if published.is_none() {
            // Stop waiting at once if publishing failed.
            match publisher.finished().await {
                Some(Ok(secs)) => published = Some(secs),
                Some(Err(e)) => break Err(e),
                None => {}
            }
        }
        if t0.elapsed() > opts.timeout {
            break Err(anyhow::anyhow!(
                "not every delivery was delivered within {:?}: {:?}",
                opts.timeout,
                deliveries.count_by_status()
            ));
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_seconds = (cpu_time() - cpu0).as_secs_f64();
    let receiver_cpu_seconds = cpu_delta(receiver_cpu0, process_cpu_time(receiver.pid()));
    let peak = peak_rss_kib(None).unwrap_or(0);
    if published.is_none() && outcome.is_ok() {
        // Every delivery is done, so the publisher is reading its last answers.
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(10) {
            match publisher.finished().await {
                Some(r) => {
                    published = r.ok();
                    break;
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    publisher.stop();
    running.stop().await;
    outcome?;
    Ok((
        Pass {
            count: expected,
            seconds,
            cpu_seconds,
            peak_rss_kib: peak,
            events_per_s: published.map(|(s, _)| opts.events as f64 / s),
            receiver_cpu_seconds,
            publisher_cpu_seconds: published.and_then(|(_, cpu)| cpu),
        },
        endpoints,
    ))
}

/// The ceiling: sign + POST of the same bodies to the same receiver, at the
/// pipeline's concurrency (`POLLERS` tasks of `BATCH` requests), nothing else.
async fn ceiling_pass(
    opts: &Options,
    endpoints: &[CreatedEndpoint],
    receiver: &ReceiverProcess,
) -> anyhow::Result<Pass> {
    let url = receiver.url();
    let data = dev::event_data(opts.data_bytes);
    let raw = serde_json::value::RawValue::from_string(data)?;
    // The bodies the sender sends: the event payload, one per event.
    let events: Vec<(String, String)> = (0..opts.events)
        .map(|_| {
            let ev = Event::new(dev::ORG, EventType::InvoicePaid, raw.clone());
            (ev.id.clone(), ev.payload())
        })
        .collect();
    let secrets: Vec<(String, Secret)> = endpoints
        .iter()
        .map(|ep| Ok((ep.id.clone(), Secret::parse(&ep.secret)?)))
        .collect::<Result<_, webhooks_domain::secret::SecretError>>()?;
    let e = secrets.len().max(1);
    let total = opts.events * e;
    // Built like the sender's client (crates/pipeline/src/http.rs).
    let client = reqwest::Client::builder()
        .user_agent(webhooks_pipeline::http::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    let shared = Arc::new((
        events,
        secrets,
        client,
        url.to_string(),
        AtomicUsize::new(0),
    ));
    let failures = Arc::new(AtomicUsize::new(0));

    reset_peak_rss();
    let receiver_cpu0 = process_cpu_time(receiver.pid());
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..dev::POLLERS)
        .map(|_| {
            let shared = shared.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let (events, secrets, client, url, next) = &*shared;
                let failures = &*failures;
                let indexes = stream::iter(std::iter::from_fn(|| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    (i < total).then_some(i)
                }));
                indexes
                    .for_each_concurrent(dev::BATCH, |i| async move {
                        let (event_id, body) = &events[i / e];
                        let (endpoint_id, secret) = &secrets[i % e];
                        let at = chrono::Utc::now();
                        let ts = at.timestamp();
                        let b = body.as_bytes();
                        let req = client
                            .post(url.as_str())
                            .header("content-type", "application/json")
                            .header("x-signature", x_signature(secret, b))
                            .header("webhook-id", event_id.as_str())
                            .header("webhook-timestamp", ts.to_string())
                            .header(
                                "webhook-signature",
                                webhook_signature_header(&[secret], event_id, ts, b),
                            )
                            .header("x-webhook-event", dev::EVENT_TYPE)
                            .header("x-webhook-delivery", delivery_id(endpoint_id, event_id))
                            .header("x-webhook-attempt", "1")
                            .body(body.clone());
                        let ok = match req.send().await {
                            Ok(resp) => {
                                let ok = resp.status().is_success();
                                let _ = resp.bytes().await;
                                ok
                            }
                            Err(_) => false,
                        };
                        if !ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await;
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_seconds = (cpu_time() - cpu0).as_secs_f64();
    let receiver_cpu_seconds = cpu_delta(receiver_cpu0, process_cpu_time(receiver.pid()));
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {total} ceiling POSTs failed");
    }
    Ok(Pass {
        count: total,
        seconds,
        cpu_seconds,
        peak_rss_kib: peak_rss_kib(None).unwrap_or(0),
        events_per_s: None,
        receiver_cpu_seconds,
        publisher_cpu_seconds: None,
    })
}

/// CPU seconds between two readings of a process's CPU time.
fn cpu_delta(before: Option<Duration>, after: Option<Duration>) -> Option<f64> {
    Some(after?.checked_sub(before?)?.as_secs_f64())
}

/// A diagnostic: the same work in three phases, one after the other, each
/// with its own CPU time: publish every event (API only), fan them all out
/// (stream mapping), send every delivery (queue mapping). Tells where the
/// pipeline's CPU per delivery goes.
pub async fn phases(opts: &Options) -> anyhow::Result<Value> {
    let receiver = receiver::spawn(opts.receiver_threads)?;
    let probe = reqwest::Client::builder().no_proxy().build()?;
    let mut out = Vec::new();
    for &e in &opts.endpoints {
        let system = System::build(&dev::settings(Backend::Memory, None)).await?;
        let deliveries = system
            .memory
            .as_ref()
            .map(|m| m.deliveries.clone())
            .context("the memory backend exposes its delivery store")?;
        let gateway = Running::serve(&system, dev::loopback().await?, dev::JWT_SECRET.into())?;
        let api = ApiClient::new(&gateway.base_url())?;
        for _ in 0..e {
            api.create_endpoint(&receiver.url()).await?;
        }
        let expected = opts.events * e;
        let base = receiver.count(&probe).await?;

        let (cpu, t) = (cpu_time(), Instant::now());
        api.publish(
            opts.events,
            &dev::event_data(opts.data_bytes),
            opts.publish_concurrency,
        )
        .await?;
        let publish = ((cpu_time() - cpu).as_secs_f64(), t.elapsed().as_secs_f64());

        let (cpu, t) = (cpu_time(), Instant::now());
        let mut stream = StreamMapping::new(system.stream, system.fanout.clone());
        let mut fanned = 0;
        while fanned < opts.events && t.elapsed() < opts.timeout {
            fanned += stream.step(Duration::from_millis(100)).await;
        }
        let fanout = ((cpu_time() - cpu).as_secs_f64(), t.elapsed().as_secs_f64());

        let (cpu, t) = (cpu_time(), Instant::now());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mapping = QueueMapping::new(system.queue.clone(), system.sender.clone());
        let pollers = tokio::spawn(mapping.run(dev::POLLERS, stop_rx));
        while receiver.count(&probe).await? < base + expected as u64 && t.elapsed() < opts.timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while deliveries
            .count_by_status()
            .get(&DeliveryStatus::Delivered)
            .copied()
            .unwrap_or(0)
            < expected
            && t.elapsed() < opts.timeout
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let send = ((cpu_time() - cpu).as_secs_f64(), t.elapsed().as_secs_f64());
        let _ = stop_tx.send(true);
        let _ = pollers.await;
        gateway.stop().await;

        let n = expected as f64;
        let row = json!({
            "endpoints_per_event": e,
            "deliveries": expected,
            "publish_cpu_ms_per_event": round(publish.0 * 1000.0 / opts.events as f64, 4),
            "publish_cpu_ms_per_delivery": round(publish.0 * 1000.0 / n, 4),
            "fanout_cpu_ms_per_delivery": round(fanout.0 * 1000.0 / n, 4),
            "send_cpu_ms_per_delivery": round(send.0 * 1000.0 / n, 4),
            "total_cpu_ms_per_delivery": round((publish.0 + fanout.0 + send.0) * 1000.0 / n, 4),
            "events_published_per_s": round(opts.events as f64 / publish.1, 0),
            "deliveries_fanned_out_per_s": round(n / fanout.1, 0),
            "deliveries_sent_per_s": round(n / send.1, 0),
        });
        println!("phases E={e}: {row}");
        out.push(row);
    }
    Ok(json!({ "results": out }))
}
