//! Redis: one server, a sentinel-managed master, or a cluster — the scripts of
//! [`scripts`] over a connection of [`conn`], with the sidecar keys of [`keys`], which
//! share each lock key's cluster slot so that every script is slot-safe.

mod conn;
pub(crate) mod keys;
mod notify;
mod scripts;
pub(crate) mod transient;

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, RedisError, Value};

use self::conn::{Conn, Connection, Source};
use self::keys::Publish;
use self::notify::{Notifier, Subscriber};
use super::{Acquire, AttemptId, Backend, Fence, Fenced, Inspected, Store};
use crate::wake::Watch;
use crate::{Error, Result};

/// The URL schemes this store opens.
pub(crate) const SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// Options only Redis has: `ClientBuilder::min_replicas` and `ClientBuilder::notifier`.
#[derive(Clone, Default)]
pub(crate) struct Extra {
    /// `WAIT` for this many replicas, at most this long, after every acquire and refresh.
    pub(crate) min_replicas: Option<(u32, Duration)>,
    /// The client for the subscriber connection of a store on a user's connection.
    pub(crate) notifier: Option<redis::Client>,
}

/// Open a one-server Redis store from `url` (one of [`SCHEMES`]) as a client's backend.
pub(crate) async fn open(url: &str, options: &crate::store::Options) -> Result<(Backend, String)> {
    let (store, target) = RedisStore::open(url, &Options::new(options)).await?;
    Ok((Backend::Redis(std::sync::Arc::new(store)), target))
}

impl Options {
    /// The Redis options of a client's store options.
    pub(crate) fn new(options: &crate::store::Options) -> Self {
        Options {
            connect_timeout: options.connect_timeout,
            min_replicas: options.redis.min_replicas,
            notify: options.notify,
            notifier: options.redis.notifier.clone(),
            #[cfg(feature = "tls")]
            tls_root_certificate: options.tls_root_certificate.clone(),
        }
    }
}

/// How to open a Redis store.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
    /// `WAIT` for this many replicas, at most this long, after every acquire and refresh.
    pub(crate) min_replicas: Option<(u32, Duration)>,
    /// Publish releases and wake waiters (`ClientBuilder::notify`).
    pub(crate) notify: bool,
    /// The client for the subscriber connection of a store on a user's connection.
    pub(crate) notifier: Option<redis::Client>,
    #[cfg(feature = "tls")]
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
}

pub(crate) struct RedisStore {
    conn: Conn,
    min_replicas: Option<(u32, Duration)>,
    /// Release notifications (`None`: off, or no way to subscribe).
    notifier: Option<Notifier>,
}

impl RedisStore {
    /// Connect to `url` (one of [`SCHEMES`]); also returns where it points, without
    /// credentials.
    ///
    /// One direct connection attempt comes first: the connection manager retries its
    /// first connection with backoff, while a wrong password or an untrusted certificate
    /// should be reported at once.
    pub(crate) async fn open(url: &str, options: &Options) -> Result<(RedisStore, String)> {
        let client = redis_client(url, options)?;
        let info = client.get_connection_info();
        let target = format!("{}/{}", info.addr(), info.redis_settings().db());
        let config = conn::manager_config(options.connect_timeout);
        let manager = connect(&client, &config, options.connect_timeout).await?;
        let notifier = options.notify.then(|| {
            Notifier::new(
                Publish::Plain,
                Subscriber::Single(Box::new(client.clone())),
                options.connect_timeout,
            )
        });
        let store = RedisStore {
            conn: Conn::new(
                Connection::Single(manager),
                Source::Url(Box::new((client, config))),
            ),
            min_replicas: options.min_replicas,
            notifier,
        };
        Ok((store, target))
    }

    /// A store on the user's own connection, used as it is.
    pub(crate) fn from_connection(conn: ConnectionManager, options: &Options) -> Self {
        let notifier = match &options.notifier {
            Some(client) if options.notify => Some(Notifier::new(
                Publish::Plain,
                Subscriber::Single(Box::new(client.clone())),
                options.connect_timeout,
            )),
            _ => None,
        };
        RedisStore {
            conn: Conn::new(Connection::Single(conn), Source::User),
            min_replicas: options.min_replicas,
            notifier,
        }
    }

