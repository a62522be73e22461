//! Mirrors [`KvState`] against a deliberately plain model: a `BTreeMap` from key to
//! (value, version, deadline), with every rule written out the obvious way. Long
//! seeded random command sequences drive both; every result is compared, and
//! periodically the full contents, the expired set and a snapshot round trip.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use ringkv_core::ClusterMap;
use ringkv_node::command::{Command, Condition, IncrementError, IncrementOk, Op, OpResult, UnixMs};
use ringkv_node::events::{Event, EventKind};
use ringkv_node::state_machine::KvState;

const SEEDS: u64 = 20;
const COMMANDS_PER_SEED: usize = 5_000;
const KEYS: usize = 20;

/// value, version, expires_at_ms
type Entry = (Vec<u8>, u64, Option<u64>);

#[derive(Default, Clone)]
struct Model {
    data: BTreeMap<Vec<u8>, Entry>,
    cluster_epoch: Option<u64>,
    plan_revision: u64,
    /// request id → (remembered until, result)
    requests: BTreeMap<Vec<u8>, (u64, OpResult)>,
    /// The change events of the ops applied since the last take.
    events: Vec<Event>,
    /// Messages published by the current command so far.
    messages: u32,
}

impl Model {
    fn live(&self, key: &[u8], now: u64) -> Option<&Entry> {
        let entry = self.data.get(key)?;
        match entry.2 {
            Some(deadline) if deadline <= now => None,
            _ => Some(entry),
        }
    }

    fn live_version(&self, key: &[u8], now: u64) -> u64 {
        match self.live(key, now) {
            Some(entry) => entry.1,
            None => 0,
        }
    }

