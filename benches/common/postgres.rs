//! PostgreSQL (feature `postgres`): leasehold's lock + unlock against the same lease row
//! written by hand, and against advisory locks; the contended hand-off against polling.

use std::time::Duration;

use leasehold::Client;
use tokio_postgres::types::Type;

use super::{ContentionSide, EXPIRATION, EXPIRATION_MS, Strategy, Until};

/// The table every variant uses (created by leasehold, `schema.sql`).
pub const TABLE: &str = "bench_locks";

/// Lock + unlock variants, in report order.
pub const VARIANTS: [&str; 6] = [
    "leasehold (`try_lock` + `unlock`), unnamed statements (the default)",
    "leasehold, `notify(false)` (no `pg_notify` in the release)",
    "the same lease row by hand (`INSERT … ON CONFLICT … WHERE expired RETURNING token` + owner-checked `UPDATE`), unnamed",
    "leasehold, `prepare=true` (each statement prepared once per connection)",
    "the same lease row by hand, prepared once",
    "`pg_try_advisory_lock` + `pg_advisory_unlock`, one session",
];

/// Criterion ids of [`VARIANTS`].
pub const IDS: [&str; 6] = [
    "leasehold",
    "leasehold_no_notify",
    "by_hand",
    "leasehold_prepared",
    "by_hand_prepared",
    "advisory",
];

/// `url` with the benches' table.
pub fn url(server_url: &str) -> String {
    format!("{server_url}?table={TABLE}")
}

/// What a team writes by hand: a lease row with a token, expiry on the database clock,
/// on leasehold's own table (one round trip each, unnamed statements as leasehold's).
const ACQUIRE: &str = "INSERT INTO bench_locks AS l (key, value, expires_at, token) \
     VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond', 1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
       expires_at = excluded.expires_at, token = l.token + 1 \
     WHERE l.value IS NULL OR l.expires_at <= clock_timestamp() \
     RETURNING l.token";
const RELEASE: &str = "UPDATE bench_locks SET value = NULL, expires_at = NULL \
     WHERE key = $1 AND value = $2 AND expires_at > clock_timestamp() RETURNING 1";

/// The four contenders of one run.
pub struct Contenders {
    leasehold: Client,
    quiet: Client,
    prepared: Client,
    pg: tokio_postgres::Client,
    /// [`ACQUIRE`] and [`RELEASE`] prepared on `pg`.
    statements: (tokio_postgres::Statement, tokio_postgres::Statement),
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    client
}

impl Contenders {
    /// On the server at `server_url` (the table is created by the first client).
    pub async fn open(server_url: &str) -> Contenders {
        let leasehold = Client::open(&url(server_url)).await.expect("leasehold");
        let quiet = Client::builder()
            .notify(false)
            .open(&url(server_url))
            .await
            .expect("leasehold");
        let prepared = Client::open(&format!("{}&prepare=true", url(server_url)))
            .await
            .expect("leasehold");
        let pg = connect(server_url).await;
        let acquire = pg
            .prepare_typed(ACQUIRE, &[Type::BYTEA, Type::BYTEA, Type::INT8])
            .await
            .expect("prepare");
        let release = pg
            .prepare_typed(RELEASE, &[Type::BYTEA, Type::BYTEA])
            .await
            .expect("prepare");
        Contenders {
            leasehold,
            quiet,
            prepared,
            pg,
            statements: (acquire, release),
        }
    }

    /// One lock + unlock of variant `v` (index in [`VARIANTS`]) on `key`.
    pub async fn lock_unlock(&self, v: usize, key: &str) {
        match v {
            0 | 1 | 3 => {
                let client = match v {
                    0 => &self.leasehold,
                    1 => &self.quiet,
                    _ => &self.prepared,
                };
                let lock = client.try_lock(key, "v", EXPIRATION).await.expect("lock");
                lock.unlock().await.expect("unlock");
            }
            2 => {
                let ms = EXPIRATION_MS as i64;
                let rows = self
                    .pg
                    .query_typed(
                        ACQUIRE,
                        &[
                            (&key.as_bytes(), Type::BYTEA),
                            (&"v".as_bytes(), Type::BYTEA),
                            (&ms, Type::INT8),
                        ],
                    )
                    .await
                    .expect("acquire by hand");
                assert_eq!(rows.len(), 1, "acquired");
                let rows = self
                    .pg
                    .query_typed(
                        RELEASE,
                        &[
                            (&key.as_bytes(), Type::BYTEA),
                            (&"v".as_bytes(), Type::BYTEA),
                        ],
                    )
                    .await
                    .expect("release by hand");
                assert_eq!(rows.len(), 1, "released");
            }
            4 => {
                let ms = EXPIRATION_MS as i64;
                let rows = self
                    .pg
                    .query(&self.statements.0, &[&key.as_bytes(), &"v".as_bytes(), &ms])
                    .await
                    .expect("acquire by hand");
                assert_eq!(rows.len(), 1, "acquired");
                let rows = self
                    .pg
                    .query(&self.statements.1, &[&key.as_bytes(), &"v".as_bytes()])
                    .await
                    .expect("release by hand");
                assert_eq!(rows.len(), 1, "released");
            }
            _ => {
                let id = key.len() as i64 * 7_919 + key.bytes().map(i64::from).sum::<i64>();
                let rows = self
                    .pg
                    .query_typed("SELECT pg_try_advisory_lock($1)", &[(&id, Type::INT8)])
                    .await
                    .expect("advisory lock");
                assert!(rows[0].get::<_, bool>(0), "advisory lock taken");
                let rows = self
                    .pg
                    .query_typed("SELECT pg_advisory_unlock($1)", &[(&id, Type::INT8)])
                    .await
                    .expect("advisory unlock");
                assert!(rows[0].get::<_, bool>(0), "advisory lock released");
            }
        }
    }
}

/// Hand-off under contention: a side woken by `LISTEN`/`NOTIFY` and one polling
/// (`notify(false)`), `tasks` tasks on one key; the sorted hand-offs and acquisitions/s.
pub async fn handoff(
    server_url: &str,
    polling: bool,
    tasks: usize,
    key: &str,
    hold: Duration,
    think: Duration,
    window: Duration,
) -> (Vec<Duration>, f64) {
    let client = Client::builder()
        .notify(!polling)
        .open(&url(server_url))
        .await
        .expect("leasehold");
    let side = if polling {
        ContentionSide::LeaseholdPolling(client)
    } else {
        ContentionSide::Leasehold(client)
    };
    let stats = super::contention_run(
        &side,
        key,
        tasks,
        Strategy::Fixed,
        hold,
        think,
        Until::Elapsed(window),
    )
    .await;
    let mut handoffs = stats.handoffs;
    handoffs.sort();
    (
        handoffs,
        stats.acquisitions as f64 / stats.elapsed.as_secs_f64(),
    )
}
