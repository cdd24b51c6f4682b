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

use crate::requeue::{Requeue, RequeueError};
use std::sync::Arc;
use webhooks_domain::delivery::STUCK_AFTER;
use webhooks_domain::DeliveryStatus;
use webhooks_ports::{Adapters, BackendError, Clock, DeliveryStore, OrgEndpoints};

/// Overdue deliveries looked at per org and pass.
const PER_ORG: usize = 100;

/// What a reconciliation of one org did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Deliveries whose lost message was queued again.
    pub requeued: usize,
    /// Deliveries whose endpoint was deleted meanwhile, now canceled.
    pub canceled: usize,
}

/// The reconciler step (run by the sweeper, once per org and pass).
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

    /// Queues again the org's pending deliveries overdue by more than
    /// [`STUCK_AFTER`] (at most [`PER_ORG`] of them; the next pass takes the
    /// rest), and cancels those whose endpoint is gone.
    pub async fn reconcile_org(&self, org_id: &str) -> Result<Reconciled, BackendError> {
        let before = self.clock.now() - STUCK_AFTER;
        let ids = self.deliveries.overdue(org_id, before, PER_ORG).await?;
        let mut done = Reconciled::default();
        if ids.is_empty() {
            return Ok(done);
        }
        // The org's endpoints once, for all its overdue deliveries.
        let subscribers = self.endpoints.list_all(org_id).await?;
        for delivery in self.deliveries.get_many(&ids).await? {
            let id = delivery.id.clone();
            if !subscribers.iter().any(|s| s.id == delivery.endpoint_id) {
                let canceled = self
                    .deliveries
                    .transition(&id, &[DeliveryStatus::Pending], DeliveryStatus::Canceled)
                    .await?;
                done.canceled += usize::from(canceled.is_some());
                continue;
            }
            match self.requeue.retry_existing(org_id, delivery).await {
                Ok(()) => done.requeued += 1,
                // Attempted or finished since the index was read.
                Err(RequeueError::NotRetryable(_) | RequeueError::Changed) => {}
                Err(RequeueError::Backend(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(delivery_id = %id, error = %e, "overdue delivery could not be queued again");
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
        Ok(done)
    }
}
