use std::sync::Arc;
use webhooks_aws::env;
use webhooks_aws::{
    AwsClients, DynamoCursorStore, DynamoDeliveryStore, DynamoEndpointStore, SqsQueue,
};
use webhooks_pipeline::FanOut;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_aws::init_lambda_logging();
    let aws = AwsClients::load().await;
    let fanout = FanOut::new(
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
        Arc::new(DynamoCursorStore::new(
            aws.dynamodb.clone(),
            env::required("CURSORS_TABLE")?,
        )),
    );
    let fanout = &fanout;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_fanout::handle(fanout, event)
    }))
    .await
}
