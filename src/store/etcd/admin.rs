//! What operators do: force a release, inspect and list locks; and fenced access to a
//! resource.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp};

use super::errors::{Retry, failure, token, transient};
use super::keys::{
    Keys, RESOURCE_SUFFIX, check_name, contender_hash, first_in_line, is_waiting, label_of, line,
    lock_name, prefix_end, value_hash,
};
use super::txn::{delete_ops, deleted_lease};
use super::{EtcdStore, STORE};
use crate::error::StoreError;
use crate::store::{Fence, Fenced, Inspected};
use crate::{Error, Result};

/// Locks listed per range request.
const LIST_PAGE: i64 = 512;

impl EtcdStore {
    /// Delete the holder of `key`'s key (if its token is `only`, when given). Reads are
    /// tried again on another member if need be; a delete goes to the member that
    /// answered the read and is not sent again once it may have arrived: tried again
    /// after its answer was lost, it would find the next contender at the head of the
    /// line and delete it too.
    pub(super) async fn force_release_within(
        &self,
        key: &str,
        only: Option<u64>,
        timeout: Duration,
    ) -> Result<bool> {
        check_name("key", key)?;
        let deadline = Instant::now() + timeout;
        let (start, end) = line(key);
        for _ in 0..3 {
            let holder = self
                .members
                .within_until(deadline, Retry::Transient, || async {
                    let (_, first) = self.get(&start, Some(first_in_line(end.clone()))).await?;
                    match first.into_iter().next() {
                        Some(first) if !self.waits(key, &first).await? => Ok(Some(first)),
                        _ => Ok(None),
                    }
                })
                .await?;
            // Nobody holds the lock (a key first in line that waits holds nothing).
            let Some(holder) = holder else {
                return Ok(false);
            };
            let Some(hash) = contender_hash(key, holder.key()) else {
                return Ok(false);
            };
            if only.is_some_and(|t| u64::try_from(holder.create_revision()).ok() != Some(t)) {
                return Ok(false);
            }
            let keys = Keys::of_hash(key, hash);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    holder.key(),
                    CompareOp::Equal,
                    holder.create_revision(),
                )])
                .and_then(delete_ops(&keys, holder.key()));
            let reply = self
                .members
                .within_until(deadline, Retry::Unsent, || self.txn(txn.clone()))
                .await?;
            if reply.succeeded() {
                self.revoke_detached(deleted_lease(&reply));
                return Ok(true);
            }
        }
        Err(transient("the lock kept changing hands"))
    }

    /// Whether `first`, the first contender key of lock `name`, waits in line (its
    /// creator says so): then nobody holds the lock yet.
    async fn waits(&self, name: &str, first: &KeyValue) -> Result<bool> {
        let Some(hash) = contender_hash(name, first.key()) else {
            return Ok(false);
        };
        let (_, creator) = self.get(&Keys::of_hash(name, hash).creator, None).await?;
        Ok(creator.first().is_some_and(|c| is_waiting(c.value())))
    }

    /// The lock of `name` whose holder is `holder` (the first contender key), as an
    /// operator sees it; `None` if its lease is gone or the key waits in line.
    async fn inspected(&self, name: &str, holder: &KeyValue) -> Result<Option<Inspected>> {
        let Some(hash) = contender_hash(name, holder.key()) else {
            return Ok(None);
        };
        // Its creator says whether it waits in line (then nobody holds the lock yet), and
        // the holder's label and when its attempt was made.
        let (_, creator) = self.get(&Keys::of_hash(name, hash).creator, None).await?;
        let creator = creator.first().map(KeyValue::value);
        if creator.is_some_and(is_waiting) {
            return Ok(None);
        }
        let (locked_at, label) = creator.and_then(label_of).unzip();
        let ttl = match holder.lease() {
            0 => None,
            lease => match self.lease_info(lease, None).await? {
                Some((_, left, _)) => Some(Duration::from_secs(left.max(0) as u64)),
                None => return Ok(None),
            },
        };
        Ok(Some(Inspected {
            key: name.to_owned(),
            ttl,
            token: token(holder.create_revision())?,
            holder: hash.to_owned(),
            label,
            locked_at,
        }))
    }

    pub(super) async fn inspect_now(&self, key: &str) -> Result<Option<Inspected>> {
        check_name("key", key)?;
        let (start, end) = line(key);
        let (_, first) = self.get(&start, Some(first_in_line(end))).await?;
        match first.first() {
            Some(holder) => self.inspected(key, holder).await,
            None => Ok(None),
        }
    }

    pub(super) async fn list_now(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        // Every key under the prefix, a page at a time (keys only): the first of each
        // lock's line holds it.
        let end = prefix_end(prefix.as_bytes());
        let mut from = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut holders: BTreeMap<String, KeyValue> = BTreeMap::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE)
                .with_keys_only();
            let mut page = self
                .members
                .within(timeout, Retry::Transient, || async {
                    let mut kv = self.kv();
                    let (from, options) = (from.clone(), options.clone());
                    kv.get(from, Some(options)).await.map_err(failure)
                })
                .await?;
            let more = page.more();
            let kvs = page.take_kvs();
            for kv in &kvs {
                let Some(name) = lock_name(kv.key()) else {
                    continue;
                };
                let earlier = holders
                    .get(name)
                    .is_some_and(|h| h.create_revision() < kv.create_revision());
                if !earlier {
                    holders.insert(name.to_owned(), kv.clone());
                }
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let mut locks = Vec::with_capacity(holders.len());
        let holders: Vec<(String, KeyValue)> = holders.into_iter().collect();
        // A few at a time: a listing must not crowd out the locks' own traffic.
        for batch in holders.chunks(64) {
            let inspected = futures::future::join_all(batch.iter().map(|(name, holder)| {
                self.members
                    .within(timeout, Retry::Transient, || self.inspected(name, holder))
            }))
            .await;
            for lock in inspected {
                locks.extend(lock?);
            }
        }
        Ok(locks)
    }

    pub(super) async fn fenced_now(&self, access: &Fence<'_>) -> Result<Fenced> {
        check_name("resource", access.resource)?;
        let record_key = format!("{}{RESOURCE_SUFFIX}", access.resource);
        // The holder's digest, not its value: a lock value never rests in clear here.
        let holder = access
            .holder
            .map(|h| format!("{:016x}", value_hash(h.as_bytes())));
        loop {
            let (_, current) = self.get(&record_key, None).await?;
            let current = current.into_iter().next();
            let (record, mod_revision) = match &current {
                Some(kv) => (Record::decode(kv.value())?, kv.mod_revision()),
                None => (
                    Record {
                        highest: access.token,
                        holder: holder.clone(),
                        value: None,
                    },
                    0,
                ),
            };
            let same_holder = record.holder == holder;
            if access.token < record.highest || (access.token == record.highest && !same_holder) {
                return Ok(Err(record.highest));
            }
            let unchanged = current.is_some() && access.token == record.highest;
            if unchanged && access.write.is_none() {
                return Ok(Ok(record.value));
            }
            let next = Record {
                highest: access.token,
                holder: holder.clone(),
                value: match access.write {
                    Some(v) => Some(v.to_owned()),
                    None => record.value.clone(),
                },
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    record_key.as_str(),
                    CompareOp::Equal,
                    mod_revision,
                )])
                .and_then([TxnOp::put(record_key.as_str(), next.encode(), None)]);
            if self.txn(txn).await?.succeeded() {
                return Ok(Ok(match access.write {
                    Some(_) => None,
                    None => next.value,
                }));
            }
            // Changed meanwhile: decide again on what is there now.
        }
    }
}

