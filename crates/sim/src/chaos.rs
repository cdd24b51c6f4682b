//! Crashes, failures and interleavings at every port call. Each Lambda
//! invocation of the simulation runs inside an [`Invocation`] scope; every
//! store and queue call it makes goes through [`gate`] before and after the
//! real call, which may yield to the other invocations (so concurrent ones
//! interleave at every step), fail the call as a throttle or timeout would
//! (after the write, too: a timeout after commit), or crash the invocation
//! there: it never runs another line, as when Lambda times out or the
//! process dies between two steps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use webhooks_domain::stats::{HourBucket, StatsDelta};
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, Event, Subscriber};
use webhooks_ports::{
    AttemptUpdate, BackendError, Created, CursorStore, DeliveryStore, EndpointHealth,
    EndpointLookup, EndpointStatsStore, EndpointStore, EventStore, Lease, Listed, OrgEndpoints,
    Page, Queue, ReceivedMessage, Result, Updated,
};

tokio::task_local! {
    static INVOCATION: Arc<Invocation>;
}

/// How hostile one invocation's port calls are.
#[derive(Debug, Clone, Copy)]
pub struct Hostility {
    /// Chance that a call yields to the other invocations first.
    pub yield_rate: f64,
    /// Chance that a call fails (before or after taking effect).
    pub fail_rate: f64,
    /// Chance that the invocation dies at a call (before or after it).
    pub crash_rate: f64,
}

impl Hostility {
    /// No chaos at all.
    pub const NONE: Hostility = Hostility {
        yield_rate: 0.0,
        fail_rate: 0.0,
        crash_rate: 0.0,
    };
}

/// One Lambda invocation, as the chaos layer sees it.
pub struct Invocation {
    rng: Mutex<StdRng>,
    hostility: Hostility,
    crashed: Notify,
}

impl Invocation {
    pub fn new(seed: u64, hostility: Hostility) -> Arc<Self> {
        Arc::new(Invocation {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hostility,
            crashed: Notify::new(),
        })
    }

    fn draw(&self) -> (bool, bool, bool) {
        let h = self.hostility;
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        (
            rng.random_bool(h.yield_rate),
            rng.random_bool(h.fail_rate),
            rng.random_bool(h.crash_rate),
        )
    }
}

/// Runs `work` as the invocation `ctx`: its output, or `None` if it
/// crashed (the work is dropped where it stood), or ran past `timeout`.
pub async fn invoke<F: Future>(
    ctx: Arc<Invocation>,
    timeout: Duration,
    work: F,
) -> Option<F::Output> {
    let watch = ctx.clone();
    INVOCATION
        .scope(ctx, async move {
            tokio::select! {
                biased;
                () = watch.crashed.notified() => None,
                r = tokio::time::timeout(timeout, work) => r.ok(),
            }
        })
        .await
}

/// The chaos at one side of a port call.
pub async fn gate() -> Result<()> {
    let Ok(ctx) = INVOCATION.try_with(Arc::clone) else {
        return Ok(());
    };
    let (yields, fails, crashes) = ctx.draw();
    if yields {
        tokio::task::yield_now().await;
    }
    if crashes {
        ctx.crashed.notify_one();
        std::future::pending::<()>().await;
    }
    if fails {
        return Err(BackendError::Transient("simulated: throttled".into()));
    }
    Ok(())
}

/// A port with chaos around every call.
pub struct Chaotic<T: ?Sized>(pub Arc<T>);

macro_rules! chaotic {
    ($call:expr) => {{
        gate().await?;
        let r = $call.await;
        gate().await?;
        r
    }};
}

#[async_trait]
impl EventStore for Chaotic<dyn EventStore> {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        chaotic!(self.0.put_if_absent(event))
    }
    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        chaotic!(self.0.get(org_id, event_id))
    }
    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>> {
        chaotic!(self.0.get_many(org_id, event_ids))
    }
    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>> {
        chaotic!(self.0.list_after(org_id, after, limit))
    }
}

#[async_trait]
impl EndpointLookup for Chaotic<dyn EndpointStore> {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        chaotic!(self.0.get(org_id, endpoint_id))
    }
}

