//! The router's pub/sub: `Publish` is forwarded like a write; `Subscribe` is
//! coalesced. All the router's subscribers of one channel share one upstream
//! subscription on the channel shard's leader (the client library's
//! [`Client::subscribe`], which resumes by itself after leader changes), so N
//! gateways' subscribers of a chat room cost the cluster one stream, not N.
//!
//! The upstream keeps the channel's last [`RECENT`] messages. A subscriber
//! joins it when the upstream can serve its whole request: from now, or from
//! a sequence number the upstream saw or will see (`from_seq` at or after the
//! oldest message it kept). It then gets those kept messages and the live ones
//! after them, with no gap and no duplicate, because joining and the
//! upstream's receiving take the same lock. A shared upstream always starts
//! from now (so no subscriber from now gets older messages). A subscriber
//! from an older position, or with no shared upstream yet (every subscriber
//! resumes so after a router restart), catches up on an upstream of its own
//! (from `from_seq`, served by the node's retention) and moves to the shared
//! one as soon as that has everything after its position; only one that
//! keeps more than [`RECENT`] messages behind stays alone.
//!
//! A subscriber that falls more than [`BUFFERED`] responses behind is ended
//! with `UNAVAILABLE` naming its position: the client library resumes it from
//! there (from the kept messages, or an upstream of its own). An upstream with
//! no subscribers left is closed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::{Client, Subscription};
use ringkv_core::Version;
use ringkv_proto::v1::{ChannelMessage, SubscribeResponse};
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::error::to_status;

/// Messages an upstream keeps for subscribers that join behind it.
pub const RECENT: usize = 1024;
/// Responses a subscriber may fall behind its upstream.
pub const BUFFERED: usize = 1024;
/// How often an upstream checks whether anyone still listens, when quiet.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The stream a subscriber reads.
pub type Stream = tonic::codegen::BoxStream<SubscribeResponse>;

/// The router's upstream subscriptions, one per channel with subscribers.
#[derive(Clone)]
pub struct Hub {
    client: Client,
    channels: Arc<Mutex<HashMap<Bytes, Arc<Upstream>>>>,
    stopping: watch::Receiver<bool>,
}

/// One shared upstream subscription.
struct Upstream {
    state: Mutex<Shared>,
}

struct Shared {
    /// The last messages received, oldest first, at most [`RECENT`].
    recent: VecDeque<ChannelMessage>,
    /// Every message from this sequence number on is in `recent` or to come.
    covered_from: Version,
    /// Everything up to here has been received.
    reached: Version,
    tx: broadcast::Sender<Item>,
    /// The upstream ended: nobody may join it.
    ended: bool,
}

#[derive(Clone)]
enum Item {
    Batch(Arc<SubscribeResponse>),
    Ended(tonic::Code, String),
}

/// What a joining subscriber starts with.
struct Joined {
    start: Version,
    replay: Vec<ChannelMessage>,
    reached: Version,
    rx: broadcast::Receiver<Item>,
}

impl Hub {
    pub fn new(client: Client, stopping: watch::Receiver<bool>) -> Hub {
        Hub { client, channels: Default::default(), stopping }
    }

