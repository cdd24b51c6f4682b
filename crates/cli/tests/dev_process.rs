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
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Dev {
            child,
            base,
            http: reqwest::Client::new(),
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
