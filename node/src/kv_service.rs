//! The public `KV` service as a node serves it: for the shards this node leads
//! (writes, linearizable reads) or hosts (stale reads).
//!
//! Each handler validates its input first (nothing invalid is ever proposed), finds
//! the key's shard, and then either proposes through the shard's proposer or reads
//! memory after the read batcher confirmed leadership. Relative TTLs become
//! absolute deadlines here, on the leader, before they enter the log.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_core::ShardId;
use ringkv_core::limits::{check_key, check_request_id, check_ttl, check_value};
use ringkv_proto::v1::kv_server::Kv;
use ringkv_proto::v1::{
    Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest, IncrementResponse,
    KvFrame, PutRequest, PutResponse, TouchRequest, TouchResponse, WatchEvent, WatchEventType, WatchRequest,
    WatchResponse, put_request,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::command::{Condition, IncrementError, Op, OpResult, UnixMs};
use crate::error::Error;
use crate::events::{Compacted, Event, EventKind, ShardEvents};
use crate::node::Node;
use crate::shard::Shard;
use crate::time::unix_now_ms;

/// The KV gRPC service of a node.
#[derive(Clone)]
pub struct KvService {
    node: Arc<Node>,
    /// Turns true when the graceful shutdown starts: KV pipes stop reading.
    stopping: watch::Receiver<bool>,
}

impl KvService {
    pub fn new(node: Arc<Node>, stopping: watch::Receiver<bool>) -> Self {
        KvService { node, stopping }
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

    /// Proposes a client write: as `Op::Once` when it has a request id (a
    /// retry of an applied write then gets the first result), and loses the
    /// answer when the test fault says so.
    async fn propose_write(&self, shard: &Shard, request_id: Bytes, op: Op) -> Result<OpResult, Status> {
        check_request_id(&request_id).map_err(Error::from)?;
        let retention = self.node.config.request_id_retention_ms;
        let op = if request_id.is_empty() {
            op
        } else {
            let retain_until_ms = unix_now_ms().saturating_add(retention);
            Op::Once { request_id, retain_until_ms, op: Box::new(op) }
        };
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

/// `now + ttl_ms`, or no deadline for 0.
fn deadline(ttl_ms: u64) -> Option<UnixMs> {
    (ttl_ms > 0).then(|| unix_now_ms().saturating_add(ttl_ms))
}

/// Milliseconds left before `expires_at_ms` (at least 1 while live), 0 = no TTL.
fn remaining_ms(expires_at_ms: Option<UnixMs>, now_ms: UnixMs) -> u64 {
    expires_at_ms.map(|at| at.saturating_sub(now_ms).max(1)).unwrap_or(0)
}

fn unexpected(result: OpResult) -> Status {
    Error::Internal(format!("state machine answered with the wrong result kind: {result:?}")).into()
}

/// Events a watch stream sends per response, at most (whole entries).
const WATCH_BATCH: usize = 256;

/// What a watch stream wants from its shard's events.
#[derive(Clone)]
enum WatchFilter {
    Key(Bytes),
    Prefix(Bytes),
}

impl WatchFilter {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            WatchFilter::Key(wanted) => key == wanted.as_ref(),
            WatchFilter::Prefix(prefix) => key.starts_with(prefix),
        }
    }
}

fn to_proto(event: Event) -> WatchEvent {
    let kind = match event.kind {
        EventKind::Put => WatchEventType::Put,
        EventKind::Delete => WatchEventType::Delete,
        EventKind::Expired => WatchEventType::Expired,
    };
    WatchEvent { r#type: kind as i32, key: event.key, value: event.value, version: event.version }
}

fn compacted(shard: ShardId, c: Compacted) -> Status {
    Status::out_of_range(format!(
        "shard {shard} no longer has the events before version {}: re-read the keys and watch from \
         start_version {}",
        c.horizon + 1,
        c.horizon + 1
    ))
}

/// How often a watch that matched nothing still says how far it got, so
/// that a resume starts from a recent version (not one already dropped).
const WATCH_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One watch stream's state between responses.
struct Watcher {
    shard: ShardId,
    events: Arc<ShardEvents>,
    progress: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    filter: WatchFilter,
    /// Every event up to here has been considered.
    cursor: u64,
    /// The version the caller last heard of.
    told: u64,
    told_at: std::time::Instant,
    done: bool,
}

impl Watcher {
    /// The next response: matching events, a progress note, or the error that
    /// ends the stream.
    async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            let (batch, reached) =
                self.events.read_after(self.cursor, WATCH_BATCH).map_err(|c| compacted(self.shard, c))?;
            self.cursor = reached;
            let matching: Vec<WatchEvent> =
                batch.into_iter().filter(|e| self.filter.matches(&e.key)).map(to_proto).collect();
            let progress_due = self.told < reached && self.told_at.elapsed() >= WATCH_PROGRESS_EVERY;
            if !matching.is_empty() || progress_due {
                self.told = reached;
                self.told_at = std::time::Instant::now();
                return Ok(WatchResponse { shard: self.shard, events: matching, version: reached });
            }
            if self.events.applied() > self.cursor {
                continue; // more entries already recorded
            }
            // A timer, not a wait for a condition: a progress note is due by
            // time even when no entry is applied.
            let wait_for_progress = tokio::time::sleep(WATCH_PROGRESS_EVERY);
            tokio::select! {
                changed = self.progress.changed() => {
                    changed.map_err(|_| Status::unavailable(format!(
                        "shard {}'s replica on this node stopped: resume the watch elsewhere", self.shard
                    )))?;
                }
                _ = self.stopping.wait_for(|stop| *stop) => {
                    return Err(Status::unavailable("the node is shutting down: resume the watch elsewhere"));
                }
                // Wake to send a due progress note even when nothing is applied.
                () = wait_for_progress, if self.told < self.cursor => {}
            }
        }
    }
}

/// The stream of one watch, starting after `cursor`.
fn watch_stream(
    shard: &Shard,
    filter: WatchFilter,
    cursor: u64,
    stopping: watch::Receiver<bool>,
) -> WatchStream {
    let watcher = Watcher {
        shard: shard.id,
        events: shard.events.clone(),
        progress: shard.progress.clone(),
        stopping,
        filter,
        cursor,
        told: cursor,
        told_at: std::time::Instant::now(),
        done: false,
    };
    Box::pin(futures::stream::unfold(watcher, |mut watcher| async move {
        if watcher.done {
            return None;
        }
        let next = watcher.next().await;
        watcher.done = next.is_err();
        Some((next, watcher))
    }))
}

/// A node's watch responses.
pub type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let (shard, filter) = match (req.key.is_empty(), req.prefix.is_empty()) {
            (false, true) => {
                check_key(&req.key).map_err(Error::from)?;
                (self.node.shard_for_key(&req.key)?, WatchFilter::Key(req.key))
            }
            (true, false) => {
                let shard =
                    self.node.shard(req.shard).ok_or(Error::WrongShard { shard: req.shard, epoch: 0 })?;
                (shard, WatchFilter::Prefix(req.prefix))
            }
            _ => {
                return Err(
                    Error::InvalidArgument("a watch names exactly one of key and prefix".into()).into()
                );
            }
        };
        if !shard.is_leader() {
            return Err(shard.not_leader().into());
        }
        let cursor = match req.start_version {
            0 => shard.events.applied(),
            start => start - 1,
        };
        // Refuse at once what cannot be served, rather than as the first message.
        shard.events.read_after(cursor, 0).map_err(|c| compacted(shard.id, c))?;
        Ok(Response::new(watch_stream(&shard, filter, cursor, self.stopping.clone())))
    }

    type PipeStream = ringkv_client::kv_pipe::Replies;

    async fn pipe(&self, request: Request<Streaming<KvFrame>>) -> Result<Response<Self::PipeStream>, Status> {
        let replies =
            ringkv_client::kv_pipe::serve(self.clone(), request.into_inner(), self.stopping.clone());
        Ok(Response::new(replies))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        check_key(&req.key).map_err(Error::from)?;
        let consistency = Consistency::try_from(req.consistency)
            .map_err(|_| Error::InvalidArgument(format!("unknown consistency {}", req.consistency)))?;
        let touch_ttl_ms = check_ttl(req.touch_ttl_ms).map_err(Error::from)?;
        if touch_ttl_ms > 0 && consistency == Consistency::Stale {
            return Err(
                Error::InvalidArgument("touch_ttl_ms needs a linearizable read, not STALE".into()).into()
            );
        }
        let shard = self.node.shard_for_key(&req.key)?;
        if consistency == Consistency::Linearizable {
            if !shard.is_leader() {
                return Err(shard.not_leader().into());
            }
            shard.reader.confirm().await?;
        }
        let (response, deadline) = read(&shard, &req.key);
        // Sliding expiry: move the deadline through Raft only when less than
        // the configured fraction of the touch TTL is left.
        let refresh_below = (touch_ttl_ms as f64 * self.node.config.touch_refresh_fraction) as u64;
        let Some(deadline) = deadline.filter(|_| touch_ttl_ms > 0 && response.ttl_ms < refresh_below) else {
            return Ok(Response::new(response));
        };
        let target = unix_now_ms().saturating_add(touch_ttl_ms).max(deadline);
        match shard.proposer.propose(Op::Extend { key: req.key.clone(), expires_at_ms: target }).await? {
            // Applied on this leader before `propose` returned: memory shows it
            // (or a write that came after it).
            OpResult::Extend { .. } => Ok(Response::new(read(&shard, &req.key).0)),
            other => Err(unexpected(other)),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_value(&req.value, self.node.config.max_value_bytes).map_err(Error::from)?;
        let ttl_ms = check_ttl(req.ttl_ms).map_err(Error::from)?;
        let condition = match req.condition {
            None | Some(put_request::Condition::IfAbsent(false)) => Condition::None,
            Some(put_request::Condition::IfAbsent(true)) => Condition::IfAbsent,
            Some(put_request::Condition::IfVersion(v)) => Condition::IfVersion(v),
        };
        let shard = self.leader_shard(&req.key)?;
        let op = Op::Put { key: req.key, value: req.value, expires_at_ms: deadline(ttl_ms), condition };
        match self.propose_write(&shard, req.request_id, op).await? {
            OpResult::Put { succeeded, version } => Ok(Response::new(PutResponse { succeeded, version })),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        let shard = self.leader_shard(&req.key)?;
        let op = Op::Delete { key: req.key, if_version: req.if_version };
        match self.propose_write(&shard, req.request_id, op).await? {
            OpResult::Delete { deleted, version } => Ok(Response::new(DeleteResponse { deleted, version })),
            other => Err(unexpected(other)),
        }
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        let req = request.into_inner();
        let ttl_ms = check_ttl(req.ttl_ms).map_err(Error::from)?;
        let shard = self.leader_shard(&req.key)?;
        let op = Op::Touch { key: req.key, expires_at_ms: deadline(ttl_ms) };
        match self.propose_write(&shard, req.request_id, op).await? {
            OpResult::Touch { found, expires_at_ms } => {
                Ok(Response::new(TouchResponse { found, ttl_ms: remaining_ms(expires_at_ms, unix_now_ms()) }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let req = request.into_inner();
        let ttl_ms = check_ttl(req.ttl_ms).map_err(Error::from)?;
        let shard = self.leader_shard(&req.key)?;
        let key: Bytes = req.key;
        let op = Op::Increment { key: key.clone(), delta: req.delta, expires_at_ms: deadline(ttl_ms) };
        match self.propose_write(&shard, req.request_id, op).await? {
            OpResult::Increment(Ok(ok)) => {
                Ok(Response::new(IncrementResponse { value: ok.value, version: ok.version }))
            }
            OpResult::Increment(Err(IncrementError::NotAnInteger)) => Err(Error::FailedPrecondition(
                format!("the value at {:?} is not a decimal 64-bit integer", String::from_utf8_lossy(&key)),
            )
            .into()),
            OpResult::Increment(Err(IncrementError::Overflow)) => Err(Error::FailedPrecondition(format!(
                "incrementing {:?} by {} would overflow a 64-bit integer",
                String::from_utf8_lossy(&key),
                req.delta
            ))
            .into()),
            other => Err(unexpected(other)),
        }
    }
}
