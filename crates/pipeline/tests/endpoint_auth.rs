//! An endpoint's custom headers and auth as the sender sends them
//! (CONTRACT section 12), against real HTTP servers on 127.0.0.1: the
//! receiver, and for OAuth 2.0 a token endpoint. The in-memory stores and
//! queue stand in for AWS.

use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::endpoint::CustomHeaders;
use webhooks_domain::{
    Delivery, DeliveryStatus, DeliveryTask, Endpoint, Event, EventType, Secret, Subscription,
};
use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, MessageOutcome, Sender, SenderConfig,
};
use webhooks_ports::{DeliveryStore, EndpointLookup, EndpointStore, Queue};
use webhooks_testkit::signatures::verify_delivery;
use webhooks_testkit::{Receiver, Reply};

struct World {
    endpoints: Arc<MemoryEndpointStore>,
    deliveries: Arc<MemoryDeliveryStore>,
    queue: Arc<MemoryQueue>,
    sender: Sender,
}

fn world(schedule: &str) -> World {
    world_with(schedule, true)
}

/// `allow_private: false` is the production SSRF guard.
fn world_with(schedule: &str, allow_private: bool) -> World {
    let endpoints = MemoryEndpointStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let dlq = MemoryQueue::new(Duration::from_secs(30));
    let queue = MemoryQueue::with_redrive(Duration::from_secs(30), dlq.clone(), 30);
    let sender = Sender::new(
        endpoints.clone(),
        endpoints.clone(),
        deliveries.clone(),
        queue.clone(),
        dlq,
        DeliveryClient::new(DeliveryClientConfig {
            request_timeout: Duration::from_secs(5),
            allow_private,
            static_hosts: HashMap::from([(
                "token.internal.test".to_string(),
                vec!["127.0.0.1".parse().expect("ip")],
            )]),
        })
        .expect("client"),
        SenderConfig {
            schedule: schedule.parse().expect("schedule"),
            // A new endpoint's first POSTs are capped while its speed is
            // unknown; the batches here are about tokens, not that.
            lanes: webhooks_pipeline::sender::limits::LaneConfig::uncapped(),
            ..SenderConfig::default()
        },
    );
    World {
        endpoints,
        deliveries,
        queue,
        sender,
    }
}

