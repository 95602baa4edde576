//! 2. Server-side designs for the fenced acquire.

use std::fmt::Write as _;
use std::time::Instant;

use crate::common;
use crate::common::base::{EXPIRATION_MS, median};
use crate::common::redis::{AcquireDesign, KeyNames, Raw};
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us};

pub struct DesignResult {
    design: AcquireDesign,
    /// Mean µs per acquire + DEL, per round.
    means: Vec<f64>,
    /// Server µs per fresh acquire (from `INFO commandstats`), per round.
    server_fresh: Vec<f64>,
    /// Server µs per attempt on a key held by another value, per round.
    server_held: Vec<f64>,
}

/// Server µs per release call, per round (filled by `designs`): the check-and-delete
/// script of the by-hand variants, and the shipped `release.lua` as the library sends it
/// (with its `PUBLISH`).
pub struct ReleaseCost {
    plain: Vec<f64>,
    shipped: Vec<f64>,
}

pub fn designs(settings: &Settings, url: &str) -> (Vec<DesignResult>, ReleaseCost) {
    let rt = common::base::current_thread_runtime();
    rt.block_on(async {
        let raw = Raw::connect(url).await;
        let mut probe = common::redis::connection(url).await;
        let mut results: Vec<DesignResult> = AcquireDesign::ALL
            .iter()
            .map(|&design| DesignResult {
                design,
                means: Vec::new(),
                server_fresh: Vec::new(),
                server_held: Vec::new(),
            })
            .collect();
        let indices: Vec<usize> = (0..results.len()).collect();
        // A key held by someone else, for the contended attempts.
        assert!(raw.set_nx_px("held", "other", 3_600_000).await);
        let held = KeyNames::of("held");
        let mut release_cost = ReleaseCost {
            plain: Vec::new(),
            shipped: Vec::new(),
        };
        let rel = KeyNames::of("rel");
        for round in 0..settings.design_rounds {
            // The owner-checked releases of section 1, each after a `SET NX PX` (so the
            // release is the only script in the window).
            for shipped in [false, true] {
                let (c0, u0) = common::probes::command_stats(&mut probe, "evalsha").await;
                for _ in 0..settings.design_ops / 2 {
                    assert!(raw.set_nx_px(&rel.key, "v", EXPIRATION_MS).await);
                    if shipped {
                        assert!(raw.shipped_release(&rel, "v").await);
                    } else {
                        assert!(raw.release(&rel.key, "v").await);
                    }
                }
                let (c1, u1) = common::probes::command_stats(&mut probe, "evalsha").await;
                let per_call = (u1 - u0) as f64 / (c1 - c0).max(1) as f64;
                if shipped {
                    release_cost.shipped.push(per_call);
                } else {
                    release_cost.plain.push(per_call);
                }
            }
            for i in rotated(&indices, round) {
                let design = results[i].design;
                let keys = KeyNames::of(&format!("design:{}", design.id()));
                let del = |key: String| {
                    let mut conn = raw.conn.clone();
                    async move {
                        let n: i64 = redis::cmd("DEL")
                            .arg(key)
                            .query_async(&mut conn)
                            .await
                            .expect("DEL");
                        assert_eq!(n, 1);
                    }
                };
                // Fresh acquisitions, released with a plain DEL so that the design's own
                // command is the only one of its kind in the window.
                let (c0, u0) = common::probes::command_stats(&mut probe, design.command()).await;
                let started = Instant::now();
                for _ in 0..settings.design_ops {
                    let token = raw.acquire_with(design, &keys, "v", EXPIRATION_MS).await;
                    assert!(token > 0, "{design:?}");
                    del(keys.key.clone()).await;
                }
                let total = started.elapsed();
                let (c1, u1) = common::probes::command_stats(&mut probe, design.command()).await;
                results[i]
                    .means
                    .push(us(total) / settings.design_ops as f64);
                results[i]
                    .server_fresh
                    .push((u1 - u0) as f64 / (c1 - c0).max(1) as f64);
                // Attempts on a held key.
                let held_ops = settings.design_ops / 2;
                let (c0, u0) = common::probes::command_stats(&mut probe, design.command()).await;
                for _ in 0..held_ops {
                    let token = raw.acquire_with(design, &held, "v", EXPIRATION_MS).await;
                    assert_eq!(token, 0, "{design:?} on a held key");
                }
                let (c1, u1) = common::probes::command_stats(&mut probe, design.command()).await;
                results[i]
                    .server_held
                    .push((u1 - u0) as f64 / (c1 - c0).max(1) as f64);
            }
        }
        (results, release_cost)
    })
}

