//! The port contracts of the delivery and endpoint stores, written once and
//! run against the memory adapter and against the DynamoDB adapter on moto,
//! so the stand-in cannot drift from the real thing: uniqueness, guarded
//! transitions, the attempt fence (lease, numbered records), the kept
//! attempt log, versioned endpoint updates, health writes that clobber
//! nothing, and each org's limit of endpoints.

use crate::support::MotoBackend;
use chrono::{Duration as Span, Utc};
use futures::StreamExt as _;
use std::sync::Arc;
use webhooks_domain::delivery::MAX_KEPT_ATTEMPTS;
use webhooks_domain::{
    ids, Attempt, Delivery, DeliveryStatus, Endpoint, EventType, Secret, Subscription,
};
use webhooks_memory::MemoryBackend;
use webhooks_ports::{
    Adapters, AttemptUpdate, Created, DeliveryStore, EndpointStore, Lease, Updated,
    DELIVERIES_EXAMINED_PER_PAGE,
};

fn memory() -> Adapters {
    MemoryBackend::new().adapters()
}

async fn moto(test: &str) -> Adapters {
    MotoBackend::new(test).await.adapters
}

fn new_delivery() -> Delivery {
    Delivery::new(
        "org",
        &ids::new_id("ep"),
        &ids::new_id("evt"),
        EventType::InvoicePaid,
    )
}

fn failed(number: u32, body: Option<String>) -> AttemptUpdate {
    AttemptUpdate {
        attempt: Attempt {
            number,
            at: Utc::now(),
            status_code: Some(500),
            error: None,
            latency_ms: 3,
            response_body: body,
        },
        status: DeliveryStatus::Pending,
        next_attempt_at: Some(Utc::now() + Span::hours(1)),
        last_error: Some("HTTP 500".into()),
        unleased_by: None,
    }
}

/// Takes the lease on attempt `made + 1` for `chain`, due now.
async fn lease(store: &Arc<dyn DeliveryStore>, id: &str, made: u32, chain: &str) -> Lease {
    let now = Utc::now();
    store
        .lease(
            id,
            made,
            chain,
            now + Span::seconds(60),
            now,
            now - Span::minutes(15),
        )
        .await
        .expect("lease")
}

pub async fn deliveries_are_unique_and_transitions_guarded(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    assert_eq!(store.create_if_absent(&d).await.unwrap(), None);
    let again = Delivery {
        status: DeliveryStatus::Canceled,
        ..d.clone()
    };
    let existing = store
        .create_if_absent(&again)
        .await
        .unwrap()
        .expect("existing");
    assert_eq!(
        existing.status,
        DeliveryStatus::Pending,
        "nothing overwritten"
    );
    assert_eq!(existing.attempt_count, 0);
    assert_eq!(
        store
            .transition(
                &d.id,
                &[DeliveryStatus::DeadLettered],
                DeliveryStatus::Pending
            )
            .await
            .unwrap(),
        None
    );
    let canceled = store
        .transition(&d.id, &[DeliveryStatus::Pending], DeliveryStatus::Canceled)
        .await
        .unwrap()
        .expect("moved");
    assert_eq!(canceled.status, DeliveryStatus::Canceled);
    assert_eq!(canceled.next_attempt_at, None);
    assert!(!store.record_attempt(&d.id, &failed(1, None)).await.unwrap());
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Refused(Some(_))
    ));
    assert_eq!(
        lease(&store, "dlv_nope", 0, "m1").await,
        Lease::Refused(None)
    );
}

pub async fn one_lease_at_a_time_and_numbers_without_gaps(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    store.create_if_absent(&d).await.unwrap();
    let Lease::Granted(held) = lease(&store, &d.id, 0, "m1").await else {
        panic!("the first lease is granted");
    };
    assert_eq!(held.chain.as_deref(), Some("m1"));
    assert!(held.lease_until.is_some());
    // While it is held: no one else, not even the same message again.
    assert!(matches!(
        lease(&store, &d.id, 0, "m2").await,
        Lease::Refused(Some(_))
    ));
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Refused(Some(_))
    ));
    // Numbers: only the next one is recorded.
    assert!(!store.record_attempt(&d.id, &failed(2, None)).await.unwrap());
    assert!(!store.record_attempt(&d.id, &failed(0, None)).await.unwrap());
    assert!(store.record_attempt(&d.id, &failed(1, None)).await.unwrap());
    assert!(
        !store.record_attempt(&d.id, &failed(1, None)).await.unwrap(),
        "a repeat"
    );
    let after = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(after.attempt_count, 1);
    assert_eq!(after.lease_until, None, "recording releases the lease");
    assert_eq!(after.chain.as_deref(), Some("m1"));
    // A stale count is refused; another message, while the chain waits
    // for its retry, is refused; the chain's own message goes on.
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Refused(_)
    ));
    assert!(matches!(
        lease(&store, &d.id, 1, "m2").await,
        Lease::Refused(Some(_))
    ));
    assert!(matches!(
        lease(&store, &d.id, 1, "m1").await,
        Lease::Granted(_)
    ));
}

pub async fn an_expired_lease_and_a_stale_chain_are_taken_over(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    store.create_if_absent(&d).await.unwrap();
    let now = Utc::now();
    // A lease that has already ended (its holder crashed).
    let granted = store
        .lease(
            &d.id,
            0,
            "m1",
            now - Span::seconds(1),
            now,
            now - Span::minutes(15),
        )
        .await
        .unwrap();
    assert!(matches!(granted, Lease::Granted(_)));
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Granted(_)
    ));
    // Another message takes the chain only once the delivery is overdue.
    store.record_attempt(&d.id, &failed(1, None)).await.unwrap();
    assert!(matches!(
        lease(&store, &d.id, 1, "m2").await,
        Lease::Refused(_)
    ));
    let later = Utc::now() + Span::hours(2);
    let taken = store
        .lease(
            &d.id,
            1,
            "m2",
            later + Span::seconds(60),
            later,
            later - Span::minutes(15),
        )
        .await
        .unwrap();
    assert!(
        matches!(&taken, Lease::Granted(x) if x.chain.as_deref() == Some("m2")),
        "{taken:?}"
    );
}

/// A delivery created owned by its first message (the fan-out's): that
/// message's first attempt, made without a lease, records only while the
/// chain is still its own; a delivery canceled meanwhile takes the attempt
/// as canceled.
pub async fn an_unleased_first_attempt_records_only_for_its_chain(a: Adapters) {
    let store = a.deliveries;
    let mut d = new_delivery();
    d.chain = Some("m1".into());
    assert_eq!(store.create_if_absent(&d).await.unwrap(), None);
    let stored = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(stored.chain.as_deref(), Some("m1"), "created owned");
    assert_eq!(stored.lease_until, None);
    let by = |chain: &str, status: DeliveryStatus| AttemptUpdate {
        status,
        next_attempt_at: None,
        unleased_by: Some(chain.to_string()),
        ..failed(1, None)
    };
    // Another message's record is refused; the owner's goes through.
    assert!(!store
        .record_attempt(&d.id, &by("m2", DeliveryStatus::Pending))
        .await
        .unwrap());
    // Not canceled: an update "to canceled" does not apply to a pending one.
    assert!(!store
        .record_attempt(&d.id, &by("m1", DeliveryStatus::Canceled))
        .await
        .unwrap());
    assert!(store
        .record_attempt(&d.id, &by("m1", DeliveryStatus::Delivered))
        .await
        .unwrap());
    let done = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.attempt_count),
        (DeliveryStatus::Delivered, 1)
    );

    // Canceled while the owner's first attempt ran: the record lands on the
    // canceled delivery and leaves it canceled.
    let mut c = new_delivery();
    c.chain = Some("m1".into());
    store.create_if_absent(&c).await.unwrap();
    let canceled = store
        .transition(&c.id, &[DeliveryStatus::Pending], DeliveryStatus::Canceled)
        .await
        .unwrap();
    assert!(canceled.is_some(), "no lease holds it");
    assert!(!store
        .record_attempt(&c.id, &by("m1", DeliveryStatus::Pending))
        .await
        .unwrap());
    assert!(!store
        .record_attempt(&c.id, &by("m2", DeliveryStatus::Canceled))
        .await
        .unwrap());
    assert!(store
        .record_attempt(&c.id, &by("m1", DeliveryStatus::Canceled))
        .await
        .unwrap());
    let after = store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(after.status, DeliveryStatus::Canceled);
    assert_eq!(after.attempt_count, 1);
    assert_eq!(after.attempts.len(), 1);
    assert_eq!(after.last_error.as_deref(), Some("HTTP 500"));
    // Only once.
    assert!(!store
        .record_attempt(&c.id, &by("m1", DeliveryStatus::Canceled))
        .await
        .unwrap());
    // A leased record (no `unleased_by`) never lands on a canceled one.
    assert!(!store
        .record_attempt(
            &c.id,
            &AttemptUpdate {
                status: DeliveryStatus::Canceled,
                ..failed(2, None)
            }
        )
        .await
        .unwrap());
}

