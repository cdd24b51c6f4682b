//! The `Authorization` of each endpoint's POSTs (CONTRACT section 12):
//! Basic from its credentials, or a bearer token from its OAuth 2.0 token
//! endpoint, kept per endpoint.
//!
//! Tokens cost a request each, so they are fetched per endpoint, never per
//! delivery:
//! - a token is kept until shortly before it expires
//!   ([`AccessToken::refresh_margin_secs`]), for the credentials it was
//!   fetched with (a changed `auth` never uses the old one's token);
//! - one fetch at a time per endpoint: the deliveries of a batch that find
//!   no token wait for the first one's fetch and use its token, or its
//!   error, rather than fetch again;
//! - a 401 from the receiver fetches a new token once for everyone who
//!   used the old one; a token fetched after a 401 is not replaced after
//!   another 401 for [`RENEW_AFTER_401_EVERY`] (a receiver that refuses
//!   every token does not turn each delivery into a fetch).
//!
//! A token endpoint that fails makes the attempt fail with
//! `auth_failed: ...`, retried on the delivery's schedule like any failure.

use crate::http::Transport;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use webhooks_domain::endpoint::auth::{parse_token_response, AccessToken, OAuth2Client};
use webhooks_domain::endpoint::EndpointAuth;
use webhooks_domain::Endpoint;

/// What an attempt's error starts with when no `Authorization` could be made.
pub const AUTH_FAILED: &str = "auth_failed";

/// How long a token fetched because of a 401 is kept through further 401s.
pub const RENEW_AFTER_401_EVERY: chrono::Duration = chrono::Duration::seconds(30);

/// Endpoints whose tokens are kept at once; past it, the entries no
/// delivery is using are dropped (their tokens are fetched again if needed).
const MAX_ENDPOINTS: usize = 10_000;

/// A token kept for one endpoint.
struct Kept {
    /// `Bearer <token>`.
    authorization: String,
    /// Used until then; fetched again after.
    fresh_until: DateTime<Utc>,
    fetched_at: DateTime<Utc>,
    /// Fetched because a receiver answered 401.
    after_401: bool,
}

/// One endpoint's token and the last fetch's failure.
struct Slot {
    /// The credentials the token belongs to.
    fingerprint: [u8; 32],
    token: Option<Kept>,
    /// The last fetch's error and its number, while no token was fetched since.
    failure: Option<(u64, String)>,
}

struct Entry {
    /// Fetches finished so far: a waiter that saw fewer when it began
    /// waiting takes the newer fetch's outcome instead of fetching again.
    fetches: AtomicU64,
    slot: tokio::sync::Mutex<Slot>,
}

/// What [`Tokens::bearer`] came to.
enum Bearer {
    /// `Bearer <token>`, kept or just fetched.
    Token(String),
    /// The 401 stands: its token was fetched after a 401 moments ago.
    KeepRefusal,
    /// The fetch failed: the attempt's error.
    Failed(String),
}

/// Each endpoint's OAuth 2.0 token, shared by every attempt of the process.
#[derive(Default)]
pub(crate) struct Tokens {
    entries: Mutex<HashMap<(String, String), Arc<Entry>>>,
    /// Token requests made (successful or not), for tests and figures.
    fetched: AtomicU64,
}

