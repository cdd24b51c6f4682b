//! Operational notifications (CONTRACT section 10): `endpoint.disabled`,
//! `endpoint.enabled` and `delivery.dead_lettered`, to one operator URL with
//! its own secret, and to an event bus when one is configured.
//!
//! A notice travels as its own kind of message on the delivery queue, so
//! the sender signs, POSTs and retries it with the same schedule, hiding and
//! dead-letter queue as any delivery; it has no delivery record, belongs to
//! no org and never reaches an org endpoint. Its attempt number is the
//! message's receive count. Whoever makes a transition notifies, and only
//! the conditional write that made it: one notice per transition.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::ops::OpsNotice;
use webhooks_domain::signing::{webhook_signature_header, x_signature};
use webhooks_domain::Secret;
use webhooks_ports::{OpsBus, Queue, QueueMessage};

/// Sends of a notice to the queue or bus before giving up on it.
const NOTIFY_TRIES: u32 = 3;

/// The operator's webhook: where notices are POSTed, and the secret that
/// signs them.
#[derive(Clone)]
pub struct OpsEndpoint {
    pub url: String,
    pub secret: Secret,
}

impl std::fmt::Debug for OpsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsEndpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Emits notices: queues each for the operator's webhook (when there is
/// one) and publishes it on the bus (when there is one). Without either it
/// only logs.
#[derive(Clone, Default)]
pub struct OpsNotifier {
    queue: Option<Arc<dyn Queue>>,
    bus: Option<Arc<dyn OpsBus>>,
}

impl OpsNotifier {
    /// `queue`: the delivery queue, when an operator webhook is configured;
    /// `bus`: the event bus, when one is.
    pub fn new(queue: Option<Arc<dyn Queue>>, bus: Option<Arc<dyn OpsBus>>) -> Self {
        OpsNotifier { queue, bus }
    }

    /// Queues and publishes `notice`, retrying each a few times; a notice
    /// that cannot be handed over is logged as an error (nothing else is
    /// undone for it).
    pub async fn notify(&self, notice: OpsNotice) {
        tracing::info!(ops_event = %notice.event_type, notice_id = %notice.id, "operational notification");
        let queue = self.queue.clone();
        if let Some(queue) = queue {
            let message = [QueueMessage::new(
                notice.to_message(),
                webhooks_domain::tenant::OPS_TENANT,
            )];
            let sent = retry(|| async {
                let result = queue.send_batch(&message).await;
                match result {
                    Ok(rejected) if rejected.is_empty() => Ok(()),
                    Ok(_) => Err("refused by the queue".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            if let Err(e) = sent {
                tracing::error!(notice_id = %notice.id, error = %e, "could not queue an operational notification");
            }
        }
        let bus = self.bus.clone();
        if let Some(bus) = bus {
            let published =
                retry(|| async { bus.publish(&notice).await.map_err(|e| e.to_string()) }).await;
            if let Err(e) = published {
                tracing::error!(notice_id = %notice.id, error = %e, "could not publish an operational notification");
            }
        }
    }
}

async fn retry<F, Fut>(mut call: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for n in 0..NOTIFY_TRIES {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100 << n)).await;
        }
        match call().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The sender's side of notices: what it emits, and where it POSTs them.
#[derive(Clone, Default)]
pub struct Ops {
    pub notifier: OpsNotifier,
    /// The operator's webhook; a notice received without one is dropped.
    pub endpoint: Option<OpsEndpoint>,
}

/// Every header of a notice's attempt: those of a delivery (CONTRACT
/// section 2), signed with the operator's secret.
pub fn notice_headers(
    notice: &OpsNotice,
    secret: &Secret,
    attempt: u32,
    at: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let body = notice.payload.as_bytes();
    let timestamp = at.timestamp();
    vec![
        ("content-type", "application/json".to_string()),
        ("x-signature", x_signature(secret, body)),
        ("webhook-id", notice.id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            webhook_signature_header(&[secret], &notice.id, timestamp, body),
        ),
        ("x-webhook-event", notice.event_type.clone()),
        ("x-webhook-delivery", notice.delivery_id()),
        ("x-webhook-attempt", attempt.to_string()),
    ]
}