/// A fenced resource's record: the highest token, a digest of the holder that used it
/// (`None`: an anonymous access), the value.
struct Record {
    highest: u64,
    holder: Option<String>,
    value: Option<String>,
}

impl Record {
    /// `highest \n holder-flag holder \n value-flag value`.
    fn encode(&self) -> String {
        let holder = self
            .holder
            .as_deref()
            .map_or("-".to_owned(), |h| format!("+{h}"));
        let value = self
            .value
            .as_deref()
            .map_or("-".to_owned(), |v| format!("+{v}"));
        format!(
            "{}\n{}\n{}",
            self.highest,
            holder.len(),
            [holder, value].concat()
        )
    }

    fn decode(bytes: &[u8]) -> Result<Record> {
        let bad = || {
            Error::Store(StoreError::new(
                STORE,
                false,
                "not a fenced resource record",
            ))
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '\n');
        let highest = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let holder_len: usize = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let rest = parts.next().ok_or_else(bad)?;
        if rest.len() < holder_len || !rest.is_char_boundary(holder_len) {
            return Err(bad());
        }
        let (holder, value) = rest.split_at(holder_len);
        let field = |s: &str| s.strip_prefix('+').map(str::to_owned);
        Ok(Record {
            highest,
            holder: field(holder),
            value: field(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for (holder, value) in [
            (None, None),
            (Some("h\n+x"), Some("v\nw")),
            (Some(""), Some("")),
        ] {
            let r = Record {
                highest: 42,
                holder: holder.map(str::to_owned),
                value: value.map(str::to_owned),
            };
            let back = Record::decode(r.encode().as_bytes()).unwrap();
            assert_eq!(back.highest, 42);
            assert_eq!(back.holder.as_deref(), holder);
            assert_eq!(back.value.as_deref(), value);
        }
    }
}
