//! Connections: a few tokio-postgres connections, each made on first use and made again
//! when it closes. By default statements go out unnamed (`query_typed`: parse, bind and
//! execute in one round trip), so nothing lives in the session between them, and the
//! server plans each on every call. With `prepare=true` each is prepared once per
//! connection (a named statement, session state) and only bound and executed afterwards.
//! Each call is bounded by its timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::tls::Tls;

use crate::store::StoreError;
use crate::{Error, Result};

/// Connections per client: statements pipeline on each, and a statement waiting for a
/// row lock holds up only the statements behind it on its connection.
const CONNECTIONS: usize = 4;

/// One connection of the pool (made on first use) and its statements in flight.
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    busy: AtomicUsize,
}

/// A statement in flight on a slot, counted until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(busy: &'a AtomicUsize) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        Busy(busy)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a statement may go out again once it may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// A read, or a write whose second run changes nothing the first did not.
    Safe,
    /// A release: sent again it would report "not held". A connection lost after it went
    /// out ends the call with [`Error::Indeterminate`].
    Never,
}

pub(crate) struct Pool {
    config: tokio_postgres::Config,
    tls: Tls,
    /// Prepare each statement once per connection (named, kept by the session) instead
    /// of sending it unnamed on every call (`prepare=true` in the URL).
    prepare: bool,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// One connection, and the statements prepared on it (by their SQL). A new connection
/// starts with none: they live and die with the session.
pub(crate) struct Conn {
    pub(crate) client: tokio_postgres::Client,
    prepared: parking_lot::Mutex<HashMap<String, Statement>>,
}

impl Conn {
    /// `sql` prepared on this connection: once, then from the cache.
    async fn statement(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.lock().get(sql) {
            return Ok(statement.clone());
        }
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let statement = self.client.prepare_typed(sql, &types).await?;
        self.prepared
            .lock()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    async fn run(
        &self,
        prepare: bool,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        if !prepare {
            return self.client.query_typed(sql, params).await;
        }
        let statement = self.statement(sql, params).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.query(&statement, &values).await
    }
}

impl Pool {
    pub(crate) fn new(config: tokio_postgres::Config, tls: Tls, prepare: bool) -> Self {
        Pool {
            config,
            tls,
            prepare,
            slots: (0..CONNECTIONS)
                .map(|_| Slot {
                    conn: tokio::sync::Mutex::new(None),
                    busy: AtomicUsize::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The connection for the next statement: the first with nothing in flight, so that
    /// one caller at a time keeps to one server session (its backend process awake and its
    /// caches warm: a statement sent to each of four sessions in turn costs a cycle of
    /// lock + unlock about half again); callers at once spread over the others, or, all
    /// busy, take them in turn.
    fn pick(&self) -> usize {
        self.slots
            .iter()
            .position(|s| s.busy.load(Ordering::Relaxed) == 0)
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len())
    }

    /// A connection, made now if it is not open.
    pub(crate) async fn get(&self) -> Result<Arc<Conn>> {
        self.open(self.pick()).await
    }

    /// Connection `i`, made now if it is not open.
    async fn open(&self, i: usize) -> Result<Arc<Conn>> {
        let mut slot = self.slots[i].conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let conn = Arc::new(Conn {
            client: connect(&self.config, &self.tls).await?,
            prepared: parking_lot::Mutex::default(),
        });
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Run `sql` with typed `params`, within `timeout`. A connection found closed is
    /// made again; a statement that failed on a lost connection is sent again on a new one
    /// if `resend` allows and time remains.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        resend: Resend,
        timeout: Duration,
    ) -> Result<Vec<Row>> {
        let run = async {
            let mut tries = 0;
            loop {
                tries += 1;
                let i = self.pick();
                let _busy = Busy::new(&self.slots[i].busy);
                let conn = self.open(i).await?;
                let result = conn.run(self.prepare, sql, params).await;
                if let Err(e) = &result
                    && (session_ended(e) || e.is_closed() || is_io(e))
                {
                    // Ended: the next statement makes the connection again rather than
                    // meet it before the driver has seen it close.
                    self.forget(i, &conn).await;
                }
                match result {
                    Ok(rows) => return Ok(rows),
                    // The server ended the session (`pg_terminate_backend`, a shutdown)
                    // before or while it ran the statement: its transaction did not
                    // commit, so any statement may go out again, on a new connection (every
                    // connection of the pool may have ended alike).
                    Err(e) if session_ended(&e) && tries <= CONNECTIONS => {}
                    Err(e) if e.is_closed() || is_io(&e) => {
                        if resend == Resend::Never {
                            return Err(Error::Indeterminate(Box::new(store_error(e))));
                        }
                        if tries >= 2 {
                            return Err(store_error(e));
                        }
                    }
                    Err(e) => return Err(store_error(e)),
                }
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Error::Timeout)?
    }
}

impl Pool {
    /// Drop connection `i` if it is still `conn`.
    async fn forget(&self, i: usize, conn: &Arc<Conn>) {
        let mut slot = self.slots[i].conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }
}

/// A new connection; its I/O runs on a task of its own until it closes.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<tokio_postgres::Client> {
    let (client, mut messages) = tls.connect(config).await.map_err(store_error)?;
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    tracing::debug!(notice = %notice, "postgres notice");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "postgres connection closed");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// A FATAL `57P0x` reply: the backend was terminated (57P01), or the server is shutting
/// down (57P02) or starting (57P03); the session is over and nothing it ran uncommitted
/// stays.
fn session_ended(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code().starts_with("57P0"))
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A driver error as the crate's: transient when another attempt could succeed (a lost
/// or refused connection, a server shutting down or starting, a statement cancelled by
/// `statement_timeout`, a serialization failure or deadlock). The driver's messages name
/// neither a lock value (values travel as bound parameters) nor a password.
pub(crate) fn store_error(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let transient = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 53: insufficient resources; 57: operator
            // intervention (shutdown, statement timeout, cannot connect now); 40:
            // serialization failure, deadlock.
            matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    };
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if e.is_closed() => "connection closed".to_owned(),
        // The driver's own words ("error performing TLS handshake") and the cause
        // ("invalid peer certificate: UnknownIssuer").
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    Error::Store(StoreError::new("postgres", transient, message).with_source(e))
}
