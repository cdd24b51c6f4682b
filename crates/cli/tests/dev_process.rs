//! `webhooks dev` as a real process, talked to over HTTP only, delivering to
//! a real receiver on 127.0.0.1. The memory backend always; the aws backend
//! against the moto server that `make test` starts.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use webhooks_testkit::signatures::{verify_delivery, verify_standard};
use webhooks_testkit::{Receiver, Reply};

const SECRET: &str = "test-jwt-secret";

/// A running `webhooks dev`; killed when dropped.
struct Dev {
    child: Child,
    base: String,
    http: reqwest::Client,
    /// The rest of its stdout, after `listening on`.
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webhooks"))
            .args(["dev", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start webhooks dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line).expect("read first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Dev {
            child,
            base,
            http: reqwest::Client::new(),
            stdout,
        }
    }

    fn token(org: &str, scope: &str) -> String {
        webhooks::token::issue(SECRET, org, scope, None, Duration::from_secs(600)).expect("token")
    }

    async fn call(&self, method: &str, path: &str, org: &str, body: Option<Value>) -> (u16, Value) {
        let token = Dev::token(org, "webhooks:manage events:write");
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.base),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_endpoint(&self, org: &str, url: &str, types: &[&str]) -> Value {
        let (status, ep) = self
            .call(
                "POST",
                "/v1/endpoints",
                org,
                Some(json!({"url": url, "event_types": types})),
            )
            .await;
        assert_eq!(status, 201, "{ep}");
        ep
    }

    async fn publish(&self, org: &str, t: &str, data: Value) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/events",
                org,
                Some(json!({"type": t, "data": data})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("event id").to_string()
    }

