//! Redlock against five real redis-servers, started once for this binary and killed when
//! it ends. The binary has its own small harness (`harness = false` in Cargo.toml):
//! libtest gives no place to stop servers shared by every test, so they would outlive
//! the run. Cases run one at a time, each on a fresh tokio runtime, with a time limit.
//!
//! ```text
//! cargo test --test redlock                      # every case
//! cargo test --test redlock -- clogged           # cases whose name contains "clogged"
//! cargo test --test redlock -- --list
//! ```
//!
//! Lines starting with `FIGURE` are the measurements the report quotes.
//!
//! The history checker's worker processes are this binary re-executed with
//! `LEASEHOLD_REDLOCK_WORKER` set.

mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold::redlock::Redlock;
use leasehold::testing::history::{Hold, violations};
use leasehold::{Error, NoRetry, NonFixedInterval};
use redis::AsyncCommands;
use support::{FaultProxy, RedisServer};

const N: usize = 5;
const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
/// Per-attempt timeout where nodes are clogged: every clogged node costs this much.
const TIMEOUT: Duration = Duration::from_millis(100);
/// No case may take longer.
const CASE_LIMIT: Duration = Duration::from_secs(120);
const WORKER_ENV: &str = "LEASEHOLD_REDLOCK_WORKER";

// ---------------------------------------------------------------------------------------
// The five nodes
// ---------------------------------------------------------------------------------------

struct Nodes {
    servers: Vec<Mutex<RedisServer>>,
}

impl Nodes {
    fn start() -> Nodes {
        Nodes {
            servers: (0..N).map(|_| Mutex::new(RedisServer::start())).collect(),
        }
    }

    fn server(&self, i: usize) -> std::sync::MutexGuard<'_, RedisServer> {
        self.servers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn urls(&self) -> Vec<String> {
        (0..N).map(|i| self.server(i).url()).collect()
    }

    fn ports(&self) -> Vec<u16> {
        (0..N).map(|i| self.server(i).port()).collect()
    }

    /// A Redlock straight to the five servers.
    async fn redlock(&self) -> Redlock {
        open(&self.urls()).await
    }

    /// `GET key` on node `i`.
    fn get(&self, i: usize, key: &str) -> Option<String> {
        self.server(i).get(key)
    }

    /// The nodes where `key` exists.
    fn holding(&self, key: &str) -> Vec<usize> {
        (0..N).filter(|&i| self.get(i, key).is_some()).collect()
    }

    fn keys(&self, i: usize, pattern: &str) -> Vec<String> {
        self.server(i).keys(pattern)
    }

    fn pttl(&self, i: usize, key: &str) -> i64 {
        match self.server(i).cmd_sync(&["PTTL", key]) {
            redis::Value::Int(ms) => ms,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn flush_all(&self) {
        for i in 0..N {
            self.server(i).cmd_sync(&["FLUSHALL"]);
        }
    }

    fn stop(&self, i: usize) {
        self.server(i).stop();
    }

    fn start_again(&self, i: usize) {
        let mut server = self.server(i);
        if !server.is_running() {
            server.start_again();
        }
    }

    /// Every stopped node running again (a case that stops nodes calls it when done,
    /// and so does the harness after a failed case).
    fn heal(&self) {
        (0..N).for_each(|i| self.start_again(i));
    }
}

async fn open(urls: &[String]) -> Redlock {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Redlock::builder()
        .default_timeout(TIMEOUT)
        .open(&urls)
        .await
        .expect("open the Redlock")
}

/// Load the scripts into every node's cache (a fresh server answers the first `EVALSHA`
/// with `NOSCRIPT`), so that an attempt under test is one round trip per node.
async fn warm_up(redlock: &Redlock) {
    let lock = redlock.try_lock("warm-up", "v", SEC).await.unwrap();
    lock.unlock().await.unwrap();
}

/// Polls `f` every 10 ms for up to `limit`; whether it became true.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(10 * MS).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// Conformance: the contract's lines that apply to Redlock (all but fencing tokens)
// ---------------------------------------------------------------------------------------

macro_rules! redlock_conformance {
    ($($case:ident),* $(,)?) => {
        mod conformance {
            $(
                pub async fn $case(nodes: &super::Nodes) {
                    nodes.flush_all();
                    let redlock = nodes.redlock().await;
                    leasehold::testing::conformance::cases::$case(&redlock).await;
                }
            )*
        }
        const CONFORMANCE: &[(&str, AsyncCase)] = &[
            $((concat!("conformance::", stringify!($case)), |n| Box::pin(conformance::$case(n))),)*
        ];
    };
}

redlock_conformance!(
    acquire_then_contention_is_not_obtained,
    same_value_reacquires_rearms_and_keeps_its_token,
    refresh_rearms_the_original_expiration,
    refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone,
    ttl_reports_remaining_time_and_none_when_not_held,
    unlock_releases_and_a_stale_unlock_is_not_held,
    retry_waits_until_the_holder_releases,
    contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt,
    iterators_and_custom_strategies_plug_in,
    bad_input_is_rejected_before_any_io,
    many_tasks_never_hold_one_key_at_once,
    debug_output_never_shows_the_lock_value,
);

// ---------------------------------------------------------------------------------------
// Quorum: every subset of clogged nodes
// ---------------------------------------------------------------------------------------

/// After go-redsync's `TestMutexQuorum`: for each of the 32 subsets of the five nodes,
/// clog those nodes (a proxy in front of each holds every byte, both ways, as a
/// partition stalls a TCP stream) and take the lock once. It must succeed iff a majority
/// is reachable; a failure must be `Error::Quorum` with exact counts (never
/// `NotObtained`); and once the clogged nodes deliver what they held — the attempt, then
/// its cleanup — no node may be left with the key.
async fn a_lock_succeeds_iff_a_majority_is_reachable_for_every_subset_of_clogged_nodes(
    nodes: &Nodes,
) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let (mut won, mut refused, mut slowest_win, mut slowest_refusal) =
        (0, 0, Duration::ZERO, Duration::ZERO);
    for mask in 0u32..1 << N {
        let redlock = open(&urls).await;
        warm_up(&redlock).await;
        let clogged: Vec<usize> = (0..N).filter(|i| mask & (1 << i) != 0).collect();
        let reachable = (N - clogged.len()) as u32;
        for &i in &clogged {
            proxies[i].blackhole(true);
        }
        let key = format!("mask-{mask:02}");
        let started = Instant::now();
        let locked = redlock.lock(&key, "v", 10 * SEC, TIMEOUT, NoRetry).await;
        let took = started.elapsed();
        match locked {
            Ok(lock) => {
                assert!(
                    reachable >= 3,
                    "mask {mask:05b}: locked with {reachable} nodes"
                );
                won += 1;
                slowest_win = slowest_win.max(took);
                lock.unlock().await.expect("a majority releases");
            }
            Err(Error::Quorum {
                granted,
                held,
                failed,
                errors,
            }) => {
                assert!(
                    reachable < 3,
                    "mask {mask:05b}: refused with {reachable} nodes"
                );
                assert_eq!(
                    (granted, held, failed),
                    (reachable, 0, clogged.len() as u32),
                    "mask {mask:05b}"
                );
                let failed_nodes: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
                let mut sorted = failed_nodes.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, clogged, "mask {mask:05b}: {errors:?}");
                assert!(errors.iter().all(|(_, e)| e.is_timeout()), "{errors:?}");
                refused += 1;
                slowest_refusal = slowest_refusal.max(took);
            }
            Err(e) => panic!("mask {mask:05b}: expected Error::Quorum, got {e:?}"),
        }
        // While clogged, the reachable nodes were cleaned up already.
        for i in (0..N).filter(|i| !clogged.contains(i)) {
            assert_eq!(
                nodes.get(i, &key),
                None,
                "mask {mask:05b}: node {i} kept the key"
            );
        }
        for &i in &clogged {
            proxies[i].blackhole(false);
        }
        let clean = eventually(5 * SEC, || nodes.holding(&key).is_empty()).await;
        assert!(
            clean,
            "mask {mask:05b}: the key stayed on nodes {:?} after the clogged ones delivered",
            nodes.holding(&key)
        );
    }
    assert_eq!((won, refused), (16, 16));
    println!(
        "FIGURE redlock_masks: 16/16 majority masks locked (slowest {:.0} ms), 16/16 minority \
         masks refused with Error::Quorum (slowest {:.0} ms, attempt + cleanup), 0 keys left on \
         any node after the clogged nodes delivered (timeout {} ms)",
        ms(slowest_win),
        ms(slowest_refusal),
        TIMEOUT.as_millis()
    );
}

