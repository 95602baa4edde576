#![allow(dead_code)]
//! What the criterion benches and `examples/bench_report.rs` measure, written once:
//! the contenders (leasehold, the yardsticks by hand with redis-rs, rslock; Redlock over
//! N servers against rslock's multi-server `LockManager`), the server-side costs of the
//! fenced acquire, the workloads, and the probes (CPU time, Redis command statistics).
//!
//! Included by path (`#[path = "common/mod.rs"] mod common;`), like `tests/support`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use leasehold::redlock::{Redlock, RedlockLock};
use leasehold::{Client, ExponentialBackoff, FixedInterval, NonFixedInterval, RetryStrategy};
use redis::aio::ConnectionManager;
use redis::{Script, Value};

/// The scripts the library ships, verbatim (protocol v2).
pub const ACQUIRE_LUA: &str = include_str!("../../src/store/redis/lua/acquire.lua");
pub const RELEASE_LUA: &str = include_str!("../../src/store/redis/lua/release.lua");

/// The minimal fenced lock by hand, the yardstick of the speed goals: `SET NX PX` and
/// `INCR` of a counter in one script (a token when set, 0 when held), released by
/// [`PLAIN_RELEASE_LUA`]. No re-arm by the same value, no record of aborted attempts.
pub const MINIMAL_FENCED_LUA: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"#;

/// What a careful user writes by hand to release and re-arm a `SET NX PX` lock: the
/// owner-checked `DEL` (check-and-delete) and `PEXPIRE`.
pub const PLAIN_RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;
pub const PLAIN_REFRESH_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// The client id of the by-hand uses of the shipped scripts (a client's random id, 16
/// hex digits in the names and attempt ids it sends).
pub const CLIENT_ID: u64 = 0x0123_4567_89ab_cdef;
/// An attempt id of the library's shape (`<client id>:<attempt number>`) and its number.
pub const ATTEMPT_ID: &str = "0123456789abcdef:1234567";
pub const ATTEMPT_SEQ: u64 = 1_234_567;
/// How much longer than its lock a key's state lives, as the library sends it (ms).
pub const STATE_MEMORY_MS: u64 = 3_600_000;

/// The library's default holder label: this host's name and the process id.
pub fn default_label() -> &'static str {
    static LABEL: LazyLock<String> = LazyLock::new(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        format!("{host}:{}", std::process::id())
    });
    &LABEL
}

/// The library's `function` of the shipped acquire script (Redis >= 7.0, `FUNCTION
/// LOAD`), built from the shipped script so that the two cannot drift apart.
pub fn function_library() -> String {
    format!(
        "#!lua name=leasehold_bench\n\
         redis.register_function('leasehold_bench_acquire', function(KEYS, ARGV)\n\
         {ACQUIRE_LUA}\nend)\n"
    )
}

/// Expiration used by every lock in the benches: long enough never to lapse mid-run.
pub const EXPIRATION: Duration = Duration::from_secs(10);
pub const EXPIRATION_MS: u64 = 10_000;
/// Per-attempt timeout for leasehold calls in the benches.
pub const TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Key names, as the library writes them (src/store/redis/keys.rs)
// ---------------------------------------------------------------------------

/// A lock key and the names that go with it, as the library sends them: its `state`,
/// this client's `aborted<client id>` record, the earlier layout's `fence` counter (read
/// by the acquire script when the state is gone; also the counter of the minimal fenced
/// script) and the `released` channel. Computed once per key, outside the timed loops.
#[derive(Debug, Clone)]
pub struct KeyNames {
    pub key: String,
    pub state: String,
    pub aborted: String,
    pub fence: String,
    pub released: String,
}

impl KeyNames {
    pub fn of(key: &str) -> KeyNames {
        KeyNames {
            key: key.to_owned(),
            state: sidecar(key, "state"),
            aborted: sidecar(key, &format!("aborted{CLIENT_ID:016x}")),
            fence: sidecar(key, "fence"),
            released: sidecar(key, "released"),
        }
    }
}

/// A sidecar name of `key` in its Redis Cluster slot: `key:suffix` for a key with a hash
/// tag, `key:suffix{N}` (N the smallest number that hashes to the key's slot) for a key
/// without `{`, `{N}:suffix:key` otherwise.
pub fn sidecar(key: &str, suffix: &str) -> String {
    let bytes = key.as_bytes();
    if hash_tag(bytes).is_some() {
        return format!("{key}:{suffix}");
    }
    let tag = SLOT_TAGS[usize::from(key_slot(bytes))];
    if key.contains('{') {
        format!("{{{tag}}}:{suffix}:{key}")
    } else {
        format!("{key}:{suffix}{{{tag}}}")
    }
}

