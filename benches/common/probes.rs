//! Probes: CPU time of a process, Redis command statistics, round-trip time.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// CPU time (user + system) consumed so far by every live thread of process `pid`
/// (`"self"` for this one), from `/proc/PID/task/*/schedstat` (nanoseconds); falls back
/// to `/proc/PID/stat` (clock ticks of 10 ms) where schedstat is missing.
pub fn cpu_time(pid: &str) -> Duration {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path)
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
            {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return Duration::from_nanos(total);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The redis-server's process id (`INFO server`).
pub async fn server_pid(conn: &mut ConnectionManager) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .expect("INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|s| s.trim().to_owned())
        .expect("process_id in INFO server")
}

/// `(calls, usec)` of one command from `INFO commandstats` (0, 0 when never called).
pub async fn command_stats(conn: &mut ConnectionManager, command: &str) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("calls="), field("usec="))
}

/// Commands the server has run so far, all commands together (`INFO commandstats`).
pub async fn total_calls(conn: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Median round trip of a `PING` on `conn`, over `n` pings.
pub async fn ping_rtt(conn: &mut ConnectionManager, n: usize) -> Duration {
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(conn).await.expect("PING");
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[n / 2]
}
