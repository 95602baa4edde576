//! Waiters for the release of a key, in arrival order.
//!
//! A `lock` call that missed watches the key ([`Waiters::watch`]) and pauses until its
//! retry strategy's delay runs out, or until it is woken: [`Waiters::released`] wakes the
//! **first** waiter of a key (one release, one waiter: no herd), [`Waiters::wake_key`]
//! wakes every waiter of a key once (their notifications were just set up, or set up
//! again after being lost: a release in between may have gone unseen). Stores feed these
//! from their notifications (Redis pub/sub, the memory store itself).
//!
//! A store made of several (a Redlock quorum) gives each waiter a place on every node
//! that notifies, and wakes it once enough of them woke it ([`Watch::quorum`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Told when a key's last waiter left (a store stops listening for it).
type Idle = Box<dyn Fn(&str) + Send + Sync>;

/// The waiters of every key being waited for, by key: what a store that notifies
/// releases keeps ([`Store::watch`](crate::store::Store::watch)).
#[derive(Default)]
pub struct Waiters {
    keys: Mutex<HashMap<Box<str>, VecDeque<Arc<Notify>>>>,
    idle: Option<Idle>,
}

/// One waiting `lock` call's place in line for its key: in one store's queue, or in the
/// queues of several nodes. Leaves them when dropped.
pub struct Watch(Places);

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("keys", &self.keys.lock().len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

enum Places {
    One(Place),
    Quorum(Quorum),
}

/// A place in one store's queue for a key; leaves it when dropped.
struct Place {
    waiters: Arc<Waiters>,
    key: Box<str>,
    wake: Arc<Notify>,
}

/// Places on several nodes, woken when `need` of them were.
struct Quorum {
    nodes: Box<[Place]>,
    need: usize,
    /// The nodes that woke this waiter since it was last woken. Marked as each wake is
    /// taken, so that a wait cut short (by the retry strategy's clock) loses none.
    heard: Mutex<Box<[bool]>>,
}

impl Waiters {
    /// No waiters yet, in an `Arc` ([`Waiters::watch`] takes one).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Waiters whose store is told, by `idle`, when a key's last waiter left. It is called
    /// with the waiters' lock held: it must not come back here.
    pub fn with_idle(idle: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Waiters {
            keys: Mutex::default(),
            idle: Some(Box::new(idle)),
        }
    }

    /// Queue a waiter for `key`; `true` with it if it is the key's first (the store may
    /// have to start listening for the key).
    pub fn watch(self: &Arc<Self>, key: &str) -> (Watch, bool) {
        let wake = Arc::new(Notify::new());
        let first = {
            let mut keys = self.keys.lock();
            let queue = keys.entry(key.into()).or_default();
            queue.push_back(Arc::clone(&wake));
            queue.len() == 1
        };
        let place = Place {
            waiters: Arc::clone(self),
            key: key.into(),
            wake,
        };
        (Watch(Places::One(place)), first)
    }

    /// `key` was released: wake its first waiter.
    pub fn released(&self, key: &str) {
        if let Some(first) = self.keys.lock().get(key).and_then(|q| q.front()) {
            first.notify_one();
        }
    }

    /// Wake every waiter of `key` once.
    pub fn wake_key(&self, key: &str) {
        if let Some(queue) = self.keys.lock().get(key) {
            for waiter in queue {
                waiter.notify_one();
            }
        }
    }

    /// Whether anyone waits for `key`.
    #[cfg(test)]
    pub(crate) fn is_watched(&self, key: &str) -> bool {
        self.keys.lock().contains_key(key)
    }
}

impl Watch {
    /// One waiter's places on several nodes (each from the node's own
    /// [`Waiters::watch`]), woken once `need` of them were woken. A release that reaches
    /// fewer nodes (one node's abort deleting what an attempt created there) does not
    /// wake it; a node's wake not yet counted is kept for the next wait.
    ///
    /// Each node wakes its first waiter: the places must be taken on every node in the
    /// same order as the other waiters' (the caller serialises them), so that a release
    /// announced by every node wakes the same waiter everywhere.
    pub(crate) fn quorum(nodes: Vec<Watch>, need: usize) -> Watch {
        let mut places = Vec::with_capacity(nodes.len());
        for node in nodes {
            match node.0 {
                Places::One(place) => places.push(place),
                Places::Quorum(quorum) => places.extend(quorum.nodes.into_vec()),
            }
        }
        debug_assert!((1..=places.len()).contains(&need));
        let heard = vec![false; places.len()].into_boxed_slice();
        Watch(Places::Quorum(Quorum {
            nodes: places.into_boxed_slice(),
            need,
            heard: Mutex::new(heard),
        }))
    }

    /// Resolves when this waiter is woken (at once if it was woken since it last
    /// waited).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a wake that arrives while nobody waits is kept for the next call.
    pub async fn woken(&self) {
        match &self.0 {
            Places::One(place) => place.wake.notified().await,
            Places::Quorum(quorum) => quorum.woken().await,
        }
    }
}

impl Quorum {
    /// Resolves once `need` nodes woke this waiter (counting those that did during an
    /// earlier wait cut short); the count then starts again.
    async fn woken(&self) {
        let mut waking: FuturesUnordered<_> = {
            let heard = self.heard.lock();
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !heard[*i])
                .map(|(i, place)| async move {
                    place.wake.notified().await;
                    i
                })
                .collect()
        };
        loop {
            {
                let mut heard = self.heard.lock();
                if heard.iter().filter(|h| **h).count() >= self.need {
                    heard.fill(false);
                    return;
                }
            }
            match waking.next().await {
                // Marked in the same poll that took the node's wake: a wait dropped
                // after this keeps it.
                Some(node) => self.heard.lock()[node] = true,
                None => std::future::pending().await,
            }
        }
    }
}

