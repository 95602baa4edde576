//! 9. etcd: against etcd's lock service; hand-off of the fair wait.

#![cfg_attr(not(feature = "etcd"), allow(unused_imports))]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use leasehold::Client;

use crate::common;
use crate::common::base::{median, percentile};
use crate::common::contention::{ContentionSide, Strategy, Until};
use crate::contention::{HOLD, THINK};
use crate::machine::command_output;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us, verdict};
use crate::support::{self, RedisServer};

#[cfg(not(feature = "etcd"))]
pub fn section(_: &Settings) -> String {
    "\n## 9. etcd\n\nNot measured: run with `--features etcd`.\n".to_owned()
}

#[cfg(feature = "etcd")]
pub fn section(settings: &Settings) -> String {
    use common::etcd::{LockService, leasehold_lock_unlock};

    let etcd = support::EtcdServer::start();
    let version = command_output("etcd", &["--version"]);
    let version = version.lines().next().unwrap_or("etcd").to_owned();

    // Lock + unlock, three variants interleaved.
    const VARIANTS: [&str; 4] = [
        "leasehold (lease per lock)",
        "lock service, lease per lock (grant + Lock + Unlock + revoke)",
        "lock service, plain `lock(name, None)` + `unlock` (the server grants a 60 s lease per call)",
        "lock service, one session lease for all locks (Lock + Unlock)",
    ];
    let ops = (settings.latency_ops / 10).max(20);
    let rounds = settings.latency_rounds;
    let rt = common::base::current_thread_runtime();
    let means: Vec<Vec<f64>> = rt.block_on(async {
        let client = Client::open(&etcd.url()).await.expect("leasehold on etcd");
        let service = LockService::connect(&etcd.endpoint()).await;
        let mut means = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            for v in rotated(&[0usize, 1, 2, 3], round) {
                let key = format!("etcd-lat:{v}");
                let one = || async {
                    match v {
                        0 => leasehold_lock_unlock(&client, &key).await,
                        1 => service.lock_unlock_own_lease(&key).await,
                        2 => service.lock_unlock_plain(&key).await,
                        _ => service.lock_unlock_session(&key).await,
                    }
                };
                for _ in 0..ops / 10 {
                    one().await;
                }
                let started = Instant::now();
                for _ in 0..ops {
                    one().await;
                }
                means[v].push(us(started.elapsed()) / ops as f64);
            }
        }
        means
    });
    drop(rt);

    let handoff = handoff(settings, &etcd.url());

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "\n## 9. etcd\n");
    let _ = writeln!(
        w,
        "A local single-member `{version}` (data in memory, heartbeat 10 ms), same run. \
         Lock + unlock: {rounds} rounds × {ops} cycles per variant, interleaved; medians over \
         rounds, ratios are medians of per-round ratios.\n"
    );
    let _ = writeln!(
        w,
        "| lock + unlock | µs | ÷ leasehold |\n| --- | ---: | ---: |"
    );
    for (v, name) in VARIANTS.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {name} | {:.1} | {:.3} |",
            median(&means[v]),
            paired_ratio(&means[v], &means[0])
        );
    }
    let goal = paired_ratio(&means[0], &means[1]);
    let plain = paired_ratio(&means[0], &means[2]);
    let _ = writeln!(
        w,
        "\nGoal: leasehold ≤ 1.0 × the lock service with a lease per lock: {goal:.3} × ({}); \
         against the plain call, {plain:.3} × ({}). Both grant a lease per lock as leasehold \
         does (3 Raft writes a cycle: grant, create, delete; the spent lease is revoked or \
         expires afterwards). The session variant shares one lease among all locks — no \
         expiration of a lock's own, nothing to grant or revoke, 2 Raft writes a cycle: \
         leasehold is {:.3} × it.\n",
        verdict(goal, 1.0, true),
        verdict(plain, 1.0, true),
        paired_ratio(&means[0], &means[3])
    );
    let _ = writeln!(
        w,
        "Hand-off under contention: tasks on one key, each holding it {} ms and pausing {} ms, \
         `FixedInterval(2 ms)`; release started → next holder's `lock` returned.\n",
        HOLD.as_millis(),
        THINK.as_millis()
    );
    let _ = writeln!(
        w,
        "| tasks | store | hand-off p50 | p99 | acquisitions/s | min/max per task |\n| ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for (tasks, sides) in &handoff {
        for (name, (rate, handoffs, per_task)) in SIDES.iter().zip(sides) {
            let min = per_task.iter().min().copied().unwrap_or(0);
            let max = per_task.iter().max().copied().unwrap_or(0);
            let _ = writeln!(
                w,
                "| {tasks} | {name} | {:.2} ms | {:.2} ms | {rate:.0} | {:.2} |",
                percentile(handoffs, 50.0).as_secs_f64() * 1e3,
                percentile(handoffs, 99.0).as_secs_f64() * 1e3,
                if max == 0 {
                    0.0
                } else {
                    min as f64 / max as f64
                }
            );
        }
    }
    md
}

/// The contending sides of the hand-off comparison, in order.
#[cfg(feature = "etcd")]
const SIDES: [&str; 3] = [
    "leasehold on etcd (fair wait)",
    "leasehold on Redis, polling (`notify(false)`)",
    "leasehold on Redis, pub/sub wake",
];

/// Per side: acquisitions/s, sorted hand-offs, acquisitions per task.
#[cfg(feature = "etcd")]
type Side = (f64, Vec<Duration>, Vec<u64>);

/// Hand-off under contention, per task count: the fair wait of the etcd at `etcd_url`
/// against polling Redis (and pub/sub).
#[cfg(feature = "etcd")]
fn handoff(settings: &Settings, etcd_url: &str) -> Vec<(usize, Vec<Side>)> {
    let redis = RedisServer::start();
    let rt = common::base::multi_thread_runtime();
    let handoff = rt.block_on(async {
        let sides = [
            ContentionSide::Leasehold(Client::open(etcd_url).await.expect("etcd")),
            ContentionSide::Leasehold(
                Client::builder()
                    .notify(false)
                    .open(&redis.url())
                    .await
                    .expect("redis"),
            ),
            ContentionSide::Leasehold(Client::open(&redis.url()).await.expect("redis")),
        ];
        let mut out = Vec::new();
        let mut run = 0;
        for tasks in [2usize, 8] {
            let mut per_side = vec![(0.0, Vec::new(), vec![0u64; tasks]); SIDES.len()];
            let mut rates = vec![Vec::new(); SIDES.len()];
            for round in 0..settings.contention_rounds {
                for s in rotated(&[0usize, 1, 2], round) {
                    run += 1;
                    let stats = common::contention::contention_run(
                        &sides[s],
                        &format!("etcd-ct:{run}"),
                        tasks,
                        Strategy::Fixed,
                        HOLD,
                        THINK,
                        Until::Elapsed(settings.contention_window),
                    )
                    .await;
                    rates[s].push(stats.acquisitions as f64 / stats.elapsed.as_secs_f64());
                    per_side[s].1.extend(stats.handoffs);
                    for (total, n) in per_side[s].2.iter_mut().zip(stats.per_task) {
                        *total += n;
                    }
                }
            }
            for (side, rate) in per_side.iter_mut().zip(&rates) {
                side.0 = median(rate);
                side.1.sort();
            }
            out.push((tasks, per_side));
        }
        out
    });
    drop(rt);
    handoff
}
