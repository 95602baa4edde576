//! The exclusion history checker: workers in several tasks and several OS processes do
//! a read-modify-write on a counter in the store under the lock and record every hold as
//! (token, acquired, released). The published checker
//! (`leasehold::testing::history::violations`) asserts no lost updates, no overlapping
//! holds, and fencing tokens strictly rising in grant order. A negative control runs the
//! same workload without the lock and must be caught.
//!
//! The worker processes are the test binary re-executed on its ignored `history_worker`
//! entry point, which calls [`worker`] (so no extra binary ships with the crate). A
//! binary that uses the checker defines it:
//!
//! ```ignore
//! #[test]
//! #[ignore = "worker entry point, run by the history tests in child processes"]
//! fn history_worker() {
//!     suite::history::worker();
//! }
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold::testing::history::{Hold, violations};
use leasehold::{Client, NonFixedInterval};
use redis::AsyncCommands;

pub const PROCESSES: usize = 3;
pub const TASKS: usize = 4;
pub const ROUNDS: usize = 8;
const WORKER_ENV: &str = "LEASEHOLD_HISTORY_WORKER";

/// Where the workload runs: one Redis server, a cluster, or etcd (the counter and the
/// history live there too).
#[derive(Debug, Clone)]
pub enum Target {
    Redis(String),
    Cluster(Vec<String>),
    /// `etcd://host:port`, and a namespace on it (the lock client's key prefix, and the
    /// start of the counter's and the records' keys): the binary's one server is shared.
    Etcd(String, String),
    /// `postgres://…`, and a namespace on it (the lock client's key prefix; the counter
    /// and the records are rows of tables of their own, under that namespace).
    Postgres(String, String),
}

impl Target {
    fn to_spec(&self) -> String {
        match self {
            Target::Redis(url) => format!("redis={url}"),
            Target::Cluster(urls) => format!("cluster={}", urls.join(",")),
            Target::Etcd(url, namespace) => format!("etcd={url}|{namespace}"),
            Target::Postgres(url, namespace) => format!("postgres={url}|{namespace}"),
        }
    }

    fn from_spec(spec: &str) -> Target {
        match spec.split_once('=') {
            Some(("redis", url)) => Target::Redis(url.to_owned()),
            Some(("cluster", urls)) => {
                Target::Cluster(urls.split(',').map(str::to_owned).collect())
            }
            Some(("etcd", target)) => {
                let (url, namespace) = target.split_once('|').expect("etcd=URL|NAMESPACE");
                Target::Etcd(url.to_owned(), namespace.to_owned())
            }
            Some(("postgres", target)) => {
                let (url, namespace) = target.split_once('|').expect("postgres=URL|NAMESPACE");
                Target::Postgres(url.to_owned(), namespace.to_owned())
            }
            _ => panic!("bad history target {spec:?}"),
        }
    }

    async fn client(&self) -> Client {
        match self {
            Target::Redis(url) => Client::open(url).await.unwrap(),
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => {
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                Client::open_cluster(&urls).await.unwrap()
            }
            #[cfg(not(feature = "cluster"))]
            Target::Cluster(_) => unreachable!("the cluster feature is off"),
            Target::Etcd(url, namespace) | Target::Postgres(url, namespace) => Client::builder()
                .key_prefix(namespace.as_str())
                .open(url)
                .await
                .unwrap(),
        }
    }

    async fn data(&self) -> Data {
        match self {
            Target::Redis(url) => Data::Single(
                redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
            Target::Cluster(urls) => Data::Cluster(
                redis::cluster::ClusterClient::new(urls.clone())
                    .unwrap()
                    .get_async_connection()
                    .await
                    .unwrap(),
            ),
            #[cfg(feature = "etcd")]
            Target::Etcd(url, namespace) => Data::Etcd(
                Box::new(
                    etcd_client::Client::connect([url.trim_start_matches("etcd://")], None)
                        .await
                        .unwrap(),
                ),
                namespace.clone(),
            ),
            #[cfg(not(feature = "etcd"))]
            Target::Etcd(..) => unreachable!("the etcd feature is off"),
            Target::Postgres(url, namespace) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                // One creator at a time (the worker processes start together).
                client
                    .batch_execute(
                        "BEGIN; SELECT pg_advisory_xact_lock(42); \
                         CREATE TABLE IF NOT EXISTS history_counter (ns text PRIMARY KEY, n int8); \
                         CREATE TABLE IF NOT EXISTS history_records (ns text, line text); COMMIT;",
                    )
                    .await
                    .unwrap();
                Data::Postgres(Box::new(client), namespace.clone())
            }
        }
    }
}

/// A plain connection for the counter and the history.
enum Data {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
    /// The counter under `NAMESPACE history-counter`, each record a key under
    /// `NAMESPACE history/`.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>, String),
    /// Rows of `history_counter` and `history_records` under a namespace.
    Postgres(Box<tokio_postgres::Client>, String),
}

