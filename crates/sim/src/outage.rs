//! A deliveries table over its capacity for a while: DynamoDB throttles
//! every request (a hot partition, an index that cannot keep up) until the
//! load falls. For the pipeline it is the long failure its nets are for:
//! messages come back every visibility timeout until SQS redrives them
//! after their 30th receive, sweeps fail, and once the table answers again
//! the reconciler must find every delivery whose message is gone. Some
//! seeds have one, of 95 to 120 minutes (SQS redrives after 90).

use crate::lateness::Span;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{
    AttemptUpdate, BackendError, Clock, DeliveryStore, Lease, NotesPage, Page, Result,
};

/// The deliveries table, throttled during `outages`.
pub struct Throttled {
    pub inner: Arc<dyn DeliveryStore>,
    pub clock: Arc<dyn Clock>,
    pub outages: Arc<Vec<Span>>,
}

impl Throttled {
    fn check(&self) -> Result<()> {
        let now = self.clock.now();
        if self
            .outages
            .iter()
            .any(|(from, to)| (*from..*to).contains(&now))
        {
            return Err(BackendError::Transient(
                "ProvisionedThroughputExceededException: simulated outage".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl DeliveryStore for Throttled {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        self.check()?;
        self.inner.create_if_absent(delivery).await
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.check()?;
        self.inner.get(delivery_id).await
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.check()?;
        self.inner.get_many(delivery_ids).await
    }

    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.check()?;
        self.inner.get_many_eventually(delivery_ids).await
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
        self.check()?;
        self.inner
            .lease(delivery_id, attempts_made, chain, until, now, stale_before)
            .await
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        self.check()?;
        self.inner.record_attempt(delivery_id, update).await
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.check()?;
        self.inner.transition(delivery_id, from, to).await
    }

    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.check()?;
        self.inner
            .hand_over(delivery_id, from, to, until, now)
            .await
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        self.check()?;
        self.inner.overdue(org_id, before, limit, cursor).await
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.check()?;
        self.inner
            .mark_requeued(delivery_id, attempts_made, now, stale_before)
            .await
    }

    async fn postpone(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.check()?;
        self.inner
            .postpone(delivery_id, attempts_made, chain, until, now, stale_before)
            .await
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        self.check()?;
        self.inner
            .list_for_endpoint(endpoint_id, status, limit, cursor)
            .await
    }

    async fn note_queued(&self, note: &QueuedNote) -> Result<bool> {
        self.check()?;
        self.inner.note_queued(note).await
    }

    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>> {
        self.check()?;
        self.inner.noted(org_id, delivery_ids).await
    }

    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.check()?;
        self.inner.confirm_note(org_id, key, contested, at).await
    }

    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>> {
        self.check()?;
        self.inner.notes(keys).await
    }

    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage> {
        self.check()?;
        self.inner.notes_between(org_id, from, to, limit).await
    }
}
