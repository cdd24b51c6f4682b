//! Writing an event under an idempotency claim: `POST /v1/events` with an
//! `idempotency_key`, and the platform event of a Stripe billing event
//! (claimed by the Stripe event's id).
//!
//! The first request claims the key with a new event id, then writes the
//! event; a repeated request answers the claimed id. The claimed event may
//! not be written: the request that claimed it stopped in between, or is
//! still running. What a repeat does then depends on how long ago the
//! claimed id was made:
//!
//! - less than [`WRITE_WINDOW`]: the claiming request may still be running.
//!   The repeat writes the event under the claimed id itself, so both write
//!   the same event. Its write lands at most twice the write window after
//!   the id was made, inside the sweeper's settle window
//!   ([`MIN_SETTLE_WINDOW`]), so the sweeper still sees it.
//! - more than twice the write window: every request that could write the
//!   claimed id has ended, and none did. The sweeper's cursor may be past
//!   that id already: written now, the event would never be swept, and with
//!   its stream record lost too, never delivered. So the repeat makes the
//!   event under an id of its own (made now, written within the window like
//!   any new event), claims it as the successor of the claimed one, and
//!   answers it. Every later repeat follows the claims to the same id.
//! - in between: a repeat that wrote the claimed id may still be running,
//!   and another id written now would make two events of one key. The
//!   repeat is refused as [`PublishError::InProgress`]; trying again after
//!   the wait it names settles it.
//!
//! No client ever saw a superseded id: a request answers only once its
//! event is written, and a superseded id's event never was.

use chrono::{DateTime, Utc};
use std::time::Duration;
use webhooks_domain::event::{MIN_SETTLE_WINDOW, WRITE_WINDOW};
use webhooks_domain::{ids, Event};
use webhooks_ports::{BackendError, EventStore, IdempotencyStore};

/// Most superseded ids a repeat follows before it gives up (each one took
/// a failed request and twice the write window).
const MAX_SUPERSEDED: usize = 16;

/// The idempotency claim an event is written under.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The key, in the caller's namespace (`events:...`, `stripe:...`).
    pub key: &'a str,
    /// What a repeat must match to reuse the key (`None`: anything does).
    pub fingerprint: Option<&'a str>,
    /// How long the key is remembered.
    pub ttl: Duration,
}

/// A claimed event's id, and whether this request wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    /// `false` when an earlier request had written it.
    pub written: bool,
}

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The key was claimed for another request (its fingerprint differs).
    #[error("the idempotency key was claimed by a different request")]
    Mismatch,
    /// The claimed event may still be being written by another request;
    /// try again after `retry_after`.
    #[error("a request with this idempotency key may still be writing its event")]
    InProgress { retry_after: Duration },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The claim of the successor of `id`, a claimed event id that was never
/// written. Ids are unique, so this key names one claim only.
fn superseded_key(id: &str) -> String {
    format!("superseded:{id}")
}

