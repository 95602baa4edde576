//! Leader loops (`Client::run_while_leader`, and its blocking form) on a real redis-server and `memory://NAME`:
//! one leader at a time among contenders with their own clients; take-over after the
//! leader is cut off (black-holed connection: the old leader's `lost()` fires before the
//! successor is elected) or its key is deleted behind its back; the old term's future is
//! dropped, the closure is called again, and fencing tokens rise term by term.
#![cfg(feature = "schedule")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::{Client, Leadership};
use support::{FaultProxy, RedisServer};

/// What happened to whom, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Elected,
    /// `Leadership::lost()` resolved (a loss, or the term's end).
    Lost,
    /// The term's future was dropped before it completed.
    Dropped,
    /// The term's future completed.
    Done,
}

type Log = Arc<Mutex<Vec<(&'static str, u32, u64, Event, Instant)>>>;

fn record(log: &Log, who: &'static str, l: &Leadership, event: Event) {
    log.lock()
        .unwrap()
        .push((who, l.term(), l.fencing_token(), event, Instant::now()));
}

/// Records `Elected` now, and `Lost` when the leadership's `lost()` resolves.
fn watch(log: &Log, who: &'static str, l: &Leadership) {
    record(log, who, l, Event::Elected);
    let (log, l) = (Arc::clone(log), l.clone());
    tokio::spawn(async move {
        l.lost().await;
        record(&log, who, &l, Event::Lost);
    });
}

fn when(log: &Log, who: &str, term: u32, event: Event) -> Option<(u64, Instant)> {
    log.lock()
        .unwrap()
        .iter()
        .find(|e| e.0 == who && e.1 == term && e.3 == event)
        .map(|e| (e.2, e.4))
}

async fn wait_for(log: &Log, who: &str, term: u32, event: Event) -> (u64, Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = when(log, who, term, event) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{who} term {term}: no {event:?} in 10 s: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `fut`, or a panic after 10 s: no wait in these tests is unbounded.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out")
}

/// Records `Dropped` if the term's future is dropped before `done()`.
struct DropGuard {
    log: Log,
    who: &'static str,
    l: Leadership,
    done: bool,
}
impl Drop for DropGuard {
    fn drop(&mut self) {
        let event = if self.done {
            Event::Done
        } else {
            Event::Dropped
        };
        record(&self.log, self.who, &self.l, event);
    }
}

/// Three contenders, each with its own client, lead three short terms each: the terms
/// never overlap and their tokens rise in the order they were won.
async fn one_leader_at_a_time(url: &str) {
    let log = Log::default();
    let mut tasks = Vec::new();
    for who in ["A", "B", "C"] {
        let client = Client::open(url).await.unwrap();
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                client
                    .run_while_leader(
                        "contested",
                        Duration::from_secs(2),
                        std::iter::repeat_n(Duration::from_millis(10), 500),
                        |l| {
                            let log = Arc::clone(&log);
                            async move {
                                record(&log, who, &l, Event::Elected);
                                tokio::time::sleep(Duration::from_millis(60)).await;
                                record(&log, who, &l, Event::Done);
                            }
                        },
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        bounded(t).await.unwrap();
    }
    let mut terms: Vec<(u64, Instant, Instant, &str)> = Vec::new();
    let log = log.lock().unwrap().clone();
    for e in log.iter().filter(|e| e.3 == Event::Elected) {
        let done = log
            .iter()
            .find(|d| d.0 == e.0 && d.2 == e.2 && d.3 == Event::Done)
            .unwrap();
        terms.push((e.2, e.4, done.4, e.0));
    }
    terms.sort_by_key(|t| t.1);
    assert_eq!(terms.len(), 9);
    for pair in terms.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "terms overlapped: {pair:?}");
        assert!(pair[1].0 > pair[0].0, "tokens must rise: {pair:?}");
    }
    let handover = terms.windows(2).map(|p| p[1].1 - p[0].2).max().unwrap();
    eprintln!(
        "{url}: 9 terms by 3 contenders, no overlap, tokens rising; max hand-over gap {handover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_on_redis_lead_one_at_a_time() {
    let server = RedisServer::start();
    one_leader_at_a_time(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_on_memory_lead_one_at_a_time() {
    one_leader_at_a_time("memory://leader-contest").await;
}

/// A leads; its connection is black-holed. A's lease runs out locally before the key
/// expires on the server, so A's `lost()` fires — and its term's future is dropped —
/// before B can be elected. After the network heals, A campaigns again (its closure is
/// called a second time) and wins once B is done: tokens A1 < B < A2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_learns_first_and_the_successor_takes_over() {
    // Drift allowance 1% + 2 ms = 17 ms: the local lease ends that long before the key
    // expires on the server.
    const EXPIRATION: Duration = Duration::from_millis(1_500);
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let builder = Client::builder().default_timeout(Duration::from_millis(200));
    let a = builder.clone().open(&proxy.url()).await.unwrap();
    let b = builder.open(&server.url()).await.unwrap();
    let log = Log::default();

    let (log_a, log_b) = (Arc::clone(&log), Arc::clone(&log));
    let mut calls_a = 0;
    let a_task = tokio::spawn(async move {
        let out = a
            .run_while_leader(
                "leader",
                EXPIRATION,
                std::iter::repeat(Duration::from_millis(20)),
                |l| {
                    calls_a += 1;
                    watch(&log_a, "A", &l);
                    let log = Arc::clone(&log_a);
                    async move {
                        let mut guard = DropGuard {
                            log,
                            who: "A",
                            l: l.clone(),
                            done: false,
                        };
                        if l.term() == 1 {
                            std::future::pending::<()>().await; // lead until cut off
                        }
                        guard.done = true;
                        (l.fencing_token(), l.previous_loss().cloned())
                    }
                },
            )
            .await
            .unwrap();
        (out, calls_a)
    });
    let (a1, _) = wait_for(&log, "A", 1, Event::Elected).await;
    let b_task = tokio::spawn(async move {
        b.run_while_leader(
            "leader",
            EXPIRATION,
            std::iter::repeat(Duration::from_millis(20)),
            |l| {
                watch(&log_b, "B", &l);
                let log = Arc::clone(&log_b);
                async move {
                    let mut guard = DropGuard {
                        log,
                        who: "B",
                        l: l.clone(),
                        done: false,
                    };
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    guard.done = true;
                    l.fencing_token()
                }
            },
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert!(
        when(&log, "B", 1, Event::Elected).is_none(),
        "A leads, renewed: {log:?}"
    );

    proxy.blackhole(true);
    let cut = Instant::now();
    let (b1, b_elected) = wait_for(&log, "B", 1, Event::Elected).await;
    proxy.blackhole(false);
    let (_, a_lost) = wait_for(&log, "A", 1, Event::Lost).await;
    let (_, a_dropped) = wait_for(&log, "A", 1, Event::Dropped).await;
    assert!(
        a_lost < b_elected,
        "the old leader learns of the loss first"
    );
    assert!(
        a_dropped < b_elected,
        "its term's future is dropped before the successor runs"
    );

    let b_token = bounded(b_task).await.unwrap();
    let ((a2, previous_loss), calls) = bounded(a_task).await.unwrap();
    assert_eq!(b_token, b1);
    assert_eq!(calls, 2, "the closure is called again for the second term");
    assert!(
        a1 < b1 && b1 < a2,
        "tokens rise term by term: {a1} < {b1} < {a2}"
    );
    let why = previous_loss.expect("term 2 knows why term 1 ended");
    assert!(
        why.is_max_retry_exceeded() || why.is_lease_expired(),
        "{why:?}"
    );
    let (_, b_done) = wait_for(&log, "B", 1, Event::Done).await;
    let (_, a2_elected) = wait_for(&log, "A", 2, Event::Elected).await;
    assert!(a2_elected >= b_done, "one leader at a time: {log:?}");
    eprintln!(
        "cut-off leader: A lost {:?} after the cut, B elected {:?} after it ({:?} later); \
         tokens {a1} < {b1} < {a2}; A's term 1 ended by {why}",
        a_lost - cut,
        b_elected - cut,
        b_elected - a_lost,
    );
}

/// The key of the leader is deleted behind its back: another contender is elected at
/// once, and the old leader learns of it at its next renewal (within a third of the
/// expiration) — the window that fencing tokens close. It then campaigns again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_is_replaced_and_learns_it_at_its_next_renewal() {
    const EXPIRATION: Duration = Duration::from_millis(600);
    let server = RedisServer::start();
    let a = Client::open(&server.url()).await.unwrap();
    let b = Client::open(&server.url()).await.unwrap();
    let log = Log::default();
    let (log_a, log_b) = (Arc::clone(&log), Arc::clone(&log));
    let a_task = tokio::spawn(async move {
        a.run_while_leader(
            "leader",
            EXPIRATION,
            std::iter::repeat(Duration::from_millis(20)),
            |l| {
                watch(&log_a, "A", &l);
                let log = Arc::clone(&log_a);
                async move {
                    let mut guard = DropGuard {
                        log,
                        who: "A",
                        l: l.clone(),
                        done: false,
                    };
                    if l.term() == 1 {
                        std::future::pending::<()>().await;
                    }
                    guard.done = true;
                    (l.term(), l.fencing_token(), l.previous_loss().cloned())
                }
            },
        )
        .await
        .unwrap()
    });
    let (a1, _) = wait_for(&log, "A", 1, Event::Elected).await;
    let b_task = tokio::spawn(async move {
        b.run_while_leader(
            "leader",
            EXPIRATION,
            std::iter::repeat(Duration::from_millis(20)),
            |l| {
                watch(&log_b, "B", &l);
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    l.fencing_token()
                }
            },
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(when(&log, "B", 1, Event::Elected).is_none());
    let deleted = Instant::now();
    server.cmd_sync(&["DEL", "leader"]);
    let (b1, b_elected) = wait_for(&log, "B", 1, Event::Elected).await;
    let (_, a_lost) = wait_for(&log, "A", 1, Event::Lost).await;
    wait_for(&log, "A", 1, Event::Dropped).await;
    assert!(
        a_lost - deleted <= EXPIRATION / 3 + Duration::from_millis(100),
        "{:?}",
        a_lost - deleted
    );
    let b_token = bounded(b_task).await.unwrap();
    let (term, a2, why) = bounded(a_task).await.unwrap();
    assert_eq!(term, 2);
    assert!(why.unwrap().is_not_held());
    assert!(a1 < b_token && b_token < a2 && b_token == b1);
    eprintln!(
        "deleted key: B elected {:?} after the delete, A lost {:?} after it (overlap {:?}, \
         closed by fencing: tokens {a1} < {b1} < {a2})",
        b_elected - deleted,
        a_lost - deleted,
        a_lost.saturating_duration_since(b_elected),
    );
}

/// The blocking form: a term whose key is taken away returns when its closure sees the
/// loss; its output is dropped and the closure is called again (term 2, a higher token,
/// the loss named); a term that returns while still leading ends the call and releases.
/// Two threads with clients of their own never lead at once.
fn blocking_leader_loop(url: &str) {
    use leasehold::blocking::Client;
    let ms = Duration::from_millis(1);
    let client = Client::open(url).unwrap();
    let other = Client::open(url).unwrap();
    let mut terms = Vec::new();
    let out = client
        .run_while_leader(
            "leader",
            600 * ms,
            std::iter::repeat_n(20 * ms, 250), // bounded: 5 s of campaigning
            |leadership| {
                terms.push((
                    leadership.term(),
                    leadership.fencing_token(),
                    leadership.previous_loss().map(|e| e.is_not_held()),
                ));
                if leadership.term() == 1 {
                    assert!(other.force_release("leader").unwrap());
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while !leadership.is_lost() {
                        assert!(Instant::now() < deadline, "loss not seen within 5 s");
                        std::thread::sleep(10 * ms);
                    }
                    return "term 1, lost";
                }
                "term 2, done"
            },
        )
        .unwrap();
    assert_eq!(out, "term 2, done");
    assert_eq!(terms.len(), 2, "{terms:?}");
    assert_eq!((terms[0].0, terms[0].2), (1, None));
    assert_eq!((terms[1].0, terms[1].2), (2, Some(true)));
    assert!(terms[1].1 > terms[0].1, "{terms:?}");
    assert!(other.inspect("leader").unwrap().is_none(), "released");

    let bad = client.run_while_leader("", 600 * ms, leasehold::NoRetry, |_| ());
    assert!(matches!(bad, Err(leasehold::Error::InvalidArgument(_))));
    let bad = client.run_while_leader("k", 2 * ms, leasehold::NoRetry, |_| ());
    assert!(matches!(bad, Err(leasehold::Error::InvalidArgument(_))));

    // One leader at a time among threads, each leading for 200 ms, twice.
    let spans = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (url, spans) = (url.to_owned(), Arc::clone(&spans));
            std::thread::spawn(move || {
                let client = Client::open(&url).unwrap();
                for _ in 0..2 {
                    client
                        .run_while_leader(
                            "shared",
                            Duration::from_secs(2),
                            std::iter::repeat_n(10 * ms, 1000), // bounded: 10 s
                            |leadership| {
                                let start = Instant::now();
                                std::thread::sleep(200 * ms);
                                assert!(!leadership.is_lost());
                                spans.lock().unwrap().push((start, Instant::now()));
                            },
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 6);
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two leaders at once: {pair:?}");
    }
}

#[test]
fn blocking_leaders_on_redis_take_turns_and_a_lost_term_is_led_again() {
    let server = RedisServer::start();
    blocking_leader_loop(&server.url());
}

#[test]
fn blocking_leaders_on_memory_take_turns_and_a_lost_term_is_led_again() {
    blocking_leader_loop(&format!(
        "memory://blocking-leader-{}",
        leasehold::random_value()
    ));
}
