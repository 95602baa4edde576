//! Waiters for the release of a key, in arrival order.
//!
//! A `lock` call that missed watches the key ([`Waiters::watch`]) and pauses until its
//! retry strategy's delay runs out, or until it is woken: [`Waiters::released`] wakes the
//! **first** waiter of a key (one release, one waiter: no herd), [`Waiters::wake_key`]
//! wakes every waiter of a key once (their notifications were just set up, or set up
//! again after being lost: a release in between may have gone unseen). Stores feed these
//! from their notifications (Redis pub/sub, the memory store itself).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Told when a key's last waiter left (a store stops listening for it).
type Idle = Box<dyn Fn(&str) + Send + Sync>;

/// The waiters of every key being waited for, by key.
#[derive(Default)]
pub(crate) struct Waiters {
    keys: Mutex<HashMap<Box<str>, VecDeque<Arc<Notify>>>>,
    idle: Option<Idle>,
}

/// One waiting `lock` call's place in its key's queue; leaves it when dropped.
pub(crate) struct Watch {
    waiters: Arc<Waiters>,
    key: Box<str>,
    wake: Arc<Notify>,
}

impl Waiters {
    /// Waiters whose store is told, by `idle`, when a key's last waiter left. It is called
    /// with the waiters' lock held: it must not come back here.
    pub(crate) fn with_idle(idle: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Waiters {
            keys: Mutex::default(),
            idle: Some(Box::new(idle)),
        }
    }

    /// Queue a waiter for `key`; `true` with it if it is the key's first (the store may
    /// have to start listening for the key).
    pub(crate) fn watch(self: &Arc<Self>, key: &str) -> (Watch, bool) {
        let wake = Arc::new(Notify::new());
        let first = {
            let mut keys = self.keys.lock();
            let queue = keys.entry(key.into()).or_default();
            queue.push_back(Arc::clone(&wake));
            queue.len() == 1
        };
        let watch = Watch {
            waiters: Arc::clone(self),
            key: key.into(),
            wake,
        };
        (watch, first)
    }

    /// `key` was released: wake its first waiter.
    pub(crate) fn released(&self, key: &str) {
        if let Some(first) = self.keys.lock().get(key).and_then(|q| q.front()) {
            first.notify_one();
        }
    }

    /// Wake every waiter of `key` once.
    pub(crate) fn wake_key(&self, key: &str) {
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
    /// Resolves when this waiter is woken (at once if it was woken since it last
    /// waited).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a wake that arrives while nobody waits is kept for the next call.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Watch {
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
