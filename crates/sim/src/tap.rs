//! The ports as each Lambda of the simulation sees them, between the chaos
//! layer and the memory adapters: they keep times as DynamoDB keeps them
//! (the AWS adapter writes whole seconds, and a lease's end in
//! milliseconds), and they note what the pipeline did that the simulation
//! checks or counts: each attempt recorded and the retry it scheduled (in
//! the [`Ledger`]), a delivery adopted, a lease taken over, a message
//! renewed (in the [`Coverage`]). Nothing here changes what a call does
//! beyond the rounding.

use crate::coverage::{Coverage, Path};
use crate::ledger::{Ledger, Recorded};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::{Delivery, DeliveryStatus, Event};
use webhooks_ports::{
    Adapters, AttemptUpdate, DeliveryStore, EventStore, Lease, Page, Queue, QueueMessage,
    ReceivedMessage, Result,
};

/// Which Lambda a set of taps serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    FanOut,
    Sender,
    Sweeper,
    Api,
}

/// A time as DynamoDB holds it: the AWS adapter writes RFC 3339 in whole
/// seconds.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// A lease's end as the AWS adapter holds it: Unix milliseconds.
fn whole_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A delivery as its item holds it.
fn stored(d: &Delivery) -> Delivery {
    let mut d = d.clone();
    d.created_at = whole_seconds(d.created_at);
    d.updated_at = whole_seconds(d.updated_at);
    d.next_attempt_at = d.next_attempt_at.map(whole_seconds);
    d.lease_until = d.lease_until.map(whole_millis);
    for a in &mut d.attempts {
        a.at = whole_seconds(a.at);
    }
    d
}

/// The adapters `plain` as the Lambda `role` sees them.
pub fn tapped(plain: &Adapters, role: Role, ledger: &Ledger, coverage: &Coverage) -> Adapters {
    Adapters {
        deliveries: Arc::new(DeliveryTap {
            inner: plain.deliveries.clone(),
            clock: plain.clock.clone(),
            role,
            ledger: ledger.clone(),
            coverage: coverage.clone(),
        }),
        events: Arc::new(EventTap(plain.events.clone())),
        queue: Arc::new(QueueTap {
            inner: plain.queue.clone(),
            role,
            coverage: coverage.clone(),
        }),
        ..plain.clone()
    }
}

struct DeliveryTap {
    inner: Arc<dyn DeliveryStore>,
    clock: Arc<dyn webhooks_ports::Clock>,
    role: Role,
    ledger: Ledger,
    coverage: Coverage,
}

#[async_trait]
impl DeliveryStore for DeliveryTap {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        let created = self.inner.create_if_absent(&stored(delivery)).await?;
        if created.is_none() && self.role == Role::Sender {
            self.coverage.add(Path::Adopt);
        }
        Ok(created)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.inner.get(delivery_id).await
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.inner.get_many(delivery_ids).await
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
        let before = self.inner.get(delivery_id).await?;
        let lease = self
            .inner
            .lease(
                delivery_id,
                attempts_made,
                chain,
                whole_millis(until),
                whole_millis(now),
                whole_seconds(stale_before),
            )
            .await?;
        if let (Lease::Granted(_), Some(before)) = (&lease, before) {
            // A lease still set was never cleared by a record: its holder
            // died, or its record failed, and it ran out.
            if before.lease_until.is_some() {
                self.coverage.add(Path::LeaseTakeover);
            }
            if before.chain.as_deref().is_some_and(|c| c != chain) {
                self.coverage.add(Path::ChainTakeover);
            }
        }
        Ok(lease)
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        let mut as_stored = update.clone();
        as_stored.attempt.at = whole_seconds(update.attempt.at);
        as_stored.next_attempt_at = update.next_attempt_at.map(whole_seconds);
        let done = self.inner.record_attempt(delivery_id, &as_stored).await?;
        if done {
            let written = self.clock.now();
            self.ledger.recorded(
                delivery_id,
                Recorded {
                    number: update.attempt.number,
                    at: update.attempt.at,
                    next: update.next_attempt_at,
                    status_code: update.attempt.status_code,
                    written,
                },
            );
        }
        Ok(done)
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.inner.transition(delivery_id, from, to).await
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.inner
            .overdue(org_id, whole_seconds(before), limit)
            .await
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        self.inner
            .list_for_endpoint(endpoint_id, status, limit, cursor)
            .await
    }
}

struct EventTap(Arc<dyn EventStore>);

#[async_trait]
impl EventStore for EventTap {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        let mut event = event.clone();
        event.created_at = whole_seconds(event.created_at);
        self.0.put_if_absent(&event).await
    }

    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        self.0.get(org_id, event_id).await
    }

    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Event>> {
        self.0.list_after(org_id, after, limit).await
    }
}

struct QueueTap {
    inner: Arc<dyn Queue>,
    role: Role,
    coverage: Coverage,
}

#[async_trait]
impl Queue for QueueTap {
    async fn send_batch(&self, messages: &[QueueMessage]) -> Result<Vec<usize>> {
        let refused = self.inner.send_batch(messages).await?;
        // The sender sends delivery messages only to renew worn ones.
        if self.role == Role::Sender {
            let sent = messages.len().saturating_sub(refused.len());
            self.coverage
                .add_n(Path::Renew, u64::try_from(sent).unwrap_or(0));
        }
        Ok(refused)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.inner.change_visibility(receipt_handle, delay).await
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.inner.delete_batch(receipt_handles).await
    }
}
