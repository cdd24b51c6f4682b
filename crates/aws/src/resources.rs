//! The tables, queues and KMS key the system needs, as `webhooks dev
//! --backend aws --create-resources` makes them. Keys, streams, TTLs and
//! redrive match `infra/template.yaml`; a test compares the two.

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
    /// A global secondary index, keys only.
    pub index: Option<IndexSpec>,
}

/// A global secondary index that projects only the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: &'static str,
}

/// The deliveries' sparse index of pending deliveries by org and next
/// attempt ([`crate::deliveries::PENDING_INDEX`]).
pub const PENDING_INDEX: IndexSpec = IndexSpec {
    name: crate::deliveries::PENDING_INDEX,
    hash_key: "org_id",
    range_key: "next_attempt_at",
};

/// Every table.
pub const TABLES: [TableSpec; 7] = [
    TableSpec {
        name: "events",
        hash_key: "org_id",
        range_key: Some("event_id"),
        stream: true,
        ttl_attribute: Some("expires_at"),
        index: None,
    },
    TableSpec {
        name: "endpoints",
        hash_key: "org_id",
        range_key: Some("endpoint_id"),
        stream: false,
        ttl_attribute: None,
        index: None,
    },
    TableSpec {
        name: "deliveries",
        hash_key: "endpoint_id",
        range_key: Some("event_id"),
        stream: false,
        ttl_attribute: Some("expires_at"),
        index: Some(PENDING_INDEX),
    },
    TableSpec {
        name: "cursors",
        hash_key: "org_id",
        range_key: None,
        stream: false,
        ttl_attribute: None,
        index: None,
    },
    TableSpec {
        name: "idempotency",
        hash_key: "key",
        range_key: None,
        stream: false,
        ttl_attribute: Some("expires_at"),
        index: None,
    },
    TableSpec {
        name: "inbound",
        hash_key: "pk",
        range_key: Some("sk"),
        stream: false,
        ttl_attribute: Some("expires_at"),
        index: None,
    },
    TableSpec {
        name: "stats",
        hash_key: "endpoint_id",
        range_key: Some("hour"),
        stream: false,
        ttl_attribute: Some("expires_at"),
        index: None,
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

    /// The alias of the KMS key that seals endpoint secrets.
    pub fn endpoint_secrets_key_alias(&self) -> String {
        format!("alias/{}-endpoint-secrets", self.prefix)
    }
}

/// The URLs of the queues, once they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub delivery: String,
    pub dead_letter: String,
}

/// What the adapters are built on besides the tables, once it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub queues: QueueUrls,
    /// The ARN of the KMS key whose data keys seal endpoint secrets.
    pub endpoint_secrets_key: String,
}

/// Creates every table, queue and key that does not exist yet.
pub async fn create_all(
    clients: &crate::AwsClients,
    names: &ResourceNames,
) -> Result<Provisioned, BackendError> {
    for spec in TABLES {
        create_table(&clients.dynamodb, &names.table(spec.name), &spec).await?;
    }
    let queues = create_queues(&clients.sqs, names).await?;
    let endpoint_secrets_key = match find_key(&clients.kms, names).await? {
        Some(arn) => arn,
        None => create_key(&clients.kms, names).await?,
    };
    Ok(Provisioned {
        queues,
        endpoint_secrets_key,
    })
}

/// The queues and key of resources that already exist.
pub async fn find_all(
    clients: &crate::AwsClients,
    names: &ResourceNames,
) -> Result<Provisioned, BackendError> {
    let queues = queue_urls(&clients.sqs, names).await?;
    let endpoint_secrets_key = find_key(&clients.kms, names).await?.ok_or_else(|| {
        BackendError::Permanent(format!(
            "KMS key {} does not exist",
            names.endpoint_secrets_key_alias()
        ))
    })?;
    Ok(Provisioned {
        queues,
        endpoint_secrets_key,
    })
}

/// The ARN of the key behind the endpoint secrets' alias, if there is one.
async fn find_key(
    kms: &aws_sdk_kms::Client,
    names: &ResourceNames,
) -> Result<Option<String>, BackendError> {
    match kms
        .describe_key()
        .key_id(names.endpoint_secrets_key_alias())
        .send()
        .await
    {
        Ok(out) => Ok(out.key_metadata.and_then(|m| m.arn)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(backend_error("DescribeKey", e)),
    }
}

/// A symmetric customer-managed key, as the template's
/// `EndpointSecretsKey`, under the endpoint secrets' alias.
async fn create_key(
    kms: &aws_sdk_kms::Client,
    names: &ResourceNames,
) -> Result<String, BackendError> {
    let arn = kms
        .create_key()
        .description(format!("{} endpoint signing secrets", names.prefix))
        .send()
        .await
        .map_err(|e| backend_error("CreateKey", e))?
        .key_metadata
        .and_then(|m| m.arn)
        .ok_or_else(|| BackendError::Permanent("CreateKey returned no key".into()))?;
    kms.create_alias()
        .alias_name(names.endpoint_secrets_key_alias())
        .target_key_id(&arn)
        .send()
        .await
        .map_err(|e| backend_error("CreateAlias", e))?;
    Ok(arn)
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
    if let Some(index) = spec.index {
        let keys_only = aws_sdk_dynamodb::types::Projection::builder()
            .projection_type(aws_sdk_dynamodb::types::ProjectionType::KeysOnly)
            .build();
        let gsi = aws_sdk_dynamodb::types::GlobalSecondaryIndex::builder()
            .index_name(index.name)
            .key_schema(key(index.hash_key, KeyType::Hash)?)
            .key_schema(key(index.range_key, KeyType::Range)?)
            .projection(keys_only)
            .build()
            .map_err(|e| BackendError::Permanent(e.to_string()))?;
        for name in [index.hash_key, index.range_key] {
            if name != spec.hash_key && Some(name) != spec.range_key {
                req = req.attribute_definitions(attr(name)?);
            }
        }
        req = req.global_secondary_indexes(gsi);
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
