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

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold::schedule::{
    Job, JobContext, Outcome, Overlap, Reports, Scheduler, SchedulerHandle, Skip,
};
use leasehold::{Client, NoRetry};
use redis::AsyncCommands;
use support::RedisServer;

const WORKER_ENV: &str = "LEASEHOLD_SCHEDULE_WORKER";
const SECOND: Duration = Duration::from_secs(1);

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn now_ms() -> i64 {
    wall_ms(SystemTime::now())
}

/// One run of a job, as the job recorded it.
#[derive(Debug, Clone, Copy)]
struct Run {
    host: usize,
    /// The tick (scheduled instant), wall-clock ms.
    tick: i64,
    /// When the job body started and ended, wall-clock ms.
    started: i64,
    ended: i64,
    token: u64,
}

type Log = Arc<Mutex<Vec<Run>>>;

/// A job body that records its run after working for `took(tick)`.
fn recorder(
    log: &Log,
    host: usize,
    took: impl Fn(i64) -> Duration + Send + Sync + 'static,
) -> impl Fn(JobContext) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let log = Arc::clone(log);
    let took = Arc::new(took);
    move |ctx: JobContext| {
        let log = Arc::clone(&log);
        let took = Arc::clone(&took);
        Box::pin(async move {
            let started = now_ms();
            let tick = wall_ms(ctx.scheduled_for());
            tokio::time::sleep(took(tick)).await;
            log.lock().unwrap().push(Run {
                host,
                tick,
                started,
                ended: now_ms(),
                token: ctx.fencing_token(),
            });
        })
    }
}

/// A host: its own client on `url`, one scheduler, one job.
async fn host(
    url: &str,
    prefix: &str,
    fire_delay: Duration,
    job: Job,
    run: impl Fn(JobContext) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    + Send
    + Sync
    + 'static,
) -> (SchedulerHandle, Reports) {
    let client = Client::open(url).await.unwrap();
    let scheduler = Scheduler::new(client)
        .key_prefix(prefix)
        .fire_delay(fire_delay);
    let reports = scheduler.subscribe();
    scheduler.add(job, run).unwrap();
    (scheduler.start(), reports)
}

/// `fut`, or a panic after `secs` seconds: no wait in these tests is unbounded.
async fn bounded<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("timed out")
}

fn drain(reports: &mut Reports) -> Vec<leasehold::schedule::Report> {
    std::iter::from_fn(|| reports.try_recv()).collect()
}

/// Every tick from `first` to `last` (inclusive, `period` apart) that did not run
/// exactly once, and every run outside that range.
fn once_per_tick(runs: &[Run], first: i64, last: i64, period: i64) -> Vec<String> {
    let mut found = Vec::new();
    let mut tick = first;
    while tick <= last {
        let hosts: Vec<usize> = runs
            .iter()
            .filter(|r| r.tick == tick)
            .map(|r| r.host)
            .collect();
        if hosts.len() != 1 {
            found.push(format!(
                "tick {tick} ran {} times (hosts {hosts:?})",
                hosts.len()
            ));
        }
        tick += period;
    }
    for r in runs
        .iter()
        .filter(|r| r.tick < first || r.tick > last || (r.tick - first) % period != 0)
    {
        found.push(format!("run of tick {} outside the window", r.tick));
    }
    found
}

/// The ticks at or after `from` and up to `to`, one second apart.
fn window(from: i64, to: i64) -> (i64, i64) {
    let first = from.div_euclid(1000) * 1000;
    let last = to.div_euclid(1000) * 1000;
    (first, last)
}

