//! Reads of many keys of one table, as every adapter makes them: DynamoDB's
//! `BatchGetItem`, at most [`BATCH_GET_LIMIT`] keys a request, strongly
//! consistent unless asked otherwise ([`Consistency`]), the keys it leaves
//! unprocessed asked again with a growing pause.

use crate::error::backend_error;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use webhooks_ports::{BackendError, Result};

/// Most keys one `BatchGetItem` takes.
pub(crate) const BATCH_GET_LIMIT: usize = 100;

/// Rounds of unprocessed keys before the read gives up (transient).
const MAX_ROUNDS: u64 = 8;

/// How a read sees the table's latest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    /// Every write acknowledged before the read (one read unit per 4 KB).
    Strong,
    /// Possibly not the writes of the last second or so (half a unit).
    Eventual,
}

/// The items of `keys` in `table` that exist. Each key must be named once
/// (DynamoDB refuses a request naming one twice); `what` names the items in
/// errors.
pub(crate) async fn batch_get_items(
    client: &Client,
    table: &str,
    keys: Vec<HashMap<String, AttributeValue>>,
    consistency: Consistency,
    what: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(BATCH_GET_LIMIT) {
        let mut pending: Vec<HashMap<String, AttributeValue>> = chunk.to_vec();
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(BackendError::Transient(format!(
                    "BatchGetItem {what}: keys left unprocessed"
                )));
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(consistency == Consistency::Strong)
                .build()
                .map_err(|e| BackendError::Permanent(e.to_string()))?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| backend_error(&format!("BatchGetItem {what}"), e))?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(table).unwrap_or_default());
            }
            if let Some(mut unprocessed) = out.unprocessed_keys {
                if let Some(left) = unprocessed.remove(table) {
                    pending = left.keys;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * rounds)).await;
                }
            }
        }
    }
    Ok(found)
}
