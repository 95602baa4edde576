//! PostgreSQL (feature `postgres`): the whole conformance suite, async and blocking, on
//! one server shared by this test binary (a key prefix per case), with unnamed statements
//! (the default) and with `prepare=true`, the history checker
//! with its negative control, the schema, and faults (a restart mid-hold, a killed
//! connection, a paused client, a reply lost after commit, a statement timeout, and the
//! published fault cases of `leasehold::testing::faults`) each on a server or proxy of
//! its own.

#![cfg(feature = "postgres")]

mod support;
#[macro_use]
mod suite;

use std::time::{Duration, Instant};

use leasehold::{Client, Lock};
use support::{FaultProxy, PostgresServer};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

conformance!(postgres);
// Every case again with each statement prepared once per connection.
conformance!(postgres_prepared);

/// Entry point of a history worker process (re-executed test binary); not a test itself.
#[test]
#[ignore = "worker entry point, run by the history tests in child processes"]
fn history_worker() {
    suite::history::worker();
}

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
}

/// A client on `url` with this key prefix and per-call timeout.
async fn open(url: &str, prefix: &str, timeout: Duration) -> Client {
    Client::builder()
        .key_prefix(prefix)
        .default_timeout(timeout)
        .open(url)
        .await
        .expect("connect to postgres")
}

/// Polls (bounded) until `client` takes `key`.
async fn take_within(client: &Client, key: &str, val: &str, limit: Duration) -> Option<Lock> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(lock) = client.try_lock(key, val, 30 * SEC).await {
            return Some(lock);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(20 * MS).await;
    }
}

// -- the history checker ----------------------------------------------------------

/// 3 OS processes × 4 tasks do read-modify-writes of a counter under the lock: no lost
/// update, no overlapping holds, tokens strictly rising in grant order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_across_processes_never_overlap_and_tokens_rise_in_grant_order() {
    let namespace = format!("history-{}:", &leasehold::random_value()[..8]);
    let target = suite::history::Target::Postgres(suite::postgres::url(), namespace);
    suite::history::holds_never_overlap(&target).await;
}

/// Negative control: the same workload without the lock is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_the_same_workload_without_the_lock() {
    let namespace = format!("control-{}:", &leasehold::random_value()[..8]);
    let target = suite::history::Target::Postgres(suite::postgres::url(), namespace);
    suite::history::the_checker_catches_no_lock(&target).await;
}

// -- the schema -------------------------------------------------------------------

/// Columns, types, nullability, defaults and indexes of the three tables in `schema`,
/// and its functions ([`functions`]).
fn catalog(server: &PostgresServer, schema: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = server.sql(&format!(
        "SELECT table_name, column_name, data_type, is_nullable, column_default \
         FROM information_schema.columns WHERE table_schema = '{schema}' \
         ORDER BY table_name, ordinal_position"
    ));
    rows.extend(server.sql(&format!(
        "SELECT tablename, replace(indexdef, '{schema}.', 'S.') FROM pg_indexes \
         WHERE schemaname = '{schema}' ORDER BY indexname"
    )));
    rows.extend(functions(server, schema));
    rows
}

/// The functions of `schema`: name, arguments, result, language and the MD5 of the body
/// (unquoted, the schema's name replaced by `S`).
fn functions(server: &PostgresServer, schema: &str) -> Vec<Vec<Option<String>>> {
    server.sql(&format!(
        "SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), \
           l.lanname, md5(replace(replace(p.prosrc, '\"', ''), '{schema}.', 'S.')) \
         FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
         WHERE p.pronamespace = '{schema}'::regnamespace ORDER BY p.proname"
    ))
}

