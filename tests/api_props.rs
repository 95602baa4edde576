//! Bad input, generated: any duration from zero to `Duration::MAX`, empty, huge and odd
//! keys and values, strategies that return huge delays. Never a panic; always either a
//! typed `InvalidArgument` (exactly when the input is invalid) or a correct result.

mod support;

use std::time::Duration;

use leasehold::{Client, MAX_DURATION, NoRetry};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::RedisServer;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_micros(999)),
        Just(Duration::from_millis(1)),
        Just(MAX_DURATION),
        Just(MAX_DURATION + Duration::from_nanos(1)),
        Just(Duration::MAX),
        (0u64..5_000_000_000).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Generated text whose `Debug` stays short (a 1 MiB key must not flood a failure report).
#[derive(Clone)]
struct Text(String);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String = self.0.chars().take(24).collect();
        write!(f, "{head:?}… ({} bytes)", self.0.len())
    }
}

fn text() -> impl Strategy<Value = Text> {
    text_raw().prop_map(Text)
}

fn text_raw() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\0".to_owned()),
        Just("\r\n*1\r\n$4\r\nPING\r\n".to_owned()),
        Just("{".to_owned()),
        Just("}{".to_owned()),
        Just("🔒 ключ 鍵".to_owned()),
        Just("x".repeat(1 << 20)),
        any::<String>(),
        "[a-z{}:]{1,12}",
    ]
}

fn valid_duration(d: Duration) -> bool {
    d >= Duration::from_millis(1) && d <= MAX_DURATION
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `lock` + `try_lock` + `auto_refresh` on arbitrary input against `client`.
/// `rt` must be the runtime `client` was opened on (its connection's task lives there).
fn check_api(rt: &tokio::runtime::Runtime, client: &Client, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let input = (text(), text(), duration(), duration());
    // Keys an earlier case may still hold (an attempt that timed out and landed, until
    // its detached abort runs): `NotObtained` is a correct answer for them.
    let seen = std::cell::RefCell::new(std::collections::HashSet::new());
    runner
        .run(&input, |(Text(key), Text(val), expiration, timeout)| {
            let seen_before = !seen.borrow_mut().insert(key.clone());
            rt.block_on(async {
                let valid = !key.is_empty()
                    && !val.is_empty()
                    && valid_duration(expiration)
                    && valid_duration(timeout);
                match client.lock(&key, &val, expiration, timeout, NoRetry).await {
                    Ok(lock) => {
                        prop_assert!(valid, "accepted invalid input");
                        prop_assert_eq!(lock.key(), key.as_str());
                        if expiration >= Duration::from_secs(1) {
                            match lock.ttl().await {
                                Ok(ttl) => prop_assert!(ttl.is_some()),
                                // The lock's timeout may be 1 ms.
                                Err(e) => prop_assert!(e.is_timeout(), "{e:?}"),
                            }
                        }
                        // A 1 ms lease may be gone already, a 1 ms timeout may not reach
                        // the unlock: clean up for the next case regardless.
                        let _ = lock.unlock().await;
                        client.force_release(&key).await.unwrap();
                    }
                    // A valid call may time out: 1 MiB keys and 1 ms timeouts queue up on
                    // the one multiplexed connection. Never for invalid input, though.
                    Err(e) if e.is_timeout() => prop_assert!(valid, "{e:?}"),
                    Err(e) if e.is_not_obtained() => prop_assert!(valid && seen_before, "{e:?}"),
                    Err(e) => prop_assert!(
                        !valid && e.is_invalid_argument(),
                        "valid: {valid}, error: {e:?}"
                    ),
                }
                Ok(())
            })
        })
        .unwrap();

    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let lock = rt
        .block_on(client.try_lock("props-renewal", "v", Duration::from_secs(60)))
        .unwrap();
    let input = (duration(), duration(), duration(), any::<u32>());
    runner
        .run(&input, |(interval, expiration, timeout, max_retry)| {
            rt.block_on(async {
                let valid = valid_duration(interval)
                    && valid_duration(expiration)
                    && valid_duration(timeout)
                    && Duration::from_millis(interval.as_millis() as u64)
                        < Duration::from_millis(expiration.as_millis() as u64)
                    && max_retry > 0;
                match lock.auto_refresh(interval, expiration, timeout, max_retry) {
                    Ok(renewal) => {
                        prop_assert!(valid, "accepted invalid input");
                        renewal.stop().await;
                    }
                    Err(e) => prop_assert!(!valid && e.is_invalid_argument(), "{e:?}"),
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn arbitrary_input_on_memory_is_a_typed_error_or_a_correct_result() {
    check_api(&runtime(), &Client::memory(), 256);
}

#[test]
fn arbitrary_input_on_redis_is_a_typed_error_or_a_correct_result() {
    let server = RedisServer::start();
    let rt = runtime();
    let client = rt.block_on(Client::open(&server.url())).unwrap();
    check_api(&rt, &client, 128);
}

/// Strategies that ask for absurd delays do not panic (tokio clamps the sleep to about
/// 30 years); on the paused clock the wait passes instantly — and outlives the holder's
/// longest possible lease, so the rival may end up with the key.
#[tokio::test(start_paused = true)]
async fn strategies_with_huge_delays_do_not_panic() {
    let client = Client::memory();
    let _holder = client.try_lock("k", "holder", MAX_DURATION).await.unwrap();
    for delays in [
        vec![Duration::MAX],
        vec![Duration::MAX, Duration::MAX],
        vec![MAX_DURATION, Duration::from_secs(u64::MAX / 2)],
    ] {
        let result = client
            .lock(
                "k",
                "rival",
                Duration::from_secs(1),
                Duration::from_secs(1),
                delays.into_iter(),
            )
            .await;
        match result {
            Ok(lock) => assert_eq!(lock.value(), "rival"),
            Err(e) => assert!(e.is_not_obtained(), "{e:?}"),
        }
    }
}