/// Three hosts on `url` share a one-second job for ~10 ticks: host 1 fires 300 ms late,
/// host 2 starts ~3 s after the others, 500 ms after a tick that host 0 already ran.
async fn three_hosts_each_tick_once(url: &str) {
    const TICKS: i64 = 10;
    let log = Log::default();
    let job = || Job::every("every-second", SECOND);
    let work = |_| Duration::from_millis(20);
    let started = now_ms();
    let (h0, mut r0) = host(url, "t1:", Duration::ZERO, job(), recorder(&log, 0, work)).await;
    let late = Duration::from_millis(300);
    let (h1, mut r1) = host(url, "t1:", late, job(), recorder(&log, 1, work)).await;
    let late_start = (started.div_euclid(1000) + 3) * 1000 + 500;
    tokio::time::sleep(Duration::from_millis((late_start - now_ms()).max(0) as u64)).await;
    let (h2, mut r2) = host(url, "t1:", Duration::ZERO, job(), recorder(&log, 2, work)).await;
    let end = started + TICKS * 1000;
    tokio::time::sleep(Duration::from_millis((end - now_ms()).max(0) as u64)).await;
    let stopped = now_ms();
    // Shut down together, so that no host alone fires the last ticks.
    bounded(10, async {
        tokio::join!(h0.shutdown(), h1.shutdown(), h2.shutdown())
    })
    .await;

    let runs = log.lock().unwrap().clone();
    // Every tick from the one due when host 0 started to the last before the stop.
    let (first, last) = window(started, stopped);
    let found = once_per_tick(&runs, first, last, 1000);
    assert!(found.is_empty(), "{found:#?}\n{runs:#?}");
    assert!(runs.len() as i64 >= TICKS, "{runs:?}");

    let per_host: Vec<usize> = (0..3)
        .map(|h| runs.iter().filter(|r| r.host == h).count())
        .collect();
    // The late host fired every tick, 300 ms after a 20 ms run had finished elsewhere.
    let refused = drain(&mut r1)
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::ClaimedElsewhere))
        .count();
    assert!(refused as i64 >= TICKS - 1, "{refused}");
    // The late-started host fired first the tick still due when it started — run and
    // finished 500 ms earlier by another host — and did not run it again.
    let r2 = drain(&mut r2);
    let first_of_2 = r2.first().expect("host 2 fired");
    assert_eq!(
        wall_ms(first_of_2.scheduled_for),
        late_start - 500,
        "{first_of_2:?}"
    );
    assert!(
        matches!(first_of_2.outcome, Outcome::ClaimedElsewhere),
        "{first_of_2:?}"
    );
    let _ = drain(&mut r0);
    // Fencing tokens rise tick by tick.
    let mut by_tick = runs.clone();
    by_tick.sort_by_key(|r| r.tick);
    assert!(
        by_tick.windows(2).all(|p| p[1].token > p[0].token),
        "{by_tick:?}"
    );
    // Start skew of the ticks fired on time (the first was fired when host 0 started).
    let skew = runs
        .iter()
        .filter(|r| r.tick > first)
        .map(|r| r.started - r.tick)
        .max()
        .unwrap();
    assert!(
        skew < 500,
        "a host without delay ran every tick on time: {runs:?}"
    );
    eprintln!(
        "{url}: {} ticks ran once each; runs per host {per_host:?}; the late host refused \
         {refused} ticks; max start skew after the first tick {skew} ms",
        runs.len(),
    );
}

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

/// Every pair of runs that overlapped in time.
fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|r| r.started);
    let mut found = Vec::new();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.started < a.ended {
                found.push((*a, *b));
            }
        }
    }
    found
}