impl Tokens {
    /// Token requests made so far.
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The `Authorization` value for a POST to `endpoint` at `now`: none
    /// without auth, Basic from its credentials, or a bearer token kept or
    /// fetched. `Err`: the attempt's error (`auth_failed: ...`).
    pub(crate) async fn authorization(
        &self,
        endpoint: &Endpoint,
        transport: &dyn Transport,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<Option<String>, String> {
        match &endpoint.auth {
            None => Ok(None),
            Some(auth @ EndpointAuth::Basic { .. }) => Ok(auth.basic_authorization()),
            Some(auth @ EndpointAuth::OAuth2ClientCredentials(client)) => {
                match self
                    .bearer(endpoint, auth.fingerprint(), client, transport, now, None)
                    .await
                {
                    Bearer::Token(t) => Ok(Some(t)),
                    Bearer::Failed(e) => Err(e),
                    // Only asked after a 401.
                    Bearer::KeepRefusal => Ok(None),
                }
            }
        }
    }

    /// After the receiver answered 401 to `used` (an `Authorization` of
    /// [`Tokens::authorization`]): the value to POST again with, once, or
    /// `None` to keep the 401 (no bearer token, or one fetched after a 401
    /// moments ago). `Err`: the new token's fetch failed.
    pub(crate) async fn after_401(
        &self,
        endpoint: &Endpoint,
        used: &str,
        transport: &dyn Transport,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<Option<String>, String> {
        let Some(auth @ EndpointAuth::OAuth2ClientCredentials(client)) = &endpoint.auth else {
            return Ok(None);
        };
        match self
            .bearer(
                endpoint,
                auth.fingerprint(),
                client,
                transport,
                now,
                Some(used),
            )
            .await
        {
            Bearer::Token(t) => Ok(Some(t)),
            Bearer::KeepRefusal => Ok(None),
            Bearer::Failed(e) => Err(e),
        }
    }

    /// The endpoint's entry, made if it has none.
    fn entry(&self, endpoint: &Endpoint, fingerprint: [u8; 32]) -> Arc<Entry> {
        let key = (endpoint.org_id.clone(), endpoint.id.clone());
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = entries.get(&key) {
            return e.clone();
        }
        if entries.len() >= MAX_ENDPOINTS {
            // Only this map holds the entries no attempt is using.
            entries.retain(|_, e| Arc::strong_count(e) > 1);
        }
        let entry = Arc::new(Entry {
            fetches: AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(Slot {
                fingerprint,
                token: None,
                failure: None,
            }),
        });
        entries.insert(key, entry.clone());
        entry
    }

    /// A bearer `Authorization` for the endpoint: its kept token while
    /// fresh, else one fetched (one fetch at a time). `refused`: the value
    /// a receiver just answered 401 to, which is replaced unless it was
    /// fetched after a 401 moments ago.
    async fn bearer(
        &self,
        endpoint: &Endpoint,
        fingerprint: [u8; 32],
        client: &OAuth2Client,
        transport: &dyn Transport,
        now: impl Fn() -> DateTime<Utc>,
        refused: Option<&str>,
    ) -> Bearer {
        let entry = self.entry(endpoint, fingerprint);
        let seen = entry.fetches.load(Ordering::Acquire);
        let mut slot = entry.slot.lock().await;
        if slot.fingerprint != fingerprint {
            // The endpoint's auth changed: nothing kept is of use.
            *slot = Slot {
                fingerprint,
                token: None,
                failure: None,
            };
        }
        let at = now();
        if let Some(kept) = &slot.token {
            match refused {
                // Someone replaced the refused token meanwhile: use theirs.
                Some(used) if kept.authorization != used && kept.fresh_until > at => {
                    return Bearer::Token(kept.authorization.clone())
                }
                Some(_) if kept.after_401 && at - kept.fetched_at < RENEW_AFTER_401_EVERY => {
                    return Bearer::KeepRefusal
                }
                Some(_) => {}
                None if kept.fresh_until > at => return Bearer::Token(kept.authorization.clone()),
                None => {}
            }
        }
        // A fetch that finished while this one waited: its failure stands
        // for this attempt too (its token would have been taken above).
        if let Some((number, error)) = &slot.failure {
            if *number > seen {
                return Bearer::Failed(error.clone());
            }
        }
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch(client, transport).await;
        let number = entry.fetches.fetch_add(1, Ordering::AcqRel) + 1;
        match fetched {
            Ok(token) => {
                let at = now();
                let life = token.lifetime_secs as f64 - token.refresh_margin_secs();
                let fresh_for = chrono::Duration::milliseconds((life * 1000.0) as i64);
                let authorization = token.authorization();
                tracing::info!(
                    endpoint_id = %endpoint.id,
                    lifetime_secs = token.lifetime_secs,
                    after_401 = refused.is_some(),
                    "OAuth token fetched"
                );
                slot.token = Some(Kept {
                    authorization: authorization.clone(),
                    fresh_until: at + fresh_for,
                    fetched_at: at,
                    after_401: refused.is_some(),
                });
                slot.failure = None;
                Bearer::Token(authorization)
            }
            Err(error) => {
                tracing::warn!(endpoint_id = %endpoint.id, error = %error, "OAuth token fetch failed");
                slot.token = None;
                slot.failure = Some((number, error.clone()));
                Bearer::Failed(error)
            }
        }
    }
}

/// One token request (RFC 6749 section 4.4), through the delivery client.
async fn fetch(client: &OAuth2Client, transport: &dyn Transport) -> Result<AccessToken, String> {
    let headers = [
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept", "application/json".to_string()),
        ("authorization", client.client_authorization()),
    ];
    let answer = transport
        .request_token(&client.token_url, &headers, client.token_request_body())
        .await
        .map_err(|e| format!("{AUTH_FAILED}: the token endpoint could not be reached: {e}"))?;
    parse_token_response(answer.status, &answer.body).map_err(|e| format!("{AUTH_FAILED}: {e}"))
}
