//! The sending end of a *pipe*: one long-lived bidirectional gRPC stream that
//! carries many independent calls, each a frame tagged with an id and answered
//! by the reply with the same id.
//!
//! A unary gRPC call costs an HTTP/2 stream of its own: a HEADERS frame with
//! HPACK work on both sides, a server task, trailers, and at least two socket
//! writes per response. On a pipe a call is one length-prefixed DATA payload,
//! and the frames (or replies) that queue while the connection is busy leave
//! in one write. Two pipes use this: the client library's `KV.Pipe` to nodes
//! and routers ([`crate::kv_pipe`]), and a node's `Raft.Pipe` to its peers.
//!
//! How a call goes: it takes a fresh id, registers a oneshot under it, queues
//! the frame and waits for the reply with that id, or its own deadline. The
//! pipe's task opens the stream, feeds it the queued frames and routes each
//! reply to its caller. When the stream ends or fails, the task marks the pipe
//! closed and fails every waiting caller; the owner opens a new pipe for the
//! next call.
//!
//! Invariants:
//! - A caller is answered exactly once: by its reply, by the pipe closing, or by
//!   its deadline (then its registration is removed, and a late reply is
//!   dropped).
//! - Registration and closing happen under one lock, so no caller can register
//!   after the close drained the waiters and then wait for nothing.
//! - Ids increase in the order frames are queued, and the peer reads frames
//!   in order, so its goodbye (`PipeReply::goodbye`) splits the waiting
//!   calls exactly into read (their replies follow) and unread (not sent).
//! - The task holds the pipe weakly: when the last handle is dropped, the
//!   outgoing stream ends, the peer closes its side, and the task exits.
//!
//! What a failure means for the call's outcome:
//! - the pipe had closed before the call, or the peer said goodbye before
//!   reading it: its status has [`NotSent`] as source;
//! - the stream could not be opened because no connection could be made: the
//!   waiters get that status, with tonic's `ConnectError` as its source, so
//!   [`Error`](crate::Error) classifies it as "nothing was sent" too;
//! - the stream failed or ended after it was open, or the call's deadline
//!   passed: the frame may have been executed, so the outcome is unknown
//!   (`UNAVAILABLE` / the stream's status / `DEADLINE_EXCEEDED`);
//! - the stream ended with `RESOURCE_EXHAUSTED`: the peer stopped at a frame
//!   too large for it, the oldest call waiting, which gets that status; the
//!   later calls were not run and fail as [`NotSent`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// A reply frame of some pipe protocol: its id and the call's outcome.
pub trait PipeReply: Send + 'static {
    fn id(&self) -> u64;
    /// The reply's payload, or the status the call failed with.
    fn into_result(self) -> Result<Bytes, Status>;
    /// `Some(last_read)` if this is the peer's goodbye: it read the frames up
    /// to id `last_read` (and will answer them) and no more.
    fn goodbye(&self) -> Option<u64> {
        None
    }
}

/// The source of the status a call gets when its frame was never handed to
/// the stream (the pipe had closed): nothing was sent, so the caller may send
/// it again, elsewhere or on a new pipe. [`Error`](crate::Error) maps it to
/// `Transport`, like a refused connection.
#[derive(Debug)]
pub struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request was not sent")
    }
}

impl std::error::Error for NotSent {}

fn not_sent(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.set_source(Arc::new(NotSent));
    status
}

/// The replies on a node's Raft pipe to a peer (used by the node's transport).
impl PipeReply for ringkv_proto::v1::RaftFrameReply {
    fn id(&self) -> u64 {
        self.id
    }

    fn into_result(self) -> Result<Bytes, Status> {
        if self.code == 0 {
            Ok(self.payload)
        } else {
            Err(Status::new(tonic::Code::from_i32(self.code), self.message))
        }
    }
}

/// The frames a pipe sends, as the stream that tonic's client method takes.
pub struct Outgoing<F>(mpsc::UnboundedReceiver<F>);

impl<F> futures::Stream for Outgoing<F> {
    type Item = F;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F>> {
        self.0.poll_recv(cx)
    }
}

type Waiter = oneshot::Sender<Result<Bytes, Status>>;

/// One open (or closed) pipe sending frames of type `F`.
pub struct Pipe<F> {
    /// What the pipe is, for messages: "the raft pipe to node 2".
    name: String,
    frames: mpsc::UnboundedSender<F>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Why the pipe closed; `None` while it is open.
    closed: Option<Status>,
    waiting: HashMap<u64, Waiter>,
    /// The next call's id; ids start at 1 (0 is the peer's goodbye).
    next_id: u64,
}