/// The shipped `schema.sql`, applied by hand, makes exactly what the client creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_schema_is_what_the_client_creates() {
    let server = PostgresServer::shared();
    let documented = include_str!("../src/store/postgres/schema.sql")
        .replace("public.", "documented.")
        .replace("EXISTS public;", "EXISTS documented;");
    server.sql(&documented);
    let url = format!("{}?schema=created", server.url());
    let client = Client::open(&url).await.expect("open creates the tables");
    let _held = client.try_lock("k", "v", 10 * SEC).await.unwrap();
    let (a, b) = (catalog(server, "documented"), catalog(server, "created"));
    assert_eq!(
        a.len(),
        25,
        "14 columns of 3 tables, 2 indexes and 9 functions: {a:?}"
    );
    assert_eq!(a, b);
    let version = server.sql("SELECT version FROM created.leasehold_locks_version");
    assert_eq!(version, vec![vec![Some("2".to_owned())]]);
    // What `leasehold migrate` prints for that URL: the shipped text with its names.
    let printed = leasehold::store::postgres::schema_sql(&url).unwrap();
    let shipped = include_str!("../src/store/postgres/schema.sql");
    assert!(
        printed.contains("CREATE TABLE IF NOT EXISTS \"created\".\"leasehold_locks_fences\" (")
    );
    assert_eq!(printed.lines().count(), shipped.lines().count());
    assert!(!printed.contains("public"), "{printed}");
}

/// Without `create`, a missing table is an error that says what to do, and nothing is
/// created; a schema newer than the client's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_newer_schema_is_refused() {
    let server = PostgresServer::shared();
    let url = format!("{}?schema=absent&create=false", server.url());
    let err = Client::open(&url).await.expect_err("no table");
    assert!(err.is_store() && !err.is_transient(), "{err}");
    assert!(err.to_string().contains("leasehold migrate"), "{err}");
    assert!(
        server
            .sql("SELECT 1 FROM pg_namespace WHERE nspname = 'absent'")
            .is_empty()
    );
    let url = format!("{}?schema=newer", server.url());
    Client::open(&url).await.unwrap();
    server.sql("UPDATE newer.leasehold_locks_version SET version = 99");
    let err = Client::open(&url).await.expect_err("newer schema");
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// A schema of version 1 (the same tables, no functions): refused with `create=false`,
/// with what to do and nothing changed; migrated to version 2 by `leasehold migrate` and
/// by an open that may create, its locks kept (the same row, the same token). A second
/// table in the same schema has functions of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_or_refused() {
    let server = PostgresServer::shared();
    let base = format!("{}?schema=old", server.url());
    // Version 1 as it was shipped: version 2 without its functions.
    let v1 = |server: &PostgresServer| {
        let drops: Vec<String> = functions(server, "old")
            .iter()
            .map(|f| {
                let (name, args) = (f[0].clone().unwrap(), f[1].clone().unwrap());
                format!("DROP FUNCTION old.\"{name}\"({args});")
            })
            .collect();
        assert_eq!(drops.len(), 9, "{drops:?}");
        server.sql(&drops.join(" "));
        server.sql("UPDATE old.leasehold_locks_version SET version = 1");
    };
    let version =
        |server: &PostgresServer| server.sql("SELECT version FROM old.leasehold_locks_version");
    Client::open(&base).await.unwrap();
    v1(server);
    // A v1 client's lock, written by hand into the v1 table.
    server.sql(
        "INSERT INTO old.leasehold_locks (key, value, expires_at, token) \
         VALUES ('held'::bytea, 'v1'::bytea, clock_timestamp() + interval '1 hour', 41)",
    );

    let err = Client::open(&format!("{base}&create=false"))
        .await
        .expect_err("version 1 without create");
    assert!(err.is_store() && !err.is_transient(), "{err}");
    assert!(err.to_string().contains("version 1"), "{err}");
    assert!(err.to_string().contains("leasehold migrate"), "{err}");
    assert_eq!(version(server), vec![vec![Some("1".to_owned())]]);
    assert!(functions(server, "old").is_empty());

    // `leasehold migrate`, even with create=false in the URL.
    let options = leasehold::store::postgres::Options::default();
    let migrated = leasehold::store::postgres::migrate(&format!("{base}&create=false"), &options)
        .await
        .unwrap();
    assert_eq!(migrated, 2);
    assert_eq!(functions(server, "old").len(), 9);
    let client = Client::open(&format!("{base}&create=false")).await.unwrap();
    let info = client
        .inspect("held")
        .await
        .unwrap()
        .expect("the v1 lock is kept");
    assert_eq!(info.fencing_token(), 41);
    assert!(
        client
            .try_lock("held", "w", 10 * SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );

    // An open that may create migrates too.
    v1(server);
    let client = Client::open(&base).await.unwrap();
    assert_eq!(version(server), vec![vec![Some("2".to_owned())]]);
    assert_eq!(functions(server, "old").len(), 9);
    let lock = client.try_lock("fresh", "v", 10 * SEC).await.unwrap();
    lock.unlock().await.unwrap();

    // Another table in the same schema: nine functions of its own, none shared.
    let other = Client::open(&format!("{base}&table=other_locks"))
        .await
        .unwrap();
    assert_eq!(functions(server, "old").len(), 18);
    let mine = other.try_lock("held", "v", 10 * SEC).await.unwrap();
    assert!(
        client
            .inspect("held")
            .await
            .unwrap()
            .unwrap()
            .fencing_token()
            == 41
    );
    mine.unlock().await.unwrap();
}

