//! The system `webhooks dev` runs: the same handlers as the Lambdas, wired to
//! the embedded memory backend or to DynamoDB/SQS (LocalStack, moto, AWS).

use crate::event_sources::StreamSource;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::adapters::{adapters, Locations};
use webhooks_aws::resources::{create_all, find_all, ResourceNames};
use webhooks_aws::stream::StreamReader;
use webhooks_aws::AwsClients;
use webhooks_domain::retry::parse_duration;
use webhooks_domain::{EndpointUrlPolicy, RetrySchedule};
use webhooks_fn_api::{Api, ApiConfig};
use webhooks_fn_inbound::{Inbound, InboundConfig};
use webhooks_memory::{MemoryBackend, Retention};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, Metrics, Ops, OpsEndpoint, OpsNotifier, Sender,
    SenderConfig, Sweeper,
};
use webhooks_ports::queue_settings::DELIVERY_QUEUE_VISIBILITY_SECS;
use webhooks_ports::{Adapters, InboundStore, Queue, SystemClock};

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

/// The slow lane's cap `webhooks dev` uses unless told otherwise
/// (`LaneConfig`'s default).
pub const DEFAULT_SLOW_LANE_CAP: Option<u32> =
    Some(webhooks_pipeline::sender::limits::DEFAULT_SLOW_CAP);
/// The org share of the slow lane `webhooks dev` uses unless told otherwise.
pub const DEFAULT_ORG_SLOW_LANE_CAP: Option<u32> =
    Some(webhooks_pipeline::sender::limits::DEFAULT_ORG_SLOW_CAP);
/// `webhooks dev --request-timeout` unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "15s";
/// `webhooks dev --retention` unless told otherwise (as deployed).
pub const DEFAULT_RETENTION: &str = "30d";
/// `webhooks dev --jwt-secret` unless told otherwise.
pub const DEFAULT_JWT_SECRET: &str = "dev-secret";
/// How old an event must be before `webhooks dev`'s sweeper takes it: the
/// least that covers every event write.
pub const DEFAULT_SWEEP_GRACE: Duration = webhooks_domain::event::MIN_SETTLE_WINDOW;

/// What the system is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    pub schedule: RetrySchedule,
    pub request_timeout: Duration,
    /// Let endpoints be plain http and loopback/private (local dev default).
    pub allow_private: bool,
    /// Most endpoints an org may have (`--max-endpoints-per-org`).
    pub max_endpoints_per_org: u32,
    pub inbound: InboundConfig,
    /// How old an event must be before the sweeper takes it.
    pub sweep_grace: Duration,
    /// With the aws backend: tally every SDK request here (benchmarks).
    pub request_counter: Option<webhooks_aws::request_counter::RequestCounter>,
    /// Sign and check portal sessions with HS256 and this secret (the
    /// `--jwt-secret`); `None`: no portal sessions.
    pub portal_secret: Option<webhooks_fn_api::portal::DevSigningSecret>,
    /// The operator's webhook for operational notifications; `None`: they
    /// are only logged.
    pub ops_webhook: Option<OpsEndpoint>,
    /// Print a one-line summary of the sender's figures this often.
    pub stats_every: Option<Duration>,
    /// Most POSTs in flight at once to a slow endpoint; `None`: no cap.
    pub slow_lane_cap: Option<u32>,
    /// Most slow-lane POSTs in flight at once to one org's endpoints while
    /// another org has work; `None`: no org share.
    pub org_slow_lane_cap: Option<u32>,
    /// With the memory backend: how long events and finished deliveries
    /// are kept, and how many.
    pub retention: Retention,
}

impl Settings {
    /// What `webhooks dev` runs with when given no flag and no environment
    /// variable: the memory backend, the default retry schedule, request
    /// timeout, slow lane and retention, private endpoints allowed, no
    /// inbound secrets. `webhooks dev` starts from these and the benchmarks
    /// measure them, so a changed default changes both.
    pub fn dev_defaults() -> Settings {
        Settings {
            backend: Backend::Memory,
            schedule: RetrySchedule::default(),
            request_timeout: parse_duration(DEFAULT_REQUEST_TIMEOUT)
                .expect("DEFAULT_REQUEST_TIMEOUT is a duration"),
            allow_private: true,
            max_endpoints_per_org: webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
            inbound: InboundConfig::default(),
            sweep_grace: DEFAULT_SWEEP_GRACE,
            request_counter: None,
            portal_secret: Some(webhooks_fn_api::portal::DevSigningSecret(
                DEFAULT_JWT_SECRET.to_string(),
            )),
            ops_webhook: None,
            stats_every: None,
            slow_lane_cap: DEFAULT_SLOW_LANE_CAP,
            org_slow_lane_cap: DEFAULT_ORG_SLOW_LANE_CAP,
            retention: retention(DEFAULT_RETENTION, Retention::DEFAULT_MAX_KEPT)
                .expect("DEFAULT_RETENTION and DEFAULT_MAX_KEPT keep something"),
        }
    }
}

/// The memory backend's retention from `--retention` and
/// `--retain-deliveries`: both must keep something.
pub fn retention(ttl: &str, max_kept: usize) -> anyhow::Result<Retention> {
    let ttl = parse_duration(ttl).map_err(|e| anyhow::anyhow!("--retention: {e}"))?;
    let ttl = chrono::Duration::from_std(ttl)
        .ok()
        .filter(|t| *t > chrono::Duration::zero())
        .context("--retention must be longer than zero")?;
    anyhow::ensure!(max_kept > 0, "--retain-deliveries must be at least 1");
    Ok(Retention {
        ttl,
        max_kept: Some(max_kept),
    })
}

