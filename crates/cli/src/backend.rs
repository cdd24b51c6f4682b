//! The system `webhooks dev` runs: the same handlers as the Lambdas, wired to
//! the embedded memory backend or to DynamoDB/SQS (LocalStack, moto, AWS).

use crate::event_sources::StreamSource;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::resources::{create_all, queue_urls, ResourceNames};
use webhooks_aws::stream::StreamReader;
use webhooks_aws::{
    AwsClients, DynamoCursorStore, DynamoDeliveryStore, DynamoEndpointStore, DynamoEventStore,
    DynamoIdempotencyStore, DynamoInboundStore, SqsQueue,
};
use webhooks_domain::{EndpointUrlPolicy, RetrySchedule};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_fn_inbound::{Inbound, InboundConfig};
use webhooks_memory::{
    MemoryCursorStore, MemoryDeliveryStore, MemoryEndpointStore, MemoryEventStore,
    MemoryIdempotencyStore, MemoryInboundStore, MemoryQueue,
};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, Sender, SenderConfig, Sweeper,
};
use webhooks_ports::{
    CursorStore, DeliveryStore, EndpointStore, EventStore, IdempotencyStore, InboundStore, Queue,
};

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, in this process; nothing to install.
    Memory,
    /// DynamoDB and SQS through the AWS SDK's default configuration.
    Aws {
        /// Names are `<prefix>-events`, `<prefix>-deliveries`, ...
        prefix: String,
        create_resources: bool,
    },
}

/// What the system is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    pub schedule: RetrySchedule,
    pub request_timeout: Duration,
    /// Let endpoints be plain http and loopback/private (local dev default).
    pub allow_private: bool,
    pub inbound: InboundConfig,
    /// How old an event must be before the sweeper takes it.
    pub sweep_grace: Duration,
    /// With the aws backend: tally every SDK request here (benchmarks).
    pub request_counter: Option<webhooks_aws::request_counter::RequestCounter>,
    /// Sign portal sessions with HS256 and this secret (the local gateway's
    /// `--jwt-secret`, so the gateway accepts them); `None`: no portal sessions.
    pub portal_secret: Option<webhooks_fn_api::portal::DevSigningSecret>,
}

/// The running parts.
pub struct System {
    pub api: Arc<Api>,
    pub inbound: Arc<Inbound>,
    pub inbound_store: Arc<dyn InboundStore>,
    pub fanout: Arc<FanOut>,
    pub sender: Arc<Sender>,
    pub sweeper: Arc<Sweeper>,
    pub queue: Arc<dyn Queue>,
    pub stream: StreamSource,
    /// The memory stores, when the backend is memory (for benchmarks).
    pub memory_deliveries: Option<Arc<MemoryDeliveryStore>>,
}

struct Stores {
    events: Arc<dyn EventStore>,
    endpoints: Arc<dyn EndpointStore>,
    deliveries: Arc<dyn DeliveryStore>,
    cursors: Arc<dyn CursorStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    inbound: Arc<dyn InboundStore>,
    queue: Arc<dyn Queue>,
    dead_letters: Arc<dyn Queue>,
    stream: StreamSource,
    memory_deliveries: Option<Arc<MemoryDeliveryStore>>,
}

async fn memory_stores() -> Stores {
    let events = MemoryEventStore::new();
    let deliveries = MemoryDeliveryStore::new();
    let dead_letters = MemoryQueue::new(Duration::from_secs(30));
    let queue = MemoryQueue::with_redrive(
        Duration::from_secs(u64::from(
            webhooks_aws::resources::DELIVERY_QUEUE_VISIBILITY_SECS,
        )),
        dead_letters.clone(),
        webhooks_aws::resources::MAX_RECEIVE_COUNT,
    );
    Stores {
        stream: StreamSource::memory(events.clone()),
        events,
        endpoints: MemoryEndpointStore::new(),
        deliveries: deliveries.clone(),
        cursors: MemoryCursorStore::new(),
        idempotency: MemoryIdempotencyStore::new(),
        inbound: MemoryInboundStore::new(),
        queue,
        dead_letters,
        memory_deliveries: Some(deliveries),
    }
}

