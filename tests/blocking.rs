//! What only the blocking facade has — misuse inside an async runtime, the runtime
//! thread's lifetime, renewal reporting a takeover — against a real `redis-server` and
//! `memory://`. The conformance lines through the facade run with the rest of the suite
//! (`tests/suite`, `conformance!`).
//!
//! Plain `#[test]`s: no runtime on the calling thread. Every test body runs under
//! [`bounded`], so a hang fails the test instead of stalling the suite.

mod support;
#[macro_use]
#[allow(unused_macros)]
mod suite;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leasehold::blocking::{Client, Lock};
use leasehold::testing::conformance::bounded;
use leasehold::{NoRetry, RetryStrategy};
use support::RedisServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The facade's panic message for blocking calls inside a runtime (prefix of the rest).
const IN_RUNTIME: &str = "called from inside an async runtime";

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Runs `f`, which must panic with the facade's in-runtime message naming `what`.
fn assert_refused<T>(what: &str, f: impl FnOnce() -> T) {
    let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) else {
        panic!("{what}: expected a panic inside the runtime");
    };
    let msg = panic_message(payload);
    assert!(msg.contains(IN_RUNTIME), "{what}: {msg}");
    assert!(msg.contains(what), "{what}: {msg}");
}

/// Negative control: the same checker catches overlaps when the "lock" does not
/// exclude (every thread locks its own key).
#[test]
fn exclusion_checker_catches_a_lock_that_does_not_exclude() {
    bounded(20 * SEC, || {
        let c = Client::memory();
        let overlaps =
            leasehold::testing::conformance::blocking::exclusion_workload(&c, 8, 5, |worker| {
                format!("own-key-{worker}")
            });
        assert!(overlaps > 0, "the checker must see overlapping holders");
    });
}

/// A key stolen from a running renewal (set behind its back on the server): the next
/// renewal reports `NotHeld`, and the thief's key is left alone.
#[test]
fn renewal_reports_a_takeover_on_the_server() {
    bounded(20 * SEC, || {
        let server = RedisServer::start();
        let client = Client::open(&server.url()).expect("connect");
        let lock = client.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        assert!(renewal.error_timeout(250 * MS).is_none());
        server.cmd_sync(&["SET", "k", "thief", "PX", "60000"]);
        let started = Instant::now();
        let err = renewal.error_timeout(2 * SEC).expect("a failure");
        assert!(err.is_not_held(), "{err:?}");
        assert!(started.elapsed() < SEC, "{:?}", started.elapsed());
        assert!(lock.wait_lost_timeout(SEC));
        assert_eq!(
            server.cmd_sync(&["GET", "k"]),
            ::redis::Value::BulkString(b"thief".to_vec())
        );
    });
}

/// Every parking method panics inside a runtime (current-thread and multi-thread), with
/// a message naming it; nothing hangs; the handles keep working afterwards.
#[test]
fn blocking_calls_inside_an_async_runtime_panic_instead_of_hanging() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let lock = client.try_lock("k", "v", 10 * SEC).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3).unwrap();
        let to_unlock = client.try_lock("u", "v", 10 * SEC).unwrap();
        let to_stop = to_unlock
            .auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3)
            .unwrap();
        let spare = client.try_lock("s", "v", 10 * SEC).unwrap();

        let current_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        current_thread.block_on(async {
            assert_refused("Client::open", || Client::open("memory://"));
            assert_refused("ClientBuilder::open", || {
                Client::builder().open("memory://")
            });
            assert_refused("Client::try_lock", || client.try_lock("k2", "v", SEC));
            assert_refused("Client::lock", || client.lock("k2", "v", SEC, SEC, NoRetry));
            assert_refused("Lock::refresh", || lock.refresh());
            assert_refused("Lock::ttl", || lock.ttl());
            assert_refused("Lock::wait_lost", || lock.wait_lost());
            assert_refused("Lock::wait_lost_timeout", || lock.wait_lost_timeout(SEC));
            assert_refused("Lock::unlock", || to_unlock.unlock());
            assert_refused("AutoRefresh::error", || renewal.error());
            assert_refused("AutoRefresh::error_timeout", || renewal.error_timeout(SEC));
            assert_refused("AutoRefresh::stop", || to_stop.stop());
            // What never parks works anywhere.
            assert!(renewal.try_error().is_none());
            assert!(lock.valid_for().is_some());
            assert_eq!(lock.key(), "k");
            let spare = spare.auto_refresh(100 * MS, 10 * SEC, 100 * MS, 3).unwrap();
            drop(spare);
            // Dropping handles (even the last of a client) never blocks here.
            let started = Instant::now();
            drop(client.clone());
            drop(Client::memory());
            assert!(started.elapsed() < 500 * MS, "{:?}", started.elapsed());
        });
        drop(current_thread);

        let multi_thread = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        multi_thread.block_on(async {
            let task = tokio::spawn({
                let client = client.clone();
                async move {
                    panic::catch_unwind(AssertUnwindSafe(|| client.try_lock("k2", "v", SEC)))
                        .map(|_| ())
                        .map_err(panic_message)
                }
            });
            let msg = task.await.unwrap().unwrap_err();
            assert!(msg.contains(IN_RUNTIME), "{msg}");
            let msg = tokio::task::spawn_blocking({
                let client = client.clone();
                move || {
                    panic::catch_unwind(AssertUnwindSafe(|| client.try_lock("k2", "v", SEC)))
                        .map(|_| ())
                        .map_err(panic_message)
                }
            })
            .await
            .unwrap()
            .unwrap_err();
            assert!(
                msg.contains(IN_RUNTIME),
                "spawn_blocking has a context too: {msg}"
            );
        });
        drop(multi_thread);

        // The refused calls did no damage: renewal ran on, the handles work.
        assert!(renewal.try_error().is_none());
        assert!(renewal.is_running());
        lock.refresh().unwrap();
        assert!(lock.ttl().unwrap().is_some());
        lock.unlock().unwrap();
        assert!(renewal.error_timeout(SEC).is_none());
    });
}

