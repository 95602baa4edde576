//! [`EtcdServer`] (one member) and [`EtcdCluster`] (several): throw-away
//! `etcd` children on 127.0.0.1, data in temp dirs in memory (`/dev/shm`
//! where there is one: etcd fsyncs every write, and an fsync on a disk shared
//! with parallel builds can take seconds).
//!
//! Readiness and the helpers speak plain HTTP/1.0 over a std `TcpStream` to
//! etcd's `/health` and its v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`,
//! `/v3/maintenance/status`): no HTTP crate, no `etcdctl`.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::process::{self, Service};
use super::{free_port, memory_temp_dir, wait_for};

/// What etcd (3.4, 3.5) logs once it has passed its bootstrap checks and
/// serves its peer port.
const SERVING_PEERS: &str = "serving peer traffic";
/// Path of the etcd binary; override with `LEASEHOLD_ETCD`.
const DEFAULT_ETCD: &str = "etcd";
/// Bound on start-up, restarts and leader elections.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Connect and I/O timeout of one HTTP request. Readiness probes use
/// shorter ones ([`Probe`]): a connection accepted while etcd is
/// still starting can stay unanswered even once etcd serves (seen with etcd
/// 3.4), so a probe gives up early and tries again on a new connection.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft timers, in milliseconds: short, so that a single member is healthy in
/// about 0.1 s and a cluster replaces a killed leader in well under a second.
#[derive(Debug, Clone, Copy)]
struct Timers {
    heartbeat_ms: u32,
    election_ms: u32,
}

/// A single member can use the shortest timers: it has nobody to lose
/// heartbeats to.
const SINGLE_TIMERS: Timers = Timers {
    heartbeat_ms: 10,
    election_ms: 100,
};
/// Members of a cluster get a little more slack, so that a loaded 2-core
/// machine running other tests does not trigger spurious elections.
const CLUSTER_TIMERS: Timers = Timers {
    heartbeat_ms: 25,
    election_ms: 250,
};

/// One etcd process.
struct Member {
    name: String,
    client_port: u16,
    /// A second client port serving TLS, when started with certificate files.
    tls_port: Option<u16>,
    peer_port: u16,
    service: Service,
}

/// A server certificate and its key (PEM files) for a TLS client port.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// The members of one etcd cluster (1 or more), sharing a temp dir.
struct Members {
    members: Vec<Member>,
    // Declared last: removed after the members are gone.
    dir: tempfile::TempDir,
}