/// A node that never answered must not keep a key the failed attempt left there, even
/// when the cleanup reaches it on a connection that was replaced: it refuses the attempt
/// when it finally arrives.
async fn a_late_arrival_of_a_failed_attempt_is_refused_by_its_node(nodes: &Nodes) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let redlock = open(&urls).await;
    warm_up(&redlock).await;
    // Nodes 0..3 stall their current connections for good; new ones work.
    for proxy in &proxies[..3] {
        proxy.stall_existing();
    }
    let err = redlock
        .lock("late", "v", 10 * SEC, TIMEOUT, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_quorum(), "{err:?}");
    // The cleanup is retried (detached) until it reaches every node, on fresh connections.
    let recorded = eventually(10 * SEC, || {
        (0..3).all(|i| !nodes.keys(i, "late:aborted*").is_empty())
    })
    .await;
    assert!(
        recorded,
        "the abort reached the stalled nodes on a new connection"
    );
    // The stalled connections deliver the attempt now: refused.
    for proxy in &proxies[..3] {
        proxy.heal_existing();
    }
    tokio::time::sleep(300 * MS).await;
    assert_eq!(nodes.holding("late"), Vec::<usize>::new());
}

/// A grant the client does not believe (its unlock of the same key and value was sent
/// while the re-lock was in flight, so the grant may be of the key the unlock deleted)
/// is tried again at once and aborted when the call ends holding the key. Every node
/// answered it: the abort needs no record of aborted attempts on any node. (Before, the
/// nodes' answers to an attempt that won were forgotten, and the abort left a record on
/// every node — `contention_leaves_no_attempt_records` failed about one run in ten.)
async fn a_disbelieved_grant_leaves_no_attempt_records(nodes: &Nodes) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let redlock = open(&urls).await;
    warm_up(&redlock).await;
    let held = redlock
        .try_lock("disbelieved", "v", 10 * SEC)
        .await
        .unwrap();
    for proxy in &proxies {
        proxy.set_delay(30 * MS);
    }
    let relock = redlock.lock("disbelieved", "v", 10 * SEC, SEC, NoRetry);
    let unlock = async {
        tokio::time::sleep(10 * MS).await; // the re-lock is on its way
        held.unlock().await
    };
    let (relocked, unlocked) = tokio::join!(relock, unlock);
    unlocked.expect("the unlock released the key the re-lock re-armed");
    let relocked = relocked.expect("tried again at once: the key was free");
    for proxy in &proxies {
        proxy.set_delay(Duration::ZERO);
    }
    // The detached abort of the disbelieved attempt has long run by then.
    tokio::time::sleep(500 * MS).await;
    assert_eq!(nodes.holding("disbelieved"), vec![0, 1, 2, 3, 4]);
    for i in 0..N {
        assert_eq!(
            nodes.keys(i, "disbelieved:aborted*"),
            Vec::<String>::new(),
            "node {i} keeps a record of an attempt it answered"
        );
    }
    relocked.unlock().await.unwrap();
}

