//! The reconciler: finds pending deliveries with a retry scheduled that
//! have lost their queue message, and queues them again. A message goes
//! missing when SQS moves it to the dead-letter queue after
//! `maxReceiveCount` receives or deletes it after its retention, when a
//! recovery stops between marking a delivery pending and queueing it, or
//! when a send is refused. (A delivery never attempted has no retry
//! scheduled and is not looked at here: its record is created only after
//! its message was sent, and the sender renews its message before SQS would
//! drop it; see `sender::renew`.) Such a
//! delivery stays pending with its next attempt in the past; once that is
//! overdue by [`STUCK_AFTER`], the lease lets a new message take its retry
//! chain over, so queueing one is all it takes, and is harmless if the old
//! message turns up after all (the fence drops whichever loses).
//!
//! It reads the org's overdue deliveries a page at a time (the sweeper
//! gives each org a few pages per turn, so that no org's backlog holds up
//! the others), queues each page's messages in batches, and marks each
//! delivery queued again ([`DeliveryStore::mark_requeued`]): its next
//! attempt becomes now, so it leaves the overdue range, is not sent again
//! while its new message waits in the queue, and comes back only if that
//! message is lost too.

use crate::requeue::{Requeue, Unstuck, CONCURRENCY};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use std::sync::Arc;
use webhooks_domain::delivery::{Resend, STUCK_AFTER};
use webhooks_domain::{Delivery, DeliveryStatus, Subscriber};
use webhooks_ports::{Adapters, BackendError, Clock, DeliveryStore, OrgEndpoints};

/// One delivery read alone.
type ReadOne = Result<Option<Delivery>, BackendError>;

/// Overdue deliveries read (and queued again) per page: one Query of the
/// index, batched reads of 100, the messages sent ten a request.
pub const PAGE: usize = 500;

/// What a reconciliation of one org (or of one page of it) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Deliveries whose lost message was queued again.
    pub requeued: usize,
    /// Deliveries whose endpoint was deleted meanwhile, now canceled.
    pub canceled: usize,
    /// Deliveries passed over because they, or their events, cannot be
    /// read (logged at error; each pass tries them again).
    pub unreadable: usize,
}

impl Reconciled {
    fn add(&mut self, other: &Reconciled) {
        self.requeued += other.requeued;
        self.canceled += other.canceled;
        self.unreadable += other.unreadable;
    }
}

/// How far one org's reconciliation has gone in a pass: where its page of
/// the overdue index ends, and the org's endpoints once read.
#[derive(Debug, Default, Clone)]
pub struct OrgProgress {
    cursor: Option<String>,
    subscribers: Option<Vec<Subscriber>>,
    done: bool,
}

impl OrgProgress {
    /// Progress with nothing left to do.
    pub fn finished() -> Self {
        OrgProgress {
            done: true,
            ..OrgProgress::default()
        }
    }

    /// Every overdue delivery of the org was read in this pass (or its
    /// reconciliation stopped at an error).
    pub fn done(&self) -> bool {
        self.done
    }
}

/// The reconciler step (run by the sweeper, a few pages per org and turn).
pub struct Reconciler {
    deliveries: Arc<dyn DeliveryStore>,
    endpoints: Arc<dyn OrgEndpoints>,
    requeue: Requeue,
    clock: Arc<dyn Clock>,
}

impl Reconciler {
    /// The reconciler over a backend's adapters.
    pub fn from_adapters(adapters: &Adapters) -> Self {
        Reconciler {
            deliveries: adapters.deliveries.clone(),
            endpoints: adapters.endpoints.clone(),
            requeue: Requeue::new(
                adapters.events.clone(),
                adapters.endpoints.clone(),
                adapters.deliveries.clone(),
                adapters.queue.clone(),
            )
            .with_clock(adapters.clock.clone()),
            clock: adapters.clock.clone(),
        }
    }

    /// Queues again all the org's pending deliveries overdue by more than
    /// [`STUCK_AFTER`], page after page, and cancels those whose endpoint
    /// is gone.
    pub async fn reconcile_org(&self, org_id: &str) -> Result<Reconciled, BackendError> {
        let mut progress = OrgProgress::default();
        let mut done = Reconciled::default();
        while !progress.done {
            done.add(&self.reconcile_page(org_id, &mut progress).await?);
        }
        Ok(done)
    }

