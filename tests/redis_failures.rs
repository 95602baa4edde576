//! Failure modes of the core client against a real redis-server: unreachable and
//! failing servers, cancelled and timed-out attempts, restarts, killed connections.

mod lost_reply;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval, NoRetry, RetryStrategy};
use support::{FaultProxy, RedisServer, ServerOptions, wait_until};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The token in the state of `key` (found by its prefix: `key:state…`).
fn fence(server: &RedisServer, key: &str) -> Option<String> {
    let pattern = format!("{key}:state*");
    let keys = server.keys(&pattern);
    assert!(keys.len() <= 1, "{keys:?}");
    let state = keys.first().and_then(|k| server.get(k))?;
    Some(state.split(' ').next().unwrap().to_owned())
}

/// Load the scripts into the server's cache, so that an attempt under test is one
/// `EVALSHA` round trip (a fresh server answers the first one with `NOSCRIPT`).
async fn warm_up(client: &Client) {
    let lock = client.try_lock("warm-up", "v", SEC).await.unwrap();
    lock.unlock().await.unwrap();
}

struct Counting(Arc<AtomicUsize>, FixedInterval);

impl RetryStrategy for Counting {
    fn next_delay(&mut self) -> Option<Duration> {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.next_delay()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_failure_never_contention() {
    let mut server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    server.stop();
    let asked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let err = client
        .lock(
            "k",
            "v",
            SEC,
            200 * MS,
            Counting(asked.clone(), FixedInterval::new(20 * MS, 3)),
        )
        .await
        .unwrap_err();
    assert!(err.is_redis() || err.is_timeout(), "{err:?}");
    assert!(!err.is_not_obtained());
    // Connection failures are transient: every attempt the strategy allows was made.
    assert_eq!(asked.load(Ordering::SeqCst), 4);
    assert!(started.elapsed() < 4 * 200 * MS + 3 * 20 * MS + SEC);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_retrying_cannot_fix_end_the_attempts_at_once() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    server.cmd_sync(&["HSET", "k", "field", "x"]);
    let asked = Arc::new(AtomicUsize::new(0));
    let err = client
        .lock(
            "k",
            "v",
            SEC,
            SEC,
            Counting(asked.clone(), FixedInterval::new(10 * MS, 5)),
        )
        .await
        .unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "no retry after a WRONGTYPE error"
    );
    // The key was not touched.
    assert_eq!(
        server.cmd_sync(&["TYPE", "k"]),
        redis::Value::SimpleString("hash".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_that_does_not_show_the_password() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("right-password".into()),
        ..Default::default()
    });
    let url = format!("redis://:wrong-password@127.0.0.1:{}/", server.port());
    let err = Client::open(&url).await.unwrap_err();
    assert!(err.is_redis() && !err.is_transient(), "{err:?}");
    for shown in [format!("{err}"), format!("{err:?}")] {
        assert!(!shown.contains("wrong-password"), "{shown}");
    }
    let client = Client::open(&server.url()).await.unwrap();
    assert!(!format!("{client:?}").contains("right-password"));
    let _held_until_expiry = client.try_lock("k", "v", SEC).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_lives_next_to_the_lock_key_and_outlives_it_for_a_bounded_time() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("job", "v", SEC).await.unwrap();
    let token = lock.fencing_token().to_string();
    assert_eq!(fence(&server, "job").as_ref(), Some(&token));
    assert_eq!(server.get("job").as_deref(), Some("v"));
    lock.unlock().await.unwrap();
    assert_eq!(server.get("job"), None);
    assert_eq!(
        fence(&server, "job").as_ref(),
        Some(&token),
        "outlives the lock"
    );
    // Per-entity keys: one state each, which expires an hour after its lock (bounded
    // footprint), and nothing else once unlocked.
    for i in 0..100 {
        let lock = client
            .try_lock(&format!("order:{i}"), "v", SEC)
            .await
            .unwrap();
        lock.unlock().await.unwrap();
    }
    let left = server.keys("order:*");
    assert_eq!(left.len(), 100, "{left:?}");
    for key in &left {
        assert!(key.contains(":state{"), "{key}");
        let ttl = match server.cmd_sync(&["PTTL", key]) {
            redis::Value::Int(ms) => ms,
            other => panic!("{other:?}"),
        };
        assert!(ttl > 0 && ttl <= 3_601_000, "{key}: {ttl}");
    }
}

/// Upgrading from the layout of one counter per key: an acquisition without state takes a
/// token above the key's counter of the earlier layout (a token never goes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_continue_from_a_counter_of_the_earlier_layout() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    // Lock `app:job` once to learn its slot tag, then leave only a counter of the earlier
    // layout (`key:fence{N}`, the same slot tag), as an earlier version left it.
    client
        .try_lock("app:job", "v", SEC)
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let state = server.keys("app:job:state*").pop().unwrap();
    let old = format!("app:job:fence{}", &state["app:job:state".len()..]);
    server.cmd_sync(&["DEL", &state]);
    let big = u64::MAX / 2;
    server.cmd_sync(&["SET", &old, &big.to_string()]);
    let lock = client.try_lock("app:job", "w", SEC).await.unwrap();
    assert_eq!(
        lock.fencing_token(),
        big + 1,
        "continues from the old counter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_lock_call_does_not_leave_an_orphan() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.set_delay(150 * MS);
    let cancelled =
        tokio::time::timeout(50 * MS, client.lock("k", "v", 60 * SEC, 5 * SEC, NoRetry)).await;
    assert!(cancelled.is_err(), "the call was cancelled mid-flight");
    // The acquire landed (the fence counter moved) and the detached release followed,
    // long before the 60 s expiration.
    assert!(wait_until(5 * SEC, || fence(&server, "k").is_some()));
    assert!(wait_until(5 * SEC, || server.get("k").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_last_attempt_that_lands_late_is_released() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.set_delay(150 * MS);
    let err = client
        .lock("k", "v", 60 * SEC, 50 * MS, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(wait_until(5 * SEC, || fence(&server, "k").is_some()));
    assert!(wait_until(5 * SEC, || server.get("k").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_that_landed_is_recognised_by_the_next_one() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.set_delay(300 * MS);
    let heal = async {
        tokio::time::sleep(350 * MS).await;
        // The first attempt (timed out at 100 ms) has landed by now.
        let landed = server.get("k");
        proxy.set_delay(Duration::ZERO);
        landed
    };
    let locking = client.lock(
        "k",
        "v",
        60 * SEC,
        100 * MS,
        FixedInterval::new(600 * MS, 1),
    );
    let (locked, landed) = tokio::join!(locking, heal);
    assert_eq!(landed.as_deref(), Some("v"), "the timed-out attempt landed");
    let lock = locked.expect("the second attempt recognises the first");
    assert_eq!(
        fence(&server, "k"),
        Some(lock.fencing_token().to_string()),
        "one acquisition, one token"
    );
    assert_eq!(server.get("k").as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_after_cancel_never_undoes_a_later_lock_of_the_same_key() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.set_delay(100 * MS);
    let _ = tokio::time::timeout(30 * MS, client.lock("k", "v", 60 * SEC, 5 * SEC, NoRetry)).await;
    // Same key, same value, at once: the pending release must not delete this lock.
    let lock = client
        .lock("k", "v", 60 * SEC, 5 * SEC, NoRetry)
        .await
        .unwrap();
    proxy.set_delay(Duration::ZERO);
    tokio::time::sleep(500 * MS).await;
    assert_eq!(server.get("k").as_deref(), Some("v"));
    assert!(lock.ttl().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_restart_and_nothing_is_resurrected() {
    let mut server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("k", "v", 60 * SEC).await.unwrap();
    server.restart();
    // Without persistence the key is gone: refresh reports it and re-creates nothing.
    let retry = FixedInterval::new(100 * MS, 50);
    let mut refreshed = lock.refresh().await;
    for _ in 0..50 {
        if !matches!(&refreshed, Err(e) if e.is_redis() || e.is_timeout()) {
            break;
        }
        tokio::time::sleep(100 * MS).await;
        refreshed = lock.refresh().await;
    }
    assert!(refreshed.unwrap_err().is_not_held());
    assert_eq!(server.get("k"), None);
    // The same client works again.
    let again = client
        .lock("k", "w", 60 * SEC, SEC, retry)
        .await
        .expect("reconnected");
    assert!(
        again.fencing_token() > lock.fencing_token(),
        "the state was lost with the restart: the server's clock keeps tokens rising"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_and_flushed_scripts_are_survived() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("k", "v", 60 * SEC).await.unwrap();
    server.cmd_sync(&["SCRIPT", "FLUSH"]);
    lock.refresh()
        .await
        .expect("NOSCRIPT falls back to loading the script");
    server.client_kill_all_normal();
    let retry = FixedInterval::new(50 * MS, 20);
    let other = client.lock("k2", "v", 60 * SEC, SEC, retry).await.unwrap();
    lock.refresh()
        .await
        .expect("the lock was kept across the kill");
    assert!(other.valid_for().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_dies_frees_the_key_within_its_expiration() {
    let server = RedisServer::start();
    let dead;
    {
        let holder = Client::open(&server.url()).await.unwrap();
        let lock = holder.try_lock("k", "dead", 300 * MS).await.unwrap();
        dead = lock.fencing_token();
        drop(lock);
        drop(holder); // the process is gone; nothing released the key
    }
    assert_eq!(server.get("k").as_deref(), Some("dead"));
    let client = Client::open(&server.url()).await.unwrap();
    let started = Instant::now();
    let lock = client
        .lock("k", "alive", SEC, SEC, FixedInterval::new(10 * MS, 100))
        .await
        .unwrap();
    assert!(
        started.elapsed() <= 300 * MS + 50 * MS,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lock.fencing_token(), dead + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_timeout_is_not_capped_by_a_hidden_response_timeout() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    // redis-rs alone would give up after 500 ms; the caller allowed 3 s.
    server.client_pause(900 * MS);
    let started = Instant::now();
    let lock = client
        .lock("k", "v", 10 * SEC, 3 * SEC, NoRetry)
        .await
        .expect("a slow server within the caller's timeout is not an error");
    assert!(started.elapsed() >= 800 * MS);
    assert!(lock.valid_for().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connections_response_timeout_is_reported_as_timeout() {
    let server = RedisServer::start();
    let manager = redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap(); // redis-rs defaults: 500 ms response timeout
    let client = Client::from_connection(manager);
    warm_up(&client).await;
    server.client_pause(1500 * MS);
    let err = client
        .lock("k", "v", 10 * SEC, 3 * SEC, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_replaced_after_consecutive_timeouts() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    // The server side vanished without a reset; new connections would work.
    proxy.stall_existing();
    let started = Instant::now();
    let lock = client
        .lock(
            "k",
            "v",
            10 * SEC,
            100 * MS,
            FixedInterval::new(10 * MS, 50),
        )
        .await
        .expect("the client replaced the dead connection");
    eprintln!("FIGURE half-open: recovered in {:?}", started.elapsed());
    assert!(started.elapsed() < 2 * SEC);
    assert_eq!(lock.value(), "v");
}

/// Review finding F1: a user retry loop with the same value during a server stall. Each
/// timed-out call leaves a detached release; none of them may undo the lock that is
/// finally granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_with_the_same_value_through_a_stall_keeps_the_granted_lock() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    server.client_pause(450 * MS);
    let started = Instant::now();
    let lock = loop {
        match client.lock("k", "v", 60 * SEC, 100 * MS, NoRetry).await {
            Ok(lock) => break lock,
            Err(e) if e.is_timeout() => assert!(started.elapsed() < 10 * SEC, "gave up"),
            Err(e) => panic!("{e:?}"),
        }
    };
    tokio::time::sleep(300 * MS).await;
    assert!(lock.valid_for().is_some());
    assert_eq!(
        server.get("k").as_deref(),
        Some("v"),
        "a late release undid the lock"
    );
    assert!(lock.ttl().await.unwrap().is_some());
}

/// The abort of an attempt that landed fails (scripts are denied for a while): it is
/// tried again until the store takes it, and what the attempt created is released.
#[tokio::test] // current_thread: the abort runs while the second call is refused too
async fn an_abort_that_fails_is_tried_again_until_it_lands() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    warm_up(&client).await;
    server.client_pause(150 * MS);
    let err = client
        .lock("k", "v", 60 * SEC, 50 * MS, NoRetry)
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    std::thread::sleep(300 * MS); // the first call's attempt lands; its release is not sent
    assert_eq!(server.get("k").as_deref(), Some("v"));
    server.cmd_sync(&["ACL", "SETUSER", "default", "-evalsha", "-eval"]);
    let err = client
        .lock("k", "v", 60 * SEC, 500 * MS, NoRetry)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    server.cmd_sync(&["ACL", "SETUSER", "default", "+@all"]);
    tokio::time::sleep(500 * MS).await;
    assert_eq!(
        server.get("k"),
        None,
        "the landed attempt was released, not orphaned"
    );
}

/// Re-review finding: a replacement connection connects lazily, so its first calls pay
/// for connecting; with timeouts shorter than that it must not be replaced in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_connection_is_not_replaced_before_it_could_answer() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let client = Client::open(&proxy.url()).await.unwrap();
    warm_up(&client).await;
    proxy.set_delay(50 * MS); // a 100 ms round trip
    let wave = |round: usize| {
        let client = client.clone();
        async move {
            let calls = (0..3).map(|i| {
                let client = client.clone();
                async move {
                    let key = format!("k{round}-{i}");
                    match client.lock(&key, "v", 10 * SEC, 170 * MS, NoRetry).await {
                        Ok(lock) => {
                            let _ = lock.unlock().await;
                            true
                        }
                        Err(e) => {
                            assert!(e.is_timeout(), "{e:?}");
                            false
                        }
                    }
                }
            });
            futures::future::join_all(calls)
                .await
                .into_iter()
                .filter(|ok| *ok)
                .count()
        }
    };
    assert_eq!(wave(0).await, 3);
    proxy.stall_existing(); // half-open: this wave times out and replaces the connection
    assert_eq!(wave(1).await, 0);
    let mut ok = 0;
    for round in 2..22 {
        ok += wave(round).await;
    }
    eprintln!("FIGURE fresh-connection: {ok} of 60 calls succeeded after the replacement");
    assert!(
        ok >= 30,
        "{ok} of 60 calls succeeded on the replacement connection"
    );
}

/// One server behind a proxy: the client under test talks through it (one connection,
/// which the proxy can cut after the server answered), the other one directly.
async fn behind_a_proxy() -> (RedisServer, FaultProxy, Client, Client) {
    let server = RedisServer::start();
    for script in lost_reply::scripts() {
        server.cmd_sync(&["SCRIPT", "LOAD", &script]);
    }
    let proxy = FaultProxy::start(server.port());
    let open = |url: String| async move {
        Client::builder()
            .default_timeout(5 * SEC)
            .open(&url)
            .await
            .expect("connect")
    };
    let through = open(proxy.url()).await;
    let direct = open(server.url()).await;
    (server, proxy, through, direct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_whose_reply_was_lost_is_indeterminate_never_not_held() {
    let (_server, proxy, a, b) = behind_a_proxy().await;
    lost_reply::unlock(&a, &b, &proxy, "lost-unlock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_whose_reply_was_lost_never_deletes_the_next_holder() {
    let (_server, proxy, a, b) = behind_a_proxy().await;
    lost_reply::force_release(&a, &b, &proxy, "lost-force-release").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_reply_was_lost_is_sent_again_and_succeeds() {
    let (_server, proxy, a, b) = behind_a_proxy().await;
    lost_reply::refresh(&a, &b, &proxy, "lost-refresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_reply_was_lost_is_sent_again_and_grants_one_acquisition() {
    let (_server, proxy, a, b) = behind_a_proxy().await;
    lost_reply::acquire(&a, &b, &proxy, "lost-acquire").await;
}

/// An unlock that is the first call on a connection idle through a server restart meets
/// the dead connection. The connection is checked first (a `PING`, safe to lose), so the
/// unlock goes out on a fresh one and succeeds — not `Indeterminate`, as it did when the
/// unlock itself found the connection dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_after_an_idle_restart_succeeds() {
    let mut server = RedisServer::start_with(support::ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("k", "v", 60 * SEC).await.unwrap();
    server.stop();
    server.start_again();
    assert_eq!(server.get("k").as_deref(), Some("v"), "persisted");
    // Idle past the check's threshold.
    tokio::time::sleep(1200 * MS).await;
    lock.unlock().await.expect("the unlock after the restart");
    assert_eq!(server.get("k"), None);
}

/// The published fault cases (`leasehold::testing::faults`) on one Redis with an
/// append-only file: restarted in place, and a proxy for the faulty client that stalls it
/// (cut off) or swallows the next script's answer and then resets the connection (a
/// reply lost after the write ran). Every case runs; none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_fault_cases_pass_on_redis() {
    use leasehold::testing::faults::{Harness, Outcome, run_all};
    use std::sync::Mutex;

    struct Redis {
        server: Mutex<RedisServer>,
        proxy: Arc<FaultProxy>,
        url: String,
    }

    impl Redis {
        /// Every script in the server's cache: a lost answer is the script's, never a
        /// `NOSCRIPT` that ran nothing.
        fn load_scripts(server: &RedisServer) {
            for script in lost_reply::scripts() {
                server.cmd_sync(&["SCRIPT", "LOAD", &script]);
            }
        }
    }

    impl Harness for Redis {
        async fn client(&self) -> Client {
            Client::open(&self.url).await.unwrap()
        }
        async fn faulty_client(&self) -> Option<Client> {
            Some(Client::open(&self.proxy.url()).await.unwrap())
        }
        async fn restart(&self) -> bool {
            let mut server = self.server.lock().unwrap();
            server.stop();
            server.start_again();
            Redis::load_scripts(&server);
            true
        }
        async fn cut_off(&self, duration: Duration) -> bool {
            self.proxy.blackhole_for(duration);
            true
        }
        async fn lose_next_reply(&self) -> bool {
            self.proxy
                .lose_reply_then_cut(support::containing(b"EVALSHA"));
            true
        }
    }

    let server = RedisServer::start_with(ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    Redis::load_scripts(&server);
    let proxy = Arc::new(FaultProxy::start(server.port()));
    let h = Redis {
        url: server.url(),
        server: Mutex::new(server),
        proxy,
    };
    let outcomes = run_all(&h).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Ran),
        "{outcomes:?}"
    );
    // The unlock's answer and the acquire's were lost (and their connections reset).
    let both = tokio::task::block_in_place(|| wait_until(5 * SEC, || h.proxy.losses_cut() == 2));
    assert!(both, "replies lost: {}", h.proxy.losses_cut());
}
