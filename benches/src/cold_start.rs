//! Issue 7 item 4: each Lambda binary started against a minimal local
//! Lambda Runtime API, timing process start -> first `next` (init) and ->
//! first response, with the child's peak RSS; and each binary's size and
//! zipped size.

use crate::measure::{median, peak_rss_kib, round};
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Every Lambda of `functions/`.
pub const FUNCTIONS: [&str; 5] = ["api", "inbound", "fanout", "sender", "sweeper"];
/// The token the inbound WhatsApp handshake is checked against.
const VERIFY_TOKEN: &str = "T";
const REQUEST_ID: &str = "00000000-0000-4000-8000-000000000001";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub bin_dir: PathBuf,
    pub runs: usize,
    pub functions: Vec<String>,
    /// Upper bound of one start.
    pub timeout: Duration,
    /// Where the children's logs go.
    pub log_dir: PathBuf,
}

/// The invocation event each function gets.
fn event_for(function: &str) -> Value {
    match function {
        "api" => api_gateway_event("GET", "/healthz", "", json!(null)),
        "inbound" => api_gateway_event(
            "GET",
            "/inbound/whatsapp",
            &format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=C"),
            json!({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "C"}),
        ),
        "fanout" | "sender" => json!({"Records": []}),
        _ => json!({}),
    }
}

/// An API Gateway HTTP API (payload 2.0) request event.
fn api_gateway_event(method: &str, path: &str, query: &str, params: Value) -> Value {
    let mut e = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": "bench.execute-api.us-east-1.amazonaws.com", "user-agent": "webhooks-bench"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "webhooks-bench"},
            "requestId": "bench-request",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000u64
        },
        "isBase64Encoded": false
    });
    if !params.is_null() {
        e["queryStringParameters"] = params;
    }
    e
}

/// What the runtime API saw of one start.
#[derive(Debug, Default)]
struct Seen {
    first_next: Option<Instant>,
    nexts: usize,
    response: Option<(Instant, String, String)>,
}

struct RuntimeApi {
    event: String,
    seen: Mutex<Seen>,
    responded: Notify,
}

