//! The node's half of backup and restore: `Admin.BackupShard` and
//! `Admin.RestoreShard`, both answered by the shard's leader.
//!
//! **Backup.** A consistent, point-in-time copy of one shard: the leader first
//! confirms its leadership with a quorum (the read batcher's
//! `ensure_linearizable`, which also waits until the read index is applied),
//! so the state it then copies holds every write acknowledged before the call
//! arrived. The copy is taken under one read lock together with its applied
//! index ([`crate::state_machine::KvState::live_records`]: the records live at the leader's clock,
//! values shared, so the copy costs the tree and not the data) and streamed in
//! chunks of at most [`CHUNK_RECORDS`] records or [`CHUNK_BYTES`] bytes. The
//! stream is an `unfold` over the copy, so HTTP/2 flow control paces it: a
//! slow reader holds the one copy, nothing more. First a header (shard,
//! applied index, record count), then the records in key order, then `done`.
//!
//! **Restore.** A batch of records written through Raft, so every replica
//! gets them and they are durable before the answer: one `Put` per record
//! with the record's absolute deadline, proposed through the shard's proposer
//! (which batches them into few entries and honours a leader-transfer hold).
//! Records whose deadline has passed by the leader's clock are skipped. Every
//! record gets the version of the entry that wrote it: a version is a log
//! index of the shard, and the new cluster's log starts at 1, so keeping the
//! source's versions would make later writes go *down* in version. A request
//! naming another cluster id is refused, so a restore cannot land in a
//! cluster it did not create.
//!
//! ## Caveats / not done yet
//! - The copy is O(keys) under the state read lock (as a Raft snapshot's is):
//!   applies wait that long.
//! - Versions, request ids, watch events and pub/sub messages are not carried
//!   over (see above; the latter are short-lived by design).

use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::ShardId;
use ringkv_core::limits::{check_key, check_value};
use ringkv_proto::v1::{BackupRecord, BackupShardChunk, RestoreShardRequest, RestoreShardResponse};
use tonic::Status;

use crate::command::{Condition, Op, OpResult};
use crate::error::Error;
use crate::node::Node;
use crate::shard::Shard;
use crate::state_machine::Record;
use crate::time::unix_now_ms;
use crate::watcher::EventStream;

/// Most records in one backup chunk.
pub const CHUNK_RECORDS: usize = 1024;

/// Bytes (keys and values) above which a backup chunk is closed; a chunk always
/// carries at least one record, so one is at most this plus one record.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Most records one `RestoreShard` call may carry.
pub const MAX_RESTORE_RECORDS: usize = 4096;

/// The replica of `shard` here, if this node leads it.
fn led_shard(node: &Node, shard: ShardId) -> Result<Arc<Shard>, Error> {
    let replica = node.shard(shard).ok_or(Error::WrongShard { shard, epoch: 0 })?;
    if !replica.is_leader() {
        return Err(replica.not_leader());
    }
    Ok(replica)
}

/// `Admin.BackupShard`: confirms leadership, copies the shard's live records
/// and returns the stream that sends them (see the module docs).
pub async fn backup_stream(node: &Node, shard: ShardId) -> Result<EventStream<BackupShardChunk>, Error> {
    if shard == ringkv_core::META_SHARD {
        return Err(Error::InvalidArgument(
            "the meta shard is not backed up: restore builds a new map".into(),
        ));
    }
    let replica = led_shard(node, shard)?;
    replica.reader.confirm().await?;
    let (applied_index, records) = {
        let state = replica.state.read().expect("shard state lock poisoned");
        (state.last_applied.map_or(0, |id| id.index), state.kv.live_records(unix_now_ms()))
    };
    tracing::info!(shard, applied_index, keys = records.len(), "backup of shard started");
    let header = BackupShardChunk { shard, applied_index, keys: records.len() as u64, ..Default::default() };
    let chunks = Chunks { records: records.into_iter(), header: Some(header), done: false };
    Ok(Box::pin(futures::stream::iter(chunks.map(Ok::<_, Status>))))
}

