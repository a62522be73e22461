//! The storage layer's error type.
//!
//! [`StoreError`] is what [`NodeStorage`](super::NodeStorage)'s own API returns
//! (opening the database, opening or dropping a shard, node metadata). Inside the
//! openraft trait implementations every failure is turned into openraft's
//! `StorageError` instead, carrying the `StoreError`'s message; openraft then stops
//! that one Raft group (`Fatal::StorageError`), which is the design's rule for a
//! replica whose storage misbehaves.
//!
//! The variants say what went wrong and where, so an operator can act on the
//! message alone: which file is corrupt and why, which sled key does not decode,
//! which shard is still in use.
//!
//! ## Caveats / not done yet
//! - Inside openraft's traits the typed variant is flattened into a message
//!   (openraft's `AnyError`); callers of `Raft` see the text, not the variant.
//! - No mapping to `tonic::Status` here: storage errors never cross the wire as
//!   such (a failing replica stops; the router sees it as unavailable).

use std::io;
use std::path::PathBuf;

use ringkv_core::ShardId;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed (creating a directory, writing or syncing a
    /// file, syncing sled's data file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// sled returned an error. `context` names the operation and the tree.
    #[error("sled: {context}: {source}")]
    Sled {
        context: String,
        #[source]
        source: sled::Error,
    },

    /// A snapshot file exists but cannot be trusted: wrong magic, unknown format
    /// version, inconsistent lengths, crc32 mismatch, undecodable content, or it is
    /// not the snapshot sled says it should be. The shard must not start from it;
    /// restore the file or rebuild the replica from its peers.
    #[error("snapshot file {} is corrupt: {reason}", path.display())]
    SnapshotCorrupt { path: PathBuf, reason: String },

    /// sled's shard metadata points at a snapshot file that does not exist. The
    /// log before that snapshot may already be purged, so starting empty would
    /// lose data; restore the file or rebuild the replica from its peers.
    #[error("snapshot file {} is missing, but the shard's metadata points at it", path.display())]
    SnapshotMissing { path: PathBuf },

    /// A value stored in sled does not decode (or has an impossible value).
    #[error("sled tree {tree:?}, key {key:?}: {reason}")]
    CorruptValue { tree: String, key: String, reason: String },

    /// A shard's on-disk layout version is not one this build understands.
    #[error("shard {shard}: storage format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat { shard: ShardId, found: u32, supported: u32 },

    /// The shard is already open (a `LogStore`, `StateMachineStore`, log reader or
    /// snapshot builder of it is still alive), or another open/drop of it is in
    /// progress. Close every handle (shut its Raft down) and retry.
    #[error("shard {shard} is in use: it is open, or being opened or dropped")]
    ShardInUse { shard: ShardId },

    /// A snapshot could not be encoded (should not happen for our types).
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },

    /// `NodeStorage::open` was called outside a tokio runtime; the flusher task
    /// needs one.
    #[error("NodeStorage::open must be called inside a tokio runtime (it spawns the flusher task)")]
    NoRuntime,

    /// The flusher task is gone (its runtime shut down), so nothing can be made
    /// durable any more.
    #[error("the flusher task has stopped; writes can no longer be made durable")]
    FlusherStopped,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    pub(crate) fn sled(context: impl Into<String>, source: sled::Error) -> Self {
        StoreError::Sled { context: context.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        StoreError::SnapshotCorrupt { path: path.into(), reason: reason.into() }
    }
}
