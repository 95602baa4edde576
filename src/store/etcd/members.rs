//! The members: a client per member, and which member an operation runs on.
//!
//! etcd-client's own channel balances every request over all the endpoints. A member
//! the client is cut off from keeps getting its share: its HTTP/2 connection counts as
//! ready until keep-alive gives up on it (about 3 s here), and the reconnect is ready
//! again at once wherever TCP still connects (a proxy, a load balancer, a half-open
//! path). Measured through a proxy per member of a 3-member cluster, one of them cut
//! off: 29 of 81 requests hung for their whole 200 ms timeout, and a lock renewed with
//! `max_retry` 3 lost its renewal within seconds, though two members answered every
//! request sent to them.
//!
//! So each member has a client (a connection) of its own, and every operation runs on
//! one member, the one that last answered ([`Members::within`]). A member that does not
//! answer in time, or whose connection fails, becomes *suspect*: operations go to
//! another member, and a background probe (a status request every
//! [`PROBE_EVERY`]) clears the suspicion once it answers again. An idempotent
//! operation whose member does not answer within half its remaining time is abandoned
//! and run again on another member, within the caller's timeout; one that must not be
//! sent twice waits out its whole time on its member; an acquire attempt abandoned so
//! ends as refused, and the caller's next attempt, under a new number, goes to another
//! member ([`Members::within_once`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use std::future::Future;

use etcd_client as etcd;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::errors::{Retry, failure, indeterminate, retryable, unsent};
use crate::error::StoreError;
use crate::{Error, Result};

/// How often a suspect member is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The client of the member the running operation was sent to.
    static CURRENT: etcd::Client;
}

/// One member: its client (absent until it connected, with credentials: authenticating
/// needs an answer) and since when it is suspect.
struct Member {
    endpoint: String,
    client: Mutex<Option<etcd::Client>>,
    suspect: Mutex<Option<Instant>>,
}

/// The members of a cluster, a client each.
pub(super) struct Members {
    members: Vec<Member>,
    /// The member operations go to while it answers.
    preferred: AtomicUsize,
    /// How to connect a member's client.
    options: etcd::ConnectOptions,
    connect_timeout: Duration,
    /// Whether the probe runs.
    probing: Mutex<bool>,
    /// Counts suspicions: a long-lived stream (a watch) on a member that becomes
    /// suspect moves to another.
    suspicions: watch::Sender<u64>,
}

impl Members {
    /// A client per endpoint. Without credentials the clients connect lazily (no I/O
    /// here); with them each authenticates, and a member that cannot be reached within
    /// `connect_timeout` is connected later by the probe. Fails when no member could be
    /// connected.
    pub(super) async fn connect(
        endpoints: &[String],
        options: etcd::ConnectOptions,
        connect_timeout: Duration,
    ) -> Result<Arc<Members>> {
        let connected = futures::future::join_all(
            endpoints
                .iter()
                .map(|e| connect_one(e, &options, connect_timeout)),
        )
        .await;
        let mut failures = Vec::with_capacity(endpoints.len());
        let mut members = Vec::with_capacity(endpoints.len());
        for (endpoint, client) in endpoints.iter().zip(connected) {
            let client = match client {
                Ok(client) => {
                    failures.push((String::new(), true));
                    Some(client)
                }
                Err(e) => {
                    failures.push(describe(&e, connect_timeout));
                    None
                }
            };
            members.push(Member {
                endpoint: endpoint.clone(),
                suspect: Mutex::new(client.is_none().then(Instant::now)),
                client: Mutex::new(client),
            });
        }
        if members.iter().all(|m| m.client.lock().is_none()) {
            return Err(no_member_answered(
                endpoints
                    .iter()
                    .zip(failures)
                    .map(|(e, why)| (e.clone(), why)),
            ));
        }
        // Clients spread over the members.
        let preferred = getrandom::u32().unwrap_or(0) as usize % members.len();
        let members = Arc::new(Members {
            members,
            preferred: AtomicUsize::new(preferred),
            options,
            connect_timeout,
            probing: Mutex::new(false),
            suspicions: watch::Sender::new(0),
        });
        if members.members.iter().any(|m| m.suspect.lock().is_some()) {
            members.probe();
        }
        Ok(members)
    }

    /// The client operations run on now: the running operation's member, else the
    /// member [`pick`](Self::pick) names (there is one: a member was connected at open,
    /// and clients are never dropped).
    pub(super) fn client(&self) -> etcd::Client {
        CURRENT
            .try_with(etcd::Client::clone)
            .ok()
            .or_else(|| self.pick().map(|(_, client)| client))
            .expect("a member was connected at open")
    }

