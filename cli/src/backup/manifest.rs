//! `manifest.json`: what a backup holds and what a restore needs to rebuild
//! the cluster's shard layout, with a size and crc32 per shard file.
//!
//! Written last (temp file, fsync, rename, fsync of the directory), so a
//! directory without it is never a complete backup. [`Manifest::parse`]
//! checks everything that does not need the files: the format and its
//! version, that the shards are exactly `1..=shard_count` in order, each
//! with the file name it must have (so a manifest cannot point outside its
//! directory) and the hash arc placement gives it under that shard count.

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a backup directory.
pub const FILE_NAME: &str = "manifest.json";

/// `format` of every ringkv backup manifest.
pub const FORMAT: &str = "ringkv-backup";

/// The one format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How keys map to shards (DESIGN §2): xxh3_64 of the key, the 2^64 ring cut
/// into `shard_count` equal arcs, data shards numbered from 1.
pub const PLACEMENT: &str = "xxh3_64-equal-arcs";

/// A backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// When the backup finished (unix ms, the CLI's clock).
    pub created_at_ms: u64,
    /// The cluster it was taken from (informational).
    pub source_cluster_id: String,
    pub source_epoch: u64,
    /// The shard layout a restore recreates: with the same shard count and
    /// placement every key lands in the shard it was backed up from.
    pub placement: String,
    pub shard_count: u32,
    pub replication_factor: u32,
    /// One per data shard, in shard order.
    pub shards: Vec<ShardEntry>,
}

/// One shard's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u32,
    pub file: String,
    /// The shard's arc: every key hash `h` with `hash_first <= h <= hash_last`.
    pub hash_first: u64,
    pub hash_last: u64,
    /// The copy reflects the shard's log up to this index (in the source).
    pub applied_index: u64,
    pub keys: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// The file name of `shard`'s backup.
pub fn file_name(shard: u32) -> String {
    format!("shard-{shard:04}.rkv")
}

/// The arc (first and last key hash, inclusive) of data shard `shard` of
/// `shard_count`: exactly the hashes `placement::shard_for_hash` maps to it.
pub fn arc(shard: u32, shard_count: u32) -> (u64, u64) {
    let start = |k: u32| (u128::from(k) << 64).div_ceil(u128::from(shard_count));
    let first = start(shard - 1) as u64;
    let last = (start(shard) - 1) as u64;
    (first, last)
}

impl Manifest {
    /// Parses and checks a manifest's text (see the module docs). The error
    /// says what is wrong, for a message that names the file.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| format!("not a valid manifest: {e}"))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The manifest as it is written: pretty JSON, one trailing newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, not {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not {FORMAT_VERSION}, the one this ringkv reads",
                self.format_version
            ));
        }
        if self.placement != PLACEMENT {
            return Err(format!("placement {:?} is not {PLACEMENT:?}", self.placement));
        }
        if self.shard_count == 0 || self.replication_factor == 0 {
            return Err("shard_count and replication_factor must be positive".into());
        }
        if self.shards.len() != self.shard_count as usize {
            return Err(format!("{} shard entries for shard_count {}", self.shards.len(), self.shard_count));
        }
        for (entry, shard) in self.shards.iter().zip(1..) {
            if entry.shard != shard {
                return Err(format!(
                    "entry {shard} is for shard {}; entries must be shards 1..={} in order",
                    entry.shard, self.shard_count
                ));
            }
            if entry.file != file_name(shard) {
                return Err(format!("shard {shard}'s file is {:?}, not {:?}", entry.file, file_name(shard)));
            }
            if (entry.hash_first, entry.hash_last) != arc(shard, self.shard_count) {
                return Err(format!(
                    "shard {shard}'s hash range is not its arc under {} shards",
                    self.shard_count
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ringkv_core::placement::shard_for_hash;

    use super::*;

    fn manifest(shard_count: u32) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_at_ms: 1,
            source_cluster_id: "c".into(),
            source_epoch: 3,
            placement: PLACEMENT.into(),
            shard_count,
            replication_factor: 3,
            shards: (1..=shard_count)
                .map(|shard| {
                    let (hash_first, hash_last) = arc(shard, shard_count);
                    ShardEntry {
                        shard,
                        file: file_name(shard),
                        hash_first,
                        hash_last,
                        applied_index: 10,
                        keys: 2,
                        bytes: 40,
                        crc32: 0xdead_beef,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn arcs_are_what_placement_maps_to_and_cover_the_ring() {
        for shard_count in [1, 2, 3, 7, 32, 1000] {
            let mut next = 0u64;
            for shard in 1..=shard_count {
                let (first, last) = arc(shard, shard_count);
                assert_eq!(first, next, "gap or overlap before shard {shard} of {shard_count}");
                assert_eq!(shard_for_hash(first, shard_count), shard);
                assert_eq!(shard_for_hash(last, shard_count), shard);
                if first > 0 {
                    assert_eq!(shard_for_hash(first - 1, shard_count), shard - 1);
                }
                next = last.wrapping_add(1);
            }
            assert_eq!(next, 0, "the last arc ends at 2^64 - 1");
        }
    }

    #[test]
    fn a_written_manifest_parses_back() {
        let m = manifest(4);
        assert_eq!(Manifest::parse(&m.to_text()), Ok(m));
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        type Damage = fn(&mut Manifest);
        let cases: Vec<(Damage, &str)> = vec![
            (|m| m.format = "etcd".into(), "format is"),
            (|m| m.format_version = 2, "format_version 2"),
            (|m| m.placement = "h % S".into(), "placement"),
            (|m| m.shard_count = 0, "must be positive"),
            (|m| m.replication_factor = 0, "must be positive"),
            (|m| m.shard_count = 5, "4 shard entries for shard_count 5"),
            (|m| m.shards.swap(0, 1), "entry 1 is for shard 2"),
            (|m| m.shards[2].file = "../../etc/passwd".into(), "shard 3's file"),
            (|m| m.shards[1].hash_last += 1, "hash range"),
        ];
        for (damage, expected) in cases {
            let mut m = manifest(4);
            damage(&mut m);
            let err = Manifest::parse(&m.to_text()).unwrap_err();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
        assert!(Manifest::parse("").unwrap_err().contains("not a valid manifest"));
        assert!(Manifest::parse("{\"format\": 1}").unwrap_err().contains("not a valid manifest"));
        let negative = manifest(1).to_text().replace("\"keys\": 2", "\"keys\": -2");
        assert!(Manifest::parse(&negative).unwrap_err().contains("not a valid manifest"));
    }
}