/// A renewal hands the chain of a never-attempted delivery from the worn
/// message to its copy, with a lease; never from another message, never
/// under a live lease, never once attempted.
pub async fn a_chain_is_handed_over_only_by_its_owner(a: Adapters) {
    let store = a.deliveries;
    let mut d = new_delivery();
    d.chain = Some("m1".into());
    store.create_if_absent(&d).await.unwrap();
    let now = Utc::now();
    let until = now + Span::seconds(60);
    assert!(!store
        .hand_over(&d.id, "m2", "m3", until, now)
        .await
        .unwrap());
    assert!(store
        .hand_over(&d.id, "m1", "m3", until, now)
        .await
        .unwrap());
    let moved = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(moved.chain.as_deref(), Some("m3"));
    assert!(moved.lease_until.is_some_and(|t| t > now));
    // Its lease is live: not handed on again, and the copy waits for it.
    assert!(!store
        .hand_over(&d.id, "m3", "m4", until, now)
        .await
        .unwrap());
    assert!(matches!(
        lease(&store, &d.id, 0, "m3").await,
        Lease::Refused(Some(x)) if x.chain.as_deref() == Some("m3")
    ));
    let later = until + Span::seconds(1);
    assert!(matches!(
        store
            .lease(
                &d.id,
                0,
                "m3",
                later + Span::seconds(60),
                later,
                later - Span::minutes(15)
            )
            .await
            .unwrap(),
        Lease::Granted(_)
    ));
    store.record_attempt(&d.id, &failed(1, None)).await.unwrap();
    let much_later = later + Span::seconds(120);
    assert!(
        !store
            .hand_over(
                &d.id,
                "m3",
                "m5",
                much_later + Span::seconds(60),
                much_later
            )
            .await
            .unwrap(),
        "attempted: the reconciler's"
    );
}

pub async fn moving_to_pending_starts_a_new_chain(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    store.create_if_absent(&d).await.unwrap();
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Granted(_)
    ));
    let mut dead = failed(1, None);
    dead.status = DeliveryStatus::DeadLettered;
    dead.next_attempt_at = None;
    assert!(store.record_attempt(&d.id, &dead).await.unwrap());
    let retried = store
        .transition(
            &d.id,
            &[DeliveryStatus::DeadLettered],
            DeliveryStatus::Pending,
        )
        .await
        .unwrap()
        .expect("retried");
    assert_eq!(retried.chain, None);
    assert_eq!(retried.attempt_count, 1);
    assert!(matches!(
        lease(&store, &d.id, 1, "m9").await,
        Lease::Granted(_)
    ));
    assert!(matches!(
        lease(&store, &d.id, 1, "m1").await,
        Lease::Refused(_)
    ));
}

/// A live lease is an attempt under way: no move takes the delivery from
/// it. Out of pending it is refused; into pending (from a status it could
/// only have been left in by a writer that ignored the lease) the lease and
/// its chain stay, so no other message can take the same attempt, and the
/// holder records it. An ended lease is cleared as before.
pub async fn a_live_lease_is_never_taken_by_a_move(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    store.create_if_absent(&d).await.unwrap();
    assert!(matches!(
        lease(&store, &d.id, 0, "m1").await,
        Lease::Granted(_)
    ));
    for to in [DeliveryStatus::DeadLettered, DeliveryStatus::Canceled] {
        assert_eq!(
            store
                .transition(&d.id, &[DeliveryStatus::Pending], to)
                .await
                .unwrap(),
            None,
            "moved to {to} under a live lease"
        );
    }
    let held = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(held.status, DeliveryStatus::Pending);
    assert_eq!(held.chain.as_deref(), Some("m1"));
    // Recorded, the lease is released, and the move is allowed.
    assert!(store.record_attempt(&d.id, &failed(1, None)).await.unwrap());
    let dead = store
        .transition(
            &d.id,
            &[DeliveryStatus::Pending],
            DeliveryStatus::DeadLettered,
        )
        .await
        .unwrap()
        .expect("moved once the attempt is recorded");
    assert_eq!(dead.status, DeliveryStatus::DeadLettered);

    // Dead-lettered under a live lease, then retried: the lease stays.
    let now = Utc::now();
    let leased = Delivery {
        status: DeliveryStatus::DeadLettered,
        next_attempt_at: None,
        chain: Some("m1".into()),
        lease_until: Some(now + Span::seconds(60)),
        ..new_delivery()
    };
    store.create_if_absent(&leased).await.unwrap();
    let retried = store
        .transition(
            &leased.id,
            &[DeliveryStatus::DeadLettered],
            DeliveryStatus::Pending,
        )
        .await
        .unwrap()
        .expect("retried");
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.chain.as_deref(), Some("m1"));
    let until = retried.lease_until.expect("the live lease is kept");
    assert!(until > now, "{until}");
    assert!(matches!(
        lease(&store, &leased.id, 0, "m2").await,
        Lease::Refused(_)
    ));
    assert!(store
        .record_attempt(&leased.id, &failed(1, None))
        .await
        .unwrap());

    // An ended lease is cleared with its chain.
    let ended = Delivery {
        status: DeliveryStatus::DeadLettered,
        next_attempt_at: None,
        chain: Some("m1".into()),
        lease_until: Some(now - Span::seconds(1)),
        ..new_delivery()
    };
    store.create_if_absent(&ended).await.unwrap();
    let retried = store
        .transition(
            &ended.id,
            &[DeliveryStatus::DeadLettered],
            DeliveryStatus::Pending,
        )
        .await
        .unwrap()
        .expect("retried");
    assert_eq!((retried.chain, retried.lease_until), (None, None));
    assert!(matches!(
        lease(&store, &ended.id, 0, "m2").await,
        Lease::Granted(_)
    ));
}

pub async fn the_attempt_log_keeps_the_last_attempts(a: Adapters) {
    let store = a.deliveries;
    let d = new_delivery();
    store.create_if_absent(&d).await.unwrap();
    let body = Some("x".repeat(1024));
    let total = u32::try_from(MAX_KEPT_ATTEMPTS).unwrap() + 5;
    for n in 1..=total {
        assert!(
            store
                .record_attempt(&d.id, &failed(n, body.clone()))
                .await
                .unwrap(),
            "attempt {n}"
        );
    }
    let after = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(after.attempt_count, total);
    assert_eq!(after.attempts.len(), MAX_KEPT_ATTEMPTS);
    let numbers: Vec<u32> = after.attempts.iter().map(|a| a.number).collect();
    let expected: Vec<u32> = (6..=total).collect();
    assert_eq!(numbers, expected);
}

pub async fn an_item_over_400_kb_is_refused(a: Adapters) {
    let store = a.deliveries;
    let mut d = new_delivery();
    d.last_error = Some("e".repeat(410 * 1024));
    assert!(store.create_if_absent(&d).await.is_err());
    assert_eq!(store.get(&d.id).await.unwrap(), None);
}

fn new_endpoint() -> Endpoint {
    Endpoint::new(
        "org",
        "https://example.com/h".into(),
        Subscription::All,
        Secret::generate(),
    )
}

/// Creates `ep` under the default limit of endpoints per org.
async fn create_endpoint(store: &Arc<dyn EndpointStore>, ep: &Endpoint) {
    let created = store
        .create(ep, webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG)
        .await
        .unwrap();
    assert_eq!(created, Created::Written);
}

pub async fn endpoint_updates_are_versioned(a: Adapters) {
    let store = a.endpoints;
    let ep = new_endpoint();
    create_endpoint(&store, &ep).await;
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    let mut first = read.clone();
    first.description = "first".into();
    first.rate_limit = Some(7);
    assert_eq!(store.update(&first).await.unwrap(), Updated::Written);
    let mut second = read.clone();
    second.description = "second".into();
    assert_eq!(store.update(&second).await.unwrap(), Updated::Conflict);
    let now = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(now.description, "first");
    assert_eq!(now.rate_limit, Some(7));
    assert_eq!(now.version, read.version + 1);
    let mut third = now.clone();
    third.rotate_secret(Secret::generate(), Utc::now(), Span::hours(24));
    third.rotate_secret(Secret::generate(), Utc::now(), Span::hours(24));
    assert_eq!(store.update(&third).await.unwrap(), Updated::Written);
    let rotated = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(rotated.signing_secrets(Utc::now()).len(), 3);
    let secrets = |e: &Endpoint| -> Vec<String> {
        e.previous_secrets
            .iter()
            .map(|p| p.secret.expose().to_string())
            .collect()
    };
    assert_eq!(secrets(&rotated), secrets(&third));
    let gone = Endpoint {
        id: ids::new_id("ep"),
        ..new_endpoint()
    };
    assert_eq!(store.update(&gone).await.unwrap(), Updated::NotFound);
}

