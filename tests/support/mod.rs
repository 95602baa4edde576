#![allow(dead_code)]
//! Test support for `leasehold`: real servers as child processes, never mocks.
//!
//! | harness | file | what it is |
//! | --- | --- | --- |
//! | [`RedisServer`], [`ServerOptions`] | `server.rs` | one throw-away `redis-server` |
//! | [`FaultProxy`] | `proxy.rs` | an in-process fault-injecting TCP proxy |
//! | [`RedisCluster`] | `cluster.rs` | a Redis Cluster (masters, replicas, failover, slot migration) |
//! | [`RedisSentinel`] | `sentinel.rs` | a master, a replica and three sentinels |
//! | [`EtcdServer`], [`EtcdCluster`] | `etcd.rs` | a single etcd member, or three |
//! | [`PostgresServer`] | `postgres.rs` | one throw-away PostgreSQL (`initdb` + `postgres`) |
//! | [`PgBouncer`] | `pgbouncer.rs` | PgBouncer in transaction mode in front of it |
//!
//! `process.rs` spawns every child so that it dies with the test binary (see
//! [`process`]); this file keeps the small helpers.
//!
//! Shared by integration tests (`mod support;`), criterion benches and the report
//! example (`#[path = "../tests/support/mod.rs"] mod support;`; the sub-modules
//! below resolve next to this file either way, since a `mod.rs` loaded through
//! `#[path]` is still a `mod.rs`), hence the `dead_code` allowance above. Only std,
//! tokio, redis and tempfile are used.
//!
//! Every wait in here is bounded; nothing uses the caller's tokio runtime or
//! tokio time of the caller (the proxy runs on its own OS thread and runtime),
//! so the helpers work from sync tests, `#[tokio::test]` (even with paused
//! time) and benches alike. The server methods block the calling thread
//! (process spawn, sync connections).
//!
//! Binaries come from `PATH`, or from `LEASEHOLD_REDIS_SERVER`,
//! `LEASEHOLD_REDIS_CLI` and `LEASEHOLD_ETCD` (Debian packages `redis-server`,
//! `redis-tools`, `etcd-server`).

mod cluster;
mod etcd;
mod pgbouncer;
mod postgres;
mod process;
mod proxy;
mod sentinel;
mod server;

// Not every test binary uses every harness.
#[allow(unused_imports)]
pub use cluster::{ClusterNode, RedisCluster, Role, SlotMigration};
#[allow(unused_imports)]
pub use etcd::{EtcdCluster, EtcdServer, TlsFiles};
#[allow(unused_imports)]
pub use pgbouncer::PgBouncer;
#[allow(unused_imports)]
pub use postgres::PostgresServer;
#[allow(unused_imports)]
pub use proxy::{FaultProxy, containing};
#[allow(unused_imports)]
pub use sentinel::RedisSentinel;
#[allow(unused_imports)]
pub use server::{RedisServer, ServerOptions};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 (`server.crt`, `server.key`)
/// in `dir`, made with the `openssl` CLI.
#[allow(dead_code)] // only the TLS tests use it
pub fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=leasehold test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

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

/// Like [`wait_until`], but polls a value: returns the first `Some` that `f`
/// yields, or `None` once `timeout` has elapsed.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut out = None;
    wait_until(timeout, || {
        out = f();
        out.is_some()
    });
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not poison the helper for Drop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh temp directory `<tmp>/leasehold-<what>-XXXXXX`, removed when the
/// returned handle drops.
fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("leasehold-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp dir for {what}: {e}"))
}

/// Like [`temp_dir`], but in memory (`/dev/shm`) where there is one, for
/// servers that fsync every write (etcd, cluster and sentinel configs): an
/// fsync on a disk shared with parallel builds can take seconds, on tmpfs it
/// is free. Named `leasehold-<what>-<pid>-XXXXXX`: memory left behind by a
/// test binary that was SIGKILLed (Drop and `atexit` never ran) is swept by
/// the next one, once its process is gone.
fn memory_temp_dir(what: &str) -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return temp_dir(what);
    }
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| sweep_dead_memory_dirs(shm));
    tempfile::Builder::new()
        .prefix(&format!("leasehold-{what}-{}-", std::process::id()))
        .tempdir_in(shm)
        .unwrap_or_else(|_| temp_dir(what))
}

/// Removes `<shm>/leasehold-<what>-<pid>-*` directories whose process no
/// longer exists (checked through `/proc`; nothing is removed without it).
fn sweep_dead_memory_dirs(shm: &std::path::Path) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(shm) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("leasehold-") else {
            continue;
        };
        // `<what>-<pid>-<random>`: the pid is the second-to-last field.
        let fields: Vec<&str> = rest.split('-').collect();
        let Some(pid) = fields
            .len()
            .checked_sub(2)
            .and_then(|i| fields[i].parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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

/// Connect timeout for the sync connections used by the `cmd` helpers.
const CMD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout for the `cmd` helpers (generous: CLIENT PAUSE may block them).
const CMD_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one command on a fresh sync connection to `url` (connect timeout 5 s,
/// I/O timeout 30 s). Server error replies come back as `Err`.
fn redis_cmd(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let (name, rest) = args
        .split_first()
        .expect("redis command: empty argument list");
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(CMD_CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(CMD_IO_TIMEOUT))?;
    con.set_write_timeout(Some(CMD_IO_TIMEOUT))?;
    let mut cmd = redis::cmd(name);
    for a in rest {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut con)
}

/// A redis reply as text: bulk and simple strings (and verbatim strings) as
/// they are, integers in decimal, `nil` as the empty string. Panics on other
/// shapes, naming `what`.
fn value_text(v: &redis::Value, what: &str) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Okay => "OK".to_string(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Nil => String::new(),
        other => panic!("{what}: expected a string reply, got {other:?}"),
    }
}

/// `field` from an `INFO`/`CLUSTER INFO` style text (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}
