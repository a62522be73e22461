//! The node's event streams: `Watch` (changes to a key or a prefix) and
//! `Subscribe` (a pub/sub channel's messages) both follow one shard's
//! [`ShardEvents`] from a cursor, filtered; they differ only in what they pick
//! and how they frame it.
//!
//! A stream's first response comes at once and carries nothing but its
//! starting point, so a caller knows the stream is in place (a change made
//! after that is delivered) and, for "from now", where now was. After that a
//! response carries the matching events of one or more whole log entries, or,
//! at most once per [`PROGRESS_EVERY`] while nothing matched but the shard
//! moved on, only how far it got, so that a resume starts from a recent
//! version rather than one already dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;

use bytes::Bytes;
use ringkv_core::{ShardId, Version};
use tokio::sync::watch;
use tonic::Status;

use crate::events::{Compacted, Event, EventKind, ShardEvents, message_seq};
use crate::shard::Shard;

/// Events a stream considers per response, at most (whole entries).
const BATCH: usize = 256;

/// How often a stream that matched nothing still says how far it got.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a stream picks from its shard's events.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Changes to one key.
    Key(Bytes),
    /// Changes to the keys with a prefix.
    Prefix(Bytes),
    /// Messages published on one channel.
    Channel(Bytes),
}

impl Filter {
    fn matches(&self, event: &Event) -> bool {
        let message = event.kind == EventKind::Message;
        match self {
            Filter::Key(key) => !message && event.key == *key,
            Filter::Prefix(prefix) => !message && event.key.starts_with(prefix),
            Filter::Channel(channel) => message && event.key == *channel,
        }
    }
}

/// The OUT_OF_RANGE answer for a cursor whose events are gone; it names the
/// first position that works, as the stream numbers them (a version, or for
/// a channel a message sequence number).
pub fn compacted(shard: ShardId, c: Compacted, filter: &Filter) -> Status {
    let next = c.horizon + 1;
    let (what, position) = match filter {
        Filter::Channel(_) => ("messages", format!("seq {}", message_seq(next, 0))),
        Filter::Key(_) | Filter::Prefix(_) => ("events", format!("version {next}")),
    };
    Status::out_of_range(format!(
        "shard {shard} no longer has the {what} before {position} (its retention is \
         --watch-retention-events): re-read what you follow and start again from {position}"
    ))
}

/// Where a stream starts: after `start - 1`, or after the last applied entry
/// when `start` is 0 (from now). Fails at once if those events are gone, or
/// if `start` lies beyond the end of the leader's log (a position from
/// another cluster, or one that was wiped: waiting for it would skip
/// everything before it).
pub fn cursor_for(shard: &Shard, start: Version, filter: &Filter) -> Result<Version, Status> {
    let cursor = match start {
        0 => shard.events.applied(),
        start => start - 1,
    };
    let last_log = shard.status().last_log;
    if cursor > last_log {
        return Err(Status::out_of_range(format!(
            "position {start} is beyond the end of shard {}'s log (index {last_log}): it is not from this \
             cluster; re-read what you follow and start again from now",
            shard.id
        )));
    }
    shard.events.read_after(cursor, 0).map_err(|c| compacted(shard.id, c, filter))?;
    Ok(cursor)
}

/// How often an idle stream checks that its replica still leads the shard;
/// one that stepped down ends (UNAVAILABLE), so the caller resumes on the new
/// leader rather than wait on a replica that no longer learns of new entries
/// in time.
pub const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// How many streams of each kind are open on a node.
#[derive(Debug, Default)]
pub struct OpenStreams {
    pub watches: Arc<AtomicU64>,
    pub subscriptions: Arc<AtomicU64>,
}

/// Counts one open stream while it lives.
struct Counted(Arc<AtomicU64>);

