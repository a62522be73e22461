//! Change events, the raw material of `Watch` (issue 7): what applying a log
//! entry did to which key, and the bounded per-shard log of recent ones that
//! watchers read and resume from.
//!
//! [`KvState::apply_with_events`](crate::state_machine::KvState::apply_with_events)
//! records an [`Event`] for every change an entry makes, in op order:
//! - `Put` for a successful `Put` or `Increment` (the new value);
//! - `Delete` for a successful `Delete`;
//! - `Expired` when a record is removed because its deadline passed: by the
//!   background `Expire`, by a `Delete` that found it expired, or just before a
//!   `Put`/`Increment` replaces an expired record (which then gets its `Put`);
//! - `Message` for a `Publish` (pub/sub shares the log: a channel's messages
//!   are its `Message` events). Several messages can share an entry, so a
//!   message's sequence number is its entry's index and its place among the
//!   entry's messages: [`message_seq`].
//!
//! A failed condition, a remembered request id, `Touch` and `Extend` record
//! nothing (no key's value changes). Every event carries the entry's index as
//! its `version`, so a shard's events are ordered by version, and all events
//! of one entry share it.
//!
//! [`EventLog`] keeps the events of the most recent entries, whole entries only,
//! up to a bound. A reader that has seen everything up to version `v` asks for
//! what came after `v`; if those events were already dropped (or never known
//! here: before a snapshot this replica installed or restarted from), it gets
//! [`Compacted`] and must re-read the keys and watch from the current version.
//!
//! [`ShardEvents`] is a replica's log as the state machine (the only writer)
//! and the node's `Watch` streams (readers) share it; the state machine also
//! owns a [`tokio::sync::watch`] of the last recorded version that wakes the
//! streams, and whose closing (the replica stopped) ends them.
//!
//! Retention is by count (`--watch-retention-events` per shard, changes and
//! messages together), not by time: a busy shard keeps a shorter window.

use std::collections::VecDeque;
use std::sync::RwLock;

use bytes::Bytes;
use ringkv_core::Version;

/// The sequence number of the `position`-th message (from 0) of the entry at
/// `index`: `index × 65536 + position`. Increasing along the log, so along
/// every channel; an entry holds at most a proposal batch (1024 ops) of them.
pub fn message_seq(index: Version, position: u32) -> u64 {
    (index << MESSAGE_BITS) | u64::from(position.min(MAX_POSITION))
}

/// The entry index of a message sequence number.
pub fn message_index(seq: u64) -> Version {
    seq >> MESSAGE_BITS
}

/// The last sequence number an entry's messages can have.
pub fn last_message_seq(index: Version) -> u64 {
    message_seq(index, MAX_POSITION)
}

const MESSAGE_BITS: u32 = 16;
const MAX_POSITION: u32 = (1 << MESSAGE_BITS) - 1;

/// Events a shard keeps for watchers by default.
pub const DEFAULT_RETAINED_EVENTS: usize = 4096;

/// A replica's [`EventLog`], shared by its state machine and its watchers.
#[derive(Debug)]
pub struct ShardEvents {
    log: RwLock<EventLog>,
}

impl ShardEvents {
    pub fn new(applied: Version, max_events: usize) -> ShardEvents {
        ShardEvents { log: RwLock::new(EventLog::new(applied, max_events)) }
    }

    /// Sets how many events the log keeps (before the replica starts).
    pub fn set_max_events(&self, max_events: usize) {
        self.write().max_events = max_events.max(1);
    }

    /// See [`EventLog::record`].
    pub fn record(&self, index: Version, events: Vec<Event>) {
        self.write().record(index, events);
    }

    /// See [`EventLog::reset`].
    pub fn reset(&self, applied: Version) {
        self.write().reset(applied);
    }

    /// See [`EventLog::read_after`].
    pub fn read_after(&self, after: Version, limit: usize) -> Result<(Vec<Event>, Version), Compacted> {
        self.log.read().unwrap_or_else(|poisoned| poisoned.into_inner()).read_after(after, limit)
    }

    /// The last version recorded.
    pub fn applied(&self) -> Version {
        self.log.read().unwrap_or_else(|poisoned| poisoned.into_inner()).applied()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, EventLog> {
        // Every mutation is one call on the log, which leaves it consistent
        // even if a panic poisoned the lock.
        self.log.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What happened to a key, or a message on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
    Expired,
    /// A pub/sub message: `key` is the channel, `value` the payload. Channels
    /// and keys are separate name spaces: key watches never see messages.
    Message,
}

/// One change to one key, made by the log entry at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub version: Version,
    pub kind: EventKind,
    pub key: Bytes,
    /// The new value (`Put` only; empty otherwise).
    pub value: Bytes,
}

/// The events after `after` are no longer (or were never) in this replica's
/// log; it has those after `horizon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub horizon: Version,
}

/// A shard's recent events: complete for every entry after `horizon`, up to
/// `applied`, bounded by `max_events` (whole entries are dropped, oldest first).
#[derive(Debug, Clone)]
pub struct EventLog {
    events: VecDeque<Event>,
    horizon: Version,
    applied: Version,
    max_events: usize,
}

