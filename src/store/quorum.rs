//! Redlock: one lock over N independent Redis masters, held while a majority of them
//! holds it (quorum = N/2 + 1).
//!
//! Every operation goes to every node at once, so it costs one round trip (the slowest
//! node's, bounded by the timeout), not N. Each node runs the single-server scripts of
//! [`RedisStore`] unchanged — the same owner checks, tokens and record of aborted
//! attempts — so this module only counts answers:
//!
//! * **acquire** waits for every node (within the timeout and the validity window,
//!   `expiration − drift`: a grant that arrives later counts as a timeout) and wins when a
//!   quorum granted it. Waiting for all, not just the fastest quorum, puts the key on
//!   every node that can take it (a node still answering when the attempt returned —
//!   reloading its scripts, reconnecting — might never get it), so the lock survives as
//!   many node failures as it can. It is [`Acquire::Held`] only when a majority answered
//!   that another value holds the key, [`Error::Quorum`] in every other case — node
//!   failures are never counted as contention. What each node did with an attempt that
//!   did not win is remembered until the client [aborts](Store::abort) it: nodes that
//!   did not answer or granted it get the single-server abort (a late arrival refused,
//!   the key deleted if the attempt created it there — never a lock the value held
//!   before), nodes that refused it get nothing — so contention costs no extra round
//!   trip and leaves no record. The last attempts that won are remembered too, a while:
//!   the client aborts a grant it does not believe (a release of the pair was sent after
//!   it), and nodes that answered it need no record of aborted attempts either; an
//!   answered attempt aborted without undo needs nothing at all.
//! * **refresh** and **ttl** act on every node where the value holds the key (the value
//!   is the holder's identity). Refresh succeeds when a quorum re-armed the key, is "not
//!   held" when a majority says so, and is [`Error::Quorum`] otherwise; it never
//!   releases anything. [`Incarnations`] keeps each node's token behind the one token the
//!   lease knows: a re-acquire that finds other incarnations is a new lease.
//! * **release** and **abort** go to every node and wait for all of them. Each node
//!   announces a release on the key's channel, as one server does; a waiter is woken
//!   when a quorum of nodes announced one ([`Watch::quorum`]).
//!
//! The token an acquisition reports stands for the per-node incarnations and is no
//! fencing token: counters on independent nodes cannot give a monotonic one (see the
//! `redlock` module docs).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::redis::RedisStore;
use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store};
use crate::validity::drift_allowance;
use crate::wake::Watch;
use crate::{Error, Result};

/// Independent Redis masters, used as one store.
pub(crate) struct Quorum {
    nodes: Box<[Arc<RedisStore>]>,
    /// What each node did with the acquire attempts that did not win, until they are
    /// aborted.
    unsettled: Mutex<HashMap<AttemptId, Unsettled>>,
    incarnations: Mutex<Incarnations>,
    /// What each node did with the last [`GRANTED_KEPT`] attempts that won: the client
    /// may yet disbelieve a grant (a release of the same key and value was sent after the
    /// attempt) and abort it, and then nodes that answered need no record of it.
    granted: Mutex<VecDeque<(AttemptId, Box<[Left]>)>>,
    /// Held while a waiter takes its places in line on the nodes, so that every node
    /// queues this client's waiters in the same order.
    watching: Mutex<()>,
}

/// What one node did with an attempt that did not win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Nothing: it refused the attempt, rejected it without running it, or was already
    /// cleaned up.
    Nothing,
    /// It granted the attempt (which may have created the key there).
    Claim,
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

/// How many attempts that won are remembered (an abort of one forgotten is sent to every
/// node, as if each outcome were unknown: a record of aborted attempts, never a loss).
const GRANTED_KEPT: usize = 64;

/// The locks this client holds on the nodes, by key and value: for each, the token the
/// lease knows and the incarnation (the node's own token) on every node that granted it.
/// A same-value re-acquire that finds the same incarnations keeps the token (the lease is
/// shared); one that finds another incarnation anywhere gets a new token (the key was
/// taken afresh there: the earlier lease is over).
#[derive(Default)]
struct Incarnations {
    by_pair: HashMap<Box<str>, Incarnation>,
    last_token: u64,
    /// Entries at the last sweep: the next sweep comes when there are twice as many.
    swept_at: usize,
}

struct Incarnation {
    token: u64,
    nodes: Box<[Option<u64>]>,
    /// No node holds this incarnation past this instant (its last arming plus its
    /// expiration, plus room for the round trip): the entry may be forgotten after it.
    until: Instant,
}

