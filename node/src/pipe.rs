//! The sending end of a Raft pipe: one long-lived gRPC stream to a peer node
//! that carries the small Raft messages (AppendEntries, Vote) of every shard.
//!
//! A unary gRPC call per Raft message costs a new HTTP/2 stream each time: a
//! HEADERS frame with HPACK work on both sides, a server task, a deadline timer
//! and trailers. With dozens of groups per node that was most of a node's
//! network CPU. On the pipe a message is one length-prefixed DATA payload; the
//! messages that different shards queue while the connection is busy leave in
//! one write, and the replies come back the same way.
//!
//! How a call goes: it takes a fresh id, registers a oneshot under it, queues
//! the frame and waits for the reply with that id, or its own deadline. The
//! pipe's task opens the stream, feeds it the queued frames and routes each
//! reply to its caller. When the stream ends or fails, the task marks the pipe
//! closed and fails every waiting caller with `Unavailable`; the next call
//! through the [`PeerPool`](crate::transport::PeerPool) opens a new pipe.
//!
//! Invariants:
//! - A caller is answered exactly once: by its reply, by the pipe closing, or by
//!   its deadline (then its registration is removed, and a late reply is
//!   dropped).
//! - Registration and closing happen under one lock, so no caller can register
//!   after the close drained the waiters and then wait for nothing.
//! - The task holds the pipe weakly: when the last handle is dropped, the
//!   outgoing stream ends, the peer closes its side, and the task exits.
//!
//! Raft tolerates what a pipe adds: a message whose caller gave up may still
//! be delivered late, and messages of one shard may overtake each other after a
//! timeout — both are delays and reorderings Raft is built to survive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{RaftFrame, RaftFrameKind, RaftFrameReply, RaftRequest};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::Channel;

type Waiter = oneshot::Sender<Result<Bytes, Status>>;

/// One open (or closed) pipe to a peer.
pub(crate) struct Pipe {
    frames: mpsc::UnboundedSender<RaftFrame>,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Why the pipe closed; `None` while it is open.
    closed: Option<String>,
    waiting: HashMap<u64, Waiter>,
}

impl Pipe {
    /// Opens a pipe over `client`'s channel. Returns at once; the stream is
    /// opened by the pipe's task, and frames queued meanwhile go out first.
    pub(crate) fn open(mut client: RaftClient<Channel>, peer: u64) -> Arc<Pipe> {
        let (frames, mut outgoing) = mpsc::unbounded_channel::<RaftFrame>();
        let pipe = Arc::new(Pipe { frames, next_id: AtomicU64::new(1), state: Mutex::new(State::default()) });
        let weak = Arc::downgrade(&pipe);
        tokio::spawn(async move {
            let outbound = futures::stream::poll_fn(move |cx| outgoing.poll_recv(cx));
            let why = match client.pipe(outbound).await {
                Err(status) => format!("opening the raft pipe to node {peer}: {}", status.message()),
                Ok(response) => route_replies(response.into_inner(), &weak, peer).await,
            };
            if let Some(pipe) = weak.upgrade() {
                pipe.close(why);
            }
        });
        pipe
    }

    /// Whether the pipe can no longer carry calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Sends one message and waits for its reply payload, at most `timeout`.
    pub(crate) async fn call(
        &self,
        kind: RaftFrameKind,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(why) = &state.closed {
                return Err(Status::unavailable(why.clone()));
            }
            state.waiting.insert(id, tx);
        }
        let frame = RaftFrame { id, kind: kind as i32, request: Some(request) };
        if self.frames.send(frame).is_err() {
            self.lock().waiting.remove(&id);
            return Err(Status::unavailable("the raft pipe's task has stopped"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            // Never dropped unanswered (see `close`); kept total anyway.
            Ok(Err(_)) => Err(Status::unavailable("the raft pipe closed")),
            Err(_) => {
                self.lock().waiting.remove(&id);
                Err(Status::deadline_exceeded(format!("no raft reply within {timeout:?}")))
            }
        }
    }

    fn complete(&self, reply: RaftFrameReply) {
        let Some(waiter) = self.lock().waiting.remove(&reply.id) else {
            return; // its caller gave up (deadline)
        };
        let result = if reply.code == 0 {
            Ok(reply.payload)
        } else {
            Err(Status::new(tonic::Code::from_i32(reply.code), reply.message))
        };
        let _ = waiter.send(result);
    }

    fn close(&self, why: String) {
        let waiting = {
            let mut state = self.lock();
            state.closed.get_or_insert(why.clone());
            std::mem::take(&mut state.waiting)
        };
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(Status::unavailable(why.clone())));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Pipe").field("closed", &state.closed).field("waiting", &state.waiting.len()).finish()
    }
}

/// Hands every reply to its caller until the stream ends; returns why it ended.
async fn route_replies(
    mut replies: tonic::Streaming<RaftFrameReply>,
    pipe: &Weak<Pipe>,
    peer: u64,
) -> String {
    loop {
        match replies.message().await {
            Ok(Some(reply)) => match pipe.upgrade() {
                Some(pipe) => pipe.complete(reply),
                None => return "the raft pipe was dropped".to_string(),
            },
            Ok(None) => return format!("node {peer} closed the raft pipe"),
            Err(status) => return format!("raft pipe to node {peer} failed: {}", status.message()),
        }
    }
}
