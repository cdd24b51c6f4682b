//! Sending deliveries again by hand, and ending them when their endpoint
//! goes: `POST /v1/deliveries/{id}/retry`, `POST /v1/endpoints/{id}/recover`
//! and `DELETE /v1/endpoints/{id}`, as use cases the API only translates.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use webhooks_domain::delivery::{NotRetryable, Resend, STUCK_AFTER};
use webhooks_domain::stats::{bucket_hour, StatsDelta};
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{
    BackendError, Clock, DeliveryStore, EndpointStatsStore, EventStore, Listed, OrgEndpoints,
    Queue, QueueMessage, SystemClock,
};

/// Deliveries read per page by a recovery or a cancellation.
const PAGE: usize = 100;
/// Pages one call of [`Requeue::recover`] or [`Requeue::cancel_pending`]
/// reads: with each page's own bound
/// ([`webhooks_ports::DELIVERIES_EXAMINED_PER_PAGE`] examined), the bound on
/// one request's reads and writes, however many deliveries the endpoint has.
pub const PAGES_PER_CALL: usize = 2;

/// What one call of [`Requeue::recover`] did, and where the next goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Deliveries queued again by this call.
    pub requeued: usize,
    /// `None` when the endpoint's deliveries are all examined; otherwise
    /// the cursor of the next call.
    pub next_cursor: Option<String>,
}

/// What one call of [`Requeue::cancel_pending`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled {
    pub canceled: usize,
    /// Whether every delivery of the endpoint was examined.
    pub complete: bool,
}
/// Deliveries prepared or canceled at once.
pub(crate) const CONCURRENCY: usize = 16;
/// Overdue deliveries queued again that are marked at once (one
/// conditional write each, the reconciler's most numerous request).
const MARK_CONCURRENCY: usize = 32;
/// Messages handed to the queue per call (it sends them ten a request).
const SEND_CHUNK: usize = 100;

/// Why a delivery was not sent again.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error(transparent)]
    NotRetryable(#[from] NotRetryable),
    #[error("the delivery's endpoint no longer exists")]
    EndpointGone,
    #[error("the delivery's event no longer exists")]
    EventGone,
    /// Another request moved it first.
    #[error("the delivery changed state meanwhile; fetch it again")]
    Changed,
    /// The queue did not take the message; the delivery is as it was.
    #[error("the delivery queue refused the message")]
    QueueRefused,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What became of an overdue pending delivery that [`Requeue::unstick`]
/// was to queue again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unstuck {
    /// A new message was sent (and the delivery marked, unless it changed
    /// meanwhile or the mark failed).
    Queued,
    /// Its event no longer exists; nothing was sent.
    EventGone,
    /// The queue did not take the message.
    Refused,
    /// Its event could not be read, or the send failed.
    Failed(BackendError),
}

/// A delivery just moved to pending, with the queue message that sends it.
struct Ready {
    delivery: Delivery,
    task: QueueMessage,
}

/// The requeue use cases over the stores and the delivery queue.
pub struct Requeue {
    events: Arc<dyn EventStore>,
    endpoints: Arc<dyn OrgEndpoints>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    stats: Option<Arc<dyn EndpointStatsStore>>,
}

impl Requeue {
    /// The same use cases, keeping the endpoints' hourly figures in `stats`.
    pub fn with_stats(mut self, stats: Arc<dyn EndpointStatsStore>) -> Self {
        self.stats = Some(stats);
        self
    }

    pub fn new(
        events: Arc<dyn EventStore>,
        endpoints: Arc<dyn OrgEndpoints>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        Requeue {
            events,
            endpoints,
            deliveries,
            queue,
            clock: SystemClock::shared(),
            stats: None,
        }
    }

    /// The same use cases, reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends `delivery` (of org `org_id`) again: a dead-lettered or canceled
    /// one becomes pending and is queued; a pending one overdue by
    /// `STUCK_AFTER` has its lost message queued again.
    pub async fn retry(&self, org_id: &str, delivery: Delivery) -> Result<(), RequeueError> {
        // The org's subscribers, not the endpoint itself: a read that opens
        // no signing secret (the sweeper's reconciler may not).
        let subscribers = self.endpoints.list_all(org_id).await?;
        if !subscribers.iter().any(|s| s.id == delivery.endpoint_id) {
            return Err(RequeueError::EndpointGone);
        }
        self.retry_existing(org_id, delivery).await
    }

