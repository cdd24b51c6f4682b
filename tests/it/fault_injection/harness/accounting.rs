//! The accounting: from the delivery records and what the receiver saw,
//! how every expected (endpoint, event) pair ended.

use super::system::{FaultySystem, Pair};
use crate::fault_injection::figures::Figures;
use crate::fault_injection::kinds;
use std::collections::{HashMap, HashSet};
use webhooks_domain::delivery::delivery_id;
use webhooks_domain::{Delivery, DeliveryStatus, Endpoint};
use webhooks_faults::Faults;
use webhooks_testkit::signatures::verify_delivery;
use webhooks_testkit::{Exchange, Reply};

/// Whether the receiver accepted the delivery: it sent a 2xx status line
/// (what a receiver does once it has processed the event). A delayed answer
/// comes after the client's timeout here, so it does not count.
fn accepted(reply: &Reply) -> bool {
    match reply {
        Reply::Status(s) | Reply::SlowBody { status: s, .. } => (200..300).contains(s),
        _ => false,
    }
}

/// The fault a receiver's answer injected, if any.
fn receiver_fault(reply: &Reply) -> Option<&'static str> {
    match reply {
        Reply::Status(500) => Some(kinds::RECEIVER_500),
        Reply::Status(503) => Some(kinds::RECEIVER_POISONED),
        Reply::Throttle(_) => Some(kinds::RECEIVER_429),
        Reply::Delay(..) => Some(kinds::RECEIVER_TIMEOUT),
        Reply::Reset => Some(kinds::RECEIVER_RESET),
        Reply::SlowBody { .. } => Some(kinds::RECEIVER_SLOW_BODY),
        _ => None,
    }
}

/// Checks there is one record per pair, and indexes them by pair.
pub(super) fn count_records<'a>(
    f: &mut Figures,
    deliveries: &'a [Delivery],
    expected: &HashSet<Pair>,
) -> HashMap<Pair, &'a Delivery> {
    f.delivery_records = deliveries.len();
    let mut by_pair: HashMap<Pair, &Delivery> = HashMap::new();
    for d in deliveries {
        let pair = (d.endpoint_id.clone(), d.event_id.clone());
        assert_eq!(d.id, delivery_id(&d.endpoint_id, &d.event_id));
        assert!(
            by_pair.insert(pair.clone(), d).is_none(),
            "two records for {pair:?}"
        );
        if !expected.contains(&pair) {
            f.unexpected_records += 1;
        }
        f.attempts_recorded += d.attempts.len();
    }
    by_pair
}

/// What the receiver saw: its faults, signatures, and per (endpoint,
/// webhook-id) pair the requests and how many it accepted.
pub(super) fn count_requests(
    f: &mut Figures,
    faults: &Faults,
    sys: &FaultySystem,
    exchanges: &[Exchange],
    expected: &HashSet<Pair>,
) -> HashMap<Pair, (usize, usize)> {
    f.requests = exchanges.len();
    let endpoint_of_path: HashMap<&str, &Endpoint> = sys
        .endpoints
        .iter()
        .map(|(ep, path)| (path.as_str(), ep))
        .collect();
    let mut per_pair: HashMap<Pair, (usize, usize)> = HashMap::new();
    for x in exchanges {
        if let Some(kind) = receiver_fault(&x.reply) {
            faults.record(kind);
        }
        let Some(ep) = endpoint_of_path.get(x.request.path.as_str()) else {
            f.unknown_requests += 1;
            continue;
        };
        let webhook_id = x.request.header("webhook-id").unwrap_or("");
        let pair = (ep.id.clone(), webhook_id.to_string());
        if !expected.contains(&pair) {
            f.unknown_requests += 1;
        }
        if verify_delivery(&x.request, ep.secret.expose()).is_err() {
            f.bad_signatures += 1;
        }
        let entry = per_pair.entry(pair).or_insert((0, 0));
        entry.0 += 1;
        if accepted(&x.reply) {
            entry.1 += 1;
        }
    }
    for (requests, accepted) in per_pair.values() {
        f.extra_requests += requests.saturating_sub(1);
        f.duplicates += accepted.saturating_sub(1);
        if *accepted > 1 {
            f.pairs_with_duplicates += 1;
        }
    }
    per_pair
}

/// How each expected pair ended: delivered (and accepted), dead-lettered
/// (with its error), or lost.
pub(super) fn count_outcomes(
    f: &mut Figures,
    expected: &HashSet<Pair>,
    by_pair: &HashMap<Pair, &Delivery>,
    requests: &HashMap<Pair, (usize, usize)>,
) {
    let mut sorted: Vec<&Pair> = expected.iter().collect();
    sorted.sort();
    for pair in sorted {
        match by_pair.get(pair) {
            None => f
                .lost
                .push(format!("{}/{}: no delivery record", pair.0, pair.1)),
            Some(d) => match d.status {
                DeliveryStatus::Delivered => {
                    f.delivered += 1;
                    let accepted = requests.get(pair).map_or(0, |(_, a)| *a);
                    if accepted == 0 {
                        f.delivered_never_accepted += 1;
                    }
                }
                DeliveryStatus::DeadLettered => {
                    f.dead_lettered += 1;
                    if d.last_error.as_deref().is_none_or(str::is_empty) {
                        f.dead_lettered_without_error += 1;
                    }
                }
                other => f.lost.push(format!(
                    "{}: {other} after {} attempts (last error {:?})",
                    d.id,
                    d.attempts.len(),
                    d.last_error
                )),
            },
        }
    }
}