impl RuntimeApi {
    async fn answer(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let now = Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reply = |status: u16, body: &str| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap_or_default()
        };
        if method == hyper::Method::GET && path == "/2018-06-01/runtime/invocation/next" {
            let first = {
                let mut seen = self.seen.lock().expect("runtime api lock");
                seen.nexts += 1;
                if seen.first_next.is_none() {
                    seen.first_next = Some(now);
                }
                seen.nexts == 1
            };
            if !first {
                // One invocation per start: later polls wait until the
                // process is stopped.
                std::future::pending::<()>().await;
            }
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            return hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("Lambda-Runtime-Aws-Request-Id", REQUEST_ID)
                .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                .header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:bench",
                )
                .header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                )
                .body(Full::new(Bytes::from(self.event.clone())))
                .unwrap_or_default();
        }
        let kind = if path.ends_with("/response") {
            Some("response")
        } else if path.ends_with("/init/error") {
            Some("init_error")
        } else if path.ends_with("/error") {
            Some("error")
        } else {
            None
        };
        match (method, kind) {
            (hyper::Method::POST, Some(kind)) => {
                {
                    let mut seen = self.seen.lock().expect("runtime api lock");
                    if seen.response.is_none() {
                        seen.response = Some((
                            now,
                            kind.to_string(),
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                    }
                }
                self.responded.notify_one();
                reply(202, r#"{"status":"OK"}"#)
            }
            _ => reply(404, r#"{"errorMessage":"unknown runtime API path"}"#),
        }
    }
}

/// One start of one function.
#[derive(Debug, Clone)]
struct Start {
    init_ms: f64,
    first_response_ms: f64,
    peak_rss_kib: u64,
    kind: String,
    body: String,
}

/// Environment common to every function: the Runtime API, Lambda's
/// variables, dummy credentials, every table and queue a function reads.
fn environment(function: &str, runtime: &str, resources: &Resources) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API".into(), runtime.into()),
        (
            "AWS_LAMBDA_FUNCTION_NAME".into(),
            format!("webhooks-{function}"),
        ),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            format!("/aws/lambda/webhooks-{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), "bench".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "bench".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "bench".into()),
        ("AWS_SESSION_TOKEN".into(), "bench".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        // Every AWS call goes to moto, or to a closed loopback port.
        ("AWS_ENDPOINT_URL".into(), resources.endpoint.clone()),
        // Fetched from Secrets Manager (moto) by the inbound function at
        // its first WhatsApp handshake, as deployed.
        (
            "WHATSAPP_VERIFY_TOKEN_ARN".into(),
            resources.verify_token_arn.clone(),
        ),
        (
            "WEBHOOKS_PUBLIC_BASE_URL".into(),
            "https://bench.example.com".into(),
        ),
        (
            "DELIVERY_QUEUE_URL".into(),
            resources.delivery_queue.clone(),
        ),
        (
            "DELIVERY_DLQ_URL".into(),
            resources.dead_letter_queue.clone(),
        ),
        (
            "ENDPOINT_SECRETS_KEY_ARN".into(),
            resources.endpoint_secrets_key.clone(),
        ),
    ];
    for table in [
        "events",
        "endpoints",
        "deliveries",
        "cursors",
        "idempotency",
        "inbound",
        "stats",
    ] {
        env.push((
            format!("{}_TABLE", table.to_ascii_uppercase()),
            format!("{}-{table}", resources.prefix),
        ));
    }
    env
}

/// Where the functions' AWS calls go.
struct Resources {
    endpoint: String,
    prefix: String,
    delivery_queue: String,
    dead_letter_queue: String,
    endpoint_secrets_key: String,
    /// The ARN of the WhatsApp verify token's secret.
    verify_token_arn: String,
    /// Tables and queues exist (moto).
    created: bool,
}

/// With `AWS_ENDPOINT_URL` set (moto), creates the tables and queues so the
/// sweeper has something to read; otherwise points at a closed port.
async fn resources() -> Resources {
    let prefix = format!("bench-cold-{}", std::process::id());
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        let config = webhooks_aws::sdk_config().await;
        let aws = webhooks_aws::AwsClients::from_config(&config);
        let names = webhooks_aws::resources::ResourceNames::new(&prefix);
        match webhooks_aws::resources::create_all(&aws, &names).await {
            Ok(made) => {
                let secret = aws_sdk_secretsmanager::Client::new(&config)
                    .create_secret()
                    .name(format!("{prefix}-whatsapp-verify-token"))
                    .secret_string(VERIFY_TOKEN)
                    .send()
                    .await;
                let verify_token_arn = match secret.map(|s| s.arn) {
                    Ok(Some(arn)) => arn,
                    other => {
                        eprintln!(
                            "cold-start: could not create the verify token's secret: {other:?}"
                        );
                        String::new()
                    }
                };
                return Resources {
                    endpoint,
                    prefix,
                    delivery_queue: made.queues.delivery,
                    dead_letter_queue: made.queues.dead_letter,
                    endpoint_secrets_key: made.endpoint_secrets_key,
                    verify_token_arn,
                    created: true,
                };
            }
            Err(e) => eprintln!("cold-start: could not create tables on {endpoint}: {e}"),
        }
    }
    Resources {
        endpoint: "http://127.0.0.1:9".into(),
        delivery_queue: format!("http://127.0.0.1:9/000000000000/{prefix}-deliveries"),
        dead_letter_queue: format!("http://127.0.0.1:9/000000000000/{prefix}-deliveries-dlq"),
        endpoint_secrets_key: format!("alias/{prefix}-endpoint-secrets"),
        verify_token_arn: format!(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:{prefix}-whatsapp-verify-token"
        ),
        prefix,
        created: false,
    }
}

async fn remove_resources(r: &Resources) {
    if !r.created {
        return;
    }
    let config = webhooks_aws::sdk_config().await;
    let aws = webhooks_aws::AwsClients::from_config(&config);
    crate::aws_requests::delete_resources(
        &aws,
        &webhooks_aws::resources::ResourceNames::new(&r.prefix),
    )
    .await;
}

/// Starts `binary` once against a fresh Runtime API.
async fn start_once(
    function: &str,
    binary: &Path,
    resources: &Resources,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<Start> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let runtime_addr = listener.local_addr()?.to_string();
    let api = Arc::new(RuntimeApi {
        event: event_for(function).to_string(),
        seen: Mutex::new(Seen::default()),
        responded: Notify::new(),
    });
    let server_api = api.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let api = server_api.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.env_clear()
        .envs(environment(function, &runtime_addr, resources))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    let outcome = loop {
        if api
            .seen
            .lock()
            .expect("runtime api lock")
            .response
            .is_some()
        {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Exited before answering (e.g. a missing variable).
            break Err(anyhow::anyhow!(
                "{function} exited with {status} before its first response; see {}",
                log.display()
            ));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "{function} gave no response within {timeout:?}; see {}",
                log.display()
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(5), api.responded.notified()).await;
    };
    // The child's peak RSS, just before it is stopped.
    let peak = peak_rss_kib(Some(pid)).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    outcome?;
    let seen = api.seen.lock().expect("runtime api lock");
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let (at, kind, body) = seen.response.clone().context("a response")?;
    Ok(Start {
        init_ms: seen.first_next.map(ms).unwrap_or(f64::NAN),
        first_response_ms: ms(at),
        peak_rss_kib: peak,
        kind,
        body,
    })
}

/// Size of a zip holding `data` as one deflated entry named `bootstrap`
/// (what cargo-lambda uploads): local header + data + central directory.
fn zipped_size(data: &[u8]) -> anyhow::Result<u64> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    let deflated = enc.finish()?.len() as u64;
    let name = "bootstrap".len() as u64;
    Ok(30 + name + deflated + 46 + name + 22)
}

