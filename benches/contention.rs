//! Contention: 2, 8 and 32 tasks on one key, each holding it 1 ms and pausing 1 ms
//! between critical sections, under `FixedInterval`, `NonFixedInterval` and
//! `ExponentialBackoff` — leasehold woken on release, leasehold polling (`notify(false)`)
//! and `SET NX PX` + release by hand, the last two sleeping the
//! same strategy's delays.
//!
//! With the `etcd` feature, `contention/etcd_8_tasks`: leasehold on etcd (waiters in
//! line, woken by their predecessor's deletion) against leasehold on Redis polling
//! (`notify(false)`), same strategy.
//!
//! One iteration = one acquisition (time per acquisition = 1 / acquisitions per second).
//! Hand-off latency percentiles and fairness are in the report, `benches/report/contention.rs`.

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
use common::redis::Raw;
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use leasehold::Client;
use support::RedisServer;

const HOLD: Duration = Duration::from_millis(1);
const THINK: Duration = Duration::from_millis(1);

fn contention(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::base::multi_thread_runtime();
    let url = server.url();
    let sides = rt.block_on(async {
        vec![
            ContentionSide::Leasehold(Client::open(&url).await.expect("client")),
            ContentionSide::LeaseholdPolling(
                Client::builder()
                    .notify(false)
                    .open(&url)
                    .await
                    .expect("client"),
            ),
            ContentionSide::Raw(Raw::connect(&url).await),
        ]
    });
    let run = AtomicU64::new(0);
    for tasks in [2usize, 8, 32] {
        let mut group = c.benchmark_group(format!("contention/{tasks}_tasks"));
        group.sampling_mode(SamplingMode::Flat);
        for strategy in Strategy::ALL {
            for side in &sides {
                group.bench_with_input(
                    BenchmarkId::new(side.id(), strategy.id()),
                    &strategy,
                    |b, &strategy| {
                        b.to_async(&rt).iter_custom(|acquisitions| {
                            // A fresh key per run: nothing left over can interfere.
                            let key = format!("ct:{}", run.fetch_add(1, Ordering::Relaxed));
                            async move {
                                let until = Until::Acquisitions(acquisitions);
                                contention_run(side, &key, tasks, strategy, HOLD, THINK, until)
                                    .await
                                    .elapsed
                            }
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

/// The fair wait on etcd against polling Redis, 8 tasks, `FixedInterval(2 ms)`.
#[cfg(feature = "etcd")]
fn etcd(c: &mut Criterion) {
    let redis = RedisServer::start();
    let etcd = support::EtcdServer::start();
    let rt = common::base::multi_thread_runtime();
    let sides = rt.block_on(async {
        vec![
            ContentionSide::Leasehold(Client::open(&etcd.url()).await.expect("etcd client")),
            ContentionSide::Leasehold(
                Client::builder()
                    .notify(false)
                    .open(&redis.url())
                    .await
                    .expect("redis client"),
            ),
        ]
    });
    let run = AtomicU64::new(0);
    let mut group = c.benchmark_group("contention/etcd_8_tasks");
    group.sampling_mode(SamplingMode::Flat);
    for (side, id) in sides.iter().zip(["etcd_fair_wait", "redis_polling"]) {
        group.bench_function(id, |b| {
            b.to_async(&rt).iter_custom(|acquisitions| {
                let key = format!("ct:{}", run.fetch_add(1, Ordering::Relaxed));
                async move {
                    let until = Until::Acquisitions(acquisitions);
                    contention_run(side, &key, 8, Strategy::Fixed, HOLD, THINK, until)
                        .await
                        .elapsed
                }
            })
        });
    }
    group.finish();
}

#[cfg(not(feature = "etcd"))]
fn etcd(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = contention, etcd
}
criterion_main!(benches);
