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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_longer_than_max_retry_timeouts_ends_renewal_with_max_retry_exceeded() {
    let (server, client) = setup().await;
    let lock = hold(&client, 5 * SEC).await;
    let mut renewal = lock.auto_refresh(100 * MS, 5 * SEC, 100 * MS, 3).unwrap();
    tokio::time::sleep(150 * MS).await;
    server.client_pause(2 * SEC);
    let err = tokio::time::timeout(3 * SEC, renewal.error())
        .await
        .expect("reported in time")
        .expect("a failure");
    assert!(err.is_max_retry_exceeded(), "{err:?}");
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