    async fn deliveries(&self, org: &str, endpoint_id: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                "GET",
                &format!("/v1/endpoints/{endpoint_id}/deliveries"),
                org,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the endpoint's deliveries all have `status` (and there are `n`).
    async fn wait_statuses(
        &self,
        org: &str,
        endpoint_id: &str,
        n: usize,
        status: &str,
    ) -> Vec<Value> {
        for _ in 0..150 {
            let ds = self.deliveries(org, endpoint_id).await;
            if ds.len() == n && ds.iter().all(|d| d["status"] == status) {
                return ds;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "deliveries of {endpoint_id} never all {status}: {:?}",
            self.deliveries(org, endpoint_id).await
        );
    }
}

#[tokio::test]
async fn memory_backend_delivers_a_signed_webhook() {
    let rx = Receiver::always(204).await;
    let dev = Dev::start(&[]);
    let ep = dev
        .create_endpoint("acme", &rx.url("/hooks"), &["invoice.paid"])
        .await;
    let secret = ep["secret"].as_str().expect("secret").to_string();
    let event_id = dev
        .publish("acme", "invoice.paid", json!({"invoice_id": "in_1"}))
        .await;
    assert!(
        rx.wait_for(1, Duration::from_secs(15)).await,
        "nothing delivered"
    );
    let got = &rx.received()[0];
    verify_delivery(got, &secret).expect("both signatures verify");
    assert_eq!(got.header("webhook-id"), Some(event_id.as_str()));
    let body: Value = serde_json::from_slice(&got.body).expect("json body");
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(body["data"]["invoice_id"], "in_1");
    dev.wait_statuses("acme", ep["id"].as_str().expect("id"), 1, "delivered")
        .await;
    // Another org sees none of it.
    let (status, _) = dev
        .call(
            "GET",
            &format!("/v1/endpoints/{}", ep["id"].as_str().expect("id")),
            "other",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_batch_is_answered_per_event_and_its_accepted_events_delivered() {
    let rx = Receiver::always(204).await;
    let dev = Dev::start(&[]);
    let ep = dev
        .create_endpoint("acme", &rx.url("/hooks"), &["invoice.paid"])
        .await;
    let events = json!({"events": [
        {"type": "invoice.paid", "data": {"invoice_id": "in_1"}, "idempotency_key": "in_1"},
        {"type": "invoice.created", "data": {}},
        {"type": "invoice.paid", "data": {"invoice_id": "in_2"}},
    ]});
    let (status, body) = dev
        .call("POST", "/v1/events/batch", "acme", Some(events.clone()))
        .await;
    assert_eq!(status, 207, "{body}");
    let results = body["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 3, "{body}");
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[1]["status"], 400);
    assert_eq!(results[1]["error"]["code"], "invalid_request");
    assert_eq!(results[2]["status"], 202);
    assert!(
        rx.wait_for(2, Duration::from_secs(15)).await,
        "the batch's events were not delivered"
    );
    let mut delivered: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_string())
        .collect();
    delivered.sort();
    let mut accepted = vec![
        results[0]["id"].as_str().expect("id").to_string(),
        results[2]["id"].as_str().expect("id").to_string(),
    ];
    accepted.sort();
    assert_eq!(delivered, accepted);
    dev.wait_statuses("acme", ep["id"].as_str().expect("id"), 2, "delivered")
        .await;
    // The keyed event again: its first id, nothing new delivered.
    let (status, again) = dev
        .call(
            "POST",
            "/v1/events/batch",
            "acme",
            Some(json!({"events": [events["events"][0]]})),
        )
        .await;
    assert_eq!(status, 207, "{again}");
    assert_eq!(again["results"][0], results[0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test]
async fn retries_dead_letter_then_manual_retry_and_recover_redeliver() {
    // Fails until told otherwise.
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let rx = Receiver::start(move |_, _| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Status(200)
        } else {
            Reply::Status(500)
        }
    })
    .await;
    let dev = Dev::start(&["--retry-schedule", "200ms,200ms"]);
    let ep = dev.create_endpoint("acme", &rx.url("/"), &["*"]).await;
    let epid = ep["id"].as_str().expect("id");
    dev.publish("acme", "lead_won", json!({"n": 1})).await;
    dev.publish("acme", "lead_lost", json!({"n": 2})).await;
    let dead = dev.wait_statuses("acme", epid, 2, "dead_lettered").await;
    assert_eq!(rx.count(), 6, "three attempts each");
    let one = dead[0]["id"].as_str().expect("delivery id");
    let (status, detail) = dev
        .call("GET", &format!("/v1/deliveries/{one}"), "acme", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(3));
    assert_eq!(detail["attempts"][0]["status_code"], 500);

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = dev
        .call("POST", &format!("/v1/deliveries/{one}/retry"), "acme", None)
        .await;
    assert_eq!(status, 202, "{body}");
    for _ in 0..100 {
        let (_, d) = dev
            .call("GET", &format!("/v1/deliveries/{one}"), "acme", None)
            .await;
        if d["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = dev
        .call(
            "POST",
            &format!("/v1/endpoints/{epid}/recover"),
            "acme",
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["requeued"], 1, "only the one still dead-lettered");
    dev.wait_statuses("acme", epid, 2, "delivered").await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_overlap() {
    let rx = Receiver::always(200).await;
    let dev = Dev::start(&[]);
    let ep = dev.create_endpoint("acme", &rx.url("/"), &["*"]).await;
    let epid = ep["id"].as_str().expect("id");
    let old = ep["secret"].as_str().expect("secret").to_string();
    let (status, rotated) = dev
        .call(
            "POST",
            &format!("/v1/endpoints/{epid}/rotate-secret"),
            "acme",
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().expect("new secret").to_string();
    assert_ne!(new, old);
    dev.publish("acme", "client.created", json!({})).await;
    assert!(rx.wait_for(1, Duration::from_secs(15)).await);
    let got = &rx.received()[0];
    assert_eq!(
        got.header("webhook-signature")
            .map(|s| s.split(' ').count()),
        Some(2)
    );
    verify_delivery(got, &new).expect("new secret signs X-Signature and webhook-signature");
    verify_standard(got, &old).expect("old secret still verifies during the overlap");
    let (_, revealed) = dev
        .call("GET", &format!("/v1/endpoints/{epid}/secret"), "acme", None)
        .await;
    assert_eq!(revealed["secret"], new.as_str());
}

#[tokio::test]
async fn deleting_an_endpoint_cancels_its_pending_deliveries() {
    let rx = Receiver::always(503).await;
    let dev = Dev::start(&["--retry-schedule", "30s"]);
    let ep = dev.create_endpoint("acme", &rx.url("/"), &["*"]).await;
    let epid = ep["id"].as_str().expect("id").to_string();
    dev.publish("acme", "task.completed", json!({})).await;
    assert!(rx.wait_for(1, Duration::from_secs(15)).await);
    let pending = dev.wait_statuses("acme", &epid, 1, "pending").await;
    let did = pending[0]["id"].as_str().expect("delivery id").to_string();
    let (status, _) = dev
        .call("DELETE", &format!("/v1/endpoints/{epid}"), "acme", None)
        .await;
    assert_eq!(status, 204);
    let (status, d) = dev
        .call("GET", &format!("/v1/deliveries/{did}"), "acme", None)
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "canceled");
}

#[tokio::test]
// libc::kill: the one way to send SIGTERM to the child without a new dependency.
#[allow(unsafe_code)]
async fn sigterm_stops_it_cleanly() {
    let mut dev = Dev::start(&[]);
    let (status, _) = dev.call("GET", "/healthz", "acme", None).await;
    assert_eq!(status, 200);
    let pid = i32::try_from(dev.child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut code = None;
    for _ in 0..100 {
        if let Some(s) = dev.child.try_wait().expect("wait") {
            code = s.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, Some(0), "exits 0 after SIGTERM");
}

#[tokio::test]
async fn aws_backend_on_moto_delivers_a_signed_webhook() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto; run `make test`"
    );
    let prefix = webhooks_testkit::aws::unique_prefix("dev");
    let rx = Receiver::always(200).await;
    let dev = Dev::start(&[
        "--backend",
        "aws",
        "--create-resources",
        "--resource-prefix",
        &prefix,
        "--retry-schedule",
        "1s",
    ]);
    let ep = dev
        .create_endpoint("acme", &rx.url("/"), &["payment_failed"])
        .await;
    let secret = ep["secret"].as_str().expect("secret").to_string();
    dev.publish("acme", "payment_failed", json!({"invoice": "in_9"}))
        .await;
    assert!(
        rx.wait_for(1, Duration::from_secs(30)).await,
        "nothing delivered through DynamoDB/SQS"
    );
    verify_delivery(&rx.received()[0], &secret).expect("signatures");
    dev.wait_statuses("acme", ep["id"].as_str().expect("id"), 1, "delivered")
        .await;
}

/// `--max-endpoints-per-org 2`: the third create of an org is 422
/// `limit_exceeded` naming the limit, and writes nothing; another org has
/// its own two; a delete frees a slot.
async fn two_endpoints_per_org(extra: &[&str]) {
    let mut args = vec!["--max-endpoints-per-org", "2"];
    args.extend(extra);
    let dev = Dev::start(&args);
    let url = "http://127.0.0.1:9/hook";
    let first = dev.create_endpoint("acme", url, &["*"]).await;
    dev.create_endpoint("acme", url, &["*"]).await;
    let third = json!({"url": "http://127.0.0.1:9/third", "event_types": ["*"]});
    let (status, body) = dev
        .call("POST", "/v1/endpoints", "acme", Some(third.clone()))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("limit of 2 endpoints") && message.contains("max_endpoints_per_org"),
        "{message}"
    );
    let listed = |org: &'static str| {
        let dev = &dev;
        async move {
            let (status, body) = dev.call("GET", "/v1/endpoints", org, None).await;
            assert_eq!(status, 200, "{body}");
            body["data"].as_array().cloned().unwrap_or_default()
        }
    };
    let held = listed("acme").await;
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|e| e["url"] == url), "{held:?}");
    // Another org has slots of its own.
    dev.create_endpoint("globex", url, &["*"]).await;
    dev.create_endpoint("globex", url, &["*"]).await;
    // A delete frees one slot, and only one.
    let id = first["id"].as_str().expect("id");
    let (status, body) = dev
        .call("DELETE", &format!("/v1/endpoints/{id}"), "acme", None)
        .await;
    assert_eq!(status, 204, "{body}");
    dev.create_endpoint("acme", "http://127.0.0.1:9/third", &["*"])
        .await;
    let (status, body) = dev.call("POST", "/v1/endpoints", "acme", Some(third)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(listed("acme").await.len(), 2);
    assert_eq!(listed("globex").await.len(), 2);
}

#[tokio::test]
async fn max_endpoints_per_org_refuses_the_third_create() {
    two_endpoints_per_org(&[]).await;
}

#[tokio::test]
async fn aws_backend_on_moto_refuses_the_third_create() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto; run `make test`"
    );
    let prefix = webhooks_testkit::aws::unique_prefix("limit");
    two_endpoints_per_org(&[
        "--backend",
        "aws",
        "--create-resources",
        "--resource-prefix",
        &prefix,
    ])
    .await;
}

#[tokio::test]
async fn max_endpoints_per_org_below_one_is_a_usage_error() {
    for bad in ["0", "-3", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_webhooks"))
            .args(["dev", "--listen", "127.0.0.1:0"])
            .arg(format!("--max-endpoints-per-org={bad}"))
            .output()
            .expect("run webhooks dev");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--max-endpoints-per-org"), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_webhooks"))
        .args(["dev", "--help"])
        .output()
        .expect("run webhooks dev --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--max-endpoints-per-org")
            && help.contains("WEBHOOKS_MAX_ENDPOINTS_PER_ORG")
            && help.contains("limit_exceeded"),
        "{help}"
    );
}

