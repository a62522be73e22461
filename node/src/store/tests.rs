//! Node-level tests of the store: group commit across shards, restart, shard
//! lifecycle, and damaged snapshots at open. Per-file tests live beside the
//! code (`snapshot_file.rs`, `log_store.rs`, `sm_store.rs`, `flusher.rs`);
//! openraft's conformance suite is `node/tests/storage_suite.rs`.
//!
//! ## Caveats / not done yet
//! - Crash consistency is tested by reopening after a clean drop, not by killing
//!   the process mid-write or by power-loss simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use futures::future::join_all;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};

use super::*;
use crate::command::{Command, Condition, Op};
use crate::raft_types::{Entry, LogId, Vote};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let nodes: BTreeMap<u64, BasicNode> =
        voters.iter().map(|&id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id)))).collect();
    let config: BTreeSet<u64> = voters.iter().copied().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![config], nodes)),
    }
}

/// Opens the storage in `dir`, waiting (up to 10 s) while sled still holds
/// the directory's lock for a handle dropped just before: sled 0.34 finishes
/// writing its log buffers on its own IO threads, which keep the lock for a
/// moment after the last `Db` handle is gone. Only a reopen in the same
/// process can see that (a restarted node is a new process).
async fn reopen(dir: &std::path::Path) -> NodeStorage {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match NodeStorage::open(dir) {
            Ok(storage) => return storage,
            Err(err) if err.to_string().contains("could not acquire lock") => {
                assert!(std::time::Instant::now() < deadline, "sled kept its lock for 10 s: {err}");
                // Poll interval: nothing signals sled's IO threads finishing.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(err) => panic!("reopening {}: {err}", dir.display()),
        }
    }
}

fn shard_snapshot_files(storage: &NodeStorage, shard: ShardId) -> Vec<PathBuf> {
    let dir = storage.snapshot_root().join(shard::snapshot_dir_name(shard));
    let mut files: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn open_outside_a_runtime_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(NodeStorage::open(dir.path()), Err(StoreError::NoRuntime)));
}

#[tokio::test]
async fn concurrent_appends_share_flush_rounds() {
    const SHARDS: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut logs: Vec<LogStore> = (0..SHARDS).map(|s| storage.open_shard(s).unwrap().0).collect();

    let before = storage.flush_stats();
    let results = join_all(logs.iter_mut().map(|log| log.blocking_append([blank(1, 1)]))).await;
    let after = storage.flush_stats();

    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let rounds = after.rounds - before.rounds;
    let waiters = after.waiters - before.waiters;
    assert_eq!(waiters, u64::from(SHARDS));
    assert!(rounds >= 1 && rounds < waiters, "{rounds} rounds for {waiters} waiters: no group commit");
    assert_eq!(after.failed_rounds, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_from_tasks_share_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let before = storage.flush_stats();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move { storage.put_node_meta(&format!("k{i}"), b"v").await })
        })
        .collect();
    for task in join_all(tasks).await {
        task.unwrap().unwrap();
    }
    let after = storage.flush_stats();
    assert_eq!(after.waiters - before.waiters, 64);
    assert!(after.rounds - before.rounds < 64, "{before:?} -> {after:?}");
}