impl Drop for Place {
    /// Leave the queue.
    fn drop(&mut self) {
        let mut keys = self.waiters.keys.lock();
        let Some(queue) = keys.get_mut(&*self.key) else {
            return;
        };
        queue.retain(|w| !Arc::ptr_eq(w, &self.wake));
        if queue.is_empty() {
            keys.remove(&*self.key);
            if let Some(idle) = &self.waiters.idle {
                idle(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn is_woken(watch: &Watch) -> bool {
        tokio::time::timeout(Duration::from_millis(1), watch.woken())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_the_first_waiter_only_and_a_wake_is_kept() {
        let waiters = Arc::new(Waiters::default());
        let (a, first) = waiters.watch("k");
        assert!(first);
        let (b, first) = waiters.watch("k");
        assert!(!first);
        waiters.released("k");
        assert!(is_woken(&a).await, "kept until a waits");
        assert!(!is_woken(&b).await, "one release, one waiter");
        drop(a);
        waiters.released("k");
        assert!(is_woken(&b).await, "b is first now");
        waiters.released("other"); // nobody waits: nothing happens
        assert!(!is_woken(&b).await);
    }

    #[tokio::test(start_paused = true)]
    async fn wake_key_wakes_every_waiter_of_the_key_once() {
        let waiters = Arc::new(Waiters::default());
        let (a, _) = waiters.watch("k");
        let (b, _) = waiters.watch("k");
        let (c, _) = waiters.watch("j");
        waiters.wake_key("k");
        assert!(is_woken(&a).await && is_woken(&b).await);
        assert!(!is_woken(&c).await);
        assert!(!is_woken(&a).await, "once");
        assert!(waiters.is_watched("k"));
        drop((a, b));
        assert!(!waiters.is_watched("k"));
        drop(c);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quorum_watch_wakes_when_enough_nodes_did_and_keeps_what_it_heard() {
        let nodes: Vec<Arc<Waiters>> = (0..3).map(|_| Arc::new(Waiters::default())).collect();
        let places = |nodes: &[Arc<Waiters>]| nodes.iter().map(|n| n.watch("k").0).collect();
        let first = Watch::quorum(places(&nodes), 2);
        let second = Watch::quorum(places(&nodes), 2);
        // One node's release (an abort there) wakes no one.
        nodes[0].released("k");
        assert!(!is_woken(&first).await, "one node of three");
        // The wait above was cut short after it took node 0's wake: still counted.
        nodes[2].released("k");
        assert!(is_woken(&first).await, "two nodes of three");
        assert!(!is_woken(&second).await, "one release, one waiter");
        assert!(!is_woken(&first).await, "the count starts again");
        // The first waiter leaves every node's line: the next release is the second's.
        drop(first);
        for node in &nodes {
            node.released("k");
        }
        assert!(is_woken(&second).await);
        // Waking every waiter of the key (subscriptions confirmed) on a quorum wakes it.
        nodes[1].wake_key("k");
        nodes[2].wake_key("k");
        assert!(is_woken(&second).await);
        drop(second);
        assert!(nodes.iter().all(|n| !n.is_watched("k")), "left every line");
    }

    #[test]
    fn the_store_hears_when_a_keys_last_waiter_left() {
        let left = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let waiters = Arc::new(Waiters::with_idle({
            let left = Arc::clone(&left);
            move |key| left.lock().push(key.to_owned())
        }));
        let (a, first) = waiters.watch("k");
        let (b, _) = waiters.watch("k");
        assert!(first);
        drop(a);
        assert!(left.lock().is_empty());
        drop(b);
        assert_eq!(*left.lock(), ["k"]);
    }
}
