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
//! A leader that openraft restored at restart (same term, see
//! [`crate::shard`]) additionally waits, while it stays in that term, until the
//! last entry of its log at restart is applied: its own read index can be behind
//! writes it acknowledged before the crash ([`ReadFence`]).
//!
//! ## Caveats / not done yet
//! - No leader-lease fast path (DESIGN allows it only as an opt-in with a stated
//!   clock bound).

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use ringkv_core::ShardId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::raft_types::{NodeId, Raft};

/// Reads waiting for a leadership confirmation, per shard.
pub const QUEUE_CAPACITY: usize = 8192;

type Waiter = oneshot::Sender<Result<(), Error>>;

/// Longest a read waits for a restored leader to apply its pre-crash log.
const FENCE_WAIT: Duration = Duration::from_secs(2);

/// A read index floor for a leader restored at restart: while the shard's term
/// is `term`, reads wait until `index` is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFence {
    pub term: u64,
    pub index: u64,
}

/// The handle on one shard's read batcher task.
#[derive(Clone)]
pub struct ReadBatcher {
    shard: ShardId,
    tx: mpsc::Sender<Waiter>,
}

impl ReadBatcher {
    /// While `hold` is true (a leader transfer), no confirmation starts: its
    /// heartbeats would renew the followers' lease on the old leader.
    pub fn spawn(
        shard: ShardId,
        raft: Raft,
        fence: Option<ReadFence>,
        hold: watch::Receiver<bool>,
    ) -> ReadBatcher {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(shard, raft, fence, hold, rx));
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

async fn run(
    shard: ShardId,
    raft: Raft,
    mut fence: Option<ReadFence>,
    mut hold: watch::Receiver<bool>,
    mut rx: mpsc::Receiver<Waiter>,
) {
    let mut waiters = Vec::new();
    // Cancel-safe: recv_many loses nothing when it returns.
    while rx.recv_many(&mut waiters, QUEUE_CAPACITY).await > 0 {
        let _ = hold.wait_for(|held| !held).await;
        // Past the restored term, any confirmation is a later leader's, whose
        // read index covers an entry of its own term: the fence is moot.
        if fence.is_some_and(|f| raft.metrics().borrow().current_term != f.term) {
            fence = None;
        }
        let mut result = raft.ensure_linearizable().await.map(|_| ()).map_err(|e| read_error(shard, e));
        if let (Some(f), Ok(())) = (fence, &result) {
            result = wait_applied(shard, &raft, f.index).await;
        }
        for waiter in waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Waits until `index` is applied here, or `FENCE_WAIT` passes.
async fn wait_applied(shard: ShardId, raft: &Raft, index: u64) -> Result<(), Error> {
    raft.wait(Some(FENCE_WAIT))
        .applied_index_at_least(Some(index), "restored leader read fence")
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::Unavailable(format!("shard {shard}: restored leader has not applied its log yet: {e}"))
        })
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
