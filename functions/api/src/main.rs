//! Lambda `api`: the management API behind API Gateway.

use std::sync::Arc;
use webhooks_aws::env;
use webhooks_aws::{
    AwsClients, DynamoCursorStore, DynamoDeliveryStore, DynamoEndpointStore, DynamoEventStore,
    DynamoIdempotencyStore, SqsQueue,
};
use webhooks_domain::EndpointUrlPolicy;
use webhooks_fn_api::portal::PortalIssuer;
use webhooks_fn_api::{Api, ApiConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    webhooks_aws::init_lambda_logging();
    let aws = AwsClients::load().await;
    let api = Api::new(
        Arc::new(DynamoEventStore::new(
            aws.dynamodb.clone(),
            env::required("EVENTS_TABLE")?,
        )),
        Arc::new(DynamoEndpointStore::new(
            aws.dynamodb.clone(),
            env::required("ENDPOINTS_TABLE")?,
        )),
        Arc::new(DynamoDeliveryStore::new(
            aws.dynamodb.clone(),
            env::required("DELIVERIES_TABLE")?,
        )),
        Arc::new(DynamoCursorStore::new(
            aws.dynamodb.clone(),
            env::required("CURSORS_TABLE")?,
        )),
        Arc::new(DynamoIdempotencyStore::new(
            aws.dynamodb.clone(),
            env::required("IDEMPOTENCY_TABLE")?,
        )),
        Arc::new(SqsQueue::new(
            aws.sqs.clone(),
            env::required("DELIVERY_QUEUE_URL")?,
        )),
        ApiConfig {
            url_policy: EndpointUrlPolicy::PRODUCTION,
            ..ApiConfig::default()
        },
    );
    // Portal sessions: RS256 with the stack's key, trusted by the portal
    // authorizer through the JWKS this function serves under /portal-auth.
    let api = match env::optional("PORTAL_SIGNING_KEY") {
        Some(pem) => api.with_portal(
            PortalIssuer::rs256_pem(&pem, &env::required("PORTAL_ISSUER")?)?
                .with_base_url(env::optional("WEBHOOKS_PUBLIC_BASE_URL")),
        ),
        None => api,
    };
    let api = &api;
    lambda_http::run(lambda_http::service_fn(move |req| {
        webhooks_fn_api::handle(api, req)
    }))
    .await
}