/// For every cluster slot, the smallest number whose decimal text hashes to it.
static SLOT_TAGS: LazyLock<Vec<u32>> = LazyLock::new(|| {
    let mut tags = vec![u32::MAX; 16384];
    let mut missing = tags.len();
    for n in 0u32.. {
        let slot = usize::from(crc16(n.to_string().as_bytes()) % 16384);
        if tags[slot] == u32::MAX {
            tags[slot] = n;
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    tags
});

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % 16384
}

/// CRC16/XMODEM, bit by bit (only used to build the tag table once).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
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

/// A multiplexed connection with auto-reconnect, as the library opens it.
pub async fn connection(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("redis url");
    ConnectionManager::new(client).await.expect("connect")
}

/// The lock round trips written by hand with redis-rs on one `ConnectionManager`, the way
/// a careful user would: scripts hashed once, sent as `EVALSHA` through
/// `Script::invoke_async` (which reloads on `NOSCRIPT`).
#[derive(Clone)]
pub struct Raw {
    pub conn: ConnectionManager,
    scripts: Arc<Scripts>,
}

struct Scripts {
    acquire: Script,
    minimal_fenced: Script,
    release: Script,
    plain_release: Script,
    plain_refresh: Script,
}

/// The acquires whose server-side cost the report compares (each by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireDesign {
    /// `SET key val NX PX ttl`: no fencing token, no idempotent re-arm (the floor).
    SetNxPx,
    /// [`MINIMAL_FENCED_LUA`]: `SET NX PX` + `INCR` in one script (the yardstick).
    MinimalFenced,
    /// The shipped `acquire.lua` by `EVALSHA`, as the library sends it by default
    /// (holder label = host:pid: a time and the label are recorded in the state).
    Script,
    /// The same with the holder label off (`holder_label("")`).
    ScriptNoLabel,
    /// The shipped script body as a Redis function, by `FCALL` (label on).
    Function,
    /// `MULTI; SET NX PX; INCR; EXEC`: one round trip, but INCRs on every attempt and
    /// does not re-arm or recognise its own value: breaks the contract, reference only.
    Multi,
}