/// One caller at a time keeps to one server session (the pool's first connection with
/// nothing in flight: its backend stays warm), and calls at once spread over more. Counted
/// by the server (`pg_stat_activity`, by application name; no listener: `notify(false)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_at_a_time_keeps_to_one_session() {
    let server = PostgresServer::shared();
    let app = format!("one_{}", &leasehold::random_value()[..8]);
    let url = format!("{}?application_name={app}", server.url());
    let client = Client::builder()
        .notify(false)
        .key_prefix(format!("{app}:"))
        .open(&url)
        .await
        .unwrap();
    let sessions = || {
        server.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))[0][0]
            .clone()
            .unwrap()
    };
    for i in 0..20 {
        let lock = client
            .try_lock(&format!("k{i}"), "v", 10 * SEC)
            .await
            .unwrap();
        lock.unlock().await.unwrap();
    }
    assert_eq!(
        sessions(),
        "1",
        "20 lock + unlock cycles, one after another"
    );
    let keys: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    let calls = keys.iter().map(|k| client.try_lock(k, "v", 10 * SEC));
    for lock in futures::future::join_all(calls).await {
        lock.unwrap().unlock().await.unwrap();
    }
    let at_once: u32 = sessions().parse().unwrap();
    assert!(
        (2..=4).contains(&at_once),
        "16 calls at once: {at_once} sessions"
    );
}

// -- bad input --------------------------------------------------------------------

/// Keys are bytes to the store: NUL, quotes, backslashes, SQL, non-ASCII and a key too
/// long for a notification payload all lock, conflict and release as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_any_bytes_lock_and_release() {
    let (a, prefix) = client("bytes").await;
    let b = open(&suite::postgres::url(), &prefix, 5 * SEC).await;
    let long = "x".repeat(5000);
    for key in [
        "nul\0byte",
        "quote'\"",
        "back\\slash",
        "'); DROP TABLE leasehold_locks; --",
        "ключ 🔒",
        "%_*",
        long.as_str(),
    ] {
        let lock = a.try_lock(key, "v", 10 * SEC).await.unwrap();
        assert!(
            b.try_lock(key, "w", 10 * SEC)
                .await
                .unwrap_err()
                .is_not_obtained()
        );
        let seen = a.inspect(key).await.unwrap().expect("inspected");
        assert_eq!(seen.key(), key);
        lock.unlock().await.unwrap();
        b.try_lock(key, "w", 10 * SEC)
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
}

