//! Counts every request the AWS SDK sends, per service and operation, for
//! the benchmark of AWS requests per delivery. An SDK interceptor, so retries
//! by the SDK count too, as AWS bills them.
//!
//! It also measures the read units of each DynamoDB `Query` from what the
//! response holds, as DynamoDB bills them: the sizes of the items read,
//! summed and rounded up to 4 KB, at least one unit (half when eventually
//! consistent). An emulator's `ConsumedCapacity` is not this (moto answers a
//! fixed figure), and a Query without a filter returns every item it reads.
//! And it measures each `BatchGetItem` the same way, by its own rule: each
//! key asked is billed as one `GetItem`, its item's size rounded up to
//! 4 KB, at least one unit found or not (half when eventually consistent).

/// DynamoDB's item sizes, kept with the item encoding.
pub use crate::items::{item_size, value_size};
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Shared tally of SDK requests: `(service, operation) -> count`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    query_units: Arc<Mutex<f64>>,
    batch_units: Arc<Mutex<f64>>,
}

/// Whether the Query under way reads strongly consistently, kept from its
/// input for the measure of its response.
#[derive(Debug, Clone, Copy)]
struct ConsistentQuery(bool);

impl Storable for ConsistentQuery {
    type Storer = StoreReplace<Self>;
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The read units of every DynamoDB `Query` answered so far, measured
    /// from the items each returned (see the module's documentation).
    pub fn query_read_units(&self) -> f64 {
        self.query_units.lock().map(|u| *u).unwrap_or_default()
    }

    /// The read units of every DynamoDB `BatchGetItem` answered so far,
    /// measured from what each asked and returned.
    pub fn batch_get_read_units(&self) -> f64 {
        self.batch_units.lock().map(|u| *u).unwrap_or_default()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        if let Ok(mut u) = self.batch_units.lock() {
            *u = 0.0;
        }
        if let Ok(mut c) = self.counts.lock() {
            c.clear();
        }
        if let Ok(mut u) = self.query_units.lock() {
            *u = 0.0;
        }
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((service, op)).or_insert(0) += 1;
        }
        Ok(())
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(batch) = context.input().downcast_ref::<BatchGetItemInput>() {
            let asked = batch
                .request_items()
                .into_iter()
                .flatten()
                .map(|(table, keys)| {
                    let consistent = keys.consistent_read().unwrap_or(false);
                    (table.clone(), keys.keys().len(), consistent)
                })
                .collect();
            cfg.interceptor_state().store_put(BatchAsked(asked));
        }
        if let Some(query) = context.input().downcast_ref::<QueryInput>() {
            let consistent = query.consistent_read.unwrap_or(false);
            cfg.interceptor_state()
                .store_put(ConsistentQuery(consistent));
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        if let (Some(batch), Some(asked)) = (
            output.downcast_ref::<BatchGetItemOutput>(),
            cfg.load::<BatchAsked>(),
        ) {
            let mut units = 0.0;
            for (table, keys, consistent) in &asked.0 {
                let found = batch
                    .responses()
                    .and_then(|r| r.get(table))
                    .map_or(&[][..], Vec::as_slice);
                let left = batch
                    .unprocessed_keys()
                    .and_then(|u| u.get(table))
                    .map_or(0, |k| k.keys().len());
                units += batch_get_read_units(found, keys.saturating_sub(left), *consistent);
            }
            if let Ok(mut u) = self.batch_units.lock() {
                *u += units;
            }
        }
        if let Some(query) = output.downcast_ref::<QueryOutput>() {
            let consistent = cfg.load::<ConsistentQuery>().is_none_or(|c| c.0);
            let units = query_read_units(query.items(), consistent);
            if let Ok(mut u) = self.query_units.lock() {
                *u += units;
            }
        }
        Ok(())
    }
}

/// What a `BatchGetItem` asked of one table: its name, how many keys, and
/// whether strongly consistently.
#[derive(Debug, Clone)]
struct BatchAsked(Vec<(String, usize, bool)>);

impl Storable for BatchAsked {
    type Storer = StoreReplace<Self>;
}

/// What DynamoDB bills a `BatchGetItem`'s `asked` keys of one table that
/// found `items`: each key as a `GetItem`, its item's size rounded up to
/// 4 KB and at least one unit, found or not; half as much when eventually
/// consistent.
pub fn batch_get_read_units(
    items: &[HashMap<String, AttributeValue>],
    asked: usize,
    consistent: bool,
) -> f64 {
    let found: u64 = items
        .iter()
        .map(|i| item_size(i).div_ceil(4096).max(1))
        .sum();
    let missing = asked.saturating_sub(items.len()) as u64;
    billed(found + missing, consistent)
}

/// What DynamoDB bills a Query that read `items`: their sizes summed and
/// rounded up to 4 KB, at least one unit; half as much when eventually
/// consistent.
pub fn query_read_units(items: &[HashMap<String, AttributeValue>], consistent: bool) -> f64 {
    let bytes: u64 = items.iter().map(item_size).sum();
    billed(bytes.div_ceil(4096).max(1), consistent)
}

/// `units` of strongly consistent reads as billed: half when eventually
/// consistent.
fn billed(units: u64, consistent: bool) -> f64 {
    let units = units as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: usize) -> HashMap<String, AttributeValue> {
        HashMap::from([("k".to_string(), AttributeValue::S("x".repeat(bytes - 1)))])
    }

    #[test]
    fn a_query_is_billed_by_the_4_kb_of_everything_it_read_and_at_least_one_unit() {
        assert_eq!(query_read_units(&[], true), 1.0);
        assert_eq!(query_read_units(&[item(100)], true), 1.0);
        // Two items of 3 KB: 6 KB together, two units (not one each).
        assert_eq!(query_read_units(&[item(3000), item(3000)], true), 2.0);
        assert_eq!(query_read_units(&[item(4096)], true), 1.0);
        assert_eq!(query_read_units(&[item(4097)], true), 2.0);
        // Eventually consistent: half.
        assert_eq!(query_read_units(&[item(3000), item(3000)], false), 1.0);
        assert_eq!(query_read_units(&[], false), 0.5);
    }

    #[test]
    fn a_batch_get_is_billed_per_key_found_or_not() {
        // Three keys, two found of 3 KB: a unit each (not 6 KB summed),
        // and one for the missing key.
        assert_eq!(
            batch_get_read_units(&[item(3000), item(3000)], 3, true),
            3.0
        );
        assert_eq!(batch_get_read_units(&[item(4097)], 1, true), 2.0);
        assert_eq!(batch_get_read_units(&[], 10, true), 10.0);
        // Eventually consistent: half.
        assert_eq!(batch_get_read_units(&[], 10, false), 5.0);
        assert_eq!(batch_get_read_units(&[item(100)], 2, false), 1.0);
    }
}
