//! An SQS queue behind the `Queue` port.

use crate::error::backend_error;
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use futures::future::join_all;
use std::time::Duration;
use webhooks_ports::queue_limits::{self, MAX_BATCH_ENTRIES as SQS_BATCH, MAX_VISIBILITY};
use webhooks_ports::{BackendError, Queue, QueueMessage, ReceivedMessage, Result};

/// One SQS queue, by URL.
#[derive(Clone)]
pub struct SqsQueue {
    client: crate::Lazy<Client>,
    url: String,
}

impl SqsQueue {
    pub fn new(client: impl Into<crate::Lazy<Client>>, url: impl Into<String>) -> Self {
        SqsQueue {
            client: client.into(),
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One SendMessageBatch request of the messages at `indexes`, each with
    /// its tenant as `MessageGroupId` (the delivery queue is a fair queue);
    /// returns (index, `MessageId`) of each message SQS took.
    async fn send_chunk(
        &self,
        messages: &[QueueMessage],
        indexes: &[usize],
    ) -> Vec<(usize, String)> {
        let entries: Vec<SendMessageBatchRequestEntry> = indexes
            .iter()
            .filter_map(|i| {
                let m = &messages[*i];
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_group_id(m.tenant.clone())
                    .build()
                    .ok()
            })
            .collect();
        match self
            .client
            .get()
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out
                .successful
                .into_iter()
                .filter_map(|ok| Some((ok.id.parse::<usize>().ok()?, ok.message_id)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %backend_error("SendMessageBatch", e), "queue send failed");
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch_ids(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>> {
        // Cut by count and by bytes, and keep out what SQS would refuse
        // whatever the batch: one bad message must not fail a whole request
        // of other messages (other orgs' among them).
        let plan = queue_limits::plan_batches(messages);
        for (i, reason) in &plan.refused {
            tracing::error!(index = i, %reason, "message refused before sending");
        }
        let chunks = plan
            .batches
            .iter()
            .map(|indexes| self.send_chunk(messages, indexes));
        let mut ids: Vec<Option<String>> = vec![None; messages.len()];
        for (i, id) in join_all(chunks).await.into_iter().flatten() {
            if let Some(slot) = ids.get_mut(i) {
                *slot = Some(id);
            }
        }
        Ok(ids)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let out = self
            .client
            .get()
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, SQS_BATCH)).unwrap_or(10))
            // Whole seconds, rounded up: a sub-second wait must not become a
            // short poll that spins on an empty queue.
            .wait_time_seconds(i32::try_from(wait.as_millis().div_ceil(1000).min(20)).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| backend_error("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let age = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| webhooks_ports::queue_limits::age_of_sent_timestamp(v));
                let tenant = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned();
                Some(ReceivedMessage {
                    message_id: m.message_id?,
                    body: m.body.unwrap_or_default(),
                    tenant,
                    receipt_handle: m.receipt_handle?,
                    receive_count,
                    age,
                })
            })
            .collect())
    }

    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()> {
        // Round up so that a message is never shown before it is due.
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        let secs = i32::try_from(secs.min(MAX_VISIBILITY.as_secs())).unwrap_or(43_200);
        self.client
            .get()
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| backend_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        for chunk in receipt_handles.chunks(SQS_BATCH) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .client
                .get()
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| backend_error("DeleteMessageBatch", e))?;
            if let Some(f) = out.failed.first() {
                return Err(BackendError::Transient(format!(
                    "DeleteMessageBatch: {} {}",
                    f.code,
                    f.message.clone().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
