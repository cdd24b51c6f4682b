//! Provider secrets fetched at run time from Secrets Manager (moto): a
//! rotated secret is picked up after a signature fails, without a restart,
//! and such fetches are rate-limited; a failed fetch is remembered, so
//! forged requests cannot each cost one.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use webhooks_aws::request_counter::RequestCounter;
use webhooks_aws::runtime_secret::{SecretsManager, FAILED_FETCH_TTL};
use webhooks_fn_inbound::{Inbound, InboundConfig};
use webhooks_memory::MemoryBackend;

const HOUR: Duration = Duration::from_secs(3600);

/// A Stripe-signed `POST /inbound/stripe` of a non-billing event.
fn stripe_request(id: &str, secret: &str) -> lambda_http::Request {
    let body = format!(
        r#"{{"id":"{id}","object":"event","type":"customer.created","data":{{"object":{{}}}}}}"#
    );
    let t = chrono::Utc::now().timestamp();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{t}.{body}").as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/inbound/stripe")
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(body))
        .expect("request")
}

async fn status(inbound: &Inbound, req: lambda_http::Request) -> u16 {
    webhooks_fn_inbound::handle(inbound, req)
        .await
        .expect("a response")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_rotated_stripe_secret_is_used_after_a_signature_failure_without_a_restart() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let name = webhooks_testkit::aws::unique_prefix("stripe-secret");
    let arn = sm
        .create_secret()
        .name(&name)
        .secret_string("whsec_first")
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("an ARN");
    let rotate = |value: &'static str| {
        let (sm, arn) = (sm.clone(), arn.clone());
        async move {
            sm.put_secret_value()
                .secret_id(arn)
                .secret_string(value)
                .send()
                .await
                .expect("rotate");
        }
    };
    // Cached for an hour, and at most one fetch an hour after a failure:
    // only that fetch can bring the rotation in.
    let secret = SecretsManager::from_config(&config).secret_with(&arn, HOUR, HOUR);
    let inbound = Inbound::from_adapters(
        &MemoryBackend::new().adapters(),
        InboundConfig {
            stripe_webhook_secret: Some(secret),
            ..InboundConfig::default()
        },
    );

    assert_eq!(
        status(&inbound, stripe_request("evt_1", "whsec_first")).await,
        200
    );
    rotate("whsec_second").await;
    // Stripe signs with the new secret at once: the cached one fails, the
    // secret is fetched again, and the request is accepted.
    assert_eq!(
        status(&inbound, stripe_request("evt_2", "whsec_second")).await,
        200
    );
    assert_eq!(
        status(&inbound, stripe_request("evt_3", "whsec_second")).await,
        200
    );
    // The old secret no longer verifies.
    assert_eq!(
        status(&inbound, stripe_request("evt_4", "whsec_first")).await,
        401
    );
    // A second rotation within the interval is not fetched: forged
    // requests cannot make the function call Secrets Manager at will.
    rotate("whsec_third").await;
    assert_eq!(
        status(&inbound, stripe_request("evt_5", "whsec_third")).await,
        401
    );
}

#[tokio::test]
async fn an_unconfigured_provider_needs_no_secret_and_answers_501() {
    let inbound =
        Inbound::from_adapters(&MemoryBackend::new().adapters(), InboundConfig::default());
    assert_eq!(
        status(&inbound, stripe_request("evt_1", "whsec_any")).await,
        501
    );
}

#[tokio::test]
async fn a_secret_that_cannot_be_fetched_is_a_503_the_provider_retries() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf";
    let inbound = Inbound::from_adapters(
        &MemoryBackend::new().adapters(),
        InboundConfig {
            stripe_webhook_secret: Some(SecretsManager::from_config(&config).secret(arn)),
            ..InboundConfig::default()
        },
    );
    let response = webhooks_fn_inbound::handle(&inbound, stripe_request("evt_1", "whsec_any"))
        .await
        .expect("a response");
    assert_eq!(response.status().as_u16(), 503);
    let body = String::from_utf8_lossy(response.body().as_ref()).to_string();
    assert!(body.contains("secret_unavailable"), "{body}");
    assert!(!body.contains(arn), "the answer names no secret: {body}");
}

fn get_secret_value_calls(counter: &RequestCounter) -> u64 {
    counter
        .snapshot()
        .iter()
        .filter(|((_, op), _)| op == "GetSecretValue")
        .map(|(_, n)| n)
        .sum()
}

/// A `POST /inbound/stripe` with a forged signature: what anyone can send.
fn forged_request(n: usize) -> lambda_http::Request {
    stripe_request(&format!("evt_forged_{n}"), "whsec_guessed")
}

#[tokio::test]
async fn forged_requests_cannot_each_cost_a_fetch_of_a_secret_that_fails() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let counter = RequestCounter::new();
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf";
    let inbound = Inbound::from_adapters(
        &MemoryBackend::new().adapters(),
        InboundConfig {
            stripe_webhook_secret: Some(SecretsManager::counted(&config, &counter).secret(arn)),
            ..InboundConfig::default()
        },
    );
    let answers = futures::future::join_all((0..40).map(|n| {
        let inbound = &inbound;
        async move { webhooks_fn_inbound::handle(inbound, forged_request(n)).await }
    }))
    .await;
    // One fetch failed; the other 39 requests were answered from that failure.
    assert_eq!(get_secret_value_calls(&counter), 1);
    for response in answers {
        let response = response.expect("a response");
        assert_eq!(response.status().as_u16(), 503);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((1..=FAILED_FETCH_TTL.as_secs()).contains(&retry_after));
    }
}

#[tokio::test]
async fn a_secret_held_past_its_ttl_is_not_fetched_per_request_while_fetches_fail() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let name = webhooks_testkit::aws::unique_prefix("stripe-held");
    let arn = sm
        .create_secret()
        .name(&name)
        .secret_string("whsec_held")
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("an ARN");
    let counter = RequestCounter::new();
    // Stale at once: every request would fetch it again.
    let secret = SecretsManager::counted(&config, &counter).secret_with(&arn, Duration::ZERO, HOUR);
    let inbound = Inbound::from_adapters(
        &MemoryBackend::new().adapters(),
        InboundConfig {
            stripe_webhook_secret: Some(secret),
            ..InboundConfig::default()
        },
    );
    assert_eq!(
        status(&inbound, stripe_request("evt_1", "whsec_held")).await,
        200
    );
    sm.delete_secret()
        .secret_id(&arn)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete secret");
    let before = get_secret_value_calls(&counter);
    for n in 0..30 {
        assert_eq!(status(&inbound, forged_request(n)).await, 401);
    }
    // The held value still verifies what it signed.
    assert_eq!(
        status(&inbound, stripe_request("evt_2", "whsec_held")).await,
        200
    );
    assert_eq!(get_secret_value_calls(&counter) - before, 1);
}
