//! 1. Uncontended lock + unlock latency.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::alloc::allocations;
use crate::common;
use crate::common::base::{median, percentile};
use crate::common::contender::Contender;
use crate::common::redis::KeyNames;
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us};

pub struct LatencyResult {
    id: &'static str,
    /// Mean µs per lock+unlock, per round.
    means: Vec<f64>,
    /// Every single op, µs.
    ops: Vec<f64>,
    allocs_per_op: f64,
}

pub fn latency(settings: &Settings, url: &str) -> Vec<LatencyResult> {
    let rt = common::base::current_thread_runtime();
    rt.block_on(async {
        let contenders = Contender::all(url).await;
        let mut results: Vec<LatencyResult> = contenders
            .iter()
            .map(|c| LatencyResult {
                id: c.id(),
                means: Vec::new(),
                ops: Vec::new(),
                allocs_per_op: 0.0,
            })
            .collect();
        let indices: Vec<usize> = (0..contenders.len()).collect();
        let mut allocs = vec![(0u64, 0u64); contenders.len()];
        for round in 0..settings.latency_rounds {
            for i in rotated(&indices, round) {
                let contender = &contenders[i];
                let keys = KeyNames::of(&format!("lat:{}", contender.id()));
                for _ in 0..settings.latency_ops / 20 {
                    contender.lock_unlock(&keys, "v").await;
                }
                let a0 = allocations();
                let started = Instant::now();
                for _ in 0..settings.latency_ops {
                    let t = Instant::now();
                    contender.lock_unlock(&keys, "v").await;
                    results[i].ops.push(us(t.elapsed()));
                }
                let total = started.elapsed();
                allocs[i].0 += allocations() - a0;
                allocs[i].1 += settings.latency_ops as u64;
                results[i]
                    .means
                    .push(us(total) / settings.latency_ops as f64);
            }
        }
        for (r, (a, n)) in results.iter_mut().zip(allocs) {
            r.allocs_per_op = a as f64 / n as f64;
        }
        results
    })
}

/// The figures the goals take from section 1 (ratios of per-round means).
#[derive(Clone, Copy)]
pub struct Figures {
    pub lat_vs_fenced: f64,
    pub lat_vs_raw: f64,
    pub fenced_vs_raw: f64,
    pub lat_vs_rslock: f64,
    pub label_on_vs_off: f64,
    pub shipped_vs_fenced: f64,
    pub lh_vs_shipped: f64,
    pub no_rt_vs_fenced: f64,
    /// Median µs of a raw `SET NX PX` + check-and-delete cycle.
    pub raw_pair: f64,
}

/// Section 1 of the report.
pub fn write(w: &mut String, settings: &Settings, lat: &[LatencyResult]) -> Figures {
    let find = |id: &str| lat.iter().find(|r| r.id == id).expect("contender");
    let (lh, raw, fenced, rslock) = (
        find("leasehold"),
        find("raw_set_nx_px"),
        find("fenced_by_hand"),
        find("rslock"),
    );
    let (no_label, shipped) = (find("leasehold_no_label"), find("shipped_scripts_by_hand"));
    let _ = writeln!(w, "## 1. Uncontended lock + unlock latency\n");
    let _ = writeln!(
        w,
        "One `lock` + `unlock` of a free key (2 round trips for every Redis variant), {} rounds × {} \
         cycles each, current-thread tokio runtime. The yardsticks, by hand with redis-rs on one \
         `ConnectionManager` (scripts by `EVALSHA`): the **minimal fenced script** (`SET NX PX` + \
         `INCR` of a counter in one script; check-and-delete unlock) and raw `SET NX PX` + \
         check-and-delete; rslock on the same server. leasehold runs with its default holder \
         label (host:pid: the acquire also records a time and the label in the key's state) and \
         with `holder_label(\"\")` (none recorded). \"Shipped scripts by hand\" sends the \
         library's own `acquire.lua` + `release.lua` with the keys and arguments the library \
         sends by default (label on, release announced by `PUBLISH`): the ratio of leasehold to \
         it is the client's own cost, its ratio to the minimal fenced script the protocol's.\n",
        settings.latency_rounds, settings.latency_ops
    );
    let _ = writeln!(
        w,
        "| variant | median µs / cycle | p50 µs | p99 µs | allocations / cycle | ratio to minimal fenced script by hand | ratio to raw SET NX PX + check-and-delete | ratio to rslock |"
    );
    let _ = writeln!(
        w,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let describe = |id: &str| match id {
        "leasehold" => "**leasehold** (`try_lock` + `unlock`, Redis; holder label on, default)",
        "leasehold_no_label" => "leasehold, holder label off (`holder_label(\"\")`)",
        "leasehold_no_response_timeout" => {
            "leasehold on `from_connection` without redis-rs' 500 ms response timeout"
        }
        "raw_set_nx_px" => "raw redis-rs: `SET NX PX` + check-and-delete script",
        "fenced_by_hand" => {
            "minimal fenced script by hand: `SET NX PX` + `INCR` script + check-and-delete script"
        }
        "shipped_scripts_by_hand" => {
            "shipped scripts by hand: `acquire.lua` + `release.lua` (v2, the library's arguments)"
        }
        "rslock" => "rslock 0.10 (`lock` + `unlock`, one server)",
        "leasehold_memory" => "leasehold on `memory://`",
        _ => "?",
    };
    for r in lat {
        let mut ops = r.ops.clone();
        ops.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let ops: Vec<Duration> = ops
            .iter()
            .map(|&x| Duration::from_secs_f64(x / 1e6))
            .collect();
        let fmt_ratio =
            |base: &LatencyResult| format!("{:.3}", paired_ratio(&r.means, &base.means));
        let _ = writeln!(
            w,
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            describe(r.id),
            median(&r.means),
            us(percentile(&ops, 50.0)),
            us(percentile(&ops, 99.0)),
            r.allocs_per_op,
            fmt_ratio(fenced),
            fmt_ratio(raw),
            fmt_ratio(rslock),
        );
    }
    let lat_vs_fenced = paired_ratio(&lh.means, &fenced.means);
    let lat_vs_raw = paired_ratio(&lh.means, &raw.means);
    let lat_vs_rslock = paired_ratio(&lh.means, &rslock.means);
    let label_on_vs_off = paired_ratio(&lh.means, &no_label.means);
    let shipped_vs_fenced = paired_ratio(&shipped.means, &fenced.means);
    let lh_vs_shipped = paired_ratio(&lh.means, &shipped.means);
    let _ = writeln!(
        w,
        "\nleasehold is {lat_vs_fenced:.3} × the minimal fenced script by hand: the shipped \
         scripts by hand are {shipped_vs_fenced:.3} × it (the protocol's share), and leasehold \
         {lh_vs_shipped:.3} × the shipped scripts by hand (the client's share). **Holder label:** \
         on (default) ÷ off = {label_on_vs_off:.3} × per lock + unlock. Off, the acquire \
         sends an empty argument and the script skips the `TIME` and stores no time or label \
         (one string comparison); section 2 gives the label's server time per acquire."
    );
    let no_rt = find("leasehold_no_response_timeout");
    Figures {
        lat_vs_fenced,
        lat_vs_raw,
        fenced_vs_raw: paired_ratio(&fenced.means, &raw.means),
        lat_vs_rslock,
        label_on_vs_off,
        shipped_vs_fenced,
        lh_vs_shipped,
        no_rt_vs_fenced: paired_ratio(&no_rt.means, &fenced.means),
        raw_pair: median(&raw.means),
    }
}