/// Three hosts run a 200 ms job of 500 ms under `overlap` for ~3 s.
async fn three_hosts_with(
    url: &str,
    prefix: &str,
    overlap: Overlap,
) -> (Vec<Run>, Vec<leasehold::schedule::Report>) {
    let log = Log::default();
    let mut hosts = Vec::new();
    for h in 0..3 {
        let job = Job::every("slow", Duration::from_millis(200)).overlap(overlap);
        hosts.push(
            host(
                url,
                prefix,
                Duration::ZERO,
                job,
                recorder(&log, h, |_| Duration::from_millis(500)),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let mut reports = Vec::new();
    let (handles, mut subs): (Vec<_>, Vec<_>) = hosts.into_iter().unzip();
    bounded(
        10,
        futures::future::join_all(handles.into_iter().map(SchedulerHandle::shutdown)),
    )
    .await;
    for s in &mut subs {
        reports.extend(drain(s));
    }
    let runs = log.lock().unwrap().clone();
    (runs, reports)
}

async fn skip_never_overlaps_and_allow_does(url: &str) {
    let (runs, reports) = three_hosts_with(url, "skip:", Overlap::SkipIfStillRunning).await;
    let skipped = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(Skip::StillRunning)))
        .count();
    assert!(runs.len() >= 4, "{runs:?}");
    assert!(
        skipped >= 6,
        "ticks while a run lasted were skipped: {reports:?}"
    );
    let hosts: std::collections::BTreeSet<usize> = runs.iter().map(|r| r.host).collect();
    let found = overlaps(&runs);
    assert!(
        found.is_empty(),
        "SkipIfStillRunning overlapped: {found:#?}"
    );
    eprintln!(
        "{url}: SkipIfStillRunning: {} runs on hosts {hosts:?}, {skipped} ticks skipped, no overlap",
        runs.len()
    );

    // Negative control: the same workload under `Allow` overlaps, and the checker sees it.
    let (runs, _) = three_hosts_with(url, "allow:", Overlap::Allow).await;
    let found = overlaps(&runs);
    assert!(found.len() >= 5, "Allow must overlap: {runs:?}");
    let (first, last) = (
        runs.iter().map(|r| r.tick).min().unwrap(),
        runs.iter().map(|r| r.tick).max().unwrap(),
    );
    let once = once_per_tick(&runs, first, last, 200);
    assert!(
        once.is_empty(),
        "Allow still runs each tick once: {once:#?}"
    );
    eprintln!(
        "{url}: Allow: {} runs, {} overlapping pairs",
        runs.len(),
        found.len()
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

/// Ticks every 400 ms; even ticks run 600 ms, odd ones 100 ms: every odd tick has to
/// wait ~200 ms for the even one before it, on whichever host it is.
async fn delayed_runs_start_right_after_the_previous(url: &str) {
    let log = Log::default();
    let mut hosts = Vec::new();
    for h in 0..3 {
        let job = Job::every("alternating", Duration::from_millis(400))
            .overlap(Overlap::DelayIfStillRunning);
        let took = |tick: i64| Duration::from_millis(if (tick / 400) % 2 == 0 { 600 } else { 100 });
        hosts.push(host(url, "delay:", Duration::ZERO, job, recorder(&log, h, took)).await);
    }
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let (handles, _subs): (Vec<_>, Vec<_>) = hosts.into_iter().unzip();
    bounded(
        10,
        futures::future::join_all(handles.into_iter().map(SchedulerHandle::shutdown)),
    )
    .await;
    let mut runs = log.lock().unwrap().clone();
    runs.sort_by_key(|r| r.started);
    assert!(overlaps(&runs).is_empty(), "{runs:#?}");
    let (first, last) = (runs[0].tick, runs.last().unwrap().tick);
    let found = once_per_tick(&runs, first, last, 400);
    assert!(found.is_empty(), "no tick skipped or doubled: {found:#?}");
    let mut delayed = Vec::new();
    for pair in runs.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        if next.started > next.tick + 50 {
            // Delayed: it must have started right after the previous run ended.
            delayed.push((next.host, next.started - previous.ended));
        }
    }
    assert!(delayed.len() >= 3, "{runs:#?}");
    let max_gap = delayed.iter().map(|d| d.1).max().unwrap();
    assert!(
        max_gap <= 100,
        "delayed runs started {delayed:?} ms after the previous end"
    );
    let hosts: std::collections::BTreeSet<usize> = runs.iter().map(|r| r.host).collect();
    eprintln!(
        "{url}: DelayIfStillRunning: {} runs on hosts {hosts:?}; {} delayed, each started \
         ≤ {max_gap} ms after the previous run ended ({delayed:?})",
        runs.len(),
        delayed.len()
    );
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
        if r.ran() {
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
