//! [`RedisCluster`]: a throw-away Redis Cluster of `redis-server` children,
//! created with `redis-cli --cluster create`.
//!
//! Nodes are identified by their client port (stable across
//! [`restart`](RedisCluster::restart)); [`ClusterNode`] is a snapshot of one
//! node as the cluster sees it. Every node listens on 127.0.0.1 only, with its
//! cluster bus on a second free port (`cluster-port`, so no `port + 10000`
//! arithmetic), `cluster-node-timeout` 1000 ms, no persistence except
//! `nodes.conf`, `cluster-replica-validity-factor 0` (a replica may always be
//! promoted, however long its link was down) and
//! `cluster-allow-replica-migration no` (replicas stay where they were put)
//! and `repl-diskless-sync-delay 0` (replicas sync at once).

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::process::{self, Service};
use super::server::DEFAULT_REDIS_SERVER;
use super::{
    free_port, info_field, lock, memory_temp_dir, ping_ready, redis_cmd, value_text, wait_for,
    wait_until,
};

/// Number of hash slots.
pub const SLOTS: u16 = 16384;
/// `cluster-node-timeout`: how long until an unreachable node is suspected.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Bound on cluster creation (spawn, `redis-cli --cluster create`, agreement).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on failovers and on every "until all nodes agree" wait.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys moved per `MIGRATE` during slot migration.
const MIGRATE_BATCH: usize = 100;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Replica,
}

/// One node as the cluster sees it (a snapshot: roles change on failover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Client port on 127.0.0.1; the node's identity in the harness API.
    pub port: u16,
    /// The 40-character cluster node id.
    pub id: String,
    pub role: Role,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// Slot ranges a master serves (empty for replicas), ascending.
    pub slots: Vec<RangeInclusive<u16>>,
    /// The observing node has flagged this one `fail`: a majority of masters
    /// found it unreachable (killed, stopped, frozen).
    pub failed: bool,
    /// The observing node has flagged this one `fail?`: it has not answered
    /// for the node timeout, a majority has not confirmed yet.
    pub suspected: bool,
}

impl ClusterNode {
    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// True if this node is a master serving `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    service: Service,
    frozen: AtomicBool,
    /// How the cluster saw the node just before it was killed, stopped or
    /// frozen: `wait_for_failover` needs its slots even when the failover
    /// has already happened.
    before_fault: Mutex<Option<ClusterNode>>,
    /// The client port it announces instead of its own (`announce_port`); 0: its own.
    announced: AtomicU16,
}

impl Node {
    /// Whether the cluster names this node by `port`: its own, or the one it announces.
    fn named(&self, port: u16) -> bool {
        self.port == port || self.announced.load(Ordering::SeqCst) == port
    }
}

/// A throw-away Redis Cluster: `masters` masters with `replicas_per_master`
/// replicas each, all slots assigned, every node agreeing on the slot map.
/// Every node is SIGKILLed on Drop (and dies with the test binary; see
/// `process.rs`); the temp directory is removed.
///
/// Methods take `&self`, so one cluster can be shared ([`shared`](Self::shared)),
/// but the ones that change the topology panic on the shared instance.
pub struct RedisCluster {
    nodes: Vec<Node>,
    replicas_per_master: usize,
    shared: bool,
    // Declared last: removed after the nodes are gone.
    dir: tempfile::TempDir,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .field("replicas_per_master", &self.replicas_per_master)
            .field("shared", &self.shared)
            .finish()
    }
}