    /// Connect to the cluster that `urls` (any of its nodes) belong to.
    #[cfg(feature = "cluster")]
    pub(crate) async fn open_cluster(
        urls: &[&str],
        options: &Options,
    ) -> Result<(RedisStore, String)> {
        if urls.is_empty() {
            return Err(Error::invalid(
                "urls: name at least one node of the cluster",
            ));
        }
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            if !SCHEMES[..2].iter().any(|s| url.starts_with(s)) {
                return Err(Error::invalid(
                    "urls: a cluster node is redis://host:port or rediss://host:port",
                ));
            }
            let info = redis::IntoConnectionInfo::into_connection_info(*url)
                .map_err(|_| Error::invalid("urls: not a valid Redis URL"))?;
            nodes.push(info);
        }
        let target = format!(
            "cluster of {}",
            nodes
                .iter()
                .map(|n| n.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let subscriber = redis::cluster::ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(options.connect_timeout);
        let builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(options.connect_timeout)
            // Every call is bounded by the caller's timeout, and sent again by `conn` only
            // as far as it is safe: redis-rs would send any call again after a connection
            // lost while it was out (a release whose answer was lost would then report
            // `NotHeld`, a forced release delete the next holder). Without retries of its
            // own it still refreshes its slot map and reconnects; `conn` follows the
            // redirects.
            .overall_response_timeout(None)
            .retries(0);
        #[cfg(feature = "tls")]
        let (builder, subscriber) = match &options.tls_root_certificate {
            Some(pem) => {
                let certs = || redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                };
                (builder.certs(certs()), subscriber.certs(certs()))
            }
            None => (builder, subscriber),
        };
        let client = builder.build().map_err(redacted)?;
        let conn = match tokio::time::timeout(
            options.connect_timeout,
            client.get_async_connection(),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            // Say what each seed answered.
            Ok(Err(_)) | Err(_) => return Err(seeds_unreachable(urls, options).await),
        };
        let mut store = RedisStore::from_cluster(conn, options);
        store.notifier = options.notify.then(|| {
            Notifier::new(
                Publish::Sharded,
                Subscriber::Cluster(Box::new(subscriber)),
                options.connect_timeout,
            )
        });
        Ok((store, target))
    }

    /// A store on the user's own cluster connection.
    #[cfg(feature = "cluster")]
    pub(crate) fn from_cluster(
        conn: redis::cluster_async::ClusterConnection,
        options: &Options,
    ) -> Self {
        RedisStore {
            conn: Conn::new(Connection::Cluster(conn), Source::Cluster),
            min_replicas: options.min_replicas,
            // A user's cluster connection: its nodes are not known here to subscribe.
            notifier: None,
        }
    }

    /// Connect to the master the sentinels at `sentinels` name `master`, following it
    /// through failovers. Credentials and database in `master_url_like` (the first
    /// sentinel URL's user, password and `/db`) apply to the master.
    #[cfg(feature = "sentinel")]
    pub(crate) async fn open_sentinel(
        sentinels: &[&str],
        master: &str,
        options: &Options,
    ) -> Result<(RedisStore, String)> {
        use redis::sentinel::{SentinelClient, SentinelServerType};
        if sentinels.is_empty() {
            return Err(Error::invalid("sentinels: name at least one sentinel"));
        }
        if master.is_empty() {
            return Err(Error::invalid("master_name: must not be empty"));
        }
        let mut infos = Vec::with_capacity(sentinels.len());
        for url in sentinels {
            if !SCHEMES[..2].iter().any(|s| url.starts_with(s)) {
                return Err(Error::invalid(
                    "sentinels: a sentinel is redis://host:port or rediss://host:port",
                ));
            }
            infos.push(
                redis::IntoConnectionInfo::into_connection_info(*url)
                    .map_err(|_| Error::invalid("sentinels: not a valid Redis URL"))?,
            );
        }
        let target = format!("master {master} of sentinels {}", {
            let addrs: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
            addrs.join(",")
        });
        // A `String` for every feature set: with `tls` the parameter is `impl AsRef<str>`.
        #[allow(clippy::unnecessary_to_owned)]
        let mut sentinel =
            SentinelClient::build(infos, master.to_owned(), None, SentinelServerType::Master)
                .map_err(redacted)?;
        let client = tokio::time::timeout(options.connect_timeout, sentinel.async_get_client())
            .await
            .map_err(|_| Error::Timeout)??;
        let config = conn::manager_config(options.connect_timeout);
        let manager = connect(&client, &config, options.connect_timeout).await?;
        let store = RedisStore {
            conn: Conn::new(
                Connection::Single(manager),
                Source::Sentinel(Box::new((tokio::sync::Mutex::new(sentinel), config))),
            ),
            min_replicas: options.min_replicas,
            // A subscriber would not follow a failover: waiters poll, and wake when the
            // holder's lease runs out.
            notifier: None,
        };
        Ok((store, target))
    }

