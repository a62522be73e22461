//! Snapshot files: one self-checking file per persisted snapshot.
//!
//! Snapshots are kept out of sled on purpose: a sled value above ~128 KiB becomes
//! a blob file that sled itself never fsyncs (guide §11.1; the flusher makes up
//! for it, see `flusher.rs`), and a whole snapshot would also pass through sled's
//! log and page cache. Each snapshot is one file in its shard's directory
//! `<data_dir>/snapshots/shard-<shard:010>/`, and sled only keeps a pointer to
//! the current one (see `shard.rs`).
//!
//! File format, version 1 (all integers little-endian):
//!
//! | offset            | size       | content                                  |
//! |-------------------|------------|------------------------------------------|
//! | 0                 | 8          | magic `b"RKVSNAP\0"`                     |
//! | 8                 | 4          | format version, `u32` = 1                |
//! | 12                | 4          | `meta_len`, `u32`                        |
//! | 16                | `meta_len` | postcard(`SnapshotMeta`)                 |
//! | 16 + `meta_len`   | 8          | `data_len`, `u64`                        |
//! | 24 + `meta_len`   | `data_len` | state-machine data (`KvState` encoding)  |
//! | end − 4           | 4          | crc32 (IEEE) of every preceding byte     |
//!
//! Writing is crash-safe: the bytes go to `<name>.tmp`, the
//! file is fsynced, renamed to `<name>`, and the directory is fsynced. A crash
//! leaves either no file or a complete one under the final name; leftover
//! temporaries are removed when the shard is next opened.
//!
//! Reading checks, in order: the minimum size, the magic, the version, the crc32
//! (so any flipped byte or truncation past the header is caught), then that the
//! two lengths describe the file exactly. Any failure is
//! [`StoreError::SnapshotCorrupt`] naming the file and the reason; a missing file
//! is [`StoreError::SnapshotMissing`]. Nothing here panics on file content.
//!
//! ## Caveats / not done yet
//! - The whole file is read into memory (and the data written from memory): fine
//!   for shards of tens of MiB, not for multi-GiB ones. Streaming would need a
//!   file-backed `SnapshotData`.
//! - The crc32 detects accidental damage, not tampering.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::raft_types::{LogId, SnapshotMeta};

/// First 8 bytes of every snapshot file.
pub(crate) const MAGIC: [u8; 8] = *b"RKVSNAP\0";
/// The only format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Suffix of a file still being written.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

const HEADER_LEN: usize = 16; // magic + version + meta_len
const DATA_LEN_LEN: usize = 8;
const CRC_LEN: usize = 4;
const MIN_FILE_LEN: usize = HEADER_LEN + DATA_LEN_LEN + CRC_LEN;

/// A snapshot file read back and verified.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    /// Where it was read from (for error messages).
    pub(crate) path: PathBuf,
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Vec<u8>,
    /// The crc32 stored in (and verified against) the file's footer.
    pub(crate) crc32: u32,
    /// Total file length in bytes.
    pub(crate) len: u64,
}

/// What [`write`] produced.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) crc32: u32,
    pub(crate) len: u64,
}

/// The final file name of a snapshot: unique per build thanks to `seq` (sled's
/// persistent id generator), and sorting by index.
pub(crate) fn file_name(last_log_id: Option<&LogId>, seq: u64) -> String {
    let index = last_log_id.map_or(0, |id| id.index);
    format!("snap-{index:020}-{seq:020}")
}

/// Writes a snapshot file named `file_name` into `dir` durably (temp file, fsync,
/// rename, fsync of the directory). Blocking.
pub(crate) fn write(
    dir: &Path,
    file_name: &str,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<Written, StoreError> {
    let meta_bytes = postcard::to_allocvec(meta)
        .map_err(|source| StoreError::Encode { what: "snapshot metadata", source })?;
    let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| {
        StoreError::io(
            "encoding snapshot metadata",
            io::Error::new(io::ErrorKind::InvalidInput, "metadata larger than 4 GiB"),
        )
    })?;
    let tmp = dir.join(format!("{file_name}{TEMP_SUFFIX}"));
    let path = dir.join(file_name);

    let written = write_tmp(&tmp, meta_len, &meta_bytes, data)
        .map_err(|e| StoreError::io(format!("writing snapshot file {}", tmp.display()), e));
    let (crc32, len) = match written {
        Ok(ok) => ok,
        Err(e) => {
            // Best effort: a leftover temp file is also removed at the next open.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::io(format!("renaming {} to {}", tmp.display(), path.display()), e)
    })?;
    sync_dir(dir)?;
    Ok(Written { path, crc32, len })
}

