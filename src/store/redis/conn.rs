//! The connection a Redis store talks through, and every call bounded by the caller's
//! timeout.
//!
//! * One server (`redis://…`): one multiplexed [`ConnectionManager`] that reconnects by
//!   itself with a bounded backoff, and is replaced when it looks half-open.
//! * A sentinel-managed master: the same, on the master the sentinels name; when the
//!   master stops answering as a master (connection refused, `READONLY` after a
//!   demotion, three timeouts in a row) the sentinels are asked again and the connection
//!   replaced, which is how a failover is followed.
//! * Redis Cluster (feature `cluster`): redis-rs' cluster connection, which follows the
//!   slot map (`MOVED`, `ASK`, `TRYAGAIN`) and reconnects to its nodes by itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};

use super::scripts::{Lua, Resend};
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

/// A connection to one server, or to a cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the connection came from, and so how to replace it.
pub(crate) enum Source {
    /// The user's own connection: used as it is, never replaced.
    User,
    /// A URL: replaced by a fresh connection to the same address.
    Url(Box<(redis::Client, ConnectionManagerConfig)>),
    /// Sentinels: replaced by a connection to the master they name now.
    #[cfg(feature = "sentinel")]
    Sentinel(
        Box<(
            tokio::sync::Mutex<redis::sentinel::SentinelClient>,
            ConnectionManagerConfig,
        )>,
    ),
    /// A cluster connection, which follows the cluster by itself.
    #[cfg(feature = "cluster")]
    Cluster,
}

pub(crate) struct Conn {
    conn: RwLock<Connection>,
    /// How the current connection is doing; replaced together with `conn`.
    health: Health,
    source: Source,
    /// When a call on this store last got an answer, in milliseconds since `born`.
    answered_at: AtomicU64,
    born: Instant,
    /// Serialises replacements that need I/O (asking the sentinels).
    #[cfg(feature = "sentinel")]
    resolving: tokio::sync::Mutex<()>,
}

/// A call's outcome before it is mapped to the crate's errors.
enum Outcome<T> {
    Answered(redis::RedisResult<T>),
    TimedOut,
}

/// Tries of one call within its timeout: the first and this many more after a failure
/// that allows it (as many as redis-rs' cluster client was allowed before it stopped
/// retrying on its own).
const TRIES_AFTER_THE_FIRST: u32 = 5;
/// The pause before another try (none after a redirect), doubling up to the last.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(10);
const RETRY_MAX_PAUSE: Duration = Duration::from_millis(100);
/// A write that must not run twice, about to go out on a connection idle this long, is
/// preceded by a `PING`: a connection that died meanwhile (a server restart) is found dead
/// and replaced by the `PING`, which is safe to lose, instead of by the write, which would
/// end undecided ([`Error::Indeterminate`]).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Where a try goes: where the connection routes it (one server; on a cluster, the
/// master of the key's slot in its slot map), or to the node a redirect named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Slot,
    /// `MOVED`: the slot is served there now.
    #[cfg(feature = "cluster")]
    Moved(String, u16),
    /// `ASK`: during a migration, the key is there; `ASKING` first.
    #[cfg(feature = "cluster")]
    Ask(String, u16),
}

/// What a failed try says about the call.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// It did not run: a reply refusing it, or no connection to send it on. Another try
    /// goes to `Route`.
    NotRun(Route),
    /// It may have run: the connection failed after it may have gone out.
    MaybeRun,
    /// Another try cannot help (a script error, a permission, a timeout: the caller's
    /// timeout is the bound on every try).
    Final,
}

/// What `e` says about the try that failed with it, on a cluster connection or not (only
/// a cluster connection follows redirects).
fn failure(e: &RedisError, cluster: bool) -> Failure {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_timeout() {
        return Failure::Final;
    }
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::Moved) if cluster => redirect(e, false),
        ErrorKind::Server(ServerErrorKind::Ask) if cluster => redirect(e, true),
        ErrorKind::Server(
            ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => Failure::NotRun(Route::Slot),
        ErrorKind::ClusterConnectionNotFound => Failure::NotRun(Route::Slot),
        _ if e.is_connection_refusal() => Failure::NotRun(Route::Slot),
        ErrorKind::Io | ErrorKind::Parse => Failure::MaybeRun,
        _ => Failure::Final,
    }
}

/// The route a redirect names (`MOVED`/`ASK <slot> <host>:<port>`); the slot map when it
/// names none that can be parsed (a try there gets the redirect again, or is served).
#[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
fn redirect(e: &RedisError, ask: bool) -> Failure {
    #[cfg(feature = "cluster")]
    if let Some((host, port)) = e
        .redirect_node()
        .and_then(|(addr, _)| addr.rsplit_once(':'))
        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
    {
        return Failure::NotRun(if ask {
            Route::Ask(host, port)
        } else {
            Route::Moved(host, port)
        });
    }
    Failure::NotRun(Route::Slot)
}

