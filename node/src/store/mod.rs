//! Durable storage for every shard replica on a node: openraft's log storage and
//! state machine, backed by one sled database plus snapshot files.
//!
//! # What it owns
//!
//! [`NodeStorage`] is opened once per node process. It owns
//! - the node's one `sled::Db` at `<data_dir>/sled` (sled takes an exclusive lock;
//!   one db per process, all shards as trees in it — guide §11.1);
//! - the `Flusher` (`flusher.rs`): one tokio task that group-commits every durable
//!   write of every shard (`db.flush()`, fsync of sled's new blob files and of
//!   `<data_dir>/sled/blobs`, `fdatasync` of `<data_dir>/sled/db`);
//! - the snapshot directory `<data_dir>/snapshots/shard-<shard:010>/`;
//! - a `node` tree for the node's own durable metadata ([`NodeStorage::put_node_meta`]).
//!
//! [`NodeStorage::open_shard`] gives a shard's pair of openraft storage objects:
//! [`LogStore`] (`RaftLogStorage`, file `log_store.rs`) and [`StateMachineStore`]
//! (`RaftStateMachine`, file `sm_store.rs`), both over the shard's handle
//! (`shard.rs`). Snapshot files are framed and checked by `snapshot_file.rs`.
//! Everything read back from disk is decoded by [`decode`], without I/O.
//!
//! # On-disk layout
//!
//! ```text
//! <data_dir>/sled/                      sled database (its data file is sled/db)
//!   blobs/<lsn>                         sled's file for each log message ≳128 KiB
//!   tree "node"                         key: caller's string → caller's bytes
//!   tree "shard/<shard:010>/log"        key: log index u64 big-endian → postcard(Entry)
//!   tree "shard/<shard:010>/meta"       format | vote | committed | last_purged | snapshot
//! <data_dir>/snapshots/shard-<shard:010>/snap-<index:020>-<seq:020>
//! ```
//!
//! # Invariants (openraft storage-v2 contract, guide §5)
//!
//! - **Vote** is durable before `save_vote` returns (written, then flusher round).
//! - **Appends** are readable when `append` returns (one atomic `apply_batch`)
//!   and the `LogFlushed` callback fires only after a flusher round that started
//!   after the batch was applied. That holds for entries of any size: sled
//!   stores a message above ~128 KiB in a blob file that it never fsyncs, and the
//!   flusher fsyncs those files and their directory in the same round (see
//!   `flusher.rs`, "Blob files").
//! - **Order**: all of a node's writes go to one sled db and one flusher, and
//!   sled recovers a prefix of its operations, so a crash can lose a suffix of
//!   unflushed writes but never expose a later write without an earlier one.
//!   `last_purged` is written before purged entries are deleted.
//! - **Snapshots** are durable (file fsynced, pointer flushed) before
//!   `build_snapshot`/`install_snapshot` return, because openraft may purge the
//!   log they cover right after. A snapshot pointer never moves backwards because
//!   of a slow concurrent build.
//! - **Restart**: `open_shard` loads the state machine from the latest snapshot;
//!   a missing or corrupt snapshot file that sled points at is an error, never a
//!   silent empty start (the log it replaced may be purged). openraft replays
//!   `(snapshot, committed]` from the log itself (`read_committed`).
//! - **Exclusive shards**: a shard can be open once at a time; it stays open while
//!   any of its handles (log store, log readers, state machine, snapshot builder)
//!   lives. `drop_shard` refuses an open shard.
//! - Nothing read from disk is unwrapped: decode failures become errors
//!   ([`StoreError`] here, openraft `StorageError` inside the traits, which stops
//!   that one Raft group).
//!
//! # Restart in one process (tests)
//!
//! sled's file lock is released when the last clone of the `Db` is dropped. Here
//! that is the last [`NodeStorage`] clone and the last shard handle: the flusher
//! task holds only a weak reference. Drop them all, then `open` again.
//!
//! # Caveats / not done yet
//! - `open_shard` is blocking (it reads the snapshot file); with large snapshots
//!   call it from `spawn_blocking` (a `NodeStorage` clone is `'static`).
//! - `truncate`/`purge` delete entry by entry (sled 0.34 has no range delete).
//! - Snapshots are built from a full clone of the shard's map and held in memory
//!   whole (no streaming); see `sm_store.rs` and `snapshot_file.rs`.
//! - The snapshot encoding of `KvState` is a local postcard shim until
//!   `KvState::encode_snapshot`/`decode_snapshot` land (`TODO(sm)` in `sm_store.rs`).
//! - No size accounting or disk-full handling beyond returning errors.

pub mod decode;
mod error;
mod flusher;
pub use flusher::FlushHistograms;
mod log_store;
mod shard;
mod sm_store;
mod snapshot_file;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ringkv_core::ShardId;

