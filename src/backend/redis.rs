//! A single Redis server (or a primary with replicas behind one address), through one
//! multiplexed [`ConnectionManager`] that reconnects by itself.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, RedisError, Script};

use super::{Acquire, fence_key};
use crate::Result;

/// The Lua scripts, hashed once per process; calls go out as `EVALSHA` and fall back to
/// loading the script when the server does not know it (after a restart or `SCRIPT FLUSH`).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/acquire.lua")));
static REFRESH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/refresh.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/release.lua")));
static PTTL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/pttl.lua")));

pub(crate) struct RedisBackend {
    conn: ConnectionManager,
}

impl RedisBackend {
    pub(crate) fn new(conn: ConnectionManager) -> Self {
        RedisBackend { conn }
    }

    pub(crate) async fn acquire(&self, key: &str, val: &str, ttl_ms: u64) -> Result<Acquire> {
        let mut cmd = evalsha(&ACQUIRE, 2);
        cmd.arg(key).arg(fence_key(key)).arg(val).arg(ttl_ms);
        let token: i64 = self.run(&ACQUIRE, &cmd).await?;
        Ok(match u64::try_from(token) {
            Ok(0) | Err(_) => Acquire::Held,
            Ok(token) => Acquire::Acquired(token),
        })
    }

    pub(crate) async fn refresh(&self, key: &str, val: &str, ttl_ms: u64) -> Result<bool> {
        let mut cmd = evalsha(&REFRESH, 1);
        cmd.arg(key).arg(val).arg(ttl_ms);
        Ok(self.run::<i64>(&REFRESH, &cmd).await? == 1)
    }

    pub(crate) async fn release(&self, key: &str, val: &str) -> Result<bool> {
        let mut cmd = evalsha(&RELEASE, 1);
        cmd.arg(key).arg(val);
        Ok(self.run::<i64>(&RELEASE, &cmd).await? == 1)
    }

    pub(crate) async fn pttl(&self, key: &str, val: &str) -> Result<Option<Duration>> {
        let mut cmd = evalsha(&PTTL, 1);
        cmd.arg(key).arg(val);
        let ms: i64 = self.run(&PTTL, &cmd).await?;
        Ok(match ms {
            -1 => Some(Duration::MAX),
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        })
    }

    /// Send a prepared `EVALSHA`; on `NOSCRIPT`, load the script and send it once more.
    async fn run<T: FromRedisValue>(&self, script: &Script, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        match cmd.query_async::<T>(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                script.load_async(&mut conn).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }
}

fn evalsha(script: &Script, numkeys: u8) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(numkeys);
    cmd
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
