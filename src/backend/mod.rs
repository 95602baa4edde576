//! The stores a lock can live in, behind one internal interface.
//!
//! Every backend implements the same four owner-checked operations with the same
//! meaning; the client, the retry loop and renewal are written once on top of them.
//! A new store (Redis Cluster, Redlock quorum, etcd) is a new variant here.

pub(crate) mod memory;
pub(crate) mod redis;

use std::time::Duration;

use crate::Result;

/// Outcome of one acquire attempt that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The key now holds our value; the fencing token of this acquisition.
    Acquired(u64),
    /// Another value holds the key.
    Held,
}

/// Outcome of a fenced access: the resource's value (for a read), or the higher token
/// that made this one stale.
pub(crate) type Fenced = std::result::Result<Option<String>, u64>;

/// One of the supported stores.
pub(crate) enum Backend {
    Redis(redis::RedisBackend),
    Memory(memory::MemoryBackend),
}

/// Every operation is one round trip bounded by `timeout` ([`crate::Error::Timeout`]
/// past it); the memory store answers at once.
impl Backend {
    /// Take `key` for `val` unless another value holds it. Idempotent: if `val` already
    /// holds it, re-arm the expiration and return the existing token.
    pub(crate) async fn acquire(
        &self,
        key: &str,
        val: &str,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Result<Acquire> {
        match self {
            Backend::Redis(b) => b.acquire(key, val, ttl_ms, timeout).await,
            Backend::Memory(b) => Ok(b.acquire(key, val, ttl_ms)),
        }
    }

    /// Re-arm the expiration if `val` holds `key`. `false`: not held, nothing changed.
    pub(crate) async fn refresh(
        &self,
        key: &str,
        val: &str,
        ttl_ms: u64,
        timeout: Duration,
    ) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.refresh(key, val, ttl_ms, timeout).await,
            Backend::Memory(b) => Ok(b.refresh(key, val, ttl_ms)),
        }
    }

    /// Delete `key` if `val` holds it. `false`: not held, nothing changed.
    pub(crate) async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.release(key, val, timeout).await,
            Backend::Memory(b) => Ok(b.release(key, val)),
        }
    }

    /// Remaining time to live if `val` holds `key`; `None` if not held.
    /// A key without expiry (set by hand) reports `Duration::MAX`.
    pub(crate) async fn pttl(
        &self,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        match self {
            Backend::Redis(b) => b.pttl(key, val, timeout).await,
            Backend::Memory(b) => Ok(b.pttl(key, val)),
        }
    }

    /// Fenced access to a resource: `Ok(Ok(value))` when `token` is at least the highest
    /// the resource has seen (it becomes the highest), `Ok(Err(highest))` when stale.
    /// `write: Some(v)` sets the resource to `v`; `None` reads it.
    pub(crate) async fn fenced(
        &self,
        resource: &str,
        token: u64,
        write: Option<&str>,
        timeout: Duration,
    ) -> Result<Fenced> {
        match self {
            Backend::Redis(b) => b.fenced(resource, token, write, timeout).await,
            Backend::Memory(b) => Ok(b.fenced(resource, token, write)),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }
}

/// The fence counter key for `key`. It hashes to the same Redis Cluster slot and, for
/// every key without a stray `{`, keeps the lock key as its prefix (so key-prefix ACLs
/// such as `~app:*` and `SCAN app:*` cover it):
///
/// * a key with a hash tag keeps it: `user:{42}:job` → `user:{42}:job:fence`;
/// * a key without `{` gets a short numeric tag that hashes to the key's own slot:
///   `app:job` → `app:job:fence{N}`;
/// * a key with a `{` but no valid tag (`a{b`) cannot take a tag after it, so the tag
///   leads: `{N}:fence:a{b`.
#[cfg(test)]
pub(crate) fn fence_key(key: &str) -> String {
    sidecar_key(key, "fence")
}

/// Writes [`fence_key`] into `out` (a command argument needs no intermediate `String`).
pub(crate) fn write_fence_key(key: &str, out: &mut impl std::io::Write) {
    write_sidecar_key(key, "fence", out);
}

/// The highest-token key of a fenced resource: `resource:token…`, built like
/// [`fence_key`].
pub(crate) fn resource_token_key(resource: &str) -> String {
    sidecar_key(resource, "token")
}

/// Room for what [`write_sidecar_key`] adds to a key: `:` + a suffix of up to 5 bytes +
/// `{…}` with up to 6 digits. Only a capacity hint.
pub(crate) const SIDECAR_EXTRA: usize = 16;

/// `key:<suffix>` in the same cluster slot as `key`; see [`fence_key`].
fn sidecar_key(key: &str, suffix: &str) -> String {
    let mut out = Vec::with_capacity(key.len() + SIDECAR_EXTRA);
    write_sidecar_key(key, suffix, &mut out);
    String::from_utf8(out).expect("a key and ASCII make UTF-8")
}

fn write_sidecar_key(key: &str, suffix: &str, out: &mut impl std::io::Write) {
    // Writers into memory (a `Vec` or a redis `Cmd` argument) cannot fail.
    let written = if hash_tag(key.as_bytes()).is_some() {
        write!(out, "{key}:{suffix}")
    } else {
        let tag = SLOT_TAGS[usize::from(key_slot(key.as_bytes()))];
        if key.contains('{') {
            write!(out, "{{{tag}}}:{suffix}:{key}")
        } else {
            write!(out, "{key}:{suffix}{{{tag}}}")
        }
    };
    written.expect("writing to memory");
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
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fence_key_shares_the_lock_keys_slot_and_prefix() {
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
            let fence = fence_key(key);
            if !key.contains('{') || hash_tag(key.as_bytes()).is_some() {
                assert!(fence.starts_with(key), "{fence:?}");
            }
            assert_ne!(fence, key);
            assert_eq!(
                key_slot(fence.as_bytes()),
                key_slot(key.as_bytes()),
                "{key:?} -> {fence:?}"
            );
        }
        assert_eq!(fence_key("user:{42}:job"), "user:{42}:job:fence");
        assert_eq!(resource_token_key("user:{42}:row"), "user:{42}:row:token");
        let token_key = resource_token_key("app:row");
        assert!(token_key.starts_with("app:row:token{"), "{token_key}");
        assert_eq!(key_slot(token_key.as_bytes()), key_slot(b"app:row"));
        assert!(fence_key("app:job").starts_with("app:job:fence{"));
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