fn write_tmp(tmp: &Path, meta_len: u32, meta: &[u8], data: &[u8]) -> io::Result<(u32, u64)> {
    // Names are unique per build (sled's id generator survives crashes), so an
    // existing temp file can only be a leftover of a crashed write: overwrite it.
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let data_len = data.len() as u64;
    let parts: [&[u8]; 6] =
        [&MAGIC, &FORMAT_VERSION.to_le_bytes(), &meta_len.to_le_bytes(), meta, &data_len.to_le_bytes(), data];
    for part in parts {
        crc.update(part);
        out.write_all(part)?;
        len += part.len() as u64;
    }
    let crc32 = crc.finalize();
    out.write_all(&crc32.to_le_bytes())?;
    len += CRC_LEN as u64;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    // sync_all, not sync_data: the file is new, its size must be durable too.
    file.sync_all()?;
    Ok((crc32, len))
}

/// fsyncs a directory, making renames and creations inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}

/// Opens and verifies the snapshot file at `path`. Blocking.
pub(crate) fn read(path: &Path) -> Result<SnapshotFile, StoreError> {
    read_from(open(path)?, path)
}

/// Opens `path` for [`read_from`]; a missing file is [`StoreError::SnapshotMissing`].
pub(crate) fn open(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::SnapshotMissing { path: path.to_path_buf() },
        _ => StoreError::io(format!("opening snapshot file {}", path.display()), e),
    })
}

/// Reads and verifies an already opened snapshot file (`path` is for messages).
/// Blocking.
pub(crate) fn read_from(mut file: File, path: &Path) -> Result<SnapshotFile, StoreError> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| StoreError::io(format!("reading snapshot file {}", path.display()), e))?;
    decode(buf, path)
}

