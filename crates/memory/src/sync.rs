//! The one lock helper of the memory adapters.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, carrying on after a panic elsewhere: every change these
/// adapters make under a lock is a single insert or field update, so a
/// poisoned lock cannot hold a half-written map.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
