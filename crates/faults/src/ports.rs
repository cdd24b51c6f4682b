//! The wrapper of every port: each call put to the policy before and
//! after it is made.

use crate::{Op, Policy};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::stats::{HourBucket, StatsDelta};
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint, EndpointSummary, Event, Subscriber};
use webhooks_ports::{
    AttemptUpdate, Created, CursorStore, DeliveryStore, EndpointHealth, EndpointLookup,
    EndpointStatsStore, EndpointStore, EventLogQuery, EventStore, EventSummary, Lease, Listed,
    NotesPage, OrgEndpoints, Page, Queue, QueueMessage, ReceivedMessage, Result, Updated,
};

/// A store or a queue whose calls go through `policy`.
pub struct Faulty<T: ?Sized, P> {
    inner: Arc<T>,
    policy: Arc<P>,
}

impl<T: ?Sized, P: Policy> Faulty<T, P> {
    pub fn new(inner: Arc<T>, policy: Arc<P>) -> Self {
        Faulty { inner, policy }
    }

    /// `call` (the inner port's `op`) between the policy's two sides.
    async fn around<R>(&self, op: Op, call: impl Future<Output = Result<R>>) -> Result<R> {
        self.policy.before(op).await?;
        let r = call.await;
        self.policy.after(op, r.is_ok()).await?;
        r
    }
}

#[async_trait]
impl<T: EventStore + ?Sized, P: Policy> EventStore for Faulty<T, P> {
    async fn put_if_absent(&self, event: &Event) -> Result<bool> {
        self.around(Op::PutEvent, self.inner.put_if_absent(event))
            .await
    }
    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>> {
        self.around(Op::GetEvent, self.inner.get(org_id, event_id))
            .await
    }
    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>> {
        self.around(Op::GetEvents, self.inner.get_many(org_id, event_ids))
            .await
    }
    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>> {
        self.around(Op::ListEvents, self.inner.list_after(org_id, after, limit))
            .await
    }
    async fn log_page(&self, org_id: &str, query: &EventLogQuery) -> Result<Page<EventSummary>> {
        self.around(Op::EventLogPage, self.inner.log_page(org_id, query))
            .await
    }
}

#[async_trait]
impl<T: EndpointStore + ?Sized, P: Policy> EndpointLookup for Faulty<T, P> {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        self.around(
            Op::GetEndpoint,
            EndpointLookup::get(&*self.inner, org_id, endpoint_id),
        )
        .await
    }
}

#[async_trait]
impl<T: EndpointStore + ?Sized, P: Policy> OrgEndpoints for Faulty<T, P> {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        self.around(Op::ListSubscribers, self.inner.list_all(org_id))
            .await
    }
}

#[async_trait]
impl<T: EndpointStore + ?Sized, P: Policy> EndpointHealth for Faulty<T, P> {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        self.around(
            Op::DisableEndpoint,
            self.inner.disable(org_id, endpoint_id, reason),
        )
        .await
    }
    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.around(
            Op::SetFailingSince,
            self.inner.set_failing_since(org_id, endpoint_id, since),
        )
        .await
    }
}

#[async_trait]
impl<T: EndpointStore + ?Sized, P: Policy> EndpointStore for Faulty<T, P> {
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created> {
        self.around(Op::CreateEndpoint, self.inner.create(endpoint, max_per_org))
            .await
    }
    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>> {
        self.around(Op::ListEndpoints, self.inner.list(org_id, limit, cursor))
            .await
    }
    async fn summary(&self, org_id: &str, endpoint_id: &str) -> Result<Option<EndpointSummary>> {
        self.around(Op::EndpointSummary, self.inner.summary(org_id, endpoint_id))
            .await
    }
    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        self.around(Op::UpdateEndpoint, self.inner.update(endpoint))
            .await
    }
    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        self.around(Op::DeleteEndpoint, self.inner.delete(org_id, endpoint_id))
            .await
    }
}

