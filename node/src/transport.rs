//! The client side of node-to-node Raft traffic.
//!
//! Every shard's Raft group on a node shares one [`PeerPool`]: one lazily
//! connecting HTTP/2 channel per peer node, cloned into each group's network
//! handles, and on it one `Pipe` — a long-lived stream that carries the
//! AppendEntries and Vote messages of every shard (see `ringkv_client::pipe`
//! for why).
//! Messages larger than [`PIPE_MAX_PAYLOAD_BYTES`] (catch-up batches, large
//! values) take a unary call of their own instead, so they never hold up
//! other shards' heartbeats on the shared stream; snapshots always stream in
//! their own call. openraft calls `new_client` on every vote round and every
//! `ensure_linearizable`, so creating a [`ShardNetwork`] must not dial or
//! allocate much: it clones a cached tonic client.
//!
//! Every request names its shard, the sending node and the target node; the
//! receiver checks the target so that an address reused by another node can never
//! deliver one group's messages to the wrong replica.
//!
//! Error mapping decides openraft's retry behaviour: an unreachable peer, or a peer
//! that does not (yet) host the shard, is `Unreachable` (openraft backs off); other
//! failures are `Network` (retried at once).
//!
//! ## Caveats / not done yet
//! - Snapshots share the peer connection with heartbeats. Large snapshots could
//!   delay heartbeats; a second channel per peer for snapshots is the fix if that
//!   shows up.
//! - No TLS or peer authentication yet.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use ringkv_client::pipe::Pipe;
use ringkv_core::ShardId;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{RaftFrame, RaftFrameKind, RaftRequest, SnapshotChunk};
use ringkv_security::{Conn, Credentials};

use crate::codec;
use crate::raft_types::{NodeId, Snapshot, TypeConfig, Vote};

/// Largest gRPC message on the Raft port, both directions. AppendEntries batches
/// are capped well below this by the log reader.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// Snapshot data per streamed chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Encoded Raft messages up to this size go through the peer's pipe; larger
/// ones take a unary call, so one shard's bulk catch-up never queues every
/// other shard's heartbeats behind it on the shared stream.
pub const PIPE_MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// What the pool keeps per peer node.
#[derive(Debug)]
struct Peer {
    addr: String,
    client: RaftClient<Conn>,
    /// Opened on first use, replaced once closed.
    pipe: Option<Arc<Pipe<RaftFrame>>>,
}

/// One cached channel per peer node, shared by every shard's Raft group.
#[derive(Debug)]
pub struct PeerPool {
    self_id: NodeId,
    connect_timeout: Duration,
    /// TLS and the peer token of every connection to a peer.
    credentials: Credentials,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Test-only fault injection: peers cut off from this node's Raft traffic in
    /// both directions (empty in production).
    isolated_from: RwLock<HashSet<NodeId>>,
}

impl PeerPool {
    pub fn new(self_id: NodeId, credentials: Credentials) -> Self {
        PeerPool {
            self_id,
            connect_timeout: Duration::from_secs(1),
            credentials,
            peers: Mutex::new(HashMap::new()),
            isolated_from: RwLock::new(HashSet::new()),
        }
    }

    /// Cuts Raft traffic to and from `peers` (replacing any earlier cut); an
    /// empty set heals. Test-only: see `--enable-test-faults`.
    pub fn isolate_from(&self, peers: HashSet<NodeId>) {
        *self.isolated_from.write().expect("isolation lock poisoned") = peers;
    }

    /// Whether Raft traffic with `peer` is cut.
    pub fn is_isolated_from(&self, peer: NodeId) -> bool {
        self.isolated_from.read().expect("isolation lock poisoned").contains(&peer)
    }

    /// The cached client for `target`, rebuilt when its address changed. Never dials:
    /// the channel connects on first use and reconnects by itself.
    fn client(&self, target: NodeId, addr: &str) -> Result<RaftClient<Conn>, tonic::transport::Error> {
        let mut peers = self.peers.lock().expect("peer pool lock poisoned");
        if let Some(peer) = peers.get(&target)
            && peer.addr == addr
        {
            return Ok(peer.client.clone());
        }
        let endpoint = self
            .credentials
            .endpoint(addr)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = self.credentials.connect_lazy(endpoint);
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        peers.insert(target, Peer { addr: addr.to_string(), client: client.clone(), pipe: None });
        Ok(client)
    }

    /// The open pipe to `target`, opening one when there is none or the last
    /// one closed. Never dials itself: the pipe's task does.
    fn pipe(&self, target: NodeId, addr: &str) -> Result<Arc<Pipe<RaftFrame>>, tonic::transport::Error> {
        let client = self.client(target, addr)?;
        let mut peers = self.peers.lock().expect("peer pool lock poisoned");
        let peer = peers.get_mut(&target).expect("client() just cached the peer");
        match &peer.pipe {
            Some(pipe) if !pipe.is_closed() => Ok(pipe.clone()),
            _ => {
                let mut client = client;
                let name = format!("the raft pipe to node {target}");
                let pipe = Pipe::open(name, move |outgoing| async move { client.pipe(outgoing).await });
                peer.pipe = Some(pipe.clone());
                Ok(pipe)
            }
        }
    }
}

/// A shard's [`RaftNetworkFactory`]: the shard id plus the node's shared pool.
#[derive(Debug, Clone)]
pub struct ShardNetworkFactory {
    pub shard: ShardId,
    pub pool: Arc<PeerPool>,
}

impl RaftNetworkFactory<TypeConfig> for ShardNetworkFactory {
    type Network = ShardNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> ShardNetwork {
        let client = self.pool.client(target, &node.addr).map_err(|e| e.to_string());
        ShardNetwork {
            shard: self.shard,
            from: self.pool.self_id,
            target,
            addr: node.addr.clone(),
            client,
            pipe: None,
            pool: self.pool.clone(),
        }
    }
}

