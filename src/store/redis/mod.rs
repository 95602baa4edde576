//! A single Redis server (or a primary with replicas behind one address): the scripts
//! of [`scripts`] over the connection of [`conn`], with the sidecar keys of [`keys`].

mod conn;
pub(crate) mod keys;
mod scripts;

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, RedisError, Value};

use self::conn::Conn;
use super::{Acquire, AttemptId, Fence, Fenced, Store};
use crate::error::StoreError;
use crate::{Error, Result};

/// The URL schemes this store opens.
pub(crate) const SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// How to open a Redis store.
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
}

pub(crate) struct RedisStore {
    conn: Conn,
}

impl RedisStore {
    /// Connect to `url` (one of [`SCHEMES`]); also returns where it points, without
    /// credentials.
    ///
    /// One direct connection attempt comes first: the connection manager retries its
    /// first connection with backoff, while a wrong password or an untrusted certificate
    /// should be reported at once.
    pub(crate) async fn open(url: &str, options: &Options) -> Result<(RedisStore, String)> {
        // redis-rs' own messages may quote the URL (and its password): use ours.
        let client = redis_client(url, options).map_err(|e| match e.kind() {
            redis::ErrorKind::InvalidClientConfig if url.starts_with("rediss://") => {
                Error::invalid("url: rediss:// needs the `tls` feature of leasehold")
            }
            _ => Error::invalid("url: not a valid Redis URL"),
        })?;
        let info = client.get_connection_info();
        let target = format!("{}/{}", info.addr(), info.redis_settings().db());
        let probe = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.connect_timeout));
        drop(
            client
                .get_multiplexed_async_connection_with_config(&probe)
                .await?,
        );
        let config = conn::manager_config(options.connect_timeout);
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        let store = RedisStore {
            conn: Conn::new(manager, client, config),
        };
        Ok((store, target))
    }

    /// A store on the user's own connection, used as it is.
    pub(crate) fn from_connection(conn: ConnectionManager) -> Self {
        RedisStore {
            conn: Conn::user(conn),
        }
    }
}

fn redis_client(url: &str, options: &Options) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(pem) = &options.tls_root_certificate {
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        return redis::Client::build_with_tls(url, certs);
    }
    #[cfg(not(feature = "tls"))]
    let _ = options;
    redis::Client::open(url)
}

impl Store for RedisStore {
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(expiration)
    }

    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        timeout: Duration,
    ) -> Result<Acquire> {
        let cmd = scripts::acquire(key, val, expiration, attempt);
        let reply: Value = self.conn.run(&scripts::ACQUIRE, &cmd, timeout).await?;
        match reply {
            Value::Int(0) => Ok(Acquire::Held),
            // Only an attempt its caller gave up on is ever aborted: nobody reads this.
            Value::Int(-1) => Err(Error::Store(StoreError::new(
                "redis",
                false,
                "the acquire attempt was aborted",
            ))),
            token => Ok(Acquire::Acquired(token_from(token)?)),
        }
    }

    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        let cmd = scripts::refresh(key, val, expiration);
        Ok(self
            .conn
            .run::<i64>(&scripts::REFRESH, &cmd, timeout)
            .await?
            == 1)
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        let cmd = scripts::release(key, val);
        Ok(self
            .conn
            .run::<i64>(&scripts::RELEASE, &cmd, timeout)
            .await?
            == 1)
    }

    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        release: bool,
        timeout: Duration,
    ) -> Result<()> {
        let cmd = scripts::abort(key, val, attempts, release);
        self.conn.run::<i64>(&scripts::ABORT, &cmd, timeout).await?;
        Ok(())
    }

    async fn pttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        let cmd = scripts::pttl(key, val);
        let ms: i64 = self.conn.run(&scripts::PTTL, &cmd, timeout).await?;
        Ok(match ms {
            -1 => Some(Duration::MAX),
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        })
    }

    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        let cmd = scripts::fenced(access);
        let (accepted, payload): (i64, Value) =
            self.conn.run(&scripts::FENCED, &cmd, timeout).await?;
        if accepted == 1 {
            let value = Option::<String>::from_redis_value(payload).map_err(RedisError::from)?;
            return Ok(Ok(value));
        }
        Ok(Err(token_from(payload)?))
    }
}

/// A token from a script: an integer, or decimal text where a Lua number would have
/// rounded it.
fn token_from(reply: Value) -> Result<u64> {
    let token = match reply {
        Value::Int(n) => u64::try_from(n).ok(),
        Value::BulkString(ref digits) => std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok()),
        _ => None,
    };
    token.ok_or_else(|| {
        Error::Redis(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "not a fencing token",
            format!("{reply:?}"),
        )))
    })
}

/// Whether another attempt could succeed where this one failed: connection-level
/// failures a retry (possibly after a reconnect) can fix, and a server that is loading,
/// failing over or asks to try again. Authentication, permission, wrong-type and script
/// errors are not transient: retrying cannot fix them.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_as_integers_or_exact_text() {
        assert_eq!(token_from(Value::Int(7)).unwrap(), 7);
        let big = (1u64 << 53) + 1;
        assert_eq!(
            token_from(Value::BulkString(big.to_string().into_bytes())).unwrap(),
            big
        );
        assert_eq!(
            token_from(Value::BulkString(u64::MAX.to_string().into_bytes())).unwrap(),
            u64::MAX
        );
        assert!(token_from(Value::Int(-3)).is_err());
        assert!(token_from(Value::Nil).is_err());
    }

    #[test]
    fn io_errors_are_transient_auth_and_script_errors_are_not() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(is_transient(&io));
        let auth: RedisError = (redis::ErrorKind::AuthenticationFailed, "bad password").into();
        assert!(!is_transient(&auth));
    }
}
