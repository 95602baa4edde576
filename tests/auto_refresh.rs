//! Background renewal and loss detection against a real redis-server.

mod support;

use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval, Lock};
use support::{FaultProxy, RedisServer, wait_until};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// How many script calls (`EVALSHA`) the server has executed so far.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = match server.cmd_sync(&["INFO", "commandstats"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

async fn setup() -> (RedisServer, Client) {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    (server, client)
}

async fn hold(client: &Client, expiration: Duration) -> Lock {
    client.try_lock("job", "me", expiration).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_short_lease_alive_for_many_expirations() {
    let (server, client) = setup().await;
    let lock = hold(&client, 300 * MS).await;
    let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
    let until = Instant::now() + 3 * SEC; // ten expirations
    while Instant::now() < until {
        assert!(
            client
                .try_lock("job", "rival", SEC)
                .await
                .unwrap_err()
                .is_not_obtained()
        );
        assert!(renewal.try_error().is_none());
        assert!(lock.valid_for().is_some());
        tokio::time::sleep(50 * MS).await;
    }
    assert_eq!(server.get("job").as_deref(), Some("me"));
    lock.unlock().await.unwrap();
    assert!(
        renewal.error().await.is_none(),
        "unlock closes the channel cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_value_is_reported_within_an_interval_and_never_overwritten_back() {
    let (server, client) = setup().await;
    let lock = hold(&client, 2 * SEC).await;
    let mut renewal = lock.auto_refresh(200 * MS, 2 * SEC, 100 * MS, 3).unwrap();
    server.cmd_sync(&["SET", "job", "someone-else", "PX", "10000"]);
    let started = Instant::now();
    let err = tokio::time::timeout(2 * SEC, renewal.error())
        .await
        .expect("reported in time")
        .expect("a failure, not a clean end");
    assert!(err.is_not_held(), "{err:?}");
    assert!(
        started.elapsed() < 200 * MS + 150 * MS,
        "{:?}",
        started.elapsed()
    );
    assert!(renewal.error().await.is_none(), "sent once");
    assert!(!renewal.is_running());
    tokio::time::sleep(600 * MS).await;
    assert_eq!(server.get("job").as_deref(), Some("someone-else"));
    let ttl = server.cmd_sync(&["PTTL", "job"]);
    assert!(
        matches!(ttl, redis::Value::Int(ms) if ms <= 10_000 - 600),
        "{ttl:?}"
    );
    assert_eq!(lock.valid_for(), None);
}

/// The retries after a failed renewal are spread over what is left of the lease: a
/// server paused for 2 s under a 5 s lease (renewed every 100 ms, 100 ms timeout,
/// `max_retry` 3) costs nothing. Before the spreading, the three retries went out back to
/// back and renewal gave up within 0.4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_for_less_than_the_lease_costs_nothing() {
    let (server, client) = setup().await;
    let lock = hold(&client, 5 * SEC).await;
    let mut renewal = lock.auto_refresh(100 * MS, 5 * SEC, 100 * MS, 3).unwrap();
    tokio::time::sleep(150 * MS).await;
    server.client_pause(2 * SEC);
    let mut low = 5 * SEC;
    let until = Instant::now() + 6 * SEC;
    while Instant::now() < until {
        assert!(renewal.try_error().is_none(), "{:?}", renewal.cause());
        low = low.min(lock.valid_for().expect("the lease never lapses"));
        tokio::time::sleep(50 * MS).await;
    }
    eprintln!("FIGURE pause 2 s under a 5 s lease: valid_for fell to {low:?}");
    assert_eq!(server.get("job").as_deref(), Some("me"));
    assert!(renewal.is_running());
}

/// A server that stays away: renewal reports `MaxRetryExceeded`, with the last failure
/// as its cause, before the lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_for_good_is_reported_with_its_cause_before_the_lease_ends() {
    let (mut server, client) = setup().await;
    let lock = hold(&client, 3 * SEC).await;
    let mut renewal = lock.auto_refresh(SEC, 3 * SEC, 200 * MS, 3).unwrap();
    tokio::time::sleep(100 * MS).await;
    let lease_ends = Instant::now() + lock.valid_for().unwrap();
    server.stop();
    let err = tokio::time::timeout(5 * SEC, renewal.error())
        .await
        .expect("reported in time")
        .expect("a failure");
    let reported = Instant::now();
    assert!(err.is_max_retry_exceeded(), "{err:?}");
    let cause = renewal.cause().expect("the last failure's error");
    assert!(cause.is_transient(), "{cause:?}");
    eprintln!(
        "FIGURE server gone: reported {:?} before the lease ended; cause: {cause}",
        lease_ends.saturating_duration_since(reported)
    );
    assert!(reported <= lease_ends, "{:?} late", reported - lease_ends);
}