impl Counted {
    fn new(counter: &Arc<AtomicU64>) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One stream's state between responses.
pub struct Watcher {
    shard: ShardId,
    /// The replica's Raft, to notice that it stepped down.
    raft: crate::raft_types::Raft,
    events: Arc<ShardEvents>,
    progress: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    filter: Filter,
    /// Every event up to here has been considered.
    cursor: Version,
    /// Messages numbered below this are not delivered (a subscription from a
    /// sequence number inside an entry).
    skip_below: u64,
    /// The version the caller last heard of; `None` before the first response.
    told: Option<Version>,
    told_at: Instant,
    _counted: Counted,
}

impl Watcher {
    /// A stream of `shard`'s events after `cursor` (see [`cursor_for`]),
    /// counted in `open` while it lives.
    pub fn new(
        shard: &Shard,
        filter: Filter,
        cursor: Version,
        stopping: watch::Receiver<bool>,
        open: &OpenStreams,
    ) -> Watcher {
        let counter = match filter {
            Filter::Channel(_) => &open.subscriptions,
            Filter::Key(_) | Filter::Prefix(_) => &open.watches,
        };
        Watcher {
            _counted: Counted::new(counter),
            shard: shard.id,
            raft: shard.raft.clone(),
            events: shard.events.clone(),
            progress: shard.progress.clone(),
            stopping,
            filter,
            cursor,
            skip_below: 0,
            told: None,
            told_at: Instant::now(),
        }
    }

    /// Delivers no message numbered below `seq`.
    pub fn skip_messages_below(mut self, seq: u64) -> Watcher {
        self.skip_below = seq;
        self
    }

    /// The matching events of `batch` (whole entries), each with its number:
    /// a message's sequence number, else its version.
    fn pick(&self, batch: Vec<Event>) -> Vec<(u64, Event)> {
        let mut picked = Vec::new();
        // The place of a message among its entry's messages (all channels).
        let (mut entry, mut position) = (0, 0);
        for event in batch {
            let number = if event.kind == EventKind::Message {
                if event.version != entry {
                    (entry, position) = (event.version, 0);
                }
                position += 1;
                message_seq(event.version, position - 1)
            } else {
                event.version
            };
            if self.filter.matches(&event) && number >= self.skip_below {
                picked.push((number, event));
            }
        }
        picked
    }

    /// The next response: matching events with their numbers (a message's
    /// sequence number, else the version), and the version up to which
    /// everything has been considered; or the error that ends the stream.
    pub async fn next(&mut self) -> Result<(Vec<(u64, Event)>, Version), Status> {
        if self.told.is_none() {
            self.told = Some(self.cursor);
            return Ok((Vec::new(), self.cursor));
        }
        loop {
            let told = self.told.unwrap_or(self.cursor);
            let (batch, reached) = self
                .events
                .read_after(self.cursor, BATCH)
                .map_err(|c| compacted(self.shard, c, &self.filter))?;
            self.cursor = reached;
            let matching = self.pick(batch);
            let progress_due = told < reached && self.told_at.elapsed() >= PROGRESS_EVERY;
            if !matching.is_empty() || progress_due {
                self.told = Some(reached);
                self.told_at = Instant::now();
                return Ok((matching, reached));
            }
            if self.events.applied() > self.cursor {
                continue; // more entries already recorded
            }
            // A timer, not a wait for a condition: a progress note is due by
            // time even when no entry is applied, and leadership is checked
            // by time (see LEADERSHIP_CHECK).
            let wait_for_progress = tokio::time::sleep(PROGRESS_EVERY);
            let leadership_check = tokio::time::sleep(LEADERSHIP_CHECK);
            tokio::select! {
                changed = self.progress.changed() => {
                    changed.map_err(|_| Status::unavailable(format!(
                        "shard {}'s replica on this node stopped: resume elsewhere", self.shard
                    )))?;
                }
                _ = self.stopping.wait_for(|stop| *stop) => {
                    return Err(Status::unavailable("the node is shutting down: resume elsewhere"));
                }
                // Wake to send a due progress note even when nothing is applied.
                () = wait_for_progress, if told < self.cursor => {}
                () = leadership_check => {
                    if self.raft.server_metrics().borrow().state != ServerState::Leader {
                        return Err(Status::unavailable(format!(
                            "this node no longer leads shard {}: resume on its leader", self.shard
                        )));
                    }
                }
            }
        }
    }

    /// This watcher as a stream of `frame`d responses that ends after the
    /// first error.
    pub fn into_stream<T, F>(self, frame: F) -> EventStream<T>
    where
        T: Send + 'static,
        F: Fn(ShardId, Vec<(u64, Event)>, Version) -> T + Send + Sync + 'static,
    {
        Box::pin(futures::stream::unfold(Some((self, frame)), |state| async move {
            let (mut watcher, frame) = state?;
            match watcher.next().await {
                Ok((events, reached)) => {
                    let response = frame(watcher.shard, events, reached);
                    Some((Ok(response), Some((watcher, frame))))
                }
                Err(status) => Some((Err(status), None)),
            }
        }))
    }
}

/// A stream of responses of type `T`.
pub type EventStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;
