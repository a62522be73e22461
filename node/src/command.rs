//! What goes into a shard's Raft log, and what applying it returns.
//!
//! One log entry carries a [`Command`]: a batch of [`Op`]s proposed together by the
//! shard's proposer, plus the leader's wall clock at proposal time. Every replica
//! applies the batch with that same clock, so TTL decisions (is this key expired?)
//! are identical everywhere. Relative TTLs never enter the log: the leader turns
//! them into absolute `expires_at_ms` deadlines before proposing, so a leader
//! change does not reset them.
//!
//! Encoded with postcard inside openraft's entries (serde).

use std::cell::Cell;

use bytes::Bytes;
use ringkv_core::rebalance::Plan;
use ringkv_core::{ClusterMap, Version};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// Unix time in milliseconds.
pub type UnixMs = u64;

/// One Raft log entry's application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposing leader's wall clock. Apply uses it as "now" for expiry checks.
    pub now_ms: UnixMs,
    /// Applied in order; the i-th result answers the i-th op.
    pub ops: Vec<Op>,
}

/// A precondition on a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always write.
    None,
    /// Write only if the key is absent (or expired at `now_ms`).
    IfAbsent,
    /// Write only if the key exists at exactly this version.
    IfVersion(Version),
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set `key` to `value`. `expires_at_ms = None` means no expiry (and clears any
    /// previous TTL).
    Put { key: Bytes, value: Bytes, expires_at_ms: Option<UnixMs>, condition: Condition },
    /// Remove `key`, optionally only at a given version.
    Delete { key: Bytes, if_version: Option<Version> },
    /// Replace the TTL of an existing key (`None` clears it) without changing its
    /// value or version.
    Touch { key: Bytes, expires_at_ms: Option<UnixMs> },
    /// Add `delta` to the decimal integer stored at `key` (absent counts as 0).
    /// `expires_at_ms = None` keeps the key's current TTL.
    Increment { key: Bytes, delta: i64, expires_at_ms: Option<UnixMs> },
    /// Background expiry: remove each key that is expired at `now_ms`. Keys that
    /// were rewritten or touched since the leader chose them are left alone.
    Expire { keys: Vec<Bytes> },
    /// Meta shard only: install a cluster map, if the current epoch matches
    /// (`None` = only if no map is installed yet) and the new epoch is greater.
    SetClusterMap { expected_epoch: Option<u64>, map: ClusterMap },
    /// Meta shard only: install a rebalance plan, if the current one's revision
    /// is `expected_revision` (0 = none yet), the new revision is greater, and
    /// (when given) the cluster map is still at `expected_epoch`.
    SetPlan { expected_revision: u64, expected_epoch: Option<u64>, plan: Plan },
    /// A client write with a request id: applies `op` unless the shard already
    /// applied a write with this id that it still remembers, in which case the
    /// result is that write's (and nothing changes). The id is remembered until
    /// `retain_until_ms` (the leader's clock plus the retention window; later
    /// commands' clocks decide), or until the shard's bound forces it out.
    /// Added after the other variants, so logs written before it still decode.
    /// `op` is never itself a `Once`: decoding refuses the nesting, which would
    /// let a few bytes a level recurse as deep as a payload is long.
    Once {
        request_id: Bytes,
        retain_until_ms: UnixMs,
        #[serde(deserialize_with = "once_inner")]
        op: Box<Op>,
    },
    /// Sliding expiry (`Get` with `touch_ttl_ms`): moves the deadline of the
    /// live record at `key` to `expires_at_ms` if that is later, and never
    /// gives a deadline to a record without one. Idempotent, so retries are
    /// harmless. Added last, so older logs still decode.
    Extend { key: Bytes, expires_at_ms: UnixMs },
    /// Pub/sub: a message on `channel`. Changes no key; its only effect is the
    /// `Message` event subscribers of the channel receive, numbered by the
    /// entry's index and its place among the entry's messages
    /// ([`crate::events::message_seq`]). Added last, so older logs still decode.
    Publish { channel: Bytes, payload: Bytes },
}

