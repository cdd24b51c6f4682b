//! Lambda `sender`: triggered by the delivery queue (SQS) with
//! `ReportBatchItemFailures`. Each message of the batch is delivered
//! concurrently; the ones to try again later are reported as failures (their
//! visibility has already been set to the retry delay).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Error, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use webhooks_aws::env::{self, EnvError};
use webhooks_domain::retry::parse_duration;
use webhooks_domain::RetrySchedule;
use webhooks_pipeline::{
    DeliveryClient, DeliveryClientConfig, MessageOutcome, Ops, OpsEndpoint, OpsNotifier, Sender,
    SenderConfig,
};
use webhooks_ports::{Adapters, ReceivedMessage};

/// Handles one batch of queue messages.
pub async fn handle(
    sender: &Sender,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let budget = remaining(
        event.context.deadline,
        chrono::Utc::now().timestamp_millis(),
    );
    Ok(send_batch(sender, event.payload, budget).await)
}

/// The invocation's time left, from its deadline in milliseconds since the
/// epoch (`None` when the context carries none): whatever request timeout
/// is configured, no POST outlives it.
pub fn remaining(deadline_ms: u64, now_ms: i64) -> Option<Duration> {
    let now = u64::try_from(now_ms).unwrap_or(0);
    (deadline_ms > 0).then(|| Duration::from_millis(deadline_ms.saturating_sub(now)))
}

/// The handler's work, callable without a Lambda context; `budget` is the
/// invocation's remaining time.
pub async fn send_batch(
    sender: &Sender,
    batch: SqsEvent,
    budget: Option<Duration>,
) -> SqsBatchResponse {
    let messages: Vec<ReceivedMessage> = batch.records.into_iter().map(received).collect();
    let outcomes = sender.process_batch_within(&messages, budget).await;
    let mut response = SqsBatchResponse::default();
    for (message, outcome) in messages.iter().zip(outcomes) {
        if outcome == MessageOutcome::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message.message_id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The message as the sender reads it, its strings moved, not copied (the
/// body is the whole payload).
fn received(mut m: SqsMessage) -> ReceivedMessage {
    ReceivedMessage {
        message_id: m.message_id.take().unwrap_or_default(),
        body: m.body.take().unwrap_or_default(),
        // A fair queue's tenant, as Lambda passes it.
        tenant: m.attributes.remove("MessageGroupId"),
        receipt_handle: m.receipt_handle.take().unwrap_or_default(),
        receive_count: m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        age: m
            .attributes
            .get("SentTimestamp")
            .and_then(|v| webhooks_ports::queue_limits::age_of_sent_timestamp(v)),
    }
}

/// The sender over `adapters`, configured from the environment.
pub fn from_env(adapters: &Adapters) -> Result<Sender, Error> {
    let (schedule, request_timeout) = settings_from_env()?;
    let client = DeliveryClient::new(DeliveryClientConfig {
        request_timeout,
        ..DeliveryClientConfig::default()
    })?;
    let config = SenderConfig {
        schedule,
        // The lease outlasts any one attempt, however long its timeout.
        lease: SenderConfig::default().lease.max(request_timeout * 2),
        ..SenderConfig::default()
    };
    Ok(Sender::from_adapters(adapters, client, config))
}

/// Operational notifications as the environment configures them: the
/// operator's webhook (`WEBHOOKS_OPS_WEBHOOK_URL`, and the ARN of its
/// secret in Secrets Manager, `WEBHOOKS_OPS_WEBHOOK_SECRET_ARN`, fetched
/// here at start: both or neither) and the EventBridge bus
/// (`WEBHOOKS_OPS_EVENT_BUS`), each optional.
pub async fn ops_from_env(
    adapters: &Adapters,
    aws: &webhooks_aws::SdkConfig,
) -> Result<Ops, EnvError> {
    let secrets = webhooks_aws::runtime_secret::SecretsManager::from_config(aws);
    const ARN: &str = "WEBHOOKS_OPS_WEBHOOK_SECRET_ARN";
    let endpoint = match (
        env::optional("WEBHOOKS_OPS_WEBHOOK_URL"),
        env::optional("WEBHOOKS_OPS_WEBHOOK_SECRET_ARN"),
    ) {
        (Some(url), Some(arn)) => {
            let value = secrets
                .secret(arn)
                .current()
                .await
                .map_err(|e| EnvError(format!("{ARN}: {e}")))?;
            Some(OpsEndpoint {
                url,
                secret: webhooks_domain::Secret::parse(value.trim())
                    .map_err(|e| EnvError(format!("{ARN}: {e}")))?,
            })
        }
        (Some(_), None) => {
            return Err(EnvError(format!(
                "WEBHOOKS_OPS_WEBHOOK_URL is set but {ARN} is not"
            )))
        }
        (None, _) => None,
    };
    let bus = env::optional("WEBHOOKS_OPS_EVENT_BUS").map(|name| {
        Arc::new(webhooks_aws::EventBridgeOpsBus::with_config(aws, name))
            as Arc<dyn webhooks_ports::OpsBus>
    });
    let queue = endpoint.as_ref().map(|_| adapters.queue.clone());
    Ok(Ops {
        notifier: OpsNotifier::new(queue, bus),
        endpoint,
    })
}

/// The sender's settings from `WEBHOOKS_RETRY_SCHEDULE` (e.g. `1s,2s,4s`)
/// and `WEBHOOKS_REQUEST_TIMEOUT` (e.g. `15s`), with the contract's defaults.
pub fn settings_from_env() -> Result<(RetrySchedule, Duration), EnvError> {
    let schedule = match env::optional("WEBHOOKS_RETRY_SCHEDULE") {
        Some(s) => s
            .parse()
            .map_err(|e| EnvError(format!("WEBHOOKS_RETRY_SCHEDULE: {e}")))?,
        None => RetrySchedule::default(),
    };
    webhooks_ports::queue_settings::check_schedule(&schedule)
        .map_err(|e| EnvError(format!("WEBHOOKS_RETRY_SCHEDULE: {e}")))?;
    let timeout = match env::optional("WEBHOOKS_REQUEST_TIMEOUT") {
        Some(s) => {
            parse_duration(&s).map_err(|e| EnvError(format!("WEBHOOKS_REQUEST_TIMEOUT: {e}")))?
        }
        None => Duration::from_secs(15),
    };
    Ok((schedule, timeout))
}
