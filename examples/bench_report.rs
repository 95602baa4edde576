//! The performance report: a short, interleaved version of the criterion benches that
//! writes `BENCHMARKS.md` (every figure next to its baseline, measured in the same run).
//!
//! ```text
//! cargo run --release --example bench_report                # writes ./BENCHMARKS.md
//! cargo run --release --example bench_report -- --quick     # smoke run, ~30 s
//! cargo run --release --example bench_report -- --max-load 0.8 --out /tmp/B.md
//! cargo run --release --example bench_report -- --only redlock  # section 8 alone, printed
//! cargo run --release --features etcd --example bench_report -- --only etcd  # section 9
//! cargo run --release --features postgres --example bench_report -- --only postgres  # 10
//! ```
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
//! server's memory) hits them alike; figures are medians over the rounds and ratios are
//! medians of the per-round ratios.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    AcquireDesign, Contender, ContentionSide, EXPIRATION_MS, KeyNames, QuorumContender,
    RENEW_INTERVAL, Raw, Renewers, Strategy, Until, median, percentile,
};
use leasehold::Client;
use support::RedisServer;

// ---------------------------------------------------------------------------
// Counting allocator: live heap bytes and the number of allocations.
// ---------------------------------------------------------------------------

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

fn live_allocations() -> usize {
    LIVE_ALLOCATIONS.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

struct Settings {
    quick: bool,
    /// `--only etcd`: run section 9 alone and print it (written only with `--out`).
    only_etcd: bool,
    /// `--only postgres`: run section 10 alone and print it (written only with `--out`).
    only_postgres: bool,
    out: PathBuf,
    max_load: Option<f64>,
    latency_rounds: usize,
    latency_ops: usize,
    design_rounds: usize,
    design_ops: usize,
    throughput_rounds: usize,
    throughput_window: Duration,
    contention_rounds: usize,
    contention_window: Duration,
    renewal_rounds: usize,
    renewal_windows: usize,
    /// Cycles per variant and round of the Redlock latency comparison.
    redlock_ops: usize,
    /// `--only redlock`: run section 8 alone and print it (written only with `--out`).
    only_redlock: bool,
    out_given: bool,
}

impl Settings {
    fn from_args() -> Settings {
        let mut s = Settings {
            quick: false,
            only_etcd: false,
            only_postgres: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
            max_load: None,
            latency_rounds: 15,
            latency_ops: 2_000,
            design_rounds: 9,
            design_ops: 1_000,
            throughput_rounds: 5,
            throughput_window: Duration::from_millis(300),
            contention_rounds: 3,
            contention_window: Duration::from_millis(700),
            renewal_rounds: 2,
            renewal_windows: 2,
            redlock_ops: 1_000,
            only_redlock: false,
            out_given: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    s.quick = true;
                    s.latency_rounds = 3;
                    s.latency_ops = 300;
                    s.design_rounds = 3;
                    s.design_ops = 200;
                    s.throughput_rounds = 2;
                    s.throughput_window = Duration::from_millis(100);
                    s.contention_rounds = 1;
                    s.contention_window = Duration::from_millis(200);
                    s.renewal_rounds = 1;
                    s.renewal_windows = 1;
                    s.redlock_ops = 200;
                }
                "--out" => {
                    s.out = PathBuf::from(args.next().expect("--out PATH"));
                    s.out_given = true;
                }
                "--only" => match args.next().as_deref() {
                    Some("redlock") => s.only_redlock = true,
                    Some("etcd") => s.only_etcd = true,
                    Some("postgres") => s.only_postgres = true,
                    other => {
                        panic!("--only: expected `redlock`, `etcd` or `postgres`, got {other:?}")
                    }
                },
                "--max-load" => {
                    s.max_load = Some(
                        args.next()
                            .and_then(|v| v.parse().ok())
                            .expect("--max-load NUMBER"),
                    )
                }
                "--bench" => {} // passed by `cargo bench`-style runners; ignored
                other => panic!(
                    "unknown argument {other:?} (--quick, --out PATH, --max-load L, --only redlock|etcd|postgres)"
                ),
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Machine
// ---------------------------------------------------------------------------

fn loadavg() -> (f64, f64, f64) {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(f64::NAN),
        v.get(1).copied().unwrap_or(f64::NAN),
        v.get(2).copied().unwrap_or(f64::NAN),
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

struct Machine {
    nproc: usize,
    cpu: String,
    memory: String,
    kernel: String,
    redis: String,
    rustc: String,
    date: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let redis_bin =
        std::env::var("LEASEHOLD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        memory,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        redis: command_output(&redis_bin, &["--version"]),
        rustc: command_output(&rustc, &["--version"]),
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    }
}

fn wait_for_quiet(max_load: f64) {
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        let (one, _, _) = loadavg();
        if one < max_load {
            eprintln!("load {one:.2} < {max_load}: measuring");
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("load still {one:.2} after 15 minutes: measuring anyway (recorded)");
            return;
        }
        eprintln!("load {one:.2} >= {max_load}: waiting");
        std::thread::sleep(Duration::from_secs(15));
    }
}

/// `order` rotated by `round`.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let n = items.len();
    (0..n).map(|i| items[(i + round) % n]).collect()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------
// 1. Uncontended lock + unlock latency
// ---------------------------------------------------------------------------

struct LatencyResult {
    id: &'static str,
    /// Mean µs per lock+unlock, per round.
    means: Vec<f64>,
    /// Every single op, µs.
    ops: Vec<f64>,
    allocs_per_op: f64,
}

fn latency(settings: &Settings, url: &str) -> Vec<LatencyResult> {
    let rt = common::current_thread_runtime();
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

/// Median over rounds of `a[round] / b[round]`.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

// ---------------------------------------------------------------------------
// 2. Server-side designs for the fenced acquire
// ---------------------------------------------------------------------------

struct DesignResult {
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
struct ReleaseCost {
    plain: Vec<f64>,
    shipped: Vec<f64>,
}

fn designs(settings: &Settings, url: &str) -> (Vec<DesignResult>, ReleaseCost) {
    let rt = common::current_thread_runtime();
    rt.block_on(async {
        let raw = Raw::connect(url).await;
        let mut probe = common::connection(url).await;
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
                let (c0, u0) = common::command_stats(&mut probe, "evalsha").await;
                for _ in 0..settings.design_ops / 2 {
                    assert!(raw.set_nx_px(&rel.key, "v", EXPIRATION_MS).await);
                    if shipped {
                        assert!(raw.shipped_release(&rel, "v").await);
                    } else {
                        assert!(raw.release(&rel.key, "v").await);
                    }
                }
                let (c1, u1) = common::command_stats(&mut probe, "evalsha").await;
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
                let (c0, u0) = common::command_stats(&mut probe, design.command()).await;
                let started = Instant::now();
                for _ in 0..settings.design_ops {
                    let token = raw.acquire_with(design, &keys, "v", EXPIRATION_MS).await;
                    assert!(token > 0, "{design:?}");
                    del(keys.key.clone()).await;
                }
                let total = started.elapsed();
                let (c1, u1) = common::command_stats(&mut probe, design.command()).await;
                results[i]
                    .means
                    .push(us(total) / settings.design_ops as f64);
                results[i]
                    .server_fresh
                    .push((u1 - u0) as f64 / (c1 - c0).max(1) as f64);
                // Attempts on a held key.
                let held_ops = settings.design_ops / 2;
                let (c0, u0) = common::command_stats(&mut probe, design.command()).await;
                for _ in 0..held_ops {
                    let token = raw.acquire_with(design, &held, "v", EXPIRATION_MS).await;
                    assert_eq!(token, 0, "{design:?} on a held key");
                }
                let (c1, u1) = common::command_stats(&mut probe, design.command()).await;
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
fn check_design_semantics(url: &str) -> Vec<(AcquireDesign, bool)> {
    let rt = common::current_thread_runtime();
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

// ---------------------------------------------------------------------------
// 3. Throughput
// ---------------------------------------------------------------------------

const THROUGHPUT_TASKS: [usize; 4] = [1, 16, 64, 256];

struct ThroughputResult {
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

fn throughput(settings: &Settings, url: &str) -> Vec<ThroughputResult> {
    let rt = common::multi_thread_runtime();
    rt.block_on(async {
        let variants = [
            Contender::Leasehold(Client::open(url).await.expect("client")),
            Contender::RawSetNx(Raw::connect(url).await),
            Contender::FencedByHand(Raw::connect(url).await),
        ];
        let mut probe = common::connection(url).await;
        let pid = common::server_pid(&mut probe).await;
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
                    common::throughput_window(
                        &variants[v],
                        result.tasks,
                        Duration::from_millis(30),
                    )
                    .await;
                    let (calls0, _) = common::command_stats(&mut probe, "evalsha").await;
                    let (cpu0, srv0) = (common::cpu_time("self"), common::cpu_time(&pid));
                    let (ops, elapsed, all, refused) = common::throughput_window(
                        &variants[v],
                        result.tasks,
                        settings.throughput_window,
                    )
                    .await;
                    let (cpu1, srv1) = (common::cpu_time("self"), common::cpu_time(&pid));
                    let (calls1, _) = common::command_stats(&mut probe, "evalsha").await;
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

// ---------------------------------------------------------------------------
// 4. Contention
// ---------------------------------------------------------------------------

const CONTENTION_TASKS: [usize; 3] = [2, 8, 32];
const HOLD: Duration = Duration::from_millis(1);
const THINK: Duration = Duration::from_millis(1);

/// The sides of a contention run, in this order: leasehold woken on release, leasehold
/// polling (`notify(false)`), and `SET NX PX` by hand.
const SIDES: usize = 3;

struct ContentionResult {
    tasks: usize,
    strategy: Strategy,
    /// acquisitions/s per round, per side.
    rate: [Vec<f64>; SIDES],
    handoffs: [Vec<Duration>; SIDES],
    per_task: [Vec<u64>; SIDES],
    /// Commands the server ran per second and per waiting task, per round, per side.
    load: [Vec<f64>; SIDES],
}

struct Contention {
    results: Vec<ContentionResult>,
    /// PING round trips measured between the windows of the same run.
    ping: Vec<Duration>,
}

fn contention(settings: &Settings, url: &str) -> Contention {
    let rt = common::multi_thread_runtime();
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
        let mut probe = common::connection(url).await;
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
                    ping.push(common::ping_rtt(&mut probe, 50).await);
                    for s in rotated(&[0usize, 1, 2], round) {
                        run += 1;
                        let key = format!("contention:{run}");
                        let calls = common::total_calls(&mut probe).await;
                        let stats = common::contention_run(
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
                        let calls = common::total_calls(&mut probe).await - calls - 1;
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

// ---------------------------------------------------------------------------
// 5. Renewal at scale
// ---------------------------------------------------------------------------

const RENEWAL_SIZES: [usize; 2] = [1_000, 10_000];

#[derive(Default)]
struct RenewalResult {
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

fn renewal(settings: &Settings, url: &str) -> Vec<(usize, [RenewalResult; 2])> {
    let rt = common::multi_thread_runtime();
    rt.block_on(async {
        let client = Client::open(url).await.expect("client");
        let raw = Raw::connect(url).await;
        let mut probe = common::connection(url).await;
        let pid = common::server_pid(&mut probe).await;
        let mut out = Vec::new();
        for n in RENEWAL_SIZES {
            let mut results: [RenewalResult; 2] = Default::default();
            for round in 0..settings.renewal_rounds {
                for v in rotated(&[0usize, 1], round) {
                    let prefix = format!("renew:{n}:{round}:{v}");
                    let (heap0, blocks0) = (live_bytes(), live_allocations());
                    let renewers = if v == 0 {
                        let locks = common::acquire_many(&client, &prefix, n).await;
                        results[v]
                            .heap_lock
                            .push((live_bytes() as f64 - heap0 as f64) / n as f64);
                        let renewals = common::start_auto_refresh(&locks);
                        Renewers::Leasehold { locks, renewals }
                    } else {
                        let tasks = common::by_hand_renewers(&raw, &prefix, n).await;
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
                            common::renewal_window(&mut probe, &pid, RENEW_INTERVAL).await;
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

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// 6. Blocking facade overhead
// ---------------------------------------------------------------------------

struct BlockingResult {
    store: &'static str,
    /// Mean µs per try_lock+unlock through the async API, per round.
    async_means: Vec<f64>,
    /// The same through `leasehold::blocking`, from this plain thread, per round.
    blocking_means: Vec<f64>,
}

/// `try_lock` + `unlock` through the async client (driven by `block_on` here) and through
/// the blocking facade (its own runtime thread; this thread parks), interleaved by round.
fn blocking_overhead(settings: &Settings, url: &str) -> Vec<BlockingResult> {
    let mut results = Vec::new();
    for (store, url) in [
        ("redis", url.to_owned()),
        ("memory", "memory://bench-blocking".to_owned()),
    ] {
        let rt = common::current_thread_runtime();
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
                            .try_lock("blk:blocking", "v", common::EXPIRATION)
                            .expect("lock");
                        lock.unlock().expect("unlock");
                    }
                    r.blocking_means.push(us(started.elapsed()) / ops as f64);
                } else {
                    rt.block_on(async {
                        for _ in 0..ops {
                            let lock = async_client
                                .try_lock("blk:async", "v", common::EXPIRATION)
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

// ---------------------------------------------------------------------------
// 7. Redis Cluster and min_replicas
// ---------------------------------------------------------------------------

/// Mean µs per lock+unlock per round, for each store setup (in [`STORE_SETUPS`] order).
#[cfg(feature = "cluster")]
struct StoresResult {
    means: [Vec<f64>; 4],
}

#[cfg(feature = "cluster")]
const STORE_SETUPS: [&str; 4] = [
    "one redis-server",
    "3-master Redis Cluster",
    "a master with one replica",
    "the same with `min_replicas(1, 100 ms)`",
];

/// lock+unlock through a 3-master cluster against the same client on one server, and
/// with `min_replicas(1)` against the same master without it, interleaved.
#[cfg(feature = "cluster")]
fn stores(settings: &Settings, url: &str) -> StoresResult {
    let cluster = support::RedisCluster::start(3, 0);
    let master = RedisServer::start();
    let replica = RedisServer::start_with(support::ServerOptions {
        extra_args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ],
        ..support::ServerOptions::default()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        replica.try_cmd_sync(&["INFO", "replication"]),
        Ok(redis::Value::BulkString(ref b)) if String::from_utf8_lossy(b).contains("master_link_status:up")
    ) {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = common::current_thread_runtime();
    rt.block_on(async {
        let urls = cluster.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let clients = [
            Client::open(url).await.expect("single"),
            Client::open_cluster(&urls).await.expect("cluster"),
            Client::open(&master.url()).await.expect("master"),
            Client::builder()
                .min_replicas(1, Duration::from_millis(100))
                .open(&master.url())
                .await
                .expect("master with min_replicas"),
        ];
        let mut r = StoresResult {
            means: Default::default(),
        };
        for round in 0..settings.latency_rounds {
            for i in rotated(&[0usize, 1, 2, 3], round) {
                let client = &clients[i];
                let key = format!("stores:{i}");
                for _ in 0..settings.latency_ops / 20 {
                    client
                        .try_lock(&key, "v", common::EXPIRATION)
                        .await
                        .unwrap()
                        .unlock()
                        .await
                        .unwrap();
                }
                let started = Instant::now();
                for _ in 0..settings.latency_ops {
                    let lock = client
                        .try_lock(&key, "v", common::EXPIRATION)
                        .await
                        .expect("lock");
                    lock.unlock().await.expect("unlock");
                }
                r.means[i].push(us(started.elapsed()) / settings.latency_ops as f64);
            }
        }
        r
    })
}

// ---------------------------------------------------------------------------
// 8. Redlock over N servers
// ---------------------------------------------------------------------------

/// Tasks contending for one key in the Redlock contention comparison.
const REDLOCK_CONTENDERS: usize = 8;

struct RedlockResult {
    /// `leasehold_single`, `redlock_3`, `rslock_3`, `redlock_5`, `rslock_5`.
    ids: Vec<String>,
    /// Mean µs per lock+unlock, per round, per variant.
    means: Vec<Vec<f64>>,
    /// This process's CPU µs per cycle, per round, per variant.
    client_cpu: Vec<Vec<f64>>,
    /// The redis-servers' CPU µs per cycle (all five together), per round, per variant.
    server_cpu: Vec<Vec<f64>>,
    /// Per node count: acquisitions/s per round of Redlock and of rslock on one key.
    contention: Vec<(usize, [Vec<f64>; 2])>,
    /// Per node count: hand-off latencies (release started → next holder's lock
    /// returned) of Redlock and of rslock, sorted.
    handoffs: Vec<[Vec<Duration>; 2]>,
    /// How long `tokio::time::sleep(1.5 ms)` lasts here, on average.
    tokio_sleep: Duration,
}

impl RedlockResult {
    fn index(&self, id: &str) -> usize {
        self.ids.iter().position(|i| i == id).expect("variant")
    }

    /// Median of the per-round ratios `a / b` of lock+unlock time.
    fn ratio(&self, a: &str, b: &str) -> f64 {
        paired_ratio(&self.means[self.index(a)], &self.means[self.index(b)])
    }

    /// Redlock's contended acquisitions/s over rslock's, for `nodes` nodes.
    fn contention_ratio(&self, nodes: usize) -> f64 {
        let (_, [redlock, rslock]) = self
            .contention
            .iter()
            .find(|(n, _)| *n == nodes)
            .expect("node count");
        paired_ratio(redlock, rslock)
    }
}

/// Five fresh redis-servers; leasehold on one of them, Redlock and rslock's multi-server
/// `LockManager` over 3 and over 5 of them, interleaved by round.
fn redlock(settings: &Settings) -> RedlockResult {
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let rt = common::current_thread_runtime();
    let (contenders, pids) = rt.block_on(async {
        let mut pids = Vec::new();
        for url in &urls {
            pids.push(common::server_pid(&mut common::connection(url).await).await);
        }
        (QuorumContender::all(&urls).await, pids)
    });
    let servers_cpu = || pids.iter().map(|p| common::cpu_time(p)).sum::<Duration>();
    let n = contenders.len();
    let mut r = RedlockResult {
        ids: contenders.iter().map(QuorumContender::id).collect(),
        means: vec![Vec::new(); n],
        client_cpu: vec![Vec::new(); n],
        server_cpu: vec![Vec::new(); n],
        contention: Vec::new(),
        handoffs: Vec::new(),
        tokio_sleep: Duration::ZERO,
    };
    let ops = settings.redlock_ops;
    rt.block_on(async {
        let indices: Vec<usize> = (0..n).collect();
        for round in 0..settings.latency_rounds {
            for i in rotated(&indices, round) {
                let contender = &contenders[i];
                let key = format!("rl:{}", contender.id());
                for _ in 0..ops / 20 {
                    contender.lock_unlock(&key, "v").await;
                }
                let (client0, server0) = (common::cpu_time("self"), servers_cpu());
                let started = Instant::now();
                for _ in 0..ops {
                    contender.lock_unlock(&key, "v").await;
                }
                let took = started.elapsed();
                r.means[i].push(us(took) / ops as f64);
                r.client_cpu[i].push(us(common::cpu_time("self") - client0) / ops as f64);
                r.server_cpu[i].push(us(servers_cpu() - server0) / ops as f64);
            }
        }
    });
    drop(rt);
    let rt = common::multi_thread_runtime();
    rt.block_on(async {
        let mut run = 0;
        for nodes in [3, 5] {
            let sides = [
                ContentionSide::Redlock(common::redlock(&urls[..nodes]).await),
                ContentionSide::Rslock(common::rslock_contender(&urls[..nodes])),
            ];
            let mut rates: [Vec<f64>; 2] = Default::default();
            let mut handoffs: [Vec<Duration>; 2] = Default::default();
            for round in 0..settings.contention_rounds {
                for s in rotated(&[0usize, 1], round) {
                    run += 1;
                    let stats = common::contention_run(
                        &sides[s],
                        &format!("rl-contention:{run}"),
                        REDLOCK_CONTENDERS,
                        Strategy::NonFixed,
                        HOLD,
                        THINK,
                        Until::Elapsed(settings.contention_window),
                    )
                    .await;
                    rates[s].push(stats.acquisitions as f64 / stats.elapsed.as_secs_f64());
                    handoffs[s].extend(stats.handoffs);
                }
            }
            handoffs.iter_mut().for_each(|h| h.sort());
            r.contention.push((nodes, rates));
            r.handoffs.push(handoffs);
        }
        let started = Instant::now();
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_micros(1500)).await;
        }
        r.tokio_sleep = started.elapsed() / 200;
    });
    r
}

/// Section 7 of the report.
fn redlock_section(w: &mut String, r: &RedlockResult, settings: &Settings) {
    let _ = writeln!(w, "\n## 8. Redlock over 3 and 5 servers\n");
    let _ = writeln!(
        w,
        "Five more redis-servers on this machine. One uncontended `lock` + `unlock` (Redlock: \
         `try_lock` + `unlock`, each fanned out to every node in parallel), {} rounds × {} \
         cycles per variant, current-thread runtime; ratios are medians of per-round ratios. \
         CPU columns: this process, and all five redis-servers together, per cycle.\n",
        settings.latency_rounds, settings.redlock_ops
    );
    let _ = writeln!(
        w,
        "| variant | median µs / cycle | ÷ leasehold on one server | ÷ rslock on the same servers | client CPU µs / cycle | servers' CPU µs / cycle |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, id) in r.ids.iter().enumerate() {
        let describe = match id.as_str() {
            "leasehold_single" => "leasehold, one server (`Client`)".to_owned(),
            other => match other.split_once('_') {
                Some(("redlock", n)) => format!("**leasehold `Redlock`**, {n} servers"),
                Some(("rslock", n)) => format!("rslock 0.10 `LockManager`, {n} servers"),
                _ => other.to_owned(),
            },
        };
        let vs_rslock = match id.split_once('_') {
            Some(("redlock", n)) => format!("{:.3}", r.ratio(id, &format!("rslock_{n}"))),
            _ => "".to_owned(),
        };
        let _ = writeln!(
            w,
            "| {describe} | {:.1} | {:.3} | {vs_rslock} | {:.1} | {:.1} |",
            median(&r.means[i]),
            r.ratio(id, "leasehold_single"),
            median(&r.client_cpu[i]),
            median(&r.server_cpu[i]),
        );
    }
    let _ = writeln!(
        w,
        "\nContention: {REDLOCK_CONTENDERS} tasks on one key, each holding it {} ms and pausing {} ms; \
         Redlock retries under `NonFixedInterval(2 ms)`, rslock after its own random delay \
         (whole milliseconds in 0..5, mean 2 ms); {} rounds × {} ms windows.\n",
        HOLD.as_millis(),
        THINK.as_millis(),
        settings.contention_rounds,
        settings.contention_window.as_millis()
    );
    let _ = writeln!(
        w,
        "| servers | Redlock acquisitions/s | rslock acquisitions/s | Redlock ÷ rslock | hand-off p50 / p90 ms, Redlock | hand-off p50 / p90 ms, rslock |"
    );
    let _ = writeln!(w, "| ---: | ---: | ---: | ---: | ---: | ---: |");
    for ((nodes, [redlock, rslock]), handoffs) in r.contention.iter().zip(&r.handoffs) {
        let ms = |h: &[Duration], p: f64| percentile(h, p).as_secs_f64() * 1e3;
        let _ = writeln!(
            w,
            "| {nodes} | {:.0} | {:.0} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} |",
            median(redlock),
            median(rslock),
            r.contention_ratio(*nodes),
            ms(&handoffs[0], 50.0),
            ms(&handoffs[0], 90.0),
            ms(&handoffs[1], 50.0),
            ms(&handoffs[1], 90.0),
        );
    }
    let _ = writeln!(
        w,
        "\nUnder contention the first waiter of the Redlock is woken when a majority of nodes \
         announced the holder's release (as leasehold's hand-off on one server, section 4); \
         the others poll under their strategy. leasehold's pauses run on tokio's timer, which \
         counts whole milliseconds (a plain 1.5 ms `tokio::time::sleep` lasted {:.2} ms here on \
         average); a pause is given to it as the last tick at or before its end, so it is not \
         rounded up. rslock sleeps on `futures-timer`'s own thread, to the microsecond.",
        r.tokio_sleep.as_secs_f64() * 1e3
    );
    let cpu = |id: &str| {
        let i = r.index(id);
        median(&r.client_cpu[i]) + median(&r.server_cpu[i])
    };
    let server = |id: &str| median(&r.server_cpu[r.index(id)]);
    let client = |id: &str| median(&r.client_cpu[r.index(id)]);
    let per_node_extra = (server("redlock_3") - server("rslock_3")) / 3.0;
    let client_vs_rslock = (client("redlock_3") - client("rslock_3")) / 3.0;
    let _ = writeln!(
        w,
        "\n**Reading it.** A Redlock cycle does the work of one server's cycle on every node: \
         with N nodes the client sends and receives N times as much and N redis-servers each \
         run their script. The fan-out overlaps the waiting, not that work: total CPU per \
         cycle here is {:.0} µs on one server, {:.0} µs over 3 and {:.0} µs over 5 nodes. The \
         latency ratio to one server therefore approaches 1 only when the nodes and the \
         client have cores of their own (with N + 1 free cores the N round trips overlap \
         fully); on a machine with fewer cores than nodes, it is bounded below by the CPU \
         ratio. Against rslock the client does {client_vs_rslock:+.1} µs of work per node and \
         cycle, the servers {per_node_extra:+.1} µs: rslock acquires with a bare `SET NX PX`, \
         leasehold with the single-server script, which also keeps the key's state (its \
         fencing token, the attempt that created it, the holder label) and refuses an attempt \
         its client already gave up on — what keeps a timed-out attempt that lands late from \
         leaving a key behind, and tokens rising across expiry, which rslock's cannot. On a \
         machine whose \
         cores the servers share with the client, that server time is on the critical path; \
         with a core per node it overlaps with the round trip. Under contention rslock also \
         releases every node after each failed attempt, where leasehold releases only the \
         nodes that granted it (none, when a majority answered \"held\").",
        cpu("leasehold_single"),
        cpu("redlock_3"),
        cpu("redlock_5")
    );
}

/// Section 7's rows of the Goals table.
fn redlock_goals(w: &mut String, r: &RedlockResult) {
    for nodes in [3, 5] {
        let id = format!("redlock_{nodes}");
        let single = r.ratio(&id, "leasehold_single");
        let _ = writeln!(
            w,
            "| Redlock over {nodes}: lock+unlock ≤ 1.3 × leasehold on one server | {single:.3} × | {} |",
            verdict(single, 1.3, true)
        );
        let rslock = r.ratio(&id, &format!("rslock_{nodes}"));
        let _ = writeln!(
            w,
            "| Redlock over {nodes}: lock+unlock ≤ 1.0 × rslock 0.10 (at least as fast) | {rslock:.3} × | {} |",
            verdict(rslock, 1.0, true)
        );
        let contended = r.contention_ratio(nodes);
        let _ = writeln!(
            w,
            "| Redlock over {nodes}: contended acquisitions/s ≥ 1.0 × rslock 0.10 | {contended:.3} × | {} |",
            verdict(contended, 1.0, false)
        );
    }
}

/// "met", or "missed by N %" of the goal, for a measured `value` against `goal`.
fn verdict(value: f64, goal: f64, at_most: bool) -> String {
    let ok = if at_most {
        value <= goal
    } else {
        value >= goal
    };
    if ok {
        "met".to_owned()
    } else {
        format!("**missed** by {:.1} %", 100.0 * (value - goal).abs() / goal)
    }
}

fn main() {
    let settings = Settings::from_args();
    if let Some(max) = settings.max_load {
        wait_for_quiet(max);
    }
    if settings.only_postgres {
        let load = loadavg();
        let mut md = postgres_section(&settings);
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
        return;
    }
    if settings.only_etcd {
        let md = etcd_section(&settings);
        if settings.out_given {
            std::fs::write(&settings.out, &md).expect("write report");
        }
        println!("{md}");
        return;
    }
    if settings.only_redlock {
        let load = loadavg();
        let r = redlock(&settings);
        let mut md = String::new();
        redlock_section(&mut md, &r, &settings);
        let _ = writeln!(md, "\n| goal | measured | verdict |\n| --- | ---: | --- |");
        redlock_goals(&mut md, &r);
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
        return;
    }
    let load_start = loadavg();
    let started = Instant::now();
    let m = machine();
    let server = RedisServer::start();
    let url = server.url();

    eprintln!("[1/9] lock+unlock latency");
    let lat = latency(&settings, &url);
    eprintln!("[2/9] acquire designs");
    let (des, release_cost) = designs(&settings, &url);
    let semantics = check_design_semantics(&url);
    eprintln!("[3/9] throughput");
    let tp = throughput(&settings, &url);
    eprintln!("[4/9] contention");
    let ct = contention(&settings, &url);
    eprintln!("[5/9] renewal at scale");
    let rn = renewal(&settings, &url);
    eprintln!("[6/9] blocking facade overhead");
    let bl = blocking_overhead(&settings, &url);
    #[cfg(feature = "cluster")]
    let st = {
        eprintln!("[7/9] Redis Cluster and min_replicas");
        stores(&settings, &url)
    };
    eprintln!("[8/9] Redlock over 3 and 5 servers");
    let rl = redlock(&settings);

    eprintln!("[9/9] etcd");
    let etcd_md = etcd_section(&settings);
    eprintln!("[10] PostgreSQL");
    let postgres_md = postgres_section(&settings);

    let load_end = loadavg();
    let took = started.elapsed();

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `cargo run --release{} --example bench_report`{} on {} in {:.0} s. \
         Criterion versions of the same workloads: `cargo bench` (`benches/`).\n",
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

    // 1. Latency
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
    for r in &lat {
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

    // 2. Designs
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
    for d in &des {
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
    let script_extra = server_fresh(script) - server_fresh(set);
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

    // 3. Throughput
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
    for r in &tp {
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
        server_fresh(script),
        median(&release_cost.shipped),
        server_fresh(minimal),
        median(&release_cost.plain),
        server_fresh(set),
        median(&release_cost.plain),
    );

    // 4. Contention
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

    // 5. Renewal
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
        common::RENEW_EXPIRATION.as_secs(),
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
    for (n, results) in &rn {
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
    for r in &bl {
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

    // 7. Redis Cluster and min_replicas
    let _ = writeln!(w, "\n## 7. Redis Cluster and `min_replicas`\n");
    #[cfg(feature = "cluster")]
    let cluster_ratio = {
        let _ = writeln!(
            w,
            "Uncontended `try_lock` + `unlock` through the same client API on four setups, \
             interleaved ({} rounds × {} ops): one redis-server (the one of section 1), a \
             3-master Redis Cluster (every node on this machine), and a master with one \
             replica without and with `min_replicas(1, 100 ms)` (`WAIT 1 100` pipelined after \
             the acquire script: same round trip, but the master answers once the replica \
             acknowledged).\n",
            settings.latency_rounds, settings.latency_ops
        );
        let _ = writeln!(
            w,
            "| setup | µs per lock+unlock | ratio |\n| --- | ---: | --- |"
        );
        let base = [0usize, 0, 2, 2];
        for (i, name) in STORE_SETUPS.iter().enumerate() {
            let ratio = if i == base[i] {
                "—".to_owned()
            } else {
                format!(
                    "{:.3} × {}",
                    paired_ratio(&st.means[i], &st.means[base[i]]),
                    STORE_SETUPS[base[i]]
                )
            };
            let _ = writeln!(w, "| {name} | {:.1} | {ratio} |", median(&st.means[i]));
        }
        paired_ratio(&st.means[1], &st.means[0])
    };
    #[cfg(not(feature = "cluster"))]
    let cluster_ratio = {
        let _ = writeln!(
            w,
            "Not measured: run the report with `--features cluster` (or `--all-features`)."
        );
        f64::NAN
    };

    // 8. Redlock
    redlock_section(w, &rl, &settings);

    // 9. etcd, 10. PostgreSQL (measured last, printed in order)
    w.push_str(&etcd_md);
    w.push_str(&postgres_md);

    // Goals
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
        paired_ratio(&fenced.means, &raw.means),
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
    let scripts_ratio = (server_fresh(script) + median(&release_cost.shipped))
        / (server_fresh(minimal) + median(&release_cost.plain));
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
    redlock_goals(w, &rl);
    let raw_pair = median(&raw.means);
    let protocol_server =
        script_vs_minimal + median(&release_cost.shipped) - median(&release_cost.plain);
    let no_rt = find("leasehold_no_response_timeout");
    let no_rt_vs_fenced = paired_ratio(&no_rt.means, &fenced.means);
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
        median(&release_cost.shipped) - median(&release_cost.plain),
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
    if load_start.0 > 1.0 {
        let _ = writeln!(
            w,
            "\n**Note:** the machine was not idle (load average above). Absolute figures are \
             inflated and noisier; the interleaved ratios are the figures to read."
        );
    }

    std::fs::write(&settings.out, &md).expect("write report");
    println!("{md}");
    eprintln!("wrote {}", settings.out.display());
}

// ---------------------------------------------------------------------------
// 9. etcd: against etcd's lock service; hand-off of the fair wait
// ---------------------------------------------------------------------------

#[cfg(not(feature = "etcd"))]
fn etcd_section(_: &Settings) -> String {
    "\n## 9. etcd\n\nNot measured: run with `--features etcd`.\n".to_owned()
}

#[cfg(feature = "etcd")]
fn etcd_section(settings: &Settings) -> String {
    use common::etcd::{LockService, leasehold_lock_unlock};

    let etcd = support::EtcdServer::start();
    let version = command_output("etcd", &["--version"]);
    let version = version.lines().next().unwrap_or("etcd").to_owned();

    // Lock + unlock, three variants interleaved.
    const VARIANTS: [&str; 4] = [
        "leasehold (lease per lock)",
        "lock service, lease per lock (grant + Lock + Unlock + revoke)",
        "lock service, plain `lock(name, None)` + `unlock` (the server grants a 60 s lease per call)",
        "lock service, one session lease for all locks (Lock + Unlock)",
    ];
    let ops = (settings.latency_ops / 10).max(20);
    let rounds = settings.latency_rounds;
    let rt = common::current_thread_runtime();
    let means: Vec<Vec<f64>> = rt.block_on(async {
        let client = Client::open(&etcd.url()).await.expect("leasehold on etcd");
        let service = LockService::connect(&etcd.endpoint()).await;
        let mut means = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            for v in rotated(&[0usize, 1, 2, 3], round) {
                let key = format!("etcd-lat:{v}");
                let one = || async {
                    match v {
                        0 => leasehold_lock_unlock(&client, &key).await,
                        1 => service.lock_unlock_own_lease(&key).await,
                        2 => service.lock_unlock_plain(&key).await,
                        _ => service.lock_unlock_session(&key).await,
                    }
                };
                for _ in 0..ops / 10 {
                    one().await;
                }
                let started = Instant::now();
                for _ in 0..ops {
                    one().await;
                }
                means[v].push(us(started.elapsed()) / ops as f64);
            }
        }
        means
    });
    drop(rt);

    // Hand-off under contention: the fair wait against polling Redis (and pub/sub).
    let redis = RedisServer::start();
    const SIDES: [&str; 3] = [
        "leasehold on etcd (fair wait)",
        "leasehold on Redis, polling (`notify(false)`)",
        "leasehold on Redis, pub/sub wake",
    ];
    let rt = common::multi_thread_runtime();
    // Per task count, per side: acquisitions/s, sorted hand-offs, acquisitions per task.
    type Side = (f64, Vec<Duration>, Vec<u64>);
    let handoff: Vec<(usize, Vec<Side>)> = rt.block_on(async {
        let sides = [
            ContentionSide::Leasehold(Client::open(&etcd.url()).await.expect("etcd")),
            ContentionSide::Leasehold(
                Client::builder()
                    .notify(false)
                    .open(&redis.url())
                    .await
                    .expect("redis"),
            ),
            ContentionSide::Leasehold(Client::open(&redis.url()).await.expect("redis")),
        ];
        let mut out = Vec::new();
        let mut run = 0;
        for tasks in [2usize, 8] {
            let mut per_side = vec![(0.0, Vec::new(), vec![0u64; tasks]); SIDES.len()];
            let mut rates = vec![Vec::new(); SIDES.len()];
            for round in 0..settings.contention_rounds {
                for s in rotated(&[0usize, 1, 2], round) {
                    run += 1;
                    let stats = common::contention_run(
                        &sides[s],
                        &format!("etcd-ct:{run}"),
                        tasks,
                        Strategy::Fixed,
                        HOLD,
                        THINK,
                        Until::Elapsed(settings.contention_window),
                    )
                    .await;
                    rates[s].push(stats.acquisitions as f64 / stats.elapsed.as_secs_f64());
                    per_side[s].1.extend(stats.handoffs);
                    for (total, n) in per_side[s].2.iter_mut().zip(stats.per_task) {
                        *total += n;
                    }
                }
            }
            for (side, rate) in per_side.iter_mut().zip(&rates) {
                side.0 = median(rate);
                side.1.sort();
            }
            out.push((tasks, per_side));
        }
        out
    });
    drop(rt);

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "\n## 9. etcd\n");
    let _ = writeln!(
        w,
        "A local single-member `{version}` (data in memory, heartbeat 10 ms), same run. \
         Lock + unlock: {rounds} rounds × {ops} cycles per variant, interleaved; medians over \
         rounds, ratios are medians of per-round ratios.\n"
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
    let goal = paired_ratio(&means[0], &means[1]);
    let plain = paired_ratio(&means[0], &means[2]);
    let _ = writeln!(
        w,
        "\nGoal: leasehold ≤ 1.0 × the lock service with a lease per lock: {goal:.3} × ({}); \
         against the plain call, {plain:.3} × ({}). Both grant a lease per lock as leasehold \
         does (3 Raft writes a cycle: grant, create, delete; the spent lease is revoked or \
         expires afterwards). The session variant shares one lease among all locks — no \
         expiration of a lock's own, nothing to grant or revoke, 2 Raft writes a cycle: \
         leasehold is {:.3} × it.\n",
        verdict(goal, 1.0, true),
        verdict(plain, 1.0, true),
        paired_ratio(&means[0], &means[3])
    );
    let _ = writeln!(
        w,
        "Hand-off under contention: tasks on one key, each holding it {} ms and pausing {} ms, \
         `FixedInterval(2 ms)`; release started → next holder's `lock` returned.\n",
        HOLD.as_millis(),
        THINK.as_millis()
    );
    let _ = writeln!(
        w,
        "| tasks | store | hand-off p50 | p99 | acquisitions/s | min/max per task |\n| ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for (tasks, sides) in &handoff {
        for (name, (rate, handoffs, per_task)) in SIDES.iter().zip(sides) {
            let min = per_task.iter().min().copied().unwrap_or(0);
            let max = per_task.iter().max().copied().unwrap_or(0);
            let _ = writeln!(
                w,
                "| {tasks} | {name} | {:.2} ms | {:.2} ms | {rate:.0} | {:.2} |",
                percentile(handoffs, 50.0).as_secs_f64() * 1e3,
                percentile(handoffs, 99.0).as_secs_f64() * 1e3,
                if max == 0 {
                    0.0
                } else {
                    min as f64 / max as f64
                }
            );
        }
    }
    md
}

// ---------------------------------------------------------------------------
// 10. PostgreSQL: against the same lease row by hand and advisory locks; hand-off
// ---------------------------------------------------------------------------

#[cfg(not(feature = "postgres"))]
fn postgres_section(_: &Settings) -> String {
    "\n## 10. PostgreSQL\n\nNot measured: run with `--features postgres`.\n".to_owned()
}

#[cfg(feature = "postgres")]
fn postgres_section(settings: &Settings) -> String {
    use common::postgres::{Contenders, VARIANTS, handoff};

    let server = support::PostgresServer::start();
    let version = server.sql("SHOW server_version")[0][0]
        .clone()
        .unwrap_or_default();
    let ops = (settings.latency_ops / 4).max(50);
    let rounds = settings.latency_rounds;
    let rt = common::current_thread_runtime();
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

    let rt = common::multi_thread_runtime();
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

/// The `--features` a run was built with, as the command line that rebuilds it.
fn features_flag() -> String {
    let on: Vec<&str> = [
        ("cluster", cfg!(feature = "cluster")),
        ("etcd", cfg!(feature = "etcd")),
        ("postgres", cfg!(feature = "postgres")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if on.is_empty() {
        String::new()
    } else {
        format!(" --features {}", on.join(","))
    }
}
