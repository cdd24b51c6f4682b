//! The deliveries table. The key (`endpoint_id`, `event_id`) is the
//! uniqueness constraint: a conditional put creates a delivery at most once.

use crate::batch_get::{batch_get_items, Consistency};
use crate::error::{backend_error, decode_error, is_condition_failure};
use crate::items::{expires_at, note_entries, packed_note_entries, s};
use crate::items::{AttemptItem, DeliveryItem};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use webhooks_domain::delivery::{delivery_id, parse_delivery_id, MAX_KEPT_ATTEMPTS};
use webhooks_domain::queued::{noted_ranges, QueuedNote};
use webhooks_domain::time::rfc3339;
use webhooks_domain::{Delivery, DeliveryStatus};
use webhooks_ports::{
    cursor, AttemptUpdate, BackendError, DeliveryStore, Lease, NotesPage, Page, Result,
    DELIVERIES_EXAMINED_PER_PAGE,
};

/// The condition that a delivery has exactly `:n` attempts (items written
/// before `attempt_count` existed count their list).
const HAS_N_ATTEMPTS: &str =
    "(attempt_count = :n OR (attribute_not_exists(attempt_count) AND size(attempts) = :n))";

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The sparse index of scheduled retries (hash `org_id`, range
/// `next_attempt_at`, keys only): `next_attempt_at` exists only while a
/// pending delivery has a retry scheduled, so the reconciler reads overdue
/// ones without a scan, and a first-try success writes no index entry.
pub const PENDING_INDEX: &str = "pending-by-org";

/// Deliveries in DynamoDB (key: `endpoint_id`, `event_id`).
#[derive(Clone)]
pub struct DynamoDeliveryStore {
    client: Client,
    table: String,
}

fn from_item(item: HashMap<String, AttributeValue>) -> Result<Delivery> {
    let item: DeliveryItem =
        serde_dynamo::from_item(item).map_err(|e| decode_error("delivery", e))?;
    item.into_delivery()
}

fn key(delivery_id: &str) -> Option<HashMap<String, AttributeValue>> {
    let (ep, evt) = parse_delivery_id(delivery_id)?;
    Some(HashMap::from([
        ("endpoint_id".to_string(), s(&ep)),
        ("event_id".to_string(), s(&evt)),
    ]))
}

impl DynamoDeliveryStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDeliveryStore {
            client,
            table: table.into(),
        }
    }

    /// The records of `delivery_ids` that exist, read as `consistency` says.
    async fn read_many(
        &self,
        delivery_ids: &[String],
        consistency: Consistency,
    ) -> Result<Vec<Delivery>> {
        // Each id once: BatchGetItem refuses a key named twice. (Deduped
        // as ids, not as keys: two equal maps need not print alike.)
        let mut ids: Vec<&String> = delivery_ids.iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let keys: Vec<HashMap<String, AttributeValue>> =
            ids.into_iter().filter_map(|id| key(id)).collect();
        batch_get_items(&self.client, &self.table, keys, consistency, "deliveries")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

/// Most `Query` requests one listing of an endpoint's deliveries makes.
pub const QUERIES_PER_PAGE: usize = 4;

/// How many deliveries the `query`-th `Query` (from 0) of a listing
/// examines, `wanted` matches still missing and `left` of its budget:
/// without a filter, what is wanted; with one, the first as if every
/// delivery matched (a dense page costs one query), the others the rest of
/// the budget in equal parts (a sparse filter reaches it within
/// [`QUERIES_PER_PAGE`]). At least one.
fn examine_next(query: usize, wanted: usize, left: usize, filtered: bool) -> usize {
    let share = if query == 0 || !filtered {
        wanted
    } else {
        left.div_ceil(QUERIES_PER_PAGE.saturating_sub(query).max(1))
    };
    share.min(left).max(1)
}

/// The partition of an org's queued notes in the deliveries table: no
/// endpoint id starts so, and a note has no `org_id` or
/// `next_attempt_at`, so it is in no index.
fn note_partition(org_id: &str) -> String {
    format!("queued#{org_id}")
}

fn note_from_item(item: &HashMap<String, AttributeValue>) -> Result<QueuedNote> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(decode_error("queued note", format!("no {name}"))),
    };
    let org_id = text("endpoint_id")?
        .strip_prefix("queued#")
        .map(str::to_string)
        .ok_or_else(|| decode_error("queued note", "not a note's partition"))?;
    let created = text("created_at")?;
    let created_at = webhooks_domain::time::parse_rfc3339(&created)
        .ok_or_else(|| decode_error("queued note", format!("bad time '{created}'")))?;
    let (delivery_ids, messages): (Vec<String>, Vec<String>) = note_entries(item.get("d"))?
        .into_iter()
        .map(|(body, message)| (format!("dlv_{body}"), message))
        .unzip();
    let confirmed_at = match item.get("c") {
        Some(AttributeValue::S(v)) => Some(
            webhooks_domain::time::parse_rfc3339(v)
                .ok_or_else(|| decode_error("queued note", format!("bad time '{v}'")))?,
        ),
        _ => None,
    };
    let contested = match item.get("x") {
        Some(AttributeValue::Ss(ids)) => ids.iter().map(|b| format!("dlv_{b}")).collect(),
        _ => Vec::new(),
    };
    Ok(QueuedNote {
        org_id,
        key: text("event_id")?,
        delivery_ids: delivery_ids.into(),
        messages: messages.into(),
        created_at,
        confirmed_at,
        contested,
    })
}

