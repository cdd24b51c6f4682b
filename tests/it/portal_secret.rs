//! The api's portal signing key from Secrets Manager (moto), as the Lambda
//! reads it: a secret that cannot be read or used leaves `/healthz` and
//! `/v1` serving and the portal off, and the portal comes on once the
//! secret is fixed; a new key takes effect with no restart.

use lambda_http::RequestExt;
use std::time::Duration;
use webhooks_aws::runtime_secret::SecretsManager;
use webhooks_fn_api::portal::PortalIssuer;
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_memory::MemoryBackend;

const KEY: &str = include_str!("../../functions/api/tests/it/fixtures/portal-test-key.pem");
const NEXT_KEY: &str = include_str!("../../functions/api/tests/it/fixtures/portal-test-key-2.pem");
const SMALL_KEY: &str =
    include_str!("../../functions/api/tests/it/fixtures/portal-test-key-1024.pem");
const ISSUER: &str = "https://webhooks.example.com/portal";

/// A request; `manage`: with a `webhooks:manage` caller's claims, as the
/// gateway's authorizer passes them.
fn request(method: &str, path: &str, manage: bool) -> lambda_http::Request {
    let req = lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .body(lambda_http::Body::Empty)
        .expect("request");
    if !manage {
        return req;
    }
    let ctx = webhooks_fn_api::auth::context_with_claims(&[
        ("org_id", "org_a"),
        ("scope", "webhooks:manage"),
    ]);
    req.with_request_context(ctx)
}

async fn call(api: &Api, req: lambda_http::Request) -> (u16, serde_json::Value) {
    let r = webhooks_fn_api::handle(api, req)
        .await
        .expect("handle never returns Err");
    let json = serde_json::from_slice(r.body().as_ref()).unwrap_or_default();
    (r.status().as_u16(), json)
}

/// An api whose portal key is the secret `arn`, read afresh on every use.
async fn api_with_secret(config: &webhooks_aws::SdkConfig, arn: &str) -> Api {
    let secret =
        SecretsManager::from_config(config).secret_with(arn, Duration::ZERO, Duration::ZERO);
    Api::from_adapters(&MemoryBackend::new().adapters(), ApiConfig::default())
        .with_portal_loaded(PortalIssuer::from_secret(secret, ISSUER, Duration::ZERO))
        .await
}

async fn create_secret(sm: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    sm.create_secret()
        .name(webhooks_testkit::aws::unique_prefix("portal-key"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("an ARN")
}

#[tokio::test]
async fn a_bad_portal_secret_turns_the_portal_off_not_the_api() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let missing = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf",
        webhooks_testkit::aws::unique_prefix("never-created")
    );
    let cases = [
        ("unreadable", missing),
        ("not PEM", create_secret(&sm, "not a pem").await),
        ("too small", create_secret(&sm, SMALL_KEY).await),
    ];
    for (what, arn) in &cases {
        let api = api_with_secret(&config, arn).await;
        assert_eq!(
            call(&api, request("GET", "/healthz", false)).await.0,
            200,
            "{what}"
        );
        assert_eq!(
            call(&api, request("GET", "/v1/endpoints", true)).await.0,
            200,
            "{what}"
        );
        // As when no portal is configured.
        let (status, body) = call(&api, request("POST", "/v1/portal-sessions", true)).await;
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{what}");
        let (status, body) = call(&api, request("GET", "/portal-api/v1/endpoints", false)).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    // Fixed in Secrets Manager: sessions open, with no restart.
    let (_, arn) = &cases[1];
    sm.put_secret_value()
        .secret_id(arn)
        .secret_string(KEY)
        .send()
        .await
        .expect("fix the secret");
    let api = api_with_secret(&config, arn).await;
    sm.put_secret_value()
        .secret_id(arn)
        .secret_string("broken again")
        .send()
        .await
        .expect("break the secret");
    // A bad new value keeps the keys read before it.
    let (status, body) = call(&api, request("POST", "/v1/portal-sessions", true)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_new_key_in_the_secret_takes_effect_with_no_restart() {
    let config = webhooks_testkit::aws::emulator_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let arn = create_secret(&sm, KEY).await;
    let secret =
        SecretsManager::from_config(&config).secret_with(&arn, Duration::ZERO, Duration::ZERO);
    let issuer = PortalIssuer::from_secret(secret, ISSUER, Duration::ZERO);
    let kid = |keys: Option<std::sync::Arc<webhooks_fn_api::portal::keys::PortalKeys>>| {
        keys.and_then(|k| k.signing_key_id().map(str::to_string))
    };
    let first = kid(issuer.keys().await).expect("the first key loads");
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(NEXT_KEY)
        .send()
        .await
        .expect("rotate");
    let second = kid(issuer.keys().await).expect("the next key loads");
    assert_ne!(first, second);
}
