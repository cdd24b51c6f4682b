//! Secrets the functions read at run time rather than from their
//! environment: a Secrets Manager secret named by its ARN, fetched when first
//! needed, kept for [`SECRET_TTL`], and fetched once more when a signature
//! made with it fails (at most once per [`REFETCH_INTERVAL`]), so a rotation
//! takes effect without a deploy. A failed fetch is remembered for
//! [`FAILED_FETCH_TTL`]: while Secrets Manager refuses or is unreachable,
//! requests (forged ones included) are answered from that failure, or with
//! the value held, and never each cost a `GetSecretValue`. `webhooks dev`
//! gives plain values instead.

use crate::error::backend_error;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use webhooks_ports::BackendError;

/// How long a fetched value is used before it is fetched again.
pub const SECRET_TTL: Duration = Duration::from_secs(300);
/// Least time between two fetches caused by failed signatures: a flood of
/// forged requests costs at most one `GetSecretValue` per interval.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a failed fetch is remembered: no fetch is made within it, so
/// each warm function asks at most once per interval while fetches fail.
/// Also the `Retry-After` of the inbound routes' `503 secret_unavailable`.
pub const FAILED_FETCH_TTL: Duration = Duration::from_secs(10);

/// Why a secret could not be read. Names the secret's ARN, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("could not fetch secret {arn}: {reason}")]
    Fetch { arn: String, reason: BackendError },
    #[error("secret {0} has no SecretString (store the value as a plain string)")]
    NotAString(String),
}

/// Fetches secrets from Secrets Manager by ARN.
#[derive(Clone)]
pub struct SecretsManager {
    client: crate::Lazy<aws_sdk_secretsmanager::Client>,
}

impl SecretsManager {
    /// The client is made with the first fetch.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        SecretsManager {
            client: crate::Lazy::from_config(config, aws_sdk_secretsmanager::Client::new),
        }
    }

    /// A client whose every request `counter` tallies.
    #[cfg(feature = "dev")]
    pub fn counted(
        config: &aws_config::SdkConfig,
        counter: &crate::request_counter::RequestCounter,
    ) -> Self {
        let conf = aws_sdk_secretsmanager::config::Builder::from(config)
            .interceptor(counter.clone())
            .build();
        SecretsManager {
            client: aws_sdk_secretsmanager::Client::from_conf(conf).into(),
        }
    }

    /// The secret `arn`, fetched when first used.
    pub fn secret(&self, arn: impl Into<String>) -> ProviderSecret {
        self.secret_with(arn, SECRET_TTL, REFETCH_INTERVAL)
    }

    /// The same, with other intervals (tests).
    pub fn secret_with(
        &self,
        arn: impl Into<String>,
        ttl: Duration,
        refetch_interval: Duration,
    ) -> ProviderSecret {
        ProviderSecret(Arc::new(Source::Managed(Box::new(Managed {
            client: self.client.clone(),
            arn: arn.into(),
            ttl,
            refetch_interval,
            cached: Mutex::new(None),
            failed: Mutex::new(None),
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }))))
    }
}

/// A secret that signs or authenticates a provider's requests. Cheap to
/// clone; its `Debug` form shows no value.
#[derive(Clone)]
pub struct ProviderSecret(Arc<Source>);

enum Source {
    Plain(String),
    Managed(Box<Managed>),
}

struct Managed {
    client: crate::Lazy<aws_sdk_secretsmanager::Client>,
    arn: String,
    ttl: Duration,
    refetch_interval: Duration,
    cached: Mutex<Option<(String, Instant)>>,
    /// The last fetch's failure and when, until a fetch succeeds.
    failed: Mutex<Option<(SecretError, Instant)>>,
    last_refetch: Mutex<Option<Instant>>,
    /// One fetch at a time: concurrent requests at a cold start share it.
    fetching: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded value is replaced whole: never left half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_ref() {
            Source::Plain(_) => f.write_str("ProviderSecret(plain ***)"),
            Source::Managed(m) => write!(f, "ProviderSecret({})", m.arn),
        }
    }
}