/// A failed same-value re-lock while this Redlock holds the key never releases it.
async fn a_failed_same_value_relock_keeps_the_lock(nodes: &Nodes) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let redlock = open(&urls).await;
    warm_up(&redlock).await;
    let held = redlock.try_lock("relock", "v", 10 * SEC).await.unwrap();
    for proxy in &proxies[2..] {
        proxy.blackhole(true);
    }
    let err = redlock
        .lock("relock", "v", 10 * SEC, TIMEOUT, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_quorum(), "{err:?}");
    assert_eq!(nodes.holding("relock"), vec![0, 1, 2, 3, 4]);
    for proxy in &proxies[2..] {
        proxy.blackhole(false);
    }
    tokio::time::sleep(300 * MS).await;
    assert_eq!(nodes.holding("relock"), vec![0, 1, 2, 3, 4]);
    assert!(held.valid_for().is_some());
    held.unlock().await.unwrap();
    assert_eq!(nodes.holding("relock"), Vec::<usize>::new());
}

/// Contention costs no record of aborted attempts (every node answered, so nothing can
/// arrive late), and released locks leave no claims behind.
async fn contention_leaves_no_attempt_records(nodes: &Nodes) {
    let redlock = nodes.redlock().await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let redlock = redlock.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let lock = redlock
                    .lock(
                        "contended",
                        &format!("task-{task}"),
                        10 * SEC,
                        SEC,
                        NonFixedInterval::new(2 * MS, 100_000),
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(MS).await;
                lock.unlock().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..N {
        assert_eq!(nodes.get(i, "contended"), None, "node {i}");
        assert_eq!(
            nodes.keys(i, "contended:aborted*"),
            Vec::<String>::new(),
            "node {i} keeps a record of aborted attempts"
        );
        assert_eq!(
            nodes.keys(i, "contended:claims*"),
            Vec::<String>::new(),
            "node {i} keeps the claims of a released lock"
        );
    }
}

/// An attempt that wins a quorum only after its validity is gone is a failure, and an
/// expiration that leaves no validity at all is refused before any I/O.
async fn a_quorum_won_after_the_validity_is_gone_is_a_failure(nodes: &Nodes) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let redlock = open(&urls).await;
    warm_up(&redlock).await;
    for proxy in &proxies {
        proxy.set_delay(20 * MS); // 40 ms round trips
    }
    // 30 ms − (0.3 + 2) ms of drift = 27.7 ms of validity: less than a round trip.
    let err = redlock
        .lock("slow", "v", 30 * MS, SEC, NoRetry)
        .await
        .unwrap_err();
    match err {
        Error::Quorum {
            granted, failed, ..
        } => assert_eq!((granted, failed), (0, 5)),
        other => panic!("expected Error::Quorum, got {other:?}"),
    }
    // A validity that outlasts the round trips is granted, in one round trip: the five
    // nodes are asked at once, not one after the other (that would take 200 ms).
    let started = Instant::now();
    let lock = redlock.lock("slow", "v", SEC, SEC, NoRetry).await.unwrap();
    let took = started.elapsed();
    let valid = lock.valid_for().unwrap();
    assert!(
        valid < SEC - 40 * MS,
        "the round trip is subtracted: {valid:?}"
    );
    let started = Instant::now();
    lock.unlock().await.unwrap();
    let unlocked = started.elapsed();
    assert!(
        took < 80 * MS,
        "one round trip of 40 ms, not five: {took:?}"
    );
    assert!(
        unlocked < 80 * MS,
        "one round trip of 40 ms, not five: {unlocked:?}"
    );
    println!(
        "FIGURE redlock_fan_out: five nodes 40 ms away: lock in {:.1} ms, unlock in {:.1} ms \
         (one round trip each; one after the other would take 200 ms); validity left \
         {:.0} ms of 1000",
        ms(took),
        ms(unlocked),
        ms(valid)
    );
    for proxy in &proxies {
        proxy.set_delay(Duration::ZERO);
    }
    let err = redlock.try_lock("slow", "v", 2 * MS).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    // 3 ms leaves 0.97 ms: accepted, and granted only if five nodes answer that fast.
    match redlock.try_lock("slow", "v", 3 * MS).await {
        Ok(_) | Err(Error::Quorum { .. }) => {}
        Err(other) => panic!("3 ms: expected a lock or Error::Quorum, got {other:?}"),
    }
}

/// A Redlock built from clients writes the clients' key prefix; the prefixes must agree.
async fn from_clients_keeps_the_nodes_key_prefix(nodes: &Nodes) {
    let open = |prefix: &'static str| {
        let urls = nodes.urls();
        async move {
            let mut clients = Vec::new();
            for url in &urls {
                clients.push(
                    leasehold::Client::builder()
                        .key_prefix(prefix)
                        .open(url)
                        .await
                        .unwrap(),
                );
            }
            clients
        }
    };
    let mut mixed = open("app:").await;
    mixed.pop();
    mixed.extend(open("other:").await.pop());
    let err = Redlock::from_clients(mixed).unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    let redlock = Redlock::from_clients(open("app:").await).unwrap();
    let lock = redlock.try_lock("job", "v", 10 * SEC).await.unwrap();
    assert_eq!(lock.key(), "job");
    assert_eq!(nodes.holding("app:job"), vec![0, 1, 2, 3, 4]);
    assert_eq!(nodes.holding("job"), Vec::<usize>::new());
    lock.unlock().await.unwrap();
    assert_eq!(nodes.holding("app:job"), Vec::<usize>::new());
}