/// A payload filter is kept as set, changed and removed by an update, and
/// the fan-out's listing (no secrets) carries it.
pub async fn endpoint_filters_are_kept_and_listed_for_the_fan_out(a: Adapters) {
    let store = a.endpoints;
    let pattern = serde_json::json!({
        "data": {"amount": [{"numeric": [">", 100.25]}], "currency": ["eur", "é\u{2028}"]},
        "type": [{"anything-but": {"prefix": "lead"}}]
    });
    let filter = webhooks_domain::EventFilter::parse(&pattern).unwrap();
    let mut ep = new_endpoint();
    ep.filter = Some(filter.clone());
    let plain = new_endpoint();
    for e in [&ep, &plain] {
        assert_eq!(store.create(e, 10).await.unwrap(), Created::Written);
    }
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(read.filter.as_ref(), Some(&filter));
    assert_eq!(read.filter.as_ref().map(|f| f.pattern()), Some(&pattern));
    let listed = store.list_all("org").await.unwrap();
    let of = |id: &str| listed.iter().find(|s| s.id == id).map(|s| s.filter.clone());
    assert_eq!(of(&ep.id), Some(Some(filter.clone())));
    assert_eq!(of(&plain.id), Some(None));

    let mut changed = read.clone();
    let other = webhooks_domain::EventFilter::parse(
        &serde_json::json!({"data": {"x": [{"exists": false}]}}),
    )
    .unwrap();
    changed.filter = Some(other.clone());
    assert_eq!(store.update(&changed).await.unwrap(), Updated::Written);
    assert_eq!(
        store.get("org", &ep.id).await.unwrap().unwrap().filter,
        Some(other)
    );
    let mut removed = store.get("org", &ep.id).await.unwrap().unwrap();
    removed.filter = None;
    assert_eq!(store.update(&removed).await.unwrap(), Updated::Written);
    assert_eq!(
        store.get("org", &ep.id).await.unwrap().unwrap().filter,
        None
    );
    let listed = store.list_all("org").await.unwrap();
    assert!(listed.iter().all(|s| s.filter.is_none()));
}

/// Custom headers are kept with their values and order, replaced and
/// removed by an update; summaries and listings carry their names only.
pub async fn endpoint_headers_are_kept_and_summaries_name_them(a: Adapters) {
    let store = a.endpoints;
    let headers = |pairs: &[(&str, &str)]| {
        webhooks_domain::endpoint::CustomHeaders::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            false,
        )
        .unwrap()
    };
    let mut ep = new_endpoint();
    ep.headers = headers(&[("X-Zeta", "z-value"), ("X-Alpha", &"a".repeat(4096))]);
    assert_eq!(store.create(&ep, 10).await.unwrap(), Created::Written);
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(read.headers, ep.headers);
    let names = vec!["X-Zeta".to_string(), "X-Alpha".to_string()];
    assert_eq!(
        store
            .summary("org", &ep.id)
            .await
            .unwrap()
            .map(|s| s.header_names),
        Some(names.clone())
    );
    let listed = store.list("org", 10, None).await.unwrap();
    assert_eq!(listed.items, vec![read.summary()]);
    assert_eq!(listed.items[0].header_names, names);

    let mut changed = read.clone();
    changed.headers = headers(&[("X-Other", "o")]);
    assert_eq!(store.update(&changed).await.unwrap(), Updated::Written);
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(read.headers, changed.headers);
    let mut removed = read.clone();
    removed.headers = Default::default();
    assert_eq!(store.update(&removed).await.unwrap(), Updated::Written);
    assert!(store
        .get("org", &ep.id)
        .await
        .unwrap()
        .unwrap()
        .headers
        .is_empty());
    assert_eq!(
        store
            .summary("org", &ep.id)
            .await
            .unwrap()
            .map(|s| s.header_names),
        Some(Vec::new())
    );
}

