#![allow(dead_code)]
//! Test support for `leasehold`: a throw-away `redis-server` child process
//! ([`RedisServer`]) and an in-process fault-injecting TCP proxy
//! ([`FaultProxy`]).
//!
//! Shared by integration tests (`mod support;`) and criterion benches
//! (`#[path = "../tests/support/mod.rs"] mod support;`), hence the
//! `dead_code` allowance above. Only std, tokio and redis are used.
//!
//! Every wait in here is bounded; nothing uses the caller's tokio runtime or
//! tokio time of the caller (the proxy runs on its own OS thread and runtime),
//! so the helpers work from sync tests, `#[tokio::test]` (even with paused
//! time) and benches alike. The `RedisServer` methods block the calling
//! thread briefly (process spawn, sync connections).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Path of the server binary; override with `LEASEHOLD_REDIS_SERVER`.
const DEFAULT_REDIS_SERVER: &str = "redis-server";
/// How long to wait for a (re)started server to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for the sync connections used by `cmd_sync`.
const CMD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout for `cmd_sync` (generous: CLIENT PAUSE may block it).
const CMD_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on how long Drop / stop wait for a killed child to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A currently free TCP port on 127.0.0.1 (bind to port 0, read it, release).
pub fn free_port() -> u16 {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `f` every 10 ms until it returns true (-> `true`) or `timeout`
/// elapses (-> `false`). `f` is always evaluated at least once, and once more
/// at the deadline.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(deadline - now));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not poison the helper for Drop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP line (up to CRLF) from a blocking stream with a read timeout.
fn read_line(stream: &mut StdTcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
        if line.len() > 4096 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

// ---------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `--appendonly yes --appendfsync always` instead of `--appendonly no`,
    /// so acknowledged writes survive [`RedisServer::restart`].
    pub appendonly_always: bool,
    /// Appended verbatim after all other arguments (later args win in redis).
    pub extra_args: Vec<String>,
    /// `--requirepass`; [`RedisServer::url`] then carries the password.
    pub password: Option<String>,
}

/// A `redis-server` child process on 127.0.0.1 without persistence (unless
/// `appendonly_always`), with its own temp `--dir`. Killed (SIGKILL) and
/// reaped on Drop; the directory is removed.
pub struct RedisServer {
    port: u16,
    opts: ServerOptions,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server with default options on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with `opts` on a free port. Panics (with the server
    /// log tail) if it does not answer PING within ~10 s.
    pub fn start_with(opts: ServerOptions) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("leasehold-redis-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating redis temp dir {}: {e}", dir.display()));
        let mut server = RedisServer {
            port: 0,
            opts,
            dir,
            child: Mutex::new(None),
        };
        // A freshly picked port can be grabbed by someone else before the
        // server binds it: on early exit, retry with another port.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_err = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn_and_wait(deadline) {
                Ok(child) => {
                    *lock(&server.child) = Some(child);
                    return server;
                }
                Err(e) => last_err = e,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        panic!("RedisServer::start failed: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`, or `redis://:PASSWORD@127.0.0.1:PORT/` when
    /// a password is configured.
    pub fn url(&self) -> String {
        match &self.opts.password {
            Some(pw) => format!("redis://:{}@127.0.0.1:{}/", percent_encode(pw), self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// Options the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }

    /// Data directory (`--dir`); removed on Drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True while the child process is alive.
    pub fn is_running(&self) -> bool {
        let mut guard = lock(&self.child);
        match guard.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => {
                    *guard = None;
                    false
                }
            },
            None => false,
        }
    }

    /// SIGKILLs the server and starts it again on the same port with the same
    /// options and directory (AOF, if enabled, is reloaded).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// SIGKILLs the server and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(child) = lock(&self.child).take() {
            kill_and_reap(child);
        }
    }

    /// After [`stop`](Self::stop): starts the server again on the same port.
    /// Retries for up to ~10 s while the port is not yet bindable.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "RedisServer::start_again: server on port {} is still running (call stop() first)",
            self.port
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_err = String::new();
        while Instant::now() < deadline {
            match self.spawn_and_wait(deadline) {
                Ok(child) => {
                    *lock(&self.child) = Some(child);
                    return;
                }
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "RedisServer: could not restart on port {}: {last_err}",
            self.port
        );
    }

    /// Runs one command on a fresh sync connection. Panics on connection or
    /// server errors (message included).
    pub fn cmd_sync(&self, args: &[&str]) -> redis::Value {
        self.try_cmd_sync(args)
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {} failed: {e}", self.port))
    }

    /// Runs one command on a fresh sync connection (connect timeout 5 s,
    /// I/O timeout 30 s). Server error replies come back as `Err`.
    pub fn try_cmd_sync(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let (name, rest) = args.split_first().expect("try_cmd_sync: empty command");
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(CMD_CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(CMD_IO_TIMEOUT))?;
        con.set_write_timeout(Some(CMD_IO_TIMEOUT))?;
        let mut cmd = redis::cmd(name);
        for a in rest {
            cmd.arg(*a);
        }
        cmd.query::<redis::Value>(&mut con)
    }

    /// `GET key` as a string (`None` when the key does not exist); panics on any other
    /// reply.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.cmd_sync(&["GET", key]) {
            redis::Value::Nil => None,
            redis::Value::BulkString(b) => Some(String::from_utf8(b).expect("UTF-8 value")),
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    /// `CLIENT PAUSE <ms> ALL`: every client command blocks for `d`.
    pub fn client_pause(&self, d: Duration) {
        let ms = d.as_millis().max(1).to_string();
        self.cmd_sync(&["CLIENT", "PAUSE", &ms, "ALL"]);
    }

    /// `CLIENT KILL TYPE normal SKIPME yes`: drops every normal client
    /// connection except the one issuing the command. Pub/sub and replica
    /// connections are untouched.
    pub fn client_kill_all_normal(&self) {
        match self.try_cmd_sync(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]) {
            Ok(_) => {}
            // Should not happen with SKIPME yes, but losing our own connection
            // after the kill is harmless.
            Err(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {}
            Err(e) => panic!("CLIENT KILL on port {} failed: {e}", self.port),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            self.dir.to_string_lossy().into_owned(),
            "--logfile".into(),
            self.log_path().to_string_lossy().into_owned(),
        ];
        if self.opts.appendonly_always {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        if let Some(pw) = &self.opts.password {
            args.extend(["--requirepass".to_string(), pw.clone()]);
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Spawns the child and waits until it answers PING. On failure the
    /// child is killed and an error description is returned.
    fn spawn_and_wait(&self, deadline: Instant) -> Result<Child, String> {
        let bin = std::env::var("LEASEHOLD_REDIS_SERVER")
            .unwrap_or_else(|_| DEFAULT_REDIS_SERVER.to_string());
        let mut child = Command::new(&bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot spawn `{bin}` ({e}); install it with `apt-get install -y redis-server`"
                )
            });
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Err(format!(
                        "redis-server on port {} exited early ({status}); log tail:\n{}",
                        self.port,
                        self.log_tail()
                    ));
                }
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(child);
                    return Err(format!("try_wait: {e}"));
                }
            }
            if ping_ready(self.port, self.opts.password.as_deref()) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Err(format!(
                    "redis-server on port {} did not answer PING within {STARTUP_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = lock(&self.child).take() {
            kill_and_reap(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL + bounded reap (a child that refuses to die is left behind rather
/// than hanging the test).
fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let deadline = Instant::now() + REAP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// True if a plain TCP PING on `port` answers `+PONG` (after AUTH when a
/// password is given). `-NOAUTH`/`-WRONGPASS`/`-NOPERM` also count as "up"
/// (auth set up through `extra_args` is the caller's business); `-LOADING`
/// does not.
fn ping_ready(port: u16, password: Option<&str>) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = StdTcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let mut req = Vec::new();
    if let Some(pw) = password {
        req.extend(resp_command(&["AUTH", pw]));
    }
    req.extend(resp_command(&["PING"]));
    if s.write_all(&req).is_err() {
        return false;
    }
    if password.is_some() && read_line(&mut s).is_err() {
        return false;
    }
    match read_line(&mut s) {
        Ok(line) => {
            line.starts_with("+PONG")
                || line.starts_with("-NOAUTH")
                || line.starts_with("-WRONGPASS")
                || line.starts_with("-NOPERM")
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// FaultProxy
// ---------------------------------------------------------------------------

/// State shared between the [`FaultProxy`] handle and its proxy thread.
struct ProxyShared {
    upstream: SocketAddr,
    delay_nanos: AtomicU64,
    blackhole: AtomicBool,
    /// Connections with an id below this are stalled for good (half-open).
    stall_below: AtomicU64,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Bumped by `reset_all`; every connection holds a receiver.
    reset_tx: watch::Sender<u64>,
    /// Live connections per reset generation they were accepted in.
    live_by_generation: Mutex<BTreeMap<u64, usize>>,
    shutdown: Notify,
}

impl ProxyShared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn blackholed(&self) -> bool {
        self.blackhole.load(Ordering::SeqCst)
    }

    fn stalled(&self, id: u64) -> bool {
        self.blackholed() || id < self.stall_below.load(Ordering::SeqCst)
    }
}

/// An in-process TCP proxy on 127.0.0.1 for fault injection (delay,
/// blackhole, connection resets). Runs on its own OS thread with its own
/// current-thread tokio runtime, so it works from sync code, any caller
/// runtime, and with paused tokio time in the caller. Drop stops it (all
/// proxied connections are closed) within a bounded time.
pub struct FaultProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    thread: Option<JoinHandle<()>>,
    done_rx: mpsc::Receiver<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every accepted connection
    /// to `127.0.0.1:upstream_port`. If the upstream connect fails, the
    /// accepted client connection is closed.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener =
            StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("FaultProxy: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("FaultProxy: set_nonblocking");
        let port = listener
            .local_addr()
            .expect("FaultProxy: local_addr")
            .port();
        let (reset_tx, _) = watch::channel(0u64);
        let shared = Arc::new(ProxyShared {
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
            delay_nanos: AtomicU64::new(0),
            blackhole: AtomicBool::new(false),
            stall_below: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            reset_tx,
            live_by_generation: Mutex::new(BTreeMap::new()),
            shutdown: Notify::new(),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("FaultProxy: build runtime");
                rt.block_on(accept_loop(listener, thread_shared));
                // Drops every connection task (and thereby its sockets).
                rt.shutdown_timeout(Duration::from_secs(1));
                let _ = done_tx.send(());
            })
            .expect("FaultProxy: spawn thread");
        FaultProxy {
            port,
            shared,
            thread: Some(thread),
            done_rx,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PROXYPORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every chunk read from now on is forwarded `d` after it was read (both
    /// directions, order preserved). `Duration::ZERO` disables the delay.
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// While on, nothing is delivered in either direction: bytes are held, as a
    /// network partition stalls a TCP stream; connections stay open and new ones
    /// are accepted (and stalled too). Off delivers the held bytes, in order, and
    /// resumes forwarding. (Dropping bytes from the middle of a stream is
    /// something TCP never does, and would desynchronise any pipelined client.)
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Stalls every connection open now, for good, while new connections work: the
    /// peer of a half-open connection vanished without a reset (a crashed host, a NAT or
    /// firewall that forgot the flow, a failover to another address).
    pub fn stall_existing(&self) {
        let next = self.shared.next_id.load(Ordering::SeqCst);
        self.shared.stall_below.store(next, Ordering::SeqCst);
    }

    /// Ends a [`stall_existing`](Self::stall_existing): the stalled connections deliver
    /// what they held, in order, and work again — a partition that heals after the
    /// client gave up on the connection.
    pub fn heal_existing(&self) {
        self.shared.stall_below.store(0, Ordering::SeqCst);
    }

    /// Abruptly closes (RST, SO_LINGER 0) both sides of every current
    /// connection. Blocks (bounded, 2 s) until they are closed; connections
    /// accepted afterwards work normally.
    pub fn reset_all(&self) {
        let generation = {
            // Under the lock so that no connection can register with the old
            // generation after we bumped it.
            let _live = lock(&self.shared.live_by_generation);
            let mut next = 0;
            self.shared.reset_tx.send_modify(|g| {
                *g += 1;
                next = *g;
            });
            next
        };
        let closed = wait_until(Duration::from_secs(2), || {
            lock(&self.shared.live_by_generation)
                .range(..generation)
                .all(|(_, n)| *n == 0)
        });
        assert!(
            closed,
            "FaultProxy::reset_all: connections did not close within 2 s"
        );
    }

    /// Number of currently open proxied connections (client accepted and
    /// upstream connected).
    pub fn connection_count(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.notify_one();
        // Bounded: if the thread does not finish in time it is detached.
        let finished = self.done_rx.recv_timeout(Duration::from_secs(3)).is_ok();
        if let Some(t) = self.thread.take().filter(|_| finished) {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: StdTcpListener, shared: Arc<ProxyShared>) {
    let listener = TcpListener::from_std(listener).expect("FaultProxy: TcpListener::from_std");
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    let (reset_rx, generation) = {
                        let mut live = lock(&shared.live_by_generation);
                        let rx = shared.reset_tx.subscribe();
                        let generation = *rx.borrow();
                        *live.entry(generation).or_insert(0) += 1;
                        (rx, generation)
                    };
                    let guard = LiveGuard { shared: shared.clone(), generation, counted: false };
                    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle_connection(client, id, shared.clone(), reset_rx, guard));
                }
                // e.g. EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Keeps the proxy's connection bookkeeping right however the task ends
/// (including being dropped at runtime shutdown).
struct LiveGuard {
    shared: Arc<ProxyShared>,
    generation: u64,
    counted: bool,
}

impl LiveGuard {
    fn count_open(&mut self) {
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        self.counted = true;
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.counted {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
        }
        let mut live = lock(&self.shared.live_by_generation);
        if let Some(n) = live.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.generation);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Reader saw EOF and everything queued was written; write side shut down.
    Eof,
    /// I/O error in either half.
    Error,
    /// `reset_all` was called; SO_LINGER 0 has been set on both sockets.
    Reset,
}

async fn handle_connection(
    client: TcpStream,
    id: u64,
    shared: Arc<ProxyShared>,
    mut reset_rx: watch::Receiver<u64>,
    mut guard: LiveGuard,
) {
    let upstream = tokio::select! {
        biased;
        _ = reset_changed(&mut reset_rx) => return,
        r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.upstream)) => match r {
            Ok(Ok(s)) => s,
            _ => return, // dropping `client` closes it
        },
    };
    let _ = upstream.set_nodelay(true);
    guard.count_open();

    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let mut tasks = JoinSet::new();
    tasks.spawn(direction(
        client_r,
        up_w,
        id,
        shared.clone(),
        reset_rx.clone(),
    ));
    tasks.spawn(direction(up_r, client_w, id, shared.clone(), reset_rx));
    while let Some(res) = tasks.join_next().await {
        if !matches!(res, Ok(Outcome::Eof)) {
            // Reset, error or panic: tear the whole connection down. Aborted
            // tasks are still drained so their sockets are gone before the
            // guard reports the connection as closed.
            tasks.abort_all();
        }
    }
    drop(guard);
}

async fn reset_changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One direction of a proxied connection: `r` -> (delay/blackhole) -> `w`.
async fn direction(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    id: u64,
    shared: Arc<ProxyShared>,
    mut reset_rx: watch::Receiver<u64>,
) -> Outcome {
    let result = {
        let fut = pump(&mut r, &mut w, id, &shared);
        tokio::pin!(fut);
        tokio::select! {
            biased;
            _ = reset_changed(&mut reset_rx) => None,
            res = &mut fut => Some(res),
        }
    };
    match result {
        Some(Ok(())) => Outcome::Eof,
        Some(Err(())) => Outcome::Error,
        None => {
            // Both halves of each socket are dropped soon after (this task
            // returns, the sibling is reset/aborted): with linger 0 the
            // close sends RST instead of FIN.
            #[allow(deprecated)]
            {
                let _ = r.as_ref().set_linger(Some(Duration::ZERO));
                let _ = w.as_ref().set_linger(Some(Duration::ZERO));
            }
            Outcome::Reset
        }
    }
}

async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    id: u64,
    shared: &ProxyShared,
) -> Result<(), ()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut buf).await.map_err(|_| ())?;
            if n == 0 {
                return Ok::<(), ()>(()); // dropping `tx` lets the writer finish
            }
            let due = Instant::now() + shared.delay();
            tx.send((due, buf[..n].to_vec())).map_err(|_| ())?;
        }
    };
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            }
            // A partition stalls the stream (as TCP does), it never drops bytes
            // out of its middle: hold the data until the link is back.
            while shared.stalled(id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            w.write_all(&data).await.map_err(|_| ())?;
        }
        // Propagate the half-close.
        let _ = w.shutdown().await;
        Ok::<(), ()>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
