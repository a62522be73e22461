//! Per-shard proposal batching.
//!
//! openraft 0.9 writes one log entry — one fsync on every replica — per
//! `client_write`. The proposer turns many concurrent client operations into one
//! entry: a single task per shard takes the operations that queued up while the
//! previous proposal was in flight, proposes them as one [`Command`], and fans the
//! per-operation results back out. Under load the batch grows by itself; a lone
//! client pays no added latency.
//!
//! The proposer also stamps each command with the leader's clock (`now_ms`), the
//! "now" every replica uses when it applies the batch.
//!
//! Queue: bounded at [`QUEUE_CAPACITY`] operations. When it is full, `propose`
//! waits, which pushes back on the gRPC handlers and so on clients.
//!
//! ## Caveats / not done yet
//! - One proposal in flight per shard. Pipelining two would hide a little more
//!   latency at low concurrency.
//! - A proposal that fails with a fatal Raft error leaves its operations' outcome
//!   unknown; callers get `Unavailable` and must not blindly retry a write.

use openraft::error::{ClientWriteError, RaftError};
use ringkv_core::ShardId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

use crate::command::{Command, Op, OpResult};
use crate::error::Error;
use crate::raft_types::{NodeId, Raft};
use crate::time::unix_now_ms;

/// Operations waiting to be proposed, per shard.
pub const QUEUE_CAPACITY: usize = 8192;

/// Payload bytes above which a batch is closed even if more operations wait.
const MAX_BATCH_BYTES: usize = 4 << 20;

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<OpResult, Error>>,
}

/// The handle on one shard's proposer task. Dropping every handle ends the task.
#[derive(Clone)]
pub struct Proposer {
    shard: ShardId,
    tx: mpsc::Sender<Pending>,
    counts: Arc<Counts>,
}

/// Totals since the proposer started, for metrics.
#[derive(Default)]
struct Counts {
    proposals: AtomicU64,
    ops: AtomicU64,
}

impl Proposer {
    /// Starts the proposer task of `shard`.
    /// While `hold` is true (a leader transfer), nothing is proposed: requests
    /// wait in the queue.
    pub fn spawn(shard: ShardId, raft: Raft, max_batch_ops: usize, hold: watch::Receiver<bool>) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(shard, raft, rx, max_batch_ops.max(1), hold, counts.clone()));
        Proposer { shard, tx, counts }
    }

    /// Entries proposed and ops they carried, since this proposer started.
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.proposals.load(Ordering::Relaxed), self.counts.ops.load(Ordering::Relaxed))
    }

    /// Proposes `op` and returns its result once the entry holding it is committed
    /// and applied on this (leader) node.
    pub async fn propose(&self, op: Op) -> Result<OpResult, Error> {
        let (reply, rx) = oneshot::channel();
        let stopped = || Error::Unavailable(format!("shard {} is shutting down on this node", self.shard));
        self.tx.send(Pending { op, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(
    shard: ShardId,
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    max_batch_ops: usize,
    mut hold: watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    let mut queued: Vec<Pending> = Vec::new();
    // Cancel-safe: recv_many loses nothing when it returns.
    while rx.recv_many(&mut queued, max_batch_ops).await > 0 {
        // A closed channel (shard shutting down) ends the hold.
        let _ = hold.wait_for(|held| !held).await;
        // Everything that queued during the last proposal goes into the next one,
        // cut into entries of at most MAX_BATCH_BYTES (a lone large op still goes).
        let mut queued_ops = std::mem::take(&mut queued).into_iter().peekable();
        while queued_ops.peek().is_some() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(p) =
                queued_ops.next_if(|p| batch.is_empty() || bytes + op_bytes(&p.op) <= MAX_BATCH_BYTES)
            {
                bytes += op_bytes(&p.op);
                batch.push(p);
            }
            counts.proposals.fetch_add(1, Ordering::Relaxed);
            counts.ops.fetch_add(batch.len() as u64, Ordering::Relaxed);
            propose_batch(shard, &raft, batch).await;
        }
    }
}

async fn propose_batch(shard: ShardId, raft: &Raft, batch: Vec<Pending>) {
    let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let count = ops.len();
    let command = Command { now_ms: unix_now_ms(), ops };
    match raft.client_write(command).await {
        Ok(response) if response.data.results.len() == count => {
            for (reply, result) in replies.into_iter().zip(response.data.results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(response) => {
            // Apply returned the wrong number of results: a bug, never a guess.
            let err = Error::Internal(format!(
                "shard {shard}: applied batch of {count} ops returned {} results",
                response.data.results.len()
            ));
            tracing::error!(shard, "{err}");
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
        Err(e) => {
            let err = write_error(shard, e);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Maps a failed `client_write`. `ForwardToLeader` means nothing was proposed, so
/// the caller may retry at the leader; anything else leaves the outcome unknown.
pub fn write_error(
    shard: ShardId,
    e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Error::NotLeader { shard, leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Internal(format!("shard {shard}: unexpected membership error: {e}"))
        }
        RaftError::Fatal(f) => Error::Unavailable(format!("shard {shard} replica stopped: {f}")),
    }
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len() + 32,
        Op::Publish { channel, payload } => channel.len() + payload.len() + 16,
        Op::Delete { key, .. }
        | Op::Touch { key, .. }
        | Op::Increment { key, .. }
        | Op::Extend { key, .. } => key.len() + 32,
        Op::Expire { keys } => keys.iter().map(|k| k.len() + 8).sum(),
        Op::SetClusterMap { .. } | Op::SetPlan { .. } => 4096,
        Op::Once { request_id, op, .. } => request_id.len() + 8 + op_bytes(op),
    }
}
