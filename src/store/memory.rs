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

use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store};
use crate::Result;
use crate::hash::FastHash;
use crate::wake::{Waiters, Watch};

/// The URL scheme of this store: `memory://` or `memory://NAME`.
pub(crate) const SCHEME: &str = "memory://";

/// Free the values of expired, never released locks once this many acquisitions (and at
/// least as many as there are keys, so that sweeping costs O(1) per acquisition) have
/// happened since the last sweep. A key's slot stays, as its fence counter must.
const SWEEP_EVERY: u32 = 1024;

/// Named stores: every `memory://NAME` in a process opens the same store.
static NAMED: LazyLock<Mutex<HashMap<String, MemoryStore>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    store: Arc<Mutex<Slots>>,
    /// `lock` calls waiting for a key of this store to be released.
    waiters: Arc<Waiters>,
}

#[derive(Default)]
struct Slots {
    /// One slot per key ever locked: the lock (if any) and the key's fence counter, which
    /// outlives the locks it counts, as in Redis. One hash lookup per operation, and a
    /// key that is locked again reuses its slot and its value buffer.
    slots: HashMap<String, Slot, FastHash>,
    since_sweep: u32,
    /// Fenced resources.
    resources: HashMap<String, Resource, FastHash>,
}

/// A fenced resource: its value, the highest token seen and who used it.
struct Resource {
    value: Option<String>,
    highest: u64,
    /// The lock value that used `highest`; `None` for an anonymous access.
    holder: Option<Box<str>>,
}

struct Slot {
    /// The holder's value; meaningful only while `held` and `deadline` is ahead.
    value: String,
    deadline: Instant,
    /// Set by an acquisition, cleared by a release (or by a sweep once expired).
    held: bool,
    /// The last fencing token issued for this key: the token of its current incarnation.
    fence: u64,
    /// The attempts that armed the current incarnation and were not retired since (the
    /// buffer is reused from one incarnation to the next).
    claims: Vec<AttemptId>,
}

impl Slot {
    /// The value holding the key at `now`, if any.
    fn holder(&self, now: Instant) -> Option<&str> {
        (self.held && self.deadline > now).then_some(self.value.as_str())
    }
}

impl MemoryStore {
    /// A private store shared only by clones of the client that opened it.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The process-wide store called `name` (`""` for plain `memory://`).
    pub(crate) fn named(name: &str) -> Self {
        NAMED.lock().entry(name.to_owned()).or_default().clone()
    }

    fn acquire_now(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
    ) -> Acquire {
        let now = Instant::now();
        let deadline = deadline(now, expiration);
        let mut store = self.store.lock();
        let store = &mut *store;
        store.since_sweep += 1;
        if store.since_sweep >= SWEEP_EVERY && store.since_sweep as usize >= store.slots.len() {
            store.since_sweep = 0;
            for slot in store.slots.values_mut() {
                if slot.held && slot.deadline <= now {
                    slot.held = false;
                    slot.value = String::new();
                    slot.claims = Vec::new();
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
                    claims: vec![attempt],
                },
            );
            return Acquire::Acquired(1);
        };
        match slot.holder(now) {
            Some(holder) if holder != val => Acquire::Held(Some(slot.deadline - now)),
            Some(_) => {
                // A re-arm never shortens the lease.
                slot.deadline = slot.deadline.max(deadline);
                slot.claims.push(attempt);
                Acquire::Acquired(slot.fence)
            }
            None => {
                slot.fence += 1;
                slot.value.clear();
                slot.value.push_str(val);
                slot.deadline = deadline;
                slot.held = true;
                slot.claims.clear();
                slot.claims.push(attempt);
                Acquire::Acquired(slot.fence)
            }
        }
    }