#[async_trait]
impl OrgEndpoints for Chaotic<dyn EndpointStore> {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        chaotic!(self.0.list_all(org_id))
    }
}

#[async_trait]
impl EndpointHealth for Chaotic<dyn EndpointStore> {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        chaotic!(self.0.disable(org_id, endpoint_id, reason))
    }
    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        chaotic!(self.0.set_failing_since(org_id, endpoint_id, since))
    }
}

#[async_trait]
impl EndpointStore for Chaotic<dyn EndpointStore> {
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created> {
        chaotic!(self.0.create(endpoint, max_per_org))
    }
    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Endpoint>> {
        chaotic!(self.0.list(org_id, limit, cursor))
    }
    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        chaotic!(self.0.update(endpoint))
    }
    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        chaotic!(self.0.delete(org_id, endpoint_id))
    }
}

#[async_trait]
impl DeliveryStore for Chaotic<dyn DeliveryStore> {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        chaotic!(self.0.create_if_absent(delivery))
    }
    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        chaotic!(self.0.get(delivery_id))
    }
    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        chaotic!(self.0.get_many(delivery_ids))
    }
    async fn lease(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Lease> {
        chaotic!(self
            .0
            .lease(delivery_id, attempts_made, chain, until, now, stale_before))
    }
    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        chaotic!(self.0.record_attempt(delivery_id, update))
    }
    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        chaotic!(self.0.transition(delivery_id, from, to))
    }
    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        chaotic!(self.0.overdue(org_id, before, limit, cursor))
    }
    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        chaotic!(self
            .0
            .mark_requeued(delivery_id, attempts_made, now, stale_before))
    }
    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        chaotic!(self.0.list_for_endpoint(endpoint_id, status, limit, cursor))
    }
}

#[async_trait]
impl CursorStore for Chaotic<dyn CursorStore> {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        chaotic!(self.0.get(org_id))
    }
    async fn advance(&self, org_id: &str, to: &str) -> Result<()> {
        chaotic!(self.0.advance(org_id, to))
    }
    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        chaotic!(self.0.ensure(org_id, event_id))
    }
    async fn list(&self) -> Result<Vec<(String, String)>> {
        chaotic!(self.0.list())
    }
    async fn resume_at(&self) -> Result<Option<String>> {
        chaotic!(self.0.resume_at())
    }
    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()> {
        chaotic!(self.0.set_resume_at(org_id))
    }
}

#[async_trait]
impl EndpointStatsStore for Chaotic<dyn EndpointStatsStore> {
    async fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) -> Result<()> {
        chaotic!(self.0.add(endpoint_id, hour, delta))
    }
    async fn read(&self, endpoint_id: &str, from_hour: DateTime<Utc>) -> Result<Vec<HourBucket>> {
        chaotic!(self.0.read(endpoint_id, from_hour))
    }
}

#[async_trait]
impl Queue for Chaotic<dyn Queue> {
    async fn send_batch(&self, bodies: &[webhooks_ports::QueueMessage]) -> Result<Vec<usize>> {
        chaotic!(self.0.send_batch(bodies))
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        chaotic!(self.0.receive(max, wait))
    }
    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        chaotic!(self.0.change_visibility(receipt_handle, delay))
    }
    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        chaotic!(self.0.delete_batch(receipt_handles))
    }
}

/// The same adapters with chaos around every store and queue call.
pub fn chaotic(adapters: &webhooks_ports::Adapters) -> webhooks_ports::Adapters {
    webhooks_ports::Adapters {
        events: Arc::new(Chaotic(adapters.events.clone())),
        endpoints: Arc::new(Chaotic(adapters.endpoints.clone())),
        deliveries: Arc::new(Chaotic(adapters.deliveries.clone())),
        cursors: Arc::new(Chaotic(adapters.cursors.clone())),
        idempotency: adapters.idempotency.clone(),
        inbound: adapters.inbound.clone(),
        queue: Arc::new(Chaotic(adapters.queue.clone())),
        dead_letters: Arc::new(Chaotic(adapters.dead_letters.clone())),
        stats: Arc::new(Chaotic(adapters.stats.clone())),
        clock: adapters.clock.clone(),
    }
}
