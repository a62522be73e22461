//! One shard's storage handle: its two sled trees, its snapshot directory, and
//! the pointer that ties the current snapshot file to sled.
//!
//! [`ShardHandle`] is shared (`Arc`) by the shard's `LogStore`, its log readers,
//! its `StateMachineStore` and any snapshot builder in flight. The node's shard
//! registry holds only a `Weak` to it, so "some handle is alive" is exactly "the
//! shard is open", which `open_shard`/`drop_shard` refuse to race with.
//!
//! Keys of the shard's meta tree (`shard/<shard:010>/meta`), values postcard:
//!
//! | key           | value                      | written by                      |
//! |---------------|----------------------------|---------------------------------|
//! | `format`      | `u32` big-endian (4 bytes) | first open; layout version = 1  |
//! | `vote`        | `Vote`                     | `save_vote` (flushed)           |
//! | `committed`   | `LogId` (absent = None)    | `save_committed` (not flushed)  |
//! | `last_purged` | `LogId`                    | `purge`, before deleting        |
//! | `snapshot`    | [`SnapshotPointer`]        | snapshot persist (flushed)      |
//!
//! Snapshot pointer protocol (all under `snapshot_lock`, never held across an
//! await): a new snapshot file is written and fsynced first; then the pointer is
//! swapped in sled, but only if the new snapshot is not older than the current
//! one (a slow background build must not replace a newer installed snapshot);
//! then the flusher makes the pointer durable; only then is the superseded file
//! deleted. Readers open the current file while holding the lock, so the file
//! they opened cannot be deleted under them before they have it open (an open fd
//! keeps the inode alive).
//!
//! ## Caveats / not done yet
//! - A crash between writing a file and flushing its pointer leaves an orphan
//!   file; it is deleted at the next open of the shard.
//! - The pointer records the file's crc32 and length, so a file swapped for
//!   another valid snapshot is detected; it does not protect against sled's own
//!   metadata being damaged beyond what sled's checksums catch.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ringkv_core::ShardId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::snapshot_file::{self, SnapshotFile};
use super::{NodeStorage, StoreError};
use crate::raft_types::SnapshotMeta;

/// Layout version of a shard's trees; stored under `format`.
pub(crate) const SHARD_FORMAT_VERSION: u32 = 1;

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";

pub(crate) fn log_tree_name(shard: ShardId) -> String {
    format!("shard/{shard:010}/log")
}

pub(crate) fn meta_tree_name(shard: ShardId) -> String {
    format!("shard/{shard:010}/meta")
}

pub(crate) fn snapshot_dir_name(shard: ShardId) -> String {
    format!("shard-{shard:010}")
}

/// Where the current snapshot of a shard is, and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotPointer {
    /// File name inside the shard's snapshot directory.
    pub(crate) file: String,
    /// The metadata the file must carry.
    pub(crate) meta: SnapshotMeta,
    /// The file's crc32 footer and total length, as written.
    pub(crate) crc32: u32,
    pub(crate) len: u64,
}

/// Whether a new snapshot may replace a newer current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Built locally: replace the current snapshot only if not newer than this one.
    IfNotOlder,
    /// Installed from the leader: openraft decided; always replace.
    Always,
}

/// One open shard's storage. See the module docs.
pub(crate) struct ShardHandle {
    pub(crate) node: NodeStorage,
    pub(crate) id: ShardId,
    pub(crate) log: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) log_tree_name: String,
    meta_tree_name: String,
    snapshot_dir: PathBuf,
    /// Serializes pointer swaps, superseded-file deletion and readers opening the
    /// current file. A std mutex: it is never held across an await.
    snapshot_lock: Mutex<()>,
}