#[tokio::test]
async fn restart_round_trips_vote_log_committed_purged_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    let snapshot_meta;
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (mut log, mut sm) = storage.open_shard(7).unwrap();
        log.save_vote(&vote).await.unwrap();
        let mut entries = vec![blank(1, 1), membership(1, 2, &[1, 2, 3])];
        entries.extend((3..=10).map(|i| blank(2, i)));
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(2, 8))).await.unwrap();

        let responses = sm.apply(entries[..6].to_vec()).await.unwrap();
        assert_eq!(responses.len(), 6);
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 6)));
        snapshot_meta = snapshot.meta;
        log.purge(log_id(2, 4)).await.unwrap();

        storage.put_node_meta("node-id", b"2").await.unwrap();
        // Everything above is durable by now except purge/committed, which the
        // next flush covers; sled also flushes when the last handle drops.
        storage.flush().await.unwrap();
    }

    let storage = reopen(dir.path()).await;
    assert_eq!(storage.get_node_meta("node-id").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(storage.get_node_meta("absent").unwrap(), None);
    assert_eq!(storage.stored_shards(), vec![7]);
    let (mut log, mut sm) = storage.open_shard(7).unwrap();

    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 10)));
    let indexes: Vec<u64> =
        log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (5..=10).collect::<Vec<_>>());

    let (last_applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(2, 6)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 2)));
    assert_eq!(membership, snapshot_meta.last_membership);
    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot after restart");
    assert_eq!(current.meta, snapshot_meta);
    let shared = sm.state();
    assert_eq!(shared.read().unwrap().last_applied, Some(log_id(2, 6)));
}

#[tokio::test]
async fn a_shard_opens_once_and_drops_only_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let (mut log, mut sm) = storage.open_shard(3).unwrap();
    assert!(matches!(storage.open_shard(3), Err(StoreError::ShardInUse { shard: 3 })));
    assert!(matches!(storage.drop_shard(3).await, Err(StoreError::ShardInUse { shard: 3 })));

    log.blocking_append([blank(1, 1), membership(1, 2, &[1])]).await.unwrap();
    sm.apply([blank(1, 1), membership(1, 2, &[1])]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(shard_snapshot_files(&storage, 3).len(), 1);

    // A log reader or a snapshot builder alone keeps the shard open.
    let reader = log.get_log_reader().await;
    let builder = sm.get_snapshot_builder().await;
    drop((log, sm));
    assert!(matches!(storage.open_shard(3), Err(StoreError::ShardInUse { .. })));
    drop(reader);
    assert!(matches!(storage.drop_shard(3).await, Err(StoreError::ShardInUse { .. })));
    drop(builder);

    storage.drop_shard(3).await.unwrap();
    assert!(storage.stored_shards().is_empty());
    assert!(!storage.snapshot_root().join(shard::snapshot_dir_name(3)).exists());

    // Reopening gives an empty shard.
    let (mut log, mut sm) = storage.open_shard(3).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
    assert_eq!(log.read_vote().await.unwrap(), None);
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

/// Writes a shard with one snapshot, closes everything, and returns the path of
/// the snapshot file.
async fn shard_with_snapshot(dir: &std::path::Path, shard: ShardId) -> PathBuf {
    let storage = NodeStorage::open(dir).unwrap();
    let (_log, mut sm) = storage.open_shard(shard).unwrap();
    sm.apply([blank(1, 1), membership(1, 2, &[1, 2])]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let files = shard_snapshot_files(&storage, shard);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

#[tokio::test]
async fn a_damaged_snapshot_file_fails_the_open_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = shard_with_snapshot(dir.path(), 1).await;
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&path, &bytes).unwrap();

    let storage = NodeStorage::open(dir.path()).unwrap();
    match storage.open_shard(1) {
        Err(e @ StoreError::SnapshotCorrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&*path.to_string_lossy()) && msg.contains("crc32"), "{msg}");
        }
        Err(other) => panic!("expected SnapshotCorrupt, got {other}"),
        Ok(_) => panic!("expected SnapshotCorrupt, the shard opened"),
    }
    // The failed open released the shard: a retry fails the same way, not with ShardInUse.
    assert!(matches!(storage.open_shard(1), Err(StoreError::SnapshotCorrupt { .. })));
    // The damaged file is kept for the operator.
    assert!(path.exists());
}

#[tokio::test]
async fn a_missing_snapshot_file_fails_the_open_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = shard_with_snapshot(dir.path(), 1).await;
    fs::remove_file(&path).unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    match storage.open_shard(1) {
        Err(e @ StoreError::SnapshotMissing { .. }) => {
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        }
        Err(other) => panic!("expected SnapshotMissing, got {other}"),
        Ok(_) => panic!("expected SnapshotMissing, the shard opened"),
    }
}