// ---------------------------------------------------------------------------------------
// One server named twice
// ---------------------------------------------------------------------------------------

/// `Redlock::open` with `urls`, expected to refuse two of them as one server: the error
/// is `InvalidArgument` and names both URLs, as given (never a password).
async fn refused_as_one_server(urls: &[String], first: usize, second: usize) -> String {
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let err = Redlock::builder()
        .default_timeout(TIMEOUT)
        .open(&refs)
        .await
        .expect_err("one server named twice");
    assert!(err.is_invalid_argument(), "{urls:?}: {err:?}");
    let shown = err.to_string();
    for (i, url) in [(first, &urls[first]), (second, &urls[second])] {
        assert!(
            shown.contains(&format!("urls[{i}] ({url})")),
            "{shown} does not name urls[{i}] {url}"
        );
    }
    shown
}

/// The issue's case: a node spelled twice (`redis://h:p` and `redis://h:p/`, `localhost`
/// and `127.0.0.1/0`) made a "majority" on its own. Every spelling of one server is
/// refused, and so is a real second route to it (a TCP proxy in front of it: another
/// address, the same server), by the `run_id` the servers report; the same text is
/// refused before any I/O. Negative control: five distinct servers, spelled in those
/// same ways, are accepted and lock.
async fn one_server_under_two_spellings_is_refused(nodes: &Nodes) {
    let port = nodes.server(0).port();
    let others: Vec<String> = nodes.urls()[1..3].to_vec();
    let spellings = [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}/"),
        format!("redis://localhost:{port}"),
        format!("redis://127.0.0.1:{port}/0"),
        format!("redis://localhost:{port}/1"), // another database, the same server
    ];
    for (i, a) in spellings.iter().enumerate() {
        for b in &spellings[i + 1..] {
            let urls = [a.clone(), others[0].clone(), b.clone(), others[1].clone()];
            refused_as_one_server(&urls, 0, 2).await;
        }
    }
    // A real duplicate: the same server through a proxy, under another port.
    let proxy = FaultProxy::start(port);
    let urls = [others[0].clone(), spellings[0].clone(), proxy.url()];
    refused_as_one_server(&urls, 1, 2).await;
    drop(proxy);
    // The same text, refused before any I/O: nothing listens on port 1.
    let dead = "redis://127.0.0.1:1/".to_owned();
    let started = Instant::now();
    refused_as_one_server(&[dead.clone(), others[0].clone(), dead], 0, 2).await;
    assert!(started.elapsed() < TIMEOUT, "no connection was tried");

    // Negative control: five servers, spelled in every one of those ways, are five nodes.
    let ports = nodes.ports();
    let distinct = [
        format!("redis://127.0.0.1:{}", ports[0]),
        format!("redis://127.0.0.1:{}/", ports[1]),
        format!("redis://localhost:{}", ports[2]),
        format!("redis://127.0.0.1:{}/0", ports[3]),
        format!("redis://localhost:{}/1", ports[4]),
    ];
    let redlock = open(&distinct).await;
    assert_eq!((redlock.nodes(), redlock.quorum()), (5, 3));
    let lock = redlock.try_lock("spelled", "v", SEC).await.unwrap();
    lock.unlock().await.unwrap();
}

/// A password in a URL stays out of the refusal, which still names both URLs.
async fn a_refusal_never_shows_a_password(_nodes: &Nodes) {
    let secret = "s3cret-redlock-pw";
    let server = RedisServer::start_with(support::ServerOptions {
        password: Some(secret.to_owned()),
        ..Default::default()
    });
    let port = server.port();
    let urls = [
        format!("redis://:{secret}@127.0.0.1:{port}/"),
        format!("redis://default:{secret}@localhost:{port}"),
    ];
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let err = Redlock::open(&refs)
        .await
        .expect_err("one server named twice");
    assert!(err.is_invalid_argument(), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
        assert!(shown.contains(&format!("localhost:{port}")), "{shown}");
    }
    // The same text twice: refused before any I/O, the password hidden too.
    let refs = [refs[0], refs[0]];
    let err = Redlock::open(&refs).await.expect_err("the same URL twice");
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(!err.to_string().contains(secret), "{err}");
}

// ---------------------------------------------------------------------------------------
// Hand-off: a waiter wakes when the holder releases
// ---------------------------------------------------------------------------------------

