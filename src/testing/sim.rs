//! [`SimStore`]: a simulated store for tests of code that uses a lock.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::store::memory::MemoryStore;
use crate::store::{Acquire, AttemptId, Fence, Fenced, Inspected, Store, Watch};
use crate::{Error, Result};

/// A deterministic simulated store, for tests of your own code that uses a lock: what
/// happens to my job when the lease is lost mid-way, when the store is unreachable for a
/// while, when a reply is lost?
///
/// It keeps the whole contract, as the memory store does (it passes the conformance
/// kit), on tokio's clock: on a paused clock (`#[tokio::test(start_paused = true)]`)
/// leases run out, renewals fire and timeouts pass in virtual time, so a test of minutes
/// of renewal takes milliseconds and gives the same result every run. Clone it to keep a
/// handle: the client owns one clone ([`Client::from_store`](crate::Client::from_store)),
/// the test injects faults through another. [`connection`](SimStore::connection) gives a
/// handle on the same store with faults of its own, as a second client's connection:
/// partitioning one leaves the other through. Faults name **store keys** (with the
/// client's key prefix, if it has one):
///
/// * [`expire`](SimStore::expire): the lease on a key runs out now;
/// * [`steal`](SimStore::steal): another holder takes a key (a paused holder's nightmare);
/// * [`partition`](SimStore::partition): every call waits out its timeout and fails with
///   [`Error::Timeout`], for a while, leaving the store untouched;
/// * [`lose_next_reply`](SimStore::lose_next_reply): the next call runs on the store, then
///   its answer is lost: it waits out its timeout and fails with [`Error::Timeout`].
///
/// # Example: a job stops when its lease is lost
///
/// ```
/// use std::time::Duration;
/// use leasehold::testing::SimStore;
/// use leasehold::Client;
///
/// # fn main() -> leasehold::Result<()> {
/// let rt = tokio::runtime::Builder::new_current_thread()
///     .enable_all()
///     .start_paused(true) // virtual time: the minutes below take microseconds
///     .build()
///     .unwrap();
/// rt.block_on(async {
///     let sim = SimStore::new();
///     let client = Client::from_store(sim.clone());
///     let lock = client.try_lock("nightly", "me", Duration::from_secs(30)).await?;
///     let _renewal = lock.auto_refresh(
///         Duration::from_secs(10), Duration::from_secs(30), Duration::from_secs(1), 3)?;
///
///     // The job: a step a minute for an hour, abandoned when the lease is lost.
///     let job = async {
///         for step in 0..60 {
///             tokio::time::sleep(Duration::from_secs(60)).await;
///             if step == 2 {
///                 // Meanwhile, another host takes the key (say our process was paused).
///                 sim.steal("nightly", "thief", Duration::from_secs(300));
///             }
///         }
///     };
///     tokio::select! {
///         _ = job => panic!("the job ran to the end on a lost lease"),
///         _ = lock.lost() => {} // stopped: the next renewal found the key taken
///     }
///     assert!(lock.valid_for().is_none());
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone, Default)]
pub struct SimStore {
    inner: Arc<Inner>,
    /// This handle's path to the store (shared by its clones).
    faults: Arc<Mutex<Faults>>,
}

#[derive(Default)]
struct Inner {
    store: MemoryStore,
    /// The attempt numbers of the simulated thieves.
    thefts: Mutex<u64>,
}

#[derive(Default)]
struct Faults {
    partitioned_until: Option<Instant>,
    lose_replies: u32,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults = self.faults.lock();
        f.debug_struct("SimStore")
            .field("partitioned_until", &faults.partitioned_until)
            .field("lose_replies", &faults.lose_replies)
            .finish_non_exhaustive()
    }
}

/// What a call meets on its way to the store.
enum Fate {
    Reaches,
    /// Runs, then its answer is lost.
    AnswerLost,
    /// Never reaches the store.
    CutOff,
}

