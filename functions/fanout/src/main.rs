//! Lambda `fanout`: the DynamoDB stream of the events table.

// mimalloc: glibc's malloc was 26-29 % of the pipeline's CPU (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use webhooks_pipeline::FanOut;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_aws::init_lambda_logging();
    let adapters = webhooks_aws::adapters::from_env(&webhooks_aws::sdk_config().await)?;
    let fanout = &FanOut::from_adapters(&adapters);
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_fanout::handle(fanout, event)
    }))
    .await
}