/// A waiter whose strategy would sleep 10 s acquires as soon as the holder releases:
/// every node announces the release, and a quorum of announcements wakes it. Negative
/// control: without a release, the same kind of waiter waits out its strategy's delay.
async fn a_waiter_wakes_when_the_holder_releases(nodes: &Nodes) {
    use leasehold::FixedInterval;
    let redlock = nodes.redlock().await;
    warm_up(&redlock).await;
    let delay = 10 * SEC;
    let mut woken_after = Vec::new();
    for round in 0..3 {
        let key = format!("handoff-{round}");
        let holder = redlock.try_lock(&key, "holder", 30 * SEC).await.unwrap();
        let waiting = {
            let (redlock, key) = (redlock.clone(), key.clone());
            tokio::spawn(async move {
                let lock = redlock
                    .lock(
                        &key,
                        "waiter",
                        30 * SEC,
                        TIMEOUT,
                        FixedInterval::new(delay, 1),
                    )
                    .await;
                (lock, Instant::now())
            })
        };
        // The waiter missed, subscribed on every node and went back to waiting.
        tokio::time::sleep(300 * MS).await;
        assert!(
            !waiting.is_finished(),
            "the waiter waits while the key is held"
        );
        let released = Instant::now();
        holder.unlock().await.unwrap();
        let (lock, acquired) = tokio::time::timeout(2 * SEC, waiting)
            .await
            .expect("woken by the release, not by its 10 s delay")
            .unwrap();
        let lock = lock.expect("the waiter acquired");
        woken_after.push(acquired - released);
        // A quorum holds it. Not always all five: the waiter wakes on a quorum of release
        // announcements, and its attempt may reach a node before the holder's release
        // does (seen under load: [0, 1, 2]).
        let holding = nodes.holding(&key);
        assert!(
            holding.len() >= 3,
            "a quorum holds the waiter's lock: {holding:?}"
        );
        lock.unlock().await.unwrap();
    }
    let slowest = woken_after.iter().max().copied().unwrap();
    assert!(slowest < SEC, "{woken_after:?}");

    // Negative control: nobody releases; the waiter waits its whole delay, then gives up.
    let delay = 1500 * MS;
    let _held = redlock
        .try_lock("handoff-held", "holder", 30 * SEC)
        .await
        .unwrap();
    let started = Instant::now();
    let err = redlock
        .lock(
            "handoff-held",
            "waiter",
            30 * SEC,
            TIMEOUT,
            FixedInterval::new(delay, 1),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_not_obtained(), "{err:?}");
    assert!(
        waited >= delay - 2 * MS && waited < delay + 500 * MS,
        "{waited:?}"
    );
    println!(
        "FIGURE redlock_handoff: a waiter with a 10 s retry delay acquired {} after the \
         holder's unlock began (3 rounds, 5 nodes); without a release it waited {:.0} ms \
         of a {:.0} ms delay",
        woken_after
            .iter()
            .map(|d| format!("{:.1} ms", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(waited),
        ms(delay)
    );
}

// ---------------------------------------------------------------------------------------
// Nodes killed while the lock is held and renewed
// ---------------------------------------------------------------------------------------

async fn a_minority_down_keeps_the_lock_held_and_renewed(nodes: &Nodes) {
    let redlock = nodes.redlock().await;
    let contender = nodes.redlock().await;
    let lock = redlock.try_lock("minority", "holder", SEC).await.unwrap();
    let mut renewal = lock.auto_refresh(200 * MS, SEC, TIMEOUT, 3).unwrap();
    nodes.stop(3);
    nodes.stop(4);
    let until = Instant::now() + 3 * SEC;
    let mut least = Duration::MAX;
    while Instant::now() < until {
        least = least.min(lock.valid_for().expect("held while a majority is up"));
        assert!(renewal.try_error().is_none());
        tokio::time::sleep(10 * MS).await;
    }
    // The survivors answer "held": contention, not failure.
    let err = contender
        .try_lock("minority", "other", SEC)
        .await
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    lock.unlock().await.expect("a majority releases");
    nodes.heal();
    println!(
        "FIGURE redlock_minority_down: 2 of 5 nodes killed for 3 s (3 expirations of 1 s, \
         renewed every 200 ms): held throughout, least validity seen {:.0} ms, no renewal failure",
        ms(least)
    );
}

/// Kill a majority: renewal reports the failure, `lost()` fires, and the surviving
/// minority cannot give the lock to anyone (`Error::Quorum`, not contention). Restarted
/// empty only after the expiration (antirez's delayed restart), the nodes let a
/// contender in after `lost()` fired.
async fn a_majority_down_ends_renewal_and_lost_fires_first(nodes: &Nodes) {
    let redlock = nodes.redlock().await;
    let contender = nodes.redlock().await;
    let expiration = SEC;
    let lock = redlock
        .try_lock("majority", "holder", expiration)
        .await
        .unwrap();
    let mut renewal = lock.auto_refresh(300 * MS, expiration, TIMEOUT, 3).unwrap();
    tokio::time::sleep(450 * MS).await; // one renewal went through
    let killed = Instant::now();
    for i in 0..3 {
        nodes.stop(i);
    }
    let error = tokio::time::timeout(5 * SEC, renewal.error())
        .await
        .expect("renewal reports")
        .expect("a failure");
    let reported = killed.elapsed();
    assert!(error.is_max_retry_exceeded(), "{error:?}");
    assert!(
        lock.valid_for().is_some(),
        "a failed renewal does not end the lease early"
    );
    lock.lost().await;
    let lost = Instant::now();
    // At that instant the survivors still hold the key for a while.
    let survivors_left = (3..N).map(|i| nodes.pttl(i, "majority")).min().unwrap();
    let err = contender
        .try_lock("majority", "contender", SEC)
        .await
        .unwrap_err();
    match &err {
        Error::Quorum { held, failed, .. } => assert_eq!((*held, *failed), (2, 3)),
        other => panic!("expected Error::Quorum, got {other:?}"),
    }
    // Delayed restart: only once the expiration has passed since the kill.
    tokio::time::sleep((killed + expiration).saturating_duration_since(Instant::now())).await;
    nodes.heal();
    let contender_lock = contender
        .lock(
            "majority",
            "contender",
            SEC,
            TIMEOUT,
            NonFixedInterval::new(MS, 100_000),
        )
        .await
        .unwrap();
    let acquired = Instant::now();
    assert!(acquired > lost);
    contender_lock.unlock().await.unwrap();
    println!(
        "FIGURE redlock_majority_down: 3 of 5 nodes killed; renewal reported {error} after \
         {:.0} ms; lost() fired {:.0} ms after the kill, when the survivors still held the key \
         for {survivors_left} ms; survivors alone: Error::Quorum (2 held, 3 failed); restarted \
         after the expiration, a contender got the lock {:.0} ms after lost()",
        ms(reported),
        ms(lost - killed),
        ms(acquired - lost)
    );
}

/// The holder is cut off from a majority (the nodes live on; the holder's links to them
/// stall) while a contender reaches every node and tries every millisecond. The holder's
/// validity must end before the contender gets the lock: the measured margin is what the
/// drift allowance buys.
async fn a_holder_cut_off_from_a_majority_loses_the_lease_before_a_contender_wins(nodes: &Nodes) {
    let proxies: Vec<FaultProxy> = nodes.ports().into_iter().map(FaultProxy::start).collect();
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let holder = open(&urls).await;
    warm_up(&holder).await;
    let contender = nodes.redlock().await;
    warm_up(&contender).await;
    let expiration = 2 * SEC;
    let lock = holder
        .try_lock("cutoff", "holder", expiration)
        .await
        .unwrap();
    let mut renewal = lock.auto_refresh(500 * MS, expiration, TIMEOUT, 3).unwrap();
    tokio::time::sleep(1200 * MS).await; // two renewals went through
    for proxy in &proxies[..3] {
        proxy.blackhole(true);
    }
    // The last confirmed renewal fixes the deadline now (none can be confirmed any more).
    let deadline = Instant::now() + lock.valid_for().expect("held");
    let watcher = async {
        lock.lost().await;
        Instant::now()
    };
    let contending = async {
        loop {
            match contender.try_lock("cutoff", "contender", 10 * SEC).await {
                Ok(won) => return (Instant::now(), won),
                Err(e) => assert!(e.is_not_obtained() || e.is_quorum(), "{e:?}"),
            }
            tokio::time::sleep(MS).await;
        }
    };
    let (lost, (won_at, won)) = tokio::join!(watcher, contending);
    let reported = renewal.try_error();
    assert!(
        deadline < won_at,
        "the contender won {:.1} ms before the holder's validity ended",
        ms(deadline - won_at)
    );
    assert!(
        lost < won_at,
        "lost() fired {:.1} ms after the contender won",
        ms(lost - won_at)
    );
    assert!(reported.is_some(), "renewal reported its failure");
    won.unlock().await.unwrap();
    for proxy in &proxies[..3] {
        proxy.blackhole(false);
    }
    println!(
        "FIGURE redlock_cut_off: holder cut off from 3 of 5 nodes (expiration 2 s, drift \
         allowance 22 ms): its validity ended {:.1} ms and lost() fired {:.1} ms before a \
         contender polling every 1 ms won the lock; renewal reported {}",
        ms(won_at - deadline),
        ms(won_at - lost),
        reported.unwrap()
    );
}

/// The honest negative: Redlock's safety needs crashed nodes to come back only after the
/// expiration (or with fsynced persistence). A killed majority restarted empty at once
/// hands the lock to a contender while the holder's validity runs.
async fn restarting_a_killed_majority_empty_at_once_breaks_exclusion(nodes: &Nodes) {
    let redlock = nodes.redlock().await;
    let contender = nodes.redlock().await;
    let lock = redlock
        .try_lock("restart", "holder", 10 * SEC)
        .await
        .unwrap();
    for i in 0..3 {
        nodes.stop(i);
    }
    nodes.heal(); // empty, at once
    let won = contender
        .lock(
            "restart",
            "contender",
            10 * SEC,
            TIMEOUT,
            NonFixedInterval::new(5 * MS, 1_000),
        )
        .await
        .expect("the contender gets the emptied majority");
    let overlap = lock.valid_for().expect("the holder's lease still runs");
    println!(
        "FIGURE redlock_restart_empty: 3 of 5 nodes killed and restarted empty at once: a \
         contender held the lock while the holder's validity still had {:.0} ms to run \
         (two holders) — restart crashed nodes only after the longest expiration, or with \
         appendfsync always",
        ms(overlap)
    );
    won.unlock().await.unwrap();
    drop(lock);
}

// ---------------------------------------------------------------------------------------
// Exclusion history checker over several OS processes
// ---------------------------------------------------------------------------------------

const PROCESSES: usize = 3;
const TASKS: usize = 4;
const ROUNDS: usize = 25;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The workload of one process: `TASKS` tasks × `ROUNDS` read-modify-writes of a counter
/// on node 0, under the Redlock (or, for the control, under nothing).
async fn workload(urls: &[String], process: usize, locked: bool) {
    let redlock = open(urls).await;
    let raw = redis::Client::open(urls[0].as_str()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let redlock = redlock.clone();
        let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let lock = if locked {
                    Some(
                        redlock
                            .lock(
                                "history-lock",
                                &leasehold::random_value(),
                                10 * SEC,
                                SEC,
                                NonFixedInterval::new(3 * MS, 100_000),
                            )
                            .await
                            .unwrap(),
                    )
                } else {
                    None
                };
                let acquired_ns = now_ns();
                let n: i64 = conn
                    .get::<_, Option<i64>>("history-counter")
                    .await
                    .unwrap()
                    .unwrap_or(0);
                tokio::time::sleep(MS).await;
                let () = conn.set("history-counter", n + 1).await.unwrap();
                let released_ns = now_ns();
                if let Some(lock) = lock {
                    lock.unlock().await.unwrap();
                }
                let record = format!("{process} {acquired_ns} {released_ns}");
                let () = conn.rpush("history-holds", record).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The workload in this process (as process 0) and `PROCESSES - 1` children.
async fn run_everywhere(nodes: &Nodes, locked: bool) -> (i64, Vec<Hold>) {
    nodes.flush_all();
    let urls = nodes.urls();
    let exe = std::env::current_exe().unwrap();
    let mode = if locked { "locked" } else { "unlocked" };
    let mut children: Vec<_> = (1..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .env(WORKER_ENV, format!("{} {process} {mode}", urls.join(",")))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    workload(&urls, 0, locked).await;
    let deadline = Instant::now() + 60 * SEC;
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
            tokio::time::sleep(20 * MS).await;
        }
    }
    let raw = redis::Client::open(urls[0].as_str()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let counter: i64 = conn.get("history-counter").await.unwrap();
    let lines: Vec<String> = conn.lrange("history-holds", 0, -1).await.unwrap();
    let holds = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // No fencing token: the process number names the hold.
            Hold {
                token: f[0].parse().unwrap(),
                acquired_ns: f[1].parse().unwrap(),
                released_ns: f[2].parse().unwrap(),
            }
        })
        .collect();
    (counter, holds)
}

async fn holders_across_processes_never_overlap(nodes: &Nodes) {
    let started = Instant::now();
    let (counter, holds) = run_everywhere(nodes, true).await;
    assert_eq!(holds.len(), PROCESSES * TASKS * ROUNDS);
    let processes = {
        let mut p: Vec<u64> = holds.iter().map(|h| h.token).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    assert_eq!(processes, PROCESSES);
    let found = violations(counter, holds, false);
    assert!(found.is_empty(), "{found:#?}");
    println!(
        "FIGURE redlock_history: {} holds by {PROCESSES} processes × {TASKS} tasks on 5 nodes \
         in {:.1} s: no overlapping holds, no lost updates",
        PROCESSES * TASKS * ROUNDS,
        started.elapsed().as_secs_f64()
    );
}

async fn the_checker_catches_the_same_workload_without_the_lock(nodes: &Nodes) {
    let (counter, holds) = run_everywhere(nodes, false).await;
    let found = violations(counter, holds, false);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the negative control must be caught: {found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("overlapping holds")));
}

// ---------------------------------------------------------------------------------------
// The blocking mirror
// ---------------------------------------------------------------------------------------

fn blocking_redlock_mirrors_the_async_one(nodes: &Nodes) {
    use leasehold::blocking;
    let urls = nodes.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let redlock = blocking::Redlock::open(&urls).unwrap();
    assert_eq!((redlock.nodes(), redlock.quorum()), (5, 3));
    let lock = redlock.try_lock("blocking", "a", SEC).unwrap();
    let mut renewal = lock.auto_refresh(100 * MS, SEC, TIMEOUT, 3).unwrap();
    std::thread::sleep(1500 * MS); // renewal runs while this thread sleeps
    assert!(lock.valid_for().is_some());
    assert!(renewal.try_error().is_none());
    let err = redlock.try_lock("blocking", "b", SEC).unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    assert!(lock.ttl().unwrap().is_some());
    lock.refresh().unwrap();
    lock.unlock().unwrap();
    assert!(renewal.error_timeout(SEC).is_none(), "a clean stop");
    assert_eq!(nodes.holding("blocking"), Vec::<usize>::new());
    // From clients, each with its own runtime thread.
    let clients = urls
        .iter()
        .map(|u| blocking::Client::open(u).unwrap())
        .collect();
    let redlock = blocking::Redlock::from_clients(clients).unwrap();
    let lock = redlock
        .lock("blocking", "c", SEC, TIMEOUT, NoRetry)
        .unwrap();
    assert!(!lock.wait_lost_timeout(50 * MS));
    lock.unlock().unwrap();
}

/// The blocking builder's `key_prefix` starts every key the Redlock writes on its nodes,
/// while the lock keeps the key as given (negative control: the unprefixed key is
/// untouched and free to another Redlock).
fn blocking_redlock_writes_its_key_prefix(nodes: &Nodes) {
    use leasehold::blocking;
    let urls = nodes.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let prefixed = blocking::Redlock::builder()
        .key_prefix("app:")
        .open(&urls)
        .unwrap();
    let lock = prefixed.try_lock("prefixed-job", "a", 10 * SEC).unwrap();
    assert_eq!(lock.key(), "prefixed-job");
    assert_eq!(nodes.holding("app:prefixed-job"), vec![0, 1, 2, 3, 4]);
    assert_eq!(nodes.holding("prefixed-job"), Vec::<usize>::new());
    let err = prefixed.try_lock("prefixed-job", "b", SEC).unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let plain = blocking::Redlock::open(&urls).unwrap();
    let other = plain.try_lock("prefixed-job", "b", SEC).unwrap();
    assert_eq!(nodes.holding("prefixed-job"), vec![0, 1, 2, 3, 4]);
    other.unlock().unwrap();
    lock.unlock().unwrap();
    assert_eq!(nodes.holding("app:prefixed-job"), Vec::<usize>::new());
}

/// The blocking builder refuses one server under two spellings as the async one does
/// (negative control: the servers spelled apart open), and its waiters wake on release.
fn blocking_redlock_refuses_one_server_twice_and_wakes_on_release(nodes: &Nodes) {
    use leasehold::{FixedInterval, blocking};
    let ports = nodes.ports();
    let urls = [
        format!("redis://127.0.0.1:{}/", ports[0]),
        format!("redis://127.0.0.1:{}/", ports[1]),
        format!("redis://localhost:{}", ports[0]),
    ];
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let err = blocking::Redlock::open(&refs).unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("urls[0] ({})", urls[0]))
            && shown.contains(&format!("urls[2] ({})", urls[2])),
        "{shown}"
    );
    let err = blocking::Redlock::builder()
        .open(&[refs[0], refs[1], refs[0]])
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");

    let urls = [
        format!("redis://127.0.0.1:{}", ports[0]),
        format!("redis://localhost:{}/", ports[1]),
        format!("redis://127.0.0.1:{}/0", ports[2]),
    ];
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let redlock = blocking::Redlock::open(&refs).unwrap();
    assert_eq!(redlock.nodes(), 3);
    let holder = redlock
        .try_lock("blocking-handoff", "holder", 30 * SEC)
        .unwrap();
    let waiter = {
        let redlock = redlock.clone();
        std::thread::spawn(move || {
            let lock = redlock.lock(
                "blocking-handoff",
                "waiter",
                30 * SEC,
                TIMEOUT,
                FixedInterval::new(10 * SEC, 1),
            );
            (lock, Instant::now())
        })
    };
    std::thread::sleep(300 * MS);
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the key is held"
    );
    let released = Instant::now();
    holder.unlock().unwrap();
    let deadline = released + 2 * SEC;
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(10 * MS);
    }
    assert!(
        waiter.is_finished(),
        "woken by the release, not by its 10 s delay"
    );
    let (lock, acquired) = waiter.join().unwrap();
    let lock = lock.expect("the waiter acquired");
    assert!(acquired - released < SEC, "{:?}", acquired - released);
    lock.unlock().unwrap();
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

