//! Issue 7 item 3: every AWS SDK request of the pipeline on moto, counted
//! per service and operation by an SDK interceptor and divided by
//! deliveries (first-try success), and the bill per million deliveries
//! those counts imply at on-demand prices.
//!
//! The run has three phases so each count has one owner: publish (the
//! `api` Lambda), fan-out (the stream mapping feeding `fanout`), send (the
//! queue mapping feeding `sender`). The sender phase starts when the
//! fan-out is done, so queue batches are full, as the template's 1 s
//! `MaximumBatchingWindowInSeconds` makes them at volume.
//!
//! Publication is also measured through `POST /v1/events/batch` (issue 14):
//! 100 events per request, so API Gateway and Lambda are paid per batch.

use crate::dev::{self, ApiClient};
use crate::measure::{cpu_time, round};
use crate::publisher::{self, PublisherProcess, BATCH_EVENTS};
use crate::receiver::{self, ReceiverProcess};
use anyhow::{bail, Context as _};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhooks::backend::{Backend, System};
use webhooks::dev::Running;
use webhooks::event_sources::{QueueMapping, StreamMapping};
use webhooks_aws::request_counter::{item_size, RequestCounter};
use webhooks_aws::resources::{ResourceNames, TABLES};
use webhooks_aws::AwsClients;

/// On-demand prices used (us-east-1), in dollars.
pub mod prices {
    /// DynamoDB on-demand, per write request unit (1 KB).
    pub const DDB_WRU: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit (4 KB strongly consistent).
    pub const DDB_RRU: f64 = 0.125 / 1e6;
    /// SQS standard, per request (each 64 KB chunk of a payload).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// Lambda arm64, per GB-second.
    pub const LAMBDA_GB_S: f64 = 0.000_013_333_4;
    /// Lambda, per invocation.
    pub const LAMBDA_INVOCATION: f64 = 0.20 / 1e6;
    /// API Gateway HTTP API, per request (first 300 million a month).
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    /// EventBridge API destinations, per invocation.
    pub const EVENTBRIDGE_INVOCATION: f64 = 0.20 / 1e6;
    /// EventBridge custom events, per event published.
    pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
    /// Memory of every function (the template's `MemorySize`).
    pub const LAMBDA_MEMORY_MB: f64 = 256.0;
    /// Memory at which Lambda gives a function one full vCPU.
    pub const FULL_VCPU_MB: f64 = 1769.0;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: usize,
    pub endpoints: Vec<usize>,
    pub data_bytes: usize,
    pub publish_concurrency: usize,
    pub timeout: Duration,
    /// CPU seconds per delivery of the embedded end-to-end run, by
    /// endpoints per event (from `e2e`), for the Lambda estimate.
    pub e2e_cpu_per_delivery: HashMap<usize, f64>,
}

type Counts = BTreeMap<(String, String), u64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DynamoWrite,
    DynamoRead,
    Dynamo,
    Sqs,
    Other,
}

fn kind(service: &str, op: &str) -> Kind {
    let s = service.to_ascii_lowercase();
    if s.contains("dynamo") {
        match op {
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => {
                Kind::DynamoWrite
            }
            "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems" => Kind::DynamoRead,
            _ => Kind::Dynamo,
        }
    } else if s.contains("sqs") {
        Kind::Sqs
    } else {
        Kind::Other
    }
}

fn count(c: &Counts, op: &str) -> u64 {
    c.iter()
        .filter(|((_, o), _)| o == op)
        .map(|(_, n)| *n)
        .sum()
}

fn total(c: &Counts, k: Kind) -> u64 {
    c.iter()
        .filter(|((s, o), _)| kind(s, o) == k)
        .map(|(_, n)| *n)
        .sum()
}

fn merge(a: &Counts, b: &Counts) -> Counts {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_insert(0) += v;
    }
    out
}

fn per(c: &Counts, n: f64) -> Value {
    let mut m = Map::new();
    for ((s, o), v) in c {
        m.insert(format!("{s}.{o}"), json!(round(*v as f64 / n, 4)));
    }
    Value::Object(m)
}