    /// How many upstream subscriptions are open.
    pub fn upstreams(&self) -> usize {
        self.channels().len()
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<Bytes, Arc<Upstream>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to `channel` from `from_seq` (0 = now).
    pub async fn subscribe(&self, channel: Bytes, from_seq: Version) -> Result<Stream, Status> {
        ringkv_core::limits::check_key(&channel).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(joined) = self.join(&channel, from_seq) {
            return Ok(self.serve(joined, from_seq));
        }
        if from_seq == 0 {
            self.open_shared(&channel).await?;
            return match self.join(&channel, 0) {
                Some(joined) => Ok(self.serve(joined, 0)),
                None => Err(Status::unavailable("the channel's upstream ended at once: subscribe again")),
            };
        }
        // From a position the shared upstream cannot serve (or there is none:
        // after a router restart every subscriber resumes so): catch up on an
        // upstream of its own, then join the shared one.
        let private = self.client.subscribe(channel.clone(), from_seq).await.map_err(to_status)?;
        if let Err(status) = self.open_shared(&channel).await {
            tracing::debug!(?channel, %status, "no shared upstream yet; the subscriber catches up alone");
        }
        Ok(self.serve_catching_up(channel, private))
    }

    /// Opens the channel's shared upstream, from now, unless there is one.
    async fn open_shared(&self, channel: &Bytes) -> Result<(), Status> {
        if self.channels().contains_key(channel) {
            return Ok(());
        }
        let subscription = self.client.subscribe(channel.clone(), 0).await.map_err(to_status)?;
        let upstream = {
            let mut channels = self.channels();
            if channels.contains_key(channel) {
                return Ok(()); // another subscriber opened one meanwhile; ours goes
            }
            let start = subscription.next_seq();
            let (tx, _) = broadcast::channel(BUFFERED);
            let shared =
                Shared { recent: VecDeque::new(), covered_from: start, reached: start - 1, tx, ended: false };
            let upstream = Arc::new(Upstream { state: Mutex::new(shared) });
            channels.insert(channel.clone(), upstream.clone());
            upstream
        };
        tokio::spawn(self.clone().pump(channel.clone(), upstream, subscription));
        Ok(())
    }

    /// Joins the channel's upstream if it can serve `from_seq`.
    fn join(&self, channel: &Bytes, from_seq: Version) -> Option<Joined> {
        // Under the map lock, so the upstream cannot be closed for want of
        // subscribers between finding it and joining it.
        let channels = self.channels();
        let upstream = channels.get(channel)?;
        let shared = upstream.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if shared.ended {
            return None;
        }
        let (start, replay) = match from_seq {
            0 => (shared.reached, Vec::new()),
            from if from >= shared.covered_from => {
                (from - 1, shared.recent.iter().filter(|m| m.seq >= from).cloned().collect())
            }
            _ => return None,
        };
        Some(Joined { start, replay, reached: shared.reached, rx: shared.tx.subscribe() })
    }

    /// Receives the upstream's responses and hands them to its subscribers;
    /// closes it when the last one left or it failed.
    async fn pump(self, channel: Bytes, upstream: Arc<Upstream>, mut subscription: Subscription) {
        loop {
            let batch = tokio::select! {
                batch = subscription.next_batch() => Some(batch),
                // Wake now and then to notice that nobody listens any more.
                () = tokio::time::sleep(IDLE_CHECK) => None,
            };
            match batch {
                None => {}
                Some(Some(Ok(batch))) => {
                    let mut shared = upstream.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let messages: Vec<ChannelMessage> = batch
                        .messages
                        .into_iter()
                        .map(|m| ChannelMessage { seq: m.seq, payload: m.payload })
                        .collect();
                    shared.recent.extend(messages.iter().cloned());
                    while shared.recent.len() > RECENT {
                        if let Some(dropped) = shared.recent.pop_front() {
                            shared.covered_from = dropped.seq + 1;
                        }
                    }
                    shared.reached = batch.seq;
                    let _ =
                        shared.tx.send(Item::Batch(Arc::new(SubscribeResponse { messages, seq: batch.seq })));
                }
                Some(ended) => {
                    let status = match ended {
                        Some(Err(err)) => to_status(err),
                        _ => Status::unavailable("the channel's upstream subscription ended"),
                    };
                    self.close(&channel, &upstream, Some(status));
                    return;
                }
            }
            let idle =
                upstream.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).tx.receiver_count()
                    == 0;
            if idle && self.close_if_idle(&channel, &upstream) {
                return;
            }
        }
    }

    /// Removes the upstream if nobody listens (checked under the map lock,
    /// which joiners hold).
    fn close_if_idle(&self, channel: &Bytes, upstream: &Arc<Upstream>) -> bool {
        let mut channels = self.channels();
        let mut shared = upstream.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if shared.tx.receiver_count() > 0 {
            return false;
        }
        shared.ended = true;
        if channels.get(channel).is_some_and(|current| Arc::ptr_eq(current, upstream)) {
            channels.remove(channel);
        }
        true
    }

    fn close(&self, channel: &Bytes, upstream: &Arc<Upstream>, status: Option<Status>) {
        let mut channels = self.channels();
        if channels.get(channel).is_some_and(|current| Arc::ptr_eq(current, upstream)) {
            channels.remove(channel);
        }
        let mut shared = upstream.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        shared.ended = true;
        if let Some(status) = status {
            let _ = shared.tx.send(Item::Ended(status.code(), status.message().to_string()));
        }
    }

