//! Uncontended lock + unlock latency: the cost every critical section pays.
//!
//! * `lock_unlock/*`: leasehold on Redis, the same two round trips by hand with
//!   redis-rs (`SET NX PX` + `release.lua`; `acquire.lua` + `release.lua`), rslock 0.10,
//!   and leasehold on `memory://`.
//!
//! (The server-side designs that were weighed for the fenced acquire are compared in
//! `examples/bench_report.rs`, section 2: they are about this crate's internals, not a
//! choice users make, so they stay out of `cargo bench`.)
//! * `blocking/*`: `try_lock` + `unlock` through `leasehold::blocking` against the async
//!   client, on Redis and on `memory://`.
//!
//! A current-thread runtime drives everything: the figure is round trips plus per-call
//! overhead, without cross-thread wake-ups.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{Contender, EXPIRATION, fence_key};
use criterion::{Criterion, criterion_group, criterion_main};
use support::RedisServer;

fn lock_unlock(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::current_thread_runtime();
    let contenders = rt.block_on(Contender::all(&server.url()));
    let mut group = c.benchmark_group("lock_unlock");
    for contender in &contenders {
        let key = format!("lu:{}", contender.id());
        let fence = fence_key(&key);
        group.bench_function(contender.id(), |b| {
            b.to_async(&rt)
                .iter(|| contender.lock_unlock(&key, &fence, "v"))
        });
    }
    group.finish();
}

/// The blocking facade against the async API, same store, same calls.
fn blocking(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::current_thread_runtime();
    let mut group = c.benchmark_group("blocking");
    for (store, url) in [
        ("redis", server.url()),
        ("memory", "memory://bench".to_owned()),
    ] {
        let async_client = rt.block_on(leasehold::Client::open(&url)).unwrap();
        group.bench_function(format!("{store}_async"), |b| {
            b.to_async(&rt).iter(|| async {
                let lock = async_client.try_lock("blk", "v", EXPIRATION).await.unwrap();
                lock.unlock().await.unwrap();
            })
        });
        let blocking_client = leasehold::blocking::Client::open(&url).unwrap();
        group.bench_function(format!("{store}_blocking"), |b| {
            b.iter(|| {
                let lock = blocking_client.try_lock("blk", "v", EXPIRATION).unwrap();
                lock.unlock().unwrap();
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
    targets = lock_unlock, blocking
}
criterion_main!(benches);
