//! Key names on Redis: the keys that go with a lock key (its state, its clients' records
//! of aborted attempts, its release channel) and with a fenced resource (its highest
//! token), each in the same Redis Cluster slot as the key it belongs to, and CRC16 slot
//! arithmetic.
//!
//! **Protocol v2 keeps O(1) state per key**, named after the store key alone (never the
//! client's key prefix, so every client of a store key draws from the same tokens):
//!
//! * `state`: `<token> <creator>[ <locked at> <label>]`, living as long as the lock plus
//!   an hour: the token of the key's incarnation, the attempt that created it (what an
//!   abort may undo) and, when set, the holder label. The next acquisition's token
//!   follows it; when it is gone, the token is the server's clock in microseconds.
//! * `aborted<client id>`: per client that aborted attempts on the key, the highest
//!   attempt number aborted, kept an hour after its last abort.
//! * `fence`: the key's own counter of the earlier layout, only read (a token never goes
//!   back across the upgrade).
//!
//! A sidecar of `key` keeps `key` as its prefix for every key without a stray `{`, so
//! key-prefix ACLs such as `~app:*` and `SCAN app:*` cover it:
//!
//! * a key with a hash tag keeps it: `user:{42}:job` → `user:{42}:job:fence`;
//! * a key without `{` gets a short numeric tag that hashes to the key's own slot:
//!   `app:job` → `app:job:fence{N}`;
//! * a key with a `{` but no valid tag (`a{b`) cannot take a tag after it, so the tag
//!   leads: `{N}:fence:a{b`.

use std::io::Write;

/// The suffix of a lock key's own fence counter (a key without a namespace, and the
/// layout of earlier versions).
pub(crate) const FENCE: &str = "fence";
/// The suffix of a client's record of aborted acquire attempts on a lock key, followed
/// by the client's id in 16 hex digits.
pub(crate) const ABORTED: &str = "aborted";
/// The suffix of a lock key's state: its incarnation's token and creator (and holder
/// label); it outlives the lock, as the floor of the next token.
pub(crate) const STATE: &str = "state";
/// The suffix of a fenced resource's highest-token record.
pub(crate) const TOKEN: &str = "token";
/// The suffix of a lock key's release channel (a pub/sub channel, not a key: in the
/// key's slot so that `SPUBLISH` reaches the shard that owns the key).
pub(crate) const RELEASED: &str = "released";

/// Room for what [`Sidecar::write`] adds to a key: `:` + a suffix of up to 7 bytes +
/// `{…}` with up to 6 digits. Only a capacity hint.
pub(crate) const SIDECAR_EXTRA: usize = 18;

/// Names the sidecar keys of one key, computing its slot tag once.
pub(crate) struct Sidecar<'a> {
    key: &'a str,
    placement: Placement,
}

enum Placement {
    /// The key has a hash tag: `key:suffix`.
    Tagged,
    /// `key:suffix{tag}`.
    After(u32),
    /// `{tag}:suffix:key` (the key has a `{` without a valid tag).
    Before(u32),
}

impl<'a> Sidecar<'a> {
    pub(crate) fn of(key: &'a str) -> Self {
        let placement = if hash_tag(key.as_bytes()).is_some() {
            Placement::Tagged
        } else {
            let tag = SLOT_TAGS[usize::from(key_slot(key.as_bytes()))];
            if key.contains('{') {
                Placement::Before(tag)
            } else {
                Placement::After(tag)
            }
        };
        Sidecar { key, placement }
    }

    /// Write the sidecar `suffix` into `out` (a command argument needs no intermediate
    /// `String`).
    pub(crate) fn write(&self, suffix: &str, out: &mut impl Write) {
        let key = self.key;
        // Writers into memory (a `Vec` or a redis `Cmd` argument) cannot fail.
        let written = match self.placement {
            Placement::Tagged => write!(out, "{key}:{suffix}"),
            Placement::After(tag) => write!(out, "{key}:{suffix}{{{tag}}}"),
            Placement::Before(tag) => write!(out, "{{{tag}}}:{suffix}:{key}"),
        };
        written.expect("writing to memory");
    }

    /// The sidecar `suffix` as a `String`.
    pub(crate) fn name(&self, suffix: &str) -> String {
        let mut out = Vec::with_capacity(self.key.len() + SIDECAR_EXTRA);
        self.write(suffix, &mut out);
        String::from_utf8(out).expect("a key and ASCII make UTF-8")
    }
}

/// A lock key's companion names as the store writes them, for the in-tree benchmarks
/// (`leasehold::__private::redis_keys`), so that they never copy the layout. Not part of
/// the API.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Companions {
    /// The key's `state` (token, creator, holder label).
    pub state: String,
    /// Client `client_id`'s record of aborted attempts on the key.
    pub aborted: String,
    /// The earlier layout's `fence` counter (only read).
    pub fence: String,
    /// The key's release channel.
    pub released: String,
}

