//! The embedded, in-process store (`memory://`): the same semantics as Redis (expiry,
//! owner checks, fencing tokens) for a single process, its examples and its unit tests.
//!
//! Time is read from [`tokio::time::Instant`], so tests on tokio's paused clock can
//! advance lock expiry with `tokio::time::advance`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Acquire, Fenced};

/// Sweep expired entries once this many acquisitions have happened since the last sweep
/// and the table is at least this large, so that abandoned keys do not pile up.
const SWEEP_EVERY: u32 = 1024;

/// Named stores: every `memory://NAME` in a process opens the same store.
static NAMED: LazyLock<Mutex<HashMap<String, MemoryBackend>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Clone, Default)]
pub(crate) struct MemoryBackend {
    store: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    locks: HashMap<String, Entry>,
    /// Fence counters outlive the locks they count, as in Redis.
    fences: HashMap<String, u64>,
    since_sweep: u32,
    /// Fenced resources: value and the highest token seen.
    resources: HashMap<String, (Option<String>, u64)>,
}

struct Entry {
    value: String,
    deadline: Instant,
}

impl MemoryBackend {
    /// A private store shared only by clones of the client that opened it.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The process-wide store called `name` (`""` for plain `memory://`).
    pub(crate) fn named(name: &str) -> Self {
        NAMED.lock().entry(name.to_owned()).or_default().clone()
    }

    pub(crate) fn acquire(&self, key: &str, val: &str, ttl_ms: u64) -> Acquire {
        let now = Instant::now();
        let deadline = deadline(now, ttl_ms);
        let mut store = self.store.lock();
        let store = &mut *store;
        store.since_sweep += 1;
        if store.since_sweep >= SWEEP_EVERY {
            store.since_sweep = 0;
            store.locks.retain(|_, e| e.deadline > now);
        }
        match store.locks.get_mut(key) {
            Some(e) if e.deadline > now && e.value != val => Acquire::Held,
            Some(e) if e.deadline > now => {
                e.deadline = deadline;
                Acquire::Acquired(store.fences.get(key).copied().unwrap_or(0))
            }
            slot => {
                let token = store.fences.entry(key.to_owned()).or_insert(0);
                *token += 1;
                let entry = Entry {
                    value: val.to_owned(),
                    deadline,
                };
                match slot {
                    Some(e) => *e = entry,
                    None => {
                        store.locks.insert(key.to_owned(), entry);
                    }
                }
                Acquire::Acquired(*token)
            }
        }
    }

    pub(crate) fn refresh(&self, key: &str, val: &str, ttl_ms: u64) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match store.locks.get_mut(key) {
            Some(e) if e.deadline > now && e.value == val => {
                e.deadline = deadline(now, ttl_ms);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, key: &str, val: &str) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match store.locks.get(key) {
            Some(e) if e.deadline > now && e.value == val => {
                store.locks.remove(key);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn pttl(&self, key: &str, val: &str) -> Option<Duration> {
        let now = Instant::now();
        let store = self.store.lock();
        match store.locks.get(key) {
            Some(e) if e.deadline > now && e.value == val => Some(e.deadline - now),
            _ => None,
        }
    }
}

impl MemoryBackend {
    /// The value holding `key`, for tests that play a thief.
    #[cfg(test)]
    pub(crate) fn value_of(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let store = self.store.lock();
        store
            .locks
            .get(key)
            .filter(|e| e.deadline > now)
            .map(|e| e.value.clone())
    }

    pub(crate) fn fenced(&self, resource: &str, token: u64, write: Option<&str>) -> Fenced {
        let mut store = self.store.lock();
        let (value, highest) = store.resources.entry(resource.to_owned()).or_default();
        if token < *highest {
            return Err(*highest);
        }
        *highest = token;
        match write {
            Some(v) => {
                *value = Some(v.to_owned());
                Ok(None)
            }
            None => Ok(value.clone()),
        }
    }
}

fn deadline(now: Instant, ttl_ms: u64) -> Instant {
    // Validated durations fit; saturate far in the future rather than panic regardless.
    now.checked_add(Duration::from_millis(ttl_ms))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_the_paused_clock() {
        let m = MemoryBackend::new();
        assert_eq!(m.acquire("k", "a", 100), Acquire::Acquired(1));
        assert_eq!(m.acquire("k", "b", 100), Acquire::Held);
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(m.pttl("k", "a"), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(m.pttl("k", "a"), None);
        assert_eq!(m.acquire("k", "b", 100), Acquire::Acquired(2));
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_expired_entries_but_keeps_fence_counters() {
        let m = MemoryBackend::new();
        for i in 0..SWEEP_EVERY - 1 {
            m.acquire(&format!("k{i}"), "v", 1);
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        m.acquire("trigger", "v", 1000);
        let store = m.store.lock();
        assert_eq!(store.locks.len(), 1, "expired entries swept");
        assert_eq!(store.fences.len(), SWEEP_EVERY as usize);
    }
}
