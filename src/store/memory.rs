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

/// Open `memory://NAME` (or a store of its own for `memory://`), and where it points.
pub(crate) fn open(url: &str) -> (super::Backend, String) {
    let name = url.strip_prefix(SCHEME).unwrap_or(url);
    (
        super::Backend::Memory(MemoryStore::named(name)),
        format!("{SCHEME}{name}"),
    )
}

/// Drop the slots of expired, never released locks once this many acquisitions (and at
/// least as many as there are slots, so that sweeping costs O(1) per acquisition) have
/// happened since the last sweep.
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
    /// One slot per key held (expired ones are swept): state O(1) per held key, whatever
    /// the number of re-locks or aborted attempts.
    slots: HashMap<String, Slot, FastHash>,
    /// The last fencing token issued, for any key: one counter for the whole store, so
    /// that every acquisition of a key gets a token above every earlier one without a
    /// counter per key ever locked.
    last_token: u64,
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
    /// The holder's value (its identity).
    value: String,
    deadline: Instant,
    /// The fencing token of this incarnation.
    token: u64,
    /// The attempt that created this incarnation, and the last that armed it: an abort
    /// naming both deletes the key (no other attempt of the value armed it since).
    creator: AttemptId,
    last: AttemptId,
    /// The holder's label (empty: none) and when this incarnation was taken (with a
    /// label only).
    label: String,
    locked_at: Option<std::time::SystemTime>,
}