/// The chunks of one backup stream, built lazily from the copy.
struct Chunks {
    records: std::vec::IntoIter<(Bytes, Record)>,
    header: Option<BackupShardChunk>,
    done: bool,
}

impl Iterator for Chunks {
    type Item = BackupShardChunk;

    fn next(&mut self) -> Option<BackupShardChunk> {
        if let Some(header) = self.header.take() {
            return Some(header);
        }
        if self.done {
            return None;
        }
        let mut chunk = BackupShardChunk::default();
        let mut bytes = 0;
        while chunk.records.len() < CHUNK_RECORDS && bytes < CHUNK_BYTES {
            let Some((key, record)) = self.records.next() else {
                chunk.done = true;
                self.done = true;
                break;
            };
            bytes += key.len() + record.value.len();
            chunk.records.push(BackupRecord {
                key,
                value: record.value,
                version: record.version,
                expires_at_ms: record.expires_at_ms.unwrap_or(0),
            });
        }
        // A full chunk that happens to hold the last record is followed by an
        // empty `done` one; that costs a few bytes and keeps this simple.
        Some(chunk)
    }
}

/// `Admin.RestoreShard`: checks the batch, then writes it through the shard's
/// proposer (see the module docs).
pub async fn restore_batch(node: &Node, request: RestoreShardRequest) -> Result<RestoreShardResponse, Error> {
    let cluster_id = node.cluster().map(|c| c.cluster_id).unwrap_or_default();
    if cluster_id.is_empty() || cluster_id != request.cluster_id {
        return Err(Error::FailedPrecondition(format!(
            "restore meant for cluster {:?} reached node {} of cluster {cluster_id:?}",
            request.cluster_id,
            node.id()
        )));
    }
    if request.records.len() > MAX_RESTORE_RECORDS {
        return Err(Error::InvalidArgument(format!(
            "{} records in one restore batch, over the limit of {MAX_RESTORE_RECORDS}",
            request.records.len()
        )));
    }
    let shard_count = node.cluster().map_or(0, |c| c.shard_count);
    for record in &request.records {
        check_key(&record.key)?;
        check_value(&record.value, node.config.max_value_bytes)?;
        let owner = ringkv_core::placement::shard_for_key(&record.key, shard_count.max(1));
        if owner != request.shard {
            return Err(Error::InvalidArgument(format!(
                "a key of shard {owner} in a restore batch for shard {}: the backup was taken with \
                 another shard count, or the batch is damaged",
                request.shard
            )));
        }
    }
    let replica = led_shard(node, request.shard)?;
    // A restore adds data like any Put: the node's memory budget applies.
    if let Some(first) = request.records.first() {
        let put = Op::Put {
            key: first.key.clone(),
            value: Bytes::new(),
            expires_at_ms: None,
            condition: Condition::None,
        };
        crate::memory::check(&put, node.data_bytes.get(), node.config.memory_budget_bytes)?;
    }
    let now = unix_now_ms();
    let (live, expired): (Vec<_>, Vec<_>) =
        request.records.into_iter().partition(|r| r.expires_at_ms == 0 || r.expires_at_ms > now);
    let puts = live.into_iter().map(|record| {
        let op = Op::Put {
            key: record.key,
            value: record.value,
            expires_at_ms: (record.expires_at_ms > 0).then_some(record.expires_at_ms),
            condition: Condition::None,
        };
        if node.config.memory_budget_bytes > 0 {
            node.data_bytes.admit(&op);
        }
        replica.proposer.propose(op)
    });
    let mut written = 0;
    for result in futures::future::join_all(puts).await {
        match result? {
            OpResult::Put { succeeded: true, .. } => written += 1,
            other => return Err(Error::Internal(format!("a restore put answered {other:?}"))),
        }
    }
    Ok(RestoreShardResponse { written, expired: expired.len() as u64 })
}
