//! The performance report: a short, interleaved version of the criterion benches that
//! writes `BENCHMARKS.md` (every figure next to its baseline, measured in the same run).
//!
//! ```text
//! cargo bench --bench report                                   # writes ./BENCHMARKS.md
//! cargo bench --bench report -- --quick                        # smoke run, ~30 s
//! cargo bench --bench report -- --max-load 0.8 --out /tmp/B.md
//! cargo bench --bench report -- --only redlock                 # section 8 alone, printed
//! cargo bench --features etcd --bench report -- --only etcd    # section 9
//! cargo bench --features postgres --bench report -- --only postgres  # section 10
//! ```
//!
//! A bench target with its own `main` (`harness = false`): `cargo bench` builds it
//! optimised, `cargo test` does not build it. One module per section of BENCHMARKS.md,
//! each measuring (`latency::latency`, …) and writing its section (`latency::write`, …);
//! the workloads and contenders are the criterion benches' own (`benches/common/`).
//!
//! With `--features postgres`, section 10 compares leasehold on a spawned PostgreSQL with
//! the same lease row by hand and with advisory locks, and its hand-off with polling.
//!
//! With `--features etcd`, section 9 compares leasehold on a local single-member etcd with
//! etcd's own lock service, and the hand-off of its fair wait with polling Redis; `--only
//! etcd` prints that section alone (and writes it to `--out`, when given).
//!
//! `--max-load L` waits (up to 15 minutes) until the 1-minute load average is below `L`
//! before measuring. Needs `redis-server` (Redis >= 7) on `PATH` or in
//! `LEASEHOLD_REDIS_SERVER`.
//!
//! Method: every comparison runs its variants one after the other inside a round, in an
//! order rotated from round to round, so that drift (other processes, thermal, the
//! server's memory) hits them alike; figures are medians over rounds and ratios are
//! medians of the per-round ratios.

// The report uses a part of each module it takes.
#[allow(dead_code)]
#[path = "../common"]
mod common {
    pub mod base;
    pub mod contender;
    pub mod contention;
    #[cfg(feature = "etcd")]
    pub mod etcd;
    #[cfg(feature = "postgres")]
    pub mod postgres;
    pub mod probes;
    pub mod redis;
    pub mod redlock;
    pub mod renewal;
    // What `postgres.rs` takes from `super::`.
    #[cfg(feature = "postgres")]
    pub use base::{EXPIRATION, EXPIRATION_MS};
    #[cfg(feature = "postgres")]
    pub use contention::{ContentionSide, Strategy, Until, contention_run};
}
#[path = "../../tests/support/mod.rs"]
mod support;

mod alloc;
mod blocking;
mod contention;
mod designs;
mod etcd;
mod goals;
mod latency;
mod machine;
mod postgres;
mod redlock;
mod renewal;
mod settings;
mod stats;
mod stores;
mod throughput;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use machine::{Machine, features_flag, loadavg, machine, wait_for_quiet};
use settings::Settings;
use support::RedisServer;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() {
    let settings = Settings::from_args();
    if let Some(filter) = settings.filter.as_deref().filter(|f| !"report".contains(f)) {
        eprintln!("report: skipped (filter {filter:?})");
        return;
    }
    if let Some(max) = settings.max_load {
        wait_for_quiet(max);
    }
    if settings.only_postgres {
        only(&settings, postgres::section);
    } else if settings.only_etcd {
        let md = etcd::section(&settings);
        if settings.out_given {
            std::fs::write(&settings.out, &md).expect("write report");
        }
        println!("{md}");
    } else if settings.only_redlock {
        only(&settings, |settings| {
            let r = redlock::redlock(settings);
            let mut md = String::new();
            redlock::write(&mut md, &r, settings);
            let _ = writeln!(md, "\n| goal | measured | verdict |\n| --- | ---: | --- |");
            redlock::goals(&mut md, &r);
            md
        });
    } else {
        full(&settings);
    }
}

/// One section alone, followed by the load it ran under; printed, and written only
/// with `--out`.
fn only(settings: &Settings, section: impl FnOnce(&Settings) -> String) {
    let load = loadavg();
    let mut md = section(settings);
    let (end, m) = (loadavg(), machine());
    let _ = writeln!(
        md,
        "\nLoad average (1 min) {:.2} before, {:.2} after; {} × {}.",
        load.0, end.0, m.nproc, m.cpu
    );
    if settings.out_given {
        std::fs::write(&settings.out, &md).expect("write report");
    }
    println!("{md}");
}