    /// [`Requeue::retry`] of a delivery whose endpoint the caller has
    /// already seen exist.
    pub async fn retry_existing(
        &self,
        org_id: &str,
        delivery: Delivery,
    ) -> Result<(), RequeueError> {
        let how = delivery.resend(self.clock.now())?;
        if how == Resend::Unstick {
            let id = delivery.id.clone();
            let mut outcomes = self.unstick(org_id, vec![delivery]).await;
            return match outcomes.pop().map(|(_, o)| o) {
                Some(Unstuck::Queued) => {
                    tracing::warn!(delivery_id = %id, "overdue pending delivery queued again");
                    Ok(())
                }
                Some(Unstuck::EventGone) => Err(RequeueError::EventGone),
                Some(Unstuck::Failed(e)) => Err(RequeueError::Backend(e)),
                Some(Unstuck::Refused) | None => Err(RequeueError::QueueRefused),
            };
        }
        let event = self
            .events
            .get(org_id, &delivery.event_id)
            .await?
            .ok_or(RequeueError::EventGone)?;
        let task =
            QueueMessage::task(&delivery.task(&event, webhooks_domain::Payload::of_event(&event)));
        let moved = self
            .deliveries
            .transition(
                &delivery.id,
                &[DeliveryStatus::DeadLettered, DeliveryStatus::Canceled],
                DeliveryStatus::Pending,
            )
            .await?;
        if moved.is_none() {
            return Err(RequeueError::Changed);
        }
        let id = delivery.id.clone();
        self.enqueue(vec![Ready { delivery, task }]).await?;
        tracing::info!(delivery_id = %id, "delivery retried");
        Ok(())
    }

