//! 8. Redlock over N servers.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::base::{median, percentile};
use crate::common::contention::{ContentionSide, Strategy, Until};
use crate::common::redlock::QuorumContender;
use crate::contention::{HOLD, THINK};
use crate::settings::Settings;
use crate::stats::{paired_ratio, rotated, us, verdict};
use crate::support::RedisServer;

/// Tasks contending for one key in the Redlock contention comparison.
pub const REDLOCK_CONTENDERS: usize = 8;

pub struct RedlockResult {
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
pub fn redlock(settings: &Settings) -> RedlockResult {
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let rt = common::base::current_thread_runtime();
    let (contenders, pids) = rt.block_on(async {
        let mut pids = Vec::new();
        for url in &urls {
            pids.push(common::probes::server_pid(&mut common::redis::connection(url).await).await);
        }
        (QuorumContender::all(&urls).await, pids)
    });
    let servers_cpu = || {
        pids.iter()
            .map(|p| common::probes::cpu_time(p))
            .sum::<Duration>()
    };
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
                let (client0, server0) = (common::probes::cpu_time("self"), servers_cpu());
                let started = Instant::now();
                for _ in 0..ops {
                    contender.lock_unlock(&key, "v").await;
                }
                let took = started.elapsed();
                r.means[i].push(us(took) / ops as f64);
                r.client_cpu[i].push(us(common::probes::cpu_time("self") - client0) / ops as f64);
                r.server_cpu[i].push(us(servers_cpu() - server0) / ops as f64);
            }
        }
    });
    drop(rt);
    let rt = common::base::multi_thread_runtime();
    rt.block_on(async {
        let mut run = 0;
        for nodes in [3, 5] {
            let sides = [
                ContentionSide::Redlock(common::redlock::redlock(&urls[..nodes]).await),
                ContentionSide::Rslock(common::redlock::rslock_contender(&urls[..nodes])),
            ];
            let mut rates: [Vec<f64>; 2] = Default::default();
            let mut handoffs: [Vec<Duration>; 2] = Default::default();
            for round in 0..settings.contention_rounds {
                for s in rotated(&[0usize, 1], round) {
                    run += 1;
                    let stats = common::contention::contention_run(
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

/// Section 8 of the report.
pub fn write(w: &mut String, r: &RedlockResult, settings: &Settings) {
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
pub fn goals(w: &mut String, r: &RedlockResult) {
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