/// A release is announced on the table's channel with the key in hex, or — a key too
/// long for a payload — `md5:` and the key's MD5 (it used to be an empty payload, which
/// woke every waiter of every key); the listener matching it is `notify.rs`'s unit test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_names_its_key_even_a_long_one() {
    use futures::StreamExt;
    let (client, prefix) = client("payload").await;
    let (listener, mut conn) =
        tokio_postgres::connect(&suite::postgres::url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN \"public.leasehold_locks\"")
        .await
        .unwrap();
    let long = "L".repeat(5000);
    for key in ["short", long.as_str()] {
        client
            .try_lock(key, "v", 10 * SEC)
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
        let full = format!("{prefix}{key}");
        let expected = if full.len() <= 3900 {
            full.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        } else {
            let md5 = PostgresServer::shared().sql(&format!("SELECT md5('{full}'::bytea)"))[0][0]
                .clone()
                .unwrap();
            format!("md5:{md5}")
        };
        // Other tests' releases share the channel: find ours.
        let seen = tokio::time::timeout(5 * SEC, async {
            while let Some(payload) = payloads.recv().await {
                if payload == expected {
                    return true;
                }
                assert!(!payload.is_empty(), "every release names its key");
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "{}", &expected[..expected.len().min(40)]);
    }
}

/// A schema or table name that is not a plain identifier is refused before any I/O (the
/// URL's port has no server: a connection attempt would fail otherwise).
#[tokio::test]
async fn a_schema_that_is_not_an_identifier_is_refused_before_any_io() {
    let port = support::free_port();
    for bad in [
        "schema=a-b",
        "schema=x%22;DROP",
        "schema=\"q\"",
        "schema=",
        "table=9lives",
        "table=a.b",
    ] {
        let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db?{bad}");
        let err = Client::open(&url).await.expect_err(bad);
        assert!(err.is_invalid_argument(), "{bad}: {err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db");
    let err = Client::open(&url).await.expect_err("nothing listens");
    assert!(err.is_transient() && !err.is_invalid_argument(), "{err}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

// -- faults -----------------------------------------------------------------------

/// The server is killed (SIGKILL) and started again while a lock is held: the committed
/// row survives (the WAL), the holder's refresh and unlock reconnect and succeed, nobody
/// else takes it meanwhile, and the next token is above the held one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_survives_a_server_restart_mid_hold() {
    let server = PostgresServer::start();
    let holder = open(&server.url(), "", 2 * SEC).await;
    let other = open(&server.url(), "", 2 * SEC).await;
    let lock = holder.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let token = lock.fencing_token();
    server.restart();
    let deadline = Instant::now() + 10 * SEC;
    while lock.refresh().await.is_err() {
        assert!(Instant::now() < deadline, "refresh never reconnected");
        tokio::time::sleep(50 * MS).await;
    }
    assert!(
        other
            .try_lock("k", "other", 30 * SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    lock.unlock().await.unwrap();
    let next = other.try_lock("k", "other", 30 * SEC).await.unwrap();
    assert!(next.fencing_token() > token);
}

/// Every connection of the clients is killed by the server (`pg_terminate_backend`) while
/// a lock is held: the holder's next call is answered (sent again on a new connection)
/// and the lock is still its own; its unlock succeeds. With `prepare=true` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_made_again_and_the_lock_kept() {
    // Unnamed statements, and statements prepared on the killed connections (a new
    // connection prepares them again).
    for extra in ["", "&prepare=true"] {
        killed_connection(extra).await;
    }
}

async fn killed_connection(extra: &str) {
    let server = PostgresServer::shared();
    let prefix = format!("killed-{}:", &leasehold::random_value()[..8]);
    // Its own application name: only its connections are killed.
    let name = format!("killed{}", &leasehold::random_value()[..8]);
    let url = format!("{}?application_name={name}{extra}", server.url());
    let holder = open(&url, &prefix, 5 * SEC).await;
    let other = open(&server.url(), &prefix, 5 * SEC).await;
    let lock = holder.try_lock("k", "holder", 30 * SEC).await.unwrap();
    let killed = server.sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{name}'"
    ));
    assert!(!killed.is_empty(), "no connection killed");
    // The next call is answered: the statement goes out again on a new connection.
    let ttl = lock.ttl().await.expect("answered after the kill");
    assert!(ttl.is_some_and(|t| t > 20 * SEC), "{ttl:?}");
    assert!(
        other
            .try_lock("k", "other", 30 * SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    lock.unlock().await.unwrap();
}

/// A holder that stalls past its lease (no renewal) has lost it: another takes the key
/// with a higher token, the stale holder's refresh and unlock are `NotHeld`, and a fenced
/// resource refuses its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_paused_past_its_lease_has_lost_it() {
    let (stale, prefix) = client("paused").await;
    let other = open(&suite::postgres::url(), &prefix, 5 * SEC).await;
    let old = stale.try_lock("k", "stale", 200 * MS).await.unwrap();
    old.fenced_set("res", "from stale").await.unwrap();
    tokio::time::sleep(400 * MS).await; // the pause: the database's clock expires it
    let new = other.try_lock("k", "new", 30 * SEC).await.unwrap();
    assert!(new.fencing_token() > old.fencing_token());
    new.fenced_set("res", "from new").await.unwrap();
    assert!(old.refresh().await.unwrap_err().is_not_held());
    assert!(
        old.fenced_set("res", "late write")
            .await
            .unwrap_err()
            .is_fenced()
    );
    assert_eq!(
        new.fenced_get("res").await.unwrap().as_deref(),
        Some("from new")
    );
    assert!(old.unlock().await.unwrap_err().is_not_held());
    new.unlock().await.unwrap();
}

/// The reply to an acquire is lost after the row was committed: the caller times out,
/// the client aborts the attempt and frees the key it created, so another client takes
/// it at once rather than after the 30 s expiration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_leaves_no_lock_behind() {
    let server = PostgresServer::shared();
    let proxy = FaultProxy::start(server.port());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let prefix = format!("lost-{}:", &leasehold::random_value()[..8]);
    let client = open(&url, &prefix, 500 * MS).await;
    let other = open(&server.url(), &prefix, 5 * SEC).await;
    proxy.lose_reply_to(b"leasehold_locks_acquire\"($1");
    let err = client.try_lock("k", "lost", 30 * SEC).await.unwrap_err();
    assert!(err.is_timeout() || err.is_transient(), "{err}");
    assert!(
        proxy.replies_lost() > 0,
        "the acquire ran and its reply was lost"
    );
    let taken = take_within(&other, "k", "other", 3 * SEC).await;
    assert!(taken.is_some(), "the lost acquire's lock was left behind");
    proxy.cut_lost();
}

/// The published fault cases (`leasehold::testing::faults`) on a server of their own:
/// restarted in place (an immediate shutdown, recovery from the WAL), and a proxy for the
/// faulty client that stalls it (cut off) or swallows the answer to its next call of a
/// lease function and then resets the connection (a reply lost after the commit). Every
/// case runs; none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_fault_cases_pass_on_postgres() {
    use leasehold::testing::faults::{Harness, Outcome, run_all};
    use std::sync::Arc;

    struct Postgres {
        server: PostgresServer,
        proxy: Arc<FaultProxy>,
    }

    impl Harness for Postgres {
        async fn client(&self) -> Client {
            open(&self.server.url(), "", 2 * SEC).await
        }
        async fn faulty_client(&self) -> Option<Client> {
            let url = format!(
                "postgres://postgres@127.0.0.1:{}/postgres",
                self.proxy.port()
            );
            Some(open(&url, "", 2 * SEC).await)
        }
        async fn restart(&self) -> bool {
            tokio::task::block_in_place(|| self.server.restart());
            true
        }
        async fn cut_off(&self, duration: Duration) -> bool {
            self.proxy.blackhole_for(duration);
            true
        }
        async fn lose_next_reply(&self) -> bool {
            // Every lease operation is a call of `"<table>_<operation>"(…)`.
            self.proxy
                .lose_reply_then_cut(support::containing(b"\"leasehold_locks_"));
            true
        }
    }

    let server = PostgresServer::start();
    let proxy = Arc::new(FaultProxy::start(server.port()));
    let harness = Postgres { server, proxy };
    let outcomes = run_all(&harness).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Ran),
        "{outcomes:?}"
    );
    // The unlock's answer and the acquire's were lost (and their connections reset).
    let both = tokio::task::block_in_place(|| {
        support::wait_until(5 * SEC, || harness.proxy.losses_cut() == 2)
    });
    assert!(both, "replies lost: {}", harness.proxy.losses_cut());
}

