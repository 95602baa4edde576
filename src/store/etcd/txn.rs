//! The transactions of the store, and what their replies say.
//!
//! etcd ANDs a transaction's compares, and a compare of a missing key's *value* is
//! false. "The abort record is absent or below this attempt" is therefore two levels:
//! the outer transaction tests the record's absence, its `else` a nested one tests its
//! value ([`unless_aborted`], [`raise_record`]).

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

use super::errors::unexpected;
use super::keys::{
    Keys, creator_text, first_in_line, holding, is_waiting, last_in_line, seq_text, waiting_text,
};
use crate::Result;
use crate::store::AttemptId;

/// `inner`, unless the abort record `record` refuses attempt number `seq` (it holds
/// `seq` or above).
pub(super) fn unless_aborted(record: &str, seq: u64, inner: Txn) -> Txn {
    let below = Txn::new()
        .when([Compare::value(record, CompareOp::Less, seq_text(seq))])
        .and_then([TxnOp::txn(inner.clone())]);
    Txn::new()
        .when([Compare::create_revision(record, CompareOp::Equal, 0)])
        .and_then([TxnOp::txn(inner)])
        .or_else([TxnOp::txn(below)])
}

/// The revision and the reply of the transaction inside [`unless_aborted`]; `None`: the
/// attempt was refused (nothing ran).
pub(super) fn past_guard(reply: &TxnResponse) -> Result<Option<(i64, TxnResponse)>> {
    let revision = reply.header().map_or(0, |h| h.revision());
    let Some(TxnOpResponse::Txn(next)) = reply.op_responses().pop() else {
        return Err(unexpected());
    };
    if reply.succeeded() {
        return Ok(Some((revision, next)));
    }
    if !next.succeeded() {
        return Ok(None);
    }
    match next.op_responses().pop() {
        Some(TxnOpResponse::Txn(inner)) => Ok(Some((revision, inner))),
        _ => Err(unexpected()),
    }
}

/// Raise the abort record `record` to `seq` (on the `records` lease) unless it holds
/// as much already, and run `reads` after it either way.
pub(super) fn raise_record(record: &str, seq: u64, records: i64, reads: Vec<TxnOp>) -> Txn {
    let mut raise = vec![TxnOp::put(
        record,
        seq_text(seq),
        Some(PutOptions::new().with_lease(records)),
    )];
    raise.extend(reads.iter().cloned());
    let below = Txn::new()
        .when([Compare::value(record, CompareOp::Less, seq_text(seq))])
        .and_then(raise.clone())
        .or_else(reads);
    Txn::new()
        .when([Compare::create_revision(record, CompareOp::Equal, 0)])
        .and_then(raise)
        .or_else([TxnOp::txn(below)])
}

/// The transaction of an acquire by `attempt` on `lease`: create `val`'s key, with its
/// creator, if the line is empty; else, given the lease of this client's places in
/// line (`line_lease`), put it in line there, marked waiting; else read what is there
/// ([`found`]). Refused if the attempt was aborted.
pub(super) fn acquire_txn(
    keys: &Keys,
    val: &str,
    attempt: AttemptId,
    stamp: &str,
    lease: i64,
    line_lease: Option<i64>,
) -> Txn {
    let (start, end) = keys.line();
    let contender = keys.contender.as_str();
    let absent = || Compare::create_revision(contender, CompareOp::Equal, 0);
    let reads = reads(keys);
    let otherwise = match line_lease {
        Some(line_lease) => {
            let on_lease = || Some(PutOptions::new().with_lease(line_lease));
            let queued = vec![
                TxnOp::put(contender, val, on_lease()),
                TxnOp::put(
                    keys.creator.as_str(),
                    waiting_text(attempt, stamp),
                    on_lease(),
                ),
                TxnOp::get(start.as_str(), Some(last_in_line(end.clone(), 0, 2))),
            ];
            vec![TxnOp::txn(
                Txn::new().when([absent()]).and_then(queued).or_else(reads),
            )]
        }
        None => reads,
    };
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let inner = Txn::new()
        .when([
            absent(),
            Compare::create_revision(start.as_str(), CompareOp::Equal, 0).with_range(end),
        ])
        .and_then([
            TxnOp::put(contender, val, on_lease()),
            TxnOp::put(
                keys.creator.as_str(),
                creator_text(attempt, stamp),
                on_lease(),
            ),
        ])
        .or_else(otherwise);
    unless_aborted(&keys.aborted(attempt.client), attempt.seq, inner)
}

/// Read `val`'s key, its creator and the line's first key ([`found`]).
pub(super) fn reads(keys: &Keys) -> Vec<TxnOp> {
    let (start, end) = keys.line();
    vec![
        TxnOp::get(keys.contender.as_str(), None),
        TxnOp::get(keys.creator.as_str(), None),
        TxnOp::get(start, Some(first_in_line(end))),
    ]
}

/// What [`reads`] found.
#[derive(Default)]
pub(super) struct Found {
    pub(super) ours: Option<KeyValue>,
    pub(super) creator: Option<KeyValue>,
    pub(super) first: Option<KeyValue>,
}

