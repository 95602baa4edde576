//! [`RedisSentinel`]: one master, one replica and three sentinels, all
//! throw-away `redis-server` children on 127.0.0.1.

use std::fmt;
use std::time::{Duration, Instant};

use super::FaultProxy;
use super::process::{self, Service};
use super::server::DEFAULT_REDIS_SERVER;
use super::{
    RedisServer, ServerOptions, free_port, info_field, memory_temp_dir, ping_ready, redis_cmd,
    value_text, wait_for,
};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "leasehold-master";
/// `sentinel down-after-milliseconds`: how long until a silent master is
/// subjectively down. Not 1000: on a loaded machine (three test binaries on
/// two cores) a sentinel sometimes took more than a second to reach the
/// master it had just switched to, declared it down and failed back.
pub const DOWN_AFTER: Duration = Duration::from_millis(2000);
/// `sentinel failover-timeout` (also: a failed failover of the same master is
/// retried after twice this).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
/// Bound on start-up and on every failover wait.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A monitored master/replica pair with three sentinels (quorum 2):
/// `down-after-milliseconds` 2000 and `failover-timeout` 3000, so a killed
/// master is replaced in about 3.5 s. The data nodes are
/// [`RedisServer`]s (`repl-diskless-sync-delay 0`); every process is
/// SIGKILLed on Drop and dies with the test binary; the temp directories are
/// removed.
pub struct RedisSentinel {
    /// The two data nodes: `[0]` started as master, `[1]` as its replica.
    data: Vec<RedisServer>,
    sentinels: Vec<Service>,
    sentinel_ports: Vec<u16>,
    /// The master [`kill_master`](Self::kill_master) killed last.
    killed_master: Option<u16>,
    /// [`start_with_master_proxy`](Self::start_with_master_proxy): the proxy every peer
    /// reaches the first master through, and that master's own port.
    master_proxy: Option<(FaultProxy, u16)>,
    // Declared last: removed after the sentinels are gone.
    dir: tempfile::TempDir,
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("data_ports", &self.data_ports())
            .field("sentinel_ports", &self.sentinel_ports)
            .finish()
    }
}

impl RedisSentinel {
    /// Starts the master, its replica (waiting until the replica is in
    /// sync) and three sentinels, and waits (bounded) until every sentinel
    /// sees the master, its replica and the two other sentinels. About 2-3 s,
    /// most of it the sentinels' 2 s hello period.
    pub fn start() -> RedisSentinel {
        RedisSentinel::start_inner(false)
    }

    /// [`start`](Self::start), but the first master is known to everyone by the address
    /// of a [`FaultProxy`] in front of it — "the network in front of the master": the
    /// sentinels monitor it there, the replica replicates from it there, and a client
    /// that asks the sentinels connects there. [`master_port`](Self::master_port)
    /// reports the proxy's port while that node is master ([`server`](Self::server)
    /// accepts either port). The proxy marks the sentinels' connections (they name
    /// themselves `sentinel-…` with `CLIENT SETNAME`) and the replica's (`REPLCONF`), so
    /// that [`isolate_master`](Self::isolate_master) can cut those and leave clients be.
    pub fn start_with_master_proxy() -> RedisSentinel {
        RedisSentinel::start_inner(true)
    }

    /// A partition between the first master and everything else in the group: while on,
    /// the sentinels' and the replica's connections through the master's proxy (and any
    /// they open meanwhile) are stalled both ways, as a partition stalls TCP streams;
    /// clients' connections through it go on. Off heals it (held bytes are delivered).
    /// Returns how many connections are cut (were marked) when called. Panics unless
    /// started with [`start_with_master_proxy`](Self::start_with_master_proxy).
    pub fn isolate_master(&self, on: bool) -> usize {
        let (proxy, _) = self
            .master_proxy
            .as_ref()
            .expect("RedisSentinel::isolate_master: start with start_with_master_proxy()");
        proxy.cut_marked(on);
        proxy.marked_count()
    }

