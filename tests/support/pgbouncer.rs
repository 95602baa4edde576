//! A throw-away PgBouncer in front of a [`PostgresServer`](super::PostgresServer): pool
//! mode `transaction` (a server connection is lent to a client for one transaction, then
//! to the next: nothing a session set survives), a server pool of `pool_size`
//! connections, trust authentication as `postgres`, on a free loopback port. Runs as
//! `nobody` when root (PgBouncer refuses root), and dies with the test binary.
//!
//! Binary: `LEASEHOLD_PGBOUNCER`, else `pgbouncer` on `PATH`, else `/usr/sbin/pgbouncer`
//! (Debian package `pgbouncer`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::postgres::unprivileged;
use super::process::{kill_and_reap, spawn};
use super::{free_port, lock, wait_until};

pub struct PgBouncer {
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
}

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LEASEHOLD_PGBOUNCER").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("pgbouncer").is_file() {
                return dir.join("pgbouncer");
            }
        }
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    assert!(
        debian.is_file(),
        "no pgbouncer found; install it with `apt-get install -y pgbouncer` (scripts/test.sh \
         does) or set LEASEHOLD_PGBOUNCER"
    );
    debian
}

impl PgBouncer {
    /// In front of the server on `server_port`, with `pool_size` server connections.
    pub fn start(server_port: u16, pool_size: u32) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-pgbouncer-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("write users");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 postgres = host=127.0.0.1 port={server_port} dbname=postgres user=postgres\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 200\n\
                 server_reset_query =\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n\
                 pidfile =\n",
                users = users.display(),
                log = dir.path().join("pgbouncer.log").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let user = unprivileged();
        if let Some((uid, gid)) = user {
            for path in [dir.path(), &ini, &users] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut cmd = Command::new(binary());
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        let child = spawn(cmd).expect("spawn pgbouncer");
        let bouncer = PgBouncer {
            dir,
            port,
            child: Mutex::new(Some(child)),
        };
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "pgbouncer did not start: {}", bouncer.log());
        bouncer
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(child) = lock(&self.child).take() {
            kill_and_reap(child);
        }
    }
}