impl RedisCluster {
    /// Starts `masters` (at least 3, as `redis-cli --cluster create` insists)
    /// masters with `replicas_per_master` replicas each and waits (bounded)
    /// until every node reports `cluster_state:ok`, all 16384 slots are
    /// assigned, every node agrees on the slot map and every replica's link to
    /// its master is up. Takes about 2-3 s.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        Self::start_inner(masters, replicas_per_master, false)
    }

    /// One cluster (3 masters, 1 replica each) per test binary, started on
    /// first use and shared by every test in it. Tests on it must use keys of
    /// their own and must not change the topology: [`kill`](Self::kill),
    /// [`stop`](Self::stop), [`restart`](Self::restart),
    /// [`freeze`](Self::freeze), [`manual_failover`](Self::manual_failover)
    /// and slot migration panic here; start a cluster of your own for those.
    ///
    /// Statics are never dropped: the nodes die with the test binary (parent-
    /// death signal) and an `atexit` hook kills them and removes the temp
    /// directory when the binary exits normally (see `process.rs`).
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Self::start_inner(3, 1, true);
            process::at_exit(|| {
                if let Some(cluster) = SHARED.get() {
                    cluster.shutdown();
                }
            });
            cluster
        })
    }

    fn start_inner(masters: usize, replicas_per_master: usize, shared: bool) -> RedisCluster {
        assert!(
            masters >= 3,
            "RedisCluster::start: redis-cli --cluster create needs at least 3 masters, got {masters}"
        );
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let dir = memory_temp_dir("cluster");
        let count = masters * (1 + replicas_per_master);
        let mut nodes: Vec<Node> = (0..count)
            .map(|i| Node::new(dir.path().join(format!("node-{i}"))))
            .collect();
        for node in &nodes {
            node.service.spawn();
        }
        for node in &mut nodes {
            node.wait_ready_or_respawn(deadline);
        }
        let cluster = RedisCluster {
            nodes,
            replicas_per_master,
            shared,
            dir,
        };
        cluster.create(replicas_per_master, deadline);
        if let Err(why) = cluster.wait_converged_until(deadline) {
            panic!(
                "RedisCluster::start: cluster did not converge within {CREATE_TIMEOUT:?}: {why}\n{}",
                cluster.diagnostics()
            );
        }
        cluster
    }

    /// `redis-cli --cluster create … --cluster-replicas R --cluster-yes`,
    /// bounded; its output goes to `create.log`.
    fn create(&self, replicas: usize, deadline: Instant) {
        let bin = process::binary("LEASEHOLD_REDIS_CLI", "redis-cli");
        let log = self.dir.path().join("create.log");
        let out = std::fs::File::create(&log).expect("creating create.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("--cluster").arg("create");
        cmd.args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup create.log"))
            .stderr(out);
        let mut child = process::spawn(cmd).unwrap_or_else(|e| {
            panic!(
                "RedisCluster: {}",
                process::missing_binary(&bin, "LEASEHOLD_REDIS_CLI", "redis-tools", &e)
            )
        });
        let status = process::reap(
            &mut child,
            deadline.saturating_duration_since(Instant::now()),
        );
        let ok = matches!(status, Some(s) if s.success());
        if !ok {
            process::kill_and_reap(child);
            panic!(
                "RedisCluster: `redis-cli --cluster create` {} ; its output:\n{}\n{}",
                match status {
                    Some(s) => format!("failed ({s})"),
                    None => "did not finish in time".to_string(),
                },
                process::log_tail(&log, 30),
                self.diagnostics()
            );
        }
    }

    /// Kills every node and removes the temp directory (for the `atexit` hook
    /// of the shared instance, which is never dropped).
    fn shutdown(&self) {
        for node in &self.nodes {
            node.service.kill();
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    // -- topology -----------------------------------------------------------

    /// The cluster's temp directory (one sub-directory per node); removed on Drop.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Client ports of all nodes, in creation order (masters and replicas,
    /// running or not).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:P/` of each current master that is not flagged
    /// failed, in slot order: the seed list for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        let mut masters: Vec<ClusterNode> = self
            .nodes()
            .into_iter()
            .filter(|n| n.is_master() && !n.failed && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| *n.slots[0].start());
        masters.iter().map(ClusterNode::url).collect()
    }

    /// Every node, as the first running, unfrozen node sees the cluster (in
    /// creation order). Panics if no node answers.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let observer = self
            .live_nodes()
            .find_map(|n| self.view_of(n.port).ok())
            .unwrap_or_else(|| {
                panic!(
                    "RedisCluster: no running node answers CLUSTER NODES\n{}",
                    self.diagnostics()
                )
            });
        let mut out: Vec<ClusterNode> = Vec::new();
        for node in &self.nodes {
            if let Some(seen) = observer.iter().find(|s| node.named(s.port)) {
                out.push(seen.clone());
            }
        }
        out
    }

    /// The snapshot of the node on `port`. Panics if there is none.
    pub fn node(&self, port: u16) -> ClusterNode {
        self.nodes()
            .into_iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("RedisCluster: no node on port {port}"))
    }

    /// Current masters (not flagged failed), in creation order.
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.nodes()
            .into_iter()
            .filter(|n| n.is_master() && !n.failed)
            .collect()
    }

    /// The master serving `slot`. Panics if no master serves it.
    pub fn master_of_slot(&self, slot: u16) -> ClusterNode {
        assert!(slot < SLOTS, "slot {slot} out of range");
        self.nodes()
            .into_iter()
            .find(|n| n.is_master() && n.serves(slot))
            .unwrap_or_else(|| panic!("RedisCluster: no master serves slot {slot}"))
    }

    /// The master serving `key`'s slot.
    pub fn master_of_key(&self, key: &str) -> ClusterNode {
        self.master_of_slot(self.key_slot(key))
    }

    /// The replicas of the master on `master_port` (flagged failed or not).
    pub fn replicas_of(&self, master_port: u16) -> Vec<ClusterNode> {
        let nodes = self.nodes();
        let master = nodes
            .iter()
            .find(|n| n.port == master_port)
            .unwrap_or_else(|| panic!("RedisCluster: no node on port {master_port}"));
        nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .cloned()
            .collect()
    }

    /// `CLUSTER KEYSLOT key`, asked of a running node.
    pub fn key_slot(&self, key: &str) -> u16 {
        let port = self.any_live_port();
        let v = self.cmd(port, &["CLUSTER", "KEYSLOT", key]);
        value_text(&v, "CLUSTER KEYSLOT")
            .parse()
            .expect("CLUSTER KEYSLOT: a number")
    }

    /// The hash slot of `key`, computed locally: CRC16 (XMODEM) of the key,
    /// or of its first non-empty `{hash tag}`, modulo 16384 (the cluster
    /// spec). [`key_slot`](Self::key_slot) asks a node instead.
    pub fn hash_slot(key: &str) -> u16 {
        hash_slot(key.as_bytes())
    }

    /// A key `"{prefix}N"` (smallest N ≥ 0) that hashes to `slot`, computed
    /// locally (CRC16 as in the cluster spec). `prefix` must not contain `{`.
    pub fn key_in_slot(slot: u16, prefix: &str) -> String {
        assert!(slot < SLOTS, "slot {slot} out of range");
        assert!(
            !prefix.contains('{'),
            "key_in_slot: prefix must not contain a hash tag"
        );
        (0u64..)
            .map(|n| format!("{prefix}{n}"))
            .find(|k| hash_slot(k.as_bytes()) == slot)
            .expect("some key hashes to every slot")
    }

    // -- commands -----------------------------------------------------------

    /// `redis://127.0.0.1:PORT/` of any node, by port (through what it announces, if it
    /// was given a port to announce and is named by that one).
    pub fn node_url(&self, port: u16) -> String {
        self.proc(port);
        format!("redis://127.0.0.1:{port}/")
    }

    /// Runs one command on the node on `port` (fresh sync connection, no
    /// redirection). Panics on connection and server errors (a MOVED reply is
    /// an error). A fresh connection per call: for `WAIT` use
    /// [`connect`](Self::connect).
    pub fn cmd(&self, port: u16, args: &[&str]) -> redis::Value {
        self.try_cmd(port, args)
            .unwrap_or_else(|e| panic!("RedisCluster: {args:?} on node {port} failed: {e}"))
    }

    /// A sync connection to the node on `port` (no redirection), for
    /// several commands on one connection (`WAIT` after a write, `MULTI`).
    pub fn connect(&self, port: u16) -> redis::Connection {
        redis::Client::open(self.node_url(port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("RedisCluster: connecting to node {port}: {e}"))
    }

    /// Like [`cmd`](Self::cmd), with errors returned.
    pub fn try_cmd(&self, port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
        redis_cmd(&self.node_url(port), args)
    }

    // -- faults ---------------------------------------------------------------

    /// SIGKILLs the node (a crash). Its directory and `nodes.conf` stay, for
    /// [`restart`](Self::restart). Returns at once: see
    /// [`wait_for_failover`](Self::wait_for_failover).
    pub fn kill(&self, port: u16) {
        self.assert_private("kill");
        let node = self.proc(port);
        self.remember_before_fault(node);
        node.service.kill();
        node.frozen.store(false, Ordering::SeqCst);
    }

    /// Stops the node cleanly (SIGTERM, up to 10 s, then SIGKILL). Redis
    /// 7 lets a master's replicas catch up before it exits; no failover is
    /// started by the stop itself.
    pub fn stop(&self, port: u16) {
        self.assert_private("stop");
        let node = self.proc(port);
        self.remember_before_fault(node);
        node.service.terminate(Duration::from_secs(10));
        node.frozen.store(false, Ordering::SeqCst);
    }

    /// True while the node's process runs (frozen or not).
    pub fn is_running(&self, port: u16) -> bool {
        self.proc(port).service.is_running()
    }

    /// Starts a killed or stopped node again with the same port, bus port and
    /// `nodes.conf` (same node id) and waits (bounded) until it answers and
    /// the cluster has converged again: a master whose slots were taken over
    /// meanwhile comes back as a replica of the new master.
    pub fn restart(&self, port: u16) {
        self.assert_private("restart");
        let node = self.proc(port);
        if node.service.is_running() {
            node.service.kill();
        }
        node.service.spawn();
        *lock(&node.before_fault) = None;
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        if let Err(why) = node
            .service
            .wait_ready(deadline, || ping_ready(node.port, None))
        {
            panic!("RedisCluster::restart({port}): {why}");
        }
        self.wait_converged();
    }

    /// SIGSTOP (`true`) / SIGCONT (`false`): a frozen node keeps its sockets
    /// open and answers nothing, like a hung host; once the node timeout has
    /// passed the cluster fails it over like a dead one. A thawed former
    /// master learns that it lost its slots.
    #[cfg(unix)]
    pub fn freeze(&self, port: u16, frozen: bool) {
        self.assert_private("freeze");
        let node = self.proc(port);
        if frozen {
            self.remember_before_fault(node);
        }
        node.service.freeze(frozen);
        node.frozen.store(frozen, Ordering::SeqCst);
    }

    /// After the master on `old_master` was killed, stopped or frozen: waits
    /// (bounded, 30 s) until one of its replicas serves all its slots, every
    /// running node reports `cluster_state:ok` and agrees on the slot map, and
    /// returns the new master. Takes about 2-3 s with the 1 s node timeout.
    /// Works however late it is called: the slots to look for are the ones
    /// the node served when the harness killed, stopped or froze it.
    pub fn wait_for_failover(&self, old_master: u16) -> ClusterNode {
        let before = lock(&self.proc(old_master).before_fault)
            .clone()
            .unwrap_or_else(|| self.node(old_master));
        assert!(
            before.is_master() && !before.slots.is_empty(),
            "RedisCluster::wait_for_failover: node {old_master} is not a master serving slots: {before:?}"
        );
        let slots = before.slots.clone();
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        let promoted = wait_for(CONVERGE_TIMEOUT, || {
            let view = self.live_nodes().find_map(|n| self.view_of(n.port).ok())?;
            view.into_iter().find(|n| {
                n.port != old_master
                    && n.is_master()
                    && !n.failed
                    && slots
                        .iter()
                        .all(|r| n.serves(*r.start()) && n.serves(*r.end()))
            })
        });
        let Some(promoted) = promoted else {
            panic!(
                "RedisCluster::wait_for_failover({old_master}): no replica took over slots {slots:?} within {CONVERGE_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
        };
        if let Err(why) = self.wait_converged_until(deadline) {
            panic!(
                "RedisCluster::wait_for_failover({old_master}): promoted {} but the cluster did not converge: {why}\n{}",
                promoted.port,
                self.diagnostics()
            );
        }
        self.node(promoted.port)
    }

    /// `CLUSTER FAILOVER` on the replica on `replica_port` (a coordinated
    /// hand-over: the old master becomes its replica) and waits (bounded)
    /// until it is master and the cluster has converged.
    pub fn manual_failover(&self, replica_port: u16) {
        self.assert_private("manual_failover");
        let replica = self.node(replica_port);
        assert_eq!(
            replica.role,
            Role::Replica,
            "RedisCluster::manual_failover: node {replica_port} is not a replica"
        );
        self.cmd(replica_port, &["CLUSTER", "FAILOVER"]);
        let promoted = wait_for(CONVERGE_TIMEOUT, || {
            let me = self.view_of(replica_port).ok()?;
            me.into_iter()
                .find(|n| n.port == replica_port && n.is_master() && !n.slots.is_empty())
        });
        if promoted.is_none() {
            panic!(
                "RedisCluster::manual_failover({replica_port}): not promoted within {CONVERGE_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
        }
        self.wait_converged();
    }

    // -- slot migration -------------------------------------------------------

    /// Moves `slot` to the master on `to`, online and with its keys: SETSLOT
    /// IMPORTING on the target, MIGRATING on the source, `CLUSTER
    /// GETKEYSINSLOT` + `MIGRATE … KEYS …` until the slot is empty on the
    /// source, SETSLOT NODE on every master; then waits (bounded) until every
    /// node agrees. See [`begin_slot_migration`](Self::begin_slot_migration)
    /// to act in the middle.
    pub fn move_slot(&self, slot: u16, to: u16) {
        self.begin_slot_migration(slot, to).finish();
    }

    /// The first half of [`move_slot`](Self::move_slot): the target is
    /// IMPORTING and the source MIGRATING, no key has moved yet. Clients now
    /// get `ASK` for keys the source no longer has; move keys with
    /// [`SlotMigration::migrate_key`] and complete with
    /// [`SlotMigration::finish`].
    pub fn begin_slot_migration(&self, slot: u16, to: u16) -> SlotMigration<'_> {
        self.assert_private("begin_slot_migration");
        let source = self.master_of_slot(slot);
        let target = self.node(to);
        assert!(
            target.is_master() && !target.failed,
            "RedisCluster::begin_slot_migration: node {to} is not a live master: {target:?}"
        );
        assert_ne!(
            source.port, to,
            "RedisCluster::begin_slot_migration: node {to} already serves slot {slot}"
        );
        let s = slot.to_string();
        self.cmd(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source.id]);
        self.cmd(
            source.port,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id],
        );
        SlotMigration {
            cluster: self,
            slot,
            source,
            target,
        }
    }

    /// Makes the node on `port` announce `announced` as its client port — a
    /// [`FaultProxy`](super::FaultProxy) in front of it, say — so that a cluster
    /// client, which follows the addresses the cluster gives, reaches it only through
    /// there; and waits (bounded, 10 s) until every running node gives that address.
    /// From then on the views ([`nodes`](Self::nodes), [`master_of_key`](Self::master_of_key),
    /// [`urls`](Self::urls), …) name the node by `announced`, while the methods that
    /// act on its process ([`kill`](Self::kill), …) still take its own `port`. Its
    /// cluster bus keeps its own port. Private clusters only.
    pub fn announce_port(&self, port: u16, announced: u16) {
        self.assert_private("announce_port");
        let id = value_text(&self.cmd(port, &["CLUSTER", "MYID"]), "CLUSTER MYID");
        let id = id.trim().to_owned();
        self.proc(port).announced.store(announced, Ordering::SeqCst);
        self.cmd(
            port,
            &[
                "CONFIG",
                "SET",
                "cluster-announce-port",
                &announced.to_string(),
            ],
        );
        let everywhere = wait_until(Duration::from_secs(10), || {
            self.live_nodes().all(|n| {
                self.view_of(n.port).is_ok_and(|view| {
                    view.iter()
                        .any(|seen| seen.id == id && seen.port == announced)
                })
            })
        });
        assert!(
            everywhere,
            "RedisCluster::announce_port({port}, {announced}): not seen by every node in 10 s\n{}",
            self.diagnostics()
        );
    }

    // -- convergence ----------------------------------------------------------

    /// Waits (bounded, 30 s) until every running, unfrozen node reports
    /// `cluster_state:ok` with all slots assigned, all of them agree on the
    /// slot map and on each other's roles, none of them flags another running
    /// node as failed, every running replica's link to its master is up, and
    /// every master's running replicas acknowledge a write (`WAIT`) — see
    /// [`replicas_acknowledge`](Self::replicas_acknowledge).
    pub fn wait_converged(&self) {
        if let Err(why) = self.wait_converged_until(Instant::now() + CONVERGE_TIMEOUT) {
            panic!(
                "RedisCluster: did not converge within {CONVERGE_TIMEOUT:?}: {why}\n{}",
                self.diagnostics()
            );
        }
    }

    fn wait_converged_until(&self, deadline: Instant) -> Result<(), String> {
        loop {
            let why = match self.check_converged() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_converged(&self) -> Result<(), String> {
        let live: Vec<&Node> = self.live_nodes().collect();
        if live.is_empty() {
            return Err("no running node".into());
        }
        let live_ports: Vec<u16> = live
            .iter()
            .flat_map(|n| [n.port, n.announced.load(Ordering::SeqCst)])
            .filter(|&port| port != 0)
            .collect();
        type Roles = Vec<(u16, Role, Option<String>)>;
        type SlotMap = Vec<(u16, u16, u16)>;
        let mut reference: Option<(u16, SlotMap, Roles)> = None;
        for node in &live {
            let port = node.port;
            let info = self
                .try_cmd(port, &["CLUSTER", "INFO"])
                .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
            let info = value_text(&info, "CLUSTER INFO");
            if info_field(&info, "cluster_state") != Some("ok") {
                return Err(format!("node {port}: cluster_state is not ok"));
            }
            if info_field(&info, "cluster_slots_assigned") != Some("16384") {
                return Err(format!("node {port}: not all slots assigned"));
            }
            let view = self.view_of(port)?;
            if view.len() != self.nodes.len() {
                return Err(format!(
                    "node {port} knows {} nodes, not {}",
                    view.len(),
                    self.nodes.len()
                ));
            }
            if let Some(bad) = view
                .iter()
                .find(|n| (n.failed || n.suspected) && live_ports.contains(&n.port))
            {
                return Err(format!(
                    "node {port} flags running node {} failed or suspected",
                    bad.port
                ));
            }
            let map = slot_map(&view);
            let mut roles: Roles = view
                .iter()
                .filter(|n| live_ports.contains(&n.port))
                .map(|n| (n.port, n.role, n.master_id.clone()))
                .collect();
            roles.sort_unstable_by_key(|r| r.0);
            match &reference {
                None => reference = Some((port, map, roles)),
                Some((ref_port, ref_map, ref_roles)) => {
                    if &map != ref_map {
                        return Err(format!(
                            "nodes {ref_port} and {port} disagree on the slot map \
                             (first, last, owner): {ref_map:?} vs {map:?}"
                        ));
                    }
                    if &roles != ref_roles {
                        return Err(format!(
                            "nodes {ref_port} and {port} disagree on roles: {ref_roles:?} vs {roles:?}"
                        ));
                    }
                }
            }
            if view
                .iter()
                .any(|n| node.named(n.port) && n.role == Role::Replica)
            {
                let repl = self
                    .try_cmd(port, &["INFO", "replication"])
                    .map_err(|e| format!("INFO replication on {port}: {e}"))?;
                let repl = value_text(&repl, "INFO replication");
                if info_field(&repl, "master_link_status") != Some("up") {
                    return Err(format!("replica {port}: link to its master is not up"));
                }
            }
        }
        let view = self.view_of(live[0].port)?;
        for master in view.iter().filter(|n| n.is_master() && !n.slots.is_empty()) {
            let replicas = view
                .iter()
                .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
                .filter(|n| live_ports.contains(&n.port))
                .count();
            if replicas > 0 && live_ports.contains(&master.port) {
                self.replicas_acknowledge(master, replicas)?;
            }
        }
        Ok(())
    }

    /// Whether `replicas` replicas of `master` acknowledge a write within 100 ms: a
    /// replica whose link is `up` may not be streamed to yet. After a diskless full
    /// sync the replica reports its link up and sends its first `REPLCONF ACK` at
    /// once; if that ACK reaches the master before the master has reaped the child
    /// that streamed the snapshot (its cron, every 100 ms), the master marks the
    /// replica online only at its *next* ACK, up to a second later ("Waiting for
    /// REPLCONF ACK from slave to enable streaming" in its log), and until then sends
    /// it nothing: every `WAIT` meanwhile counts 0 (seen as the flaky
    /// `min_replicas_waits_for_the_keys_own_master`, issue 21).
    fn replicas_acknowledge(&self, master: &ClusterNode, replicas: usize) -> Result<(), String> {
        let slot = *master.slots[0].start();
        let key = Self::key_in_slot(slot, "harness-replication-probe-");
        let port = master.port;
        let probe = || -> redis::RedisResult<i64> {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
                .get_connection_with_timeout(Duration::from_secs(5))?;
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(1000)
                .query::<()>(&mut con)?;
            let acked = redis::cmd("WAIT").arg(replicas).arg(100).query(&mut con)?;
            redis::cmd("DEL").arg(&key).query::<()>(&mut con)?;
            Ok(acked)
        };
        match probe() {
            Ok(acked) if acked >= replicas as i64 => Ok(()),
            Ok(acked) => Err(format!(
                "master {port}: a write reached {acked} of its {replicas} replicas"
            )),
            Err(e) => Err(format!("master {port}: replication probe: {e}")),
        }
    }

    // -- internals --------------------------------------------------------------

    fn proc(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.named(port))
            .unwrap_or_else(|| {
                panic!(
                    "RedisCluster: no node on port {port} (ports: {:?})",
                    self.ports()
                )
            })
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| !n.frozen.load(Ordering::SeqCst) && n.service.is_running())
    }

    /// Records how the cluster sees `node` now (if any running node answers).
    fn remember_before_fault(&self, node: &Node) {
        let seen = self
            .live_nodes()
            .find_map(|n| self.view_of(n.port).ok())
            .and_then(|view| view.into_iter().find(|n| node.named(n.port)));
        if seen.is_some() {
            *lock(&node.before_fault) = seen;
        }
    }

    fn any_live_port(&self) -> u16 {
        self.live_nodes()
            .next()
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("RedisCluster: no running node\n{}", self.diagnostics()))
    }

    fn assert_private(&self, what: &str) {
        assert!(
            !self.shared,
            "RedisCluster::{what} on the shared cluster would break the other tests that use it: \
             start a cluster of your own (RedisCluster::start)"
        );
    }

    /// `CLUSTER NODES` on `port`, parsed.
    fn view_of(&self, port: u16) -> Result<Vec<ClusterNode>, String> {
        let v = self
            .try_cmd(port, &["CLUSTER", "NODES"])
            .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
        Ok(parse_cluster_nodes(&value_text(&v, "CLUSTER NODES")))
    }

    /// Every node's process state, own view and log tail, for panic messages.
    fn diagnostics(&self) -> String {
        let mut out = String::from("cluster nodes:");
        for node in &self.nodes {
            let state = if !node.service.is_running() {
                "not running"
            } else if node.frozen.load(Ordering::SeqCst) {
                "frozen"
            } else {
                "running"
            };
            out.push_str(&format!(
                "\n--- node {} (bus {}, {state}) ---",
                node.port, node.bus_port
            ));
            if state == "running" {
                match self.try_cmd(node.port, &["CLUSTER", "NODES"]) {
                    Ok(v) => out.push_str(&format!(
                        "\nCLUSTER NODES:\n{}",
                        value_text(&v, "CLUSTER NODES").trim_end()
                    )),
                    Err(e) => out.push_str(&format!("\nCLUSTER NODES failed: {e}")),
                }
            }
            out.push_str(&format!("\nlog tail:\n{}", node.service.log_tail(10)));
        }
        out
    }
}

