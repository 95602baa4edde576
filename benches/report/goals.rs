//! The Goals table and the paragraphs that read across sections.

use std::fmt::Write as _;

use crate::common::renewal::RENEW_INTERVAL;
use crate::designs::ServerCosts;
use crate::latency::Figures;
use crate::redlock::{self, RedlockResult};
use crate::stats::verdict;

/// What the goals read from the other sections.
pub struct Inputs<'a> {
    pub latency: &'a Figures,
    pub costs: &'a ServerCosts,
    /// Section 3 at 64 tasks: ÷ fenced, ÷ raw, server CPU ÷ fenced.
    pub tp64: (f64, f64, f64),
    /// Section 5: met, heap bytes per lock, share of a core.
    pub renew_goal: (bool, f64, f64),
    /// Section 7: cluster ÷ one server (NaN when not measured).
    pub cluster_ratio: f64,
    pub redlock: &'a RedlockResult,
    /// The machine's 1-minute load was above 1 at the start.
    pub loaded: bool,
}

/// The Goals section of the report.
pub fn write(w: &mut String, inputs: &Inputs<'_>) {
    let Figures {
        lat_vs_fenced,
        lat_vs_raw,
        fenced_vs_raw,
        lat_vs_rslock,
        label_on_vs_off,
        shipped_vs_fenced,
        lh_vs_shipped,
        no_rt_vs_fenced,
        raw_pair,
    } = *inputs.latency;
    let c = inputs.costs;
    let (tp64, renew_goal, cluster_ratio, rl) = (
        inputs.tp64,
        inputs.renew_goal,
        inputs.cluster_ratio,
        inputs.redlock,
    );
    let script_extra = c.script - c.set;
    let script_vs_minimal = c.script - c.minimal;
    let label_server = c.script - c.script_no_label;
    let loaded = inputs.loaded;
    let _ = writeln!(w, "\n## Goals\n");
    let _ = writeln!(w, "| goal | measured | verdict |\n| --- | ---: | --- |");
    let _ = writeln!(
        w,
        "| lock+unlock ≤ 1.05 × the minimal fenced script by hand | {lat_vs_fenced:.3} × (the shipped scripts by hand: {shipped_vs_fenced:.3} ×) | {} |",
        verdict(lat_vs_fenced, 1.05, true)
    );
    let _ = writeln!(
        w,
        "| lock+unlock ≤ 1.10 × raw SET NX PX + check-and-delete | {lat_vs_raw:.3} × (the minimal fenced script by hand: {:.3} ×) | {} |",
        fenced_vs_raw,
        verdict(lat_vs_raw, 1.10, true)
    );
    let _ = writeln!(
        w,
        "| lock+unlock ≤ 1.0 × rslock 0.10 on one server | {lat_vs_rslock:.3} × | {} |",
        verdict(lat_vs_rslock, 1.0, true)
    );
    let _ = writeln!(
        w,
        "| throughput at 64 tasks ≥ 0.95 × the minimal fenced script by hand | {:.3} × (÷ raw: {:.3} ×) | {} |",
        tp64.0,
        tp64.1,
        verdict(tp64.0, 0.95, false)
    );
    let scripts_ratio = (c.script + c.release_shipped) / (c.minimal + c.release_plain);
    let _ = writeln!(
        w,
        "| redis-server CPU per cycle ≤ 1.15 × the minimal fenced script's (64 tasks) | {:.3} × (the scripts alone, by `INFO commandstats`: {scripts_ratio:.3} ×) | {} |",
        tp64.2,
        verdict(tp64.2, 1.15, true)
    );
    let _ = writeln!(
        w,
        "| holder label: off costs nothing; on, its cost shown | on ÷ off {label_on_vs_off:.3} × per lock + unlock; {label_server:+.2} µs server time per acquire | measured |"
    );
    let _ = writeln!(
        w,
        "| lock+unlock through a 3-master cluster ≤ 1.10 × one server | {cluster_ratio:.3} × | {} |",
        if cluster_ratio.is_nan() {
            "not measured".to_owned()
        } else {
            verdict(cluster_ratio, 1.10, true)
        }
    );
    let _ = writeln!(
        w,
        "| 10,000 renewing locks: < 2 KiB each, small fraction of a core | {:.0} B, {:.1} % of a core at {} s interval | {} |",
        renew_goal.1,
        100.0 * renew_goal.2,
        RENEW_INTERVAL.as_secs(),
        if renew_goal.0 { "met" } else { "**missed**" }
    );
    redlock::goals(w, rl);
    let protocol_server = script_vs_minimal + c.release_shipped - c.release_plain;
    let _ = writeln!(
        w,
        "\n**Where the time goes.** The shipped acquire costs redis-server {script_extra:.2} µs \
         more per fresh acquisition than a bare `SET NX PX` and {script_vs_minimal:+.2} µs more \
         than the minimal fenced script (section 2: this client's aborted record, the owner \
         check that makes a same-value re-lock a re-arm, the key's state read and written with \
         its creator, and with the label on, `TIME` and the label), and its release {:+.2} µs \
         more than a check-and-delete (the `PUBLISH` that wakes waiters). Over the minimal \
         fenced script's cycle that is {:.2} µs of server time, {:.1} % of a raw lock+unlock \
         cycle ({raw_pair:.1} µs). The shipped scripts by hand are \
         {shipped_vs_fenced:.3} × the minimal fenced script: that share is the price of the \
         protocol (cancel safety, re-arm, tokens that rise across expiry) and of the hand-off, \
         and no client can remove it. leasehold's own client-side cost is its ratio to the \
         shipped scripts by hand, {lh_vs_shipped:.3} ×: per-call validation, the per-attempt \
         timeout (one tokio timer), the attempt's bookkeeping, the `Lock` allocation. Where the \
         server shares its cores with the client, as here, server time is on the critical path \
         of every cycle, and at 64 tasks it bounds the rate.",
        c.release_shipped - c.release_plain,
        protocol_server,
        100.0 * protocol_server / raw_pair
    );
    let _ = writeln!(
        w,
        "\n**redis-rs' response timeout.** `Client::open` builds its `ConnectionManager` \
         without redis-rs' default 500 ms response timeout: every call is bounded by the \
         caller's own `timeout` alone (one timer, and no hidden cap at 500 ms). \
         `leasehold_no_response_timeout` (a `from_connection` client on a manager built the \
         same way) is the cross-check: {no_rt_vs_fenced:.3} × the minimal fenced script by hand."
    );
    if loaded {
        let _ = writeln!(
            w,
            "\n**Note:** the machine was not idle (load average above). Absolute figures are \
             inflated and noisier; the interleaved ratios are the figures to read."
        );
    }
}