impl Companions {
    /// The companions of `key` for the client whose id is `client_id`.
    #[doc(hidden)]
    pub fn of(key: &str, client_id: u64) -> Self {
        let sidecar = Sidecar::of(key);
        Companions {
            state: sidecar.name(STATE),
            aborted: sidecar.name(&format!("{ABORTED}{client_id:016x}")),
            fence: sidecar.name(FENCE),
            released: sidecar.name(RELEASED),
        }
    }
}

/// For every cluster slot, the smallest number whose decimal text hashes to it
/// (all slots are covered below 110 000). Built once, 64 KiB.
static SLOT_TAGS: std::sync::LazyLock<Box<[u32]>> = std::sync::LazyLock::new(|| {
    let mut tags = vec![u32::MAX; 16384].into_boxed_slice();
    let mut missing = tags.len();
    let mut buf = itoa_buf();
    for n in 0u32.. {
        let slot = usize::from(crc16(itoa(n, &mut buf)) % 16384);
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

fn itoa_buf() -> [u8; 10] {
    [0; 10]
}

fn itoa(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The non-empty `{tag}` that Redis Cluster hashes instead of the whole key.
pub(crate) fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// Redis Cluster slot of a key (CRC16/XMODEM of the hash tag or key, mod 16384).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % 16384
}

/// CRC16/XMODEM (polynomial 0x1021), one table lookup per byte.
fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// How a release is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// `PUBLISH` (one server).
    Plain,
    /// `SPUBLISH` (a cluster).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Sharded,
}

impl Publish {
    /// The release scripts' argument naming the command.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Publish::Plain => "p",
            Publish::Sharded => "s",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence_key(key: &str) -> String {
        Sidecar::of(key).name(FENCE)
    }

    /// The benchmarks' names (`Companions`) are the keys the acquire command sends: the
    /// key, its state, the client's aborted record, the fence counter, in that order.
    #[test]
    fn companions_are_the_keys_the_acquire_sends() {
        use crate::store::AttemptId;
        let attempt = AttemptId {
            client: 0xfeed,
            seq: 7,
        };
        for key in ["job", "app:job", "user:{42}:job", "a{b"] {
            let c = Companions::of(key, 0xfeed);
            let cmd = super::super::scripts::acquire(
                key,
                "v",
                std::time::Duration::from_secs(1),
                attempt,
                "",
            );
            let args: Vec<Vec<u8>> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => b.to_vec(),
                    _ => Vec::new(),
                })
                .collect();
            let keys = [key, &c.state, &c.aborted, &c.fence].map(|k| k.as_bytes().to_vec());
            assert_eq!(args[3..7], keys, "{key:?}");
            assert_eq!(c.released, Sidecar::of(key).name(RELEASED), "{key:?}");
        }
    }

    #[test]
    fn slots_match_the_redis_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
    }

    #[test]
    fn sidecars_share_the_keys_slot_and_prefix() {
        for key in [
            "job",
            "app:job",
            "user:{42}:job",
            "a}b",
            "{}x}",
            "}",
            "{",
            "foo{}{bar}",
            "a{b",
            "ключ",
        ] {
            for suffix in [FENCE, ABORTED, STATE, TOKEN, RELEASED] {
                let sidecar = Sidecar::of(key).name(suffix);
                if !key.contains('{') || hash_tag(key.as_bytes()).is_some() {
                    assert!(sidecar.starts_with(key), "{sidecar:?}");
                }
                assert_ne!(sidecar, key);
                assert!(sidecar.len() <= key.len() + SIDECAR_EXTRA, "{sidecar:?}");
                assert_eq!(
                    key_slot(sidecar.as_bytes()),
                    key_slot(key.as_bytes()),
                    "{key:?} -> {sidecar:?}"
                );
            }
        }
        assert_eq!(fence_key("user:{42}:job"), "user:{42}:job:fence");
        assert_eq!(
            Sidecar::of("user:{42}:row").name(TOKEN),
            "user:{42}:row:token"
        );
        let token_key = Sidecar::of("app:row").name(TOKEN);
        assert!(token_key.starts_with("app:row:token{"), "{token_key}");
        assert_eq!(key_slot(token_key.as_bytes()), key_slot(b"app:row"));
        assert!(fence_key("app:job").starts_with("app:job:fence{"));
        assert!(fence_key("a{b").starts_with('{'));
    }

    #[test]
    fn every_slot_has_a_numeric_tag() {
        assert_eq!(SLOT_TAGS.len(), 16384);
        for (slot, &tag) in SLOT_TAGS.iter().enumerate() {
            assert_eq!(usize::from(key_slot(tag.to_string().as_bytes())), slot);
        }
        let mut buf = itoa_buf();
        assert_eq!(itoa(0, &mut buf), b"0");
        assert_eq!(itoa(u32::MAX, &mut buf), b"4294967295");
    }
}
