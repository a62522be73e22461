//! The server side of node-to-node Raft traffic: one gRPC service for every shard
//! hosted here. Each request is checked before it reaches openraft — the target
//! node id must be ours, the encoding format known, the shard hosted, the payload
//! decodable — and any failure is a gRPC error, never a panic.
//!
//! Replies carry openraft's own `Result` (postcard), so remote Raft errors travel
//! as values and the sender's openraft handles them.
//!
//! Messages arrive two ways with the same checks and answers: as unary calls,
//! and as frames on a peer's `Pipe` stream (see `pipe.rs`). Each frame is
//! handled in its own task, so a shard waiting on its disk flush never holds up
//! another shard's frame; a frame's failure is a status in its reply, and only
//! the end of the connection ends the stream.
//!
//! ## Caveats
//! - Frames in flight on a pipe are not bounded here: peers are trusted (no
//!   peer authentication yet), and openraft keeps at most one AppendEntries per
//!   group and peer outstanding.

use std::io::Cursor;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use ringkv_proto::v1::raft_server::Raft as RaftRpc;
use ringkv_proto::v1::{RaftFrame, RaftFrameKind, RaftFrameReply, RaftReply, RaftRequest, SnapshotChunk};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::node::Node;
use crate::raft_types::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::shard::Shard;

/// The Raft gRPC service of a node.
pub struct RaftService {
    node: Arc<Node>,
    /// Becomes true when the server starts its graceful shutdown. Pipes are
    /// endless streams, so the server would wait for them forever: they end
    /// themselves when this turns true.
    stopping: watch::Receiver<bool>,
}

impl RaftService {
    pub fn new(node: Arc<Node>, stopping: watch::Receiver<bool>) -> Self {
        RaftService { node, stopping }
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

    async fn append(&self, req: RaftRequest) -> Result<RaftReply, Status> {
        let shard = self.route(req.shard, req.from_node, req.target_node, req.format)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            codec::decode(&req.payload).map_err(|e| undecodable("AppendEntries payload", e))?;
        check_sender(req.from_node, &rpc.vote)?;
        reply(&shard.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: RaftRequest) -> Result<RaftReply, Status> {
        let shard = self.route(req.shard, req.from_node, req.target_node, req.format)?;
        let rpc: VoteRequest<NodeId> =
            codec::decode(&req.payload).map_err(|e| undecodable("Vote payload", e))?;
        check_sender(req.from_node, &rpc.vote)?;
        reply(&shard.raft.vote(rpc).await)
    }

    /// One frame of a pipe: the same checks and answer as the unary call.
    async fn frame(&self, frame: RaftFrame) -> RaftFrameReply {
        let result = match (RaftFrameKind::try_from(frame.kind), frame.request) {
            (_, None) => Err(Status::invalid_argument("raft frame without a request")),
            (Ok(RaftFrameKind::AppendEntries), Some(req)) => self.append(req).await,
            (Ok(RaftFrameKind::Vote), Some(req)) => self.vote(req).await,
            (_, Some(_)) => Err(Status::invalid_argument(format!("unknown raft frame kind {}", frame.kind))),
        };
        match result {
            Ok(reply) => {
                RaftFrameReply { id: frame.id, code: 0, message: String::new(), payload: reply.payload }
            }
            Err(status) => RaftFrameReply {
                id: frame.id,
                code: status.code() as i32,
                message: status.message().to_string(),
                payload: Default::default(),
            },
        }
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

fn reply<T: serde::Serialize>(value: &T) -> Result<RaftReply, Status> {
    let payload = codec::encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(RaftReply { payload: payload.into() })
}

fn undecodable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable {what}: {e}"))
}

type FrameReplies = Pin<Box<dyn Stream<Item = Result<RaftFrameReply, Status>> + Send>>;

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.append(request.into_inner()).await.map(Response::new)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.vote(request.into_inner()).await.map(Response::new)
    }

    type PipeStream = FrameReplies;

    async fn pipe(&self, request: Request<Streaming<RaftFrame>>) -> Result<Response<FrameReplies>, Status> {
        let mut frames = request.into_inner();
        let (replies, outgoing) = mpsc::unbounded_channel::<Result<RaftFrameReply, Status>>();
        let service = Arc::new(RaftService { node: self.node.clone(), stopping: self.stopping.clone() });
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            // Ends when the sender closes its side, the connection fails, or
            // the server stops.
            loop {
                let frame = tokio::select! {
                    frame = frames.message() => match frame {
                        Ok(Some(frame)) => frame,
                        _ => break,
                    },
                    _ = stopping.wait_for(|stop| *stop) => break,
                };
                let (service, replies) = (service.clone(), replies.clone());
                tokio::spawn(async move {
                    // The stream may be gone (connection closed): nobody to answer.
                    let _ = replies.send(Ok(service.frame(frame).await));
                });
            }
        });
        // The replies, until the server stops (a dropped stop sender counts).
        let stopping = self.stopping.clone();
        let replies =
            futures::stream::unfold((outgoing, stopping), |(mut outgoing, mut stopping)| async move {
                let reply = tokio::select! {
                    biased;
                    _ = stopping.wait_for(|stop| *stop) => None,
                    reply = outgoing.recv() => reply,
                };
                reply.map(|reply| (reply, (outgoing, stopping)))
            });
        Ok(Response::new(Box::pin(replies)))
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
        reply(&shard.raft.install_full_snapshot(vote, snapshot).await).map(Response::new)
    }
}
