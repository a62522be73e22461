//! The in-memory KV state machine of one shard.
//!
//! [`KvState`] owns a shard's replicated data: the map key → [`Record`] (value,
//! version, optional absolute deadline), and — on the meta shard — the
//! [`ClusterMap`]. The Raft storage adapter feeds it committed entries through
//! [`KvState::apply`]; the services read it through [`KvState::get`]; the leader's
//! background expiry task asks [`KvState::expired_keys`] what to propose for removal;
//! snapshots go through [`KvState::encode_snapshot`] / [`KvState::decode_snapshot`].
//!
//! It is pure: no tokio, tonic or sled, and no wall clock. "Now" is always a
//! parameter — [`Command::now_ms`] (the proposing leader's clock) when applying, the
//! caller's `now_ms` when reading — so every replica that applies the same log ends in
//! the same state, and every rule here is testable without a runtime.
//!
//! ## Invariants
//!
//! - **Deterministic apply.** The state after `apply(index, command)` depends only on
//!   the previous state, `index` and `command`. Iteration is over `BTreeMap`s and
//!   `BTreeSet`s only; nothing reads a clock or a random source. A failed condition, a
//!   missing key or a non-integer counter is a *response* ([`OpResult`]), never a
//!   panic or an error: apply never panics on any input. Every op of one command gets
//!   the entry's log index as its version, so a batch that writes one key twice leaves
//!   it at that index.
//! - **Expired = absent.** A record is *live* at `t` if it has no deadline or its
//!   deadline is strictly after `t` (`expires_at_ms == t` is already expired). Every op
//!   and every read treats a stored-but-expired record exactly like an absent key, even
//!   before a background `Expire` removes it. Physical removal is therefore invisible
//!   to reads; it only reclaims memory (and is what `Expire` counts).
//! - **A failed op changes nothing** — with one deliberate exception: a `Delete` that
//!   finds the key stored but expired removes it physically and still reports
//!   `deleted = false`, because logically the key was already gone; the delete simply
//!   did the background expiry's work early. Successful `Put`/`Increment` over an
//!   expired record replace it like an absent key (a new key: the old TTL is not kept).
//! - **Index consistency.** `requests_by_age` holds exactly one `(until, id)` per
//!   remembered request id. `expiry` holds exactly one `(expires_at_ms, key)` pair for
//!   every stored record with a deadline and nothing else, and `approx_bytes` is the
//!   sum of key and value lengths of all stored records. Both are derived data: every
//!   mutation of `map` goes through `store` or `unstore`, which keep them in step,
//!   and they are never serialized — deserialization (serde or
//!   [`KvState::decode_snapshot`]) rebuilds them from the map. Thanks to the index,
//!   [`KvState::expired_keys`] costs O(log n + expired keys returned), not O(n).
//!
//! ## Request ids
//!
//! A client write may carry a request id (`Op::Once`). The shard remembers each
//! id with the write's result until the id's `retain_until_ms` (set by the
//! leader: its clock plus the retention window) has passed by a later entry's
//! clock, and at most [`MAX_REMEMBERED_REQUESTS`] of them (the one due soonest
//! is forgotten first). A write whose id is remembered changes nothing and
//! returns the remembered result, so a client's retry after a lost answer
//! applies once. Forgetting is driven by entry clocks and the bound, both
//! deterministic, and the ids are part of the snapshot, so every replica
//! answers a retry the same way. A retry that comes after its id was forgotten
//! applies again: the guarantee holds within the window.
//!
//! ## Snapshots
//!
//! [`KvState::encode_snapshot`] writes postcard of a versioned envelope (`V3 { map,
//! cluster_map, rebalance, requests }`; V1 and V2 still read); [`KvState::decode_snapshot`] reads it back, rejects trailing bytes
//! and rebuilds the derived indexes. `KvState`'s own `Serialize`/`Deserialize` use the
//! same envelope, so any serde path yields a consistent state; no separate "rebuild"
//! call exists or is needed. Integrity (crc32) and atomic file handling are the
//! snapshot store's job, not this module's.
//!
//! ## Caveats / not done yet
//!
//! - A snapshot is built from `clone()` (or `encode_snapshot`) of the whole state,
//!   O(keys) while the caller holds the state; a persistent/copy-on-write map would let
//!   applies continue during a long snapshot.
//! - `Condition::IfVersion(0)` never succeeds (0 means "absent", no live key has
//!   version 0); it is not an alias for `IfAbsent` as etcd's `mod_revision == 0` is.
//! - A deadline at or before `now_ms` is stored as given: `Put`/`Increment` then write
//!   a key that is already expired, and `Touch` expires the key at once. The leader's
//!   TTL validation keeps this from happening for real requests.
//! - Increment accepts leading zeros and `-0` (looser than Redis); results are stored
//!   in canonical form.
//! - No memory budget yet; `approx_bytes` ignores per-record overhead and the
//!   remembered request ids.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ringkv_core::rebalance::Plan;
use ringkv_core::{ClusterMap, Version};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::{Command, Condition, IncrementError, IncrementOk, Op, OpResult, Response, UnixMs};
use crate::events::{Event, EventKind};

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Bytes,
    /// The log index of the write that last set the value (Touch does not change it).
    pub version: Version,
    /// Absolute deadline in unix ms; the record is expired at any `now >= deadline`.
    pub expires_at_ms: Option<UnixMs>,
}

impl Record {
    /// Whether the record is live (not expired) at `now_ms`.
    pub fn is_live(&self, now_ms: UnixMs) -> bool {
        self.expires_at_ms.is_none_or(|deadline| deadline > now_ms)
    }

    /// The TTL to report to a client at `now_ms`: 0 means "no expiry", so a record
    /// with a deadline always reports at least 1 (including, for callers that did not
    /// check liveness, a record that has already expired).
    pub fn ttl_remaining_ms(&self, now_ms: UnixMs) -> u64 {
        match self.expires_at_ms {
            None => 0,
            Some(deadline) => deadline.saturating_sub(now_ms).max(1),
        }
    }
}

