//! Throughput of lock + unlock cycles with 1, 16, 64 and 256 concurrent tasks on
//! distinct keys through one client (one multiplexed connection): leasehold against the
//! same round trips by hand (`SET NX PX` + check-and-delete; the minimal fenced script,
//! `SET NX PX` + `INCR`, + check-and-delete).
//!
//! One element = one lock + unlock cycle; a two-worker multi-thread runtime.

// Each bench uses a part of each module it takes.
#[allow(dead_code)]
mod common {
    pub mod base;
    pub mod contender;
    pub mod redis;
}
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::contender::{Contender, throughput_run};
use common::redis::Raw;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use leasehold::Client;
use support::RedisServer;

fn throughput(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::base::multi_thread_runtime();
    let url = server.url();
    let contenders = rt.block_on(async {
        vec![
            Contender::Leasehold(Client::open(&url).await.expect("client")),
            Contender::RawSetNx(Raw::connect(&url).await),
            Contender::FencedByHand(Raw::connect(&url).await),
        ]
    });
    let mut group = c.benchmark_group("throughput");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for tasks in [1usize, 16, 64, 256] {
        for contender in &contenders {
            group.bench_with_input(
                BenchmarkId::new(contender.id(), tasks),
                &tasks,
                |b, &tasks| {
                    b.to_async(&rt)
                        .iter_custom(|ops| throughput_run(contender, tasks, ops))
                },
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = throughput
}
criterion_main!(benches);