thread_local! {
    /// Whether this thread is decoding the op inside a `Once` (see [`once_inner`]).
    static DECODING_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Decodes the op inside an [`Op::Once`], refusing another `Once` there.
///
/// `Op` is recursive through `Once`, and a nested `Once` costs three bytes on
/// the wire, so without this a 600 KB AppendEntries from a peer (or a damaged
/// log entry) nested deep enough to overflow the decoder's stack: an abort,
/// not an error (found writing `node/tests/hostile_input`, whose
/// AppendEntries target overflows without this). The leader only ever
/// wraps a plain client write, so one level is all a valid log holds, and
/// refusing the second before decoding it bounds the recursion (and the
/// recursion of `apply` and of dropping the op) at two.
fn once_inner<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<Op>, D::Error> {
    /// Clears the flag when the inner op is decoded, failed or unwound.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODING_ONCE.set(false);
        }
    }
    if DECODING_ONCE.replace(true) {
        return Err(D::Error::custom("a Once op nested inside a Once op"));
    }
    let _reset = Reset;
    Op::deserialize(deserializer).map(Box::new)
}

/// The result of one [`Op`], in the same position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// `version` is the new version on success, else the current one (0 = absent).
    Put {
        succeeded: bool,
        version: Version,
    },
    /// `version` is the entry's index when deleted, else the current one (0 = absent).
    Delete {
        deleted: bool,
        version: Version,
    },
    /// `expires_at_ms` is the deadline now in force (`None` = no expiry).
    Touch {
        found: bool,
        expires_at_ms: Option<UnixMs>,
    },
    Increment(Result<IncrementOk, IncrementError>),
    /// How many keys were actually removed.
    Expire {
        removed: u64,
    },
    /// `epoch` is the map's epoch after the op (the current one on failure).
    SetClusterMap {
        succeeded: bool,
        epoch: u64,
    },
    /// `revision` is the plan's revision after the op (the current one on failure).
    SetPlan {
        succeeded: bool,
        revision: u64,
    },
    /// `expires_at_ms` is the deadline now in force (`None` = no expiry).
    Extend {
        found: bool,
        expires_at_ms: Option<UnixMs>,
    },
    /// The message's sequence number ([`crate::events::message_seq`]).
    Publish {
        seq: Version,
    },
}

/// A successful increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementOk {
    pub value: i64,
    pub version: Version,
}

/// Why an increment changed nothing. Deterministic, so a response, not a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncrementError {
    /// The stored value is not a decimal i64.
    NotAnInteger,
    /// The result would not fit in an i64.
    Overflow,
}

/// What applying one log entry returned. Blank and membership entries return an
/// empty `results`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<OpResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Op {
        let (key, value) = (Bytes::from_static(b"k"), Bytes::from_static(b"v"));
        Op::Put { key, value, expires_at_ms: Some(9), condition: Condition::IfVersion(3) }
    }

    fn once(op: Op) -> Op {
        Op::Once { request_id: Bytes::from_static(b"id"), retain_until_ms: 7, op: Box::new(op) }
    }

    #[test]
    fn a_once_op_round_trips() {
        let command = Command { now_ms: 5, ops: vec![once(put()), put()] };
        let bytes = postcard::to_allocvec(&command).expect("encodes");
        assert_eq!(postcard::from_bytes::<Command>(&bytes), Ok(command));
    }

    #[test]
    fn a_once_inside_a_once_is_refused() {
        let bytes =
            postcard::to_allocvec(&Command { now_ms: 5, ops: vec![once(once(put()))] }).expect("encodes");
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
        // The refusal leaves no state behind: the next decode on this thread works.
        let bytes = postcard::to_allocvec(&Command { now_ms: 5, ops: vec![once(put())] }).expect("encodes");
        assert!(postcard::from_bytes::<Command>(&bytes).is_ok());
    }

    /// Regression (hostile_input): 200,000 nested `Once` ops, three bytes each
    /// (variant 7, empty request id, `retain_until_ms` 0), overflowed the stack.
    #[test]
    fn deeply_nested_once_ops_are_an_error_not_a_stack_overflow() {
        let mut bytes = vec![0, 1]; // now_ms 0, one op
        for _ in 0..200_000 {
            bytes.extend_from_slice(&[7, 0, 0]);
        }
        bytes.extend_from_slice(&[1, 1, b'k', 0]); // Delete { key: "k", if_version: None }
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
    }
}