    /// The next page (at most [`PAGE`]) of the org's overdue deliveries
    /// after `progress`: each queued again, or canceled if its endpoint is
    /// gone. A delivery or event that cannot be read is passed over (and
    /// logged); an error that may pass (a throttle, a timeout) ends the
    /// org's reconciliation for this pass (`progress` is then done) and is
    /// returned.
    pub async fn reconcile_page(
        &self,
        org_id: &str,
        progress: &mut OrgProgress,
    ) -> Result<Reconciled, BackendError> {
        let r = self.page(org_id, progress).await;
        if r.is_err() {
            progress.done = true;
        }
        r
    }

    async fn page(
        &self,
        org_id: &str,
        progress: &mut OrgProgress,
    ) -> Result<Reconciled, BackendError> {
        let now = self.clock.now();
        let page = self
            .deliveries
            .overdue(org_id, now - STUCK_AFTER, PAGE, progress.cursor.as_deref())
            .await?;
        progress.done = page.next_cursor.is_none();
        progress.cursor = page.next_cursor;
        let mut done = Reconciled::default();
        if page.items.is_empty() {
            return Ok(done);
        }
        let deliveries = self.read(&page.items, &mut done).await?;
        // The org's endpoints once per pass, for all its overdue deliveries.
        let subscribers = match &progress.subscribers {
            Some(s) => s,
            None => progress
                .subscribers
                .insert(self.endpoints.list_all(org_id).await?),
        };
        let (stuck, gone): (Vec<Delivery>, Vec<Delivery>) = deliveries
            .into_iter()
            // Attempted or finished since the index was read: its own
            // message carries it on.
            .filter(|d| d.resend(now) == Ok(Resend::Unstick))
            .partition(|d| subscribers.iter().any(|s| s.id == d.endpoint_id));
        done.canceled = self.cancel(gone).await?;
        let mut first_error = None;
        for (d, outcome) in self.requeue.unstick(org_id, stuck).await {
            match outcome {
                Unstuck::Queued => done.requeued += 1,
                // Nothing to send it with; left as it is.
                Unstuck::EventGone => {
                    tracing::warn!(delivery_id = %d.id, event_id = %d.event_id, "overdue delivery's event is gone; not queued again");
                }
                Unstuck::Refused => {
                    tracing::warn!(delivery_id = %d.id, "the queue refused an overdue delivery's message");
                }
                Unstuck::Failed(e) if e.is_transient() => {
                    first_error.get_or_insert(e);
                }
                Unstuck::Failed(e) => {
                    tracing::error!(delivery_id = %d.id, event_id = %d.event_id, error = %e, "overdue delivery's event cannot be read; passed over");
                    done.unreadable += 1;
                }
            }
        }
        if done.requeued + done.canceled > 0 {
            tracing::warn!(
                org_id,
                requeued = done.requeued,
                canceled = done.canceled,
                "reconciler found pending deliveries without a queue message"
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// The page's deliveries. One item that cannot be read fails a batched
    /// read whole, so then they are read one by one, and those that cannot
    /// be read are passed over (and counted).
    async fn read(
        &self,
        ids: &[String],
        done: &mut Reconciled,
    ) -> Result<Vec<Delivery>, BackendError> {
        match self.deliveries.get_many(ids).await {
            Ok(found) => return Ok(found),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "a page of overdue deliveries cannot be read whole; reading them one by one");
            }
        }
        // Boxed, so the future stays Send whatever the borrows' lifetimes.
        let reads: Vec<BoxFuture<'_, (&String, ReadOne)>> = ids
            .iter()
            .map(|id| -> BoxFuture<'_, _> {
                Box::pin(async move { (id, self.deliveries.get(id).await) })
            })
            .collect();
        let read: Vec<_> = stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut found = Vec::with_capacity(ids.len());
        for (id, r) in read {
            match r {
                Ok(Some(d)) => found.push(d),
                Ok(None) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::error!(delivery_id = %id, error = %e, "overdue delivery cannot be read; passed over");
                    done.unreadable += 1;
                }
            }
        }
        Ok(found)
    }

    /// Cancels pending deliveries of deleted endpoints; how many.
    async fn cancel(&self, gone: Vec<Delivery>) -> Result<usize, BackendError> {
        let writes: Vec<BoxFuture<'_, Result<Option<Delivery>, BackendError>>> = gone
            .iter()
            .map(|d| {
                self.deliveries.transition(
                    &d.id,
                    &[DeliveryStatus::Pending],
                    DeliveryStatus::Canceled,
                )
            })
            .collect();
        let results: Vec<_> = stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut canceled = 0;
        for r in results {
            canceled += usize::from(r?.is_some());
        }
        Ok(canceled)
    }
}
