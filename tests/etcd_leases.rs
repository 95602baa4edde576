//! What etcd's whole-second leases do to expirations (feature `etcd`), as documented on
//! `Client::open`: rounded up to whole seconds and the server's minimum (1 s with the
//! harness' 100 ms election timeout), reported by `Lock::expiration()`, and the key
//! really lasts that long — then goes within etcd's 0.5 s expiry sweep.
#![cfg(feature = "etcd")]

mod support;

use std::time::{Duration, Instant};

use leasehold::Client;
use support::EtcdServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expirations_are_rounded_up_to_whole_seconds_and_the_key_lasts_that_long() {
    let server = EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let other = Client::open(&server.url()).await.unwrap();

    for (asked, granted) in [(50 * MS, SEC), (SEC, SEC), (1500 * MS, 2 * SEC)] {
        let key = format!("k{}", asked.as_millis());
        let started = Instant::now();
        let lock = client.try_lock(&key, "a", asked).await.unwrap();
        assert_eq!(lock.expiration(), granted, "asked {asked:?}");
        let valid = lock.valid_for().unwrap();
        assert!(valid > granted - 100 * MS && valid <= granted, "{valid:?}");
        // Held for the granted time, not the asked one.
        tokio::time::sleep((granted - 150 * MS).saturating_sub(started.elapsed())).await;
        assert!(
            lock.ttl().await.unwrap().is_some(),
            "still held at {:?}",
            started.elapsed()
        );
        let err = other.try_lock(&key, "b", SEC).await.unwrap_err();
        assert!(err.is_not_obtained(), "{err:?}");
        // Gone once the lease ran out, within the server's sweep.
        tokio::time::timeout(2 * SEC, lock.lost())
            .await
            .expect("lost fires");
        let deadline = Instant::now() + 2 * SEC;
        let next = loop {
            match other.try_lock(&key, "b", SEC).await {
                Ok(next) => break next,
                Err(e) if e.is_not_obtained() && Instant::now() < deadline => {
                    tokio::time::sleep(20 * MS).await
                }
                Err(e) => panic!("{e:?} after {:?}", started.elapsed()),
            }
        };
        let lasted = started.elapsed();
        assert!(lasted >= granted, "{lasted:?}");
        assert!(lasted < granted + 1200 * MS, "{lasted:?}");
        assert!(next.fencing_token() > lock.fencing_token());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_a_sub_second_expiration_keeps_a_whole_second_lease() {
    let server = EtcdServer::start();
    let client = Client::open(&server.url()).await.unwrap();
    let lock = client.try_lock("k", "a", 300 * MS).await.unwrap();
    assert_eq!(lock.expiration(), SEC);
    let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 500 * MS, 3).unwrap();
    tokio::time::sleep(2500 * MS).await;
    assert!(renewal.try_error().is_none());
    assert!(lock.valid_for().unwrap() > 800 * MS);
    // `ttl()` counts whole seconds, rounded down.
    let ttl = lock.ttl().await.unwrap().unwrap();
    assert!(ttl <= SEC && ttl.subsec_nanos() == 0, "{ttl:?}");
    lock.unlock().await.unwrap();
}
