//! Watching keys: [`Client::watch`] follows the changes to one key, or to every
//! key with a prefix, and resumes by itself across leader changes, node and
//! router restarts, with no gap and no duplicate.
//!
//! Routing directly, the client watches each shard the target covers on that
//! shard's leader (one stream for a key, one per shard for a prefix) and merges
//! the streams; through routers, it opens one stream on a router, which does
//! the same. Either way [`Watch::token`] says how far every shard got, and
//! [`Client::watch`] with [`WatchStart::After`] continues from there: in this
//! process or another, on any router or node.
//!
//! Events of one shard arrive in version order; events of different shards
//! are not ordered with each other (they have no common clock).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use ringkv_core::{ShardId, Version};
use ringkv_proto::v1 as proto;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Client, Op};
use crate::error::Error;
use crate::follow::{Opened, follow};

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One key.
    Key(Bytes),
    /// Every key that starts with these bytes (non-empty), in every shard.
    Prefix(Bytes),
}

/// Where a watch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStart {
    /// With the changes after the watch is in place.
    Now,
    /// A key watch only: with the change at this version and those after it
    /// (a version of the key's shard, e.g. from a `get`, plus one).
    Version(Version),
    /// Exactly after a position [`Watch::token`] gave (its target is the
    /// token's).
    After(ResumeToken),
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
    /// The key's time to live ran out.
    Expired,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: Bytes,
    /// The new value (`Put` only).
    pub value: Bytes,
    /// The version the change made (the shard's log index).
    pub version: Version,
}

/// What one response of a shard brought: its changes (possibly none: then it
/// only reports progress) and the version up to which the shard was followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub shard: ShardId,
    pub events: Vec<WatchEvent>,
    pub version: Version,
}

/// How far a watch got: per shard, the first version not yet delivered.
/// [`ResumeToken::encode`] gives the bytes to keep (a router sends the same
/// bytes); [`ResumeToken::decode`] reads them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    target: WatchTarget,
    next: BTreeMap<ShardId, Version>,
}

impl ResumeToken {
    pub fn target(&self) -> &WatchTarget {
        &self.target
    }

    /// Per shard, the first version not yet delivered.
    pub fn positions(&self) -> impl Iterator<Item = (ShardId, Version)> + '_ {
        self.next.iter().map(|(&shard, &next)| (shard, next))
    }

    /// The first version of `shard` not yet delivered.
    pub fn next_version(&self, shard: ShardId) -> Option<Version> {
        self.next.get(&shard).copied()
    }

    pub fn encode(&self) -> Bytes {
        let (key, prefix) = match &self.target {
            WatchTarget::Key(key) => (key.clone(), Bytes::new()),
            WatchTarget::Prefix(prefix) => (Bytes::new(), prefix.clone()),
        };
        let positions = self
            .next
            .iter()
            .map(|(&shard, &next_version)| proto::WatchPosition { shard, next_version })
            .collect();
        proto::ResumeToken { key, prefix, positions }.encode_to_vec().into()
    }

    /// Reads a token [`ResumeToken::encode`] wrote; anything else is
    /// `InvalidArgument`.
    pub fn decode(bytes: &[u8]) -> Result<ResumeToken, Error> {
        let bad = |why: &str| Error::InvalidArgument(format!("not a ringkv watch resume token: {why}"));
        let token = proto::ResumeToken::decode(bytes).map_err(|_| bad("undecodable"))?;
        let target = match (token.key.is_empty(), token.prefix.is_empty()) {
            (false, true) => WatchTarget::Key(token.key),
            (true, false) => WatchTarget::Prefix(token.prefix),
            _ => return Err(bad("it names no key or prefix")),
        };
        let mut next = BTreeMap::new();
        for position in token.positions {
            if position.shard == 0 || position.next_version == 0 {
                return Err(bad("a position is zero"));
            }
            if next.insert(position.shard, position.next_version).is_some() {
                return Err(bad("a shard appears twice"));
            }
        }
        if next.is_empty() {
            return Err(bad("it has no positions"));
        }
        Ok(ResumeToken { target, next })
    }

    fn covers(&self, shards: &[ShardId]) -> bool {
        self.next.len() == shards.len() && shards.iter().all(|shard| self.next.contains_key(shard))
    }
}

