//! Redlock: one lock over N independent Redis masters, held while a majority of them
//! holds it (quorum = N/2 + 1).
//!
//! Every operation goes to every node at once, so it costs one round trip (the slowest
//! node's, bounded by the timeout), not N. Each node runs the single-server scripts of
//! [`RedisStore`] — the same owner checks, the same record of aborted attempts; only the
//! acquire leaves out the fence counter, since Redlock has no token to give — so this
//! module only counts answers:
//!
//! * **acquire** waits for every node (within the timeout and the validity window,
//!   `expiration − drift`: a grant that arrives later counts as a timeout) and wins when a
//!   quorum granted it. Waiting for all, not just the fastest quorum, puts the key on
//!   every node that can take it (a node still answering when the attempt returned —
//!   reloading its scripts, reconnecting — might never get it), so the lock survives as
//!   many node failures as it can. It is [`Acquire::Held`] only when a majority answered
//!   that another value holds the key, [`Error::Quorum`] in every other case — node
//!   failures are never counted as contention. What each node did with an
//!   attempt that did not win is remembered until the client [aborts](Store::abort) it:
//!   nodes that granted it get an owner-checked release, nodes whose answer is unknown
//!   get the full abort (a late arrival is refused there), nodes that refused it get
//!   nothing — so contention costs no extra round trip and leaves no record behind.
//! * **refresh** (waiting for every node too) succeeds when a quorum re-armed the key, is
//!   "not held" when a majority says so, and is [`Error::Quorum`] otherwise; it never
//!   releases anything.
//! * **release**, **pttl** and **abort** go to every node and wait for all of them.
//!
//! The token an acquisition reports is meaningless (always 0): counters on independent
//! nodes cannot give a monotonic fencing token (see the `redlock` module docs).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::redis::RedisStore;
use super::{Acquire, AttemptId, Fence, Fenced, Store};
use crate::lease::drift_allowance;
use crate::{Error, Result};

/// Independent Redis masters, used as one store.
pub(crate) struct Quorum {
    nodes: Box<[RedisStore]>,
    /// What each node did with the acquire attempts that did not win, until they are
    /// aborted.
    unsettled: Mutex<HashMap<AttemptId, Unsettled>>,
}

/// What one node did with an attempt that did not win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Nothing: it refused the attempt, rejected it without running it, or was already
    /// cleaned up.
    Nothing,
    /// The key, holding the attempt's value: it granted the attempt.
    Key,
    /// Unknown: the attempt timed out or lost its connection, and may land later.
    Unknown,
}

/// The nodes' outcome of one attempt that did not win.
struct Unsettled {
    nodes: Box<[Left]>,
    since: Instant,
}

/// Once this many attempts are unsettled, those older than [`FORGET_AFTER`] are
/// forgotten. A forgotten attempt is aborted on every node, as if each outcome were
/// unknown: forgetting costs a round trip, never safety.
const SWEEP_AT: usize = 1024;
const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// How long a lease armed at the start of an attempt is certainly held, after the
/// drift allowance.
fn validity_window(expiration: Duration) -> Duration {
    expiration.saturating_sub(drift_allowance(expiration))
}

/// The answers of one fan-out, and each failed node's error.
#[derive(Default)]
struct Tally {
    granted: u32,
    held: u32,
    errors: Vec<(usize, Error)>,
}

impl Tally {
    fn fail(&mut self, node: usize, error: Error) {
        tracing::debug!(node, error = %error, "redlock: node failed");
        self.errors.push((node, error));
    }

    fn into_error(self) -> Error {
        Error::Quorum {
            granted: self.granted,
            held: self.held,
            failed: self.errors.len() as u32,
            errors: self.errors,
        }
    }
}