    fn publish(&self) -> Option<Publish> {
        self.notifier.as_ref().map(Notifier::publish)
    }

    /// Run a script that writes; with `min_replicas`, wait for replicas in the same
    /// round trip and fail with [`Error::NotReplicated`] if too few acknowledged.
    async fn write<T: FromRedisValue>(
        &self,
        lua: &scripts::Lua,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<(T, Option<Error>)> {
        match self.min_replicas {
            None => Ok((self.conn.run(lua, cmd, timeout).await?, None)),
            Some((wanted, wait)) => {
                let (reply, acked) = self
                    .conn
                    .run_replicated(lua, cmd, wanted, wait, timeout)
                    .await?;
                let short = (acked < wanted).then_some(Error::NotReplicated { acked, wanted });
                Ok((reply, short))
            }
        }
    }
}

/// The first connection: one direct attempt and one `PING` (so that a missing or wrong
/// password, an untrusted certificate or a port that is not Redis is reported by `open`,
/// not by the first lock), then the manager.
async fn connect(
    client: &redis::Client,
    config: &redis::aio::ConnectionManagerConfig,
    connect_timeout: Duration,
) -> Result<ConnectionManager> {
    let target = client.get_connection_info().addr().to_string();
    let probe = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(connect_timeout));
    let ping = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&probe)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        // A cluster node answers a one-server client for the slots it owns only.
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
    };
    let info = ping
        .await
        .map_err(|e| unreachable(&target, connect_timeout, e))?;
    if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Err(Error::invalid(format!(
            "url: {target} is a Redis Cluster node: open it with `open_cluster` (feature \
             `cluster`), which follows the cluster's slots"
        )));
    }
    ConnectionManager::new_with_config(client.clone(), config.clone())
        .await
        .map_err(|e| unreachable(&target, connect_timeout, e))
}

/// A first connection that failed, in words that name the server (`host:port`, never
/// the password) and say what the failure usually means. A connect that timed out is an
/// I/O error of kind `TimedOut` naming the server ([`Error::is_timeout`] is true).
fn unreachable(target: &str, connect_timeout: Duration, e: RedisError) -> Error {
    use redis::ErrorKind;
    if e.is_timeout() {
        let named = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "cannot connect to {target}: no answer within the connect timeout ({connect_timeout:?})"
            ),
        );
        return Error::Redis(named.into());
    }
    if e.is_io_error() {
        // Keeps what the error's kind tells: `is_connection_refusal()` and the like still
        // work.
        let kind = if e.is_connection_refusal() {
            std::io::ErrorKind::ConnectionRefused
        } else if e.is_connection_dropped() {
            std::io::ErrorKind::ConnectionReset
        } else {
            std::io::ErrorKind::Other
        };
        let named = std::io::Error::new(kind, format!("cannot connect to {target}: {e}"));
        return Error::Redis(named.into());
    }
    let said = |kind, what: &'static str, detail: String| Error::Redis((kind, what, detail).into());
    match e.kind() {
        ErrorKind::Parse => said(
            ErrorKind::Parse,
            "not a Redis server",
            format!(
                "{target} did not answer in the Redis protocol: is it the right port? \
                 (a TLS port needs rediss://)"
            ),
        ),
        ErrorKind::AuthenticationFailed => said(
            ErrorKind::AuthenticationFailed,
            "authentication failed",
            format!("{target} refused the username or password in the URL"),
        ),
        _ if e.code() == Some("NOAUTH") => said(
            ErrorKind::AuthenticationFailed,
            "authentication required",
            format!("{target} requires a password: put it in the URL (redis://:password@host/)"),
        ),
        _ => Error::Redis(e),
    }
}

