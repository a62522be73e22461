//! The public `KV` service as a node serves it: for the shards this node leads
//! (writes, linearizable reads) or hosts (stale reads).
//!
//! Each handler validates its input first (nothing invalid is ever proposed), finds
//! the key's shard, and then either proposes through the shard's proposer or reads
//! memory after the read batcher confirmed leadership. Relative TTLs become
//! absolute deadlines here, on the leader, before they enter the log.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::limits::check_key;
use ringkv_metrics::Requests;
use ringkv_proto::v1::kv_server::Kv;
use ringkv_proto::v1::{
    ChannelMessage, Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest,
    IncrementResponse, KvFrame, PublishRequest, PublishResponse, PutRequest, PutResponse, SubscribeRequest,
    SubscribeResponse, TouchRequest, TouchResponse, WatchEvent, WatchEventType, WatchRequest, WatchResponse,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::command::{IncrementError, Op, OpResult, UnixMs};
use crate::error::Error;
use crate::events::{Event, EventKind, last_message_seq, message_index};
use crate::node::Node;
use crate::request::{self, Write};
use crate::shard::Shard;
use crate::time::unix_now_ms;
use crate::watcher::{EventStream, Filter, Watcher, cursor_for};

/// The KV gRPC service of a node.
#[derive(Clone)]
pub struct KvService {
    node: Arc<Node>,
    /// Turns true when the graceful shutdown starts: KV pipes stop reading.
    stopping: watch::Receiver<bool>,
    /// Counts and times every call (piped ones too: the pipe calls these).
    requests: Requests,
}

impl KvService {
    pub fn new(node: Arc<Node>, stopping: watch::Receiver<bool>, requests: Requests) -> Self {
        KvService { node, stopping, requests }
    }

    /// The led replica of `key`'s shard, or the error that redirects the caller.
    fn leader_shard(&self, key: &[u8]) -> Result<Arc<Shard>, Error> {
        check_key(key)?;
        let shard = self.node.shard_for_key(key)?;
        if !shard.is_leader() {
            return Err(shard.not_leader());
        }
        Ok(shard)
    }

    /// Proposes a checked client write on its key's shard, which this node
    /// must lead: as `Op::Once` when it has a request id (a retry of an
    /// applied write then gets the first result), and loses the answer when
    /// the test fault says so.
    async fn propose_write(&self, write: Write) -> Result<OpResult, Status> {
        let shard = self.leader_shard(&write.key)?;
        let budget = self.node.config.memory_budget_bytes;
        if let Err(refused) = crate::memory::check(&write.op, self.node.data_bytes.get(), budget) {
            // A retry of a write that was applied gets its first answer, even
            // at the budget: refusing it would report an applied write as
            // failed. (Looked up only here, off the usual write path.)
            let applied_retry = !write.request_id.is_empty()
                && shard
                    .state
                    .read()
                    .expect("shard state lock poisoned")
                    .kv
                    .remembers_request(&write.request_id);
            if !applied_retry {
                return Err(refused.into());
            }
        }
        if budget > 0 {
            self.node.data_bytes.admit(&write.op);
        }
        let op = write.into_op(unix_now_ms(), self.node.config.request_id_retention_ms);
        let result = shard.proposer.propose(op).await?;
        if self.node.take_lost_write_answer() {
            tracing::warn!(shard = shard.id, "test fault: the answer of an applied write is lost");
            return Err(Status::unavailable("test fault: the answer of an applied write was lost"));
        }
        Ok(result)
    }
}

/// The live record of `key` in `shard`'s memory, as a `Get` answers it, and
/// its deadline.
fn read(shard: &Shard, key: &[u8]) -> (GetResponse, Option<UnixMs>) {
    let now = unix_now_ms();
    let state = shard.state.read().expect("shard state lock poisoned");
    match state.kv.get(key, now) {
        Some(record) => {
            let response = GetResponse {
                found: true,
                value: record.value.clone(),
                version: record.version,
                ttl_ms: remaining_ms(record.expires_at_ms, now),
            };
            (response, record.expires_at_ms)
        }
        None => (GetResponse::default(), None),
    }
}

/// Milliseconds left before `expires_at_ms` (at least 1 while live), 0 = no TTL.
fn remaining_ms(expires_at_ms: Option<UnixMs>, now_ms: UnixMs) -> u64 {
    expires_at_ms.map(|at| at.saturating_sub(now_ms).max(1)).unwrap_or(0)
}

fn unexpected(result: OpResult) -> Status {
    Error::Internal(format!("state machine answered with the wrong result kind: {result:?}")).into()
}

fn to_proto(event: Event) -> WatchEvent {
    let kind = match event.kind {
        EventKind::Put => WatchEventType::Put,
        EventKind::Delete => WatchEventType::Delete,
        EventKind::Expired => WatchEventType::Expired,
        EventKind::Message => WatchEventType::Unspecified, // never matched by a watch
    };
    WatchEvent { r#type: kind as i32, key: event.key, value: event.value, version: event.version }
}

#[tonic::async_trait]
impl Kv for KvService {
    type WatchStream = EventStream<WatchResponse>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.requests
            .observe("watch", async move {
                let req = request.into_inner();
                if !req.resume_token.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a node resumes a watch from start_version; resume tokens are a router's".into(),
                    )
                    .into());
                }
                let (shard, filter) = match (req.key.is_empty(), req.prefix.is_empty()) {
                    (false, true) => {
                        check_key(&req.key).map_err(Error::from)?;
                        (self.node.shard_for_key(&req.key)?, Filter::Key(req.key))
                    }
                    (true, false) if req.shard == 0 => {
                        return Err(Error::InvalidArgument(
                            "a node serves a prefix watch one shard at a time: name the shard, or watch \
                         through a router"
                                .into(),
                        )
                        .into());
                    }
                    (true, false) => {
                        let shard = self
                            .node
                            .shard(req.shard)
                            .ok_or(Error::WrongShard { shard: req.shard, epoch: 0 })?;
                        (shard, Filter::Prefix(req.prefix))
                    }
                    _ => {
                        return Err(Error::InvalidArgument(
                            "a watch names exactly one of key and prefix".into(),
                        )
                        .into());
                    }
                };
                if !shard.is_leader() {
                    return Err(shard.not_leader().into());
                }
                let cursor = cursor_for(&shard, req.start_version, &filter)?;
                let watcher =
                    Watcher::new(&shard, filter, cursor, self.stopping.clone(), &self.node.open_streams);
                Ok(Response::new(watcher.into_stream(|shard, events, version| WatchResponse {
                    shard,
                    events: events.into_iter().map(|(_, event)| to_proto(event)).collect(),
                    version,
                    resume_token: Bytes::new(),
                })))
            })
            .await
    }

    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        self.requests
            .observe("publish", async move {
                let write = request::publish(request.into_inner(), self.node.config.max_value_bytes)?;
                match self.propose_write(write).await? {
                    OpResult::Publish { seq } => Ok(Response::new(PublishResponse { seq })),
                    other => Err(unexpected(other)),
                }
            })
            .await
    }

    type SubscribeStream = EventStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.requests
            .observe("subscribe", async move {
                let req = request.into_inner();
                let shard = self.leader_shard(&req.channel)?;
                // A sequence number names an entry and a place in it: start after
                // the entry before, and skip the entry's earlier messages.
                let from = req.from_seq;
                let start_version = if from == 0 { 0 } else { message_index(from).max(1) };
                let filter = Filter::Channel(req.channel);
                let cursor = cursor_for(&shard, start_version, &filter)?;
                let watcher =
                    Watcher::new(&shard, filter, cursor, self.stopping.clone(), &self.node.open_streams)
                        .skip_messages_below(from);
                Ok(Response::new(watcher.into_stream(move |_, messages, reached| {
                    SubscribeResponse {
                        messages: messages
                            .into_iter()
                            .map(|(seq, event)| ChannelMessage { seq, payload: event.value })
                            .collect(),
                        // Everything of the entries up to `reached`, and nothing before
                        // `from` is owed.
                        seq: last_message_seq(reached).max(from.saturating_sub(1)),
                    }
                })))
            })
            .await
    }

    type PipeStream = ringkv_client::kv_pipe::Replies;

    async fn pipe(&self, request: Request<Streaming<KvFrame>>) -> Result<Response<Self::PipeStream>, Status> {
        let replies =
            ringkv_client::kv_pipe::serve(self.clone(), request.into_inner(), self.stopping.clone());
        Ok(Response::new(replies))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.requests
            .observe("get", async move {
                let req = request::get(request.into_inner())?;
                let shard = self.node.shard_for_key(&req.key)?;
                if req.consistency == Consistency::Linearizable {
                    if !shard.is_leader() {
                        return Err(shard.not_leader().into());
                    }
                    shard.reader.confirm().await?;
                }
                let (response, deadline) = read(&shard, &req.key);
                // Sliding expiry: move the deadline through Raft only when less than
                // the configured fraction of the touch TTL is left.
                let fraction = self.node.config.touch_refresh_fraction;
                let Some(target) = req.extend_to(deadline, response.ttl_ms, fraction, unix_now_ms()) else {
                    return Ok(Response::new(response));
                };
                match shard
                    .proposer
                    .propose(Op::Extend { key: req.key.clone(), expires_at_ms: target })
                    .await?
                {
                    // Applied on this leader before `propose` returned: memory shows it
                    // (or a write that came after it).
                    OpResult::Extend { .. } => Ok(Response::new(read(&shard, &req.key).0)),
                    other => Err(unexpected(other)),
                }
            })
            .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.requests
            .observe("put", async move {
                let max_value_bytes = self.node.config.max_value_bytes;
                let write = request::put(request.into_inner(), max_value_bytes, unix_now_ms())?;
                match self.propose_write(write).await? {
                    OpResult::Put { succeeded, version } => {
                        Ok(Response::new(PutResponse { succeeded, version }))
                    }
                    other => Err(unexpected(other)),
                }
            })
            .await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.requests
            .observe("delete", async move {
                match self.propose_write(request::delete(request.into_inner())?).await? {
                    OpResult::Delete { deleted, version } => {
                        Ok(Response::new(DeleteResponse { deleted, version }))
                    }
                    other => Err(unexpected(other)),
                }
            })
            .await
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        self.requests
            .observe("touch", async move {
                match self.propose_write(request::touch(request.into_inner(), unix_now_ms())?).await? {
                    OpResult::Touch { found, expires_at_ms } => Ok(Response::new(TouchResponse {
                        found,
                        ttl_ms: remaining_ms(expires_at_ms, unix_now_ms()),
                    })),
                    other => Err(unexpected(other)),
                }
            })
            .await
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        self.requests
            .observe("increment", async move {
                let req = request.into_inner();
                let (key, delta) = (req.key.clone(), req.delta);
                match self.propose_write(request::increment(req, unix_now_ms())?).await? {
                    OpResult::Increment(Ok(ok)) => {
                        Ok(Response::new(IncrementResponse { value: ok.value, version: ok.version }))
                    }
                    OpResult::Increment(Err(IncrementError::NotAnInteger)) => {
                        Err(Error::FailedPrecondition(format!(
                            "the value at {:?} is not a decimal 64-bit integer",
                            String::from_utf8_lossy(&key)
                        ))
                        .into())
                    }
                    OpResult::Increment(Err(IncrementError::Overflow)) => {
                        Err(Error::FailedPrecondition(format!(
                            "incrementing {:?} by {} would overflow a 64-bit integer",
                            String::from_utf8_lossy(&key),
                            delta
                        ))
                        .into())
                    }
                    other => Err(unexpected(other)),
                }
            })
            .await
    }
}