/// A shard's replicated data. See the module docs for its invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvState {
    /// Every stored record, expired-but-not-yet-removed ones included.
    map: BTreeMap<Bytes, Record>,
    /// The cluster map (meta shard only).
    cluster_map: Option<ClusterMap>,
    /// The committed rebalance plan (meta shard only), running or finished.
    rebalance: Option<Plan>,
    /// Derived: `(expires_at_ms, key)` for every record in `map` with a deadline,
    /// and nothing else. Ordered by deadline, so the expired ones are a prefix.
    expiry: BTreeSet<(UnixMs, Bytes)>,
    /// Derived: sum of key and value lengths over `map`.
    approx_bytes: u64,
    /// Request ids of recent client writes (`Op::Once`) → (remembered until,
    /// the write's result). See "Request ids" in the module docs.
    requests: BTreeMap<Bytes, (UnixMs, OpResult)>,
    /// Derived: `(until, id)` for every entry of `requests`, oldest first.
    requests_by_age: BTreeSet<(UnixMs, Bytes)>,
    /// Where applies record their events while [`KvState::apply_with_events`]
    /// runs, and how many messages the entry being applied published so far.
    /// Not state: never compared, never serialized.
    sink: EventSink,
}

/// Events being recorded (`Some`) or not (`None`), and the entry's message
/// count; equal to any other sink, so it never makes two states differ.
#[derive(Debug, Clone, Default)]
struct EventSink(Option<Vec<Event>>, u32);

impl PartialEq for EventSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EventSink {}

/// Most request ids a shard remembers; past it the one due to be forgotten
/// soonest goes first. At ~150 bytes each, 100k ids are ~15 MB per shard.
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;

impl KvState {
    /// Applies the command of the log entry at `index`: one result per op, in order.
    /// Every op uses `index` as the version it writes and `command.now_ms` as "now".
    pub fn apply(&mut self, index: u64, command: &Command) -> Response {
        let now_ms = command.now_ms;
        self.forget_requests(now_ms);
        self.sink.1 = 0;
        let results = command.ops.iter().map(|op| self.apply_op(index, now_ms, op)).collect();
        Response { results }
    }

    /// [`KvState::apply`], appending to `events` what the entry changed (see
    /// [`crate::events`]).
    pub fn apply_with_events(&mut self, index: u64, command: &Command, events: &mut Vec<Event>) -> Response {
        self.sink.0 = Some(std::mem::take(events));
        let response = self.apply(index, command);
        *events = self.sink.0.take().unwrap_or_default();
        response
    }

    fn emit(&mut self, version: u64, kind: EventKind, key: &Bytes, value: &Bytes) {
        if let Some(events) = &mut self.sink.0 {
            events.push(Event { version, kind, key: key.clone(), value: value.clone() });
        }
    }

    /// Records `Expired` for a stored record at `key` that is expired at
    /// `now_ms` (about to be replaced or removed).
    fn emit_if_expired(&mut self, version: u64, now_ms: UnixMs, key: &Bytes) {
        if self.map.get(key.as_ref()).is_some_and(|record| !record.is_live(now_ms)) {
            self.emit(version, EventKind::Expired, key, &Bytes::new());
        }
    }

    /// Whether `request_id` is remembered: a retry of a write that was
    /// applied (its answer will be the first result, whatever limits say now).
    pub fn remembers_request(&self, request_id: &[u8]) -> bool {
        self.requests.contains_key(request_id)
    }

    /// How many request ids the shard remembers now.
    pub fn remembered_requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether some remembered request id is due to be forgotten at `now_ms`
    /// (the next applied entry with that clock will drop it).
    pub fn has_requests_due(&self, now_ms: UnixMs) -> bool {
        self.requests_by_age.first().is_some_and(|(until, _)| *until <= now_ms)
    }

    /// The live record of `key` at `now_ms` (expired keys are absent).
    pub fn get(&self, key: &[u8], now_ms: UnixMs) -> Option<&Record> {
        self.map.get(key).filter(|record| record.is_live(now_ms))
    }

    /// Up to `limit` keys that are stored but expired at `now_ms`, soonest deadline
    /// first (ties by key), for the leader's background expiry. O(log n + returned).
    pub fn expired_keys(&self, now_ms: UnixMs, limit: usize) -> Vec<Bytes> {
        self.expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Every record live at `now_ms`, in key order: a point-in-time copy for a
    /// backup. The values are shared `Bytes`, so the copy costs the tree, not
    /// the data.
    pub fn live_records(&self, now_ms: UnixMs) -> Vec<(Bytes, Record)> {
        self.map
            .iter()
            .filter(|(_, record)| record.is_live(now_ms))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect()
    }

    /// The cluster map (meta shard only).
    pub fn cluster_map(&self) -> Option<&ClusterMap> {
        self.cluster_map.as_ref()
    }

    /// The committed rebalance plan (meta shard only).
    pub fn rebalance(&self) -> Option<&Plan> {
        self.rebalance.as_ref()
    }

    /// Number of stored keys, expired-but-not-yet-removed included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sum of key and value lengths of all stored records (expired ones included),
    /// kept incrementally for metrics and a later memory budget. Ignores per-record
    /// overhead.
    pub fn approx_bytes(&self) -> u64 {
        self.approx_bytes
    }

    /// Serializes the replicated state (not the derived indexes) for a snapshot.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard into a Vec cannot fail for these types")
    }