    /// A joined subscriber's stream: its start, the kept messages it asked
    /// for, then the live ones.
    fn serve(&self, joined: Joined, from_seq: Version) -> Stream {
        let state = self.follower(joined, from_seq);
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let item = state.next().await;
            let go_on = item.is_ok();
            Some((item, go_on.then_some(state)))
        }))
    }

    fn follower(&self, joined: Joined, from_seq: Version) -> Follower {
        let Joined { start, replay, reached, rx } = joined;
        let mut first = vec![SubscribeResponse { messages: Vec::new(), seq: start }];
        if !replay.is_empty() {
            first.push(SubscribeResponse { messages: replay, seq: reached.max(start) });
        }
        Follower { queued: first.into(), rx, from_seq, next: start + 1, stopping: self.stopping.clone() }
    }

    /// A subscriber on an upstream of its own until it reaches what the
    /// shared upstream can serve, then on the shared one (checked before
    /// every response, and at least once per [`IDLE_CHECK`]).
    fn serve_catching_up(&self, channel: Bytes, private: Subscription) -> Stream {
        let first = SubscribeResponse { messages: Vec::new(), seq: private.next_seq() - 1 };
        let state = CatchingUp {
            hub: self.clone(),
            channel,
            first: Some(first),
            private: Some(private),
            shared: None,
        };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let item = state.next().await;
            match item {
                Some(Ok(response)) => Some((Ok(response), Some(state))),
                Some(Err(status)) => Some((Err(status), None)),
                None => None,
            }
        }))
    }
}

/// A subscriber of [`Hub::serve_catching_up`] between responses.
struct CatchingUp {
    hub: Hub,
    channel: Bytes,
    first: Option<SubscribeResponse>,
    /// Until it joined the shared upstream.
    private: Option<Subscription>,
    shared: Option<Follower>,
}

impl CatchingUp {
    async fn next(&mut self) -> Option<Result<SubscribeResponse, Status>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        loop {
            if let Some(shared) = &mut self.shared {
                return Some(shared.next().await);
            }
            let private = self.private.as_mut()?;
            let next = private.next_seq();
            if let Some(joined) = self.hub.join(&self.channel, next) {
                // Caught up: the shared upstream has everything from `next`.
                let mut follower = self.hub.follower(joined, next);
                follower.queued.pop_front(); // its start note says nothing new
                self.shared = Some(follower);
                self.private = None;
                continue;
            }
            if !self.hub.channels().contains_key(&self.channel)
                && let Err(status) = self.hub.open_shared(&self.channel).await
            {
                tracing::debug!(%status, "still no shared upstream");
            }
            let mut stopping = self.hub.stopping.clone();
            let private = self.private.as_mut()?;
            let batch = tokio::select! {
                batch = private.next_batch() => batch,
                // Re-check whether it can join, even on a quiet channel.
                () = tokio::time::sleep(IDLE_CHECK) => continue,
                () = crate::server::until_stopping(&mut stopping) => return Some(Err(shutting_down())),
            };
            return match batch? {
                Ok(batch) => {
                    let messages = batch
                        .messages
                        .into_iter()
                        .map(|m| ChannelMessage { seq: m.seq, payload: m.payload })
                        .collect();
                    Some(Ok(SubscribeResponse { messages, seq: batch.seq }))
                }
                Err(err) => Some(Err(to_status(err))),
            };
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the router is shutting down: subscribe again, from the next seq, elsewhere")
}

/// One joined subscriber between responses.
struct Follower {
    queued: VecDeque<SubscribeResponse>,
    rx: broadcast::Receiver<Item>,
    /// What the subscriber asked for (0 = now).
    from_seq: Version,
    /// The first sequence number not yet delivered.
    next: Version,
    stopping: watch::Receiver<bool>,
}

impl Follower {
    async fn next(&mut self) -> Result<SubscribeResponse, Status> {
        if let Some(response) = self.queued.pop_front() {
            self.next = self.next.max(response.seq + 1);
            return Ok(response);
        }
        loop {
            let item = tokio::select! {
                item = self.rx.recv() => item,
                () = crate::server::until_stopping(&mut self.stopping) => return Err(shutting_down()),
            };
            match item {
                Ok(Item::Batch(batch)) => {
                    // Only what it has not had (it may have asked to start
                    // ahead of the upstream).
                    let messages: Vec<ChannelMessage> = batch
                        .messages
                        .iter()
                        .filter(|m| m.seq >= self.next.max(self.from_seq))
                        .cloned()
                        .collect();
                    if messages.is_empty() && batch.seq < self.next {
                        continue;
                    }
                    self.next = batch.seq + 1;
                    return Ok(SubscribeResponse { messages, seq: batch.seq });
                }
                Ok(Item::Ended(code, message)) => return Err(Status::new(code, message)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(Status::unavailable(format!(
                        "this subscriber fell more than {BUFFERED} responses behind the router's upstream: \
                         subscribe again from seq {}",
                        self.next
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Status::unavailable("the channel's upstream ended: subscribe again"));
                }
            }
        }
    }
}
