//! 10. PostgreSQL: against the same lease row by hand and advisory locks; hand-off.

#![cfg_attr(not(feature = "postgres"), allow(unused_imports))]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::base::{median, percentile};
use crate::contention::{HOLD, THINK};
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us, verdict};
use crate::support;

#[cfg(not(feature = "postgres"))]
pub fn section(_: &Settings) -> String {
    "\n## 10. PostgreSQL\n\nNot measured: run with `--features postgres`.\n".to_owned()
}

#[cfg(feature = "postgres")]
pub fn section(settings: &Settings) -> String {
    use common::postgres::{Contenders, VARIANTS, handoff};

    let server = support::PostgresServer::start();
    let version = server.sql("SHOW server_version")[0][0]
        .clone()
        .unwrap_or_default();
    let ops = (settings.latency_ops / 4).max(50);
    let rounds = settings.latency_rounds;
    let rt = common::base::current_thread_runtime();
    let means: Vec<Vec<f64>> = rt.block_on(async {
        let contenders = Contenders::open(&server.url()).await;
        let mut means = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            for v in rotated(&[0usize, 1, 2, 3, 4, 5], round) {
                let key = format!("pg-lat:{v}");
                for _ in 0..ops / 10 {
                    contenders.lock_unlock(v, &key).await;
                }
                let started = Instant::now();
                for _ in 0..ops {
                    contenders.lock_unlock(v, &key).await;
                }
                means[v].push(us(started.elapsed()) / ops as f64);
            }
        }
        means
    });
    drop(rt);

    let rt = common::base::multi_thread_runtime();
    // Per task count: (side name, sorted hand-offs, median acquisitions/s).
    let mut rows = Vec::new();
    for tasks in [2usize, 8] {
        let mut sides: [(Vec<Duration>, Vec<f64>); 2] = Default::default();
        for round in 0..settings.contention_rounds {
            for s in rotated(&[0usize, 1], round) {
                let key = format!("pg-ct:{tasks}:{round}:{s}");
                let (h, rate) = rt.block_on(handoff(
                    &server.url(),
                    s == 1,
                    tasks,
                    &key,
                    HOLD,
                    THINK,
                    settings.contention_window,
                ));
                sides[s].0.extend(h);
                sides[s].1.push(rate);
            }
        }
        for (s, (mut h, rates)) in sides.into_iter().enumerate() {
            h.sort();
            rows.push((tasks, s, h, median(&rates)));
        }
    }
    drop(rt);

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "\n## 10. PostgreSQL\n");
    let _ = writeln!(
        w,
        "A spawned PostgreSQL {version} on loopback (`fsync=off`, no replica), same run. \
         Lock + unlock: {rounds} rounds × {ops} cycles per variant, interleaved, \
         current-thread runtime; medians over rounds, ratios are medians of per-round \
         ratios. Every variant is two round trips; the advisory lock holds one session and \
         has no expiry and no token.\n"
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
    let by_hand = paired_ratio(&means[0], &means[2]);
    let prepared = paired_ratio(&means[3], &means[4]);
    let _ = writeln!(
        w,
        "\nGoal: leasehold ≤ 1.05 × the same lease row by hand. Unnamed statements on both \
         sides (leasehold's default): {by_hand:.3} × ({}); without `pg_notify` in its \
         release, {:.3} ×. Prepared on both sides (`prepare=true`): {prepared:.3} × ({}); \
         leasehold prepared ÷ unnamed: {:.3} ×. Against advisory locks: {:.3} × (unnamed), \
         {:.3} × (prepared).\n",
        verdict(by_hand, 1.05, true),
        paired_ratio(&means[1], &means[2]),
        verdict(prepared, 1.05, true),
        paired_ratio(&means[3], &means[0]),
        paired_ratio(&means[0], &means[5]),
        paired_ratio(&means[3], &means[5]),
    );
    let _ = writeln!(
        w,
        "Hand-off under contention: tasks on one key, each holding it {} ms and pausing {} ms, \
         `FixedInterval(2 ms)`, {} rounds × {} ms per side; release started → next holder's \
         `lock` returned.\n",
        HOLD.as_millis(),
        THINK.as_millis(),
        settings.contention_rounds,
        settings.contention_window.as_millis()
    );
    let _ = writeln!(
        w,
        "| tasks | waiters | hand-off p50 | p99 | acquisitions/s |\n| ---: | --- | ---: | ---: | ---: |"
    );
    for (tasks, s, h, rate) in &rows {
        let _ = writeln!(
            w,
            "| {tasks} | {} | {:.2} ms | {:.2} ms | {rate:.0} |",
            if *s == 0 {
                "woken by `LISTEN`/`NOTIFY`"
            } else {
                "polling (`notify(false)`)"
            },
            percentile(h, 50.0).as_secs_f64() * 1e3,
            percentile(h, 99.0).as_secs_f64() * 1e3,
        );
    }
    md
}
