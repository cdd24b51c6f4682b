//! Envelope encryption of endpoint signing secrets at rest: a KMS
//! customer-managed key wraps data keys, and each item's secrets are sealed
//! with AES-256-GCM under one of them.
//!
//! KMS is called as little as possible. A data key from `GenerateDataKey`
//! seals every item written by this process for [`DATA_KEY_TTL`] (at most
//! [`MAX_SEALS_PER_DATA_KEY`] times), and an unwrapped data key is kept for
//! [`DATA_KEY_TTL`] keyed by its wrapped form, so a sender delivering to many
//! endpoints pays one `Decrypt` per data key per TTL, not one per delivery.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use webhooks_ports::BackendError;

/// How long an unwrapped data key is used, to seal and to open.
pub const DATA_KEY_TTL: Duration = Duration::from_secs(300);
/// Items one data key seals before a new one is made (random 96-bit nonces
/// stay far below AES-GCM's 2^32 limit per key).
pub const MAX_SEALS_PER_DATA_KEY: u32 = 100_000;
/// Unwrapped data keys kept at once.
const MAX_CACHED_KEYS: usize = 1024;
/// The KMS encryption context of every data key: CloudTrail shows it, and a
/// key policy or grant can require it.
const CONTEXT_KEY: &str = "purpose";
const CONTEXT_VALUE: &str = "webhooks-endpoint-secrets";
/// First byte of a sealed value: the format (nonce, then ciphertext and tag).
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a secret could not be sealed or opened. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// KMS refused or failed (`GenerateDataKey`, `Decrypt`).
    #[error("KMS: {0}")]
    Kms(BackendError),
    /// KMS answered without the data key it should have returned.
    #[error("KMS {0} returned no data key")]
    NoDataKey(&'static str),
    /// The stored value is not a sealed value of this format.
    #[error("sealed secrets are malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: the value was changed, or sealed for another item.
    #[error("sealed secrets do not open: altered, or sealed for another item")]
    Tampered,
}

impl From<EnvelopeError> for BackendError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Kms(inner) => match inner {
                BackendError::Transient(m) => BackendError::Transient(format!("KMS: {m}")),
                other => BackendError::Permanent(format!("KMS: {other}")),
            },
            other => BackendError::Permanent(other.to_string()),
        }
    }
}

/// Secrets sealed for one item: the wrapped data key and the sealed bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The data key as KMS wrapped it (`CiphertextBlob`).
    pub wrapped_key: Vec<u8>,
    /// Format byte, nonce, AES-256-GCM ciphertext and tag.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

/// The data key currently sealing new items.
struct SealingKey {
    wrapped: Vec<u8>,
    cipher: Arc<Aes256Gcm>,
    made: Instant,
    seals: u32,
}

/// An unwrapped data key and when it was unwrapped.
struct OpenKey {
    cipher: Arc<Aes256Gcm>,
    since: Instant,
}

/// Seals and opens secrets under data keys of one KMS key, caching data
/// keys for [`DATA_KEY_TTL`]. Cheap to share (`Arc`).
pub struct EnvelopeCipher {
    kms: crate::Lazy<aws_sdk_kms::Client>,
    key_id: String,
    ttl: Duration,
    sealing: Mutex<Option<SealingKey>>,
    open: Mutex<HashMap<Vec<u8>, OpenKey>>,
    /// One `Decrypt` at a time: concurrent misses on one data key (a batch
    /// of deliveries at a cold start) wait for the first instead of each
    /// calling KMS.
    unwrapping: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every step: a panic elsewhere
    // cannot leave them half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn cipher_of(plaintext_key: &[u8], op: &'static str) -> Result<Aes256Gcm, EnvelopeError> {
    Aes256Gcm::new_from_slice(plaintext_key).map_err(|_| EnvelopeError::NoDataKey(op))
}

impl EnvelopeCipher {
    /// Data keys of the KMS key `key_id` (an ARN, id or alias).
    pub fn new(
        kms: impl Into<crate::Lazy<aws_sdk_kms::Client>>,
        key_id: impl Into<String>,
    ) -> Self {
        Self::with_ttl(kms, key_id, DATA_KEY_TTL)
    }

    /// The same, with another data-key lifetime (tests).
    pub fn with_ttl(
        kms: impl Into<crate::Lazy<aws_sdk_kms::Client>>,
        key_id: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        EnvelopeCipher {
            kms: kms.into(),
            key_id: key_id.into(),
            ttl,
            sealing: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            unwrapping: tokio::sync::Mutex::new(()),
        }
    }

