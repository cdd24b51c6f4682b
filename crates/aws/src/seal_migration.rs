//! `webhooks migrate seal-secrets`: the one-off migration that brings every
//! endpoint's signing secrets to the sealed format the readers accept.
//! Items still holding a plaintext `secret`, and items sealed before the
//! endpoint's version was part of the AAD, are refused by every read until
//! it has run over them.
//!
//! It scans the endpoints table one page at a time (a consistent `Scan` of
//! at most `page_size` items), seals the secrets of each item that needs it
//! for [`endpoint_aad`] at the item's current `version`, and writes only the
//! secret attributes, on condition that the version is still the one read:
//! a write of the API or a health write of the sender since the read is
//! never undone; the item is read again and considered afresh. It moves no
//! version, so it makes no concurrent edit conflict. Idempotent: a second
//! run finds every item current and writes nothing.

use crate::envelope::EnvelopeCipher;
use crate::error::{backend_error, is_condition_failure};
use crate::items::{
    endpoint_aad, s, unversioned_endpoint_aad, EndpointItem, EndpointSecrets, StoredSecrets,
};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use webhooks_ports::BackendError;

/// Items read per page unless told otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Items of a page sealed and written at once.
const CONCURRENCY: usize = 8;
/// Reads of one item that keeps changing under the migration before it is
/// reported as failed (run again to take it).
const ROUNDS: u32 = 5;
/// What every endpoint id starts with (the org counters are skipped).
const ENDPOINT_KEY_PREFIX: &str = "ep_";

/// What a run did, item by item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// `Scan` pages read.
    pub pages: u64,
    /// Endpoint items seen (the org counters are not counted).
    pub endpoints: u64,
    /// Already sealed with their version: left as they are.
    pub current: u64,
    /// Plaintext secrets sealed.
    pub sealed_plaintext: u64,
    /// Secrets sealed without the version, sealed again with it.
    pub resealed: u64,
    /// Deleted while the migration ran.
    pub gone: u64,
    /// Items left as they were: `(org_id, endpoint_id, why)`; never a secret.
    pub failed: Vec<(String, String, String)>,
}

impl SealReport {
    /// Whether every endpoint seen is now (or, in a dry run, would be)
    /// sealed with its version.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }

    fn add(&mut self, org_id: String, endpoint_id: String, outcome: Outcome) {
        self.endpoints += 1;
        match outcome {
            Outcome::Current => self.current += 1,
            Outcome::SealedPlaintext => self.sealed_plaintext += 1,
            Outcome::Resealed => self.resealed += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Failed(why) => self.failed.push((org_id, endpoint_id, why)),
        }
    }
}

impl std::fmt::Display for SealReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} endpoints in {} pages: {} sealed from plaintext, {} sealed again with their version, {} already current, {} deleted meanwhile, {} failed",
            self.endpoints,
            self.pages,
            self.sealed_plaintext,
            self.resealed,
            self.current,
            self.gone,
            self.failed.len()
        )
    }
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Current,
    SealedPlaintext,
    Resealed,
    Gone,
    Failed(String),
}

/// The migration over one endpoints table, sealing under data keys of
/// `cipher`'s KMS key (the table's own).
pub struct SealMigration {
    client: Client,
    table: String,
    cipher: Arc<EnvelopeCipher>,
    page_size: u32,
    dry_run: bool,
}

impl SealMigration {
    pub fn new(client: Client, table: impl Into<String>, cipher: Arc<EnvelopeCipher>) -> Self {
        SealMigration {
            client,
            table: table.into(),
            cipher,
            page_size: DEFAULT_PAGE_SIZE,
            dry_run: false,
        }
    }

