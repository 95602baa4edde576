//! The conformance suite the built-in stores pass: every line of the contract's
//! "Semantics users rely on", through the async API ([`cases`]) and through the blocking
//! facade ([`blocking`]), each case a function you call with a client on your store.
//!
//! Give each case a store of its own: a fresh one, or a key prefix of its own
//! ([`ClientBuilder::key_prefix`](crate::ClientBuilder::key_prefix)) on a shared one. The
//! easiest way is the [`conformance_tests!`](crate::conformance_tests) macro: given a
//! factory for an async client and one for a blocking client, it writes one `#[test]`
//! per case (modules `r#async` and `blocking`); it needs no tokio of your own. Or run
//! every case from one test with [`run_all`] and [`run_all_blocking`].
//!
//! ```no_run
//! use leasehold::Client;
//! use leasehold::testing::conformance::{AsyncStore, BlockingStore};
//!
//! /// A client on a store of its own for the case `case` (here a memory store per case;
//! /// yours: `Client::from_store(MyStore::new(..))`, or a key prefix per case).
//! async fn open(case: &str) -> Client {
//!     Client::open(&format!("memory://{case}")).await.unwrap()
//! }
//!
//! /// The same for the blocking cases: a way to open clients on one store (the cases
//! /// open a second one).
//! fn open_blocking(case: &str) -> BlockingStore {
//!     let url = format!("memory://blocking-{case}");
//!     BlockingStore::new(move || leasehold::blocking::Client::open(&url).unwrap())
//! }
//!
//! leasehold::conformance_tests!(open, open_blocking);
//! # fn main() {}
//! ```
//!
//! A failing case's assertion names the promise it found broken, e.g. "unlock by a
//! non-owner deleted the lock: owner check broken".
//!
//! Where the contract lets a store differ, the cases read the store's [`Traits`] from its
//! capability query, [`Client::granularity`]: a store of whole seconds (granularity of
//! 1 s or more) is checked to the whole second, with a lag for its expiry sweep.

mod client_cases;
mod fixture;
mod locker;
mod run;
mod traits;

pub mod blocking;
pub mod cases;

pub use fixture::{AsyncStore, BlockingStore, bounded};
pub use locker::{Held, Locker};
pub use run::{run_all, run_all_blocking, run_async_case};
pub use traits::Traits;

#[cfg(doc)]
use crate::Client;

/// How long one async case may take before it fails.
pub const ASYNC_CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long one blocking case may take before it fails.
pub const BLOCKING_CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes one `#[test]` per conformance case, each on a store of its own from your
/// factories:
///
/// * `conformance_tests!(open, open_blocking)`: module `r#async` with every async case
///   of [`testing::conformance::cases`](crate::testing::conformance::cases), and module
///   `blocking` with every blocking case of
///   [`testing::conformance::blocking`](crate::testing::conformance::blocking);
/// * `conformance_tests!(async open)` or `conformance_tests!(blocking open_blocking)`:
///   one of the two.
///
/// `open` is an `async fn(&'static str) -> S` (called with the case's name) where `S` is a
/// [`Client`](crate::Client) or an
/// [`AsyncStore`](crate::testing::conformance::AsyncStore) (a client and whatever keeps
/// its store alive); `open_blocking` is a `fn(&'static str) ->`
/// [`BlockingStore`](crate::testing::conformance::BlockingStore). Paths are resolved
/// from the module the macro is called in. Each async case runs on a runtime of its own
/// (two worker threads) and fails after
/// [`ASYNC_CASE_LIMIT`](crate::testing::conformance::ASYNC_CASE_LIMIT); each blocking
/// case on a thread of its own, failing after
/// [`BLOCKING_CASE_LIMIT`](crate::testing::conformance::BLOCKING_CASE_LIMIT).
///
/// See the [module docs](crate::testing::conformance) for an example.
#[macro_export]
macro_rules! conformance_tests {
    (async $open:path $(,)?) => {
        mod r#async {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests! { @async_cases @async_tests $open; }
        }
    };
    (blocking $open_blocking:path $(,)?) => {
        mod blocking {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests! { @blocking_cases @blocking_tests $open_blocking; }
        }
    };
    // The lists of cases, handed to `$then`.
    (@async_cases $($then:tt)*) => {
        $crate::conformance_tests! { $($then)*
            acquire_then_contention_is_not_obtained,
            same_value_reacquires_rearms_and_keeps_its_token,
            fencing_tokens_rise_across_acquisitions_and_survive_expiry,
            refresh_rearms_the_original_expiration,
            refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone,
            ttl_reports_remaining_time_and_none_when_not_held,
            unlock_releases_and_a_stale_unlock_is_not_held,
            retry_waits_until_the_holder_releases,
            contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt,
            iterators_and_custom_strategies_plug_in,
            bad_input_is_rejected_before_any_io,
            many_tasks_never_hold_one_key_at_once,
            debug_output_never_shows_the_lock_value,
            inspection_lists_locks_by_prefix_and_force_release_frees_them,
            holder_label_and_locked_at_show_who_holds_since_when,
            lock_requests_take_named_options_and_keep_a_renewed_lock,
            refresh_for_sets_the_expiration_given,
            run_exclusive_renews_releases_and_reports_a_loss,
            force_release_if_deletes_only_the_acquisition_named,
        }
    };
    (@blocking_cases $($then:tt)*) => {
        $crate::conformance_tests! { $($then)*
            acquire_then_contention_is_not_obtained,
            same_value_reacquires_rearms_and_keeps_its_token,
            fencing_tokens_rise_across_acquisitions_and_survive_expiry,
            refresh_rearms_the_original_expiration,
            refresh_ttl_unlock_after_loss_are_not_held_and_leave_the_new_owner_alone,
            bad_input_is_rejected_before_any_io,
            renewal_continues_while_the_caller_sleeps,
            error_timeout_is_none_while_renewal_runs_and_not_held_after_a_takeover,
            unlock_and_stop_end_renewal_cleanly,
            many_threads_never_hold_one_key_at_once,
            debug_output_never_shows_the_lock_value,
            fenced_resources_refuse_a_superseded_holder,
            lock_requests_take_named_options_and_keep_a_renewed_lock,
            refresh_for_inspection_and_force_release,
            run_exclusive_renews_releases_and_reports_a_loss,
            force_release_if_deletes_only_the_acquisition_named,
            the_value_is_the_identity_across_clients,
        }
    };
    (@async_tests $open:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::conformance::run_async_case(async {
                    let store = $crate::testing::conformance::AsyncStore::from(
                        ($open)(stringify!($case)).await,
                    );
                    $crate::testing::conformance::cases::$case(&store.client).await;
                });
            }
        )*
    };
    (@blocking_tests $open_blocking:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::conformance::bounded(
                    $crate::testing::conformance::BLOCKING_CASE_LIMIT,
                    || {
                        let store = ($open_blocking)(stringify!($case));
                        $crate::testing::conformance::blocking::$case(&store);
                    },
                );
            }
        )*
    };
    // The tables `run_all` and `run_all_blocking` walk.
    (@async_table; $($case:ident),* $(,)?) => {
        &[$((stringify!($case), |c| Box::pin($crate::testing::conformance::cases::$case(c)))),*]
    };
    (@blocking_table; $($case:ident),* $(,)?) => {
        &[$((stringify!($case), $crate::testing::conformance::blocking::$case)),*]
    };
    // Last: a path fragment that fails to parse ends the macro's matching.
    ($open:path, $open_blocking:path $(,)?) => {
        $crate::conformance_tests!(async $open);
        $crate::conformance_tests!(blocking $open_blocking);
    };
}