    /// Queues a new message for each of the org's pending deliveries that
    /// lost theirs (overdue by `STUCK_AFTER`; the caller has seen their
    /// endpoints exist): their events read once each, the messages sent in
    /// batches, and each delivery then marked as requeued
    /// ([`DeliveryStore::mark_requeued`]), so that it is not sent again
    /// while the new message waits in the queue. Each delivery's outcome,
    /// in no particular order.
    pub async fn unstick(
        &self,
        org_id: &str,
        deliveries: Vec<Delivery>,
    ) -> Vec<(Delivery, Unstuck)> {
        let now = self.clock.now();
        let mut event_ids: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
        event_ids.sort_unstable();
        event_ids.dedup();
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let events: HashMap<String, Listed> = match self.events.get_many(org_id, &event_ids).await {
            Ok(found) => found
                .into_iter()
                .map(|l| {
                    (
                        l.as_ref()
                            .map_or_else(|u| u.event_id.clone(), |e| e.id.clone()),
                        l,
                    )
                })
                .collect(),
            Err(e) => {
                outcomes.extend(
                    deliveries
                        .into_iter()
                        .map(|d| (d, Unstuck::Failed(e.clone()))),
                );
                return outcomes;
            }
        };
        let mut ready: Vec<(Delivery, QueueMessage)> = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match events.get(&d.event_id) {
                Some(Ok(event)) => {
                    let task = QueueMessage::task(
                        &d.task(event, webhooks_domain::Payload::of_event(event)),
                    );
                    ready.push((d, task));
                }
                Some(Err(u)) => {
                    let e =
                        BackendError::Permanent(format!("stored event is malformed: {}", u.error));
                    outcomes.push((d, Unstuck::Failed(e)));
                }
                None => outcomes.push((d, Unstuck::EventGone)),
            }
        }
        // A hundred messages a call (ten SQS batches, which the queue
        // sends at once), one call after another.
        let mut sent = Vec::with_capacity(ready.len());
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let chunk: Vec<(Delivery, QueueMessage)> = ready.by_ref().take(SEND_CHUNK).collect();
            let messages: Vec<QueueMessage> = chunk.iter().map(|(_, m)| m.clone()).collect();
            match self.queue.send_batch(&messages).await {
                Ok(rejected) => {
                    for (i, (d, _)) in chunk.into_iter().enumerate() {
                        if rejected.contains(&i) {
                            outcomes.push((d, Unstuck::Refused));
                        } else {
                            sent.push(d);
                        }
                    }
                }
                Err(e) => {
                    outcomes.extend(
                        chunk
                            .into_iter()
                            .map(|(d, _)| (d, Unstuck::Failed(e.clone()))),
                    );
                }
            }
        }
        // Only after the send: a delivery marked whose message then failed
        // to go would wait STUCK_AFTER more before it is found again. A mark
        // that fails leaves it overdue, and the next pass sends another
        // message, which the fence makes harmless.
        let stale_before = now - STUCK_AFTER;
        let marks: Vec<BoxFuture<'_, (Delivery, Unstuck)>> = sent
            .into_iter()
            .map(|d| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let marked = self
                        .deliveries
                        .mark_requeued(&d.id, d.attempt_count, now, stale_before)
                        .await;
                    // `Ok(false)`: attempted (or leased, or finished) since
                    // it was read; the new message finds that out.
                    if let Err(e) = marked {
                        tracing::warn!(delivery_id = %d.id, error = %e, "queued again, but could not note it; it may be queued once more");
                    }
                    (d, Unstuck::Queued)
                })
            })
            .collect();
        let marked: Vec<(Delivery, Unstuck)> = stream::iter(marks)
            .buffer_unordered(MARK_CONCURRENCY)
            .collect()
            .await;
        outcomes.extend(marked);
        outcomes
    }

    /// Queues again the dead-lettered deliveries of the endpoint (of org
    /// `org_id`) created since `since`, reading at most [`PAGES_PER_CALL`]
    /// pages from `cursor` (`None`: the newest); the next call goes on
    /// from [`Recovered::next_cursor`], as a listing's does.
    pub async fn recover(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<Recovered, RequeueError> {
        let mut requeued = 0;
        let mut cursor: Option<String> = cursor.map(str::to_string);
        for _ in 0..PAGES_PER_CALL {
            let page = self
                .deliveries
                .list_for_endpoint(
                    endpoint_id,
                    Some(DeliveryStatus::DeadLettered),
                    PAGE,
                    cursor.as_deref(),
                )
                .await?;
            let candidates: Vec<Delivery> = page
                .items
                .into_iter()
                .filter(|d| d.org_id == org_id && d.created_at >= since)
                .collect();
            requeued += self.requeue_dead_lettered(org_id, candidates).await?;
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        tracing::info!(
            endpoint_id,
            requeued,
            more = cursor.is_some(),
            "deliveries recovered"
        );
        Ok(Recovered {
            requeued,
            next_cursor: cursor,
        })
    }

    /// Ends the pending deliveries of a deleted endpoint as `canceled`,
    /// reading at most [`PAGES_PER_CALL`] pages (the newest). Those beyond
    /// end canceled when the sender next takes their message, or the
    /// reconciler finds them overdue: both cancel a delivery whose endpoint
    /// is gone.
    pub async fn cancel_pending(&self, endpoint_id: &str) -> Result<Canceled, BackendError> {
        let mut canceled = 0;
        let mut cursor: Option<String> = None;
        for _ in 0..PAGES_PER_CALL {
            let page = self
                .deliveries
                .list_for_endpoint(
                    endpoint_id,
                    Some(DeliveryStatus::Pending),
                    PAGE,
                    cursor.as_deref(),
                )
                .await?;
            // Boxed, so the future stays Send whatever the borrows' lifetimes.
            let mut work: Vec<BoxFuture<'_, _>> = Vec::with_capacity(page.items.len());
            for d in &page.items {
                work.push(self.deliveries.transition(
                    &d.id,
                    &[DeliveryStatus::Pending],
                    DeliveryStatus::Canceled,
                ));
            }
            let results: Vec<_> = stream::iter(work)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for r in results {
                if r?.is_some() {
                    canceled += 1;
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        Ok(Canceled {
            canceled,
            complete: cursor.is_none(),
        })
    }

    /// Makes each dead-lettered delivery pending and queues it; returns how
    /// many were queued. A delivery whose event is gone is left as it is.
    async fn requeue_dead_lettered(
        &self,
        org_id: &str,
        candidates: Vec<Delivery>,
    ) -> Result<usize, RequeueError> {
        let mut work: Vec<BoxFuture<'_, Result<Option<Ready>, RequeueError>>> = Vec::new();
        for d in candidates {
            work.push(Box::pin(self.prepare_requeue(org_id, d)));
        }
        let prepared: Vec<_> = stream::iter(work)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut ready = Vec::new();
        let mut first_error = None;
        for p in prepared {
            match p {
                Ok(Some(item)) => ready.push(item),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Those already moved to pending must be queued even if others failed.
        let queued = self.enqueue(ready).await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(queued),
        }
    }

    /// Moves a dead-lettered delivery to pending and makes its task; `None`
    /// when its event is gone or it is no longer dead-lettered.
    async fn prepare_requeue(
        &self,
        org_id: &str,
        delivery: Delivery,
    ) -> Result<Option<Ready>, RequeueError> {
        let Some(event) = self.events.get(org_id, &delivery.event_id).await? else {
            tracing::warn!(delivery_id = %delivery.id, event_id = %delivery.event_id, "event gone; not requeued");
            return Ok(None);
        };
        let task =
            QueueMessage::task(&delivery.task(&event, webhooks_domain::Payload::of_event(&event)));
        let moved = self
            .deliveries
            .transition(
                &delivery.id,
                &[DeliveryStatus::DeadLettered],
                DeliveryStatus::Pending,
            )
            .await?;
        Ok(moved.map(|_| Ready { delivery, task }))
    }

    /// Queues the tasks of deliveries just moved to pending. Any the queue
    /// does not take go back to their previous status, and the call fails.
    /// A send that answers an error may still have been taken (SQS accepted
    /// it, and the answer was lost): a delivery the sender has leased since
    /// is not moved back (the lease is live; see
    /// [`DeliveryStore::transition`]), and counts as queued.
    async fn enqueue(&self, items: Vec<Ready>) -> Result<usize, RequeueError> {
        if items.is_empty() {
            return Ok(0);
        }
        let messages: Vec<QueueMessage> = items.iter().map(|r| r.task.clone()).collect();
        let (refused, error) = match self.queue.send_batch(&messages).await {
            Ok(rejected) if rejected.is_empty() => (Vec::new(), None),
            Ok(rejected) => {
                tracing::warn!(
                    rejected = rejected.len(),
                    "the queue refused some delivery tasks"
                );
                (rejected, Some(RequeueError::QueueRefused))
            }
            Err(e) => ((0..items.len()).collect(), Some(e.into())),
        };
        let refused: Vec<&Delivery> = refused
            .iter()
            .filter_map(|&i| items.get(i).map(|r| &r.delivery))
            .collect();
        let moved_back = self.revert(refused.iter().copied()).await;
        self.count_requeued(
            items
                .iter()
                .map(|r| &r.delivery)
                .filter(|d| !moved_back.contains(&d.id.as_str())),
        )
        .await;
        match error {
            Some(e) if !moved_back.is_empty() => Err(e),
            _ => Ok(items.len() - moved_back.len()),
        }
    }

    /// Moves requeued deliveries (as they were before) out of their status in
    /// the figures, into pending once attempted.
    async fn count_requeued(&self, deliveries: impl Iterator<Item = &Delivery>) {
        let stats = self.stats.clone();
        let Some(stats) = stats else {
            return;
        };
        for d in deliveries {
            let to = (d.attempt_count > 0).then_some(DeliveryStatus::Pending);
            let delta = StatsDelta::moved(Some(d.status), to);
            let r = stats
                .add(&d.endpoint_id, bucket_hour(d.created_at), &delta)
                .await;
            if let Err(e) = r {
                tracing::warn!(delivery_id = %d.id, error = %e, "could not update the endpoint's figures");
            }
        }
    }

    /// Puts deliveries that could not be queued back in their earlier
    /// status; returns the ids of those it moved back, or could not tell
    /// (an error). One that is no longer pending without a live lease was
    /// reached by a message after all: it is left as it is.
    async fn revert<'a>(&self, deliveries: impl Iterator<Item = &'a Delivery>) -> Vec<&'a str> {
        let mut moved_back = Vec::new();
        for d in deliveries {
            match self
                .deliveries
                .transition(&d.id, &[DeliveryStatus::Pending], d.status)
                .await
            {
                Ok(Some(_)) => moved_back.push(d.id.as_str()),
                Ok(None) => {
                    tracing::warn!(delivery_id = %d.id, "queued after all: its message was received before the send's error");
                }
                Err(e) => {
                    tracing::error!(delivery_id = %d.id, error = %e, "could not restore status after a failed enqueue");
                    moved_back.push(d.id.as_str());
                }
            }
        }
        moved_back
    }
}
