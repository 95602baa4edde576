//! The layout of a lock's etcd keys (see the [module docs](super)).

use etcd_client::{GetOptions, SortOrder, SortTarget};

use crate::store::AttemptId;
use crate::{Error, Result};

/// Ends a lock name; what follows is a contender's hash, or `~` and a companion key.
pub(super) const SEP: char = '\0';

/// Ends a fenced resource's name in its record's key (outside every lock's keys, which
/// are `K\0 .. K\x01`).
pub(super) const RESOURCE_SUFFIX: &str = "\u{1}token";

/// The etcd keys of one lock and one value.
pub(super) struct Keys {
    /// The lock's name (its key, with the client's key prefix).
    pub(super) name: String,
    /// `K\0H`: the value's key in the lock's line.
    pub(super) contender: String,
    /// `K\0~cH`: the attempt that created the value's key (on the key's lease).
    pub(super) creator: String,
}

impl Keys {
    pub(super) fn new(key: &str, val: &str) -> Keys {
        let hash = format!("{:016x}", value_hash(val.as_bytes()));
        Keys::of_hash(key, &hash)
    }

    pub(super) fn of_hash(key: &str, hash: &str) -> Keys {
        Keys {
            name: key.to_owned(),
            contender: format!("{key}{SEP}{hash}"),
            creator: format!("{key}{SEP}~c{hash}"),
        }
    }

    /// `K\0~a<client>`: the highest attempt of `client` aborted on this lock.
    pub(super) fn aborted(&self, client: u64) -> String {
        format!("{}{SEP}~a{client:016x}", self.name)
    }

    /// The line: `[K\0 0, K\0 g)`, every contender key of the lock and nothing else.
    pub(super) fn line(&self) -> (String, String) {
        line(&self.name)
    }
}

pub(super) fn line(name: &str) -> (String, String) {
    (format!("{name}{SEP}0"), format!("{name}{SEP}g"))
}

/// The line's first key (the holder), by create revision.
pub(super) fn first_in_line(end: String) -> GetOptions {
    GetOptions::new()
        .with_range(end)
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
        .with_keys_only()
}

/// The last key of the line created at or before `revision` (`0`: any).
pub(super) fn last_in_line(end: String, revision: i64, limit: i64) -> GetOptions {
    let options = GetOptions::new()
        .with_range(end)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(limit)
        .with_keys_only();
    if revision > 0 {
        options.with_max_create_revision(revision)
    } else {
        options
    }
}

/// An attempt number as an abort record holds it: 16 hex digits, so that etcd's byte
/// order of values is the numbers' order.
pub(super) fn seq_text(seq: u64) -> String {
    format!("{seq:016x}")
}

/// Ends the value of a creator key while its contender key waits in line.
const WAITING: &str = ":w";

/// What a creator key records after the attempt's id, with a holder `label`: when the
/// attempt was made (` <ms since the epoch> <label>`, by this client's clock: etcd has
/// none to read); nothing without a label.
pub(super) fn stamp(label: &str) -> String {
    if label.is_empty() {
        return String::new();
    }
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(" {at} {label}")
}

/// The value of a creator key: the attempt's id, then its [`stamp`].
pub(super) fn creator_text(attempt: AttemptId, stamp: &str) -> String {
    format!("{:016x}:{}{stamp}", attempt.client, seq_text(attempt.seq))
}

/// The value of the creator key of a contender key put in line (not holding): the
/// attempt's id, marked, then its [`stamp`].
pub(super) fn waiting_text(attempt: AttemptId, stamp: &str) -> String {
    format!(
        "{:016x}:{}{WAITING}{stamp}",
        attempt.client,
        seq_text(attempt.seq)
    )
}

/// The attempt's id in a creator key's value (what precedes its stamp), marked if waiting.
fn id_part(value: &[u8]) -> &[u8] {
    value.split(|b| *b == b' ').next().unwrap_or(value)
}

/// Whether a creator key's value says that its contender key waits in line: a key
/// first in line holds the lock only once its turn was taken.
pub(super) fn is_waiting(value: &[u8]) -> bool {
    id_part(value).ends_with(WAITING.as_bytes())
}

/// A creator key's value without the mark of a waiting key: its value once the key
/// holds the lock (the stamp kept).
pub(super) fn holding(value: &[u8]) -> Vec<u8> {
    let id = id_part(value);
    match id.strip_suffix(WAITING.as_bytes()) {
        Some(held) => [held, &value[id.len()..]].concat(),
        None => value.to_vec(),
    }
}

/// The attempt a creator key names, if it names one.
pub(super) fn creator_of(value: &[u8]) -> Option<AttemptId> {
    let id = id_part(value);
    let id = id.strip_suffix(WAITING.as_bytes()).unwrap_or(id);
    let (client, seq) = std::str::from_utf8(id).ok()?.split_once(':')?;
    Some(AttemptId {
        client: u64::from_str_radix(client, 16).ok()?,
        seq: u64::from_str_radix(seq, 16).ok()?,
    })
}

