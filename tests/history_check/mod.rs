//! The exclusion history checker, shared by `tests/history.rs` (the lock on Redis) and
//! `tests/etcd_history.rs` (the lock on etcd): workers in several tasks and several OS
//! processes do a read-modify-write on a Redis counter under the lock and record every
//! hold as (token, acquired, released). [`violations`] finds lost updates, overlapping
//! holds, and fencing tokens that do not rise in grant order.
//!
//! The worker processes are the calling test binary re-executed on its ignored
//! `history_worker` entry point, which calls [`worker`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold::{Client, NonFixedInterval};
use redis::AsyncCommands;

pub const PROCESSES: usize = 3;
pub const TASKS: usize = 4;
pub const ROUNDS: usize = 8;
const WORKER_ENV: &str = "LEASEHOLD_HISTORY_WORKER";

/// One recorded hold: the interval is taken *inside* the real hold (after `lock`
/// returned, before `unlock` was sent), so overlapping records prove a double hold.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    token: u64,
    acquired_ns: u128,
    released_ns: u128,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The workload of one process: `TASKS` tasks × `ROUNDS` read-modify-writes on the
/// counter at `data_url`, under the lock at `lock_url` (or without it).
async fn workload(lock_url: &str, data_url: &str, process: usize, locked: bool) {
    let client = Client::open(lock_url).await.unwrap();
    let raw = redis::Client::open(data_url).unwrap();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let lock = if locked {
                    Some(
                        client
                            .lock(
                                "history-lock",
                                &leasehold::random_value(),
                                Duration::from_secs(10),
                                Duration::from_secs(2),
                                NonFixedInterval::new(Duration::from_millis(3), 20_000),
                            )
                            .await
                            .unwrap(),
                    )
                } else {
                    None
                };
                let acquired_ns = now_ns();
                let n: i64 = conn
                    .get::<_, Option<i64>>("counter")
                    .await
                    .unwrap()
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
                let () = conn.set("counter", n + 1).await.unwrap();
                let released_ns = now_ns();
                let token = match &lock {
                    Some(l) => l.fencing_token(),
                    // Control: a token from a counter nobody coordinates on.
                    None => (process * 1_000_000 + task * 1_000 + round) as u64,
                };
                if let Some(lock) = lock {
                    lock.unlock().await.unwrap();
                }
                let record = format!("{token} {acquired_ns} {released_ns}");
                let () = conn.rpush("history", record).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The body of a worker process: `true` if this process is one (then the workload ran).
pub fn worker() -> bool {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return false;
    };
    let mut parts = spec.split(' ');
    let lock_url = parts.next().unwrap().to_owned();
    let data_url = parts.next().unwrap().to_owned();
    let process: usize = parts.next().unwrap().parse().unwrap();
    let locked = parts.next().unwrap() == "locked";
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(workload(&lock_url, &data_url, process, locked));
    true
}

/// Run the workload in this process (as process 0) and `PROCESSES - 1` children; the
/// final counter and every hold.
pub async fn run_everywhere(lock_url: &str, data_url: &str, locked: bool) -> (i64, Vec<Hold>) {
    let exe = std::env::current_exe().unwrap();
    let mode = if locked { "locked" } else { "unlocked" };
    let mut children: Vec<_> = (1..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .args(["history_worker", "--exact", "--ignored", "--test-threads=1"])
                .env(
                    WORKER_ENV,
                    format!("{lock_url} {data_url} {process} {mode}"),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    workload(lock_url, data_url, 0, locked).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for child in &mut children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "worker process failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("worker process did not finish in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let raw = redis::Client::open(data_url).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let counter: i64 = conn.get("counter").await.unwrap();
    let lines: Vec<String> = conn.lrange("history", 0, -1).await.unwrap();
    let holds = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Hold {
                token: f[0].parse().unwrap(),
                acquired_ns: f[1].parse().unwrap(),
                released_ns: f[2].parse().unwrap(),
            }
        })
        .collect();
    (counter, holds)
}

/// Every violation of mutual exclusion the history shows.
pub fn violations(counter: i64, mut holds: Vec<Hold>) -> Vec<String> {
    let mut found = Vec::new();
    if counter != holds.len() as i64 {
        found.push(format!(
            "lost updates: counter {counter} after {} increments",
            holds.len()
        ));
    }
    holds.sort_by_key(|h| h.acquired_ns);
    for pair in holds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.acquired_ns < a.released_ns {
            found.push(format!(
                "overlapping holds: token {} and token {}",
                a.token, b.token
            ));
        }
        if b.token <= a.token {
            found.push(format!("token {} granted after token {}", b.token, a.token));
        }
    }
    found
}
