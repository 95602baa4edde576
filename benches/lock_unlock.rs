//! Uncontended lock + unlock latency: the cost every critical section pays.
//!
//! * `lock_unlock/*`: leasehold on Redis (holder label on, the default, and off), the
//!   same two round trips by hand with redis-rs (raw `SET NX PX` + check-and-delete; the
//!   minimal fenced script, `SET NX PX` + `INCR`, + check-and-delete; the shipped
//!   `acquire.lua` + `release.lua` with the library's keys and arguments), rslock 0.10,
//!   and leasehold on `memory://`.
//!
//! (The server-side cost of each acquire, from `INFO commandstats`, is in
//! `benches/report/designs.rs`, section 2: it is about this crate's internals, not a
//! choice users make, so it stays out of the criterion benches.)
//! * `blocking/*`: `try_lock` + `unlock` through `leasehold::blocking` against the async
//!   client, on Redis and on `memory://`.
//! * `etcd_lock_unlock/*` (feature `etcd`): leasehold on a local single-member etcd
//!   against etcd's own lock service (`Lock`/`Unlock` through etcd-client), with a lease
//!   per lock and on one shared session lease.
//!
//! A current-thread runtime drives everything: the figure is round trips plus per-call
//! overhead, without cross-thread wake-ups.

// Each bench uses a part of each module it takes.
#[allow(dead_code)]
mod common {
    pub mod base;
    pub mod contender;
    #[cfg(feature = "etcd")]
    pub mod etcd;
    pub mod redis;
}
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::base::EXPIRATION;
use common::contender::Contender;
use common::redis::KeyNames;
use criterion::{Criterion, criterion_group, criterion_main};
use support::RedisServer;

fn lock_unlock(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::base::current_thread_runtime();
    let contenders = rt.block_on(Contender::all(&server.url()));
    let mut group = c.benchmark_group("lock_unlock");
    for contender in &contenders {
        let keys = KeyNames::of(&format!("lu:{}", contender.id()));
        group.bench_function(contender.id(), |b| {
            b.to_async(&rt).iter(|| contender.lock_unlock(&keys, "v"))
        });
    }
    group.finish();
}

/// The blocking facade against the async API, same store, same calls.
fn blocking(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = common::base::current_thread_runtime();
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

/// leasehold on etcd against etcd's lock service, same server, same run.
#[cfg(feature = "etcd")]
fn etcd(c: &mut Criterion) {
    use common::etcd::{LockService, leasehold_lock_unlock};
    let server = support::EtcdServer::start();
    let rt = common::base::current_thread_runtime();
    let client = rt
        .block_on(leasehold::Client::open(&server.url()))
        .expect("leasehold on etcd");
    let service = rt.block_on(LockService::connect(&server.endpoint()));
    let mut group = c.benchmark_group("etcd_lock_unlock");
    group.bench_function("leasehold", |b| {
        b.to_async(&rt)
            .iter(|| leasehold_lock_unlock(&client, "lu:leasehold"))
    });
    group.bench_function("lock_service_lease_per_lock", |b| {
        b.to_async(&rt)
            .iter(|| service.lock_unlock_own_lease("lu:service"))
    });
    group.bench_function("lock_service_plain", |b| {
        b.to_async(&rt)
            .iter(|| service.lock_unlock_plain("lu:plain"))
    });
    group.bench_function("lock_service_session_lease", |b| {
        b.to_async(&rt)
            .iter(|| service.lock_unlock_session("lu:session"))
    });
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
    targets = lock_unlock, blocking, etcd
}
criterion_main!(benches);