    fn start_inner(with_proxy: bool) -> RedisSentinel {
        let deadline = Instant::now() + TIMEOUT;
        let fast_sync = || vec!["--repl-diskless-sync-delay".to_string(), "0".to_string()];
        let master = RedisServer::start_with(ServerOptions {
            extra_args: fast_sync(),
            ..Default::default()
        });
        let master_proxy = with_proxy.then(|| {
            let proxy = FaultProxy::start(master.port());
            proxy.mark("sentinel-"); // CLIENT SETNAME sentinel-<id>-cmd / -pubsub
            proxy.mark("__sentinel__:hello");
            proxy.mark("REPLCONF"); // a replica's handshake and acknowledgements
            (proxy, master.port())
        });
        // The address the group knows the master by.
        let master_addr = master_proxy
            .as_ref()
            .map_or(master.port(), |(proxy, _)| proxy.port());
        let mut replica_args = fast_sync();
        replica_args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master_addr.to_string(),
        ]);
        let replica = RedisServer::start_with(ServerOptions {
            extra_args: replica_args,
            ..Default::default()
        });
        let synced = super::wait_until(deadline.saturating_duration_since(Instant::now()), || {
            replication_field(&replica, "master_link_status").as_deref() == Some("up")
        });
        assert!(
            synced,
            "RedisSentinel::start: replica {} did not sync with master {}; replica log tail:\n{}",
            replica.port(),
            master.port(),
            replica.log_tail()
        );

        let dir = memory_temp_dir("sentinel");
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let (service, port) = sentinel_service(dir.path(), i, master_addr);
            service.spawn();
            sentinels.push(service);
            sentinel_ports.push(port);
        }
        let mut harness = RedisSentinel {
            data: vec![master, replica],
            sentinels,
            sentinel_ports,
            killed_master: None,
            master_proxy,
            dir,
        };
        for (i, port) in harness.sentinel_ports.clone().into_iter().enumerate() {
            // A picked port may have been taken meanwhile: retry on new ones.
            let mut attempts = 0;
            while let Err(why) =
                harness.sentinels[i].wait_ready(deadline, || ping_ready(port, None))
            {
                attempts += 1;
                assert!(
                    attempts < 5 && Instant::now() < deadline,
                    "RedisSentinel::start: {why}"
                );
                let (service, port) = sentinel_service(harness.dir.path(), i, master_addr);
                service.spawn();
                harness.sentinels[i] = service;
                harness.sentinel_ports[i] = port;
            }
        }
        if let Err(why) = harness.wait_sentinels_agree(deadline, master_addr, 1) {
            panic!(
                "RedisSentinel::start: sentinels did not settle within {TIMEOUT:?}: {why}\n{}",
                harness.diagnostics()
            );
        }
        harness
    }

    /// `redis://127.0.0.1:P/` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    pub fn sentinel_ports(&self) -> &[u16] {
        &self.sentinel_ports
    }

    /// The name the master is monitored under (`leasehold-master`).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The master's port, as the first sentinel that answers reports it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`). Panics if none answers.
    pub fn master_port(&self) -> u16 {
        self.sentinel_ports
            .iter()
            .zip(&self.sentinels)
            .filter(|(_, s)| s.is_running())
            .find_map(|(p, _)| master_addr(*p))
            .unwrap_or_else(|| {
                panic!(
                    "RedisSentinel: no sentinel reports the master\n{}",
                    self.diagnostics()
                )
            })
    }

    /// `redis://127.0.0.1:P/` of the current master (as a sentinel reports it).
    pub fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.master_port())
    }

    /// The port of the data node that is not the current master.
    pub fn replica_port(&self) -> u16 {
        let master = self.real_port(self.master_port());
        self.data_ports()
            .into_iter()
            .find(|p| *p != master)
            .expect("two data nodes")
    }

    /// Ports of the two data nodes: `[0]` started as master, `[1]` as replica.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(RedisServer::port).collect()
    }

    /// The data node on `port` (for `cmd_sync`, `get`, `client_pause`, …); the port of
    /// the master's proxy names the first master.
    pub fn server(&self, port: u16) -> &RedisServer {
        let port = self.real_port(port);
        self.data
            .iter()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("RedisSentinel: no data node on port {port}"))
    }

    /// The current master's [`RedisServer`].
    pub fn master(&self) -> &RedisServer {
        self.server(self.master_port())
    }

    /// Runs one command on the sentinel with index `i` (0..3).
    pub fn sentinel_cmd(&self, i: usize, args: &[&str]) -> redis::Value {
        let port = self.sentinel_ports[i];
        redis_cmd(&format!("redis://127.0.0.1:{port}/"), args)
            .unwrap_or_else(|e| panic!("RedisSentinel: {args:?} on sentinel {port} failed: {e}"))
    }

    /// SIGKILLs the current master and returns its port. The sentinels notice
    /// after `down-after-milliseconds`: see
    /// [`wait_for_failover`](Self::wait_for_failover).
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        let i = self.data_index(port);
        self.data[i].stop();
        self.killed_master = Some(port);
        port
    }

    /// After [`kill_master`](Self::kill_master): waits (bounded, 30 s) until
    /// every running sentinel names another node as master and that node
    /// reports `role:master`; returns its port. About 3-4 s (the 2 s down-after, then an election).
    pub fn wait_for_failover(&self) -> u16 {
        let old = self
            .killed_master
            .expect("RedisSentinel::wait_for_failover: call kill_master() first");
        self.wait_for_new_master(old)
    }

    /// Waits (bounded, 30 s) until every running sentinel names a master other than
    /// `old` (a port as [`master_port`](Self::master_port) reported it) and that node
    /// reports `role:master`; returns its port. For a failover without a kill (a
    /// partition: [`isolate_master`](Self::isolate_master)).
    pub fn wait_for_new_master(&self, old: u16) -> u16 {
        let new = wait_for(TIMEOUT, || {
            let reported: Vec<Option<u16>> = self
                .sentinel_ports
                .iter()
                .zip(&self.sentinels)
                .filter(|(_, s)| s.is_running())
                .map(|(p, _)| master_addr(*p))
                .collect();
            let first = (*reported.first()?)?;
            let agreed = first != old && reported.iter().all(|r| *r == Some(first));
            (agreed && replication_field(self.server(first), "role").as_deref() == Some("master"))
                .then_some(first)
        });
        new.unwrap_or_else(|| {
            panic!(
                "RedisSentinel::wait_for_new_master: the sentinels did not replace master {old} within {TIMEOUT:?}\n{}",
                self.diagnostics()
            )
        })
    }

    /// Starts a killed data node again (same port) as a replica of the
    /// current master and waits (bounded) until it is in sync and every
    /// sentinel counts it as a healthy replica again. It is pointed at the
    /// master with `REPLICAOF` right away, as an operator would: left to the
    /// sentinels, the conversion waits for their 10 s `INFO` period.
    pub fn restart(&mut self, port: u16) {
        let i = self.data_index(port);
        self.data[i].start_again();
        if self.killed_master == Some(port) {
            self.killed_master = None;
        }
        let master = self.master_port();
        assert_ne!(
            master, port,
            "RedisSentinel::restart({port}): the sentinels still name it master"
        );
        self.data[i].cmd_sync(&["REPLICAOF", "127.0.0.1", &master.to_string()]);
        let deadline = Instant::now() + TIMEOUT;
        let node = &self.data[i];
        let rejoined = super::wait_until(TIMEOUT, || {
            replication_field(node, "role").as_deref() == Some("slave")
                && replication_field(node, "master_port") == Some(master.to_string())
                && replication_field(node, "master_link_status").as_deref() == Some("up")
        });
        assert!(
            rejoined,
            "RedisSentinel::restart({port}): not a synced replica of {master} within {TIMEOUT:?}\n{}",
            self.diagnostics()
        );
        // The sentinels count it as a replica again (no longer down).
        if let Err(why) = self.wait_sentinels_agree(deadline, master, 1) {
            panic!(
                "RedisSentinel::restart({port}): sentinels did not settle: {why}\n{}",
                self.diagnostics()
            );
        }
    }

    /// The data node's own port for `port`, which may be the master's proxy's.
    fn real_port(&self, port: u16) -> u16 {
        match &self.master_proxy {
            Some((proxy, real)) if proxy.port() == port => *real,
            _ => port,
        }
    }

    fn data_index(&self, port: u16) -> usize {
        let port = self.real_port(port);
        self.data
            .iter()
            .position(|s| s.port() == port)
            .unwrap_or_else(|| panic!("RedisSentinel: no data node on port {port}"))
    }

    /// Until every running sentinel reports `master_port` as master with
    /// `replicas` replicas that are not down, and knows the other sentinels.
    fn wait_sentinels_agree(
        &self,
        deadline: Instant,
        master_port: u16,
        replicas: usize,
    ) -> Result<(), String> {
        let others = self.sentinels.len() - 1;
        let mut why = String::new();
        let ok = super::wait_until(deadline.saturating_duration_since(Instant::now()), || {
            for (port, _) in self
                .sentinel_ports
                .iter()
                .zip(&self.sentinels)
                .filter(|(_, s)| s.is_running())
            {
                let Some(fields) = sentinel_master(*port) else {
                    why = format!("sentinel {port}: SENTINEL MASTER failed");
                    return false;
                };
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("")
                };
                if field("port") != master_port.to_string() || field("flags") != "master" {
                    why = format!(
                        "sentinel {port}: master is {}:{} ({})",
                        field("ip"),
                        field("port"),
                        field("flags")
                    );
                    return false;
                }
                let healthy_replicas = sentinel_replicas(*port)
                    .into_iter()
                    .filter(|flags| flags == "slave")
                    .count();
                if healthy_replicas != replicas {
                    why = format!("sentinel {port}: {healthy_replicas} healthy replicas");
                    return false;
                }
                if field("num-other-sentinels") != others.to_string() {
                    why = format!(
                        "sentinel {port}: knows {} other sentinels",
                        field("num-other-sentinels")
                    );
                    return false;
                }
            }
            true
        });
        if ok { Ok(()) } else { Err(why) }
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for server in &self.data {
            out.push_str(&format!(
                "--- data node {} ({}) log tail:\n{}\n",
                server.port(),
                if server.is_running() {
                    "running"
                } else {
                    "not running"
                },
                server.log_tail()
            ));
        }
        for (port, s) in self.sentinel_ports.iter().zip(&self.sentinels) {
            out.push_str(&format!(
                "--- sentinel {port} ({}) log tail:\n{}\n",
                if s.is_running() {
                    "running"
                } else {
                    "not running"
                },
                s.log_tail(15)
            ));
        }
        out
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Sentinels first, so that none of them reconfigures a data node
        // while it goes.
        for s in &self.sentinels {
            s.kill();
        }
    }
}