#[tokio::test]
async fn a_swapped_snapshot_file_fails_the_open() {
    // Two shards' snapshots are both valid files; putting one in place of the
    // other must not go unnoticed.
    let dir = tempfile::tempdir().unwrap();
    let one = shard_with_snapshot(dir.path(), 1).await;
    let two = shard_with_snapshot(dir.path(), 2).await;
    fs::copy(&two, &one).unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    match storage.open_shard(1) {
        Err(StoreError::SnapshotCorrupt { path, reason }) => {
            assert_eq!(path, one);
            assert!(reason.contains("not the snapshot sled recorded"), "{reason}");
        }
        Err(other) => panic!("expected SnapshotCorrupt, got {other}"),
        Ok(_) => panic!("expected SnapshotCorrupt, the shard opened"),
    }
}

#[tokio::test]
async fn orphan_snapshot_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let current = shard_with_snapshot(dir.path(), 1).await;
    let parent = current.parent().unwrap().to_path_buf();
    fs::write(parent.join("snap-00000000000000000099-00000000000000000099"), b"orphan").unwrap();
    fs::write(parent.join("snap-00000000000000000100-00000000000000000100.tmp"), b"half").unwrap();

    let storage = NodeStorage::open(dir.path()).unwrap();
    let (_log, mut sm) = storage.open_shard(1).unwrap();
    assert_eq!(shard_snapshot_files(&storage, 1), vec![current]);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_new_snapshot_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let (_log, mut sm) = storage.open_shard(1).unwrap();
    sm.apply([blank(1, 1)]).await.unwrap();
    let first = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    sm.apply([blank(1, 2)]).await.unwrap();
    let second = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_ne!(first.meta.snapshot_id, second.meta.snapshot_id);
    let files = shard_snapshot_files(&storage, 1);
    assert_eq!(files.len(), 1);
    assert!(files[0].to_string_lossy().contains("snap-00000000000000000002-"), "{files:?}");
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, second.meta);
}

#[tokio::test]
async fn handles_and_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<NodeStorage>();
    is_send_sync::<LogStore>();
    is_send_sync::<StateMachineStore>();
    is_send_sync::<SnapshotBuilder>();
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    is_send(&storage.drop_shard(1));
    is_send(&storage.put_node_meta("k", b"v"));
    is_send(&storage.remove_node_meta("k"));
    is_send(&storage.flush());
}

#[tokio::test]
async fn node_meta_is_durable_and_removable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let before = storage.flush_stats();
        storage.put_node_meta("a", b"1").await.unwrap();
        storage.put_node_meta("b", b"2").await.unwrap();
        storage.remove_node_meta("a").await.unwrap();
        // Each write waited for its own round.
        assert_eq!(storage.flush_stats().rounds - before.rounds, 3);
    }
    let storage = reopen(dir.path()).await;
    assert_eq!(storage.get_node_meta("a").unwrap(), None);
    assert_eq!(storage.get_node_meta("b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(storage.data_dir(), dir.path());
}

/// A log entry whose encoding is far above sled's blob threshold (~128 KiB with
/// 512 KiB segments), so sled stores it as a file under `<sled>/blobs`.
fn big_entry(term: u64, index: u64) -> Entry {
    const VALUE_BYTES: usize = 600 << 10;
    // Not compressible and not constant, so a torn or mixed-up file would show.
    let value: Vec<u8> =
        (0..VALUE_BYTES).map(|i| (i as u64).wrapping_mul(2_654_435_761).wrapping_add(index) as u8).collect();
    let op = Op::Put {
        key: bytes::Bytes::from(format!("big-{index}")),
        value: bytes::Bytes::from(value),
        expires_at_ms: None,
        condition: Condition::None,
    };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Command { now_ms: 1, ops: vec![op] }) }
}

