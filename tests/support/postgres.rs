//! A throw-away PostgreSQL server: `initdb` into a temp dir, then `postgres` on a free
//! loopback port (no Unix socket), trust authentication, user `postgres`, database
//! `postgres`. `initdb` and `postgres` refuse to run as root: as root (CI) both run as
//! `nobody`, which owns the data directory; the uid changes before the parent-death
//! signal is set (a credential change would clear it), so the server dies with the test
//! binary either way (see `process.rs`).
//!
//! Binaries: `LEASEHOLD_POSTGRES_BIN` (a directory holding `initdb` and `postgres`), else
//! `initdb` on `PATH`, else the newest `/usr/lib/postgresql/*/bin` (Debian package
//! `postgresql`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::process::{self, kill_and_reap, spawn, terminate_and_reap};
use super::{free_port, lock, wait_until};

/// How long a start (initdb excluded) may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct PostgresServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// `Some((uid, gid))` of `nobody` when running as root.
    user: Option<(u32, u32)>,
    /// TLS only (`hostssl`), with a certificate for 127.0.0.1 signed by `tls/ca.crt`.
    tls: bool,
    child: Mutex<Option<Child>>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .finish()
    }
}

/// The directory of `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LEASEHOLD_POSTGRES_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return dir;
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL found (initdb); install it with `apt-get install -y postgresql` \
             or point LEASEHOLD_POSTGRES_BIN at the directory of initdb and postgres"
        )
    })
}

/// `nobody`'s uid and gid, when this process runs as root.
pub(super) fn unprivileged() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // Root owns `/proc/self` when we run as root.
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a `nobody` user to run PostgreSQL as");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

impl PostgresServer {
    /// initdb + start, waiting (bounded) until it accepts connections.
    pub fn start() -> PostgresServer {
        Self::start_with(false)
    }

    /// [`start`](Self::start), accepting TLS connections only (`hostssl` in
    /// `pg_hba.conf`): its certificate names 127.0.0.1 and is signed by a CA made for it,
    /// [`ca_pem`](Self::ca_pem) (made with `openssl`, see `make_certs`).
    pub fn start_tls() -> PostgresServer {
        Self::start_with(true)
    }

    /// The CA that signed a [`start_tls`](Self::start_tls) server's certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("tls/ca.crt")).expect("a TLS server's CA")
    }

    fn start_with(tls: bool) -> PostgresServer {
        let bin = bin_dir();
        let user = unprivileged();
        let dir = tempfile::Builder::new()
            .prefix("leasehold-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--no-locale"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user);
        let out = spawn(initdb)
            .expect("spawn initdb")
            .wait_with_output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir(&certs).expect("tls dir");
            super::make_certs(&certs);
            use std::os::unix::fs::PermissionsExt;
            // The server refuses a key others may read.
            std::fs::set_permissions(
                certs.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
            if let Some((uid, gid)) = user {
                for file in ["", "server.crt", "server.key", "ca.crt"] {
                    std::os::unix::fs::chown(certs.join(file), Some(uid), Some(gid))
                        .expect("chown tls files");
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("write pg_hba.conf");
        }
        let server = PostgresServer {
            dir,
            port: free_port(),
            bin,
            user,
            tls,
            child: Mutex::new(None),
        };
        server.launch();
        server
    }

    /// The test binary's one server, started on first use; dies with the binary, and
    /// is stopped (its directory removed) when the binary exits normally.
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = PostgresServer::start();
            process::at_exit(|| {
                if let Some(server) = SHARED.get() {
                    server.kill();
                    let _ = std::fs::remove_dir_all(server.dir.path());
                }
            });
            server
        })
    }

    fn launch(&self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=400"])
            .args(["-c", "fsync=off"])
            .args(["-c", "shared_buffers=32MB"]);
        if self.tls {
            let certs = self.dir.path().join("tls");
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    certs.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    certs.join("server.key").display()
                ));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            std::fs::File::create(self.log())
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
        as_user(&mut cmd, self.user);
        let child = spawn(cmd).expect("spawn postgres");
        *lock(&self.child) = Some(child);
        let port = self.port;
        let up = wait_until(START_TIMEOUT, || {
            let exited = lock(&self.child)
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            exited
                || (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && self.try_sql("SELECT 1").is_ok())
        });
        let exited = lock(&self.child)
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
        assert!(!exited, "postgres exited at start: {}", self.log_tail());
        assert!(up, "postgres did not start: {}", self.log_tail());
    }

    fn log(&self) -> PathBuf {
        std::env::temp_dir().join(format!("leasehold-pg-{}.log", self.port))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// SIGKILL (the data stays, for [`restart`](Self::restart)).
    pub fn kill(&self) {
        if let Some(child) = lock(&self.child).take() {
            kill_and_reap(child);
        }
    }

    /// Stop with an immediate shutdown (SIGQUIT: the postmaster kills its backends at
    /// once and exits without a checkpoint, as in a crash; the next start recovers from
    /// the WAL) and start again on the same port with the same data.
    pub fn restart(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            if process::reap(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(child);
            }
        }
        self.launch();
    }

    /// SIGTERM (a smart shutdown), then SIGKILL if it lingers.
    pub fn stop_gracefully(&self) {
        if let Some(child) = lock(&self.child).take() {
            terminate_and_reap(child, Duration::from_secs(10));
        }
    }

    /// Run `sql` (one or more statements) as `postgres` with `psql` (next to `initdb`,
    /// or on `PATH`); the last statement's rows, each column as text (`None`: NULL).
    /// Blocks the thread (bounded: 30 s), so it works from sync and async tests alike.
    pub fn try_sql(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        const NULL: &str = "\u{1}NULL\u{1}";
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let mut cmd = Command::new(psql);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-F", "\u{1f}", "-P", &format!("null={NULL}")])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("psql: {e}"))?;
        if process::reap(&mut child, Duration::from_secs(30)).is_none() {
            kill_and_reap(child);
            return Err("psql did not finish within 30 s".into());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                line.split('\u{1f}')
                    .map(|c| (c != NULL).then(|| c.to_owned()))
                    .collect()
            })
            .collect())
    }

    /// [`try_sql`](Self::try_sql), panicking on an error.
    pub fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log_tail()))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.log());
    }
}

/// Run `cmd` as `user` (uid, gid) when given: set by std in the child before the
/// parent-death signal is (so that the uid change does not clear it).
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp");
    }
}
