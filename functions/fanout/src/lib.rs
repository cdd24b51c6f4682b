//! Lambda `fanout`: triggered by the DynamoDB stream of the events table.
//! Translates stream records into events and reports the first record that
//! could not be fanned out, so Lambda retries from there.

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent};
use webhooks_pipeline::FanOut;

/// Handles one batch of stream records.
pub async fn handle(
    fanout: &FanOut,
    event: LambdaEvent<StreamEvent>,
) -> Result<DynamoDbEventResponse, Error> {
    let lag = lag_ms(&event.payload, chrono::Utc::now());
    let response = fan_out_records(fanout, event.payload).await;
    // The fan-out's lag behind the events table: its oldest record's wait
    // from the write to this batch (CloudWatch EMF, no dimension).
    if let Some(ms) = lag {
        println!(
            "{}",
            webhooks_pipeline::metrics::emf(&[], &[("FanoutLag", "Milliseconds", ms)])
        );
    }
    Ok(response)
}

/// How long the batch's oldest record waited since its write; `None` for
/// an empty batch.
pub fn lag_ms(batch: &StreamEvent, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    batch
        .records
        .iter()
        .map(|r| r.change.approximate_creation_date_time)
        .min()
        .map(|oldest| u64::try_from((now - oldest).num_milliseconds()).unwrap_or(0))
}

/// The handler's work, callable without a Lambda context.
pub async fn fan_out_records(fanout: &FanOut, batch: StreamEvent) -> DynamoDbEventResponse {
    let records = batch.records.len();
    let mut events = Vec::with_capacity(records);
    // The sequence number of each event's record, to name a failure.
    let mut sequence_of_event = Vec::with_capacity(records);
    for record in batch.records {
        if record.event_name != "INSERT" {
            continue;
        }
        let sequence_number = record.change.sequence_number;
        // The image moves into the event: each record is read once.
        match webhooks_aws::items::event_from_item(record.change.new_image) {
            Ok(e) => {
                events.push(e);
                sequence_of_event.push(sequence_number);
            }
            // A record that can never be processed must not block the
            // stream: log it with its id and move on.
            Err(e) => tracing::error!(
                stream_event_id = %record.event_id,
                sequence_number = sequence_number.as_deref().unwrap_or(""),
                error = %e,
                "skipped a malformed stream record"
            ),
        }
    }
    let report = fanout.fan_out(&events).await;
    tracing::info!(
        records,
        events = events.len(),
        created = report.created,
        existing = report.existing,
        enqueued = report.enqueued,
        "fan-out batch"
    );
    let mut response = DynamoDbEventResponse::default();
    if let Some(k) = report.first_failure {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = sequence_of_event.get(k).cloned().flatten();
        response.batch_item_failures.push(failure);
    }
    response
}