    /// Reads a snapshot written by [`KvState::encode_snapshot`] and rebuilds the
    /// derived indexes. Trailing bytes are refused (`DeserializeBadEncoding`), so a
    /// framing mistake in the snapshot store does not go unnoticed.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KvState, postcard::Error> {
        crate::codec::decode_all(bytes)
    }

    fn apply_op(&mut self, index: u64, now_ms: UnixMs, op: &Op) -> OpResult {
        match op {
            Op::Put { key, value, expires_at_ms, condition } => {
                self.put(index, now_ms, key, value, *expires_at_ms, *condition)
            }
            Op::Delete { key, if_version } => self.delete(index, now_ms, key, *if_version),
            Op::Touch { key, expires_at_ms } => self.touch(now_ms, key, *expires_at_ms),
            Op::Increment { key, delta, expires_at_ms } => {
                OpResult::Increment(self.increment(index, now_ms, key, *delta, *expires_at_ms))
            }
            Op::Expire { keys } => self.expire(index, now_ms, keys),
            Op::SetClusterMap { expected_epoch, map } => self.set_cluster_map(*expected_epoch, map),
            Op::SetPlan { expected_revision, expected_epoch, plan } => {
                self.set_plan(*expected_revision, *expected_epoch, plan)
            }
            Op::Once { request_id, retain_until_ms, op } => {
                self.once(index, now_ms, request_id, *retain_until_ms, op)
            }
            Op::Extend { key, expires_at_ms } => self.extend(now_ms, key, *expires_at_ms),
            Op::Publish { channel, payload } => {
                self.emit(index, EventKind::Message, channel, payload);
                let position = self.sink.1;
                self.sink.1 += 1;
                OpResult::Publish { seq: crate::events::message_seq(index, position) }
            }
        }
    }

    /// Applies `op` unless `request_id` is remembered; remembers its result.
    fn once(&mut self, index: u64, now_ms: UnixMs, request_id: &Bytes, until: UnixMs, op: &Op) -> OpResult {
        if let Some((_, result)) = self.requests.get(request_id) {
            return result.clone();
        }
        let result = self.apply_op(index, now_ms, op);
        // Remembered only if it would outlive this entry (a leader's clock far
        // behind the entry's could propose one that does not).
        if until > now_ms {
            self.requests.insert(request_id.clone(), (until, result.clone()));
            self.requests_by_age.insert((until, request_id.clone()));
            while self.requests.len() > MAX_REMEMBERED_REQUESTS {
                let Some((_, oldest)) = self.requests_by_age.pop_first() else { break };
                self.requests.remove(&oldest);
            }
        }
        result
    }

    /// Forgets the request ids whose time ran out at `now_ms`.
    fn forget_requests(&mut self, now_ms: UnixMs) {
        while let Some((until, _)) = self.requests_by_age.first()
            && *until <= now_ms
        {
            let (_, id) = self.requests_by_age.pop_first().expect("first() was Some");
            self.requests.remove(&id);
        }
    }

    /// The version of the live record at `key`, 0 if none.
    fn live_version(&self, key: &[u8], now_ms: UnixMs) -> Version {
        self.get(key, now_ms).map_or(0, |record| record.version)
    }

    fn put(
        &mut self,
        index: u64,
        now_ms: UnixMs,
        key: &Bytes,
        value: &Bytes,
        expires_at_ms: Option<UnixMs>,
        condition: Condition,
    ) -> OpResult {
        let live = self.get(key, now_ms);
        let allowed = match condition {
            Condition::None => true,
            Condition::IfAbsent => live.is_none(),
            Condition::IfVersion(version) => live.is_some_and(|r| r.version == version),
        };
        if !allowed {
            return OpResult::Put { succeeded: false, version: self.live_version(key, now_ms) };
        }
        self.emit_if_expired(index, now_ms, key);
        self.emit(index, EventKind::Put, key, value);
        self.store(key, Record { value: value.clone(), version: index, expires_at_ms });
        OpResult::Put { succeeded: true, version: index }
    }

    fn delete(&mut self, index: u64, now_ms: UnixMs, key: &Bytes, if_version: Option<Version>) -> OpResult {
        let Some(record) = self.map.get(key.as_ref()) else {
            return OpResult::Delete { deleted: false, version: 0 };
        };
        if !record.is_live(now_ms) {
            // Logically absent already: reclaim it, but report that nothing was deleted.
            self.emit(index, EventKind::Expired, key, &Bytes::new());
            self.unstore(key);
            return OpResult::Delete { deleted: false, version: 0 };
        }
        if if_version.is_some_and(|version| version != record.version) {
            return OpResult::Delete { deleted: false, version: record.version };
        }
        self.emit(index, EventKind::Delete, key, &Bytes::new());
        self.unstore(key);
        OpResult::Delete { deleted: true, version: index }
    }

    fn touch(&mut self, now_ms: UnixMs, key: &Bytes, expires_at_ms: Option<UnixMs>) -> OpResult {
        let Some(record) = self.get(key, now_ms) else {
            return OpResult::Touch { found: false, expires_at_ms: None };
        };
        let record = Record { expires_at_ms, ..record.clone() };
        self.store(key, record);
        OpResult::Touch { found: true, expires_at_ms }
    }

    fn extend(&mut self, now_ms: UnixMs, key: &Bytes, expires_at_ms: UnixMs) -> OpResult {
        let Some(record) = self.get(key, now_ms) else {
            return OpResult::Extend { found: false, expires_at_ms: None };
        };
        match record.expires_at_ms {
            Some(current) if current < expires_at_ms => {
                let record = Record { expires_at_ms: Some(expires_at_ms), ..record.clone() };
                self.store(key, record);
                OpResult::Extend { found: true, expires_at_ms: Some(expires_at_ms) }
            }
            kept => OpResult::Extend { found: true, expires_at_ms: kept },
        }
    }

    fn increment(
        &mut self,
        index: u64,
        now_ms: UnixMs,
        key: &Bytes,
        delta: i64,
        expires_at_ms: Option<UnixMs>,
    ) -> Result<IncrementOk, IncrementError> {
        let (current, kept_deadline) = match self.get(key, now_ms) {
            Some(record) => (parse_i64(&record.value)?, record.expires_at_ms),
            None => (0, None),
        };
        let value = current.checked_add(delta).ok_or(IncrementError::Overflow)?;
        let record = Record {
            value: Bytes::from(value.to_string()),
            version: index,
            expires_at_ms: expires_at_ms.or(kept_deadline),
        };
        self.emit_if_expired(index, now_ms, key);
        self.emit(index, EventKind::Put, key, &record.value);
        self.store(key, record);
        Ok(IncrementOk { value, version: index })
    }

    fn expire(&mut self, index: u64, now_ms: UnixMs, keys: &[Bytes]) -> OpResult {
        let mut removed = 0;
        for key in keys {
            if self.map.get(key.as_ref()).is_some_and(|record| !record.is_live(now_ms)) {
                self.emit(index, EventKind::Expired, key, &Bytes::new());
                self.unstore(key);
                removed += 1;
            }
        }
        OpResult::Expire { removed }
    }

    fn set_cluster_map(&mut self, expected_epoch: Option<u64>, map: &ClusterMap) -> OpResult {
        let current_epoch = self.cluster_map.as_ref().map(|current| current.epoch);
        // Epochs only grow: caches compare them, so a reused epoch would be a lie.
        if current_epoch != expected_epoch || map.epoch <= current_epoch.unwrap_or(0) {
            return OpResult::SetClusterMap { succeeded: false, epoch: current_epoch.unwrap_or(0) };
        }
        self.cluster_map = Some(map.clone());
        OpResult::SetClusterMap { succeeded: true, epoch: map.epoch }
    }

    /// Replaces the plan if its revision is `expected_revision` (0: no plan yet),
    /// the new one's is greater, and the map is at `expected_epoch` if given.
    fn set_plan(&mut self, expected_revision: u64, expected_epoch: Option<u64>, plan: &Plan) -> OpResult {
        let current = self.rebalance.as_ref().map_or(0, |p| p.revision);
        let epoch = self.cluster_map.as_ref().map(|m| m.epoch);
        if current != expected_revision
            || plan.revision <= current
            || expected_epoch.is_some_and(|e| Some(e) != epoch)
        {
            return OpResult::SetPlan { succeeded: false, revision: current };
        }
        self.rebalance = Some(plan.clone());
        OpResult::SetPlan { succeeded: true, revision: plan.revision }
    }

    /// Inserts or replaces the record at `key`, keeping the derived indexes in step.
    /// The only way records enter `map`.
    fn store(&mut self, key: &Bytes, record: Record) {
        self.unstore(key);
        if let Some(deadline) = record.expires_at_ms {
            self.expiry.insert((deadline, key.clone()));
        }
        self.approx_bytes += (key.len() + record.value.len()) as u64;
        self.map.insert(key.clone(), record);
    }

    /// Removes the record at `key` if any, keeping the derived indexes in step. The
    /// only way records leave `map`.
    fn unstore(&mut self, key: &Bytes) {
        if let Some(old) = self.map.remove(key.as_ref()) {
            if let Some(deadline) = old.expires_at_ms {
                self.expiry.remove(&(deadline, key.clone()));
            }
            self.approx_bytes -= (key.len() + old.value.len()) as u64;
        }
    }

    /// Builds the state from its replicated parts, deriving the indexes.
    fn from_parts(
        map: BTreeMap<Bytes, Record>,
        cluster_map: Option<ClusterMap>,
        rebalance: Option<Plan>,
        requests: BTreeMap<Bytes, (UnixMs, OpResult)>,
    ) -> KvState {
        let expiry = map
            .iter()
            .filter_map(|(key, record)| record.expires_at_ms.map(|deadline| (deadline, key.clone())))
            .collect();
        let approx_bytes = map.iter().map(|(key, r)| (key.len() + r.value.len()) as u64).sum();
        let requests_by_age = requests.iter().map(|(id, (until, _))| (*until, id.clone())).collect();
        KvState {
            map,
            cluster_map,
            rebalance,
            expiry,
            approx_bytes,
            requests,
            requests_by_age,
            sink: EventSink::default(),
        }
    }
}

