//! End-to-end tests. Those in `pipeline_on_moto` run the Lambda handlers
//! against a real AWS emulator (moto server, started by `make test` and
//! reached through `AWS_ENDPOINT_URL`) and a real HTTP receiver on 127.0.0.1.
//! `fault_injection` pushes thousands of deliveries through the pipeline
//! (memory and moto) while the fault layer (`webhooks_faults`) breaks it,
//! and accounts for every one.
//! `provider_secrets` fetches inbound secrets from Secrets Manager (moto),
//! `portal_secret` the api's portal signing key.
//! `secrets_at_rest` proves endpoint secrets are sealed in DynamoDB (KMS);
//! `seal_migration` seals those of older items (`webhooks migrate`).
//! `contract` runs one contract per port against the memory and the AWS
//! adapters. `fuzz_corpus` replays the fuzz targets' committed corpus.
//! `delivery_request` checks that a delivery shows the request it sent.
//! `filters` measures what payload filters cost the fan-out.
//! `bounded_reads` counts one request's DynamoDB work on a big partition.

mod bounded_reads;
mod contract;
mod delivery_request;
mod fault_injection;
mod filters;
mod fuzz_corpus;
#[path = "../../fuzz/harness.rs"]
mod fuzz_harness;
mod ops_bus_on_moto;
mod pipeline_on_moto;
mod portal_secret;
mod provider_secrets;
mod queue_contract;
mod seal_migration;
mod secrets_at_rest;
mod support;