/// A watch in progress. Dropping it stops it.
pub struct Watch {
    updates: mpsc::Receiver<Result<proto::WatchResponse, Error>>,
    token: ResumeToken,
    /// Whether updates come from a router (which sends its own tokens).
    via_router: bool,
    /// An error was returned: the watch is over.
    ended: bool,
    tasks: JoinSet<()>,
}

impl Watch {
    /// The next response: a shard's changes, or only its progress (no events).
    /// An error ends the watch (`None` after it): `OUT_OF_RANGE`
    /// ([`Error::is_out_of_range`]) when a shard no longer has the changes the
    /// watch needs (re-read what you follow, then watch from now); or, when a
    /// broken stream could not be reopened within the client's request
    /// timeout, that last failure (then [`Watch::token`] still says where to
    /// resume, with [`WatchStart::After`]). Failures it could resume from are
    /// never returned.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, Error>> {
        if self.ended {
            return None;
        }
        let response = match self.updates.recv().await? {
            Ok(response) => response,
            Err(err) => return Some(Err(self.end(err))),
        };
        if self.via_router && !response.resume_token.is_empty() {
            match ResumeToken::decode(&response.resume_token) {
                Ok(token) => self.token = token,
                Err(err) => {
                    let err = Error::Unavailable(format!("the router sent a bad token: {err}"));
                    return Some(Err(self.end(err)));
                }
            }
        } else if response.shard != 0 {
            self.token.next.insert(response.shard, response.version + 1);
        }
        Some(Ok(WatchBatch {
            shard: response.shard,
            events: response.events.into_iter().filter_map(from_proto).collect(),
            version: response.version,
        }))
    }

    /// Ends the watch: nothing more is returned, and its streams stop.
    fn end(&mut self, err: Error) -> Error {
        self.ended = true;
        self.updates.close();
        self.tasks.abort_all();
        err
    }

    /// How far the watch got: everything before the token was delivered by
    /// [`Watch::next`]. Resume with [`WatchStart::After`].
    pub fn token(&self) -> &ResumeToken {
        &self.token
    }
}

fn from_proto(event: proto::WatchEvent) -> Option<WatchEvent> {
    let kind = match proto::WatchEventType::try_from(event.r#type).ok()? {
        proto::WatchEventType::Put => EventKind::Put,
        proto::WatchEventType::Delete => EventKind::Delete,
        proto::WatchEventType::Expired => EventKind::Expired,
        proto::WatchEventType::Unspecified => return None,
    };
    Some(WatchEvent { kind, key: event.key, value: event.value, version: event.version })
}

/// Responses a watch buffers before its streams wait for the reader.
const BUFFERED_RESPONSES: usize = 64;

impl Client {
    /// Starts following `target` from `start`; returns once the watch is in
    /// place on every shard it covers, so every change after this returns is
    /// delivered. The watch then resumes by itself after leader changes and
    /// restarts, each time within the client's request timeout.
    pub async fn watch(&self, target: WatchTarget, start: WatchStart) -> Result<Watch, Error> {
        let (target, start) = match start {
            WatchStart::After(token) => (token.target.clone(), WatchStart::After(token)),
            start => (target, start),
        };
        match &target {
            WatchTarget::Key(key) => ringkv_core::limits::check_key(key)?,
            WatchTarget::Prefix(prefix) if prefix.is_empty() => {
                return Err(Error::InvalidArgument("a watched prefix is not empty".into()));
            }
            WatchTarget::Prefix(prefix) => ringkv_core::limits::check_key(prefix)?,
        }
        if matches!((&target, &start), (WatchTarget::Prefix(_), WatchStart::Version(_))) {
            return Err(Error::InvalidArgument(
                "a prefix spans shards with versions of their own: start it now, or after a token".into(),
            ));
        }
        if self.needs_map() {
            self.refresh_map().await?;
        }
        if self.routes_directly() {
            self.watch_shards(target, start).await
        } else {
            self.watch_router(target, start).await
        }
    }