/// Parses a counter strictly: an optional leading `-`, then one or more ASCII digits,
/// fitting in an i64. No `+`, no whitespace, no empty value.
fn parse_i64(value: &[u8]) -> Result<i64, IncrementError> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(IncrementError::NotAnInteger);
    }
    // All ASCII, so valid UTF-8; `from_str` then only fails on overflow.
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or(IncrementError::NotAnInteger)
}

/// The serialized form of [`KvState`], borrowed for writing. Versioned, so a later
/// format can be added as `V2` and old snapshots still read.
#[derive(Serialize)]
#[serde(rename = "KvStateSnapshot")]
enum SnapshotRef<'a> {
    #[allow(dead_code)] // written by earlier versions; read below
    V1 { map: &'a BTreeMap<Bytes, Record>, cluster_map: &'a Option<ClusterMap> },
    #[allow(dead_code)] // written by earlier versions; read below
    /// V1 plus the rebalance plan.
    V2 { map: &'a BTreeMap<Bytes, Record>, cluster_map: &'a Option<ClusterMap>, rebalance: &'a Option<Plan> },
    /// V2 plus the remembered request ids.
    V3 {
        map: &'a BTreeMap<Bytes, Record>,
        cluster_map: &'a Option<ClusterMap>,
        rebalance: &'a Option<Plan>,
        requests: &'a BTreeMap<Bytes, (UnixMs, OpResult)>,
    },
}

/// The serialized form of [`KvState`], owned for reading. Must mirror [`SnapshotRef`].
#[derive(Deserialize)]
#[serde(rename = "KvStateSnapshot")]
enum SnapshotOwned {
    V1 {
        map: BTreeMap<Bytes, Record>,
        cluster_map: Option<ClusterMap>,
    },
    V2 {
        map: BTreeMap<Bytes, Record>,
        cluster_map: Option<ClusterMap>,
        rebalance: Option<Plan>,
    },
    V3 {
        map: BTreeMap<Bytes, Record>,
        cluster_map: Option<ClusterMap>,
        rebalance: Option<Plan>,
        requests: BTreeMap<Bytes, (UnixMs, OpResult)>,
    },
}

