//! Lambda `sweeper`: on a schedule, fans out what the stream never handed
//! over and settles what SQS redrove.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_alloc::small_pages();
    webhooks_aws::init_lambda_logging();
    let aws = webhooks_aws::sdk_config().await;
    let adapters = webhooks_aws::adapters::from_env(&aws)?;
    let sweeper = &webhooks_fn_sweeper::from_env(&adapters, &aws)?;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_sweeper::handle(sweeper, event)
    }))
    .await
}
