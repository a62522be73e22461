//! Taking a backup: every data shard's copy into its own file, then the
//! manifest (see the module docs of [`crate::backup`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::{Client, Error};

use super::manifest::{self, FORMAT, FORMAT_VERSION, Manifest, PLACEMENT, ShardEntry};
use super::shard_file::{Header, ShardFileWriter};
use super::{client_failure, direct_client, io_failure, now_ms};
use crate::output::{EXIT_OTHER, EXIT_PRECONDITION, Failure};

/// Times one shard's backup is tried before the backup fails: a stream that
/// breaks (a leader change, a lost connection) starts the shard again.
const ATTEMPTS_PER_SHARD: usize = 3;

/// Backs up the cluster that `seed` reaches into `dir` (new or empty); prints a
/// line per shard to `out`; returns the manifest written. `timeout` bounds
/// each call to the cluster.
pub async fn backup(
    seed: &Client,
    dir: &Path,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<Manifest, Failure> {
    prepare_dir(dir)?;
    let status = seed.cluster_status().await.map_err(|e| client_failure("backup failed", e, &[]))?;
    if status.shards == 0 {
        return Err(Failure::new(EXIT_PRECONDITION, "backup refused: the cluster has no data shards"));
    }
    let addrs: Vec<String> = status.nodes.iter().map(|n| n.addr.clone()).collect();
    let nodes = direct_client(addrs.clone(), timeout, seed.credentials())?;
    nodes.refresh_map().await.map_err(|e| client_failure("backup failed", e, &addrs))?;
    let mut shards = Vec::with_capacity(status.shards as usize);
    for shard in 1..=status.shards {
        let entry = backup_shard_with_retries(&nodes, dir, shard, status.shards, &addrs).await?;
        writeln!(
            out,
            "shard {shard}: {} keys at index {} ({} bytes)",
            entry.keys, entry.applied_index, entry.bytes
        )?;
        shards.push(entry);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created_at_ms: now_ms(),
        source_cluster_id: status.cluster_id,
        source_epoch: status.epoch,
        placement: PLACEMENT.into(),
        shard_count: status.shards,
        replication_factor: status.replicas,
        shards,
    };
    write_manifest(dir, &manifest)?;
    let keys: u64 = manifest.shards.iter().map(|s| s.keys).sum();
    writeln!(out, "OK backup of {} shards, {keys} keys, in {}", manifest.shard_count, dir.display())?;
    Ok(manifest)
}

/// Creates `dir`, or checks that it is an empty directory: a backup never
/// mixes with other files, and never overwrites an earlier backup.
fn prepare_dir(dir: &Path) -> Result<(), Failure> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::new(
                    EXIT_PRECONDITION,
                    format!("backup refused: {} is not empty; give a new or empty directory", dir.display()),
                ));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_failure("cannot create", dir, e))
        }
        Err(err) => Err(io_failure("cannot read the backup directory", dir, err)),
    }
}

async fn backup_shard_with_retries(
    nodes: &Client,
    dir: &Path,
    shard: u32,
    shard_count: u32,
    addrs: &[String],
) -> Result<ShardEntry, Failure> {
    let path = dir.join(manifest::file_name(shard));
    let mut attempt = 1;
    loop {
        match backup_shard(nodes, &path, shard, shard_count).await {
            Ok(entry) => return Ok(entry),
            Err(failed) => {
                // Never leave a partial file behind, whatever happens next.
                let _ = fs::remove_file(&path);
                match failed {
                    ShardFailure::Cluster(err) if attempt < ATTEMPTS_PER_SHARD && err.is_retryable() => {
                        note_retry(shard, attempt, &err);
                        attempt += 1;
                    }
                    ShardFailure::Cluster(err) => {
                        return Err(client_failure(&format!("backup of shard {shard} failed"), err, addrs));
                    }
                    ShardFailure::Local(failure) => return Err(failure),
                }
            }
        }
    }
}

/// Says on stderr that a shard is being started again (the CLI has no
/// logging set up; this is the operator's only sign of it).
fn note_retry(shard: u32, attempt: usize, err: &Error) {
    eprintln!("note: backup of shard {shard} broke off ({err}); starting it again (attempt {})", attempt + 1);
}

/// Why one attempt at a shard failed: the cluster (maybe worth another
/// attempt) or this machine (not).
enum ShardFailure {
    Cluster(Error),
    Local(Failure),
}

impl From<Error> for ShardFailure {
    fn from(err: Error) -> Self {
        ShardFailure::Cluster(err)
    }
}

async fn backup_shard(
    nodes: &Client,
    path: &Path,
    shard: u32,
    shard_count: u32,
) -> Result<ShardEntry, ShardFailure> {
    let local = |what: &str, err: std::io::Error| ShardFailure::Local(io_failure(what, path, err));
    let mut stream = nodes.backup_shard(shard).await?;
    let header = Header { shard, applied_index: stream.header.applied_index };
    let file =
        File::options().write(true).create_new(true).open(path).map_err(|e| local("cannot create", e))?;
    let mut writer =
        ShardFileWriter::new(BufWriter::new(file), header).map_err(|e| local("cannot write", e))?;
    let mut last_key: Option<Bytes> = None;
    let mut count = 0u64;
    while let Some(records) = stream.next().await? {
        for record in records {
            // The node sends keys in order; anything else is not a copy of a map.
            if last_key.as_ref().is_some_and(|last| *last >= record.key) {
                return Err(
                    Error::Unavailable(format!("shard {shard}'s backup stream is out of key order")).into()
                );
            }
            let owner = ringkv_core::placement::shard_for_key(&record.key, shard_count);
            if owner != shard {
                return Err(ShardFailure::Local(Failure::new(
                    EXIT_OTHER,
                    format!(
                        "backup failed: shard {shard} holds a key of shard {owner}; is a rebalance or split changing the layout?"
                    ),
                )));
            }
            writer.write_record(&record).map_err(|e| local("cannot write", e))?;
            last_key = Some(record.key);
            count += 1;
        }
    }
    if count != stream.header.keys {
        let announced = stream.header.keys;
        return Err(Error::Unavailable(format!(
            "shard {shard}'s backup stream announced {announced} keys and sent {count}"
        ))
        .into());
    }
    let (buffered, summary) = writer.finish().map_err(|e| local("cannot write", e))?;
    let file = buffered.into_inner().map_err(|e| local("cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| local("cannot sync", e))?;
    let (hash_first, hash_last) = manifest::arc(shard, shard_count);
    Ok(ShardEntry {
        shard,
        file: manifest::file_name(shard),
        hash_first,
        hash_last,
        applied_index: header.applied_index,
        keys: summary.records,
        bytes: summary.bytes,
        crc32: summary.crc32,
    })
}

/// Writes the manifest so that it appears whole or not at all: a temp file,
/// fsynced, renamed into place, and the directory fsynced (the shard files'
/// entries with it).
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), Failure> {
    let temp = dir.join(format!("{}.tmp", manifest::FILE_NAME));
    let path = dir.join(manifest::FILE_NAME);
    let write = || -> std::io::Result<()> {
        let mut file = File::options().write(true).create_new(true).open(&temp)?;
        file.write_all(manifest.to_text().as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_failure("cannot write the manifest", &path, e))
}
