//! A shard's Raft log over sled: openraft's `RaftLogReader` + `RaftLogStorage`.
//!
//! Entries live in the tree `shard/<shard:010>/log`, keyed by the log index as
//! 8 big-endian bytes (so sled's key order is index order), valued
//! postcard(`Entry`). Vote, committed and last-purged log ids live in the shard's
//! meta tree (see `shard.rs` for the keys).
//!
//! Invariants:
//! - `append` inserts its entries in index order (each readable at once; a
//!   crash keeps a prefix of them), then hands the callback to the node's
//!   flusher; the callback fires only when a later flush round has made them
//!   durable, including the sled blob file of any entry above ~128 KiB.
//! - `save_vote` returns only after a flush round: the vote is durable.
//! - `purge` writes `last_purged` before deleting entries, so the log never
//!   appears to start after `last_purged + 1`, even after a crash.
//! - `truncate`, `purge` and `save_committed` are not flushed themselves; the
//!   next flush covers them, and sled's prefix recovery keeps the order.
//! - The log state's `last_log_id` is the last present entry, else `last_purged`.
//! - Every entry read is decoded without panicking and must carry the index it is
//!   stored under; anything else is a `StorageError` (which stops the group).
//!
//! ## Caveats / not done yet
//! - `truncate` and `purge` delete one key at a time (sled 0.34 has no range
//!   delete): O(entries). Fine with regular snapshots and purges.
//! - `get_log_state` decodes the whole last entry to learn its log id.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use ringkv_core::ShardId;

use super::StoreError;
use super::shard::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, ShardHandle};
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// `limited_get_log_entries` stops adding entries once the batch holds this many
/// encoded bytes (it always returns at least one entry when one exists). Keeps
/// AppendEntries well under the gRPC message limit.
pub const MAX_READ_BATCH_BYTES: usize = 4 << 20;

/// A shard's log storage. Cloning gives another handle on the same log (that is
/// how log readers are made); the shard stays open while any clone lives.
#[derive(Clone)]
pub struct LogStore {
    shard: Arc<ShardHandle>,
}

impl LogStore {
    pub(crate) fn new(shard: Arc<ShardHandle>) -> Self {
        LogStore { shard }
    }

    /// The shard this log belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard.id
    }

    /// Reads `[lo, hi)` (hi = None: to the end), stopping early once `max_bytes`
    /// is reached after at least one entry.
    fn read_range(&self, lo: u64, hi: Option<u64>, max_bytes: usize) -> Result<Vec<Entry>, StoreError> {
        if hi.is_some_and(|hi| lo >= hi) {
            return Ok(Vec::new());
        }
        let start = Bound::Included(lo.to_be_bytes());
        let end = hi.map_or(Bound::Unbounded, |hi| Bound::Excluded(hi.to_be_bytes()));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.shard.log.range::<[u8; 8], _>((start, end)) {
            let (key, value) = item.map_err(|e| self.sled_err("reading", e))?;
            if !entries.is_empty() && bytes.saturating_add(value.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(value.len());
            entries.push(self.decode_entry(&key, &value)?);
        }
        Ok(entries)
    }

    /// Decodes a stored entry and checks it is stored under its own index.
    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
        super::decode::log_entry(&self.shard.log_tree_name, key, value)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.shard.meta_get(KEY_LAST_PURGED)
    }

    /// Removes every entry whose key is in `range` in one batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.shard.log.range(range).keys() {
            batch.remove(key.map_err(|e| self.sled_err("reading", e))?);
        }
        self.shard.log.apply_batch(batch).map_err(|e| self.sled_err("deleting from", e))
    }

    fn sled_err(&self, verb: &str, e: sled::Error) -> StoreError {
        StoreError::sled(format!("{verb} tree {}", self.shard.log_tree_name), e)
    }
}

/// `[lo, hi)` of a range of indexes; `hi = None` means unbounded. An empty range
/// comes back as `lo >= hi`.
fn half_open(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let lo = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return (1, Some(0)), // (u64::MAX, ..): empty
        },
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1), // ..=u64::MAX: unbounded
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (lo, hi)
}