/// Every item of a table (uncounted client).
async fn scan(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<Vec<HashMap<String, AttributeValue>>> {
    let mut items = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let out = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .with_context(|| format!("scanning {table}"))?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    Ok(items)
}

/// The entries of every table's secondary index (an uncounted scan of
/// each index, keys only).
async fn index_entries(
    ddb: &aws_sdk_dynamodb::Client,
    names: &ResourceNames,
) -> anyhow::Result<u64> {
    let mut entries = 0u64;
    for spec in TABLES {
        let Some(index) = spec.index else { continue };
        let table = names.table(spec.name);
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = ddb
                .scan()
                .table_name(&table)
                .index_name(index.name)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .with_context(|| format!("scanning {table}'s index {}", index.name))?;
            entries += u64::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
    }
    Ok(entries)
}

/// Deletes the tables and queues of `names` (best effort).
pub async fn delete_resources(aws: &AwsClients, names: &ResourceNames) {
    for spec in TABLES {
        let _ = aws
            .dynamodb
            .delete_table()
            .table_name(names.table(spec.name))
            .send()
            .await;
    }
    for q in [names.delivery_queue(), names.dead_letter_queue()] {
        if let Ok(out) = aws.sqs.get_queue_url().queue_name(q).send().await {
            if let Some(url) = out.queue_url {
                let _ = aws.sqs.delete_queue().queue_url(url).send().await;
            }
        }
    }
}

/// The average size of the items of a table, in bytes.
fn mean_size(items: &[HashMap<String, AttributeValue>]) -> f64 {
    if items.is_empty() {
        return 0.0;
    }
    items.iter().map(item_size).sum::<u64>() as f64 / items.len() as f64
}

fn units(bytes: f64, unit: f64) -> f64 {
    (bytes / unit).ceil().max(1.0)
}

/// GB-seconds a 256 MB arm64 function is billed for `cpu_seconds` of
/// CPU-bound work: it gets 256/1769 of a vCPU, so it runs 1769/256 times
/// longer than on one full core.
fn gb_seconds(cpu_seconds: f64) -> f64 {
    let duration = cpu_seconds * prices::FULL_VCPU_MB / prices::LAMBDA_MEMORY_MB;
    duration * prices::LAMBDA_MEMORY_MB / 1024.0
}

/// Runs each endpoint count once and returns counts, request units and costs.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        bail!("aws-requests needs AWS_ENDPOINT_URL (run it under scripts/with-moto.sh)");
    }
    let receiver = receiver::spawn(1)?;
    let mut results = Vec::new();
    for &e in &opts.endpoints {
        results.push(one(opts, e, &receiver).await?);
    }
    let single = results
        .first()
        .and_then(|r| r["publication_usd_per_million_events"].as_f64());
    let batched = batched_publication(opts, single).await?;
    Ok(json!({
        "publication_batched": batched,
        "events": opts.events,
        "data_bytes": opts.data_bytes,
        "prices_usd": {
            "dynamodb_per_million_wru": 0.625,
            "dynamodb_per_million_rru": 0.125,
            "sqs_per_million_requests": 0.40,
            "lambda_arm64_per_gb_s": prices::LAMBDA_GB_S,
            "lambda_per_million_invocations": 0.20,
            "http_api_per_million_requests": 1.00,
            "eventbridge_api_destinations_per_million_invocations": 0.20,
            "eventbridge_per_million_events": 1.00,
            "lambda_memory_mb": prices::LAMBDA_MEMORY_MB,
        },
        "results": results,
    }))
}

