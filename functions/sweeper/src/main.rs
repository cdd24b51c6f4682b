//! Lambda `sweeper`: on a schedule, fans out what the stream never handed
//! over and settles what SQS redrove.

// mimalloc: glibc's malloc was 26-29 % of the pipeline's CPU (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_aws::init_lambda_logging();
    let aws = webhooks_aws::sdk_config().await;
    let adapters = webhooks_aws::adapters::from_env(&aws)?;
    let sweeper = &webhooks_fn_sweeper::from_env(&adapters, &aws)?;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_sweeper::handle(sweeper, event)
    }))
    .await
}
