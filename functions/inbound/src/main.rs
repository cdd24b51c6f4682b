//! Lambda `inbound`: the Stripe, Twilio and WhatsApp webhook routes.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

use webhooks_fn_inbound::{Inbound, InboundConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    webhooks_alloc::small_pages();
    webhooks_aws::init_lambda_logging();
    let aws = webhooks_aws::sdk_config().await;
    let config = InboundConfig::from_env(
        &webhooks_aws::runtime_secret::SecretsManager::from_config(&aws),
    )?;
    let adapters = webhooks_aws::adapters::from_env(&aws)?;
    let inbound = &Inbound::from_adapters(&adapters, config);
    lambda_http::run(lambda_http::service_fn(move |req| {
        webhooks_fn_inbound::handle(inbound, req)
    }))
    .await
}
