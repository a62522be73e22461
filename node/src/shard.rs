//! One hosted replica: its Raft group, the shared view of its in-memory state, and
//! the tasks in front of Raft (proposer, read batcher).

use std::sync::{Arc, RwLock};

use openraft::ServerState;
use ringkv_core::ShardId;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::proposer::Proposer;
use crate::raft_types::{NodeId, Raft};
use crate::reader::ReadBatcher;
use crate::store::{NodeStorage, ShardState};
use crate::transport::{PeerPool, ShardNetworkFactory};

/// A replica of one shard hosted by this node.
pub struct Shard {
    pub id: ShardId,
    pub raft: Raft,
    /// The state machine's data, shared with the Raft state-machine worker. Take
    /// the lock briefly and never across an `.await`.
    pub state: Arc<RwLock<ShardState>>,
    pub proposer: Proposer,
    pub reader: ReadBatcher,
}

impl Shard {
    /// Opens the replica's storage (loading its snapshot; openraft replays the
    /// committed log after it) and starts its Raft group and front tasks.
    pub async fn open(
        id: ShardId,
        config: &NodeConfig,
        storage: &NodeStorage,
        pool: Arc<PeerPool>,
    ) -> Result<Shard, Error> {
        let (log_store, sm_store) =
            storage.open_shard(id).map_err(|e| Error::Internal(format!("shard {id}: {e}")))?;
        let state = sm_store.state();
        let raft_config = config
            .raft_config(id)
            .map_err(|e| Error::InvalidArgument(format!("bad Raft timing configuration: {e}")))?;
        let network = ShardNetworkFactory { shard: id, pool };
        let raft = Raft::new(config.id, raft_config, network, log_store, sm_store)
            .await
            .map_err(|e| Error::Internal(format!("shard {id}: cannot start Raft: {e}")))?;
        let proposer = Proposer::spawn(id, raft.clone(), config.max_batch_ops);
        let reader = ReadBatcher::spawn(id, raft.clone());
        Ok(Shard { id, raft, state, proposer, reader })
    }

    /// The current leader as this replica knows it, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.server_metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    /// Whether this replica believes it leads (it may have been deposed without
    /// knowing yet: writes and linearizable reads confirm through Raft).
    pub fn is_leader(&self) -> bool {
        self.raft.server_metrics().borrow().state == ServerState::Leader
    }

    /// The error that sends a caller to the leader.
    pub fn not_leader(&self) -> Error {
        Error::NotLeader { shard: self.id, leader: self.leader() }
    }

    /// This replica as its node sees it, for status reports.
    pub fn status(&self) -> ringkv_proto::v1::ReplicaStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ringkv_proto::v1::ReplicaStatus {
            shard: self.id,
            node_id: m.id,
            role: role.to_string(),
            term: m.current_term,
            last_applied: m.last_applied.map_or(0, |id| id.index),
            last_log: m.last_log_index.unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
        }
    }

    /// Voters of the current membership.
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft.server_metrics().borrow().membership_config.voter_ids().collect()
    }
}
