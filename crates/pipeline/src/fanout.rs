//! Fan-out: each new event becomes exactly one delivery per subscribed
//! endpoint, and each new delivery is queued for the sender.

use futures::stream::{self, StreamExt};
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use webhooks_domain::{Delivery, Event, Payload, Subscriber};
use webhooks_ports::{
    Adapters, BackendError, Clock, DeliveryStore, OrgEndpoints, Queue, QueueMessage, SystemClock,
};

/// How many conditional creates run at once.
const CREATE_CONCURRENCY: usize = 64;

/// The fan-out step.
pub struct FanOut {
    endpoints: Arc<dyn OrgEndpoints>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
}

/// What a fan-out of a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanOutReport {
    /// Deliveries created by this call.
    pub created: usize,
    /// Deliveries that already existed (a replayed event).
    pub existing: usize,
    /// Messages queued (one per new delivery; an existing one has its own).
    pub enqueued: usize,
    /// Index of the first event that could not be fully fanned out; it and
    /// the events after it must be offered again.
    pub first_failure: Option<usize>,
}

impl FanOut {
    /// The fan-out over a backend's adapters.
    pub fn from_adapters(adapters: &Adapters) -> Self {
        FanOut::new(
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            adapters.queue.clone(),
        )
        .with_clock(adapters.clock.clone())
    }

    pub fn new(
        endpoints: Arc<dyn OrgEndpoints>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        FanOut {
            endpoints,
            deliveries,
            queue,
            clock: SystemClock::shared(),
        }
    }

