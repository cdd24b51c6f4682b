//! Lambda `sender`: the delivery queue (SQS), with partial batch failures.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_alloc::small_pages();
    webhooks_aws::init_lambda_logging();
    let aws = webhooks_aws::sdk_config().await;
    let adapters = webhooks_aws::adapters::from_env(&aws)?;
    let ops = webhooks_fn_sender::ops_from_env(&adapters, &aws).await?;
    let sender = &webhooks_fn_sender::from_env(&adapters)?
        .with_ops(ops)
        .with_metrics(webhooks_pipeline::Metrics::Emf);
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_sender::handle(sender, event)
    }))
    .await
}