type AsyncCase = for<'a> fn(&'a Nodes) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

macro_rules! async_cases {
    ($($case:ident),* $(,)?) => {
        const CASES: &[(&str, AsyncCase)] = &[
            $((stringify!($case), |n| Box::pin($case(n))),)*
        ];
    };
}

async_cases!(
    a_lock_succeeds_iff_a_majority_is_reachable_for_every_subset_of_clogged_nodes,
    a_late_arrival_of_a_failed_attempt_is_refused_by_its_node,
    a_failed_same_value_relock_keeps_the_lock,
    a_disbelieved_grant_leaves_no_attempt_records,
    contention_leaves_no_attempt_records,
    a_quorum_won_after_the_validity_is_gone_is_a_failure,
    from_clients_keeps_the_nodes_key_prefix,
    one_server_under_two_spellings_is_refused,
    a_refusal_never_shows_a_password,
    a_waiter_wakes_when_the_holder_releases,
    a_minority_down_keeps_the_lock_held_and_renewed,
    a_majority_down_ends_renewal_and_lost_fires_first,
    a_holder_cut_off_from_a_majority_loses_the_lease_before_a_contender_wins,
    restarting_a_killed_majority_empty_at_once_breaks_exclusion,
    holders_across_processes_never_overlap,
    the_checker_catches_the_same_workload_without_the_lock,
);

