//! Cleaning up after acquire attempts whose outcome is unknown.
//!
//! An attempt that timed out, lost its connection or was cancelled may still reach the
//! store — later, even much later if its connection stalled. [`Attempts`] tracks the
//! attempts of one `lock` call that got no answer, and when the call ends it sends a
//! detached **abort** naming them: the store refuses any of them that arrives afterwards,
//! and, when the call did not end holding the key, releases the key if it holds the
//! value (what one of them may have created). Rules:
//!
//! 1. An abort never deletes a key this client holds or may yet hold under the same
//!    value: a lock of the pair not lost, or an acquire of the pair still in flight
//!    ([`Leases::live`]). Their holder owns the key.
//! 2. An abort that may delete the key is registered in the [`ReleaseLedger`] until it
//!    got its answer. A later `lock` of the same key and value through this client
//!    [settles](ReleaseLedger::settle) with it before sending anything: one not sent yet
//!    is downgraded to an abort that only refuses late arrivals, and the later call takes
//!    over its release; one in flight is waited for (within the attempt's timeout), so
//!    its delete cannot land after the new acquire.
//! 3. Aborts that failed on the connection are retried (bounded); between tries they
//!    can be downgraded as in rule 2.
//! 4. Without a tokio runtime (a drop outside one) nothing can be sent: the key is left
//!    to expire.
//!
//! On a [partial](crate::store::Store::partial) store (a Redlock quorum) an attempt that
//! was answered but did not win may still have taken the key on some nodes: every such
//! attempt is aborted [at once](Attempts::failed), before the next one — releasing what
//! it took under rule 1 — and whatever that abort could not reach is left to the one
//! sent when the call ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::Leases;
use crate::store::{AttemptId, Store};

/// The pauses between tries of an abort that failed on the connection: doubling from
/// the first to the last, for about five minutes in all.
const ABORT_RETRY_FIRST: Duration = Duration::from_millis(50);
const ABORT_RETRY_MAX: Duration = Duration::from_secs(5);
const ABORT_RETRY_FOR: Duration = Duration::from_secs(5 * 60);

/// A key and its value.
type Entry = (String, String);

/// The aborts that may delete a key, by key and value, until they got their answer.
#[derive(Default)]
pub(crate) struct ReleaseLedger {
    /// Oldest first, per key and value.
    pending: Mutex<HashMap<Entry, Vec<Arc<Pending>>>>,
    /// How many there are, so that `settle` skips the mutex and the hashing when there
    /// are none (the common case).
    count: AtomicUsize,
}

/// Whether a pending abort stands in the way of an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// None was pending.
    Clear,
    /// One not sent yet was downgraded: its release passes to the attempt about to be
    /// sent.
    TookOver,
    /// One in flight is still unanswered at the deadline.
    Unanswered,
}

/// One pending abort: `WAITING` until its task claims it for sending with its release
/// (`SENDING`), or `DOWNGRADED` by a later `lock` of the same key and value before that.
struct Pending {
    state: AtomicU8,
    /// Changes when the abort got an answer (or gave up) and releases nothing any more.
    done: watch::Receiver<()>,
}

const WAITING: u8 = 0;
const SENDING: u8 = 1;
const DOWNGRADED: u8 = 2;

