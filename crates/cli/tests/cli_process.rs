//! The `webhooks` API commands as a user runs them: the real binary against
//! `webhooks dev` as a real process on a free loopback port. Every command,
//! json and table output, and the exit statuses 0 (success), 1 (the API
//! answered an error) and 2 (usage error).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use webhooks_testkit::signatures::verify_delivery;
use webhooks_testkit::Receiver;

const SECRET: &str = "cli-test-jwt-secret";
const BIN: &str = env!("CARGO_BIN_EXE_webhooks");

/// A running `webhooks dev`; stopped when dropped.
struct Dev {
    child: Child,
    base: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .args(["dev", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start webhooks dev");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Dev { child, base }
    }

    fn token(org: &str, scope: &str) -> String {
        webhooks::token::issue(SECRET, org, scope, None, Duration::from_secs(600)).expect("token")
    }

    /// Runs `webhooks ARGS` for `org` (all scopes) against this server.
    fn run(&self, org: &str, args: &[&str]) -> Out {
        self.run_with(&Dev::token(org, "webhooks:manage events:write"), args)
    }

    fn run_with(&self, token: &str, args: &[&str]) -> Out {
        run(Command::new(BIN)
            .args(args)
            .env("WEBHOOKS_API_URL", &self.base)
            .env("WEBHOOKS_TOKEN", token))
    }

    /// `webhooks --output json ARGS`, which must succeed; its JSON.
    fn json(&self, org: &str, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.run(org, &all);
        out.assert_status(0);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", out.stdout))
    }
}

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn assert_status(&self, status: i32) {
        assert_eq!(
            self.status, status,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
    }
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run webhooks");
    Out {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every line of a table has its columns starting at the header's offsets.
fn assert_aligned(table: &str, columns: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    let offsets: Vec<usize> = columns
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("no {c} in {header:?}"))
        })
        .collect();
    for line in lines {
        for &o in &offsets[1..] {
            let before = line.chars().nth(o - 1);
            let at = line.chars().nth(o);
            assert_eq!(before, Some(' '), "misaligned at {o}: {line:?}\n{table}");
            assert!(
                at.is_some_and(|c| c != ' '),
                "misaligned at {o}: {line:?}\n{table}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_as_json_and_as_a_table() {
    let dev = Dev::start(&[]);
    let json = dev.json("acme", &["event-types"]);
    let names: Vec<&str> = json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 11);
    assert!(names.contains(&"invoice.paid"));

    let out = dev.run("acme", &["event-types", "--output", "table"]);
    out.assert_status(0);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 12);
    assert!(out
        .stdout
        .lines()
        .any(|l| l.starts_with("invoice.paid") && l.ends_with("An invoice was paid")));
    assert_aligned(&out.stdout, &["NAME", "DESCRIPTION"]);

    // Not a terminal and no --output: json, the API's body as is.
    let out = dev.run("acme", &["event-types"]);
    out.assert_status(0);
    let body: Value = serde_json::from_str(&out.stdout).expect("json by default off a terminal");
    assert_eq!(body, json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_from_creation_to_deletion() {
    let dev = Dev::start(&[]);
    let rx = Receiver::always(204).await;
    let url = rx.url("/hooks");
    let created = dev.json(
        "acme",
        &[
            "endpoints",
            "create",
            "--url",
            &url,
            "--events",
            "invoice.paid,lead_won",
            "--description",
            "billing",
        ],
    );
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        created["event_types"],
        serde_json::json!(["invoice.paid", "lead_won"])
    );

    let got = dev.json("acme", &["endpoints", "get", &id]);
    assert_eq!(got["url"], url.as_str());
    assert!(got.get("secret").is_none(), "{got}");
    let table = dev.run("acme", &["--output", "table", "endpoints", "get", &id]);
    table.assert_status(0);
    assert!(
        table.stdout.contains(&format!("url          {url}")),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains(&secret));

    let list = dev.json("acme", &["endpoints", "list"]);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["next_cursor"], Value::Null);
    let table = dev.run("acme", &["endpoints", "list", "--output", "table"]);
    table.assert_status(0);
    assert_aligned(&table.stdout, &["ID", "URL", "EVENTS", "STATUS", "CREATED"]);
    assert!(table.stdout.contains(&id) && table.stdout.contains("enabled"));
    assert!(
        !table.stdout.contains(&secret),
        "listings never show secrets"
    );

    // Another org sees none of it.
    let other = dev.json("globex", &["endpoints", "list"]);
    assert_eq!(other["data"], serde_json::json!([]));
    let out = dev.run("globex", &["endpoints", "get", &id]);
    out.assert_status(1);
    assert_eq!(out.stderr.trim(), "error: endpoint not found");

    let updated = dev.json(
        "acme",
        &[
            "endpoints",
            "update",
            &id,
            "--enabled",
            "false",
            "--description",
            "paused",
        ],
    );
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["description"], "paused");
    let updated = dev.json(
        "acme",
        &[
            "endpoints",
            "update",
            &id,
            "--enabled",
            "true",
            "--events",
            "*",
        ],
    );
    assert_eq!(updated["enabled"], true);
    assert_eq!(updated["event_types"], serde_json::json!(["*"]));
    let table = dev.run(
        "acme",
        &[
            "--output",
            "table",
            "endpoints",
            "update",
            &id,
            "--url",
            &rx.url("/v2"),
        ],
    );
    table.assert_status(0);
    assert!(table.stdout.contains("/v2"), "{}", table.stdout);