impl ShardHandle {
    /// Opens (creating if needed) the shard's trees and snapshot directory and
    /// checks the layout version. Blocking. The caller holds the registry slot.
    pub(crate) fn open(node: NodeStorage, id: ShardId) -> Result<ShardHandle, StoreError> {
        let db = node.db();
        let log_name = log_tree_name(id);
        let meta_name = meta_tree_name(id);
        let log =
            db.open_tree(&log_name).map_err(|e| StoreError::sled(format!("opening tree {log_name}"), e))?;
        let meta =
            db.open_tree(&meta_name).map_err(|e| StoreError::sled(format!("opening tree {meta_name}"), e))?;
        let snapshot_dir = node.snapshot_root().join(snapshot_dir_name(id));
        let handle = ShardHandle {
            node,
            id,
            log,
            meta,
            log_tree_name: log_name,
            meta_tree_name: meta_name,
            snapshot_dir,
            snapshot_lock: Mutex::new(()),
        };
        handle.check_format()?;
        super::create_dir_durable(&handle.snapshot_dir)?;
        Ok(handle)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self.meta_raw(KEY_FORMAT)? {
            None => {
                // A new shard (or one from before the format key existed, which
                // there is none of). No flush needed: it is re-written if lost.
                let v = SHARD_FORMAT_VERSION.to_be_bytes();
                self.meta.insert(KEY_FORMAT, &v[..]).map_err(|e| {
                    StoreError::sled(format!("writing {}/{KEY_FORMAT}", self.meta_tree_name), e)
                })?;
                Ok(())
            }
            Some(raw) => {
                let found = <[u8; 4]>::try_from(&raw[..]).map(u32::from_be_bytes).map_err(|_| {
                    self.corrupt_value(KEY_FORMAT, format!("{} bytes, expected 4", raw.len()))
                })?;
                if found == SHARD_FORMAT_VERSION {
                    Ok(())
                } else {
                    Err(StoreError::UnsupportedFormat {
                        shard: self.id,
                        found,
                        supported: SHARD_FORMAT_VERSION,
                    })
                }
            }
        }
    }

