use std::sync::Arc;
use webhooks_aws::env;
use webhooks_aws::{AwsClients, DynamoDeliveryStore, DynamoEndpointStore, SqsQueue};
use webhooks_pipeline::{DeliveryClient, DeliveryClientConfig, Sender, SenderConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_aws::init_lambda_logging();
    let (schedule, request_timeout) = webhooks_fn_sender::settings_from_env()?;
    let aws = AwsClients::load().await;
    let client = DeliveryClient::new(DeliveryClientConfig {
        request_timeout,
        ..DeliveryClientConfig::default()
    })?;
    let sender = Sender::new(
        Arc::new(DynamoEndpointStore::new(
            aws.dynamodb.clone(),
            env::required("ENDPOINTS_TABLE")?,
        )),
        Arc::new(DynamoDeliveryStore::new(
            aws.dynamodb.clone(),
            env::required("DELIVERIES_TABLE")?,
        )),
        Arc::new(SqsQueue::new(
            aws.sqs.clone(),
            env::required("DELIVERY_QUEUE_URL")?,
        )),
        Arc::new(SqsQueue::new(
            aws.sqs.clone(),
            env::required("DELIVERY_DLQ_URL")?,
        )),
        client,
        SenderConfig {
            schedule,
            ..SenderConfig::default()
        },
    );
    let sender = &sender;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_sender::handle(sender, event)
    }))
    .await
}
