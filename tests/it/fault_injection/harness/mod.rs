//! A run of a scenario over the faulty system: a receiver whose answers the
//! scenario's rates decide, a storm with faults on, a drain with them off,
//! then the accounting of what came out.

mod accounting;
mod drivers;
mod system;

pub(super) use system::{memory_backend, moto_backend};

use super::figures::Figures;
use super::kinds;
use super::scenarios::{Rates, Scenario};
use accounting::{count_outcomes, count_records, count_requests};
use drivers::{Pollers, Publisher};
use serde_json::value::RawValue;
use std::future::Future;
use std::time::Duration;
use system::{Backend, FaultySystem};
use tokio::time::Instant;
use webhooks_domain::{Event, EventType};
use webhooks_faults::{rng_for, Faults, Rng};
use webhooks_testkit::{Received, Receiver, Reply};

/// The receiver's answer to a request: the same for the same (endpoint,
/// event, attempt) whatever the timing.
fn answer_for(seed: u64, r: Rates, timeout: Duration) -> impl Fn(usize, &Received) -> Reply {
    move |_, req| {
        let id = req.header("webhook-id").unwrap_or("");
        let attempt = req.header("x-webhook-attempt").unwrap_or("");
        if rng_for(seed, &["pair", &req.path, id]).chance(r.poisoned_pairs) {
            return Reply::Status(503);
        }
        let mut g = rng_for(seed, &["attempt", &req.path, id, attempt]);
        let mut x = g.unit();
        let mut pick = |p: f64| {
            let hit = x < p;
            x -= p;
            hit
        };
        if pick(r.r500) {
            Reply::Status(500)
        } else if pick(r.r429) {
            Reply::Throttle(1)
        } else if pick(r.timeout) {
            Reply::Delay(timeout + Duration::from_secs(1), 200)
        } else if pick(r.reset) {
            Reply::Reset
        } else if pick(r.slow_body) {
            // Four pieces: some bodies end in time, some are cut by the
            // client's timeout after the 200 status line.
            let every = Duration::from_millis(20 + g.below(timeout.as_millis() as u64 / 2));
            Reply::SlowBody {
                status: 200,
                chunks: 4,
                every,
            }
        } else {
            Reply::Status(200)
        }
    }
}

/// The events of the scenario, every org's interleaved by id.
fn events_to_publish(s: &Scenario) -> Vec<Event> {
    let mut gen = Rng::new(s.seed);
    let types: Vec<EventType> = EventType::ALL
        .into_iter()
        .filter(|t| *t != EventType::BillingSuspended)
        .collect();
    let mut events: Vec<Event> = Vec::new();
    for (org, n, _) in &s.orgs {
        for i in 0..*n {
            let t = types[gen.below(types.len() as u64) as usize];
            let data = format!(r#"{{"n":{i},"org":"{org}","note":"fault injection"}}"#);
            events.push(Event::new(
                org,
                t,
                RawValue::from_string(data).expect("json"),
            ));
        }
    }
    events.sort_by(|a, b| a.id.cmp(&b.id));
    events
}

/// Runs `fut` as one fan-out invocation: killed if it outlives `limit`.
async fn invoke<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// Faults on: the stream, duplicated stream batches and a sweep every three
/// seconds, until the pipeline settles or the storm's time is up. Whether it
/// settled.
async fn storm(
    sys: &mut FaultySystem,
    faults: &Faults,
    s: &Scenario,
    publisher: &Publisher,
    until: Instant,
    expected: usize,
) -> bool {
    let limit = s.fanout_invocation_limit;
    let mut last_sweep = Instant::now();
    let mut last_check = Instant::now();
    while Instant::now() < until {
        invoke(limit, sys.stream.step(s.stream_wait)).await;
        if faults.chance(s.rates.duplicate_batch) {
            let batch = publisher.replayed_batch(faults);
            if !batch.records.is_empty() {
                faults.record(kinds::DUPLICATED_STREAM_BATCH);
                invoke(
                    limit,
                    webhooks_fn_fanout::fan_out_records(&sys.fanout, batch),
                )
                .await;
            }
        }
        if last_sweep.elapsed() > Duration::from_secs(3) {
            invoke(limit, sys.sweeper.sweep()).await;
            last_sweep = Instant::now();
        }
        if publisher.is_finished() && last_check.elapsed() > s.check_every {
            last_check = Instant::now();
            if sys.quiescent(expected).await {
                return true;
            }
        }
    }
    false
}

/// With faults off: the sweeper catches what the stream dropped, the queue
/// drains, until the pipeline settles or the drain's time is up. Whether it
/// settled.
async fn drain(
    sys: &mut FaultySystem,
    s: &Scenario,
    publisher: &Publisher,
    expected: usize,
) -> bool {
    let limit = s.fanout_invocation_limit;
    let deadline = Instant::now() + s.drain_limit;
    let mut settled = false;
    while !settled && Instant::now() < deadline {
        invoke(limit, sys.sweeper.sweep()).await;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            invoke(limit, sys.stream.step(s.stream_wait)).await;
        }
        settled = publisher.is_finished() && sys.quiescent(expected).await;
    }
    settled
}

/// Runs the scenario on the backend and counts what came out.
pub(super) async fn run(s: Scenario, backend: Backend) -> Figures {
    let started = Instant::now();
    let faults = Faults::new(s.seed);
    let receiver = Receiver::start(answer_for(s.seed, s.rates, s.request_timeout)).await;
    let mut sys = FaultySystem::wire(backend, &faults, &s);
    sys.create_endpoints(&s, &receiver).await;
    let to_publish = events_to_publish(&s);
    let expected = sys.expected_pairs(&to_publish);

    let pollers = Pollers::start(&sys, &faults, &s);
    let publisher = Publisher::start(sys.adapters.events.clone(), to_publish, s.publish_every);
    let storm_deadline = started + s.storm_limit;
    let quiescent_under_faults = storm(
        &mut sys,
        &faults,
        &s,
        &publisher,
        storm_deadline,
        expected.len(),
    )
    .await;
    let storm_secs = started.elapsed().as_secs_f64();
    faults.set_enabled(false);
    let settled = quiescent_under_faults || drain(&mut sys, &s, &publisher, expected.len()).await;
    pollers.stop().await;
    let published = publisher.stop().await;

    let mut f = Figures {
        scenario: s.name.to_string(),
        seed: s.seed,
        events: published.len(),
        endpoints: sys.endpoints.len(),
        deliveries_expected: expected.len(),
        quiescent_under_faults,
        quiescent: settled,
        storm_secs,
        ..Figures::default()
    };
    let deliveries = sys.all_deliveries().await;
    let exchanges = receiver.exchanges();
    let by_pair = count_records(&mut f, &deliveries, &expected);
    let requests = count_requests(&mut f, &faults, &sys, &exchanges, &expected);
    count_outcomes(&mut f, &expected, &by_pair, &requests);
    (f.delivery_queue_depth, f.dead_letter_queue_depth) = sys.depth.get().await;
    f.faults = faults.counts();
    f.faults_total = faults.total();
    f.total_secs = started.elapsed().as_secs_f64();
    f
}