impl Conn {
    pub(crate) fn new(conn: Connection, source: Source) -> Self {
        Conn {
            conn: RwLock::new(conn),
            health: Health::new(),
            source,
            answered_at: AtomicU64::new(0),
            born: Instant::now(),
            #[cfg(feature = "sentinel")]
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    /// The current connection and its generation.
    fn current(&self) -> (u32, Connection) {
        let conn = self.conn.read();
        (self.health.generation(), conn.clone())
    }

    /// Send a prepared `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`, bounded by
    /// `timeout`, and tried again as [`Lua::resend`] allows. A timeout is
    /// [`Error::Timeout`], whether ours or the connection's own response timeout (a
    /// user's connection may have one).
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
        Box::pin(self.bounded(timeout, lua, Script::Plain(cmd))).await
    }

    /// Send one plain command (no script, a read: nothing to re-send), bounded by
    /// `timeout`.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd, timeout: Duration) -> Result<T> {
        let (_, mut conn) = self.current();
        bounded_call(
            timeout,
            async move { cmd.query_async::<T>(&mut conn).await },
        )
        .await
    }

    /// [`run`](Conn::run), followed in the same round trip and on the same connection by
    /// `WAIT replicas wait`: the script's reply and how many replicas acknowledged every
    /// write made so far on that connection (this script's included).
    pub(crate) async fn run_replicated<T: FromRedisValue>(
        &self,
        lua: &Lua,
        cmd: &Cmd,
        replicas: u32,
        wait: Duration,
        timeout: Duration,
    ) -> Result<(T, u32)> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = Script::Replicated {
            cmd,
            replicas,
            wait_ms,
        };
        Box::pin(self.bounded(timeout, lua, script)).await
    }

    /// Run `script` on the current connection within `timeout`, and again (on the
    /// connection current then) after a failure that `lua`'s [`Resend`] allows, up to
    /// [`TRIES_AFTER_THE_FIRST`] more times; keep the connection's health: replace it when
    /// it looks half-open, or (sentinels) when it no longer leads to the master.
    async fn bounded<T: FromRedisValue>(
        &self,
        timeout: Duration,
        lua: &Lua,
        script: Script<'_>,
    ) -> Result<T> {
        let resend = lua.resend;
        // The generation the last try went out on, once one went out.
        let mut sent_on = None;
        let outcome = tokio::time::timeout(timeout, async {
            if resend == Resend::Never {
                self.check_if_idle().await;
            }
            let mut route = Route::Slot;
            let mut pause = RETRY_FIRST_PAUSE;
            let mut tries = 0;
            loop {
                #[cfg(feature = "sentinel")]
                self.resolve_if_stale().await;
                let (generation, conn) = self.current();
                sent_on = Some(generation);
                let cluster = conn.is_cluster();
                let e = match script.send(conn, &route, lua).await {
                    Ok(reply) => return Ok(reply),
                    Err(e) => e,
                };
                tries += 1;
                let next = match failure(&e, cluster) {
                    Failure::NotRun(next) => next,
                    Failure::MaybeRun if resend == Resend::Safe => Route::Slot,
                    Failure::MaybeRun => return Err(Failed::Indeterminate(e)),
                    Failure::Final => return Err(Failed::Redis(e)),
                };
                if tries > TRIES_AFTER_THE_FIRST {
                    return Err(Failed::Redis(e));
                }
                // A failure this connection's health should know of (a sentinel-managed
                // one asks the sentinels again before the next try).
                self.failed(generation, &e);
                if next == Route::Slot {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX_PAUSE);
                }
                route = next;
            }
        })
        .await;
        let answered = match outcome {
            Ok(Ok(reply)) => Outcome::Answered(Ok(reply)),
            Ok(Err(Failed::Redis(e))) => Outcome::Answered(Err(e)),
            Ok(Err(Failed::Indeterminate(e))) => {
                if let Some(generation) = sent_on {
                    self.failed(generation, &e);
                }
                return Err(Error::Indeterminate(Box::new(Error::Redis(e))));
            }
            Err(_) => Outcome::TimedOut,
        };
        let Some(generation) = sent_on else {
            return Err(Error::Timeout); // the sentinels took all the time: nothing was sent
        };
        match answered {
            Outcome::TimedOut => {
                self.timed_out(generation);
                Err(Error::Timeout)
            }
            Outcome::Answered(Err(e)) if e.is_timeout() => {
                self.timed_out(generation);
                Err(Error::Timeout)
            }
            Outcome::Answered(Err(e)) => {
                self.failed(generation, &e);
                Err(Error::Redis(e))
            }
            Outcome::Answered(Ok(reply)) => {
                self.health.answered(generation);
                self.answered_now();
                Ok(reply)
            }
        }
    }

    /// A call got an answer now.
    fn answered_now(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.answered_at.fetch_max(ms, Ordering::Relaxed);
    }

    /// `PING` the current connection if no call got an answer for [`CHECK_AFTER_IDLE`]:
    /// a dead connection fails the `PING` and is replaced (redis-rs reconnects after a
    /// connection error; the next request waits for it). Its outcome is not the caller's:
    /// the write that follows reports its own.
    async fn check_if_idle(&self) {
        let last = Duration::from_millis(self.answered_at.load(Ordering::Relaxed));
        if self.born.elapsed().saturating_sub(last) < CHECK_AFTER_IDLE {
            return;
        }
        let (_, mut conn) = self.current();
        if conn.is_cluster() {
            return; // the cluster client checks its connections itself
        }
        if redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .is_ok()
        {
            self.answered_now();
        }
    }

    /// A call on connection `generation` timed out; replace that connection when enough
    /// did in a row (and nobody replaced it meanwhile).
    fn timed_out(&self, generation: u32) {
        if matches!(self.source, Source::User) || !self.health.timed_out(generation) {
            return;
        }
        self.replace(generation);
    }

    /// A call on connection `generation` failed. A sentinel-managed connection that was
    /// refused, dropped or told `READONLY` (its server was demoted) asks the sentinels
    /// again; a plain one reconnects by itself.
    #[cfg_attr(not(feature = "sentinel"), allow(unused_variables))]
    fn failed(&self, generation: u32, e: &RedisError) {
        #[cfg(feature = "sentinel")]
        if matches!(self.source, Source::Sentinel(..))
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
        {
            self.health.stale(generation);
        }
    }

    /// Replace connection `generation` by a fresh one, unless it was replaced meanwhile.
    fn replace(&self, generation: u32) {
        match &self.source {
            Source::User => {}
            #[cfg(feature = "cluster")]
            Source::Cluster => {}
            Source::Url(source) => {
                let (client, config) = &**source;
                let mut conn = self.conn.write();
                if self.health.generation() != generation {
                    return;
                }
                // Lazy: it connects on its first use.
                if let Ok(fresh) =
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                {
                    *conn = Connection::Single(fresh);
                    self.health.replaced(generation);
                }
            }
            // Needs I/O: the next call asks the sentinels first.
            #[cfg(feature = "sentinel")]
            Source::Sentinel(..) => self.health.stale(generation),
        }
    }

    /// Ask the sentinels for the master and connect to it, if the current connection was
    /// found stale; one caller at a time, the others wait for its result.
    #[cfg(feature = "sentinel")]
    async fn resolve_if_stale(&self) {
        let Source::Sentinel(source) = &self.source else {
            return;
        };
        let (sentinels, config) = &**source;
        let generation = self.health.generation();
        if !self.health.is_stale(generation) {
            return;
        }
        let _one_at_a_time = self.resolving.lock().await;
        if self.health.generation() != generation {
            return; // resolved meanwhile
        }
        let client = sentinels.lock().await.async_get_client().await;
        // Lazy: the master is connected to by the call that follows. When no master can
        // be had yet (a failover in progress), the stale connection stays and fails fast.
        if let Ok(fresh) =
            client.and_then(|c| ConnectionManager::new_lazy_with_config(c, config.clone()))
        {
            *self.conn.write() = Connection::Single(fresh);
            self.health.replaced(generation);
        }
    }
}

