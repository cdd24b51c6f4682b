//! Lambda `fanout`: the DynamoDB stream of the events table.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

use webhooks_pipeline::FanOut;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_alloc::small_pages();
    webhooks_aws::init_lambda_logging();
    let adapters = webhooks_aws::adapters::from_env(&webhooks_aws::sdk_config().await)?;
    let fanout = &FanOut::from_adapters(&adapters);
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_fanout::handle(fanout, event)
    }))
    .await
}
