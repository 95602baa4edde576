//! 5. Renewal at scale.

use std::fmt::Write as _;
use std::time::Duration;

use leasehold::Client;

use crate::alloc::{allocations, live_allocations, live_bytes};
use crate::common;
use crate::common::base::median;
use crate::common::redis::Raw;
use crate::common::renewal::{RENEW_EXPIRATION, RENEW_INTERVAL, Renewers};
use crate::settings::Settings;
use crate::stats::{rotated, us};

pub const RENEWAL_SIZES: [usize; 2] = [1_000, 10_000];

#[derive(Default)]
pub struct RenewalResult {
    /// Client CPU µs per renewal, per window.
    client_us: Vec<f64>,
    /// redis-server CPU µs per renewal, per window.
    server_us: Vec<f64>,
    /// Client CPU share of one core, per window.
    core_share: Vec<f64>,
    /// Live heap bytes per held lock (before renewal starts), per round.
    heap_lock: Vec<f64>,
    /// Live heap bytes per renewing lock (lock + renewal), per round.
    heap_total: Vec<f64>,
    /// Live heap blocks per renewing lock, per round.
    blocks_total: Vec<f64>,
    /// Heap allocations per renewal, per window.
    allocs_per_renewal: Vec<f64>,
    renewals_per_s: Vec<f64>,
}

pub fn renewal(settings: &Settings, url: &str) -> Vec<(usize, [RenewalResult; 2])> {
    let rt = common::base::multi_thread_runtime();
    rt.block_on(async {
        let client = Client::open(url).await.expect("client");
        let raw = Raw::connect(url).await;
        let mut probe = common::redis::connection(url).await;
        let pid = common::probes::server_pid(&mut probe).await;
        let mut out = Vec::new();
        for n in RENEWAL_SIZES {
            let mut results: [RenewalResult; 2] = Default::default();
            for round in 0..settings.renewal_rounds {
                for v in rotated(&[0usize, 1], round) {
                    let prefix = format!("renew:{n}:{round}:{v}");
                    let (heap0, blocks0) = (live_bytes(), live_allocations());
                    let renewers = if v == 0 {
                        let locks = common::renewal::acquire_many(&client, &prefix, n).await;
                        results[v]
                            .heap_lock
                            .push((live_bytes() as f64 - heap0 as f64) / n as f64);
                        let renewals = common::renewal::start_auto_refresh(&locks);
                        Renewers::Leasehold { locks, renewals }
                    } else {
                        let tasks = common::renewal::by_hand_renewers(&raw, &prefix, n).await;
                        results[v]
                            .heap_lock
                            .push((live_bytes() as f64 - heap0 as f64) / n as f64);
                        Renewers::ByHand { tasks }
                    };
                    // The first renewal wave goes out one interval after the start.
                    tokio::time::sleep(RENEW_INTERVAL + Duration::from_millis(300)).await;
                    results[v]
                        .heap_total
                        .push((live_bytes() as f64 - heap0 as f64) / n as f64);
                    results[v]
                        .blocks_total
                        .push((live_allocations() as f64 - blocks0 as f64) / n as f64);
                    for _ in 0..settings.renewal_windows {
                        let a0 = allocations();
                        let (renewals, cpu, server_cpu, wall) =
                            common::renewal::renewal_window(&mut probe, &pid, RENEW_INTERVAL).await;
                        let renewals = renewals.max(1) as f64;
                        results[v]
                            .allocs_per_renewal
                            .push((allocations() - a0) as f64 / renewals);
                        results[v].client_us.push(us(cpu) / renewals);
                        results[v].server_us.push(us(server_cpu) / renewals);
                        results[v]
                            .core_share
                            .push(cpu.as_secs_f64() / wall.as_secs_f64());
                        results[v]
                            .renewals_per_s
                            .push(renewals / wall.as_secs_f64());
                    }
                    match renewers {
                        Renewers::Leasehold { locks, renewals } => {
                            drop(renewals);
                            let unlocked =
                                futures::future::join_all(locks.into_iter().map(|l| l.unlock()))
                                    .await;
                            assert!(unlocked.iter().all(|r| r.is_ok()), "every lock still held");
                        }
                        Renewers::ByHand { tasks } => {
                            for t in &tasks {
                                t.abort();
                            }
                            for t in tasks {
                                let _ = t.await;
                            }
                        }
                    }
                    let _: () = redis::cmd("FLUSHALL")
                        .query_async(&mut probe)
                        .await
                        .expect("FLUSHALL");
                }
            }
            out.push((n, results));
        }
        out
    })
}

/// Section 5 of the report; returns the goal's verdict, heap bytes per renewing lock
/// and the share of a core at 10,000 locks.
pub fn write(
    w: &mut String,
    settings: &Settings,
    rn: &[(usize, [RenewalResult; 2])],
) -> (bool, f64, f64) {
    let _ = writeln!(w, "\n## 5. `auto_refresh` at scale\n");
    let _ = writeln!(
        w,
        "N locks renewed every {} s (expiration {} s), all started at once so their renewals \
         coincide, through one client. Baseline: one hand-written tokio task per key \
         (`interval` + `refresh.lua` by EVALSHA on one `ConnectionManager`). CPU from \
         `/proc/*/task/*/schedstat` over {} × {} s windows per round, renewals counted by the \
         server; memory = live heap bytes and blocks per lock from a counting global allocator, measured \
         between renewal waves (the allocator adds its own ~16 B header per block on top). {} round(s).\n",
        RENEW_INTERVAL.as_secs(),
        RENEW_EXPIRATION.as_secs(),
        settings.renewal_windows,
        RENEW_INTERVAL.as_secs(),
        settings.renewal_rounds
    );
    let _ = writeln!(
        w,
        "| locks | variant | renewals/s | client CPU µs / renewal | ratio to by hand | client share of one core | redis-server CPU µs / renewal | heap B / held lock | heap B / renewing lock | ratio to by hand | heap blocks / renewing lock | allocations / renewal |"
    );
    let _ = writeln!(
        w,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut renew_goal = (true, f64::NAN, f64::NAN);
    for (n, results) in rn {
        for (v, r) in results.iter().enumerate() {
            let base = &results[1];
            let cpu_ratio = median(&r.client_us) / median(&base.client_us);
            let heap_ratio = median(&r.heap_total) / median(&base.heap_total);
            if v == 0 && *n == 10_000 {
                let heap = median(&r.heap_total);
                let share = median(&r.core_share);
                renew_goal = (heap < 2048.0 && share < 0.25, heap, share);
            }
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} | {:.2} | {} | {:.1} % | {:.2} | {:.0} | {:.0} | {} | {:.1} | {:.1} |",
                n,
                if v == 0 { "**leasehold**" } else { "by hand" },
                median(&r.renewals_per_s),
                median(&r.client_us),
                if v == 0 {
                    format!("{cpu_ratio:.3}")
                } else {
                    "1".into()
                },
                100.0 * median(&r.core_share),
                median(&r.server_us),
                median(&r.heap_lock),
                median(&r.heap_total),
                if v == 0 {
                    format!("{heap_ratio:.3}")
                } else {
                    "1".into()
                },
                median(&r.blocks_total),
                median(&r.allocs_per_renewal),
            );
        }
    }
    let _ = writeln!(
        w,
        "\n\"heap B / held lock\" for leasehold is the `Lock` alone; for the baseline it is the \
         key set plus its task. One renewal task per lock lives on the shared runtime (no \
         thread, no connection per lock); every renewal goes out on the client's one \
         multiplexed connection."
    );
    renew_goal
}