    /// The slot of `key` if `val` holds it at `now` (in the incarnation of `token`, if
    /// given).
    fn held<'a>(
        slots: &'a mut HashMap<String, Slot, FastHash>,
        key: &str,
        val: &str,
        token: Option<u64>,
        now: Instant,
    ) -> Option<&'a mut Slot> {
        slots
            .get_mut(key)
            .filter(|slot| slot.holder(now) == Some(val) && token.is_none_or(|t| t == slot.fence))
    }

    fn refresh_now(&self, key: &str, val: &str, token: u64, expiration: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match Self::held(&mut store.slots, key, val, Some(token), now) {
            Some(slot) => {
                slot.deadline = slot.deadline.max(deadline(now, expiration));
                true
            }
            None => false,
        }
    }

    /// Retire `claims` (and `abort` them: no difference in process); delete the key once
    /// none is left. `Some(deleted)` if `val` held the key with any of them (`require`),
    /// or held it at all (not `require`).
    fn retire_now(&self, key: &str, val: &str, claims: &[AttemptId], require: bool) -> bool {
        let now = Instant::now();
        let (held, deleted) = {
            let mut store = self.store.lock();
            match Self::held(&mut store.slots, key, val, None, now) {
                Some(slot) => {
                    let before = slot.claims.len();
                    slot.claims.retain(|c| !claims.contains(c));
                    let mine = slot.claims.len() < before;
                    let delete = slot.claims.is_empty() && (mine || !require);
                    if delete {
                        slot.held = false;
                    }
                    (mine || !require, delete)
                }
                None => (false, false),
            }
        };
        if deleted {
            self.waiters.released(key);
        }
        held
    }

    fn pttl_now(&self, key: &str, val: &str, token: u64) -> Option<Duration> {
        let now = Instant::now();
        let mut store = self.store.lock();
        Self::held(&mut store.slots, key, val, Some(token), now).map(|slot| slot.deadline - now)
    }

    fn force_release_now(&self, key: &str, only: Option<u64>) -> bool {
        let now = Instant::now();
        let released = {
            let mut store = self.store.lock();
            match store.slots.get_mut(key) {
                Some(slot)
                    if slot.holder(now).is_some() && only.is_none_or(|t| t == slot.fence) =>
                {
                    slot.held = false;
                    slot.claims.clear();
                    true
                }
                _ => false,
            }
        };
        if released {
            self.waiters.released(key);
        }
        released
    }
}

impl MemoryStore {
    /// What an operator may see of `slot`, if a lock holds it at `now`: a digest of the
    /// holder's value, never the value.
    fn inspected(key: &str, slot: &Slot, now: Instant) -> Option<Inspected> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let value = slot.holder(now)?;
        let digest = BuildHasherDefault::<DefaultHasher>::default().hash_one(value);
        Some(Inspected {
            key: key.to_owned(),
            ttl: Some(slot.deadline - now),
            token: slot.fence,
            holder: format!("{digest:016x}"),
        })
    }

    /// The value holding `key`, for tests that play a thief.
    #[cfg(test)]
    pub(crate) fn value_of(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let store = self.store.lock();
        let slot = store.slots.get(key)?;
        slot.holder(now).map(str::to_owned)
    }

    fn fenced_now(&self, access: &Fence<'_>) -> Fenced {
        let mut store = self.store.lock();
        let resource = store
            .resources
            .entry(access.resource.to_owned())
            .or_insert_with(|| Resource {
                value: None,
                highest: access.token,
                holder: access.holder.map(Box::from),
            });
        let same_holder = resource.holder.as_deref() == access.holder;
        if access.token < resource.highest || (access.token == resource.highest && !same_holder) {
            return Err(resource.highest);
        }
        if access.token > resource.highest {
            resource.highest = access.token;
            resource.holder = access.holder.map(Box::from);
        }
        match access.write {
            Some(v) => {
                resource.value = Some(v.to_owned());
                Ok(None)
            }
            None => Ok(resource.value.clone()),
        }
    }
}