    /// The same fan-out, stamping new deliveries with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Fans out a batch of events given in stream order (the stream's, or
    /// the sweeper's of events the stream has most likely handed over
    /// already). Safe to repeat: the deliveries are read first, and only the
    /// missing ones are queued and created. One that exists is left alone,
    /// whatever its state: its record was created after its message was
    /// sent, and that message is on the queue still (waiting behind a
    /// backlog, deferred by its endpoint's limits), or SQS moved it to the
    /// dead-letter queue, where the redrive net finds it
    /// ([`crate::redrive`]). So a replay or a sweep never gives a delivery
    /// that merely waits a second message.
    ///
    /// The read is what makes a replay cheap now that messages go before
    /// records: without it every replay (Lambda retries a batch after a
    /// partial failure or a timeout, from the failed record on) would queue
    /// a message for every delivery of the batch again, whatever became of
    /// it, and a batch that keeps timing out after its sends would flood the
    /// queue with copies for as long as it is retried. When the read fails,
    /// nothing is queued or created: every event with a delivery to make is
    /// offered again.
    pub async fn fan_out(&self, events: &[Event]) -> FanOutReport {
        let mut report = FanOutReport::default();
        let mut failed = vec![false; events.len()];

        // The endpoints of each org in the batch, read once.
        let mut orgs: Vec<String> = events.iter().map(|e| e.org_id.clone()).collect();
        orgs.sort_unstable();
        orgs.dedup();
        let loaded: HashMap<String, Result<Vec<Subscriber>, BackendError>> =
            stream::iter(orgs.into_iter().map(|org| {
                let endpoints = self.endpoints.clone();
                async move {
                    let r = endpoints.list_all(&org).await;
                    (org, r)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;

        // One conditional create per (endpoint, event).
        let now = self.clock.now();
        let mut wanted: Vec<(usize, Delivery)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match loaded.get(event.org_id.as_str()) {
                Some(Ok(endpoints)) => {
                    for ep in targets(event, endpoints) {
                        wanted.push((
                            i,
                            Delivery::new_at(
                                &event.org_id,
                                &ep.id,
                                &event.id,
                                event.event_type,
                                now,
                            ),
                        ));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(event_id = %event.id, org_id = %event.org_id, error = %e, "could not read endpoints");
                    failed[i] = true;
                }
                None => failed[i] = true,
            }
        }
        // An event handed over twice in one batch makes one delivery.
        let mut seen = HashSet::new();
        wanted.retain(|(_, d)| seen.insert(d.id.clone()));

        // Read first: the deliveries that exist are left alone (each has
        // its own message); only the missing ones are queued and created.
        if !wanted.is_empty() {
            let ids: Vec<String> = wanted.iter().map(|(_, d)| d.id.clone()).collect();
            match self.deliveries.get_many(&ids).await {
                Ok(found) => {
                    let found: HashSet<String> = found.into_iter().map(|d| d.id).collect();
                    let before = wanted.len();
                    wanted.retain(|(_, d)| !found.contains(&d.id));
                    report.existing += before - wanted.len();
                }
                Err(e) => {
                    // Queueing blind would give every delivery that exists
                    // a second message, finished ones too: the events are
                    // offered again instead.
                    tracing::warn!(error = %e, "could not read deliveries before creating them; offered again");
                    for (i, _) in wanted.drain(..) {
                        failed[i] = true;
                    }
                }
            }
        }

        // Queued first, created after: a delivery's record never exists
        // without its message having been sent (a crash in between leaves a
        // message whose record the sender creates), so a delivery never
        // attempted needs no index entry for the reconciler to find it.
        // Each event's payload is serialized once, however many endpoints
        // it goes to.
        let mut payloads: Vec<Option<Payload>> = vec![None; events.len()];
        let mut payload_of = |i: usize| -> Payload {
            payloads[i]
                .get_or_insert_with(|| Payload::of_event(&events[i]))
                .clone()
        };
        // Each message, in `wanted`'s order.
        let messages: Vec<QueueMessage> = wanted
            .iter()
            .map(|(i, d)| task_message(&events[*i], d, payload_of(*i)))
            .collect();
        let mut unsent = vec![false; events.len()];
        let ids = match self.queue.send_batch_ids(&messages).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not queue deliveries");
                vec![None; messages.len()]
            }
        };
        report.enqueued = ids.iter().flatten().count();
        // Each delivery is owned by its message from its creation: that
        // message's first attempt needs no lease (the sender's `fence`).
        for ((i, delivery), id) in wanted.iter_mut().zip(&ids) {
            match id {
                Some(id) => delivery.chain = Some(id.clone()),
                None => unsent[*i] = true,
            }
        }

        // An event whose messages did not all go is offered again, before
        // any of its deliveries is created.
        wanted.retain(|(i, _)| !unsent[*i]);
        let created: Vec<(usize, Delivery, Result<Option<Delivery>, BackendError>)> =
            stream::iter(wanted.into_iter().map(|(i, d)| {
                let deliveries = self.deliveries.clone();
                async move {
                    let r = deliveries.create_if_absent(&d).await;
                    (i, d, r)
                }
            }))
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for (i, delivery, result) in created {
            match result {
                Ok(None) => report.created += 1,
                Ok(Some(_)) => report.existing += 1,
                Err(e) => {
                    tracing::warn!(delivery_id = %delivery.id, error = %e, "could not create delivery");
                    failed[i] = true;
                }
            }
        }
        for (f, u) in failed.iter_mut().zip(unsent) {
            *f |= u;
        }

        report.first_failure = failed.iter().position(|f| *f);
        report
    }
}

/// The endpoints an event goes to: the one it targets (a test event,
/// whatever its subscription and filter say), or every enabled endpoint
/// subscribed to its type that existed when the event was published (an
/// old or swept event does not reach an endpoint created after it) and
/// whose payload filter, if it has one, matches the event's body. Stored
/// times keep whole seconds, so an event of the same second as the
/// endpoint goes to it.
///
/// An endpoint the filter leaves out costs no read, write or message: only
/// the match, in memory. The body is parsed once per event, and only when
/// an endpoint that wants the event has a filter.
fn targets<'a>(
    event: &'a Event,
    endpoints: &'a [Subscriber],
) -> impl Iterator<Item = &'a Subscriber> {
    let body: OnceCell<Option<serde_json::Value>> = OnceCell::new();
    endpoints
        .iter()
        .filter(move |ep| match &event.target_endpoint {
            Some(target) => &ep.id == target,
            None => {
                ep.wants(event.event_type)
                    && ep.created_at.timestamp() <= event.created_at.timestamp()
                    && ep.passes(|| body.get_or_init(|| filter_body(event)).as_ref())
            }
        })
}

/// The event's body for payload filters to match, once per event.
fn filter_body(event: &Event) -> Option<serde_json::Value> {
    let body = event.filter_body();
    if body.is_none() {
        tracing::warn!(event_id = %event.id, "event body unreadable as JSON; endpoints that filter skip it");
    }
    body
}

