//! A single Redis server (or a primary with replicas behind one address), through one
//! multiplexed [`ConnectionManager`] that reconnects by itself.

use std::sync::LazyLock;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Arg, Cmd, FromRedisValue, RedisError, RedisWrite, Script};

use super::{Acquire, Fenced, SIDECAR_EXTRA, resource_token_key, write_fence_key};
use crate::{Error, Result};

/// The Lua scripts, hashed once per process. Calls go out as `EVALSHA`; a server that
/// does not know the script (after a restart or `SCRIPT FLUSH`) gets the same call as
/// `EVAL`, which runs and caches it in one round trip.
static ACQUIRE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/acquire.lua")));
static REFRESH: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/refresh.lua")));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/release.lua")));
static FENCED: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/fenced.lua")));
static PTTL: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/pttl.lua")));

struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        let sha = Script::new(code).get_hash().to_owned();
        Lua { code, sha }
    }

    /// `EVALSHA <sha> <numkeys>`, with room reserved for the rest: `payload` bytes of
    /// keys and values plus one integer, so that building the command costs one
    /// allocation per buffer and never regrows them.
    fn evalsha(&self, numkeys: u8, payload: usize) -> Cmd {
        // EVALSHA, sha1, numkeys, up to 4 keys and values, one integer (u64: 20 digits).
        let mut cmd = Cmd::with_capacity(8, "EVALSHA".len() + 40 + 1 + payload + 20);
        cmd.arg("EVALSHA").arg(&self.sha).arg(numkeys);
        cmd
    }

    /// The same call as `EVAL <code> …`.
    fn eval(&self, evalsha: &Cmd) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.code);
        for arg in evalsha.args_iter().skip(2) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

pub(crate) struct RedisBackend {
    conn: RwLock<ConnectionManager>,
    /// How the current connection is doing; replaced together with `conn`.
    health: Health,
    /// How to build a fresh connection (absent for a user's own connection).
    rebuild: Option<Box<(redis::Client, ConnectionManagerConfig)>>,
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

/// After this many calls in a row timed out on one connection (that had answered before)
/// without any answer in between, it is presumed half-open (its peer vanished without a
/// reset, so it would stay silent until the kernel gives up, minutes later) and is
/// replaced. Calls the caller cancelled do not count.
const UNANSWERED_BEFORE_RECONNECT: u64 = 3;

impl RedisBackend {
    /// A backend on a connection the client built, which it may replace.
    pub(crate) fn new(
        conn: ConnectionManager,
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> Self {
        RedisBackend {
            conn: RwLock::new(conn),
            health: Health::new(),
            rebuild: Some(Box::new((client, config))),
        }
    }

    /// A backend on the user's own connection, used as it is.
    pub(crate) fn from_connection(conn: ConnectionManager) -> Self {
        RedisBackend {
            conn: RwLock::new(conn),
            health: Health::new(),
            rebuild: None,
        }
    }

    /// The current connection and its generation.
    fn connection(&self) -> (u32, ConnectionManager) {
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

    pub(crate) async fn acquire(
        &self,
        key: &str,
        val: &str,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Result<Acquire> {
        let cmd = acquire_cmd(key, val, ttl_ms);
        let token: i64 = self.run(&ACQUIRE, &cmd, timeout).await?;
        Ok(match u64::try_from(token) {
            Ok(0) | Err(_) => Acquire::Held,
            Ok(token) => Acquire::Acquired(token),
        })
    }

    pub(crate) async fn refresh(
        &self,
        key: &str,
        val: &str,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let mut cmd = REFRESH.evalsha(1, key.len() + val.len());
        cmd.arg(key).arg(val).arg(ttl_ms);
        Ok(self.run::<i64>(&REFRESH, &cmd, timeout).await? == 1)
    }

    pub(crate) async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        let mut cmd = RELEASE.evalsha(1, key.len() + val.len());
        cmd.arg(key).arg(val);
        Ok(self.run::<i64>(&RELEASE, &cmd, timeout).await? == 1)
    }

    pub(crate) async fn pttl(
        &self,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        let mut cmd = PTTL.evalsha(1, key.len() + val.len());
        cmd.arg(key).arg(val);
        let ms: i64 = self.run(&PTTL, &cmd, timeout).await?;
        Ok(match ms {
            -1 => Some(Duration::MAX),
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        })
    }

    pub(crate) async fn fenced(
        &self,
        resource: &str,
        token: u64,
        write: Option<&str>,
        timeout: Duration,
    ) -> Result<Fenced> {
        let payload = 2 * resource.len() + SIDECAR_EXTRA + write.map_or(0, str::len);
        let mut cmd = FENCED.evalsha(2, payload);
        cmd.arg(resource)
            .arg(resource_token_key(resource))
            .arg(token);
        match write {
            Some(value) => cmd.arg("set").arg(value),
            None => cmd.arg("get"),
        };
        let (accepted, payload): (i64, redis::Value) = self.run(&FENCED, &cmd, timeout).await?;
        if accepted == 1 {
            let value = Option::<String>::from_redis_value(payload).map_err(RedisError::from)?;
            return Ok(Ok(value));
        }
        Ok(Err(
            u64::from_redis_value(payload).map_err(RedisError::from)?
        ))
    }

    /// Send a prepared `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`, bounded by
    /// `timeout`.
    async fn run<T: FromRedisValue>(&self, lua: &Lua, cmd: &Cmd, timeout: Duration) -> Result<T> {
        let (generation, mut conn) = self.connection();
        let call = async {
            match cmd.query_async::<T>(&mut conn).await {
                Err(e) if is_noscript(&e) => lua.eval(cmd).query_async(&mut conn).await,
                other => other,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            // Ours, or the connection's own response timeout (a user's connection).
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

/// `EVALSHA <acquire> 2 <key> <fence key> <val> <ttl_ms>`, the fence key written in place.
fn acquire_cmd(key: &str, val: &str, ttl_ms: u64) -> Cmd {
    let mut cmd = ACQUIRE.evalsha(2, 2 * key.len() + SIDECAR_EXTRA + val.len());
    cmd.arg(key);
    write_fence_key(key, &mut cmd.writer_for_next_arg());
    cmd.arg(val).arg(ttl_ms);
    cmd
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fence_key;

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

    #[test]
    fn commands_pack_to_the_plain_redis_rs_bytes() {
        for key in ["job", "user:{42}:job", "a}b", "a{b", "ключ"] {
            let plain = redis::cmd("EVALSHA")
                .arg(&ACQUIRE.sha)
                .arg(2)
                .arg(key)
                .arg(fence_key(key))
                .arg("value")
                .arg(30_000u64)
                .get_packed_command();
            let cmd = acquire_cmd(key, "value", 30_000);
            assert_eq!(cmd.get_packed_command(), plain, "{key:?}");
        }
    }

    #[test]
    fn the_eval_fallback_carries_the_same_keys_and_arguments() {
        let cmd = acquire_cmd("job", "value", 30_000);
        let eval = ACQUIRE.eval(&cmd);
        let plain = redis::cmd("EVAL")
            .arg(ACQUIRE.code)
            .arg(2)
            .arg("job")
            .arg(fence_key("job"))
            .arg("value")
            .arg(30_000u64)
            .get_packed_command();
        assert_eq!(eval.get_packed_command(), plain);
    }
}