/// Auth is kept with its credentials, replaced and removed by an update;
/// summaries and listings show it without the password or client secret.
pub async fn endpoint_auth_is_kept_and_shown_without_secrets(a: Adapters) {
    use webhooks_domain::endpoint::{AuthInfo, EndpointAuth};
    let store = a.endpoints;
    let parse = |v: serde_json::Value| {
        EndpointAuth::parse(&v, &webhooks_domain::EndpointUrlPolicy::PRODUCTION).unwrap()
    };
    let oauth = parse(serde_json::json!({"type": "oauth2_client_credentials",
        "token_url": "https://auth.example.com/token", "client_id": "cid",
        "client_secret": "client-secret", "scope": "a b"}));
    let mut ep = new_endpoint();
    ep.auth = Some(oauth.clone());
    assert_eq!(store.create(&ep, 10).await.unwrap(), Created::Written);
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(read.auth, Some(oauth.clone()));
    let summary = store.summary("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(summary, read.summary());
    assert_eq!(
        summary.auth,
        Some(AuthInfo::OAuth2ClientCredentials {
            token_url: "https://auth.example.com/token".into(),
            client_id: "cid".into(),
            scope: Some("a b".into())
        })
    );
    assert_eq!(
        store.list("org", 10, None).await.unwrap().items,
        vec![summary]
    );

    let basic = parse(serde_json::json!({"type": "basic", "username": "u", "password": "p"}));
    let mut changed = read.clone();
    changed.auth = Some(basic.clone());
    assert_eq!(store.update(&changed).await.unwrap(), Updated::Written);
    assert_eq!(
        store.get("org", &ep.id).await.unwrap().unwrap().auth,
        Some(basic)
    );
    assert_eq!(
        store.summary("org", &ep.id).await.unwrap().unwrap().auth,
        Some(AuthInfo::Basic {
            username: "u".into()
        })
    );
    let mut removed = store.get("org", &ep.id).await.unwrap().unwrap();
    removed.auth = None;
    assert_eq!(store.update(&removed).await.unwrap(), Updated::Written);
    assert_eq!(store.get("org", &ep.id).await.unwrap().unwrap().auth, None);
    assert_eq!(
        store.summary("org", &ep.id).await.unwrap().unwrap().auth,
        None
    );
}

pub async fn summaries_are_what_reads_show_without_the_secrets(a: Adapters) {
    let store = a.endpoints;
    let mut ep = new_endpoint();
    ep.description = "summarised".into();
    ep.rate_limit = Some(3);
    create_endpoint(&store, &ep).await;
    assert!(store.disable("org", &ep.id, "410 Gone").await.unwrap());
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(
        store.summary("org", &ep.id).await.unwrap(),
        Some(read.summary())
    );
    let listed = store.list("org", 10, None).await.unwrap();
    assert_eq!(listed.items, vec![read.summary()]);
    assert_eq!(store.summary("other", &ep.id).await.unwrap(), None);
    assert_eq!(
        store.summary("org", &ids::new_id("ep")).await.unwrap(),
        None
    );
    // The org's counter of its endpoints is no endpoint.
    assert_eq!(store.summary("org", "#endpoint-count").await.unwrap(), None);
}

pub async fn health_writes_clobber_nothing_and_move_the_version(a: Adapters) {
    let store = a.endpoints;
    let mut ep = new_endpoint();
    ep.description = "kept".into();
    ep.rate_limit = Some(3);
    create_endpoint(&store, &ep).await;
    let read = store.get("org", &ep.id).await.unwrap().unwrap();
    let since = Utc::now() - Span::hours(1);
    store
        .set_failing_since("org", &ep.id, Some(since))
        .await
        .unwrap();
    // A run already open is kept, and keeping it writes nothing.
    let v = store.get("org", &ep.id).await.unwrap().unwrap().version;
    store
        .set_failing_since("org", &ep.id, Some(Utc::now()))
        .await
        .unwrap();
    let after = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(after.version, v);
    assert_eq!(
        after.failing_since.map(|t| t.timestamp()),
        Some(since.timestamp())
    );
    assert!(
        store
            .disable("org", &ep.id, "the endpoint answered 410 Gone")
            .await
            .unwrap(),
        "the write that turns it off says so"
    );
    let after = store.get("org", &ep.id).await.unwrap().unwrap();
    assert!(!after.enabled);
    // A second disable finds it off: it writes nothing and says so (one
    // operational notification per transition).
    assert!(!store.disable("org", &ep.id, "again").await.unwrap());
    let again = store.get("org", &ep.id).await.unwrap().unwrap();
    assert_eq!(again.version, after.version);
    assert_eq!(
        again.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    assert_eq!(after.description, "kept");
    assert_eq!(after.rate_limit, Some(3));
    assert_eq!(after.secret, ep.secret);
    assert!(after.version > read.version);
    // A write from the read before the health writes is refused.
    let mut stale = read.clone();
    stale.description = "stale".into();
    assert_eq!(store.update(&stale).await.unwrap(), Updated::Conflict);
    store.set_failing_since("org", &ep.id, None).await.unwrap();
    assert_eq!(
        store
            .get("org", &ep.id)
            .await
            .unwrap()
            .unwrap()
            .failing_since,
        None
    );
    // Health writes to an endpoint that is gone create nothing.
    store.delete("org", &ep.id).await.unwrap();
    assert!(!store.disable("org", &ep.id, "x").await.unwrap());
    store
        .set_failing_since("org", &ep.id, Some(since))
        .await
        .unwrap();
    assert_eq!(store.get("org", &ep.id).await.unwrap(), None);
}

fn endpoint_of(org: &str) -> Endpoint {
    Endpoint {
        org_id: org.to_string(),
        ..new_endpoint()
    }
}

/// The org's endpoint ids, from the API's listing and the fan-out's.
async fn ids_of(store: &Arc<dyn EndpointStore>, org: &str) -> (Vec<String>, Vec<String>) {
    let listed = store.list(org, 250, None).await.unwrap();
    assert_eq!(listed.next_cursor, None);
    let mut all: Vec<String> = store
        .list_all(org)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    all.sort();
    (listed.items.into_iter().map(|e| e.id).collect(), all)
}

/// An org holds at most `max_per_org` endpoints: a create past it is
/// refused and writes nothing; a delete frees a slot (a delete of nothing
/// frees none); another org's endpoints never count; the limit is the
/// caller's, per create.
pub async fn creates_stop_at_the_orgs_limit_and_deletes_free_a_slot(a: Adapters) {
    let store = a.endpoints;
    let mut held = Vec::new();
    for _ in 0..3 {
        let ep = endpoint_of("org_full");
        assert_eq!(store.create(&ep, 3).await.unwrap(), Created::Written);
        held.push(ep.id);
    }
    let refused = endpoint_of("org_full");
    assert_eq!(
        store.create(&refused, 3).await.unwrap(),
        Created::LimitReached
    );
    assert_eq!(store.get("org_full", &refused.id).await.unwrap(), None);
    let (listed, all) = ids_of(&store, "org_full").await;
    assert_eq!(listed, held);
    assert_eq!(all, held);

    // Another org is not counted with this one.
    let elsewhere = endpoint_of("org_other");
    assert_eq!(store.create(&elsewhere, 3).await.unwrap(), Created::Written);
    assert_eq!(
        store.create(&endpoint_of("org_full"), 3).await.unwrap(),
        Created::LimitReached
    );

    // Deleting nothing frees nothing; deleting one frees one slot.
    assert!(!store.delete("org_full", &refused.id).await.unwrap());
    assert!(!store.delete("org_full", &elsewhere.id).await.unwrap());
    assert_eq!(
        store.create(&endpoint_of("org_full"), 3).await.unwrap(),
        Created::LimitReached
    );
    assert!(store.delete("org_full", &held[0]).await.unwrap());
    assert!(!store.delete("org_full", &held[0]).await.unwrap());
    let again = endpoint_of("org_full");
    assert_eq!(store.create(&again, 3).await.unwrap(), Created::Written);
    assert_eq!(
        store.create(&endpoint_of("org_full"), 3).await.unwrap(),
        Created::LimitReached
    );
    // An id that exists is refused whatever the count.
    assert!(store.create(&again, 10).await.is_err());
    // A higher limit lets the org grow; a lower one keeps what it has.
    assert_eq!(
        store.create(&endpoint_of("org_full"), 4).await.unwrap(),
        Created::Written
    );
    assert_eq!(
        store.create(&endpoint_of("org_full"), 2).await.unwrap(),
        Created::LimitReached
    );
    let (listed, all) = ids_of(&store, "org_full").await;
    assert_eq!(listed.len(), 4);
    assert_eq!(all.len(), 4);
    assert_eq!(ids_of(&store, "org_other").await.0, vec![elsewhere.id]);
}

/// Creates racing for an org's last slot: exactly one gets it.
pub async fn concurrent_creates_take_the_last_slot_once(a: Adapters) {
    let store = a.endpoints;
    for _ in 0..4 {
        let ep = endpoint_of("org_race");
        assert_eq!(store.create(&ep, 5).await.unwrap(), Created::Written);
    }
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (store, ep) = (store.clone(), endpoint_of("org_race"));
        racers.spawn(async move { store.create(&ep, 5).await });
    }
    let outcomes = racers.join_all().await;
    let written = outcomes
        .iter()
        .filter(|o| **o == Ok(Created::Written))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == Ok(Created::LimitReached))
        .count();
    assert_eq!((written, refused), (1, 5), "{outcomes:?}");
    let (listed, all) = ids_of(&store, "org_race").await;
    assert_eq!((listed.len(), all.len()), (5, 5));
}

/// Many deliveries of one endpoint meet a 410 at once: the conditional
/// write lets exactly one of their disables turn it off (and send the one
/// `endpoint.disabled`), as DynamoDB's per-item atomicity does. Moto's
/// threaded server once let two through now and then
/// (`dev_process::aws_backend_on_moto_sends_exactly_one_endpoint_disabled`,
/// 1 run in 5): `scripts/moto-server.py` makes its DynamoDB requests atomic.
pub async fn concurrent_disables_turn_an_endpoint_off_once(a: Adapters) {
    let store = a.endpoints;
    for round in 0..10 {
        let ep = endpoint_of("org_gone");
        create_endpoint(&store, &ep).await;
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (store, id) = (store.clone(), ep.id.clone());
            racers.spawn(async move { store.disable("org_gone", &id, "410 Gone").await });
        }
        let outcomes = racers.join_all().await;
        let turned_off = outcomes.iter().filter(|o| **o == Ok(true)).count();
        let found_off = outcomes.iter().filter(|o| **o == Ok(false)).count();
        assert_eq!(
            (turned_off, found_off),
            (1, 7),
            "round {round}: {outcomes:?}"
        );
        assert!(
            !store
                .get("org_gone", &ep.id)
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
    }
}

