//! 3. Throughput, distinct keys, one client.

use std::fmt::Write as _;
use std::time::Duration;

use leasehold::Client;

use crate::common;
use crate::common::base::median;
use crate::common::contender::Contender;
use crate::common::redis::Raw;
use crate::designs::ServerCosts;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us};

pub const THROUGHPUT_TASKS: [usize; 4] = [1, 16, 64, 256];

pub struct ThroughputResult {
    tasks: usize,
    /// ops/s per round for leasehold, raw SET NX PX, fenced by hand.
    per_variant: [Vec<f64>; 3],
    /// Client process CPU µs per cycle, per round (same order).
    client_cpu: [Vec<f64>; 3],
    /// redis-server CPU µs per cycle, per round (same order).
    server_cpu: [Vec<f64>; 3],
    /// Scripts (`EVALSHA` calls) redis-server ran per completed cycle, per round (same
    /// order).
    commands: [Vec<f64>; 3],
    /// Cycles whose `try_lock` of the free key returned `NotObtained`, and all cycles
    /// tried, over every round (same order; only leasehold's can be refused).
    refused: [u64; 3],
    tried: [u64; 3],
}

pub fn throughput(settings: &Settings, url: &str) -> Vec<ThroughputResult> {
    let rt = common::base::multi_thread_runtime();
    rt.block_on(async {
        let variants = [
            Contender::Leasehold(Client::open(url).await.expect("client")),
            Contender::RawSetNx(Raw::connect(url).await),
            Contender::FencedByHand(Raw::connect(url).await),
        ];
        let mut probe = common::redis::connection(url).await;
        let pid = common::probes::server_pid(&mut probe).await;
        let mut results: Vec<ThroughputResult> = THROUGHPUT_TASKS
            .iter()
            .map(|&tasks| ThroughputResult {
                tasks,
                per_variant: Default::default(),
                client_cpu: Default::default(),
                server_cpu: Default::default(),
                commands: Default::default(),
                refused: [0; 3],
                tried: [0; 3],
            })
            .collect();
        for result in &mut results {
            for round in 0..settings.throughput_rounds {
                for v in rotated(&[0usize, 1, 2], round) {
                    // Short warm-up so that every window starts with the tasks running.
                    common::contender::throughput_window(
                        &variants[v],
                        result.tasks,
                        Duration::from_millis(30),
                    )
                    .await;
                    let (calls0, _) = common::probes::command_stats(&mut probe, "evalsha").await;
                    let (cpu0, srv0) = (
                        common::probes::cpu_time("self"),
                        common::probes::cpu_time(&pid),
                    );
                    let (ops, elapsed, all, refused) = common::contender::throughput_window(
                        &variants[v],
                        result.tasks,
                        settings.throughput_window,
                    )
                    .await;
                    let (cpu1, srv1) = (
                        common::probes::cpu_time("self"),
                        common::probes::cpu_time(&pid),
                    );
                    let (calls1, _) = common::probes::command_stats(&mut probe, "evalsha").await;
                    let calls = calls1 - calls0;
                    result.per_variant[v].push(ops as f64 / elapsed.as_secs_f64());
                    result.refused[v] += refused;
                    result.tried[v] += all + refused;
                    let all = all.max(1) as f64;
                    result.client_cpu[v].push(us(cpu1 - cpu0) / all);
                    result.server_cpu[v].push(us(srv1 - srv0) / all);
                    result.commands[v].push(calls as f64 / all);
                }
            }
        }
        results
    })
}

