//! One hosted replica: its Raft group, the shared view of its in-memory state, and
//! the tasks in front of Raft (proposer, read batcher).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::ServerState;
use openraft::storage::RaftLogStorage;
use ringkv_core::ShardId;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::events::ShardEvents;
use crate::proposer::Proposer;
use crate::raft_types::StorageError;
use crate::raft_types::{NodeId, Raft};
use crate::reader::{ReadBatcher, ReadFence};
use crate::store::{LogStore, NodeStorage, ShardState};
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
    /// True while a leader transfer holds this replica's proposals and reads.
    pub hold: tokio::sync::watch::Sender<bool>,
    /// Who may switch elections on: see [`ElectGate`].
    pub elect: Arc<ElectGate>,
    /// What each applied entry changed (for `Watch`).
    pub events: Arc<ShardEvents>,
    /// The last version recorded in `events`; closed once the state machine
    /// is gone (the replica stopped).
    pub progress: tokio::sync::watch::Receiver<u64>,
}

/// The one owner of a replica's "may campaign" switch, which two things turn
/// off: the hold-back after a restart, and a leader-transfer hold. Elections
/// are on only when neither holds them, whichever ends first.
pub struct ElectGate {
    raft: Raft,
    /// Still within the hold-back after a restart.
    restarting: AtomicBool,
    /// Which leader-transfer hold is in force (0: none); see `leader_transfer`.
    pub hold_generation: AtomicU64,
}

impl ElectGate {
    fn new(raft: Raft) -> ElectGate {
        ElectGate { raft, restarting: AtomicBool::new(false), hold_generation: AtomicU64::new(0) }
    }

    /// Recomputes the switch from both holds.
    pub fn refresh(&self) {
        let allowed =
            !self.restarting.load(Ordering::SeqCst) && self.hold_generation.load(Ordering::SeqCst) == 0;
        self.raft.runtime_config().elect(allowed);
    }

    /// Starts the restart hold-back, ending after `delay` (see `hold_back_campaign`).
    fn hold_back(self: &Arc<Self>, delay: std::time::Duration) {
        self.restarting.store(true, Ordering::SeqCst);
        self.refresh();
        let gate = self.clone();
        // A timer by design: the hold-back is a span of time (see
        // `hold_back_campaign`).
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            gate.restarting.store(false, Ordering::SeqCst);
            gate.refresh();
        });
    }
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
        let (mut log_store, sm_store) =
            storage.open_shard(id).map_err(|e| Error::Internal(format!("shard {id}: {e}")))?;
        let fence = restored_leadership(config.id, &mut log_store)
            .await
            .map_err(|e| Error::Internal(format!("shard {id}: reading the vote and log: {e}")))?;
        let state = sm_store.state();
        let events = sm_store.events();
        events.set_max_events(config.watch_retention_events);
        let progress = sm_store.progress();
        let raft_config = config
            .raft_config(id)
            .map_err(|e| Error::InvalidArgument(format!("bad Raft timing configuration: {e}")))?;
        let network = ShardNetworkFactory { shard: id, pool };
        let raft = Raft::new(config.id, raft_config, network, log_store, sm_store)
            .await
            .map_err(|e| Error::Internal(format!("shard {id}: cannot start Raft: {e}")))?;
        let elect = Arc::new(ElectGate::new(raft.clone()));
        if raft.metrics().borrow().current_term > 0 {
            hold_back_campaign(&elect, config);
        }
        let (hold, held) = tokio::sync::watch::channel(false);
        let proposer = Proposer::spawn(id, raft.clone(), config.max_batch_ops, held.clone());
        let reader = ReadBatcher::spawn(id, raft.clone(), fence, held);
        Ok(Shard { id, raft, state, proposer, reader, hold, elect, events, progress })
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
            approx_bytes: self.approx_bytes(),
            keys: self.state.read().expect("shard state lock poisoned").kv.len() as u64,
        }
    }

    /// Approximate size of the replica's state machine.
    pub fn approx_bytes(&self) -> u64 {
        self.state.read().expect("shard state lock poisoned").kv.approx_bytes()
    }

    /// Voters of the current membership.
    pub fn voters(&self) -> Vec<NodeId> {
        self.raft.server_metrics().borrow().membership_config.voter_ids().collect()
    }
}

/// The read fence of a replica that restarts as its shard's leader.
///
/// openraft 0.9 restores a replica whose persisted vote is its own committed
/// leadership as leader at once, in the same term. Such a leader's read index
/// (`max(committed, first entry of its term)`) can be behind entries it had
/// already acknowledged, because the commit index it persisted lags by a
/// round: a linearizable read served there would miss acknowledged writes. Every
/// acknowledged entry is in its log, so until it leaves that term its reads must
/// also wait until its last log entry at restart is applied.
async fn restored_leadership(
    node: NodeId,
    log_store: &mut LogStore,
) -> Result<Option<ReadFence>, StorageError> {
    let Some(vote) = log_store.read_vote().await? else { return Ok(None) };
    if !vote.is_committed() || vote.leader_id().voted_for() != Some(node) {
        return Ok(None);
    }
    let last_log = log_store.get_log_state().await?.last_log_id;
    Ok(last_log.map(|last| ReadFence { term: vote.leader_id().get_term(), index: last.index }))
}

/// Keeps a restarted replica from campaigning until a live leader has had the
/// time to reach it.
///
/// openraft 0.9 forgets when it last heard from a leader across a restart, so a
/// restarted follower starts an election on its first tick. The others refuse it
/// (their leader lease holds), but it has bumped its term, and the leader steps
/// down the moment this replica answers its next AppendEntries with that higher
/// term: every restart would cost each of its shards a needless election (about
/// half a second without a leader). Waiting one leader lease plus the longest
/// election timeout, as a follower that just heard from its leader would, lets a
/// live leader's heartbeat arrive first; if none does, it campaigns as usual.
fn hold_back_campaign(elect: &Arc<ElectGate>, config: &NodeConfig) {
    elect.hold_back(std::time::Duration::from_millis(2 * config.election_timeout_max_ms));
}
