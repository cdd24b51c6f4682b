//! Where the portal's keys come from: fixed (`webhooks dev`, tests), or the
//! Secrets Manager secret of the stack, read again every few minutes so a
//! rotation takes effect with no deploy.
//!
//! A secret that cannot be read or used never stops the API: the portal is
//! off (and an error logged) until a usable value arrives, while `/healthz`
//! and `/v1` go on. A bad new value keeps the keys loaded before it.

use super::keys::PortalKeys;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use webhooks_aws::runtime_secret::ProviderSecret;

/// How long loaded keys are used before the secret is looked at again. The
/// secret itself is cached for `runtime_secret::SECRET_TTL` (5 minutes),
/// so a new value takes effect within about that; a failed read is retried
/// at most this often, so requests cannot each cost a `GetSecretValue`.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The portal's keys, as a deployment provides them.
pub(crate) enum KeySource {
    Fixed(Arc<PortalKeys>),
    Secret(SecretKeys),
}

impl KeySource {
    /// The keys in use; `None` while there are none that work.
    pub(crate) async fn current(&self) -> Option<Arc<PortalKeys>> {
        match self {
            KeySource::Fixed(keys) => Some(keys.clone()),
            // Boxed as a trait object: the Secrets Manager call's future is
            // deep, and every request's future would otherwise hold its type
            // (the simulation's futures then pass the compiler's depth limit).
            KeySource::Secret(secret) => {
                let read: std::pin::Pin<
                    Box<dyn std::future::Future<Output = Option<Arc<PortalKeys>>> + Send + '_>,
                > = Box::pin(secret.current());
                read.await
            }
        }
    }
}

/// Keys read from a secret, held between reads.
pub(crate) struct SecretKeys {
    secret: ProviderSecret,
    recheck: Duration,
    held: Mutex<Held>,
    /// One read at a time: concurrent requests at a cold start share it.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    keys: Option<Arc<PortalKeys>>,
    /// SHA-256 of the value last parsed, so an unchanged value is not
    /// parsed again (and no second copy of the private key is kept).
    digest: Option<[u8; 32]>,
    checked_at: Option<Instant>,
}

fn lock(m: &Mutex<Held>) -> MutexGuard<'_, Held> {
    // Every field is replaced whole: never left half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SecretKeys {
    pub(crate) fn new(secret: ProviderSecret, recheck: Duration) -> Self {
        SecretKeys {
            secret,
            recheck,
            held: Mutex::new(Held::default()),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// `Some(keys held)` while the last look is recent enough.
    fn fresh(&self) -> Option<Option<Arc<PortalKeys>>> {
        let held = lock(&self.held);
        held.checked_at
            .filter(|at| at.elapsed() < self.recheck)
            .map(|_| held.keys.clone())
    }

    async fn current(&self) -> Option<Arc<PortalKeys>> {
        if let Some(keys) = self.fresh() {
            return keys;
        }
        let _one = self.reading.lock().await;
        if let Some(keys) = self.fresh() {
            return keys;
        }
        let read = self.secret.current().await;
        let previous = lock(&self.held).digest;
        let mut loaded = None;
        let digest = match read {
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot read the portal signing key; {}",
                    if self.has_keys() {
                        "keeping the keys read before"
                    } else {
                        "no portal sessions until it can be read (/healthz and /v1 are unaffected)"
                    }
                );
                previous
            }
            Ok(value) => {
                use sha2::Digest as _;
                let digest: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
                if previous != Some(digest) {
                    match PortalKeys::from_pem(&value) {
                        Ok(keys) => {
                            tracing::info!(key_ids = ?keys.key_ids(), "portal signing keys loaded");
                            loaded = Some(Arc::new(keys));
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "the portal signing key secret cannot be used; {}",
                            if self.has_keys() {
                                "keeping the keys read before"
                            } else {
                                "no portal sessions until it holds a usable key (/healthz and /v1 are unaffected)"
                            }
                        ),
                    }
                }
                Some(digest)
            }
        };
        let mut held = lock(&self.held);
        if loaded.is_some() {
            held.keys = loaded;
        }
        held.digest = digest;
        held.checked_at = Some(Instant::now());
        held.keys.clone()
    }

    fn has_keys(&self) -> bool {
        lock(&self.held).keys.is_some()
    }
}