    /// The member to send to: the preferred one while it is not suspect, else the next
    /// one that is not, else the one suspect for longest (it may be back). Its index
    /// and client.
    pub(super) fn pick(&self) -> Option<(usize, etcd::Client)> {
        let n = self.members.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let connected = |i: usize| self.members[i].client.lock().clone().map(|c| (i, c));
        let chosen = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| self.members[*i].suspect.lock().is_none())
            .find_map(connected)
            .or_else(|| {
                let mut suspects: Vec<(Instant, usize)> = (0..n)
                    .filter_map(|i| self.members[i].suspect.lock().map(|since| (since, i)))
                    .collect();
                suspects.sort();
                suspects.into_iter().find_map(|(_, i)| connected(i))
            })?;
        self.preferred.store(chosen.0, Ordering::Relaxed);
        Some(chosen)
    }

    /// Whether a member other than `i` is connected and not suspect.
    fn alternative_to(&self, i: usize) -> bool {
        self.members
            .iter()
            .enumerate()
            .any(|(j, m)| j != i && m.suspect.lock().is_none() && m.client.lock().is_some())
    }

    /// Member `i` did not answer in time, or its connection failed.
    pub(super) fn suspect(self: &Arc<Self>, i: usize) {
        *self.members[i].suspect.lock() = Some(Instant::now());
        self.suspicions.send_modify(|n| *n += 1);
        self.probe();
    }

    /// Whether member `i` is suspect.
    pub(super) fn is_suspect(&self, i: usize) -> bool {
        self.members[i].suspect.lock().is_some()
    }

    /// Changes on every suspicion.
    pub(super) fn suspicions(&self) -> watch::Receiver<u64> {
        self.suspicions.subscribe()
    }

    /// Member `i` answered.
    fn answered(&self, i: usize) {
        *self.members[i].suspect.lock() = None;
    }

    /// Start the probe of suspect members, unless it runs.
    fn probe(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut probing = self.probing.lock();
            if *probing {
                return;
            }
            *probing = true;
        }
        runtime.spawn(probe_suspects(Arc::downgrade(self)));
    }

    /// Run `op` within `timeout` on one member after another: see [`within_until`].
    ///
    /// [`within_until`]: Self::within_until
    pub(super) async fn within<T, F, Fut>(
        self: &Arc<Self>,
        timeout: Duration,
        retry: Retry,
        op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.within_until(Instant::now() + timeout, retry, op).await
    }

    /// Run `op` on a member (its requests go there: [`client`](Self::client)) until
    /// `deadline`, and again after the failures `retry` allows (a leader election, a
    /// member that went away), pausing 10 ms, doubling up to 100 ms after an answered
    /// failure. With [`Retry::Transient`] and another member to go to, a member gets
    /// half the time left: one that has not answered by then is suspect, its run of
    /// `op` is dropped and `op` runs again on another member. With [`Retry::Unsent`]
    /// the member has all the time left. `deadline` bounds everything:
    /// [`Error::Timeout`] once it passed.
    pub(super) async fn within_until<T, F, Fut>(
        self: &Arc<Self>,
        deadline: Instant,
        retry: Retry,
        op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(deadline, retry, None, op).await
    }

    /// [`within`](Self::within) with [`Retry::Transient`], except that a run of `op`
    /// that may have reached its member without an answer (the member went silent, or
    /// the connection broke) is not run again: the call ends with `abandoned`. For an
    /// acquire, whose attempt must not be sent twice under one identity: a copy that
    /// arrives after the lock was released would take the key again. The caller's next
    /// attempt goes to another member under a new number, and this one stays among the
    /// attempts its call aborts.
    pub(super) async fn within_once<T, F, Fut>(
        self: &Arc<Self>,
        timeout: Duration,
        abandoned: T,
        op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(
            Instant::now() + timeout,
            Retry::Transient,
            Some(abandoned),
            op,
        )
        .await
    }

    async fn run<T, F, Fut>(
        self: &Arc<Self>,
        deadline: Instant,
        retry: Retry,
        mut abandoned: Option<T>,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = Duration::from_millis(10);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            let Some((i, client)) = self.pick() else {
                // No member connected yet (credentials): the probe connects them.
                tokio::time::sleep_until(deadline.min(now + pause)).await;
                continue;
            };
            let left = deadline - now;
            let failover = retry == Retry::Transient && self.alternative_to(i);
            let budget = if failover { left / 2 } else { left };
            match tokio::time::timeout(budget, CURRENT.scope(client, op())).await {
                Ok(Ok(done)) => {
                    self.answered(i);
                    return Ok(done);
                }
                Ok(Err(Error::Store(e))) if retryable(&e, retry) => {
                    if unreachable(&e) {
                        self.suspect(i);
                        if self.alternative_to(i) {
                            // Sent, maybe, unless the connection could not be made.
                            if !unsent(&e)
                                && let Some(abandoned) = abandoned.take()
                            {
                                return Ok(abandoned);
                            }
                            continue; // at once, to another member
                        }
                    }
                    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                // A write that is not sent again failed after it may have been carried
                // out (the connection broke, the server timed out its proposal).
                Ok(Err(Error::Store(e))) if e.is_transient() => {
                    if unreachable(&e) {
                        self.suspect(i);
                    }
                    return Err(indeterminate(e));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.suspect(i);
                    if !failover {
                        return Err(Error::Timeout);
                    }
                    if let Some(abandoned) = abandoned.take() {
                        return Ok(abandoned);
                    }
                }
            }
        }
    }
}

