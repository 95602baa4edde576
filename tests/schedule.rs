//! Scheduled jobs across hosts, on a real redis-server and on `memory://NAME`: three
//! schedulers with their own clients (and, once, three OS processes) share each job.
//!
//! * each one-second tick runs exactly once, although one host fires 300 ms late and
//!   one starts 500 ms after a tick it finds already run (negative control: the seeds'
//!   design — a lock held only while the job runs — lets the late host re-run finished
//!   ticks);
//! * `SkipIfStillRunning` never overlaps across hosts, `Allow` does (its negative
//!   control), `DelayIfStillRunning` starts a delayed run right after the previous ends;
//! * a run whose lease is lost is aborted and reported; `shutdown()` waits for runs.
//!
//! The worker processes are this test binary re-executed on the ignored
//! `schedule_worker` entry point (as in `tests/history.rs`).
#![cfg(feature = "schedule")]

#[allow(unused_macros)] // `conformance!`: not run here
mod suite;
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::schedule::{Job, JobContext, Outcome, Overlap, Scheduler};
use leasehold::{Client, NoRetry};
use redis::AsyncCommands;
use suite::schedule::{
    Log, Run, bounded, delayed_runs_start_right_after_the_previous, now_ms, once_per_tick,
    skip_never_overlaps_and_allow_does, three_hosts_each_tick_once, wall_ms, window,
};
use support::RedisServer;