/// How a call ended, before it is mapped to the crate's errors.
enum Failed {
    Redis(RedisError),
    /// A write that must not run twice may have run: the connection failed after it may
    /// have gone out.
    Indeterminate(RedisError),
}

/// One call of a script: alone, or followed by `WAIT`.
#[derive(Clone, Copy)]
enum Script<'a> {
    Plain(&'a Cmd),
    Replicated {
        cmd: &'a Cmd,
        replicas: u32,
        wait_ms: u64,
    },
}

impl Script<'_> {
    /// One try: the call as `EVALSHA`, and again as `EVAL` on `NOSCRIPT` (which said it
    /// did not run).
    async fn send<T: FromRedisValue>(
        self,
        mut conn: Connection,
        route: &Route,
        lua: &Lua,
    ) -> redis::RedisResult<T> {
        match self {
            Script::Plain(cmd) => match send(&mut conn, route, Request::Cmd(cmd)).await {
                Err(e) if is_noscript(&e) => {
                    send(&mut conn, route, Request::Cmd(&lua.eval(cmd))).await
                }
                other => other,
            },
            Script::Replicated {
                cmd,
                replicas,
                wait_ms,
            } => {
                let pipeline = |script: Cmd| {
                    let mut pipe = redis::pipe();
                    pipe.add_command(script)
                        .cmd("WAIT")
                        .arg(replicas)
                        .arg(wait_ms);
                    pipe
                };
                let sha = pipeline(cmd.clone());
                match send(&mut conn, route, Request::Pipeline(&sha)).await {
                    Err(e) if is_noscript(&e) => {
                        let eval = pipeline(lua.eval(cmd));
                        send(&mut conn, route, Request::Pipeline(&eval)).await
                    }
                    other => other,
                }
            }
        }
    }
}

