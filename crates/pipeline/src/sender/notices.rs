//! The sender's side of operational notifications: the writes that make a
//! transition emit it, and a notice's message is POSTed to the operator's
//! webhook like a delivery (see [`crate::ops`]).

use super::{MessageOutcome, Sender};
use crate::http::HttpOutcome;
use crate::metrics::DeadLetterCause;
use crate::ops::notice_headers;
use chrono::{DateTime, Utc};
use std::time::Duration;
use webhooks_domain::delivery::{next_step, NextStep};
use webhooks_domain::ops::OpsNotice;
use webhooks_domain::{Delivery, Endpoint};
use webhooks_ports::ReceivedMessage;

impl Sender {
    /// Turns `endpoint` off; the write that did so emits `endpoint.disabled`.
    pub(crate) async fn disable_endpoint(
        &self,
        endpoint: &Endpoint,
        reason: &str,
        now: DateTime<Utc>,
    ) -> webhooks_ports::Result<()> {
        if self
            .health
            .disable(&endpoint.org_id, &endpoint.id, reason)
            .await?
        {
            self.ops
                .notifier
                .notify(OpsNotice::endpoint_disabled(
                    &endpoint.id,
                    &endpoint.org_id,
                    reason,
                    now,
                ))
                .await;
        }
        Ok(())
    }

    /// The write that dead-lettered `delivery` counts it (a customer's dead
    /// letter) and emits `delivery.dead_lettered`.
    pub(crate) async fn notify_dead_lettered(
        &self,
        delivery: &Delivery,
        last_error: Option<&str>,
        now: DateTime<Utc>,
    ) {
        self.metrics.dead_letter(DeadLetterCause::Customer);
        self.ops
            .notifier
            .notify(OpsNotice::delivery_dead_lettered(delivery, last_error, now))
            .await;
    }

    /// One attempt of a notice's message: POST, then finished, hidden for its
    /// retry, or dead-lettered, as a delivery would be.
    pub(crate) async fn deliver_notice(
        &self,
        message: &ReceivedMessage,
        notice: &OpsNotice,
        hide_limit: Duration,
    ) -> MessageOutcome {
        let Some(endpoint) = &self.ops.endpoint else {
            tracing::warn!(notice_id = %notice.id, "operational notification but no operator URL configured; dropped");
            return MessageOutcome::Done;
        };
        let number = message.receive_count.max(1);
        let at = self.clock.now();
        let headers = notice_headers(notice, &endpoint.secret, number, at);
        let HttpOutcome {
            result, latency_ms, ..
        } = self
            .transport
            .post(&endpoint.url, &headers, notice.payload.as_str().into())
            .await;
        let step = next_step(
            number,
            &result,
            &self.config.schedule,
            &mut *self
                .jitter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        tracing::info!(notice_id = %notice.id, ops_event = %notice.event_type, attempt = number, ?result, latency_ms, next = ?step, "operational notification attempt");
        match step {
            NextStep::Delivered => MessageOutcome::Done,
            NextStep::RetryAfter(d) => {
                if let Err(e) = self
                    .queue
                    .change_visibility(&message.receipt_handle, d.min(hide_limit))
                    .await
                {
                    tracing::warn!(error = %e, "could not delay the notification's retry");
                }
                MessageOutcome::Retry
            }
            NextStep::DeadLetter | NextStep::Gone => {
                tracing::error!(notice_id = %notice.id, "operational notification dead-lettered");
                self.dead_letter_poison(message).await
            }
        }
    }

    /// Moves a message the system could not handle to the dead-letter queue
    /// and counts it: a page, unlike a customer's dead letter.
    pub(crate) async fn dead_letter_poison(&self, message: &ReceivedMessage) -> MessageOutcome {
        let outcome = self.dead_letter_message(message).await;
        if outcome == MessageOutcome::Done {
            self.metrics.dead_letter(DeadLetterCause::Poison);
        }
        outcome
    }
}

/// The `Outcome` dimension of an attempt.
pub(super) fn outcome_name(step: &NextStep) -> &'static str {
    match step {
        NextStep::Delivered => "delivered",
        NextStep::RetryAfter(_) => "retry",
        NextStep::DeadLetter | NextStep::Gone => "dead_lettered",
    }
}