async fn aws_stores(
    prefix: &str,
    create: bool,
    counter: Option<&webhooks_aws::request_counter::RequestCounter>,
) -> anyhow::Result<Stores> {
    let config = webhooks_aws::sdk_config().await;
    let aws = match counter {
        Some(c) => AwsClients::counted(&config, c),
        None => AwsClients::from_config(&config),
    };
    let names = ResourceNames::new(prefix);
    let urls = if create {
        create_all(&aws.dynamodb, &aws.sqs, &names)
            .await
            .context("creating tables and queues")?
    } else {
        queue_urls(&aws.sqs, &names)
            .await
            .context("finding the queues (run with --create-resources to make them)")?
    };
    let ddb = &aws.dynamodb;
    let reader = StreamReader::open(
        ddb,
        aws_sdk_dynamodbstreams::Client::new(&config),
        &names.table("events"),
        true,
    )
    .await
    .context("opening the events table's stream")?;
    Ok(Stores {
        events: Arc::new(DynamoEventStore::new(ddb.clone(), names.table("events"))),
        endpoints: Arc::new(DynamoEndpointStore::new(
            ddb.clone(),
            names.table("endpoints"),
        )),
        deliveries: Arc::new(DynamoDeliveryStore::new(
            ddb.clone(),
            names.table("deliveries"),
        )),
        cursors: Arc::new(DynamoCursorStore::new(ddb.clone(), names.table("cursors"))),
        idempotency: Arc::new(DynamoIdempotencyStore::new(
            ddb.clone(),
            names.table("idempotency"),
        )),
        inbound: Arc::new(DynamoInboundStore::new(ddb.clone(), names.table("inbound"))),
        queue: Arc::new(SqsQueue::new(aws.sqs.clone(), urls.delivery)),
        dead_letters: Arc::new(SqsQueue::new(aws.sqs.clone(), urls.dead_letter)),
        stream: StreamSource::Aws(Box::new(reader)),
        memory_deliveries: None,
    })
}

/// Builds the system for `settings`.
pub async fn build(settings: &Settings) -> anyhow::Result<System> {
    let s = match &settings.backend {
        Backend::Memory => memory_stores().await,
        Backend::Aws {
            prefix,
            create_resources,
        } => aws_stores(prefix, *create_resources, settings.request_counter.as_ref()).await?,
    };
    let url_policy = EndpointUrlPolicy {
        allow_http: true,
        allow_private: settings.allow_private,
    };
    let api = Api::new(
        s.events.clone(),
        s.endpoints.clone(),
        s.deliveries.clone(),
        s.cursors.clone(),
        s.idempotency.clone(),
        s.queue.clone(),
        ApiConfig {
            url_policy,
            rotation_overlap: chrono::Duration::hours(24),
        },
    );
    let api = Arc::new(match &settings.portal_secret {
        Some(secret) => api.with_portal(webhooks_fn_api::portal::PortalIssuer::hs256(
            secret.0.as_bytes(),
            "webhooks-dev-portal",
        )),
        None => api,
    });
    let inbound = Arc::new(Inbound::new(
        s.events.clone(),
        s.idempotency.clone(),
        s.inbound.clone(),
        settings.inbound.clone(),
    ));
    let fanout = Arc::new(FanOut::new(
        s.endpoints.clone(),
        s.deliveries.clone(),
        s.queue.clone(),
        s.cursors.clone(),
    ));
    let client = DeliveryClient::new(DeliveryClientConfig {
        request_timeout: settings.request_timeout,
        allow_private: settings.allow_private,
        ..DeliveryClientConfig::default()
    })
    .map_err(anyhow::Error::msg)?;
    let sender = Arc::new(Sender::new(
        s.endpoints.clone(),
        s.deliveries.clone(),
        s.queue.clone(),
        s.dead_letters.clone(),
        client,
        SenderConfig {
            schedule: settings.schedule.clone(),
            ..SenderConfig::default()
        },
    ));
    let sweeper = Arc::new(Sweeper::new(
        s.events.clone(),
        s.cursors.clone(),
        fanout.clone(),
        settings.sweep_grace,
    ));
    Ok(System {
        api,
        inbound,
        inbound_store: s.inbound,
        fanout,
        sender,
        sweeper,
        queue: s.queue,
        stream: s.stream,
        memory_deliveries: s.memory_deliveries,
    })
}
