//! The receivers: one behaviour per endpoint, answering the sender's POSTs
//! on the virtual clock, and watching what no receiver should ever see: two
//! POSTs of one delivery at once, an attempt number used again after it was
//! recorded, a signature that is not the endpoint's. One exception, the
//! one the README promises: a fresh delivery's first attempt takes no
//! lease, so two receipts of the same queue message at once (the SQS
//! model handed it out again while its first handler had it) may both
//! POST attempt 1, at once or one after the other's record. Nothing else
//! may: another message, another attempt number, or one message not held
//! by two handlers at that moment is a violation.

use crate::chaos::gate;
use crate::check::Violations;
use crate::coverage::{Coverage, Path};
use crate::ledger::Ledger;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use webhooks_domain::delivery::AttemptResult;
use webhooks_domain::signing::x_signature;
use webhooks_domain::{Payload, Secret};
use webhooks_memory::MemoryDeliveryStore;
use webhooks_pipeline::{HttpOutcome, Transport};
use webhooks_ports::{Clock, DeliveryStore};

/// How an endpoint answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 2xx, but for `fail_rate` of the attempts (500, 503, a reset).
    Healthy { fail_rate: f64 },
    /// As `Healthy`, but every answer takes about `latency` (±20 %): a
    /// receiver that does its work before answering.
    Slow { latency: Duration, fail_rate: f64 },
    /// Often failing: 500, 400, resets and timeouts.
    Flaky { fail_rate: f64 },
    /// 429 with a `Retry-After` of up to `max_wait`, `rate` of the time.
    Throttling { rate: f64, max_wait: Duration },
    /// Down (500 or timeouts) between two times, healthy otherwise.
    Outage {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Healthy until `from`, then 410 Gone for ever.
    GoneFrom(DateTime<Utc>),
    /// Never answers: every attempt takes the whole timeout.
    BlackHole,
}

/// What the transport knows of one endpoint.
struct Receiver {
    behaviour: Behaviour,
    /// Every secret the endpoint has had, in order; the last is current.
    secrets: Vec<(DateTime<Utc>, Secret)>,
    /// A secret being rotated in: the API may store it (and the sender
    /// sign with it) before the call answers.
    incoming: Option<Secret>,
}

/// Every endpoint's receiver, keyed by URL.
pub struct Receivers {
    clock: Arc<dyn Clock>,
    deliveries: Arc<MemoryDeliveryStore>,
    request_timeout: Duration,
    state: Mutex<State>,
    violations: Violations,
    /// What the queue did with each message: whether one was held by two
    /// handlers at once.
    ledger: Ledger,
    coverage: Coverage,
}

struct State {
    rng: StdRng,
    receivers: HashMap<String, Receiver>,
    /// Each delivery's POSTs in flight: the message whose handler made
    /// it, and its attempt number.
    in_flight: HashMap<String, Vec<(Option<String>, u32)>>,
    /// Every answer to (delivery, attempt number): its HTTP status, or
    /// none (a timeout, a reset), and its `Retry-After`.
    answers: HashMap<(String, u32), Vec<Answer>>,
    posts: u64,
}