/// The operator's webhook secret of the tests (whsec_ + base64 of 32 bytes).
const OPS_SECRET: &str = "whsec_b3BzLW5vdGlmaWNhdGlvbnMtb2YtdGhlLXRlc3RzISE=";

/// The operational notifications an operator receiver got: each one's
/// signatures checked twice, by the testkit's independent HMAC code and by
/// the platform's own verifier, its headers matched to its body; returned
/// as bodies.
fn notices(rx: &Receiver) -> Vec<Value> {
    let secret = webhooks_domain::Secret::parse(OPS_SECRET).expect("ops secret");
    rx.received()
        .iter()
        .map(|got| {
            verify_delivery(got, OPS_SECRET).expect("independent check of both signatures");
            let ts: i64 = got
                .header("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .expect("webhook-timestamp");
            let id = got.header("webhook-id").expect("webhook-id");
            assert!(webhooks_domain::signing::verify_standard(
                &secret,
                id,
                ts,
                &got.body,
                got.header("webhook-signature").expect("webhook-signature"),
            ));
            assert!(webhooks_domain::signing::verify_x_signature(
                &secret,
                &got.body,
                got.header("x-signature").expect("x-signature"),
            ));
            let body: Value = serde_json::from_slice(&got.body).expect("json body");
            assert_eq!(body["id"], id, "webhook-id is the notice's id");
            assert_eq!(
                got.header("x-webhook-event"),
                body["type"].as_str(),
                "X-Webhook-Event is its type"
            );
            assert!(got
                .header("x-webhook-delivery")
                .is_some_and(|d| d.starts_with("ops_")));
            assert!(got.header("x-webhook-attempt").is_some());
            assert_eq!(got.header("content-type"), Some("application/json"));
            let keys: Vec<&str> = body
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys.len(), 4, "{body}");
            for k in ["id", "type", "created_at", "data"] {
                assert!(keys.contains(&k), "{body}");
            }
            body
        })
        .collect()
}