impl Slot {
    /// The value holding the key at `now`, if any.
    fn holder(&self, now: Instant) -> Option<&str> {
        (self.deadline > now).then_some(self.value.as_str())
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

    pub(crate) fn acquire_now(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
    ) -> Acquire {
        let now = Instant::now();
        let deadline = deadline(now, expiration);
        let mut store = self.store.lock();
        let store = &mut *store;
        store.since_sweep += 1;
        if store.since_sweep >= SWEEP_EVERY && store.since_sweep as usize >= store.slots.len() {
            store.since_sweep = 0;
            store.slots.retain(|_, slot| slot.deadline > now);
        }
        if let Some(slot) = store.slots.get_mut(key) {
            match slot.holder(now) {
                Some(holder) if holder != val => {
                    return Acquire::Held(Some(slot.deadline - now));
                }
                Some(_) => {
                    // The same holder: re-armed to the expiration given, same token.
                    slot.deadline = deadline;
                    slot.last = attempt;
                    return Acquire::Acquired(slot.token);
                }
                None => {}
            }
        }
        store.last_token += 1;
        let token = store.last_token;
        let locked_at = (!label.is_empty()).then(std::time::SystemTime::now);
        match store.slots.get_mut(key) {
            Some(slot) => {
                slot.value.clear();
                slot.value.push_str(val);
                slot.deadline = deadline;
                slot.token = token;
                slot.creator = attempt;
                slot.last = attempt;
                slot.label.clear();
                slot.label.push_str(label);
                slot.locked_at = locked_at;
            }
            None => {
                store.slots.insert(
                    key.to_owned(),
                    Slot {
                        value: val.to_owned(),
                        deadline,
                        token,
                        creator: attempt,
                        last: attempt,
                        label: label.to_owned(),
                        locked_at,
                    },
                );
            }
        }
        Acquire::Acquired(token)
    }

    /// The slot of `key` if `val` holds it at `now`.
    fn held<'a>(
        slots: &'a mut HashMap<String, Slot, FastHash>,
        key: &str,
        val: &str,
        now: Instant,
    ) -> Option<&'a mut Slot> {
        slots
            .get_mut(key)
            .filter(|slot| slot.holder(now) == Some(val))
    }

    pub(crate) fn refresh_now(&self, key: &str, val: &str, expiration: Duration) -> bool {
        let now = Instant::now();
        let mut store = self.store.lock();
        match Self::held(&mut store.slots, key, val, now) {
            Some(slot) => {
                slot.deadline = deadline(now, expiration);
                true
            }
            None => false,
        }
    }

    /// Delete `key` if `val` holds it and, with `created_by`, one of those attempts
    /// created it and one armed it last. `true` if deleted.
    pub(crate) fn release_now(
        &self,
        key: &str,
        val: &str,
        created_by: Option<&[AttemptId]>,
    ) -> bool {
        let now = Instant::now();
        let deleted = {
            let mut store = self.store.lock();
            let delete = Self::held(&mut store.slots, key, val, now).is_some_and(|slot| {
                created_by.is_none_or(|a| a.contains(&slot.creator) && a.contains(&slot.last))
            });
            if delete {
                store.slots.remove(key);
            }
            delete
        };
        if deleted {
            self.waiters.released(key);
        }
        deleted
    }

    pub(crate) fn pttl_now(&self, key: &str, val: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut store = self.store.lock();
        Self::held(&mut store.slots, key, val, now).map(|slot| slot.deadline - now)
    }

    pub(crate) fn force_release_now(&self, key: &str, only: Option<u64>) -> bool {
        let now = Instant::now();
        let released = {
            let mut store = self.store.lock();
            let delete = store.slots.get(key).is_some_and(|slot| {
                slot.holder(now).is_some() && only.is_none_or(|t| t == slot.token)
            });
            if delete {
                store.slots.remove(key);
            }
            delete
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
        let value = slot.holder(now)?;
        Some(Inspected {
            key: key.to_owned(),
            ttl: Some(slot.deadline - now),
            token: slot.token,
            holder: super::holder_digest(value),
            label: (!slot.label.is_empty()).then(|| slot.label.clone()),
            locked_at: slot.locked_at,
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

    pub(crate) fn fenced_now(&self, access: &Fence<'_>) -> Fenced {
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

impl MemoryStore {
    /// An attempt on this store always has an answer, so nothing can arrive later: only
    /// what the attempts created is deleted.
    pub(crate) fn abort_now(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
    ) -> bool {
        undo && self.release_now(key, val, Some(attempts))
    }

    pub(crate) fn inspect_now(&self, key: &str) -> Option<Inspected> {
        let now = Instant::now();
        let store = self.store.lock();
        store
            .slots
            .get(key)
            .and_then(|slot| Self::inspected(key, slot, now))
    }

    pub(crate) fn list_now(&self, prefix: &str) -> Vec<Inspected> {
        let now = Instant::now();
        let store = self.store.lock();
        let mut locks: Vec<Inspected> = store
            .slots
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, slot)| Self::inspected(key, slot, now))
            .collect();
        locks.sort_by(|a, b| a.key.cmp(&b.key));
        locks
    }
}

impl Store for MemoryStore {
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(expiration)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        _timeout: Duration,
    ) -> Result<Acquire> {
        Ok(self.acquire_now(key, val, expiration, attempt, label))
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        _timeout: Duration,
    ) -> Result<bool> {
        Ok(self.refresh_now(key, val, expiration))
    }

    async fn release(&self, key: &str, val: &str, _timeout: Duration) -> Result<bool> {
        Ok(self.release_now(key, val, None))
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        _timeout: Duration,
    ) -> Result<bool> {
        Ok(self.abort_now(key, val, attempts, undo))
    }

    async fn ttl(&self, key: &str, val: &str, _timeout: Duration) -> Result<Option<Duration>> {
        Ok(self.pttl_now(key, val))
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
        Ok(self.inspect_now(key))
    }

    async fn list(&self, prefix: &str, _timeout: Duration) -> Result<Vec<Inspected>> {
        Ok(self.list_now(prefix))
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
            m.acquire_now("k", "a", Duration::from_millis(100), A, ""),
            Acquire::Acquired(1)
        );
        assert_eq!(
            m.acquire_now("k", "b", Duration::from_millis(100), B, ""),
            Acquire::Held(Some(Duration::from_millis(100)))
        );
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(m.pttl_now("k", "a"), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(m.pttl_now("k", "a"), None);
        assert_eq!(
            m.acquire_now("k", "b", Duration::from_millis(100), B, ""),
            Acquire::Acquired(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_expired_slots_and_tokens_still_rise() {
        let m = MemoryStore::new();
        for i in 0..SWEEP_EVERY - 1 {
            m.acquire_now(&format!("k{i}"), "v", Duration::from_millis(1), A, "");
        }
        tokio::time::advance(Duration::from_millis(2)).await;
        let Acquire::Acquired(last) =
            m.acquire_now("trigger", "v", Duration::from_millis(1000), A, "")
        else {
            panic!("free key");
        };
        assert_eq!(m.store.lock().slots.len(), 1, "expired slots swept");
        let Acquire::Acquired(again) = m.acquire_now("k0", "v", Duration::from_millis(1000), A, "")
        else {
            panic!("free key");
        };
        assert!(
            again > last,
            "a swept key's next token is above every earlier one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_value_is_the_identity_and_an_abort_deletes_only_what_it_created() {
        let m = MemoryStore::new();
        let ms = Duration::from_millis;
        assert_eq!(
            m.acquire_now("k", "v", ms(1000), A, ""),
            Acquire::Acquired(1)
        );
        assert_eq!(
            m.acquire_now("k", "v", ms(100), B, ""),
            Acquire::Acquired(1)
        );
        assert_eq!(
            m.pttl_now("k", "v"),
            Some(ms(100)),
            "a re-lock sets its expiration"
        );
        assert!(!m.release_now("k", "v", Some(&[B])), "B did not create it");
        assert!(
            !m.release_now("k", "v", Some(&[A])),
            "B armed it since A created it"
        );
        assert_eq!(m.pttl_now("k", "v"), Some(ms(100)));
        assert!(m.refresh_now("k", "v", ms(50)), "shorter");
        assert_eq!(m.pttl_now("k", "v"), Some(ms(50)));
        assert!(
            m.release_now("k", "v", Some(&[A, B])),
            "A created it, B armed it last"
        );
        assert_eq!(m.pttl_now("k", "v"), None);
        assert_eq!(
            m.acquire_now("k", "v", ms(1000), B, ""),
            Acquire::Acquired(2)
        );
        assert!(
            m.release_now("k", "v", None),
            "any handle of the value releases"
        );
        assert!(
            !m.refresh_now("k", "v", ms(1000)),
            "nothing re-creates a lost lock"
        );
    }
}
