//! One shard's backup file: a header, the records in key order, an end marker.
//!
//! ```text
//! magic    "RKVBAK1\n"                      8 bytes
//! shard    u32 LE, applied_index u64 LE     the point the copy reflects
//! record*  0x01, key_len u32 LE, key, value_len u32 LE, value,
//!          version u64 LE, expires_at_ms u64 LE (0 = none)
//! end      0x00, record count u64 LE
//! ```
//!
//! The end marker and its count make a truncated file fail to read even without
//! the manifest; the manifest's crc32 and size (over the whole file) catch any
//! other damage. The reader trusts nothing: lengths are checked against the key
//! limit and [`MAX_VALUE_BYTES`] before anything is allocated, keys must be
//! strictly increasing, and nothing may follow the end marker.

use std::io::{self, Read, Write};

use bytes::Bytes;
use ringkv_core::limits::MAX_KEY_BYTES;
use ringkv_proto::v1::BackupRecord;

/// The first bytes of every shard file (format version 1).
pub const MAGIC: &[u8; 8] = b"RKVBAK1\n";

/// Largest value a backup file may hold: far above any node's limit, low enough
/// that a damaged length cannot make the reader allocate without bound.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;

/// What a shard file says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub shard: u32,
    pub applied_index: u64,
}

/// Size, checksum and record count of a whole file, as the manifest lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub crc32: u32,
    pub records: u64,
}

/// Writes a shard file, computing its [`Summary`] on the way.
pub struct ShardFileWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
    records: u64,
}

impl<W: Write> ShardFileWriter<W> {
    pub fn new(inner: W, header: Header) -> io::Result<Self> {
        let mut writer = ShardFileWriter { inner, crc: crc32fast::Hasher::new(), bytes: 0, records: 0 };
        writer.put(MAGIC)?;
        writer.put(&header.shard.to_le_bytes())?;
        writer.put(&header.applied_index.to_le_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record. The caller keeps keys in strictly increasing order.
    pub fn write_record(&mut self, record: &BackupRecord) -> io::Result<()> {
        let too_long =
            |what: &str, len: usize| io::Error::other(format!("{what} of {len} bytes is too long"));
        let key_len = u32::try_from(record.key.len()).map_err(|_| too_long("a key", record.key.len()))?;
        let value_len =
            u32::try_from(record.value.len()).map_err(|_| too_long("a value", record.value.len()))?;
        self.put(&[TAG_RECORD])?;
        self.put(&key_len.to_le_bytes())?;
        self.put(&record.key)?;
        self.put(&value_len.to_le_bytes())?;
        self.put(&record.value)?;
        self.put(&record.version.to_le_bytes())?;
        self.put(&record.expires_at_ms.to_le_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker; returns the inner writer (not yet flushed or
    /// synced) and the file's summary.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        let count = self.records;
        self.put(&[TAG_END])?;
        self.put(&count.to_le_bytes())?;
        let summary = Summary { bytes: self.bytes, crc32: self.crc.finalize(), records: self.records };
        Ok((self.inner, summary))
    }
}

/// Reads a shard file record by record, checking its structure and computing
/// its [`Summary`]. Errors are sentences about the content; the caller names
/// the file.
pub struct ShardFileReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
    bytes: u64,
    records: u64,
    last_key: Option<Bytes>,
    ended: bool,
}

impl<R: Read> ShardFileReader<R> {
    /// Reads and checks the header.
    pub fn open(inner: R) -> Result<(Self, Header), String> {
        let mut reader = ShardFileReader {
            inner,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            records: 0,
            last_key: None,
            ended: false,
        };
        let mut magic = [0; 8];
        reader.take(&mut magic, "the header")?;
        if &magic != MAGIC {
            return Err("it does not start like a ringkv backup file (RKVBAK1)".into());
        }
        let shard = reader.u32("the header")?;
        let applied_index = reader.u64("the header")?;
        Ok((reader, Header { shard, applied_index }))
    }

    fn take(&mut self, buf: &mut [u8], what: &str) -> Result<(), String> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!("it ends inside {what} (truncated)"),
            _ => format!("reading it failed: {e}"),
        })?;
        self.crc.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut buf = [0; 4];
        self.take(&mut buf, what)?;
        Ok(u32::from_le_bytes(buf))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut buf = [0; 8];
        self.take(&mut buf, what)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self, len: usize, what: &str) -> Result<Bytes, String> {
        let mut buf = vec![0; len];
        self.take(&mut buf, what)?;
        Ok(Bytes::from(buf))
    }