impl Members {
    /// Starts `n` members and waits (bounded) until every one is healthy. A
    /// member that exits early (a picked port was taken meanwhile) makes the
    /// whole cluster start over on new ports, up to 5 times.
    fn start(n: usize, timers: Timers, tls: Option<TlsFiles<'_>>) -> Members {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        let deadline = Instant::now() + TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let members = Members::create(n, timers, tls);
            // One after the other, each once it serves its peer port: a new
            // member first asks every peer whether it was bootstrapped
            // already, and a peer that listens but does not serve yet holds
            // that question for a whole second (etcd's bootstrap timeout),
            // while peers not listening yet refuse at once. Its log says when
            // it serves (an HTTP probe would be held the same way); after
            // 2 s without that line, go on regardless: this only saves time.
            for m in &members.members {
                m.service.spawn();
                super::wait_until(Duration::from_secs(2), || {
                    !m.service.is_running() || m.service.log_contains(SERVING_PEERS)
                });
            }
            let result = members.members.iter().try_for_each(|m| {
                let (port, mut probe) = (m.client_port, Probe::new());
                m.service
                    .wait_ready(deadline, || probe.check(|t| healthy(port, t)))
            });
            match result {
                Ok(()) => return members,
                // Most likely a port clash: start over on fresh ports.
                Err(_) if attempt < 5 && Instant::now() < deadline => drop(members),
                Err(why) => panic!(
                    "etcd: could not start {n} member(s): {why}\n{}",
                    members.diagnostics()
                ),
            }
        }
    }

    fn create(n: usize, timers: Timers, tls: Option<TlsFiles<'_>>) -> Members {
        let dir = memory_temp_dir("etcd");
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "leasehold".into());
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| {
                loop {
                    let (c, p) = (free_port(), free_port());
                    if c != p {
                        break (c, p);
                    }
                }
            })
            .collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| {
                let name = format!("m{i}");
                // Plain HTTP always (health probes and the JSON gateway use it), plus
                // a TLS port when certificate files are given.
                let tls_port = tls.map(|_| free_port());
                let mut client = format!("http://127.0.0.1:{client_port}");
                if let Some(port) = tls_port {
                    client.push_str(&format!(",https://127.0.0.1:{port}"));
                }
                let peer = format!("http://127.0.0.1:{peer_port}");
                let data = dir.path().join(&name);
                let mut args: Vec<String> = [
                    "--name",
                    &name,
                    "--data-dir",
                    &data.to_string_lossy(),
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &token,
                    "--heartbeat-interval",
                    &timers.heartbeat_ms.to_string(),
                    "--election-timeout",
                    &timers.election_ms.to_string(),
                    // Matters only once a test enables authentication: its tokens go
                    // stale after 2 idle seconds (default 300), so re-authenticating
                    // is exercised.
                    "--auth-token-ttl",
                    "2",
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if let Some(files) = tls {
                    args.extend([
                        "--cert-file".to_owned(),
                        files.cert.to_string_lossy().into_owned(),
                        "--key-file".to_owned(),
                        files.key.to_string_lossy().into_owned(),
                    ]);
                }
                let service = Service::new(
                    format!(
                        "etcd member {name} (client 127.0.0.1:{client_port}, peer {peer_port})"
                    ),
                    (
                        process::binary("LEASEHOLD_ETCD", DEFAULT_ETCD),
                        "LEASEHOLD_ETCD",
                        "etcd-server",
                    ),
                    args,
                    dir.path().join(format!("{name}.log")),
                    true,
                );
                Member {
                    name,
                    client_port,
                    tls_port,
                    peer_port,
                    service,
                }
            })
            .collect();
        Members { members, dir }
    }

    fn member(&self, i: usize) -> &Member {
        self.members
            .get(i)
            .unwrap_or_else(|| panic!("etcd: no member {i} (there are {})", self.members.len()))
    }

    fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.service.is_running())
    }

    /// A running member's client port (the first). Panics if none runs.
    fn any_running_port(&self) -> u16 {
        self.running()
            .next()
            .map(|m| m.client_port)
            .unwrap_or_else(|| panic!("etcd: no member is running\n{}", self.diagnostics()))
    }

    fn restart(&self, i: usize) {
        let m = self.member(i);
        m.service.kill();
        m.service.spawn();
        let (port, mut probe) = (m.client_port, Probe::new());
        if let Err(why) = m.service.wait_ready(Instant::now() + TIMEOUT, || {
            probe.check(|t| healthy(port, t))
        }) {
            panic!("etcd: restarting {}: {why}\n{}", m.name, self.diagnostics());
        }
    }

    /// Index of the leader, once every running member names the same one and
    /// it is running (bounded).
    fn leader(&self) -> usize {
        let leader = wait_for(TIMEOUT, || {
            let mut leader_id = None;
            let mut ids = Vec::new();
            for m in &self.members {
                if !m.service.is_running() {
                    ids.push(None);
                    continue;
                }
                let status = status(m.client_port).ok()?;
                if status.leader == 0 || leader_id.is_some_and(|l| l != status.leader) {
                    return None;
                }
                leader_id = Some(status.leader);
                ids.push(Some(status.member_id));
            }
            let leader_id = leader_id?;
            ids.iter().position(|id| *id == Some(leader_id))
        });
        leader.unwrap_or_else(|| {
            panic!(
                "etcd: the running members did not agree on a running leader within {TIMEOUT:?}\n{}",
                self.diagnostics()
            )
        })
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            out.push_str(&format!(
                "--- {} ({}) log tail:\n{}\n",
                m.service.name,
                if m.service.is_running() {
                    "running"
                } else {
                    "not running"
                },
                m.service.log_tail(10)
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// EtcdServer
// ---------------------------------------------------------------------------

/// A single-member etcd on a free loopback client port (and another peer
/// port), data in a temp dir, heartbeat 10 ms and election timeout 100 ms:
/// healthy in about 0.1 s. SIGKILLed on Drop (and dies with the test binary);
/// the directory is removed.
pub struct EtcdServer {
    inner: Members,
}

impl fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl EtcdServer {
    /// Starts the member and waits (bounded) until `GET /health` says
    /// `"health":"true"`. Panics with the log tail, or with how to install
    /// etcd (`apt-get install -y etcd-server`, or `LEASEHOLD_ETCD`).
    pub fn start() -> EtcdServer {
        EtcdServer {
            inner: Members::start(1, SINGLE_TIMERS, None),
        }
    }

    /// The test binary's one server, started on first use. Statics are never
    /// dropped: it dies with the test binary (parent-death signal), and an
    /// `atexit` hook kills it and removes its directory when the binary exits
    /// normally.
    pub fn shared() -> &'static EtcdServer {
        static SHARED: std::sync::OnceLock<EtcdServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let server = EtcdServer::start();
            process::at_exit(|| {
                if let Some(server) = SHARED.get() {
                    server.kill();
                    let _ = std::fs::remove_dir_all(server.dir());
                }
            });
            server
        })
    }

    /// A member that also serves TLS clients, with the given server certificate
    /// (for 127.0.0.1): [`tls_endpoint`](Self::tls_endpoint).
    pub fn start_tls(files: TlsFiles<'_>) -> EtcdServer {
        EtcdServer {
            inner: Members::start(1, SINGLE_TIMERS, Some(files)),
        }
    }

    /// `127.0.0.1:PORT` of the TLS client port. Panics unless started with
    /// [`start_tls`](Self::start_tls).
    pub fn tls_endpoint(&self) -> String {
        let port = self.inner.members[0]
            .tls_port
            .expect("started with start_tls");
        format!("127.0.0.1:{port}")
    }

    /// `127.0.0.1:PORT` (the client port).
    pub fn endpoint(&self) -> String {
        self.inner.members[0].endpoint()
    }

    /// `etcd://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn port(&self) -> u16 {
        self.inner.members[0].client_port
    }

    /// The data and log directory; removed on Drop.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    pub fn is_running(&self) -> bool {
        self.inner.members[0].service.is_running()
    }

    /// SIGKILLs the server (its data stays, for [`restart`](Self::restart)).
    pub fn kill(&self) {
        self.inner.members[0].service.kill();
    }

    /// Kills the server if it runs and starts it again on the same ports
    /// with the same data; waits (bounded) until it is healthy.
    pub fn restart(&self) {
        self.inner.restart(0);
    }

    /// `PUT key value` through the JSON gateway.
    pub fn put(&self, key: &str, value: &str) {
        kv_put(self.port(), key, value);
    }

    /// The value of `key` (`None` if absent) through the JSON gateway.
    pub fn get(&self, key: &str) -> Option<String> {
        kv_get(self.port(), key)
    }

    /// `POST path` with a JSON body to the v3 gateway; the response body.
    /// Panics on transport errors and non-200 replies.
    pub fn post(&self, path: &str, json: &str) -> String {
        post_ok(self.port(), path, json)
    }
}

