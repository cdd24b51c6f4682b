//! `webhooks-sim`: runs the simulation over seeds and prints one line per
//! seed and a summary; `--seed N` replays one seed and prints every
//! violation.
//!
//!     webhooks-sim [--seeds 100] [--from 0] [--deliveries 10000] [--seed N] [--threads 2]

use std::process::ExitCode;
use std::time::Instant;

struct Args {
    from: u64,
    seeds: u64,
    deliveries: usize,
    threads: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        from: 0,
        seeds: 100,
        deliveries: 10_000,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, not {v:?}"))
        };
        match flag.as_str() {
            "--seed" => {
                args.from = number(value()?)?;
                args.seeds = 1;
            }
            "--from" => args.from = number(value()?)?,
            "--seeds" => args.seeds = number(value()?)?,
            "--deliveries" => args.deliveries = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--threads" => args.threads = usize::try_from(number(value()?)?).unwrap_or(1).max(1),
            "-h" | "--help" => {
                return Err("usage: webhooks-sim [--seeds N] [--from S] [--seed S] [--deliveries D] [--threads T]".into())
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    // The pipeline's own logs, when asked (RUST_LOG=info, say), to follow
    // one seed's deliveries.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .init();
    }
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let reports = webhooks_sim::run_seeds(
        args.from,
        args.seeds,
        args.deliveries,
        args.threads,
        |r| {
            println!(
            "seed {:>6}{}: {:>6} events {:>7} deliveries {:>7} POSTs {:>5.1} days {:>4} crashed {:>3} dropped {:?} violations {}\n    first attempts: {}; dead endpoint pending at most {}; longest step {:.1} s\n    retries after their time: {}\n    paths: {}",
            r.seed, r.kind.iter().map(|k| format!(" ({k})")).collect::<String>(), r.events, r.deliveries, r.posts, r.virtual_days, r.crashed, r.stream_dropped, r.by_status, r.violations.len(),
            r.lateness_summary(), r.dead_backlog, r.longest_step.as_secs_f64(),
            r.retry_lateness.clone().summary(), r.coverage.summary()
        );
        },
    );
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let deliveries: usize = reports.iter().map(|r| r.deliveries).sum();
    let days: f64 = reports.iter().map(|r| r.virtual_days).sum();
    println!(
        "{} seeds, {deliveries} deliveries, {days:.0} simulated days, {:.1} s wall, {} seeds with violations",
        reports.len(),
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    let (lateness, quiet_fault_free) = webhooks_sim::lateness_of(&reports);
    println!(
        "first-attempt lateness over all seeds: {}",
        webhooks_sim::summarize(lateness, quiet_fault_free)
    );
    println!(
        "retries after their time over all seeds: {}",
        webhooks_sim::retry_lateness_of(&reports).summary()
    );
    let coverage = webhooks_sim::coverage_of(&reports);
    println!("paths over all seeds: {}", coverage.summary());
    for r in &failed {
        println!("seed {} violated:", r.seed);
        // WEBHOOKS_SIM_ALL_VIOLATIONS=1: every one, not the first 20.
        let shown = if std::env::var_os("WEBHOOKS_SIM_ALL_VIOLATIONS").is_some() {
            usize::MAX
        } else {
            20
        };
        for v in r.violations.iter().take(shown) {
            println!("  {v}");
        }
        println!(
            "  replay: {}",
            webhooks_sim::replay_command(r.seed, args.deliveries)
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