    fn event(&mut self, version: u64, kind: EventKind, key: &[u8], value: &[u8]) {
        let (key, value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        self.events.push(Event { version, kind, key, value });
    }

    /// `Expired` if `key` is stored but not live at `now`.
    fn expired_event(&mut self, version: u64, now: u64, key: &[u8]) {
        if self.data.contains_key(key) && self.live(key, now).is_none() {
            self.event(version, EventKind::Expired, key, b"");
        }
    }

    /// What every command does before its ops: forget ids whose time ran out.
    fn start_command(&mut self, now: u64) {
        self.requests.retain(|_, (until, _)| *until > now);
        self.messages = 0;
    }

    fn apply(&mut self, index: u64, now: u64, op: &Op) -> OpResult {
        match op {
            Op::Once { request_id, retain_until_ms, op } => {
                if let Some((_, result)) = self.requests.get(request_id.as_ref()) {
                    return result.clone();
                }
                let result = self.apply(index, now, op);
                if *retain_until_ms > now {
                    self.requests.insert(request_id.to_vec(), (*retain_until_ms, result.clone()));
                }
                result
            }
            Op::Put { key, value, expires_at_ms, condition } => {
                let current = self.live_version(key, now);
                let ok = match condition {
                    Condition::None => true,
                    Condition::IfAbsent => current == 0,
                    Condition::IfVersion(v) => current != 0 && current == *v,
                };
                if ok {
                    self.expired_event(index, now, key);
                    self.event(index, EventKind::Put, key, value);
                    self.data.insert(key.to_vec(), (value.to_vec(), index, *expires_at_ms));
                    OpResult::Put { succeeded: true, version: index }
                } else {
                    OpResult::Put { succeeded: false, version: current }
                }
            }
            Op::Delete { key, if_version } => {
                let current = self.live_version(key, now);
                if current == 0 {
                    self.expired_event(index, now, key);
                    self.data.remove(key.as_ref());
                    return OpResult::Delete { deleted: false, version: 0 };
                }
                if let Some(v) = if_version
                    && *v != current
                {
                    return OpResult::Delete { deleted: false, version: current };
                }
                self.event(index, EventKind::Delete, key, b"");
                self.data.remove(key.as_ref());
                OpResult::Delete { deleted: true, version: index }
            }
            Op::Publish { channel, payload } => {
                // A message changes no key, and a channel named like a key is
                // not that key.
                self.event(index, EventKind::Message, channel, payload);
                // The entry's index, then the message's place in the entry.
                self.messages += 1;
                OpResult::Publish { seq: (index << 16) + u64::from(self.messages - 1) }
            }
            Op::Extend { key, expires_at_ms } => {
                let Some(&(_, _, current)) = self.live(key, now) else {
                    return OpResult::Extend { found: false, expires_at_ms: None };
                };
                match current {
                    Some(deadline) if deadline < *expires_at_ms => {
                        self.data.get_mut(key.as_ref()).unwrap().2 = Some(*expires_at_ms);
                        OpResult::Extend { found: true, expires_at_ms: Some(*expires_at_ms) }
                    }
                    kept => OpResult::Extend { found: true, expires_at_ms: kept },
                }
            }
            Op::Touch { key, expires_at_ms } => {
                if self.live(key, now).is_none() {
                    return OpResult::Touch { found: false, expires_at_ms: None };
                }
                let entry = self.data.get_mut(key.as_ref()).unwrap();
                entry.2 = *expires_at_ms;
                OpResult::Touch { found: true, expires_at_ms: *expires_at_ms }
            }
            Op::Increment { key, delta, expires_at_ms } => {
                let (old, old_deadline) = match self.live(key, now) {
                    None => (0, None),
                    Some((value, _, deadline)) => match model_parse(value) {
                        Some(n) => (n, *deadline),
                        None => return OpResult::Increment(Err(IncrementError::NotAnInteger)),
                    },
                };
                let Ok(new) = i64::try_from(old as i128 + *delta as i128) else {
                    return OpResult::Increment(Err(IncrementError::Overflow));
                };
                let deadline = if expires_at_ms.is_some() { *expires_at_ms } else { old_deadline };
                self.expired_event(index, now, key);
                self.event(index, EventKind::Put, key, format!("{new}").as_bytes());
                self.data.insert(key.to_vec(), (format!("{new}").into_bytes(), index, deadline));
                OpResult::Increment(Ok(IncrementOk { value: new, version: index }))
            }
            Op::Expire { keys } => {
                let mut removed = 0;
                for key in keys {
                    if self.data.contains_key(key.as_ref()) && self.live(key, now).is_none() {
                        self.event(index, EventKind::Expired, key, b"");
                        self.data.remove(key.as_ref());
                        removed += 1;
                    }
                }
                OpResult::Expire { removed }
            }
            Op::SetClusterMap { expected_epoch, map } => {
                if *expected_epoch == self.cluster_epoch && map.epoch > self.cluster_epoch.unwrap_or(0) {
                    self.cluster_epoch = Some(map.epoch);
                    OpResult::SetClusterMap { succeeded: true, epoch: map.epoch }
                } else {
                    let epoch = self.cluster_epoch.unwrap_or(0);
                    OpResult::SetClusterMap { succeeded: false, epoch }
                }
            }
            Op::SetPlan { expected_revision, expected_epoch, plan } => {
                let epoch_ok = expected_epoch.is_none_or(|e| Some(e) == self.cluster_epoch);
                if *expected_revision == self.plan_revision && plan.revision > self.plan_revision && epoch_ok
                {
                    self.plan_revision = plan.revision;
                    OpResult::SetPlan { succeeded: true, revision: plan.revision }
                } else {
                    OpResult::SetPlan { succeeded: false, revision: self.plan_revision }
                }
            }
        }
    }

    /// Stored-but-expired keys at `now`, soonest deadline first, ties by key.
    fn expired(&self, now: u64) -> Vec<Bytes> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (key, (_, _, deadline)) in &self.data {
            if let Some(d) = deadline
                && *d <= now
            {
                out.push((*d, key.clone()));
            }
        }
        out.sort();
        out.into_iter().map(|(_, key)| Bytes::from(key)).collect()
    }
}

/// Independent of the state machine's parser: digit by digit in i128.
fn model_parse(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.first() {
        Some(b'-') => (true, &value[1..]),
        _ => (false, value),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i128 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as i128;
        if n > 1 << 64 {
            return None;
        }
    }
    i64::try_from(if negative { -n } else { n }).ok()
}

