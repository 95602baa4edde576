//! 4. Contention on one key.

use std::fmt::Write as _;
use std::time::Duration;

use leasehold::Client;

use crate::common;
use crate::common::base::{median, percentile};
use crate::common::contention::{ContentionSide, Strategy, Until};
use crate::common::redis::Raw;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, verdict};

pub const CONTENTION_TASKS: [usize; 3] = [2, 8, 32];
pub const HOLD: Duration = Duration::from_millis(1);
pub const THINK: Duration = Duration::from_millis(1);

/// The sides of a contention run, in this order: leasehold woken on release, leasehold
/// polling (`notify(false)`), and `SET NX PX` by hand.
pub const SIDES: usize = 3;

pub struct ContentionResult {
    tasks: usize,
    strategy: Strategy,
    /// acquisitions/s per round, per side.
    rate: [Vec<f64>; SIDES],
    handoffs: [Vec<Duration>; SIDES],
    per_task: [Vec<u64>; SIDES],
    /// Commands the server ran per second and per waiting task, per round, per side.
    load: [Vec<f64>; SIDES],
}

pub struct Contention {
    results: Vec<ContentionResult>,
    /// PING round trips measured between the windows of the same run.
    ping: Vec<Duration>,
}

pub fn contention(settings: &Settings, url: &str) -> Contention {
    let rt = common::base::multi_thread_runtime();
    rt.block_on(async {
        let sides = [
            ContentionSide::Leasehold(Client::open(url).await.expect("client")),
            ContentionSide::LeaseholdPolling(
                Client::builder()
                    .notify(false)
                    .open(url)
                    .await
                    .expect("client"),
            ),
            ContentionSide::Raw(Raw::connect(url).await),
        ];
        let mut probe = common::redis::connection(url).await;
        let mut ping = Vec::new();
        let mut results = Vec::new();
        let mut run = 0;
        for tasks in CONTENTION_TASKS {
            for strategy in Strategy::ALL {
                let mut r = ContentionResult {
                    tasks,
                    strategy,
                    rate: Default::default(),
                    handoffs: Default::default(),
                    per_task: std::array::from_fn(|_| vec![0; tasks]),
                    load: Default::default(),
                };
                for round in 0..settings.contention_rounds {
                    ping.push(common::probes::ping_rtt(&mut probe, 50).await);
                    for s in rotated(&[0usize, 1, 2], round) {
                        run += 1;
                        let key = format!("contention:{run}");
                        let calls = common::probes::total_calls(&mut probe).await;
                        let stats = common::contention::contention_run(
                            &sides[s],
                            &key,
                            tasks,
                            strategy,
                            HOLD,
                            THINK,
                            Until::Elapsed(settings.contention_window),
                        )
                        .await;
                        // The INFO call itself is one command.
                        let calls = common::probes::total_calls(&mut probe).await - calls - 1;
                        let secs = stats.elapsed.as_secs_f64();
                        r.rate[s].push(stats.acquisitions as f64 / secs);
                        r.load[s].push(calls as f64 / secs / (tasks - 1).max(1) as f64);
                        r.handoffs[s].extend(stats.handoffs);
                        for (total, n) in r.per_task[s].iter_mut().zip(stats.per_task) {
                            *total += n;
                        }
                    }
                }
                for h in &mut r.handoffs {
                    h.sort();
                }
                results.push(r);
            }
        }
        ping.sort();
        Contention { results, ping }
    })
}

