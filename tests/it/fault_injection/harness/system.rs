//! The faulty system: one backend's adapters, the same adapters wrapped in
//! the scenario's faults, and the handlers over those.

use crate::fault_injection::kinds;
use crate::fault_injection::scenarios::{Rates, Scenario};
use crate::support::MotoBackend;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use webhooks::event_sources::{QueueMapping, StreamMapping, StreamSource};
use webhooks_domain::{
    Delivery, DeliveryStatus, Endpoint, Event, RetrySchedule, Secret, Subscription,
};
use webhooks_faults::{Calls, Faults, Faulty, Op, Seeded};
use webhooks_memory::{MemoryBackend, MemoryQueue};
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, FanOut, Sender, SenderConfig, Sweeper,
};
use webhooks_ports::{Adapters, DeliveryStore};
use webhooks_testkit::Receiver;

/// One (endpoint id, event id) pair: one delivery to make.
pub(super) type Pair = (String, String);

/// One backend as the suite needs it: its adapters (no faults), for setting
/// up and accounting; its events' change stream; its queues' depths.
pub(crate) struct Backend {
    adapters: Adapters,
    stream: StreamSource,
    depth: QueueDepth,
}

/// The memory backend; the delivery queue redrives to the dead-letter queue
/// after 30 receives, as deployed.
pub(crate) fn memory_backend(visibility: Duration) -> Backend {
    let memory = MemoryBackend::with_visibility(visibility);
    Backend {
        adapters: memory.adapters(),
        stream: StreamSource::memory(memory.events.clone()),
        depth: QueueDepth::Memory(memory.queue, memory.dead_letters),
    }
}

/// Fresh resources on moto, with a short visibility timeout.
pub(crate) async fn moto_backend(test: &str, visibility: Duration) -> Backend {
    let moto = MotoBackend::new(test).await;
    moto.set_visibility(visibility).await;
    Backend {
        adapters: moto.adapters,
        stream: StreamSource::Aws(Box::new(moto.stream)),
        depth: QueueDepth::Sqs {
            client: moto.sqs,
            queue: moto.urls.delivery,
            dead_letters: moto.urls.dead_letter,
        },
    }
}

/// How many messages a queue holds, visible or not.
pub(super) enum QueueDepth {
    Memory(Arc<MemoryQueue>, Arc<MemoryQueue>),
    Sqs {
        client: aws_sdk_sqs::Client,
        queue: String,
        dead_letters: String,
    },
}

impl QueueDepth {
    /// (delivery queue, dead-letter queue)
    pub(super) async fn get(&self) -> (usize, usize) {
        match self {
            QueueDepth::Memory(q, dlq) => (q.len(), dlq.len()),
            QueueDepth::Sqs {
                client,
                queue,
                dead_letters,
            } => (
                sqs_depth(client, queue).await,
                sqs_depth(client, dead_letters).await,
            ),
        }
    }
}

async fn sqs_depth(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("GetQueueAttributes");
    out.attributes()
        .map(|a| {
            a.values()
                .filter_map(|v| v.parse::<usize>().ok())
                .sum::<usize>()
        })
        .unwrap_or(0)
}

/// The scenario's rates as the fault layer's policies, one per wrapped
/// port; every one draws from and counts in the run's [`Faults`].
struct Odds {
    faults: Arc<Faults>,
    rates: Rates,
}

impl Odds {
    /// Writes that fail before they apply or after (the caller is told
    /// they failed), and reads that fail.
    fn delivery_store(&self) -> Seeded {
        let r = self.rates.store;
        Seeded::new(self.faults.clone())
            .fail(Calls::Writes, r.write_fails, kinds::STORE_WRITE_FAILED)
            .fail_after(Calls::Writes, r.write_ack_lost, kinds::STORE_WRITE_ACK_LOST)
            .fail(Calls::Reads, r.read_fails, kinds::STORE_READ_FAILED)
    }

    /// The fan-out's sends: it dies at one (after the creates), a whole
    /// send fails, or some of its messages are refused.
    fn fanout_queue(&self) -> Seeded {
        let r = self.rates;
        Seeded::new(self.faults.clone())
            .hang(Op::Send, r.fanout_crash, kinds::FAN_OUT_CRASH)
            .fail(Op::Send, r.enqueue_fails, kinds::ENQUEUE_FAILED)
            .refusing(r.enqueue_entry_rejected, kinds::ENQUEUE_PARTIALLY_REJECTED)
    }

    /// The sender's visibility changes and deletes.
    fn sender_queue(&self) -> Seeded {
        let r = self.rates;
        Seeded::new(self.faults.clone())
            .fail(
                Op::ChangeVisibility,
                r.visibility_change_fails,
                kinds::VISIBILITY_CHANGE_FAILED,
            )
            .fail(Op::Delete, r.delete_fails, kinds::DELETE_FAILED)
    }

    /// The sender's sends to the dead-letter queue.
    fn dead_letter_queue(&self) -> Seeded {
        let r = self.rates;
        Seeded::new(self.faults.clone()).fail(
            Op::Send,
            r.dlq_send_fails,
            kinds::DEAD_LETTER_SEND_FAILED,
        )
    }
}