impl Node {
    fn new(dir: PathBuf) -> Node {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let port = free_port();
        let bus_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--cluster-port",
            &bus_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &dir.join("nodes.conf").to_string_lossy(),
            "--cluster-node-timeout",
            &NODE_TIMEOUT.as_millis().to_string(),
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-allow-replica-migration",
            "no",
            // Replicas sync at once instead of waiting 5 s for more to join.
            "--repl-diskless-sync-delay",
            "0",
            "--appendonly",
            "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--dir",
            &dir.to_string_lossy(),
            "--logfile",
            &dir.join("redis.log").to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let service = Service::new(
            format!("redis cluster node 127.0.0.1:{port} (bus {bus_port})"),
            (
                process::binary("LEASEHOLD_REDIS_SERVER", DEFAULT_REDIS_SERVER),
                "LEASEHOLD_REDIS_SERVER",
                "redis-server",
            ),
            args,
            dir.join("redis.log"),
            false,
        );
        Node {
            port,
            bus_port,
            dir,
            service,
            frozen: AtomicBool::new(false),
            before_fault: Mutex::new(None),
            announced: AtomicU16::new(0),
        }
    }

    /// Waits until the freshly spawned node answers PING. A node that exits
    /// early (a picked port was taken meanwhile) is replaced by one on new
    /// ports, up to 5 times.
    fn wait_ready_or_respawn(&mut self, deadline: Instant) {
        let mut attempts = 0;
        loop {
            let port = self.port;
            match self.service.wait_ready(deadline, || ping_ready(port, None)) {
                Ok(()) => return,
                Err(_) if attempts < 5 && Instant::now() < deadline => {
                    attempts += 1;
                    let _ = std::fs::remove_dir_all(&self.dir);
                    *self = Node::new(self.dir.clone());
                    self.service.spawn();
                }
                Err(why) => panic!("RedisCluster::start: {why}"),
            }
        }
    }
}