/// Section 4 of the report.
pub fn write(w: &mut String, settings: &Settings, ct: &Contention) {
    let _ = writeln!(w, "\n## 4. Contention on one key\n");
    let rtt = percentile(&ct.ping, 50.0);
    let _ = writeln!(
        w,
        "N tasks loop on one key: acquire (retrying under the strategy, {} ms steps), hold {} ms, \
         release, pause {} ms. Three sides, interleaved: leasehold with **hand-off** (a waiter is \
         woken when the key is released), leasehold **polling** (`ClientBuilder::notify(false)`: \
         it sleeps out the strategy's delays), and `SET NX PX` + release by hand sleeping the same \
         delays. {} rounds × {} ms per variant. Hand-off = from the holder starting its release to \
         the next holder's `lock` returning (pooled over rounds). Fairness = fewest and most \
         acquisitions of one task (pooled). Server load = commands the server ran per second per \
         waiting task (`INFO commandstats`). A `PING` round trip in the same run: **{:.3} ms** \
         (median over {} samples of 50).\n",
        Strategy::INTERVAL.as_millis(),
        HOLD.as_millis(),
        THINK.as_millis(),
        settings.contention_rounds,
        settings.contention_window.as_millis(),
        rtt.as_secs_f64() * 1e3,
        ct.ping.len(),
    );
    let _ = writeln!(
        w,
        "| tasks | strategy | acq/s: hand-off / polling / raw | hand-off ÷ polling | hand-off p50 / p99 ms | polling p50 / p99 ms | raw p50 / p99 ms | p50 in PING round trips | min / max per task: hand-off / polling / raw | server commands /s per waiter: hand-off / polling |"
    );
    let _ = writeln!(
        w,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (mut worst_p50_rtts, mut worst_p99, mut worst_rate, mut fair_ok) =
        (0.0f64, Duration::ZERO, f64::INFINITY, true);
    for r in &ct.results {
        let fair = |v: &[u64]| {
            (
                v.iter().min().copied().unwrap_or(0),
                v.iter().max().copied().unwrap_or(0),
            )
        };
        let ratio = |(lo, hi): (u64, u64)| lo as f64 / hi.max(1) as f64;
        let p = |s: usize, q: f64| percentile(&r.handoffs[s], q);
        let p50_rtts = p(0, 50.0).as_secs_f64() / rtt.as_secs_f64();
        worst_p50_rtts = worst_p50_rtts.max(p50_rtts);
        worst_p99 = worst_p99.max(p(0, 99.0));
        let rate_ratio = paired_ratio(&r.rate[0], &r.rate[1]);
        worst_rate = worst_rate.min(rate_ratio);
        // Fairness no worse than polling, within one acquisition's worth of noise.
        fair_ok &= ratio(fair(&r.per_task[0])) + 0.05 >= ratio(fair(&r.per_task[1]));
        let f = [0, 1, 2].map(|s| fair(&r.per_task[s]));
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} / {:.0} / {:.0} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {}–{} / {}–{} / {}–{} | {:.0} / {:.0} |",
            r.tasks,
            r.strategy.name(),
            median(&r.rate[0]),
            median(&r.rate[1]),
            median(&r.rate[2]),
            rate_ratio,
            ms(p(0, 50.0)),
            ms(p(0, 99.0)),
            ms(p(1, 50.0)),
            ms(p(1, 99.0)),
            ms(p(2, 50.0)),
            ms(p(2, 99.0)),
            p50_rtts,
            f[0].0,
            f[0].1,
            f[1].0,
            f[1].1,
            f[2].0,
            f[2].1,
            median(&r.load[0]),
            median(&r.load[1]),
        );
    }
    let _ = writeln!(
        w,
        "\nGoals (issue \"Hand-off on release\"): hand-off p50 ≤ 3 PING round trips — worst \
         {:.1} ({}); p99 ≤ 1 ms — worst {:.2} ms ({}); acquisitions/s at least polling's — worst \
         ratio {:.3} ({}); fairness no worse than polling ({}).",
        worst_p50_rtts,
        verdict(worst_p50_rtts, 3.0, true),
        ms(worst_p99),
        verdict(ms(worst_p99), 1.0, true),
        worst_rate,
        verdict(worst_rate, 1.0, false),
        if fair_ok { "met" } else { "**missed**" },
    );
}
