//! Per-shard read batching.
//!
//! A linearizable read needs the leader to confirm, with a quorum, that it still
//! leads (`ensure_linearizable`: one heartbeat round) and then to have applied up
//! to the commit index it saw. openraft 0.9 runs one quorum round per call, so the
//! batcher keeps at most one confirmation in flight per shard: reads that arrive
//! while one runs wait for the next one (a read must start its confirmation after
//! it arrived, or it could miss a write acknowledged just before it), and then all
//! of them read memory.
//!
//! Queue: bounded at [`QUEUE_CAPACITY`] waiting reads; when full, `confirm`
//! waits, pushing back on clients.
//!
//! ## Caveats / not done yet
//! - No leader-lease fast path (DESIGN allows it only as an opt-in with a stated
//!   clock bound).

use openraft::error::{CheckIsLeaderError, RaftError};
use ringkv_core::ShardId;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::raft_types::{NodeId, Raft};

/// Reads waiting for a leadership confirmation, per shard.
pub const QUEUE_CAPACITY: usize = 8192;

type Waiter = oneshot::Sender<Result<(), Error>>;

/// The handle on one shard's read batcher task.
#[derive(Clone)]
pub struct ReadBatcher {
    shard: ShardId,
    tx: mpsc::Sender<Waiter>,
}

impl ReadBatcher {
    pub fn spawn(shard: ShardId, raft: Raft) -> ReadBatcher {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(shard, raft, rx));
        ReadBatcher { shard, tx }
    }

    /// Returns once this node has confirmed leadership after the call began and has
    /// applied everything committed before it: memory may then be read.
    pub async fn confirm(&self) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let stopped = || Error::Unavailable(format!("shard {} is shutting down on this node", self.shard));
        self.tx.send(reply).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(shard: ShardId, raft: Raft, mut rx: mpsc::Receiver<Waiter>) {
    let mut waiters = Vec::new();
    // Cancel-safe: recv_many loses nothing when it returns.
    while rx.recv_many(&mut waiters, QUEUE_CAPACITY).await > 0 {
        let result = raft.ensure_linearizable().await.map(|_| ()).map_err(|e| read_error(shard, e));
        for waiter in waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

fn read_error(
    shard: ShardId,
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>,
) -> Error {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            Error::NotLeader { shard, leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)) }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            Error::Unavailable(format!("shard {shard}: leadership not confirmed by a quorum: {q}"))
        }
        RaftError::Fatal(f) => Error::Unavailable(format!("shard {shard} replica stopped: {f}")),
    }
}