impl Members {
    /// Run `op` on every member at once, each within `timeout`: the first answer, or —
    /// as soon as every member failed — an error that names each member and what it
    /// said (a refused connection fails at once, not after the timeout).
    pub(super) async fn first_answer<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T>
    where
        F: Fn(etcd::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pending: FuturesUnordered<_> = self
            .members
            .iter()
            .map(|m| {
                let call = m.client.lock().clone().map(&op);
                let endpoint = m.endpoint.clone();
                async move {
                    let outcome = match call {
                        None => Err(("not connected".to_owned(), true)),
                        Some(call) => match tokio::time::timeout(timeout, call).await {
                            Ok(Ok(answer)) => Ok(answer),
                            Ok(Err(e)) => Err(describe(&e, timeout)),
                            Err(_) => Err(describe(&Error::Timeout, timeout)),
                        },
                    };
                    (endpoint, outcome)
                }
            })
            .collect();
        let mut failures = Vec::new();
        while let Some((endpoint, outcome)) = pending.next().await {
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(why) => failures.push((endpoint, why)),
            }
        }
        Err(no_member_answered(failures))
    }
}

/// What a member's failure says, with its causes, and whether it is transient.
fn describe(e: &Error, timeout: Duration) -> (String, bool) {
    if matches!(e, Error::Timeout) {
        return (format!("no answer within the timeout ({timeout:?})"), true);
    }
    let mut said = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_said = cause.to_string();
        if !said.contains(&cause_said) {
            said.push_str(": ");
            said.push_str(&cause_said);
        }
        source = cause.source();
    }
    (said, e.is_transient())
}

/// Every member failed: one error naming each member (`host:port`, never credentials)
/// and what it said; transient if any failure was.
fn no_member_answered(failures: impl IntoIterator<Item = (String, (String, bool))>) -> Error {
    let mut transient = false;
    let named: Vec<String> = failures
        .into_iter()
        .map(|(endpoint, (why, t))| {
            transient |= t;
            format!("{endpoint}: {why}")
        })
        .collect();
    Error::Store(StoreError::new(
        super::STORE,
        transient,
        format!("no etcd member answered ({})", named.join("; ")),
    ))
}

/// Connect a client to one member, within `timeout`.
async fn connect_one(
    endpoint: &str,
    options: &etcd::ConnectOptions,
    timeout: Duration,
) -> Result<etcd::Client> {
    tokio::time::timeout(
        timeout,
        etcd::Client::connect([endpoint], Some(options.clone())),
    )
    .await
    .map_err(|_| Error::Timeout)?
    .map_err(failure)
}

/// Every [`PROBE_EVERY`], ask each suspect member for its status (and connect a member
/// not connected yet); one that answers is suspect no more. Ends when no member is
/// suspect, or the members are gone.
async fn probe_suspects(members: Weak<Members>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(members) = members.upgrade() else {
            return;
        };
        let suspects: Vec<usize> = (0..members.members.len())
            .filter(|i| members.members[*i].suspect.lock().is_some())
            .collect();
        if suspects.is_empty() {
            let mut probing = members.probing.lock();
            // Checked again under the flag: a suspicion raised meanwhile sees it set.
            if members.members.iter().all(|m| m.suspect.lock().is_none()) {
                *probing = false;
                return;
            }
            continue;
        }
        let probes = suspects.iter().map(|i| {
            let members = Arc::clone(&members);
            let i = *i;
            async move {
                let member = &members.members[i];
                let client = member.client.lock().clone();
                let client = match client {
                    Some(client) => client,
                    None => {
                        let connected = connect_one(
                            &member.endpoint,
                            &members.options,
                            members.connect_timeout,
                        )
                        .await;
                        match connected {
                            Ok(client) => {
                                *member.client.lock() = Some(client.clone());
                                client
                            }
                            Err(_) => return,
                        }
                    }
                };
                let mut maintenance = client.maintenance_client();
                let answer = tokio::time::timeout(PROBE_TIMEOUT, maintenance.status()).await;
                // Any answer of the member's own (even a refusal) says it is reached.
                let reached = match answer {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => match failure(e) {
                        Error::Store(e) => !unreachable(&e),
                        _ => false,
                    },
                    Err(_) => false,
                };
                if reached {
                    members.answered(i);
                }
            }
        });
        futures::future::join_all(probes).await;
    }
}

/// Whether `e` says the member was not reached (the connection failed or broke), as
/// opposed to an answer of the member (no leader, a timeout on the server: etcd's own
/// errors say `etcdserver:`).
fn unreachable(e: &StoreError) -> bool {
    let Some(source) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<etcd::Error>())
    else {
        return false;
    };
    match source {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::GRpcStatus(status) => !status.message().starts_with("etcdserver:"),
        _ => false,
    }
}