impl Quorum {
    /// A quorum over `nodes`: at least one, each on a connection of its own.
    pub(crate) fn new(nodes: Vec<RedisStore>) -> Result<Quorum> {
        if nodes.is_empty() {
            return Err(Error::invalid("nodes: name at least one Redis master"));
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| other.same_connection(node)) {
                return Err(Error::invalid(
                    "nodes: the same client twice (the nodes must be independent masters)",
                ));
            }
        }
        Ok(Quorum {
            nodes: nodes.into_boxed_slice(),
            unsettled: Mutex::default(),
        })
    }

    /// How many nodes must agree: a majority.
    pub(crate) fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn reached(&self, count: u32) -> bool {
        count as usize >= self.quorum()
    }

    /// `op` on every node at once (given its index and the node): the answers in node
    /// order, once every node answered (each node's call is bounded by its timeout).
    async fn all<'a, T, F>(&'a self, op: impl Fn(usize, &'a RedisStore) -> F) -> Vec<T>
    where
        F: Future<Output = T> + 'a,
    {
        join_all(self.nodes.iter().enumerate().map(|(i, node)| op(i, node))).await
    }

    /// Keep what each node did with `attempt` (which did not win) until it is aborted.
    fn remember(&self, attempt: AttemptId, nodes: Box<[Left]>) {
        let now = Instant::now();
        let mut table = self.unsettled.lock();
        if table.len() >= SWEEP_AT {
            table.retain(|_, u| now.duration_since(u.since) < FORGET_AFTER);
        }
        table.insert(attempt, Unsettled { nodes, since: now });
    }
}

/// What aborting some attempts takes on one node.
#[derive(Default, Clone)]
struct Cleanup {
    /// Attempts whose outcome there is unknown: abort them (refuse late arrivals).
    unknown: Vec<AttemptId>,
    /// Attempts it granted: release the key (when releasing).
    granted: Vec<AttemptId>,
}