/// A statement cancelled by `statement_timeout` (here: blocked on the row, locked by an
/// open transaction) fails as a transient store error, takes nothing, and the key is
/// taken once the blocker ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_transient_failure_that_takes_nothing() {
    let server = PostgresServer::shared();
    let prefix = format!("stmt-{}:", &leasehold::random_value()[..8]);
    let url = format!("{}?options=-c%20statement_timeout%3D200", server.url());
    let client = open(&url, &prefix, 5 * SEC).await;
    client
        .try_lock("k", "v", 10 * SEC)
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let (blocker, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM leasehold_locks WHERE key = '{prefix}k'::bytea FOR UPDATE"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let err = client.try_lock("k", "w", 10 * SEC).await.unwrap_err();
    assert!(err.is_store() && err.is_transient(), "{err}");
    assert!(err.to_string().contains("57014"), "{err}");
    assert!(started.elapsed() < 3 * SEC);
    blocker.batch_execute("ROLLBACK").await.unwrap();
    client
        .try_lock("k", "w", 10 * SEC)
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

// -- TLS ----------------------------------------------------------------------------

/// `sslmode=verify-full` (feature `tls`) against a server that accepts TLS only: with the
/// CA given to `tls_root_certificate` every connection — the statements' and the hand-off
/// listener's — is encrypted (the server's own view, `pg_stat_ssl`), and a waiter is woken
/// by the release through it. Negative controls: a plain connection is refused by the
/// server, and the same URL with the platform's roots fails verification.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_root_encrypts_every_connection() {
    use leasehold::FixedInterval;
    let server = tokio::task::spawn_blocking(PostgresServer::start_tls)
        .await
        .unwrap();
    let url = format!("{}?sslmode=verify-full", server.url());
    let open = || {
        Client::builder()
            .tls_root_certificate(server.ca_pem())
            .connect_timeout(5 * SEC)
            .open(&url)
    };
    let (holder, waiter) = (open().await.unwrap(), open().await.unwrap());
    let held = holder.try_lock("k", "holder", 60 * SEC).await.unwrap();
    let waiting = waiter.lock("k", "waiter", 10 * SEC, SEC, FixedInterval::new(SEC, 5));
    let release = async {
        tokio::time::sleep(300 * MS).await;
        // The waiter's listener is up by now (it starts at the first wait).
        held.unlock().await.unwrap();
        Instant::now()
    };
    let (lock, released) = tokio::join!(waiting, release);
    let lag = released.elapsed();
    let lock = lock.expect("acquired after the release");
    assert!(
        lag < 500 * MS,
        "woken by the release, not the 1 s poll: {lag:?}"
    );
    let rows = server.sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*), \
           count(*) FILTER (WHERE a.query LIKE 'LISTEN%') \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'leasehold'",
    );
    let (encrypted, all, listening) = (&rows[0][0], &rows[0][1], &rows[0][2]);
    assert_eq!(encrypted, all, "every connection encrypted");
    assert_ne!(all.as_deref(), Some("0"));
    assert_eq!(listening.as_deref(), Some("1"), "the waiter's listener");
    lock.unlock().await.unwrap();

    // A plain connection: refused by `hostssl` (not a certificate problem).
    let err = Client::builder()
        .connect_timeout(5 * SEC)
        .open(&server.url())
        .await
        .expect_err("plain refused");
    assert!(err.is_store(), "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");
    // The platform's roots do not know the test CA.
    let err = Client::builder()
        .connect_timeout(5 * SEC)
        .open(&format!("{}?sslmode=require", server.url()))
        .await
        .expect_err("an unknown issuer");
    assert!(err.is_store(), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let root = Client::builder()
        .tls_root_certificate(b"not a certificate".to_vec())
        .open(&url)
        .await
        .expect_err("a root that is not PEM");
    assert!(root.is_invalid_argument(), "{root}");
}

