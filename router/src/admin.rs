//! The router's `Admin` service: operator calls go to the meta shard's leader
//! through the client library; node-to-node calls are refused, since they must
//! name the node they are meant for.

use ringkv_client::Client;
use ringkv_proto::v1::admin_server::Admin;
use ringkv_proto::v1::{
    AddNodeRequest, AddNodeResponse, BackupShardChunk, BackupShardRequest, BalanceLeadersRequest,
    BalanceLeadersResponse, ChangeMembershipRequest, ChangeMembershipResponse, ClusterStatusRequest,
    ClusterStatusResponse, ControlRebalanceRequest, CreateReplicaRequest, CreateReplicaResponse,
    DrainNodeRequest, InitClusterRequest, InitClusterResponse, InitializeShardRequest,
    InitializeShardResponse, InjectFaultRequest, InjectFaultResponse, LeaderTransferStepRequest,
    LeaderTransferStepResponse, NodeStatusRequest, NodeStatusResponse, PlanRebalanceRequest,
    PlanRebalanceResponse, PutClusterMapRequest, PutClusterMapResponse, RebalanceStatusRequest,
    RebalanceStatusResponse, RemoveNodeRequest, RemoveNodeResponse, RemoveReplicaRequest,
    RemoveReplicaResponse, ReplicaChecksumRequest, ReplicaChecksumResponse, RestoreShardRequest,
    RestoreShardResponse, StartRebalanceRequest, TransferLeaderRequest, TransferLeaderResponse,
};
use tonic::{Request, Response, Status};

use crate::error::to_status;

/// The router's Admin service.
pub struct AdminRouter {
    client: Client,
}

impl AdminRouter {
    pub fn new(client: Client) -> Self {
        AdminRouter { client }
    }
}

fn node_only(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is a node-to-node call; send it to a node, not a router"))
}

#[tonic::async_trait]
impl Admin for AdminRouter {
    type BackupShardStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<BackupShardChunk, Status>> + Send>>;

    async fn backup_shard(
        &self,
        _: Request<BackupShardRequest>,
    ) -> Result<Response<Self::BackupShardStream>, Status> {
        Err(node_only("BackupShard (`ringkv admin backup` talks to the nodes the cluster map lists)"))
    }

    async fn restore_shard(
        &self,
        _: Request<RestoreShardRequest>,
    ) -> Result<Response<RestoreShardResponse>, Status> {
        Err(node_only("RestoreShard (`ringkv admin restore` talks to the nodes it is given)"))
    }

    async fn init_cluster(
        &self,
        request: Request<InitClusterRequest>,
    ) -> Result<Response<InitClusterResponse>, Status> {
        let req = request.into_inner();
        let nodes = req.nodes.into_iter().map(|n| (n.id, n.addr)).collect();
        let response = self.client.init_cluster(nodes, req.shards, req.replicas).await.map_err(to_status)?;
        Ok(Response::new(response))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.client.cluster_status().await.map_err(to_status)?))
    }

    async fn node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        Err(node_only("NodeStatus"))
    }

    async fn create_replica(
        &self,
        _: Request<CreateReplicaRequest>,
    ) -> Result<Response<CreateReplicaResponse>, Status> {
        Err(node_only("CreateReplica"))
    }

    async fn initialize_shard(
        &self,
        _: Request<InitializeShardRequest>,
    ) -> Result<Response<InitializeShardResponse>, Status> {
        Err(node_only("InitializeShard"))
    }

    async fn put_cluster_map(
        &self,
        _: Request<PutClusterMapRequest>,
    ) -> Result<Response<PutClusterMapResponse>, Status> {
        Err(node_only("PutClusterMap"))
    }

    async fn replica_checksum(
        &self,
        _: Request<ReplicaChecksumRequest>,
    ) -> Result<Response<ReplicaChecksumResponse>, Status> {
        Err(node_only("ReplicaChecksum"))
    }

    async fn inject_fault(
        &self,
        _: Request<InjectFaultRequest>,
    ) -> Result<Response<InjectFaultResponse>, Status> {
        Err(node_only("InjectFault"))
    }

    async fn add_node(&self, request: Request<AddNodeRequest>) -> Result<Response<AddNodeResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.client.add_node(req.id, &req.addr).await.map_err(to_status)?))
    }

    async fn plan_rebalance(
        &self,
        _: Request<PlanRebalanceRequest>,
    ) -> Result<Response<PlanRebalanceResponse>, Status> {
        Ok(Response::new(self.client.plan_rebalance().await.map_err(to_status)?))
    }

    async fn start_rebalance(
        &self,
        request: Request<StartRebalanceRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let status = self.client.start_rebalance(req.expected_epoch, req.max_in_flight, req.max_per_node);
        Ok(Response::new(status.await.map_err(to_status)?))
    }

    async fn rebalance_status(
        &self,
        _: Request<RebalanceStatusRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        Ok(Response::new(self.client.rebalance_status().await.map_err(to_status)?))
    }

    async fn control_rebalance(
        &self,
        request: Request<ControlRebalanceRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let action = request.into_inner().action;
        Ok(Response::new(self.client.control_rebalance(&action).await.map_err(to_status)?))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let req = request.into_inner();
        let status = self.client.drain_node(req.node, req.max_in_flight, req.max_per_node);
        Ok(Response::new(status.await.map_err(to_status)?))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        Ok(Response::new(self.client.remove_node(request.into_inner().node).await.map_err(to_status)?))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(self.client.transfer_leader(req.shard, req.node).await.map_err(to_status)?))
    }

    async fn balance_leaders(
        &self,
        _: Request<BalanceLeadersRequest>,
    ) -> Result<Response<BalanceLeadersResponse>, Status> {
        Ok(Response::new(self.client.balance_leaders().await.map_err(to_status)?))
    }

    async fn change_membership(
        &self,
        _: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ChangeMembershipResponse>, Status> {
        Err(node_only("ChangeMembership"))
    }

    async fn remove_replica(
        &self,
        _: Request<RemoveReplicaRequest>,
    ) -> Result<Response<RemoveReplicaResponse>, Status> {
        Err(node_only("RemoveReplica"))
    }

    async fn leader_transfer_step(
        &self,
        _: Request<LeaderTransferStepRequest>,
    ) -> Result<Response<LeaderTransferStepResponse>, Status> {
        Err(node_only("LeaderTransferStep"))
    }
}
