//! Lambda's event source mappings, run locally against the same handler
//! functions the Lambdas run: stream records reach `fanout` in batches with
//! retry from the first failed record; queue messages reach `sender` in
//! batches of ten, and those not reported as failures are deleted.

use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webhooks_aws::stream::{insert_record, StreamReader};
use webhooks_memory::MemoryEventStore;
use webhooks_pipeline::{FanOut, Sender};
use webhooks_ports::{BackendError, Queue, ReceivedMessage};

/// Most records handed to the fan-out at once (the template's batch size).
pub const STREAM_BATCH: usize = 100;
/// Times a failing stream batch is retried before its first record is
/// dropped, as `MaximumRetryAttempts` does (the sweeper picks it up).
pub const STREAM_MAX_RETRIES: u32 = 10;

/// Where stream records come from.
pub enum StreamSource {
    /// The embedded event store's change stream.
    Memory {
        store: Arc<MemoryEventStore>,
        position: usize,
    },
    /// A real DynamoDB stream (emulator or AWS).
    Aws(Box<StreamReader>),
}

impl StreamSource {
    pub fn memory(store: Arc<MemoryEventStore>) -> Self {
        StreamSource::Memory { store, position: 0 }
    }

    /// The next records, waiting up to `wait` for some.
    async fn next(&mut self, wait: Duration) -> Result<Vec<EventRecord>, BackendError> {
        match self {
            StreamSource::Memory { store, position } => {
                store.wait_for_stream(*position, wait).await;
                let records = store.read_stream(*position, STREAM_BATCH);
                // By number: records trimmed unread are skipped over.
                if let Some(last) = records.last() {
                    *position = usize::try_from(last.sequence_number).unwrap_or(usize::MAX);
                }
                let mut out = Vec::with_capacity(records.len());
                for r in &records {
                    out.push(insert_record(&r.event, r.sequence_number)?);
                }
                Ok(out)
            }
            StreamSource::Aws(reader) => {
                let records = reader.poll().await?;
                if records.is_empty() {
                    tokio::time::sleep(wait.min(Duration::from_millis(250))).await;
                }
                Ok(records)
            }
        }
    }
}

/// Feeds stream records to the fan-out handler like Lambda's DynamoDB event
/// source mapping: in order, in batches, retrying from the first failed
/// record. Keeps a backlog of records not yet accepted.
pub struct StreamMapping {
    source: StreamSource,
    fanout: Arc<FanOut>,
    backlog: VecDeque<EventRecord>,
    retries: u32,
}

impl StreamMapping {
    pub fn new(source: StreamSource, fanout: Arc<FanOut>) -> Self {
        StreamMapping {
            source,
            fanout,
            backlog: VecDeque::new(),
            retries: 0,
        }
    }

    /// Reads what is new and invokes the handler once. Returns how many
    /// records the handler accepted.
    pub async fn step(&mut self, wait: Duration) -> usize {
        if self.backlog.len() < STREAM_BATCH {
            match self.source.next(wait).await {
                Ok(records) => self.backlog.extend(records),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the stream");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if self.backlog.is_empty() {
            return 0;
        }
        let n = self.backlog.len().min(STREAM_BATCH);
        let mut batch = StreamEvent::default();
        batch.records = self.backlog.iter().take(n).cloned().collect();
        // The handler takes the batch; the backlog keeps the records until
        // they are accepted, so a failure is found there.
        let response = webhooks_fn_fanout::fan_out_records(&self.fanout, batch).await;
        let failed_at = response
            .batch_item_failures
            .first()
            .and_then(|f| f.item_identifier.clone())
            .and_then(|seq| {
                self.backlog
                    .iter()
                    .take(n)
                    .position(|r| r.change.sequence_number.as_deref() == Some(seq.as_str()))
            });
        let accepted = match failed_at {
            None => n,
            Some(i) => {
                self.retries += 1;
                if self.retries > STREAM_MAX_RETRIES {
                    tracing::error!(sequence = ?self.backlog.get(i).and_then(|r| r.change.sequence_number.as_deref()), "stream record dropped after retries; the sweeper will fan it out");
                    self.retries = 0;
                    i + 1
                } else {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(self.retries))).await;
                    i
                }
            }
        };
        if failed_at.is_none() || accepted > 0 {
            // Progress: the retry budget is per stuck record, as in Lambda.
            self.retries = 0;
        }
        self.backlog.drain(..accepted);
        accepted
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            tokio::select! {
                _ = self.step(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Feeds queue messages to the sender handler like Lambda's SQS event source
/// mapping with `ReportBatchItemFailures`.
pub struct QueueMapping {
    queue: Arc<dyn Queue>,
    sender: Arc<Sender>,
}

impl QueueMapping {
    pub fn new(queue: Arc<dyn Queue>, sender: Arc<Sender>) -> Self {
        QueueMapping { queue, sender }
    }

    /// Receives one batch (waiting up to `wait`), invokes the handler, and
    /// deletes what it finished. Returns how many messages were received.
    pub async fn step(&self, wait: Duration) -> usize {
        let messages = match self.queue.receive(10, wait).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "could not receive from the queue");
                tokio::time::sleep(Duration::from_millis(500)).await;
                return 0;
            }
        };
        if messages.is_empty() {
            return 0;
        }
        let received = messages.len();
        // What the deletes need, kept aside: the bodies move into the event.
        let handles: Vec<(String, String)> = messages
            .iter()
            .map(|m| (m.message_id.clone(), m.receipt_handle.clone()))
            .collect();
        let mut event = SqsEvent::default();
        event.records = messages.into_iter().map(sqs_message).collect();
        let response = webhooks_fn_sender::send_batch(&self.sender, event, None).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let done: Vec<String> = handles
            .into_iter()
            .filter(|(id, _)| !failed.contains(&id.as_str()))
            .map(|(_, receipt)| receipt)
            .collect();
        if !done.is_empty() {
            if let Err(e) = self.queue.delete_batch(&done).await {
                tracing::warn!(error = %e, "could not delete finished messages; they will be seen again");
            }
        }
        received
    }

    /// Runs `pollers` concurrent pollers until `stop` turns true; each lets
    /// its in-flight batch finish before it stops. The sender's figures
    /// kept in the process are written when a poller finds the queue
    /// empty, and when the pollers stop.
    pub async fn run(self, pollers: usize, stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let tasks: Vec<_> = (0..pollers.max(1))
            .map(|_| {
                let this = this.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        if this.step(Duration::from_millis(500)).await == 0 {
                            this.sender.flush_stats().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        this.sender.flush_stats().await;
    }
}

/// The message as Lambda's event source mapping passes it.
fn sqs_message(m: ReceivedMessage) -> SqsMessage {
    let mut msg = SqsMessage::default();
    msg.message_id = Some(m.message_id);
    msg.receipt_handle = Some(m.receipt_handle);
    msg.body = Some(m.body);
    msg.event_source = Some("aws:sqs".to_string());
    msg.attributes.insert(
        "ApproximateReceiveCount".to_string(),
        m.receive_count.to_string(),
    );
    if let Some(tenant) = m.tenant {
        msg.attributes.insert("MessageGroupId".to_string(), tenant);
    }
    // As Lambda passes it: when the queue took the message, epoch ms.
    if let Some(age) = m.age {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let sent = chrono::Utc::now().timestamp_millis().saturating_sub(age_ms);
        msg.attributes
            .insert("SentTimestamp".to_string(), sent.to_string());
    }
    msg
}