impl Receivers {
    pub fn new(
        seed: u64,
        clock: Arc<dyn Clock>,
        deliveries: Arc<MemoryDeliveryStore>,
        request_timeout: Duration,
        violations: Violations,
        ledger: Ledger,
        coverage: Coverage,
    ) -> Arc<Self> {
        Arc::new(Receivers {
            clock,
            deliveries,
            request_timeout,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                receivers: HashMap::new(),
                in_flight: HashMap::new(),
                answers: HashMap::new(),
                posts: 0,
            }),
            violations,
            ledger,
            coverage,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the receiver at `url`, holding `secret`.
    pub fn add(&self, url: &str, behaviour: Behaviour, secret: Secret) {
        let now = self.clock.now();
        self.state().receivers.insert(
            url.to_string(),
            Receiver {
                behaviour,
                secrets: vec![(now, secret)],
                incoming: None,
            },
        );
    }

    /// A rotation to `secret` is being asked for.
    pub fn rotating(&self, url: &str, secret: Secret) {
        if let Some(r) = self.state().receivers.get_mut(url) {
            r.incoming = Some(secret);
        }
    }

    /// The rotation call ended; `took`: the secret is stored.
    pub fn rotation_done(&self, url: &str, secret: &Secret, took: bool) {
        let now = self.clock.now();
        if let Some(r) = self.state().receivers.get_mut(url) {
            r.incoming = None;
            if took {
                r.secrets.push((now, secret.clone()));
            }
        }
    }

    /// The endpoint's current secret, as the sim was told.
    pub fn current_secret(&self, url: &str) -> Option<Secret> {
        self.state()
            .receivers
            .get(url)
            .and_then(|r| r.secrets.last().map(|(_, s)| s.clone()))
    }

    /// What the receiver answered to each POST of that attempt.
    pub fn answered(&self, delivery_id: &str, attempt: u32) -> Vec<Answer> {
        self.state()
            .answers
            .get(&(delivery_id.to_string(), attempt))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the endpoint at `url` never answers.
    pub fn is_black_hole(&self, url: &str) -> bool {
        self.state()
            .receivers
            .get(url)
            .is_some_and(|r| matches!(r.behaviour, Behaviour::BlackHole))
    }

    pub fn posts(&self) -> u64 {
        self.state().posts
    }

    /// Checks the POST's headers against what the receiver knows; records
    /// it as in flight.
    fn arrive(&self, url: &str, headers: &[(&str, String)], body: &str) -> Option<Arrival> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        let delivery = header("x-webhook-delivery").unwrap_or_default().to_string();
        let attempt: u32 = header("x-webhook-attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let signature = header("x-signature").unwrap_or_default();
        let now = self.clock.now();
        let message = webhooks_pipeline::sender::handling_message();
        let mut st = self.state();
        st.posts += 1;
        let flying = st.in_flight.entry(delivery.clone()).or_default();
        if !flying.is_empty() {
            let twin = self.twin_of_first(message.as_deref(), attempt)
                && flying
                    .iter()
                    .all(|(m, a)| *a == 1 && m.is_some() && *m == message);
            if twin {
                self.coverage.add(Path::TwinFirstPost);
            } else {
                self.violations.add(format!(
                    "two attempts of {delivery} in flight at once (attempt {attempt}, {} of message {message:?} already: {flying:?})",
                    flying.len()
                ));
            }
        }
        flying.push((message.clone(), attempt));
        let Some(receiver) = st.receivers.get(url) else {
            self.violations.add(format!("a POST to unknown URL {url}"));
            return None;
        };
        // The current secret signs; the one before may still, for a POST
        // whose endpoint was read just before a rotation.
        let signed_by = receiver
            .secrets
            .iter()
            .rposition(|(_, s)| x_signature(s, body.as_bytes()) == signature);
        let newest = receiver.secrets.len() - 1;
        let incoming = receiver
            .incoming
            .as_ref()
            .is_some_and(|s| x_signature(s, body.as_bytes()) == signature);
        match signed_by {
            None if incoming => {}
            None => self.violations.add(format!(
                "{delivery} attempt {attempt}: X-Signature by no secret the endpoint ever had"
            )),
            Some(i) if i < newest => {
                let replaced_at = receiver.secrets[i + 1].0;
                if now - replaced_at > chrono::Duration::seconds(60) {
                    self.violations.add(format!(
                        "{delivery} attempt {attempt}: signed with a secret replaced {} s before",
                        (now - replaced_at).num_seconds()
                    ));
                }
            }
            Some(_) => {}
        }
        let behaviour = receiver.behaviour.clone();
        Some(Arrival {
            delivery,
            attempt,
            behaviour,
            message,
        })
    }

    /// Whether a POST of attempt `attempt` by a handler of `message` is the
    /// twin the promise allows: attempt 1, of a message the queue has in
    /// two handlers at once.
    fn twin_of_first(&self, message: Option<&str>, attempt: u32) -> bool {
        attempt == 1 && message.is_some_and(|m| self.ledger.twice_at_once(m))
    }

    /// What the receiver answers, and after how long.
    fn answer(&self, arrival: &Arrival) -> (Duration, AttemptResult) {
        let now = self.clock.now();
        let mut st = self.state();
        let rng = &mut st.rng;
        let latency = Duration::from_millis(rng.random_range(5..400));
        let ok = AttemptResult::Responded {
            status: 200,
            retry_after: None,
        };
        let status = |status| AttemptResult::Responded {
            status,
            retry_after: None,
        };
        let reset = AttemptResult::Failed {
            error: "connection_failed: connection reset by peer".into(),
        };
        let timeout = (
            self.request_timeout,
            AttemptResult::Failed {
                error: "timeout".into(),
            },
        );
        let failure = |rng: &mut StdRng| match rng.random_range(0..4) {
            0 => (latency, status(500)),
            1 => (latency, status(503)),
            2 => (latency, reset.clone()),
            _ => (latency, status(400)),
        };
        match &arrival.behaviour {
            Behaviour::Slow { latency, fail_rate } => {
                let latency = latency.mul_f64(rng.random_range(0.8..1.2));
                if rng.random_bool(*fail_rate) {
                    let (_, result) = failure(rng);
                    (latency, result)
                } else {
                    (latency, ok)
                }
            }
            Behaviour::Healthy { fail_rate } | Behaviour::Flaky { fail_rate } => {
                if rng.random_bool(*fail_rate) {
                    if rng.random_bool(0.1) {
                        timeout
                    } else {
                        failure(rng)
                    }
                } else {
                    (latency, ok)
                }
            }
            Behaviour::Throttling { rate, max_wait } => {
                if rng.random_bool(*rate) {
                    let wait = Duration::from_secs(rng.random_range(1..=max_wait.as_secs().max(1)));
                    (
                        latency,
                        AttemptResult::Responded {
                            status: 429,
                            retry_after: Some(wait),
                        },
                    )
                } else {
                    (latency, ok)
                }
            }
            Behaviour::Outage { from, until } => {
                if (*from..*until).contains(&now) {
                    if rng.random_bool(0.3) {
                        timeout
                    } else {
                        (latency, status(500))
                    }
                } else {
                    (latency, ok)
                }
            }
            Behaviour::GoneFrom(from) => {
                if now >= *from {
                    (latency, status(410))
                } else {
                    (latency, ok)
                }
            }
            Behaviour::BlackHole => timeout,
        }
    }

    fn leave(&self, delivery: &str, message: &Option<String>, attempt: u32) {
        let mut st = self.state();
        if let Some(flying) = st.in_flight.get_mut(delivery) {
            if let Some(i) = flying
                .iter()
                .position(|(m, a)| m == message && *a == attempt)
            {
                flying.swap_remove(i);
            }
            if flying.is_empty() {
                st.in_flight.remove(delivery);
            }
        }
    }
}

/// One answer of a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Its HTTP status; none for a timeout or a reset.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
}

struct Arrival {
    delivery: String,
    attempt: u32,
    behaviour: Behaviour,
    /// The queue message whose handler POSTs.
    message: Option<String>,
}

/// Clears a POST from the in-flight set however it ends: answered, or
/// dropped with its crashed invocation.
struct InFlight<'a> {
    receivers: &'a Receivers,
    delivery: String,
    message: Option<String>,
    attempt: u32,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.receivers
            .leave(&self.delivery, &self.message, self.attempt);
    }
}