    /// Seals `plaintext` for the item named by `aad` (authenticated, not
    /// stored: opening needs the same `aad`).
    pub async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, EnvelopeError> {
        let (wrapped, cipher) = match self.current_sealing_key() {
            Some(k) => k,
            None => self.new_data_key().await?,
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| EnvelopeError::Malformed("plaintext too long"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(Sealed {
            wrapped_key: wrapped,
            sealed,
        })
    }

    /// Opens what [`seal`](Self::seal) sealed for the same `aad`.
    pub async fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let body = match sealed.sealed.split_first() {
            Some((&FORMAT_V1, rest)) if rest.len() > NONCE_LEN => rest,
            Some((&FORMAT_V1, _)) => return Err(EnvelopeError::Malformed("too short")),
            _ => return Err(EnvelopeError::Malformed("unknown format")),
        };
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| EnvelopeError::Malformed("too short"))?;
        let cipher = self.unwrap_key(&sealed.wrapped_key).await?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| EnvelopeError::Tampered)
    }

    /// The sealing data key, if one is fresh and not used up; counts a use.
    fn current_sealing_key(&self) -> Option<(Vec<u8>, Arc<Aes256Gcm>)> {
        let mut slot = lock(&self.sealing);
        let key = slot.as_mut()?;
        if key.made.elapsed() >= self.ttl || key.seals >= MAX_SEALS_PER_DATA_KEY {
            *slot = None;
            return None;
        }
        key.seals += 1;
        Some((key.wrapped.clone(), key.cipher.clone()))
    }

    /// A new data key from KMS, which then seals the next items and opens
    /// what it sealed without a `Decrypt`.
    async fn new_data_key(&self) -> Result<(Vec<u8>, Arc<Aes256Gcm>), EnvelopeError> {
        let out = self
            .kms
            .get()
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| EnvelopeError::Kms(crate::error::backend_error("GenerateDataKey", e)))?;
        let (Some(plain), Some(wrapped)) = (out.plaintext, out.ciphertext_blob) else {
            return Err(EnvelopeError::NoDataKey("GenerateDataKey"));
        };
        let cipher = Arc::new(cipher_of(plain.as_ref(), "GenerateDataKey")?);
        let wrapped = wrapped.into_inner();
        *lock(&self.sealing) = Some(SealingKey {
            wrapped: wrapped.clone(),
            cipher: cipher.clone(),
            made: Instant::now(),
            seals: 1,
        });
        self.remember(wrapped.clone(), cipher.clone());
        Ok((wrapped, cipher))
    }

    /// The unwrapped data key: from the cache, or from KMS `Decrypt`.
    async fn unwrap_key(&self, wrapped: &[u8]) -> Result<Arc<Aes256Gcm>, EnvelopeError> {
        if let Some(c) = self.cached(wrapped) {
            return Ok(c);
        }
        let _one_at_a_time = self.unwrapping.lock().await;
        if let Some(c) = self.cached(wrapped) {
            return Ok(c);
        }
        let out = self
            .kms
            .get()
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| EnvelopeError::Kms(crate::error::backend_error("Decrypt", e)))?;
        let plain = out.plaintext.ok_or(EnvelopeError::NoDataKey("Decrypt"))?;
        let cipher = Arc::new(cipher_of(plain.as_ref(), "Decrypt")?);
        self.remember(wrapped.to_vec(), cipher.clone());
        Ok(cipher)
    }

    fn cached(&self, wrapped: &[u8]) -> Option<Arc<Aes256Gcm>> {
        let open = lock(&self.open);
        open.get(wrapped)
            .filter(|k| k.since.elapsed() < self.ttl)
            .map(|k| k.cipher.clone())
    }

    fn remember(&self, wrapped: Vec<u8>, cipher: Arc<Aes256Gcm>) {
        let mut open = lock(&self.open);
        if open.len() >= MAX_CACHED_KEYS {
            open.retain(|_, k| k.since.elapsed() < self.ttl);
        }
        if open.len() >= MAX_CACHED_KEYS {
            let oldest = open
                .iter()
                .min_by_key(|(_, k)| k.since)
                .map(|(w, _)| w.clone());
            if let Some(w) = oldest {
                open.remove(&w);
            }
        }
        open.insert(
            wrapped,
            OpenKey {
                cipher,
                since: Instant::now(),
            },
        );
    }
}