/// Checks and splits the bytes of a whole snapshot file (see the module docs).
pub(crate) fn decode(mut buf: Vec<u8>, path: &Path) -> Result<SnapshotFile, StoreError> {
    let corrupt = |reason: String| StoreError::corrupt(path, reason);
    let len = buf.len();
    if len < MIN_FILE_LEN {
        return Err(corrupt(format!(
            "file is {len} bytes, shorter than the smallest possible snapshot file ({MIN_FILE_LEN} bytes)"
        )));
    }
    if buf[..8] != MAGIC {
        return Err(corrupt("bad magic: not a ringkv snapshot file".into()));
    }
    let version = u32_at(&buf, 8);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
        )));
    }
    let stored_crc = u32_at(&buf, len - CRC_LEN);
    let computed_crc = crc32fast::hash(&buf[..len - CRC_LEN]);
    if stored_crc != computed_crc {
        return Err(corrupt(format!(
            "crc32 checksum mismatch: footer says {stored_crc:08x}, content hashes to {computed_crc:08x} \
             (file damaged or truncated)"
        )));
    }
    let meta_len = u32_at(&buf, 12) as usize;
    let meta_end = HEADER_LEN + meta_len;
    if meta_end + DATA_LEN_LEN + CRC_LEN > len {
        return Err(corrupt(format!("metadata length {meta_len} runs past the end of the file")));
    }
    let data_len = u64::from_le_bytes(buf[meta_end..meta_end + 8].try_into().expect("8 bytes"));
    let data_start = meta_end + DATA_LEN_LEN;
    let data_end = len - CRC_LEN;
    if data_len != (data_end - data_start) as u64 {
        return Err(corrupt(format!(
            "data length {data_len} does not match the file size ({} data bytes present)",
            data_end - data_start
        )));
    }
    let meta = match crate::codec::take_from_bytes::<SnapshotMeta>(&buf[HEADER_LEN..meta_end]) {
        Ok((meta, [])) => meta,
        Ok((_, rest)) => {
            return Err(corrupt(format!("metadata has {} trailing bytes", rest.len())));
        }
        Err(e) => return Err(corrupt(format!("metadata does not decode: {e}"))),
    };
    buf.truncate(data_end);
    buf.drain(..data_start);
    Ok(SnapshotFile { path: path.to_path_buf(), meta, data: buf, crc32: stored_crc, len: len as u64 })
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use openraft::{BasicNode, CommittedLeaderId, Membership, StoredMembership};

    use super::*;

    fn sample_meta() -> SnapshotMeta {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
        let membership = Membership::new(
            vec![[1u64, 2, 3].into_iter().collect()],
            [(1u64, BasicNode::new("a:1")), (2, BasicNode::new("b:2")), (3, BasicNode::new("c:3"))]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(LogId::new(CommittedLeaderId::new(2, 1), 7)),
                membership,
            ),
            snapshot_id: "T3-N1-42-9".into(),
        }
    }

    fn write_sample(dir: &Path) -> (Written, SnapshotMeta, Vec<u8>) {
        let meta = sample_meta();
        let data: Vec<u8> = (0..200u8).collect();
        let name = file_name(meta.last_log_id.as_ref(), 9);
        let written = write(dir, &name, &meta, &data).expect("write");
        (written, meta, data)
    }

    fn expect_corrupt(result: Result<SnapshotFile, StoreError>, path: &Path, what: &str) {
        match result {
            Err(StoreError::SnapshotCorrupt { path: p, reason }) => {
                assert_eq!(p, path, "{what}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected SnapshotCorrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (written, meta, data) = write_sample(dir.path());
        assert_eq!(written.path, dir.path().join("snap-00000000000000000042-00000000000000000009"));
        let read = read(&written.path).expect("read");
        assert_eq!(read.meta, meta);
        assert_eq!(read.data, data);
        assert_eq!(read.crc32, written.crc32);
        assert_eq!(read.len, written.len);
        assert_eq!(fs::metadata(&written.path).unwrap().len(), written.len);
        // Only the final file is left: the temp file was renamed.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn empty_data_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta::default();
        let written = write(dir.path(), &file_name(None, 1), &meta, &[]).unwrap();
        let read = read(&written.path).unwrap();
        assert_eq!(read.meta, meta);
        assert!(read.data.is_empty());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _, _) = write_sample(dir.path());
        let good = fs::read(&written.path).unwrap();
        for at in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[at] ^= mask;
                fs::write(&written.path, &bad).unwrap();
                expect_corrupt(read(&written.path), &written.path, &format!("byte {at} ^ {mask:#x}"));
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _, _) = write_sample(dir.path());
        let good = fs::read(&written.path).unwrap();
        for keep in 0..good.len() {
            fs::write(&written.path, &good[..keep]).unwrap();
            expect_corrupt(read(&written.path), &written.path, &format!("truncated to {keep}"));
        }
    }

    #[test]
    fn trailing_garbage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _, _) = write_sample(dir.path());
        let mut bad = fs::read(&written.path).unwrap();
        bad.push(0);
        fs::write(&written.path, &bad).unwrap();
        expect_corrupt(read(&written.path), &written.path, "one extra byte");
    }

    #[test]
    fn missing_file_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap-00000000000000000001-00000000000000000001");
        match read(&path) {
            Err(e @ StoreError::SnapshotMissing { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
            }
            other => panic!("expected SnapshotMissing, got {other:?}"),
        }
    }

    #[test]
    fn a_leftover_temp_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let name = file_name(None, 5);
        let tmp = dir.path().join(format!("{name}{TEMP_SUFFIX}"));
        fs::write(&tmp, vec![0xAB; 4096]).unwrap();
        let written = write(dir.path(), &name, &SnapshotMeta::default(), b"x").unwrap();
        assert_eq!(read(&written.path).unwrap().data, b"x");
        assert!(!tmp.exists());
    }
}
