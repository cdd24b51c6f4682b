//! The one place the DynamoDB, SQS and KMS-backed adapters are built: from the Lambda
//! environment (`from_env`) or from a resource-name prefix (`webhooks dev
//! --backend aws`, the tests and the benchmarks).

use crate::env::{self, EnvError};
use crate::envelope::EnvelopeCipher;
use crate::{
    AwsClients, DynamoCursorStore, DynamoDeliveryStore, DynamoEndpointStore, DynamoEventStore,
    DynamoIdempotencyStore, DynamoInboundStore, DynamoStatsStore, Lazy, SqsQueue,
};
use std::sync::Arc;
use webhooks_ports::Adapters;

/// Where each table and queue is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    pub events_table: String,
    pub endpoints_table: String,
    pub deliveries_table: String,
    pub cursors_table: String,
    pub idempotency_table: String,
    pub inbound_table: String,
    pub stats_table: String,
    pub delivery_queue_url: String,
    pub dead_letter_queue_url: String,
    /// The KMS key (ARN, id or alias) whose data keys seal endpoint secrets.
    pub endpoint_secrets_key: String,
}

impl Locations {
    /// The names the SAM template gives every function (its `Globals`).
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Locations {
            events_table: env::required("EVENTS_TABLE")?,
            endpoints_table: env::required("ENDPOINTS_TABLE")?,
            deliveries_table: env::required("DELIVERIES_TABLE")?,
            cursors_table: env::required("CURSORS_TABLE")?,
            idempotency_table: env::required("IDEMPOTENCY_TABLE")?,
            inbound_table: env::required("INBOUND_TABLE")?,
            stats_table: env::required("STATS_TABLE")?,
            delivery_queue_url: env::required("DELIVERY_QUEUE_URL")?,
            dead_letter_queue_url: env::required("DELIVERY_DLQ_URL")?,
            endpoint_secrets_key: env::required("ENDPOINT_SECRETS_KEY_ARN")?,
        })
    }

    /// `<prefix>-events`, `<prefix>-deliveries`, ..., the queues' URLs and
    /// the endpoint secrets' key.
    #[cfg(feature = "dev")]
    pub fn for_names(
        names: &crate::resources::ResourceNames,
        made: &crate::resources::Provisioned,
    ) -> Self {
        Locations {
            events_table: names.table("events"),
            endpoints_table: names.table("endpoints"),
            deliveries_table: names.table("deliveries"),
            cursors_table: names.table("cursors"),
            idempotency_table: names.table("idempotency"),
            inbound_table: names.table("inbound"),
            stats_table: names.table("stats"),
            delivery_queue_url: made.queues.delivery.clone(),
            dead_letter_queue_url: made.queues.dead_letter.clone(),
            endpoint_secrets_key: made.endpoint_secrets_key.clone(),
        }
    }
}

/// Every port's DynamoDB or SQS adapter, over `clients`.
pub fn adapters(clients: &AwsClients, at: &Locations) -> Adapters {
    build(
        &clients.dynamodb,
        clients.sqs.clone().into(),
        clients.kms.clone().into(),
        at,
    )
}

fn build(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: Lazy<aws_sdk_sqs::Client>,
    kms: Lazy<aws_sdk_kms::Client>,
    at: &Locations,
) -> Adapters {
    Adapters {
        events: Arc::new(DynamoEventStore::new(ddb.clone(), at.events_table.clone())),
        endpoints: Arc::new(DynamoEndpointStore::new(
            ddb.clone(),
            at.endpoints_table.clone(),
            Arc::new(EnvelopeCipher::new(kms, at.endpoint_secrets_key.clone())),
        )),
        deliveries: Arc::new(DynamoDeliveryStore::new(
            ddb.clone(),
            at.deliveries_table.clone(),
        )),
        cursors: Arc::new(DynamoCursorStore::new(
            ddb.clone(),
            at.cursors_table.clone(),
        )),
        idempotency: Arc::new(DynamoIdempotencyStore::new(
            ddb.clone(),
            at.idempotency_table.clone(),
        )),
        inbound: Arc::new(DynamoInboundStore::new(
            ddb.clone(),
            at.inbound_table.clone(),
        )),
        stats: Arc::new(DynamoStatsStore::new(ddb.clone(), at.stats_table.clone())),
        queue: Arc::new(SqsQueue::new(sqs.clone(), at.delivery_queue_url.clone())),
        dead_letters: Arc::new(SqsQueue::new(sqs, at.dead_letter_queue_url.clone())),
        clock: webhooks_ports::SystemClock::shared(),
    }
}

/// What a Lambda function is built from: the SDK's configuration (loaded
/// once by its `main`, [`crate::sdk_config`], and shared with its other
/// clients) and the resource names of its environment. Only the DynamoDB
/// client, which nearly every invocation uses, is made now; the SQS and
/// KMS clients are made by their first use ([`Lazy`]), so an invocation
/// kind that needs neither never makes them.
pub fn from_env(config: &aws_config::SdkConfig) -> Result<Adapters, EnvError> {
    let at = Locations::from_env()?;
    Ok(build(
        &aws_sdk_dynamodb::Client::new(config),
        Lazy::from_config(config, aws_sdk_sqs::Client::new),
        Lazy::from_config(config, aws_sdk_kms::Client::new),
        &at,
    ))
}