/// Why no seed of a cluster could be reached: each seed (`host:port`) with what a direct
/// connection to it answered, within the connect timeout.
#[cfg(feature = "cluster")]
async fn seeds_unreachable(urls: &[&str], options: &Options) -> Error {
    let tries = urls.iter().map(|url| async move {
        let client = match redis_client(url, options) {
            Ok(client) => client,
            Err(e) => return e.to_string(),
        };
        let target = client.get_connection_info().addr().to_string();
        let config = conn::manager_config(options.connect_timeout);
        match connect(&client, &config, options.connect_timeout).await {
            // Answers now (a node that came up meanwhile, or one that is no cluster node).
            Ok(_) => format!("{target}: answers, but the cluster could not be set up from it"),
            Err(Error::InvalidArgument(_)) => format!("{target}: a cluster node"),
            Err(e) => match e.to_string().split_once(": cannot connect to ") {
                Some((_, said)) => said.to_owned(),
                None => format!("{target}: {e}"),
            },
        }
    });
    let said = futures::future::join_all(tries).await;
    let named = std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!(
            "cannot connect to the cluster: no seed node could be used ({})",
            said.join("; ")
        ),
    );
    Error::Redis(named.into())
}

/// redis-rs' own messages about a configuration may quote a URL (and its password): say
/// what is wrong in our words.
#[cfg(any(feature = "cluster", feature = "sentinel"))]
fn redacted(e: RedisError) -> Error {
    match e.kind() {
        redis::ErrorKind::InvalidClientConfig => {
            Error::invalid("url: not a valid Redis configuration (TLS needs the `tls` feature)")
        }
        _ => Error::Redis(e),
    }
}

fn redis_client(url: &str, options: &Options) -> Result<redis::Client> {
    // redis-rs' own messages may quote the URL (and its password): use ours.
    let invalid = |e: RedisError| match e.kind() {
        redis::ErrorKind::InvalidClientConfig if url.starts_with("rediss://") => {
            Error::invalid("url: rediss:// needs the `tls` feature of leasehold")
        }
        _ => Error::invalid("url: not a valid Redis URL"),
    };
    #[cfg(feature = "tls")]
    if let Some(pem) = &options.tls_root_certificate {
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        return redis::Client::build_with_tls(url, certs).map_err(invalid);
    }
    #[cfg(not(feature = "tls"))]
    let _ = options;
    redis::Client::open(url).map_err(invalid)
}

impl RedisStore {
    /// Undo what `attempts` created, when each of them was answered here (a Redlock node
    /// that granted an attempt that lost the quorum): nothing can land later, so no
    /// record of aborted attempts is kept. `true`: the key was deleted.
    pub(crate) async fn undo_answered(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        timeout: Duration,
    ) -> Result<bool> {
        let cmd = scripts::abort(key, val, attempts, true, true, self.publish());
        Ok(self.conn.run::<i64>(&scripts::ABORT, &cmd, timeout).await? == 1)
    }
}

impl RedisStore {
    /// The server's `run_id` (`INFO server`): random per server process, so two
    /// connections that report the same one reach the same server, however their URLs
    /// spell it.
    pub(crate) async fn server_id(&self, timeout: Duration) -> Result<String> {
        let info: String = self
            .conn
            .query(redis::cmd("INFO").arg("server"), timeout)
            .await?;
        run_id(&info).map(str::to_owned).ok_or_else(|| {
            Error::Redis(
                (
                    redis::ErrorKind::Parse,
                    "no run_id",
                    "INFO server named no run_id".to_owned(),
                )
                    .into(),
            )
        })
    }
}

/// The `run_id` field of an `INFO server` reply.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix("run_id:"))
        .filter(|id| !id.is_empty())
}

impl Store for RedisStore {
    fn granularity(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Ok(expiration)
    }