impl World {
    async fn add(&self, ep: &Endpoint) {
        let created = self
            .endpoints
            .create(ep, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
            .await
            .expect("create");
        assert_eq!(created, webhooks_ports::Created::Written);
    }

    /// Queues a new event's task to `ep` and creates its delivery.
    async fn enqueue(&self, ep: &Endpoint) -> (Event, Delivery) {
        let event = Event::new(
            "org",
            EventType::InvoicePaid,
            RawValue::from_string(r#"{"x":1}"#.into()).expect("json"),
        );
        let d = Delivery::new("org", &ep.id, &event.id, event.event_type);
        let task = DeliveryTask {
            delivery_id: d.id.clone(),
            org_id: "org".into(),
            endpoint_id: ep.id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            payload: event.payload().into(),
            trace_id: None,
            redriven: false,
            queued: None,
            stands_for: None,
        };
        self.queue
            .send_batch(&[webhooks_ports::QueueMessage::task(&task)])
            .await
            .expect("send");
        self.deliveries.create_if_absent(&d).await.expect("create");
        (event, d)
    }

    /// Receives one batch (up to 10) and runs the sender over it.
    async fn run_once(&self) -> Vec<MessageOutcome> {
        let msgs = self
            .queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive");
        let outcomes = self.sender.process_batch(&msgs).await;
        let done: Vec<String> = msgs
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == MessageOutcome::Done)
            .map(|(m, _)| m.receipt_handle.clone())
            .collect();
        self.queue.delete_batch(&done).await.expect("delete");
        outcomes
    }

    async fn delivery(&self, id: &str) -> Delivery {
        self.deliveries.get(id).await.expect("get").expect("exists")
    }
}

fn endpoint(url: String) -> Endpoint {
    Endpoint::new("org", url, Subscription::All, Secret::generate())
}

fn headers(pairs: &[(&str, &str)]) -> CustomHeaders {
    CustomHeaders::new(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        false,
    )
    .expect("valid headers")
}

#[tokio::test]
async fn custom_headers_go_on_every_attempt_and_leave_the_signatures_over_the_body() {
    // Fails once, then accepts: two attempts.
    let rx = Receiver::start(|n, _| Reply::Status(if n == 0 { 503 } else { 204 })).await;
    let w = world("0s");
    let mut ep = endpoint(rx.url("/in"));
    ep.headers = headers(&[("X-Api-Key", "key-123"), ("X-Tenant", "acme corp")]);
    w.add(&ep).await;
    let (event, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    assert_eq!(w.delivery(&d.id).await.status, DeliveryStatus::Delivered);

    let got = rx.received();
    assert_eq!(got.len(), 2);
    for (n, req) in got.iter().enumerate() {
        assert_eq!(req.header("x-api-key"), Some("key-123"), "attempt {n}");
        assert_eq!(req.header("x-tenant"), Some("acme corp"), "attempt {n}");
        // Both signatures check with the body alone.
        verify_delivery(req, ep.secret.expose()).expect("signatures over the body");
        assert_eq!(req.body.as_ref(), event.payload().as_bytes());
        assert_eq!(req.header("authorization"), None);
    }
    assert_eq!(got[1].header("x-webhook-attempt"), Some("2"));
}

fn auth(value: serde_json::Value) -> webhooks_domain::endpoint::EndpointAuth {
    webhooks_domain::endpoint::EndpointAuth::parse(
        &value,
        &webhooks_domain::EndpointUrlPolicy::LOCAL,
    )
    .expect("valid auth")
}

#[tokio::test]
async fn basic_auth_goes_on_every_attempt_beside_the_custom_headers() {
    // A receiver that checks the header: 401 without the right credentials.
    // RFC 7617's example: base64("Aladdin:open sesame").
    let rx = Receiver::start(|n, req| {
        if req.header("authorization") != Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") {
            Reply::Status(401)
        } else if n == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    })
    .await;
    let w = world("0s");
    let mut ep = endpoint(rx.url("/in"));
    ep.auth = Some(auth(
        serde_json::json!({"type":"basic","username":"Aladdin","password":"open sesame"}),
    ));
    ep.headers = headers(&[("X-Tenant", "acme")]);
    w.add(&ep).await;
    let (_, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    let d = w.delivery(&d.id).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(
        d.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(500), Some(204)]
    );
    for req in rx.received() {
        assert_eq!(req.header("x-tenant"), Some("acme"));
        verify_delivery(&req, ep.secret.expose()).expect("signatures over the body");
    }
}

/// A token endpoint on 127.0.0.1: the n-th request (0-based) that carries
/// the client's credentials gets `tok-n`, lasting `expires_in` seconds.
async fn token_server(expires_in: u64) -> Receiver {
    Receiver::start(move |n, req| {
        // base64("client-1:secret-1"), the form RFC 6749 asks for.
        if req.method != "POST"
            || req.header("authorization") != Some("Basic Y2xpZW50LTE6c2VjcmV0LTE=")
            || req.header("content-type") != Some("application/x-www-form-urlencoded")
        {
            return Reply::StatusWithBody(401, r#"{"error":"invalid_client"}"#.into());
        }
        Reply::StatusWithBody(
            200,
            format!(
                r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
            ),
        )
    })
    .await
}

fn oauth_endpoint(url: String, token_url: String) -> Endpoint {
    let mut ep = endpoint(url);
    ep.auth = Some(auth(serde_json::json!({
        "type": "oauth2_client_credentials", "token_url": token_url,
        "client_id": "client-1", "client_secret": "secret-1", "scope": "hooks:write"
    })));
    ep
}

/// A receiver that accepts only `Bearer tok-<n>` for the n it is told.
fn bearer_checker(
    accepted: Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(usize, &webhooks_testkit::Received) -> Reply {
    move |_, req| {
        let want = format!(
            "Bearer tok-{}",
            accepted.load(std::sync::atomic::Ordering::SeqCst)
        );
        if req.header("authorization") == Some(want.as_str()) {
            Reply::Status(204)
        } else {
            Reply::Status(401)
        }
    }
}

#[tokio::test]
async fn fifty_deliveries_cost_one_token_request() {
    let tokens = token_server(3600).await;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rx = Receiver::start(bearer_checker(accepted)).await;
    let w = world("1s");
    let ep = oauth_endpoint(rx.url("/in"), tokens.url("/oauth/token"));
    w.add(&ep).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(w.enqueue(&ep).await.1.id);
    }
    // Five batches of ten; each batch's POSTs run at once.
    for _ in 0..5 {
        let outcomes = w.run_once().await;
        assert_eq!(outcomes, vec![MessageOutcome::Done; 10]);
    }
    for id in &ids {
        assert_eq!(w.delivery(id).await.status, DeliveryStatus::Delivered);
    }
    assert_eq!(rx.count(), 50);
    assert_eq!(tokens.count(), 1, "one token request for 50 deliveries");
    assert_eq!(w.sender.token_fetches(), 1);
    // The token request as RFC 6749 section 4.4 has it.
    let request = &tokens.received()[0];
    assert_eq!(request.path, "/oauth/token");
    assert_eq!(
        request.body.as_ref(),
        b"grant_type=client_credentials&scope=hooks%3Awrite"
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    // Signatures stay over the body alone.
    verify_delivery(&rx.received()[0], ep.secret.expose()).expect("signatures");
}

#[tokio::test]
async fn a_token_is_fetched_again_shortly_before_it_expires() {
    let tokens = token_server(120).await;
    // Any token the server issued will do.
    let rx = Receiver::start(|_, req| {
        if req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer tok-"))
        {
            Reply::Status(204)
        } else {
            Reply::Status(401)
        }
    })
    .await;
    let w = world("1s");
    let w = World {
        sender: w
            .sender
            .with_clock(webhooks_testkit::clock::TokioClock::starting_at(
                chrono::Utc::now(),
            )),
        ..w
    };
    let ep = oauth_endpoint(rx.url("/in"), tokens.url("/token"));
    w.add(&ep).await;
    let deliver = || async {
        let (_, d) = w.enqueue(&ep).await;
        assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
        assert_eq!(w.delivery(&d.id).await.status, DeliveryStatus::Delivered);
    };
    deliver().await;
    assert_eq!(tokens.count(), 1);
    // 120 s of life, fetched again 12 s (a tenth) before its end.
    skip(Duration::from_secs(100)).await;
    deliver().await;
    assert_eq!(tokens.count(), 1, "still fresh at 100 s");
    skip(Duration::from_secs(9)).await;
    deliver().await;
    assert_eq!(tokens.count(), 2, "fetched again at 109 s");
    let last = rx.received().pop().expect("a request");
    assert_eq!(last.header("authorization"), Some("Bearer tok-1"));
}

/// Moves tokio's clock on by `by`, then lets real time run again.
async fn skip(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_401_fetches_a_new_token_and_posts_again_within_the_attempt() {
    let tokens = token_server(3600).await;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rx = Receiver::start(bearer_checker(accepted.clone())).await;
    let w = world("1s");
    let ep = oauth_endpoint(rx.url("/in"), tokens.url("/token"));
    w.add(&ep).await;
    let (_, first) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    assert_eq!(
        w.delivery(&first.id).await.status,
        DeliveryStatus::Delivered
    );

    // The receiver revokes tok-0: only the next token will do. Five
    // deliveries at once find tok-0 refused; one new token serves them all.
    accepted.store(1, std::sync::atomic::Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(w.enqueue(&ep).await.1.id);
    }
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done; 5]);
    for id in &ids {
        let d = w.delivery(id).await;
        assert_eq!(d.status, DeliveryStatus::Delivered);
        // One attempt each: the second POST is within it.
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].status_code, Some(204));
    }
    assert_eq!(tokens.count(), 2, "one new token after the 401s");
    let with_new_token = rx
        .received()
        .iter()
        .filter(|r| r.header("authorization") == Some("Bearer tok-1"))
        .count();
    assert_eq!(with_new_token, 5);
}

