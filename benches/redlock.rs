//! Redlock over 3 and over 5 local redis-servers, side by side with leasehold on one
//! server and with rslock 0.10's multi-server `LockManager` on the same servers.
//!
//! * `redlock_lock_unlock/*`: one uncontended `lock` + `unlock` (current-thread runtime:
//!   round trips plus per-call overhead). Redlock fans each out to every node in
//!   parallel, so it should cost about one round trip more than one server's, not N.
//! * `redlock_contention/8_tasks/*`: eight tasks contend for one key (hold 1 ms, pause
//!   1 ms), Redlock under `NonFixedInterval(2 ms)` against rslock with its own random
//!   retry delay of mean 2 ms. One iteration = one acquisition.

// Each bench uses a part of each module it takes.
#[allow(dead_code)]
mod common {
    pub mod base;
    pub mod contention;
    pub mod redis;
    pub mod redlock;
}
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::contention::{ContentionSide, Strategy, Until, contention_run};
use common::redlock::{QuorumContender, redlock, rslock_contender};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use support::RedisServer;

const HOLD: Duration = Duration::from_millis(1);
const THINK: Duration = Duration::from_millis(1);
const CONTENDERS: usize = 8;

fn servers() -> (Vec<RedisServer>, Vec<String>) {
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let urls = servers.iter().map(RedisServer::url).collect();
    (servers, urls)
}

fn lock_unlock(c: &mut Criterion) {
    let (_servers, urls) = servers();
    let rt = common::base::current_thread_runtime();
    let contenders = rt.block_on(QuorumContender::all(&urls));
    let mut group = c.benchmark_group("redlock_lock_unlock");
    for contender in &contenders {
        let key = format!("rl:{}", contender.id());
        group.bench_function(contender.id(), |b| {
            b.to_async(&rt).iter(|| contender.lock_unlock(&key, "v"))
        });
    }
    group.finish();
}

fn contention(c: &mut Criterion) {
    let (_servers, urls) = servers();
    let rt = common::base::multi_thread_runtime();
    let sides: Vec<(String, ContentionSide)> = rt.block_on(async {
        let mut sides = Vec::new();
        for n in [3, 5] {
            let redlock = redlock(&urls[..n]).await;
            sides.push((format!("redlock_{n}"), ContentionSide::Redlock(redlock)));
            let rslock = rslock_contender(&urls[..n]);
            sides.push((format!("rslock_{n}"), ContentionSide::Rslock(rslock)));
        }
        sides
    });
    let run = AtomicU64::new(0);
    let mut group = c.benchmark_group(format!("redlock_contention/{CONTENDERS}_tasks"));
    group.sampling_mode(SamplingMode::Flat);
    for (id, side) in &sides {
        group.bench_with_input(BenchmarkId::from_parameter(id), side, |b, side| {
            b.to_async(&rt).iter_custom(|acquisitions| {
                let key = format!("rlc:{}", run.fetch_add(1, Ordering::Relaxed));
                async move {
                    let until = Until::Acquisitions(acquisitions);
                    contention_run(
                        side,
                        &key,
                        CONTENDERS,
                        Strategy::NonFixed,
                        HOLD,
                        THINK,
                        until,
                    )
                    .await
                    .elapsed
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = lock_unlock, contention
}
criterion_main!(benches);
