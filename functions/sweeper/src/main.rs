use std::sync::Arc;
use webhooks_aws::env;
use webhooks_aws::{
    AwsClients, DynamoCursorStore, DynamoDeliveryStore, DynamoEndpointStore, DynamoEventStore,
    SqsQueue,
};
use webhooks_pipeline::{FanOut, Sweeper};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks_aws::init_lambda_logging();
    let grace = webhooks_fn_sweeper::grace_from_env()?;
    let aws = AwsClients::load().await;
    let cursors = Arc::new(DynamoCursorStore::new(
        aws.dynamodb.clone(),
        env::required("CURSORS_TABLE")?,
    ));
    let fanout = Arc::new(FanOut::new(
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
        cursors.clone(),
    ));
    let sweeper = Sweeper::new(
        Arc::new(DynamoEventStore::new(
            aws.dynamodb.clone(),
            env::required("EVENTS_TABLE")?,
        )),
        cursors,
        fanout,
        grace,
    );
    let sweeper = &sweeper;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        webhooks_fn_sweeper::handle(sweeper, event)
    }))
    .await
}
