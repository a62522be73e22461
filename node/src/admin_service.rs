//! The `Admin` gRPC service of a node: cluster creation and status for operators,
//! plus the node-to-node steps cluster creation is made of (create a replica,
//! initialize a shard's group, install the cluster map on the meta shard).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use ringkv_core::rebalance::{MoveLimits, Plan};
use ringkv_core::{ClusterMap, META_SHARD, NodeId};
use ringkv_proto::v1::admin_server::Admin;
use ringkv_proto::v1::{
    AddNodeRequest, AddNodeResponse, BackupShardChunk, BackupShardRequest, BalanceLeadersRequest,
    BalanceLeadersResponse, ChangeMembershipRequest, ChangeMembershipResponse, ClusterStatusRequest,
    ClusterStatusResponse, ControlRebalanceRequest, CreateReplicaRequest, CreateReplicaResponse,
    DrainNodeRequest, InitClusterRequest, InitClusterResponse, InitializeShardRequest,
    InitializeShardResponse, InjectFaultRequest, InjectFaultResponse, LeaderTransferStepRequest,
    LeaderTransferStepResponse, NodeAddress, NodeStatusRequest, NodeStatusResponse, PlanRebalanceRequest,
    PlanRebalanceResponse, PutClusterMapRequest, PutClusterMapResponse, RebalanceStatusRequest,
    RebalanceStatusResponse, RemoveNodeRequest, RemoveNodeResponse, RemoveReplicaRequest,
    RemoveReplicaResponse, ReplicaChecksumRequest, ReplicaChecksumResponse, ReplicaStatus,
    RestoreShardRequest, RestoreShardResponse, ShardStatus, StartRebalanceRequest, TransferLeaderRequest,
    TransferLeaderResponse,
};
use tonic::{Request, Response, Status};

use crate::backup;
use crate::bootstrap::{self, admin_client};
use crate::cluster_admin;
use crate::codec;
use crate::command::{Op, OpResult};
use crate::driver;
use crate::error::Error;
use crate::leader_transfer;
use crate::node::Node;
use crate::shard::Shard;

/// How long `ClusterStatus` waits for each node's view of who leads what.
const STATUS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `TransferLeader` looks for the shard's current leader.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest long poll a `ClusterStatus` may ask for.
const MAX_STATUS_WAIT: Duration = Duration::from_secs(60);

