//! The scheduler on tokio's paused clock and the memory store: exact instants, no
//! flakiness. Cross-host behaviour on Redis and in several processes is tested in
//! `tests/schedule.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::timing::{Clock, Millis, from_millis, to_millis};
use super::*;
use crate::Client;

const MS: Duration = Duration::from_millis(1);
/// A multiple of every period used here.
const ORIGIN: Millis = 1_700_000_000_000;

fn clock() -> Clock {
    Clock::tokio(from_millis(ORIGIN))
}

/// Milliseconds since `ORIGIN`.
fn rel(t: SystemTime) -> i64 {
    to_millis(t) - ORIGIN
}

/// Shut down, bounded (on the paused clock, a wait that never ends would hang the test).
async fn stop(handle: SchedulerHandle) {
    tokio::time::timeout(Duration::from_secs(60), handle.shutdown())
        .await
        .expect("shutdown hung");
}

fn drain(reports: &mut Reports) -> Vec<Report> {
    std::iter::from_fn(|| reports.try_recv()).collect()
}

/// (tick, started, ended) of each run, in ms since `ORIGIN`, as the job saw them.
type Runs = Arc<Mutex<Vec<(i64, i64, i64)>>>;

/// A job body that sleeps `took` and records its run.
fn recording(
    runs: &Runs,
    clock: &Clock,
    took: Duration,
) -> impl Fn(JobContext) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    let runs = Arc::clone(runs);
    let clock = clock.clone();
    move |ctx: JobContext| {
        let runs = Arc::clone(&runs);
        let clock = clock.clone();
        Box::pin(async move {
            let started = rel(clock.now());
            tokio::time::sleep(took).await;
            runs.lock()
                .push((rel(ctx.scheduled_for()), started, rel(clock.now())));
        })
    }
}

#[tokio::test(start_paused = true)]
async fn ticks_fire_on_the_epoch_grid_at_their_instants() {
    let clock = clock();
    tokio::time::advance(100 * MS).await; // start 100 ms after a tick: still due
    let c = Client::memory();
    let s = Scheduler::new(c).clock(clock.clone());
    let mut reports = s.subscribe();
    s.add(Job::every("grid", 250 * MS), |_| async {}).unwrap();
    let handle = s.start();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop(handle).await;
    let got: Vec<(i64, i64)> = drain(&mut reports)
        .iter()
        .map(|r| {
            assert!(matches!(r.outcome, Outcome::Completed), "{r:?}");
            (rel(r.scheduled_for), rel(r.started_at.unwrap()))
        })
        .collect();
    assert_eq!(
        got,
        [(0, 100), (250, 250), (500, 500), (750, 750), (1000, 1000)],
        "the due tick at once, then each tick at its instant"
    );
}

#[tokio::test(start_paused = true)]
async fn schedulers_sharing_a_store_run_each_tick_once() {
    let clock = clock();
    let c = Client::memory();
    let runs: Runs = Runs::default();
    let mut subscriptions = Vec::new();
    let mut handles = Vec::new();
    for delay in [0, 0, 300] {
        // Separate clients on one store would be the same: clones share it.
        let s = Scheduler::new(c.clone())
            .clock(clock.clone())
            .fire_delay(delay * MS);
        subscriptions.push(s.subscribe());
        s.add(
            Job::every("shared", Duration::from_secs(1)),
            recording(&runs, &clock, 50 * MS),
        )
        .unwrap();
        handles.push(s.start());
    }
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    for h in handles {
        stop(h).await;
    }
    let ticks: Vec<i64> = runs.lock().iter().map(|r| r.0).collect();
    assert_eq!(
        ticks,
        [0, 1000, 2000, 3000, 4000, 5000],
        "each tick exactly once"
    );
    // The host 300 ms late fired every tick after its first run had finished — plus,
    // at start-up, tick −1000, still due from its point of view — and ran none.
    let late: Vec<(i64, String)> = drain(&mut subscriptions[2])
        .iter()
        .map(|r| (rel(r.scheduled_for), format!("{:?}", r.outcome)))
        .collect();
    let expected: Vec<(i64, String)> = (-1..=5)
        .map(|k| (k * 1000, "ClaimedElsewhere".to_owned()))
        .collect();
    assert_eq!(late, expected);
}