/// The bench's default directory of release binaries: `$CARGO_TARGET_DIR/release`
/// when set, else the workspace's `target/release`.
pub fn default_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("release"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"),
    }
}

/// Starts every function `runs` times and returns the medians as JSON.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&opts.log_dir)?;
    let resources = resources().await;
    println!(
        "cold-start: binaries from {}; AWS calls go to {}{}",
        opts.bin_dir.display(),
        resources.endpoint,
        if resources.created {
            " (tables created)"
        } else {
            " (nothing listens there)"
        }
    );
    let mut results = Vec::new();
    for function in &opts.functions {
        let binary = opts.bin_dir.join(function);
        let bytes = std::fs::read(&binary).with_context(|| {
            format!(
                "reading {} (build with `cargo build --release --bins -p webhooks-fn-{function}`)",
                binary.display()
            )
        })?;
        let zip = zipped_size(&bytes)?;
        let log = opts.log_dir.join(format!("{function}.log"));
        let mut starts = Vec::new();
        for _ in 0..opts.runs {
            starts.push(start_once(function, &binary, &resources, opts.timeout, &log).await?);
        }
        let m = |f: fn(&Start) -> f64| median(&starts.iter().map(f).collect::<Vec<_>>());
        let last = starts.last().cloned().context("at least one run")?;
        let r = json!({
            "function": function,
            "init_ms": round(m(|s| s.init_ms), 2),
            "first_response_ms": round(m(|s| s.first_response_ms), 2),
            "peak_rss_mib": round(m(|s| s.peak_rss_kib as f64 / 1024.0), 1),
            "binary_mib": round(bytes.len() as f64 / 1048576.0, 2),
            "zip_mib": round(zip as f64 / 1048576.0, 2),
            "first_response_kind": last.kind,
            "first_response_body": last.body.chars().take(300).collect::<String>(),
            "each_run_init_ms": starts.iter().map(|s| round(s.init_ms, 2)).collect::<Vec<_>>(),
        });
        println!(
            "  {function}: init {} ms, first response {} ms ({}), peak RSS {} MiB, binary {} MiB, zip {} MiB",
            r["init_ms"], r["first_response_ms"], r["first_response_kind"], r["peak_rss_mib"], r["binary_mib"], r["zip_mib"]
        );
        results.push(r);
    }
    remove_resources(&resources).await;
    Ok(json!({
        "runs": opts.runs,
        "bin_dir": opts.bin_dir.display().to_string(),
        "aws_endpoint": resources.endpoint,
        "tables_created": resources.created,
        "results": results,
    }))
}
