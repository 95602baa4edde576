//! 6. Blocking facade overhead.

use std::fmt::Write as _;
use std::time::Instant;

use leasehold::Client;

use crate::common;
use crate::common::base::median;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us};

pub struct BlockingResult {
    store: &'static str,
    /// Mean µs per try_lock+unlock through the async API, per round.
    async_means: Vec<f64>,
    /// The same through `leasehold::blocking`, from this plain thread, per round.
    blocking_means: Vec<f64>,
}

/// `try_lock` + `unlock` through the async client (driven by `block_on` here) and through
/// the blocking facade (its own runtime thread; this thread parks), interleaved by round.
pub fn blocking_overhead(settings: &Settings, url: &str) -> Vec<BlockingResult> {
    let mut results = Vec::new();
    for (store, url) in [
        ("redis", url.to_owned()),
        ("memory", "memory://bench-blocking".to_owned()),
    ] {
        let rt = common::base::current_thread_runtime();
        let async_client = rt.block_on(Client::open(&url)).expect("async client");
        let blocking_client = leasehold::blocking::Client::open(&url).expect("blocking client");
        let ops = settings.latency_ops;
        let mut r = BlockingResult {
            store,
            async_means: Vec::new(),
            blocking_means: Vec::new(),
        };
        for round in 0..settings.latency_rounds {
            for blocking in rotated(&[false, true], round) {
                let started = Instant::now();
                if blocking {
                    for _ in 0..ops {
                        let lock = blocking_client
                            .try_lock("blk:blocking", "v", common::base::EXPIRATION)
                            .expect("lock");
                        lock.unlock().expect("unlock");
                    }
                    r.blocking_means.push(us(started.elapsed()) / ops as f64);
                } else {
                    rt.block_on(async {
                        for _ in 0..ops {
                            let lock = async_client
                                .try_lock("blk:async", "v", common::base::EXPIRATION)
                                .await
                                .expect("lock");
                            lock.unlock().await.expect("unlock");
                        }
                    });
                    r.async_means.push(us(started.elapsed()) / ops as f64);
                }
            }
        }
        results.push(r);
    }
    results
}

/// Section 6 of the report.
pub fn write(w: &mut String, settings: &Settings, bl: &[BlockingResult]) {
    let _ = writeln!(w, "\n## 6. Blocking facade overhead\n");
    let _ = writeln!(
        w,
        "`try_lock` + `unlock` through the async client (a current-thread runtime polled by \
         `block_on` on the measuring thread) against `leasehold::blocking` (its own runtime \
         thread; the measuring thread parks between polls), interleaved by round; medians of \
         {} rounds × {} cycles.\n",
        settings.latency_rounds, settings.latency_ops
    );
    let _ = writeln!(
        w,
        "| store | async µs/cycle | blocking µs/cycle | blocking ÷ async | added per call |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for r in bl {
        let (a, b) = (median(&r.async_means), median(&r.blocking_means));
        let _ = writeln!(
            w,
            "| {} | {a:.2} | {b:.2} | {:.3} × | {:.2} µs |",
            r.store,
            paired_ratio(&r.blocking_means, &r.async_means),
            (b - a) / 2.0
        );
    }
    let _ = writeln!(
        w,
        "\nA blocking call polls the async call on the measuring thread with the client's \
         runtime entered; the connection lives on the runtime thread, so each Redis round \
         trip costs two cross-thread wake-ups (request to the connection's task, reply back), \
         where the async client here polls the connection on its own thread. A memory-store \
         call completes in its first poll: no hand-off at all."
    );
}
