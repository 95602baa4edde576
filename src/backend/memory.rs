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

/// Free the values of expired, never released locks once this many acquisitions (and at
/// least as many as there are keys, so that sweeping costs O(1) per acquisition) have
/// happened since the last sweep. A key's slot stays, as its fence counter must.
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
    /// One slot per key ever locked: the lock (if any) and the key's fence counter, which
    /// outlives the locks it counts, as in Redis. One hash lookup per operation, and a
    /// key that is locked again reuses its slot and its value buffer.
    slots: HashMap<String, Slot>,
    since_sweep: u32,
    /// Fenced resources: value and the highest token seen.
    resources: HashMap<String, (Option<String>, u64)>,
}

struct Slot {
    /// The holder's value; meaningful only while `held` and `deadline` is ahead.
    value: String,
    deadline: Instant,
    /// Set by an acquisition, cleared by a release (or by a sweep once expired).
    held: bool,
    /// The last fencing token issued for this key.
    fence: u64,
}

impl Slot {
    /// The value holding the key at `now`, if any.
    fn holder(&self, now: Instant) -> Option<&str> {
        (self.held && self.deadline > now).then_some(self.value.as_str())
    }
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
        if store.since_sweep >= SWEEP_EVERY && store.since_sweep as usize >= store.slots.len() {
            store.since_sweep = 0;
            for slot in store.slots.values_mut() {
                if slot.held && slot.deadline <= now {
                    slot.held = false;
                    slot.value = String::new();
                }
            }
        }
        let Some(slot) = store.slots.get_mut(key) else {
            store.slots.insert(
                key.to_owned(),
                Slot {
                    value: val.to_owned(),
                    deadline,
                    held: true,
                    fence: 1,
                },
            );
            return Acquire::Acquired(1);
        };
        match slot.holder(now) {
            Some(holder) if holder != val => Acquire::Held,
            Some(_) => {
                slot.deadline = deadline;
                Acquire::Acquired(slot.fence)
            }
            None => {
                slot.fence += 1;
                slot.value.clear();
                slot.value.push_str(val);
                slot.deadline = deadline;
                slot.held = true;
                Acquire::Acquired(slot.fence)
            }
        }
    }

    pub(crate) fn refresh(&self, key: &str, val: &str, ttl_ms: u64) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match store.slots.get_mut(key) {
            Some(slot) if slot.holder(now) == Some(val) => {
                slot.deadline = deadline(now, ttl_ms);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, key: &str, val: &str) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match store.slots.get_mut(key) {
            Some(slot) if slot.holder(now) == Some(val) => {
                slot.held = false;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn pttl(&self, key: &str, val: &str) -> Option<Duration> {
        let now = Instant::now();
        let store = self.store.lock();
        match store.slots.get(key) {
            Some(slot) if slot.holder(now) == Some(val) => Some(slot.deadline - now),
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
        let slot = store.slots.get(key)?;
        slot.holder(now).map(str::to_owned)
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
        let held = store.slots.values().filter(|s| s.held).count();
        assert_eq!(held, 1, "expired entries swept");
        assert!(
            store.slots.values().all(|s| s.held || s.value.is_empty()),
            "swept values freed"
        );
        assert_eq!(
            store.slots.len(),
            SWEEP_EVERY as usize,
            "fence counters kept"
        );
    }
}
