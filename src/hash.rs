//! A fast hash for the in-process tables on the lock path (the memory store's keys, a
//! client's leases): the multiply-rotate hash of `rustc-hash`, a word at a time, started
//! from a random seed per table so that colliding keys cannot be prepared in advance.
//! SipHash, std's default, cost a third of a memory-store lock+unlock.

use std::hash::{BuildHasher, Hasher};

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Builds [`FastHasher`]s from one random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHash {
    seed: u64,
}

impl FastHash {
    pub(crate) fn new() -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // Only collision resistance suffers; any seed works.
            seed = (&raw const seed as u64).to_le_bytes();
        }
        FastHash {
            seed: u64::from_le_bytes(seed),
        }
    }
}

impl Default for FastHash {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher { hash: self.seed }
    }
}

/// See the [module docs](self).
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some((word, rest)) = bytes.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            bytes = rest;
        }
        if let Some((word, rest)) = bytes.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*word)));
            bytes = rest;
        }
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits down: hash tables index by the low bits.
        self.hash ^ (self.hash >> 32)
    }
}

/// For tables whose keys are hashes already.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Identity;

impl BuildHasher for Identity {
    type Hasher = IdentityHasher;

    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_hash_apart_and_seeds_differ() {
        let build = FastHash::new();
        let hashes: HashSet<u64> = (0..10_000)
            .map(|i| build.hash_one(format!("order:{i}")))
            .collect();
        assert_eq!(hashes.len(), 10_000);
        // The low bits, which a table indexes by, spread too.
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        assert!(buckets.len() > 3_000, "{}", buckets.len());
        assert_eq!(build.hash_one("a"), build.hash_one("a"));
        assert_ne!(FastHash::new().hash_one("a"), FastHash::new().hash_one("a"));
        assert_ne!(build.hash_one(("ab", "c")), build.hash_one(("a", "bc")));
    }
}