/// Which interesting outcomes the random run reached, so the generator is known
/// to exercise them.
#[derive(Default, Debug)]
struct Coverage {
    put_if_version_ok: u64,
    put_if_absent_over_expired: u64,
    delete_expired: u64,
    delete_version_mismatch: u64,
    touch_ok: u64,
    increment_ok_keeping_ttl: u64,
    not_an_integer: u64,
    overflow: u64,
    expire_removed: u64,
    expire_skipped_live: u64,
    cluster_map_set: u64,
    request_id_repeated: u64,
    extend_moved: u64,
    extend_kept: u64,
    expired_events: u64,
}

struct Generator {
    rng: StdRng,
    keys: Vec<Bytes>,
}

impl Generator {
    fn key(&mut self) -> Bytes {
        self.keys.choose(&mut self.rng).expect("keys is not empty").clone()
    }

    fn value(&mut self) -> Bytes {
        const INTERESTING: &[&str] = &[
            "0",
            "1",
            "-1",
            "42",
            "-17",
            "007",
            "-0",
            "9223372036854775807",
            "9223372036854775806",
            "-9223372036854775808",
            "-9223372036854775807",
            "9223372036854775808",
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "abc",
            "1.5",
            "--2",
        ];
        if self.rng.random_bool(0.8) {
            Bytes::from_static(INTERESTING.choose(&mut self.rng).unwrap().as_bytes())
        } else {
            let len = self.rng.random_range(0..6);
            (0..len).map(|_| self.rng.random::<u8>()).collect::<Vec<u8>>().into()
        }
    }

    fn deadline(&mut self, now: u64) -> Option<u64> {
        if self.rng.random_bool(0.35) {
            None
        } else {
            Some(now.saturating_add_signed(self.rng.random_range(-10..=200)))
        }
    }

    /// A version to condition on: often the key's current one (live or not).
    fn version(&mut self, model: &Model, key: &[u8], index: u64) -> u64 {
        match self.rng.random_range(0..10) {
            0..=5 => model.data.get(key).map_or(0, |entry| entry.1),
            6 => 0,
            7 => index,
            _ => self.rng.random_range(0..=index),
        }
    }

    fn delta(&mut self) -> i64 {
        match self.rng.random_range(0..20) {
            0 => i64::MAX - self.rng.random_range(0..3),
            1 => i64::MIN + self.rng.random_range(0..3),
            _ => self.rng.random_range(-10..=10),
        }
    }

    /// A client write, sometimes with a request id from a small pool (so ids
    /// repeat, inside and outside their window).
    fn op(&mut self, state: &KvState, model: &Model, index: u64, now: u64) -> Op {
        let op = self.plain_op(state, model, index, now);
        let client_write = matches!(
            op,
            Op::Put { .. } | Op::Delete { .. } | Op::Touch { .. } | Op::Increment { .. } | Op::Publish { .. }
        );
        if client_write && self.rng.random_bool(0.3) {
            let request_id = Bytes::from(format!("r{}", self.rng.random_range(0..6)));
            let retain_until_ms = now.saturating_add_signed(self.rng.random_range(-10..=150));
            Op::Once { request_id, retain_until_ms, op: Box::new(op) }
        } else {
            op
        }
    }

    fn plain_op(&mut self, state: &KvState, model: &Model, index: u64, now: u64) -> Op {
        let key = self.key();
        match self.rng.random_range(0..100) {
            0..=29 => {
                let condition = match self.rng.random_range(0..4) {
                    0 | 1 => Condition::None,
                    2 => Condition::IfAbsent,
                    _ => Condition::IfVersion(self.version(model, &key, index)),
                };
                let value = self.value();
                let expires_at_ms = self.deadline(now);
                Op::Put { key, value, expires_at_ms, condition }
            }
            30..=41 => {
                let if_version = self.rng.random_bool(0.5).then(|| self.version(model, &key, index));
                Op::Delete { key, if_version }
            }
            42..=47 => Op::Touch { key, expires_at_ms: self.deadline(now) },
            48..=50 => Op::Publish { channel: key, payload: self.value() },
            51..=53 => {
                Op::Extend { key, expires_at_ms: now.saturating_add_signed(self.rng.random_range(-10..=200)) }
            }
            54..=79 => {
                let delta = self.delta();
                let expires_at_ms = if self.rng.random_bool(0.6) { None } else { self.deadline(now) };
                Op::Increment { key, delta, expires_at_ms }
            }
            80..=97 => {
                // As the leader would: chosen at an earlier (or equal) clock, then
                // mixed with keys that may be live or absent.
                let chosen_at = now.saturating_sub(self.rng.random_range(0..40));
                let limit = self.rng.random_range(0..8);
                let mut keys = state.expired_keys(chosen_at, limit);
                for _ in 0..self.rng.random_range(0..3) {
                    keys.push(self.key());
                }
                keys.shuffle(&mut self.rng);
                Op::Expire { keys }
            }
            _ => {
                let current = model.cluster_epoch;
                let expected_epoch = match self.rng.random_range(0..4) {
                    0 => None,
                    1 => Some(self.rng.random_range(0..5)),
                    _ => current,
                };
                let epoch = current.unwrap_or(0) + self.rng.random_range(0..3);
                Op::SetClusterMap { expected_epoch, map: cluster_map(epoch) }
            }
        }
    }
}

