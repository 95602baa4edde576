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

/// One of the supported stores.
pub(crate) enum Backend {
    Redis(redis::RedisBackend),
    Memory(memory::MemoryBackend),
}

impl Backend {
    /// Take `key` for `val` unless another value holds it. Idempotent: if `val` already
    /// holds it, re-arm the expiration and return the existing token.
    pub(crate) async fn acquire(&self, key: &str, val: &str, ttl_ms: u64) -> Result<Acquire> {
        match self {
            Backend::Redis(b) => b.acquire(key, val, ttl_ms).await,
            Backend::Memory(b) => Ok(b.acquire(key, val, ttl_ms)),
        }
    }

    /// Re-arm the expiration if `val` holds `key`. `false`: not held, nothing changed.
    pub(crate) async fn refresh(&self, key: &str, val: &str, ttl_ms: u64) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.refresh(key, val, ttl_ms).await,
            Backend::Memory(b) => Ok(b.refresh(key, val, ttl_ms)),
        }
    }

    /// Delete `key` if `val` holds it. `false`: not held, nothing changed.
    pub(crate) async fn release(&self, key: &str, val: &str) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.release(key, val).await,
            Backend::Memory(b) => Ok(b.release(key, val)),
        }
    }

    /// Remaining time to live if `val` holds `key`; `None` if not held.
    /// A key without expiry (set by hand) reports `Duration::MAX`.
    pub(crate) async fn pttl(&self, key: &str, val: &str) -> Result<Option<Duration>> {
        match self {
            Backend::Redis(b) => b.pttl(key, val).await,
            Backend::Memory(b) => Ok(b.pttl(key, val)),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }
}

/// The fence counter key for `key`: it hashes to the same Redis Cluster slot.
///
/// * a key with a hash tag (`user:{42}:job`) keeps it: `user:{42}:job:fence`;
/// * any other key is wrapped into a tag: `{job}:fence`;
/// * a key with no tag that cannot be wrapped (it contains `}`) gets a short numeric
///   tag chosen to hash to the key's own slot: `{n}:fence:<key>`.
pub(crate) fn fence_key(key: &str) -> String {
    if hash_tag(key.as_bytes()).is_some() {
        let mut s = String::with_capacity(key.len() + 6);
        s.push_str(key);
        s.push_str(":fence");
        return s;
    }
    if !key.is_empty() && !key.contains('}') {
        let mut s = String::with_capacity(key.len() + 8);
        s.push('{');
        s.push_str(key);
        s.push_str("}:fence");
        return s;
    }
    let slot = key_slot(key.as_bytes());
    let tag = (0u32..)
        .find(|n| key_slot(n.to_string().as_bytes()) == slot)
        .expect("every slot is reached by some number");
    format!("{{{tag}}}:fence:{key}")
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

fn crc16(data: &[u8]) -> u16 {
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
    fn fence_key_shares_the_lock_keys_slot() {
        for key in [
            "job",
            "user:{42}:job",
            "a}b",
            "{}x}",
            "}",
            "{",
            "foo{}{bar}",
            "ключ",
            "",
        ] {
            let fence = fence_key(key);
            assert_ne!(fence, key);
            assert_eq!(
                key_slot(fence.as_bytes()),
                key_slot(key.as_bytes()),
                "{key:?} -> {fence:?}"
            );
        }
        assert_eq!(fence_key("job"), "{job}:fence");
        assert_eq!(fence_key("user:{42}:job"), "user:{42}:job:fence");
    }
}