/// The counter item of an org in the endpoints table on moto, as stored.
async fn counter_item(
    backend: &MotoBackend,
    org: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    backend
        .aws
        .dynamodb
        .get_item()
        .table_name(backend.names.table("endpoints"))
        .key(
            "org_id",
            aws_sdk_dynamodb::types::AttributeValue::S(org.into()),
        )
        .key(
            "endpoint_id",
            aws_sdk_dynamodb::types::AttributeValue::S("#endpoint-count".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

/// The counter's `endpoint_count`, if the org was counted.
async fn stored_count(backend: &MotoBackend, org: &str) -> Option<String> {
    counter_item(backend, org)
        .await?
        .get("endpoint_count")
        .and_then(|v| v.as_n().ok().cloned())
}

/// DynamoDB only: endpoints written before the counter existed (an org
/// without a counter item) are counted at the org's first create, and a
/// delete before that count keeps it right; the counter item is never an
/// endpoint.
#[tokio::test]
async fn on_moto_an_org_never_counted_is_counted_at_its_first_create() {
    let backend = MotoBackend::new("uncounted").await;
    let store = backend.adapters.endpoints.clone();
    let mut held = Vec::new();
    for _ in 0..3 {
        let ep = endpoint_of("org_old");
        assert_eq!(store.create(&ep, 10).await.unwrap(), Created::Written);
        held.push(ep.id);
    }
    assert_eq!(
        stored_count(&backend, "org_old").await.as_deref(),
        Some("3")
    );
    let forget = || async {
        backend
            .aws
            .dynamodb
            .delete_item()
            .table_name(backend.names.table("endpoints"))
            .key(
                "org_id",
                aws_sdk_dynamodb::types::AttributeValue::S("org_old".into()),
            )
            .key(
                "endpoint_id",
                aws_sdk_dynamodb::types::AttributeValue::S("#endpoint-count".into()),
            )
            .send()
            .await
            .expect("delete the counter");
    };
    forget().await;
    // Deleted while uncounted: the counter's version moves, no count is made.
    assert!(store.delete("org_old", &held[0]).await.unwrap());
    assert!(counter_item(&backend, "org_old").await.is_some());
    assert_eq!(stored_count(&backend, "org_old").await, None);
    // Two held under a limit of 3: the first create counts them.
    assert_eq!(
        store.create(&endpoint_of("org_old"), 3).await.unwrap(),
        Created::Written
    );
    assert_eq!(
        stored_count(&backend, "org_old").await.as_deref(),
        Some("3")
    );
    assert_eq!(
        store.create(&endpoint_of("org_old"), 3).await.unwrap(),
        Created::LimitReached
    );
    // Already over the limit when first counted: refused, nothing written.
    forget().await;
    assert_eq!(
        store.create(&endpoint_of("org_old"), 2).await.unwrap(),
        Created::LimitReached
    );
    assert_eq!(stored_count(&backend, "org_old").await, None);
    let (listed, all) = ids_of(&store, "org_old").await;
    assert_eq!((listed.len(), all.len()), (3, 3));
    // The counter item is no endpoint to the store's callers.
    assert_eq!(store.get("org_old", "#endpoint-count").await.unwrap(), None);
    assert!(!store.delete("org_old", "#endpoint-count").await.unwrap());
    assert_eq!(
        store
            .update(&Endpoint {
                id: "#endpoint-count".into(),
                ..endpoint_of("org_old")
            })
            .await
            .unwrap(),
        Updated::NotFound
    );
    assert!(!store
        .disable("org_old", "#endpoint-count", "x")
        .await
        .unwrap());
    assert!(counter_item(&backend, "org_old").await.is_none());
}

/// An endpoint's deliveries of `statuses`, oldest first, written
/// `CONCURRENCY` at a time.
async fn deliveries_of(
    store: &Arc<dyn DeliveryStore>,
    endpoint_id: &str,
    statuses: impl Iterator<Item = DeliveryStatus>,
) -> Vec<Delivery> {
    let made: Vec<Delivery> = statuses
        .map(|status| {
            let mut d = Delivery::new("org", endpoint_id, &ids::new_id("evt"), EventType::LeadWon);
            d.status = status;
            d
        })
        .collect();
    let written: Vec<_> = futures::stream::iter(made.iter().map(|d| store.create_if_absent(d)))
        .buffer_unordered(16)
        .collect()
        .await;
    for w in written {
        assert_eq!(w.unwrap(), None);
    }
    made
}

/// A status filter examines at most DELIVERIES_EXAMINED_PER_PAGE
/// deliveries per call: past that, the page ends (empty, here) with a
/// cursor, and the cursors lead on to the match.
pub async fn a_filtered_listing_examines_a_bounded_number_per_page(a: Adapters) {
    let store = a.deliveries;
    let ep = ids::new_id("ep");
    let statuses = std::iter::once(DeliveryStatus::DeadLettered).chain(std::iter::repeat_n(
        DeliveryStatus::Delivered,
        DELIVERIES_EXAMINED_PER_PAGE + 1,
    ));
    let made = deliveries_of(&store, &ep, statuses).await;
    let first = store
        .list_for_endpoint(&ep, Some(DeliveryStatus::DeadLettered), 1, None)
        .await
        .unwrap();
    assert!(
        first.items.is_empty(),
        "the match is past the first page's reads"
    );
    let mut cursor = first.next_cursor.expect("a cursor to carry on from");
    let mut found = Vec::new();
    let mut pages = 1;
    loop {
        let page = store
            .list_for_endpoint(&ep, Some(DeliveryStatus::DeadLettered), 1, Some(&cursor))
            .await
            .unwrap();
        pages += 1;
        found.extend(page.items.into_iter().map(|d| d.id));
        match page.next_cursor {
            Some(next) if pages < 5 => cursor = next,
            Some(_) => panic!("more pages than the deliveries need"),
            None => break,
        }
    }
    assert_eq!(found, vec![made[0].id.clone()]);
    // Without a filter, pages are full as before.
    let newest = store.list_for_endpoint(&ep, None, 3, None).await.unwrap();
    let ids: Vec<&str> = newest.items.iter().map(|d| d.id.as_str()).collect();
    let expected: Vec<&str> = made.iter().rev().take(3).map(|d| d.id.as_str()).collect();
    assert_eq!(ids, expected);
    assert!(newest.next_cursor.is_some());
}

/// The reconciler's view: the org's pending deliveries whose scheduled
/// retry was due before a time, most overdue first; finished ones, ones
/// never attempted (no retry scheduled: not indexed) and other orgs' are
/// not listed.
pub async fn overdue_lists_only_pending_deliveries_due_before(a: Adapters) {
    let store = a.deliveries;
    let now = Utc::now();
    let org = format!("org-{}", ids::new_id("x"));
    let at = |minutes: i64| now - Span::minutes(minutes);
    let made = |minutes: i64| {
        Delivery::new_at(
            &org,
            &ids::new_id("ep"),
            &ids::new_id("evt"),
            EventType::InvoicePaid,
            at(minutes + 1),
        )
    };
    let (oldest, older, recent, finished) = (made(60), made(30), made(1), made(90));
    let never_attempted = made(120);
    store.create_if_absent(&never_attempted).await.unwrap();
    for (d, minutes) in [(&oldest, 60), (&older, 30), (&recent, 1), (&finished, 90)] {
        store.create_if_absent(d).await.unwrap();
        // Its first attempt failed and scheduled the retry `minutes` ago.
        let mut update = failed(1, None);
        update.next_attempt_at = Some(at(minutes));
        assert!(store.record_attempt(&d.id, &update).await.unwrap());
    }
    let elsewhere = new_delivery();
    store.create_if_absent(&elsewhere).await.unwrap();
    store
        .transition(
            &finished.id,
            &[DeliveryStatus::Pending],
            DeliveryStatus::Canceled,
        )
        .await
        .unwrap()
        .expect("canceled");
    let before = now - Span::minutes(15);
    assert_eq!(
        ids_overdue(&store, &org, before, 10).await,
        vec![oldest.id.clone(), older.id.clone()]
    );
    let first = store.overdue(&org, before, 1, None).await.unwrap();
    assert_eq!(first.items, vec![oldest.id.clone()]);
    let second = store
        .overdue(&org, before, 1, first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(second.items, vec![older.id.clone()]);
    // A retry that moves the next attempt on takes it off the list.
    let mut update = failed(2, None);
    update.next_attempt_at = Some(now + Span::hours(1));
    assert!(store.record_attempt(&oldest.id, &update).await.unwrap());
    assert_eq!(
        ids_overdue(&store, &org, before, 10).await,
        vec![older.id.clone()]
    );
    // Queued again by hand, a never-attempted delivery has its retry
    // scheduled (now), and is listed once that is due.
    let canceled = store
        .transition(
            &never_attempted.id,
            &[DeliveryStatus::Pending],
            DeliveryStatus::Canceled,
        )
        .await
        .unwrap()
        .expect("canceled");
    assert_eq!(canceled.next_attempt_at, None);
    let requeued = store
        .transition(
            &never_attempted.id,
            &[DeliveryStatus::Canceled],
            DeliveryStatus::Pending,
        )
        .await
        .unwrap()
        .expect("pending again");
    assert!(requeued.next_attempt_at.is_some());
    assert_eq!(
        ids_overdue(&store, &org, Utc::now() + Span::seconds(1), 10).await,
        vec![
            older.id.clone(),
            recent.id.clone(),
            never_attempted.id.clone()
        ]
    );
}

/// Every id `overdue` lists, page by page of `limit`.
async fn ids_overdue(
    store: &Arc<dyn DeliveryStore>,
    org: &str,
    before: chrono::DateTime<Utc>,
    limit: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .overdue(org, before, limit, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.items.len() <= limit);
        ids.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
}

/// Pending deliveries of `org`, each with a failed first attempt whose
/// retry was due `minutes_ago[i]` minutes ago.
async fn overdue_deliveries(
    store: &Arc<dyn DeliveryStore>,
    org: &str,
    minutes_ago: impl Iterator<Item = i64>,
) -> Vec<Delivery> {
    let now = Utc::now();
    let made: Vec<(Delivery, i64)> = minutes_ago
        .map(|m| {
            let d = Delivery::new_at(
                org,
                &ids::new_id("ep"),
                &ids::new_id("evt"),
                EventType::InvoicePaid,
                now - Span::minutes(m + 1),
            );
            (d, m)
        })
        .collect();
    for (d, m) in &made {
        store.create_if_absent(d).await.unwrap();
        let mut update = failed(1, None);
        update.next_attempt_at = Some(now - Span::minutes(*m));
        assert!(store.record_attempt(&d.id, &update).await.unwrap());
    }
    made.into_iter().map(|(d, _)| d).collect()
}

/// The reconciler pages through an org's whole backlog: `overdue` hands
/// out a cursor while more is left, each page at most its limit, and the
/// pages together list every overdue delivery once, most overdue first.
/// On DynamoDB a Query stops at its `Limit` (or 1 MB), so the adapter
/// reads on, and its cursor is the index's key of the page's last item.
pub async fn overdue_pages_through_a_backlog(a: Adapters) {
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    // 250 overdue deliveries, several due in the same second (the index's
    // sort key is not unique), and one not yet overdue.
    let made = overdue_deliveries(&store, &org, (0..250).map(|i| 20 + i / 3)).await;
    overdue_deliveries(&store, &org, std::iter::once(1)).await;
    let before = Utc::now() - Span::minutes(15);
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .overdue(&org, before, 100, cursor.as_deref())
            .await
            .unwrap();
        pages.push(page.items.len());
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, [100, 100, 50]);
    let listed = ids_overdue(&store, &org, before, 100).await;
    let mut once = listed.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), 250, "each listed once");
    let mut made: Vec<String> = made.into_iter().map(|d| d.id).collect();
    made.sort();
    assert_eq!(once, made, "every overdue one, and only those");
    let due_at: std::collections::HashMap<String, chrono::DateTime<Utc>> = store
        .get_many(&listed)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id.clone(), d.next_attempt_at.unwrap()))
        .collect();
    let due: Vec<chrono::DateTime<Utc>> = listed.iter().map(|id| due_at[id]).collect();
    assert!(due.windows(2).all(|w| w[0] <= w[1]), "most overdue first");
    // A page whose deliveries leave the index meanwhile (queued again) does
    // not lose the next page's place.
    let first = store.overdue(&org, before, 100, None).await.unwrap();
    let now = Utc::now();
    for id in &first.items {
        assert!(store
            .mark_requeued(id, 1, now, now - Span::minutes(15))
            .await
            .unwrap());
    }
    let rest = ids_overdue(&store, &org, before, 100).await;
    assert_eq!(rest.len(), 150);
    let after = store
        .overdue(&org, before, 100, first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(after.items, rest[..100]);
}

