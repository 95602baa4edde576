//! PostgreSQL (feature `postgres`): the whole conformance suite, async and blocking, on
//! one server shared by this test binary (a key prefix per case), the history checker
//! with its negative control, the schema, and faults (a restart mid-hold, a killed
//! connection, a paused client, a reply lost after commit, a statement timeout) each on
//! a server or proxy of its own.

#![cfg(feature = "postgres")]

mod support;
#[macro_use]
mod suite;

use std::time::Duration;

use leasehold::Client;
use support::PostgresServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

conformance!(postgres);

/// A namespace of its own on the shared server: a client with that key prefix, and the
/// prefix.
async fn client(test: &str) -> (Client, String) {
    let prefix = format!("{test}-{}:", &leasehold::random_value()[..8]);
    let client = Client::builder()
        .key_prefix(prefix.as_str())
        .open(&suite::postgres::url())
        .await
        .expect("connect to postgres");
    (client, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_a_row_with_a_rising_token() {
    let (client, prefix) = client("row").await;
    let lock = client.try_lock("k", "v1", 10 * SEC).await.unwrap();
    let first = lock.fencing_token();
    lock.unlock().await.unwrap();
    let lock = client.try_lock("k", "v2", 10 * SEC).await.unwrap();
    assert_eq!(lock.fencing_token(), first + 1);
    let rows = PostgresServer::shared().sql(&format!(
        "SELECT token, value IS NOT NULL FROM leasehold_locks WHERE key = '{prefix}k'::bytea"
    ));
    assert_eq!(rows.len(), 1, "one row per key");
    assert_eq!(rows[0][0].as_deref(), Some(&*(first + 1).to_string()));
    let _ = MS;
}
