//! Server-side faults, each with the figure RELIABILITY.md reports (printed as
//! `FIGURE …`; run with `--nocapture` to see them).

mod support;

use std::time::{Duration, Instant};

use leasehold::{Client, FixedInterval, Lock};
use support::{RedisServer, ServerOptions};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

async fn contend(client: &Client, value: &str) -> (Instant, Lock) {
    let lock = client
        .lock(
            "job",
            value,
            10 * SEC,
            SEC,
            FixedInterval::new(5 * MS, 2_000),
        )
        .await
        .expect("the contender gets the key");
    (Instant::now(), lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_has_a_bounded_double_holder_window() {
    let mut server = RedisServer::start();
    let holder = Client::open(&server.url()).await.unwrap();
    let lock = holder.try_lock("job", "holder", 2 * SEC).await.unwrap();
    let mut renewal = lock.auto_refresh(200 * MS, 2 * SEC, 100 * MS, 5).unwrap();
    tokio::time::sleep(250 * MS).await;

    let restarted_at = Instant::now();
    server.restart();
    let contender = Client::open(&server.url()).await.unwrap();
    let reported = async {
        let err = renewal.error().await.expect("a loss report");
        (Instant::now(), err)
    };
    let ((acquired_at, taken), (reported_at, err)) = tokio::time::timeout(10 * SEC, async {
        tokio::join!(contend(&contender, "contender"), reported)
    })
    .await
    .expect("in time");
    assert!(err.is_not_held() || err.is_max_retry_exceeded(), "{err:?}");
    // The restart forgot the key's state too; the next token comes from the server's
    // clock in microseconds, above every token issued before the restart.
    assert!(taken.fencing_token() > lock.fencing_token());
    let window = reported_at.saturating_duration_since(acquired_at);
    eprintln!(
        "FIGURE restart-no-persistence: contender acquired {:?} after the restart; holder told {:?} after that (double-holder window); report: {err}",
        acquired_at - restarted_at,
        window
    );
    // The holder hears within one renewal interval plus the retries' timeouts.
    assert!(window <= 200 * MS + 5 * 100 * MS + 200 * MS, "{window:?}");
    tokio::time::sleep(300 * MS).await;
    assert_eq!(
        server.cmd_sync(&["GET", "job"]),
        redis::Value::BulkString(b"contender".to_vec()),
        "the old holder's renewal never overwrote the new holder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_appendfsync_always_keeps_the_lock_and_its_state() {
    let mut server = RedisServer::start_with(ServerOptions {
        appendonly_always: true,
        ..Default::default()
    });
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("job", "holder", 30 * SEC).await.unwrap();
    let token = lock.fencing_token();
    let restarted_at = Instant::now();
    server.restart();
    // The same client reconnects; the lock is still ours.
    let mut ttl = lock.ttl().await;
    while ttl.is_err() && restarted_at.elapsed() < 10 * SEC {
        tokio::time::sleep(50 * MS).await;
        ttl = lock.ttl().await;
    }
    let ttl = ttl.unwrap().expect("the lock survived the restart");
    eprintln!(
        "FIGURE restart-aof-always: lock kept (ttl {ttl:?}), client usable again {:?} after the restart",
        restarted_at.elapsed()
    );
    assert!(
        client
            .try_lock("job", "rival", SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    lock.unlock().await.unwrap();
    let next = client.try_lock("job", "next", SEC).await.unwrap();
    assert_eq!(
        next.fencing_token(),
        token + 1,
        "the key's state survived too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_longer_than_the_expiration_is_reported_before_a_contender_acquires() {
    let server = RedisServer::start();
    let holder = Client::open(&server.url()).await.unwrap();
    let contender = Client::open(&server.url()).await.unwrap();
    let lock = holder.try_lock("job", "holder", 500 * MS).await.unwrap();
    let mut renewal = lock
        .auto_refresh(100 * MS, 500 * MS, 50 * MS, 1_000)
        .unwrap();
    tokio::time::sleep(150 * MS).await;
    server.client_pause(1500 * MS);
    let losing = async {
        lock.lost().await;
        Instant::now()
    };
    let ((acquired_at, _), lost_at) = tokio::time::timeout(10 * SEC, async {
        tokio::join!(contend(&contender, "contender"), losing)
    })
    .await
    .expect("in time");
    let margin = acquired_at.saturating_duration_since(lost_at);
    eprintln!("FIGURE client-pause: lost() fired {margin:?} before the contender acquired");
    assert!(lost_at < acquired_at);
    // Renewal retries (max_retry is high) while the lease can be saved, and ends once it
    // ran out: `MaxRetryExceeded`, with the last failure (a timeout) as its cause.
    let err = tokio::time::timeout(5 * SEC, renewal.error())
        .await
        .expect("renewal reports")
        .expect("a failure");
    assert!(err.is_max_retry_exceeded(), "{err:?}");
    let cause = renewal.cause().expect("the last failure");
    assert!(cause.is_timeout(), "{cause:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_frees_the_key_within_its_expiration() {
    let server = RedisServer::start();
    let expiration = 400 * MS;
    let acquired_at = {
        let doomed = Client::open(&server.url()).await.unwrap();
        let lock = doomed.try_lock("job", "doomed", expiration).await.unwrap();
        let at = Instant::now();
        std::mem::forget(lock); // the process "dies": nothing releases the key
        at
    };
    let contender = Client::open(&server.url()).await.unwrap();
    let (taken_at, _) = contend(&contender, "contender").await;
    let gap = taken_at - acquired_at;
    eprintln!("FIGURE dead-holder: key taken over {gap:?} after a {expiration:?} lease began");
    assert!(
        gap >= expiration - 10 * MS && gap <= expiration + 100 * MS,
        "{gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exclusive_aborts_a_cut_off_job_before_anyone_else_can_run_it() {
    let server = RedisServer::start();
    let proxy = support::FaultProxy::start(server.port());
    let holder = Client::open(&proxy.url()).await.unwrap();
    let contender = Client::open(&server.url()).await.unwrap();
    let running = async {
        let result = holder
            // 1.5 s: a drift allowance (17 ms) that CI's scheduling jitter cannot eat.
            .run_exclusive("job", 1500 * MS, leasehold::NoRetry, |_| async {
                tokio::time::sleep(300 * MS).await;
                proxy.blackhole(true); // the holder is cut off mid-job
                tokio::time::sleep(60 * SEC).await;
            })
            .await;
        (Instant::now(), result)
    };
    let contending = async {
        tokio::time::sleep(400 * MS).await;
        contend(&contender, "contender").await
    };
    let ((aborted_at, result), (acquired_at, _)) =
        tokio::time::timeout(10 * SEC, async { tokio::join!(running, contending) })
            .await
            .expect("in time");
    let err = result.unwrap_err();
    assert!(err.is_lease_expired(), "{err:?}");
    eprintln!(
        "FIGURE run-exclusive: job aborted {:?} before the contender acquired",
        acquired_at.saturating_duration_since(aborted_at)
    );
    assert!(aborted_at < acquired_at);
    proxy.blackhole(false);
}