/// The queue message of `delivery`'s task, of its org's tenant.
fn task_message(event: &Event, delivery: &Delivery, payload: Payload) -> QueueMessage {
    QueueMessage::task(&delivery.task(event, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::time::Duration;
    use webhooks_domain::{
        DeliveryStatus, DeliveryTask, Endpoint, EventType, Secret, Subscription,
    };
    use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
    use webhooks_ports::EndpointStore;

    struct TestSystem {
        endpoints: Arc<MemoryEndpointStore>,
        deliveries: Arc<MemoryDeliveryStore>,
        queue: Arc<MemoryQueue>,
        fanout: FanOut,
    }

    fn world() -> TestSystem {
        let endpoints = MemoryEndpointStore::new();
        let deliveries = MemoryDeliveryStore::new();
        let queue = MemoryQueue::new(Duration::from_secs(30));
        let fanout = FanOut::new(endpoints.clone(), deliveries.clone(), queue.clone());
        TestSystem {
            endpoints,
            deliveries,
            queue,
            fanout,
        }
    }

    async fn endpoint(w: &TestSystem, org: &str, types: &[&str]) -> Endpoint {
        let ep = Endpoint::new(
            org,
            "https://example.com/hook".into(),
            Subscription::parse(types).unwrap(),
            Secret::generate(),
        );
        // No limit: one test fans out to a thousand endpoints of one org.
        let created = w.endpoints.create(&ep, u32::MAX).await.unwrap();
        assert_eq!(created, webhooks_ports::Created::Written);
        ep
    }

    fn event(org: &str, t: EventType) -> Event {
        Event::new(org, t, RawValue::from_string(r#"{"n":1}"#.into()).unwrap())
    }

    #[tokio::test]
    async fn one_delivery_per_subscribed_endpoint() {
        let w = world();
        let paid = endpoint(&w, "a", &["invoice.paid"]).await;
        let all = endpoint(&w, "a", &["*"]).await;
        let _leads = endpoint(&w, "a", &["lead_won"]).await;
        let _other_org = endpoint(&w, "b", &["*"]).await;
        let mut disabled = endpoint(&w, "a", &["*"]).await;
        disabled.enabled = false;
        w.endpoints.update(&disabled).await.unwrap();

        let e = event("a", EventType::InvoicePaid);
        let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!(r.created, 2);
        assert_eq!(r.enqueued, 2);
        assert_eq!(r.first_failure, None);
        let mut targets: Vec<String> = w
            .deliveries
            .all()
            .into_iter()
            .map(|d| d.endpoint_id)
            .collect();
        targets.sort();
        let mut expected = vec![paid.id, all.id];
        expected.sort();
        assert_eq!(targets, expected);
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        assert_eq!(task.payload, e.payload());
    }

    #[tokio::test]
    async fn each_delivery_is_created_owned_by_the_message_sent_for_it() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "a", &["*"]).await;
        let r = w.fanout.fan_out(&[event("a", EventType::LeadWon)]).await;
        assert_eq!(r.created, 2);
        let received = w.queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(received.len(), 2);
        for m in received {
            let task: DeliveryTask = serde_json::from_str(&m.body).unwrap();
            let d = w.deliveries.get(&task.delivery_id).await.unwrap().unwrap();
            assert_eq!(d.chain.as_deref(), Some(m.message_id.as_str()));
            assert_eq!(d.lease_until, None);
        }
    }

    #[tokio::test]
    async fn every_message_carries_its_org_as_the_fair_queue_tenant() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "b", &["*"]).await;
        let events = [
            event("a", EventType::LeadWon),
            event("b", EventType::LeadWon),
        ];
        let r = w.fanout.fan_out(&events).await;
        assert_eq!(r.enqueued, 3);
        let mut tenants: Vec<Option<String>> =
            w.queue.messages().into_iter().map(|m| m.tenant).collect();
        tenants.sort();
        let a = Some(webhooks_domain::tenant::org_tenant("a"));
        let b = Some(webhooks_domain::tenant::org_tenant("b"));
        assert_eq!(tenants, [a.clone(), a, b]);
    }

    #[tokio::test]
    async fn a_replayed_event_creates_nothing_new() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let e = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&e)).await;
        let d = w.deliveries.all().remove(0);
        w.deliveries
            .record_attempt(
                &d.id,
                &webhooks_ports::AttemptUpdate {
                    attempt: webhooks_domain::Attempt {
                        number: 1,
                        at: chrono::Utc::now(),
                        status_code: Some(500),
                        error: None,
                        latency_ms: 1,
                        response_body: None,
                    },
                    status: DeliveryStatus::Pending,
                    next_attempt_at: None,
                    last_error: None,
                    unleased_by: None,
                },
            )
            .await
            .unwrap();
        // Attempted once: the replay (the event twice in it) must not queue
        // it again.
        let r = w.fanout.fan_out(&[e.clone(), e]).await;
        assert_eq!((r.created, r.existing, r.enqueued), (0, 1, 0));
        assert_eq!(w.deliveries.all().len(), 1);
        assert_eq!(w.queue.len(), 1);
    }

    /// A queue that refuses every send.
    struct Down;

    #[async_trait::async_trait]
    impl Queue for Down {
        async fn send_batch_ids(
            &self,
            _: &[QueueMessage],
        ) -> Result<Vec<Option<String>>, BackendError> {
            Err(BackendError::Transient("down".into()))
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<webhooks_ports::ReceivedMessage>, BackendError> {
            Ok(vec![])
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), BackendError> {
            Ok(())
        }
        async fn delete_batch(&self, _: &[String]) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_delivery_is_created_only_after_its_message_was_sent() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let down = FanOut::new(w.endpoints.clone(), w.deliveries.clone(), Arc::new(Down));
        let e = event("a", EventType::LeadWon);
        let r = down.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!(r.first_failure, Some(0));
        assert_eq!((r.created, r.enqueued), (0, 0));
        assert!(w.deliveries.all().is_empty(), "no record without a message");
        // Offered again once the queue is back.
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!((r.created, r.enqueued, r.first_failure), (1, 1, None));
    }

    #[tokio::test]
    async fn a_replay_gives_a_waiting_delivery_no_second_message() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let e = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&e)).await;
        // Pending, never attempted: its message waits on the queue (a
        // backlog, a deferral). A replay, or a sweep, leaves it alone.
        for _ in 0..3 {
            let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
            assert_eq!((r.created, r.existing, r.enqueued), (0, 1, 0));
            assert_eq!(r.first_failure, None);
        }
        assert_eq!(w.queue.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_read_queues_nothing_and_offers_the_events_again() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "b", &["*"]).await;
        let quiet = event("c", EventType::LeadWon);
        let done = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&done)).await;
        // Delivered since: a blind send would queue it again.
        let d = w.deliveries.all().remove(0);
        w.deliveries
            .record_attempt(
                &d.id,
                &webhooks_ports::AttemptUpdate {
                    attempt: webhooks_domain::Attempt {
                        number: 1,
                        at: chrono::Utc::now(),
                        status_code: Some(200),
                        error: None,
                        latency_ms: 1,
                        response_body: None,
                    },
                    status: DeliveryStatus::Delivered,
                    next_attempt_at: None,
                    last_error: None,
                    unleased_by: None,
                },
            )
            .await
            .unwrap();
        let queued = w.queue.len();
        let fresh = event("b", EventType::LeadWon);
        let blind = FanOut::new(
            w.endpoints.clone(),
            // Its reads (`get_many`) fail.
            Arc::new(webhooks_faults::Faulty::new(
                w.deliveries.clone(),
                Arc::new(
                    webhooks_faults::Script::new().fail(webhooks_faults::Op::GetDeliveries, ..),
                ),
            )),
            w.queue.clone(),
        );
        let batch = [quiet, done, fresh.clone()];
        let r = blind.fan_out(&batch).await;
        assert_eq!((r.created, r.existing, r.enqueued), (0, 0, 0));
        // The first event has no endpoint: nothing to do, nothing to offer.
        assert_eq!(r.first_failure, Some(1));
        assert_eq!(w.queue.len(), queued, "nothing queued");
        assert_eq!(w.deliveries.all().len(), 1, "nothing created");
        // Offered again once the table answers: only the missing one goes.
        let r = w.fanout.fan_out(&batch[1..]).await;
        assert_eq!((r.created, r.existing, r.enqueued), (1, 1, 1));
        assert_eq!(r.first_failure, None);
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[queued]).unwrap();
        assert_eq!(task.event_id, fresh.id);
    }

    #[tokio::test]
    async fn test_events_go_to_their_target_only() {
        let w = world();
        let target = endpoint(&w, "a", &["lead_won"]).await;
        endpoint(&w, "a", &["*"]).await;
        let mut e = event("a", EventType::SurveySubmitted);
        e.target_endpoint = Some(target.id.clone());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!(r.created, 1);
        assert_eq!(w.deliveries.all()[0].endpoint_id, target.id);
    }

    async fn filtered_endpoint(w: &TestSystem, org: &str, pattern: serde_json::Value) -> Endpoint {
        let mut ep = Endpoint::new(
            org,
            "https://example.com/hook".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.filter = Some(webhooks_domain::EventFilter::parse(&pattern).unwrap());
        let created = w.endpoints.create(&ep, u32::MAX).await.unwrap();
        assert_eq!(created, webhooks_ports::Created::Written);
        ep
    }

    fn event_with(org: &str, t: EventType, data: &str) -> Event {
        Event::new(org, t, RawValue::from_string(data.into()).unwrap())
    }

    #[tokio::test]
    async fn an_event_goes_only_to_the_endpoints_whose_filter_matches_its_body() {
        let w = world();
        let big_eur = filtered_endpoint(
            &w,
            "a",
            serde_json::json!({"data": {"amount": [{"numeric": [">", 100]}], "currency": ["eur"]}}),
        )
        .await;
        let paid = filtered_endpoint(&w, "a", serde_json::json!({"type": ["invoice.paid"]})).await;
        let plain = endpoint(&w, "a", &["*"]).await;

        let small = event_with(
            "a",
            EventType::InvoicePaid,
            r#"{"amount":50,"currency":"eur"}"#,
        );
        let r = w.fanout.fan_out(std::slice::from_ref(&small)).await;
        assert_eq!((r.created, r.enqueued), (2, 2));
        let big = event_with(
            "a",
            EventType::LeadWon,
            r#"{"amount":150,"currency":"eur"}"#,
        );
        let r = w.fanout.fan_out(std::slice::from_ref(&big)).await;
        assert_eq!((r.created, r.enqueued), (2, 2));

        let mut got: Vec<(String, String)> = w
            .deliveries
            .all()
            .into_iter()
            .map(|d| (d.endpoint_id, d.event_id))
            .collect();
        got.sort();
        let mut expected = vec![
            (paid.id.clone(), small.id.clone()),
            (plain.id.clone(), small.id.clone()),
            (big_eur.id.clone(), big.id.clone()),
            (plain.id.clone(), big.id.clone()),
        ];
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(w.queue.len(), 4, "no message for a filtered-out endpoint");
    }

    #[tokio::test]
    async fn a_test_event_reaches_its_endpoint_whatever_the_filter() {
        let w = world();
        let ep = filtered_endpoint(&w, "a", serde_json::json!({"data": {"never": ["x"]}})).await;
        let mut e = event("a", EventType::LeadWon);
        e.target_endpoint = Some(ep.id.clone());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!(r.created, 1);
    }

    #[tokio::test]
    async fn a_body_too_deep_to_read_reaches_only_endpoints_without_a_filter() {
        // The API keeps data as raw JSON, which may nest deeper than the
        // 128 levels serde_json parses into a value.
        let w = world();
        filtered_endpoint(
            &w,
            "a",
            serde_json::json!({"data": {"a": [{"exists": true}]}}),
        )
        .await;
        let plain = endpoint(&w, "a", &["*"]).await;
        let deep = format!(r#"{{"a":1,"b":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let e = event_with("a", EventType::LeadWon, &deep);
        assert!(e.filter_body().is_none());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!((r.created, r.first_failure), (1, None));
        assert_eq!(w.deliveries.all()[0].endpoint_id, plain.id);
    }

    #[tokio::test]
    async fn one_event_to_a_thousand_endpoints_in_one_call() {
        let w = world();
        for _ in 0..1000 {
            endpoint(&w, "big", &["*"]).await;
        }
        let r = w
            .fanout
            .fan_out(&[event("big", EventType::ClientCreated)])
            .await;
        assert_eq!((r.created, r.enqueued), (1000, 1000));
        assert_eq!(w.queue.len(), 1000);
    }
}