/// How much longer than its last arming plus its expiration an incarnation is kept (a
/// node armed it when the request arrived, after it was sent).
const KEEP_PAST_EXPIRY: Duration = Duration::from_secs(60);

/// `key` and `val` as one map key (the length first, so that no two pairs collide).
fn pair_id(key: &str, val: &str) -> Box<str> {
    format!("{}:{key}{val}", key.len()).into()
}

impl Incarnations {
    /// The token of the incarnations in `granted` (one per node, `None` where the node
    /// did not grant), armed at `sent` for `expiration`.
    fn hold(
        &mut self,
        key: &str,
        val: &str,
        granted: Box<[Option<u64>]>,
        sent: Instant,
        expiration: Duration,
    ) -> u64 {
        let until = sent + expiration + KEEP_PAST_EXPIRY;
        let id = pair_id(key, val);
        if let Some(held) = self.by_pair.get_mut(&id) {
            let same = held
                .nodes
                .iter()
                .zip(granted.iter())
                .all(|(was, now)| !matches!((was, now), (Some(a), Some(b)) if a != b));
            if same {
                for (was, now) in held.nodes.iter_mut().zip(granted.iter()) {
                    *was = was.or(*now);
                }
                held.until = held.until.max(until);
                return held.token;
            }
        }
        self.last_token += 1;
        let token = self.last_token;
        self.by_pair.insert(
            id,
            Incarnation {
                token,
                nodes: granted,
                until,
            },
        );
        if self.by_pair.len() >= (2 * self.swept_at).max(64) {
            let now = Instant::now();
            self.by_pair.retain(|_, held| held.until > now);
            self.swept_at = self.by_pair.len();
        }
        token
    }

    /// The lock of `key` for `val` was re-armed at `sent` for `expiration`.
    fn rearmed(&mut self, key: &str, val: &str, sent: Instant, expiration: Duration) {
        if let Some(held) = self.by_pair.get_mut(&pair_id(key, val)) {
            held.until = held.until.max(sent + expiration + KEEP_PAST_EXPIRY);
        }
    }