/// A slot migration in progress ([`RedisCluster::begin_slot_migration`]).
/// Dropping it unfinished leaves the slot MIGRATING/IMPORTING (clients keep
/// getting `ASK`), which is what a test of a stalled migration wants.
#[must_use = "a slot migration stays half done until finish() is called"]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    source: ClusterNode,
    target: ClusterNode,
}

impl SlotMigration<'_> {
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The master the slot is moving away from.
    pub fn source(&self) -> &ClusterNode {
        &self.source
    }

    /// The master the slot is moving to.
    pub fn target(&self) -> &ClusterNode {
        &self.target
    }

    /// Moves one key (which must hash to the slot) to the target now. Returns
    /// false if the source did not have it (`NOKEY`).
    pub fn migrate_key(&self, key: &str) -> bool {
        let slot = self.cluster.key_slot(key);
        assert_eq!(
            slot, self.slot,
            "SlotMigration::migrate_key: {key:?} hashes to slot {slot}, not {}",
            self.slot
        );
        let reply = self.migrate(&[key]);
        reply != "NOKEY"
    }

    /// Moves every key still on the source to the target, in batches of 100.
    /// Returns how many were moved.
    pub fn migrate_all_keys(&self) -> usize {
        let slot = self.slot.to_string();
        let batch = MIGRATE_BATCH.to_string();
        let mut moved = 0;
        loop {
            let keys = self.cluster.cmd(
                self.source.port,
                &["CLUSTER", "GETKEYSINSLOT", &slot, &batch],
            );
            let redis::Value::Array(keys) = keys else {
                panic!("CLUSTER GETKEYSINSLOT: unexpected reply {keys:?}");
            };
            if keys.is_empty() {
                return moved;
            }
            let keys: Vec<String> = keys
                .iter()
                .map(|k| value_text(k, "CLUSTER GETKEYSINSLOT"))
                .collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.migrate(&refs);
            moved += keys.len();
        }
    }

    /// `MIGRATE 127.0.0.1 <target> "" 0 5000 KEYS …` on the source.
    fn migrate(&self, keys: &[&str]) -> String {
        let target = self.target.port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &target, "", "0", "5000", "KEYS"];
        args.extend_from_slice(keys);
        value_text(&self.cluster.cmd(self.source.port, &args), "MIGRATE")
    }

    /// Moves the remaining keys, assigns the slot to the target on the
    /// target, the source and every other master (in that order), and waits
    /// (bounded) until every node agrees that the target serves the slot.
    pub fn finish(self) {
        self.migrate_all_keys();
        let slot = self.slot.to_string();
        let mut order = vec![self.target.port, self.source.port];
        for master in self.cluster.masters() {
            if !order.contains(&master.port) && self.cluster.is_running(master.port) {
                order.push(master.port);
            }
        }
        for port in order {
            self.cluster.cmd(
                port,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &self.target.id],
            );
        }
        let target = self.target.port;
        let slot = self.slot;
        let agreed = super::wait_until(CONVERGE_TIMEOUT, || {
            self.cluster.live_nodes().all(|n| {
                self.cluster.view_of(n.port).is_ok_and(|view| {
                    view.iter()
                        .find(|m| m.serves(slot))
                        .is_some_and(|m| m.port == target)
                })
            })
        });
        if !agreed {
            panic!(
                "SlotMigration::finish: nodes did not agree within {CONVERGE_TIMEOUT:?} that {target} serves slot {slot}\n{}",
                self.cluster.diagnostics()
            );
        }
        self.cluster.wait_converged();
    }
}

