//! A whole pipeline on the emulator: tables and queues with a unique prefix,
//! the Lambda handlers, and local event source mappings driving them.

use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use webhooks::event_sources::{QueueMapping, StreamMapping, StreamSource};
use webhooks_aws::adapters::{adapters, Locations};
use webhooks_aws::resources::{create_all, Provisioned, QueueUrls, ResourceNames};
use webhooks_aws::stream::StreamReader;
use webhooks_aws::AwsClients;
use webhooks_domain::{Endpoint, Event, EventType, RetrySchedule, Secret, Subscription};
use webhooks_faults::{Faulty, Op, Script};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, Sender, SenderConfig, Sweeper,
};
use webhooks_ports::Adapters;

/// The emulator's backend for one test: fresh tables and queues with a
/// unique prefix, the adapters over them, and the events table's stream.
/// The one place the tests wire the AWS adapters.
pub struct MotoBackend {
    pub adapters: Adapters,
    /// The clients the adapters use (a test reads the tables raw).
    pub aws: AwsClients,
    pub names: ResourceNames,
    pub made: Provisioned,
    pub stream: StreamReader,
    pub sqs: aws_sdk_sqs::Client,
    pub urls: QueueUrls,
}

impl MotoBackend {
    pub async fn new(test: &str) -> MotoBackend {
        let config = webhooks_testkit::aws::emulator_config().await;
        let aws = AwsClients::from_config(&config);
        let names = ResourceNames::new(&webhooks_testkit::aws::unique_prefix(test));
        let made = create_all(&aws, &names).await.expect("create resources");
        let urls = made.queues.clone();
        let stream = StreamReader::open(
            &aws.dynamodb,
            aws_sdk_dynamodbstreams::Client::new(&config),
            &names.table("events"),
            true,
        )
        .await
        .expect("open stream");
        MotoBackend {
            adapters: adapters(&aws, &Locations::for_names(&names, &made)),
            aws: aws.clone(),
            names: names.clone(),
            made: made.clone(),
            stream,
            sqs: aws.sqs.clone(),
            urls,
        }
    }

    /// Another process's adapters over the same resources (its own caches),
    /// whose every AWS request `counter` tallies.
    pub async fn counted_adapters(
        &self,
        counter: &webhooks_aws::request_counter::RequestCounter,
    ) -> Adapters {
        let config = webhooks_testkit::aws::emulator_config().await;
        let clients = AwsClients::counted(&config, counter);
        adapters(&clients, &Locations::for_names(&self.names, &self.made))
    }

    /// Sets the delivery queue's visibility timeout (whole seconds, at least
    /// one), so that what a crash leaves behind comes back within the test
    /// (deployed: 180 s).
    pub async fn set_visibility(&self, visibility: Duration) {
        self.sqs
            .set_queue_attributes()
            .queue_url(&self.urls.delivery)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().max(1).to_string(),
            )
            .send()
            .await
            .expect("set visibility timeout");
    }
}

/// The assembled system on the emulator: the adapters, the fan-out (whose
/// queue can be made to fail) and the local event source mappings.
pub struct MotoSystem {
    /// The backend's adapters (the fan-out's failing queue is not among
    /// them).
    pub adapters: Adapters,
    pub fanout: Arc<FanOut>,
    pub stream: StreamMapping,
    pub sender: QueueMapping,
}

impl MotoSystem {
    /// A fresh set of resources; `fail_first_sends` injects queue failures
    /// into the fan-out.
    pub async fn new(test: &str, schedule: &str, fail_first_sends: u64) -> MotoSystem {
        let backend = MotoBackend::new(test).await;
        let sender_side = backend.adapters.clone();
        Self::with_sender_adapters(backend, sender_side, schedule, fail_first_sends)
    }

    /// The system over `backend`, whose sender runs on `sender_side` (the
    /// adapters of another process, as in Lambda).
    pub fn with_sender_adapters(
        backend: MotoBackend,
        sender_side: Adapters,
        schedule: &str,
        fail_first_sends: u64,
    ) -> MotoSystem {
        let adapters = backend.adapters;
        let flaky = Adapters {
            queue: Arc::new(Faulty::new(
                adapters.queue.clone(),
                Arc::new(Script::new().fail(Op::Send, ..=fail_first_sends)),
            )),
            ..adapters.clone()
        };
        let fanout = Arc::new(FanOut::from_adapters(&flaky));
        let stream =
            StreamMapping::new(StreamSource::Aws(Box::new(backend.stream)), fanout.clone());
        let client = DeliveryClient::new(DeliveryClientConfig {
            request_timeout: Duration::from_secs(5),
            allow_private: true,
            ..DeliveryClientConfig::default()
        })
        .expect("client");
        let sender = Arc::new(Sender::from_adapters(
            &sender_side,
            client,
            SenderConfig {
                schedule: schedule.parse::<RetrySchedule>().expect("schedule"),
                ..SenderConfig::default()
            },
        ));
        let sender = QueueMapping::new(adapters.queue.clone(), sender);
        MotoSystem {
            adapters,
            fanout,
            stream,
            sender,
        }
    }

    pub async fn endpoint(&self, org: &str, url: String, types: &[&str]) -> Endpoint {
        let ep = Endpoint::new(
            org,
            url,
            Subscription::parse(types).expect("types"),
            Secret::generate(),
        );
        let created = self
            .adapters
            .endpoints
            .create(
                &ep,
                webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
            )
            .await
            .expect("create endpoint");
        assert_eq!(created, webhooks_ports::Created::Written);
        // As the API does: the org's sweep starts where its first endpoint did.
        self.adapters
            .cursors
            .ensure(
                org,
                &webhooks_domain::ids::id_floor_at("evt", ep.created_at),
            )
            .await
            .expect("cursor");
        ep
    }

    pub async fn publish(&self, org: &str, t: EventType, data: &str) -> Event {
        let e = Event::new(
            org,
            t,
            RawValue::from_string(data.to_string()).expect("json"),
        );
        assert!(self
            .adapters
            .events
            .put_if_absent(&e)
            .await
            .expect("put event"));
        e
    }

    /// Drives the stream and the queue until `done` holds or `timeout` ends.
    pub async fn drive_until<F, Fut>(&mut self, timeout: Duration, mut done: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            self.stream.step(Duration::from_millis(100)).await;
            self.sender.step(Duration::ZERO).await;
            if done().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Drives the pipeline until the delivery of `event_id` to `endpoint_id`
    /// has `status`.
    pub async fn drive_until_status(
        &mut self,
        endpoint_id: &str,
        event_id: &str,
        status: webhooks_domain::DeliveryStatus,
        timeout: Duration,
    ) -> bool {
        let ds = self.adapters.deliveries.clone();
        let id = webhooks_domain::delivery::delivery_id(endpoint_id, event_id);
        self.drive_until(timeout, || {
            let (ds, id) = (ds.clone(), id.clone());
            async move { ds.get(&id).await.ok().flatten().map(|d| d.status) == Some(status) }
        })
        .await
    }

    /// A sweeper over this system's tables with no grace period.
    pub fn sweeper(&self) -> Sweeper {
        Sweeper::new(
            self.adapters.events.clone(),
            self.adapters.cursors.clone(),
            self.fanout.clone(),
            Duration::ZERO,
        )
    }
}
