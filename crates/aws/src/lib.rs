//! DynamoDB and SQS adapters behind the pipeline's ports, through the AWS
//! SDK. The endpoint comes from the SDK's own configuration
//! (`AWS_ENDPOINT_URL` for LocalStack or moto); nothing here knows it is a
//! test.

pub mod adapters;
mod batch_get;
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
pub mod lazy;
pub mod ops_bus;
pub mod queue;
#[cfg(feature = "dev")]
pub mod request_counter;
#[cfg(feature = "dev")]
pub mod resources;
pub mod runtime_secret;
#[cfg(feature = "dev")]
pub mod seal_migration;
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
pub use lazy::Lazy;
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
/// (default `info`): a level, `target=level` directives or both, as in
/// `info,webhooks=debug`. An unset, empty or unreadable `RUST_LOG` means
/// `info`. (`tracing_subscriber`'s `Targets`, not its regex-based
/// `EnvFilter`: the same directives without span and field filters, and a
/// smaller binary.)
pub fn init_lambda_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .without_time()
        .finish()
        .with(filter)
        .try_init();
}

/// The filter a `RUST_LOG` value describes.
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    rust_log
        .map(str::trim)
        .filter(|directives| !directives.is_empty())
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::INFO)
        })
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::level_filters::LevelFilter;
    use tracing::Level;

    #[test]
    fn rust_log_sets_the_level_and_per_target_levels() {
        let f = log_filter(Some("warn,webhooks=debug"));
        assert!(f.would_enable("webhooks_pipeline::sender", &Level::DEBUG));
        assert!(!f.would_enable("webhooks_pipeline::sender", &Level::TRACE));
        assert!(f.would_enable("aws_smithy_runtime", &Level::WARN));
        assert!(!f.would_enable("aws_smithy_runtime", &Level::INFO));
    }

    #[test]
    fn unset_empty_or_unreadable_rust_log_means_info() {
        for value in [None, Some(""), Some("  "), Some("webhooks=loud")] {
            let f = log_filter(value);
            assert_eq!(f.default_level(), Some(LevelFilter::INFO), "{value:?}");
            assert!(!f.would_enable("webhooks_pipeline", &Level::DEBUG));
        }
    }
}
