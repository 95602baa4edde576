//! Redis by hand: the shipped scripts, the yardstick scripts, the key names the library
//! writes (from the crate itself, `leasehold::__private::redis_keys`), and `Raw`, the
//! lock round trips written by hand with redis-rs.

use std::sync::{Arc, LazyLock};

use leasehold::__private::redis_keys::Companions;
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

/// A lock key and the names that go with it, as the library sends them for the client
/// [`CLIENT_ID`]: its `state`, this client's `aborted<client id>` record, the earlier
/// layout's `fence` counter (read by the acquire script when the state is gone; also the
/// counter of the minimal fenced script) and the `released` channel. Computed once per
/// key, outside the timed loops.
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
        let Companions {
            state,
            aborted,
            fence,
            released,
        } = Companions::of(key, CLIENT_ID);
        KeyNames {
            key: key.to_owned(),
            state,
            aborted,
            fence,
            released,
        }
    }
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
