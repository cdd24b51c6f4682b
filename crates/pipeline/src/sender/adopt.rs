//! A message whose delivery has no record yet. The fan-out queues a
//! delivery's message before it creates its record, so that a record never
//! exists without a message (the reconciler then needs no index entry for a
//! delivery never attempted). A message can therefore arrive first: the
//! fan-out is still creating, or stopped in between. The sender creates the
//! record itself, with the same conditional create (one per (endpoint,
//! event): whichever of the two comes second finds the other's), owned by
//! this message (its `chain`) as the fan-out's record is owned by the
//! message it sent.

use super::{Job, MessageOutcome, Sender};
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::Delivery;

impl Sender {
    /// The delivery of a message that found none: created from its task, or
    /// the one created meanwhile. A task whose ids do not make its delivery
    /// id is not the fan-out's: it goes to the dead-letter queue.
    pub(super) async fn adopt(&self, job: &Job<'_>) -> Result<Delivery, MessageOutcome> {
        let task = &job.task;
        if delivery_id(&task.endpoint_id, &task.event_id) != task.delivery_id {
            tracing::error!(message_id = %job.message.message_id, "no such delivery, and its task names another; moved to the dead-letter queue");
            return Err(self.dead_letter_poison(job.message).await);
        }
        // Owned by this message from its creation, as the fan-out would
        // have made it owned by the message it sent.
        let delivery = Delivery {
            chain: Some(job.message.message_id.clone()),
            ..Delivery::new_at(
                &task.org_id,
                &task.endpoint_id,
                &task.event_id,
                task.event_type,
                self.clock.now(),
            )
        };
        match self.deliveries.create_if_absent(&delivery).await {
            Ok(None) => {
                tracing::info!("delivery not created yet by its fan-out; created from its message");
                Ok(delivery)
            }
            Ok(Some(existing)) => Ok(existing),
            Err(e) => {
                tracing::warn!(error = %e, "could not create the delivery of this message; retrying");
                Err(MessageOutcome::Retry)
            }
        }
    }
}
