//! The fair wait: a contender key in line behind the holder, and its watcher.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, Txn, TxnOp, WatchFilterType, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::EtcdStore;
use super::errors::transient;
use super::keys::{Keys, last_in_line};
use super::lease::keep_alive;
use super::members::Members;
use super::txn::{gets, past_guard, unless_aborted};
use crate::Result;
use crate::store::AttemptId;
use crate::wake::{Waiters, Watch};

/// A waiter whose watch failed tries again after this long (and retries an attempt
/// meanwhile, under its strategy).
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// A place in line: our key, its lease, and the contender before it as of `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) lease: i64,
    /// The TTL `lease` was granted with (what a call asked for, if `exact` is false: the
    /// key was put in line by another call).
    pub(super) ttl: i64,
    pub(super) exact: bool,
    /// Our key's create revision: its token once it is first.
    pub(super) created: i64,
    pub(super) predecessor: Vec<u8>,
    pub(super) revision: i64,
}

/// How a waiter's turn went.
pub(super) enum Turn {
    /// Its key is first: the lock is ours (the key and its creator as they are now).
    Mine(KeyValue, Option<KeyValue>),
    /// Still in line, behind `predecessor` as of `revision`.
    Waiting { predecessor: Vec<u8>, revision: i64 },
    /// The place is gone (or changed): acquire afresh.
    Gone,
    /// The attempt was aborted.
    Refused,
}

impl EtcdStore {
    pub(super) fn place_of(&self, contender: &str) -> Option<Place> {
        self.places
            .lock()
            .get(contender)
            .map(|sender| sender.borrow().clone())
    }

    pub(super) fn remember(&self, contender: &str, place: Place) {
        let mut places = self.places.lock();
        match places.get(contender) {
            Some(sender) => {
                sender.send_replace(place);
            }
            None => {
                places.insert(contender.to_owned(), watch::channel(place).0);
            }
        }
    }

    /// Forget the place in line of `contender`: its watcher ends.
    pub(super) fn forget(&self, contender: &str) {
        self.places.lock().remove(contender);
    }

    /// A waiter's next attempt: its key first in line takes the lock (its lease re-armed
    /// at the same time); else it names the key now before ours.
    pub(super) async fn turn(
        &self,
        keys: &Keys,
        val: &str,
        place: &Place,
        attempt: AttemptId,
    ) -> Result<Turn> {
        let (start, end) = keys.line();
        let contender = keys.contender.as_str();
        let inner = Txn::new()
            .when([
                Compare::value(contender, CompareOp::Equal, val),
                Compare::create_revision(contender, CompareOp::Equal, place.created),
                Compare::lease(contender, CompareOp::Equal, place.lease),
                // No key before ours: every key in line was created at or after ours.
                Compare::create_revision(start.as_str(), CompareOp::Greater, place.created - 1)
                    .with_range(end.as_str()),
            ])
            .and_then([
                TxnOp::get(contender, None),
                TxnOp::get(keys.creator.as_str(), None),
            ])
            .or_else([
                TxnOp::get(contender, None),
                TxnOp::get(
                    start.as_str(),
                    Some(last_in_line(end, place.created - 1, 1)),
                ),
            ]);
        let txn = unless_aborted(&keys.aborted(attempt.client), attempt.seq, inner);
        // The lease is re-armed while the transaction runs: both are sent after the
        // attempt started, so the key is ours for its full TTL from then on.
        let (reply, kept) =
            futures::future::join(self.txn(txn), keep_alive(&self.client(), place.lease)).await;
        let Some((revision, reply)) = past_guard(&reply?)? else {
            return Ok(Turn::Refused);
        };
        let mut read = gets(&reply).into_iter();
        let ours = read.next().unwrap_or_default().into_iter().next();
        let next = read.next().unwrap_or_default().into_iter().next();
        if reply.succeeded() {
            return match (kept?, ours) {
                (true, Some(ours)) => Ok(Turn::Mine(ours, next)),
                _ => Err(transient("the lease ran out during the attempt")),
            };
        }
        let same = ours.is_some_and(|kv| {
            kv.value() == val.as_bytes()
                && kv.create_revision() == place.created
                && kv.lease() == place.lease
        });
        match next {
            Some(predecessor) if same => Ok(Turn::Waiting {
                predecessor: predecessor.key().to_vec(),
                revision,
            }),
            _ => Ok(Turn::Gone),
        }
    }

    /// Watch the predecessor of `contender` while it has waiters, and keep its lease
    /// alive.
    pub(super) fn spawn_watcher(&self, contender: &str, place: watch::Receiver<Place>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(watch_line(
            Arc::clone(&self.members),
            Arc::clone(&self.waiters),
            contender.to_owned(),
            place,
        ));
        if let Some(previous) = self
            .watching
            .lock()
            .insert(contender.to_owned(), task.abort_handle())
        {
            previous.abort();
        }
    }
}

/// A waiter's watch: wake the waiter when its predecessor is deleted (or the watch
/// failed: then it retries under its strategy and the watch is set up again), and keep
/// its lease alive meanwhile. Ends when aborted (the last waiter left) or the place is
/// forgotten (the call acquired or withdrew).
async fn watch_line(
    members: Arc<Members>,
    waiters: Arc<Waiters>,
    contender: String,
    mut place: watch::Receiver<Place>,
) {
    loop {
        let target = place.borrow_and_update().clone();
        let keep_every = Duration::from_secs(u64::try_from(target.ttl).unwrap_or(1)) / 3;
        let mut keep_alive_ticks = tokio::time::interval_at(
            Instant::now() + keep_every,
            keep_every.max(Duration::from_millis(100)),
        );
        let options = WatchOptions::new()
            .with_start_revision(target.revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let stream = members
            .client()
            .watch_client()
            .watch(target.predecessor.clone(), Some(options))
            .await;
        let Ok(mut stream) = stream else {
            waiters.released(&contender);
            tokio::time::sleep(REWATCH_PAUSE).await;
            continue;
        };
        loop {
            tokio::select! {
                changed = place.changed() => {
                    if changed.is_err() {
                        return; // forgotten: acquired or withdrawn
                    }
                    break; // a new predecessor
                }
                message = stream.message() => {
                    match message {
                        Ok(Some(resp)) if !resp.canceled()
                            && !resp.events().iter().any(|e| e.event_type() == EventType::Delete) => {}
                        Ok(Some(resp)) if !resp.canceled() => {
                            // The predecessor is gone: the next attempt may hold the key.
                            waiters.released(&contender);
                            if place.changed().await.is_err() {
                                return;
                            }
                            break;
                        }
                        _ => {
                            // Lost (or cancelled by the server): retry, then watch again.
                            waiters.released(&contender);
                            tokio::time::sleep(REWATCH_PAUSE).await;
                            break;
                        }
                    }
                }
                _ = keep_alive_ticks.tick() => {
                    if !matches!(keep_alive(&members.client(), target.lease).await, Ok(true)) {
                        // Our key went with its lease: the next attempt gets in line again.
                        waiters.released(&contender);
                    }
                }
            }
        }
    }
}

impl EtcdStore {
    /// The waiter `val` of `key` waits for its predecessor's deletion.
    pub(super) fn wait_in_line(&self, key: &str, val: &str) -> Option<Watch> {
        if !self.queue {
            return None;
        }
        let contender = Keys::new(key, val).contender;
        let (watch, first) = self.waiters.watch(&contender);
        if first {
            let place = self
                .places
                .lock()
                .get(&contender)
                .map(watch::Sender::subscribe);
            if let Some(place) = place {
                self.spawn_watcher(&contender, place);
            }
        }
        Some(watch)
    }
}
