//! DynamoDB and SQS adapters behind the pipeline's ports, through the AWS
//! SDK. The endpoint comes from the SDK's own configuration
//! (`AWS_ENDPOINT_URL` for LocalStack or moto); nothing here knows it is a
//! test.

pub mod adapters;
pub mod cursors;
pub mod deliveries;
pub mod endpoints;
pub mod env;
pub mod envelope;
mod error;
pub mod events;
pub mod idempotency;
pub mod inbound;
pub mod items;
pub mod ops_bus;
pub mod queue;
#[cfg(feature = "dev")]
pub mod request_counter;
#[cfg(feature = "dev")]
pub mod resources;
pub mod runtime_secret;
pub mod stats;
#[cfg(feature = "dev")]
pub mod stream;

pub use aws_config::SdkConfig;
pub use cursors::DynamoCursorStore;
pub use deliveries::DynamoDeliveryStore;
pub use endpoints::DynamoEndpointStore;
pub use events::DynamoEventStore;
pub use idempotency::DynamoIdempotencyStore;
pub use inbound::DynamoInboundStore;
pub use ops_bus::EventBridgeOpsBus;
pub use queue::SqsQueue;
pub use stats::DynamoStatsStore;

/// The SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL`), as every function and `webhooks dev --backend aws`
/// load it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The DynamoDB, SQS and KMS clients every function builds once at start
/// (building one makes no request).
#[derive(Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Wraps and unwraps the data keys of endpoint secrets.
    pub kms: aws_sdk_kms::Client,
}

impl AwsClients {
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
        }
    }

    /// Clients whose every request is tallied by `counter`.
    #[cfg(feature = "dev")]
    pub fn counted(
        config: &aws_config::SdkConfig,
        counter: &request_counter::RequestCounter,
    ) -> Self {
        let ddb = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(counter.clone())
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(counter.clone())
            .build();
        let kms = aws_sdk_kms::config::Builder::from(config)
            .interceptor(counter.clone())
            .build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(ddb),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            kms: aws_sdk_kms::Client::from_conf(kms),
        }
    }
}

/// Structured JSON logs for Lambda (CloudWatch), filtered by `RUST_LOG`
/// (default `info`).
pub fn init_lambda_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .try_init();
}
