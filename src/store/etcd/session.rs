//! A client's session in the lines: the short lease its places in line live on.
//!
//! A key waiting in line does not hang on the lock's expiration (which may be long) but
//! on its client's session: a lease of the server's minimum TTL (1 s here, 2 s with
//! etcd's default timers), kept alive every third of it while a call of the client
//! waits in some line. A client that crashed or was cut off stops keeping it alive;
//! etcd deletes its keys in line when the lease runs out, and the waiter behind each
//! one is woken (it watches its predecessor). A waiting key is marked so in its
//! creator key and holds nothing, even first in line, until its waiter takes its turn:
//! moves it to a lease of the lock's expiration and drops the mark, in one transaction.
//!
//! The session is shared by the client's waiting calls: one lease and one keep-alive
//! whatever the number of waiters. It is granted by the first miss that finds none
//! live, kept while calls use it (an attempt, or the watch of a waiting call), and
//! revoked when none has for two keep-alive periods. A session whose lease ran out
//! (the client was cut off longer than its TTL) is replaced: its waiters are woken, find
//! their places gone and get in line again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::EtcdStore;
use super::errors::Retry;
use super::lease::keep_alive;
use super::members::Members;
use crate::Result;
use crate::wake::Waiters;

/// A session: its lease.
pub(super) struct Session {
    pub(super) lease: i64,
}

/// The session in use, if any. Whoever uses it holds an `Arc` of it, taken from here
/// under the lock, so the keep-alive task can tell when nobody does.
#[derive(Default)]
pub(super) struct Sessions {
    current: Mutex<Option<Arc<Session>>>,
}

impl Sessions {
    /// The session in use, if one is.
    pub(super) fn live(&self) -> Option<Arc<Session>> {
        self.current.lock().clone()
    }

    /// The session of `lease`, if it is the one in use (a place in line on it is kept
    /// while this is held).
    pub(super) fn hold(&self, lease: i64) -> Option<Arc<Session>> {
        self.current
            .lock()
            .as_ref()
            .filter(|s| s.lease == lease)
            .cloned()
    }

    /// End `session`: it is no longer handed out. With `idle`, only if nobody but the
    /// caller and this holds it; whether it ended.
    fn end(&self, session: &Arc<Session>, idle: bool) -> bool {
        let mut current = self.current.lock();
        let in_use = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session));
        // Held by `current` and by the caller: nobody else.
        if idle && !(in_use && Arc::strong_count(session) == 2) {
            return false;
        }
        if in_use {
            *current = None;
        }
        true
    }
}

impl EtcdStore {
    /// The session in use, or a new one (its lease granted now, for the server's minimum
    /// TTL, and kept alive from now on).
    pub(super) async fn session(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.sessions.live() {
            return Ok(session);
        }
        let ttl = i64::try_from(self.min_ttl).unwrap_or(i64::MAX);
        let lease = self.grant_lease(0, ttl).await?;
        let session = Arc::new(Session { lease });
        {
            let mut current = self.sessions.current.lock();
            if let Some(other) = current.as_ref() {
                // Another call's, granted meanwhile: that one is used.
                let other = Arc::clone(other);
                drop(current);
                self.revoke_detached([lease]);
                return Ok(other);
            }
            *current = Some(Arc::clone(&session));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(keep_session(
                Keeping {
                    members: Arc::clone(&self.members),
                    sessions: Arc::clone(&self.sessions),
                    waiters: Arc::clone(&self.waiters),
                    places: Arc::clone(&self.places),
                },
                Arc::clone(&session),
                Duration::from_secs(self.min_ttl),
            ));
        }
        Ok(session)
    }
}

/// What the keep-alive task of a session needs of its store.
struct Keeping {
    members: Arc<Members>,
    sessions: Arc<Sessions>,
    waiters: Arc<Waiters>,
    places: Arc<Mutex<HashMap<String, watch::Sender<Place>>>>,
}

impl Keeping {
    /// Wake every waiter of this client whose place is on `lease`: it is gone (or
    /// going), and their next attempt gets in line again.
    fn wake_places_on(&self, lease: i64) {
        let contenders: Vec<String> = self
            .places
            .lock()
            .iter()
            .filter(|(_, place)| place.borrow().lease == lease)
            .map(|(contender, _)| contender.clone())
            .collect();
        for contender in contenders {
            self.waiters.wake_key(&contender);
        }
    }
}

/// Keep `session`'s lease (of `ttl`) alive every third of `ttl`, until nobody but
/// this task used it for two periods (then it is revoked) or it ran out.
async fn keep_session(store: Keeping, session: Arc<Session>, ttl: Duration) {
    let every = ttl / 3;
    let mut idle = 0;
    loop {
        tokio::time::sleep(every).await;
        if Arc::strong_count(&session) == 2 {
            idle += 1;
        } else {
            idle = 0;
        }
        if idle >= 2 && store.sessions.end(&session, true) {
            store.wake_places_on(session.lease);
            let members = &store.members;
            let _ = members
                .within(ttl, Retry::Transient, || async {
                    members
                        .client()
                        .lease_client()
                        .revoke(session.lease)
                        .await
                        .map(|_| ())
                        .map_err(super::errors::failure)
                })
                .await;
            return;
        }
        let kept = store
            .members
            .within(every, Retry::Transient, || async {
                keep_alive(&store.members.client(), session.lease).await
            })
            .await;
        match kept {
            Ok(true) => {}
            Ok(false) => {
                // Ran out (cut off longer than its TTL): its keys in line are gone.
                store.sessions.end(&session, false);
                store.wake_places_on(session.lease);
                return;
            }
            // Tried again next period: a lease not kept alive in time runs out, and the
            // next keep-alive says so.
            Err(_) => {}
        }
    }
}

/// A place in line: our key, its lease, and the contender before it as of `revision`.
#[derive(Debug, Clone)]
pub(super) struct Place {
    /// The lease our key waits on: this client's session's (or another client's, for a
    /// key of the same value put in line there).
    pub(super) lease: i64,
    /// The value of our key's creator once the key holds the lock (without the mark of
    /// a waiting key); `None`: it has no creator key.
    pub(super) creator: Option<Vec<u8>>,
    /// The lease the key takes its turn on: granted by the call's attempt that got in
    /// line (or found the key there), for `hold_ttl` seconds, holding nothing meanwhile
    /// (it may run out; the call's abort revokes it).
    pub(super) hold: i64,
    pub(super) hold_ttl: i64,
    /// Our key's create revision: its token once it is first.
    pub(super) created: i64,
    pub(super) predecessor: Vec<u8>,
    pub(super) revision: i64,
}