    assert_eq!(
        dev.json("acme", &["endpoints", "secret", &id])["secret"],
        secret.as_str()
    );
    let table = dev.run("acme", &["--output", "table", "endpoints", "secret", &id]);
    assert_eq!(table.stdout.trim(), secret);

    let rotated = dev.json("acme", &["endpoints", "rotate-secret", &id]);
    let new_secret = rotated["secret"].as_str().expect("secret").to_string();
    assert_ne!(new_secret, secret);
    let table = dev.run(
        "acme",
        &["--output", "table", "endpoints", "rotate-secret", &id],
    );
    table.assert_status(0);
    assert!(table.stdout.trim().starts_with("whsec_"));
    assert!(table.stderr.contains("24 hours"));
    let newest = table.stdout.trim().to_string();

    let test = dev.json(
        "acme",
        &["endpoints", "test", &id, "--event-type", "lead_won"],
    );
    assert_eq!(test["event_type"], "lead_won");
    assert!(
        rx.wait_for(1, Duration::from_secs(15)).await,
        "no test delivery"
    );
    let got = &rx.received()[0];
    assert_eq!(got.header("x-webhook-event"), Some("lead_won"));
    verify_delivery(got, &newest).expect("signed with the newest secret");
    let table = dev.run("acme", &["--output", "table", "endpoints", "test", &id]);
    table.assert_status(0);
    assert!(table.stdout.starts_with("sent test "), "{}", table.stdout);

