//! Issue 22, defect 4: how long one sweep pass takes to queue again the
//! lost messages of 10 000 overdue deliveries, all in one org and spread
//! among 1 000 orgs, on moto, against the sweeper Lambda's budget (its
//! 240 s timeout less the margin the handler keeps). Each delivery has its
//! own event (the worst case: one event read each). Every AWS request of
//! the pass is counted.
//!
//! The deliveries are written straight into the table (BatchWriteItem), as
//! a failed first attempt whose message was then lost, due 20 minutes ago;
//! each run writes them so again before its pass. Moto answers one request
//! at a time (one Python process), so the figure is an upper bound of what
//! DynamoDB and SQS, which answer many at once, take.

use crate::aws_requests::delete_resources;
use crate::measure::{median, round};
use anyhow::{bail, Context as _};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::stream::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use webhooks_aws::adapters::{adapters, Locations};
use webhooks_aws::items::{DeliveryItem, EventItem};
use webhooks_aws::request_counter::RequestCounter;
use webhooks_aws::resources::{create_all, ResourceNames};
use webhooks_aws::AwsClients;
use webhooks_domain::{Delivery, Endpoint, Event, EventType, Secret, Subscription};
use webhooks_pipeline::{Budget, Sweeper};
use webhooks_ports::Adapters;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Overdue deliveries per scenario.
    pub deliveries: usize,
    /// Orgs they are spread among, one scenario each.
    pub orgs: Vec<usize>,
    /// Passes per scenario; medians are reported.
    pub runs: usize,
}

/// What the sweeper Lambda gives a pass: its timeout less the handler's
/// margin.
fn lambda_budget() -> Duration {
    Duration::from_secs(240).saturating_sub(webhooks_fn_sweeper::MARGIN)
}

/// Most items one BatchWriteItem takes.
const BATCH_WRITE: usize = 25;

pub async fn run(o: &Options) -> anyhow::Result<Value> {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        bail!(
            "the reconciler benchmark needs AWS_ENDPOINT_URL (run it under scripts/with-moto.sh)"
        );
    }
    let mut rows = Vec::new();
    for &orgs in &o.orgs {
        rows.push(scenario(o.deliveries, orgs, o.runs.max(1)).await?);
    }
    let budget = lambda_budget().as_secs_f64();
    let fits = rows.iter().all(|r| {
        r["pass_seconds_median"]
            .as_f64()
            .is_some_and(|s| s < budget)
    });
    Ok(json!({
        "lambda_budget_seconds": budget,
        "fits_the_budget": fits,
        "scenarios": rows,
    }))
}

