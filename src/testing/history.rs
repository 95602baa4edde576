//! The exclusion and fencing history checker, for any store.
//!
//! A workload records every hold of a lock as a [`Hold`] (the fencing token, and when the
//! hold began and ended, both taken *inside* the real hold: after `lock` returned, before
//! `unlock` was sent), while doing a read-modify-write on a counter under the lock.
//! [`violations`] then lists every breach of mutual exclusion the history shows: lost
//! updates (the counter short of the number of holds), overlapping holds, and fencing
//! tokens not rising in grant order.
//!
//! [`holds_never_overlap`] runs a workload in this process against your store: tasks,
//! each with a client of its own from your factory, on a counter kept in the test
//! process. [`the_checker_catches_no_lock`] is its negative control: the same workload
//! without the lock must be caught. A workload across processes (the crate's own tests
//! run one over several OS processes on each store) records its holds wherever it likes
//! and calls [`violations`].
//!
//! ```no_run
//! use leasehold::Client;
//! use leasehold::testing::history;
//!
//! async fn open() -> Client {
//!     Client::open("memory://history").await.unwrap() // yours: Client::from_store(..)
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn holds_never_overlap() {
//!     history::holds_never_overlap(open).await;
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn the_checker_catches_no_lock() {
//!     history::the_checker_catches_no_lock(open).await;
//! }
//! # fn main() {}
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::{Client, NonFixedInterval};

/// How many tasks the in-process workload runs, each with a client of its own.
pub const TASKS: usize = 6;
/// How many read-modify-writes each task does.
pub const ROUNDS: usize = 8;
/// How long the in-process workload may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// One recorded hold of the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The hold's fencing token; where the lock has none (Redlock), any number naming the
    /// holder (checked with `tokens: false`, where it only names the hold in a message).
    pub token: u64,
    /// When the hold began, in nanoseconds since any origin that every recorder of the
    /// history shares (the Unix epoch across processes): taken after `lock` returned.
    pub acquired_ns: u128,
    /// When the hold ended, on the same clock: taken before `unlock` was sent.
    pub released_ns: u128,
}

/// Every violation of mutual exclusion the history shows, each a line starting with what
/// was broken: `lost updates` (`counter` is not the number of holds: each hold
/// incremented it once), `overlapping holds` (one began before the previous one ended),
/// or, when `tokens`, `token N granted after token M` (fencing tokens did not rise in
/// grant order). Empty for a history that keeps the contract.
pub fn violations(counter: i64, mut holds: Vec<Hold>, tokens: bool) -> Vec<String> {
    let mut found = Vec::new();
    if counter != holds.len() as i64 {
        found.push(format!(
            "lost updates: counter {counter} after {} increments",
            holds.len()
        ));
    }
    holds.sort_by_key(|h| h.acquired_ns);
    for pair in holds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.acquired_ns < a.released_ns {
            found.push(format!(
                "overlapping holds: token {} and token {}",
                a.token, b.token
            ));
        }
        if tokens && b.token <= a.token {
            found.push(format!("token {} granted after token {}", b.token, a.token));
        }
    }
    found
}

/// Runs the in-process workload: [`TASKS`] tasks, each with a client of its own from
/// `open`, do [`ROUNDS`] read-modify-writes each (load the counter, sleep 1 ms, store it
/// plus one) on a counter kept in this process, under the lock `history-lock` when
/// `locked` (or under nothing, for a negative control), recording every hold. Returns the
/// final counter and the holds. Call it from a multi-threaded runtime.
///
/// # Panics
///
/// If a lock or an unlock fails, or the workload takes over [`LIMIT`].
///
/// # Cancel safety
///
/// Not cancel safe: dropped mid-way, its tasks go on until the runtime ends.
pub async fn run<F, Fut>(open: F, locked: bool) -> (i64, Vec<Hold>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Client>,
{
    let origin = Instant::now();
    let counter = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = open().await;
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut holds = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                let lock = if locked {
                    let lock = client
                        .lock(
                            "history-lock",
                            &crate::random_value(),
                            Duration::from_secs(10),
                            Duration::from_secs(2),
                            NonFixedInterval::new(Duration::from_millis(3), 20_000),
                        )
                        .await
                        .expect("the workload's lock");
                    Some(lock)
                } else {
                    None
                };
                let acquired_ns = origin.elapsed().as_nanos();
                let n = counter.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(n + 1, Ordering::SeqCst);
                let released_ns = origin.elapsed().as_nanos();
                let token = match &lock {
                    Some(lock) => lock.fencing_token(),
                    // Control: a token from a counter nobody coordinates on.
                    None => (task * 1_000 + round) as u64,
                };
                if let Some(lock) = lock {
                    lock.unlock().await.expect("the workload's unlock");
                }
                holds.push(Hold {
                    token,
                    acquired_ns,
                    released_ns,
                });
            }
            holds
        }));
    }
    let mut holds = Vec::new();
    for task in tasks {
        let task_holds = tokio::time::timeout(LIMIT, task)
            .await
            .unwrap_or_else(|_| panic!("the history workload did not finish within {LIMIT:?}"))
            .expect("a workload task failed");
        holds.extend(task_holds);
    }
    (counter.load(Ordering::SeqCst), holds)
}

/// Promise: mutual exclusion and rising fencing tokens on your store. Runs the workload
/// of [`run`] under the lock, with a client per task from `open` (all on one store, the
/// same key prefix): every hold recorded, no violation.
///
/// # Panics
///
/// On any violation, naming each (e.g. "overlapping holds: token 7 and token 8").
///
/// # Cancel safety
///
/// As [`run`].
pub async fn holds_never_overlap<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Client>,
{
    let (counter, holds) = run(open, true).await;
    assert_eq!(holds.len(), TASKS * ROUNDS, "every hold recorded");
    let found = violations(counter, holds, true);
    assert!(
        found.is_empty(),
        "the history under the lock shows violations of mutual exclusion: {found:#?}"
    );
}

/// The negative control of [`holds_never_overlap`]: the same workload without the lock
/// must be caught, with lost updates and overlapping holds.
///
/// # Panics
///
/// If the checker misses the unlocked workload's violations.
///
/// # Cancel safety
///
/// As [`run`].
pub async fn the_checker_catches_no_lock<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Client>,
{
    let (counter, holds) = run(open, false).await;
    let found = violations(counter, holds, true);
    assert!(
        found.iter().any(|v| v.starts_with("lost updates")),
        "the checker missed the lost updates of a workload without the lock: {found:?}"
    );
    assert!(
        found.iter().any(|v| v.starts_with("overlapping holds")),
        "the checker missed the overlapping holds of a workload without the lock: {found:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(token: u64, acquired_ns: u128, released_ns: u128) -> Hold {
        Hold {
            token,
            acquired_ns,
            released_ns,
        }
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let holds = vec![hold(2, 10, 20), hold(1, 0, 10), hold(3, 20, 30)];
        assert_eq!(violations(3, holds, true), Vec::<String>::new());
    }

    #[test]
    fn each_breach_is_named() {
        let holds = vec![hold(1, 0, 10), hold(3, 5, 15), hold(2, 20, 30)];
        let found = violations(2, holds, true);
        assert_eq!(
            found,
            [
                "lost updates: counter 2 after 3 increments",
                "overlapping holds: token 1 and token 3",
                "token 2 granted after token 3",
            ]
        );
        let holds = vec![hold(1, 0, 10), hold(3, 5, 15), hold(2, 20, 30)];
        assert_eq!(violations(3, holds, false).len(), 1, "tokens not checked");
    }
}