#[tokio::test]
async fn a_receiver_that_refuses_every_token_costs_no_fetch_per_delivery() {
    let tokens = token_server(3600).await;
    let rx = Receiver::always(401).await;
    let w = world("1h");
    let ep = oauth_endpoint(rx.url("/in"), tokens.url("/token"));
    w.add(&ep).await;
    let (_, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
    // The first 401 earns one new token and a second POST.
    assert_eq!((tokens.count(), rx.count()), (2, 2));
    let d = w.delivery(&d.id).await;
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].status_code, Some(401));
    // Then, for a while, a 401 is only a 401.
    for _ in 0..5 {
        w.enqueue(&ep).await;
    }
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry; 5]);
    assert_eq!(tokens.count(), 2, "no token request per delivery");
    assert_eq!(rx.count(), 7);
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_attempt_which_is_retried_on_schedule() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    let tokens = Receiver::start(move |n, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::StatusWithBody(
                200,
                format!(r#"{{"access_token":"tok-{n}","expires_in":3600}}"#),
            )
        } else {
            Reply::StatusWithBody(503, r#"{"error":"temporarily_unavailable"}"#.into())
        }
    })
    .await;
    let rx = Receiver::always(204).await;
    let w = world("0s,0s");
    let ep = oauth_endpoint(rx.url("/in"), tokens.url("/token"));
    w.add(&ep).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(w.enqueue(&ep).await.1.id);
    }
    assert_eq!(w.run_once().await, vec![MessageOutcome::Retry; 4]);
    assert_eq!(rx.count(), 0, "nothing is POSTed without a token");
    assert_eq!(tokens.count(), 1, "the batch shares one failed fetch");
    for id in &ids {
        let d = w.delivery(id).await;
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(
            d.attempts[0].error.as_deref(),
            Some("auth_failed: the token endpoint answered HTTP 503 (temporarily_unavailable)")
        );
        assert_eq!(d.attempts[0].status_code, None);
    }
    // The token endpoint is back: the retries deliver.
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done; 4]);
    assert_eq!(tokens.count(), 2);
    for id in &ids {
        let d = w.delivery(id).await;
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.attempts.len(), 2);
    }
}

