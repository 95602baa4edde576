//! `testing::SimStore` (feature `testing`): each fault it injects does what its docs say,
//! on tokio's paused clock, each with a control that shows the outcome needs the fault.

#![cfg(feature = "testing")]

use std::time::Duration;

use leasehold::testing::SimStore;
use leasehold::{Client, Error};
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn client(sim: &SimStore) -> Client {
    Client::from_store(sim.clone())
}

#[tokio::test(start_paused = true)]
async fn expire_ends_the_lease_now_and_the_next_token_is_higher() {
    let sim = SimStore::new();
    let c = client(&sim);
    let lock = c.try_lock("k", "a", 60 * SEC).await.unwrap();
    // Control: held, a rival is refused.
    assert!(
        c.try_lock("k", "b", 60 * SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    assert!(sim.expire("k"));
    assert_eq!(lock.ttl().await.unwrap(), None, "the lease ran out");
    let next = c.try_lock("k", "b", 60 * SEC).await.unwrap();
    assert!(next.fencing_token() > lock.fencing_token());
    assert!(!sim.expire("absent"));
}

#[tokio::test(start_paused = true)]
async fn steal_makes_the_holder_lose_its_lease_at_the_next_renewal() {
    let sim = SimStore::new();
    let c = client(&sim);
    let lock = c.try_lock("job", "me", 30 * SEC).await.unwrap();
    let _renewal = lock.auto_refresh(10 * SEC, 30 * SEC, SEC, 3).unwrap();
    // Control: renewal keeps it through a minute.
    tokio::time::sleep(60 * SEC).await;
    assert!(lock.valid_for().is_some(), "renewed while nobody stole it");
    let started = Instant::now();
    let token = sim.steal("job", "thief", 300 * SEC);
    assert!(token > lock.fencing_token());
    tokio::time::timeout(15 * SEC, lock.lost())
        .await
        .expect("lost() within one renewal interval of the theft");
    assert!(started.elapsed() <= 10 * SEC, "{:?}", started.elapsed());
    let info = c.inspect("job").await.unwrap().unwrap();
    assert_eq!(
        (info.fencing_token(), info.holder_label()),
        (token, Some("thief"))
    );
    assert!(lock.unlock().await.unwrap_err().is_not_held());
}

#[tokio::test(start_paused = true)]
async fn partition_fails_calls_after_their_timeout_and_leaves_the_store_untouched() {
    let sim = SimStore::new();
    let c = client(&sim);
    sim.partition(10 * SEC);
    let started = Instant::now();
    let err = c.try_lock("k", "a", 60 * SEC).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(
        started.elapsed() >= c.default_timeout(),
        "waited out its timeout"
    );
    sim.heal();
    assert!(
        c.inspect("k").await.unwrap().is_none(),
        "nothing reached the store"
    );
    // A partition ends by itself.
    sim.partition(5 * SEC);
    tokio::time::sleep(5 * SEC).await;
    let _held = c.try_lock("k", "a", 60 * SEC).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_partition_longer_than_the_lease_ends_renewal() {
    let sim = SimStore::new();
    let c = client(&sim);
    let lock = c.try_lock("k", "a", 10 * SEC).await.unwrap();
    let mut renewal = lock.auto_refresh(3 * SEC, 10 * SEC, SEC, 100).unwrap();
    sim.partition(60 * SEC);
    tokio::time::timeout(30 * SEC, lock.lost())
        .await
        .expect("lost() once the lease ran out unrenewed");
    let err = tokio::time::timeout(SEC, renewal.error())
        .await
        .expect("renewal ends with the lease")
        .expect("renewal reports why it ended");
    assert!(
        err.is_max_retry_exceeded() || err.is_lease_expired(),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_reply_ran_on_the_store_and_the_client_undoes_a_landed_acquire() {
    let sim = SimStore::new();
    let c = client(&sim);
    // A lost unlock reply: the unlock ran, the caller got a timeout.
    let lock = c.try_lock("u", "a", 60 * SEC).await.unwrap();
    sim.lose_next_reply();
    let err = lock.unlock().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(c.inspect("u").await.unwrap().is_none(), "the unlock ran");
    // A lost acquire reply: it landed, the caller got a timeout, and the client's abort
    // deleted what the attempt created (cancel safety).
    sim.lose_next_reply();
    let err = c.try_lock("k", "a", 60 * SEC).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The abort runs detached, bounded by the client's default timeout.
    tokio::time::sleep(c.default_timeout()).await;
    assert!(
        c.inspect("k").await.unwrap().is_none(),
        "the landed attempt was undone"
    );
    // Control: the next call is answered.
    let _held = c.try_lock("k", "a", 60 * SEC).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_partition_of_one_connection_leaves_another_through() {
    let sim = SimStore::new();
    let cut = Client::from_store(sim.connection());
    let through = Client::from_store(sim.connection());
    let lock = through.try_lock("k", "a", 60 * SEC).await.unwrap();
    sim.partition(60 * SEC); // the handle `sim` itself: neither client's path
    let _ = cut; // control below
    assert!(lock.ttl().await.unwrap().is_some());
    let faulty = sim.connection();
    let cut = Client::from_store(faulty.clone());
    faulty.partition(60 * SEC);
    assert!(matches!(cut.inspect("k").await, Err(Error::Timeout)));
    assert!(
        through.inspect("k").await.unwrap().is_some(),
        "the other path is through"
    );
}

/// The published fault cases, on a harness of SimStore handles: a direct path and a
/// faulty one (partition, lost replies). SimStore has no restart.
struct SimHarness {
    sim: SimStore,
    faulty: SimStore,
}

impl leasehold::testing::faults::Harness for SimHarness {
    async fn client(&self) -> Client {
        Client::from_store(self.sim.connection())
    }
    async fn faulty_client(&self) -> Option<Client> {
        Some(Client::from_store(self.faulty.clone()))
    }
    async fn cut_off(&self, duration: Duration) -> bool {
        self.faulty.partition(duration);
        true
    }
    async fn lose_next_reply(&self) -> bool {
        self.faulty.lose_next_reply();
        true
    }
}

#[tokio::test(start_paused = true)]
async fn the_fault_cases_pass_and_a_missing_hook_skips() {
    use leasehold::testing::faults::{Outcome, run_all};
    let sim = SimStore::new();
    let h = SimHarness {
        faulty: sim.connection(),
        sim,
    };
    let outcomes = run_all(&h).await;
    assert_eq!(
        outcomes,
        vec![
            ("a_restart_never_loses_a_lock_silently", Outcome::Skipped),
            (
                "a_cut_off_holder_learns_it_lost_before_a_rival_wins",
                Outcome::Ran
            ),
            ("a_lost_unlock_reply_is_not_sent_again", Outcome::Ran),
            ("a_lost_acquire_reply_leaves_no_lock_behind", Outcome::Ran),
        ]
    );
}

/// Negative control: a store that re-sends an unlock whose answer was lost (what the
/// contract forbids) fails the published case, which names the broken promise.
#[tokio::test(start_paused = true)]
async fn a_store_that_resends_a_lost_unlock_fails_the_fault_case() {
    use leasehold::store::{Acquire, AttemptId, Store};
    use leasehold::testing::faults::a_lost_unlock_reply_is_not_sent_again;

    /// SimStore, but `release` tries again after a timeout.
    struct Resending(SimStore);
    impl Store for Resending {
        fn granularity(&self) -> Duration {
            self.0.granularity()
        }
        async fn acquire(
            &self,
            key: &str,
            val: &str,
            expiration: Duration,
            attempt: AttemptId,
            label: &str,
            timeout: Duration,
        ) -> leasehold::Result<Acquire> {
            self.0
                .acquire(key, val, expiration, attempt, label, timeout)
                .await
        }
        async fn refresh(
            &self,
            key: &str,
            val: &str,
            expiration: Duration,
            timeout: Duration,
        ) -> leasehold::Result<bool> {
            self.0.refresh(key, val, expiration, timeout).await
        }
        async fn release(
            &self,
            key: &str,
            val: &str,
            timeout: Duration,
        ) -> leasehold::Result<bool> {
            match self.0.release(key, val, timeout).await {
                Err(e) if e.is_timeout() => self.0.release(key, val, timeout).await,
                other => other,
            }
        }
        async fn abort(
            &self,
            key: &str,
            val: &str,
            attempts: &[AttemptId],
            undo: bool,
            timeout: Duration,
        ) -> leasehold::Result<bool> {
            self.0.abort(key, val, attempts, undo, timeout).await
        }
        async fn ttl(
            &self,
            key: &str,
            val: &str,
            timeout: Duration,
        ) -> leasehold::Result<Option<Duration>> {
            self.0.ttl(key, val, timeout).await
        }
    }
    struct Harness {
        sim: SimStore,
        faulty: SimStore,
    }
    impl leasehold::testing::faults::Harness for Harness {
        async fn client(&self) -> Client {
            Client::from_store(self.sim.connection())
        }
        async fn faulty_client(&self) -> Option<Client> {
            Some(Client::from_store(Resending(self.faulty.clone())))
        }
        async fn lose_next_reply(&self) -> bool {
            self.faulty.lose_next_reply();
            true
        }
    }
    let sim = SimStore::new();
    let h = Harness {
        faulty: sim.connection(),
        sim,
    };
    let failed = tokio::spawn(async move { a_lost_unlock_reply_is_not_sent_again(&h).await })
        .await
        .expect_err("the case must fail on a store that re-sends");
    let msg = failed.into_panic();
    let msg = msg
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(msg.contains("sent again"), "{msg}");
}

/// SimStore keeps the whole contract (on a running clock here): every conformance case.
mod kit {
    use leasehold::Client;
    use leasehold::testing::SimStore;
    use leasehold::testing::conformance::BlockingStore;

    async fn open(_case: &'static str) -> Client {
        Client::from_store(SimStore::new())
    }

    fn open_blocking(_case: &'static str) -> BlockingStore {
        let sim = SimStore::new();
        BlockingStore::new(move || leasehold::blocking::Client::from_store(sim.connection()))
    }

    leasehold::conformance_tests!(open, open_blocking);
}
