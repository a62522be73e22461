//! The router's `Admin` service: operator calls go to the meta shard's leader
//! through the client library; node-to-node calls are refused, since they must
//! name the node they are meant for.

use ringkv_client::Client;
use ringkv_proto::v1::admin_server::Admin;
use ringkv_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, CreateReplicaRequest, CreateReplicaResponse,
    InitClusterRequest, InitClusterResponse, InitializeShardRequest, InitializeShardResponse,
    InjectFaultRequest, InjectFaultResponse, NodeStatusRequest, NodeStatusResponse, PutClusterMapRequest,
    PutClusterMapResponse, ReplicaChecksumRequest, ReplicaChecksumResponse,
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
}
