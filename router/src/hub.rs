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
//! upstream's receiving take the same lock. A subscriber that asks for older
//! messages, or from a sequence number while the router has no upstream of
//! the channel, gets an upstream of its own (from `from_seq`, served by the
//! node's retention). A shared upstream is opened by a subscriber from now,
//! and starts there, so that no subscriber from now gets older messages.
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
        let subscription = self.client.subscribe(channel.clone(), from_seq).await.map_err(to_status)?;
        if from_seq != 0 {
            // Older than what the shared upstream kept, or no shared upstream:
            // an upstream of its own. Shared ones start from now, so that a
            // subscriber from now never gets a catching-up one's older messages.
            return Ok(self.serve_alone(subscription));
        }
        let upstream = {
            let mut channels = self.channels();
            if channels.contains_key(&channel) {
                drop(channels);
                // Another subscriber opened one meanwhile.
                return Ok(match self.join(&channel, from_seq) {
                    Some(joined) => self.serve(joined, from_seq),
                    None => self.serve_alone(subscription),
                });
            }
            let start = subscription.next_seq();
            let (tx, _) = broadcast::channel(BUFFERED);
            let shared =
                Shared { recent: VecDeque::new(), covered_from: start, reached: start - 1, tx, ended: false };
            let upstream = Arc::new(Upstream { state: Mutex::new(shared) });
            channels.insert(channel.clone(), upstream.clone());
            upstream
        };
        let joined = self.join(&channel, from_seq);
        tokio::spawn(self.clone().pump(channel, upstream, subscription));
        match joined {
            Some(joined) => Ok(self.serve(joined, from_seq)),
            None => Err(Status::unavailable("the channel's upstream ended at once: subscribe again")),
        }
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
        let Joined { start, replay, reached, rx } = joined;
        let mut first = vec![SubscribeResponse { messages: Vec::new(), seq: start }];
        if !replay.is_empty() {
            first.push(SubscribeResponse { messages: replay, seq: reached.max(start) });
        }
        let state =
            Follower { queued: first.into(), rx, from_seq, next: start + 1, stopping: self.stopping.clone() };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let item = state.next().await;
            let go_on = item.is_ok();
            Some((item, go_on.then_some(state)))
        }))
    }

    /// A subscriber with an upstream of its own (not shared).
    fn serve_alone(&self, subscription: Subscription) -> Stream {
        let start = SubscribeResponse { messages: Vec::new(), seq: subscription.next_seq() - 1 };
        let stopping = self.stopping.clone();
        Box::pin(futures::stream::unfold(Some((Some(start), subscription, stopping)), |state| async move {
            let (first, mut subscription, mut stopping) = state?;
            if let Some(first) = first {
                return Some((Ok(first), Some((None, subscription, stopping))));
            }
            let batch = tokio::select! {
                batch = subscription.next_batch() => batch,
                () = crate::server::until_stopping(&mut stopping) => return Some((Err(shutting_down()), None)),
            };
            match batch {
                Some(Ok(batch)) => {
                    let messages = batch
                        .messages
                        .into_iter()
                        .map(|m| ChannelMessage { seq: m.seq, payload: m.payload })
                        .collect();
                    Some((
                        Ok(SubscribeResponse { messages, seq: batch.seq }),
                        Some((None, subscription, stopping)),
                    ))
                }
                Some(Err(err)) => Some((Err(to_status(err)), None)),
                None => None,
            }
        }))
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