// -- through a transaction-mode pooler ------------------------------------------------

/// Through PgBouncer in transaction mode with ONE server connection, every client
/// connection (four per client, and the listener's) shares that backend one transaction at
/// a time. Negative control: session state leaks there — a second client's
/// `pg_try_advisory_lock` on the same key succeeds too (same backend). leasehold keeps its
/// promises: the table is created through the pooler, a second holder is refused, the
/// holder refreshes, a waiter gets the key after the release with the next token, and
/// `list` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode() {
    use leasehold::FixedInterval;
    let server = PostgresServer::shared();
    let port = server.port();
    let bouncer = tokio::task::spawn_blocking(move || support::PgBouncer::start(port, 1))
        .await
        .unwrap();

    let session = |url: String| async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect through pgbouncer");
        tokio::spawn(conn);
        client
    };
    let (one, two) = (session(bouncer.url()).await, session(bouncer.url()).await);
    let try_advisory = "SELECT pg_try_advisory_lock(7)";
    let first: bool = one.query_one(try_advisory, &[]).await.unwrap().get(0);
    let second: bool = two.query_one(try_advisory, &[]).await.unwrap().get(0);
    assert!(
        first && second,
        "advisory locks leak across clients behind the pooler"
    );
    one.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();

    let url = format!("{}?table=bouncer_locks", bouncer.url());
    let prefix = format!("bouncer-{}:", &leasehold::random_value()[..8]);
    let (a, b) = (
        open(&url, &prefix, 5 * SEC).await,
        open(&url, &prefix, 5 * SEC).await,
    );
    let held = a.try_lock("k", "holder-a", 10 * SEC).await.unwrap();
    assert!(
        b.try_lock("k", "holder-b", 10 * SEC)
            .await
            .unwrap_err()
            .is_not_obtained()
    );
    held.refresh().await.unwrap();
    let seen = b.inspect("k").await.unwrap().expect("held");
    let token = held.fencing_token();
    assert_eq!(seen.fencing_token(), token);
    let waiting = b.lock(
        "k",
        "holder-b",
        10 * SEC,
        SEC,
        FixedInterval::new(20 * MS, 500),
    );
    let release = async {
        tokio::time::sleep(100 * MS).await;
        held.unlock().await.unwrap();
    };
    let (next, ()) = tokio::join!(waiting, release);
    let next = next.expect("the waiter gets the key");
    assert_eq!(next.fencing_token(), token + 1);
    let listed = a.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key(), "k");
    next.unlock().await.unwrap();
    assert!(
        server
            .sql("SELECT 1 FROM pg_tables WHERE tablename = 'bouncer_locks'")
            .len()
            == 1,
        "created through the pooler"
    );
}

/// A server that cannot be reached is named, with what happened: a refused port at once,
/// a silent one after the connect timeout (never a bare "timed out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_with_what_happened() {
    let port = support::free_port();
    let started = Instant::now();
    let err = Client::builder()
        .connect_timeout(5 * SEC)
        .open(&format!("postgres://u:secret@127.0.0.1:{port}/db"))
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(err.is_store() && err.is_transient(), "{err:?}");
    assert!(
        shown.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert!(
        started.elapsed() < 2 * SEC,
        "refused at once: {:?}",
        started.elapsed()
    );
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap();
    let err = Client::builder()
        .connect_timeout(300 * MS)
        .open(&format!("postgres://u@{at}/db"))
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("cannot connect to {at}"))
            && shown.contains("no answer within the connect timeout (300ms)"),
        "{shown}"
    );
    drop(silent);
}