fn cluster_map(epoch: u64) -> ClusterMap {
    ClusterMap {
        cluster_id: "model".into(),
        epoch,
        shard_count: 8,
        replication_factor: 3,
        nodes: BTreeMap::new(),
        shards: BTreeMap::new(),
    }
}

fn record_coverage(cov: &mut Coverage, model: &Model, now: u64, op: &Op, result: &OpResult) {
    if let Op::Once { request_id, op, .. } = op {
        if model.requests.contains_key(request_id.as_ref()) {
            cov.request_id_repeated += 1;
        }
        return record_coverage(cov, model, now, op, result);
    }
    match (op, result) {
        (Op::Put { condition: Condition::IfVersion(_), .. }, OpResult::Put { succeeded: true, .. }) => {
            cov.put_if_version_ok += 1
        }
        (Op::Put { key, condition: Condition::IfAbsent, .. }, OpResult::Put { succeeded: true, .. })
            if model.data.contains_key(key.as_ref()) =>
        {
            cov.put_if_absent_over_expired += 1
        }
        (Op::Delete { key, .. }, OpResult::Delete { deleted: false, version: 0 })
            if model.data.contains_key(key.as_ref()) =>
        {
            cov.delete_expired += 1
        }
        (Op::Delete { .. }, OpResult::Delete { deleted: false, version }) if *version != 0 => {
            cov.delete_version_mismatch += 1
        }
        (Op::Touch { .. }, OpResult::Touch { found: true, .. }) => cov.touch_ok += 1,
        (Op::Extend { expires_at_ms, .. }, OpResult::Extend { found: true, expires_at_ms: now_in_force }) => {
            if *now_in_force == Some(*expires_at_ms) {
                cov.extend_moved += 1
            } else {
                cov.extend_kept += 1
            }
        }
        (Op::Increment { key, expires_at_ms: None, .. }, OpResult::Increment(Ok(_)))
            if model.live(key, now).is_some_and(|e| e.2.is_some()) =>
        {
            cov.increment_ok_keeping_ttl += 1
        }
        (_, OpResult::Increment(Err(IncrementError::NotAnInteger))) => cov.not_an_integer += 1,
        (_, OpResult::Increment(Err(IncrementError::Overflow))) => cov.overflow += 1,
        (Op::Expire { keys }, OpResult::Expire { removed }) => {
            cov.expire_removed += removed;
            cov.expire_skipped_live += keys.iter().filter(|k| model.live(k, now).is_some()).count() as u64;
        }
        (_, OpResult::SetClusterMap { succeeded: true, .. }) => cov.cluster_map_set += 1,
        _ => {}
    }
}