const WORKER_ENV: &str = "LEASEHOLD_SCHEDULE_WORKER";
const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_redis_run_each_tick_exactly_once() {
    let server = RedisServer::start();
    three_hosts_each_tick_once(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_memory_run_each_tick_exactly_once() {
    three_hosts_each_tick_once("memory://schedule-three-hosts").await;
}

/// Negative control: the seeds' design — each host takes the job's lock when its timer
/// fires and releases it when the job ends — lets a host whose timer fires 300 ms late
/// run again a tick that another host already finished. The same checker must catch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_claim_a_late_host_reruns_finished_ticks() {
    let log = Log::default();
    let started = now_ms();
    let mut hosts = Vec::new();
    for (host, delay) in [(0usize, 0i64), (1, 300)] {
        let client = Client::open("memory://schedule-negative-control")
            .await
            .unwrap();
        let log = Arc::clone(&log);
        hosts.push(tokio::spawn(async move {
            let mut tick = (now_ms().div_euclid(1000) + 1) * 1000;
            while tick < started + 3_500 {
                let wait = (tick + delay - now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let log = Arc::clone(&log);
                let _ = client
                    .run_exclusive(
                        "naive",
                        Duration::from_secs(5),
                        NoRetry,
                        |token| async move {
                            let started = now_ms();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            log.lock().unwrap().push(Run {
                                host,
                                tick,
                                started,
                                ended: now_ms(),
                                token,
                            });
                        },
                    )
                    .await;
                tick += 1000;
            }
        }));
    }
    for h in hosts {
        bounded(10, h).await.unwrap();
    }
    let runs = log.lock().unwrap().clone();
    let first = runs.iter().map(|r| r.tick).min().unwrap();
    let last = runs.iter().map(|r| r.tick).max().unwrap();
    let found = once_per_tick(&runs, first, last, 1000);
    assert!(
        found.iter().filter(|v| v.contains("ran 2 times")).count() >= 2,
        "the checker must catch the re-runs: {found:?} {runs:?}"
    );
}

/// Entry point of a worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by three_processes_run_each_tick_exactly_once"]
fn schedule_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let (url, host, delay_ms, until_ms) = (
        parts[0].to_owned(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
        parts[3].parse().unwrap(),
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(process_host(
            &url,
            host,
            Duration::from_millis(delay_ms),
            until_ms,
        ));
}

/// One process's host: runs the job until `until_ms` (wall clock), recording each run
/// in Redis as `host tick started_ms token`.
async fn process_host(url: &str, host: usize, delay: Duration, until_ms: i64) {
    let raw = redis::Client::open(url).unwrap();
    let conn = raw.get_multiplexed_async_connection().await.unwrap();
    let client = Client::open(url).await.unwrap();
    let scheduler = Scheduler::new(client)
        .key_prefix("procs:")
        .fire_delay(delay);
    scheduler
        .add(
            Job::every("every-second", SECOND),
            move |ctx: JobContext| {
                let mut conn = conn.clone();
                async move {
                    let record = format!(
                        "{host} {} {} {}",
                        wall_ms(ctx.scheduled_for()),
                        now_ms(),
                        ctx.fencing_token()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let () = conn.rpush("runs", record).await.unwrap();
                }
            },
        )
        .unwrap();
    let handle = scheduler.start();
    tokio::time::sleep(Duration::from_millis((until_ms - now_ms()).max(0) as u64)).await;
    bounded(10, handle.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_run_each_tick_exactly_once() {
    const TICKS: i64 = 8;
    let server = RedisServer::start();
    let started = now_ms();
    let until = started + TICKS * 1000;
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = [(1, 0), (2, 300)]
        .into_iter()
        .map(|(host, delay)| {
            Command::new(&exe)
                .args([
                    "schedule_worker",
                    "--exact",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(
                    WORKER_ENV,
                    format!("{} {host} {delay} {until}", server.url()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    process_host(&server.url(), 0, Duration::ZERO, until).await;
    let deadline = Instant::now() + Duration::from_secs(30);
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
    let lines: Vec<String> = conn.lrange("runs", 0, -1).await.unwrap();
    let runs: Vec<Run> = lines
        .iter()
        .map(|l| {
            let f: Vec<i64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            Run {
                host: f[0] as usize,
                tick: f[1],
                started: f[2],
                ended: f[2],
                token: f[3] as u64,
            }
        })
        .collect();
    // Child processes start a little later than the parent: the window starts at the
    // parent's first tick, which the parent ran whoever else was up.
    let (first, last) = window(started, until);
    let found = once_per_tick(&runs, first, last, 1000);
    assert!(found.is_empty(), "{found:#?}\n{runs:#?}");
    assert!(runs.len() as i64 >= TICKS, "{runs:?}");
    let per_host: Vec<usize> = (0..3)
        .map(|h| runs.iter().filter(|r| r.host == h).count())
        .collect();
    let skew = runs
        .iter()
        .filter(|r| r.tick > first)
        .map(|r| r.started - r.tick)
        .max()
        .unwrap();
    eprintln!(
        "3 processes: {} ticks ran once each; runs per process {per_host:?}; max start skew after the first tick {skew} ms",
        runs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_if_still_running_never_overlaps_across_hosts_on_redis() {
    let server = RedisServer::start();
    skip_never_overlaps_and_allow_does(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_if_still_running_never_overlaps_across_hosts_on_memory() {
    skip_never_overlaps_and_allow_does("memory://schedule-skip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_if_still_running_starts_right_after_the_previous_run_on_redis() {
    let server = RedisServer::start();
    delayed_runs_start_right_after_the_previous(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_if_still_running_starts_right_after_the_previous_run_on_memory() {
    delayed_runs_start_right_after_the_previous("memory://schedule-delay").await;
}

/// Sets a flag when dropped: proves a job's future was dropped.
struct Dropped(Arc<Mutex<Option<Instant>>>);
impl Drop for Dropped {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_lost_is_aborted_and_reported() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let scheduler = Scheduler::new(client).key_prefix("loss:");
    let mut reports = scheduler.subscribe();
    let dropped: Arc<Mutex<Option<Instant>>> = Arc::default();
    let lost_seen: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let (d, l) = (Arc::clone(&dropped), Arc::clone(&lost_seen));
    let later = Arc::new(AtomicBool::new(false));
    scheduler
        .add(
            Job::every("long", Duration::from_secs(1))
                .overlap(Overlap::SkipIfStillRunning)
                .lock_at_most_for(Duration::from_millis(300)),
            move |ctx: JobContext| {
                let (d, l, started_tx) = (Arc::clone(&d), Arc::clone(&l), started_tx.clone());
                let later = Arc::clone(&later);
                async move {
                    let _guard = Dropped(d);
                    let watcher = ctx.clone();
                    tokio::spawn(async move {
                        watcher.lost().await;
                        l.lock().unwrap().get_or_insert(Instant::now());
                    });
                    let _ = started_tx.send(ctx.fencing_token());
                    if !later.swap(true, Ordering::SeqCst) {
                        // The first run lasts 33 leases: only renewal keeps it going.
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }
            },
        )
        .unwrap();
    let handle = scheduler.start();
    let token = tokio::time::timeout(Duration::from_secs(3), started_rx.recv())
        .await
        .unwrap()
        .unwrap();
    // Renewal (every 100 ms) keeps the 300 ms lease for a while…
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert!(server.get("loss:long:running").is_some());
    // …then the running key is deleted behind the run's back.
    let deleted = Instant::now();
    server.cmd_sync(&["DEL", "loss:long:running"]);
    let report = loop {
        let r = tokio::time::timeout(Duration::from_secs(3), reports.recv())
            .await
            .unwrap()
            .unwrap();
        // A tick that falls between the delete and the renewal that sees it
        // finds the key free and runs at once: its report may come first.
        if r.ran() && r.fencing_token == Some(token) {
            break r;
        }
    };
    let Outcome::LeaseLost(why) = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(why.is_not_held(), "{why:?}");
    assert_eq!(report.fencing_token, Some(token));
    let dropped_at = dropped
        .lock()
        .unwrap()
        .expect("the job's future was dropped");
    let lost_at = lost_seen.lock().unwrap().expect("ctx.lost() fired");
    assert!(
        dropped_at.duration_since(deleted) < Duration::from_millis(300),
        "within a renewal interval"
    );
    assert!(lost_at.duration_since(deleted) < Duration::from_millis(300));
    eprintln!(
        "lease loss: run aborted {:?} after its key was deleted; ctx.lost() after {:?}",
        dropped_at.duration_since(deleted),
        lost_at.duration_since(deleted)
    );
    // The scheduler goes on: a later tick runs, with a higher token.
    let next = tokio::time::timeout(Duration::from_secs(3), started_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(next > token);
    tokio::time::timeout(Duration::from_secs(3), handle.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_jobs_and_releases_their_locks() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let scheduler = Scheduler::new(client).key_prefix("stop:");
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let finished: Arc<Mutex<Option<Instant>>> = Arc::default();
    let f = Arc::clone(&finished);
    scheduler
        .add(
            Job::every("work", Duration::from_millis(200)).overlap(Overlap::SkipIfStillRunning),
            move |_ctx: JobContext| {
                let (f, started_tx) = (Arc::clone(&f), started_tx.clone());
                async move {
                    let _ = started_tx.send(Instant::now());
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    *f.lock().unwrap() = Some(Instant::now());
                }
            },
        )
        .unwrap();
    let handle = scheduler.start();
    let started = tokio::time::timeout(Duration::from_secs(2), started_rx.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.get("stop:work:running").is_some(),
        "held while running"
    );
    tokio::time::timeout(Duration::from_secs(3), handle.shutdown())
        .await
        .unwrap();
    let returned = Instant::now();
    let finished = finished
        .lock()
        .unwrap()
        .expect("the run finished before shutdown returned");
    assert!(finished <= returned && finished.duration_since(started) >= Duration::from_millis(600));
    assert_eq!(server.get("stop:work:running"), None, "released");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        started_rx.try_recv().is_err(),
        "nothing fired after shutdown"
    );
}