impl From<&str> for ProviderSecret {
    fn from(value: &str) -> Self {
        ProviderSecret::plain(value)
    }
}

impl From<String> for ProviderSecret {
    fn from(value: String) -> Self {
        ProviderSecret(Arc::new(Source::Plain(value)))
    }
}

impl ProviderSecret {
    /// A fixed value (`webhooks dev`, tests).
    pub fn plain(value: &str) -> Self {
        ProviderSecret(Arc::new(Source::Plain(value.to_string())))
    }

    /// The value to check a request with: cached, or fetched once the
    /// cache is older than its TTL. A failed fetch falls back to the value
    /// held, if any; within [`FAILED_FETCH_TTL`] of one, nothing is fetched.
    pub async fn current(&self) -> Result<String, SecretError> {
        let m = match self.0.as_ref() {
            Source::Plain(v) => return Ok(v.clone()),
            Source::Managed(m) => m,
        };
        if let Some(answer) = m.without_fetching() {
            return answer;
        }
        // Requests waiting here share the outcome of the fetch ahead of them.
        let _one = m.fetching.lock().await;
        if let Some(answer) = m.without_fetching() {
            return answer;
        }
        match m.fetch().await {
            Ok(v) => Ok(v),
            Err(e) => match m.held() {
                Some(held) => {
                    tracing::warn!(error = %e, "using the secret held past its TTL");
                    Ok(held)
                }
                None => Err(e),
            },
        }
    }

    /// After a check with `used` failed: the secret fetched again, when the
    /// last such fetch is over [`REFETCH_INTERVAL`] ago, no fetch failed
    /// within [`FAILED_FETCH_TTL`], and it changed since; `None` otherwise
    /// (and always for a plain value).
    pub async fn refetched(&self, used: &str) -> Result<Option<String>, SecretError> {
        let m = match self.0.as_ref() {
            Source::Plain(_) => return Ok(None),
            Source::Managed(m) => m,
        };
        if m.failed_lately() {
            return Ok(None);
        }
        {
            let mut last = lock(&m.last_refetch);
            if last.is_some_and(|t| t.elapsed() < m.refetch_interval) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let _one = m.fetching.lock().await;
        let fetched = m.fetch().await?;
        Ok((fetched != used).then_some(fetched))
    }
}

impl Managed {
    fn fresh(&self) -> Option<String> {
        lock(&self.cached)
            .as_ref()
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// The value held, however old.
    fn held(&self) -> Option<String> {
        lock(&self.cached).as_ref().map(|(v, _)| v.clone())
    }

    /// The failure of a fetch within the last [`FAILED_FETCH_TTL`].
    fn recent_failure(&self) -> Option<SecretError> {
        lock(&self.failed)
            .as_ref()
            .filter(|(_, at)| at.elapsed() < FAILED_FETCH_TTL)
            .map(|(e, _)| e.clone())
    }

    fn failed_lately(&self) -> bool {
        self.recent_failure().is_some()
    }

    /// The answer when no fetch is due: the fresh value, or, within
    /// [`FAILED_FETCH_TTL`] of a failed fetch, the value held or that failure.
    fn without_fetching(&self) -> Option<Result<String, SecretError>> {
        if let Some(v) = self.fresh() {
            return Some(Ok(v));
        }
        let failure = self.recent_failure()?;
        Some(self.held().ok_or(failure))
    }

    /// One `GetSecretValue`; its value is cached, or its failure remembered.
    async fn fetch(&self) -> Result<String, SecretError> {
        let fetched = self.get_secret_value().await;
        match &fetched {
            Ok(value) => {
                *lock(&self.cached) = Some((value.clone(), Instant::now()));
                *lock(&self.failed) = None;
            }
            Err(e) => *lock(&self.failed) = Some((e.clone(), Instant::now())),
        }
        fetched
    }

    async fn get_secret_value(&self) -> Result<String, SecretError> {
        let out = self
            .client
            .get()
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| SecretError::Fetch {
                arn: self.arn.clone(),
                reason: backend_error("GetSecretValue", e),
            })?;
        out.secret_string
            .ok_or_else(|| SecretError::NotAString(self.arn.clone()))
    }
}
