//! Contention for one key: the retry strategies, the sides (leasehold woken or polling,
//! `SET NX PX` by hand, Redlock, rslock) and the contention run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use leasehold::redlock::{Redlock, RedlockLock};
use leasehold::{Client, ExponentialBackoff, FixedInterval, NonFixedInterval, RetryStrategy};
use redis::Value;

use super::base::{EXPIRATION, EXPIRATION_MS, TIMEOUT};
use super::redis::Raw;
use super::redlock::REDLOCK_TIMEOUT;

/// The retry strategies compared under contention, each retrying without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fixed,
    NonFixed,
    Exponential,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Fixed, Strategy::NonFixed, Strategy::Exponential];
    /// The interval of the fixed and jittered strategies; the exponential one starts at
    /// half of it and is capped at 16 times it.
    pub const INTERVAL: Duration = Duration::from_millis(2);

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed => "FixedInterval(2 ms)",
            Strategy::NonFixed => "NonFixedInterval(2 ms)",
            Strategy::Exponential => "ExponentialBackoff(1..32 ms)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Strategy::Fixed => "fixed",
            Strategy::NonFixed => "nonfixed",
            Strategy::Exponential => "exponential",
        }
    }

    pub fn build(self) -> Box<dyn RetryStrategy + Send> {
        match self {
            Strategy::Fixed => Box::new(FixedInterval::new(Self::INTERVAL, u32::MAX)),
            Strategy::NonFixed => Box::new(NonFixedInterval::new(Self::INTERVAL, u32::MAX)),
            Strategy::Exponential => Box::new(
                ExponentialBackoff::new(Self::INTERVAL / 2, Self::INTERVAL * 16)
                    .with_max_retries(u32::MAX),
            ),
        }
    }
}

/// Who contends for the one key.
#[derive(Clone)]
pub enum ContentionSide {
    /// `Client::lock` with the strategy (waiters woken on release: hand-off).
    Leasehold(Client),
    /// The same with `ClientBuilder::notify(false)`: waiters poll under the strategy.
    LeaseholdPolling(Client),
    /// `SET NX PX` in a loop, sleeping the strategy's delays in between, + `release.lua`.
    Raw(Raw),
    /// `Redlock::lock` with the strategy, over N servers.
    Redlock(Redlock),
    /// rslock 0.10's `LockManager::lock` over the same servers, retrying without end
    /// after its own random delay (see `redlock::rslock_contender`); the strategy is ignored.
    Rslock(Arc<rslock::LockManager>),
}

/// A lock held by one side of a contention run.
pub enum Held {
    Lock(leasehold::Lock),
    Redlock(RedlockLock),
    Rslock(rslock::Lock),
    /// Raw `SET NX PX`: released by key and value.
    Raw,
}

impl ContentionSide {
    pub fn id(&self) -> &'static str {
        match self {
            ContentionSide::Leasehold(_) => "leasehold",
            ContentionSide::LeaseholdPolling(_) => "leasehold_polling",
            ContentionSide::Raw(_) => "raw_set_nx_px",
            ContentionSide::Redlock(_) => "leasehold_redlock",
            ContentionSide::Rslock(_) => "rslock",
        }
    }

    /// Acquire `key` for `val`, retrying under `strategy` without end.
    async fn acquire(&self, key: &str, val: &str, strategy: Strategy) -> Held {
        match self {
            ContentionSide::Leasehold(c) | ContentionSide::LeaseholdPolling(c) => Held::Lock(
                c.lock(key, val, EXPIRATION, TIMEOUT, strategy.build())
                    .await
                    .expect("lock under contention"),
            ),
            ContentionSide::Redlock(r) => Held::Redlock(
                r.lock(key, val, EXPIRATION, REDLOCK_TIMEOUT, strategy.build())
                    .await
                    .expect("redlock under contention"),
            ),
            ContentionSide::Rslock(manager) => Held::Rslock(
                manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock under contention"),
            ),
            ContentionSide::Raw(raw) => {
                let mut delays = strategy.build();
                while !raw.set_nx_px(key, val, EXPIRATION_MS).await {
                    let delay = delays.next_delay().expect("unbounded strategy");
                    tokio::time::sleep(delay).await;
                }
                Held::Raw
            }
        }
    }

    async fn release(&self, lock: Held, key: &str, val: &str) {
        match (self, lock) {
            (_, Held::Lock(lock)) => lock.unlock().await.expect("unlock under contention"),
            (_, Held::Redlock(lock)) => lock.unlock().await.expect("unlock under contention"),
            (ContentionSide::Rslock(manager), Held::Rslock(lock)) => manager.unlock(&lock).await,
            (ContentionSide::Raw(raw), Held::Raw) => {
                assert!(raw.release(key, val).await, "release under contention")
            }
            _ => unreachable!("each side holds its own kind of lock"),
        }
    }

    async fn del(&self, key: &str) {
        match self {
            ContentionSide::Raw(raw) => {
                let mut conn = raw.conn.clone();
                let _: Value = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
            }
            // A cancelled attempt that may have landed is released by the client itself
            // (rslock: its keys expire; the next run uses a fresh key).
            ContentionSide::Leasehold(_)
            | ContentionSide::LeaseholdPolling(_)
            | ContentionSide::Redlock(_)
            | ContentionSide::Rslock(_) => {}
        }
    }
}