impl Serialize for KvState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotRef::V3 {
            map: &self.map,
            cluster_map: &self.cluster_map,
            rebalance: &self.rebalance,
            requests: &self.requests,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KvState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match SnapshotOwned::deserialize(deserializer)? {
            SnapshotOwned::V1 { map, cluster_map } => {
                Ok(KvState::from_parts(map, cluster_map, None, BTreeMap::new()))
            }
            SnapshotOwned::V2 { map, cluster_map, rebalance } => {
                Ok(KvState::from_parts(map, cluster_map, rebalance, BTreeMap::new()))
            }
            SnapshotOwned::V3 { map, cluster_map, rebalance, requests } => {
                Ok(KvState::from_parts(map, cluster_map, rebalance, requests))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(k: &str, v: &str, expires_at_ms: Option<UnixMs>, condition: Condition) -> Op {
        Op::Put { key: key(k), value: key(v), expires_at_ms, condition }
    }

    fn delete(k: &str, if_version: Option<Version>) -> Op {
        Op::Delete { key: key(k), if_version }
    }

    fn touch(k: &str, expires_at_ms: Option<UnixMs>) -> Op {
        Op::Touch { key: key(k), expires_at_ms }
    }

    fn incr(k: &str, delta: i64, expires_at_ms: Option<UnixMs>) -> Op {
        Op::Increment { key: key(k), delta, expires_at_ms }
    }

    fn expire(keys: &[&str]) -> Op {
        Op::Expire { keys: keys.iter().map(|k| key(k)).collect() }
    }

    fn cluster_map(epoch: u64) -> ClusterMap {
        ClusterMap {
            cluster_id: "test".into(),
            epoch,
            shard_count: 4,
            replication_factor: 3,
            nodes: BTreeMap::new(),
            shards: BTreeMap::new(),
        }
    }

    /// Applies one op as the entry at `index` with clock `now_ms`, checks the
    /// derived indexes, and returns the op's result.
    fn apply(state: &mut KvState, index: u64, now_ms: UnixMs, op: Op) -> OpResult {
        let mut response = state.apply(index, &Command { now_ms, ops: vec![op] });
        assert_consistent(state);
        assert_eq!(response.results.len(), 1);
        response.results.remove(0)
    }

    /// The derived indexes equal a fresh rebuild from the map.
    fn assert_consistent(state: &KvState) {
        let rebuilt = KvState::from_parts(
            state.map.clone(),
            state.cluster_map.clone(),
            state.rebalance.clone(),
            state.requests.clone(),
        );
        assert_eq!(state.expiry, rebuilt.expiry, "expiry index out of step");
        assert_eq!(state.requests_by_age, rebuilt.requests_by_age, "request id index out of step");
        assert_eq!(state.approx_bytes, rebuilt.approx_bytes, "approx_bytes out of step");
    }

    fn value(state: &KvState, k: &str, now_ms: UnixMs) -> Option<(String, Version, Option<u64>)> {
        state
            .get(k.as_bytes(), now_ms)
            .map(|r| (String::from_utf8_lossy(&r.value).into_owned(), r.version, r.expires_at_ms))
    }

    fn put_ok(version: Version) -> OpResult {
        OpResult::Put { succeeded: true, version }
    }

    fn put_failed(version: Version) -> OpResult {
        OpResult::Put { succeeded: false, version }
    }

    #[test]
    fn live_records_skip_expired_ones_and_keep_key_order() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("b", "1", Some(100), Condition::None));
        apply(&mut s, 2, 0, put("a", "2", None, Condition::None));
        apply(&mut s, 3, 0, put("c", "3", Some(50), Condition::None));
        let live: Vec<_> =
            s.live_records(60).into_iter().map(|(k, r)| (k, r.version, r.expires_at_ms)).collect();
        assert_eq!(live, vec![(key("a"), 2, None), (key("b"), 1, Some(100))]);
        assert!(s.live_records(100).iter().all(|(k, _)| k == &key("a")));
    }