async fn one(opts: &Options, e: usize, receiver: &ReceiverProcess) -> anyhow::Result<Value> {
    let counter = RequestCounter::new();
    let prefix = format!(
        "bench-{}-{e}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let names = ResourceNames::new(&prefix);
    let system = System::build(&dev::settings(
        Backend::Aws {
            prefix: prefix.clone(),
            create_resources: true,
        },
        Some(counter.clone()),
    ))
    .await?;
    // Resource creation and the stream lookup are not the pipeline's.
    counter.reset();
    let plain = AwsClients::from_config(&webhooks_aws::sdk_config().await);
    let result = measure(opts, e, receiver, system, &counter, &plain, &names).await;
    delete_resources(&plain, &names).await;
    result
}

async fn measure(
    opts: &Options,
    e: usize,
    receiver: &ReceiverProcess,
    system: webhooks::backend::System,
    counter: &RequestCounter,
    plain: &AwsClients,
    names: &ResourceNames,
) -> anyhow::Result<Value> {
    let expected = opts.events * e;
    let gateway = Running::serve(&system, dev::loopback().await?, dev::JWT_SECRET.into())?;
    let api = ApiClient::new(&gateway.base_url())?;
    for _ in 0..e {
        api.create_endpoint(&receiver.url()).await?;
    }
    let setup = counter.snapshot();
    counter.reset();

    // Phase A: publish (the `api` Lambda).
    let cpu = cpu_time();
    api.publish(
        opts.events,
        &dev::event_data(opts.data_bytes),
        opts.publish_concurrency,
    )
    .await?;
    let publish_cpu = (cpu_time() - cpu).as_secs_f64();
    let publish = counter.snapshot();
    counter.reset();

    // Phase B: fan-out, fed by the events table's stream (its reads are
    // not counted: Lambda's stream event source mapping is not billed).
    let t0 = Instant::now();
    let cpu = cpu_time();
    let mut stream = StreamMapping::new(system.stream, system.fanout.clone());
    let (mut fanned, mut fanout_invocations) = (0usize, 0usize);
    while fanned < opts.events {
        let n = stream.step(Duration::from_millis(250)).await;
        if n > 0 {
            fanout_invocations += 1;
        }
        fanned += n;
        if t0.elapsed() > opts.timeout {
            bail!(
                "fan-out took more than {:?} ({fanned} of {} events)",
                opts.timeout,
                opts.events
            );
        }
    }
    let fanout_cpu = (cpu_time() - cpu).as_secs_f64();
    let fanout = counter.snapshot();
    let fanout_query_units = counter.query_read_units();
    let fanout_batch_units = counter.batch_get_read_units();
    let indexed_after_fanout = index_entries(&plain.dynamodb, names).await?;
    counter.reset();

    // Phase C: send, fed by the delivery queue.
    let t0 = Instant::now();
    let cpu = cpu_time();
    let mapping = Arc::new(QueueMapping::new(
        system.queue.clone(),
        system.sender.clone(),
    ));
    let received = Arc::new(AtomicUsize::new(0));
    let nonempty = Arc::new(AtomicUsize::new(0));
    let empty = Arc::new(AtomicUsize::new(0));
    let timeout = opts.timeout;
    let pollers: Vec<_> = (0..dev::POLLERS)
        .map(|_| {
            let (mapping, received, nonempty, empty) = (
                mapping.clone(),
                received.clone(),
                nonempty.clone(),
                empty.clone(),
            );
            tokio::spawn(async move {
                while received.load(Ordering::SeqCst) < expected && t0.elapsed() < timeout {
                    // 1 s: a long poll (SQS rounds the wait down to seconds).
                    let n = mapping.step(Duration::from_secs(1)).await;
                    if n == 0 {
                        empty.fetch_add(1, Ordering::SeqCst);
                    } else {
                        nonempty.fetch_add(1, Ordering::SeqCst);
                        received.fetch_add(n, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for p in pollers {
        p.await?;
    }
    // What the sender still keeps of the endpoints' figures (its full
    // batches of the last few seconds) is written too: a Lambda
    // environment writes it with a later batch.
    system.sender.flush_stats().await;
    let send_cpu = (cpu_time() - cpu).as_secs_f64();
    let send_seconds = t0.elapsed().as_secs_f64();
    let send = counter.snapshot();
    let send_query_units = counter.query_read_units();
    let send_batch_units = counter.batch_get_read_units();
    let indexed_after_send = index_entries(&plain.dynamodb, names).await?;
    gateway.stop().await;

    // Check the outcome and measure the items (uncounted client). The
    // deliveries table also holds the stream fan-out's notes of queued
    // deliveries (their own partitions, `queued#<org>`), measured apart.
    let (notes, deliveries): (Vec<_>, Vec<_>) = scan(&plain.dynamodb, &names.table("deliveries"))
        .await?
        .into_iter()
        .partition(|item| {
            matches!(item.get("endpoint_id"), Some(AttributeValue::S(p)) if p.starts_with("queued#"))
        });
    let delivered = deliveries
        .iter()
        .filter(|d| matches!(d.get("status"), Some(AttributeValue::S(s)) if s == "delivered"))
        .count();
    let first_try = deliveries
        .iter()
        .filter(|d| matches!(d.get("attempts"), Some(AttributeValue::L(l)) if l.len() == 1))
        .count();
    if delivered != expected || first_try != expected {
        bail!("{delivered} of {expected} deliveries delivered, {first_try} on the first try");
    }
    let events = scan(&plain.dynamodb, &names.table("events")).await?;
    let endpoints = scan(&plain.dynamodb, &names.table("endpoints")).await?;
    let cursors = scan(&plain.dynamodb, &names.table("cursors")).await?;
    let delivery_final = mean_size(&deliveries);
    let delivery_pending = mean_size(
        &deliveries
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.insert("attempts".into(), AttributeValue::L(vec![]));
                d.insert("status".into(), AttributeValue::S("pending".into()));
                d
            })
            .collect::<Vec<_>>(),
    );
    let event_size = mean_size(&events);
    let endpoint_size = mean_size(&endpoints);
    let cursor_size = mean_size(&cursors);

    let n = expected as f64;
    let pipeline = merge(&fanout, &send);
    let empty_receives = empty.load(Ordering::SeqCst) as u64;
    let sender_invocations = nonempty.load(Ordering::SeqCst) as f64;

    // Request units, from the operations each phase makes (see the
    // adapters in crates/aws): fan-out batch-reads its deliveries, puts each
    // new one and updates the org's cursor, queries the org's endpoints;
    // the sender batch-reads its
    // deliveries (one unit per item), gets each endpoint, updates each
    // delivery (the larger of its before and after sizes).
    let known = ["PutItem", "UpdateItem", "Query", "BatchGetItem", "GetItem"];
    let other = |c: &Counts, k: Kind| {
        c.iter()
            .filter(|((s, o), _)| kind(s, o) == k && !known.contains(&o.as_str()))
            .map(|(_, v)| *v as f64)
            .sum::<f64>()
    };
    // The fan-out's puts: each note once (a unit per KB of it), and a
    // record for each delivery it created instead (an event too old to be
    // noted).
    let note_sizes: Vec<f64> = notes.iter().map(|n| item_size(n) as f64).collect();
    let note_wru: f64 = note_sizes.iter().map(|b| units(*b, 1024.0)).sum();
    let note_bytes: f64 = note_sizes.iter().sum();
    let fanout_creates = count(&fanout, "PutItem").saturating_sub(notes.len() as u64);
    // Its updates: each note's confirmation (billed by the note's size),
    // and the org's cursor.
    let confirms = count(&fanout, "UpdateItem").min(notes.len() as u64);
    let confirm_wru = if notes.is_empty() {
        0.0
    } else {
        note_wru * confirms as f64 / notes.len() as f64
    };
    let cursor_updates = count(&fanout, "UpdateItem") - confirms;
    let wru = note_wru
        + confirm_wru
        + fanout_creates as f64 * units(delivery_pending, 1024.0)
        + cursor_updates as f64 * units(cursor_size, 1024.0)
        + count(&send, "UpdateItem") as f64 * units(delivery_final, 1024.0)
        + count(&send, "PutItem") as f64 * units(delivery_final, 1024.0)
        + other(&pipeline, Kind::DynamoWrite);
    // Its Queries: one of the org's endpoints per call, and its reads of
    // notes: before queueing, one per minute of the events, and after
    // writing its notes, one confirming read per org. Each is billed by
    // the items it read, which the request counter measures from its
    // response (the notes between 2 s before its events' first second and
    // their last).
    let endpoint_queries = fanout_invocations.min(count(&fanout, "Query") as usize) as f64;
    let note_queries = count(&fanout, "Query") as f64 - endpoint_queries;
    let mean_note = if notes.is_empty() {
        0.0
    } else {
        note_bytes / notes.len() as f64
    };
    let query_units = fanout_query_units + send_query_units;
    // The BatchGetItems, measured from what each asked and found (each key
    // billed as a GetItem): the fan-out's reads of the records of events
    // too old to be noted (the usual batch makes none), and the sender's
    // reads of its batch's records (eventually consistent for the first
    // receives of noted messages, `sender::batch_read`) and notes.
    let batch_units = fanout_batch_units + send_batch_units;
    let rru = batch_units
        + count(&send, "GetItem") as f64 * units(endpoint_size, 4096.0)
        + query_units
        + count(&fanout, "GetItem") as f64
        + other(&pipeline, Kind::DynamoRead);
    let publish_wru = count(&publish, "PutItem") as f64 * units(event_size, 1024.0);

    // Index writes, which the request counter cannot see: DynamoDB bills
    // one write (keys only, under 1 KB) for each entry a table write adds
    // to or removes from an index. The tables start empty, so the fan-out
    // added the entries found after it, and the sender removed the ones
    // gone after it. (A write that moved an entry would bill two and is not
    // seen here; none of a first try's writes changes an index key.)
    let index_writes = indexed_after_fanout as f64
        + indexed_after_fanout.saturating_sub(indexed_after_send) as f64
        + indexed_after_send.saturating_sub(indexed_after_fanout) as f64;
    let wru = wru + index_writes;
    let sqs_all = total(&pipeline, Kind::Sqs) as f64;
    let sqs_busy = sqs_all - empty_receives as f64;
    let table_writes = total(&pipeline, Kind::DynamoWrite) as f64 / n;
    let writes = table_writes + index_writes / n;
    let reads = total(&pipeline, Kind::DynamoRead) as f64 / n;

    // Lambda: invocations seen here; GB-s from CPU time (CPU-bound at
    // 256 MB; time spent waiting for receivers comes on top).
    let fanout_inv = fanout_invocations as f64 / n;
    let sender_inv = sender_invocations / n;
    let aws_cpu_per_delivery = (fanout_cpu + send_cpu) / n;
    let e2e_cpu = opts.e2e_cpu_per_delivery.get(&e).copied();
    let lambda_cpu = e2e_cpu.map_or(aws_cpu_per_delivery, |c| c.max(aws_cpu_per_delivery));
    let per_million = 1e6;
    let cost_ddb_w = wru / n * prices::DDB_WRU * per_million;
    let cost_ddb_r = rru / n * prices::DDB_RRU * per_million;
    let cost_sqs = sqs_busy / n * prices::SQS_REQUEST * per_million;
    let cost_lambda_inv = (fanout_inv + sender_inv) * prices::LAMBDA_INVOCATION * per_million;
    let cost_lambda_gbs = gb_seconds(lambda_cpu) * prices::LAMBDA_GB_S * per_million;
    let delivery_cost = cost_ddb_w + cost_ddb_r + cost_sqs + cost_lambda_inv + cost_lambda_gbs;
    // Waiting for receivers: each sender invocation waits for its slowest
    // POST; 100 ms per invocation of ten.
    let wait_100ms =
        sender_inv * 0.1 * prices::LAMBDA_MEMORY_MB / 1024.0 * prices::LAMBDA_GB_S * per_million;
    let events_per_delivery = 1.0 / e as f64;
    let publish_cpu_per_event = publish_cpu / opts.events as f64;
    let publish_cost_per_event = publish_wru / opts.events as f64 * prices::DDB_WRU
        + prices::HTTP_API_REQUEST
        + prices::LAMBDA_INVOCATION
        + gb_seconds(publish_cpu_per_event) * prices::LAMBDA_GB_S;
    let publish_cost = publish_cost_per_event * events_per_delivery * per_million;
    let eventbridge = (prices::EVENTBRIDGE_INVOCATION
        + prices::EVENTBRIDGE_EVENT * events_per_delivery)
        * per_million;

    let targets = json!({
        "dynamodb_writes_per_delivery_max_2": writes <= 2.0,
        "dynamodb_reads_per_delivery_max_1": reads <= 1.0,
        "sqs_requests_per_delivery_max_0_3": sqs_busy / n <= 0.3 + 1e-9,
        "delivery_cost_max_1_50": delivery_cost <= 1.5,
        "delivery_and_publication_cost_max_1_50": delivery_cost + publish_cost <= 1.5,
        "below_eventbridge_with_publication": delivery_cost + publish_cost < eventbridge,
    });
    println!(
        "aws-requests E={e}: {expected} deliveries; per delivery: DynamoDB writes {:.3} (table {:.3}, index {:.3}: {indexed_after_fanout} entries after the fan-out, {indexed_after_send} after sending), reads {:.3}, SQS {:.3} ({:.3} with {empty_receives} empty receives at the end); WRU {:.3}, RRU {:.3}; {} notes of queued deliveries, {:.0} B each",
        writes,
        table_writes,
        index_writes / n,
        reads,
        sqs_busy / n,
        sqs_all / n,
        wru / n,
        rru / n,
        notes.len(),
        mean_note
    );
    println!(
        "    Queries: {endpoint_queries} of endpoints, {note_queries} of notes; {:.3} RRU per delivery; BatchGetItems {:.3} RRU per delivery; both measured from what each read",
        query_units / n,
        batch_units / n
    );
    for ((s, o), v) in &pipeline {
        println!("    {s}.{o}: {v} ({:.4} per delivery)", *v as f64 / n);
    }
    for ((s, o), v) in &publish {
        println!(
            "    publication {s}.{o}: {v} ({:.4} per event)",
            *v as f64 / opts.events as f64
        );
    }
    println!(
        "  $ per million deliveries: DynamoDB {:.3} + {:.3}, SQS {:.3}, Lambda {:.3} + {:.3} (CPU {:.1} us/delivery) = {:.3}; publication share {:.3}; total {:.3}; EventBridge API destinations {:.3}",
        cost_ddb_w,
        cost_ddb_r,
        cost_sqs,
        cost_lambda_inv,
        cost_lambda_gbs,
        lambda_cpu * 1e6,
        delivery_cost,
        publish_cost,
        delivery_cost + publish_cost,
        eventbridge
    );
    Ok(json!({
        "endpoints_per_event": e,
        "events": opts.events,
        "deliveries": expected,
        "setup_requests": per(&setup, 1.0),
        "per_delivery": per(&pipeline, n),
        "fanout_phase_per_delivery": per(&fanout, n),
        "sender_phase_per_delivery": per(&send, n),
        "publication_per_event": per(&publish, opts.events as f64),
        "totals_per_delivery": {
            "dynamodb_writes": round(writes, 4),
            "dynamodb_table_writes": round(table_writes, 4),
            "dynamodb_index_writes": round(index_writes / n, 4),
            "index_entries_after_fanout": indexed_after_fanout,
            "index_entries_after_send": indexed_after_send,
            "dynamodb_reads": round(reads, 4),
            "sqs_requests": round(sqs_busy / n, 4),
            "sqs_requests_with_idle_receives": round(sqs_all / n, 4),
            "idle_receives_at_end": empty_receives,
            "dynamodb_wru": round(wru / n, 4),
            "queued_notes": notes.len(),
            "queued_note_mean_bytes": round(mean_note, 1),
            "dynamodb_rru": round(rru / n, 4),
            "dynamodb_query_rru_measured": round(query_units / n, 4),
            "endpoint_queries": endpoint_queries,
            "note_queries": note_queries,
            "fanout_invocations": round(fanout_inv, 5),
            "sender_invocations": round(sender_inv, 4),
            "mean_sender_batch": round(n / sender_invocations.max(1.0), 2),
        },
        "item_bytes": {
            "event": round(event_size, 0),
            "endpoint": round(endpoint_size, 0),
            "delivery_pending": round(delivery_pending, 0),
            "delivery_delivered": round(delivery_final, 0),
            "cursor": round(cursor_size, 0),
        },
        "cpu": {
            "publish_s_per_event": round(publish_cpu_per_event, 7),
            "fanout_s_per_delivery": round(fanout_cpu / n, 7),
            "sender_s_per_delivery": round(send_cpu / n, 7),
            "e2e_embedded_s_per_delivery": e2e_cpu.map(|c| round(c, 7)),
            "used_for_lambda_s_per_delivery": round(lambda_cpu, 7),
            "sender_phase_seconds_on_moto": round(send_seconds, 2),
        },
        "usd_per_million_deliveries": {
            "dynamodb_writes": round(cost_ddb_w, 4),
            "dynamodb_reads": round(cost_ddb_r, 4),
            "sqs": round(cost_sqs, 4),
            "lambda_invocations": round(cost_lambda_inv, 4),
            "lambda_gb_s_cpu": round(cost_lambda_gbs, 4),
            "delivery_total": round(delivery_cost, 4),
            "plus_lambda_if_receivers_take_100ms": round(wait_100ms, 4),
            "publication_share": round(publish_cost, 4),
            "publication_per_million_events": round(publish_cost_per_event * per_million, 4),
            "delivery_and_publication": round(delivery_cost + publish_cost, 4),
            "eventbridge_api_destinations": round(eventbridge, 4),
        },
        "publication_usd_per_million_events": round(publish_cost_per_event * per_million, 4),
        "targets_met": targets,
    }))
}

/// Events published through `POST /v1/events/batch` per measurement: a
/// few dozen requests at least, for a CPU time worth reading.
const BATCHED_EVENTS_MIN: usize = 2_000;

/// Publication through `POST /v1/events/batch`, 100 events per request,
/// from a publisher process (so this process's CPU time is the api's): AWS
/// requests per event and the cost per million events, next to the single
/// route's (`single`, from the E = 1 run).
async fn batched_publication(opts: &Options, single: Option<f64>) -> anyhow::Result<Value> {
    let counter = RequestCounter::new();
    let prefix = format!(
        "bench-batch-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let names = ResourceNames::new(&prefix);
    let system = System::build(&dev::settings(
        Backend::Aws {
            prefix: prefix.clone(),
            create_resources: true,
        },
        Some(counter.clone()),
    ))
    .await?;
    let plain = AwsClients::from_config(&webhooks_aws::sdk_config().await);
    let result = async {
        let gateway = Running::serve(&system, dev::loopback().await?, dev::JWT_SECRET.into())?;
        let events = opts.events.max(BATCHED_EVENTS_MIN);
        let job = publisher::Job {
            base_url: gateway.base_url(),
            events,
            data_bytes: opts.data_bytes,
            concurrency: opts.publish_concurrency.min(4),
            route: publisher::Route::Batch,
        };
        counter.reset();
        let cpu = cpu_time();
        let mut child = PublisherProcess::spawn(&job)?;
        let t0 = Instant::now();
        let seconds = loop {
            if let Some(r) = child.finished() {
                break r?.seconds;
            }
            if t0.elapsed() > opts.timeout {
                bail!("batched publication took more than {:?}", opts.timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let cpu = (cpu_time() - cpu).as_secs_f64();
        let counts = counter.snapshot();
        gateway.stop().await;
        let stored = scan(&plain.dynamodb, &names.table("events")).await?;
        if stored.len() != events {
            bail!("{} of {events} batched events stored", stored.len());
        }
        let n = events as f64;
        let event_size = mean_size(&stored);
        let requests = events.div_ceil(BATCH_EVENTS) as f64;
        let other_writes = total(&counts, Kind::DynamoWrite) - count(&counts, "PutItem");
        let wru = count(&counts, "PutItem") as f64 * units(event_size, 1024.0) + other_writes as f64;
        let rru = total(&counts, Kind::DynamoRead) as f64;
        let per_million = 1e6;
        let usd_ddb_w = wru / n * prices::DDB_WRU * per_million;
        let usd_ddb_r = rru / n * prices::DDB_RRU * per_million;
        let usd_sqs = total(&counts, Kind::Sqs) as f64 / n * prices::SQS_REQUEST * per_million;
        let usd_http = requests / n * prices::HTTP_API_REQUEST * per_million;
        let usd_inv = requests / n * prices::LAMBDA_INVOCATION * per_million;
        let usd_gbs = gb_seconds(cpu / n) * prices::LAMBDA_GB_S * per_million;
        let usd = usd_ddb_w + usd_ddb_r + usd_sqs + usd_http + usd_inv + usd_gbs;
        println!(
            "aws-requests batched publication: {events} events in {} requests of {BATCH_EVENTS} ({:.1} s on moto); per event: {} AWS requests, WRU {:.2} (event item {:.0} B); $ per million events: DynamoDB {:.3} + {:.3}, API Gateway {:.3}, Lambda {:.3} + {:.4} = {:.3} (single route {})",
            requests,
            seconds,
            round(counts.values().sum::<u64>() as f64 / n, 4),
            wru / n,
            event_size,
            usd_ddb_w,
            usd_ddb_r,
            usd_http,
            usd_inv,
            usd_gbs,
            usd,
            single.map_or("not measured".to_string(), |s| format!("{s:.3}")),
        );
        for ((svc, op), v) in &counts {
            println!("    batched publication {svc}.{op}: {v} ({:.4} per event)", *v as f64 / n);
        }
        Ok(json!({
            "events": events,
            "events_per_request": BATCH_EVENTS,
            "http_requests": requests,
            "aws_requests_per_event": per(&counts, n),
            "aws_requests_per_event_total": round(counts.values().sum::<u64>() as f64 / n, 4),
            "event_item_bytes": round(event_size, 0),
            "dynamodb_wru_per_event": round(wru / n, 4),
            "api_cpu_s_per_event": round(cpu / n, 7),
            "usd_per_million_events": {
                "dynamodb_writes": round(usd_ddb_w, 4),
                "dynamodb_reads": round(usd_ddb_r, 4),
                "sqs": round(usd_sqs, 4),
                "http_api": round(usd_http, 4),
                "lambda_invocations": round(usd_inv, 4),
                "lambda_gb_s_cpu": round(usd_gbs, 4),
                "total": round(usd, 4),
                "single_route_total": single.map(|s| round(s, 4)),
            },
            "target_max_0_50_met": usd <= 0.5,
        }))
    }
    .await;
    delete_resources(&plain, &names).await;
    result
}

/// The fan-out target: one event to `endpoints` endpoints on moto
/// must be fanned out by one invocation, with its requests batched or
/// concurrent. Counts the invocation's requests and times it.
pub async fn wide_fanout(endpoints: usize, timeout: Duration) -> anyhow::Result<Value> {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        bail!("the wide fan-out needs AWS_ENDPOINT_URL (run it under scripts/with-moto.sh)");
    }
    let counter = RequestCounter::new();
    let prefix = format!(
        "bench-wide-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let names = ResourceNames::new(&prefix);
    let system = System::build(&dev::settings(
        Backend::Aws {
            prefix: prefix.clone(),
            create_resources: true,
        },
        Some(counter.clone()),
    ))
    .await?;
    let plain = AwsClients::from_config(&webhooks_aws::sdk_config().await);
    let result = async {
        let gateway = Running::serve(&system, dev::loopback().await?, dev::JWT_SECRET.into())?;
        let api = ApiClient::new(&gateway.base_url())?;
        let created: Vec<anyhow::Result<dev::CreatedEndpoint>> =
            futures::stream::iter(0..endpoints)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        api.create_endpoint(&format!("http://127.0.0.1:9/hook/{i}"))
                            .await
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
        created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        api.publish(1, &dev::event_data(1024), 1).await?;
        gateway.stop().await;
        counter.reset();

        let t0 = Instant::now();
        let mut stream = StreamMapping::new(system.stream, system.fanout.clone());
        let (mut fanned, mut invocations, mut busy) = (0usize, 0usize, Duration::ZERO);
        while fanned < 1 && t0.elapsed() < timeout {
            let t = Instant::now();
            let n = stream.step(Duration::from_millis(250)).await;
            if n > 0 {
                invocations += 1;
                busy += t.elapsed();
            }
            fanned += n;
        }
        let counts = counter.snapshot();
        let deliveries = scan(&plain.dynamodb, &names.table("deliveries"))
            .await?
            .len();
        let row = json!({
            "endpoints": endpoints,
            "deliveries_created": deliveries,
            "invocations": invocations,
            "invocation_seconds_on_moto": round(busy.as_secs_f64(), 2),
            "requests": per(&counts, 1.0),
        });
        println!("wide fan-out: {row}");
        Ok::<Value, anyhow::Error>(row)
    }
    .await;
    delete_resources(&plain, &names).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_follow_dynamodb_rules() {
        let mut item = HashMap::new();
        item.insert("id".to_string(), AttributeValue::S("abc".into()));
        item.insert("n".to_string(), AttributeValue::N("12345".into()));
        item.insert(
            "l".to_string(),
            AttributeValue::L(vec![AttributeValue::Bool(true)]),
        );
        // id: 2 + 3; n: 1 + (3 + 1); l: 1 + 3 + (1 + 1)
        assert_eq!(item_size(&item), 5 + 5 + 6);
    }

    #[test]
    fn a_cpu_second_at_256_mb_bills_about_1_7_gb_s() {
        assert!((gb_seconds(1.0) - 1769.0 / 1024.0).abs() < 1e-9);
    }

    #[test]
    fn operations_are_classified() {
        assert_eq!(kind("DynamoDB", "PutItem"), Kind::DynamoWrite);
        assert_eq!(kind("dynamodb", "BatchGetItem"), Kind::DynamoRead);
        assert_eq!(kind("SQS", "ReceiveMessage"), Kind::Sqs);
    }
}