/// One request: a command, or a pipeline (a script and its `WAIT`).
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipeline(&'a Pipeline),
}

/// Send `request` on `conn` to `route`, and read its reply as `T`.
async fn send<T: FromRedisValue>(
    conn: &mut Connection,
    route: &Route,
    request: Request<'_>,
) -> redis::RedisResult<T> {
    match route {
        Route::Slot => match request {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipeline(pipe) => pipe.query_async(conn).await,
        },
        #[cfg(feature = "cluster")]
        Route::Moved(host, port) | Route::Ask(host, port) => {
            use redis::cluster_routing::SingleNodeRoutingInfo;
            let Connection::Cluster(cluster) = conn else {
                // Only a cluster connection follows redirects (see `failure`).
                unreachable!("a redirect on a connection to one server");
            };
            let asking = matches!(route, Route::Ask(..));
            let mut pipe = redis::pipe();
            if asking {
                pipe.cmd("ASKING");
            }
            let count = match request {
                Request::Cmd(cmd) => {
                    pipe.add_command(cmd.clone());
                    1
                }
                Request::Pipeline(commands) => {
                    for cmd in commands.cmd_iter() {
                        pipe.add_command(cmd.clone());
                    }
                    commands.len()
                }
            };
            let node = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            };
            let replies = cluster
                .route_pipeline(pipe, usize::from(asking), count, node)
                .await?;
            // As redis-rs reads a reply: a server error in it is the call's error.
            let mut replies = replies
                .into_iter()
                .map(Value::extract_error)
                .collect::<redis::RedisResult<Vec<Value>>>()?;
            let reply = match request {
                Request::Cmd(_) if replies.len() == 1 => replies.pop().expect("one reply"),
                _ => Value::Array(replies),
            };
            T::from_redis_value(reply).map_err(RedisError::from)
        }
    }
}

impl Connection {
    fn is_cluster(&self) -> bool {
        match self {
            Connection::Single(_) => false,
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => true,
        }
    }
}

impl Conn {
    /// Every string key matching `pattern` on every node that holds keys (the one server,
    /// or every master of a cluster), walked with `SCAN` — never `KEYS`, which blocks the
    /// server — each round trip bounded by `timeout`. Keys that are not UTF-8 are left
    /// out: no lock of this library has one (its keys are `&str`), and another
    /// application's key must not break a listing.
    pub(crate) async fn scan(&self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        let (_, conn) = self.current();
        match conn {
            Connection::Single(conn) => {
                scan_node(pattern, timeout, |cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .await
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(mut conn) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let nodes = bounded_call(timeout, async {
                    conn.route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                })
                .await?;
                let mut keys = Vec::new();
                for (host, port) in masters(&nodes) {
                    let node = SingleNodeRoutingInfo::ByAddress { host, port };
                    keys.extend(
                        scan_node(pattern, timeout, |cmd| {
                            let mut conn = conn.clone();
                            let route = RoutingInfo::SingleNode(node.clone());
                            async move { conn.route_command(cmd, route).await }
                        })
                        .await?,
                    );
                }
                Ok(keys)
            }
        }
    }
}

/// `SCAN … MATCH pattern TYPE string` to the end on one node, through `send`.
async fn scan_node<F, Fut>(pattern: &str, timeout: Duration, send: F) -> Result<Vec<String>>
where
    F: Fn(Cmd) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<Value>>,
{
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("string");
        let reply = bounded_call(timeout, send(cmd)).await?;
        // Keys as bytes: one foreign key that is not UTF-8 would fail a `Vec<String>`.
        let (next, batch): (u64, Vec<Vec<u8>>) =
            FromRedisValue::from_redis_value(reply).map_err(RedisError::from)?;
        let before = keys.len();
        let scanned = batch.len();
        keys.extend(
            batch
                .into_iter()
                .filter_map(|key| String::from_utf8(key).ok()),
        );
        let skipped = scanned - (keys.len() - before);
        if skipped > 0 {
            tracing::debug!(skipped, "SCAN: keys that are not UTF-8 left out");
        }
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// One call bounded by `timeout`.
async fn bounded_call<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Error::Timeout),
        Ok(Err(e)) if e.is_timeout() => Err(Error::Timeout),
        Ok(reply) => Ok(reply?),
    }
}