/// Which designs give the contract's replies: a fresh acquisition a token t, the same
/// value again t (re-armed), another value 0, the next acquisition after the release a
/// token above t.
pub fn check_design_semantics(url: &str) -> Vec<(AcquireDesign, bool)> {
    let rt = common::base::current_thread_runtime();
    rt.block_on(async {
        let raw = Raw::connect(url).await;
        let mut out = Vec::new();
        for design in [
            AcquireDesign::MinimalFenced,
            AcquireDesign::Script,
            AcquireDesign::ScriptNoLabel,
            AcquireDesign::Function,
            AcquireDesign::Multi,
        ] {
            let keys = KeyNames::of(&format!("sem:{}", design.id()));
            let a = |val: &'static str| {
                let (raw, keys) = (&raw, &keys);
                async move { raw.acquire_with(design, keys, val, 60_000).await }
            };
            let first = a("x").await; // fresh: t
            let again = a("x").await; // same value: keeps t, re-arms
            let other = a("y").await; // held: 0
            assert!(raw.release(&keys.key, "x").await);
            let next = a("y").await; // fresh: above t
            let ok = first > 0 && again == first && other == 0 && next > first;
            out.push((design, ok));
        }
        out
    })
}

/// Redis-server µs per call, medians of section 2, that sections 3 and the goals read.
pub struct ServerCosts {
    /// Per fresh acquire: `SET NX PX`, the minimal fenced script, the shipped script with
    /// the holder label on and off.
    pub set: f64,
    pub minimal: f64,
    pub script: f64,
    pub script_no_label: f64,
    /// Per release: the shipped `release.lua` (with its `PUBLISH`), check-and-delete.
    pub release_shipped: f64,
    pub release_plain: f64,
}

/// Section 2 of the report.
pub fn write(
    w: &mut String,
    settings: &Settings,
    des: &[DesignResult],
    release_cost: &ReleaseCost,
    semantics: &[(AcquireDesign, bool)],
) -> ServerCosts {
    let _ = writeln!(w, "\n## 2. Server-side cost of the fenced acquire\n");
    let _ = writeln!(
        w,
        "Each acquire by hand with redis-rs: one fresh acquisition + a plain `DEL` (so the \
         acquire's own command is alone in `INFO commandstats`; the key's state stays, as on a \
         key in use), {} rounds × {} cycles; then {} attempts on a key held by another value. \
         Server µs are redis-server's own time per call (`INFO commandstats`). The shipped \
         script runs with the keys and arguments the library sends (protocol v2).\n",
        settings.design_rounds,
        settings.design_ops,
        settings.design_ops / 2
    );
    let _ = writeln!(
        w,
        "| acquire | median µs / acquire + DEL | ratio to minimal fenced script | server µs / fresh acquire | server µs / attempt on held key | contract replies (fresh: t; same value: t again, re-armed; held: 0; next: above t) |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | --- |");
    let design = |x: AcquireDesign| des.iter().find(|d| d.design == x).expect("design");
    let (set, minimal, script, script_off, function) = (
        design(AcquireDesign::SetNxPx),
        design(AcquireDesign::MinimalFenced),
        design(AcquireDesign::Script),
        design(AcquireDesign::ScriptNoLabel),
        design(AcquireDesign::Function),
    );
    for d in des {
        let sem =
            semantics
                .iter()
                .find(|(x, _)| *x == d.design)
                .map_or(
                    "n/a (no token)",
                    |(_, ok)| if *ok { "yes" } else { "**no**" },
                );
        let _ = writeln!(
            w,
            "| {} | {:.2} | {:.3} | {:.2} | {:.2} | {} |",
            d.design.name(),
            median(&d.means),
            paired_ratio(&d.means, &minimal.means),
            median(&d.server_fresh),
            median(&d.server_held),
            sem
        );
    }
    let server_fresh = |d: &DesignResult| median(&d.server_fresh);
    let script_vs_minimal = server_fresh(script) - server_fresh(minimal);
    let label_server = server_fresh(script) - server_fresh(script_off);
    let _ = writeln!(
        w,
        "\n**Reading it.** The shipped acquire costs redis-server {:.2} µs per fresh \
         acquisition with the holder label on, {:.2} µs with it off, against {:.2} µs for the \
         minimal fenced script and {:.2} µs for a bare `SET NX PX`: {script_vs_minimal:+.2} µs \
         over the minimal fenced script for the protocol (the check of this client's aborted \
         record, the owner check of the key that makes a same-value re-lock a re-arm, and the \
         key's state read and written with its creator, where the minimal script `INCR`s a \
         counter), and {label_server:+.2} µs for the label (`TIME` and the label stored in the \
         state). On a held key it answers with the holder's remaining time ({:.2} µs, against \
         {:.2} µs for the minimal script's failed `SET NX`). As a Redis function the same body \
         costs {:+.0} % server time (no script cache lookup), but needs Redis ≥ 7.0, `FUNCTION \
         LOAD` rights and a library to keep loaded on every node. `MULTI` is cheapest but \
         cannot make the `INCR` conditional: it issues tokens for failed attempts and does not \
         recognise its own value (its replies above); the minimal fenced script does not either \
         (a same-value attempt is refused, not re-armed).",
        server_fresh(script),
        server_fresh(script_off),
        server_fresh(minimal),
        server_fresh(set),
        median(&script.server_held),
        median(&minimal.server_held),
        100.0 * (server_fresh(function) - server_fresh(script)) / server_fresh(script),
    );
    ServerCosts {
        set: server_fresh(set),
        minimal: server_fresh(minimal),
        script: server_fresh(script),
        script_no_label: server_fresh(script_off),
        release_shipped: median(&release_cost.shipped),
        release_plain: median(&release_cost.plain),
    }
}