    /// Watches each shard the target covers on its leader.
    async fn watch_shards(&self, target: WatchTarget, start: WatchStart) -> Result<Watch, Error> {
        let shards: Vec<ShardId> = match &target {
            WatchTarget::Key(key) => vec![self.shard_for(key)?],
            WatchTarget::Prefix(_) => (1..=self.shard_count()?).collect(),
        };
        let starts: Vec<Version> = match &start {
            WatchStart::Now => vec![0; shards.len()],
            WatchStart::Version(version) => vec![(*version).max(1)],
            WatchStart::After(token) => {
                if !token.covers(&shards) {
                    return Err(Error::InvalidArgument(format!(
                        "the resume token's shards {:?} are not this cluster's {shards:?}",
                        token.next.keys().collect::<Vec<_>>()
                    )));
                }
                shards.iter().map(|shard| token.next[shard]).collect()
            }
        };
        let (tx, updates) = mpsc::channel(BUFFERED_RESPONSES);
        let mut tasks = JoinSet::new();
        let mut token = ResumeToken { target: target.clone(), next: BTreeMap::new() };
        // Open them all at once: a prefix covers every shard.
        let opens = shards.iter().zip(&starts).map(|(&shard, &start)| {
            let target = target.clone();
            async move { (shard, self.open_shard_watch(&target, shard, start).await) }
        });
        for (shard, opened) in futures::future::join_all(opens).await {
            let (first, stream) = opened?;
            let next = first.version + 1;
            token.next.insert(shard, next);
            let client = self.clone();
            let target = target.clone();
            tasks.spawn(follow(
                stream,
                next,
                move |next: &Version| {
                    let (client, target, next) = (client.clone(), target.clone(), *next);
                    async move { client.open_shard_watch(&target, shard, next).await }
                },
                |next: &mut Version, response: &proto::WatchResponse| *next = response.version + 1,
                tx.clone(),
            ));
        }
        Ok(Watch { updates, token, via_router: false, ended: false, tasks })
    }

    /// Opens one shard's watch on its leader, from `start` (0 = now).
    async fn open_shard_watch(
        &self,
        target: &WatchTarget,
        shard: ShardId,
        start: Version,
    ) -> Result<Opened<proto::WatchResponse>, Error> {
        let mut request = proto::WatchRequest { start_version: start, ..Default::default() };
        match target {
            WatchTarget::Key(key) => request.key = key.clone(),
            WatchTarget::Prefix(prefix) => {
                request.prefix = prefix.clone();
                request.shard = shard;
            }
        }
        let op = Op { leader_confirmed: true, ..Op::kv("watch", Some(shard), false, false) };
        self.open_stream(op, move |mut kv| {
            let request = request.clone();
            async move { kv.watch(request).await }
        })
        .await
    }

    /// Opens one watch on a router, which follows the shards itself.
    async fn watch_router(&self, target: WatchTarget, start: WatchStart) -> Result<Watch, Error> {
        let (first, stream) = self.open_router_watch(&target, &start).await?;
        let token = ResumeToken::decode(&first.resume_token)
            .map_err(|err| Error::Unavailable(format!("the router sent a bad token: {err}")))?;
        let (tx, updates) = mpsc::channel(BUFFERED_RESPONSES);
        let mut tasks = JoinSet::new();
        let client = self.clone();
        tasks.spawn(follow(
            stream,
            token.clone(),
            move |token: &ResumeToken| {
                let (client, token) = (client.clone(), token.clone());
                async move {
                    let target = token.target.clone();
                    client.open_router_watch(&target, &WatchStart::After(token)).await
                }
            },
            |token: &mut ResumeToken, response: &proto::WatchResponse| {
                if let Ok(newer) = ResumeToken::decode(&response.resume_token) {
                    *token = newer;
                }
            },
            tx,
        ));
        Ok(Watch { updates, token, via_router: true, ended: false, tasks })
    }

    async fn open_router_watch(
        &self,
        target: &WatchTarget,
        start: &WatchStart,
    ) -> Result<Opened<proto::WatchResponse>, Error> {
        let mut request = proto::WatchRequest::default();
        match target {
            WatchTarget::Key(key) => request.key = key.clone(),
            WatchTarget::Prefix(prefix) => request.prefix = prefix.clone(),
        }
        match start {
            WatchStart::Now => {}
            WatchStart::Version(version) => request.start_version = *version,
            WatchStart::After(token) => request.resume_token = token.encode(),
        }
        self.open_stream(Op::kv("watch", None, false, false), move |mut kv| {
            let request = request.clone();
            async move { kv.watch(request).await }
        })
        .await
    }
}
