use std::sync::Arc;
use webhooks_aws::env;
use webhooks_aws::{AwsClients, DynamoEventStore, DynamoIdempotencyStore, DynamoInboundStore};
use webhooks_fn_inbound::{Inbound, InboundConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    webhooks_aws::init_lambda_logging();
    let config = InboundConfig::from_env()?;
    let aws = AwsClients::load().await;
    let inbound = Inbound::new(
        Arc::new(DynamoEventStore::new(
            aws.dynamodb.clone(),
            env::required("EVENTS_TABLE")?,
        )),
        Arc::new(DynamoIdempotencyStore::new(
            aws.dynamodb.clone(),
            env::required("IDEMPOTENCY_TABLE")?,
        )),
        Arc::new(DynamoInboundStore::new(
            aws.dynamodb.clone(),
            env::required("INBOUND_TABLE")?,
        )),
        config,
    );
    let inbound = &inbound;
    lambda_http::run(lambda_http::service_fn(move |req| {
        webhooks_fn_inbound::handle(inbound, req)
    }))
    .await
}
