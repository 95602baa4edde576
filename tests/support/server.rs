//! [`RedisServer`]: one throw-away `redis-server` child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::process::{self, kill_and_reap};
use super::{free_port, lock, percent_encode, ping_ready, redis_cmd, temp_dir};

/// Path of the server binary; override with `LEASEHOLD_REDIS_SERVER`.
pub(super) const DEFAULT_REDIS_SERVER: &str = "redis-server";
/// How long to wait for a (re)started server to answer PING.
pub(super) const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

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
/// reaped on Drop; the directory is removed. The child also dies with the
/// test binary (see `process.rs`).
pub struct RedisServer {
    port: u16,
    opts: ServerOptions,
    child: Mutex<Option<Child>>,
    // Declared last: removed after the child is gone.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with default options on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with `opts` on a free port. Panics (with the server
    /// log tail) if it does not answer PING within ~10 s.
    pub fn start_with(opts: ServerOptions) -> RedisServer {
        let dir = temp_dir("redis");
        let mut server = RedisServer {
            port: 0,
            opts,
            child: Mutex::new(None),
            dir,
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
        self.dir.path()
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
        redis_cmd(&self.url(), args)
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

    /// `KEYS pattern`: every key matching `pattern` (test servers are tiny), in the
    /// server's order; panics on any other reply.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.cmd_sync(&["KEYS", pattern]) {
            redis::Value::Array(keys) => keys
                .into_iter()
                .map(|k| match k {
                    redis::Value::BulkString(b) => String::from_utf8(b).expect("UTF-8 key"),
                    other => panic!("KEYS {pattern}: unexpected key {other:?}"),
                })
                .collect(),
            other => panic!("KEYS {pattern}: unexpected reply {other:?}"),
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
            self.dir.path().to_string_lossy().into_owned(),
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

    /// The server's log file (inside [`dir`](Self::dir)).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last 15 lines of the server log.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_path(), 15)
    }

    /// Spawns the child and waits until it answers PING. On failure the
    /// child is killed and an error description is returned.
    fn spawn_and_wait(&self, deadline: Instant) -> Result<Child, String> {
        let bin = process::binary("LEASEHOLD_REDIS_SERVER", DEFAULT_REDIS_SERVER);
        let mut cmd = Command::new(&bin);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = process::spawn(cmd).unwrap_or_else(|e| {
            panic!(
                "{}",
                process::missing_binary(&bin, "LEASEHOLD_REDIS_SERVER", "redis-server", &e)
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
        // `dir` (a TempDir) is removed when the fields drop, after this.
    }
}