/// Waits until the meta shard's map epoch is above `epoch`, or `wait` passes.
/// Wakes on every change of the meta replica's metrics (each apply), so a new map
/// is seen as soon as it is applied here.
async fn wait_for_epoch_above(meta: &Shard, epoch: u64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut metrics = meta.raft.metrics();
    loop {
        let current = meta.state.read().expect("shard state lock poisoned").kv.cluster_map().map(|m| m.epoch);
        if current.is_some_and(|e| e > epoch) {
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// The cluster's status: the map, plus every node's report of its replicas
/// (nodes that do not answer within a second are left out).
async fn status_of(map: &ClusterMap, plan: Option<&Plan>) -> ClusterStatusResponse {
    let probes = map.nodes.values().map(|info| async move {
        let mut client = admin_client(&info.addr).ok()?;
        let mut req = Request::new(NodeStatusRequest {});
        req.set_timeout(STATUS_PROBE_TIMEOUT);
        let status = client.node_status(req).await.ok()?.into_inner();
        (status.id == info.id).then_some(status)
    });
    let mut replicas: BTreeMap<u32, Vec<ReplicaStatus>> = BTreeMap::new();
    for status in futures::future::join_all(probes).await.into_iter().flatten() {
        for replica in status.replica_status {
            replicas.entry(replica.shard).or_default().push(replica);
        }
    }
    let shard_status = map
        .shards
        .iter()
        .map(|(&shard, members)| {
            let reports = replicas.remove(&shard).unwrap_or_default();
            let leader = reports.iter().filter(|r| r.role == "leader").max_by_key(|r| r.term);
            let applied = leader.map_or(0, |l| l.last_applied);
            ShardStatus {
                shard,
                replicas: members.clone(),
                leader_id: leader.map_or(0, |l| l.node_id),
                term: leader.map_or(0, |l| l.term),
                applied_index: applied,
                max_lag: reports.iter().map(|r| applied.saturating_sub(r.last_applied)).max().unwrap_or(0),
                replica_status: reports,
            }
        })
        .collect();
    ClusterStatusResponse {
        cluster_id: map.cluster_id.clone(),
        epoch: map.epoch,
        shards: map.shard_count,
        replicas: map.replication_factor,
        nodes: map
            .nodes
            .values()
            .map(|n| NodeAddress { id: n.id, addr: n.addr.clone(), state: n.state.to_string() })
            .collect(),
        shard_status,
        rebalance: Some(cluster_admin::status_response(plan)),
    }
}

/// The Admin gRPC service of a node.
pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }

    fn check_target(&self, target: NodeId) -> Result<(), Error> {
        if target != self.node.id() {
            return Err(Error::FailedPrecondition(format!(
                "request meant for node {target} reached node {} at {}",
                self.node.id(),
                self.node.addr()
            )));
        }
        Ok(())
    }

    /// The meta shard's replica here, if this node leads it.
    fn meta_leader(&self) -> Result<Arc<Shard>, Error> {
        let meta = self.node.shard(META_SHARD).ok_or(Error::WrongShard { shard: META_SHARD, epoch: 0 })?;
        if !meta.is_leader() {
            return Err(meta.not_leader());
        }
        Ok(meta)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupShardStream = crate::watcher::EventStream<BackupShardChunk>;

    async fn backup_shard(
        &self,
        request: Request<BackupShardRequest>,
    ) -> Result<Response<Self::BackupShardStream>, Status> {
        Ok(Response::new(backup::backup_stream(&self.node, request.into_inner().shard).await?))
    }

    async fn restore_shard(
        &self,
        request: Request<RestoreShardRequest>,
    ) -> Result<Response<RestoreShardResponse>, Status> {
        Ok(Response::new(backup::restore_batch(&self.node, request.into_inner()).await?))
    }

    async fn init_cluster(
        &self,
        request: Request<InitClusterRequest>,
    ) -> Result<Response<InitClusterResponse>, Status> {
        Ok(Response::new(bootstrap::init_cluster(&self.node, request.into_inner()).await?))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let req = request.into_inner();
        let meta = self.meta_leader()?;
        meta.reader.confirm().await?;
        if req.wait_ms > 0 {
            let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_STATUS_WAIT);
            wait_for_epoch_above(&meta, req.wait_for_epoch_above, wait).await;
        }
        let (map, plan) = cluster_admin::read_meta(&meta)?;
        Ok(Response::new(status_of(&map, plan.as_ref()).await))
    }

    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        let shards = self.node.shards();
        Ok(Response::new(NodeStatusResponse {
            id: self.node.id(),
            addr: self.node.addr().to_string(),
            cluster_id: self.node.cluster().map(|c| c.cluster_id).unwrap_or_default(),
            replicas: shards.iter().map(|s| s.id).collect(),
            leading: shards.iter().filter(|s| s.is_leader()).map(|s| s.id).collect(),
            replica_status: shards.iter().map(|s| s.status()).collect(),
            open_watches: self.node.open_streams.watches.load(std::sync::atomic::Ordering::Relaxed),
            open_subscriptions: self
                .node
                .open_streams
                .subscriptions
                .load(std::sync::atomic::Ordering::Relaxed),
        }))
    }

    async fn create_replica(
        &self,
        request: Request<CreateReplicaRequest>,
    ) -> Result<Response<CreateReplicaResponse>, Status> {
        let req = request.into_inner();
        self.check_target(req.target_node)?;
        self.node.create_replica(&req.cluster_id, req.shard_count, req.shard).await?;
        Ok(Response::new(CreateReplicaResponse {}))
    }

    async fn initialize_shard(
        &self,
        request: Request<InitializeShardRequest>,
    ) -> Result<Response<InitializeShardResponse>, Status> {
        let req = request.into_inner();
        self.check_target(req.target_node)?;
        let shard = self.node.shard(req.shard).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "node {} hosts no replica of shard {}",
                self.node.id(),
                req.shard
            ))
        })?;
        if req.members.is_empty() || req.members.iter().any(|m| m.id == 0 || m.addr.is_empty()) {
            return Err(Error::InvalidArgument(
                "members must be non-empty, with ids > 0 and addresses".into(),
            )
            .into());
        }
        let members: BTreeMap<NodeId, BasicNode> =
            req.members.into_iter().map(|m| (m.id, BasicNode { addr: m.addr })).collect();
        match shard.raft.initialize(members).await {
            Ok(()) => Ok(Response::new(InitializeShardResponse {})),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(Error::AlreadyExists(format!("shard {} is already initialized: {e}", req.shard)).into())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(Error::InvalidArgument(format!("shard {}: {e}", req.shard)).into())
            }
            Err(RaftError::Fatal(e)) => Err(Error::Unavailable(format!("shard {}: {e}", req.shard)).into()),
        }
    }

    async fn replica_checksum(
        &self,
        request: Request<ReplicaChecksumRequest>,
    ) -> Result<Response<ReplicaChecksumResponse>, Status> {
        let shard_id = request.into_inner().shard;
        let shard = self.node.shard(shard_id).ok_or(Error::WrongShard { shard: shard_id, epoch: 0 })?;
        // One read lock: the encoding and the applied index describe the same state.
        let (applied_index, encoded, keys) = {
            let state = shard.state.read().expect("shard state lock poisoned");
            (state.last_applied.map_or(0, |id| id.index), state.kv.encode_snapshot(), state.kv.len())
        };
        Ok(Response::new(ReplicaChecksumResponse {
            shard: shard_id,
            node_id: self.node.id(),
            applied_index,
            checksum: crc32fast::hash(&encoded),
            keys: keys as u64,
        }))
    }

    async fn inject_fault(
        &self,
        request: Request<InjectFaultRequest>,
    ) -> Result<Response<InjectFaultResponse>, Status> {
        if !self.node.config.enable_test_faults {
            return Err(Status::permission_denied(
                "fault injection is test-only: start the node with --enable-test-faults",
            ));
        }
        let request = request.into_inner();
        let peers: std::collections::HashSet<NodeId> = request.isolate_from.into_iter().collect();
        tracing::warn!(node = self.node.id(), ?peers, lose = request.lose_write_answers, "test faults set");
        self.node.peers().isolate_from(peers);
        self.node.lose_write_answers(request.lose_write_answers);
        Ok(Response::new(InjectFaultResponse {}))
    }

    async fn put_cluster_map(
        &self,
        request: Request<PutClusterMapRequest>,
    ) -> Result<Response<PutClusterMapResponse>, Status> {
        let req = request.into_inner();
        let map: ClusterMap = codec::decode(&req.map)
            .map_err(|e| Error::InvalidArgument(format!("undecodable cluster map: {e}")))?;
        let meta = self.meta_leader()?;
        match meta.proposer.propose(Op::SetClusterMap { expected_epoch: req.expected_epoch, map }).await? {
            OpResult::SetClusterMap { succeeded, epoch } => {
                Ok(Response::new(PutClusterMapResponse { succeeded, epoch }))
            }
            other => Err(Error::Internal(format!("unexpected result {other:?}")).into()),
        }
    }

    async fn add_node(&self, request: Request<AddNodeRequest>) -> Result<Response<AddNodeResponse>, Status> {
        let req = request.into_inner();
        let meta = self.meta_leader()?;
        Ok(Response::new(cluster_admin::add_node(&meta, req.id, &req.addr).await?))
    }

    async fn plan_rebalance(
        &self,
        _: Request<PlanRebalanceRequest>,
    ) -> Result<Response<PlanRebalanceResponse>, Status> {
        let meta = self.meta_leader()?;
        let (map, plan) = cluster_admin::meta_state(&meta).await?;
        let status = status_of(&map, plan.as_ref()).await;
        Ok(Response::new(cluster_admin::plan_response(&map, &status.shard_status)?))
    }

    async fn start_rebalance(
        &self,
        request: Request<StartRebalanceRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let meta = self.meta_leader()?;
        let limits = limits(req.max_in_flight, req.max_per_node);
        Ok(Response::new(cluster_admin::start_rebalance(&meta, req.expected_epoch, limits).await?))
    }

    async fn rebalance_status(
        &self,
        _: Request<RebalanceStatusRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let meta = self.meta_leader()?;
        let (_, plan) = cluster_admin::meta_state(&meta).await?;
        Ok(Response::new(cluster_admin::status_response(plan.as_ref())))
    }

    async fn control_rebalance(
        &self,
        request: Request<ControlRebalanceRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let meta = self.meta_leader()?;
        Ok(Response::new(cluster_admin::control_rebalance(&meta, &request.into_inner().action).await?))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let meta = self.meta_leader()?;
        let req = request.into_inner();
        let limits = limits(req.max_in_flight, req.max_per_node);
        let status = cluster_admin::drain_node(&meta, req.node, limits).await?;
        // Leaderships leave first (the moves would hand them over one shard at a
        // time, as each starts).
        let (map, _) = cluster_admin::meta_state(&meta).await?;
        driver::move_leaderships_off(&self.node, &map, req.node).await;
        Ok(Response::new(status))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let meta = self.meta_leader()?;
        let epoch = cluster_admin::remove_node(&meta, request.into_inner().node).await?;
        Ok(Response::new(RemoveNodeResponse { epoch }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let meta = self.meta_leader()?;
        let (map, _) = cluster_admin::meta_state(&meta).await?;
        if !map.shards.contains_key(&req.shard) {
            return Err(Error::NotFound(format!("shard {} does not exist", req.shard)).into());
        }
        let current = driver::on_leader(&map, req.shard, driver::query(req.shard), TRANSFER_TIMEOUT).await?;
        leader_transfer::transfer(&map, req.shard, current.leader_id, req.node, driver::lease(&self.node))
            .await?;
        Ok(Response::new(TransferLeaderResponse { from: current.leader_id, to: req.node }))
    }

    async fn balance_leaders(
        &self,
        _: Request<BalanceLeadersRequest>,
    ) -> Result<Response<BalanceLeadersResponse>, Status> {
        let meta = self.meta_leader()?;
        let (map, _) = cluster_admin::meta_state(&meta).await?;
        let leaders = driver::current_leaders(&map).await;
        let transfers = driver::balance_leaders(&self.node, &map, &leaders).await;
        let (shards, nodes) = transfers.into_iter().unzip();
        Ok(Response::new(BalanceLeadersResponse { shards, nodes }))
    }

    async fn change_membership(
        &self,
        request: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ChangeMembershipResponse>, Status> {
        let req = request.into_inner();
        let shard = self.node.shard(req.shard).ok_or(Error::WrongShard { shard: req.shard, epoch: 0 })?;
        if !shard.is_leader() {
            return Err(shard.not_leader().into());
        }
        Ok(Response::new(crate::membership::change(&shard, req).await?))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<RemoveReplicaResponse>, Status> {
        let req = request.into_inner();
        self.check_target(req.target_node)?;
        self.node.remove_replica(req.shard).await?;
        Ok(Response::new(RemoveReplicaResponse {}))
    }

    async fn leader_transfer_step(
        &self,
        request: Request<LeaderTransferStepRequest>,
    ) -> Result<Response<LeaderTransferStepResponse>, Status> {
        let req = request.into_inner();
        self.check_target(req.target_node)?;
        let shard = self.node.shard(req.shard).ok_or(Error::WrongShard { shard: req.shard, epoch: 0 })?;
        let step = req.step();
        Ok(Response::new(leader_transfer::step(&shard, step, req.hold_ms).await?))
    }
}

/// Move limits from a request (0 = default).
fn limits(max_in_flight: u32, max_per_node: u32) -> MoveLimits {
    let default = MoveLimits::default();
    MoveLimits {
        max_in_flight: if max_in_flight == 0 { default.max_in_flight } else { max_in_flight },
        max_per_node: if max_per_node == 0 { default.max_per_node } else { max_per_node },
    }
}