impl Pending {
    /// Claim the release for sending now; `false` if it was downgraded.
    fn claim(&self) -> bool {
        self.state
            .compare_exchange(WAITING, SENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A try failed before it got an answer: let a later `lock` take the release over
    /// again until the next try.
    fn unclaim(&self) {
        let _ = self
            .state
            .compare_exchange(SENDING, WAITING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Downgrade it unless it is being sent; `true` if it will never release.
    fn downgrade(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, DOWNGRADED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == DOWNGRADED,
        }
    }
}

impl ReleaseLedger {
    /// Make sure no pending abort of `key`/`val` can delete the key after an acquire sent
    /// now: downgrade those not sent yet, and wait until `deadline` for the answers to
    /// those in flight.
    pub(crate) async fn settle(&self, key: &str, val: &str, deadline: Instant) -> Settled {
        if self.count.load(Ordering::SeqCst) == 0 {
            return Settled::Clear;
        }
        let pending = self
            .pending
            .lock()
            .get(&(key.to_owned(), val.to_owned()))
            .cloned()
            .unwrap_or_default();
        let mut settled = Settled::Clear;
        for abort in pending {
            if abort.downgrade() {
                settled = Settled::TookOver;
                continue;
            }
            let mut done = abort.done.clone();
            // `changed` fails once the aborting task is gone (its sender dropped).
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_ok()
            {
                continue;
            }
            return Settled::Unanswered;
        }
        settled
    }

    fn register(&self, entry: &Entry) -> (Arc<Pending>, watch::Sender<()>) {
        let (done_tx, done_rx) = watch::channel(());
        let pending = Arc::new(Pending {
            state: AtomicU8::new(WAITING),
            done: done_rx,
        });
        let mut table = self.pending.lock();
        let aborts = table.entry(entry.clone()).or_default();
        for older in aborts.iter() {
            // The new abort releases too: one not sent yet need not.
            older.downgrade();
        }
        aborts.push(Arc::clone(&pending));
        self.count.fetch_add(1, Ordering::SeqCst);
        (pending, done_tx)
    }

    fn unregister(&self, entry: &Entry, pending: &Arc<Pending>) {
        let mut table = self.pending.lock();
        if let Some(aborts) = table.get_mut(entry) {
            if let Some(at) = aborts.iter().position(|p| Arc::ptr_eq(p, pending)) {
                // `remove`, not `swap_remove`: the rest stay oldest first.
                aborts.remove(at);
                self.count.fetch_sub(1, Ordering::SeqCst);
            }
            if aborts.is_empty() {
                table.remove(entry);
            }
        }
    }
}

/// The attempts of one `lock` call that may have landed without an answer, and what to
/// do about them when the call ends (or is dropped).
pub(crate) struct Attempts<'a> {
    leases: &'a Arc<Leases>,
    ledger: &'a Arc<ReleaseLedger>,
    key: &'a str,
    val: &'a str,
    /// Bound on the abort's round trip.
    timeout: Duration,
    /// The attempts without an answer: the last one sent apart, so that the common case
    /// (each attempt answered before the next is sent) allocates nothing.
    last: Option<AttemptId>,
    earlier: Vec<AttemptId>,
    /// Whether the call took over the release of a downgraded abort.
    covering: bool,
    /// Whether the call ends holding the key: then nothing is released.
    granted: bool,
    /// Whether an answered attempt may have been taken by part of the store.
    partial: bool,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        leases: &'a Arc<Leases>,
        ledger: &'a Arc<ReleaseLedger>,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> Self {
        Attempts {
            leases,
            ledger,
            key,
            val,
            timeout,
            last: None,
            earlier: Vec::new(),
            covering: false,
            granted: false,
            partial: leases.backend().partial(),
        }
    }

    /// `attempt` is about to be sent: until [`answered`](Attempts::answered), it may land
    /// unseen.
    pub(crate) fn sending(&mut self, attempt: AttemptId) {
        if let Some(earlier) = self.last.replace(attempt) {
            self.earlier.push(earlier);
        }
    }

    /// The last attempt sent got an answer (or was rejected without running): its
    /// outcome is known. On a partial store an answer that did not grant the key still
    /// leaves the attempt to [`failed`](Attempts::failed): some nodes may have taken it.
    pub(crate) fn answered(&mut self) {
        if !self.partial {
            self.last = None;
        }
    }

    /// An attempt failed, and the call is about to ask for a delay or end. On a partial
    /// store, abort the attempts that did not win at once (one round trip, bounded by
    /// `timeout`), releasing the key where they took it unless this client holds it
    /// under the same value or has another acquire of it in flight ([`Leases::live`]);
    /// what the abort could not reach stays for the next one. Nothing on other stores.
    pub(crate) async fn failed(&mut self, timeout: Duration) {
        if !self.partial || (self.last.is_none() && self.earlier.is_empty()) {
            return;
        }
        let attempts: Vec<AttemptId> = self.earlier.iter().copied().chain(self.last).collect();
        let release = !self.leases.live(self.key, self.val);
        let aborted = self
            .leases
            .backend()
            .abort(self.key, self.val, &attempts, release, timeout)
            .await;
        if aborted.is_ok() {
            self.earlier.clear();
            self.last = None;
        }
    }

    /// This call takes over the release of an abort it downgraded.
    pub(crate) fn take_over(&mut self) {
        self.covering = true;
    }

    /// The call ends holding the key. Its earlier attempts that got no answer are
    /// aborted before the lock is handed out (one round trip, only when there are any):
    /// detached, that abort could be overtaken by the holder's own `unlock`, and an
    /// attempt arriving in between would re-create the lock. If the abort fails it is
    /// left to the detached retry; if this is cancelled, the drop aborts them all and
    /// releases the key (the caller never got the lock).
    pub(crate) async fn granted(mut self, timeout: Duration) {
        self.last = None; // the attempt that won
        if !self.earlier.is_empty() {
            let aborted = self
                .leases
                .backend()
                .abort(self.key, self.val, &self.earlier, false, timeout)
                .await;
            if aborted.is_ok() {
                self.earlier.clear();
            }
        }
        self.granted = true;
    }
}

impl Drop for Attempts<'_> {
    fn drop(&mut self) {
        let release = !self.granted;
        if self.last.is_none() && self.earlier.is_empty() && !(release && self.covering) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let entry = (self.key.to_owned(), self.val.to_owned());
        // Registered now, before the caller can start another `lock` of the pair.
        let registration = release.then(|| {
            let (pending, done) = self.ledger.register(&entry);
            Registration {
                ledger: Arc::clone(self.ledger),
                entry: entry.clone(),
                pending,
                _done: done,
            }
        });
        let mut attempts = std::mem::take(&mut self.earlier);
        attempts.extend(self.last.take());
        let abort = Abort {
            leases: Arc::clone(self.leases),
            entry,
            attempts,
            timeout: self.timeout,
        };
        runtime.spawn(abort.run(registration));
    }
}

