//! Lambda `api`: the management API and the portal behind API Gateway.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

use webhooks_fn_api::{Api, ApiConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    webhooks_alloc::small_pages();
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