/// Parses `CLUSTER NODES` output:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let flags: Vec<&str> = fields[2].split(',').collect();
        let role = if flags.contains(&"master") {
            Role::Master
        } else {
            Role::Replica
        };
        let master_id = (fields[3] != "-").then(|| fields[3].to_string());
        let mut slots: Vec<RangeInclusive<u16>> = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                None => {
                    let n = s.parse().ok()?;
                    Some(n..=n)
                }
            })
            .collect();
        slots.sort_by_key(|r| *r.start());
        out.push(ClusterNode {
            port,
            id: fields[0].to_string(),
            role,
            master_id,
            slots,
            failed: flags.contains(&"fail"),
            suspected: flags.contains(&"fail?"),
        });
    }
    out
}

/// A view's slot map: `(first, last, owner port)` for maximal runs of slots
/// with the same owner, ascending. Unassigned slots are left out.
fn slot_map(view: &[ClusterNode]) -> Vec<(u16, u16, u16)> {
    let mut ranges: Vec<(u16, u16, u16)> = view
        .iter()
        .flat_map(|n| n.slots.iter().map(|r| (*r.start(), *r.end(), n.port)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16, u16)> = Vec::with_capacity(ranges.len());
    for (first, last, owner) in ranges {
        match merged.last_mut() {
            Some(prev) if prev.2 == owner && prev.1 + 1 == first => prev.1 = last,
            _ => merged.push((first, last, owner)),
        }
    }
    merged
}

/// See [`RedisCluster::hash_slot`].
fn hash_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % SLOTS
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}