/// The assembled system: every handler over one backend's adapters, and the
/// event sources that feed them. [`System::start`] runs it.
pub struct System {
    pub api: Arc<Api>,
    pub inbound: Arc<Inbound>,
    pub inbound_store: Arc<dyn InboundStore>,
    pub fanout: Arc<FanOut>,
    pub sender: Arc<Sender>,
    pub sweeper: Arc<Sweeper>,
    pub queue: Arc<dyn Queue>,
    pub stream: StreamSource,
    /// The memory backend, when it is the one in use (tests, benchmarks).
    pub memory: Option<MemoryBackend>,
    /// The sender's figures, and how often to print them (`--stats-every`).
    pub stats: Option<(Metrics, Duration)>,
}

impl System {
    /// Builds the system for `settings`.
    pub async fn build(settings: &Settings) -> anyhow::Result<System> {
        let (adapters, stream, memory) = match &settings.backend {
            Backend::Memory => {
                let memory = MemoryBackend::with_retention(
                    Duration::from_secs(u64::from(DELIVERY_QUEUE_VISIBILITY_SECS)),
                    SystemClock::shared(),
                    settings.retention,
                );
                let stream = StreamSource::memory(memory.events.clone());
                (memory.adapters(), stream, Some(memory))
            }
            Backend::Aws {
                prefix,
                create_resources,
            } => {
                let (adapters, stream) =
                    aws_adapters(prefix, *create_resources, settings.request_counter.as_ref())
                        .await?;
                (adapters, stream, None)
            }
        };
        let api = Api::from_adapters(
            &adapters,
            ApiConfig {
                url_policy: EndpointUrlPolicy {
                    allow_http: true,
                    allow_private: settings.allow_private,
                },
                max_endpoints_per_org: settings.max_endpoints_per_org,
                ..ApiConfig::default()
            },
        );
        let api = match &settings.portal_secret {
            Some(secret) => api.with_portal(webhooks_fn_api::portal::PortalIssuer::hs256(
                secret.0.as_bytes(),
                "webhooks-dev-portal",
            )),
            None => api,
        };
        // Notices ride the delivery queue when there is an operator webhook.
        let notifier = OpsNotifier::new(
            settings
                .ops_webhook
                .as_ref()
                .map(|_| adapters.queue.clone()),
            None,
        );
        let api = api.with_ops(notifier.clone());
        let sweeper_notifier = notifier.clone();
        let inbound = Inbound::from_adapters(&adapters, settings.inbound.clone());
        let client = DeliveryClient::new(DeliveryClientConfig {
            request_timeout: settings.request_timeout,
            allow_private: settings.allow_private,
            ..DeliveryClientConfig::default()
        })?;
        let sender = Sender::from_adapters(
            &adapters,
            client,
            SenderConfig {
                schedule: settings.schedule.clone(),
                // The lease outlasts any one attempt, however long its timeout.
                lease: SenderConfig::default()
                    .lease
                    .max(settings.request_timeout * 2),
                lanes: webhooks_pipeline::sender::limits::LaneConfig {
                    slow_cap: settings.slow_lane_cap,
                    org_slow_cap: settings.org_slow_lane_cap,
                    ..Default::default()
                },
                ..SenderConfig::default()
            },
        )
        .with_ops(Ops {
            notifier,
            endpoint: settings.ops_webhook.clone(),
        });
        let stats = settings
            .stats_every
            .map(|every| (Metrics::Tally(Default::default()), every));
        let sender = match &stats {
            Some((metrics, _)) => sender.with_metrics(metrics.clone()),
            None => sender,
        };
        Ok(System {
            api: Arc::new(api),
            inbound: Arc::new(inbound),
            inbound_store: adapters.inbound.clone(),
            fanout: Arc::new(FanOut::from_adapters(&adapters)),
            sender: Arc::new(sender),
            sweeper: Arc::new(
                Sweeper::from_adapters(&adapters, settings.sweep_grace).with_ops(sweeper_notifier),
            ),
            queue: adapters.queue.clone(),
            stream,
            memory,
            stats,
        })
    }
}

/// The DynamoDB/SQS adapters of the resources named by `prefix` (made first
/// when `create`), and the events table's stream.
async fn aws_adapters(
    prefix: &str,
    create: bool,
    counter: Option<&webhooks_aws::request_counter::RequestCounter>,
) -> anyhow::Result<(Adapters, StreamSource)> {
    let config = webhooks_aws::sdk_config().await;
    let clients = match counter {
        Some(c) => AwsClients::counted(&config, c),
        None => AwsClients::from_config(&config),
    };
    let names = ResourceNames::new(prefix);
    let made = if create {
        create_all(&clients, &names)
            .await
            .context("creating tables, queues and the endpoint secrets' KMS key")?
    } else {
        find_all(&clients, &names)
            .await
            .context("finding the queues and KMS key (run with --create-resources to make them)")?
    };
    let reader = StreamReader::open(
        &clients.dynamodb,
        aws_sdk_dynamodbstreams::Client::new(&config),
        &names.table("events"),
        true,
    )
    .await
    .context("opening the events table's stream")?;
    let adapters = adapters(&clients, &Locations::for_names(&names, &made));
    Ok((adapters, StreamSource::Aws(Box::new(reader))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_defaults_are_the_documented_ones() {
        let s = Settings::dev_defaults();
        assert_eq!(s.backend, Backend::Memory);
        assert_eq!(s.request_timeout, Duration::from_secs(15));
        assert_eq!(s.schedule.delays(), RetrySchedule::default().delays());
        assert_eq!(s.slow_lane_cap, Some(2));
        assert_eq!(s.org_slow_lane_cap, Some(4));
        assert!(s.allow_private);
        assert_eq!(s.retention, Retention::bounded(Retention::DEFAULT_MAX_KEPT));
    }
}
