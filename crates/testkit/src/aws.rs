//! The AWS emulator (moto server) the integration tests talk to. The test
//! command starts it and sets `AWS_ENDPOINT_URL`; the SDK reads that as it
//! would in production, so nothing in the code under test knows.

/// The SDK configuration for the emulator. Panics with a clear message when
/// no emulator is configured: these tests must run, not skip.
pub async fn emulator_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "AWS_ENDPOINT_URL must point at a local AWS emulator (got '{endpoint}'); run the tests with `make test`, which starts moto"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A prefix no other test uses, so tests can run in parallel.
pub fn unique_prefix(test: &str) -> String {
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}-{}", &short[..8], test.replace('_', "-"))
}