/// Result of one contention window.
#[derive(Debug, Clone, Default)]
pub struct ContentionStats {
    pub acquisitions: u64,
    pub elapsed: Duration,
    /// Release started → next holder's lock returned, per hand-over.
    pub handoffs: Vec<Duration>,
    pub per_task: Vec<u64>,
}

/// When a contention run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this much wall time.
    Elapsed(Duration),
    /// Once this many acquisitions happened (all tasks together).
    Acquisitions(u64),
}

/// `tasks` tasks contend for one key until `until`: each acquires (retrying under
/// `strategy`), holds the key for `hold`, releases it, then waits `think` before the
/// next attempt.
pub async fn contention_run(
    side: &ContentionSide,
    key: &str,
    tasks: usize,
    strategy: Strategy,
    hold: Duration,
    think: Duration,
    until: Until,
) -> ContentionStats {
    let limit = match until {
        Until::Elapsed(_) => u64::MAX,
        Until::Acquisitions(n) => n.max(1),
    };
    let total = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let epoch = Instant::now();
    // Nanoseconds since `epoch` at which the last release started (0: none yet).
    let last_release = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let side = side.clone();
            let key = key.to_owned();
            let (last_release, stop, stopped) =
                (last_release.clone(), stop.clone(), stopped.clone());
            let (total, reached) = (total.clone(), reached.clone());
            tokio::spawn(async move {
                let val = format!("task-{t}");
                let mut handoffs = Vec::new();
                let mut count = 0u64;
                loop {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let lock = tokio::select! {
                        lock = side.acquire(&key, &val, strategy) => lock,
                        _ = stop.notified() => break,
                    };
                    let now = epoch.elapsed().as_nanos() as u64;
                    if stopped.load(Ordering::SeqCst) {
                        side.release(lock, &key, &val).await;
                        break;
                    }
                    let previous = last_release.load(Ordering::SeqCst);
                    if previous != 0 {
                        handoffs.push(Duration::from_nanos(now.saturating_sub(previous)));
                    }
                    count += 1;
                    if total.fetch_add(1, Ordering::SeqCst) + 1 == limit {
                        reached.notify_one();
                    }
                    tokio::time::sleep(hold).await;
                    last_release.store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
                    side.release(lock, &key, &val).await;
                    if !think.is_zero() {
                        tokio::time::sleep(think).await;
                    }
                }
                (count, handoffs)
            })
        })
        .collect();
    match until {
        Until::Elapsed(window) => tokio::time::sleep(window).await,
        Until::Acquisitions(_) => reached.notified().await,
    }
    stopped.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    let elapsed = epoch.elapsed();
    let mut stats = ContentionStats {
        elapsed,
        ..ContentionStats::default()
    };
    for h in handles {
        // A task mid-critical-section when the window closed finishes its cycle; one
        // mid-acquire was cancelled by `stop`.
        let (count, handoffs) = h.await.expect("contention task");
        stats.acquisitions += count;
        stats.per_task.push(count);
        stats.handoffs.extend(handoffs);
    }
    // A raw attempt cancelled by `stop` may have landed after the window closed.
    side.del(key).await;
    stats
}
