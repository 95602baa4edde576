//! Cleaning up after acquire attempts whose outcome is unknown.
//!
//! An attempt that timed out, lost its connection or was cancelled may still reach the
//! store — later, even much later if its connection stalled. [`Attempts`] tracks the
//! attempts of one `lock` call that got no answer, and when the call ends (or is dropped)
//! it sends a detached **abort** naming them. The store decides what that means when the
//! abort lands, not the client before it sent it:
//!
//! * an aborted attempt that arrives afterwards is refused (the store keeps one record
//!   per key and client, the highest attempt number aborted, for an hour after the last
//!   abort: bounded state, whatever the number of aborts);
//! * the key is deleted if it holds the value and one of the aborted attempts created it
//!   — so an abort deletes what its attempts created, and never a lock that was held
//!   before they began. The value is the holder's identity: a same-value lock of this
//!   client that joined what an aborted attempt created loses it with it, and learns so
//!   at once ([`Leases::released`]);
//! * when the call ends holding the key, or another lock of the value in this client
//!   holds it when the abort is sent, the attempts are only refused, never undone: the
//!   key they may have created is that lock now. An abort that may undo is marked as a
//!   release of the pair before it is sent: a same-value attempt sent before it and
//!   granted is not believed (its grant may be what the abort deleted), and tried again;
//! * retrying an abort, or an abort arriving late, does nothing more than the first.
//!
//! On a store that keeps waiters in line (`Backend::queues`:
//! etcd), an answered miss leaves the call's place there too — a key queued behind the
//! holder, created by the attempt that put it in line. Those attempts are aborted with
//! the others when the call ends without the key (awaited, before `NotObtained` is
//! returned); when it ends holding the key, the place became the key.
//!
//! So no bookkeeping of pending releases is needed on the client, and no ordering
//! between an abort and what the client sends next. Aborts that failed are retried (for
//! up to five minutes); without a tokio runtime (a drop outside one)
//! nothing can be sent, and what an attempt may have created stays until it expires.
//! `tests/model.rs` checks these rules exhaustively against cancellation at every await,
//! connection swaps and late deliveries.
//!
//! On a partial store (`Backend::partial`) (a Redlock quorum) an attempt that
//! was answered but did not win may still have been granted by some nodes: every such
//! attempt is aborted [at once](Attempts::failed), before the retry strategy is asked
//! for a delay, and whatever that abort could not reach is left to the one sent when
//! the call ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::Leases;
use crate::store::{AttemptId, Store};

/// The pauses between tries of an abort that failed: doubling from the first to the
/// last, for about five minutes in all.
const ABORT_RETRY_FIRST: Duration = Duration::from_millis(50);
const ABORT_RETRY_MAX: Duration = Duration::from_secs(5);
const ABORT_RETRY_FOR: Duration = Duration::from_secs(5 * 60);

