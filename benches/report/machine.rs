//! The machine a report ran on, its load, and the features it was built with.

use std::time::{Duration, Instant};

pub fn loadavg() -> (f64, f64, f64) {
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

pub fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub redis: String,
    pub rustc: String,
    pub date: String,
}

pub fn machine() -> Machine {
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

pub fn wait_for_quiet(max_load: f64) {
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

/// The `--features` a run was built with, as the command line that rebuilds it.
pub fn features_flag() -> String {
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
