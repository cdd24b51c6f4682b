//! `webhooks-bench`: the benchmarks of issues 7, 14, 21 and 22. Each subcommand prints its
//! figures; `all` runs every one it can and writes them as JSON.
//! BENCHMARKS.md says how to run them and what they showed.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

mod aws_requests;
mod cold_start;
mod dev;
mod dev_rss;
mod e2e;
mod isolation;
mod measure;
mod noisy;
mod publisher;
mod receiver;
mod reconcile;
mod signing;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "webhooks-bench",
    about = "Benchmarks: end to end, AWS requests and cost, cold start, signing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Events from a publisher process through an in-process `webhooks dev`
    /// (memory backend) to a receiver process, against a bare sign+POST
    /// ceiling in the same run.
    E2e(E2eArgs),
    /// The `webhooks dev` binary's peak RSS over a long run (a million
    /// deliveries by default), and its deliveries per second.
    DevRss(DevRssArgs),
    /// AWS requests per delivery against moto (needs AWS_ENDPOINT_URL), and
    /// the cost per million deliveries they imply.
    AwsRequests(AwsArgs),
    /// Each Lambda binary started against a local Lambda Runtime API.
    ColdStart(ColdStartArgs),
    /// HMAC-SHA256 throughput next to `openssl speed -hmac sha256`.
    Signing(SigningArgs),
    /// Healthy endpoints' latency beside one that never answers.
    Noisy(noisy::NoisyArgs),
    /// Issue 21: a healthy org's latency beside another org's dead endpoint
    /// or many slow endpoints, against the same org alone, with `webhooks
    /// dev`'s default settings; and the other org's drain time.
    Isolation(isolation::IsolationArgs),
    /// Issue 22: one sweep pass queueing again 10 000 overdue deliveries'
    /// lost messages, in one org and among 1 000, on moto (needs
    /// AWS_ENDPOINT_URL), against the sweeper Lambda's budget.
    Reconcile(ReconcileArgs),
    /// Everything above, written as JSON.
    All(AllArgs),
    /// The receiver the end-to-end benchmarks start as a child process.
    Receiver(ReceiverArgs),
    /// The publisher the end-to-end benchmark starts as a child process:
    /// publishes N events through the API and prints the seconds it took.
    Publisher(PublisherArgs),
}

#[derive(Args, Clone)]
struct E2eArgs {
    /// Events to publish per run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Endpoints per event (every one subscribed to `*`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    endpoints: Vec<usize>,
    /// Runs per endpoint count; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Bytes of each event's `data`.
    #[arg(long, default_value_t = 1024)]
    data_bytes: usize,
    /// Publishing requests in flight.
    #[arg(long, default_value_t = 32)]
    publish_concurrency: usize,
    /// Upper bound of one run, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Receiver worker threads (1: one core at most).
    #[arg(long, default_value_t = 1)]
    receiver_threads: usize,
    /// Diagnostic instead: publish, fan out and send one after the other,
    /// with the CPU time of each phase (no ceiling).
    #[arg(long)]
    phases: bool,
    /// Where the events are published from.
    #[arg(long, value_enum, default_value = "process")]
    publisher: e2e::PublisherMode,
    /// The route they are published through (batch: 100 per request).
    #[arg(long, value_enum, default_value = "single")]
    publish_route: publisher::Route,
}

#[derive(Args, Clone)]
struct DevRssArgs {
    /// Deliveries to reach the receiver.
    #[arg(long, default_value_t = 1_000_000)]
    deliveries: usize,
    /// Endpoints per event.
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
    /// Bytes of each event's `data`.
    #[arg(long, default_value_t = 1024)]
    data_bytes: usize,
    /// Batch requests (100 events each) in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Most deliveries published but not yet received.
    #[arg(long, default_value_t = 20_000)]
    max_backlog: usize,
    /// The `webhooks` binary (default: the one next to this executable).
    #[arg(long)]
    webhooks_bin: Option<PathBuf>,
    /// An argument for `webhooks dev`, e.g. --dev-arg=--retain-deliveries=50000.
    /// Repeatable.
    #[arg(long = "dev-arg", allow_hyphen_values = true)]
    dev_args: Vec<String>,
    /// Stop early, and say so, if `webhooks dev`'s RSS passes this (MiB).
    #[arg(long, default_value_t = 4096)]
    rss_limit_mib: u64,
    /// Upper bound of the run, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
}

#[derive(Args, Clone)]
struct PublisherArgs {
    /// The API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    base_url: String,
    #[arg(long)]
    events: usize,
    /// Bytes of each event's `data`.
    #[arg(long, default_value_t = 1024)]
    data_bytes: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, value_enum, default_value = "single")]
    route: publisher::Route,
}

#[derive(Args, Clone)]
struct AwsArgs {
    /// Events to publish per endpoint count.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Endpoints per event, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    endpoints: Vec<usize>,
    #[arg(long, default_value_t = 1024)]
    data_bytes: usize,
    #[arg(long, default_value_t = 16)]
    publish_concurrency: usize,
    /// Upper bound of each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Also fan one event out to this many endpoints (0: skip).
    #[arg(long, default_value_t = 0)]
    wide: usize,
}