type SyncCase = fn(&Nodes);

const SYNC_CASES: &[(&str, SyncCase)] = &[
    (
        "blocking_redlock_mirrors_the_async_one",
        blocking_redlock_mirrors_the_async_one,
    ),
    (
        "blocking_redlock_writes_its_key_prefix",
        blocking_redlock_writes_its_key_prefix,
    ),
    (
        "blocking_redlock_refuses_one_server_twice_and_wakes_on_release",
        blocking_redlock_refuses_one_server_twice_and_wakes_on_release,
    ),
];

fn main() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        let mut parts = spec.split(' ');
        let urls: Vec<String> = parts
            .next()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        let process: usize = parts.next().unwrap().parse().unwrap();
        let locked = parts.next().unwrap() == "locked";
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(workload(&urls, process, locked));
        return;
    }
    // libtest's command line, as far as it applies: filters, `--exact`, `--skip F`,
    // `--list`, `--ignored` (there are none); other flags (and their values) are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut words = args.iter();
    while let Some(arg) = words.next() {
        match arg.as_str() {
            "--skip" => skips.extend(words.next().cloned()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                words.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let matches = |name: &str, f: &String| {
        if exact {
            name == f
        } else {
            name.contains(f.as_str())
        }
    };
    let selected = |name: &str| {
        !only_ignored
            && (filters.is_empty() || filters.iter().any(|f| matches(name, f)))
            && !skips.iter().any(|f| matches(name, f))
    };
    let names = CONFORMANCE
        .iter()
        .chain(CASES)
        .map(|(name, _)| *name)
        .chain(SYNC_CASES.iter().map(|(name, _)| *name));
    if args.iter().any(|a| a == "--list") {
        for name in names.filter(|n| selected(n)) {
            println!("{name}: test");
        }
        return;
    }
    let chosen: Vec<&str> = names.filter(|n| selected(n)).collect();
    if chosen.is_empty() {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed\n");
        return;
    }
    println!("\nrunning {} tests", chosen.len());
    let nodes = Nodes::start();
    let started = Instant::now();
    let mut failed = Vec::new();
    for &(name, case) in CONFORMANCE.iter().chain(CASES) {
        if !chosen.contains(&name) {
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(CASE_LIMIT, case(&nodes))
                    .await
                    .unwrap_or_else(|_| panic!("{name}: did not finish within {CASE_LIMIT:?}"))
            });
            rt.shutdown_timeout(SEC);
        }));
        report(name, outcome.is_ok(), &mut failed);
        nodes.heal();
    }
    for &(name, case) in SYNC_CASES {
        if !chosen.contains(&name) {
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| case(&nodes)));
        report(name, outcome.is_ok(), &mut failed);
        nodes.heal();
    }
    drop(nodes);
    let passed = chosen.len() - failed.len();
    if failed.is_empty() {
        println!(
            "\ntest result: ok. {passed} passed; 0 failed; finished in {:.2}s\n",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
        println!(
            "\ntest result: FAILED. {passed} passed; {} failed; finished in {:.2}s\n",
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        std::process::exit(101);
    }
}

fn report(name: &str, ok: bool, failed: &mut Vec<String>) {
    println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
    if !ok {
        failed.push(name.to_owned());
    }
}
