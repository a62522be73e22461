//! The client's half of the shard-level backup and restore calls
//! (`Admin.BackupShard`, `Admin.RestoreShard`): routed to the shard's leader
//! like a KV request on that shard, following `NotLeader`. Nodes answer them,
//! routers do not, so a client for these is given node addresses (or routes
//! [`crate::Routing::Direct`] once it has the map).
//!
//! The file format, the manifest and the whole-cluster procedures are the
//! `ringkv` CLI's (`ringkv admin backup` / `restore`).

use ringkv_core::ShardId;
use ringkv_proto::v1 as proto;

use crate::client::{Client, Op, with_timeout};
use crate::error::Error;

/// Largest backup chunk the client decodes: a node's chunk is at most 1 MiB
/// plus one record, and a record at most a key and a value of the node's limit.
const MAX_CHUNK_BYTES: usize = 64 << 20;

/// An open backup stream of one shard: its header, then [`ShardBackup::next`]
/// until it returns `None` (the stream ended with its `done` marker).
pub struct ShardBackup {
    /// The first message: shard, applied index and record count.
    pub header: proto::BackupShardChunk,
    stream: tonic::Streaming<proto::BackupShardChunk>,
    finished: bool,
}

impl ShardBackup {
    /// The next batch of records, in key order; `Ok(None)` after the last one.
    /// A stream that ends without its `done` marker is an error: it was cut
    /// short, and the records so far are not the whole shard.
    pub async fn next(&mut self) -> Result<Option<Vec<proto::BackupRecord>>, Error> {
        if self.finished {
            return Ok(None);
        }
        match self.stream.message().await? {
            Some(chunk) => {
                self.finished = chunk.done;
                Ok(Some(chunk.records))
            }
            None => Err(Error::Unavailable(format!(
                "the backup stream of shard {} ended before its last chunk",
                self.header.shard
            ))),
        }
    }
}

impl Client {
    /// Opens a backup of `shard` on its leader and reads the header. The
    /// leader confirms its leadership after the call arrived, so the records
    /// hold every write acknowledged before it. The stream itself has no
    /// deadline; only opening it does.
    pub async fn backup_shard(&self, shard: ShardId) -> Result<ShardBackup, Error> {
        let op = Op { leader_confirmed: true, ..Op::kv("backup_shard", Some(shard), false, false) };
        let (header, stream) = self
            .run(op, |link, timeout| {
                let mut admin = link.admin().max_decoding_message_size(MAX_CHUNK_BYTES);
                async move {
                    let request = with_timeout(proto::BackupShardRequest { shard }, timeout);
                    let mut stream = admin.backup_shard(request).await?.into_inner();
                    let header = stream.message().await?.ok_or_else(|| {
                        tonic::Status::unavailable("the backup stream ended before its header")
                    })?;
                    Ok(tonic::Response::new((header, stream)))
                }
            })
            .await?;
        if header.shard != shard || !header.records.is_empty() {
            return Err(Error::Unavailable(format!(
                "the backup stream of shard {shard} began with something other than its header"
            )));
        }
        let finished = header.done;
        Ok(ShardBackup { header, stream, finished })
    }

    /// Writes `records` into `shard` of the cluster `cluster_id` through Raft,
    /// on the shard's leader. Idempotent (the same values again), so it is
    /// retried after any retryable failure.
    pub async fn restore_shard(
        &self,
        shard: ShardId,
        cluster_id: &str,
        records: Vec<proto::BackupRecord>,
    ) -> Result<proto::RestoreShardResponse, Error> {
        let op = Op { idempotent: true, ..Op::kv("restore_shard", Some(shard), true, false) };
        let request = proto::RestoreShardRequest { shard, cluster_id: cluster_id.to_string(), records };
        self.run(op, |link, timeout| {
            let mut admin = link.admin().max_encoding_message_size(MAX_CHUNK_BYTES);
            let request = with_timeout(request.clone(), timeout);
            async move { admin.restore_shard(request).await }
        })
        .await
    }
}