impl EventLog {
    /// An empty log for a replica whose state reflects the entries up to
    /// `applied` (its events are unknown).
    pub fn new(applied: Version, max_events: usize) -> EventLog {
        EventLog { events: VecDeque::new(), horizon: applied, applied, max_events: max_events.max(1) }
    }

    /// The last entry index whose events (possibly none) are recorded.
    pub fn applied(&self) -> Version {
        self.applied
    }

    /// Events after this version are all here.
    pub fn horizon(&self) -> Version {
        self.horizon
    }

    /// Records the events of the entry at `index` (there may be none: it still
    /// advances `applied`). Entries must come in increasing index order; an
    /// out-of-order one means the replica's state was replaced, so the log
    /// starts over there (see [`EventLog::reset`]).
    pub fn record(&mut self, index: Version, events: Vec<Event>) {
        if index <= self.applied {
            self.reset(index);
            return;
        }
        debug_assert!(events.iter().all(|e| e.version == index), "an entry's events carry its index");
        self.events.extend(events);
        self.applied = index;
        while self.events.len() > self.max_events {
            // Drop the oldest entry whole, so a reader never gets half of one.
            let Some(oldest) = self.events.front().map(|e| e.version) else { break };
            while self.events.front().is_some_and(|e| e.version == oldest) {
                self.events.pop_front();
            }
            self.horizon = oldest;
        }
    }

    /// The replica's state was replaced (a snapshot installed): the events
    /// before `applied` are unknown from here on.
    pub fn reset(&mut self, applied: Version) {
        self.events.clear();
        self.horizon = applied;
        self.applied = applied;
    }

    /// The events after version `after`, whole entries only, at most about
    /// `limit` (an entry is never split, so one large entry may exceed it),
    /// and the version the reader has then seen everything up to.
    pub fn read_after(&self, after: Version, limit: usize) -> Result<(Vec<Event>, Version), Compacted> {
        if after < self.horizon {
            return Err(Compacted { horizon: self.horizon });
        }
        let start = self.events.partition_point(|e| e.version <= after);
        let mut out: Vec<Event> = Vec::new();
        let mut reached = self.applied;
        for event in self.events.range(start..) {
            if out.len() >= limit.max(1) && out.last().is_some_and(|last| last.version != event.version) {
                reached = out.last().map_or(after, |last| last.version);
                break;
            }
            out.push(event.clone());
        }
        Ok((out, reached.max(after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(version: Version, key: &str) -> Event {
        Event {
            version,
            kind: EventKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
        }
    }

    fn versions(events: &[Event]) -> Vec<Version> {
        events.iter().map(|e| e.version).collect()
    }

    #[test]
    fn reads_resume_after_a_version_with_no_gap_and_no_duplicate() {
        let mut log = EventLog::new(10, 100);
        log.record(11, vec![put(11, "a"), put(11, "b")]);
        log.record(12, vec![]);
        log.record(13, vec![put(13, "a")]);
        let (all, reached) = log.read_after(10, 100).expect("in range");
        assert_eq!((versions(&all), reached), (vec![11, 11, 13], 13));
        let (rest, reached) = log.read_after(11, 100).expect("in range");
        assert_eq!((versions(&rest), reached), (vec![13], 13));
        let (none, reached) = log.read_after(13, 100).expect("in range");
        assert_eq!((none.len(), reached), (0, 13));
        // A limit never splits an entry, and says how far the reader got.
        let (first, reached) = log.read_after(10, 1).expect("in range");
        assert_eq!((versions(&first), reached), (vec![11, 11], 11));
    }

    #[test]
    fn the_bound_drops_whole_entries_and_moves_the_horizon() {
        let mut log = EventLog::new(0, 3);
        log.record(1, vec![put(1, "a"), put(1, "b")]);
        log.record(2, vec![put(2, "c")]);
        log.record(3, vec![put(3, "d")]);
        assert_eq!(log.horizon(), 1, "entry 1 (two events) went whole");
        assert_eq!(log.read_after(0, 10), Err(Compacted { horizon: 1 }));
        let (events, reached) = log.read_after(1, 10).expect("in range");
        assert_eq!((versions(&events), reached), (vec![2, 3], 3));
    }

    #[test]
    fn a_new_log_and_a_reset_know_nothing_before_them() {
        let mut log = EventLog::new(50, 10);
        assert_eq!(log.read_after(49, 10), Err(Compacted { horizon: 50 }));
        log.record(51, vec![put(51, "a")]);
        log.reset(80); // a snapshot at 80 was installed
        assert_eq!(log.read_after(51, 10), Err(Compacted { horizon: 80 }));
        assert_eq!(log.read_after(80, 10), Ok((vec![], 80)));
        // An entry at or below what was applied also starts over.
        log.record(81, vec![put(81, "b")]);
        log.record(81, vec![put(81, "b")]);
        assert_eq!(log.read_after(80, 10), Err(Compacted { horizon: 81 }));
    }
}