impl<F: Send + 'static> Pipe<F> {
    /// Opens a pipe named `name` (for messages) with `open`, which is given the
    /// outgoing frames and should start the streaming call (e.g. a generated
    /// client's `pipe` method). Returns at once; the stream is opened by the
    /// pipe's task, and frames queued meanwhile go out first.
    pub fn open<R, Fut>(name: String, open: impl FnOnce(Outgoing<F>) -> Fut + Send + 'static) -> Arc<Pipe<F>>
    where
        R: PipeReply,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<R>>, Status>> + Send + 'static,
    {
        let (frames, outgoing) = mpsc::unbounded_channel::<F>();
        let pipe =
            Arc::new(Pipe { name, frames, state: Mutex::new(State { next_id: 1, ..State::default() }) });
        let weak = Arc::downgrade(&pipe);
        let name = pipe.name.clone();
        tokio::spawn(async move {
            let why = match open(Outgoing(outgoing)).await {
                // Keeps the status' source: a ConnectError means nothing was sent.
                Err(status) => status,
                Ok(response) => route_replies(response.into_inner(), &weak, &name).await,
            };
            if let Some(pipe) = weak.upgrade() {
                pipe.close(why);
            }
        });
        pipe
    }

    /// Whether the pipe can no longer carry calls.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Sends the frame `make(id)` and waits for its reply payload, at most
    /// `timeout`.
    pub async fn call(&self, make: impl FnOnce(u64) -> F, timeout: Duration) -> Result<Bytes, Status> {
        let (tx, rx) = oneshot::channel();
        let id = {
            // Ids are taken and frames queued under one lock, so frames leave
            // in id order (the goodbye relies on it); `make` should be cheap.
            let mut state = self.lock();
            if let Some(why) = &state.closed {
                return Err(not_sent(format!("{} is closed: {}", self.name, why.message())));
            }
            let id = state.next_id;
            state.next_id += 1;
            if self.frames.send(make(id)).is_err() {
                return Err(not_sent(format!("{}: its task has stopped", self.name)));
            }
            state.waiting.insert(id, tx);
            id
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            // Never dropped unanswered (see `close`); kept total anyway.
            Ok(Err(_)) => Err(Status::unavailable(format!("{} closed", self.name))),
            Err(_) => {
                self.lock().waiting.remove(&id);
                let message = format!("no reply on {} within {timeout:?}", self.name);
                Err(Status::deadline_exceeded(message))
            }
        }
    }

    fn complete(&self, reply: impl PipeReply) {
        if let Some(last_read) = reply.goodbye() {
            return self.goodbye(last_read);
        }
        let Some(waiter) = self.lock().waiting.remove(&reply.id()) else {
            return; // its caller gave up (deadline)
        };
        let _ = waiter.send(reply.into_result());
    }

    /// The peer stopped reading after frame `last_read`: later calls are
    /// failed as not sent, and the pipe takes no new ones; earlier calls still
    /// wait for their replies.
    fn goodbye(&self, last_read: u64) {
        let unread = {
            let mut state = self.lock();
            state
                .closed
                .get_or_insert_with(|| Status::unavailable(format!("the peer is closing {}", self.name)));
            let unread: Vec<u64> = state.waiting.keys().copied().filter(|&id| id > last_read).collect();
            unread.into_iter().filter_map(|id| state.waiting.remove(&id)).collect::<Vec<_>>()
        };
        for waiter in unread {
            let _ =
                waiter.send(Err(not_sent(format!("the peer closed {} before reading the call", self.name))));
        }
    }

    /// The stream ended with `why`: every waiting call fails with it, except
    /// after a frame too large for the peer (`RESOURCE_EXHAUSTED`, see
    /// `kv_pipe::serve`). The peer then answered every frame it read and
    /// stopped at that one, which is the oldest call still waiting (ids go
    /// out in order); it gets `why`, and the later ones, never run, fail as
    /// not sent, free to be sent again.
    fn close(&self, why: Status) {
        let mut waiting: Vec<(u64, oneshot::Sender<Result<Bytes, Status>>)> = {
            let mut state = self.lock();
            state.closed.get_or_insert(why.clone());
            std::mem::take(&mut state.waiting).into_iter().collect()
        };
        waiting.sort_unstable_by_key(|(id, _)| *id);
        let stopped_at_a_frame = why.code() == tonic::Code::ResourceExhausted;
        for (i, (_, waiter)) in waiting.into_iter().enumerate() {
            let status = if stopped_at_a_frame && i > 0 {
                not_sent(format!(
                    "{} stopped at an earlier frame too large for the peer: this call was not run",
                    self.name
                ))
            } else {
                why.clone()
            };
            let _ = waiter.send(Err(status));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<F> std::fmt::Debug for Pipe<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f.debug_struct("Pipe")
            .field("name", &self.name)
            .field("closed", &state.closed.as_ref().map(Status::message))
            .field("waiting", &state.waiting.len())
            .finish()
    }
}

/// Hands every reply to its caller until the stream ends; returns why it ended.
async fn route_replies<F: Send + 'static, R: PipeReply>(
    mut replies: tonic::Streaming<R>,
    pipe: &Weak<Pipe<F>>,
    name: &str,
) -> Status {
    loop {
        match replies.message().await {
            Ok(Some(reply)) => match pipe.upgrade() {
                Some(pipe) => pipe.complete(reply),
                None => return Status::unavailable(format!("{name} was dropped")),
            },
            Ok(None) => return Status::unavailable(format!("the peer closed {name}")),
            // Keeps the code and source: a connection lost mid-call is
            // "outcome unknown" to the client's error mapping.
            Err(status) => return status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestReply(u64);

    impl PipeReply for TestReply {
        fn id(&self) -> u64 {
            self.0
        }

        fn into_result(self) -> Result<Bytes, Status> {
            Ok(Bytes::from(self.0.to_string()))
        }
    }

    /// A pipe whose stream never opens: the test plays the peer.
    fn pipe() -> Arc<Pipe<u64>> {
        Pipe::open::<TestReply, _>("the test pipe".into(), |frames| async move {
            // Holds the outgoing frames open, as a stream being sent would.
            let _frames = frames;
            futures::future::pending().await
        })
    }

    async fn wait_until_waiting(pipe: &Pipe<u64>, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pipe.lock().waiting.len() < n {
            assert!(tokio::time::Instant::now() < deadline, "calls never registered");
            tokio::task::yield_now().await;
        }
    }

    fn is_not_sent(status: &Status) -> bool {
        std::error::Error::source(status).is_some_and(|e| e.is::<NotSent>())
    }

    #[tokio::test]
    async fn replies_reach_their_callers_by_id() {
        let pipe = pipe();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let pipe = pipe.clone();
                tokio::spawn(async move { pipe.call(|id| id, Duration::from_secs(10)).await })
            })
            .collect();
        wait_until_waiting(&pipe, 3).await;
        for id in [3, 1, 2] {
            pipe.complete(TestReply(id));
        }
        let mut answers: Vec<Bytes> = Vec::new();
        for call in calls {
            answers.push(call.await.expect("task").expect("answered"));
        }
        answers.sort();
        assert_eq!(answers, [&b"1"[..], b"2", b"3"].map(Bytes::from_static));
        // A reply nobody waits for (late, or made up) is dropped.
        pipe.complete(TestReply(99));
    }

    #[tokio::test]
    async fn a_goodbye_fails_only_the_unread_calls_and_as_not_sent() {
        let pipe = pipe();
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let pipe = pipe.clone();
                tokio::spawn(async move { pipe.call(|id| id, Duration::from_secs(10)).await })
            })
            .collect();
        wait_until_waiting(&pipe, 4).await;
        pipe.goodbye(2);
        // Calls 1 and 2 were read: they still get their replies.
        pipe.complete(TestReply(1));
        pipe.complete(TestReply(2));
        let (mut answered, mut not_sent) = (0, 0);
        for call in calls {
            match call.await.expect("task") {
                Ok(_) => answered += 1,
                Err(status) if is_not_sent(&status) => not_sent += 1,
                Err(status) => panic!("unexpected failure: {status:?}"),
            }
        }
        assert_eq!((answered, not_sent), (2, 2));
        // The pipe takes no new call, and says it was not sent.
        let late = pipe.call(|id| id, Duration::from_secs(10)).await.expect_err("closed");
        assert!(is_not_sent(&late), "{late:?}");
    }

    #[tokio::test]
    async fn a_closing_pipe_fails_waiting_calls_with_its_status_and_new_ones_as_not_sent() {
        let pipe = pipe();
        let call = {
            let pipe = pipe.clone();
            tokio::spawn(async move { pipe.call(|id| id, Duration::from_secs(10)).await })
        };
        wait_until_waiting(&pipe, 1).await;
        pipe.close(Status::unknown("connection reset"));
        let err = call.await.expect("task").expect_err("closed");
        assert_eq!((err.code(), err.message()), (tonic::Code::Unknown, "connection reset"));
        assert!(!is_not_sent(&err), "it may have been sent");
        let late = pipe.call(|id| id, Duration::from_secs(10)).await.expect_err("closed");
        assert!(is_not_sent(&late), "{late:?}");
        assert!(pipe.is_closed());
    }

    #[tokio::test]
    async fn a_frame_too_large_fails_its_own_call_and_the_later_ones_as_not_sent() {
        let pipe = pipe();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let pipe = pipe.clone();
                tokio::spawn(async move {
                    let mut sent_as = 0;
                    let result = pipe
                        .call(
                            |id| {
                                sent_as = id;
                                id
                            },
                            Duration::from_secs(10),
                        )
                        .await;
                    (sent_as, result)
                })
            })
            .collect();
        wait_until_waiting(&pipe, 3).await;
        pipe.close(Status::resource_exhausted("the KV.Pipe frame after frame 0 too large"));
        let mut outcomes = Vec::new();
        for call in calls {
            let (id, result) = call.await.expect("task");
            let status = result.expect_err("closed");
            outcomes.push((id, status.code(), is_not_sent(&status)));
        }
        outcomes.sort_by_key(|(id, ..)| *id);
        assert_eq!(
            outcomes,
            [
                (1, tonic::Code::ResourceExhausted, false),
                (2, tonic::Code::Unavailable, true),
                (3, tonic::Code::Unavailable, true)
            ]
        );
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_forgotten() {
        let pipe = pipe();
        let err = pipe.call(|id| id, Duration::from_millis(10)).await.expect_err("no reply");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(pipe.lock().waiting.is_empty());
    }
}