impl Store for MemoryStore {
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(expiration)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        _timeout: Duration,
    ) -> Result<Acquire> {
        Ok(self.acquire_now(key, val, expiration, attempt))
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        token: u64,
        expiration: Duration,
        _timeout: Duration,
    ) -> Result<bool> {
        Ok(self.refresh_now(key, val, token, expiration))
    }

    async fn release(
        &self,
        key: &str,
        val: &str,
        claims: &[AttemptId],
        _timeout: Duration,
    ) -> Result<bool> {
        Ok(self.retire_now(key, val, claims, true))
    }

    /// An attempt on this store always has an answer, so nothing can arrive later: only
    /// the claims are retired.
    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        _timeout: Duration,
    ) -> Result<()> {
        self.retire_now(key, val, attempts, false);
        Ok(())
    }

    async fn pttl(
        &self,
        key: &str,
        val: &str,
        token: u64,
        _timeout: Duration,
    ) -> Result<Option<Duration>> {
        Ok(self.pttl_now(key, val, token))
    }

    async fn force_release(
        &self,
        key: &str,
        only: Option<u64>,
        _timeout: Duration,
    ) -> Result<bool> {
        Ok(self.force_release_now(key, only))
    }

    async fn fenced(&self, access: &Fence<'_>, _timeout: Duration) -> Result<Fenced> {
        Ok(self.fenced_now(access))
    }

    async fn inspect(&self, key: &str, _timeout: Duration) -> Result<Option<Inspected>> {
        let now = Instant::now();
        let store = self.store.lock();
        Ok(store
            .slots
            .get(key)
            .and_then(|slot| Self::inspected(key, slot, now)))
    }

    async fn list(&self, prefix: &str, _timeout: Duration) -> Result<Vec<Inspected>> {
        let now = Instant::now();
        let store = self.store.lock();
        let mut locks: Vec<Inspected> = store
            .slots
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, slot)| Self::inspected(key, slot, now))
            .collect();
        locks.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(locks)
    }

    /// Releases are seen as they happen, in this process: a waiter is queued at once.
    fn watch(&self, key: &str) -> Option<Watch> {
        Some(self.waiters.watch(key).0)
    }
}

fn deadline(now: Instant, expiration: Duration) -> Instant {
    // Validated durations fit; saturate far in the future rather than panic regardless.
    now.checked_add(expiration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AttemptId = AttemptId { client: 1, seq: 1 };
    const B: AttemptId = AttemptId { client: 1, seq: 2 };

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_the_paused_clock() {
        let m = MemoryStore::new();
        assert_eq!(
            m.acquire_now("k", "a", Duration::from_millis(100), A),
            Acquire::Acquired(1)
        );
        assert_eq!(
            m.acquire_now("k", "b", Duration::from_millis(100), B),
            Acquire::Held(Some(Duration::from_millis(100)))
        );
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(m.pttl_now("k", "a", 1), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(m.pttl_now("k", "a", 1), None);
        assert_eq!(
            m.acquire_now("k", "b", Duration::from_millis(100), B),
            Acquire::Acquired(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_expired_entries_but_keeps_fence_counters() {
        let m = MemoryStore::new();
        for i in 0..SWEEP_EVERY - 1 {
            m.acquire_now(&format!("k{i}"), "v", Duration::from_millis(1), A);
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        m.acquire_now("trigger", "v", Duration::from_millis(1000), A);
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

    #[tokio::test(start_paused = true)]
    async fn a_key_is_deleted_when_its_last_claim_is_retired_and_rearms_never_shorten() {
        let m = MemoryStore::new();
        let ms = Duration::from_millis;
        assert_eq!(m.acquire_now("k", "v", ms(1000), A), Acquire::Acquired(1));
        assert_eq!(m.acquire_now("k", "v", ms(100), B), Acquire::Acquired(1));
        assert_eq!(m.pttl_now("k", "v", 1), Some(ms(1000)), "never shortened");
        assert!(m.retire_now("k", "v", &[A], true), "A's claim held it");
        assert_eq!(
            m.pttl_now("k", "v", 1),
            Some(ms(1000)),
            "B's claim keeps it"
        );
        assert!(!m.retire_now("k", "v", &[A], true), "A's claim is gone");
        assert!(m.retire_now("k", "v", &[B], true));
        assert_eq!(m.pttl_now("k", "v", 1), None, "no claim left: deleted");
        // A new incarnation: the old token no longer refreshes it.
        assert_eq!(m.acquire_now("k", "v", ms(1000), A), Acquire::Acquired(2));
        assert!(!m.refresh_now("k", "v", 1, ms(1000)));
        assert!(m.refresh_now("k", "v", 2, ms(1000)));
    }
}