/// A blocking call made from a retry strategy (which runs with the client's runtime
/// entered) panics instead of deadlocking; the panic reaches the caller.
#[test]
fn a_blocking_call_from_a_retry_strategy_panics_instead_of_deadlocking() {
    struct Reentrant(Client);
    impl RetryStrategy for Reentrant {
        fn next_delay(&mut self) -> Option<Duration> {
            let _ = self.0.try_lock("other", "v", SEC);
            None
        }
    }
    bounded(20 * SEC, || {
        let client = Client::memory();
        let _holder = client.try_lock("k", "a", 10 * SEC).unwrap();
        let strategy = Reentrant(client.clone());
        assert_refused("Client::try_lock", || {
            client.lock("k", "b", 10 * SEC, SEC, strategy)
        });
        // The runtime survived the panic of one task.
        let _held_until_expiry = client.try_lock("k3", "v", SEC).unwrap();
    });
}

/// Where the runtime thread of `client` lives: its `/proc/self/task/<tid>` directory,
/// found from inside it. A retry strategy runs while the client's runtime is entered, so
/// it can spawn a probe task onto that runtime's thread.
#[cfg(target_os = "linux")]
fn runtime_thread_dir(client: &Client) -> std::path::PathBuf {
    struct Probe(mpsc::Sender<(Option<String>, std::path::PathBuf)>);
    impl RetryStrategy for Probe {
        fn next_delay(&mut self) -> Option<Duration> {
            let tx = self.0.clone();
            tokio::runtime::Handle::current().spawn(async move {
                let name = thread::current().name().map(str::to_owned);
                let here = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                let _ = tx.send((name, here));
            });
            None
        }
    }
    let _holder = client.try_lock("probe", "a", 10 * SEC).unwrap();
    let (tx, rx) = mpsc::channel();
    let err = client
        .lock("probe", "b", 10 * SEC, SEC, Probe(tx))
        .unwrap_err();
    assert!(err.is_not_obtained(), "{err:?}");
    let (name, here) = rx.recv_timeout(SEC).expect("the probe ran");
    assert_eq!(
        name.as_deref(),
        Some(leasehold::blocking::RUNTIME_THREAD_NAME)
    );
    // "<pid>/task/<tid>"
    let tid = here.file_name().expect("a tid").to_owned();
    let dir = std::path::Path::new("/proc/self/task").join(tid);
    let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
    assert!("leasehold-runtime".starts_with(comm.trim()), "{comm:?}");
    dir
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_last_handle_stops_the_runtime_thread() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let thread_dir = runtime_thread_dir(&client);
        let lock = client.try_lock("k", "a", 300 * MS).unwrap();
        let mut renewal = lock.auto_refresh(100 * MS, 300 * MS, 100 * MS, 3).unwrap();
        let clone = client.clone();
        drop(client);
        drop(clone);
        // The lock and its renewal keep the runtime (and the renewal) going.
        thread::sleep(400 * MS);
        assert!(thread_dir.exists(), "still running for the lock");
        assert!(renewal.try_error().is_none());
        assert!(lock.ttl().unwrap().is_some(), "renewed past its expiration");
        drop(lock);
        thread::sleep(50 * MS);
        assert!(thread_dir.exists(), "still running for the renewal handle");
        // Nobody can unlock the key any more: renewal ended with the last lock handle.
        assert!(!renewal.is_running());
        assert!(renewal.error_timeout(SEC).is_none(), "ended cleanly");

        let started = Instant::now();
        drop(renewal);
        let took = started.elapsed();
        assert!(took < 2 * SEC, "drop is bounded: {took:?}");
        // The drop waited for the thread; the kernel drops its entry right after.
        assert!(
            support::wait_until(SEC, || !thread_dir.exists()),
            "the runtime thread is gone"
        );
    });
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_last_handle_inside_a_runtime_does_not_block_and_the_thread_still_exits() {
    bounded(20 * SEC, || {
        let client = Client::memory();
        let thread_dir = runtime_thread_dir(&client);
        let lock = client.try_lock("k", "a", 10 * SEC).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let started = Instant::now();
            drop(client);
            drop(lock);
            assert!(started.elapsed() < 100 * MS, "{:?}", started.elapsed());
        });
        assert!(
            support::wait_until(3 * SEC, || !thread_dir.exists()),
            "the runtime thread exits on its own"
        );
    });
}

#[test]
fn clones_share_one_runtime_thread_and_store() {
    bounded(20 * SEC, || {
        let a = Client::memory();
        let b = a.clone();
        let _lock = a.try_lock("k", "a", 10 * SEC).unwrap();
        assert!(b.try_lock("k", "b", SEC).unwrap_err().is_not_obtained());
        #[cfg(target_os = "linux")]
        assert_eq!(runtime_thread_dir(&a), runtime_thread_dir(&b));
        // A private memory store is private to a client and its clones.
        let c = Client::memory();
        let _held_until_expiry = c.try_lock("k", "c", SEC).unwrap();
    });
}

#[test]
fn handles_are_send_sync_and_clients_clone() {
    fn assert<T: Send + Sync + 'static>() {}
    fn clone<T: Clone>() {}
    assert::<Client>();
    assert::<Lock>();
    assert::<leasehold::blocking::AutoRefresh>();
    clone::<Client>();
}