/// Writes `event` (made at `now`, under a new id) unless its key was
/// claimed before; answers the id the caller holds (see the module
/// documentation).
pub async fn publish_claimed(
    events: &dyn EventStore,
    idempotency: &dyn IdempotencyStore,
    claim: &Claim<'_>,
    mut event: Event,
    now: DateTime<Utc>,
) -> Result<Published, PublishError> {
    let own_id = event.id.clone();
    let value = match claim.fingerprint {
        Some(f) => format!("{own_id} {f}"),
        None => own_id.clone(),
    };
    let mut key = claim.key.to_string();
    for _ in 0..=MAX_SUPERSEDED {
        let Some(stored) = idempotency.claim(&key, &value, claim.ttl).await? else {
            // Ours: the first request, or the successor of a lost write.
            let written = events.put_if_absent(&event).await?;
            return Ok(Published {
                id: own_id,
                written,
            });
        };
        // "<event id> <fingerprint>"; a bare id was claimed before
        // fingerprints were kept, and is taken as a match.
        let (claimed, fingerprint) = match stored.split_once(' ') {
            Some((id, f)) => (id.to_string(), Some(f)),
            None => (stored.clone(), None),
        };
        if let (Some(mine), Some(theirs)) = (claim.fingerprint, fingerprint) {
            if mine != theirs {
                return Err(PublishError::Mismatch);
            }
        }
        let written = events.get(&event.org_id, &claimed).await?;
        if written.is_some() {
            return Ok(Published {
                id: claimed,
                written: false,
            });
        }
        // An id that is not an event id's shape tells no age: taken as old.
        let age = ids::made_at(&claimed, "evt")
            .and_then(|made| (now - made).to_std().ok())
            .unwrap_or(Duration::MAX);
        if age < WRITE_WINDOW {
            // Its request may still be writing it: written now, by both.
            event.id.clone_from(&claimed);
            let written = events.put_if_absent(&event).await?;
            return Ok(Published {
                id: claimed,
                written,
            });
        }
        if age < MIN_SETTLE_WINDOW {
            return Err(PublishError::InProgress {
                retry_after: MIN_SETTLE_WINDOW - age,
            });
        }
        tracing::warn!(
            superseded = %claimed,
            event_id = %own_id,
            "the request that claimed this key never wrote its event; writing it under a new id"
        );
        key = superseded_key(&claimed);
    }
    Err(BackendError::Transient(format!(
        "idempotency key {}: more than {MAX_SUPERSEDED} claimed events never written",
        claim.key
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::sync::Arc;
    use webhooks_domain::EventType;
    use webhooks_memory::{MemoryEventStore, MemoryIdempotencyStore};

    const TTL: Duration = Duration::from_secs(3600);

    /// `secs` after the tests began, in whole seconds (the memory stores
    /// expire what is older than their TTL by the system clock).
    fn at(secs: i64) -> DateTime<Utc> {
        static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let start = *START.get_or_init(|| Utc::now().timestamp());
        DateTime::<Utc>::from_timestamp(start + secs, 0).unwrap()
    }

    fn event(now: DateTime<Utc>) -> Event {
        let data = RawValue::from_string(r#"{"n":1}"#.to_string()).unwrap();
        Event::new_at("org", EventType::LeadWon, data, now)
    }

    struct Stores {
        events: Arc<MemoryEventStore>,
        idempotency: Arc<MemoryIdempotencyStore>,
    }

    impl Stores {
        fn new() -> Self {
            Stores {
                events: MemoryEventStore::new(),
                idempotency: MemoryIdempotencyStore::new(),
            }
        }

        async fn publish(&self, key: &str, now: DateTime<Utc>) -> Result<Published, PublishError> {
            let claim = Claim {
                key,
                fingerprint: Some("f"),
                ttl: TTL,
            };
            publish_claimed(
                self.events.as_ref(),
                self.idempotency.as_ref(),
                &claim,
                event(now),
                now,
            )
            .await
        }

        /// A request that claimed `key` at `t` and stopped before writing.
        async fn claimed_and_stopped(&self, key: &str, t: DateTime<Utc>) -> String {
            let id = ids::new_id_at("evt", t);
            let first = self
                .idempotency
                .claim(key, &format!("{id} f"), TTL)
                .await
                .unwrap();
            assert_eq!(first, None);
            id
        }

        async fn ids(&self) -> Vec<String> {
            use webhooks_ports::EventStore;
            let all = self.events.list_after("org", "", 100).await.unwrap();
            all.into_iter().map(|e| e.expect("decodable").id).collect()
        }
    }

    #[tokio::test]
    async fn a_repeat_answers_the_first_id_and_writes_nothing() {
        let s = Stores::new();
        let first = s.publish("k", at(0)).await.unwrap();
        assert!(first.written);
        let again = s.publish("k", at(5)).await.unwrap();
        assert_eq!(
            again,
            Published {
                id: first.id.clone(),
                written: false
            }
        );
        assert_eq!(s.ids().await, [first.id]);
    }

    #[tokio::test]
    async fn a_repeat_within_the_write_window_writes_the_claimed_id() {
        let s = Stores::new();
        let claimed = s.claimed_and_stopped("k", at(0)).await;
        let again = s.publish("k", at(29)).await.unwrap();
        assert_eq!(
            again,
            Published {
                id: claimed.clone(),
                written: true
            }
        );
        assert_eq!(s.ids().await, [claimed]);
    }

    #[tokio::test]
    async fn a_repeat_after_twice_the_window_writes_a_new_id_that_later_repeats_answer() {
        let s = Stores::new();
        let claimed = s.claimed_and_stopped("k", at(0)).await;
        let waited = s.publish("k", at(30)).await.unwrap_err();
        assert!(
            matches!(waited, PublishError::InProgress { retry_after } if retry_after == Duration::from_secs(30)),
            "{waited:?}"
        );
        assert!(s.ids().await.is_empty());
        let replaced = s.publish("k", at(60)).await.unwrap();
        assert!(replaced.written);
        assert_ne!(replaced.id, claimed);
        assert_eq!(ids::made_at(&replaced.id, "evt"), Some(at(60)));
        // Later repeats, however late, answer the same id.
        for t in [61, 600, 3000] {
            assert_eq!(
                s.publish("k", at(t)).await.unwrap(),
                Published {
                    id: replaced.id.clone(),
                    written: false
                }
            );
        }
        assert_eq!(s.ids().await, [replaced.id]);
    }

    #[tokio::test]
    async fn a_successor_that_was_never_written_is_superseded_in_turn() {
        let s = Stores::new();
        let first = s.claimed_and_stopped("k", at(0)).await;
        // The first repeat claimed a successor and stopped too.
        let second = s
            .claimed_and_stopped(&superseded_key(&first), at(100))
            .await;
        // Within its write window, the successor is written as it is.
        let p = s.publish("k", at(110)).await.unwrap();
        assert_eq!(
            p,
            Published {
                id: second.clone(),
                written: true
            }
        );

        let t = Stores::new();
        let first = t.claimed_and_stopped("k", at(0)).await;
        let second = t
            .claimed_and_stopped(&superseded_key(&first), at(100))
            .await;
        let third = t.publish("k", at(200)).await.unwrap();
        assert!(third.written);
        assert!(third.id != first && third.id != second);
        assert_eq!(t.ids().await, [third.id]);
    }

    #[tokio::test]
    async fn a_key_claimed_for_other_content_is_refused() {
        let s = Stores::new();
        s.publish("k", at(0)).await.unwrap();
        let claim = Claim {
            key: "k",
            fingerprint: Some("other"),
            ttl: TTL,
        };
        let refused = publish_claimed(
            s.events.as_ref(),
            s.idempotency.as_ref(),
            &claim,
            event(at(1)),
            at(1),
        )
        .await;
        assert!(matches!(refused, Err(PublishError::Mismatch)));
    }
}