#[async_trait]
impl<T: DeliveryStore + ?Sized, P: Policy> DeliveryStore for Faulty<T, P> {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        self.around(Op::CreateDelivery, self.inner.create_if_absent(delivery))
            .await
    }
    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        self.around(Op::GetDelivery, self.inner.get(delivery_id))
            .await
    }
    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.around(Op::GetDeliveries, self.inner.get_many(delivery_ids))
            .await
    }
    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        let call = self.inner.get_many_eventually(delivery_ids);
        self.around(Op::GetDeliveries, call).await
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
        let call = self
            .inner
            .lease(delivery_id, attempts_made, chain, until, now, stale_before);
        self.around(Op::Lease, call).await
    }
    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        self.around(
            Op::RecordAttempt,
            self.inner.record_attempt(delivery_id, update),
        )
        .await
    }
    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        self.around(Op::Transition, self.inner.transition(delivery_id, from, to))
            .await
    }
    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let call = self.inner.hand_over(delivery_id, from, to, until, now);
        self.around(Op::HandOver, call).await
    }
    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        self.around(
            Op::Overdue,
            self.inner.overdue(org_id, before, limit, cursor),
        )
        .await
    }
    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        self.around(
            Op::MarkRequeued,
            self.inner
                .mark_requeued(delivery_id, attempts_made, now, stale_before),
        )
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
        self.around(
            Op::Postpone,
            self.inner
                .postpone(delivery_id, attempts_made, chain, until, now, stale_before),
        )
        .await
    }
    async fn note_queued(&self, note: &QueuedNote) -> Result<bool> {
        self.around(Op::NoteQueued, self.inner.note_queued(note))
            .await
    }
    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>> {
        self.around(Op::GetNoted, self.inner.noted(org_id, delivery_ids))
            .await
    }
    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.around(
            Op::ConfirmNote,
            self.inner.confirm_note(org_id, key, contested, at),
        )
        .await
    }
    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>> {
        self.around(Op::GetNotes, self.inner.notes(keys)).await
    }
    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage> {
        let call = self.inner.notes_between(org_id, from, to, limit);
        self.around(Op::GetNotes, call).await
    }
    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        let call = self
            .inner
            .list_for_endpoint(endpoint_id, status, limit, cursor);
        self.around(Op::ListDeliveries, call).await
    }
}

#[async_trait]
impl<T: CursorStore + ?Sized, P: Policy> CursorStore for Faulty<T, P> {
    async fn get(&self, org_id: &str) -> Result<Option<String>> {
        self.around(Op::GetCursor, self.inner.get(org_id)).await
    }
    async fn advance(&self, org_id: &str, to: &str) -> Result<()> {
        self.around(Op::AdvanceCursor, self.inner.advance(org_id, to))
            .await
    }
    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()> {
        self.around(Op::EnsureCursor, self.inner.ensure(org_id, event_id))
            .await
    }
    async fn list(&self) -> Result<Vec<(String, String)>> {
        self.around(Op::ListCursors, self.inner.list()).await
    }
    async fn resume_at(&self) -> Result<Option<String>> {
        self.around(Op::GetResumeAt, self.inner.resume_at()).await
    }
    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()> {
        self.around(Op::SetResumeAt, self.inner.set_resume_at(org_id))
            .await
    }
}

#[async_trait]
impl<T: EndpointStatsStore + ?Sized, P: Policy> EndpointStatsStore for Faulty<T, P> {
    async fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) -> Result<()> {
        self.around(Op::AddStats, self.inner.add(endpoint_id, hour, delta))
            .await
    }
    async fn read(&self, endpoint_id: &str, from_hour: DateTime<Utc>) -> Result<Vec<HourBucket>> {
        self.around(Op::ReadStats, self.inner.read(endpoint_id, from_hour))
            .await
    }
}

#[async_trait]
impl<T: Queue + ?Sized, P: Policy> Queue for Faulty<T, P> {
    async fn send_batch_ids(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>> {
        self.around(Op::Send, self.send_unrefused(messages)).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.around(Op::Receive, self.inner.receive(max, wait))
            .await
    }
    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        self.around(
            Op::ChangeVisibility,
            self.inner.change_visibility(receipt_handle, delay),
        )
        .await
    }
    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.around(Op::Delete, self.inner.delete_batch(receipt_handles))
            .await
    }
}

impl<T: Queue + ?Sized, P: Policy> Faulty<T, P> {
    /// Sends the messages the policy does not refuse; the refused ones are
    /// reported (no id) with those the queue itself did not accept.
    async fn send_unrefused(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>> {
        let refused = self.policy.refuse(messages.len());
        if refused.is_empty() {
            return self.inner.send_batch_ids(messages).await;
        }
        let kept: Vec<usize> = (0..messages.len())
            .filter(|i| refused.binary_search(i).is_err())
            .collect();
        let to_send: Vec<QueueMessage> = kept.iter().map(|i| messages[*i].clone()).collect();
        let sent = self.inner.send_batch_ids(&to_send).await?;
        let mut ids: Vec<Option<String>> = vec![None; messages.len()];
        for (i, id) in kept.into_iter().zip(sent) {
            ids[i] = id;
        }
        Ok(ids)
    }
}
