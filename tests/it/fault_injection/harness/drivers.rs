//! What drives the faulty system besides the stream: the sender's pollers
//! (some of their invocations killed) and the publisher of the events.

use super::system::FaultySystem;
use crate::fault_injection::kinds;
use crate::fault_injection::scenarios::Scenario;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use webhooks::event_sources::QueueMapping;
use webhooks_domain::Event;
use webhooks_faults::Faults;
use webhooks_ports::EventStore;

/// The sender's pollers, as Lambda runs several invocations at once.
pub(super) struct Pollers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pollers {
    pub(super) fn start(sys: &FaultySystem, faults: &Arc<Faults>, s: &Scenario) -> Pollers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..s.pollers)
            .map(|_| {
                tokio::spawn(poll_loop(
                    sys.sender.clone(),
                    faults.clone(),
                    s.rates.sender_crash,
                    s.request_timeout + Duration::from_millis(100),
                    s.poll_idle,
                    stop.clone(),
                ))
            })
            .collect();
        Pollers { stop, tasks }
    }

    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One sender poller: invokes the handler on a batch after another; some
/// invocations are killed at a random moment.
async fn poll_loop(
    mapping: Arc<QueueMapping>,
    faults: Arc<Faults>,
    crash: f64,
    crash_within: Duration,
    idle: Duration,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let m = mapping.clone();
        let mut task = tokio::spawn(async move { m.step(Duration::from_millis(50)).await });
        let received = if faults.chance(crash) {
            let at = Duration::from_millis(faults.below(crash_within.as_millis() as u64 + 1));
            match tokio::time::timeout(at, &mut task).await {
                Ok(r) => r.unwrap_or(0),
                Err(_) => {
                    task.abort();
                    let _ = task.await;
                    faults.record(kinds::SENDER_CRASH);
                    1
                }
            }
        } else {
            task.await.unwrap_or(0)
        };
        if received == 0 {
            tokio::time::sleep(idle).await;
        }
    }
}

/// Writes the events while the pipeline runs, and keeps those written.
pub(super) struct Publisher {
    task: JoinHandle<()>,
    published: Arc<Mutex<Vec<Event>>>,
}

impl Publisher {
    pub(super) fn start(
        events: Arc<dyn EventStore>,
        to_publish: Vec<Event>,
        every: Duration,
    ) -> Publisher {
        let published: Arc<Mutex<Vec<Event>>> = Arc::default();
        let written = published.clone();
        let task = tokio::spawn(async move {
            for e in to_publish {
                assert!(events.put_if_absent(&e).await.expect("put event"));
                written.lock().expect("lock").push(e);
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
            }
        });
        Publisher { task, published }
    }

    pub(super) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The stream records of some published events, handed to the fan-out
    /// handler again.
    pub(super) fn replayed_batch(
        &self,
        faults: &Faults,
    ) -> aws_lambda_events::event::dynamodb::Event {
        let published = self.published.lock().expect("lock");
        let mut batch = aws_lambda_events::event::dynamodb::Event::default();
        if published.is_empty() {
            return batch;
        }
        let start = faults.below(published.len() as u64) as usize;
        let n = 1 + faults.below(20) as usize;
        batch.records = published[start..(start + n).min(published.len())]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                webhooks_aws::stream::insert_record(e, 1_000_000 + i as u64).expect("record")
            })
            .collect();
        batch
    }

    /// Stops publishing (if it has not finished) and returns what was
    /// published.
    pub(super) async fn stop(self) -> Vec<Event> {
        self.task.abort();
        let _ = self.task.await;
        let published = self.published.lock().expect("lock");
        published.clone()
    }
}