/// Compares everything observable: reads at several clocks, sizes, the expired set
/// (which also checks the expiry index has exactly one entry per deadline), and the
/// cluster map.
fn check_full(state: &KvState, model: &Model, keys: &[Bytes], now: u64, ctx: &str) {
    for at in [now, now.saturating_sub(30), now + 1, now + 100, u64::MAX] {
        for key in keys {
            let got = state.get(key, at).map(|r| (r.value.to_vec(), r.version, r.expires_at_ms));
            let want = model.live(key, at).cloned();
            assert_eq!(got, want, "{ctx}: get({key:?}) at {at}");
            if let Some(record) = state.get(key, at) {
                let ttl = record.ttl_remaining_ms(at);
                match record.expires_at_ms {
                    None => assert_eq!(ttl, 0, "{ctx}"),
                    Some(deadline) => assert_eq!(ttl, deadline - at, "{ctx}"),
                }
            }
        }
        let expired = model.expired(at);
        assert_eq!(state.expired_keys(at, usize::MAX), expired, "{ctx}: expired_keys at {at}");
        let limited: Vec<Bytes> = expired.iter().take(3).cloned().collect();
        assert_eq!(state.expired_keys(at, 3), limited, "{ctx}: expired_keys limit 3 at {at}");
    }
    assert_eq!(state.len(), model.data.len(), "{ctx}: len");
    assert_eq!(state.is_empty(), model.data.is_empty(), "{ctx}: is_empty");
    let bytes: u64 = model.data.iter().map(|(k, (v, _, _))| (k.len() + v.len()) as u64).sum();
    assert_eq!(state.approx_bytes(), bytes, "{ctx}: approx_bytes");
    assert_eq!(state.cluster_map().map(|m| m.epoch), model.cluster_epoch, "{ctx}: cluster map");
    assert_eq!(state.remembered_requests(), model.requests.len(), "{ctx}: remembered request ids");
}

fn run_seed(seed: u64, cov: &mut Coverage) {
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        keys: (0..KEYS).map(|i| Bytes::from(format!("k{i:02}"))).collect(),
    };
    let keys = generator.keys.clone();
    let mut state = KvState::default();
    let mut model = Model::default();
    let mut index = 0u64;
    let mut now: UnixMs = 1_000_000;

    for step in 0..COMMANDS_PER_SEED {
        // Some log indexes carry no command (blank / membership entries).
        index += generator.rng.random_range(1..=2);
        // The leader's clock: mostly forward, sometimes back (a new leader).
        now = now.saturating_add_signed(generator.rng.random_range(-20..=60));
        let ops: Vec<Op> = (0..generator.rng.random_range(1..=4))
            .map(|_| generator.op(&state, &model, index, now))
            .collect();
        let command = Command { now_ms: now, ops };

        let mut events = Vec::new();
        let response = state.apply_with_events(index, &command, &mut events);
        assert_eq!(response.results.len(), command.ops.len());
        model.start_command(now);
        for (i, (op, got)) in command.ops.iter().zip(&response.results).enumerate() {
            let before = model.clone();
            let want = model.apply(index, now, op);
            assert_eq!(got, &want, "seed {seed} step {step} op {i}: {op:?} at index {index} now {now}");
            record_coverage(cov, &before, now, op, got);
        }
        let want_events = std::mem::take(&mut model.events);
        assert_eq!(events, want_events, "seed {seed} step {step}: events of entry {index}");
        cov.expired_events += events.iter().filter(|e| e.kind == EventKind::Expired).count() as u64;

        let ctx = format!("seed {seed} step {step}");
        if step % 25 == 0 || step + 1 == COMMANDS_PER_SEED {
            check_full(&state, &model, &keys, now, &ctx);
        }
        if step % 500 == 250 {
            let decoded = KvState::decode_snapshot(&state.encode_snapshot())
                .unwrap_or_else(|e| panic!("{ctx}: snapshot does not decode: {e}"));
            assert_eq!(decoded, state, "{ctx}: snapshot round trip");
            // Carry on with the decoded copy: it must behave identically from here.
            state = decoded;
            check_full(&state, &model, &keys, now, &ctx);
        }
    }
}

#[test]
fn state_machine_matches_model() {
    let mut cov = Coverage::default();
    for seed in 0..SEEDS {
        run_seed(seed, &mut cov);
    }
    let reached = [
        cov.put_if_version_ok,
        cov.put_if_absent_over_expired,
        cov.delete_expired,
        cov.delete_version_mismatch,
        cov.touch_ok,
        cov.increment_ok_keeping_ttl,
        cov.not_an_integer,
        cov.overflow,
        cov.expire_removed,
        cov.expire_skipped_live,
        cov.cluster_map_set,
        cov.request_id_repeated,
        cov.extend_moved,
        cov.extend_kept,
        cov.expired_events,
    ];
    assert!(reached.iter().all(|&n| n > 0), "generator missed an outcome: {cov:?}");
}