/// The README's renewal settings (every third of the expiration, 200 ms timeout,
/// `max_retry` 3) under a 10 s lease ride out a 2 s restart of a Redis with an
/// append-only file: nothing is reported, the key keeps its value and token, and the
/// first call after the server is back does not see the old connection's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_settings_ride_out_a_two_second_restart_of_a_persistent_redis() {
    let mut server = RedisServer::start_with(support::ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    let lock = hold(&client, 10 * SEC).await;
    let token = lock.fencing_token();
    let mut renewal = lock
        .auto_refresh(10 * SEC / 3, 10 * SEC, 200 * MS, 3)
        .unwrap();
    // Renewals at 3.3 s, 6.7 s, 10 s…: down from 5.5 s to 7.5 s, over the second.
    tokio::time::sleep(5500 * MS).await;
    server.stop();
    tokio::time::sleep(2 * SEC).await;
    server.start_again();
    // The first call after the server is back does not see the old connection's error.
    tokio::time::sleep(100 * MS).await;
    let first = client.try_lock("other", "x", SEC).await;
    assert!(first.is_ok(), "the first call after the restart: {first:?}");
    let mut low = 10 * SEC;
    let until = Instant::now() + 8 * SEC;
    while Instant::now() < until {
        assert!(renewal.try_error().is_none(), "{:?}", renewal.cause());
        low = low.min(lock.valid_for().expect("the lease never lapses"));
        tokio::time::sleep(100 * MS).await;
    }
    eprintln!("FIGURE 2 s restart under a 10 s lease: valid_for fell to {low:?}");
    assert_eq!(server.get("job").as_deref(), Some("me"));
    let again = client.try_lock("job", "me", 10 * SEC).await.unwrap();
    assert_eq!(again.fencing_token(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_is_reported_and_nothing_is_resurrected() {
    let (mut server, client) = setup().await;
    let lock = hold(&client, 2 * SEC).await;
    let mut renewal = lock.auto_refresh(100 * MS, 2 * SEC, 100 * MS, 3).unwrap();
    server.restart();
    let err = tokio::time::timeout(5 * SEC, renewal.error())
        .await
        .expect("reported in time")
        .expect("a failure");
    // Depending on when the reconnect lands: the key is gone, or the link stayed down.
    assert!(err.is_not_held() || err.is_max_retry_exceeded(), "{err:?}");
    tokio::time::sleep(300 * MS).await;
    assert_eq!(server.get("job"), None, "renewal never re-creates the key");
    // The same client works again once the server is back.
    let again = client
        .lock("job", "next", SEC, SEC, FixedInterval::new(50 * MS, 40))
        .await
        .unwrap();
    assert_eq!(again.value(), "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_and_drop_stop_renewal_and_nothing_is_sent_afterwards() {
    let (server, client) = setup().await;
    // Control: while renewal runs, the server sees renewals.
    let lock = hold(&client, SEC).await;
    let renewal = lock.auto_refresh(50 * MS, SEC, 100 * MS, 3).unwrap();
    let before = evalsha_calls(&server);
    tokio::time::sleep(300 * MS).await;
    assert!(evalsha_calls(&server) >= before + 4, "renewals are counted");
    // Unlock: after it returns, not a single script call more.
    lock.unlock().await.unwrap();
    let after_unlock = evalsha_calls(&server);
    tokio::time::sleep(300 * MS).await;
    assert_eq!(evalsha_calls(&server), after_unlock);
    assert_eq!(server.get("job"), None);
    drop(renewal);

    // Drop of the handle: renewal stops, the lock itself is kept until it expires.
    let lock = hold(&client, 400 * MS).await;
    let renewal = lock.auto_refresh(50 * MS, 400 * MS, 100 * MS, 3).unwrap();
    tokio::time::sleep(120 * MS).await;
    drop(renewal);
    let after_drop = evalsha_calls(&server);
    tokio::time::sleep(200 * MS).await;
    assert_eq!(evalsha_calls(&server), after_drop);
    assert!(wait_until(2 * SEC, || server.get("job").is_none()));
    tokio::time::sleep(200 * MS).await;
    assert_eq!(server.get("job"), None, "nothing re-creates the key");
    assert!(lock.ttl().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_during_a_stall_do_not_come_back_as_a_burst() {
    let (server, client) = setup().await;
    let lock = hold(&client, 10 * SEC).await;
    let _renewal = lock.auto_refresh(100 * MS, 10 * SEC, 5 * SEC, 3).unwrap();
    tokio::time::sleep(150 * MS).await;
    server.client_pause(SEC);
    tokio::time::sleep(SEC).await;
    // The stalled renewal completes when the pause ends; ten ticks were missed.
    let start = evalsha_calls(&server);
    tokio::time::sleep(250 * MS).await;
    let burst = evalsha_calls(&server) - start;
    assert!(burst <= 4, "{burst} renewals in 250 ms after the stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_a_contender_acquires_when_the_holder_is_cut_off() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let holder = Client::open(&proxy.url()).await.unwrap();
    let contender = Client::open(&server.url()).await.unwrap();
    // 2 s: a drift allowance (22 ms) that CI's scheduling jitter cannot eat.
    let lock = hold(&holder, 2 * SEC).await;
    let mut renewal = lock.auto_refresh(300 * MS, 2 * SEC, 100 * MS, 3).unwrap();
    tokio::time::sleep(400 * MS).await; // one renewal went through
    proxy.blackhole(true);

    let contending = async {
        let lock = contender
            .lock(
                "job",
                "contender",
                10 * SEC,
                SEC,
                FixedInterval::new(5 * MS, 1_000),
            )
            .await
            .expect("the contender gets the key after it expires");
        (Instant::now(), lock)
    };
    let losing = async {
        lock.lost().await;
        Instant::now()
    };
    let ((acquired_at, taken), lost_at) =
        tokio::time::timeout(10 * SEC, async { tokio::join!(contending, losing) })
            .await
            .expect("both happen in time");
    eprintln!(
        "FIGURE black-hole: lost() fired {:?} before the contender acquired",
        acquired_at.saturating_duration_since(lost_at)
    );
    assert!(
        lost_at < acquired_at,
        "lost() must fire before anyone else can hold the key ({:?} early)",
        acquired_at.saturating_duration_since(lost_at)
    );
    assert!(taken.fencing_token() > lock.fencing_token());
    let err = renewal.error().await.expect("renewal reports the failure");
    assert!(err.is_max_retry_exceeded(), "{err:?}");
    // The partition heals: the held renewals land (owner-checked, they touch nothing)
    // and the same client works again.
    proxy.blackhole(false);
    let again = holder
        .lock("other", "me", SEC, SEC, FixedInterval::new(50 * MS, 40))
        .await
        .expect("the holder's client recovers");
    assert!(again.valid_for().is_some());
    assert_eq!(server.get("job").as_deref(), Some("contender"));
}