fn sled_blob_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let blobs = dir.join("sled").join(flusher::BLOBS_DIR);
    let mut files: Vec<PathBuf> = fs::read_dir(blobs).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_large_entry_goes_to_a_sled_blob_that_the_flusher_syncs_once() {
    let dir = tempfile::tempdir().unwrap();
    let entry = big_entry(1, 1);
    let encoded = postcard::to_allocvec(&entry).unwrap().len();
    assert!(encoded > 512 << 10, "{encoded} bytes: not well above the ~128 KiB blob threshold");
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (mut log, _sm) = storage.open_shard(1).unwrap();
        assert!(sled_blob_files(dir.path()).is_empty(), "no blob before the large append");

        let before = storage.flush_stats();
        log.blocking_append([entry.clone()]).await.unwrap();
        let after_append = storage.flush_stats();

        // sled wrote the entry as a blob file, and the round that completed the
        // append's callback fsynced it and the directory.
        let blobs = sled_blob_files(dir.path());
        assert!(!blobs.is_empty(), "sled wrote no blob file for a {encoded}-byte entry");
        assert!(blobs.iter().any(|b| fs::metadata(b).unwrap().len() > encoded as u64), "{blobs:?}");
        assert_eq!(after_append.failed_rounds, before.failed_rounds);
        assert_eq!(after_append.blob_files_synced - before.blob_files_synced, blobs.len() as u64);
        assert_eq!(after_append.blob_dir_syncs - before.blob_dir_syncs, after_append.rounds - before.rounds);

        // The next round has nothing new: no blob fsync, no directory fsync.
        storage.flush().await.unwrap();
        let after_flush = storage.flush_stats();
        assert_eq!(after_flush.rounds, after_append.rounds + 1);
        assert_eq!(after_flush.blob_files_synced, after_append.blob_files_synced);
        assert_eq!(after_flush.blob_dir_syncs, after_append.blob_dir_syncs);
        assert_eq!(sled_blob_files(dir.path()), blobs);
    }

    // Restart: the entry reads back intact.
    let storage = reopen(dir.path()).await;
    let (mut log, _sm) = storage.open_shard(1).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 1)));
    let read = log.try_get_log_entries(1..2).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].log_id, entry.log_id);
    match (&read[0].payload, &entry.payload) {
        (EntryPayload::Normal(got), EntryPayload::Normal(want)) => assert!(got == want, "payload differs"),
        _ => panic!("entry read back with another payload kind"),
    }
    // A fresh flusher re-syncs the blobs it finds once, then no more.
    let before = storage.flush_stats();
    storage.flush().await.unwrap();
    storage.flush().await.unwrap();
    let after = storage.flush_stats();
    assert_eq!(after.blob_files_synced - before.blob_files_synced, sled_blob_files(dir.path()).len() as u64);
    assert_eq!(after.blob_dir_syncs - before.blob_dir_syncs, 1);
}

#[tokio::test]
async fn a_blob_that_cannot_be_synced_fails_the_round_for_its_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let (mut log, _sm) = storage.open_shard(1).unwrap();
    // Stands in for an fsync error: a name in sled's blob directory that cannot be
    // opened (a symlink to itself: ELOOP, even as root).
    let bad = dir.path().join("sled").join(flusher::BLOBS_DIR).join("18446744073709551615");
    std::os::unix::fs::symlink(bad.file_name().unwrap(), &bad).unwrap();

    let before = storage.flush_stats();
    let err = log.blocking_append([blank(1, 1)]).await.unwrap_err();
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
    assert!(matches!(storage.flush().await, Err(StoreError::Io { .. })));
    let after = storage.flush_stats();
    assert_eq!(after.failed_rounds - before.failed_rounds, after.rounds - before.rounds);
    assert_eq!(after.blob_files_synced, before.blob_files_synced);

    fs::remove_file(&bad).unwrap();
    storage.flush().await.unwrap();
}
