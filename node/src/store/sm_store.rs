//! A shard's state machine for openraft: the in-memory [`KvState`] plus what
//! Raft needs next to it, and the snapshot builder.
//!
//! [`ShardState`] is shared as `Arc<std::sync::RwLock<_>>`: openraft's
//! state-machine worker writes it (`apply`, `install_snapshot`), the KV service
//! reads it through [`StateMachineStore::state`]. Every lock is held briefly and
//! never across an `.await`.
//!
//! Invariants:
//! - `apply` returns exactly one [`Response`] per entry; blank and membership
//!   entries get `Response::default()`. After each entry, `last_applied` is its
//!   log id (under the same lock as the data change, so a reader never sees the
//!   data of an entry without its `last_applied`, or the reverse).
//! - A snapshot is a consistent copy: [`SnapshotBuilder`] clones the state in
//!   `get_snapshot_builder` (on the state-machine worker, between applies);
//!   `build_snapshot` then runs in its own task while applies continue, and only
//!   serializes that copy (guide §4.3: never share the live map with the builder).
//! - `build_snapshot` and `install_snapshot` return only once the snapshot file
//!   is written and the sled pointer is flushed; `install_snapshot` persists first
//!   and replaces the in-memory state after, so a failed persist leaves the state
//!   as it was.
//! - Nothing here panics on data: encode/decode failures and a poisoned lock are
//!   `StorageError`s. (`KvState::apply` itself panics on internal faults, by
//!   design: that replica must stop rather than diverge.)
//!
//! ## Caveats / not done yet
//! - `get_snapshot_builder` clones the whole map, O(keys), on the apply path;
//!   applies (and the KV reads waiting on the write lock behind them) stall for
//!   that long. A persistent (structurally shared) map would make it O(1).
//! - The snapshot is serialized into memory and handed to openraft as a
//!   `Cursor<Vec<u8>>`; no streaming to or from disk.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use ringkv_core::ShardId;

use super::StoreError;
use super::shard::{Replace, ShardHandle};
use super::snapshot_file::SnapshotFile;
use crate::command::Response;
use crate::events::ShardEvents;
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state_machine::KvState;

fn encode_kv(kv: &KvState) -> Result<Vec<u8>, postcard::Error> {
    Ok(kv.encode_snapshot())
}

fn decode_kv(bytes: &[u8]) -> Result<KvState, postcard::Error> {
    KvState::decode_snapshot(bytes)
}

/// A shard's in-memory state: the data and the Raft position it reflects.
#[derive(Debug, Clone, Default)]
pub struct ShardState {
    /// The replicated key-value data.
    pub kv: KvState,
    /// The last log entry applied to `kv` (None: nothing yet).
    pub last_applied: Option<LogId>,
    /// The last membership config applied (from a membership entry or a snapshot).
    pub membership: StoredMembership,
}

/// A shard's state machine. Not `Clone`: openraft owns it; readers use
/// [`StateMachineStore::state`].
pub struct StateMachineStore {
    shard: Arc<ShardHandle>,
    state: Arc<RwLock<ShardState>>,
    /// What each applied entry changed, for watchers.
    events: Arc<ShardEvents>,
    /// The last version recorded in `events`: wakes the watchers; dropped
    /// with the state machine, which ends them.
    progress: tokio::sync::watch::Sender<u64>,
}

impl StateMachineStore {
    /// Builds the state machine from the snapshot loaded at open (or empty).
    pub(crate) fn open(
        shard: Arc<ShardHandle>,
        snapshot: Option<SnapshotFile>,
        max_events: usize,
    ) -> Result<Self, StoreError> {
        let state = match snapshot {
            None => ShardState::default(),
            Some(file) => {
                let kv = decode_kv(&file.data).map_err(|e| {
                    StoreError::corrupt(&file.path, format!("state-machine data does not decode: {e}"))
                })?;
                ShardState { kv, last_applied: file.meta.last_log_id, membership: file.meta.last_membership }
            }
        };
        let applied = state.last_applied.map_or(0, |id| id.index);
        let events = Arc::new(ShardEvents::new(applied, max_events));
        let (progress, _) = tokio::sync::watch::channel(applied);
        Ok(StateMachineStore { shard, state: Arc::new(RwLock::new(state)), events, progress })
    }

    /// The replica's change events, for watchers.
    pub fn events(&self) -> Arc<ShardEvents> {
        self.events.clone()
    }

    /// Wakes on every recorded version; closed when the state machine is
    /// dropped (the replica stopped).
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The shared state, for readers. Take the read lock briefly; never hold it
    /// across an `.await`.
    pub fn state(&self) -> Arc<RwLock<ShardState>> {
        self.state.clone()
    }

    /// The shard this state machine belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard.id
    }
}

fn poisoned() -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(
        "shard state lock is poisoned: an earlier apply panicked, the state may be half-applied",
    ))
    .into()
}

