//! DynamoDB stream records in the shape Lambda hands them to the fan-out:
//! read from a real stream (for `webhooks dev --backend aws` and tests), or
//! made from an event (for the embedded backend).

use crate::error::{backend_error, decode_error};
use crate::items::EventItem;
use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord};
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use std::collections::HashMap;
use webhooks_domain::Event;
use webhooks_ports::BackendError;

/// A Lambda-shaped INSERT record for `event`, as the events table's stream
/// would deliver it (for the embedded backend, whose store keeps events
/// as they are: the image holds `data` as text, never deflated).
pub fn insert_record(event: &Event, sequence_number: u64) -> Result<EventRecord, BackendError> {
    let image: serde_dynamo::Item =
        serde_dynamo::to_item(EventItem::from_event_with_text_data(event))
            .map_err(|e| decode_error("event", e))?;
    let keys: serde_dynamo::Item = serde_dynamo::to_item(HashMap::from([
        ("org_id", event.org_id.as_str()),
        ("event_id", event.id.as_str()),
    ]))
    .map_err(|e| decode_error("event", e))?;
    let mut change = StreamRecord::default();
    change.approximate_creation_date_time = event.created_at;
    change.keys = keys;
    change.new_image = image;
    change.sequence_number = Some(format!("{sequence_number:021}"));
    let mut record = EventRecord::default();
    record.aws_region = "local".to_string();
    record.change = change;
    record.event_id = format!("local-{sequence_number}");
    record.event_name = "INSERT".to_string();
    record.event_source = Some("aws:dynamodb".to_string());
    record.event_version = Some("1.1".to_string());
    Ok(record)
}

/// Reads a table's DynamoDB stream shard by shard, as the Lambda event
/// source mapping does, and hands out Lambda-shaped records.
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    iterators: HashMap<String, Option<String>>,
    start: ShardIteratorType,
}

impl StreamReader {
    /// Opens the stream of `table`, reading from its start (`TRIM_HORIZON`)
    /// or only what comes next (`LATEST`).
    pub async fn open(
        ddb: &aws_sdk_dynamodb::Client,
        client: aws_sdk_dynamodbstreams::Client,
        table: &str,
        from_start: bool,
    ) -> Result<Self, BackendError> {
        let stream_arn = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| backend_error("DescribeTable", e))?
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| BackendError::Permanent(format!("table {table} has no stream")))?;
        let start = if from_start {
            ShardIteratorType::TrimHorizon
        } else {
            ShardIteratorType::Latest
        };
        let mut reader = StreamReader {
            client,
            stream_arn,
            iterators: HashMap::new(),
            start,
        };
        reader.refresh_shards().await?;
        Ok(reader)
    }

    async fn refresh_shards(&mut self) -> Result<(), BackendError> {
        let desc = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(|e| backend_error("DescribeStream", e))?;
        let shards = desc
            .stream_description
            .and_then(|d| d.shards)
            .unwrap_or_default();
        for shard in shards {
            let Some(id) = shard.shard_id else { continue };
            if self.iterators.contains_key(&id) {
                continue;
            }
            let it = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&id)
                .shard_iterator_type(self.start.clone())
                .send()
                .await
                .map_err(|e| backend_error("GetShardIterator", e))?
                .shard_iterator;
            self.iterators.insert(id, it);
        }
        Ok(())
    }

    /// The next records of every shard (possibly none).
    pub async fn poll(&mut self) -> Result<Vec<EventRecord>, BackendError> {
        self.refresh_shards().await?;
        let mut out = Vec::new();
        let ids: Vec<String> = self.iterators.keys().cloned().collect();
        for id in ids {
            let Some(Some(iterator)) = self.iterators.get(&id).cloned() else {
                continue;
            };
            let resp = match self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(100)
                .send()
                .await
            {
                Ok(r) => r,
                // Keep what other shards gave; this shard is read again next
                // time from the same iterator.
                Err(e) if !out.is_empty() => {
                    tracing::warn!(shard = %id, error = %backend_error("GetRecords", e), "stream read failed");
                    continue;
                }
                Err(e) => return Err(backend_error("GetRecords", e)),
            };
            self.iterators.insert(id, resp.next_shard_iterator);
            for r in resp.records.unwrap_or_default() {
                out.push(self.to_lambda(r));
            }
        }
        Ok(out)
    }

    fn to_lambda(&self, r: aws_sdk_dynamodbstreams::types::Record) -> EventRecord {
        let mut record = EventRecord::default();
        record.event_id = r.event_id.unwrap_or_default();
        record.event_name = match r.event_name {
            Some(OperationType::Insert) => "INSERT",
            Some(OperationType::Modify) => "MODIFY",
            Some(OperationType::Remove) => "REMOVE",
            _ => "UNKNOWN",
        }
        .to_string();
        record.event_source = Some("aws:dynamodb".to_string());
        record.event_version = r.event_version;
        record.aws_region = r.aws_region.unwrap_or_default();
        record.event_source_arn = Some(self.stream_arn.clone());
        if let Some(s) = r.dynamodb {
            let mut change = StreamRecord::default();
            if let Some(k) = s.keys {
                change.keys = serde_dynamo::Item::from(k);
            }
            if let Some(img) = s.new_image {
                change.new_image = serde_dynamo::Item::from(img);
            }
            change.sequence_number = s.sequence_number;
            change.size_bytes = s.size_bytes.unwrap_or(0);
            record.change = change;
        }
        record
    }
}