impl Found {
    /// Whether the creator read marks `val`'s key as waiting in line.
    pub(super) fn waiting(&self) -> bool {
        self.creator.as_ref().is_some_and(|c| is_waiting(c.value()))
    }

    /// `val`'s key and its creator if the key holds `val`, is first in line and has
    /// taken its turn (is not marked waiting): `val` holds the lock.
    pub(super) fn held(self, keys: &Keys, val: &str) -> Option<(KeyValue, Option<KeyValue>)> {
        if self.waiting() {
            return None;
        }
        let first = self.first.as_ref().map(KeyValue::key);
        let ours = self
            .ours
            .filter(|kv| kv.value() == val.as_bytes() && first == Some(kv.key()))?;
        debug_assert_eq!(ours.key(), keys.contender.as_bytes());
        Some((ours, self.creator))
    }
}

/// The replies of [`reads`], in order.
pub(super) fn found(responses: Vec<TxnOpResponse>) -> Result<Found> {
    let mut found = Found::default();
    for (i, response) in responses.into_iter().enumerate() {
        let TxnOpResponse::Get(mut got) = response else {
            return Err(unexpected());
        };
        let kv = got.take_kvs().into_iter().next();
        match i {
            0 => found.ours = kv,
            1 => found.creator = kv,
            _ => found.first = kv,
        }
    }
    Ok(found)
}

/// Move `val`'s key `ours` (and its `creator`, as read) to `lease`, unless either
/// changed since; a key waiting in line takes its turn so (its creator is no longer
/// marked waiting). Guarded like an acquire when made by an `attempt`.
pub(super) fn move_txn(
    keys: &Keys,
    val: &str,
    ours: &KeyValue,
    creator: Option<&KeyValue>,
    lease: i64,
    attempt: Option<AttemptId>,
) -> Txn {
    let contender = keys.contender.as_str();
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let mut when = vec![
        Compare::value(contender, CompareOp::Equal, val),
        Compare::create_revision(contender, CompareOp::Equal, ours.create_revision()),
        Compare::lease(contender, CompareOp::Equal, ours.lease()),
    ];
    let mut then = vec![TxnOp::put(contender, val, on_lease())];
    match creator {
        Some(creator) => {
            when.push(Compare::mod_revision(
                keys.creator.as_str(),
                CompareOp::Equal,
                creator.mod_revision(),
            ));
            then.push(TxnOp::put(
                keys.creator.as_str(),
                holding(creator.value()),
                on_lease(),
            ));
        }
        // A key put there by hand has no creator.
        None => when.push(Compare::create_revision(
            keys.creator.as_str(),
            CompareOp::Equal,
            0,
        )),
    }
    let txn = Txn::new().when(when).and_then(then);
    match attempt {
        Some(a) => unless_aborted(&keys.aborted(a.client), a.seq, txn),
        None => txn,
    }
}

/// Delete `val`'s key, created at `created`, and its creator; if `creator` is given,
/// only while the creator key still holds it.
pub(super) fn delete_txn(keys: &Keys, val: &str, created: i64, creator: Option<&[u8]>) -> Txn {
    let contender = keys.contender.as_str();
    let mut when = vec![
        Compare::value(contender, CompareOp::Equal, val),
        Compare::create_revision(contender, CompareOp::Equal, created),
    ];
    if let Some(creator) = creator {
        when.push(Compare::value(
            keys.creator.as_str(),
            CompareOp::Equal,
            creator,
        ));
    }
    Txn::new().when(when).and_then(delete_ops(keys, contender))
}

/// Delete a contender key (with its previous value, for its lease) and its creator.
pub(super) fn delete_ops(keys: &Keys, contender: impl Into<Vec<u8>>) -> Vec<TxnOp> {
    vec![
        TxnOp::delete(contender, Some(DeleteOptions::new().with_prev_key())),
        TxnOp::delete(keys.creator.as_str(), None),
    ]
}

/// The lease of the key a transaction of [`delete_ops`] deleted, if it deleted one.
pub(super) fn deleted_lease(reply: &TxnResponse) -> Option<i64> {
    reply.op_responses().iter().find_map(|r| match r {
        TxnOpResponse::Delete(deleted) => deleted.prev_kvs().first().map(KeyValue::lease),
        _ => None,
    })
}

/// The key-value lists of a transaction's gets, in order (those of its nested
/// transactions too, where they stand).
pub(super) fn gets(reply: &TxnResponse) -> Vec<Vec<KeyValue>> {
    let mut lists = Vec::new();
    for response in reply.op_responses() {
        match response {
            TxnOpResponse::Get(mut got) => lists.push(got.take_kvs()),
            TxnOpResponse::Txn(inner) => lists.extend(gets(&inner)),
            _ => {}
        }
    }
    lists
}

/// A range read of `key`'s value only.
pub(super) fn get(key: &str) -> TxnOp {
    TxnOp::get(key, None::<GetOptions>)
}