/// What the reconciler writes after queueing a lost message again: the
/// delivery leaves the overdue range (its next attempt is now), its chain is
/// cleared (the new message's lease takes it over); and nothing is written
/// unless it is still pending, with the attempts read, overdue, and without
/// a live lease.
pub async fn a_requeued_delivery_is_marked_only_as_read(a: Adapters) {
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    let made = overdue_deliveries(&store, &org, [60, 60, 60, 60].into_iter()).await;
    let (plain, leased, attempted, owned) = (&made[0], &made[1], &made[2], &made[3]);
    let now = Utc::now();
    let stale = now - Span::minutes(15);
    // A live lease (its attempt may be running): not marked.
    let granted = store
        .lease(
            &leased.id,
            1,
            "msg-live",
            now + Span::minutes(1),
            now,
            stale,
        )
        .await
        .unwrap();
    assert!(matches!(granted, Lease::Granted(_)));
    assert!(!store
        .mark_requeued(&leased.id, 1, now, stale)
        .await
        .unwrap());
    // Attempted since it was read: not marked.
    assert!(!store
        .mark_requeued(&attempted.id, 0, now, stale)
        .await
        .unwrap());
    // Owned by a lost message whose lease ended: marked, its chain cleared.
    let granted = store
        .lease(
            &owned.id,
            1,
            "msg-lost",
            now - Span::minutes(30),
            now - Span::minutes(31),
            stale,
        )
        .await
        .unwrap();
    assert!(matches!(granted, Lease::Granted(_)));
    for d in [plain, owned] {
        assert!(store.mark_requeued(&d.id, 1, now, stale).await.unwrap());
        let back = store.get(&d.id).await.unwrap().unwrap();
        assert_eq!(back.chain, None);
        assert_eq!(back.status, DeliveryStatus::Pending);
        assert_eq!(back.attempt_count, 1);
        let next = back.next_attempt_at.unwrap();
        assert!((next - now).num_seconds().abs() <= 1, "due now: {next}");
        // No longer overdue: not marked again.
        assert!(!store.mark_requeued(&d.id, 1, now, stale).await.unwrap());
        // The new message takes the chain.
        let granted = store
            .lease(&d.id, 1, "msg-new", now + Span::minutes(1), now, stale)
            .await
            .unwrap();
        assert!(matches!(granted, Lease::Granted(_)), "{granted:?}");
    }
    let mut left = ids_overdue(&store, &org, stale, 10).await;
    left.sort();
    let mut expected = vec![leased.id.clone(), attempted.id.clone()];
    expected.sort();
    assert_eq!(left, expected);
    // Finished: not marked.
    store
        .transition(
            &attempted.id,
            &[DeliveryStatus::Pending],
            DeliveryStatus::Delivered,
        )
        .await
        .unwrap();
    assert!(!store
        .mark_requeued(&attempted.id, 1, now, stale)
        .await
        .unwrap());
}

/// The stats store adds deltas (counts go down as well as up, latency
/// bins count) per (endpoint, hour), and reads an endpoint's hours from one
/// on, oldest first, nobody else's.
async fn stats_buckets_add_up_per_endpoint_and_hour(a: Adapters) {
    use webhooks_domain::stats::{bucket_hour, EndpointStats, StatsDelta};
    let store = a.stats.clone();
    let (ep, other) = (ids::new_id("ep"), ids::new_id("ep"));
    let now = bucket_hour(Utc::now());
    let earlier = now - Span::hours(3);
    let attempt = |n, to, code, ms| StatsDelta::attempt(n, to, code, ms);
    store
        .add(
            &ep,
            now,
            &attempt(1, DeliveryStatus::Pending, Some(500), 40),
        )
        .await
        .unwrap();
    store
        .add(
            &ep,
            now,
            &attempt(2, DeliveryStatus::Delivered, Some(200), 12),
        )
        .await
        .unwrap();
    store
        .add(
            &ep,
            earlier,
            &attempt(1, DeliveryStatus::DeadLettered, Some(410), 3),
        )
        .await
        .unwrap();
    store
        .add(
            &other,
            now,
            &attempt(1, DeliveryStatus::Delivered, Some(200), 1),
        )
        .await
        .unwrap();
    // A delta with nothing in it writes nothing and fails nothing.
    store.add(&ep, now, &StatsDelta::default()).await.unwrap();

    let all = store.read(&ep, earlier).await.unwrap();
    assert_eq!(
        all.iter().map(|b| b.hour).collect::<Vec<_>>(),
        [earlier, now]
    );
    let s = EndpointStats::from_buckets(&all);
    assert_eq!(
        (s.delivered, s.dead_lettered, s.pending, s.failed_attempts),
        (1, 1, 0, 2)
    );
    assert_eq!(s.success_rate, Some(0.5));
    assert_eq!((s.latency_ms.p50, s.latency_ms.p95), (Some(20), Some(50)));
    let recent = store.read(&ep, now).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(EndpointStats::from_buckets(&recent).dead_lettered, 0);
    assert!(store
        .read(&ids::new_id("ep"), earlier)
        .await
        .unwrap()
        .is_empty());

    // A batch's deltas summed into one write count as the writes they replace.
    let (one_by_one, summed) = (ids::new_id("ep"), ids::new_id("ep"));
    let batch = [
        attempt(1, DeliveryStatus::Delivered, Some(200), 2),
        attempt(1, DeliveryStatus::Delivered, Some(204), 3),
        attempt(1, DeliveryStatus::Pending, None, 30_001),
        attempt(2, DeliveryStatus::Delivered, Some(200), 40),
    ];
    let mut sum = StatsDelta::default();
    for d in &batch {
        store.add(&one_by_one, now, d).await.unwrap();
        sum.merge(d);
    }
    store.add(&summed, now, &sum).await.unwrap();
    let read = |ep: String| {
        let store = store.clone();
        async move {
            let mut b = store.read(&ep, now).await.unwrap();
            assert_eq!(b.len(), 1);
            let mut b = b.remove(0);
            while b.latency.last() == Some(&0) {
                b.latency.pop();
            }
            b
        }
    };
    let (a, b) = (read(one_by_one).await, read(summed).await);
    assert_eq!(a, b);
    assert_eq!((b.delivered, b.pending, b.failed_attempts), (3, 0, 1));
    assert_eq!(b.latency.iter().sum::<u64>(), 4);
    assert_eq!(b.latency[0], 2);
}

/// A sender's batch may hold two messages of one delivery (a replayed
/// fan-out queues it again): its one read names the delivery twice, and
/// gets it. (BatchGetItem refuses a request that names a key twice.) The
/// same of its eventually consistent read, which here (no write within
/// its lag: moto's reads and the memory store's without a modelled lag
/// are consistent) finds the same.
pub async fn a_read_of_many_may_name_a_delivery_twice(a: Adapters) {
    let store = a.deliveries;
    let (d, other) = (new_delivery(), new_delivery());
    store.create_if_absent(&d).await.unwrap();
    store.create_if_absent(&other).await.unwrap();
    let mut ids = vec![d.id.clone(); 8];
    ids.push(other.id.clone());
    ids.push(d.id.clone());
    ids.push(new_delivery().id);
    let mut expected = vec![d.id.clone(), other.id.clone()];
    expected.sort();
    for eventually in [false, true] {
        let read = match eventually {
            false => store.get_many(&ids).await,
            true => store.get_many_eventually(&ids).await,
        };
        let mut found: Vec<String> = read.expect("get_many").into_iter().map(|d| d.id).collect();
        found.sort();
        found.dedup();
        assert_eq!(found, expected, "eventually {eventually}");
    }
}

