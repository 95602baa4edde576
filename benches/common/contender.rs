//! Uncontended contenders (leasehold, the yardsticks by hand, rslock, memory) and the
//! throughput workloads over them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use leasehold::Client;
use redis::aio::ConnectionManager;

use super::base::{EXPIRATION, EXPIRATION_MS};
use super::redis::{KeyNames, Raw};

/// One uncontended critical section's worth of lock traffic: acquire + release.
#[derive(Clone)]
pub enum Contender {
    /// `Client::try_lock` + `Lock::unlock` on Redis, default settings (holder label on:
    /// host:pid, recorded with a time in the key's state).
    Leasehold(Client),
    /// The same with `ClientBuilder::holder_label("")`: no label, no time recorded.
    LeaseholdNoLabel(Client),
    /// The same on `Client::from_connection` with a `ConnectionManager` built without
    /// redis-rs' default 500 ms response timeout (one timer per call fewer).
    LeaseholdNoResponseTimeout(Client),
    /// `SET NX PX` + an owner-checked `DEL` script by `EVALSHA`, by hand.
    RawSetNx(Raw),
    /// The minimal fenced lock by hand: `SET NX PX` + `INCR` in one script, check-and-
    /// delete unlock (the yardstick).
    FencedByHand(Raw),
    /// The shipped `acquire.lua` + `release.lua` by `EVALSHA`, by hand, with the keys
    /// and arguments the library sends by default.
    ShippedByHand(Raw),
    /// rslock 0.10 `LockManager::lock` + `unlock` (one server).
    Rslock(Arc<rslock::LockManager>),
    /// `Client::try_lock` + `Lock::unlock` on `memory://`.
    Memory(Client),
}

impl Contender {
    pub fn id(&self) -> &'static str {
        match self {
            Contender::Leasehold(_) => "leasehold",
            Contender::LeaseholdNoLabel(_) => "leasehold_no_label",
            Contender::LeaseholdNoResponseTimeout(_) => "leasehold_no_response_timeout",
            Contender::RawSetNx(_) => "raw_set_nx_px",
            Contender::FencedByHand(_) => "fenced_by_hand",
            Contender::ShippedByHand(_) => "shipped_scripts_by_hand",
            Contender::Rslock(_) => "rslock",
            Contender::Memory(_) => "leasehold_memory",
        }
    }

    /// All of them on the server at `url`.
    pub async fn all(url: &str) -> Vec<Contender> {
        let raw = Raw::connect(url).await;
        let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
        let no_response_timeout =
            ConnectionManager::new_with_config(redis::Client::open(url).expect("url"), config)
                .await
                .expect("connect");
        vec![
            Contender::Leasehold(Client::open(url).await.expect("leasehold client")),
            Contender::LeaseholdNoLabel(
                Client::builder()
                    .holder_label("")
                    .open(url)
                    .await
                    .expect("leasehold client without a label"),
            ),
            Contender::LeaseholdNoResponseTimeout(Client::from_connection(no_response_timeout)),
            Contender::RawSetNx(raw.clone()),
            Contender::FencedByHand(Raw::connect(url).await),
            Contender::ShippedByHand(Raw::connect(url).await),
            Contender::Rslock(Arc::new(rslock::LockManager::new(vec![url.to_owned()]))),
            Contender::Memory(Client::memory()),
        ]
    }

    /// Acquire `keys.key` for `val` (uncontended: must succeed), then release it.
    pub async fn lock_unlock(&self, keys: &KeyNames, val: &str) {
        assert!(
            self.try_cycle(keys, val).await,
            "try_lock of a free key: NotObtained"
        );
    }

    /// [`lock_unlock`](Contender::lock_unlock), but a leasehold `try_lock` of the free
    /// key that returns `NotObtained` is counted (false), not a panic: with many tasks
    /// on one client it happens (a grant is not believed when a release of another pair
    /// in the same group of the client's release marks was sent meanwhile, three times
    /// in a row), and the throughput section reports how often.
    pub async fn try_cycle(&self, keys: &KeyNames, val: &str) -> bool {
        let key = keys.key.as_str();
        match self {
            Contender::Leasehold(c)
            | Contender::LeaseholdNoLabel(c)
            | Contender::LeaseholdNoResponseTimeout(c)
            | Contender::Memory(c) => {
                let lock = match c.try_lock(key, val, EXPIRATION).await {
                    Ok(lock) => lock,
                    Err(e) if e.is_not_obtained() => return false,
                    Err(e) => panic!("try_lock: {e}"),
                };
                lock.unlock().await.expect("unlock");
            }
            Contender::RawSetNx(raw) => {
                assert!(raw.set_nx_px(key, val, EXPIRATION_MS).await, "SET NX PX");
                assert!(raw.release(key, val).await, "release");
            }
            Contender::FencedByHand(raw) => {
                assert!(
                    raw.minimal_fenced_acquire(keys, val, EXPIRATION_MS).await > 0,
                    "acquire"
                );
                assert!(raw.release(key, val).await, "release");
            }
            Contender::ShippedByHand(raw) => {
                assert!(
                    raw.shipped_acquire(keys, val, EXPIRATION_MS).await > 0,
                    "acquire"
                );
                assert!(raw.shipped_release(keys, val).await, "release");
            }
            Contender::Rslock(manager) => {
                let lock = manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
        true
    }
}

/// Run exactly `ops` lock+unlock cycles spread over `tasks` concurrent tasks, each on
/// its own key; returns the wall time. Meant for a multi-thread runtime. A cycle whose
/// `try_lock` of the free key returned `NotObtained` counts as a cycle, and is reported
/// on stderr.
pub async fn throughput_run(contender: &Contender, tasks: usize, ops: u64) -> Duration {
    let tasks_u64 = tasks as u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks_u64)
        .map(|t| {
            let contender = contender.clone();
            let mine = ops / tasks_u64 + u64::from(t < ops % tasks_u64);
            tokio::spawn(async move {
                let keys = KeyNames::of(&format!("tp:{}:{t}", contender.id()));
                let val = format!("v{t}");
                let mut refused = 0u64;
                for _ in 0..mine {
                    refused += u64::from(!contender.try_cycle(&keys, &val).await);
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for h in handles {
        refused += h.await.expect("throughput task");
    }
    let took = started.elapsed();
    if refused > 0 {
        eprintln!(
            "{}: {refused} of {ops} try_lock calls on a free key returned NotObtained",
            contender.id()
        );
    }
    took
}

/// Run lock+unlock cycles on `tasks` tasks (distinct keys) for `window`; returns the
/// cycles completed within the window, the elapsed time, all cycles completed
/// (including the ones in flight when the window closed), and of those, the cycles
/// whose `try_lock` of the free key returned `NotObtained` (not counted as completed).
pub async fn throughput_window(
    contender: &Contender,
    tasks: usize,
    window: Duration,
) -> (u64, Duration, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (contender, stop, done) = (contender.clone(), stop.clone(), done.clone());
            let refused = refused.clone();
            tokio::spawn(async move {
                let keys = KeyNames::of(&format!("tpw:{}:{t}", contender.id()));
                let val = format!("v{t}");
                while !stop.load(Ordering::Relaxed) {
                    if contender.try_cycle(&keys, &val).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for h in handles {
        h.await.expect("throughput task");
    }
    (
        counted,
        elapsed,
        done.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}