/// A contested set as a note's item keeps it: each delivery id's body.
fn contested_set(contested: &[String]) -> Option<AttributeValue> {
    let mut ids: Vec<String> = contested
        .iter()
        .map(|d| d.strip_prefix("dlv_").unwrap_or(d).to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    (!ids.is_empty()).then_some(AttributeValue::Ss(ids))
}

/// The lease's condition, which a long deferral's note shares: pending,
/// with `:n` attempts, no live lease at `:now`, and its chain free, `:me`'s,
/// or lost (due before `:stale`).
fn leasable_condition() -> String {
    format!(
        "#s = :pending AND {HAS_N_ATTEMPTS} \
         AND (attribute_not_exists(lease_until) OR lease_until < :now) \
         AND (attribute_not_exists(chain) OR chain = :me OR next_attempt_at < :stale \
              OR (attribute_not_exists(next_attempt_at) AND created_at < :stale))"
    )
}

#[async_trait]
impl DeliveryStore for DynamoDeliveryStore {
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(DeliveryItem::from_delivery(delivery))
                .map_err(|e| decode_error("delivery", e))?;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(event_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failure(&e) => {
                let old = match e.into_service_error() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                match old {
                    Some(item) => from_item(item).map(Some),
                    // Not every emulator returns the old item; read it.
                    None => self.get(&delivery.id).await?.map(Some).ok_or_else(|| {
                        BackendError::Transient(format!("delivery {} vanished", delivery.id))
                    }),
                }
            }
            Err(e) => Err(backend_error("PutItem deliveries", e)),
        }
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        let Some(key) = key(delivery_id) else {
            return Ok(None);
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend_error("GetItem deliveries", e))?;
        out.item.map(from_item).transpose()
    }

    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.read_many(delivery_ids, Consistency::Strong).await
    }

    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.read_many(delivery_ids, Consistency::Eventual).await
    }

    async fn lease(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Lease> {
        let Some(key) = key(delivery_id) else {
            return Ok(Lease::Refused(None));
        };
        let condition = leasable_condition();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET chain = :me, lease_until = :until")
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":n", number(attempts_made))
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":me", s(chain))
            .expression_attribute_values(":stale", s(&rfc3339(stale_before)))
            .expression_attribute_values(":until", number(until.timestamp_millis()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(item) => Ok(Lease::Granted(from_item(item)?)),
                None => Err(BackendError::Transient(format!(
                    "lease of {delivery_id}: no item returned"
                ))),
            },
            Err(e) if is_condition_failure(&e) => {
                let old = match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                match old {
                    Some(item) if !item.is_empty() => Ok(Lease::Refused(Some(from_item(item)?))),
                    // Not every emulator returns the old item; read it.
                    _ => Ok(Lease::Refused(self.get(delivery_id).await?)),
                }
            }
            Err(e) => Err(backend_error("UpdateItem deliveries (lease)", e)),
        }
    }

    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool> {
        let Some(key) = key(delivery_id) else {
            return Ok(false);
        };
        let Some(made) = update.attempt.number.checked_sub(1) else {
            return Ok(false);
        };
        // A delivery canceled while an attempt made without a lease ran
        // takes that attempt as canceled (DeliveryStore::record_attempt).
        let from = if update.unleased_by.is_some() && update.status == DeliveryStatus::Canceled {
            DeliveryStatus::Canceled
        } else {
            DeliveryStatus::Pending
        };
        let attempt: AttributeValue =
            serde_dynamo::to_attribute_value(AttemptItem::from_attempt(&update.attempt))
                .map_err(|e| decode_error("attempt", e))?;
        // Past the kept number the log is rewritten whole, from a read that
        // the attempt-count condition proves current; before that one append.
        let attempts = if usize::try_from(made).unwrap_or(usize::MAX) >= MAX_KEPT_ATTEMPTS {
            let Some(current) = self.get(delivery_id).await? else {
                return Ok(false);
            };
            if current.attempt_count != made {
                return Ok(false);
            }
            let mut kept: Vec<AttributeValue> = Vec::with_capacity(MAX_KEPT_ATTEMPTS);
            let skip = (current.attempts.len() + 1).saturating_sub(MAX_KEPT_ATTEMPTS);
            for a in current.attempts.iter().skip(skip) {
                kept.push(
                    serde_dynamo::to_attribute_value(AttemptItem::from_attempt(a))
                        .map_err(|e| decode_error("attempt", e))?,
                );
            }
            kept.push(attempt);
            ("attempts = :all", vec![(":all", AttributeValue::L(kept))])
        } else {
            (
                "attempts = list_append(if_not_exists(attempts, :empty), :a)",
                vec![
                    (":empty", AttributeValue::L(vec![])),
                    (":a", AttributeValue::L(vec![attempt])),
                ],
            )
        };
        let mut set = vec![
            attempts.0,
            "attempt_count = :count",
            "#s = :status",
            "updated_at = :u",
        ];
        let mut remove = vec!["lease_until"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":count", number(update.attempt.number))
            .expression_attribute_values(":n", number(made))
            .expression_attribute_values(":status", s(update.status.as_str()))
            .expression_attribute_values(":u", s(&rfc3339(update.attempt.at)))
            .expression_attribute_values(":from", s(from.as_str()));
        req = match &update.unleased_by {
            // Made without a lease: only by the chain's own message.
            Some(by) => req
                .expression_attribute_values(":by", s(by))
                .condition_expression(format!("#s = :from AND {HAS_N_ATTEMPTS} AND chain = :by")),
            None => req.condition_expression(format!("#s = :from AND {HAS_N_ATTEMPTS}")),
        };
        for (k, v) in attempts.1 {
            req = req.expression_attribute_values(k, v);
        }
        if update.status == DeliveryStatus::Pending {
            // Still being retried: its time to live starts again.
            set.push("expires_at = :exp");
            req = req.expression_attribute_values(":exp", number(expires_at(update.attempt.at)));
        }
        match update.next_attempt_at {
            Some(t) => {
                set.push("next_attempt_at = :next");
                req = req.expression_attribute_values(":next", s(&rfc3339(t)));
            }
            None => remove.push("next_attempt_at"),
        }
        match &update.last_error {
            Some(e) => {
                set.push("last_error = :e");
                req = req.expression_attribute_values(":e", s(e));
            }
            None => remove.push("last_error"),
        }
        let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        match req.update_expression(expression).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem deliveries", e)),
        }
    }

    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key(delivery_id) else {
            return Ok(false);
        };
        let condition = format!(
            "#s = :pending AND {HAS_N_ATTEMPTS} AND chain = :from \
             AND (attribute_not_exists(lease_until) OR lease_until < :now)"
        );
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET chain = :to, lease_until = :until")
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":n", number(0))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":until", number(until.timestamp_millis()))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem deliveries (hand over)", e)),
        }
    }

    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>> {
        let Some(key) = key(delivery_id) else {
            return Ok(None);
        };
        if from.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":f{i}")).collect();
        let in_from = format!("#s IN ({})", placeholders.join(", "));
        let unleased = "(attribute_not_exists(lease_until) OR lease_until < :now)";
        // A move to pending is one of two conditional writes: without a
        // live lease it starts a new chain; with one, the attempt under way
        // keeps its lease and its chain. Each is refused when the other
        // applies (or when the status is not in `from`). A lease can only
        // end between them (none is taken on a delivery that is not
        // pending), so the first form, tried again, settles it.
        let tries: &[bool] = if to == DeliveryStatus::Pending {
            &[false, true, false]
        } else {
            &[false]
        };
        for &leased in tries {
            let (condition, update) = match (to, leased) {
                (DeliveryStatus::Pending, false) => (
                    format!("{in_from} AND {unleased}"),
                    "SET #s = :to, updated_at = :u, next_attempt_at = :u, expires_at = :exp \
                     REMOVE chain, lease_until",
                ),
                (DeliveryStatus::Pending, true) => (
                    format!("{in_from} AND lease_until >= :now"),
                    "SET #s = :to, updated_at = :u, next_attempt_at = :u, expires_at = :exp",
                ),
                // Out of pending only without a live lease: an attempt under
                // way records its outcome.
                _ => (
                    format!("{in_from} AND (#s <> :pending OR {unleased})"),
                    "SET #s = :to, updated_at = :u REMOVE next_attempt_at",
                ),
            };
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":to", s(to.as_str()))
                .expression_attribute_values(":u", s(&rfc3339(now)))
                .expression_attribute_values(":now", number(now.timestamp_millis()))
                .condition_expression(condition)
                .update_expression(update)
                .return_values(ReturnValue::AllNew);
            if to == DeliveryStatus::Pending {
                req = req.expression_attribute_values(":exp", number(expires_at(now)));
            } else {
                req = req
                    .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()));
            }
            for (p, status) in placeholders.iter().zip(from) {
                req = req.expression_attribute_values(p, s(status.as_str()));
            }
            match req.send().await {
                Ok(out) => return out.attributes.map(from_item).transpose(),
                // Not in `from`, under a live lease (out of pending), or the
                // other form of a move to pending applies.
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(backend_error("UpdateItem deliveries", e)),
            }
        }
        Ok(None)
    }

    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>> {
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: cursor.map(str::to_string),
            });
        }
        // The index's key of the last item of the page before: its sort
        // key and the table's key (the index holds keys only).
        let mut start: Option<HashMap<String, AttributeValue>> = match cursor {
            Some(c) => {
                let (at, id) = cursor::decode_pair(c)?;
                let mut k = key(&id).ok_or(BackendError::InvalidCursor)?;
                k.insert("org_id".to_string(), s(org_id));
                k.insert("next_attempt_at".to_string(), s(&at));
                Some(k)
            }
            None => None,
        };
        let mut ids = Vec::new();
        let mut last: Option<(String, String)> = None;
        // A Query stops at `Limit` items or 1 MB, whichever comes first, so
        // read on until the page is full or the index range ends.
        let more = loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("org_id = :o AND next_attempt_at < :b")
                .expression_attribute_values(":o", s(org_id))
                .expression_attribute_values(":b", s(&rfc3339(before)))
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend_error("Query deliveries pending-by-org", e))?;
            for item in out.items.unwrap_or_default() {
                let part = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
                if let (Some(ep), Some(evt), Some(at)) = (
                    part("endpoint_id"),
                    part("event_id"),
                    part("next_attempt_at"),
                ) {
                    let id = delivery_id(ep, evt);
                    ids.push(id.clone());
                    last = Some((at.clone(), id));
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    if ids.len() >= limit {
                        break true;
                    }
                    start = Some(k);
                }
                _ => break false,
            }
        };
        let next_cursor = if more {
            last.map(|(at, id)| cursor::encode_pair(&at, &id))
        } else {
            None
        };
        Ok(Page {
            items: ids,
            next_cursor,
        })
    }

    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key(delivery_id) else {
            return Ok(false);
        };
        // Overdue as the lease's condition has it (a delivery never
        // attempted is due from its creation).
        let condition = format!(
            "#s = :pending AND {HAS_N_ATTEMPTS} \
             AND (attribute_not_exists(lease_until) OR lease_until < :now) \
             AND (next_attempt_at < :stale \
                  OR (attribute_not_exists(next_attempt_at) AND created_at < :stale))"
        );
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET next_attempt_at = :next REMOVE chain")
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":n", number(attempts_made))
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":stale", s(&rfc3339(stale_before)))
            .expression_attribute_values(":next", s(&rfc3339(now)))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem deliveries (requeued)", e)),
        }
    }

    async fn postpone(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(key) = key(delivery_id) else {
            return Ok(false);
        };
        // The lease's condition.
        let condition = leasable_condition();
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET chain = :me, next_attempt_at = :next")
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":n", number(attempts_made))
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":me", s(chain))
            .expression_attribute_values(":stale", s(&rfc3339(stale_before)))
            .expression_attribute_values(":next", s(&rfc3339(until)))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem deliveries (postpone)", e)),
        }
    }

    async fn note_queued(&self, note: &QueuedNote) -> Result<bool> {
        let entries = packed_note_entries(
            note.delivery_ids
                .iter()
                .zip(note.messages.iter())
                .map(|(d, m)| (d.strip_prefix("dlv_").unwrap_or(d), m.as_str())),
        );
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("endpoint_id", s(&note_partition(&note.org_id)))
            .item("event_id", s(&note.key))
            .item("d", entries)
            .item("created_at", s(&rfc3339(note.created_at)))
            .item("expires_at", number(expires_at(note.created_at)));
        if let Some(at) = note.confirmed_at {
            put = put.item("c", s(&rfc3339(at)));
        }
        if let Some(x) = contested_set(&note.contested) {
            put = put.item("x", x);
        }
        let written = put
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("PutItem deliveries (queued note)", e)),
        }
    }

    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("endpoint_id", s(&note_partition(org_id)))
            .key("event_id", s(key))
            .condition_expression("attribute_exists(event_id)")
            .expression_attribute_values(":c", s(&rfc3339(at)));
        update = match contested_set(contested) {
            Some(x) => update
                .update_expression("SET c = :c, x = :x")
                .expression_attribute_values(":x", x),
            None => update.update_expression("SET c = :c"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend_error("UpdateItem deliveries (confirm note)", e)),
        }
    }

    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>> {
        let wanted: HashSet<&str> = delivery_ids.iter().map(String::as_str).collect();
        let mut found: BTreeMap<String, QueuedNote> = BTreeMap::new();
        for (from, to) in noted_ranges(delivery_ids) {
            let mut start: Option<HashMap<String, AttributeValue>> = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("endpoint_id = :p AND event_id BETWEEN :a AND :b")
                    .expression_attribute_values(":p", s(&note_partition(org_id)))
                    .expression_attribute_values(":a", s(&from))
                    .expression_attribute_values(":b", s(&to))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| backend_error("Query deliveries (queued notes)", e))?;
                for item in out.items.unwrap_or_default() {
                    // Each note decoded (its list inflated) once.
                    let note = note_from_item(&item)?;
                    if note
                        .delivery_ids
                        .iter()
                        .any(|d| wanted.contains(d.as_str()))
                    {
                        found.insert(note.key.clone(), note);
                    }
                }
                match out.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage> {
        let (lower, upper) = (format!("{from}#"), format!("{to}$"));
        if lower > upper {
            return Ok(NotesPage::default());
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("endpoint_id = :p AND event_id BETWEEN :a AND :b")
            .expression_attribute_values(":p", s(&note_partition(org_id)))
            .expression_attribute_values(":a", s(&lower))
            .expression_attribute_values(":b", s(&upper))
            .consistent_read(true)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| backend_error("Query deliveries (queued notes)", e))?;
        let notes = out
            .items
            .unwrap_or_default()
            .iter()
            .map(note_from_item)
            .collect::<Result<Vec<_>>>()?;
        Ok(NotesPage {
            notes,
            more: out.last_evaluated_key.is_some_and(|k| !k.is_empty()),
        })
    }

    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>> {
        let mut keys: Vec<&(String, String)> = keys.iter().collect();
        keys.sort_unstable();
        keys.dedup();
        let keys: Vec<HashMap<String, AttributeValue>> = keys
            .into_iter()
            .map(|(org, key)| {
                HashMap::from([
                    ("endpoint_id".to_string(), s(&note_partition(org))),
                    ("event_id".to_string(), s(key)),
                ])
            })
            .collect();
        batch_get_items(
            &self.client,
            &self.table,
            keys,
            Consistency::Strong,
            "deliveries (queued notes)",
        )
        .await?
        .iter()
        .map(note_from_item)
        .collect()
    }

    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        let mut start = match cursor {
            Some(c) => Some(cursor::decode(c, "evt_")?),
            None => None,
        };
        let mut items: Vec<Delivery> = Vec::new();
        let budget = DELIVERIES_EXAMINED_PER_PAGE.max(limit + 1);
        let mut examined = 0usize;
        // A filter applies after the read limit (`Limit` counts what is
        // examined), so read until the page is full (plus one, to know
        // whether more exist), the partition ends, or the budget of
        // examined deliveries or of queries is spent.
        for query in 0..QUERIES_PER_PAGE {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("endpoint_id = :e")
                .expression_attribute_values(":e", s(endpoint_id))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(
                    i32::try_from(examine_next(
                        query,
                        limit + 1 - items.len(),
                        budget - examined,
                        status.is_some(),
                    ))
                    .unwrap_or(i32::MAX),
                );
            if let Some(st) = status {
                q = q
                    .filter_expression("#s = :s")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":s", s(st.as_str()));
            }
            if let Some(after) = &start {
                q = q
                    .exclusive_start_key("endpoint_id", s(endpoint_id))
                    .exclusive_start_key("event_id", s(after));
            }
            let out = q
                .send()
                .await
                .map_err(|e| backend_error("Query deliveries", e))?;
            examined += usize::try_from(out.scanned_count).unwrap_or(0);
            for item in out.items.unwrap_or_default() {
                items.push(from_item(item)?);
            }
            start = out
                .last_evaluated_key
                .and_then(|k| k.get("event_id").and_then(|v| v.as_s().ok().cloned()));
            if start.is_none() || items.len() > limit || examined >= budget {
                break;
            }
        }
        Ok(Page::from_examined(
            items,
            limit,
            |d| &d.event_id,
            start.as_deref(),
        ))
    }
}