/// A delivery item's `expires_at` on moto, as stored.
async fn stored_expiry(backend: &MotoBackend, d: &Delivery) -> i64 {
    let item = backend
        .aws
        .dynamodb
        .get_item()
        .table_name(backend.names.table("deliveries"))
        .key(
            "endpoint_id",
            aws_sdk_dynamodb::types::AttributeValue::S(d.endpoint_id.clone()),
        )
        .key(
            "event_id",
            aws_sdk_dynamodb::types::AttributeValue::S(d.event_id.clone()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the item");
    item["expires_at"].as_n().unwrap().parse().unwrap()
}

/// DynamoDB only (the memory store's expiry is tested with its clock): the
/// TTL attribute starts again with every move to pending and every attempt
/// recorded while pending, so a delivery retried by hand near the end of
/// its 30 days, or still being retried, is not deleted under it; a finished
/// one keeps its time.
#[tokio::test]
async fn on_moto_a_move_to_pending_and_an_attempt_while_pending_renew_the_ttl() {
    let backend = MotoBackend::new("ttl").await;
    let store = backend.adapters.deliveries.clone();
    let days = |n: i64| Span::days(n).num_seconds();
    let old = Utc::now() - Span::days(29);
    let d = Delivery::new_at(
        "org",
        &ids::new_id("ep"),
        &ids::new_id("evt"),
        EventType::InvoicePaid,
        old,
    );
    store.create_if_absent(&d).await.unwrap();
    assert_eq!(
        stored_expiry(&backend, &d).await,
        old.timestamp() + days(30)
    );
    let mut dead = failed(1, None);
    dead.status = DeliveryStatus::DeadLettered;
    dead.next_attempt_at = None;
    dead.attempt.at = old;
    assert!(store.record_attempt(&d.id, &dead).await.unwrap());
    assert_eq!(
        stored_expiry(&backend, &d).await,
        old.timestamp() + days(30)
    );

    let before = Utc::now().timestamp();
    store
        .transition(
            &d.id,
            &[DeliveryStatus::DeadLettered],
            DeliveryStatus::Pending,
        )
        .await
        .unwrap()
        .expect("retried by hand");
    let renewed = stored_expiry(&backend, &d).await;
    assert!(
        renewed >= before + days(30),
        "{renewed} < {}",
        before + days(30)
    );

    let mut retry = failed(2, None);
    retry.attempt.at = Utc::now() + Span::days(2);
    assert!(store.record_attempt(&d.id, &retry).await.unwrap());
    assert_eq!(
        stored_expiry(&backend, &d).await,
        retry.attempt.at.timestamp() + days(30)
    );
    let after = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(after.attempt_count, 2);
}

/// What the sender writes for a retry its endpoint's limits defer past the
/// time the reconciler would take it for lost: the delivery's next attempt
/// moves to when the message comes back, and that message owns it, so the
/// delivery leaves the overdue range until then. On the lease's condition:
/// not under a live lease, not when another live message owns the chain,
/// not when attempted since it was read.
pub async fn a_long_deferral_is_noted_on_the_lease_condition(a: Adapters) {
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    let made = overdue_deliveries(&store, &org, [20, 20, 20, 20].into_iter()).await;
    let (plain, leased, owned, attempted) = (&made[0], &made[1], &made[2], &made[3]);
    let now = Utc::now();
    let stale = now - Span::minutes(15);
    let back = now + Span::minutes(30);
    // Under a live lease: refused.
    let granted = store
        .lease(
            &leased.id,
            1,
            "msg-live",
            now + Span::minutes(1),
            now,
            stale,
        )
        .await
        .unwrap();
    assert!(matches!(granted, Lease::Granted(_)));
    assert!(!store
        .postpone(&leased.id, 1, "msg-waiting", back, now, stale)
        .await
        .unwrap());
    // Attempted since it was read: refused.
    assert!(!store
        .postpone(&attempted.id, 0, "msg-waiting", back, now, stale)
        .await
        .unwrap());
    // Noted: due when the message comes back, and its.
    assert!(store
        .postpone(&plain.id, 1, "msg-waiting", back, now, stale)
        .await
        .unwrap());
    let noted = store.get(&plain.id).await.unwrap().unwrap();
    assert_eq!(noted.chain.as_deref(), Some("msg-waiting"));
    assert_eq!(noted.attempt_count, 1);
    assert_eq!(noted.status, DeliveryStatus::Pending);
    let next = noted.next_attempt_at.unwrap();
    assert!((next - back).num_seconds().abs() <= 1, "due {next}");
    assert!(noted.lease_until.is_none(), "a note is no lease");
    // Now owned by a live chain: another message may not note, nor lease.
    assert!(!store
        .postpone(&plain.id, 1, "msg-copy", back, now, stale)
        .await
        .unwrap());
    assert!(matches!(
        store
            .lease(&plain.id, 1, "msg-copy", now + Span::minutes(1), now, stale)
            .await
            .unwrap(),
        Lease::Refused(_)
    ));
    // Its own message may note again, and lease when it comes back.
    assert!(store
        .postpone(&plain.id, 1, "msg-waiting", back, now, stale)
        .await
        .unwrap());
    assert!(matches!(
        store
            .lease(
                &plain.id,
                1,
                "msg-waiting",
                back + Span::minutes(1),
                back,
                back - Span::minutes(15)
            )
            .await
            .unwrap(),
        Lease::Granted(_)
    ));
    // A chain lost long ago (overdue past `stale`) is taken over.
    let granted = store
        .lease(
            &owned.id,
            1,
            "msg-lost",
            now - Span::minutes(30),
            now - Span::minutes(31),
            stale,
        )
        .await
        .unwrap();
    assert!(matches!(granted, Lease::Granted(_)));
    assert!(store
        .postpone(&owned.id, 1, "msg-waiting", back, now, stale)
        .await
        .unwrap());
    // Only the refused ones are left overdue.
    let mut left = ids_overdue(&store, &org, stale, 10).await;
    left.sort();
    let mut expected = vec![leased.id.clone(), attempted.id.clone()];
    expected.sort();
    assert_eq!(left, expected);
}

/// The stream fan-out's notes of queued deliveries: written once per key,
/// found by the minutes of their deliveries' events and by key, per org
/// (another org's notes are never found), in the same table as the
/// deliveries without showing in an endpoint's listing or the overdue
/// index.
pub async fn notes_of_queued_deliveries_are_found_by_org_and_minute(a: Adapters) {
    use webhooks_domain::queued::{listed, minute_of_event, note_key, second_of_event, QueuedNote};
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    let other = format!("org-{}", ids::new_id("x"));
    let ep = ids::new_id("ep");
    let now = Utc::now();
    let evt = |mins: i64| ids::new_id_at("evt", now - Span::minutes(mins));
    let (e0, e1, e5) = (evt(0), evt(1), evt(5));
    let d = |e: &str| webhooks_domain::delivery::delivery_id(&ep, e);
    let (d0, d1, d5) = (d(&e0), d(&e1), d(&e5));
    let note = |org: &str, event: &str, call: &str, ids: Vec<String>| QueuedNote {
        org_id: org.to_string(),
        key: note_key(&minute_of_event(event), second_of_event(event), call, 0),
        messages: ids.iter().map(|id| format!("msg-{id}")).collect(),
        delivery_ids: ids.into(),
        created_at: now,
        confirmed_at: None,
        contested: Vec::new(),
    };
    let n0 = note(&org, &e0, "a", vec![d0.clone()]);
    let n1 = note(&org, &e1, "a", vec![d1.clone()]);
    assert!(store.note_queued(&n0).await.unwrap());
    assert!(store.note_queued(&n1).await.unwrap());
    assert!(store
        .note_queued(&note(&other, &e5, "b", vec![d5.clone()]))
        .await
        .unwrap());
    // A second note of the same key (another fan-out of the same
    // deliveries) is refused, and the first stays as written.
    let twin = QueuedNote {
        messages: vec!["msg-of-the-twin".into()].into(),
        ..n0.clone()
    };
    assert!(!store.note_queued(&twin).await.unwrap());

    let all = vec![d0.clone(), d1.clone(), d5.clone()];
    let noted = store.noted(&org, &all).await.unwrap();
    let mut expected = vec![d0.clone(), d1.clone()];
    expected.sort();
    assert_eq!(listed(&noted, &all), expected, "the org's own notes only");
    assert_eq!(
        listed(&store.noted(&other, &all).await.unwrap(), &all),
        std::slice::from_ref(&d5)
    );
    assert!(
        noted.iter().all(|n| n.confirmed_at.is_none()),
        "not confirmed yet"
    );

    // A fan-out confirms its note after reading the notes again, setting
    // down what another note lists too; a note that is not there is not
    // written.
    let confirmed_at = now + Span::seconds(2);
    assert!(store
        .confirm_note(&org, &n0.key, std::slice::from_ref(&d0), confirmed_at)
        .await
        .unwrap());
    assert!(store
        .confirm_note(&org, &n1.key, &[], confirmed_at)
        .await
        .unwrap());
    assert!(!store
        .confirm_note(&org, "nothing#here.0", &[], confirmed_at)
        .await
        .unwrap());
    assert!(store
        .notes(&[(org.clone(), "nothing#here.0".into())])
        .await
        .unwrap()
        .is_empty());
    let noted = store.noted(&org, &all).await.unwrap();
    let by_key = |k: &str| noted.iter().find(|n| n.key == k).expect("noted");
    let (c0, c1) = (by_key(&n0.key), by_key(&n1.key));
    assert!(c0
        .confirmed_at
        .is_some_and(|t| (t - confirmed_at).num_seconds().abs() <= 1));
    assert_eq!(c0.contested, vec![d0.clone()]);
    assert!(!c0.carries(&d0), "contested");
    assert!(c1.contested.is_empty());
    assert!(c1.carries(&d1));
    assert_eq!(
        c0.delivery_ids, n0.delivery_ids,
        "the list stays as written"
    );

    let got = store
        .notes(&[
            (org.clone(), n0.key.clone()),
            (org.clone(), n0.key.clone()),
            (other.clone(), n0.key.clone()),
            (org.clone(), "nothing#here.0".into()),
        ])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].org_id.as_str(),
            got[0].key.as_str(),
            &got[0].delivery_ids[..]
        ),
        (org.as_str(), n0.key.as_str(), &[d0.clone()][..])
    );
    assert!((got[0].created_at - now).num_seconds().abs() <= 1);

    // By minutes: both of the org's, in key order; a range holding one.
    let (m0, m1) = (minute_of_event(&e0), minute_of_event(&e1));
    let page = store.notes_between(&org, &m1, &m0, 10).await.unwrap();
    let keys: Vec<&str> = page.notes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, [n1.key.as_str(), n0.key.as_str()]);
    let page = store.notes_between(&org, &m0, &m0, 10).await.unwrap();
    assert_eq!(page.notes.len(), 1);
    assert!(store
        .notes_between(&org, &m0, &m1, 10)
        .await
        .unwrap()
        .notes
        .is_empty());

    // No delivery listing or overdue page shows a note.
    let listed = store.list_for_endpoint(&ep, None, 10, None).await.unwrap();
    assert!(listed.items.is_empty());
    let overdue = store
        .overdue(&org, now + Span::days(1), 10, None)
        .await
        .unwrap();
    assert!(overdue.items.is_empty());
    assert!(store.get(&d0).await.unwrap().is_none());
}

