//! Pub/sub: [`Client::publish`] puts a message on a channel, through Raft on
//! the channel's shard (the shard of the channel's name, as for a key), and
//! returns its sequence number; [`Client::subscribe`] follows a channel from
//! now or from a sequence number and resumes by itself after leader changes,
//! node and router restarts.
//!
//! **Delivery guarantee.** A subscription delivers the channel's messages in
//! sequence order, each exactly once, from its start on, for as long as the
//! channel's shard still retains them: a subscriber that falls further behind
//! than the shard's retention (`--watch-retention-events` changes and messages
//! per shard), or resumes from a position older than it, gets `OUT_OF_RANGE`
//! instead of a gap. A message is delivered only after it was committed by a
//! quorum, so an acknowledged publish is never lost by a failover, and one that
//! failed with an unknown outcome was either delivered to every subscriber or
//! to none. Publishes carry request ids like writes, so the client's own
//! retries publish once.

use bytes::Bytes;
use ringkv_core::Version;
use ringkv_core::limits::{check_key, check_value};
use ringkv_proto::v1 as proto;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, Op, with_timeout};
use crate::error::Error;
use crate::follow::{Opened, follow};

/// One message of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Increasing along the channel, with gaps: the log index of the
    /// message's entry in its shard × 65536 + its place among the entry's
    /// messages (other keys and channels share the log). A gap is never a
    /// lost message.
    pub seq: Version,
    pub payload: Bytes,
}

/// One response of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBatch {
    pub messages: Vec<Message>,
    /// Every message up to this sequence number has been delivered.
    pub seq: Version,
}

/// A subscription in progress. Dropping it ends it.
pub struct Subscription {
    updates: mpsc::Receiver<Result<proto::SubscribeResponse, Error>>,
    pending: std::collections::VecDeque<Message>,
    /// Every message before this sequence number was returned.
    next_seq: Version,
    /// The `seq` of the batch `pending` came from.
    batch_end: Version,
    task: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// The next message. An error ends the subscription (`None` after it):
    /// `OUT_OF_RANGE` ([`Error::is_out_of_range`]) when the channel's shard no
    /// longer has the messages it needs, or, when a broken stream could not be
    /// reopened within the client's request timeout, that last failure (then
    /// subscribe again from [`Subscription::next_seq`]). Failures it could
    /// resume from are never returned.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                self.next_seq = match self.pending.front() {
                    Some(following) => following.seq,
                    None => self.batch_end + 1,
                };
                return Some(Ok(message));
            }
            match self.next_batch().await? {
                Ok(batch) => {
                    if let Some(first) = batch.messages.first() {
                        // Not returned yet: resume from the first of them.
                        self.next_seq = first.seq;
                    }
                    self.batch_end = batch.seq;
                    self.pending.extend(batch.messages);
                }
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The next response as it came: messages (possibly none, then it only
    /// reports progress) and the sequence number up to which the channel was
    /// followed. Do not mix with [`Subscription::next`], which buffers.
    pub async fn next_batch(&mut self) -> Option<Result<MessageBatch, Error>> {
        match self.updates.recv().await? {
            Ok(response) => {
                self.next_seq = self.next_seq.max(response.seq + 1);
                let messages = response
                    .messages
                    .into_iter()
                    .map(|m| Message { seq: m.seq, payload: m.payload })
                    .collect();
                Some(Ok(MessageBatch { messages, seq: response.seq }))
            }
            Err(err) => {
                self.updates.close();
                Some(Err(err))
            }
        }
    }

    /// Where to resume this subscription in another one (`from_seq`):
    /// everything before it was returned by [`Subscription::next`].
    pub fn next_seq(&self) -> Version {
        self.next_seq
    }
}

impl Client {
    /// Publishes `payload` on `channel` (a name with the rules of a key);
    /// returns its sequence number once committed.
    pub async fn publish(
        &self,
        channel: impl Into<Bytes>,
        payload: impl Into<Bytes>,
    ) -> Result<Version, Error> {
        let (channel, payload) = (channel.into(), payload.into());
        check_key(&channel)?;
        check_value(&payload, self.max_value_bytes())?;
        let request_id = self.request_id()?;
        let op = Op::write_once("publish", self.shard_of(&channel));
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let request = proto::PublishRequest {
                    channel: channel.clone(),
                    payload: payload.clone(),
                    request_id: request_id.clone(),
                };
                async move { link.kv(max).publish(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(response.seq)
    }

    /// Follows `channel` from sequence number `from_seq` (0 = from now);
    /// returns once the subscription is in place, so every message published
    /// after this returns is delivered.
    pub async fn subscribe(
        &self,
        channel: impl Into<Bytes>,
        from_seq: Version,
    ) -> Result<Subscription, Error> {
        let channel = channel.into();
        check_key(&channel)?;
        let (first, stream) = self.open_subscription(&channel, from_seq).await?;
        let next_seq = first.seq + 1;
        let (tx, updates) = mpsc::channel(64);
        let client = self.clone();
        let task = tokio::spawn(follow(
            stream,
            next_seq,
            move |next: &Version| {
                let (client, channel, next) = (client.clone(), channel.clone(), *next);
                async move { client.open_subscription(&channel, next).await }
            },
            |next: &mut Version, response: &proto::SubscribeResponse| *next = response.seq + 1,
            tx,
        ));
        Ok(Subscription { updates, pending: Default::default(), next_seq, batch_end: first.seq, task })
    }

    async fn open_subscription(
        &self,
        channel: &Bytes,
        from_seq: Version,
    ) -> Result<Opened<proto::SubscribeResponse>, Error> {
        let op = Op { leader_confirmed: true, ..Op::kv("subscribe", self.shard_of(channel), false, false) };
        let request = proto::SubscribeRequest { channel: channel.clone(), from_seq };
        self.open_stream(op, move |mut kv| {
            let request = request.clone();
            async move { kv.subscribe(request).await }
        })
        .await
    }
}
