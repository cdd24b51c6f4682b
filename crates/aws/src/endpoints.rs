//! The endpoints table.

use crate::envelope::{EnvelopeCipher, EnvelopeError};
use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::{
    endpoint_aad, s, EndpointItem, EndpointSecrets, EndpointSummaryItem, StoredSecrets,
    SubscriberItem,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::time::rfc3339;
use webhooks_domain::{Endpoint, EndpointSummary, Subscriber};
use webhooks_ports::{
    cursor, BackendError, Created, EndpointHealth, EndpointLookup, EndpointStore, OrgEndpoints,
    Page, Result, Updated,
};

/// The sort key of an org's endpoint counter: one item beside the org's
/// endpoints in their partition, which no endpoint id (`ep_...`) can be.
/// It holds `endpoint_count` (absent until the org's endpoints were first
/// counted) and `count_version`, moved by every write of the counter.
const COUNTER_KEY: &str = "#endpoint-count";

/// What every endpoint id starts with: the listings read only these keys,
/// never the counter.
const ENDPOINT_KEY_PREFIX: &str = "ep_";

/// Transactions one create or delete tries before an org whose count keeps
/// changing under it is answered with a transient error.
const COUNT_ROUNDS: u32 = 6;

/// The `ClientRequestToken` of a transaction: DynamoDB takes at most 36
/// characters. It makes the SDK's own retry of a create that committed
/// answer success instead of finding the endpoint already there.
fn request_token(endpoint_id: &str, round: u32, kind: char) -> Option<String> {
    Some(format!("{endpoint_id}.{kind}{round}")).filter(|t| t.len() <= 36)
}

/// A write of the org's counter item for a transaction: `set` (a `SET`
/// clause, if any) if `condition` holds, moving its `count_version`.
/// `#n` names `endpoint_count`, `#v` `count_version`, `:one` is 1.
fn counter_update(
    table: &str,
    org_id: &str,
    set: Option<&str>,
    condition: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<Update> {
    let expression = match set {
        Some(set) => format!("{set} ADD #v :one"),
        None => "ADD #v :one".to_string(),
    };
    let mut u = Update::builder()
        .table_name(table)
        .key("org_id", s(org_id))
        .key("endpoint_id", s(COUNTER_KEY))
        .update_expression(expression)
        .condition_expression(condition)
        .expression_attribute_names("#n", "endpoint_count")
        .expression_attribute_names("#v", "count_version")
        .expression_attribute_values(":one", number(1));
    for (k, v) in values {
        u = u.expression_attribute_values(k, v);
    }
    u.build().map_err(build_error)
}

fn number(n: u32) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn build_error(e: aws_smithy_types::error::operation::BuildError) -> BackendError {
    BackendError::Permanent(format!("TransactWriteItems endpoints: {e}"))
}

/// A pause before the next round after a conflicting transaction, a little
/// longer each round, jittered so that two racing writers part.
async fn back_off(round: u32) {
    let millis = 10 * u64::from(round + 1) + rand::random_range(0..20u64);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// The refusal of an item whose secrets are stored as they were before
/// sealing with the endpoint's version; names the item, never a secret.
fn needs_migration(item: &EndpointItem, how: &str) -> BackendError {
    BackendError::Permanent(format!(
        "endpoint {} of org {}: its signing secrets {how}, and are not used until \
         `webhooks migrate seal-secrets` seals them (README: Endpoint secrets at rest)",
        item.endpoint_id, item.org_id
    ))
}

/// Whether an id names the counter item rather than an endpoint.
fn is_counter(endpoint_id: &str) -> bool {
    endpoint_id == COUNTER_KEY
}

/// What a transaction of an org's counter and one of its endpoints did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    Written,
    /// Cancelled by a failed condition: the counter's, the endpoint's, or both.
    Refused {
        counter: bool,
        endpoint: bool,
    },
    /// Cancelled because another transaction had one of its items in flight.
    Conflict,
}

/// The org's counter as read.
struct Counter {
    /// `None` until the org's endpoints were first counted.
    count: Option<u32>,
    /// Its `count_version` as stored (`None`: never written).
    version: Option<AttributeValue>,
}

/// Endpoints in DynamoDB (key: `org_id`, `endpoint_id`), their signing
/// secrets sealed under data keys of a KMS key (`crate::envelope`).
#[derive(Clone)]
pub struct DynamoEndpointStore {
    client: Client,
    table: String,
    cipher: Arc<EnvelopeCipher>,
}

impl DynamoEndpointStore {
    pub fn new(client: Client, table: impl Into<String>, cipher: Arc<EnvelopeCipher>) -> Self {
        DynamoEndpointStore {
            client,
            table: table.into(),
            cipher,
        }
    }

    /// The item of an endpoint at `e.version`, its secrets sealed for it.
    async fn seal_item(&self, e: &Endpoint) -> Result<HashMap<String, AttributeValue>> {
        let secrets = serde_json::to_vec(&EndpointSecrets::of(e))
            .map_err(|e| decode_error("endpoint secrets", e))?;
        let sealed = self
            .cipher
            .seal(&secrets, &endpoint_aad(&e.org_id, &e.id, e.version))
            .await?;
        serde_dynamo::to_item(EndpointItem::from_endpoint(e, sealed))
            .map_err(|e| decode_error("endpoint", e))
    }

    /// The endpoint of an item, its secrets opened. Secrets in plaintext,
    /// or sealed without the endpoint version, are refused, never used:
    /// the error names the endpoint and the command that seals them.
    async fn open_item(&self, item: HashMap<String, AttributeValue>) -> Result<Endpoint> {
        let item: EndpointItem =
            serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
        let secrets = match item.stored_secrets()? {
            // Sealed at a version the endpoint never reached: not its seal.
            StoredSecrets::Sealed { version, .. } if version > item.version => {
                return Err(EnvelopeError::Tampered.into())
            }
            StoredSecrets::Sealed { sealed, version } => {
                let aad = endpoint_aad(&item.org_id, &item.endpoint_id, version);
                let json = self.cipher.open(&sealed, &aad).await?;
                serde_json::from_slice(&json).map_err(|e| decode_error("endpoint secrets", e))?
            }
            StoredSecrets::SealedUnversioned(_) => {
                return Err(needs_migration(&item, "are sealed without its version"))
            }
            StoredSecrets::Plain(_) => return Err(needs_migration(&item, "are in plaintext")),
        };
        item.into_endpoint(secrets)
    }

    /// A page of the org's items, oldest first; only the `projection`
    /// attributes when given.
    async fn query_items(
        &self,
        org_id: &str,
        limit: Option<usize>,
        start_after: Option<&str>,
        projection: Option<&[&str]>,
    ) -> Result<(
        Vec<HashMap<String, AttributeValue>>,
        Option<HashMap<String, AttributeValue>>,
    )> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :o AND begins_with(#sk, :ep)")
            .expression_attribute_names("#pk", "org_id")
            .expression_attribute_names("#sk", "endpoint_id")
            .expression_attribute_values(":o", s(org_id))
            .expression_attribute_values(":ep", s(ENDPOINT_KEY_PREFIX))
            .consistent_read(true);
        if let Some(attributes) = projection {
            let mut names = Vec::with_capacity(attributes.len());
            for (i, a) in attributes.iter().enumerate() {
                let name = format!("#p{i}");
                q = q.expression_attribute_names(&name, *a);
                names.push(name);
            }
            q = q.projection_expression(names.join(", "));
        }
        if let Some(l) = limit {
            q = q.limit(i32::try_from(l).unwrap_or(i32::MAX));
        }
        if let Some(after) = start_after {
            q = q
                .exclusive_start_key("org_id", s(org_id))
                .exclusive_start_key("endpoint_id", s(after));
        }
        let out = q
            .send()
            .await
            .map_err(|e| backend_error("Query endpoints", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// An attribute-level write of the sender's (health), which touches only
    /// the attributes it names and bumps the version, so a concurrent
    /// read-modify-write of the API notices it; a no-op when `condition`
    /// (beyond existence) does not hold.
    async fn update_existing(
        &self,
        org_id: &str,
        endpoint_id: &str,
        expression: &str,
        condition: Option<&str>,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool> {
        if is_counter(endpoint_id) {
            return Ok(false);
        }
        let condition = match condition {
            Some(c) => format!("attribute_exists(endpoint_id) AND {c}"),
            None => "attribute_exists(endpoint_id)".to_string(),
        };
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .update_expression(format!("{expression} ADD version :one"))
            .condition_expression(condition)
            .expression_attribute_values(":one", AttributeValue::N("1".into()));
        for (k, v) in values {
            u = u.expression_attribute_values(k, v);
        }
        match u.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem endpoints", e)),
        }
    }

    /// One transaction: a write of the org's counter, then one of an
    /// endpoint item, both or neither.
    async fn transact(
        &self,
        counter: TransactWriteItem,
        endpoint: TransactWriteItem,
        token: Option<String>,
    ) -> Result<Transaction> {
        let Err(e) = self
            .client
            .transact_write_items()
            .transact_items(counter)
            .transact_items(endpoint)
            .set_client_request_token(token)
            .send()
            .await
        else {
            return Ok(Transaction::Written);
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
        {
            let codes: Vec<&str> = c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            let failed = |i: usize| codes.get(i) == Some(&"ConditionalCheckFailed");
            if failed(0) || failed(1) {
                return Ok(Transaction::Refused {
                    counter: failed(0),
                    endpoint: failed(1),
                });
            }
            if codes.contains(&"TransactionConflict") {
                return Ok(Transaction::Conflict);
            }
            if codes.iter().any(|c| {
                matches!(
                    *c,
                    "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
                )
            }) {
                return Err(BackendError::Transient(format!(
                    "TransactWriteItems endpoints: cancelled ({})",
                    codes.join(", ")
                )));
            }
        }
        Err(backend_error("TransactWriteItems endpoints", e))
    }

    /// The org's counter item, read consistently.
    async fn read_counter(&self, org_id: &str) -> Result<Counter> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(COUNTER_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem endpoint count", e))?;
        let mut item = out.item.unwrap_or_default();
        let count = match item.get("endpoint_count") {
            Some(AttributeValue::N(n)) => {
                let n: i64 = n.parse().map_err(|e| decode_error("endpoint count", e))?;
                Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
            }
            Some(_) => return Err(decode_error("endpoint count", "not a number")),
            None => None,
        };
        Ok(Counter {
            count,
            version: item.remove("count_version"),
        })
    }

    /// How many endpoints the org has, counting no further than `up_to`:
    /// a consistent `Query` with `Select=COUNT`, `Limit` the rest to count.
    async fn count_endpoints(&self, org_id: &str, up_to: u32) -> Result<u32> {
        let mut counted = 0u32;
        let mut start = None;
        while counted < up_to {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :o AND begins_with(#sk, :ep)")
                .expression_attribute_names("#pk", "org_id")
                .expression_attribute_names("#sk", "endpoint_id")
                .expression_attribute_values(":o", s(org_id))
                .expression_attribute_values(":ep", s(ENDPOINT_KEY_PREFIX))
                .select(Select::Count)
                .limit(i32::try_from(up_to - counted).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| backend_error("Query endpoints (count)", e))?;
            counted = counted.saturating_add(u32::try_from(out.count).unwrap_or(0));
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(counted)
    }
}

#[async_trait]
impl EndpointLookup for DynamoEndpointStore {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>> {
        if is_counter(endpoint_id) {
            return Ok(None);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem endpoints", e))?;
        match out.item {
            Some(item) => Ok(Some(self.open_item(item).await?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl OrgEndpoints for DynamoEndpointStore {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>> {
        let mut all = Vec::new();
        let mut start: Option<String> = None;
        loop {
            // Projected: the fan-out's reads never carry a secret.
            let (items, lek) = self
                .query_items(
                    org_id,
                    None,
                    start.as_deref(),
                    Some(&SubscriberItem::ATTRIBUTES),
                )
                .await?;
            for item in items {
                let item: SubscriberItem =
                    serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
                all.push(item.into_subscriber()?);
            }
            match lek.and_then(|k| k.get("endpoint_id").and_then(|v| v.as_s().ok().cloned())) {
                Some(next) => start = Some(next),
                None => return Ok(all),
            }
        }
    }
}

#[async_trait]
impl EndpointHealth for DynamoEndpointStore {
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool> {
        // Only the write that finds it enabled turns it off (and says so).
        self.update_existing(
            org_id,
            endpoint_id,
            "SET enabled = :f, disabled_reason = :r, updated_at = :u",
            Some("enabled = :t"),
            vec![
                (":t", AttributeValue::Bool(true)),
                (":f", AttributeValue::Bool(false)),
                (":r", s(reason)),
                (":u", s(&rfc3339(Utc::now()))),
            ],
        )
        .await
    }

    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let changed = match since {
            Some(t) => {
                self.update_existing(
                    org_id,
                    endpoint_id,
                    "SET failing_since = :t",
                    Some("attribute_not_exists(failing_since)"),
                    vec![(":t", s(&rfc3339(t)))],
                )
                .await
            }
            None => {
                self.update_existing(
                    org_id,
                    endpoint_id,
                    "REMOVE failing_since",
                    Some("attribute_exists(failing_since)"),
                    vec![],
                )
                .await
            }
        };
        changed.map(|_| ())
    }
}

#[async_trait]
impl EndpointStore for DynamoEndpointStore {
    /// One transaction adds the endpoint and one to the org's counter,
    /// conditional on the counter being under the limit. An org whose
    /// endpoints were never counted (made before the counter) is counted
    /// first, and that count written only if the counter did not move since
    /// it was read.
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created> {
        let org_id = endpoint.org_id.as_str();
        let item = self.seal_item(endpoint).await?;
        let put = || -> Result<Put> {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(endpoint_id)")
                .build()
                .map_err(build_error)
        };
        let exists = || BackendError::Permanent(format!("endpoint {} exists", endpoint.id));
        for round in 0..COUNT_ROUNDS {
            let one_more = counter_update(
                &self.table,
                org_id,
                Some("SET #n = #n + :one"),
                "attribute_exists(#n) AND #n < :max",
                vec![(":max", number(max_per_org))],
            )?;
            match self
                .transact(
                    TransactWriteItem::builder().update(one_more).build(),
                    TransactWriteItem::builder().put(put()?).build(),
                    request_token(&endpoint.id, round, 'c'),
                )
                .await?
            {
                Transaction::Written => return Ok(Created::Written),
                Transaction::Refused { endpoint: true, .. } => return Err(exists()),
                Transaction::Refused { .. } => {}
                Transaction::Conflict => {
                    back_off(round).await;
                    continue;
                }
            }
            // The counter refused: the org is at its limit, or was never counted.
            let counter = self.read_counter(org_id).await?;
            match counter.count {
                // A delete made room since.
                Some(count) if count < max_per_org => continue,
                Some(_) => return Ok(Created::LimitReached),
                None => {}
            }
            let count = self.count_endpoints(org_id, max_per_org).await?;
            if count >= max_per_org {
                return Ok(Created::LimitReached);
            }
            // A delete since the read moved the version: this count is stale.
            let (condition, mut values) = match counter.version {
                Some(seen) => ("#v = :seen", vec![(":seen", seen)]),
                None => ("attribute_not_exists(#v)", Vec::new()),
            };
            values.push((":n", number(count + 1)));
            let first =
                counter_update(&self.table, org_id, Some("SET #n = :n"), condition, values)?;
            match self
                .transact(
                    TransactWriteItem::builder().update(first).build(),
                    TransactWriteItem::builder().put(put()?).build(),
                    request_token(&endpoint.id, round, 'f'),
                )
                .await?
            {
                Transaction::Written => return Ok(Created::Written),
                Transaction::Refused { endpoint: true, .. } => return Err(exists()),
                Transaction::Refused { .. } => {}
                Transaction::Conflict => back_off(round).await,
            }
        }
        Err(BackendError::Transient(format!(
            "TransactWriteItems endpoints: the endpoint count of org {org_id} kept changing"
        )))
    }

    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>> {
        let after = match cursor {
            Some(c) => Some(cursor::decode(c, "ep_")?),
            None => None,
        };
        // One more than asked tells whether another page exists. Projected:
        // a listing reads no secret and calls no KMS.
        let (items, _) = self
            .query_items(
                org_id,
                Some(limit + 1),
                after.as_deref(),
                Some(&EndpointSummaryItem::ATTRIBUTES),
            )
            .await?;
        let mut endpoints = Vec::with_capacity(items.len());
        for item in items {
            let item: EndpointSummaryItem =
                serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
            endpoints.push(item.into_summary()?);
        }
        Ok(Page::from_overfetch(endpoints, limit, |e| &e.id))
    }

    async fn summary(&self, org_id: &str, endpoint_id: &str) -> Result<Option<EndpointSummary>> {
        if is_counter(endpoint_id) {
            return Ok(None);
        }
        let mut get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("org_id", s(org_id))
            .key("endpoint_id", s(endpoint_id))
            .consistent_read(true);
        let mut names = Vec::with_capacity(EndpointSummaryItem::ATTRIBUTES.len());
        for (i, a) in EndpointSummaryItem::ATTRIBUTES.iter().enumerate() {
            let name = format!("#p{i}");
            get = get.expression_attribute_names(&name, *a);
            names.push(name);
        }
        let out = get
            .projection_expression(names.join(", "))
            .send()
            .await
            .map_err(|e| backend_error("GetItem endpoints (summary)", e))?;
        match out.item {
            Some(item) => {
                let item: EndpointSummaryItem =
                    serde_dynamo::from_item(item).map_err(|e| decode_error("endpoint", e))?;
                Ok(Some(item.into_summary()?))
            }
            None => Ok(None),
        }
    }

    async fn update(&self, endpoint: &Endpoint) -> Result<Updated> {
        if is_counter(&endpoint.id) {
            return Ok(Updated::NotFound);
        }
        let mut next = endpoint.clone();
        next.version = endpoint.version + 1;
        // Items written before versions have none: version 0.
        let condition = if endpoint.version == 0 {
            "attribute_exists(endpoint_id) AND (attribute_not_exists(version) OR version = :v)"
        } else {
            "attribute_exists(endpoint_id) AND version = :v"
        };
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.seal_item(&next).await?))
            .condition_expression(condition)
            .expression_attribute_values(":v", AttributeValue::N(endpoint.version.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
        {
            Ok(_) => Ok(Updated::Written),
            Err(e) if is_condition_failure(&e) => {
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let exists = match old {
                    Some(item) => !item.is_empty(),
                    // Not every emulator returns the old item; read it.
                    None => self.get(&endpoint.org_id, &endpoint.id).await?.is_some(),
                };
                Ok(if exists {
                    Updated::Conflict
                } else {
                    Updated::NotFound
                })
            }
            Err(e) => Err(backend_error("PutItem endpoints", e)),
        }
    }

    /// One transaction removes the endpoint and one from the org's
    /// counter. In an org never counted, the delete moves only the
    /// counter's version, so a first count read before it is not written.
    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool> {
        if is_counter(endpoint_id) {
            return Ok(false);
        }
        let gone = || -> Result<Delete> {
            Delete::builder()
                .table_name(&self.table)
                .key("org_id", s(org_id))
                .key("endpoint_id", s(endpoint_id))
                .condition_expression("attribute_exists(endpoint_id)")
                .build()
                .map_err(build_error)
        };
        for round in 0..COUNT_ROUNDS {
            let one_fewer = counter_update(
                &self.table,
                org_id,
                Some("SET #n = #n - :one"),
                "#n > :zero",
                vec![(":zero", number(0))],
            )?;
            // No ClientRequestToken: a second delete of the same endpoint
            // must find it gone, not replay the first one's success.
            match self
                .transact(
                    TransactWriteItem::builder().update(one_fewer).build(),
                    TransactWriteItem::builder().delete(gone()?).build(),
                    None,
                )
                .await?
            {
                Transaction::Written => return Ok(true),
                Transaction::Refused { endpoint: true, .. } => return Ok(false),
                Transaction::Refused { .. } => {}
                Transaction::Conflict => {
                    back_off(round).await;
                    continue;
                }
            }
            // Never counted (or counted before older endpoints were made).
            let uncounted = counter_update(
                &self.table,
                org_id,
                None,
                "attribute_not_exists(#n) OR #n <= :zero",
                vec![(":zero", number(0))],
            )?;
            match self
                .transact(
                    TransactWriteItem::builder().update(uncounted).build(),
                    TransactWriteItem::builder().delete(gone()?).build(),
                    None,
                )
                .await?
            {
                Transaction::Written => return Ok(true),
                Transaction::Refused { endpoint: true, .. } => return Ok(false),
                // Counted since: one fewer, as above.
                Transaction::Refused { .. } => {}
                Transaction::Conflict => back_off(round).await,
            }
        }
        Err(BackendError::Transient(format!(
            "TransactWriteItems endpoints: the endpoint count of org {org_id} kept changing"
        )))
    }
}
