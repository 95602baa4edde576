//! `auto_refresh` at scale: 1,000 and 10,000 locks renewing every second, all ticking
//! at once, through one client — against one hand-written tokio task per key running
//! `refresh.lua` on one `ConnectionManager`.
//!
//! The measured "time" is the **client process CPU time per renewal** (all threads,
//! from `/proc/self/task/*/schedstat`), not wall time: each sample watches the running
//! renewals for one second (one renewal of every lock) and scales the CPU it cost per
//! renewal (counted by the server) to the iteration count criterion asked for (in
//! practice 1: criterion plans with the wall time of the warm-up). Memory
//! per renewing lock is in the report, `benches/report/renewal.rs` (counting allocator).

// Each bench uses a part of each module it takes.
#[allow(dead_code)]
mod common {
    pub mod base;
    pub mod probes;
    pub mod redis;
    pub mod renewal;
}
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::probes::server_pid;
use common::redis::{Raw, connection};
use common::renewal::{
    RENEW_INTERVAL, Renewers, acquire_many, by_hand_renewers, renewal_window, start_auto_refresh,
};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use leasehold::Client;
use support::RedisServer;

fn renewal(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::base::multi_thread_runtime();
    let url = server.url();
    let (client, raw, mut probe) = rt.block_on(async {
        (
            Client::open(&url).await.expect("client"),
            Raw::connect(&url).await,
            connection(&url).await,
        )
    });
    let pid = rt.block_on(server_pid(&mut probe));
    let mut group = c.benchmark_group("renewal_cpu_per_renewal");
    group.sampling_mode(SamplingMode::Flat);
    for n in [1_000usize, 10_000] {
        for variant in ["leasehold", "by_hand"] {
            let renewers = rt.block_on(async {
                let prefix = format!("rn:{variant}:{n}");
                let renewers = if variant == "leasehold" {
                    let locks = acquire_many(&client, &prefix, n).await;
                    let renewals = start_auto_refresh(&locks);
                    Renewers::Leasehold { locks, renewals }
                } else {
                    Renewers::ByHand {
                        tasks: by_hand_renewers(&raw, &prefix, n).await,
                    }
                };
                // Let the first wave go out before measuring.
                tokio::time::sleep(RENEW_INTERVAL + Duration::from_millis(200)).await;
                renewers
            });
            group.bench_with_input(BenchmarkId::new(variant, n), &n, |b, _| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (mut probe, pid) = (probe.clone(), pid.clone());
                    async move {
                        let (renewals, cpu, _server_cpu, _wall) =
                            renewal_window(&mut probe, &pid, RENEW_INTERVAL).await;
                        cpu.mul_f64(iters as f64 / renewals.max(1) as f64)
                    }
                })
            });
            rt.block_on(async {
                match renewers {
                    Renewers::Leasehold { locks, renewals } => {
                        drop(renewals);
                        futures::future::join_all(locks.into_iter().map(|l| l.unlock())).await;
                    }
                    Renewers::ByHand { tasks } => tasks.iter().for_each(|t| t.abort()),
                }
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut probe)
                    .await
                    .expect("FLUSHALL");
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Every sample is one renewal interval of wall time whatever criterion asks for
    // (see the module docs), so 10 samples take ~11 s: say so to criterion.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(12))
        .sample_size(10);
    targets = renewal
}
criterion_main!(benches);