    /// The next record, or `None` after the end marker (which must close the
    /// file and carry the right count).
    pub fn next_record(&mut self) -> Result<Option<BackupRecord>, String> {
        if self.ended {
            return Ok(None);
        }
        let n = self.records + 1;
        let mut tag = [0; 1];
        self.take(&mut tag, &format!("record {n}"))?;
        match tag[0] {
            TAG_RECORD => {}
            TAG_END => {
                let count = self.u64("the end marker")?;
                if count != self.records {
                    return Err(format!("its end marker counts {count} records, it holds {}", self.records));
                }
                let mut extra = [0; 1];
                match self.inner.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => return Err("bytes follow its end marker".into()),
                    Err(e) => return Err(format!("reading it failed: {e}")),
                }
                self.ended = true;
                return Ok(None);
            }
            other => return Err(format!("record {n} has an unknown tag {other:#04x}")),
        }
        let key_len = self.u32(&format!("record {n}"))? as usize;
        if key_len == 0 || key_len > MAX_KEY_BYTES {
            return Err(format!("record {n} has a key of {key_len} bytes (1..={MAX_KEY_BYTES} allowed)"));
        }
        let key = self.bytes(key_len, &format!("record {n}"))?;
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(format!("record {n} is out of key order"));
        }
        let value_len = self.u32(&format!("record {n}"))? as usize;
        if value_len > MAX_VALUE_BYTES {
            return Err(format!("record {n} has a value of {value_len} bytes, over {MAX_VALUE_BYTES}"));
        }
        let value = self.bytes(value_len, &format!("record {n}"))?;
        let version = self.u64(&format!("record {n}"))?;
        let expires_at_ms = self.u64(&format!("record {n}"))?;
        self.records = n;
        self.last_key = Some(key.clone());
        Ok(Some(BackupRecord { key, value, version, expires_at_ms }))
    }

    /// What was read so far; the whole file's once `next_record` returned `None`.
    pub fn summary(&self) -> Summary {
        Summary { bytes: self.bytes, crc32: self.crc.clone().finalize(), records: self.records }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str, expires_at_ms: u64) -> BackupRecord {
        BackupRecord {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            version: 7,
            expires_at_ms,
        }
    }

    fn file(records: &[BackupRecord]) -> (Vec<u8>, Summary) {
        let header = Header { shard: 3, applied_index: 99 };
        let mut writer = ShardFileWriter::new(Vec::new(), header).expect("writing to a Vec cannot fail");
        for r in records {
            writer.write_record(r).expect("writing to a Vec cannot fail");
        }
        writer.finish().expect("writing to a Vec cannot fail")
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<BackupRecord>, Summary), String> {
        let (mut reader, header) = ShardFileReader::open(bytes)?;
        let mut records = Vec::new();
        while let Some(r) = reader.next_record()? {
            records.push(r);
        }
        Ok((header, records, reader.summary()))
    }

    #[test]
    fn round_trip_with_summary() {
        let records = vec![record("a", "1", 0), record("b", "", 12345), record("c", "xyz", 0)];
        let (bytes, written) = file(&records);
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.crc32, crc32fast::hash(&bytes));
        assert_eq!(written.records, 3);
        let (header, read, summary) = read_all(&bytes).expect("a file just written reads back");
        assert_eq!(header, Header { shard: 3, applied_index: 99 });
        assert_eq!(read, records);
        assert_eq!(summary, written);
        let (empty, _) = file(&[]);
        assert_eq!(read_all(&empty).expect("an empty file reads back").1, vec![]);
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let (bytes, _) = file(&[record("a", "1", 0), record("b", "2", 0)]);
        // Every truncation fails.
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "truncated to {len} bytes read fine");
        }
        // Every single flipped byte either fails or changes the checksum.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            if let Ok((_, _, summary)) = read_all(&damaged) {
                assert_ne!(summary.crc32, crc32fast::hash(&bytes), "flip at {at} went unnoticed");
            }
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(read_all(&extra).unwrap_err(), "bytes follow its end marker");
    }

    #[test]
    fn lengths_and_order_are_checked_before_allocating() {
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&3u32.to_le_bytes());
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.push(TAG_RECORD);
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.push(b'k');
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_all(&huge).unwrap_err().contains("over"));
        let (bytes, _) = file(&[record("b", "1", 0), record("a", "2", 0)]);
        assert_eq!(read_all(&bytes).unwrap_err(), "record 2 is out of key order");
        let (bytes, _) = file(&[record("a", "1", 0), record("a", "2", 0)]);
        assert_eq!(read_all(&bytes).unwrap_err(), "record 2 is out of key order");
        assert!(read_all(b"not a backup file at all").unwrap_err().contains("RKVBAK1"));
    }
}
