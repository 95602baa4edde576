//! The fair wait: a contender key in line behind the holder, and its watcher.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
};
use tokio::sync::watch;

use super::EtcdStore;
use super::keys::{Keys, last_in_line};
use super::lease::{keep_alive, lease_id};
use super::members::Members;
use super::session::{Place, Sessions};
use super::txn::{gets, past_guard, unless_aborted};
use crate::store::AttemptId;
use crate::wake::{Waiters, Watch};
use crate::{Error, Result};

/// A waiter whose watch failed tries again after this long (and retries an attempt
/// meanwhile, under its strategy).
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// How long a member may take to set a watch up before it is suspect and the watch
/// goes to another member.
const WATCH_SETUP: Duration = Duration::from_secs(1);

/// How a waiter's turn went.
pub(super) enum Turn {
    /// Its key was first: it took its turn, and holds the lock now.
    Mine,
    /// Still in line, behind `predecessor` as of `revision`; the turn will be taken on
    /// `hold` (granted `hold_ttl`).
    Waiting {
        predecessor: Vec<u8>,
        revision: i64,
        hold: i64,
        hold_ttl: i64,
    },
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

    /// A waiter's next attempt: its key, first in line, takes its turn (moves to a lease
    /// of `ttl`, and its creator loses the mark of a waiting key); else it names the key
    /// now before ours.
    ///
    /// The lease is the place's `hold`, granted when the call got in line and holding
    /// nothing since, kept alive as the turn is taken (one round trip), if it was granted
    /// `ttl`; else, or once it ran out, one granted now.
    pub(super) async fn turn(
        &self,
        keys: &Keys,
        val: &str,
        place: &Place,
        attempt: AttemptId,
        ttl: i64,
    ) -> Result<Turn> {
        let mut held = (place.hold_ttl == ttl).then_some(place.hold);
        loop {
            let lease = match held {
                Some(lease) => lease,
                None => self.grant_lease(lease_id(attempt), ttl).await?,
            };
            let txn = turn_txn(keys, val, place, attempt, lease);
            // Both sent after the attempt started: the key is ours for the full TTL from
            // then on.
            let (reply, kept) = match held {
                Some(lease) => {
                    futures::future::join(self.txn(txn), keep_alive(&self.client(), lease)).await
                }
                None => (self.txn(txn).await, Ok(true)),
            };
            let reply = match reply {
                Err(Error::Store(e))
                    if held.is_some() && e.to_string().contains("lease not found") =>
                {
                    // The held lease ran out while the call waited: take a new one.
                    held = None;
                    continue;
                }
                reply => reply?,
            };
            let Some((revision, reply)) = past_guard(&reply)? else {
                if held.is_none() {
                    self.revoke_detached([lease]);
                }
                return Ok(Turn::Refused);
            };
            if reply.succeeded() {
                // A lease that ran out as the turn was taken took the key with it.
                return Ok(if kept? { Turn::Mine } else { Turn::Gone });
            }
            let mut read = gets(&reply).into_iter();
            let ours = read.next().unwrap_or_default().into_iter().next();
            let next = read.next().unwrap_or_default().into_iter().next();
            let same = ours.is_some_and(|kv| {
                kv.value() == val.as_bytes()
                    && kv.create_revision() == place.created
                    && kv.lease() == place.lease
            });
            return Ok(match next {
                Some(predecessor) if same => Turn::Waiting {
                    predecessor: predecessor.key().to_vec(),
                    revision,
                    hold: lease,
                    hold_ttl: ttl,
                },
                // The attempt acquires afresh (with this lease, if it granted one).
                _ => Turn::Gone,
            });
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
            Arc::clone(&self.sessions),
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

/// The transaction of a turn: if `val`'s key is still the place's and first in line,
/// move it and its creator to `lease` (the creator without the mark of a waiting key);
/// else read it and the key now before it. Refused if the attempt was aborted.
fn turn_txn(keys: &Keys, val: &str, place: &Place, attempt: AttemptId, lease: i64) -> Txn {
    let (start, end) = keys.line();
    let contender = keys.contender.as_str();
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let mut take = vec![TxnOp::put(contender, val, on_lease())];
    if let Some(creator) = &place.creator {
        take.push(TxnOp::put(
            keys.creator.as_str(),
            creator.clone(),
            on_lease(),
        ));
    }
    let inner = Txn::new()
        .when([
            Compare::value(contender, CompareOp::Equal, val),
            Compare::create_revision(contender, CompareOp::Equal, place.created),
            Compare::lease(contender, CompareOp::Equal, place.lease),
            // No key before ours: every key in line was created at or after ours.
            Compare::create_revision(start.as_str(), CompareOp::Greater, place.created - 1)
                .with_range(end.as_str()),
        ])
        .and_then(take)
        .or_else([
            TxnOp::get(contender, None),
            TxnOp::get(
                start.as_str(),
                Some(last_in_line(end, place.created - 1, 1)),
            ),
        ]);
    unless_aborted(&keys.aborted(attempt.client), attempt.seq, inner)
}

/// A waiter's watch: wake the waiter when its predecessor is deleted (or the watch
/// failed, or its member became suspect: then it retries under its strategy and the
/// watch is set up again, on a member that answers), and hold the session its place is
/// on meanwhile (its keep-alive task keeps it alive). Ends when aborted (the last
/// waiter left) or the place is forgotten (the call acquired or withdrew).
async fn watch_line(
    members: Arc<Members>,
    sessions: Arc<Sessions>,
    waiters: Arc<Waiters>,
    contender: String,
    mut place: watch::Receiver<Place>,
) {
    loop {
        let target = place.borrow_and_update().clone();
        let _session = sessions.hold(target.lease);
        let options = WatchOptions::new()
            .with_start_revision(target.revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let mut suspicions = members.suspicions();
        let Some((member, client)) = members.pick() else {
            tokio::time::sleep(REWATCH_PAUSE).await;
            continue;
        };
        let stream = tokio::time::timeout(
            WATCH_SETUP,
            client
                .watch_client()
                .watch(target.predecessor.clone(), Some(options)),
        )
        .await;
        let mut stream = match stream {
            Ok(Ok(stream)) => stream,
            failed => {
                if failed.is_err() {
                    members.suspect(member);
                }
                waiters.released(&contender);
                tokio::time::sleep(REWATCH_PAUSE).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = suspicions.changed() => {
                    if members.is_suspect(member) {
                        // Cut off from that member, maybe: watch again elsewhere, and
                        // look meanwhile.
                        waiters.released(&contender);
                        break;
                    }
                }
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
