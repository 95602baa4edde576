//! PostgreSQL (feature `postgres`), on a spawned server (`fsync=off`), one run:
//!
//! * `postgres_lock_unlock/*`: leasehold's `try_lock` + `unlock` (with `pg_notify` in the
//!   release, the default, and `notify(false)`; unnamed statements, the default, and
//!   `prepare=true`), the same lease row by hand with tokio-postgres (an `INSERT … ON
//!   CONFLICT … WHERE expired RETURNING token` and an owner-checked `UPDATE` on leasehold's
//!   table; unnamed, and prepared once), and `pg_try_advisory_lock` +
//!   `pg_advisory_unlock` on one session (no expiry, no token).
//! * After the criterion groups, the contended hand-off (2 and 8 tasks on one key, each
//!   holding it 1 ms and pausing 1 ms, `FixedInterval(2 ms)`): p50/p99 of release started
//!   → next holder's `lock` returned, woken by `LISTEN`/`NOTIFY` against polling, printed
//!   to stderr (criterion has no percentiles of an inner event).
//!
//! ```text
//! cargo bench --features postgres --bench postgres
//! ```

// Each bench uses a part of each module it takes.
#[allow(dead_code)]
mod common {
    pub mod base;
    pub mod contention;
    pub mod postgres;
    pub mod redis;
    pub mod redlock;
    // What `postgres.rs` takes from `super::`, and the helpers this bench calls.
    pub use base::{
        EXPIRATION, EXPIRATION_MS, current_thread_runtime, multi_thread_runtime, percentile,
    };
    pub use contention::{ContentionSide, Strategy, Until, contention_run};
}
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::postgres::{Contenders, IDS, handoff};
use criterion::{Criterion, criterion_group, criterion_main};
use support::PostgresServer;

fn postgres(c: &mut Criterion) {
    let server = PostgresServer::start();
    let rt = common::current_thread_runtime();
    let contenders = rt.block_on(Contenders::open(&server.url()));
    let mut group = c.benchmark_group("postgres_lock_unlock");
    for (v, id) in IDS.iter().enumerate() {
        let key = format!("pg-lu:{id}");
        group.bench_function(*id, |b| {
            b.to_async(&rt).iter(|| contenders.lock_unlock(v, &key))
        });
    }
    group.finish();
    drop(rt);

    let rt = common::multi_thread_runtime();
    let (hold, think) = (Duration::from_millis(1), Duration::from_millis(1));
    let window = Duration::from_secs(3);
    eprintln!("\npostgres hand-off (hold {hold:?}, think {think:?}, {window:?} per side):");
    eprintln!("tasks | side | p50 | p99 | acquisitions/s");
    for tasks in [2usize, 8] {
        for polling in [false, true] {
            let key = format!("pg-ct:{tasks}:{polling}");
            let (handoffs, rate) = rt.block_on(handoff(
                &server.url(),
                polling,
                tasks,
                &key,
                hold,
                think,
                window,
            ));
            eprintln!(
                "{tasks} | {} | {:.2} ms | {:.2} ms | {rate:.0}",
                if polling { "polling" } else { "LISTEN/NOTIFY" },
                common::percentile(&handoffs, 50.0).as_secs_f64() * 1e3,
                common::percentile(&handoffs, 99.0).as_secs_f64() * 1e3,
            );
        }
    }
}

criterion_group!(benches, postgres);
criterion_main!(benches);
