//! Exclusion history checker: workers in several tasks and several OS processes do a
//! read-modify-write on a Redis counter under the lock and record every hold as
//! (token, acquired, released). The checker asserts no lost updates, no overlapping
//! holds, and fencing tokens strictly rising in grant order. A negative control runs
//! the same workload without the lock and must be caught.
//!
//! The worker processes are this test binary re-executed on the ignored
//! `history_worker` entry point (so no extra binary ships with the crate).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold::{Client, NonFixedInterval};
use redis::AsyncCommands;
use support::RedisServer;

const PROCESSES: usize = 3;
const TASKS: usize = 4;
const ROUNDS: usize = 8;
const WORKER_ENV: &str = "LEASEHOLD_HISTORY_WORKER";

/// One recorded hold: the interval is taken *inside* the real hold (after `lock`
/// returned, before `unlock` was sent), so overlapping records prove a double hold.
#[derive(Debug, Clone, Copy)]
struct Hold {
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

/// The workload of one process: `TASKS` tasks × `ROUNDS` read-modify-writes.
async fn workload(url: &str, process: usize, locked: bool) {
    let client = Client::open(url).await.unwrap();
    let raw = redis::Client::open(url).unwrap();
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

/// Entry point of a worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let url = parts.next().unwrap().to_owned();
    let process: usize = parts.next().unwrap().parse().unwrap();
    let locked = parts.next().unwrap() == "locked";
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(workload(&url, process, locked));
}

/// Run the workload in this process (as process 0) and `PROCESSES - 1` children.
async fn run_everywhere(server: &RedisServer, locked: bool) -> (i64, Vec<Hold>) {
    let exe = std::env::current_exe().unwrap();
    let mode = if locked { "locked" } else { "unlocked" };
    let mut children: Vec<_> = (1..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .args(["history_worker", "--exact", "--ignored", "--test-threads=1"])
                .env(WORKER_ENV, format!("{} {process} {mode}", server.url()))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    workload(&server.url(), 0, locked).await;
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
    let raw = redis::Client::open(server.url()).unwrap();
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
fn violations(counter: i64, mut holds: Vec<Hold>) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_tokens_rise_in_grant_order() {
    let server = RedisServer::start();
    let started = Instant::now();
    let (counter, holds) = run_everywhere(&server, true).await;
    eprintln!(
        "{} holds by {PROCESSES} processes × {TASKS} tasks in {:?}",
        holds.len(),
        started.elapsed()
    );
    assert_eq!(holds.len(), PROCESSES * TASKS * ROUNDS);
    let found = violations(counter, holds);
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let server = RedisServer::start();
    let (counter, holds) = run_everywhere(&server, false).await;
    let found = violations(counter, holds);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the negative control must be caught: {found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("overlapping holds")));
}