async fn scenario(deliveries: usize, orgs: usize, runs: usize) -> anyhow::Result<Value> {
    let prefix = format!(
        "bench-rec-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let names = ResourceNames::new(&prefix);
    let config = webhooks_testkit::aws::emulator_config().await;
    let plain = AwsClients::from_config(&config);
    let made = create_all(&plain, &names).await?;
    let locations = Locations::for_names(&names, &made);
    let counter = RequestCounter::new();
    let counted = adapters(&AwsClients::counted(&config, &counter), &locations);
    let result = async {
        let t = Instant::now();
        let items = seed(&plain, &names, &adapters(&plain, &locations), deliveries, orgs).await?;
        let seeded = t.elapsed();
        let sweeper = Sweeper::from_adapters(&counted, Duration::from_secs(120));
        let mut times = Vec::with_capacity(runs);
        let mut requests = Vec::with_capacity(runs);
        for run in 0..runs {
            if run > 0 {
                write_all(&plain.dynamodb, &names.table("deliveries"), &items).await?;
            }
            counter.reset();
            let t = Instant::now();
            let report = sweeper
                .sweep_within(Budget::of(lambda_budget()))
                .await;
            let took = t.elapsed();
            let counts = counter.snapshot();
            println!(
                "reconcile: {deliveries} overdue in {orgs} org(s), pass {}: {:.1} s, requeued {}, out of time {}",
                run + 1,
                took.as_secs_f64(),
                report.reconciled,
                report.out_of_time
            );
            if report.reconciled != deliveries || report.failed_orgs > 0 {
                bail!("the pass requeued {} of {deliveries} ({report:?})", report.reconciled);
            }
            times.push(took.as_secs_f64());
            requests.push(counts.values().sum::<u64>() as f64);
        }
        let row = json!({
            "orgs": orgs,
            "overdue_deliveries": deliveries,
            "seconds_to_seed": round(seeded.as_secs_f64(), 1),
            "pass_seconds": times.iter().map(|t| round(*t, 2)).collect::<Vec<_>>(),
            "pass_seconds_median": round(median(&times), 2),
            "requests_per_delivery": round(median(&requests) / deliveries as f64, 3),
            "deliveries_per_second": round(deliveries as f64 / median(&times), 0),
        });
        println!("reconcile: {row}");
        Ok::<Value, anyhow::Error>(row)
    }
    .await;
    delete_resources(&plain, &names).await;
    result
}

/// `orgs` orgs with one endpoint each and `deliveries` overdue deliveries
/// spread among them, each of its own event; every cursor past every event
/// (only the reconciler has work). The deliveries' items, to write again.
async fn seed(
    aws: &AwsClients,
    names: &ResourceNames,
    a: &Adapters,
    deliveries: usize,
    orgs: usize,
) -> anyhow::Result<Vec<HashMap<String, AttributeValue>>> {
    let now = chrono::Utc::now();
    let org_ids: Vec<String> = (0..orgs).map(|i| format!("org-{i:05}")).collect();
    let endpoints: Vec<String> = futures::stream::iter(org_ids.iter())
        .map(|org| async move {
            let ep = Endpoint::new(
                org,
                "https://receiver.invalid/".into(),
                Subscription::All,
                Secret::generate(),
            );
            let mut tries = 0;
            loop {
                tries += 1;
                match a.endpoints.create(&ep, 100).await {
                    Ok(webhooks_ports::Created::Written) => break,
                    Ok(webhooks_ports::Created::LimitReached) => {
                        bail!("endpoint of {org} refused")
                    }
                    // A busy emulator times out a write that was made (the
                    // SDK's retry finds it made), or fails one.
                    Err(e) => {
                        if a.endpoints.get(org, &ep.id).await?.is_some() {
                            break;
                        }
                        if tries >= 5 {
                            return Err(e.into());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let past_all =
                webhooks_domain::ids::id_floor_at("evt", now + chrono::Duration::days(1));
            a.cursors.ensure(org, &past_all).await?;
            Ok::<String, anyhow::Error>(ep.id)
        })
        .buffered(4)
        .try_collect()
        .await?;
    let mut events = Vec::with_capacity(deliveries);
    let mut items = Vec::with_capacity(deliveries);
    for n in 0..deliveries {
        let org = &org_ids[n % orgs];
        let event = Event::new(
            org,
            EventType::InvoicePaid,
            serde_json::value::RawValue::from_string(format!(
                r#"{{"invoice":"in_{n}","amount":4200,"currency":"eur"}}"#
            ))?,
        );
        let mut d = Delivery::new_at(
            org,
            &endpoints[n % orgs],
            &event.id,
            event.event_type,
            now - chrono::Duration::hours(1),
        );
        // Its first attempt failed; the message carrying its retry, due
        // 20 minutes ago, was lost.
        d.attempt_count = 1;
        d.next_attempt_at = Some(now - chrono::Duration::minutes(20));
        d.chain = Some(format!("lost-{n}"));
        events.push(serde_dynamo::to_item(EventItem::from_event(&event))?);
        items.push(serde_dynamo::to_item(DeliveryItem::from_delivery(&d))?);
    }
    write_all(&aws.dynamodb, &names.table("events"), &events).await?;
    write_all(&aws.dynamodb, &names.table("deliveries"), &items).await?;
    Ok(items)
}

/// Puts every item, 25 a request, a few requests at once.
async fn write_all(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: &[HashMap<String, AttributeValue>],
) -> anyhow::Result<()> {
    futures::stream::iter(items.chunks(BATCH_WRITE))
        .map(|chunk| async move {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder().set_item(Some(item.clone())).build()?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<anyhow::Result<_>>()?;
            while !pending.is_empty() {
                let out = ddb
                    .batch_write_item()
                    .request_items(table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .with_context(|| format!("BatchWriteItem {table}"))?;
                if let Some(mut left) = out.unprocessed_items {
                    pending = left.remove(table).unwrap_or_default();
                }
            }
            Ok::<(), anyhow::Error>(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