#[tokio::test]
async fn the_token_request_goes_through_the_ssrf_guard() {
    let tokens = token_server(3600).await;
    let w = world_with("1h", false);
    // A literal loopback address, and a name that resolves to one.
    for token_url in [
        tokens.url("/token"),
        format!("http://token.internal.test:{}/token", tokens.addr.port()),
    ] {
        let ep = oauth_endpoint("https://hooks.example.com/in".into(), token_url);
        w.add(&ep).await;
        let (_, d) = w.enqueue(&ep).await;
        assert_eq!(w.run_once().await, vec![MessageOutcome::Retry]);
        let d = w.delivery(&d.id).await;
        assert_eq!(
            d.attempts[0].error.as_deref(),
            Some("auth_failed: the token endpoint could not be reached: blocked_destination")
        );
    }
    assert_eq!(tokens.count(), 0);
}

#[tokio::test]
async fn changed_credentials_never_use_the_old_token() {
    let tokens = token_server(3600).await;
    let rx = Receiver::always(204).await;
    let w = world("1s");
    let mut ep = oauth_endpoint(rx.url("/in"), tokens.url("/token"));
    w.add(&ep).await;
    let (_, d) = w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    assert_eq!(w.delivery(&d.id).await.status, DeliveryStatus::Delivered);
    // Another scope: another token.
    ep = w
        .endpoints
        .get("org", &ep.id)
        .await
        .expect("get")
        .expect("ep");
    let webhooks_domain::endpoint::EndpointAuth::OAuth2ClientCredentials(c) =
        ep.auth.as_mut().expect("auth")
    else {
        panic!("oauth")
    };
    c.scope = Some("other".into());
    assert_eq!(
        w.endpoints.update(&ep).await.expect("update"),
        webhooks_ports::Updated::Written
    );
    w.enqueue(&ep).await;
    assert_eq!(w.run_once().await, vec![MessageOutcome::Done]);
    assert_eq!(tokens.count(), 2);
    assert_eq!(
        rx.received()[1].header("authorization"),
        Some("Bearer tok-1")
    );
}
