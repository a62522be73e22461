//! Restoring a backup into fresh nodes: verify everything, refuse nodes that
//! belong to a cluster, create the cluster with the backup's shard layout,
//! then load each shard through Raft (see the module docs of
//! [`crate::backup`]).

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Credentials, Error};
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::{BackupRecord, NodeStatusRequest};

use super::manifest::{self, Manifest, ShardEntry};
use super::shard_file::ShardFileReader;
use super::{BATCH_BYTES, BATCH_RECORDS, client_failure, direct_client};
use crate::output::{EXIT_OTHER, EXIT_PRECONDITION, EXIT_UNAVAILABLE, EXIT_USAGE, Failure};

/// How long a restore waits for every shard of the new cluster to elect a leader.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(60);

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub cluster_id: String,
    /// Records written, and dropped because their deadline had passed.
    pub written: u64,
    pub expired: u64,
}

/// Restores the backup in `dir` into the empty nodes `nodes` (id, address),
/// with `replicas` per shard (default: the backup's). Prints progress to
/// `out`. `timeout` bounds each call to the cluster; `credentials` are those
/// of an operator (TLS, the admin token).
pub async fn restore(
    dir: &Path,
    nodes: Vec<(u64, String)>,
    replicas: Option<u32>,
    timeout: Duration,
    credentials: &Credentials,
    out: &mut impl Write,
) -> Result<RestoreSummary, Failure> {
    let manifest = load_manifest(dir)?;
    for entry in &manifest.shards {
        verify_file(dir, entry)?;
    }
    writeln!(
        out,
        "verified {} shard files, {} keys",
        manifest.shard_count,
        manifest.shards.iter().map(|s| s.keys).sum::<u64>()
    )?;
    let replicas = replicas.unwrap_or(manifest.replication_factor);
    if replicas as usize > nodes.len() {
        return Err(Failure::usage(format!(
            "the backup has {replicas} replicas per shard and {} nodes were given; give more nodes or --replicas",
            nodes.len()
        )));
    }
    let addrs: Vec<String> = nodes.iter().map(|(_, addr)| addr.clone()).collect();
    check_nodes_are_fresh(&nodes, timeout, credentials).await?;

    let seed = Client::connect(
        vec![addrs[0].clone()],
        ClientOptions { request_timeout: timeout, credentials: credentials.clone(), ..Default::default() },
    )
    .map_err(|e| Failure::from_client(e, &addrs))?;
    let created =
        seed.init_cluster(nodes, manifest.shard_count, replicas).await.map_err(|err| match err {
            Error::AlreadyExists(reason) => Failure::new(
                EXIT_PRECONDITION,
                format!("restore refused: a node already belongs to a cluster: {reason}"),
            ),
            err => client_failure("restore failed: cluster init", err, &addrs),
        })?;
    writeln!(
        out,
        "created cluster {} with {} shards, {} replicas each",
        created.cluster_id, created.shards, created.replicas
    )?;
    let partly = |failure: Failure| Failure {
        message: format!(
            "{} (cluster {} is partly restored: start its nodes empty again and rerun the restore)",
            failure.message, created.cluster_id
        ),
        ..failure
    };
    let cluster = direct_client(addrs.clone(), timeout, credentials)?;
    wait_for_leaders(&cluster, manifest.shard_count, &addrs).await.map_err(partly)?;
    let mut summary = RestoreSummary { cluster_id: created.cluster_id.clone(), written: 0, expired: 0 };
    for entry in &manifest.shards {
        let (written, expired) =
            load_shard(&cluster, dir, entry, &created.cluster_id, &addrs).await.map_err(partly)?;
        writeln!(out, "shard {}: {written} keys restored, {expired} already expired", entry.shard)?;
        summary.written += written;
        summary.expired += expired;
    }
    writeln!(
        out,
        "OK restored {} keys into cluster {} ({} had expired)",
        summary.written, summary.cluster_id, summary.expired
    )?;
    Ok(summary)
}

/// Reads and checks `dir/manifest.json`.
pub fn load_manifest(dir: &Path) -> Result<Manifest, Failure> {
    let path = dir.join(manifest::FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("{} is not a complete backup: it has no {}", dir.display(), manifest::FILE_NAME),
            ));
        }
        Err(err) => return Err(damaged(&path, format!("cannot read it: {err}"))),
    };
    Manifest::parse(&text).map_err(|reason| damaged(&path, reason))
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_OTHER, format!("restore refused: backup file {} is damaged: {reason}", path.display()))
}

/// Checks one shard file against its manifest entry: size, then a full read
/// (structure, header, key count) with its crc32.
pub fn verify_file(dir: &Path, entry: &ShardEntry) -> Result<(), Failure> {
    let path = dir.join(&entry.file);
    let len = fs::metadata(&path).map_err(|e| damaged(&path, format!("cannot read it: {e}")))?.len();
    if len != entry.bytes {
        return Err(damaged(&path, format!("it is {len} bytes, the manifest says {}", entry.bytes)));
    }
    let mut reader = open_shard(&path, entry)?;
    while reader.next_record().map_err(|reason| damaged(&path, reason))?.is_some() {}
    let summary = reader.summary();
    if summary.crc32 != entry.crc32 {
        return Err(damaged(
            &path,
            format!("crc32 is {:08x}, the manifest says {:08x}", summary.crc32, entry.crc32),
        ));
    }
    if summary.records != entry.keys {
        return Err(damaged(
            &path,
            format!("it holds {} keys, the manifest says {}", summary.records, entry.keys),
        ));
    }
    Ok(())
}

