//! The stats table: each endpoint's hourly delivery figures (key:
//! `endpoint_id`, `hour`), added to with `ADD` so concurrent writers never
//! lose a count; TTL `expires_at`, 35 days after the hour.

use crate::error::backend_error;
use crate::items::s;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use webhooks_domain::stats::{HourBucket, StatsDelta, LATENCY_BINS_MS};
use webhooks_domain::time::{parse_rfc3339, rfc3339};
use webhooks_ports::{EndpointStatsStore, Result};

/// How long a bucket is kept after its hour.
const KEEP_DAYS: i64 = webhooks_ports::table_retention::STATS_DAYS;

const COUNTS: [&str; 4] = ["delivered", "dead_lettered", "pending", "failed_attempts"];

/// Hourly buckets in DynamoDB.
#[derive(Clone)]
pub struct DynamoStatsStore {
    client: Client,
    table: String,
}

impl DynamoStatsStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStatsStore {
            client,
            table: table.into(),
        }
    }
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn bin_attribute(bin: usize) -> String {
    format!("l{bin:02}")
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl EndpointStatsStore for DynamoStatsStore {
    async fn add(&self, endpoint_id: &str, hour: DateTime<Utc>, delta: &StatsDelta) -> Result<()> {
        let values = [
            delta.delivered,
            delta.dead_lettered,
            delta.pending,
            delta.failed_attempts,
        ];
        let mut adds = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("endpoint_id", s(endpoint_id))
            .key("hour", s(&rfc3339(hour)));
        for (name, v) in COUNTS.iter().zip(values) {
            if v != 0 {
                adds.push(format!("{name} :{name}"));
                update = update.expression_attribute_values(format!(":{name}"), n(v));
            }
        }
        // Bins past the last are counted in the last, as the domain does.
        let mut bins = vec![0u64; LATENCY_BINS_MS.len() + 1];
        for (bin, count) in delta.latency.iter().enumerate() {
            bins[bin.min(LATENCY_BINS_MS.len())] += count;
        }
        for (bin, count) in bins.into_iter().enumerate().filter(|(_, c)| *c > 0) {
            let attr = bin_attribute(bin);
            adds.push(format!("{attr} :{attr}"));
            update = update.expression_attribute_values(
                format!(":{attr}"),
                n(i64::try_from(count).unwrap_or(i64::MAX)),
            );
        }
        if adds.is_empty() {
            return Ok(());
        }
        let expires = hour + chrono::Duration::days(KEEP_DAYS);
        update
            .update_expression(format!("ADD {} SET expires_at = :exp", adds.join(", ")))
            .expression_attribute_values(":exp", n(expires.timestamp()))
            .send()
            .await
            .map_err(|e| backend_error("UpdateItem stats", e))?;
        Ok(())
    }

    async fn read(&self, endpoint_id: &str, from_hour: DateTime<Utc>) -> Result<Vec<HourBucket>> {
        let mut buckets = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("endpoint_id = :e AND #h >= :h")
                .expression_attribute_names("#h", "hour")
                .expression_attribute_values(":e", s(endpoint_id))
                .expression_attribute_values(":h", s(&rfc3339(from_hour)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend_error("Query stats", e))?;
            for item in out.items.unwrap_or_default() {
                let Some(hour) = item
                    .get("hour")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|h| parse_rfc3339(h))
                else {
                    continue;
                };
                buckets.push(HourBucket {
                    hour,
                    delivered: number(&item, "delivered"),
                    dead_lettered: number(&item, "dead_lettered"),
                    pending: number(&item, "pending"),
                    failed_attempts: number(&item, "failed_attempts"),
                    latency: (0..=LATENCY_BINS_MS.len())
                        .map(|b| u64::try_from(number(&item, &bin_attribute(b))).unwrap_or(0))
                        .collect(),
                });
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(buckets),
            }
        }
    }
}