// ---------------------------------------------------------------------------
// EtcdCluster
// ---------------------------------------------------------------------------

/// An etcd cluster of `n` members (`--initial-cluster`) on loopback ports,
/// heartbeat 25 ms and election timeout 250 ms. Members are addressed by
/// index (`0..n`). Every member is SIGKILLed on Drop (and dies with the test
/// binary); the directory is removed.
pub struct EtcdCluster {
    inner: Members,
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits (bounded) until every one is healthy
    /// (which needs an elected leader).
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster {
            inner: Members::start(n, CLUSTER_TIMERS, None),
        }
    }

    /// The test binary's one 3-member cluster, started on first use, for tests that
    /// cut clients off (proxies) but never kill members. Statics are never dropped: it
    /// dies with the test binary, and an `atexit` hook kills it and removes its
    /// directory when the binary exits normally.
    pub fn shared() -> &'static EtcdCluster {
        static SHARED: std::sync::OnceLock<EtcdCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = EtcdCluster::start(3);
            process::at_exit(|| {
                if let Some(cluster) = SHARED.get() {
                    for i in 0..cluster.len() {
                        cluster.kill(i);
                    }
                    let _ = std::fs::remove_dir_all(cluster.dir());
                }
            });
            cluster
        })
    }

    /// `127.0.0.1:PORT` of every member (client ports), by index.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.members.iter().map(Member::endpoint).collect()
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,…`
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.inner.member(i).client_port
    }

    /// The data and log directory; removed on Drop.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.inner.member(i).service.is_running()
    }

    /// Index of the current leader: waits (bounded, 30 s) until every running
    /// member names the same leader (`POST /v3/maintenance/status`) and it
    /// is one of the running members.
    pub fn leader(&self) -> usize {
        self.inner.leader()
    }

    /// SIGKILLs member `i` (its data stays, for [`restart`](Self::restart)).
    pub fn kill(&self, i: usize) {
        self.inner.member(i).service.kill();
    }

    /// Kills member `i` if it runs and starts it again with the same ports
    /// and data; waits (bounded) until it is healthy (it has rejoined).
    pub fn restart(&self, i: usize) {
        self.inner.restart(i);
    }

    /// `PUT key value` through the JSON gateway of the first running member.
    pub fn put(&self, key: &str, value: &str) {
        kv_put(self.inner.any_running_port(), key, value);
    }

    /// The value of `key` (`None` if absent) read from member `i`
    /// (linearizable: it goes through the leader).
    pub fn get_from(&self, i: usize, key: &str) -> Option<String> {
        kv_get(self.port(i), key)
    }

    /// `POST path` with a JSON body to member `i`'s v3 gateway; the response
    /// body. Panics on transport errors and non-200 replies.
    pub fn post(&self, i: usize, path: &str, json: &str) -> String {
        post_ok(self.port(i), path, json)
    }
}

// ---------------------------------------------------------------------------
// HTTP and the JSON gateway
// ---------------------------------------------------------------------------

/// One HTTP/1.0 request (so the reply is neither chunked nor kept alive) on a
/// fresh connection; `(status, body)`.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    http_with_timeout(port, method, path, body, HTTP_TIMEOUT)
}

fn http_with_timeout(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed HTTP reply: {reply:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("malformed status line: {head:?}")))?;
    Ok((status, body.to_string()))
}

fn post_ok(port: u16, path: &str, json: &str) -> String {
    match http(port, "POST", path, json) {
        Ok((200, body)) => body,
        Ok((status, body)) => panic!("etcd {port}: POST {path} -> {status}: {body}"),
        Err(e) => panic!("etcd {port}: POST {path}: {e}"),
    }
}

/// `GET /health` answers `"health":"true"`.
fn healthy(port: u16, timeout: Duration) -> std::io::Result<bool> {
    let (status, body) = http_with_timeout(port, "GET", "/health", "", timeout)?;
    Ok(status == 200 && body.contains(r#""health":"true""#))
}

/// A readiness probe with an adaptive timeout: it starts at 50 ms and
/// doubles (up to 1 s) each time a probe times out, so that a stuck
/// connection is given up early while a slow machine still gets its answers.
struct Probe {
    timeout: Duration,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            timeout: Duration::from_millis(50),
        }
    }

    fn check(&mut self, probe: impl FnOnce(Duration) -> std::io::Result<bool>) -> bool {
        match probe(self.timeout) {
            Ok(ready) => ready,
            Err(e) => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    self.timeout = (self.timeout * 2).min(Duration::from_secs(1));
                }
                false
            }
        }
    }
}

struct Status {
    member_id: u64,
    leader: u64,
}

/// `POST /v3/maintenance/status`.
fn status(port: u16) -> std::io::Result<Status> {
    let (code, body) = http(port, "POST", "/v3/maintenance/status", "{}")?;
    let field = |name: &str| json_string_field(&body, name).and_then(|v| v.parse::<u64>().ok());
    match (code, field("member_id"), field("leader")) {
        (200, Some(member_id), leader) => Ok(Status {
            member_id,
            leader: leader.unwrap_or(0),
        }),
        _ => Err(std::io::Error::other(format!(
            "status on {port}: {code} {body}"
        ))),
    }
}

fn kv_put(port: u16, key: &str, value: &str) {
    let json = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        base64_encode(key.as_bytes()),
        base64_encode(value.as_bytes())
    );
    post_ok(port, "/v3/kv/put", &json);
}

fn kv_get(port: u16, key: &str) -> Option<String> {
    let json = format!(r#"{{"key":"{}"}}"#, base64_encode(key.as_bytes()));
    let body = post_ok(port, "/v3/kv/range", &json);
    // `"kvs"` is absent when nothing matched; `"value"` is absent when empty.
    let kvs = &body[body.find(r#""kvs":["#)?..];
    let value = json_string_field(kvs, "value").unwrap_or_default();
    let bytes =
        base64_decode(&value).unwrap_or_else(|| panic!("etcd {port}: bad base64 value in {body}"));
    Some(String::from_utf8(bytes).expect("UTF-8 value"))
}

/// The first `"name":"…"` string value in `json` (no escapes: the gateway's
/// numbers-as-strings and base64 never have any).
fn json_string_field(json: &str, name: &str) -> Option<String> {
    let pat = format!("\"{name}\":\"");
    let start = json.find(&pat)? + pat.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_string())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