impl Data {
    async fn counter(&mut self) -> i64 {
        let n: Option<i64> = match self {
            Data::Single(c) => c.get("history-counter").await.unwrap(),
            Data::Cluster(c) => c.get("history-counter").await.unwrap(),
            #[cfg(feature = "etcd")]
            Data::Etcd(c, ns) => c
                .get(format!("{ns}history-counter"), None)
                .await
                .unwrap()
                .kvs()
                .first()
                .map(|kv| kv.value_str().unwrap().parse().unwrap()),
            Data::Postgres(c, ns) => c
                .query_opt("SELECT n FROM history_counter WHERE ns = $1", &[ns])
                .await
                .unwrap()
                .map(|row| row.get(0)),
        };
        n.unwrap_or(0)
    }

    async fn set_counter(&mut self, n: i64) {
        match self {
            Data::Single(c) => c.set::<_, _, ()>("history-counter", n).await.unwrap(),
            Data::Cluster(c) => c.set::<_, _, ()>("history-counter", n).await.unwrap(),
            #[cfg(feature = "etcd")]
            Data::Etcd(c, ns) => {
                let key = format!("{ns}history-counter");
                c.put(key, n.to_string(), None).await.unwrap();
            }
            Data::Postgres(c, ns) => {
                c.execute(
                    "INSERT INTO history_counter (ns, n) VALUES ($1, $2) \
                     ON CONFLICT (ns) DO UPDATE SET n = excluded.n",
                    &[ns, &n],
                )
                .await
                .unwrap();
            }
        }
    }

    async fn record(&mut self, line: String) {
        match self {
            Data::Single(c) => c.rpush::<_, _, ()>("history", line).await.unwrap(),
            Data::Cluster(c) => c.rpush::<_, _, ()>("history", line).await.unwrap(),
            #[cfg(feature = "etcd")]
            Data::Etcd(c, ns) => {
                let key = format!("{ns}history/{}", leasehold::random_value());
                c.put(key, line, None).await.unwrap();
            }
            Data::Postgres(c, ns) => {
                c.execute(
                    "INSERT INTO history_records (ns, line) VALUES ($1, $2)",
                    &[ns, &line],
                )
                .await
                .unwrap();
            }
        }
    }

    async fn records(&mut self) -> Vec<String> {
        match self {
            Data::Single(c) => c.lrange("history", 0, -1).await.unwrap(),
            Data::Cluster(c) => c.lrange("history", 0, -1).await.unwrap(),
            #[cfg(feature = "etcd")]
            Data::Etcd(c, ns) => c
                .get(
                    format!("{ns}history/"),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .unwrap()
                .kvs()
                .iter()
                .map(|kv| kv.value_str().unwrap().to_owned())
                .collect(),
            Data::Postgres(c, ns) => c
                .query("SELECT line FROM history_records WHERE ns = $1", &[ns])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect(),
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The workload of one process: `TASKS` tasks × `ROUNDS` read-modify-writes.
async fn workload(target: &Target, process: usize, locked: bool) {
    let client = target.client().await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let mut data = target.data().await;
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
                let n = data.counter().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                data.set_counter(n + 1).await;
                let released_ns = now_ns();
                let token = match &lock {
                    Some(l) => l.fencing_token(),
                    // Control: a token from a counter nobody coordinates on.
                    None => (process * 1_000_000 + task * 1_000 + round) as u64,
                };
                if let Some(lock) = lock {
                    lock.unlock().await.unwrap();
                }
                data.record(format!("{token} {acquired_ns} {released_ns}"))
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The worker process's entry point: runs the workload its parent asked for, if any.
pub fn worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let target = Target::from_spec(parts.next().unwrap());
    let process: usize = parts.next().unwrap().parse().unwrap();
    let locked = parts.next().unwrap() == "locked";
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(workload(&target, process, locked));
}

/// Run the workload in this process (as process 0) and `PROCESSES - 1` children; the
/// final counter and every hold recorded.
pub async fn run_everywhere(target: &Target, locked: bool) -> (i64, Vec<Hold>) {
    let exe = std::env::current_exe().unwrap();
    let mode = if locked { "locked" } else { "unlocked" };
    let mut children: Vec<_> = (1..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .args(["history_worker", "--exact", "--ignored", "--test-threads=1"])
                .env(WORKER_ENV, format!("{} {process} {mode}", target.to_spec()))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    workload(target, 0, locked).await;
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
    let mut data = target.data().await;
    let counter = data.counter().await;
    let holds = data
        .records()
        .await
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

/// The checker on `target` with the lock: no violation, every hold recorded.
pub async fn holds_never_overlap(target: &Target) {
    let started = Instant::now();
    let (counter, holds) = run_everywhere(target, true).await;
    eprintln!(
        "FIGURE history: {} holds by {PROCESSES} processes × {TASKS} tasks in {:?}, {:?}",
        holds.len(),
        started.elapsed(),
        target
    );
    assert_eq!(holds.len(), PROCESSES * TASKS * ROUNDS);
    let found = violations(counter, holds, true);
    assert!(found.is_empty(), "{found:#?}");
}

/// The negative control on `target`: the same workload without the lock is caught.
pub async fn the_checker_catches_no_lock(target: &Target) {
    let (counter, holds) = run_everywhere(target, false).await;
    let found = violations(counter, holds, true);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the negative control must be caught: {found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("overlapping holds")));
}
