//! The server side of node-to-node Raft traffic: one gRPC service for every shard
//! hosted here. Each request is checked before it reaches openraft — the target
//! node id must be ours, the encoding format known, the shard hosted, the payload
//! decodable — and any failure is a gRPC error, never a panic.
//!
//! Replies carry openraft's own `Result` (postcard), so remote Raft errors travel
//! as values and the sender's openraft handles them.

use std::io::Cursor;
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use ringkv_proto::v1::raft_server::Raft as RaftRpc;
use ringkv_proto::v1::{RaftReply, RaftRequest, SnapshotChunk};
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::node::Node;
use crate::raft_types::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::shard::Shard;

/// The Raft gRPC service of a node.
pub struct RaftService {
    node: Arc<Node>,
}

impl RaftService {
    pub fn new(node: Arc<Node>) -> Self {
        RaftService { node }
    }

    /// Checks the envelope and finds the addressed replica.
    fn route(&self, shard: u32, from: NodeId, target: NodeId, format: u32) -> Result<Arc<Shard>, Status> {
        if target != self.node.id() {
            return Err(Status::failed_precondition(format!(
                "raft message for node {target} reached node {} (from node {from})",
                self.node.id()
            )));
        }
        if self.node.peers().is_isolated_from(from) {
            return Err(Status::unavailable(format!(
                "node {} is partitioned from node {from} (test fault)",
                self.node.id()
            )));
        }
        if format != codec::FORMAT {
            return Err(Status::invalid_argument(format!(
                "raft payload format {format} is not supported (this node speaks {})",
                codec::FORMAT
            )));
        }
        self.node.shard(shard).ok_or_else(|| {
            Status::not_found(format!("node {} hosts no replica of shard {shard}", self.node.id()))
        })
    }
}

/// The sender named in the envelope must be the node the Raft message speaks for
/// (the leader of an AppendEntries, the candidate of a Vote).
fn check_sender(from: NodeId, vote: &Vote) -> Result<(), Status> {
    match vote.leader_id().voted_for() {
        Some(node) if node == from => Ok(()),
        other => Err(Status::invalid_argument(format!(
            "raft message from node {from} carries the vote of node {other:?}"
        ))),
    }
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = codec::encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(RaftReply { payload: payload.into() }))
}

fn undecodable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable {what}: {e}"))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let shard = self.route(req.shard, req.from_node, req.target_node, req.format)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            codec::decode(&req.payload).map_err(|e| undecodable("AppendEntries payload", e))?;
        check_sender(req.from_node, &rpc.vote)?;
        reply(&shard.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let shard = self.route(req.shard, req.from_node, req.target_node, req.format)?;
        let rpc: VoteRequest<NodeId> =
            codec::decode(&req.payload).map_err(|e| undecodable("Vote payload", e))?;
        check_sender(req.from_node, &rpc.vote)?;
        reply(&shard.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let shard = self.route(first.shard, first.from_node, first.target_node, first.format)?;
        let vote: Vote = codec::decode(&first.vote).map_err(|e| undecodable("snapshot vote", e))?;
        check_sender(first.from_node, &vote)?;
        let meta: SnapshotMeta = codec::decode(&first.meta).map_err(|e| undecodable("snapshot meta", e))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if crc32fast::hash(&chunk.data) != chunk.crc32 {
                return Err(Status::data_loss(format!(
                    "snapshot chunk for shard {} failed its checksum at offset {}",
                    first.shard,
                    data.len()
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot { meta, snapshot: Box::new(Cursor::new(data)) };
        reply(&shard.raft.install_full_snapshot(vote, snapshot).await)
    }
}