fn open_shard(path: &PathBuf, entry: &ShardEntry) -> Result<ShardFileReader<BufReader<File>>, Failure> {
    let file = File::open(path).map_err(|e| damaged(path, format!("cannot read it: {e}")))?;
    let (reader, header) =
        ShardFileReader::open(BufReader::new(file)).map_err(|reason| damaged(path, reason))?;
    if header.shard != entry.shard || header.applied_index != entry.applied_index {
        return Err(damaged(
            path,
            format!(
                "its header is shard {} at index {}, the manifest says shard {} at index {}",
                header.shard, header.applied_index, entry.shard, entry.applied_index
            ),
        ));
    }
    Ok(reader)
}

/// Refuses unless every node answers with its id and belongs to no cluster.
async fn check_nodes_are_fresh(
    nodes: &[(u64, String)],
    timeout: Duration,
    credentials: &Credentials,
) -> Result<(), Failure> {
    for (id, addr) in nodes {
        let unreachable = |err: String| {
            Failure::new(
                EXIT_UNAVAILABLE,
                format!("restore failed: node {id} at {addr} does not answer: {err}"),
            )
        };
        let endpoint = credentials
            .endpoint(addr)
            .map_err(|e| Failure::usage(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint.connect().await.map_err(|e| unreachable(e.to_string()))?;
        let status = AdminClient::new(credentials.wrap(channel))
            .node_status(NodeStatusRequest {})
            .await
            .map_err(|e| unreachable(e.message().to_string()))?
            .into_inner();
        if status.id != *id {
            return Err(Failure::usage(format!("node {id} at {addr} answers as node {}", status.id)));
        }
        if !status.cluster_id.is_empty() {
            return Err(Failure::new(
                EXIT_PRECONDITION,
                format!(
                    "restore refused: node {id} at {addr} already belongs to cluster {}; \
                     restore builds a new cluster from nodes started empty",
                    status.cluster_id
                ),
            ));
        }
    }
    Ok(())
}

/// Waits until every data shard of the new cluster has a leader.
async fn wait_for_leaders(cluster: &Client, shard_count: u32, addrs: &[String]) -> Result<(), Failure> {
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    loop {
        let led = match cluster.cluster_status().await {
            Ok(status) => {
                status.shard_status.iter().filter(|s| s.shard >= 1 && s.leader_id != 0).count()
                    == shard_count as usize
            }
            Err(err) if Instant::now() >= deadline => {
                return Err(client_failure("restore failed: the new cluster does not answer", err, addrs));
            }
            Err(_) => false,
        };
        if led {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                EXIT_UNAVAILABLE,
                format!("restore failed: shards of the new cluster have no leader after {LEADERS_TIMEOUT:?}"),
            ));
        }
        // Poll interval: elections take a few hundred ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one shard's records in batches; returns (written, expired).
async fn load_shard(
    cluster: &Client,
    dir: &Path,
    entry: &ShardEntry,
    cluster_id: &str,
    addrs: &[String],
) -> Result<(u64, u64), Failure> {
    let path = dir.join(&entry.file);
    let mut reader = open_shard(&path, entry)?;
    let (mut written, mut expired) = (0, 0);
    let mut batch: Vec<BackupRecord> = Vec::new();
    let mut batch_bytes = 0;
    loop {
        let record = reader.next_record().map_err(|reason| damaged(&path, reason))?;
        let last = record.is_none();
        // A record that would take the batch past BATCH_BYTES goes into the
        // next one, so that a batch stays within a node's request limit.
        let mut carried = None;
        if let Some(record) = record {
            let size = record.key.len() + record.value.len();
            if !batch.is_empty() && batch_bytes + size > BATCH_BYTES {
                carried = Some((record, size));
            } else {
                batch_bytes += size;
                batch.push(record);
            }
        }
        let full = batch.len() >= BATCH_RECORDS || batch_bytes >= BATCH_BYTES || carried.is_some();
        if !batch.is_empty() && (full || last) {
            let sent = std::mem::take(&mut batch);
            batch_bytes = 0;
            let what = format!("restore of shard {} failed", entry.shard);
            let done = cluster
                .restore_shard(entry.shard, cluster_id, sent)
                .await
                .map_err(|e| client_failure(&what, e, addrs))?;
            written += done.written;
            expired += done.expired;
        }
        if let Some((record, size)) = carried {
            batch_bytes = size;
            batch.push(record);
        }
        if last {
            break;
        }
    }
    if reader.summary().crc32 != entry.crc32 {
        return Err(damaged(&path, "it changed since it was verified (crc32 differs now)"));
    }
    Ok((written, expired))
}
