//! SDK clients made on their first use. A Lambda function builds at start
//! only the client every invocation needs (DynamoDB); the others (SQS, KMS,
//! EventBridge, Secrets Manager) are made by the first call that uses one,
//! so an invocation kind that never does (the api's `GET /healthz` and its
//! listings, every inbound request) never pays for them, and none is paid
//! for in the function's init.

use std::sync::{Arc, OnceLock};

/// A client of type `C`, made on the first [`Lazy::get`] (or given made).
/// Clones share the one client.
pub struct Lazy<C> {
    cell: Arc<OnceLock<C>>,
    make: Arc<dyn Fn() -> C + Send + Sync>,
}

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Lazy {
            cell: self.cell.clone(),
            make: self.make.clone(),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> Lazy<C> {
    /// A client that `make` builds when first used.
    pub fn new(make: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Lazy {
            cell: Arc::new(OnceLock::new()),
            make: Arc::new(make),
        }
    }

    /// A client made from `config` when first used, as `C::from(config)`
    /// does (the SDK clients' `Client::new`).
    pub fn from_config(
        config: &aws_config::SdkConfig,
        make: fn(&aws_config::SdkConfig) -> C,
    ) -> Self {
        let config = config.clone();
        Lazy::new(move || make(&config))
    }

    /// A client made already.
    pub fn ready(client: C) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(client.clone());
        Lazy {
            cell: Arc::new(cell),
            make: Arc::new(move || client.clone()),
        }
    }

    /// The client, made now if this is its first use.
    pub fn get(&self) -> &C {
        self.cell.get_or_init(|| (self.make)())
    }

    /// Whether the client has been made.
    pub fn is_made(&self) -> bool {
        self.cell.get().is_some()
    }
}

impl<C: Clone + Send + Sync + 'static> From<C> for Lazy<C> {
    fn from(client: C) -> Self {
        Lazy::ready(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn made_once_on_first_use_and_shared_by_clones() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let lazy = Lazy::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            String::from("client")
        });
        let clone = lazy.clone();
        assert!(!lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 0, "nothing made before use");
        assert_eq!(clone.get(), "client");
        assert_eq!(lazy.get(), "client");
        assert!(lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 1);
        let ready: Lazy<String> = String::from("given").into();
        assert!(ready.is_made());
        assert_eq!(ready.get(), "given");
    }
}