impl SimStore {
    /// An empty simulated store of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another handle on the same store, with a path of its own: faults injected through
    /// one (a partition, a lost reply) leave the other alone. Clones share their path.
    pub fn connection(&self) -> SimStore {
        SimStore {
            inner: Arc::clone(&self.inner),
            faults: Arc::default(),
        }
    }

    /// The lease on `key` runs out now, whoever holds it (its fencing counter stays: the
    /// next acquisition gets a higher token). `true`: a lease was there.
    pub fn expire(&self, key: &str) -> bool {
        self.inner.store.force_release_now(key, None)
    }

    /// Another holder, `value`, takes `key` for `expiration`, whoever held it: the holder
    /// that had it finds it gone at its next renewal, `ttl`, or `unlock`. Returns the
    /// thief's fencing token.
    ///
    /// # Panics
    ///
    /// If `expiration` is zero.
    pub fn steal(&self, key: &str, value: &str, expiration: Duration) -> u64 {
        assert!(!expiration.is_zero(), "SimStore::steal: zero expiration");
        self.inner.store.force_release_now(key, None);
        let seq = {
            let mut thefts = self.inner.thefts.lock();
            *thefts += 1;
            *thefts
        };
        let attempt = AttemptId {
            client: u64::MAX,
            seq,
        };
        match self
            .inner
            .store
            .acquire_now(key, value, expiration, attempt, "thief")
        {
            Acquire::Acquired(token) => token,
            other => unreachable!("a freed key was not taken: {other:?}"),
        }
    }

    /// For `duration` from now, every call through this handle (and its clones) fails
    /// after waiting out its timeout, with [`Error::Timeout`], and the store sees nothing
    /// of it (the client is cut off).
    pub fn partition(&self, duration: Duration) {
        self.faults.lock().partitioned_until = Some(Instant::now() + duration);
    }

    /// End a [`partition`](SimStore::partition) now.
    pub fn heal(&self) {
        self.faults.lock().partitioned_until = None;
    }

    /// The next call through this handle runs on the store, and its answer is lost: it fails after waiting out
    /// its timeout, with [`Error::Timeout`]. Calls again to lose more answers.
    pub fn lose_next_reply(&self) {
        self.faults.lock().lose_replies += 1;
    }

    /// What the next call meets.
    fn fate(&self) -> Fate {
        let mut faults = self.faults.lock();
        if let Some(until) = faults.partitioned_until {
            if Instant::now() < until {
                return Fate::CutOff;
            }
            faults.partitioned_until = None;
        }
        if faults.lose_replies > 0 {
            faults.lose_replies -= 1;
            return Fate::AnswerLost;
        }
        Fate::Reaches
    }

    /// Run `op` on the store as the next call's fate says.
    async fn call<T>(&self, timeout: Duration, op: impl FnOnce(&MemoryStore) -> T) -> Result<T> {
        match self.fate() {
            Fate::Reaches => Ok(op(&self.inner.store)),
            Fate::AnswerLost => {
                op(&self.inner.store);
                tokio::time::sleep(timeout).await;
                Err(Error::Timeout)
            }
            Fate::CutOff => {
                tokio::time::sleep(timeout).await;
                Err(Error::Timeout)
            }
        }
    }
}

impl Store for SimStore {
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        self.call(timeout, |s| {
            s.acquire_now(key, val, expiration, attempt, label)
        })
        .await
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        self.call(timeout, |s| s.refresh_now(key, val, expiration))
            .await
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        self.call(timeout, |s| s.release_now(key, val, None)).await
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        self.call(timeout, |s| s.abort_now(key, val, attempts, undo))
            .await
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        self.call(timeout, |s| s.pttl_now(key, val)).await
    }

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        self.call(timeout, |s| s.force_release_now(key, only)).await
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        self.call(timeout, |s| s.inspect_now(key)).await
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        self.call(timeout, |s| s.list_now(prefix)).await
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        self.call(timeout, |s| s.fenced_now(access)).await
    }

    fn watch(&self, key: &str) -> Option<Watch> {
        Store::watch(&self.inner.store, key)
    }
}