/// A sentinel on a fresh port with its own (writable) config file in
/// `<root>/sentinel-<i>/`.
fn sentinel_service(root: &std::path::Path, i: usize, master_port: u16) -> (Service, u16) {
    let dir = root.join(format!("sentinel-{i}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let port = free_port();
    let log = dir.join("sentinel.log");
    let conf = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {log}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
         sentinel failover-timeout {MASTER_NAME} {failover}\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display(),
        log = log.display(),
        down = DOWN_AFTER.as_millis(),
        failover = FAILOVER_TIMEOUT.as_millis(),
    );
    std::fs::write(&conf, text).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
    let service = Service::new(
        format!("redis sentinel 127.0.0.1:{port}"),
        (
            process::binary("LEASEHOLD_REDIS_SERVER", DEFAULT_REDIS_SERVER),
            "LEASEHOLD_REDIS_SERVER",
            "redis-server",
        ),
        vec![conf.to_string_lossy().into_owned(), "--sentinel".into()],
        log,
        false,
    );
    (service, port)
}

/// `INFO replication` field of a data node (`None` if it does not answer).
fn replication_field(server: &RedisServer, field: &str) -> Option<String> {
    let info = server.try_cmd_sync(&["INFO", "replication"]).ok()?;
    info_field(&value_text(&info, "INFO replication"), field).map(str::to_string)
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` on the sentinel on `port`.
fn master_addr(port: u16) -> Option<u16> {
    let url = format!("redis://127.0.0.1:{port}/");
    match redis_cmd(&url, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).ok()? {
        redis::Value::Array(addr) if addr.len() == 2 => {
            value_text(&addr[1], "master port").parse().ok()
        }
        _ => None,
    }
}

/// `SENTINEL MASTER <name>` as field/value pairs.
fn sentinel_master(port: u16) -> Option<Vec<(String, String)>> {
    let url = format!("redis://127.0.0.1:{port}/");
    let v = redis_cmd(&url, &["SENTINEL", "MASTER", MASTER_NAME]).ok()?;
    Some(pairs(&v))
}

/// The `flags` of each replica in `SENTINEL REPLICAS <name>` (`slave` for a
/// healthy one; `slave,s_down,disconnected` for a dead one).
fn sentinel_replicas(port: u16) -> Vec<String> {
    let url = format!("redis://127.0.0.1:{port}/");
    match redis_cmd(&url, &["SENTINEL", "REPLICAS", MASTER_NAME]) {
        Ok(redis::Value::Array(replicas)) => replicas
            .iter()
            .filter_map(|r| {
                pairs(r)
                    .into_iter()
                    .find(|(k, _)| k == "flags")
                    .map(|(_, v)| v)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A flat `[k, v, k, v, …]` array (RESP2) or a map (RESP3) as pairs.
fn pairs(v: &redis::Value) -> Vec<(String, String)> {
    match v {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (value_text(&c[0], "key"), value_text(&c[1], "value")))
            .collect(),
        redis::Value::Map(items) => items
            .iter()
            .map(|(k, v)| (value_text(k, "key"), value_text(v, "value")))
            .collect(),
        _ => Vec::new(),
    }
}