pub use error::StoreError;
pub use flusher::{FlushStats, MAX_WAITERS_PER_ROUND};
pub use log_store::{LogStore, MAX_READ_BATCH_BYTES};
pub use sm_store::{ShardState, SnapshotBuilder, StateMachineStore};

use flusher::{DurableDb, Flusher};
use shard::ShardHandle;

/// sled's page cache. The state machines live in memory; sled holds only logs
/// and small metadata, so a modest cache is enough.
pub const SLED_CACHE_CAPACITY_BYTES: u64 = 64 << 20;
/// sled's own periodic flush: a backstop only, every durable write goes through
/// the flusher.
pub const SLED_BACKSTOP_FLUSH_MS: u64 = 1000;

const NODE_TREE: &str = "node";

/// The node's storage: one sled database, one flusher, one snapshot directory.
/// Cheap to clone; every clone (and every shard handle) keeps the database open.
#[derive(Clone)]
pub struct NodeStorage {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    data_dir: PathBuf,
    snapshot_root: PathBuf,
    /// The only strong reference to the db besides sled trees held by shards;
    /// the flusher task holds a `Weak`.
    durable: Arc<DurableDb>,
    node_tree: sled::Tree,
    flusher: Flusher,
    /// Which shards are open (or being opened/dropped).
    shards: Mutex<HashMap<ShardId, Slot>>,
}

enum Slot {
    /// Open while the handle is alive.
    Open(Weak<ShardHandle>),
    /// An `open_shard` or `drop_shard` is working on it.
    Busy,
}