impl AcquireDesign {
    pub const ALL: [AcquireDesign; 6] = [
        AcquireDesign::SetNxPx,
        AcquireDesign::MinimalFenced,
        AcquireDesign::Script,
        AcquireDesign::ScriptNoLabel,
        AcquireDesign::Function,
        AcquireDesign::Multi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AcquireDesign::SetNxPx => "SET NX PX (no fencing)",
            AcquireDesign::MinimalFenced => "minimal fenced script: SET NX PX + INCR",
            AcquireDesign::Script => "acquire.lua (shipped), holder label on (default)",
            AcquireDesign::ScriptNoLabel => "acquire.lua (shipped), holder label off",
            AcquireDesign::Function => "acquire.lua as an FCALL function, label on",
            AcquireDesign::Multi => "MULTI SET NX PX + INCR (breaks semantics)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            AcquireDesign::SetNxPx => "set_nx_px",
            AcquireDesign::MinimalFenced => "minimal_fenced",
            AcquireDesign::Script => "script",
            AcquireDesign::ScriptNoLabel => "script_no_label",
            AcquireDesign::Function => "fcall",
            AcquireDesign::Multi => "multi",
        }
    }

    /// The command name whose `INFO commandstats` entry carries this design's acquire.
    pub fn command(self) -> &'static str {
        match self {
            AcquireDesign::SetNxPx => "set",
            AcquireDesign::MinimalFenced | AcquireDesign::Script | AcquireDesign::ScriptNoLabel => {
                "evalsha"
            }
            AcquireDesign::Function => "fcall",
            AcquireDesign::Multi => "exec",
        }
    }
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let raw = Raw {
            conn: connection(url).await,
            scripts: Arc::new(Scripts {
                acquire: Script::new(ACQUIRE_LUA),
                minimal_fenced: Script::new(MINIMAL_FENCED_LUA),
                release: Script::new(RELEASE_LUA),
                plain_release: Script::new(PLAIN_RELEASE_LUA),
                plain_refresh: Script::new(PLAIN_REFRESH_LUA),
            }),
        };
        let mut conn = raw.conn.clone();
        let _: Value = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(function_library())
            .query_async(&mut conn)
            .await
            .expect("FUNCTION LOAD (Redis >= 7)");
        raw
    }

    /// `SET key val NX PX ttl`: true when set.
    pub async fn set_nx_px(&self, key: &str, val: &str, ttl_ms: u64) -> bool {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("SET")
            .arg(key)
            .arg(val)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .expect("SET NX PX");
        matches!(reply, Value::Okay)
    }

    /// The minimal fenced acquire ([`MINIMAL_FENCED_LUA`]): the token, 0 when held.
    pub async fn minimal_fenced_acquire(&self, keys: &KeyNames, val: &str, ttl_ms: u64) -> i64 {
        self.acquire_with(AcquireDesign::MinimalFenced, keys, val, ttl_ms)
            .await
    }

    /// The shipped `acquire.lua` with the library's keys and arguments (label on, as by
    /// default): the token, 0 when held.
    pub async fn shipped_acquire(&self, keys: &KeyNames, val: &str, ttl_ms: u64) -> i64 {
        self.acquire_with(AcquireDesign::Script, keys, val, ttl_ms)
            .await
    }

    /// One acquire attempt through `design`: a token (> 0) when taken, 0 when held.
    pub async fn acquire_with(
        &self,
        design: AcquireDesign,
        keys: &KeyNames,
        val: &str,
        ttl_ms: u64,
    ) -> i64 {
        let mut conn = self.conn.clone();
        let key = keys.key.as_str();
        let label = match design {
            AcquireDesign::ScriptNoLabel => "",
            _ => default_label(),
        };
        let reply: i64 = match design {
            AcquireDesign::SetNxPx => return i64::from(self.set_nx_px(key, val, ttl_ms).await),
            AcquireDesign::MinimalFenced => self
                .scripts
                .minimal_fenced
                .key(key)
                .key(&keys.fence)
                .arg(val)
                .arg(ttl_ms)
                .invoke_async(&mut conn)
                .await
                .expect("minimal fenced script"),
            // KEYS: lock key, state, this client's aborted record, the earlier layout's
            // fence counter; ARGV: value, ms, attempt id, attempt number, state memory
            // ms, holder label (src/store/redis/scripts.rs `acquire`).
            AcquireDesign::Script | AcquireDesign::ScriptNoLabel => self
                .scripts
                .acquire
                .key(key)
                .key(&keys.state)
                .key(&keys.aborted)
                .key(&keys.fence)
                .arg(val)
                .arg(ttl_ms)
                .arg(ATTEMPT_ID)
                .arg(ATTEMPT_SEQ)
                .arg(STATE_MEMORY_MS)
                .arg(label)
                .invoke_async(&mut conn)
                .await
                .expect("acquire.lua"),
            AcquireDesign::Function => redis::cmd("FCALL")
                .arg("leasehold_bench_acquire")
                .arg(4)
                .arg(key)
                .arg(&keys.state)
                .arg(&keys.aborted)
                .arg(&keys.fence)
                .arg(val)
                .arg(ttl_ms)
                .arg(ATTEMPT_ID)
                .arg(ATTEMPT_SEQ)
                .arg(STATE_MEMORY_MS)
                .arg(label)
                .query_async(&mut conn)
                .await
                .expect("FCALL"),
            AcquireDesign::Multi => {
                let (set, token): (Value, i64) = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(val)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .cmd("INCR")
                    .arg(&keys.fence)
                    .query_async(&mut conn)
                    .await
                    .expect("MULTI");
                return if matches!(set, Value::Okay) { token } else { 0 };
            }
        };
        // The shipped script answers a held key with -2 - its time to live (and a
        // token as decimal text, which redis-rs parses).
        reply.max(0)
    }

    /// Owner-checked release of a `SET NX PX` lock (check-and-delete: `GET` = value,
    /// then `DEL`): true when deleted.
    pub async fn release(&self, key: &str, val: &str) -> bool {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .plain_release
            .key(key)
            .arg(val)
            .invoke_async(&mut conn)
            .await
            .expect("release script");
        n == 1
    }

    /// The shipped `release.lua` as the library sends it on one server with release
    /// notifications on (the default): `PUBLISH` on the key's `released` channel. True
    /// when the value held the key.
    pub async fn shipped_release(&self, keys: &KeyNames, val: &str) -> bool {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .release
            .key(&keys.key)
            .arg(val)
            .arg("p")
            .arg(&keys.released)
            .invoke_async(&mut conn)
            .await
            .expect("release.lua");
        n == 1
    }

    /// Owner-checked re-arm of a `SET NX PX` lock: true when re-armed.
    pub async fn refresh(&self, key: &str, val: &str, ttl_ms: u64) -> bool {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .plain_refresh
            .key(key)
            .arg(val)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await
            .expect("refresh script");
        n == 1
    }
}

/// One uncontended critical section's worth of lock traffic: acquire + release.
#[derive(Clone)]
pub enum Contender {
    /// `Client::try_lock` + `Lock::unlock` on Redis, default settings (holder label on:
    /// host:pid, recorded with a time in the key's state).
    Leasehold(Client),
    /// The same with `ClientBuilder::holder_label("")`: no label, no time recorded.
    LeaseholdNoLabel(Client),
    /// The same on `Client::from_connection` with a `ConnectionManager` built without
    /// redis-rs' default 500 ms response timeout (one timer per call fewer).
    LeaseholdNoResponseTimeout(Client),
    /// `SET NX PX` + an owner-checked `DEL` script by `EVALSHA`, by hand.
    RawSetNx(Raw),
    /// The minimal fenced lock by hand: `SET NX PX` + `INCR` in one script, check-and-
    /// delete unlock (the yardstick).
    FencedByHand(Raw),
    /// The shipped `acquire.lua` + `release.lua` by `EVALSHA`, by hand, with the keys
    /// and arguments the library sends by default.
    ShippedByHand(Raw),
    /// rslock 0.10 `LockManager::lock` + `unlock` (one server).
    Rslock(Arc<rslock::LockManager>),
    /// `Client::try_lock` + `Lock::unlock` on `memory://`.
    Memory(Client),
}

