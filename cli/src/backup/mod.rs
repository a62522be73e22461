//! `ringkv admin backup DIR` and `ringkv admin restore DIR`.
//!
//! A backup directory holds one file per data shard ([`shard_file`]) and a
//! [`manifest`] written last. The meta shard is not backed up: its cluster map
//! names the source's nodes, and a restore builds a new one.
//!
//! **Backup** ([`backup()`]): the cluster map from `ClusterStatus` (through any
//! node or router), then, shard by shard, `Admin.BackupShard` on the shard's
//! leader, straight to the nodes the map lists (routers do not forward it).
//! The leader confirms its leadership after the call arrived and copies the
//! shard at one applied index, so each shard's file holds every write
//! acknowledged before that shard's backup began, and no write that was never
//! acknowledged or proposed. Shards are copied one after another, each at its
//! own index: the backup is consistent per shard, not across shards (as a
//! TiKV or Redis Cluster backup without a global timestamp). The CLI checks
//! the stream (header first, keys in order, the announced count, the `done`
//! marker), writes the file with its crc32, fsyncs it, and retries a shard
//! whose stream broke from the start. The directory must be new or empty;
//! the manifest goes last (temp file, fsync, rename, fsync of the directory),
//! so an interrupted backup is a directory without `manifest.json`, which
//! restore refuses.
//!
//! **Restore** ([`restore()`]), into nodes started empty (no `cluster init`):
//! 1. verify: the manifest parses and checks, and every shard file has the
//!    listed size and crc32 and reads back whole with the listed header and
//!    key count. Any damage stops here with the file's name, before a single
//!    request is sent;
//! 2. every given node answers with its id and belongs to no cluster (else
//!    refused: restore never merges into a cluster that has data);
//! 3. `InitCluster` with the manifest's shard count (so every key lands in the
//!    shard it came from) and replication factor (or `--replicas`);
//! 4. each shard's records, streamed from its file in batches of at most
//!    [`BATCH_RECORDS`] records or [`BATCH_BYTES`] bytes, through
//!    `Admin.RestoreShard` on the shard's leader, which writes them through
//!    Raft with their values and absolute deadlines (already expired ones are
//!    dropped). Memory is bounded by one batch.
//!
//! Versions are not preserved: a version is an index of the shard's Raft log,
//! and a new cluster's log starts again at 1, so every restored key gets the
//! index of the entry that wrote it (versions held from the old cluster, for
//! `if_version` or a watch position, must be read again). The files keep the
//! source versions for inspection.
//!
//! ## Caveats / not done yet
//! - A restore that fails after `InitCluster` leaves a partly loaded cluster;
//!   the message says so. Start the nodes empty again and rerun it.
//! - No cross-shard point in time, no incremental backups, no compression.
//! - Backup and restore need the nodes' addresses to be reachable from where
//!   the CLI runs, like `cluster init`.
//! - The files are read twice on restore (verify, then load); a file changed
//!   in between fails its checksum during the load, after part of it was sent.

pub mod manifest;
pub mod restore;
pub mod save;
pub mod shard_file;

use std::path::Path;
use std::time::Duration;

use ringkv_client::{Client, ClientOptions, Credentials, Error, Routing};

pub use restore::{RestoreSummary, restore};
pub use save::backup;

use crate::output::{EXIT_OTHER, Failure};

/// Most records in one `RestoreShard` call.
pub const BATCH_RECORDS: usize = 1000;

/// Key and value bytes above which a restore batch is sent (a batch always
/// carries at least one record).
pub const BATCH_BYTES: usize = 1 << 20;

/// A client that talks to the nodes at `addrs` directly: the shard-level
/// backup and restore calls go to each shard's leader, which routers do not
/// forward. `timeout` bounds each call; one attempt may take all of it (a
/// restore batch waits for its Raft commit).
fn direct_client(
    addrs: Vec<String>,
    timeout: Duration,
    credentials: &Credentials,
) -> Result<Client, Failure> {
    let opts = ClientOptions {
        routing: Routing::Direct,
        request_timeout: timeout,
        attempt_timeout: timeout,
        credentials: credentials.clone(),
        ..ClientOptions::default()
    };
    Client::connect(addrs.clone(), opts).map_err(|e| Failure::from_client(e, &addrs))
}

/// A client error during `what`, as the CLI reports it.
fn client_failure(what: &str, err: Error, addrs: &[String]) -> Failure {
    let failure = Failure::from_client(err, addrs);
    Failure { message: format!("{what}: {}", failure.message), ..failure }
}

/// A file-system error on `path`.
fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    Failure::new(EXIT_OTHER, format!("{what} {}: {err}", path.display()))
}

/// Unix ms now, by this machine's clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
