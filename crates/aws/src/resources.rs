//! The tables and queues the system needs, as `webhooks dev --backend aws
//! --create-resources` makes them. Keys, streams, TTLs and redrive match
//! `infra/template.yaml`; a test compares the two.

use crate::error::backend_error;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use webhooks_ports::BackendError;

/// One table: name suffix, hash key, optional range key, stream, TTL attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// The logical name (`events`, ...); the template's resource is the
    /// capitalised form (`EventsTable`).
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    /// A stream of new images feeds the fan-out.
    pub stream: bool,
    pub ttl_attribute: Option<&'static str>,
}

/// Every table.
pub const TABLES: [TableSpec; 7] = [
    TableSpec {
        name: "events",
        hash_key: "org_id",
        range_key: Some("event_id"),
        stream: true,
        ttl_attribute: Some("expires_at"),
    },
    TableSpec {
        name: "endpoints",
        hash_key: "org_id",
        range_key: Some("endpoint_id"),
        stream: false,
        ttl_attribute: None,
    },
    TableSpec {
        name: "deliveries",
        hash_key: "endpoint_id",
        range_key: Some("event_id"),
        stream: false,
        ttl_attribute: Some("expires_at"),
    },
    TableSpec {
        name: "cursors",
        hash_key: "org_id",
        range_key: None,
        stream: false,
        ttl_attribute: None,
    },
    TableSpec {
        name: "idempotency",
        hash_key: "key",
        range_key: None,
        stream: false,
        ttl_attribute: Some("expires_at"),
    },
    TableSpec {
        name: "inbound",
        hash_key: "pk",
        range_key: Some("sk"),
        stream: false,
        ttl_attribute: Some("expires_at"),
    },
    TableSpec {
        name: "stats",
        hash_key: "endpoint_id",
        range_key: Some("hour"),
        stream: false,
        ttl_attribute: Some("expires_at"),
    },
];

pub use webhooks_ports::queue_settings::{
    DELIVERY_QUEUE_VISIBILITY_SECS, MAX_RECEIVE_COUNT, QUEUE_RETENTION_SECS,
};

/// Physical names of every resource, from a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub prefix: String,
}

impl ResourceNames {
    pub fn new(prefix: &str) -> Self {
        ResourceNames {
            prefix: prefix.to_string(),
        }
    }

    pub fn table(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn delivery_queue(&self) -> String {
        format!("{}-deliveries", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}-deliveries-dlq", self.prefix)
    }
}

/// The URLs of the queues, once they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub delivery: String,
    pub dead_letter: String,
}

/// Creates every table and queue that does not exist yet.
pub async fn create_all(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    names: &ResourceNames,
) -> Result<QueueUrls, BackendError> {
    for spec in TABLES {
        create_table(ddb, &names.table(spec.name), &spec).await?;
    }
    create_queues(sqs, names).await
}

async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    spec: &TableSpec,
) -> Result<(), BackendError> {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| BackendError::Permanent(e.to_string()))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| BackendError::Permanent(e.to_string()))
    };
    let mut req = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(spec.hash_key)?)
        .key_schema(key(spec.hash_key, KeyType::Hash)?);
    if let Some(range) = spec.range_key {
        req = req
            .attribute_definitions(attr(range)?)
            .key_schema(key(range, KeyType::Range)?);
    }
    if spec.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(|e| BackendError::Permanent(e.to_string()))?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(backend_error("CreateTable", e)),
    }
    if let Some(ttl) = spec.ttl_attribute {
        ddb.update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(ttl)
                    .build()
                    .map_err(|e| BackendError::Permanent(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| backend_error("UpdateTimeToLive", e))?;
    }
    Ok(())
}

async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    names: &ResourceNames,
) -> Result<QueueUrls, BackendError> {
    let dead_letter = sqs
        .create_queue()
        .queue_name(names.dead_letter_queue())
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .map_err(|e| backend_error("CreateQueue", e))?
        .queue_url
        .ok_or_else(|| BackendError::Permanent("CreateQueue returned no URL".into()))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dead_letter)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| backend_error("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| BackendError::Permanent("dead-letter queue has no ARN".into()))?;
    let redrive =
        format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{MAX_RECEIVE_COUNT}"}}"#);
    let delivery = sqs
        .create_queue()
        .queue_name(names.delivery_queue())
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            DELIVERY_QUEUE_VISIBILITY_SECS.to_string(),
        )
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .map_err(|e| backend_error("CreateQueue", e))?
        .queue_url
        .ok_or_else(|| BackendError::Permanent("CreateQueue returned no URL".into()))?;
    Ok(QueueUrls {
        delivery,
        dead_letter,
    })
}

/// The URLs of queues that already exist.
pub async fn queue_urls(
    sqs: &aws_sdk_sqs::Client,
    names: &ResourceNames,
) -> Result<QueueUrls, BackendError> {
    let url = |name: String| async move {
        sqs.get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| backend_error("GetQueueUrl", e))?
            .queue_url
            .ok_or_else(|| BackendError::Permanent(format!("queue {name} has no URL")))
    };
    Ok(QueueUrls {
        delivery: url(names.delivery_queue()).await?,
        dead_letter: url(names.dead_letter_queue()).await?,
    })
}