/// The masters' addresses in a `CLUSTER NODES` reply (failed ones left out).
#[cfg(feature = "cluster")]
fn masters(nodes: &Value) -> Vec<(String, u16)> {
    let text = match nodes {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        _ => return Vec::new(),
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// The health of the current connection, in one word so that every update is checked
/// against the connection it is about: its generation (high 32 bits, bumped when it is
/// replaced), whether it is known stale (bit 30: replace before use), whether it ever
/// answered (bit 31), and its timeouts in a row (low bits).
struct Health(AtomicU64);

const ANSWERED: u64 = 1 << 31;
const STALE: u64 = 1 << 30;
const TIMEOUTS: u64 = STALE - 1;

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

    /// `generation` must be replaced before its next use.
    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    fn stale(&self, generation: u32) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state >> 32 == u64::from(generation)).then_some(state | STALE)
            });
    }

    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    fn is_stale(&self, generation: u32) -> bool {
        let state = self.0.load(Ordering::Acquire);
        state >> 32 == u64::from(generation) && state & STALE != 0
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

    /// An error as redis-rs reads it off the wire.
    fn reply(text: &str) -> RedisError {
        redis::parse_redis_value(text.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::new(kind, "io").into()
    }

    #[test]
    fn only_a_failure_that_says_the_call_did_not_run_lets_any_call_go_out_again() {
        use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, TimedOut};
        // Replies refusing to run it.
        for text in [
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
        ] {
            for cluster in [false, true] {
                assert_eq!(
                    failure(&reply(text), cluster),
                    Failure::NotRun(Route::Slot),
                    "{text}"
                );
            }
        }
        // No connection to send it on.
        assert_eq!(
            failure(&io(ConnectionRefused), false),
            Failure::NotRun(Route::Slot)
        );
        let no_node: RedisError = (redis::ErrorKind::ClusterConnectionNotFound, "x").into();
        assert_eq!(failure(&no_node, true), Failure::NotRun(Route::Slot));
        // A connection lost once it may have gone out.
        for kind in [ConnectionReset, BrokenPipe] {
            assert_eq!(failure(&io(kind), true), Failure::MaybeRun, "{kind:?}");
            assert_eq!(failure(&io(kind), false), Failure::MaybeRun, "{kind:?}");
        }
        // Neither: a timeout (the caller's bound), a script or permission error.
        assert_eq!(failure(&io(TimedOut), true), Failure::Final);
        assert_eq!(
            failure(&reply("-ERR user_script:1: boom\r\n"), true),
            Failure::Final
        );
        assert_eq!(
            failure(&reply("-NOPERM no permissions\r\n"), true),
            Failure::Final
        );
        let auth: RedisError = (redis::ErrorKind::AuthenticationFailed, "no").into();
        assert_eq!(failure(&auth, false), Failure::Final);
    }

    #[test]
    fn a_cluster_connection_follows_redirects_to_the_node_named() {
        let moved = reply("-MOVED 3999 127.0.0.1:6381\r\n");
        let ask = reply("-ASK 3999 10.0.0.2:7000\r\n");
        #[cfg(feature = "cluster")]
        {
            assert_eq!(
                failure(&moved, true),
                Failure::NotRun(Route::Moved("127.0.0.1".into(), 6381))
            );
            assert_eq!(
                failure(&ask, true),
                Failure::NotRun(Route::Ask("10.0.0.2".into(), 7000))
            );
        }
        // A connection to one server cannot follow them.
        assert_eq!(failure(&moved, false), Failure::Final);
        assert_eq!(failure(&ask, false), Failure::Final);
    }

    #[test]
    fn staleness_belongs_to_one_generation() {
        let h = Health::new();
        assert!(!h.is_stale(0));
        h.stale(0);
        assert!(h.is_stale(0));
        h.stale(7); // another generation: ignored
        h.replaced(0);
        assert!(!h.is_stale(1));
        h.answered(1);
        h.stale(1);
        assert!(h.is_stale(1));
        assert_eq!(h.generation(), 1);
    }
}
