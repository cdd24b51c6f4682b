//! Issue 7 item 5: HMAC-SHA256 throughput of the signature the sender
//! computes (`x_signature`: key setup, MAC, hex) and of the raw `hmac` +
//! `sha2` MAC, next to `openssl speed -hmac sha256` on the same machine.

use crate::measure::{median, round};
use anyhow::{bail, Context as _};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::process::Command;
use std::time::{Duration, Instant};
use webhooks_domain::signing::x_signature;
use webhooks_domain::Secret;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub runs: usize,
    /// How long each measurement runs.
    pub seconds: f64,
    pub openssl: String,
}

/// Bytes per second of `f` over `body`, run for about `seconds`.
fn throughput(body: &[u8], seconds: f64, mut f: impl FnMut(&[u8]) -> usize) -> f64 {
    let limit = Duration::from_secs_f64(seconds);
    // Warm up (CPU frequency, caches).
    for _ in 0..16 {
        std::hint::black_box(f(std::hint::black_box(body)));
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut sink = 0usize;
    loop {
        for _ in 0..64 {
            sink = sink.wrapping_add(f(std::hint::black_box(body)));
            bytes += body.len() as u64;
        }
        if start.elapsed() >= limit {
            break;
        }
    }
    std::hint::black_box(sink);
    bytes as f64 / start.elapsed().as_secs_f64()
}

/// `openssl speed -mr -hmac sha256 -bytes N -seconds S`, in bytes per second.
fn openssl_speed(openssl: &str, size: usize, seconds: f64) -> anyhow::Result<f64> {
    let secs = (seconds.ceil() as u64).max(1).to_string();
    let out = Command::new(openssl)
        .args([
            "speed",
            "-mr",
            "-hmac",
            "sha256",
            "-bytes",
            &size.to_string(),
            "-seconds",
            &secs,
        ])
        .output()
        .with_context(|| format!("running {openssl} speed"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Machine-readable result line: +F:<n>:hmac(sha256):<bytes per second>
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("+F:") {
            if let Some(v) = rest
                .rsplit(':')
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                return Ok(v);
            }
        }
    }
    bail!("no result line in openssl speed output: {text}")
}

fn openssl_version(openssl: &str) -> String {
    Command::new(openssl)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unavailable".into())
}

/// Runs every size `runs` times and returns the medians as JSON.
pub fn run(opts: &Options) -> anyhow::Result<Value> {
    let secret = Secret::generate();
    let key = secret.expose().as_bytes().to_vec();
    let version = openssl_version(&opts.openssl);
    println!(
        "signing: {} runs of {:.1} s per figure; reference: {version}",
        opts.runs, opts.seconds
    );
    let mut results = Vec::new();
    for &size in &opts.sizes {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let (mut ours, mut raw, mut reference) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.runs {
            ours.push(throughput(&body, opts.seconds, |b| {
                x_signature(&secret, b).len()
            }));
            raw.push(throughput(&body, opts.seconds, |b| {
                let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
                m.update(b);
                m.finalize().into_bytes()[0] as usize
            }));
            match openssl_speed(&opts.openssl, size, opts.seconds) {
                Ok(v) => reference.push(v),
                Err(e) => eprintln!("  openssl: {e:#}"),
            }
        }
        let mb = |v: &[f64]| median(v) / 1e6;
        let (o, r, s) = (mb(&ours), mb(&raw), mb(&reference));
        let ratio = |x: f64| if s > 0.0 { round(x / s, 3) } else { f64::NAN };
        println!(
            "  {size} B: x_signature {o:.0} MB/s, hmac+sha2 {r:.0} MB/s, openssl {s:.0} MB/s; x_signature/openssl {:.2}, raw/openssl {:.2}",
            ratio(o),
            ratio(r)
        );
        results.push(json!({
            "bytes": size,
            "x_signature_mb_s": round(o, 1),
            "hmac_sha2_mb_s": round(r, 1),
            "openssl_mb_s": round(s, 1),
            "x_signature_to_openssl": ratio(o),
            "hmac_sha2_to_openssl": ratio(r),
            "each_run_x_signature_mb_s": ours.iter().map(|v| round(v / 1e6, 1)).collect::<Vec<_>>(),
            "each_run_openssl_mb_s": reference.iter().map(|v| round(v / 1e6, 1)).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "runs": opts.runs,
        "seconds_per_measurement": opts.seconds,
        "openssl": version,
        "sha_ni": std::fs::read_to_string("/proc/cpuinfo").map(|c| c.contains(" sha_ni")).unwrap_or(false),
        "results": results,
    }))
}
