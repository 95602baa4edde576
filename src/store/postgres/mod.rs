//! PostgreSQL (feature `postgres`): a lock is a row of one table (`schema.sql`, shipped
//! with the crate), written by one statement per operation, kept in a PL/pgSQL function
//! of the schema that the client calls (the server plans the call, not the statement,
//! on every call).
//!
//! * **Owner-checked, one statement each.** Acquire is an `INSERT … ON CONFLICT DO
//!   UPDATE … WHERE` that takes a free or expired row, or re-arms the holder's own; refresh,
//!   release and ttl are an `UPDATE`/`SELECT` conditioned on the value and the expiry.
//! * **The database's clock.** Expiry is `expires_at` compared with `clock_timestamp()`;
//!   the client's clock is never read.
//! * **Fencing.** The row of a key is never deleted (a release marks it free) and its
//!   `token` counts up by one per acquisition; a key's first row starts at the database
//!   clock in microseconds, above anything an earlier, deleted row of it issued.
//! * **Late attempts.** An abort records, in the key's row, the highest attempt number of
//!   the client it gave up on (kept an hour; one entry per client that aborted): an
//!   acquire re-checks it on the row's latest version, under the row lock, so an aborted
//!   attempt that arrives later is refused. With `undo`, the abort frees the key if one of
//!   the attempts created it and one armed it last.
//! * **No session state.** No advisory locks, temporary tables, session variables or
//!   named prepared statements (`query_typed` sends each statement unnamed): every call
//!   runs through a transaction-mode pooler (PgBouncer) as it would directly. Only the
//!   hand-off listener (`LISTEN`) needs a session, a connection of its own.

mod conn;
mod notify;
pub(crate) mod sql;
mod tls;
pub(crate) mod url;

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;
use tokio_postgres::types::Type;

use self::conn::{Pool, Resend, store_error};
use self::notify::Notifier;
use self::sql::{SCHEMA_VERSION, Statements};
use self::tls::Tls;
use self::url::Place;
// Only the public store interface: this store is built as one from outside the crate
// would be.
use crate::store::{Acquire, AttemptId, Fence, Fenced, Inspected, Store, StoreError, Watch};
use crate::{Error, Result};

use crate::store::ABORT_MEMORY;

/// Locks listed per round trip.
const LIST_PAGE: i64 = 1000;

/// How to open a PostgreSQL store (what is not in its URL).
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound on connecting and on the schema check at open; default 5 s.
    pub connect_timeout: Duration,
    /// Announce releases and wake waiters through `LISTEN`/`NOTIFY`; default true.
    pub notify: bool,
    /// The root certificate (PEM) to trust for a URL with `sslmode=require`,
    /// `verify-ca` or `verify-full`; `None` (the default): the platform's roots.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls_root_certificate: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            notify: true,
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
        }
    }
}

/// The `Backend` of a client opened on a `postgres://` URL (`store::open`'s list).
pub(crate) async fn open_backend(
    url: &str,
    options: &crate::store::Options,
) -> Result<(crate::store::Backend, String)> {
    let options = Options {
        connect_timeout: options.connect_timeout,
        notify: options.notify,
        #[cfg(feature = "tls")]
        tls_root_certificate: options.tls_root_certificate.clone(),
    };
    let store = PostgresStore::open(url, &options).await?;
    let target = store.target.clone();
    Ok((
        crate::store::Backend::Custom(crate::store::Custom::new(store)),
        target,
    ))
}

/// The SQL that creates the lock tables a `postgres://` URL names (its `schema` and
/// `table`): `schema.sql` as shipped, with those names. Idempotent.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a URL this store cannot read, or a schema or table name
/// that is not a plain identifier.
pub fn schema_sql(url: &str) -> Result<String> {
    let target = url::parse(url, Duration::from_secs(5))?;
    Ok(sql::schema_sql(&target.place))
}

/// Create the lock tables a `postgres://` URL names when they are missing (whatever its
/// `create` parameter says), and return the schema version now there: what `leasehold
/// migrate <url>` runs. The same path as a client's first open with `create=true`: one
/// transaction, idempotent, safe to run from several hosts at once.
///
/// # Errors
///
/// * [`Error::InvalidArgument`] for a URL this store cannot read, or a schema or table
///   name that is not a plain identifier, before any I/O;
/// * [`Error::Store`] when the server cannot be reached or refuses the DDL (permissions),
///   or the tables' schema is newer than this client's;
/// * [`Error::Timeout`] past `options.connect_timeout`.
///
/// # Cancel safety
///
/// Cancel safe: the tables are created in full or not at all.
pub async fn migrate(url: &str, options: &Options) -> Result<u32> {
    let mut target = url::parse(url, options.connect_timeout)?;
    target.place.create = true;
    let options = Options {
        notify: false,
        ..options.clone()
    };
    let tls = Tls::new(target.tls, root(&options))?;
    let store = PostgresStore::with_place(
        target.config.clone(),
        tls,
        false,
        &target.place,
        &options,
        target.display,
    );
    let run = async {
        store.check_schema(&target.place).await?;
        let conn = store.pool.get().await?;
        let rows = conn
            .client
            .query_typed(&store.sql.version, &[])
            .await
            .map_err(store_error)?;
        let version = rows
            .first()
            .and_then(|r| r.get::<_, Option<i32>>(0))
            .ok_or_else(|| bad_reply("the schema version"))?;
        u32::try_from(version).map_err(|_| bad_reply("the schema version"))
    };
    tokio::time::timeout(options.connect_timeout, run)
        .await
        .map_err(|_| Error::Timeout)?
}

