//! Key names on Redis: the keys that go with a lock key (its fence counter, its claims,
//! its record of aborted attempts, its release channel) and with a fenced resource (its
//! highest token), each in the same Redis Cluster slot as the key it belongs to, and
//! CRC16 slot arithmetic.
//!
//! **Fence counters are shared per namespace and slot**, so that per-entity keys
//! (`order:{id}`) do not leave a counter each behind forever: a lock key's counter is
//! `<namespace>leasehold:fence{N}`, where the namespace is the client's key prefix or,
//! without one, the key's first segment (up to and including its first `:`), and `N`
//! a number that hashes to the key's slot. At most 16,384 counters per namespace; a
//! key-prefix ACL such as `~app:*` covers the counter of every `app:…` key. Tokens then
//! rise per slot, hence per key. A key without a namespace (no `:`, no prefix) or whose
//! namespace holds a brace keeps a counter of its own, `key:fence{N}` (the layout of
//! earlier versions, which the acquire script migrates from: a token never goes back).
//!
//! The other companions of a key are its own, and short-lived: claims live and die with
//! the lock, a record of aborted attempts lives an hour.
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

/// The shared fence counter's name after the namespace.
const SHARED_FENCE: &str = "leasehold:fence";

/// The fence counter of `key`, whose first `prefix_len` bytes are the client's key
/// prefix; see the [module docs](self).
pub(crate) fn write_fence_counter(key: &str, prefix_len: usize, out: &mut impl Write) {
    let namespace = if prefix_len > 0 {
        &key[..prefix_len]
    } else {
        key.find(':').map_or("", |colon| &key[..=colon])
    };
    if namespace.is_empty() || namespace.contains(['{', '}']) {
        return Sidecar::of(key).write(FENCE, out);
    }
    let tag = SLOT_TAGS[usize::from(key_slot(key.as_bytes()))];
    write!(out, "{namespace}{SHARED_FENCE}{{{tag}}}").expect("writing to memory");
}

/// [`write_fence_counter`] as a `String`.
#[cfg(test)]
pub(crate) fn fence_counter(key: &str, prefix_len: usize) -> String {
    let mut out = Vec::with_capacity(key.len() + SIDECAR_EXTRA);
    write_fence_counter(key, prefix_len, &mut out);
    String::from_utf8(out).expect("a key and ASCII make UTF-8")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fence_key(key: &str) -> String {
        Sidecar::of(key).name(FENCE)
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
    fn fence_counters_are_shared_per_namespace_and_slot() {
        // No prefix: the first segment is the namespace.
        let a = fence_counter("app:job", 0);
        assert!(a.starts_with("app:leasehold:fence{"), "{a}");
        assert_eq!(key_slot(a.as_bytes()), key_slot(b"app:job"));
        // Keys of one namespace in one slot share it.
        let (x, y) = ("order:{7}:a", "order:{7}:b");
        assert_eq!(fence_counter(x, 0), fence_counter(y, 0));
        assert_eq!(key_slot(fence_counter(x, 0).as_bytes()), key_slot(b"7"));
        // A prefix is the namespace.
        let p = fence_counter("tenant-1:job", "tenant-1:".len());
        assert!(p.starts_with("tenant-1:leasehold:fence{"), "{p}");
        // No namespace, or braces in it: a counter of its own, as before.
        assert_eq!(fence_counter("job", 0), Sidecar::of("job").name(FENCE));
        assert_eq!(
            fence_counter("a{b:job", 0),
            Sidecar::of("a{b:job").name(FENCE)
        );
        assert_eq!(
            fence_counter("{t}:job", 0),
            Sidecar::of("{t}:job").name(FENCE)
        );
        // However many keys, at most one counter per slot in a namespace.
        let counters: std::collections::HashSet<String> = (0..50_000)
            .map(|i| fence_counter(&format!("order:{i}"), 0))
            .collect();
        assert!(counters.len() <= 16_384, "{}", counters.len());
        for i in 0..1000 {
            let key = format!("order:{i}");
            assert_eq!(
                key_slot(fence_counter(&key, 0).as_bytes()),
                key_slot(key.as_bytes())
            );
        }
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