#[async_trait]
impl Transport for Receivers {
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Payload) -> HttpOutcome {
        // The Lambda may die before the request leaves.
        if gate().await.is_err() {
            return failed("connection_failed: simulated");
        }
        let Some(arrival) = self.arrive(url, headers, &body) else {
            return failed("connection_failed: unknown host");
        };
        let _in_flight = InFlight {
            receivers: self,
            delivery: arrival.delivery.clone(),
            message: arrival.message.clone(),
            attempt: arrival.attempt,
        };
        // Attempt numbers run 1, 2, 3: this one may be sent again only if
        // it was never recorded (its sender died before recording it), or
        // it is the first, recorded by a handler of this same message,
        // which the queue has in two handlers at once: the twin read the
        // delivery before the other's record.
        if let Ok(Some(d)) = self.deliveries.get(&arrival.delivery).await {
            let twin = d.attempt_count == 1
                && arrival.message.as_deref().is_some_and(|m| {
                    self.twin_of_first(Some(m), arrival.attempt)
                        && self.ledger.was_recorded_by(&arrival.delivery, 1, m)
                });
            if twin {
                self.coverage.add(Path::TwinFirstPost);
            } else if d.attempt_count + 1 != arrival.attempt {
                self.violations.add(format!(
                    "{} POSTed as attempt {} while {} attempts are recorded",
                    arrival.delivery, arrival.attempt, d.attempt_count
                ));
            }
        }
        let (latency, result) = self.answer(&arrival);
        let answer = match &result {
            AttemptResult::Responded {
                status,
                retry_after,
            } => Answer {
                status: Some(*status),
                retry_after: *retry_after,
            },
            AttemptResult::Failed { .. } => Answer {
                status: None,
                retry_after: None,
            },
        };
        self.state()
            .answers
            .entry((arrival.delivery.clone(), arrival.attempt))
            .or_default()
            .push(answer);
        tokio::time::sleep(latency).await;
        // ...or after the receiver has it, before the answer is read.
        let _ = gate().await;
        HttpOutcome {
            result,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            response_body: None,
        }
    }
}

fn failed(error: &str) -> HttpOutcome {
    HttpOutcome {
        result: AttemptResult::Failed {
            error: error.to_string(),
        },
        latency_ms: 0,
        response_body: None,
    }
}
