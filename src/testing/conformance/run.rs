//! Running the cases: one per test ([`run_async_case`]) or all from one test
//! ([`run_all`], [`run_all_blocking`]).

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;

use super::{ASYNC_CASE_LIMIT, AsyncStore, BLOCKING_CASE_LIMIT, BlockingStore, bounded};
use crate::Client;

type AsyncCase = for<'a> fn(&'a Client) -> Pin<Box<dyn Future<Output = ()> + 'a>>;
type BlockingCase = fn(&BlockingStore);

const ASYNC_CASES: &[(&str, AsyncCase)] = crate::conformance_tests! { @async_cases @async_table; };
const BLOCKING_CASES: &[(&str, BlockingCase)] =
    crate::conformance_tests! { @blocking_cases @blocking_table; };

/// Runs one async case (`case`: its future) to the end on a runtime of its own with two
/// worker threads, as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
/// would: what [`conformance_tests!`](crate::conformance_tests) writes for each case.
///
/// # Panics
///
/// If the case fails, or does not finish within [`ASYNC_CASE_LIMIT`].
pub fn run_async_case(case: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the case");
    runtime.block_on(async {
        tokio::time::timeout(ASYNC_CASE_LIMIT, case)
            .await
            .unwrap_or_else(|_| panic!("the case did not finish within {ASYNC_CASE_LIMIT:?}"));
    });
}

/// Runs every async case, one after another, each on the store `open(case_name)` returns
/// (a [`Client`] or an [`AsyncStore`]; give each case a store of its own), then fails
/// naming every case that failed and why. Call it from a multi-threaded runtime
/// (`#[tokio::test(flavor = "multi_thread")]`): some cases spawn tasks.
///
/// # Panics
///
/// If a case fails or does not finish within [`ASYNC_CASE_LIMIT`].
///
/// # Cancel safety
///
/// Not cancel safe: dropped mid-way, the current case stops where it was, and its keys
/// stay in its store until they expire.
pub async fn run_all<F, Fut, S>(open: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
    S: Into<AsyncStore>,
{
    let mut failed = Vec::new();
    for &(name, case) in ASYNC_CASES {
        let store: AsyncStore = open(name).await.into();
        let run = tokio::time::timeout(ASYNC_CASE_LIMIT, case(&store.client));
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failed.push(format!("{name}: not finished within {ASYNC_CASE_LIMIT:?}")),
            Err(payload) => failed.push(format!("{name}: {}", message(payload))),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} conformance cases failed:\n{}",
        failed.len(),
        ASYNC_CASES.len(),
        failed.join("\n")
    );
}

/// Runs every blocking case, one after another, each on a thread of its own and the
/// store `open(case_name)` returns (give each case a store of its own), then fails naming
/// every case that failed and why. Call it outside any async runtime.
///
/// # Panics
///
/// If a case fails or does not finish within [`BLOCKING_CASE_LIMIT`].
pub fn run_all_blocking(open: impl Fn(&'static str) -> BlockingStore + Send + Sync + 'static) {
    let open = Arc::new(open);
    let mut failed = Vec::new();
    for &(name, case) in BLOCKING_CASES {
        let open = open.clone();
        let run = panic::catch_unwind(AssertUnwindSafe(|| {
            bounded(BLOCKING_CASE_LIMIT, move || case(&open(name)));
        }));
        if let Err(payload) = run {
            failed.push(format!("{name}: {}", message(payload)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} blocking conformance cases failed:\n{}",
        failed.len(),
        BLOCKING_CASES.len(),
        failed.join("\n")
    );
}

/// The message of a panic.
fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
    }
}