fn of_type<'a>(notices: &'a [Value], t: &str) -> Vec<&'a Value> {
    notices.iter().filter(|n| n["type"] == t).collect()
}

/// Waits until the operator got `n` notifications of type `t`, then a while
/// longer, so that a duplicate would have arrived too.
async fn settle(ops: &Receiver, t: &str, n: usize) -> Vec<Value> {
    for _ in 0..150 {
        if of_type(&notices(ops), t).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    notices(ops)
}

fn ops_flags(ops: &Receiver) -> Vec<String> {
    vec![
        "--ops-webhook-url".into(),
        ops.url("/ops"),
        "--ops-webhook-secret".into(),
        OPS_SECRET.into(),
    ]
}

const ORG_TYPES: [&str; 11] = [
    "lead_won",
    "lead_lost",
    "proposal_accepted",
    "meeting.booked",
    "invoice.paid",
    "payment_failed",
    "project.completed",
    "task.completed",
    "client.created",
    "billing.suspended",
    "survey.submitted",
];

/// An endpoint answering 410 is disabled once, whatever number of its
/// deliveries meet the 410 at once: exactly one `endpoint.disabled`. Its
/// deliveries each give one `delivery.dead_lettered`; enabling it again
/// (twice) gives exactly one `endpoint.enabled`. Nothing operational
/// reaches the org's endpoint.
async fn gone_disables_once(extra: &[&str]) {
    let ops = Receiver::always(204).await;
    let gone = Receiver::always(410).await;
    let mut args: Vec<String> = ops_flags(&ops);
    args.extend(["--retry-schedule".to_string(), "200ms,200ms".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = Dev::start(&args);
    let ep = dev.create_endpoint("acme", &gone.url("/"), &["*"]).await;
    let epid = ep["id"].as_str().expect("id");
    for n in 0..3 {
        dev.publish("acme", "lead_won", json!({"n": n})).await;
    }
    // Events fanned out before the disable are dead-lettered (410, or
    // endpoint_disabled once the schedule runs out); later ones make no
    // delivery at all.
    // The three events may be fanned out over several stream batches: the
    // count is taken once every delivery listed is dead-lettered and the
    // listing has held still for a second.
    let (mut n, mut still) = (0, 0);
    for _ in 0..300 {
        let ds = dev.deliveries("acme", epid).await;
        if !ds.is_empty() && ds.iter().all(|d| d["status"] == "dead_lettered") {
            still = if ds.len() == n { still + 1 } else { 0 };
            n = ds.len();
            if still >= 10 {
                break;
            }
        } else {
            still = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 1, "no delivery dead-lettered");
    let got = settle(&ops, "delivery.dead_lettered", n).await;
    let disabled = of_type(&got, "endpoint.disabled");
    assert_eq!(disabled.len(), 1, "exactly one endpoint.disabled: {got:?}");
    assert_eq!(
        disabled[0]["data"],
        json!({"endpoint_id": epid, "org_id": "acme", "reason": "the endpoint answered 410 Gone"})
    );
    let dead = of_type(&got, "delivery.dead_lettered");
    assert_eq!(dead.len(), n, "one per delivery: {got:?}");
    let mut dead_ids: Vec<&str> = dead
        .iter()
        .map(|n| n["data"]["delivery_id"].as_str().expect("delivery_id"))
        .collect();
    dead_ids.sort_unstable();
    dead_ids.dedup();
    assert_eq!(dead_ids.len(), n);
    assert_eq!(got.len(), n + 1, "nothing else: {got:?}");

    // Enabled again, twice: one transition, one notice.
    for _ in 0..2 {
        let (status, body) = dev
            .call(
                "PATCH",
                &format!("/v1/endpoints/{epid}"),
                "acme",
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let got = settle(&ops, "endpoint.enabled", 1).await;
    let enabled = of_type(&got, "endpoint.enabled");
    assert_eq!(enabled.len(), 1, "{got:?}");
    assert_eq!(
        enabled[0]["data"],
        json!({"endpoint_id": epid, "org_id": "acme"})
    );
    // The org's endpoint got only its own event types, never an operational one.
    for request in gone.received() {
        let t = request.header("x-webhook-event").expect("event type");
        assert!(ORG_TYPES.contains(&t), "{t} reached an org endpoint");
        assert_ne!(request.path, "/ops");
    }
}

#[tokio::test]
async fn a_410_sends_exactly_one_endpoint_disabled_to_the_operator() {
    gone_disables_once(&[]).await;
}

#[tokio::test]
async fn a_dead_letter_sends_exactly_one_delivery_dead_lettered_retried_until_delivered() {
    let failing = Receiver::always(500).await;
    // The operator's receiver is down for its first request: the notice is
    // retried like any delivery.
    let ops = Receiver::start(|n, _| {
        if n == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let mut args = ops_flags(&ops);
    args.extend(["--retry-schedule".to_string(), "200ms,200ms".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = Dev::start(&args);
    let ep = dev
        .create_endpoint("acme", &failing.url("/"), &["invoice.paid"])
        .await;
    let epid = ep["id"].as_str().expect("id");
    dev.publish("acme", "invoice.paid", json!({"invoice_id": "in_7"}))
        .await;
    let dead = dev.wait_statuses("acme", epid, 1, "dead_lettered").await;
    let got = settle(&ops, "delivery.dead_lettered", 2).await;
    // Two requests of the same notice: the 503, then its retry.
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], got[1], "the retry carries the same body");
    let received = ops.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].header("x-webhook-attempt"), Some("1"));
    assert_eq!(received[1].header("x-webhook-attempt"), Some("2"));
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    assert_eq!(
        got[1]["data"],
        json!({
            "delivery_id": dead[0]["id"],
            "endpoint_id": epid,
            "org_id": "acme",
            "event_type": "invoice.paid",
            "last_error": "HTTP 500",
        })
    );
    assert_eq!(got[1]["type"], "delivery.dead_lettered");
    assert!(of_type(&got, "endpoint.disabled").is_empty());
}

#[tokio::test]
async fn ops_webhook_flags_are_checked_and_the_secret_never_echoed() {
    let out = Command::new(env!("CARGO_BIN_EXE_webhooks"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--ops-webhook-url",
            "http://127.0.0.1:9/ops",
            "--ops-webhook-secret",
            "whsec_not-base64-secret!!",
        ])
        .output()
        .expect("run webhooks dev");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ops-webhook-secret"), "{stderr}");
    assert!(!stderr.contains("not-base64-secret"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_webhooks"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--ops-webhook-url",
            "http://127.0.0.1:9/",
        ])
        .output()
        .expect("run webhooks dev");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a URL without its secret is a usage error"
    );
}

#[tokio::test]
async fn aws_backend_on_moto_sends_exactly_one_endpoint_disabled() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto; run `make test`"
    );
    let prefix = webhooks_testkit::aws::unique_prefix("ops");
    gone_disables_once(&[
        "--backend",
        "aws",
        "--create-resources",
        "--resource-prefix",
        &prefix,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_every_prints_a_one_line_summary() {
    let rx = Receiver::always(200).await;
    let mut dev = Dev::start(&["--stats-every", "1s"]);
    let ep = dev.create_endpoint("acme", &rx.url("/"), &["*"]).await;
    dev.publish("acme", "lead_won", json!({})).await;
    assert!(rx.wait_for(1, Duration::from_secs(15)).await);
    // Lines come every second; the one after the delivery counts it.
    let mut seen = Vec::new();
    let found = tokio::task::block_in_place(|| {
        for _ in 0..20 {
            let mut line = String::new();
            if dev.stdout.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            seen.push(line.clone());
            if line.starts_with("stats: attempts 1 (delivered 1)")
                && line.contains("ms · queue age p95 ")
                && !line.trim_end().ends_with('-')
            {
                return true;
            }
        }
        false
    });
    assert!(found, "no summary counted the delivery: {seen:?}");
    assert!(seen.iter().all(|l| l.starts_with("stats: ")), "{seen:?}");
    dev.wait_statuses("acme", ep["id"].as_str().expect("id"), 1, "delivered")
        .await;
}

/// `GET /v1/endpoints/{id}/stats` and the listing's health summary against
/// a known run, answered from the figures the writes keep: three events to
/// an endpoint that fails its first request once (one failed attempt, three
/// delivered), one to an endpoint answering 410 (dead-lettered).
async fn stats_of_a_known_run(extra: &[&str]) {
    let flaky = Receiver::start(|n, _| {
        if n == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let gone = Receiver::always(410).await;
    let mut args = vec!["--retry-schedule", "200ms,200ms"];
    args.extend(extra);
    let dev = Dev::start(&args);
    let ok = dev
        .create_endpoint("acme", &flaky.url("/"), &["lead_won"])
        .await;
    let okid = ok["id"].as_str().expect("id");
    let bad = dev
        .create_endpoint("acme", &gone.url("/"), &["lead_lost"])
        .await;
    let badid = bad["id"].as_str().expect("id");
    dev.publish("acme", "lead_won", json!({"n": 1})).await;
    dev.wait_statuses("acme", okid, 1, "delivered").await;
    for n in 2..=3 {
        dev.publish("acme", "lead_won", json!({"n": n})).await;
    }
    dev.publish("acme", "lead_lost", json!({})).await;
    dev.wait_statuses("acme", okid, 3, "delivered").await;
    dev.wait_statuses("acme", badid, 1, "dead_lettered").await;

    let (status, s) = dev
        .call("GET", &format!("/v1/endpoints/{okid}/stats"), "acme", None)
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (
            &s["delivered"],
            &s["dead_lettered"],
            &s["pending"],
            &s["failed_attempts"]
        ),
        (&json!(3), &json!(0), &json!(0), &json!(1)),
        "{s}"
    );
    assert_eq!(s["success_rate"], 1.0);
    assert!(s["latency_ms"]["p50"].as_u64().is_some(), "{s}");
    assert!(s["latency_ms"]["p95"].as_u64().is_some(), "{s}");
    let (_, s) = dev
        .call("GET", &format!("/v1/endpoints/{badid}/stats"), "acme", None)
        .await;
    assert_eq!(
        (&s["delivered"], &s["dead_lettered"], &s["failed_attempts"]),
        (&json!(0), &json!(1), &json!(1)),
        "{s}"
    );
    assert_eq!(s["success_rate"], 0.0);
    // A window that starts in a later hour holds none of it.
    let (_, s) = dev
        .call(
            "GET",
            &format!("/v1/endpoints/{okid}/stats?since=2999-01-01T00:00:00Z"),
            "acme",
            None,
        )
        .await;
    assert_eq!(s["delivered"], 0, "{s}");
    // The listing carries each endpoint's last day.
    let (status, list) = dev.call("GET", "/v1/endpoints", "acme", None).await;
    assert_eq!(status, 200, "{list}");
    let health = |id: &str| {
        list["data"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["id"] == id))
            .map(|e| e["health"].clone())
            .expect("listed")
    };
    assert_eq!(
        health(okid),
        json!({"window_hours": 24, "delivered": 3, "dead_lettered": 0, "pending": 0, "success_rate": 1.0})
    );
    assert_eq!(health(badid)["dead_lettered"], 1);
    // Retried by hand, the dead letter moves back to pending in the figures.
    let (_, deliveries) = dev
        .call(
            "GET",
            &format!("/v1/endpoints/{badid}/deliveries"),
            "acme",
            None,
        )
        .await;
    let did = deliveries["data"][0]["id"].as_str().expect("delivery id");
    let (status, _) = dev
        .call("POST", &format!("/v1/deliveries/{did}/retry"), "acme", None)
        .await;
    assert_eq!(status, 202);
    dev.wait_statuses("acme", badid, 1, "dead_lettered").await;
    let (_, s) = dev
        .call("GET", &format!("/v1/endpoints/{badid}/stats"), "acme", None)
        .await;
    assert_eq!(
        (&s["dead_lettered"], &s["pending"]),
        (&json!(1), &json!(0)),
        "dead-lettered again, counted once: {s}"
    );
}

#[tokio::test]
async fn stats_answer_a_known_run_from_precomputed_figures() {
    stats_of_a_known_run(&[]).await;
}

#[tokio::test]
async fn aws_backend_on_moto_keeps_the_stats_figures() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "AWS_ENDPOINT_URL must point at moto; run `make test`"
    );
    let prefix = webhooks_testkit::aws::unique_prefix("stats");
    stats_of_a_known_run(&[
        "--backend",
        "aws",
        "--create-resources",
        "--resource-prefix",
        &prefix,
    ])
    .await;
}