    let out = dev.run("acme", &["--output", "json", "endpoints", "delete", &id]);
    out.assert_status(0);
    assert_eq!(out.stdout, "", "a 204 has no body to print");
    let out = dev.run("acme", &["--output", "table", "endpoints", "delete", &id]);
    out.assert_status(1);
    assert!(out.stderr.contains("endpoint not found"), "{}", out.stderr);
    let table = dev.run("acme", &["endpoints", "list", "--output", "table"]);
    assert_eq!(table.stdout, "no endpoints\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_deliveries_including_a_retry() {
    // One attempt only: a failing delivery is dead-lettered at once.
    let dev = Dev::start(&["--retry-schedule", "none"]);
    let rx = Receiver::always(500).await;
    let ep = dev.json(
        "acme",
        &[
            "endpoints",
            "create",
            "--url",
            &rx.url("/h"),
            "--events",
            "invoice.paid",
        ],
    );
    let ep_id = ep["id"].as_str().expect("id").to_string();

    let dir = std::env::temp_dir().join(format!("webhooks-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("data.json");
    std::fs::write(&file, r#"{"invoice_id":"in_1","amount":4200}"#).expect("write data");
    let at_file = format!("@{}", file.display());
    let first = dev.json(
        "acme",
        &[
            "events",
            "publish",
            "invoice.paid",
            "--data",
            &at_file,
            "--idempotency-key",
            "k-1",
        ],
    );
    let again = dev.json(
        "acme",
        &[
            "events",
            "publish",
            "invoice.paid",
            "--data",
            &at_file,
            "--idempotency-key",
            "k-1",
        ],
    );
    assert_eq!(first["id"], again["id"], "the same key gives the first id");
    // The same key with other data is refused (422): exit 1, the API's message.
    let other = dev.run(
        "acme",
        &[
            "events",
            "publish",
            "invoice.paid",
            "--data",
            "{\"other\":1}",
            "--idempotency-key",
            "k-1",
        ],
    );
    other.assert_status(1);
    assert!(other.stderr.contains("idempotency_key"), "{}", other.stderr);
    let table = dev.run(
        "acme",
        &[
            "--output",
            "table",
            "events",
            "publish",
            "invoice.paid",
            "--data",
            "{}",
        ],
    );
    table.assert_status(0);
    assert!(
        table.stdout.starts_with("published evt_"),
        "{}",
        table.stdout
    );
    std::fs::remove_dir_all(&dir).ok();

    // Wait until both events are dead-lettered (the receiver answers 500).
    let mut dead = Vec::new();
    for _ in 0..150 {
        let list = dev.json(
            "acme",
            &["deliveries", "list", &ep_id, "--status", "dead_lettered"],
        );
        dead = list["data"].as_array().cloned().unwrap_or_default();
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    let id = dead[0]["id"].as_str().expect("delivery id").to_string();
    let body = rx.received()[0].body.clone();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["data"]["invoice_id"],
        "in_1"
    );

    let table = dev.run("acme", &["--output", "table", "deliveries", "list", &ep_id]);
    table.assert_status(0);
    assert_aligned(
        &table.stdout,
        &[
            "ID",
            "STATUS",
            "EVENT TYPE",
            "ATTEMPTS",
            "LAST RESULT",
            "CREATED",
        ],
    );
    assert_eq!(
        table.stdout.matches("dead_lettered").count(),
        2,
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("HTTP 500"));
    let none = dev.run(
        "acme",
        &[
            "--output",
            "table",
            "deliveries",
            "list",
            &ep_id,
            "--status",
            "delivered",
        ],
    );
    assert_eq!(none.stdout, "no deliveries\n");
    let bad = dev.run("acme", &["deliveries", "list", &ep_id, "--status", "lost"]);
    bad.assert_status(1);
    assert!(bad.stderr.contains("status"), "{}", bad.stderr);

    let one = dev.json("acme", &["deliveries", "get", &id]);
    assert_eq!(one["status"], "dead_lettered");
    assert_eq!(one["attempts"][0]["status_code"], 500);
    let table = dev.run("acme", &["--output", "table", "deliveries", "get", &id]);
    table.assert_status(0);
    assert!(table.stdout.contains("dead_lettered") && table.stdout.contains("HTTP 500"));

    let retried = dev.run("acme", &["--output", "json", "deliveries", "retry", &id]);
    retried.assert_status(0);
    let table = dev.run(
        "acme",
        &[
            "--output",
            "table",
            "deliveries",
            "retry",
            dead[1]["id"].as_str().expect("id"),
        ],
    );
    table.assert_status(0);
    assert!(table.stdout.starts_with("queued "));
    // Another org can neither see nor retry it.
    let out = dev.run("globex", &["deliveries", "get", &id]);
    out.assert_status(1);
    let out = dev.run("globex", &["deliveries", "retry", &id]);
    out.assert_status(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

/// Issue 25: `endpoints create|update --filter`, and `events list|get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_the_event_log() {
    let dev = Dev::start(&[]);
    let rx = Receiver::always(200).await;
    let dir = std::env::temp_dir().join(format!("webhooks-cli-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("filter.json");
    std::fs::write(&file, r#"{"data": {"currency": ["eur"]}}"#).expect("write filter");
    let at_file = format!("@{}", file.display());
    let ep = dev.json(
        "acme",
        &[
            "endpoints",
            "create",
            "--url",
            &rx.url("/eur"),
            "--events",
            "invoice.paid",
            "--filter",
            &at_file,
        ],
    );
    assert_eq!(
        ep["filter"],
        serde_json::json!({"data": {"currency": ["eur"]}})
    );
    let ep_id = ep["id"].as_str().expect("id").to_string();

    let eur = dev.json(
        "acme",
        &[
            "events",
            "publish",
            "invoice.paid",
            "--data",
            r#"{"currency":"eur"}"#,
        ],
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let usd = dev.json(
        "acme",
        &[
            "events",
            "publish",
            "invoice.paid",
            "--data",
            r#"{"currency":"usd"}"#,
        ],
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(
        rx.wait_for(1, Duration::from_secs(15)).await,
        "the eur event is delivered"
    );
    let body: Value = serde_json::from_slice(&rx.received()[0].body).expect("json");
    assert_eq!(body["id"], eur.as_str());

    let log = dev.json("acme", &["events", "list"]);
    let ids: Vec<&str> = log["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, [usd.as_str(), eur.as_str()], "newest first");
    let none = dev.json("acme", &["events", "list", "--type", "lead_won"]);
    assert_eq!(none["data"], serde_json::json!([]));
    let paged = dev.json("acme", &["events", "list", "--limit", "1"]);
    let cursor = paged["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let next = dev.json(
        "acme",
        &["events", "list", "--limit", "1", "--cursor", &cursor],
    );
    assert_eq!(next["data"][0]["id"], eur.as_str());
    let table = dev.run(
        "acme",
        &["--output", "table", "events", "list", "--limit", "1"],
    );
    table.assert_status(0);
    let (rows, more) = table
        .stdout
        .split_once("more: --cursor ")
        .expect("a line for the next page");
    assert_aligned(rows, &["ID", "TYPE", "CREATED"]);
    assert_eq!(more.trim(), cursor);

    // Where each went: the eur event to the endpoint, the usd one nowhere.
    let mut went = Value::Null;
    for _ in 0..100 {
        went = dev.json("acme", &["events", "get", &eur]);
        if went["deliveries"][0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(went["data"], serde_json::json!({"currency": "eur"}));
    assert_eq!(went["deliveries"][0]["endpoint_id"], ep_id.as_str());
    assert_eq!(went["deliveries"][0]["status"], "delivered");
    let filtered = dev.json("acme", &["events", "get", &usd]);
    assert_eq!(filtered["deliveries"], serde_json::json!([]));
    let table = dev.run("acme", &["--output", "table", "events", "get", &eur]);
    table.assert_status(0);
    assert!(
        table.stdout.contains("\"currency\": \"eur\"") && table.stdout.contains("delivered"),
        "{}",
        table.stdout
    );
    let out = dev.run("globex", &["events", "get", &eur]);
    out.assert_status(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    // Change, refuse and remove the filter.
    let changed = dev.json(
        "acme",
        &[
            "endpoints",
            "update",
            &ep_id,
            "--filter",
            r#"{"data":{"amount":[{"numeric":[">",100]}]}}"#,
        ],
    );
    assert_eq!(changed["filter"]["data"]["amount"][0]["numeric"][1], 100);
    let bad = dev.run(
        "acme",
        &[
            "endpoints",
            "update",
            &ep_id,
            "--filter",
            r#"{"data":{"amount":[{"numeric":[">","100"]}]}}"#,
        ],
    );
    bad.assert_status(1);
    assert!(
        bad.stderr.contains("filter.data.amount[0].numeric[1]"),
        "{}",
        bad.stderr
    );
    let malformed = dev.run("acme", &["endpoints", "update", &ep_id, "--filter", "{"]);
    malformed.assert_status(2);
    assert!(
        malformed.stderr.contains("--filter"),
        "{}",
        malformed.stderr
    );
    let table = dev.run("acme", &["--output", "table", "endpoints", "get", &ep_id]);
    assert!(
        table.stdout.contains(r#"{"data":{"amount""#),
        "{}",
        table.stdout
    );
    let removed = dev.json("acme", &["endpoints", "update", &ep_id, "--no-filter"]);
    assert_eq!(removed["filter"], Value::Null);
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 25: `endpoints create|update --header NAME=VALUE --auth JSON|@FILE`;
/// the headers and the OAuth 2.0 token reach the receiver, on test events
/// too; no secret is ever printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_auth_from_the_command_line() {
    let dev = Dev::start(&[]);
    let tokens = Receiver::start(|n, req| {
        // base64("cli-client:cli-client-secret")
        if req.header("authorization") == Some("Basic Y2xpLWNsaWVudDpjbGktY2xpZW50LXNlY3JldA==") {
            webhooks_testkit::Reply::StatusWithBody(
                200,
                format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#),
            )
        } else {
            webhooks_testkit::Reply::Status(401)
        }
    })
    .await;
    let rx = Receiver::start(|_, req| {
        let ok = req.header("authorization") == Some("Bearer tok-0")
            && req.header("x-api-key") == Some("hdr-secret-1");
        webhooks_testkit::Reply::Status(if ok { 204 } else { 401 })
    })
    .await;
    let dir = std::env::temp_dir().join(format!("webhooks-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("auth.json");
    std::fs::write(
        &file,
        serde_json::json!({"type": "oauth2_client_credentials", "token_url": tokens.url("/token"),
            "client_id": "cli-client", "client_secret": "cli-client-secret"})
        .to_string(),
    )
    .expect("write auth");
    let at_file = format!("@{}", file.display());
    fn create<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--output",
            "json",
            "endpoints",
            "create",
            "--url",
            url,
            "--events",
            "invoice.paid",
        ];
        args.extend_from_slice(extra);
        args
    }
    let url = rx.url("/h");
    let out = dev.run(
        "acme",
        &create(
            &url,
            &[
                "--header",
                "X-Api-Key=hdr-secret-1",
                "--header",
                "X-Tenant=acme",
                "--auth",
                &at_file,
            ],
        ),
    );
    out.assert_status(0);
    for secret in ["hdr-secret-1", "cli-client-secret"] {
        assert!(!out.stdout.contains(secret), "{}", out.stdout);
    }
    let ep: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        ep["headers"],
        serde_json::json!({"X-Api-Key": "********", "X-Tenant": "********"})
    );
    assert_eq!(ep["auth"]["type"], "oauth2_client_credentials");
    assert_eq!(ep["auth"]["client_id"], "cli-client");
    assert!(ep["auth"].get("client_secret").is_none());
    let id = ep["id"].as_str().expect("id").to_string();

    // A test event, then three events: every request carries the header and
    // the token, and one token serves them all.
    dev.run(
        "acme",
        &["endpoints", "test", &id, "--event-type", "invoice.paid"],
    )
    .assert_status(0);
    for n in 0..3 {
        dev.run(
            "acme",
            &[
                "events",
                "publish",
                "invoice.paid",
                "--data",
                &format!(r#"{{"n":{n}}}"#),
            ],
        )
        .assert_status(0);
    }
    assert!(
        rx.wait_for(4, Duration::from_secs(30)).await,
        "4 deliveries"
    );
    for req in rx.received() {
        assert_eq!(req.header("x-api-key"), Some("hdr-secret-1"));
        assert_eq!(req.header("x-tenant"), Some("acme"));
        assert_eq!(req.header("authorization"), Some("Bearer tok-0"));
        verify_delivery(&req, ep["secret"].as_str().expect("secret")).expect("signatures");
    }
    assert!(rx.received()[0].body.starts_with(br#"{"id":"evt_"#));
    assert_eq!(tokens.count(), 1, "one token for four deliveries");

    // The table shows names and what auth is, never a secret.
    let table = dev.run("acme", &["--output", "table", "endpoints", "get", &id]);
    table.assert_status(0);
    assert!(
        table.stdout.contains("X-Api-Key: ********"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("oauth2_client_credentials (client_id cli-client"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("hdr-secret-1") && !table.stdout.contains("cli-client-secret"));

    // Refused by the API (exit 1, the header named), or by the CLI (exit 2).
    let refused = dev.run("acme", &create(&url, &["--header", "Host=evil.test"]));
    refused.assert_status(1);
    assert!(refused.stderr.contains("Host"), "{}", refused.stderr);
    dev.run("acme", &create(&url, &["--header", "no-equals-sign"]))
        .assert_status(2);
    let bad = dev.run(
        "acme",
        &[
            "endpoints",
            "update",
            &id,
            "--auth",
            r#"{"password":"pw-leak""#,
        ],
    );
    bad.assert_status(2);
    assert!(!bad.stderr.contains("pw-leak"), "{}", bad.stderr);

    // Update: basic auth, new headers; then none of either.
    let changed = dev.json(
        "acme",
        &[
            "endpoints",
            "update",
            &id,
            "--auth",
            r#"{"type":"basic","username":"hooks","password":"pw-2"}"#,
            "--header",
            "X-Other=o",
        ],
    );
    assert_eq!(
        changed["auth"],
        serde_json::json!({"type": "basic", "username": "hooks"})
    );
    assert_eq!(
        changed["headers"],
        serde_json::json!({"X-Other": "********"})
    );
    let removed = dev.json(
        "acme",
        &["endpoints", "update", &id, "--no-auth", "--no-headers"],
    );
    assert_eq!(removed["auth"], Value::Null);
    assert_eq!(removed["headers"], serde_json::json!({}));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_prints_a_link() {
    let dev = Dev::start(&[]);
    let out = dev.run("acme", &["--output", "table", "portal", "--ttl", "600"]);
    out.assert_status(0);
    let url = out.stdout.trim();
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        url.starts_with(&format!("{}/portal#token=", dev.base)),
        "{url}"
    );
    assert!(out.stderr.contains("until"));
    let json = dev.json("acme", &["portal"]);
    assert!(json["url"]
        .as_str()
        .is_some_and(|u| u.contains("/portal#token=")));
    assert!(json["expires_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // The link's token works for the org's endpoints, and only those, under
    // /portal-api where the page calls the API.
    let token = url.split("#token=").nth(1).expect("token");
    let portal_api = |args: &[&str]| {
        run(Command::new(BIN)
            .args(args)
            .env("WEBHOOKS_API_URL", format!("{}/portal-api", dev.base))
            .env("WEBHOOKS_TOKEN", token))
    };
    portal_api(&["--output", "json", "endpoints", "list"]).assert_status(0);
    let publish = portal_api(&["events", "publish", "lead_won", "--data", "{}"]);
    publish.assert_status(1);
    assert!(
        publish.stderr.contains("events:write"),
        "{}",
        publish.stderr
    );
    // Not on /v1, where (as in AWS) only the platform's tokens are accepted.
    let v1 = dev.run_with(token, &["--output", "json", "endpoints", "list"]);
    v1.assert_status(1);
    assert!(v1.stderr.contains("/portal-api"), "{}", v1.stderr);

    let out = dev.run("acme", &["portal", "--ttl", "0"]);
    out.assert_status(1);
    assert!(out.stderr.contains("ttl_seconds"), "{}", out.stderr);
    let out = dev.run("acme", &["portal", "--ttl", "86401"]);
    out.assert_status(1);
    let out = dev.run("acme", &["portal", "--ttl", "soon"]);
    out.assert_status(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_and_messages() {
    let dev = Dev::start(&[]);
    // Usage errors: 2, nothing sent.
    for args in [
        vec![],
        vec!["endpoints"],
        vec!["endpoints", "create", "--events", "lead_won"],
        vec!["endpoints", "update", "ep_1", "--enabled", "maybe"],
        vec!["--output", "xml", "event-types"],
        vec!["events", "publish", "lead_won", "--data", "{not json"],
        vec![
            "events",
            "publish",
            "lead_won",
            "--data",
            "@/nonexistent/data.json",
        ],
        vec!["events", "publish", "lead_won"],
        vec!["deliveries", "get"],
        vec!["no-such-command"],
    ] {
        let out = dev.run("acme", &args);
        assert_eq!(out.status, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    // API errors: 1, the API's message on stderr.
    let out = dev.run(
        "acme",
        &[
            "endpoints",
            "create",
            "--url",
            "ftp://x",
            "--events",
            "lead_won",
        ],
    );
    out.assert_status(1);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("url") || out.stderr.contains("URL"),
        "{}",
        out.stderr
    );
    let out = dev.run(
        "acme",
        &[
            "endpoints",
            "create",
            "--url",
            "http://127.0.0.1:9/x",
            "--events",
            "nope",
        ],
    );
    out.assert_status(1);
    assert!(out.stderr.contains("event_types"), "{}", out.stderr);
    let out = dev.run("acme", &["events", "publish", "not.a.type", "--data", "{}"]);
    out.assert_status(1);
    let out = dev.run_with(&Dev::token("acme", "events:write"), &["endpoints", "list"]);
    out.assert_status(1);
    assert!(out.stderr.contains("webhooks:manage"), "{}", out.stderr);
    let out = run(Command::new(BIN)
        .args(["endpoints", "list"])
        .env("WEBHOOKS_API_URL", &dev.base)
        .env_remove("WEBHOOKS_TOKEN"));
    out.assert_status(1);
    assert!(out.stderr.contains("WEBHOOKS_TOKEN"), "{}", out.stderr);
    let out = run(Command::new(BIN).args([
        "--token",
        "not-a-jwt",
        "--api-url",
        &dev.base,
        "event-types",
    ]));
    out.assert_status(1);
    assert!(out.stderr.contains("token"), "{}", out.stderr);
    // Nothing listening: 1, saying so.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = run(Command::new(BIN)
        .args([
            "event-types",
            "--api-url",
            &format!("http://127.0.0.1:{closed}"),
        ])
        .env("WEBHOOKS_TOKEN", Dev::token("acme", "webhooks:manage")));
    out.assert_status(1);
    assert!(
        out.stderr.contains("cannot reach the API"),
        "{}",
        out.stderr
    );
    // `webhooks dev token` is unchanged.
    let out =
        run(Command::new(BIN).args(["dev", "token", "--org", "acme", "--jwt-secret", SECRET]));
    out.assert_status(0);
    assert_eq!(out.stdout.trim().split('.').count(), 3);
}

#[test]
fn dev_refuses_a_retry_schedule_the_queue_cannot_carry() {
    // Fifteen retries that a 12 h Retry-After can each stretch over two
    // receives: more than the queue's maxReceiveCount of 30.
    let schedule = vec!["1s"; 15].join(",");
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--retry-schedule", &schedule])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run webhooks dev");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("webhooks dev started with a schedule the queue cannot carry");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(stderr.contains("--retry-schedule"), "{stderr}");
    assert!(stderr.contains("maxReceiveCount of 30"), "{stderr}");
}

/// `webhooks dev ARGS` that must refuse to start: its stderr, once it has
/// exited unsuccessfully (within 30 s, never serving).
fn dev_refusal(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .arg("dev")
        .args(args)
        .env_remove("WEBHOOKS_JWT_SECRET")
        .env_remove("WEBHOOKS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run webhooks dev");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("webhooks dev {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!status.success(), "{args:?}: {stdout}");
    assert!(!stdout.contains("listening on"), "{args:?}: {stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dev_refuses_to_listen_beyond_loopback_with_the_default_secret() {
    // Anyone who can reach the server could sign tokens with the well-known
    // default secret. 192.0.2.1 (TEST-NET-1) is on no interface: before the
    // check, dev fails to bind it; with the check it never tries.
    for listen in ["192.0.2.1:0", "0.0.0.0:0", "[::]:0"] {
        for secret in [&[][..], &["--jwt-secret", "dev-secret"][..]] {
            let mut args = vec!["--listen", listen];
            args.extend_from_slice(secret);
            let stderr = dev_refusal(&args);
            assert!(
                stderr.contains("--listen") && stderr.contains("--jwt-secret"),
                "{args:?}: {stderr}"
            );
            assert!(stderr.contains(listen), "{args:?}: {stderr}");
        }
    }
}

/// A token from `webhooks dev token` with these extra arguments.
fn dev_token(extra: &[&str]) -> String {
    let out = run(Command::new(BIN)
        .args(["dev", "token", "--org", "acme", "--jwt-secret", SECRET])
        .args(extra));
    out.assert_status(0);
    out.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_checks_the_issuer_and_audience_when_they_are_given() {
    const ISS: &str = "https://idp.example.com/";
    let dev = Dev::start(&[
        "--jwt-issuer",
        ISS,
        "--jwt-audience",
        "webhooks-api,webhooks-admin",
    ]);
    for audience in ["webhooks-api", "webhooks-admin"] {
        let token = dev_token(&["--jwt-issuer", ISS, "--jwt-audience", audience]);
        dev.run_with(&token, &["event-types"]).assert_status(0);
    }
    // Portal sessions have their own issuer and audience, which the api
    // checks under /portal-api whatever the platform's are.
    let token = dev_token(&["--jwt-issuer", ISS, "--jwt-audience", "webhooks-api"]);
    let link = dev.run_with(&token, &["--output", "table", "portal"]);
    link.assert_status(0);
    let portal_token = link.stdout.trim().split("#token=").nth(1).expect("a link");
    run(Command::new(BIN)
        .args(["endpoints", "list"])
        .env("WEBHOOKS_API_URL", format!("{}/portal-api", dev.base))
        .env("WEBHOOKS_TOKEN", portal_token))
    .assert_status(0);
    for (what, extra) in [
        ("no iss, no aud", &[][..]),
        ("no aud", &["--jwt-issuer", ISS][..]),
        ("no iss", &["--jwt-audience", "webhooks-api"][..]),
        (
            "another audience",
            &["--jwt-issuer", ISS, "--jwt-audience", "elsewhere"][..],
        ),
        (
            "another issuer",
            &[
                "--jwt-issuer",
                "https://other.example.com/",
                "--jwt-audience",
                "webhooks-api",
            ][..],
        ),
    ] {
        let out = dev.run_with(&dev_token(extra), &["event-types"]);
        out.assert_status(1);
        assert!(out.stderr.contains("token"), "{what}: {}", out.stderr);
    }
}