    /// Reads at most `n` items per `Scan` page (at least 1).
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Reports what a run would do, opening what it would seal again but
    /// writing nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Runs over the whole table; `progress` sees the report after each
    /// page. An error is a failed `Scan` (what was written stays written:
    /// run again).
    pub async fn run(
        &self,
        mut progress: impl FnMut(&SealReport),
    ) -> Result<SealReport, BackendError> {
        let mut report = SealReport::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .limit(i32::try_from(self.page_size).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend_error("Scan endpoints", e))?;
            report.pages += 1;
            let endpoints = out.items.unwrap_or_default().into_iter().filter(|item| {
                key_of(item).is_some_and(|(_, ep)| ep.starts_with(ENDPOINT_KEY_PREFIX))
            });
            let outcomes: Vec<_> = stream::iter(endpoints.map(|item| self.migrate(item)))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (org_id, endpoint_id, outcome) in outcomes {
                report.add(org_id, endpoint_id, outcome);
            }
            progress(&report);
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(report),
            }
        }
    }

    /// One item, read again after each write that lost a race.
    async fn migrate(&self, item: HashMap<String, AttributeValue>) -> (String, String, Outcome) {
        let (org_id, endpoint_id) = key_of(&item).unwrap_or_default();
        let mut item = item;
        for _ in 0..ROUNDS {
            let outcome = match self.seal(item).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => match self.read(&org_id, &endpoint_id).await {
                    Ok(Some(again)) => {
                        item = again;
                        continue;
                    }
                    Ok(None) => Outcome::Gone,
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                Err(e) => Outcome::Failed(e.to_string()),
            };
            return (org_id, endpoint_id, outcome);
        }
        let why = "it kept changing during the migration; run it again".to_string();
        (org_id, endpoint_id, Outcome::Failed(why))
    }

    /// Seals the item's secrets for its version if they need it; `None`
    /// when the item changed since it was read.
    async fn seal(&self, raw: HashMap<String, AttributeValue>) -> Result<Option<Outcome>, String> {
        // Not the decoder's message: it may quote an attribute's value.
        let item: EndpointItem = serde_dynamo::from_item(raw)
            .map_err(|_| "the item does not read as an endpoint".to_string())?;
        let (secrets, done) = match item.stored_secrets().map_err(|e| e.to_string())? {
            StoredSecrets::Sealed { .. } => return Ok(Some(Outcome::Current)),
            StoredSecrets::Plain(secrets) => (secrets, Outcome::SealedPlaintext),
            StoredSecrets::SealedUnversioned(sealed) => {
                let aad = unversioned_endpoint_aad(&item.org_id, &item.endpoint_id);
                let json = self
                    .cipher
                    .open(&sealed, &aad)
                    .await
                    .map_err(|e| e.to_string())?;
                let secrets: EndpointSecrets =
                    serde_json::from_slice(&json).map_err(|_| "sealed secrets are not JSON")?;
                (secrets, Outcome::Resealed)
            }
        };
        // What is sealed must read back as an endpoint.
        item.clone()
            .into_endpoint(secrets.clone())
            .map_err(|e| e.to_string())?;
        if self.dry_run {
            return Ok(Some(done));
        }
        let json = serde_json::to_vec(&secrets).map_err(|e| e.to_string())?;
        let aad = endpoint_aad(&item.org_id, &item.endpoint_id, item.version);
        let sealed = self
            .cipher
            .seal(&json, &aad)
            .await
            .map_err(|e| e.to_string())?;
        // Items written before versions have none: version 0.
        let condition = if item.version == 0 {
            "attribute_exists(endpoint_id) AND attribute_not_exists(secrets_version) \
             AND (attribute_not_exists(version) OR version = :v)"
        } else {
            "attribute_exists(endpoint_id) AND attribute_not_exists(secrets_version) \
             AND version = :v"
        };
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("org_id", s(&item.org_id))
            .key("endpoint_id", s(&item.endpoint_id))
            .update_expression(
                "SET secrets_key = :k, secrets_sealed = :s, secrets_version = :v \
                 REMOVE secret, previous_secrets, previous_secret, previous_secret_expires_at",
            )
            .condition_expression(condition)
            .expression_attribute_values(":k", AttributeValue::B(Blob::new(sealed.wrapped_key)))
            .expression_attribute_values(":s", AttributeValue::B(Blob::new(sealed.sealed)))
            .expression_attribute_values(":v", AttributeValue::N(item.version.to_string()))
            .send()
            .await;
        match written {
            Ok(_) => Ok(Some(done)),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(backend_error("UpdateItem endpoints (seal)", e).to_string()),
        }
    }

    /// The item as it is now, read consistently.
    async fn read(
        &self,
        org_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, BackendError> {
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
        Ok(out.item)
    }
}

/// An item's `(org_id, endpoint_id)`, when both are strings.
fn key_of(item: &HashMap<String, AttributeValue>) -> Option<(String, String)> {
    let part = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some((part("org_id")?, part("endpoint_id")?))
}