impl Contender {
    pub fn id(&self) -> &'static str {
        match self {
            Contender::Leasehold(_) => "leasehold",
            Contender::LeaseholdNoLabel(_) => "leasehold_no_label",
            Contender::LeaseholdNoResponseTimeout(_) => "leasehold_no_response_timeout",
            Contender::RawSetNx(_) => "raw_set_nx_px",
            Contender::FencedByHand(_) => "fenced_by_hand",
            Contender::ShippedByHand(_) => "shipped_scripts_by_hand",
            Contender::Rslock(_) => "rslock",
            Contender::Memory(_) => "leasehold_memory",
        }
    }

    /// All of them on the server at `url`.
    pub async fn all(url: &str) -> Vec<Contender> {
        let raw = Raw::connect(url).await;
        let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
        let no_response_timeout =
            ConnectionManager::new_with_config(redis::Client::open(url).expect("url"), config)
                .await
                .expect("connect");
        vec![
            Contender::Leasehold(Client::open(url).await.expect("leasehold client")),
            Contender::LeaseholdNoLabel(
                Client::builder()
                    .holder_label("")
                    .open(url)
                    .await
                    .expect("leasehold client without a label"),
            ),
            Contender::LeaseholdNoResponseTimeout(Client::from_connection(no_response_timeout)),
            Contender::RawSetNx(raw.clone()),
            Contender::FencedByHand(Raw::connect(url).await),
            Contender::ShippedByHand(Raw::connect(url).await),
            Contender::Rslock(Arc::new(rslock::LockManager::new(vec![url.to_owned()]))),
            Contender::Memory(Client::memory()),
        ]
    }

    /// Acquire `keys.key` for `val` (uncontended: must succeed), then release it.
    pub async fn lock_unlock(&self, keys: &KeyNames, val: &str) {
        assert!(
            self.try_cycle(keys, val).await,
            "try_lock of a free key: NotObtained"
        );
    }

    /// [`lock_unlock`](Contender::lock_unlock), but a leasehold `try_lock` of the free
    /// key that returns `NotObtained` is counted (false), not a panic: with many tasks
    /// on one client it happens (a grant is not believed when a release of another pair
    /// in the same group of the client's release marks was sent meanwhile, three times
    /// in a row), and the throughput section reports how often.
    pub async fn try_cycle(&self, keys: &KeyNames, val: &str) -> bool {
        let key = keys.key.as_str();
        match self {
            Contender::Leasehold(c)
            | Contender::LeaseholdNoLabel(c)
            | Contender::LeaseholdNoResponseTimeout(c)
            | Contender::Memory(c) => {
                let lock = match c.try_lock(key, val, EXPIRATION).await {
                    Ok(lock) => lock,
                    Err(e) if e.is_not_obtained() => return false,
                    Err(e) => panic!("try_lock: {e}"),
                };
                lock.unlock().await.expect("unlock");
            }
            Contender::RawSetNx(raw) => {
                assert!(raw.set_nx_px(key, val, EXPIRATION_MS).await, "SET NX PX");
                assert!(raw.release(key, val).await, "release");
            }
            Contender::FencedByHand(raw) => {
                assert!(
                    raw.minimal_fenced_acquire(keys, val, EXPIRATION_MS).await > 0,
                    "acquire"
                );
                assert!(raw.release(key, val).await, "release");
            }
            Contender::ShippedByHand(raw) => {
                assert!(
                    raw.shipped_acquire(keys, val, EXPIRATION_MS).await > 0,
                    "acquire"
                );
                assert!(raw.shipped_release(keys, val).await, "release");
            }
            Contender::Rslock(manager) => {
                let lock = manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
        true
    }
}

/// Run exactly `ops` lock+unlock cycles spread over `tasks` concurrent tasks, each on
/// its own key; returns the wall time. Meant for a multi-thread runtime. A cycle whose
/// `try_lock` of the free key returned `NotObtained` counts as a cycle, and is reported
/// on stderr.
pub async fn throughput_run(contender: &Contender, tasks: usize, ops: u64) -> Duration {
    let tasks_u64 = tasks as u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks_u64)
        .map(|t| {
            let contender = contender.clone();
            let mine = ops / tasks_u64 + u64::from(t < ops % tasks_u64);
            tokio::spawn(async move {
                let keys = KeyNames::of(&format!("tp:{}:{t}", contender.id()));
                let val = format!("v{t}");
                let mut refused = 0u64;
                for _ in 0..mine {
                    refused += u64::from(!contender.try_cycle(&keys, &val).await);
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for h in handles {
        refused += h.await.expect("throughput task");
    }
    let took = started.elapsed();
    if refused > 0 {
        eprintln!(
            "{}: {refused} of {ops} try_lock calls on a free key returned NotObtained",
            contender.id()
        );
    }
    took
}

/// Run lock+unlock cycles on `tasks` tasks (distinct keys) for `window`; returns the
/// cycles completed within the window, the elapsed time, all cycles completed
/// (including the ones in flight when the window closed), and of those, the cycles
/// whose `try_lock` of the free key returned `NotObtained` (not counted as completed).
pub async fn throughput_window(
    contender: &Contender,
    tasks: usize,
    window: Duration,
) -> (u64, Duration, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (contender, stop, done) = (contender.clone(), stop.clone(), done.clone());
            let refused = refused.clone();
            tokio::spawn(async move {
                let keys = KeyNames::of(&format!("tpw:{}:{t}", contender.id()));
                let val = format!("v{t}");
                while !stop.load(Ordering::Relaxed) {
                    if contender.try_cycle(&keys, &val).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for h in handles {
        h.await.expect("throughput task");
    }
    (
        counted,
        elapsed,
        done.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

/// The retry strategies compared under contention, each retrying without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fixed,
    NonFixed,
    Exponential,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Fixed, Strategy::NonFixed, Strategy::Exponential];
    /// The interval of the fixed and jittered strategies; the exponential one starts at
    /// half of it and is capped at 16 times it.
    pub const INTERVAL: Duration = Duration::from_millis(2);

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed => "FixedInterval(2 ms)",
            Strategy::NonFixed => "NonFixedInterval(2 ms)",
            Strategy::Exponential => "ExponentialBackoff(1..32 ms)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Strategy::Fixed => "fixed",
            Strategy::NonFixed => "nonfixed",
            Strategy::Exponential => "exponential",
        }
    }

    pub fn build(self) -> Box<dyn RetryStrategy + Send> {
        match self {
            Strategy::Fixed => Box::new(FixedInterval::new(Self::INTERVAL, u32::MAX)),
            Strategy::NonFixed => Box::new(NonFixedInterval::new(Self::INTERVAL, u32::MAX)),
            Strategy::Exponential => Box::new(
                ExponentialBackoff::new(Self::INTERVAL / 2, Self::INTERVAL * 16)
                    .with_max_retries(u32::MAX),
            ),
        }
    }
}

/// Who contends for the one key.
#[derive(Clone)]
pub enum ContentionSide {
    /// `Client::lock` with the strategy (waiters woken on release: hand-off).
    Leasehold(Client),
    /// The same with `ClientBuilder::notify(false)`: waiters poll under the strategy.
    LeaseholdPolling(Client),
    /// `SET NX PX` in a loop, sleeping the strategy's delays in between, + `release.lua`.
    Raw(Raw),
    /// `Redlock::lock` with the strategy, over N servers.
    Redlock(Redlock),
    /// rslock 0.10's `LockManager::lock` over the same servers, retrying without end
    /// after its own random delay (see [`rslock_contender`]); the strategy is ignored.
    Rslock(Arc<rslock::LockManager>),
}

/// A lock held by one side of a contention run.
pub enum Held {
    Lock(leasehold::Lock),
    Redlock(RedlockLock),
    Rslock(rslock::Lock),
    /// Raw `SET NX PX`: released by key and value.
    Raw,
}

impl ContentionSide {
    pub fn id(&self) -> &'static str {
        match self {
            ContentionSide::Leasehold(_) => "leasehold",
            ContentionSide::LeaseholdPolling(_) => "leasehold_polling",
            ContentionSide::Raw(_) => "raw_set_nx_px",
            ContentionSide::Redlock(_) => "leasehold_redlock",
            ContentionSide::Rslock(_) => "rslock",
        }
    }

    /// Acquire `key` for `val`, retrying under `strategy` without end.
    async fn acquire(&self, key: &str, val: &str, strategy: Strategy) -> Held {
        match self {
            ContentionSide::Leasehold(c) | ContentionSide::LeaseholdPolling(c) => Held::Lock(
                c.lock(key, val, EXPIRATION, TIMEOUT, strategy.build())
                    .await
                    .expect("lock under contention"),
            ),
            ContentionSide::Redlock(r) => Held::Redlock(
                r.lock(key, val, EXPIRATION, REDLOCK_TIMEOUT, strategy.build())
                    .await
                    .expect("redlock under contention"),
            ),
            ContentionSide::Rslock(manager) => Held::Rslock(
                manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock under contention"),
            ),
            ContentionSide::Raw(raw) => {
                let mut delays = strategy.build();
                while !raw.set_nx_px(key, val, EXPIRATION_MS).await {
                    let delay = delays.next_delay().expect("unbounded strategy");
                    tokio::time::sleep(delay).await;
                }
                Held::Raw
            }
        }
    }

    async fn release(&self, lock: Held, key: &str, val: &str) {
        match (self, lock) {
            (_, Held::Lock(lock)) => lock.unlock().await.expect("unlock under contention"),
            (_, Held::Redlock(lock)) => lock.unlock().await.expect("unlock under contention"),
            (ContentionSide::Rslock(manager), Held::Rslock(lock)) => manager.unlock(&lock).await,
            (ContentionSide::Raw(raw), Held::Raw) => {
                assert!(raw.release(key, val).await, "release under contention")
            }
            _ => unreachable!("each side holds its own kind of lock"),
        }
    }

    async fn del(&self, key: &str) {
        match self {
            ContentionSide::Raw(raw) => {
                let mut conn = raw.conn.clone();
                let _: Value = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
            }
            // A cancelled attempt that may have landed is released by the client itself
            // (rslock: its keys expire; the next run uses a fresh key).
            ContentionSide::Leasehold(_)
            | ContentionSide::LeaseholdPolling(_)
            | ContentionSide::Redlock(_)
            | ContentionSide::Rslock(_) => {}
        }
    }
}

/// Result of one contention window.
#[derive(Debug, Clone, Default)]
pub struct ContentionStats {
    pub acquisitions: u64,
    pub elapsed: Duration,
    /// Release started → next holder's lock returned, per hand-over.
    pub handoffs: Vec<Duration>,
    pub per_task: Vec<u64>,
}

/// When a contention run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this much wall time.
    Elapsed(Duration),
    /// Once this many acquisitions happened (all tasks together).
    Acquisitions(u64),
}

/// `tasks` tasks contend for one key until `until`: each acquires (retrying under
/// `strategy`), holds the key for `hold`, releases it, then waits `think` before the
/// next attempt.
pub async fn contention_run(
    side: &ContentionSide,
    key: &str,
    tasks: usize,
    strategy: Strategy,
    hold: Duration,
    think: Duration,
    until: Until,
) -> ContentionStats {
    let limit = match until {
        Until::Elapsed(_) => u64::MAX,
        Until::Acquisitions(n) => n.max(1),
    };
    let total = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let epoch = Instant::now();
    // Nanoseconds since `epoch` at which the last release started (0: none yet).
    let last_release = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let side = side.clone();
            let key = key.to_owned();
            let (last_release, stop, stopped) =
                (last_release.clone(), stop.clone(), stopped.clone());
            let (total, reached) = (total.clone(), reached.clone());
            tokio::spawn(async move {
                let val = format!("task-{t}");
                let mut handoffs = Vec::new();
                let mut count = 0u64;
                loop {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let lock = tokio::select! {
                        lock = side.acquire(&key, &val, strategy) => lock,
                        _ = stop.notified() => break,
                    };
                    let now = epoch.elapsed().as_nanos() as u64;
                    if stopped.load(Ordering::SeqCst) {
                        side.release(lock, &key, &val).await;
                        break;
                    }
                    let previous = last_release.load(Ordering::SeqCst);
                    if previous != 0 {
                        handoffs.push(Duration::from_nanos(now.saturating_sub(previous)));
                    }
                    count += 1;
                    if total.fetch_add(1, Ordering::SeqCst) + 1 == limit {
                        reached.notify_one();
                    }
                    tokio::time::sleep(hold).await;
                    last_release.store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
                    side.release(lock, &key, &val).await;
                    if !think.is_zero() {
                        tokio::time::sleep(think).await;
                    }
                }
                (count, handoffs)
            })
        })
        .collect();
    match until {
        Until::Elapsed(window) => tokio::time::sleep(window).await,
        Until::Acquisitions(_) => reached.notified().await,
    }
    stopped.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    let elapsed = epoch.elapsed();
    let mut stats = ContentionStats {
        elapsed,
        ..ContentionStats::default()
    };
    for h in handles {
        // A task mid-critical-section when the window closed finishes its cycle; one
        // mid-acquire was cancelled by `stop`.
        let (count, handoffs) = h.await.expect("contention task");
        stats.acquisitions += count;
        stats.per_task.push(count);
        stats.handoffs.extend(handoffs);
    }
    // A raw attempt cancelled by `stop` may have landed after the window closed.
    side.del(key).await;
    stats
}

/// Percentile (0..=100) of a sorted slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median of `values` (upper median for even counts is fine at these sample sizes;
/// we take the mean of the two middle values).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------
// Redlock: N independent servers
// ---------------------------------------------------------------------------

/// Per-attempt timeout of the Redlock contenders (every node answers well within it).
pub const REDLOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// The retry delay given to rslock under contention: it sleeps a uniformly random whole
/// number of milliseconds in `0..5`, mean 2 ms — the mean of the strategies leasehold
/// runs with ([`Strategy::INTERVAL`]).
pub const RSLOCK_RETRY_DELAY: Duration = Duration::from_millis(5);

/// One uncontended lock + unlock over N servers, or over one as the baseline.
#[derive(Clone)]
pub enum QuorumContender {
    /// leasehold on one Redis server: the baseline of the Redlock goal.
    Single(Client),
    /// `Redlock::try_lock` + `RedlockLock::unlock` over `n` servers.
    Redlock(Redlock, usize),
    /// rslock 0.10 `LockManager::lock` + `unlock` over the same `n` servers.
    Rslock(Arc<rslock::LockManager>, usize),
}

impl QuorumContender {
    pub fn id(&self) -> String {
        match self {
            QuorumContender::Single(_) => "leasehold_single".to_owned(),
            QuorumContender::Redlock(_, n) => format!("redlock_{n}"),
            QuorumContender::Rslock(_, n) => format!("rslock_{n}"),
        }
    }

    /// leasehold on the first server, then Redlock and rslock over the first 3 and over
    /// all 5 of `urls`.
    pub async fn all(urls: &[String]) -> Vec<QuorumContender> {
        let mut all = vec![QuorumContender::Single(
            Client::open(&urls[0]).await.expect("leasehold client"),
        )];
        for n in [3, 5] {
            all.push(QuorumContender::Redlock(redlock(&urls[..n]).await, n));
            all.push(QuorumContender::Rslock(
                Arc::new(rslock::LockManager::new(urls[..n].to_vec())),
                n,
            ));
        }
        all
    }

    /// Acquire `key` for `val` (uncontended: must succeed), then release it.
    pub async fn lock_unlock(&self, key: &str, val: &str) {
        match self {
            QuorumContender::Single(c) => {
                let lock = c.try_lock(key, val, EXPIRATION).await.expect("try_lock");
                lock.unlock().await.expect("unlock");
            }
            QuorumContender::Redlock(r, _) => {
                let lock = r.try_lock(key, val, EXPIRATION).await.expect("redlock");
                lock.unlock().await.expect("unlock");
            }
            QuorumContender::Rslock(manager, _) => {
                let lock = manager
                    .lock(key.as_bytes(), EXPIRATION)
                    .await
                    .expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
    }
}

/// A Redlock over `urls`, with [`REDLOCK_TIMEOUT`] as its default timeout.
pub async fn redlock(urls: &[String]) -> Redlock {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Redlock::builder()
        .default_timeout(REDLOCK_TIMEOUT)
        .open(&urls)
        .await
        .expect("redlock")
}

/// An rslock `LockManager` over `urls` that retries without end under contention.
pub fn rslock_contender(urls: &[String]) -> Arc<rslock::LockManager> {
    let mut manager = rslock::LockManager::new(urls.to_vec());
    manager.set_retry(u32::MAX, RSLOCK_RETRY_DELAY);
    Arc::new(manager)
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

/// CPU time (user + system) consumed so far by every live thread of process `pid`
/// (`"self"` for this one), from `/proc/PID/task/*/schedstat` (nanoseconds); falls back
/// to `/proc/PID/stat` (clock ticks of 10 ms) where schedstat is missing.
pub fn cpu_time(pid: &str) -> Duration {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path)
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
            {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return Duration::from_nanos(total);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The redis-server's process id (`INFO server`).
pub async fn server_pid(conn: &mut ConnectionManager) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .expect("INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|s| s.trim().to_owned())
        .expect("process_id in INFO server")
}

/// `(calls, usec)` of one command from `INFO commandstats` (0, 0 when never called).
pub async fn command_stats(conn: &mut ConnectionManager, command: &str) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("calls="), field("usec="))
}

/// Commands the server has run so far, all commands together (`INFO commandstats`).
pub async fn total_calls(conn: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Median round trip of a `PING` on `conn`, over `n` pings.
pub async fn ping_rtt(conn: &mut ConnectionManager, n: usize) -> Duration {
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(conn).await.expect("PING");
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[n / 2]
}

/// Renewal at scale: `n` keys held and renewed every `interval`, by leasehold's
/// `auto_refresh` or by one hand-written tokio task per key.
pub enum Renewers {
    Leasehold {
        locks: Vec<leasehold::Lock>,
        renewals: Vec<leasehold::AutoRefresh>,
    },
    ByHand {
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

/// Acquire `n` keys `prefix:i` through `client` (256 at a time).
pub async fn acquire_many(client: &Client, prefix: &str, n: usize) -> Vec<leasehold::Lock> {
    let mut locks = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let batch = futures::future::join_all(chunk.iter().map(|i| {
            let client = client.clone();
            let key = format!("{prefix}:{i}");
            async move {
                client
                    .lock(
                        &key,
                        "renewer",
                        RENEW_EXPIRATION,
                        TIMEOUT,
                        leasehold::NoRetry,
                    )
                    .await
                    .expect("acquire for renewal")
            }
        }))
        .await;
        locks.extend(batch);
    }
    locks
}

/// Expiration and interval of the renewal benchmark.
pub const RENEW_EXPIRATION: Duration = Duration::from_secs(5);
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// Start leasehold renewal of every lock (all at once: their ticks coincide).
pub fn start_auto_refresh(locks: &[leasehold::Lock]) -> Vec<leasehold::AutoRefresh> {
    locks
        .iter()
        .map(|l| {
            l.auto_refresh(RENEW_INTERVAL, RENEW_EXPIRATION, TIMEOUT, 3)
                .expect("auto_refresh")
        })
        .collect()
}

/// Set `n` keys `prefix:i` with `SET PX` and renew each from its own task by hand
/// (`tokio::time::interval` + `refresh.lua`), the minimal correct renewer.
pub async fn by_hand_renewers(
    raw: &Raw,
    prefix: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ttl_ms = RENEW_EXPIRATION.as_millis() as u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        futures::future::join_all(chunk.iter().map(|i| {
            let key = format!("{prefix}:{i}");
            async move { assert!(raw.set_nx_px(&key, "renewer", ttl_ms).await) }
        }))
        .await;
    }
    (0..n)
        .map(|i| {
            let raw = raw.clone();
            let key = format!("{prefix}:{i}");
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + RENEW_INTERVAL;
                let mut ticks = tokio::time::interval_at(start, RENEW_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if !raw.refresh(&key, "renewer", ttl_ms).await {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// What renewals already running cost over `window`: (renewals, client CPU, server
/// CPU, wall). Renewals are counted by the server (`EVALSHA` calls in `INFO
/// commandstats`; the probes themselves are `INFO` calls, so the count is exact).
pub async fn renewal_window(
    conn: &mut ConnectionManager,
    server_pid: &str,
    window: Duration,
) -> (u64, Duration, Duration, Duration) {
    let (calls0, _) = command_stats(conn, "evalsha").await;
    let (cpu0, srv0, t0) = (cpu_time("self"), cpu_time(server_pid), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, srv1, wall) = (cpu_time("self"), cpu_time(server_pid), t0.elapsed());
    let (calls1, _) = command_stats(conn, "evalsha").await;
    (calls1 - calls0, cpu1 - cpu0, srv1 - srv0, wall)
}

/// A multi-thread runtime with two workers (the machine's cores).
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[cfg(feature = "postgres")]
pub mod postgres;

/// etcd (feature `etcd`): leasehold against etcd's own lock service, and the hand-off
/// of its fair wait.
#[cfg(feature = "etcd")]
pub mod etcd {
    use super::{EXPIRATION, TIMEOUT};
    use leasehold::Client;

    /// The expiration of every etcd lock here, in whole seconds.
    pub const TTL: i64 = EXPIRATION.as_secs() as i64;

    /// etcd's lock service (`v3lockpb.Lock`/`Unlock`, through etcd-client), the way it is
    /// used for a lock that expires on its own: a lease per lock.
    pub struct LockService {
        client: etcd_client::Client,
        /// A lease granted once, for the session pattern.
        session: i64,
    }

    impl LockService {
        pub async fn connect(endpoint: &str) -> LockService {
            let mut client = etcd_client::Client::connect([endpoint], None)
                .await
                .expect("etcd-client");
            // A session's lease lives as long as its client keeps it alive: an hour
            // stands in for the keep-alives.
            let session = client.lease_grant(3600, None).await.expect("lease").id();
            LockService { client, session }
        }

        /// A lease of [`TTL`], `Lock` on it, `Unlock`, revoke: the lease-per-lock
        /// equivalent of a leasehold lock (4 round trips).
        pub async fn lock_unlock_own_lease(&self, name: &str) {
            let mut c = self.client.clone();
            let lease = c.lease_grant(TTL, None).await.expect("grant").id();
            let options = etcd_client::LockOptions::new().with_lease(lease);
            let locked = c.lock(name, Some(options)).await.expect("lock");
            c.unlock(locked.key()).await.expect("unlock");
            c.lease_revoke(lease).await.expect("revoke");
        }

        /// `Lock` without a lease + `Unlock`: etcd-client's plain call. The server grants
        /// a 60 s session lease per call (never revoked: it expires), so each lock
        /// lasts at most 60 s.
        pub async fn lock_unlock_plain(&self, name: &str) {
            let mut c = self.client.clone();
            let locked = c.lock(name, None).await.expect("lock");
            c.unlock(locked.key()).await.expect("unlock");
        }

        /// `Lock` + `Unlock` on one lease granted up front (etcd's session pattern: every
        /// lock of the client shares one lease, 2 round trips).
        pub async fn lock_unlock_session(&self, name: &str) {
            let mut c = self.client.clone();
            let options = etcd_client::LockOptions::new().with_lease(self.session);
            let locked = c.lock(name, Some(options)).await.expect("lock");
            c.unlock(locked.key()).await.expect("unlock");
        }
    }

    /// leasehold on etcd: `try_lock` + `unlock` (a lease per lock: grant + txn, then an
    /// owner-checked delete; the spent lease is revoked in the background).
    pub async fn leasehold_lock_unlock(client: &Client, key: &str) {
        let lock = client
            .lock(key, "v", EXPIRATION, TIMEOUT, leasehold::NoRetry)
            .await
            .expect("lock");
        lock.unlock().await.expect("unlock");
    }
}