    #[test]
    fn put_conditions() {
        let mut s = KvState::default();
        assert_eq!(apply(&mut s, 1, 0, put("a", "1", None, Condition::None)), put_ok(1));
        assert_eq!(apply(&mut s, 2, 0, put("a", "2", None, Condition::IfAbsent)), put_failed(1));
        assert_eq!(apply(&mut s, 3, 0, put("a", "3", None, Condition::IfVersion(2))), put_failed(1));
        assert_eq!(value(&s, "a", 0), Some(("1".into(), 1, None)));
        assert_eq!(apply(&mut s, 4, 0, put("a", "4", None, Condition::IfVersion(1))), put_ok(4));
        assert_eq!(value(&s, "a", 0), Some(("4".into(), 4, None)));
        assert_eq!(apply(&mut s, 5, 0, put("b", "5", None, Condition::IfAbsent)), put_ok(5));
        // IfVersion on an absent key fails with version 0, even for IfVersion(0).
        assert_eq!(apply(&mut s, 6, 0, put("c", "6", None, Condition::IfVersion(0))), put_failed(0));
        assert_eq!(apply(&mut s, 7, 0, put("c", "7", None, Condition::IfVersion(3))), put_failed(0));
        assert_eq!(s.get(b"c", 0), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn expiry_boundary_is_expired() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("a", "x", Some(100), Condition::None));
        assert_eq!(value(&s, "a", 99), Some(("x".into(), 1, Some(100))));
        assert_eq!(s.get(b"a", 100), None);
        assert_eq!(s.expired_keys(99, 10), Vec::<Bytes>::new());
        assert_eq!(s.expired_keys(100, 10), vec![key("a")]);
        // At now == deadline every op sees the key as absent.
        assert_eq!(apply(&mut s, 2, 100, put("a", "y", None, Condition::IfVersion(1))), put_failed(0));
        assert_eq!(
            apply(&mut s, 3, 100, touch("a", Some(500))),
            OpResult::Touch { found: false, expires_at_ms: None }
        );
        assert_eq!(s.expired_keys(100, 10), vec![key("a")], "failed ops change nothing");
        // One ms earlier it is live.
        assert_eq!(apply(&mut s, 4, 99, put("a", "z", None, Condition::IfAbsent)), put_failed(1));
        assert_eq!(apply(&mut s, 5, 100, put("a", "z", None, Condition::IfAbsent)), put_ok(5));
        assert_eq!(value(&s, "a", 1_000), Some(("z".into(), 5, None)), "TTL replaced");
        assert_eq!(s.expired_keys(u64::MAX, 10), Vec::<Bytes>::new());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn put_without_ttl_clears_it_and_with_ttl_sets_it() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("a", "x", Some(100), Condition::None));
        apply(&mut s, 2, 0, put("a", "y", None, Condition::None));
        assert_eq!(value(&s, "a", 1_000), Some(("y".into(), 2, None)));
        apply(&mut s, 3, 0, put("a", "z", Some(50), Condition::None));
        assert_eq!(value(&s, "a", 0), Some(("z".into(), 3, Some(50))));
        assert_eq!(s.expired_keys(u64::MAX, 10), vec![key("a")]);
        // A deadline already in the past stores an expired key.
        apply(&mut s, 4, 60, put("b", "w", Some(60), Condition::None));
        assert_eq!(s.get(b"b", 60), None);
        assert_eq!(s.expired_keys(60, 10), vec![key("a"), key("b")]);
    }

    #[test]
    fn delete_cases() {
        let mut s = KvState::default();
        let deleted = |deleted, version| OpResult::Delete { deleted, version };
        assert_eq!(apply(&mut s, 1, 0, delete("a", None)), deleted(false, 0));
        apply(&mut s, 2, 0, put("a", "x", None, Condition::None));
        assert_eq!(apply(&mut s, 3, 0, delete("a", Some(1))), deleted(false, 2));
        assert_eq!(s.len(), 1);
        assert_eq!(apply(&mut s, 4, 0, delete("a", Some(2))), deleted(true, 4));
        assert!(s.is_empty());
        apply(&mut s, 5, 0, put("a", "x", None, Condition::None));
        assert_eq!(apply(&mut s, 6, 0, delete("a", None)), deleted(true, 6));
        assert!(s.is_empty());
        // Expired: logically absent, so not "deleted", but physically removed.
        apply(&mut s, 7, 0, put("a", "x", Some(10), Condition::None));
        apply(&mut s, 8, 0, put("b", "x", Some(10), Condition::None));
        assert_eq!(apply(&mut s, 9, 10, delete("a", None)), deleted(false, 0));
        assert_eq!(apply(&mut s, 10, 10, delete("b", Some(8))), deleted(false, 0));
        assert!(s.is_empty());
        assert_eq!(s.expired_keys(u64::MAX, 10), Vec::<Bytes>::new());
        assert_eq!(s.approx_bytes(), 0);
    }

    #[test]
    fn touch_sets_and_clears_ttl_without_changing_value_or_version() {
        let mut s = KvState::default();
        let touched = |found, expires_at_ms| OpResult::Touch { found, expires_at_ms };
        assert_eq!(apply(&mut s, 1, 0, touch("a", Some(10))), touched(false, None));
        assert!(s.is_empty(), "touch does not create keys");
        apply(&mut s, 2, 0, put("a", "x", Some(10), Condition::None));
        assert_eq!(apply(&mut s, 3, 5, touch("a", Some(20))), touched(true, Some(20)));
        assert_eq!(value(&s, "a", 15), Some(("x".into(), 2, Some(20))));
        assert_eq!(s.expired_keys(15, 10), Vec::<Bytes>::new(), "old deadline unindexed");
        assert_eq!(apply(&mut s, 4, 15, touch("a", None)), touched(true, None));
        assert_eq!(value(&s, "a", u64::MAX), Some(("x".into(), 2, None)));
        assert_eq!(s.expired_keys(u64::MAX, 10), Vec::<Bytes>::new());
        // Touching with a past deadline expires the key at once.
        assert_eq!(apply(&mut s, 5, 30, touch("a", Some(30))), touched(true, Some(30)));
        assert_eq!(s.get(b"a", 30), None);
        // An expired key cannot be revived by touch.
        assert_eq!(apply(&mut s, 6, 31, touch("a", None)), touched(false, None));
        assert_eq!(s.expired_keys(31, 10), vec![key("a")]);
    }

    #[test]
    fn increment_counts_from_zero_and_keeps_or_sets_ttl() {
        let mut s = KvState::default();
        let ok = |value, version| OpResult::Increment(Ok(IncrementOk { value, version }));
        assert_eq!(apply(&mut s, 1, 0, incr("n", 5, None)), ok(5, 1));
        assert_eq!(value(&s, "n", 0), Some(("5".into(), 1, None)));
        assert_eq!(apply(&mut s, 2, 0, incr("n", -7, Some(100))), ok(-2, 2));
        assert_eq!(value(&s, "n", 0), Some(("-2".into(), 2, Some(100))));
        // None keeps the live key's deadline.
        assert_eq!(apply(&mut s, 3, 50, incr("n", 1, None)), ok(-1, 3));
        assert_eq!(value(&s, "n", 50), Some(("-1".into(), 3, Some(100))));
        assert_eq!(s.expired_keys(u64::MAX, 10), vec![key("n")]);
        // Expired counts as absent: restarts at 0 and the old deadline is gone.
        assert_eq!(apply(&mut s, 4, 100, incr("n", 3, None)), ok(3, 4));
        assert_eq!(value(&s, "n", u64::MAX), Some(("3".into(), 4, None)));
        assert_eq!(s.expired_keys(u64::MAX, 10), Vec::<Bytes>::new());
        // A new key with a TTL.
        assert_eq!(apply(&mut s, 5, 0, incr("m", 0, Some(9))), ok(0, 5));
        assert_eq!(value(&s, "m", 0), Some(("0".into(), 5, Some(9))));
    }

    #[test]
    fn increment_parses_strictly() {
        let not_an_integer = OpResult::Increment(Err(IncrementError::NotAnInteger));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"1e3",
            b"abc",
            b"--1",
            b"0x10",
            b"\xff1",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            let mut s = KvState::default();
            let op = Op::Put {
                key: key("n"),
                value: Bytes::copy_from_slice(bad),
                expires_at_ms: Some(10),
                condition: Condition::None,
            };
            apply(&mut s, 1, 0, op);
            let before = s.clone();
            assert_eq!(apply(&mut s, 2, 0, incr("n", 1, None)), not_an_integer, "{bad:?}");
            assert_eq!(s, before, "a failed increment changes nothing");
        }
        for (good, expect) in [
            ("0", 1),
            ("-0", 1),
            ("007", 8),
            ("-12", -11),
            ("9223372036854775806", i64::MAX),
            ("-9223372036854775808", i64::MIN + 1),
        ] {
            let mut s = KvState::default();
            apply(&mut s, 1, 0, put("n", good, None, Condition::None));
            let result = apply(&mut s, 2, 0, incr("n", 1, None));
            assert_eq!(result, OpResult::Increment(Ok(IncrementOk { value: expect, version: 2 })));
            assert_eq!(value(&s, "n", 0).map(|v| v.0), Some(expect.to_string()), "canonical");
        }
    }

    #[test]
    fn increment_overflow_changes_nothing() {
        let overflow = OpResult::Increment(Err(IncrementError::Overflow));
        let mut s = KvState::default();
        apply(&mut s, 1, 0, incr("n", i64::MAX, None));
        let before = s.clone();
        assert_eq!(apply(&mut s, 2, 0, incr("n", 1, Some(5))), overflow);
        assert_eq!(s, before);
        apply(&mut s, 3, 0, incr("m", i64::MIN, None));
        assert_eq!(apply(&mut s, 4, 0, incr("m", -1, None)), overflow);
        assert_eq!(value(&s, "m", 0), Some((i64::MIN.to_string(), 3, None)));
        assert_eq!(value(&s, "n", 0), Some((i64::MAX.to_string(), 1, None)));
    }

    #[test]
    fn expire_removes_only_expired_keys() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("a", "x", Some(10), Condition::None));
        apply(&mut s, 2, 0, put("b", "x", Some(10), Condition::None));
        apply(&mut s, 3, 0, put("c", "x", Some(10), Condition::None));
        apply(&mut s, 4, 0, put("d", "x", None, Condition::None));
        let chosen = s.expired_keys(10, 100);
        assert_eq!(chosen, vec![key("a"), key("b"), key("c")]);
        // Between choosing and applying, b is rewritten and c is touched.
        apply(&mut s, 5, 10, put("b", "y", None, Condition::None));
        apply(&mut s, 6, 9, touch("c", Some(50)));
        // Live, rewritten, touched, never-expiring, absent and duplicate keys.
        let keys = ["a", "b", "c", "d", "zz", "a"];
        assert_eq!(apply(&mut s, 7, 11, expire(&keys)), OpResult::Expire { removed: 1 });
        assert_eq!(s.len(), 3);
        assert_eq!(value(&s, "b", 11), Some(("y".into(), 5, None)));
        assert_eq!(value(&s, "c", 11), Some(("x".into(), 3, Some(50))));
        assert_eq!(apply(&mut s, 8, 50, expire(&["c"])), OpResult::Expire { removed: 1 });
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn set_cluster_map_conditions() {
        let mut s = KvState::default();
        let result = |succeeded, epoch| OpResult::SetClusterMap { succeeded, epoch };
        let set = |expected_epoch, epoch| Op::SetClusterMap { expected_epoch, map: cluster_map(epoch) };
        assert_eq!(apply(&mut s, 1, 0, set(Some(0), 1)), result(false, 0));
        assert_eq!(s.cluster_map(), None);
        assert_eq!(apply(&mut s, 2, 0, set(None, 1)), result(true, 1));
        assert_eq!(apply(&mut s, 3, 0, set(None, 2)), result(false, 1));
        assert_eq!(apply(&mut s, 4, 0, set(Some(2), 3)), result(false, 1));
        assert_eq!(apply(&mut s, 5, 0, set(Some(1), 1)), result(false, 1), "epoch must grow");
        assert_eq!(apply(&mut s, 6, 0, set(Some(1), 2)), result(true, 2));
        assert_eq!(s.cluster_map(), Some(&cluster_map(2)));
        assert_eq!(apply(&mut s, 7, 0, set(Some(2), 0)), result(false, 2), "epoch must grow");
    }

    #[test]
    fn batch_shares_the_index_and_answers_in_order() {
        let mut s = KvState::default();
        let command = Command {
            now_ms: 0,
            ops: vec![
                put("a", "1", None, Condition::IfAbsent),
                incr("a", 1, None),
                put("a", "x", None, Condition::IfVersion(7)),
                delete("b", None),
                touch("a", Some(5)),
            ],
        };
        let response = s.apply(7, &command);
        assert_eq!(
            response.results,
            vec![
                put_ok(7),
                OpResult::Increment(Ok(IncrementOk { value: 2, version: 7 })),
                put_ok(7),
                OpResult::Delete { deleted: false, version: 0 },
                OpResult::Touch { found: true, expires_at_ms: Some(5) },
            ]
        );
        assert_eq!(value(&s, "a", 0), Some(("x".into(), 7, Some(5))));
        assert_eq!(s.apply(8, &Command { now_ms: 0, ops: vec![] }), Response::default());
    }

    #[test]
    fn expired_keys_are_ordered_and_limited() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("c", "x", Some(5), Condition::None));
        apply(&mut s, 2, 0, put("a", "x", Some(7), Condition::None));
        apply(&mut s, 3, 0, put("b", "x", Some(5), Condition::None));
        apply(&mut s, 4, 0, put("d", "x", None, Condition::None));
        apply(&mut s, 5, 0, put("e", "x", Some(9), Condition::None));
        assert_eq!(s.expired_keys(4, 10), Vec::<Bytes>::new());
        assert_eq!(s.expired_keys(7, 10), vec![key("b"), key("c"), key("a")]);
        assert_eq!(s.expired_keys(7, 2), vec![key("b"), key("c")]);
        assert_eq!(s.expired_keys(7, 0), Vec::<Bytes>::new());
        assert_eq!(s.expired_keys(u64::MAX, usize::MAX).len(), 4);
    }

    #[test]
    fn approx_bytes_tracks_keys_and_values() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("ab", "xyz", None, Condition::None));
        assert_eq!(s.approx_bytes(), 5);
        apply(&mut s, 2, 0, put("ab", "x", Some(3), Condition::None));
        assert_eq!(s.approx_bytes(), 3);
        apply(&mut s, 3, 0, incr("n", 100, None));
        assert_eq!(s.approx_bytes(), 7);
        apply(&mut s, 4, 3, expire(&["ab"]));
        assert_eq!(s.approx_bytes(), 4);
    }

    #[test]
    fn ttl_remaining() {
        let record = |expires_at_ms| Record { value: Bytes::new(), version: 1, expires_at_ms };
        assert_eq!(record(None).ttl_remaining_ms(5), 0);
        assert_eq!(record(Some(105)).ttl_remaining_ms(5), 100);
        assert_eq!(record(Some(6)).ttl_remaining_ms(5), 1);
        assert_eq!(record(Some(5)).ttl_remaining_ms(5), 1, "never 0 (= no expiry)");
        assert!(record(Some(6)).is_live(5));
        assert!(!record(Some(5)).is_live(5));
        assert!(record(None).is_live(u64::MAX));
    }

    fn once(id: &str, until: UnixMs, op: Op) -> Op {
        Op::Once { request_id: key(id), retain_until_ms: until, op: Box::new(op) }
    }

    fn incremented(value: i64, version: Version) -> OpResult {
        OpResult::Increment(Ok(IncrementOk { value, version }))
    }

    #[test]
    fn a_retried_request_id_gets_the_first_result_and_changes_nothing() {
        let mut s = KvState::default();
        assert_eq!(apply(&mut s, 1, 0, once("r1", 100, incr("c", 5, None))), incremented(5, 1));
        assert_eq!(apply(&mut s, 2, 10, once("r1", 110, incr("c", 5, None))), incremented(5, 1));
        assert_eq!(value(&s, "c", 10), Some(("5".into(), 1, None)));
        // A failed condition is a result like any other: remembered as such.
        assert_eq!(
            apply(&mut s, 3, 10, once("r2", 100, put("c", "x", None, Condition::IfAbsent))),
            put_failed(1)
        );
        apply(&mut s, 4, 10, delete("c", None));
        assert_eq!(
            apply(&mut s, 5, 10, once("r2", 100, put("c", "x", None, Condition::IfAbsent))),
            put_failed(1)
        );
        assert_eq!(value(&s, "c", 10), None);
        // Another id is another write.
        assert_eq!(apply(&mut s, 6, 10, once("r3", 100, incr("c", 5, None))), incremented(5, 6));
        assert_eq!(s.remembered_requests(), 3);
    }

    #[test]
    fn request_ids_are_forgotten_by_the_entry_clock() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, once("r1", 50, incr("c", 1, None)));
        apply(&mut s, 2, 49, put("other", "x", None, Condition::None));
        assert_eq!(s.remembered_requests(), 1, "49 < 50: still remembered");
        assert!(!s.has_requests_due(49) && s.has_requests_due(50));
        apply(&mut s, 3, 50, put("other", "y", None, Condition::None));
        assert_eq!(s.remembered_requests(), 0, "forgotten at its deadline");
        // Past the window, the same id applies again.
        assert_eq!(apply(&mut s, 4, 60, once("r1", 110, incr("c", 1, None))), incremented(2, 4));
        // A window that has already run out remembers nothing (and r1's ran out).
        apply(&mut s, 5, 200, once("r9", 200, incr("c", 1, None)));
        assert_eq!(s.remembered_requests(), 0);
    }

    #[test]
    fn the_request_id_bound_forgets_the_one_due_soonest() {
        let mut s = KvState::default();
        let ops: Vec<Op> = (0..MAX_REMEMBERED_REQUESTS as u64)
            .map(|i| once(&format!("r{i}"), 1_000 + (i * 7919) % 5_000, incr("c", 1, None)))
            .collect();
        s.apply(1, &Command { now_ms: 0, ops });
        assert_eq!(s.remembered_requests(), MAX_REMEMBERED_REQUESTS);
        let soonest = s.requests_by_age.first().cloned().expect("some");
        apply(&mut s, 2, 0, once("one-more", 9_999, incr("c", 1, None)));
        assert_eq!(s.remembered_requests(), MAX_REMEMBERED_REQUESTS);
        assert!(!s.requests.contains_key(&soonest.1), "the soonest due went first");
        assert!(s.requests.contains_key(&key("one-more")));
    }

    #[test]
    fn request_ids_survive_a_snapshot_and_old_snapshots_still_read() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, once("r1", 100, incr("c", 5, None)));
        let mut restored = KvState::decode_snapshot(&s.encode_snapshot()).expect("decodes");
        assert_eq!(restored, s);
        assert_eq!(apply(&mut restored, 2, 10, once("r1", 110, incr("c", 5, None))), incremented(5, 1));
        // A V2 snapshot (before request ids) reads as remembering none.
        let v2 = SnapshotRef::V2 { map: &s.map, cluster_map: &None, rebalance: &None };
        let old = KvState::decode_snapshot(&postcard::to_allocvec(&v2).expect("encodes")).expect("decodes");
        assert_eq!((old.len(), old.remembered_requests()), (1, 0));
    }

    #[test]
    fn changes_are_recorded_as_events_in_op_order() {
        use crate::events::{Event, EventKind};
        let event = |version, kind, k: &str, v: &str| Event { version, kind, key: key(k), value: key(v) };
        let mut s = KvState::default();
        let mut events = Vec::new();
        let ops = vec![
            put("a", "1", Some(10), Condition::None),
            put("b", "2", None, Condition::IfAbsent),
            put("b", "3", None, Condition::IfAbsent), // fails: no event
        ];
        s.apply_with_events(1, &Command { now_ms: 0, ops }, &mut events);
        assert_eq!(events, vec![event(1, EventKind::Put, "a", "1"), event(1, EventKind::Put, "b", "2")]);
        events.clear();
        // At 10, "a" has expired: replacing it reports the expiry, then the put.
        let ops = vec![incr("a", 5, None), delete("b", None), expire(&["a"])];
        s.apply_with_events(2, &Command { now_ms: 10, ops }, &mut events);
        assert_eq!(
            events,
            vec![
                event(2, EventKind::Expired, "a", ""),
                event(2, EventKind::Put, "a", "5"),
                event(2, EventKind::Delete, "b", ""),
            ]
        );
        // Plain apply records nothing and leaves no sink behind.
        apply(&mut s, 3, 10, put("c", "x", None, Condition::None));
        assert!(s.sink.0.is_none());
    }

    #[test]
    fn snapshot_round_trip_rebuilds_indexes() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("a", "x", Some(10), Condition::None));
        apply(&mut s, 2, 0, put("b", "y", None, Condition::None));
        apply(&mut s, 3, 0, put("c", "z", Some(20), Condition::None));
        apply(&mut s, 4, 0, Op::SetClusterMap { expected_epoch: None, map: cluster_map(3) });
        let bytes = s.encode_snapshot();
        let decoded = KvState::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(decoded, s);
        assert_eq!(decoded.expired_keys(20, 10), vec![key("a"), key("c")]);
        assert_eq!(decoded.approx_bytes(), 6);
        // Plain serde goes through the same envelope and rebuilds too.
        let via_serde: KvState = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(via_serde, s);
        assert_eq!(KvState::decode_snapshot(&KvState::default().encode_snapshot()), Ok(KvState::default()));
    }

    #[test]
    fn snapshot_decode_refuses_bad_input_without_panicking() {
        let mut s = KvState::default();
        apply(&mut s, 1, 0, put("a", "x", Some(10), Condition::None));
        let bytes = s.encode_snapshot();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(KvState::decode_snapshot(&trailing), Err(postcard::Error::DeserializeBadEncoding));
        for len in 0..bytes.len() {
            assert!(KvState::decode_snapshot(&bytes[..len]).is_err(), "truncated at {len}");
        }
        assert!(KvState::decode_snapshot(&[7]).is_err(), "unknown format version");
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let len = rng.random_range(0..64);
            let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Ok(state) = KvState::decode_snapshot(&garbage) {
                assert_consistent(&state);
            }
        }
    }
}