/// Builds one snapshot from the copy taken when it was created.
pub struct SnapshotBuilder {
    shard: Arc<ShardHandle>,
    /// The copy to serialize, or why none could be taken.
    state: Result<ShardState, String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = self
            .state
            .as_ref()
            .map_err(|reason| StorageIOError::read_state_machine(AnyError::error(reason)))?;
        let data = encode_kv(&state.kv).map_err(|e| {
            StorageIOError::read_state_machine(AnyError::error(format!("encoding the state machine: {e}")))
        })?;
        let seq = self.shard.next_seq().map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match &state.last_applied {
            Some(id) => format!("{id}-{seq}"),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let (data, _became_current) = self
            .shard
            .persist_snapshot(meta.clone(), data, seq, Replace::IfNotOlder)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut last = None;
        for entry in entries {
            // One lock per entry: readers get in between entries, and always see
            // an entry's data together with its last_applied.
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let mut events = Vec::new();
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(command) => {
                    state.kv.apply_with_events(entry.log_id.index, &command, &mut events)
                }
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            state.last_applied = Some(entry.log_id);
            drop(state);
            self.events.record(entry.log_id.index, events);
            last = Some(entry.log_id.index);
            responses.push(response);
        }
        if let Some(last) = last {
            self.progress.send_replace(last);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let state = match self.state.read() {
            Ok(state) => Ok(state.clone()),
            Err(_) => Err("shard state lock is poisoned: an earlier apply panicked".to_string()),
        };
        SnapshotBuilder { shard: self.shard.clone(), state }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let kv = decode_kv(&data).map_err(|e| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(format!("received snapshot data does not decode: {e}")),
            )
        })?;
        let seq =
            self.shard.next_seq().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shard
            .persist_snapshot(meta.clone(), data, seq, Replace::Always)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        *state = ShardState { kv, last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        drop(state);
        // The events before the snapshot are unknown here: watchers of them
        // get OUT_OF_RANGE.
        let applied = meta.last_log_id.map_or(0, |id| id.index);
        self.events.reset(applied);
        self.progress.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current =
            self.shard.current_snapshot().await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|file| Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(file.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::store::NodeStorage;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(index: u64) -> Entry {
        Entry { log_id: log_id(1, index), payload: EntryPayload::Blank }
    }

    fn membership(index: u64, voters: &[u64]) -> Entry {
        let config: BTreeSet<u64> = voters.iter().copied().collect();
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Membership(Membership::new(vec![config], None)),
        }
    }

    #[tokio::test]
    async fn apply_answers_every_entry_and_tracks_position() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (_log, mut sm) = storage.open_shard(1).unwrap();
        let responses = sm.apply([blank(1), membership(2, &[1, 2]), blank(3)]).await.unwrap();
        assert_eq!(responses, vec![Response::default(); 3]);
        let (last_applied, stored) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, 3)));
        assert_eq!(stored.log_id(), &Some(log_id(1, 2)));
        assert!(sm.apply(Vec::new()).await.unwrap().is_empty());
        // Readers see the same through the shared handle.
        assert_eq!(sm.state().read().unwrap().last_applied, Some(log_id(1, 3)));
    }

    #[tokio::test]
    async fn the_builder_snapshots_the_state_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (_log, mut sm) = storage.open_shard(1).unwrap();
        sm.apply([blank(1), membership(2, &[1])]).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        // Applies continue while the snapshot is being built.
        sm.apply([blank(3), membership(4, &[1, 2])]).await.unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 2)));
        assert_eq!(snapshot.meta.last_membership.log_id(), &Some(log_id(1, 2)));
    }

    #[tokio::test]
    async fn a_slow_build_does_not_replace_a_newer_installed_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (_log, mut leader) = storage.open_shard(1).unwrap();
        let (_log2, mut follower) = storage.open_shard(2).unwrap();

        // The follower starts building at index 1 ...
        follower.apply([blank(1)]).await.unwrap();
        let mut slow = follower.get_snapshot_builder().await;

        // ... while a newer snapshot (index 5) from the leader is installed.
        leader.apply([blank(1), membership(2, &[1]), blank(3), blank(4), blank(5)]).await.unwrap();
        let newer = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        *data = *newer.snapshot;
        follower.install_snapshot(&newer.meta, data).await.unwrap();

        let stale = slow.build_snapshot().await.unwrap();
        assert_eq!(stale.meta.last_log_id, Some(log_id(1, 1)));
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta, "the stale build replaced the installed snapshot");
        assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(1, 5)));
    }

    #[tokio::test]
    async fn undecodable_snapshot_data_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (_log, mut sm) = storage.open_shard(1).unwrap();
        sm.apply([blank(1)]).await.unwrap();
        let meta = SnapshotMeta { last_log_id: Some(log_id(1, 9)), ..Default::default() };
        let garbage = Box::new(Cursor::new(vec![0xFF; 16]));
        assert!(sm.install_snapshot(&meta, garbage).await.is_err());
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1)));
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    }
}