fn store_err(f: fn(AnyError) -> StorageIOError<u64>, e: StoreError) -> StorageError {
    f(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (lo, hi) = half_open(&range);
        self.read_range(lo, hi, usize::MAX).map_err(|e| store_err(StorageIOError::read_logs, e))
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.read_range(start, Some(end), MAX_READ_BATCH_BYTES)
            .map_err(|e| store_err(StorageIOError::read_logs, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged_log_id = self.last_purged()?;
            let last = self.shard.log.last().map_err(|e| self.sled_err("reading", e))?;
            let last_log_id = match last {
                Some((key, value)) => Some(self.decode_entry(&key, &value)?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState { last_purged_log_id, last_log_id })
        };
        read().map_err(|e| store_err(StorageIOError::read_logs, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.shard.meta_put(KEY_VOTE, vote).map_err(|e| store_err(StorageIOError::write_vote, e))?;
        self.shard.flush().await.map_err(|e| store_err(StorageIOError::write_vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.shard.meta_get(KEY_VOTE).map_err(|e| store_err(StorageIOError::read_vote, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let result = match committed {
            Some(id) => self.shard.meta_put(KEY_COMMITTED, &id),
            None => self.shard.meta_remove(KEY_COMMITTED),
        };
        result.map_err(|e| store_err(StorageIOError::write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.shard.meta_get(KEY_COMMITTED).map_err(|e| store_err(StorageIOError::read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One `insert` per entry, in index order, and no `apply_batch`: sled 0.34's
        // `apply_batch` seals and writes its IO buffer before and after the batch
        // (`PageCache::pin_log`), which cost two synchronous device writes per
        // append on sled's thread pool — most of the node's CPU under load. A
        // crash between two inserts leaves a prefix of the entries (sled recovers
        // a prefix of its log), which is a valid, unacknowledged Raft log.
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            self.shard
                .log
                .insert(entry.log_id.index.to_be_bytes(), bytes)
                .map_err(|e| store_err(StorageIOError::write_logs, self.sled_err("appending to", e)))?;
        }
        // Readable now; the callback fires once a flush round has made it durable.
        self.shard.node.flusher().submit_log(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index.to_be_bytes()..).map_err(|e| store_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // last_purged never moves backwards (openraft does not ask it to). The
        // deletion runs even when it does not advance: a crash may have persisted
        // last_purged but not all of the deletions.
        let purge = || -> Result<(), StoreError> {
            if self.last_purged()?.is_none_or(|p| p < log_id) {
                self.shard.meta_put(KEY_LAST_PURGED, &log_id)?;
            }
            self.remove_range(..=log_id.index.to_be_bytes())
        };
        purge().map_err(|e| store_err(StorageIOError::write_logs, e))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::command::{Command, Condition, Op};
    use crate::store::NodeStorage;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    fn put(index: u64, value_bytes: usize) -> Entry {
        let op = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![7u8; value_bytes]),
            expires_at_ms: None,
            condition: Condition::None,
        };
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Command { now_ms: 1, ops: vec![op] }),
        }
    }

    #[test]
    fn half_open_ranges() {
        assert_eq!(half_open(&(3..7)), (3, Some(7)));
        assert_eq!(half_open(&(3..=7)), (3, Some(8)));
        assert_eq!(half_open(&(3..)), (3, None));
        assert_eq!(half_open(&(..)), (0, None));
        assert_eq!(half_open(&(..=u64::MAX)), (0, None));
        assert_eq!(half_open(&(Bound::Excluded(4), Bound::Included(4))), (5, Some(5)));
        let (lo, hi) = half_open(&(Bound::Excluded(u64::MAX), Bound::Unbounded));
        assert!(hi.is_some_and(|hi| lo >= hi));
    }

    #[tokio::test]
    async fn limited_reads_are_capped_by_bytes_but_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (mut log, _sm) = storage.open_shard(1).unwrap();
        // Three entries of ~3 MiB: two would exceed the 4 MiB cap.
        log.blocking_append([put(1, 3 << 20), put(2, 3 << 20), put(3, 3 << 20)]).await.unwrap();
        let got = log.limited_get_log_entries(1, 4).await.unwrap();
        assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1]);
        let got = log.limited_get_log_entries(3, 4).await.unwrap();
        assert_eq!(got.len(), 1);
        // Small entries are not capped.
        log.blocking_append((4..=50).map(|i| blank(1, i))).await.unwrap();
        assert_eq!(log.limited_get_log_entries(4, 51).await.unwrap().len(), 47);
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn damaged_entries_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (mut log, _sm) = storage.open_shard(1).unwrap();
        log.blocking_append([blank(1, 1), blank(1, 2)]).await.unwrap();

        // Garbage bytes under index 3.
        log.shard.log.insert(3u64.to_be_bytes(), &[0xFF; 5][..]).unwrap();
        assert!(log.try_get_log_entries(1..4).await.is_err());
        assert!(log.get_log_state().await.is_err());

        // A valid entry stored under the wrong index.
        let misplaced = postcard::to_allocvec(&blank(1, 9)).unwrap();
        log.shard.log.insert(3u64.to_be_bytes(), misplaced).unwrap();
        let err = log.try_get_log_entries(3..4).await.unwrap_err();
        assert!(err.to_string().contains("index 3"), "{err}");

        // A wrong-sized key.
        log.shard.log.remove(3u64.to_be_bytes()).unwrap();
        log.shard.log.insert(&[1u8, 2, 3][..], &[][..]).unwrap();
        assert!(log.try_get_log_entries(..).await.is_err());

        // A damaged vote.
        log.shard.meta.insert(KEY_VOTE, &[0xFF][..]).unwrap();
        assert!(log.read_vote().await.is_err());
    }

    #[tokio::test]
    async fn purge_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (mut log, _sm) = storage.open_shard(1).unwrap();
        log.blocking_append((1..=10).map(|i| blank(1, i))).await.unwrap();
        log.purge(log_id(1, 5)).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
        assert_eq!(log.try_get_log_entries(..).await.unwrap().first().map(|e| e.log_id.index), Some(6));
        // Purging everything leaves the purged id as the last log id.
        log.purge(log_id(1, 10)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
    }
}
