//! The decoders of everything a shard's storage reads back from disk, free of
//! sled and of the file system: the store calls them on what it read, and the
//! hostile-input tests (`node/tests/hostile_input`) call them on arbitrary
//! bytes. None panics on any input; each failure names what did not decode.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::StoreError;
use super::shard::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_SNAPSHOT, KEY_VOTE, SnapshotPointer};
use super::snapshot_file;
use crate::raft_types::{Entry, LogId, SnapshotMeta, Vote};

/// Checks the bytes of a snapshot file as opening a shard does (size, magic,
/// version, crc32, lengths, metadata) and splits them into the snapshot's
/// metadata and its state-machine data. `path` only names the file in errors.
pub fn snapshot_file(bytes: Vec<u8>, path: &Path) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
    let file = snapshot_file::decode(bytes, path)?;
    Ok((file.meta, file.data))
}

/// Decodes the log entry stored under `key` in the log tree named `tree`, and
/// checks it carries the index it is stored at.
pub fn log_entry(tree: &str, key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
    let corrupt =
        |key: String, reason: String| StoreError::CorruptValue { tree: tree.to_string(), key, reason };
    let index = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(format!("{key:02x?}"), format!("log key of {} bytes, expected 8", key.len())))?;
    let entry: Entry = crate::codec::decode(value)
        .map_err(|e| corrupt(index.to_string(), format!("log entry does not decode: {e}")))?;
    if entry.log_id.index != index {
        return Err(corrupt(
            index.to_string(),
            format!("entry stored at index {index} carries log id {}", entry.log_id),
        ));
    }
    Ok(entry)
}

/// Decodes the value stored under `key` in a shard's meta tree, as the store
/// reads it (the format version is checked where it is read, in `shard.rs`).
/// Unknown keys are not the store's and decode to nothing.
pub fn meta_value(tree: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
    fn check<T: DeserializeOwned>(tree: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        meta::<T>(tree, key, value).map(drop)
    }
    match key {
        KEY_VOTE => check::<Vote>(tree, key, value),
        KEY_COMMITTED | KEY_LAST_PURGED => check::<LogId>(tree, key, value),
        KEY_SNAPSHOT => check::<SnapshotPointer>(tree, key, value),
        _ => Ok(()),
    }
}

/// Decodes one meta value of type `T`.
pub(crate) fn meta<T: DeserializeOwned>(tree: &str, key: &str, value: &[u8]) -> Result<T, StoreError> {
    crate::codec::decode(value).map_err(|e| StoreError::CorruptValue {
        tree: tree.to_string(),
        key: key.to_string(),
        reason: format!("does not decode: {e}"),
    })
}