#[tokio::test(start_paused = true)]
async fn run_once_catches_up_the_latest_missed_tick_and_skip_does_not() {
    let clock = clock();
    let c = Client::memory();
    let runs: Runs = Runs::default();
    let first = Scheduler::new(c.clone()).clock(clock.clone());
    first
        .add(
            Job::every("nightly", Duration::from_secs(1)),
            recording(&runs, &clock, MS),
        )
        .unwrap();
    let first = first.start();
    tokio::time::sleep(Duration::from_millis(2_500)).await; // runs 0, 1000, 2000
    stop(first).await;
    // No host up for ticks 3000..=9000.
    tokio::time::sleep(Duration::from_millis(7_000)).await; // now 9_500

    let skip = Scheduler::new(c.clone()).clock(clock.clone());
    let mut skip_reports = skip.subscribe();
    skip.add(
        Job::every("nightly", Duration::from_secs(1)).misfire_grace(200 * MS),
        recording(&runs, &clock, MS),
    )
    .unwrap();
    let skip = skip.start();
    tokio::time::sleep(100 * MS).await;
    stop(skip).await;
    assert!(
        drain(&mut skip_reports).is_empty(),
        "Skip does not look back"
    );

    let catch_up = Scheduler::new(c.clone()).clock(clock.clone());
    let mut reports = catch_up.subscribe();
    catch_up
        .add(
            Job::every("nightly", Duration::from_secs(1))
                .misfire_grace(200 * MS)
                .misfire(Misfire::RunOnce),
            recording(&runs, &clock, MS),
        )
        .unwrap();
    let catch_up = catch_up.start();
    tokio::time::sleep(Duration::from_millis(1_000)).await; // now 10_600
    stop(catch_up).await;
    let got: Vec<(i64, i64, bool)> = drain(&mut reports)
        .iter()
        .map(|r| (rel(r.scheduled_for), rel(r.started_at.unwrap()), r.catch_up))
        .collect();
    assert_eq!(got, [(9000, 9600, true), (10_000, 10_000, false)]);
    assert_eq!(
        runs.lock().len(),
        5,
        "ticks 3000..=8000 folded into the one catch-up run"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_never_ran_has_nothing_to_catch_up() {
    let clock = clock();
    tokio::time::advance(Duration::from_millis(5_500)).await;
    let s = Scheduler::new(Client::memory()).clock(clock.clone());
    let mut reports = s.subscribe();
    s.add(
        Job::every("new", Duration::from_secs(10))
            .misfire(Misfire::RunOnce)
            .misfire_grace(MS),
        |_| async {},
    )
    .unwrap();
    let h = s.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(h).await;
    assert!(drain(&mut reports).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_host_that_wakes_too_late_applies_the_misfire_policy() {
    for (misfire, expect_run) in [(Misfire::Skip, false), (Misfire::RunOnce, true)] {
        let clock = clock();
        let s = Scheduler::new(Client::memory()).clock(clock.clone());
        let mut reports = s.subscribe();
        s.add(
            Job::every("j", Duration::from_secs(1))
                .misfire(misfire)
                .misfire_grace(200 * MS),
            |_| async {},
        )
        .unwrap();
        let h = s.start();
        tokio::time::sleep(500 * MS).await;
        // The whole process stalls for 3 s (the timer fires late): tick 1000, 2000 and
        // 3000 pass unfired; it wakes at 3500, 500 ms after the latest.
        tokio::time::advance(Duration::from_millis(3_000)).await;
        tokio::time::sleep(100 * MS).await;
        stop(h).await;
        let got: Vec<(i64, String)> = drain(&mut reports)
            .iter()
            .map(|r| (rel(r.scheduled_for), format!("{:?}", r.outcome)))
            .collect();
        let late = if expect_run {
            "Completed"
        } else {
            "Skipped(Missed)"
        };
        assert_eq!(
            got,
            [(0, "Completed".into()), (3000, late.into())],
            "{misfire:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn skip_if_still_running_skips_ticks_while_a_run_lasts_or_is_held() {
    let clock = clock();
    let c = Client::memory();
    let runs: Runs = Runs::default();
    let mut handles = Vec::new();
    let mut all = Vec::new();
    for _ in 0..2 {
        let s = Scheduler::new(c.clone()).clock(clock.clone());
        all.push(s.subscribe());
        s.add(
            Job::every("single", 100 * MS).overlap(Overlap::SkipIfStillRunning),
            recording(&runs, &clock, 250 * MS),
        )
        .unwrap();
        handles.push(s.start());
    }
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    for h in handles {
        stop(h).await;
    }
    let runs = runs.lock().clone();
    assert_eq!(
        runs,
        [
            (0, 0, 250),
            (300, 300, 550),
            (600, 600, 850),
            (900, 900, 1150)
        ],
        "ticks 100, 200, 400, … skipped while a run lasted, on either host"
    );
    let mut skipped: Vec<i64> = all
        .iter_mut()
        .flat_map(drain)
        .filter(|r| matches!(r.outcome, Outcome::Skipped(Skip::StillRunning)))
        .map(|r| rel(r.scheduled_for))
        .collect();
    skipped.sort();
    // (1100: the second scheduler still fires while the first one's shutdown waits.)
    assert_eq!(skipped, [100, 200, 400, 500, 700, 800, 1000, 1100]);

    // `lock_at_least_for` keeps others out after a short run.
    let runs: Runs = Runs::default();
    let s = Scheduler::new(c.clone()).clock(clock.clone());
    s.add(
        Job::every("held", 100 * MS)
            .overlap(Overlap::SkipIfStillRunning)
            .lock_at_least_for(230 * MS),
        recording(&runs, &clock, 10 * MS),
    )
    .unwrap();
    let h = s.start();
    tokio::time::sleep(Duration::from_millis(650)).await;
    stop(h).await;
    let ticks: Vec<i64> = runs.lock().iter().map(|r| r.0).collect();
    let gaps: Vec<i64> = ticks.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(
        gaps,
        [300, 300],
        "held 230 ms after each start of a 10 ms run: {ticks:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn delay_if_still_running_starts_the_next_run_when_the_previous_ends() {
    let clock = clock();
    let c = Client::memory();
    let runs: Runs = Runs::default();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let s = Scheduler::new(c.clone()).clock(clock.clone());
        s.add(
            Job::every("delayed", 200 * MS).overlap(Overlap::DelayIfStillRunning),
            recording(&runs, &clock, 300 * MS),
        )
        .unwrap();
        handles.push(s.start());
    }
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let stopping = Instant::now();
    for h in handles {
        stop(h).await;
    }
    let runs = runs.lock().clone();
    // Runs back to back, never overlapping: 300 ms each over ~1 s. (Which delayed tick
    // goes next across hosts is the order their polls find the lock free, not tick
    // order: `across_hosts_a_later_delayed_tick_can_go_before_a_waiting_one`.)
    let ticks: Vec<i64> = runs.iter().map(|r| r.0).collect();
    assert!(
        ticks.len() >= 4 && ticks[..4] == [0, 200, 400, 600],
        "{ticks:?}"
    );
    for pair in runs.windows(2) {
        let (ended, next_started) = (pair[0].2, pair[1].1);
        assert!(
            (0..=25).contains(&(next_started - ended)),
            "the delayed run starts within one poll of the previous end: {runs:?}"
        );
    }
    assert!(
        stopping.elapsed() >= 150 * MS,
        "shutdown waited for the run in progress"
    );
}

#[tokio::test(start_paused = true)]
async fn allow_overlaps_and_failures_and_panics_are_reported_not_fatal() {
    let clock = clock();
    let runs: Runs = Runs::default();
    let s = Scheduler::new(Client::memory()).clock(clock.clone());
    let mut reports = s.subscribe();
    s.add(
        Job::every("overlapping", 100 * MS),
        recording(&runs, &clock, 250 * MS),
    )
    .unwrap();
    let n = Arc::new(Mutex::new(0));
    s.add(Job::every("flaky", 100 * MS), move |ctx: JobContext| {
        let n = Arc::clone(&n);
        async move {
            let i = {
                let mut n = n.lock();
                *n += 1;
                *n
            };
            match i {
                1 => panic!("boom at {}", rel(ctx.scheduled_for())),
                2 => Err(std::io::Error::other("disk full")),
                _ => Ok(()),
            }
        }
    })
    .unwrap();
    let h = s.start();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        h.last_report("flaky").map(|r| format!("{:?}", r.outcome)),
        Some("Completed".into())
    );
    stop(h).await;
    let runs = runs.lock().clone();
    assert!(
        runs.windows(2).any(|p| p[1].1 < p[0].2),
        "Allow runs overlap: {runs:?}"
    );
    let flaky: Vec<String> = drain(&mut reports)
        .into_iter()
        .filter(|r| r.job == "flaky")
        .map(|r| format!("{:?}", r.outcome))
        .collect();
    assert_eq!(
        flaky,
        [
            "Panicked(\"boom at 0\")",
            "Failed(\"disk full\")",
            "Completed",
            "Completed",
            "Completed"
        ]
    );
}

/// The documented limit of `DelayIfStillRunning` across hosts: waiting ticks go in the
/// order their polls find the running lock free, not tick order. Host A runs tick 0 for
/// 670 ms. Host B (started at 100 ms, its clock 5 ms ahead) claims tick 340 at 335 ms and
/// waits, polling at 335 + 25k ms: 660, 685. Host C (started at 500 ms, its clock 8 ms
/// ahead) fires tick 680 at 672 ms and finds the lock free before B's poll at 685.
/// Tick 340, still waiting on B at shutdown, is reported. (Release notifications are
/// off, so waiters poll; with them on, the window is a notification's latency.)
#[tokio::test(start_paused = true)]
async fn across_hosts_a_later_delayed_tick_can_go_before_a_waiting_one() {
    let c = Client::builder().notify(false).memory();
    let runs: Runs = Runs::default();
    let reference = clock();
    // Each clock counts from its creation: all are made now.
    let [clock_a, clock_b, clock_c] =
        [0, 5, 8].map(|ahead| Clock::tokio(from_millis(ORIGIN + ahead)));
    let host = |clock: Clock| {
        let s = Scheduler::new(c.clone()).clock(clock);
        s.add(
            Job::every("delayed", 340 * MS).overlap(Overlap::DelayIfStillRunning),
            recording(&runs, &reference, 670 * MS),
        )
        .unwrap();
        s
    };
    let a = host(clock_a).start();
    tokio::time::sleep(100 * MS).await;
    let b = host(clock_b);
    let mut reports_b = b.subscribe();
    let b = b.start();
    tokio::time::sleep(400 * MS).await;
    let c = host(clock_c).start();
    tokio::time::sleep(400 * MS).await; // 900 ms: tick 680 runs on C, tick 340 waits on B
    for h in [b, a, c] {
        stop(h).await;
    }
    let started: Vec<(i64, i64)> = runs.lock().iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(started, [(0, 0), (680, 672)], "tick 680 went first");
    let got: Vec<(i64, String)> = drain(&mut reports_b)
        .iter()
        .map(|r| (rel(r.scheduled_for), format!("{:?}", r.outcome)))
        .collect();
    assert_eq!(
        got,
        [
            (0, "ClaimedElsewhere".to_owned()),
            (680, "ClaimedElsewhere".to_owned()),
            (340, "Skipped(ShuttingDown)".to_owned()),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_running_jobs_and_abandons_waiting_ticks() {
    let clock = clock();
    let c = Client::memory();
    let runs: Runs = Runs::default();
    let s = Scheduler::new(c.clone())
        .clock(clock.clone())
        .key_prefix("app:");
    let mut reports = s.subscribe();
    s.add(
        Job::every("long", 100 * MS).overlap(Overlap::DelayIfStillRunning),
        recording(&runs, &clock, 700 * MS),
    )
    .unwrap();
    let h = s.start();
    tokio::time::sleep(Duration::from_millis(150)).await; // tick 0 runs, tick 100 waits
    assert_eq!(h.in_flight(), 2);
    let started = Instant::now();
    stop(h).await;
    assert_eq!(started.elapsed(), 550 * MS, "returned when the run ended");
    assert_eq!(runs.lock().clone(), [(0, 0, 700)]);
    let got: Vec<String> = drain(&mut reports)
        .iter()
        .map(|r| format!("{:?}", r.outcome))
        .collect();
    assert_eq!(got, ["Skipped(ShuttingDown)", "Completed"]);
    // The running lock was released; nothing fires any more.
    let _held_until_expiry = c
        .try_lock("app:long:running", "me", MS * 100)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.lock().len(), 1);
    assert!(
        reports.recv().await.is_none(),
        "the channel closes once all is done"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_firing_but_lets_the_run_finish() {
    let clock = clock();
    let runs: Runs = Runs::default();
    let s = Scheduler::new(Client::memory()).clock(clock.clone());
    s.add(
        Job::every("j", 100 * MS),
        recording(&runs, &clock, 250 * MS),
    )
    .unwrap();
    let h = s.start();
    tokio::time::sleep(50 * MS).await;
    drop(h);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.lock().clone(), [(0, 0, 250)]);
}

#[tokio::test(start_paused = true)]
async fn add_rejects_bad_jobs_and_duplicate_names() {
    let s = Scheduler::new(Client::memory());
    s.add(Job::every("a", MS), |_| async {}).unwrap();
    for job in [
        Job::every("a", MS),
        Job::every("b", Duration::ZERO),
        Job::every("", MS),
    ] {
        let err = s.add(job, |_| async {}).unwrap_err();
        assert!(err.is_invalid_argument(), "{err:?}");
    }
}

#[test]
fn public_types_are_send_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Scheduler>();
    assert::<SchedulerHandle>();
    assert::<Job>();
    assert::<JobContext>();
    assert::<Report>();
    assert::<Reports>();
}