/// The assembled system under test: the handlers over the backend's
/// adapters wrapped in faults, and the event source mappings that drive
/// them.
pub(super) struct FaultySystem {
    /// The backend's own adapters, without faults.
    pub(super) adapters: Adapters,
    pub(super) depth: QueueDepth,
    pub(super) fanout: Arc<FanOut>,
    pub(super) stream: StreamMapping,
    pub(super) sender: Arc<QueueMapping>,
    pub(super) sweeper: Sweeper,
    /// Every endpoint made, with the receiver path it posts to.
    pub(super) endpoints: Vec<(Endpoint, String)>,
}

impl FaultySystem {
    /// Wraps the backend's delivery store and queues in the scenario's
    /// faults: the fan-out and the sender each see their own faulty queue.
    pub(super) fn wire(backend: Backend, faults: &Arc<Faults>, s: &Scenario) -> FaultySystem {
        let Backend {
            adapters,
            stream,
            depth,
        } = backend;
        let odds = Odds {
            faults: faults.clone(),
            rates: s.rates,
        };
        let deliveries: Arc<dyn DeliveryStore> = Arc::new(Faulty::new(
            adapters.deliveries.clone(),
            Arc::new(odds.delivery_store()),
        ));
        let fanout_side = Adapters {
            deliveries: deliveries.clone(),
            queue: Arc::new(Faulty::new(
                adapters.queue.clone(),
                Arc::new(odds.fanout_queue()),
            )),
            ..adapters.clone()
        };
        let sender_side = Adapters {
            deliveries,
            queue: Arc::new(Faulty::new(
                adapters.queue.clone(),
                Arc::new(odds.sender_queue()),
            )),
            dead_letters: Arc::new(Faulty::new(
                adapters.dead_letters.clone(),
                Arc::new(odds.dead_letter_queue()),
            )),
            ..adapters.clone()
        };
        let fanout = Arc::new(FanOut::from_adapters(&fanout_side));
        let client = DeliveryClient::new(DeliveryClientConfig {
            request_timeout: s.request_timeout,
            allow_private: true,
            ..DeliveryClientConfig::default()
        })
        .expect("delivery client");
        let sender = Sender::from_adapters(
            &sender_side,
            client,
            SenderConfig {
                schedule: s.schedule.parse::<RetrySchedule>().expect("schedule"),
                // Longer than an attempt takes here, scaled down with the
                // queue's 1 s visibility as the deployed 60 s is with 180 s.
                lease: s.request_timeout * 4,
                ..SenderConfig::default()
            },
        );
        FaultySystem {
            stream: StreamMapping::new(stream, fanout.clone()),
            sender: Arc::new(QueueMapping::new(sender_side.queue, Arc::new(sender))),
            // With its redrive net: what SQS redrove (30 receives of the
            // 1 s visibility) is sent again or dead-lettered.
            sweeper: Sweeper::new(
                adapters.events.clone(),
                adapters.cursors.clone(),
                fanout.clone(),
                Duration::ZERO,
            )
            .with_redrive(
                webhooks_pipeline::RedriveNet::from_adapters(&adapters).with_budget(
                    webhooks_pipeline::RedriveBudget {
                        wait: Duration::ZERO,
                        ..Default::default()
                    },
                ),
            ),
            fanout,
            adapters,
            depth,
            endpoints: Vec::new(),
        }
    }

    /// Each org's endpoints subscribed to everything (its cursor made first,
    /// as the API does), plus one subscribed to a type never published; each
    /// posts to its own path on the receiver.
    pub(super) async fn create_endpoints(&mut self, s: &Scenario, receiver: &Receiver) {
        for (org, _, n) in &s.orgs {
            for i in 0..=*n {
                let types: &[&str] = if i < *n {
                    &["*"]
                } else {
                    &["billing.suspended"]
                };
                let path = format!("/{org}/ep{i}");
                let ep = Endpoint::new(
                    org,
                    receiver.url(&path),
                    Subscription::parse(types).expect("types"),
                    Secret::generate(),
                );
                self.adapters
                    .cursors
                    .ensure(
                        org,
                        &webhooks_domain::ids::id_floor_at("evt", ep.created_at),
                    )
                    .await
                    .expect("cursor");
                let created = self
                    .adapters
                    .endpoints
                    .create(
                        &ep,
                        webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
                    )
                    .await
                    .expect("endpoint");
                assert_eq!(created, webhooks_ports::Created::Written);
                self.endpoints.push((ep, path));
            }
        }
    }

    /// The deliveries `events` must make.
    pub(super) fn expected_pairs(&self, events: &[Event]) -> HashSet<Pair> {
        events
            .iter()
            .flat_map(|e| {
                self.endpoints
                    .iter()
                    .filter(|(ep, _)| ep.org_id == e.org_id && ep.wants(e.event_type))
                    .map(|(ep, _)| (ep.id.clone(), e.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every delivery record of the endpoints.
    pub(super) async fn all_deliveries(&self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (ep, _) in &self.endpoints {
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .adapters
                    .deliveries
                    .list_for_endpoint(&ep.id, None, 100, cursor.as_deref())
                    .await
                    .expect("list deliveries");
                out.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        out
    }

    /// No delivery left to make: every expected one exists, none is pending,
    /// and the delivery queue is empty.
    pub(super) async fn quiescent(&self, expected: usize) -> bool {
        let ds = self.all_deliveries().await;
        ds.len() >= expected
            && ds.iter().all(|d| d.status != DeliveryStatus::Pending)
            && self.depth.get().await.0 == 0
    }
}