/// The server at `target` could not be reached at open: what happened, naming it.
fn unreachable(target: &str, what: &str, source: Option<StoreError>) -> Error {
    let e = StoreError::new(
        "postgres",
        true,
        format!("cannot connect to {target}: {what}"),
    );
    Error::Store(match source {
        Some(source) => e.with_source(source),
        None => e,
    })
}

/// A lock store on PostgreSQL (feature `postgres`); see the [module docs](self).
pub struct PostgresStore {
    /// `host:port/database`, never the password.
    target: String,
    pool: Pool,
    sql: Statements,
    /// The release channel (`schema.table`); `""` without notifications.
    channel: String,
    notifier: Option<Notifier>,
}

fn invalid_token(what: &str) -> Error {
    Error::InvalidArgument(format!("{what}: above the largest token PostgreSQL stores"))
}

fn bad_reply(what: &str) -> Error {
    Error::Store(StoreError::new(
        "postgres",
        false,
        format!("unexpected reply to {what}"),
    ))
}

impl PostgresStore {
    /// Open the store `url` names
    /// (`postgres://[user[:password]@]host[:port][/database][?schema=S&table=T&create=B&prepare=B]`,
    /// or `postgresql://`; `prepare=true` prepares each statement once per connection
    /// (faster, but session state: not through a transaction-mode pooler that does not
    /// track prepared statements, such as PgBouncer before 1.21); `sslmode=require`, `verify-ca` or `verify-full` with the `tls`
    /// feature: TLS that verifies the server's certificate and name, against
    /// `options.tls_root_certificate` or the platform's roots; every other query
    /// parameter goes to the driver): parse it,
    /// connect once, and check the schema's version — creating the tables when they are
    /// missing and the URL allows it (`create`, default true). Open a client on it with
    /// [`Client::from_store`](crate::Client::from_store), or give `Client::open` the URL.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidArgument`] for a URL it cannot read, or a schema or table name
    ///   that is not a plain identifier (ASCII letters, digits, `_`), before any I/O;
    /// * [`Error::Store`] when the server cannot be reached (transient; naming it, and
    ///   what happened: refused, or no answer within `options.connect_timeout`), or the
    ///   tables are missing with `create=false`, or their schema is newer than this
    ///   client's.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before the schema check, nothing is written; dropped during
    /// it, the tables are created in full or not at all (one transaction).
    pub async fn open(url: &str, options: &Options) -> Result<PostgresStore> {
        let target = url::parse(url, options.connect_timeout)?;
        let place = target.place.clone();
        let tls = Tls::new(target.tls, root(options))?;
        let store = Self::with_place(
            target.config.clone(),
            tls,
            target.prepare,
            &place,
            options,
            target.display,
        );
        let check = store.check_schema(&place);
        match tokio::time::timeout(options.connect_timeout, check).await {
            Ok(Ok(())) => Ok(store),
            // Name the server: which one failed to answer, and in what time.
            Ok(Err(Error::Store(e))) if e.is_transient() => Err(unreachable(
                &store.target,
                e.to_string().trim_start_matches("postgres error: "),
                Some(e),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unreachable(
                &store.target,
                &format!(
                    "no answer within the connect timeout ({:?})",
                    options.connect_timeout
                ),
                None,
            )),
        }
    }

    fn with_place(
        config: tokio_postgres::Config,
        tls: Tls,
        prepare: bool,
        place: &Place,
        options: &Options,
        target: String,
    ) -> Self {
        let channel = if options.notify {
            format!("{}.{}", place.schema, place.table)
        } else {
            String::new()
        };
        PostgresStore {
            target,
            notifier: options
                .notify
                .then(|| Notifier::new(config.clone(), tls.clone(), channel.clone())),
            pool: Pool::new(config, tls, prepare),
            sql: Statements::new(place),
            channel,
        }
    }

    /// The schema's version, checked; the tables and functions created when missing, or
    /// migrated from an older version (when allowed).
    async fn check_schema(&self, place: &Place) -> Result<()> {
        let conn = self.pool.get().await?;
        let version = match conn.client.query_typed(&self.sql.version, &[]).await {
            Ok(rows) => rows.first().and_then(|r| r.get::<_, Option<i32>>(0)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(store_error(e)),
        };
        match version {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(v) if v > SCHEMA_VERSION => Err(Error::Store(StoreError::new(
                "postgres",
                false,
                format!(
                    "the lock table's schema is version {v}, newer than this client's \
                     ({SCHEMA_VERSION}): upgrade leasehold"
                ),
            ))),
            _ if place.create => {
                // One transaction; the transaction-scoped advisory lock keeps two clients
                // creating at once from colliding in the catalog (released at commit: no
                // session state).
                let ddl = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(7378716731527417685); {} COMMIT;",
                    sql::schema_sql(place)
                );
                conn.client.batch_execute(&ddl).await.map_err(store_error)
            }
            Some(v) => Err(Error::Store(StoreError::new(
                "postgres",
                false,
                format!(
                    "the lock table {}.{} is of schema version {v}, older than this \
                     client's ({SCHEMA_VERSION}), and the URL says create=false: apply \
                     leasehold's schema.sql (`leasehold migrate`), which migrates it",
                    place.schema, place.table
                ),
            ))),
            None => Err(Error::Store(StoreError::new(
                "postgres",
                false,
                format!(
                    "no lock table {}.{} of schema version {SCHEMA_VERSION}, and the URL \
                     says create=false: apply leasehold's schema.sql (`leasehold migrate`)",
                    place.schema, place.table
                ),
            ))),
        }
    }

    async fn one(
        &self,
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
        resend: Resend,
        timeout: Duration,
    ) -> Result<Option<Row>> {
        let mut rows = self.pool.query(sql, params, resend, timeout).await?;
        Ok(if rows.is_empty() {
            None
        } else {
            Some(rows.swap_remove(0))
        })
    }

    fn inspected(row: &Row) -> Result<Inspected> {
        let key: Vec<u8> = row.try_get(0).map_err(|_| bad_reply("inspect"))?;
        let ms: i64 = row.try_get(1).map_err(|_| bad_reply("inspect"))?;
        let token: i64 = row.try_get(2).map_err(|_| bad_reply("inspect"))?;
        let holder: String = row.try_get(3).map_err(|_| bad_reply("inspect"))?;
        let label: Option<String> = row.try_get(4).map_err(|_| bad_reply("inspect"))?;
        let locked_at: Option<f64> = row.try_get(5).map_err(|_| bad_reply("inspect"))?;
        Ok(Inspected {
            key: String::from_utf8_lossy(&key).into_owned(),
            ttl: Some(Duration::from_millis(ms.max(0) as u64)),
            token: token as u64,
            holder,
            label: label.filter(|l| !l.is_empty()),
            locked_at: locked_at.map(|ms| {
                SystemTime::UNIX_EPOCH + Duration::from_micros((ms.max(0.0) * 1000.0) as u64)
            }),
        })
    }
}

/// The root certificate the options give, if any.
fn root(options: &Options) -> Option<&[u8]> {
    #[cfg(feature = "tls")]
    {
        options.tls_root_certificate.as_deref()
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = options;
        None
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The first byte string after every string that starts with `prefix`; `None`: there
/// is none (the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Store for PostgresStore {
    /// Milliseconds: `timestamptz` keeps microseconds.
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        let id = attempt.to_string();
        let client = format!("{:016x}", attempt.client);
        let seq = i64::try_from(attempt.seq).unwrap_or(i64::MAX);
        let ms = millis(expiration);
        let row = self
            .one(
                &self.sql.acquire,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&val.as_bytes(), Type::BYTEA),
                    (&ms, Type::INT8),
                    (&id, Type::TEXT),
                    (&client, Type::TEXT),
                    (&seq, Type::INT8),
                    (&label, Type::TEXT),
                ],
                Resend::Safe,
                timeout,
            )
            .await?
            .ok_or_else(|| bad_reply("acquire"))?;
        let token: Option<i64> = row.try_get(0).map_err(|_| bad_reply("acquire"))?;
        let refused: bool = row.try_get(1).map_err(|_| bad_reply("acquire"))?;
        let remaining: Option<i64> = row.try_get(2).map_err(|_| bad_reply("acquire"))?;
        Ok(match token {
            Some(token) => Acquire::Acquired(token as u64),
            None if refused => Acquire::Refused,
            None => Acquire::Held(remaining.map(|ms| Duration::from_millis(ms.max(0) as u64))),
        })
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        let ms = millis(expiration);
        let rows = self
            .pool
            .query(
                &self.sql.refresh,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&val.as_bytes(), Type::BYTEA),
                    (&ms, Type::INT8),
                ],
                Resend::Safe,
                timeout,
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        let row = self
            .one(
                &self.sql.release,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&val.as_bytes(), Type::BYTEA),
                    (&self.channel, Type::TEXT),
                ],
                Resend::Never,
                timeout,
            )
            .await?
            .ok_or_else(|| bad_reply("release"))?;
        row.try_get(0).map_err(|_| bad_reply("release"))
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        let Some(first) = attempts.first() else {
            return Ok(false);
        };
        let client = format!("{:016x}", first.client);
        let highest = attempts.iter().map(|a| a.seq).max().unwrap_or(0);
        let highest = i64::try_from(highest).unwrap_or(i64::MAX);
        let ids: Vec<String> = if undo {
            attempts.iter().map(AttemptId::to_string).collect()
        } else {
            Vec::new()
        };
        let memory = ABORT_MEMORY.as_secs_f64();
        let row = self
            .one(
                &self.sql.abort,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&val.as_bytes(), Type::BYTEA),
                    (&client, Type::TEXT),
                    (&highest, Type::INT8),
                    (&ids, Type::TEXT_ARRAY),
                    (&self.channel, Type::TEXT),
                    (&memory, Type::FLOAT8),
                ],
                Resend::Safe,
                timeout,
            )
            .await?;
        Ok(match row {
            Some(row) => row
                .try_get::<_, Option<bool>>(0)
                .map_err(|_| bad_reply("abort"))?
                .unwrap_or(false),
            None => false,
        })
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        let row = self
            .one(
                &self.sql.ttl,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&val.as_bytes(), Type::BYTEA),
                ],
                Resend::Safe,
                timeout,
            )
            .await?;
        row.map(|row| {
            let ms: i64 = row.try_get(0).map_err(|_| bad_reply("ttl"))?;
            Ok(Duration::from_millis(ms.max(0) as u64))
        })
        .transpose()
    }

    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        let only = only
            .map(|t| i64::try_from(t).map_err(|_| invalid_token("token")))
            .transpose()?;
        let rows = self
            .pool
            .query(
                &self.sql.force_release,
                &[
                    (&key.as_bytes(), Type::BYTEA),
                    (&only, Type::INT8),
                    (&self.channel, Type::TEXT),
                ],
                // Named by token, a forced release sent twice cannot free the next
                // holder; without one it could.
                if only.is_some() {
                    Resend::Safe
                } else {
                    Resend::Never
                },
                timeout,
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        let row = self
            .one(
                &self.sql.inspect,
                &[(&key.as_bytes(), Type::BYTEA)],
                Resend::Safe,
                timeout,
            )
            .await?;
        row.as_ref().map(Self::inspected).transpose()
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut locks = Vec::new();
        loop {
            let rows = self
                .pool
                .query(
                    &self.sql.list,
                    &[
                        (&from, Type::BYTEA),
                        (&end, Type::BYTEA),
                        (&LIST_PAGE, Type::INT8),
                    ],
                    Resend::Safe,
                    timeout,
                )
                .await?;
            let full = rows.len() as i64 == LIST_PAGE;
            if let Some(last) = rows.last() {
                let key: Vec<u8> = last.try_get(0).map_err(|_| bad_reply("list"))?;
                from = key;
                from.push(0);
            }
            for row in &rows {
                locks.push(Self::inspected(row)?);
            }
            if !full {
                return Ok(locks);
            }
        }
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        let token = i64::try_from(access.token).map_err(|_| invalid_token("fencing token"))?;
        let holder = access.holder.map(str::as_bytes);
        let write = access.write.is_some();
        let value = access.write.map(str::as_bytes);
        let row = self
            .one(
                &self.sql.fenced,
                &[
                    (&access.resource.as_bytes(), Type::BYTEA),
                    (&token, Type::INT8),
                    (&holder, Type::BYTEA),
                    (&write, Type::BOOL),
                    (&value, Type::BYTEA),
                ],
                Resend::Safe,
                timeout,
            )
            .await?
            .ok_or_else(|| bad_reply("fenced access"))?;
        let highest: i64 = row.try_get(0).map_err(|_| bad_reply("fenced access"))?;
        let same_holder: bool = row.try_get(1).map_err(|_| bad_reply("fenced access"))?;
        let value: Option<Vec<u8>> = row.try_get(2).map_err(|_| bad_reply("fenced access"))?;
        if highest != token || !same_holder {
            return Ok(Err(highest as u64));
        }
        Ok(Ok(if write {
            None
        } else {
            value.map(|v| String::from_utf8_lossy(&v).into_owned())
        }))
    }

    fn watch(&self, key: &str) -> Option<Watch> {
        self.notifier.as_ref().map(|n| n.watch(key))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_end_of_a_prefix_is_the_first_string_past_it() {
        use super::prefix_end;
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