/// One group's connection to one peer.
#[derive(Debug)]
pub struct ShardNetwork {
    shard: ShardId,
    from: NodeId,
    target: NodeId,
    addr: String,
    /// `Err` when the peer's address is not a valid URI; every call then reports
    /// the peer unreachable.
    client: Result<RaftClient<Conn>, String>,
    /// The pool's pipe to the peer, cached until it closes.
    pipe: Option<Arc<Pipe<RaftFrame>>>,
    pool: Arc<PeerPool>,
}

impl ShardNetwork {
    /// The peer's client, unless the peer is unreachable (a bad address, or cut
    /// off by test fault injection).
    fn client(&self) -> Result<RaftClient<Conn>, Unreachable> {
        self.check_not_isolated()?;
        self.client.clone().map_err(|e| Unreachable::new(&std::io::Error::other(e)))
    }

    /// Test fault injection: the peer is unreachable while cut off.
    fn check_not_isolated(&self) -> Result<(), Unreachable> {
        if self.pool.is_isolated_from(self.target) {
            return Err(Unreachable::new(&std::io::Error::other(format!(
                "node {} is partitioned from node {} (test fault)",
                self.from, self.target
            ))));
        }
        Ok(())
    }

    /// The pipe to the peer, reopened through the pool once it has closed.
    fn pipe(&mut self) -> Result<Arc<Pipe<RaftFrame>>, Unreachable> {
        if let Some(pipe) = &self.pipe
            && !pipe.is_closed()
        {
            return Ok(pipe.clone());
        }
        let pipe = self.pool.pipe(self.target, &self.addr).map_err(|e| Unreachable::new(&e))?;
        self.pipe = Some(pipe.clone());
        Ok(pipe)
    }

    fn envelope(&self, payload: Vec<u8>) -> RaftRequest {
        RaftRequest {
            shard: self.shard,
            from_node: self.from,
            target_node: self.target,
            format: codec::FORMAT,
            payload: payload.into(),
        }
    }

    /// Sends one Raft message — on the pipe when small, else as a unary call —
    /// and decodes the remote result.
    async fn call<Req, Resp>(
        &mut self,
        rpc: &Req,
        option: &RPCOption,
        kind: RaftFrameKind,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let payload = codec::encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let timeout = option.hard_ttl();
        let reply = if payload.len() <= PIPE_MAX_PAYLOAD_BYTES {
            self.check_not_isolated().map_err(RPCError::Unreachable)?;
            let pipe = self.pipe().map_err(RPCError::Unreachable)?;
            let request = self.envelope(payload);
            pipe.call(|id| RaftFrame { id, kind: kind as i32, request: Some(request) }, timeout).await
        } else {
            let mut client = self.client().map_err(RPCError::Unreachable)?;
            let mut req = tonic::Request::new(self.envelope(payload));
            req.set_timeout(timeout);
            let reply = match kind {
                RaftFrameKind::Vote => client.vote(req).await,
                _ => client.append_entries(req).await,
            };
            reply.map(|r| r.into_inner().payload)
        };
        let reply = reply.map_err(status_to_rpc_error)?;
        let result: Result<Resp, RaftError<NodeId>> =
            codec::decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Unreachable peers and peers without the shard make openraft back off; anything
/// else is retried at once.
fn status_to_rpc_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl RaftNetwork<TypeConfig> for ShardNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, RaftFrameKind::AppendEntries).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, RaftFrameKind::Vote).await
    }

    /// Never used: 0.9 replication sends snapshots through `full_snapshot`.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(&std::io::Error::other(
            "chunked install_snapshot is not used; snapshots are streamed by full_snapshot",
        ))))
    }

    /// Streams the whole snapshot as one client-streaming call. No gRPC deadline:
    /// openraft's `hard_ttl` here is meant per chunk, and `cancel` ends the transfer
    /// when replication to this peer closes.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let network =
            |e: &dyn std::error::Error| StreamingError::Network(NetworkError::new(&AnyErr(e.to_string())));
        let vote_bytes = codec::encode(&vote).map_err(|e| network(&e))?;
        let meta_bytes = codec::encode(&snapshot.meta).map_err(|e| network(&e))?;
        let data = bytes::Bytes::from(snapshot.snapshot.into_inner());
        let header = SnapshotChunk {
            shard: self.shard,
            from_node: self.from,
            target_node: self.target,
            format: codec::FORMAT,
            vote: vote_bytes.into(),
            meta: meta_bytes.into(),
            data: Default::default(),
            crc32: crc32fast::hash(&[]),
        };
        let mut chunks = vec![header];
        for offset in (0..data.len()).step_by(SNAPSHOT_CHUNK_BYTES) {
            let piece = data.slice(offset..(offset + SNAPSHOT_CHUNK_BYTES).min(data.len()));
            chunks.push(SnapshotChunk { crc32: crc32fast::hash(&piece), data: piece, ..Default::default() });
        }
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let reply = tokio::select! {
            reply = client.install_snapshot(tonic::Request::new(futures::stream::iter(chunks))) => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                    StreamingError::Unreachable(Unreachable::new(&status))
                }
                _ => StreamingError::Network(NetworkError::new(&status)),
            })?
            .into_inner();
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            codec::decode(&reply.payload).map_err(|e| network(&e))?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Back off briefly from an unreachable peer: short enough that a restarted
    /// node is picked up quickly, long enough not to spin.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// A plain error carrying a message, for openraft's error constructors.
#[derive(Debug)]
struct AnyErr(String);

impl std::fmt::Display for AnyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyErr {}