    fn watch(&self, key: &str) -> Option<Watch> {
        self.notifier.as_ref()?.watch(key)
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
        let cmd = scripts::acquire(key, val, expiration, attempt, label);
        let (reply, short): (Value, _) = self.write(&scripts::ACQUIRE, &cmd, timeout).await?;
        match reply {
            Value::Int(0) => Ok(Acquire::Held(None)),
            Value::Int(held) if held <= -2 => Ok(Acquire::Held(Some(Duration::from_millis(
                held.unsigned_abs() - 2,
            )))),
            Value::Int(-1) => Ok(Acquire::Refused),
            token => {
                let token = token_from(token)?;
                match short {
                    // Taken on the master only: the client aborts the attempt.
                    Some(e @ Error::NotReplicated { .. }) => Err(e),
                    _ => Ok(Acquire::Acquired(token)),
                }
            }
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
        let (refreshed, short): (i64, _) = self.write(&scripts::REFRESH, &cmd, timeout).await?;
        if refreshed != 1 {
            return Ok(false);
        }
        match short {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        let cmd = scripts::release(key, val, self.publish());
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
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        if attempts.is_empty() {
            return Ok(false);
        }
        let cmd = scripts::abort(key, val, attempts, undo, false, self.publish());
        Ok(self.conn.run::<i64>(&scripts::ABORT, &cmd, timeout).await? == 1)
    }

    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        let cmd = scripts::pttl(key, val);
        let ms: i64 = self.conn.run(&scripts::PTTL, &cmd, timeout).await?;
        Ok(match ms {
            -1 => Some(Duration::MAX),
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        })
    }

    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        let cmd = scripts::inspect(key);
        let reply: Option<(String, i64, Value, Value, Value)> =
            self.conn.run(&scripts::INSPECT, &cmd, timeout).await?;
        let Some((holder, ms, token, locked_at, label)) = reply else {
            return Ok(None);
        };
        let text = |v: Value| match v {
            Value::BulkString(bytes) if !bytes.is_empty() => {
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        };
        let locked_at = text(locked_at)
            .and_then(|ms| ms.parse().ok())
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
        Ok(Some(Inspected {
            key: key.to_owned(),
            ttl: u64::try_from(ms).ok().map(Duration::from_millis),
            token: token_from(token)?,
            holder,
            label: text(label),
            locked_at,
        }))
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        let keys = self
            .conn
            .scan(&format!("{}*", glob_escape(prefix)), timeout)
            .await?;
        let mut locks = Vec::new();
        let mut unreadable = 0usize;
        // A few at a time: a listing must not crowd out the locks' own traffic.
        for batch in keys.chunks(64) {
            let inspected =
                futures::future::join_all(batch.iter().map(|key| self.inspect(key, timeout))).await;
            for lock in inspected {
                match lock {
                    Ok(lock) => locks.extend(lock),
                    // A key this user may not read: an ACL confines it to a pattern, and
                    // SCAN shows it every key. Not one of its locks: left out.
                    Err(Error::Redis(e)) if is_foreign_key(&e) => unreadable += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        if unreadable > 0 {
            tracing::debug!(unreadable, "list: keys this user may not read left out");
        }
        locks.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(locks)
    }

    /// `only: None`: what holds the key is observed first, then deleted only while that
    /// acquisition still holds it (`false` if it ended meanwhile), within `timeout` in
    /// all. So the delete names one acquisition: sent twice (by a connection of the
    /// user's that re-sends what lost its answer), it cannot delete the next one. Not
    /// observed again when it changed hands: after a delete that a re-sending connection
    /// ran twice, that would find the next holder, and delete it.
    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (token, holder) = match only {
            Some(token) => (token.to_string(), String::new()),
            None => {
                let cmd = scripts::observe(key);
                let observed: Option<(String, String)> =
                    self.conn.run(&scripts::OBSERVE, &cmd, timeout).await?;
                let Some((holder, token)) = observed else {
                    return Ok(false);
                };
                (token, holder)
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        let cmd = scripts::force_release(key, &token, &holder, self.publish());
        let deleted: i64 = self.conn.run(&scripts::FORCE_RELEASE, &cmd, left).await?;
        Ok(deleted == 1)
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

/// `text` as a `SCAN MATCH` pattern that matches it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `NOPERM` for a key the ACL user may not access (not for a command it may not run:
/// that is a failure of every key, and is reported).
fn is_foreign_key(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        && e.detail().is_some_and(|d| d.contains("keys"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c9e\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info), Some("4f1c9e"));
        assert_eq!(run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(run_id("# Server\r\nmaster_run_id:ab\r\n"), None);
    }

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
}