/// A replay's read of notes is bounded by its own deliveries' events: it
/// finds a note whose span starts up to `NOTE_SPAN_SECS` before them, and
/// reads no note of the minute's other seconds (a note keyed later, or
/// earlier than a span, is not read even if it lists the delivery: no
/// fan-out writes such a note).
pub async fn a_replay_reads_the_notes_of_its_seconds_only(a: Adapters) {
    use webhooks_domain::queued::{
        minute_of_event, note_key, second_of_event, QueuedNote, NOTE_SPAN_SECS,
    };
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    let ep = ids::new_id("ep");
    // An event at second 30 of a minute that has begun.
    let now = Utc::now();
    let minute_start =
        now - Span::seconds(i64::from(chrono::Timelike::second(&now))) - Span::minutes(2);
    let at = minute_start + Span::seconds(30) + Span::milliseconds(5);
    let event = ids::new_id_at("evt", at);
    assert_eq!(second_of_event(&event), 30);
    let minute = minute_of_event(&event);
    let delivery = webhooks_domain::delivery::delivery_id(&ep, &event);
    let note = |second: u32, call: &str| QueuedNote {
        org_id: org.clone(),
        key: note_key(&minute, second, call, 0),
        messages: vec![format!("msg-{call}")].into(),
        delivery_ids: vec![delivery.clone()].into(),
        created_at: now,
        confirmed_at: None,
        contested: Vec::new(),
    };
    let wanted = std::slice::from_ref(&delivery);
    for (second, call, found) in [
        (31, "later", false),
        (30 - NOTE_SPAN_SECS - 1, "before-any-span", false),
        (30 - NOTE_SPAN_SECS, "span-start", true),
    ] {
        assert!(store.note_queued(&note(second, call)).await.unwrap());
        assert_eq!(
            store.noted(&org, wanted).await.unwrap().len(),
            usize::from(found),
            "a note under second {second}"
        );
    }
}

/// A note too big for one item is refused, as DynamoDB refuses it; the
/// fan-out keeps notes to `NOTE_CAPACITY` deliveries, well under it.
/// DynamoDB's adapter deflates a note's lines, so the too-big note's
/// message tags are random (as SQS's are): over 400 KB even deflated.
pub async fn a_note_over_400_kb_is_refused(a: Adapters) {
    use webhooks_domain::queued::{QueuedNote, NOTE_CAPACITY};
    let store = a.deliveries;
    let org = format!("org-{}", ids::new_id("x"));
    let ep = ids::new_id("ep");
    let ids_of = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| webhooks_domain::delivery::delivery_id(&ep, &ids::new_id("evt")))
            .collect()
    };
    // Longer than the fan-out's tags: 36 hex characters that deflating
    // does not shorten much, as long as an SQS message id.
    let messages = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(format!("{org}/{i}")))[..36].to_string()
            })
            .collect()
    };
    let fits = QueuedNote {
        org_id: org.clone(),
        key: "202612051030#fits.0".into(),
        delivery_ids: ids_of(NOTE_CAPACITY).into(),
        messages: messages(NOTE_CAPACITY).into(),
        created_at: Utc::now(),
        confirmed_at: None,
        contested: Vec::new(),
    };
    assert!(store.note_queued(&fits).await.unwrap());
    let too_big = QueuedNote {
        key: "202612051030#big.0".into(),
        delivery_ids: ids_of(20_000).into(),
        messages: messages(20_000).into(),
        ..fits
    };
    assert!(store.note_queued(&too_big).await.is_err());
    let found = store
        .notes(&[(org.clone(), "202612051030#big.0".into())])
        .await
        .unwrap();
    assert!(found.is_empty(), "nothing written");
}

/// Each contract, once per backend.
macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )*
        }
        mod on_moto {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::moto(stringify!($name)).await).await;
                }
            )*
        }
    };
}

contracts!(
    deliveries_are_unique_and_transitions_guarded,
    one_lease_at_a_time_and_numbers_without_gaps,
    an_expired_lease_and_a_stale_chain_are_taken_over,
    an_unleased_first_attempt_records_only_for_its_chain,
    a_chain_is_handed_over_only_by_its_owner,
    moving_to_pending_starts_a_new_chain,
    a_live_lease_is_never_taken_by_a_move,
    the_attempt_log_keeps_the_last_attempts,
    an_item_over_400_kb_is_refused,
    endpoint_updates_are_versioned,
    endpoint_filters_are_kept_and_listed_for_the_fan_out,
    endpoint_headers_are_kept_and_summaries_name_them,
    endpoint_auth_is_kept_and_shown_without_secrets,
    summaries_are_what_reads_show_without_the_secrets,
    health_writes_clobber_nothing_and_move_the_version,
    creates_stop_at_the_orgs_limit_and_deletes_free_a_slot,
    concurrent_creates_take_the_last_slot_once,
    concurrent_disables_turn_an_endpoint_off_once,
    overdue_lists_only_pending_deliveries_due_before,
    a_filtered_listing_examines_a_bounded_number_per_page,
    overdue_pages_through_a_backlog,
    a_requeued_delivery_is_marked_only_as_read,
    a_long_deferral_is_noted_on_the_lease_condition,
    stats_buckets_add_up_per_endpoint_and_hour,
    a_read_of_many_may_name_a_delivery_twice,
    notes_of_queued_deliveries_are_found_by_org_and_minute,
    a_replay_reads_the_notes_of_its_seconds_only,
    a_note_over_400_kb_is_refused,
);