/// The attempts of one `lock` call that may have landed without an answer, aborted when
/// the call ends or is dropped.
pub(crate) struct Attempts<'a> {
    leases: &'a Arc<Leases>,
    key: &'a str,
    val: &'a str,
    /// Bound on the abort's round trip.
    timeout: Duration,
    /// The attempts without an answer: the last one sent apart, so that the common case
    /// (each attempt answered before the next is sent) allocates nothing.
    last: Option<AttemptId>,
    earlier: Vec<AttemptId>,
    /// Answered misses that left a place in line (on a store that queues, etcd): aborted
    /// with the others unless the call ends holding the key.
    queued: Vec<AttemptId>,
    /// Whether an answered attempt may have been taken by part of the store.
    partial: bool,
    /// The call ended holding the key: what is left is only refused, never undone.
    holds: bool,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        leases: &'a Arc<Leases>,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> Self {
        Attempts {
            leases,
            key,
            val,
            timeout,
            last: None,
            earlier: Vec::new(),
            queued: Vec::new(),
            partial: leases.backend().partial(),
            holds: false,
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

    /// The last attempt sent was granted. Earlier attempts without an answer are
    /// refused, detached, when this is dropped (not undone: what they created is this
    /// call's lock); a place in line this call had became the key, and is not withdrawn.
    pub(crate) fn granted(&mut self) {
        self.last = None;
        self.queued.clear();
        self.holds = true;
    }

    /// The last attempt sent found the key held. On a store that `queues`, it left this
    /// call's place in line (a claim on a waiting key): that place stays until the call
    /// ends, and is withdrawn then unless the call ends holding the key. Elsewhere, as
    /// [`answered`](Attempts::answered).
    pub(crate) fn missed(&mut self, queues: bool) {
        if queues {
            self.queued.extend(self.last.take());
        } else {
            self.answered();
        }
    }

    /// The call ends without the key: withdraw its place in line now, and wait for it
    /// (one round trip, only on a store that queues and gave it one), so that the place
    /// cannot come first after the call returned. What this does not settle, the drop
    /// does, detached.
    pub(crate) async fn withdraw(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let timeout = self.timeout;
        self.abort_now(timeout).await;
    }

    /// An attempt failed, and the call is about to wait for another or end. On a partial
    /// store, abort the attempts that did not win at once (one round trip, bounded by
    /// `timeout`): what they took is released where no other claim holds it, before the
    /// strategy is asked for a delay. Nothing on other stores (their unanswered attempts
    /// are aborted when the call ends).
    pub(crate) async fn failed(&mut self, timeout: Duration) {
        if self.partial {
            self.abort_now(timeout).await;
        }
    }

    /// Abort the attempts without an answer now, and wait for it (once): for a call that
    /// ends in an error it reports, so that what its attempts may have created is gone
    /// by then. Whatever this does not settle, the drop does, detached.
    pub(crate) async fn abort_now(&mut self, timeout: Duration) {
        let attempts = self.unanswered();
        if attempts.is_empty() {
            return;
        }
        let undo = !self.holds && self.leases.may_undo(self.key, self.val);
        let aborted = self
            .leases
            .backend()
            .abort(self.key, self.val, &attempts, undo, timeout)
            .await;
        if let Ok(deleted) = aborted {
            if deleted {
                self.leases.released(self.key, self.val);
            }
            self.last = None;
            self.earlier.clear();
            self.queued.clear();
        }
    }

    /// The attempts to abort: those without an answer, and the places in line.
    fn unanswered(&self) -> Vec<AttemptId> {
        let mut attempts = self.earlier.clone();
        attempts.extend(self.last);
        attempts.extend_from_slice(&self.queued);
        attempts
    }
}

impl Drop for Attempts<'_> {
    fn drop(&mut self) {
        let attempts = self.unanswered();
        if attempts.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let abort = Abort {
            leases: Arc::clone(self.leases),
            key: self.key.to_owned(),
            val: self.val.to_owned(),
            attempts,
            undo: !self.holds,
            timeout: self.timeout,
        };
        runtime.spawn(abort.run());
    }
}

/// A detached abort.
struct Abort {
    leases: Arc<Leases>,
    key: String,
    val: String,
    attempts: Vec<AttemptId>,
    /// Delete what the attempts created (not when the call holds the key).
    undo: bool,
    timeout: Duration,
}

impl Abort {
    async fn run(self) {
        let started = Instant::now();
        let mut pause = ABORT_RETRY_FIRST;
        loop {
            let undo = self.undo && self.leases.may_undo(&self.key, &self.val);
            let sent = self
                .leases
                .backend()
                .abort(&self.key, &self.val, &self.attempts, undo, self.timeout)
                .await;
            // Deleted, or a try that may have deleted a lock of the value unheard: no
            // handle of it in this client may go on believing in it.
            if matches!(sent, Ok(true)) || (sent.is_err() && undo) {
                self.leases.released(&self.key, &self.val);
            }
            match sent {
                // Any failure is tried again (a permission can be restored, a server can
                // come back): cleaning up must not depend on the moment it was tried.
                Err(_) if started.elapsed() + pause < ABORT_RETRY_FOR => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ABORT_RETRY_MAX);
                }
                // Done, or given up: what an attempt may have created expires by itself.
                _ => return,
            }
        }
    }
}