impl NodeStorage {
    /// Opens (creating if needed) the node's storage under `data_dir` and starts
    /// its flusher. Must run inside a tokio runtime.
    pub fn open(data_dir: &Path) -> Result<NodeStorage, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::NoRuntime);
        }
        create_dir_durable(data_dir)?;
        let sled_dir = data_dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(SLED_CACHE_CAPACITY_BYTES)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(Some(SLED_BACKSTOP_FLUSH_MS))
            .open()
            .map_err(|e| StoreError::sled(format!("opening the database at {}", sled_dir.display()), e))?;
        let data_file_path = sled_dir.join(flusher::DATA_FILE);
        let data_file = File::open(&data_file_path).map_err(|e| {
            StoreError::io(format!("opening sled's data file {}", data_file_path.display()), e)
        })?;
        // sled creates `db`, `conf` and the `blobs` directory in `sled_dir` without
        // syncing it. Every open syncs it, so a crash right after sled created them
        // is repaired at the next start (flusher.rs, "Blob files").
        snapshot_file::sync_dir(&sled_dir)?;
        let node_tree = db.open_tree(NODE_TREE).map_err(|e| StoreError::sled("opening tree node", e))?;
        let snapshot_root = data_dir.join("snapshots");
        create_dir_durable(&snapshot_root)?;
        // Make the `sled` directory entry itself durable.
        snapshot_file::sync_dir(data_dir)?;

        let durable = Arc::new(DurableDb::new(db, data_file, &sled_dir));
        let flusher = Flusher::spawn(Arc::downgrade(&durable));
        Ok(NodeStorage {
            inner: Arc::new(NodeInner {
                data_dir: data_dir.to_path_buf(),
                snapshot_root,
                durable,
                node_tree,
                flusher,
                shards: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Opens (creating if needed) a shard's storage and loads its latest snapshot
    /// into a fresh state machine. Blocking (reads the snapshot file).
    ///
    /// Fails with [`StoreError::ShardInUse`] if the shard is already open, and with
    /// [`StoreError::SnapshotMissing`]/[`StoreError::SnapshotCorrupt`] if sled
    /// points at a snapshot file that is gone or damaged.
    pub fn open_shard(&self, shard: ShardId) -> Result<(LogStore, StateMachineStore), StoreError> {
        let reservation = self.reserve(shard)?;
        let handle = ShardHandle::open(self.clone(), shard)?;
        let snapshot = handle.load_snapshot_at_open()?;
        let handle = Arc::new(handle);
        let sm = StateMachineStore::open(handle.clone(), snapshot, crate::events::DEFAULT_RETAINED_EVENTS)?;
        reservation.opened(&handle);
        Ok((LogStore::new(handle), sm))
    }

    /// Deletes a shard's storage: its trees (durably) and then its snapshot files.
    /// The shard must be closed (its Raft shut down, every handle dropped).
    ///
    /// Call it only for a replica that is no longer a member (guide §8, §10).
    pub async fn drop_shard(&self, shard: ShardId) -> Result<(), StoreError> {
        let _reservation = self.reserve(shard)?;
        let db = self.db();
        // Log first: a crash in between leaves meta (vote, last_purged, snapshot
        // pointer) with an empty log, which is a consistent replica state.
        for name in [shard::log_tree_name(shard), shard::meta_tree_name(shard)] {
            db.drop_tree(&name).map_err(|e| StoreError::sled(format!("dropping tree {name}"), e))?;
        }
        // The pointer is gone for good before any file it pointed at goes.
        self.inner.flusher.flush().await?;
        let dir = self.inner.snapshot_root.join(shard::snapshot_dir_name(shard));
        match fs::remove_dir_all(&dir) {
            Ok(()) => snapshot_file::sync_dir(&self.inner.snapshot_root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// The size in bytes of `shard`'s current snapshot file, as its pointer
    /// records it (no file is read); `None` before its first snapshot.
    pub fn snapshot_bytes(&self, shard: ShardId) -> Result<Option<u64>, StoreError> {
        let name = shard::meta_tree_name(shard);
        // open_tree would create the tree of a replica removed meanwhile.
        if !self.db().tree_names().iter().any(|t| t.as_ref() == name.as_bytes()) {
            return Ok(None);
        }
        let tree =
            self.db().open_tree(&name).map_err(|e| StoreError::sled(format!("opening tree {name}"), e))?;
        let raw = tree
            .get(shard::KEY_SNAPSHOT)
            .map_err(|e| StoreError::sled(format!("reading {name}/{}", shard::KEY_SNAPSHOT), e))?;
        match raw {
            None => Ok(None),
            Some(raw) => {
                let pointer: shard::SnapshotPointer = decode::meta(&name, shard::KEY_SNAPSHOT, &raw)?;
                Ok(Some(pointer.len))
            }
        }
    }

    /// Shards that have storage on this node (open or not), ascending.
    pub fn stored_shards(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = self
            .db()
            .tree_names()
            .iter()
            .filter_map(|name| {
                let name = std::str::from_utf8(name).ok()?;
                name.strip_prefix("shard/")?.strip_suffix("/meta")?.parse().ok()
            })
            .collect();
        shards.sort_unstable();
        shards
    }

    /// Reads a node-level metadata value.
    pub fn get_node_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value =
            self.inner.node_tree.get(key).map_err(|e| StoreError::sled(format!("reading node/{key}"), e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Writes a node-level metadata value; durable when this returns.
    pub async fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner
            .node_tree
            .insert(key, value)
            .map_err(|e| StoreError::sled(format!("writing node/{key}"), e))?;
        self.inner.flusher.flush().await
    }

    /// Removes a node-level metadata value; durable when this returns.
    pub async fn remove_node_meta(&self, key: &str) -> Result<(), StoreError> {
        self.inner.node_tree.remove(key).map_err(|e| StoreError::sled(format!("removing node/{key}"), e))?;
        self.inner.flusher.flush().await
    }

    /// Waits until every write issued so far, by any shard, is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flusher.flush().await
    }

    /// The flusher's totals (rounds, waiters, blob files synced), for metrics.
    pub fn flush_stats(&self) -> FlushStats {
        self.inner.flusher.stats()
    }

    /// The flush rounds' batch-size and sync-latency histograms.
    pub fn flush_histograms(&self) -> FlushHistograms {
        self.inner.flusher.histograms()
    }

    /// The directory this storage was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    fn db(&self) -> &sled::Db {
        &self.inner.durable.db
    }

    fn flusher(&self) -> &Flusher {
        &self.inner.flusher
    }

    fn snapshot_root(&self) -> &Path {
        &self.inner.snapshot_root
    }

    /// Marks `shard` busy, or fails if it is open or busy.
    fn reserve(&self, shard: ShardId) -> Result<Reservation<'_>, StoreError> {
        let mut shards = self.lock_shards();
        let in_use = match shards.get(&shard) {
            Some(Slot::Busy) => true,
            Some(Slot::Open(handle)) => handle.strong_count() > 0,
            None => false,
        };
        if in_use {
            return Err(StoreError::ShardInUse { shard });
        }
        shards.insert(shard, Slot::Busy);
        Ok(Reservation { storage: self, shard, opened: false })
    }

    fn lock_shards(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, Slot>> {
        // Every critical section is a single map operation: never inconsistent.
        self.inner.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A `Busy` registry slot; released on drop unless the shard was opened (also
/// when an `open_shard` fails or a `drop_shard` future is cancelled).
struct Reservation<'a> {
    storage: &'a NodeStorage,
    shard: ShardId,
    opened: bool,
}

impl Reservation<'_> {
    fn opened(mut self, handle: &Arc<ShardHandle>) {
        self.storage.lock_shards().insert(self.shard, Slot::Open(Arc::downgrade(handle)));
        self.opened = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.opened {
            self.storage.lock_shards().remove(&self.shard);
        }
    }
}

/// Creates `dir` (and parents) if missing, and makes its entry durable.
fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| StoreError::io(format!("creating directory {}", dir.display()), e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        snapshot_file::sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