/// When the creator key's attempt was made and the holder's label, if its stamp records
/// them.
pub(super) fn label_of(value: &[u8]) -> Option<(std::time::SystemTime, String)> {
    let rest = &value[id_part(value).len()..];
    let rest = rest.strip_prefix(b" ")?;
    let at_end = rest.iter().position(|&b| b == b' ')?;
    let at: u64 = std::str::from_utf8(&rest[..at_end]).ok()?.parse().ok()?;
    let label = String::from_utf8_lossy(&rest[at_end + 1..]).into_owned();
    Some((
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
        label,
    ))
}

/// The hash of a contender key of lock `name`, if `key` is one.
pub(super) fn contender_hash<'a>(name: &str, key: &'a [u8]) -> Option<&'a str> {
    let hash = key.strip_prefix(name.as_bytes())?.strip_prefix(&[0u8])?;
    let hash = std::str::from_utf8(hash).ok()?;
    (hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(hash)
}

/// The lock name of a contender key, if `key` is one.
pub(super) fn lock_name(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&key[..at]).ok()?;
    contender_hash(name, key).map(|_| name)
}

/// The end of the range of keys starting with `prefix` (`\0`: to the end of the keyspace).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.contains(SEP) {
        return Err(Error::invalid(format!(
            "{what}: must not contain \\0 on etcd (it ends the lock name in etcd's keys)"
        )));
    }
    Ok(())
}

/// FNV-1a, finalised: the same in every process and every build.
pub(super) fn value_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(hash)
}

/// The splitmix64 finaliser.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPT: AttemptId = AttemptId {
        client: 7,
        seq: 300,
    };

    #[test]
    fn a_locks_line_holds_its_contenders_only() {
        let keys = Keys::new("a", "x");
        let (start, end) = keys.line();
        for val in ["x", "y", "a-long-value"] {
            let c = Keys::new("a", val).contender;
            assert!(c >= start && c < end, "{c:?}");
            assert_eq!(c.len(), "a".len() + 1 + 16);
            assert_eq!(lock_name(c.as_bytes()), Some("a"));
            assert_eq!(contender_hash("a", c.as_bytes()).map(str::len), Some(16));
        }
        // Companion keys sort outside the line and are no contenders.
        let aborted = keys.aborted(ATTEMPT.client);
        let record = format!("a{RESOURCE_SUFFIX}");
        for other in [&keys.creator, &aborted, &record] {
            assert!(other.as_str() < start.as_str() || other.as_str() >= end.as_str());
            assert_eq!(lock_name(other.as_bytes()), None, "{other:?}");
        }
        // Another lock whose name extends this one is outside the range.
        let other = Keys::new("a\u{1}b", "x").contender;
        assert!(other >= end);
        assert_eq!(Keys::new("k", "v").contender, Keys::new("k", "v").contender);
        // One abort record per client, whatever the attempt.
        assert_eq!(keys.aborted(7), keys.aborted(7));
        assert_ne!(keys.aborted(7), keys.aborted(8));
    }

    #[test]
    fn attempt_numbers_sort_as_numbers() {
        let seqs = [0, 1, 9, 10, 255, 256, 300, u64::MAX - 1, u64::MAX];
        let texts: Vec<String> = seqs.iter().map(|s| seq_text(*s)).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        assert_eq!(creator_of(b"junk"), None);
        // With and without a stamp, and a label that ends like the waiting mark.
        for stamp in [
            "".to_owned(),
            stamp("web-1:w"),
            " 1700000000000 a b:w".to_owned(),
        ] {
            let held = creator_text(ATTEMPT, &stamp);
            assert_eq!(creator_of(held.as_bytes()), Some(ATTEMPT), "round trip");
            let waiting = waiting_text(ATTEMPT, &stamp);
            assert!(is_waiting(waiting.as_bytes()));
            assert!(!is_waiting(held.as_bytes()), "{held}");
            assert_eq!(creator_of(waiting.as_bytes()), Some(ATTEMPT));
            assert_eq!(holding(waiting.as_bytes()), held.as_bytes());
            assert_eq!(holding(held.as_bytes()), held.as_bytes());
            assert_eq!(
                label_of(waiting.as_bytes()).map(|(_, l)| l),
                label_of(held.as_bytes()).map(|(_, l)| l)
            );
        }
        let (_, label) = label_of(creator_text(ATTEMPT, " 5 a b:w").as_bytes()).unwrap();
        assert_eq!(label, "a b:w");
        assert_eq!(label_of(creator_text(ATTEMPT, "").as_bytes()), None);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"app:"), b"app;");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