impl Store for Quorum {
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        if validity_window(expiration).is_zero() {
            return Err(Error::invalid(format!(
                "expiration: Redlock needs one that outlasts its drift allowance (1 % + 2 ms): \
                 at least 3 ms (got {expiration:?})"
            )));
        }
        Ok(expiration)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        timeout: Duration,
    ) -> Result<Acquire> {
        let started = Instant::now();
        let window = validity_window(expiration);
        let valid_until = started + window;
        // Waiting longer than the window is pointless: a later grant is worth nothing.
        let bound = timeout.min(window);
        let cmd = RedisStore::redlock_acquire_command(key, val, expiration, attempt);
        let answers = self
            .all(|_, node| async {
                let answer = node.redlock_acquire_with(&cmd, bound).await;
                (answer, Instant::now())
            })
            .await;
        let mut left = vec![Left::Unknown; self.nodes.len()].into_boxed_slice();
        let mut tally = Tally::default();
        for (i, (answer, at)) in answers.into_iter().enumerate() {
            match answer {
                Ok(Acquire::Acquired(_)) if at < valid_until => {
                    left[i] = Left::Key;
                    tally.granted += 1;
                }
                Ok(Acquire::Acquired(_)) => {
                    // Granted, but after the validity it would have added to was gone.
                    left[i] = Left::Key;
                    tally.fail(i, Error::Timeout);
                }
                Ok(Acquire::Unreplicated { acked, wanted, .. }) => {
                    left[i] = Left::Key;
                    tally.fail(i, Error::NotReplicated { acked, wanted });
                }
                Ok(Acquire::Held) => {
                    left[i] = Left::Nothing;
                    tally.held += 1;
                }
                Err(e) => {
                    // A rejected attempt did not run; a timed-out one may land later.
                    left[i] = if e.is_transient() {
                        Left::Unknown
                    } else {
                        Left::Nothing
                    };
                    tally.fail(i, e);
                }
            }
        }
        if self.reached(tally.granted) {
            return Ok(Acquire::Acquired(0));
        }
        self.remember(attempt, left);
        if self.reached(tally.held) {
            Ok(Acquire::Held)
        } else {
            Err(tally.into_error())
        }
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        let bound = timeout.min(validity_window(expiration));
        let mut tally = Tally::default();
        let cmd = RedisStore::refresh_command(key, val, expiration);
        let answers = self.all(|_, node| node.refresh_with(&cmd, bound)).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(true) => tally.granted += 1,
                Ok(false) => tally.held += 1,
                Err(e) => tally.fail(i, e),
            }
        }
        if self.reached(tally.granted) {
            Ok(true)
        } else if self.reached(tally.held) {
            Ok(false)
        } else {
            Err(tally.into_error())
        }
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        let mut tally = Tally::default();
        let cmd = RedisStore::release_command(key, val);
        let answers = self.all(|_, node| node.release_with(&cmd, timeout)).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(true) => tally.granted += 1,
                Ok(false) => tally.held += 1,
                Err(e) => tally.fail(i, e),
            }
        }
        if self.reached(tally.granted) {
            Ok(true)
        } else if self.reached(tally.held) {
            Ok(false)
        } else {
            Err(tally.into_error())
        }
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        release: bool,
        timeout: Duration,
    ) -> Result<()> {
        let mut plan = vec![Cleanup::default(); self.nodes.len()];
        {
            let mut table = self.unsettled.lock();
            for &attempt in attempts {
                match table.remove(&attempt) {
                    Some(unsettled) => {
                        for (node, left) in unsettled.nodes.iter().enumerate() {
                            match left {
                                Left::Nothing => {}
                                Left::Key => plan[node].granted.push(attempt),
                                Left::Unknown => plan[node].unknown.push(attempt),
                            }
                        }
                    }
                    // Cancelled while in flight, or forgotten: unknown everywhere.
                    None => plan.iter_mut().for_each(|p| p.unknown.push(attempt)),
                }
            }
        }
        let plan = &plan;
        let answers = self
            .all(|i, node| async move {
                let cleanup = &plan[i];
                if !cleanup.unknown.is_empty() {
                    node.abort(key, val, &cleanup.unknown, release, timeout)
                        .await
                } else if release && !cleanup.granted.is_empty() {
                    node.release(key, val, timeout).await.map(drop)
                } else {
                    Ok(()) // refused, or a key kept for the lock: nothing to do
                }
            })
            .await;
        let mut tally = Tally::default();
        let mut retry = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(()) => tally.granted += 1,
                // Another try could not do better there: give up on that node.
                Err(e) if !e.is_transient() => {
                    tracing::debug!(node = i, error = %e, "redlock: abort refused by a node");
                    tally.granted += 1;
                }
                Err(e) => {
                    retry.push(i);
                    tally.fail(i, e);
                }
            }
        }
        if retry.is_empty() {
            return Ok(());
        }
        // Another abort of these attempts does again what failed, and only that.
        let mut again: HashMap<AttemptId, Box<[Left]>> = HashMap::new();
        for &i in &retry {
            for (&attempt, left) in plan[i]
                .unknown
                .iter()
                .map(|a| (a, Left::Unknown))
                .chain(plan[i].granted.iter().map(|a| (a, Left::Key)))
            {
                again
                    .entry(attempt)
                    .or_insert_with(|| vec![Left::Nothing; self.nodes.len()].into())[i] = left;
            }
        }
        for (attempt, nodes) in again {
            self.remember(attempt, nodes);
        }
        Err(tally.into_error())
    }

    async fn pttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        let mut ttls = Vec::with_capacity(self.nodes.len());
        let mut tally = Tally::default();
        let answers = self.all(|_, node| node.pttl(key, val, timeout)).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(Some(ttl)) => {
                    ttls.push(ttl);
                    tally.granted += 1;
                }
                Ok(None) => tally.held += 1,
                Err(e) => tally.fail(i, e),
            }
        }
        if ttls.len() >= self.quorum() {
            // A majority holds it at least this long.
            ttls.sort_unstable_by(|a, b| b.cmp(a));
            Ok(Some(ttls[self.quorum() - 1]))
        } else if self.reached(tally.held) {
            Ok(None)
        } else {
            Err(tally.into_error())
        }
    }

    async fn fenced(&self, _access: &Fence<'_>, _timeout: Duration) -> Result<Fenced> {
        Err(Error::invalid(
            "fencing: Redlock has no fencing tokens (see the redlock module docs)",
        ))
    }

    fn partial(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_expiration_less_the_drift_allowance() {
        assert_eq!(
            validity_window(Duration::from_secs(10)),
            Duration::from_millis(9_898)
        );
        assert!(validity_window(Duration::from_millis(2)).is_zero());
        assert!(!validity_window(Duration::from_millis(3)).is_zero());
    }
}
