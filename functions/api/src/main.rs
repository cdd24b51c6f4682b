//! Lambda `api`: the management API and the portal behind API Gateway.

// mimalloc: glibc's malloc was 26-29 % of the pipeline's CPU (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use webhooks_fn_api::{Api, ApiConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    webhooks_aws::init_lambda_logging();
    let aws = webhooks_aws::sdk_config().await;
    let adapters = webhooks_aws::adapters::from_env(&aws)?;
    let secrets = webhooks_aws::runtime_secret::SecretsManager::from_config(&aws);
    let api = Api::from_adapters(&adapters, ApiConfig::from_env()?)
        .with_portal_from_env(&secrets)
        .await
        .with_ops_from_env(&adapters, &aws);
    let api = &api;
    lambda_http::run(lambda_http::service_fn(move |req| {
        webhooks_fn_api::handle(api, req)
    }))
    .await
}