/// A detached abort.
struct Abort {
    leases: Arc<Leases>,
    entry: Entry,
    attempts: Vec<AttemptId>,
    timeout: Duration,
}

impl Abort {
    async fn run(self, registration: Option<Registration>) {
        let (key, val) = (&self.entry.0, &self.entry.1);
        let started = Instant::now();
        let mut pause = ABORT_RETRY_FIRST;
        loop {
            let release = registration.as_ref().is_some_and(|r| r.pending.claim())
                && !self.leases.live(key, val);
            let sent = self
                .leases
                .backend()
                .abort(key, val, &self.attempts, release, self.timeout)
                .await;
            match sent {
                Err(e) if e.is_transient() && started.elapsed() + pause < ABORT_RETRY_FOR => {
                    if let Some(r) = &registration {
                        r.pending.unclaim();
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ABORT_RETRY_MAX);
                }
                // Done, or given up: the key expires by itself.
                _ => return,
            }
        }
    }
}

/// A pending abort's entry in the ledger, removed when dropped — however the task ends,
/// even if the runtime drops it unrun (it is shutting down).
struct Registration {
    ledger: Arc<ReleaseLedger>,
    entry: Entry,
    pending: Arc<Pending>,
    /// Dropped last: waiters see `done` only once the entry is gone.
    _done: watch::Sender<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.ledger.unregister(&self.entry, &self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        ("k".to_owned(), "v".to_owned())
    }

    #[test]
    fn pending_aborts_stay_oldest_first_when_one_leaves() {
        let ledger = ReleaseLedger::default();
        let (a, _a_done) = ledger.register(&entry());
        let (b, _b_done) = ledger.register(&entry());
        let (c, _c_done) = ledger.register(&entry());
        ledger.unregister(&entry(), &a);
        let order: Vec<_> = ledger.pending.lock()[&entry()].clone();
        assert!(Arc::ptr_eq(&order[0], &b) && Arc::ptr_eq(&order[1], &c));
        assert_eq!(ledger.count.load(Ordering::SeqCst), 2);
        ledger.unregister(&entry(), &b);
        ledger.unregister(&entry(), &c);
        assert!(ledger.pending.lock().is_empty());
        assert_eq!(ledger.count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_newer_abort_downgrades_the_older_ones_not_sent_yet() {
        let ledger = ReleaseLedger::default();
        let (a, _a_done) = ledger.register(&entry());
        assert!(a.claim(), "a claims its release");
        let (b, _b_done) = ledger.register(&entry());
        let (c, _c_done) = ledger.register(&entry());
        assert!(!b.claim(), "b was downgraded by c");
        assert!(c.claim());
        a.unclaim();
        assert!(a.downgrade(), "a failed try can be taken over");
    }

    #[tokio::test(start_paused = true)]
    async fn settling_downgrades_waiting_aborts_and_waits_for_those_in_flight() {
        let ledger = ReleaseLedger::default();
        let (waiting, _w_done) = ledger.register(&entry());
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(ledger.settle("k", "v", deadline).await, Settled::TookOver);
        assert!(!waiting.claim());
        ledger.unregister(&entry(), &waiting);

        let (sending, done) = ledger.register(&entry());
        assert!(sending.claim());
        let started = Instant::now();
        assert_eq!(ledger.settle("k", "v", deadline).await, Settled::Unanswered);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let answered = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ledger.unregister(&entry(), &sending);
            drop(done);
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let (settled, ()) = tokio::join!(ledger.settle("k", "v", deadline), answered);
        assert_eq!(settled, Settled::Clear);
        assert_eq!(ledger.settle("other", "v", deadline).await, Settled::Clear);
    }
}
