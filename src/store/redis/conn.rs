//! The connection a Redis store talks through: one multiplexed [`ConnectionManager`]
//! that reconnects by itself, replaced when it looks half-open, and every call bounded by
//! the caller's timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError};

use super::scripts::Lua;
use crate::{Error, Result};

/// After this many calls in a row timed out on one connection (that had answered before)
/// without any answer in between, it is presumed half-open (its peer vanished without a
/// reset, so it would stay silent until the kernel gives up, minutes later) and is
/// replaced. Calls the caller cancelled do not count.
const UNANSWERED_BEFORE_RECONNECT: u64 = 3;

/// The first pause between reconnection attempts after a connection broke.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(10);

/// The longest pause between reconnection attempts: a server that is back is found
/// within about this long (plus jitter), whatever the length of the outage — well under
/// any sensible renewal interval. redis-rs' default would grow to 6.4 s.
pub(crate) const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(100);

/// How the client's own connections are configured: no response timeout underneath
/// (redis-rs defaults to 500 ms; every call is bounded by the caller's own `timeout`,
/// which may well be longer) and a bounded reconnection backoff.
pub(crate) fn manager_config(connect_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(None)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

pub(crate) struct Conn {
    conn: RwLock<ConnectionManager>,
    /// How the current connection is doing; replaced together with `conn`.
    health: Health,
    /// How to build a fresh connection (absent for a user's own connection).
    rebuild: Option<Box<(redis::Client, ConnectionManagerConfig)>>,
}

impl Conn {
    /// A connection the client built, which it may replace.
    pub(crate) fn new(
        conn: ConnectionManager,
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> Self {
        Conn {
            conn: RwLock::new(conn),
            health: Health::new(),
            rebuild: Some(Box::new((client, config))),
        }
    }

    /// The user's own connection, used as it is.
    pub(crate) fn user(conn: ConnectionManager) -> Self {
        Conn {
            conn: RwLock::new(conn),
            health: Health::new(),
            rebuild: None,
        }
    }

    /// The current connection and its generation.
    fn current(&self) -> (u32, ConnectionManager) {
        let conn = self.conn.read();
        (self.health.generation(), conn.clone())
    }

    /// A call on connection `generation` timed out; replace that connection when enough
    /// did in a row (and nobody replaced it meanwhile). Building the new connection is
    /// lazy: it connects on its first use.
    fn timed_out(&self, generation: u32) {
        let Some((client, config)) = self.rebuild.as_deref() else {
            return;
        };
        if !self.health.timed_out(generation) {
            return;
        }
        let mut conn = self.conn.write();
        if self.health.generation() != generation {
            return; // replaced meanwhile
        }
        if let Ok(fresh) = ConnectionManager::new_lazy_with_config(client.clone(), config.clone()) {
            *conn = fresh;
            self.health.replaced(generation);
        }
    }

    /// Send a prepared `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`, bounded by
    /// `timeout`. A timeout is [`Error::Timeout`], whether ours or the connection's own
    /// response timeout (a user's connection may have one).
    ///
    /// Boxed: the round trip's state is allocated only while it runs (a network round
    /// trip dwarfs the allocation), which keeps every future that may call a store —
    /// the memory store's included — small.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        lua: &Lua,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T> {
        Box::pin(self.run_inline(lua, cmd, timeout)).await
    }

    async fn run_inline<T: FromRedisValue>(
        &self,
        lua: &Lua,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T> {
        let (generation, mut conn) = self.current();
        let call = async {
            match cmd.query_async::<T>(&mut conn).await {
                Err(e) if is_noscript(&e) => lua.eval(cmd).query_async(&mut conn).await,
                other => other,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                self.timed_out(generation);
                Err(Error::Timeout)
            }
            Ok(Err(e)) if e.is_timeout() => {
                self.timed_out(generation);
                Err(Error::Timeout)
            }
            Ok(answered) => {
                self.health.answered(generation);
                Ok(answered?)
            }
        }
    }
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// The health of the current connection, in one word so that every update is checked
/// against the connection it is about: its generation (high 32 bits, bumped when it is
/// replaced), whether it ever answered (bit 31), and its timeouts in a row (low bits).
struct Health(AtomicU64);

const ANSWERED: u64 = 1 << 31;
const TIMEOUTS: u64 = ANSWERED - 1;

impl Health {
    /// A connection that has answered (the handshake of the first one has).
    fn new() -> Self {
        Health(AtomicU64::new(ANSWERED))
    }

    fn generation(&self) -> u32 {
        (self.0.load(Ordering::Acquire) >> 32) as u32
    }

    /// A call on `generation` got an answer: alive, no timeouts in a row. Read-only
    /// when nothing changes (the common case).
    fn answered(&self, generation: u32) {
        let healthy = (u64::from(generation) << 32) | ANSWERED;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state >> 32 == u64::from(generation) && state != healthy).then_some(healthy)
            });
    }

    /// A call on `generation` timed out: `true` when that makes enough in a row to
    /// replace it. A connection that never answered is not judged: a fresh one connects
    /// lazily, and its first calls also pay for connecting.
    fn timed_out(&self, generation: u32) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state >> 32 == u64::from(generation)
                    && state & ANSWERED != 0
                    && state & TIMEOUTS < TIMEOUTS)
                    .then_some(state + 1)
            })
            .is_ok_and(|before| (before & TIMEOUTS) + 1 >= UNANSWERED_BEFORE_RECONNECT)
    }

    /// `generation` was replaced by a fresh connection: not answered yet, no timeouts.
    fn replaced(&self, generation: u32) {
        self.0.store(
            u64::from(generation.wrapping_add(1)) << 32,
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_timeouts_per_connection_and_only_after_an_answer() {
        let h = Health::new();
        assert!(!h.timed_out(0));
        h.answered(0); // resets the run
        assert!(!h.timed_out(0));
        assert!(!h.timed_out(0));
        assert!(h.timed_out(0), "third timeout in a row");
        h.replaced(0);
        assert_eq!(h.generation(), 1);
        assert!(
            !h.timed_out(0),
            "a late timeout of the old connection does not count"
        );
        for _ in 0..10 {
            assert!(
                !h.timed_out(1),
                "a fresh connection that never answered is not judged"
            );
        }
        h.answered(0); // a late answer of the old connection changes nothing
        assert!(!h.timed_out(1));
        h.answered(1);
        assert!(!h.timed_out(1));
        assert!(!h.timed_out(1));
        assert!(h.timed_out(1));
    }
}