#[derive(Args, Clone)]
struct ColdStartArgs {
    /// Directory of the release function binaries (default:
    /// $CARGO_TARGET_DIR/release, else the workspace's target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "api,inbound,fanout,sender,sweeper"
    )]
    functions: Vec<String>,
    /// Upper bound of one start, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

#[derive(Args, Clone)]
struct SigningArgs {
    /// Body sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,65536")]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    #[arg(long, default_value = "/usr/bin/openssl")]
    openssl: String,
}

#[derive(Args, Clone)]
struct ReconcileArgs {
    /// Overdue deliveries per scenario.
    #[arg(long, default_value_t = 10_000)]
    deliveries: usize,
    /// Orgs they are spread among, one scenario each, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    orgs: Vec<usize>,
    /// Passes per scenario; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Args, Clone)]
struct AllArgs {
    /// Events per end-to-end run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Endpoints per event for the end-to-end runs (the plot's x axis).
    #[arg(long, value_delimiter = ',', default_value = "1,2,5")]
    endpoints: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events per endpoint count of the AWS request count.
    #[arg(long, default_value_t = 200)]
    aws_events: usize,
    /// Runs of each isolation measurement (0: skip the isolation benchmark).
    #[arg(long, default_value_t = 3)]
    isolation_runs: usize,
    /// Passes of each reconciler scenario (0: skip the reconciler benchmark).
    #[arg(long, default_value_t = 3)]
    reconcile_runs: usize,
    /// Deliveries of the `webhooks dev` RSS run (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    dev_rss_deliveries: usize,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the JSON goes (default: the workspace's target/bench/results.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ReceiverArgs {
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn e2e_options(a: &E2eArgs) -> e2e::Options {
    e2e::Options {
        events: a.events,
        endpoints: a.endpoints.clone(),
        runs: a.runs.max(1),
        data_bytes: a.data_bytes,
        publish_concurrency: a.publish_concurrency,
        timeout: Duration::from_secs(a.timeout_secs),
        receiver_threads: a.receiver_threads,
        publisher: a.publisher,
        publish_route: a.publish_route,
    }
}

fn dev_rss_options(a: &DevRssArgs) -> dev_rss::Options {
    dev_rss::Options {
        deliveries: a.deliveries,
        endpoints: a.endpoints,
        data_bytes: a.data_bytes,
        concurrency: a.concurrency.max(1),
        max_backlog: a.max_backlog,
        webhooks_bin: a
            .webhooks_bin
            .clone()
            .unwrap_or_else(dev_rss::default_webhooks_bin),
        dev_args: a.dev_args.clone(),
        rss_limit_mib: a.rss_limit_mib,
        timeout: Duration::from_secs(a.timeout_secs),
        log: workspace().join("target/bench/dev-rss.log"),
    }
}

fn aws_options(a: &AwsArgs, e2e_cpu: HashMap<usize, f64>) -> aws_requests::Options {
    aws_requests::Options {
        events: a.events,
        endpoints: a.endpoints.clone(),
        data_bytes: a.data_bytes,
        publish_concurrency: a.publish_concurrency,
        timeout: Duration::from_secs(a.timeout_secs),
        e2e_cpu_per_delivery: e2e_cpu,
    }
}

fn cold_start_options(a: &ColdStartArgs) -> cold_start::Options {
    cold_start::Options {
        bin_dir: a
            .bin_dir
            .clone()
            .unwrap_or_else(cold_start::default_bin_dir),
        runs: a.runs.max(1),
        functions: a.functions.clone(),
        timeout: Duration::from_secs(a.timeout_secs),
        log_dir: workspace().join("target/bench/cold-start"),
    }
}

fn signing_options(a: &SigningArgs) -> signing::Options {
    signing::Options {
        sizes: a.sizes.clone(),
        runs: a.runs.max(1),
        seconds: a.seconds,
        openssl: a.openssl.clone(),
    }
}

/// The machine the figures were measured on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "memory_gib": measure::round(mem_kib as f64 / 1048576.0, 1),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// CPU seconds per delivery of each endpoint count of an e2e result.
fn e2e_cpu(e2e: &Value) -> HashMap<usize, f64> {
    e2e["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    Some((
                        usize::try_from(r["endpoints_per_event"].as_u64()?).ok()?,
                        r["pipeline"]["cpu_s_per_1000_deliveries"].as_f64()? / 1000.0,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn all(a: AllArgs) -> anyhow::Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| workspace().join("target/bench/results.json"));
    let mut results = json!({
        "machine": machine(),
        "started_at": chrono::Utc::now().to_rfc3339(),
        "errors": {},
    });
    println!("machine: {}", results["machine"]);
    let section = |results: &mut Value, name: &str, r: anyhow::Result<Value>| match r {
        Ok(v) => results[name] = v,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            results["errors"][name] = json!(format!("{e:#}"));
        }
    };
    let signing = signing::run(&signing_options(&SigningArgs {
        sizes: vec![1024, 65536],
        runs: 5,
        seconds: 1.0,
        openssl: "/usr/bin/openssl".into(),
    }));
    section(&mut results, "signing", signing);
    let cold = cold_start::run(&cold_start_options(&ColdStartArgs {
        bin_dir: a.bin_dir.clone(),
        runs: 5,
        functions: cold_start::FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeout_secs: 30,
    }))
    .await;
    section(&mut results, "cold_start", cold);
    let e2e = e2e::run(&e2e_options(&E2eArgs {
        events: a.events,
        endpoints: a.endpoints.clone(),
        runs: a.runs,
        data_bytes: 1024,
        publish_concurrency: 32,
        timeout_secs: 600,
        receiver_threads: 1,
        phases: false,
        publisher: e2e::PublisherMode::Process,
        publish_route: publisher::Route::Single,
    }))
    .await;
    section(&mut results, "e2e", e2e);
    let cpu = e2e_cpu(&results["e2e"]);
    let aws = aws_requests::run(&aws_options(
        &AwsArgs {
            events: a.aws_events,
            endpoints: vec![1, 5],
            data_bytes: 1024,
            publish_concurrency: 16,
            timeout_secs: 300,
            wide: 0,
        },
        cpu,
    ))
    .await;
    section(&mut results, "aws_requests", aws);
    let wide = aws_requests::wide_fanout(1000, Duration::from_secs(300)).await;
    section(&mut results, "wide_fanout", wide);
    let noisy_run = async { noisy::run(&noisy::NoisyArgs::defaults()?.options()).await };
    section(&mut results, "noisy", noisy_run.await);
    if a.isolation_runs > 0 {
        let opts = isolation::IsolationArgs::full(a.isolation_runs).options();
        section(&mut results, "isolation", isolation::run(&opts).await);
    }
    if a.reconcile_runs > 0 {
        let opts = reconcile::Options {
            deliveries: 10_000,
            orgs: vec![1, 1000],
            runs: a.reconcile_runs,
        };
        section(&mut results, "reconcile", reconcile::run(&opts).await);
    }
    if a.dev_rss_deliveries > 0 {
        let rss = dev_rss::run(&dev_rss_options(&DevRssArgs {
            deliveries: a.dev_rss_deliveries,
            endpoints: 1,
            data_bytes: 1024,
            concurrency: 4,
            max_backlog: 20_000,
            webhooks_bin: None,
            dev_args: Vec::new(),
            rss_limit_mib: 4096,
            timeout_secs: 1800,
        }))
        .await;
        section(&mut results, "dev_rss", rss);
    }
    results["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn main() -> anyhow::Result<()> {
    webhooks_alloc::small_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Receiver(a) => receiver::run(a.port, a.threads),
        Command::Publisher(a) => {
            let job = publisher::Job {
                base_url: a.base_url,
                events: a.events,
                data_bytes: a.data_bytes,
                concurrency: a.concurrency,
                route: a.route,
            };
            publisher::check(&job)?;
            publisher::run(&job)
        }
        Command::DevRss(a) => {
            let v = runtime()?.block_on(dev_rss::run(&dev_rss_options(&a)))?;
            print(&v);
            Ok(())
        }
        Command::Signing(a) => {
            print(&signing::run(&signing_options(&a))?);
            Ok(())
        }
        Command::E2e(a) if a.phases => {
            let v = runtime()?.block_on(e2e::phases(&e2e_options(&a)))?;
            print(&v);
            Ok(())
        }
        Command::E2e(a) => {
            let v = runtime()?.block_on(e2e::run(&e2e_options(&a)))?;
            print(&v);
            Ok(())
        }
        Command::AwsRequests(a) => {
            let rt = runtime()?;
            let mut v = rt.block_on(aws_requests::run(&aws_options(&a, HashMap::new())))?;
            if a.wide > 0 {
                v["wide_fanout"] = rt.block_on(aws_requests::wide_fanout(
                    a.wide,
                    Duration::from_secs(a.timeout_secs),
                ))?;
            }
            print(&v);
            Ok(())
        }
        Command::ColdStart(a) => {
            let v = runtime()?.block_on(cold_start::run(&cold_start_options(&a)))?;
            print(&v);
            Ok(())
        }
        Command::Noisy(a) => {
            print(&runtime()?.block_on(noisy::run(&a.options()))?);
            Ok(())
        }
        Command::Isolation(a) => {
            print(&runtime()?.block_on(isolation::run(&a.options()))?);
            Ok(())
        }
        Command::Reconcile(a) => {
            let opts = reconcile::Options {
                deliveries: a.deliveries,
                orgs: a.orgs,
                runs: a.runs,
            };
            print(&runtime()?.block_on(reconcile::run(&opts))?);
            Ok(())
        }
        Command::All(a) => runtime()?.block_on(all(a)),
    }
}