/// Every section, measured in turn (etcd and PostgreSQL last), then written in order
/// with the Goals table.
fn full(settings: &Settings) {
    let load_start = loadavg();
    let started = Instant::now();
    let m = machine();
    let server = RedisServer::start();
    let url = server.url();

    eprintln!("[1/9] lock+unlock latency");
    let lat = latency::latency(settings, &url);
    eprintln!("[2/9] acquire designs");
    let (des, release_cost) = designs::designs(settings, &url);
    let semantics = designs::check_design_semantics(&url);
    eprintln!("[3/9] throughput");
    let tp = throughput::throughput(settings, &url);
    eprintln!("[4/9] contention");
    let ct = contention::contention(settings, &url);
    eprintln!("[5/9] renewal at scale");
    let rn = renewal::renewal(settings, &url);
    eprintln!("[6/9] blocking facade overhead");
    let bl = blocking::blocking_overhead(settings, &url);
    #[cfg(feature = "cluster")]
    let st = {
        eprintln!("[7/9] Redis Cluster and min_replicas");
        stores::stores(settings, &url)
    };
    eprintln!("[8/9] Redlock over 3 and 5 servers");
    let rl = redlock::redlock(settings);
    eprintln!("[9/9] etcd");
    let etcd_md = etcd::section(settings);
    eprintln!("[10] PostgreSQL");
    let postgres_md = postgres::section(settings);

    let load_end = loadavg();
    let took = started.elapsed();

    let mut md = String::new();
    let w = &mut md;
    header(w, settings, &m, (load_start, load_end), took);
    let latency = latency::write(w, settings, &lat);
    let costs = designs::write(w, settings, &des, &release_cost, &semantics);
    let tp64 = throughput::write(w, settings, &tp, &costs);
    contention::write(w, settings, &ct);
    let renew_goal = renewal::write(w, settings, &rn);
    blocking::write(w, settings, &bl);
    #[cfg(feature = "cluster")]
    let cluster_ratio = stores::write(w, settings, &st);
    #[cfg(not(feature = "cluster"))]
    let cluster_ratio = stores::write(w);
    redlock::write(w, &rl, settings);
    w.push_str(&etcd_md);
    w.push_str(&postgres_md);
    goals::write(
        w,
        &goals::Inputs {
            latency: &latency,
            costs: &costs,
            tp64,
            renew_goal,
            cluster_ratio,
            redlock: &rl,
            loaded: load_start.0 > 1.0,
        },
    );

    std::fs::write(&settings.out, &md).expect("write report");
    println!("{md}");
    eprintln!("wrote {}", settings.out.display());
}

type Load = (f64, f64, f64);

/// The title, how the report was made, and the machine.
fn header(
    w: &mut String,
    settings: &Settings,
    m: &Machine,
    (load_start, load_end): (Load, Load),
    took: Duration,
) {
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `cargo bench{} --bench report`{} on {} in {:.0} s. Criterion versions \
         of the same workloads: the other `cargo bench` targets (`benches/`).\n",
        features_flag(),
        if settings.quick { " -- --quick" } else { "" },
        m.date,
        took.as_secs_f64()
    );
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    let _ = writeln!(w, "| CPU | {} × {} |", m.nproc, m.cpu);
    let _ = writeln!(w, "| memory | {} |", m.memory);
    let _ = writeln!(w, "| kernel | Linux {} |", m.kernel);
    let _ = writeln!(w, "| redis-server | {} |", m.redis);
    let _ = writeln!(w, "| rustc | {} |", m.rustc);
    let _ = writeln!(
        w,
        "| load average (1/5/15 min) | {:.2} / {:.2} / {:.2} before the run; {:.2} / {:.2} / {:.2} at its end (the run itself keeps both cores busy) |",
        load_start.0, load_start.1, load_start.2, load_end.0, load_end.1, load_end.2
    );
    let _ = writeln!(
        w,
        "\nClient and `redis-server` share the machine's cores (loopback TCP, no persistence). \
         Variants of each comparison are interleaved, in an order rotated every round; figures \
         are medians over rounds, ratios are medians of the per-round ratios (so drift cancels).\n"
    );
}