    /// The lock on `key` for `val` was released: forget it.
    fn released(&mut self, key: &str, val: &str) {
        self.by_pair.remove(&pair_id(key, val));
    }
}

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
    /// A quorum over `nodes`: at least one, each a store of its own.
    pub(crate) fn new(nodes: Vec<Arc<RedisStore>>) -> Result<Quorum> {
        if nodes.is_empty() {
            return Err(Error::invalid("nodes: name at least one Redis master"));
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| Arc::ptr_eq(other, node)) {
                return Err(Error::invalid(
                    "nodes: the same client twice (the nodes must be independent masters)",
                ));
            }
        }
        Ok(Quorum {
            nodes: nodes.into_boxed_slice(),
            unsettled: Mutex::default(),
            incarnations: Mutex::default(),
            granted: Mutex::default(),
            watching: Mutex::default(),
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

    /// Keep what each node did with `attempt`, which won, for a while.
    fn remember_granted(&self, attempt: AttemptId, nodes: Box<[Left]>) {
        let mut granted = self.granted.lock();
        if granted.len() >= GRANTED_KEPT {
            granted.pop_front();
        }
        granted.push_back((attempt, nodes));
    }

    /// What each node did with `attempt`, if it did not win and is not settled yet, or
    /// won recently; forgotten here either way (it is being aborted).
    fn settle(&self, attempt: AttemptId) -> Option<Box<[Left]>> {
        if let Some(unsettled) = self.unsettled.lock().remove(&attempt) {
            return Some(unsettled.nodes);
        }
        let mut granted = self.granted.lock();
        let at = granted.iter().position(|(a, _)| *a == attempt)?;
        granted.remove(at).map(|(_, nodes)| nodes)
    }
}

impl Store for Quorum {
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

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
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        let started = Instant::now();
        let window = validity_window(expiration);
        let valid_until = started + window;
        // Waiting longer than the window is pointless: a later grant is worth nothing.
        let bound = timeout.min(window);
        let answers = self
            .all(|_, node| async move {
                let answer = node
                    .acquire(key, val, expiration, attempt, label, bound)
                    .await;
                (answer, Instant::now())
            })
            .await;
        let n = self.nodes.len();
        let mut left = vec![Left::Unknown; n].into_boxed_slice();
        let mut granted = vec![None; n].into_boxed_slice();
        // When each node could let another value in: now where this attempt holds it
        // (it is released if the attempt fails), at the reported expiry where another
        // value holds it, never known where the node failed.
        let mut free_in = Vec::with_capacity(n);
        let mut tally = Tally::default();
        for (i, (answer, at)) in answers.into_iter().enumerate() {
            match answer {
                Ok(Acquire::Acquired(token)) if at < valid_until => {
                    left[i] = Left::Claim;
                    granted[i] = Some(token);
                    tally.granted += 1;
                    free_in.push(Some(Duration::ZERO));
                }
                Ok(Acquire::Acquired(token)) => {
                    // Granted, but after the validity it would have added to was gone.
                    left[i] = Left::Claim;
                    granted[i] = Some(token);
                    tally.fail(i, Error::Timeout);
                    free_in.push(Some(Duration::ZERO));
                }
                Ok(Acquire::Refused) => {
                    // Nothing done there; counted as a failure, so the call tries again.
                    left[i] = Left::Nothing;
                    tally.fail(i, Error::NotObtained);
                    free_in.push(None);
                }
                // Taken on the node's master only: counted as failed, undone by the abort.
                Err(e @ Error::NotReplicated { .. }) => {
                    left[i] = Left::Claim;
                    tally.fail(i, e);
                    free_in.push(Some(Duration::ZERO));
                }
                Ok(Acquire::Held(ttl)) => {
                    left[i] = Left::Nothing;
                    tally.held += 1;
                    free_in.push(ttl);
                }
                Err(e) => {
                    // A rejected attempt did not run; a timed-out one may land later.
                    left[i] = if e.is_transient() {
                        Left::Unknown
                    } else {
                        Left::Nothing
                    };
                    tally.fail(i, e);
                    free_in.push(None);
                }
            }
        }
        if self.reached(tally.granted) {
            let token = self
                .incarnations
                .lock()
                .hold(key, val, granted, started, expiration);
            self.remember_granted(attempt, left);
            return Ok(Acquire::Acquired(token));
        }
        self.remember(attempt, left);
        if self.reached(tally.held) {
            // A majority could let another value in once the quorum-th of them is free.
            let mut known: Vec<Duration> = free_in.into_iter().flatten().collect();
            known.sort_unstable();
            Ok(Acquire::Held(known.get(self.quorum() - 1).copied()))
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
        let sent = Instant::now();
        let bound = timeout.min(validity_window(expiration));
        let answers = self
            .all(|_, node| node.refresh(key, val, expiration, bound))
            .await;
        let mut tally = Tally::default();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(true) => tally.granted += 1,
                Ok(false) => tally.held += 1,
                Err(e) => tally.fail(i, e),
            }
        }
        if self.reached(tally.granted) {
            self.incarnations.lock().rearmed(key, val, sent, expiration);
            Ok(true)
        } else if self.reached(tally.held) {
            Ok(false)
        } else {
            Err(tally.into_error())
        }
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        self.incarnations.lock().released(key, val);
        let answers = self.all(|_, node| node.release(key, val, timeout)).await;
        let mut tally = Tally::default();
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

    /// `true` when any node deleted the key (what an attempt created there): the
    /// client's lease of the value, if any, can no longer count on a majority.
    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        // What to do on each node: abort the attempts whose outcome there is unknown (a
        // late arrival must be refused) and those it granted (delete what they created),
        // nothing where it refused them.
        let mut plan = vec![Vec::new(); self.nodes.len()];
        // Per node: whether every attempt named there was answered (granted): then no
        // record of aborted attempts is needed, only the undo.
        let mut answered = vec![true; self.nodes.len()];
        for &attempt in attempts {
            match self.settle(attempt) {
                Some(nodes) => {
                    for (node, left) in nodes.iter().enumerate() {
                        if !matches!(left, Left::Nothing) {
                            plan[node].push(attempt);
                            answered[node] &= matches!(left, Left::Claim);
                        }
                    }
                }
                // Cancelled while in flight, or forgotten: possibly anywhere.
                None => {
                    plan.iter_mut().for_each(|p| p.push(attempt));
                    answered.iter_mut().for_each(|a| *a = false);
                }
            }
        }
        let (plan, answered) = (&plan, &answered);
        let answers = self
            .all(|i, node| async move {
                if plan[i].is_empty() || (answered[i] && !undo) {
                    // Refused there, or answered and not to be undone: an attempt that
                    // ran cannot land again, so nothing is left to refuse.
                    Ok(false)
                } else if answered[i] && undo {
                    node.undo_answered(key, val, &plan[i], timeout).await
                } else {
                    node.abort(key, val, &plan[i], undo, timeout).await
                }
            })
            .await;
        let mut tally = Tally::default();
        let mut deleted = false;
        let mut again: Vec<usize> = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(gone) => {
                    deleted |= gone;
                    tally.granted += 1;
                }
                Err(e) => {
                    again.push(i);
                    tally.fail(i, e);
                }
            }
        }
        if again.is_empty() {
            return Ok(deleted);
        }
        // Another abort of these attempts does again what failed, and only that.
        let mut retry: HashMap<AttemptId, Box<[Left]>> = HashMap::new();
        for &i in &again {
            for &attempt in &plan[i] {
                retry
                    .entry(attempt)
                    .or_insert_with(|| vec![Left::Nothing; self.nodes.len()].into())[i] =
                    Left::Unknown;
            }
        }
        for (attempt, nodes) in retry {
            self.remember(attempt, nodes);
        }
        Err(tally.into_error())
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        let answers = self.all(|_, node| node.ttl(key, val, timeout)).await;
        let mut ttls = Vec::with_capacity(self.nodes.len());
        let mut tally = Tally::default();
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

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        if only.is_some() {
            // Each node counts its own tokens: the lease's token names none of them.
            return Err(Error::invalid(
                "force_release_if: a Redlock's token is no node's token",
            ));
        }
        let answers = self
            .all(|_, node| node.force_release(key, None, timeout))
            .await;
        let mut tally = Tally::default();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(true) => tally.granted += 1,
                Ok(false) => tally.held += 1,
                Err(e) => tally.fail(i, e),
            }
        }
        if tally.errors.is_empty() {
            Ok(tally.granted > 0)
        } else {
            Err(tally.into_error())
        }
    }

    async fn inspect(&self, _key: &str, _timeout: Duration) -> Result<Option<Inspected>> {
        Err(Error::invalid(
            "inspect: not available on Redlock (inspect each node's client)",
        ))
    }

    async fn list(&self, _prefix: &str, _timeout: Duration) -> Result<Vec<Inspected>> {
        Err(Error::invalid(
            "list: not available on Redlock (list each node's client)",
        ))
    }

    async fn fenced(&self, _access: &Fence<'_>, _timeout: Duration) -> Result<Fenced> {
        Err(Error::invalid(
            "fencing: Redlock has no fencing tokens (see the redlock module docs)",
        ))
    }

    /// A place in line on every node that announces releases, woken when a quorum of
    /// them announced one (the holder's release goes to every node; one node's abort of
    /// what a lost attempt created there does not wake a waiter by itself). `None` when
    /// fewer than a quorum of nodes announce releases: the waiter then pauses as its
    /// strategy says.
    fn watch(&self, key: &str) -> Option<Watch> {
        let _in_order = self.watching.lock();
        let places: Vec<Watch> = self.nodes.iter().filter_map(|n| n.watch(key)).collect();
        (places.len() >= self.quorum()).then(|| Watch::quorum(places, self.quorum()))
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

    #[tokio::test(start_paused = true)]
    async fn one_token_stands_for_the_same_incarnations_and_a_new_one_for_others() {
        let mut incarnations = Incarnations::default();
        let now = Instant::now();
        let sec = Duration::from_secs(1);
        let first = incarnations.hold("k", "v", [Some(5), Some(7), None].into(), now, sec);
        // A re-acquire that finds the same incarnations (and one more node): same token.
        let again = incarnations.hold("k", "v", [Some(5), None, Some(2)].into(), now, sec);
        assert_eq!(again, first);
        // A node that issued another token: the key was taken afresh there.
        let fresh = incarnations.hold("k", "v", [Some(6), Some(7), Some(2)].into(), now, sec);
        assert_ne!(fresh, first);
        // Pairs do not collide.
        let other = incarnations.hold("kv", "", [Some(6), Some(7), Some(2)].into(), now, sec);
        assert_ne!(other, fresh);
        // A released lock is forgotten: the same incarnations make a new token.
        incarnations.released("k", "v");
        let after = incarnations.hold("k", "v", [Some(6), Some(7), Some(2)].into(), now, sec);
        assert_ne!(after, fresh);
    }
}
