//! Renewal at scale: many keys held and renewed by leasehold's `auto_refresh` or by
//! hand-written tasks, and what a window of renewals costs.

use std::time::{Duration, Instant};

use leasehold::Client;
use redis::aio::ConnectionManager;

use super::base::TIMEOUT;
use super::probes::{command_stats, cpu_time};
use super::redis::Raw;

/// Renewal at scale: `n` keys held and renewed every `interval`, by leasehold's
/// `auto_refresh` or by one hand-written tokio task per key.
pub enum Renewers {
    Leasehold {
        locks: Vec<leasehold::Lock>,
        renewals: Vec<leasehold::AutoRefresh>,
    },
    ByHand {
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

/// Acquire `n` keys `prefix:i` through `client` (256 at a time).
pub async fn acquire_many(client: &Client, prefix: &str, n: usize) -> Vec<leasehold::Lock> {
    let mut locks = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let batch = futures::future::join_all(chunk.iter().map(|i| {
            let client = client.clone();
            let key = format!("{prefix}:{i}");
            async move {
                client
                    .lock(
                        &key,
                        "renewer",
                        RENEW_EXPIRATION,
                        TIMEOUT,
                        leasehold::NoRetry,
                    )
                    .await
                    .expect("acquire for renewal")
            }
        }))
        .await;
        locks.extend(batch);
    }
    locks
}

/// Expiration and interval of the renewal benchmark.
pub const RENEW_EXPIRATION: Duration = Duration::from_secs(5);
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// Start leasehold renewal of every lock (all at once: their ticks coincide).
pub fn start_auto_refresh(locks: &[leasehold::Lock]) -> Vec<leasehold::AutoRefresh> {
    locks
        .iter()
        .map(|l| {
            l.auto_refresh(RENEW_INTERVAL, RENEW_EXPIRATION, TIMEOUT, 3)
                .expect("auto_refresh")
        })
        .collect()
}

/// Set `n` keys `prefix:i` with `SET PX` and renew each from its own task by hand
/// (`tokio::time::interval` + `refresh.lua`), the minimal correct renewer.
pub async fn by_hand_renewers(
    raw: &Raw,
    prefix: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ttl_ms = RENEW_EXPIRATION.as_millis() as u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        futures::future::join_all(chunk.iter().map(|i| {
            let key = format!("{prefix}:{i}");
            async move { assert!(raw.set_nx_px(&key, "renewer", ttl_ms).await) }
        }))
        .await;
    }
    (0..n)
        .map(|i| {
            let raw = raw.clone();
            let key = format!("{prefix}:{i}");
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + RENEW_INTERVAL;
                let mut ticks = tokio::time::interval_at(start, RENEW_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if !raw.refresh(&key, "renewer", ttl_ms).await {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// What renewals already running cost over `window`: (renewals, client CPU, server
/// CPU, wall). Renewals are counted by the server (`EVALSHA` calls in `INFO
/// commandstats`; the probes themselves are `INFO` calls, so the count is exact).
pub async fn renewal_window(
    conn: &mut ConnectionManager,
    server_pid: &str,
    window: Duration,
) -> (u64, Duration, Duration, Duration) {
    let (calls0, _) = command_stats(conn, "evalsha").await;
    let (cpu0, srv0, t0) = (cpu_time("self"), cpu_time(server_pid), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, srv1, wall) = (cpu_time("self"), cpu_time(server_pid), t0.elapsed());
    let (calls1, _) = command_stats(conn, "evalsha").await;
    (calls1 - calls0, cpu1 - cpu0, srv1 - srv0, wall)
}