    pub(crate) fn corrupt_value(&self, key: &str, reason: impl Into<String>) -> StoreError {
        StoreError::CorruptValue {
            tree: self.meta_tree_name.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn meta_raw(&self, key: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.meta.get(key).map_err(|e| StoreError::sled(format!("reading {}/{key}", self.meta_tree_name), e))
    }

    /// Reads and decodes a meta value.
    pub(crate) fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.meta_raw(key)? {
            None => Ok(None),
            Some(raw) => super::decode::meta(&self.meta_tree_name, key, &raw).map(Some),
        }
    }

    /// Encodes and writes a meta value (readable at once, durable at the next flush).
    pub(crate) fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(value)
            .map_err(|source| StoreError::Encode { what: "shard metadata", source })?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StoreError::sled(format!("writing {}/{key}", self.meta_tree_name), e))?;
        Ok(())
    }

    pub(crate) fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        self.meta
            .remove(key)
            .map_err(|e| StoreError::sled(format!("removing {}/{key}", self.meta_tree_name), e))?;
        Ok(())
    }

    /// Waits until every sled write issued so far is durable (node-wide flusher).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.node.flusher().flush().await
    }

    /// A fresh, never reused sequence number (sled's persistent id generator).
    pub(crate) fn next_seq(&self) -> Result<u64, StoreError> {
        self.node.db().generate_id().map_err(|e| StoreError::sled("generating a snapshot id", e))
    }

    pub(crate) fn snapshot_pointer(&self) -> Result<Option<SnapshotPointer>, StoreError> {
        self.meta_get(KEY_SNAPSHOT)
    }

    fn lock_snapshots(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.snapshot_lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads the current snapshot at open time, verified against its pointer, and
    /// removes files no pointer refers to (orphans of crashed writes). Blocking;
    /// called before any other handle of the shard exists.
    pub(crate) fn load_snapshot_at_open(&self) -> Result<Option<SnapshotFile>, StoreError> {
        let pointer = self.snapshot_pointer()?;
        let loaded = match &pointer {
            None => None,
            Some(p) => {
                let path = self.snapshot_dir.join(&p.file);
                Some(verify(snapshot_file::read(&path)?, p, &path)?)
            }
        };
        self.remove_orphans(pointer.as_ref().map(|p| p.file.as_str()))?;
        Ok(loaded)
    }

    fn remove_orphans(&self, keep: Option<&str>) -> Result<(), StoreError> {
        let dir = &self.snapshot_dir;
        let entries =
            fs::read_dir(dir).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
            if keep.is_some_and(|k| entry.file_name() == k) {
                continue;
            }
            let path = entry.path();
            tracing::info!(shard = self.id, path = %path.display(), "removing unreferenced snapshot file");
            remove_file_if_exists(&path)?;
            removed = true;
        }
        if removed {
            snapshot_file::sync_dir(dir)?;
        }
        Ok(())
    }

    /// The current snapshot, read from its file and verified, or None.
    pub(crate) async fn current_snapshot(&self) -> Result<Option<SnapshotFile>, StoreError> {
        let (file, pointer) = {
            let _guard = self.lock_snapshots();
            let Some(pointer) = self.snapshot_pointer()? else {
                return Ok(None);
            };
            let path = self.snapshot_dir.join(&pointer.file);
            (snapshot_file::open(&path)?, pointer)
        };
        let path = self.snapshot_dir.join(&pointer.file);
        let read = tokio::task::spawn_blocking(move || {
            let read = snapshot_file::read_from(file, &path)?;
            verify(read, &pointer, &path)
        })
        .await
        .map_err(|e| StoreError::io("reading a snapshot file", io::Error::other(e)))??;
        Ok(Some(read))
    }

    /// Makes `data` (with `meta`) the shard's current snapshot, durably: file
    /// written and fsynced, pointer swapped and flushed, superseded file deleted.
    ///
    /// Returns `data` back, and whether it became current (`false` only with
    /// [`Replace::IfNotOlder`] when a newer snapshot is already current; its file
    /// is then deleted again).
    pub(crate) async fn persist_snapshot(
        &self,
        meta: SnapshotMeta,
        data: Vec<u8>,
        seq: u64,
        replace: Replace,
    ) -> Result<(Vec<u8>, bool), StoreError> {
        let file = snapshot_file::file_name(meta.last_log_id.as_ref(), seq);
        let dir = self.snapshot_dir.clone();
        let (meta, data, written) = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let written = snapshot_file::write(&dir, &file, &meta, &data);
                (meta, data, written)
            })
            .await
            .map_err(|e| StoreError::io("writing a snapshot file", io::Error::other(e)))?
        };
        let written = written?;
        let pointer = SnapshotPointer { file, meta, crc32: written.crc32, len: written.len };

        let superseded = {
            let _guard = self.lock_snapshots();
            let current = self.snapshot_pointer()?;
            let newer_exists =
                current.as_ref().is_some_and(|c| c.meta.last_log_id > pointer.meta.last_log_id);
            if replace == Replace::IfNotOlder && newer_exists {
                tracing::info!(shard = self.id, file = %pointer.file, "snapshot superseded while it was built");
                remove_file_if_exists(&written.path)?;
                return Ok((data, false));
            }
            self.meta_put(KEY_SNAPSHOT, &pointer)?;
            current.map(|c| c.file).filter(|f| *f != pointer.file)
        };
        self.flush().await?;
        if let Some(old) = superseded {
            let _guard = self.lock_snapshots();
            // Not fatal: a leftover file is removed at the next open.
            if let Err(e) = remove_file_if_exists(&self.snapshot_dir.join(&old)) {
                tracing::warn!(shard = self.id, error = %e, "could not delete a superseded snapshot file");
            }
        }
        Ok((data, true))
    }
}

/// Checks that a file is the one the pointer recorded.
fn verify(read: SnapshotFile, pointer: &SnapshotPointer, path: &Path) -> Result<SnapshotFile, StoreError> {
    if read.crc32 != pointer.crc32 || read.len != pointer.len {
        return Err(StoreError::corrupt(
            path,
            format!(
                "file is intact but is not the snapshot sled recorded (crc32 {:08x}, {} bytes; expected \
                 crc32 {:08x}, {} bytes)",
                read.crc32, read.len, pointer.crc32, pointer.len
            ),
        ));
    }
    if read.meta != pointer.meta {
        return Err(StoreError::corrupt(
            path,
            format!("metadata {} differs from the recorded {}", read.meta, pointer.meta),
        ));
    }
    Ok(read)
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {}", path.display()), e)),
    }
}