/// Section 3 of the report; returns, at 64 tasks, leasehold's throughput ÷ the minimal
/// fenced script's, ÷ raw's, and its server CPU per cycle ÷ the fenced script's.
pub fn write(
    w: &mut String,
    settings: &Settings,
    tp: &[ThroughputResult],
    costs: &ServerCosts,
) -> (f64, f64, f64) {
    let _ = writeln!(w, "\n## 3. Throughput, distinct keys, one client\n");
    let _ = writeln!(
        w,
        "Lock + unlock cycles per second with N tasks, each on its own key, through one client \
         (one multiplexed connection); {} rounds × {} ms windows per variant, two-worker \
         multi-thread runtime. \"fenced\" is the minimal fenced script by hand (`SET NX PX` + \
         `INCR`, check-and-delete unlock), \"raw\" bare `SET NX PX` + check-and-delete; leasehold \
         with its defaults (holder label on). CPU per cycle: this process and redis-server, from \
         `/proc/PID/task/*/schedstat` over the window; the server's ratio is the median of the \
         per-round ratios.\n",
        settings.throughput_rounds,
        settings.throughput_window.as_millis()
    );
    let _ = writeln!(
        w,
        "| tasks | leasehold cycles/s | fenced script by hand cycles/s | raw SET NX PX cycles/s | leasehold ÷ fenced | leasehold ÷ raw | client CPU µs / cycle (leasehold / fenced / raw) | redis-server CPU µs / cycle (leasehold / fenced / raw) | redis-server CPU leasehold ÷ fenced | scripts (`EVALSHA`) / cycle (leasehold / fenced / raw) | leasehold `try_lock` of a free key refused (`NotObtained`) |"
    );
    let _ = writeln!(
        w,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    // At 64 tasks: throughput ÷ fenced, ÷ raw, and server CPU per cycle ÷ fenced.
    let mut tp64 = (f64::NAN, f64::NAN, f64::NAN);
    for r in tp {
        let vs_fenced = paired_ratio(&r.per_variant[0], &r.per_variant[2]);
        let vs_raw = paired_ratio(&r.per_variant[0], &r.per_variant[1]);
        let server_vs_fenced = paired_ratio(&r.server_cpu[0], &r.server_cpu[2]);
        if r.tasks == 64 {
            tp64 = (vs_fenced, vs_raw, server_vs_fenced);
        }
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.3} | {:.2} / {:.2} / {:.2} | {} of {} ({:.2} %) |",
            r.tasks,
            median(&r.per_variant[0]),
            median(&r.per_variant[2]),
            median(&r.per_variant[1]),
            vs_fenced,
            vs_raw,
            median(&r.client_cpu[0]),
            median(&r.client_cpu[2]),
            median(&r.client_cpu[1]),
            median(&r.server_cpu[0]),
            median(&r.server_cpu[2]),
            median(&r.server_cpu[1]),
            server_vs_fenced,
            median(&r.commands[0]),
            median(&r.commands[2]),
            median(&r.commands[1]),
            r.refused[0],
            r.tried[0],
            100.0 * r.refused[0] as f64 / r.tried[0].max(1) as f64,
        );
    }
    let refused: u64 = tp.iter().map(|r| r.refused[0]).sum();
    let most_commands = tp
        .iter()
        .map(|r| median(&r.commands[0]))
        .fold(0.0f64, f64::max);
    // A leasehold cycle is 2 scripts (acquire, release); more are attempts tried again.
    if refused > 0 || most_commands > 2.1 {
        let _ = writeln!(
            w,
            "\n**Defect seen: leasehold ran up to {most_commands:.2} scripts per cycle (2 \
             expected), and `try_lock` of a free key returned `NotObtained` {refused} times** \
             (last column; every task has its own key and value, so the key was free). A grant \
             is not believed when a release of a pair in the same group of the client's 64 \
             release marks (`src/lease.rs`, `RELEASE_MARKS`) was sent after the attempt; the call \
             tries again at once, and after three such refusals in a row returns `NotObtained` \
             (and aborts its attempts). With many tasks releasing through one client, unrelated \
             pairs share groups, so grants are disbelieved often: each costs another acquire \
             (and an abort when the call gives up): the scripts per cycle above 2 count \
             them. leasehold's figures at those task counts include that cost. Cycles so \
             refused are not counted as completed; their server time and scripts are charged \
             to the completed ones."
        );
    }

    let busiest = tp.last().expect("throughput rows");
    let _ = writeln!(
        w,
        "\nAt high concurrency redis-server (one thread) saturates its core and the client \
         takes the other, so the server's time per cycle bounds the rate. Per cycle at {} \
         tasks the server spends {:.1} µs on leasehold's, {:.1} µs on the minimal fenced \
         script's and {:.1} µs on a raw one (network I/O and parsing included). The scripts \
         alone, by `INFO commandstats` (section 2): leasehold {:.2} + {:.2} µs (acquire + \
         release with its `PUBLISH`), the minimal fenced script {:.2} + {:.2} µs, raw \
         {:.2} + {:.2} µs.",
        busiest.tasks,
        median(&busiest.server_cpu[0]),
        median(&busiest.server_cpu[2]),
        median(&busiest.server_cpu[1]),
        costs.script,
        costs.release_shipped,
        costs.minimal,
        costs.release_plain,
        costs.set,
        costs.release_plain,
    );
    tp64
}
