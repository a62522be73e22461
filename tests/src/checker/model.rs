//! The sequential specification of one key, as the linearizability search uses it:
//! a register holding a value (a `Put`'s string or a counter) and the version of the
//! write that last changed it, with versioned CAS, conditional delete and increment.
//!
//! It mirrors `KvState::apply` in `node/src/state_machine.rs` for one key, minus TTLs,
//! with two additions that come from checking a *history* rather than running a log:
//!
//! - **Unknown versions.** A write whose outcome is unknown has no version on record.
//!   Its state carries [`Ver::AtLeast`]: the version is some number not below a bound.
//!   The first later observation of the version (a read, a failed condition, a CAS that
//!   succeeded against it) binds it, provided it respects the bound; a CAS
//!   `if_version(x)` can succeed against it only by binding it to `x`.
//! - **Batches.** Ops of one Raft entry share its index, so two writes to one key may
//!   carry the same version — but only if they were in flight together. The state
//!   remembers when the write that set the version completed; a later write must have
//!   a strictly greater version if it was invoked after that, and may repeat the
//!   version otherwise.
//!
//! Ops are compiled from [`Op`]s into [`Entry`]s once per key, with the strings
//! interned, so a model state is a small `Copy` value that hashes fast.

use std::collections::HashMap;

use super::history::{Call, Condition, Op, Outcome, Return, Version};

/// A stored value: an interned `Put` string, or a counter written by `Increment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Val {
    Str(u32),
    Int(i64),
}

/// The version of the last write to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Ver {
    Known(Version),
    /// Written by an op with an unknown outcome and not observed since: some version
    /// `>=` this bound.
    AtLeast(Version),
}

impl Ver {
    pub fn floor(self) -> Version {
        match self {
            Ver::Known(v) | Ver::AtLeast(v) => v,
        }
    }
}

/// The register: a value or absent, plus what the next write's version must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct State {
    /// `None` = absent.
    pub value: Option<Val>,
    /// The version of the last write, a delete included (an absent key *reports*
    /// version 0, but the next write must still exceed the delete's version).
    pub version: Ver,
    /// The version of the last write with a known outcome (unknown-outcome writes
    /// after it have versions `>=` it)...
    pub known_version: Version,
    /// ...and the earliest completion among the known-outcome writes at that
    /// version: a write invoked after it cannot be in their batch, so its version
    /// must exceed `known_version` whatever unknown writes came in between.
    pub known_complete_us: u64,
}

impl State {
    pub const INITIAL: State =
        State { value: None, version: Ver::Known(0), known_version: 0, known_complete_us: 0 };
}

/// A read's observed value, resolved against the interned strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Observed {
    /// The interned id if some `Put` of this key wrote exactly this string.
    pub str_id: Option<u32>,
    /// The integer if the string is a counter's canonical decimal form.
    pub int: Option<i64>,
}

impl Observed {
    fn matches(self, val: Val) -> bool {
        match val {
            Val::Str(id) => self.str_id == Some(id),
            Val::Int(n) => self.int == Some(n),
        }
    }
}

/// What a write required of the key to succeed (the `Put`/`Delete` conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Guard {
    Always,
    Absent,
    Present,
    Version(Version),
}

/// An op compiled for the search. Ops without any possible effect or constraint
/// (failed ops, reads with unknown outcome) are not compiled at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Action {
    /// `found == false` ignores `observed` and `version`.
    Get { found: bool, observed: Observed, version: Version, text: String },
    /// `result`: `(succeeded, version)` when acknowledged, `None` when unknown.
    /// `value: None` for a delete.
    Write { guard: Guard, value: Option<u32>, result: Option<(bool, Version)> },
    /// `result`: `(value, version)` when acknowledged.
    Increment { delta: i64, result: Option<(i64, Version)> },
}

/// One op of the key, ready for the search.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Index of the op in the slice the entries were compiled from.
    pub op: usize,
    pub invoke_us: u64,
    /// `u64::MAX` for an op with unknown outcome: it never has to have happened.
    pub complete_us: u64,
    pub action: Action,
}

impl Entry {
    /// Unknown outcome: may be linearized anywhere after its invocation, or never.
    pub fn optional(&self) -> bool {
        self.complete_us == u64::MAX
    }

    /// Whether the op needs a version below `floor`: at a state whose version is
    /// at least `floor`, and at every state after it (versions only grow), it can
    /// never take effect.
    pub fn needs_version_below(&self, floor: Version) -> bool {
        match &self.action {
            Action::Get { found: true, version, .. } => *version < floor,
            Action::Write { result: Some((false, y)), .. } => *y > 0 && *y < floor,
            Action::Write { result: Some((true, w)), guard, .. } => {
                *w < floor || matches!(guard, Guard::Version(x) if *x < floor)
            }
            Action::Increment { result: Some((_, w)), .. } => *w < floor,
            _ => false,
        }
    }

    /// A write conditional on the key's version (`if_version`).
    pub fn is_version_conditional(&self) -> bool {
        matches!(self.action, Action::Write { guard: Guard::Version(_), .. })
    }

    /// A read or a write that reported its condition false: changes nothing but
    /// (at most) what is known of the version.
    pub fn is_pure(&self) -> bool {
        matches!(self.action, Action::Get { .. } | Action::Write { result: Some((false, _)), .. })
    }
}

/// The kinds of state that would let some blocked ops take effect, to tell which
/// unknown-outcome writes could help them (see `linearizable`'s module docs).
/// Every unknown-outcome write linearized at a state `s` gets a version of at least
/// `s`'s, so needs for a lower version are dropped: nothing still to come meets them.
#[derive(Debug, Default)]
pub(super) struct Needs {
    values: Vec<u32>,
    absent: bool,
    present: bool,
    counter: bool,
    /// The counter values needed (when `counter` comes from waiting ops).
    targets: Vec<i64>,
}

impl Needs {
    pub fn clear(&mut self) {
        self.values.clear();
        self.targets.clear();
        (self.absent, self.present, self.counter) = (false, false, false);
    }

    /// Drops the counter need if no needed value can be reached from the key's
    /// counter at `s` (or from 0 after a delete, or from an integer put) by adding
    /// some of the `deltas` of the unknown-outcome increments still available: a
    /// sound interval test, cheap enough for every node.
    pub fn drop_unreachable_counters(&mut self, s: &State, values: &Values, available: &[&Entry]) {
        if !self.counter || self.targets.is_empty() {
            return;
        }
        let (mut low, mut high) = (0i128, 0i128);
        let mut bases: Vec<i128> = Vec::new();
        match s.value {
            None => bases.push(0),
            Some(Val::Int(n)) => bases.push(n.into()),
            Some(Val::Str(id)) => bases.extend(values.ints[id as usize].map(i128::from)),
        }
        for u in available {
            match &u.action {
                Action::Increment { delta, .. } if *delta < 0 => low += i128::from(*delta),
                Action::Increment { delta, .. } => high += i128::from(*delta),
                Action::Write { value: None, .. } => bases.push(0),
                Action::Write { value: Some(id), .. } => {
                    bases.extend(values.ints[*id as usize].map(i128::from))
                }
                Action::Get { .. } => {}
            }
        }
        let reachable = |t: i128| bases.iter().any(|&b| b + low <= t && t <= b + high);
        if !self.targets.iter().any(|&t| reachable(t.into())) {
            self.counter = false;
        }
    }

    /// Records what `e` (blocked at `s`, or valid there only by binding a version)
    /// needs the key to hold. Over-approximates: a need no write can meet does no harm.
    pub fn add(&mut self, e: &Entry, s: &State) {
        let reachable = |v: Version| v >= s.version.floor();
        match &e.action {
            Action::Get { found: false, .. } => self.absent = true,
            Action::Get { found: true, observed, version, .. } if reachable(*version) => {
                self.values.extend(observed.str_id);
                self.counter |= observed.int.is_some();
                self.targets.extend(observed.int);
            }
            Action::Get { .. } => {}
            Action::Write { result: Some((false, y)), .. } => {
                self.absent |= *y == 0;
                self.present |= *y > 0 && reachable(*y);
            }
            Action::Write { result: Some((true, w)), .. }
            | Action::Increment { result: Some((_, w)), .. }
                if !reachable(*w) => {}
            Action::Write { guard: Guard::Absent, .. } => self.absent = true,
            Action::Write { guard: Guard::Present, .. } => self.present = true,
            Action::Write { guard: Guard::Version(x), .. } => self.present |= reachable(*x),
            Action::Write { guard: Guard::Always, .. } => {}
            Action::Increment { delta, result } => {
                self.counter = true;
                match result.and_then(|(value, _)| value.checked_sub(*delta)) {
                    Some(prev) => {
                        self.absent |= prev == 0;
                        self.targets.push(prev);
                    }
                    // Unknown outcome or overflow: any counter will do.
                    None => self.targets.extend([i64::MIN, i64::MAX]),
                }
            }
        }
    }

    /// Whether the state `u` leaves (if it takes effect) is of a needed kind.
    pub fn met_by(&self, u: &Entry, values: &Values) -> bool {
        match &u.action {
            Action::Write { value: Some(id), .. } => {
                self.present
                    || self.values.contains(id)
                    || (self.counter && values.ints[*id as usize].is_some())
            }
            Action::Write { value: None, .. } => self.absent,
            Action::Increment { .. } => self.counter || self.present,
            Action::Get { .. } => false,
        }
    }

    /// Adds what the unknown-outcome op `u` needs before it to take effect at (or
    /// after) `s`, given the needs `served` it meets; whether that added anything.
    /// An unconditional delete needs nothing: where the key is absent, the absence
    /// it provides is there already. An increment needs earlier writes only to be
    /// applicable (the key holds a non-integer) or when a counter *value* is
    /// needed: for presence alone, one write is enough.
    pub fn add_enablers(&mut self, u: &Entry, s: &State, served: &Needs, values: &Values) -> bool {
        let before = (self.absent, self.present, self.counter);
        match &u.action {
            Action::Write { guard: Guard::Absent, .. } => self.absent = true,
            Action::Write { guard: Guard::Version(x), .. } => self.present |= *x >= s.version.floor(),
            Action::Increment { .. } => {
                let non_integer = matches!(s.value, Some(Val::Str(id)) if values.ints[id as usize].is_none());
                if non_integer || served.counter || self.counter {
                    (self.counter, self.absent) = (true, true);
                }
            }
            _ => {}
        }
        before != (self.absent, self.present, self.counter)
    }
}

/// The interned `Put` values of one key.
#[derive(Debug, Default)]
pub(super) struct Values {
    strings: Vec<String>,
    /// The counter value of each string, if it parses as one (`parse_i64` rules).
    ints: Vec<Option<i64>>,
    ids: HashMap<String, u32>,
    /// The one id for every written value that no read returned and that is no
    /// counter: nothing tells such values apart, so states differing only in which
    /// of them is stored are one state.
    unread: Option<u32>,
}

impl Values {
    fn unread(&mut self) -> u32 {
        *self.unread.get_or_insert_with(|| {
            self.strings.push("an unread value".into());
            self.ints.push(None);
            self.strings.len() as u32 - 1
        })
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.ints.push(parse_counter(s));
        self.ids.insert(s.to_string(), id);
        id
    }

    fn observe(&self, s: &str) -> Observed {
        let int = s.parse::<i64>().ok().filter(|n| n.to_string() == s);
        Observed { str_id: self.ids.get(s).copied(), int }
    }

    /// Whether `id` is the merged value of writes no read returned.
    pub fn is_unread(&self, id: u32) -> bool {
        self.unread == Some(id)
    }

    fn describe(&self, val: Val) -> String {
        match val {
            Val::Str(id) if Some(id) == self.unread => self.strings[id as usize].clone(),
            Val::Str(id) => format!("{:?}", self.strings[id as usize]),
            Val::Int(n) => format!("counter {n}"),
        }
    }

    /// "absent", "\"v3\" @v7", "counter 4 @v>=9".
    pub fn describe_state(&self, s: &State) -> String {
        let version = match s.version {
            Ver::Known(v) => format!("@v{v}"),
            Ver::AtLeast(v) => format!("@v>={v} (unknown write)"),
        };
        match s.value {
            None if s.version == Ver::Known(0) => "absent (never written)".into(),
            None => format!("absent (deleted {version})"),
            Some(val) => format!("{} {version}", self.describe(val)),
        }
    }
}

/// The counter rules of `state_machine::parse_i64`: optional `-`, digits, fits an i64.
fn parse_counter(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Compiles one key's ops. `Err` names a malformed op (see [`Op::validate`]).
/// `merge_unread` makes all values that no read returned (and that are no
/// counters) one value: an exact reduction for the search, but explanations want
/// the real values.
pub(super) fn compile(ops: &[Op], merge_unread: bool) -> Result<(Vec<Entry>, Values), String> {
    let mut values = Values::default();
    // Intern every written string first, so reads resolve against all of them.
    for op in ops {
        if let Call::Put { value, .. } = &op.call {
            values.intern(value);
        }
    }
    let read: std::collections::HashSet<&str> =
        ops.iter().filter_map(|op| op.read_found()).map(|(v, _)| v).collect();
    let mut entries = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        op.validate().map_err(|e| format!("op {i} ({op}): {e}"))?;
        let ret = match &op.outcome {
            Outcome::Failed => continue,
            Outcome::Unknown if matches!(op.call, Call::Get) => continue,
            Outcome::Unknown => None,
            Outcome::Ok(ret) => Some(ret),
        };
        let action = match (&op.call, ret) {
            (Call::Get, Some(Return::Get { found, value, version })) => Action::Get {
                found: *found,
                observed: values.observe(value),
                version: *version,
                text: value.clone(),
            },
            (Call::Put { value, condition, .. }, ret) => {
                let guard = match condition {
                    Condition::None => Guard::Always,
                    Condition::IfAbsent => Guard::Absent,
                    Condition::IfVersion(v) => Guard::Version(*v),
                };
                let result = match ret {
                    Some(Return::Put { succeeded, version }) => Some((*succeeded, *version)),
                    _ => None,
                };
                let id = if !merge_unread || read.contains(value.as_str()) || parse_counter(value).is_some() {
                    values.intern(value)
                } else {
                    values.unread()
                };
                Action::Write { guard, value: Some(id), result }
            }
            (Call::Delete { if_version }, ret) => {
                let guard = if_version.map_or(Guard::Present, Guard::Version);
                let result = match ret {
                    Some(Return::Delete { deleted, version }) => Some((*deleted, *version)),
                    _ => None,
                };
                Action::Write { guard, value: None, result }
            }
            (Call::Increment { delta }, ret) => {
                let result = match ret {
                    Some(Return::Increment { value, version }) => Some((*value, *version)),
                    _ => None,
                };
                Action::Increment { delta: *delta, result }
            }
            _ => return Err(format!("op {i} ({op}): the return does not match the call")),
        };
        let complete_us = if ret.is_some() { op.complete_us } else { u64::MAX };
        entries.push(Entry { op: i, invoke_us: op.invoke_us, complete_us, action });
    }
    Ok((entries, values))
}

/// Why an op cannot take effect in a state; turned into words by
/// [`Mismatch::explain`] only when a report needs them (the search evaluates
/// millions of failing steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// A read's value or presence differs from the state's.
    ReadValue,
    /// A reported version differs from the state's (or is below an unknown one's bound).
    Version(Version),
    /// Reported success, but the condition does not hold.
    ConditionFalse,
    /// Reported its condition false (with this version), but it holds.
    ConditionTrue(Version),
    /// An unconditional write reported failure.
    Unconditional,
    /// An op with unknown outcome would change nothing here.
    NoEffect,
    NotInteger,
    Overflow,
    /// An increment returned another value than current + delta.
    Sum {
        current: i64,
        new: i64,
    },
    /// A write's version is below what the key's previous write requires.
    Backwards {
        wrote: Version,
        strict: bool,
    },
}

impl Mismatch {
    /// Why `e` cannot take effect in `s`, in words.
    pub fn explain(self, e: &Entry, s: &State, values: &Values) -> String {
        let state = values.describe_state(s);
        match (self, &e.action) {
            (Mismatch::ReadValue, Action::Get { found: false, .. }) => {
                format!("read found nothing, but the key holds {state}")
            }
            (Mismatch::ReadValue, Action::Get { version, text, .. }) => {
                format!("read {text:?} @v{version}, but the key is {state}")
            }
            (Mismatch::Version(y), _) => format!("observed v{y}, but the key is {state}"),
            (Mismatch::ConditionFalse, _) => {
                format!("succeeded, but its condition does not hold: the key is {state}")
            }
            (Mismatch::ConditionTrue(y), _) => {
                format!("reported its condition false at v{y}, but the key is {state}")
            }
            (Mismatch::Unconditional, _) => "an unconditional write reported failure".into(),
            (Mismatch::NoEffect, _) => format!("would change nothing: the key is {state}"),
            (Mismatch::NotInteger, _) => format!("the key holds a non-integer {state}"),
            (Mismatch::Overflow, _) => format!("overflows: the key is {state}"),
            (Mismatch::Sum { current, new }, Action::Increment { delta, result: Some((value, _)) }) => {
                format!("returned {value}, but the key is {state}: {current} {delta:+} = {new}")
            }
            (Mismatch::Backwards { wrote, strict }, _) => {
                let mut why = format!("wrote v{wrote}, but the key was already {state}");
                if strict {
                    why.push_str(&format!(
                        " (and v{} was written by an op that completed before this one was invoked)",
                        s.known_version
                    ));
                }
                why
            }
            (m, _) => format!("{m:?}: the key is {state}"),
        }
    }
}

/// Applies `e` to `s`. `Err` says why `e` cannot take effect in state `s`: its
/// response contradicts the state, or (for an op with unknown outcome) it would
/// change nothing, so linearizing it here is pointless.
pub(super) fn step(s: &State, e: &Entry, values: &Values) -> Result<State, Mismatch> {
    match &e.action {
        Action::Get { found: false, .. } => match s.value {
            None => Ok(*s),
            Some(_) => Err(Mismatch::ReadValue),
        },
        Action::Get { found: true, observed, version, .. } => match s.value {
            Some(val) if observed.matches(val) => observe(s, *version),
            _ => Err(Mismatch::ReadValue),
        },
        Action::Write { guard, value, result } => {
            let new_value = value.map(Val::Str);
            match result {
                Some((true, w)) => match may_succeed(s, *guard) {
                    Some(bound) => write(&bound, e, new_value, Some(*w)),
                    None => Err(Mismatch::ConditionFalse),
                },
                Some((false, y)) => may_fail(s, *guard, *y),
                None => match may_succeed(s, *guard) {
                    Some(bound) => write(&bound, e, new_value, None),
                    None => Err(Mismatch::NoEffect),
                },
            }
        }
        Action::Increment { delta, result } => {
            let current = match s.value {
                None => 0,
                Some(Val::Int(n)) => n,
                Some(Val::Str(id)) => values.ints[id as usize].ok_or(Mismatch::NotInteger)?,
            };
            let new = current.checked_add(*delta).ok_or(Mismatch::Overflow)?;
            match result {
                Some((value, _)) if *value != new => Err(Mismatch::Sum { current, new }),
                Some((_, w)) => write(s, e, Some(Val::Int(new)), Some(*w)),
                None => write(s, e, Some(Val::Int(new)), None),
            }
        }
    }
}

/// The state after the guard held, with an unknown version bound to the CAS
/// version if that is what made it hold; `None` if it cannot hold.
fn may_succeed(s: &State, guard: Guard) -> Option<State> {
    match (guard, s.value) {
        (Guard::Always, _) | (Guard::Absent, None) => Some(*s),
        (Guard::Present, Some(_)) => Some(*s),
        (Guard::Version(x), Some(_)) => match s.version {
            Ver::Known(v) if v == x => Some(*s),
            Ver::AtLeast(m) if x >= m => Some(State { version: Ver::Known(x), ..*s }),
            _ => None,
        },
        _ => None,
    }
}

/// A write that reported its condition false, with current version `y`.
fn may_fail(s: &State, guard: Guard, y: Version) -> Result<State, Mismatch> {
    match (guard, s.value) {
        (Guard::Always, _) => Err(Mismatch::Unconditional),
        (Guard::Absent, Some(_)) => observe(s, y),
        (Guard::Version(x), Some(_)) if y != x => observe(s, y),
        (Guard::Present | Guard::Version(_), None) if y == 0 => Ok(*s),
        _ => Err(Mismatch::ConditionTrue(y)),
    }
}

/// The present key's version observed as `y`: checks it, or binds an unknown one.
fn observe(s: &State, y: Version) -> Result<State, Mismatch> {
    match s.version {
        Ver::Known(v) if v == y => Ok(*s),
        Ver::AtLeast(m) if y >= m => Ok(State { version: Ver::Known(y), ..*s }),
        _ => Err(Mismatch::Version(y)),
    }
}

/// A write by `e` leaving `value` (`None` = deleted) at version `w` (`None` = unknown).
fn write(s: &State, e: &Entry, value: Option<Val>, w: Option<Version>) -> Result<State, Mismatch> {
    // Invoked after the last known write completed: not in its batch, so strictly later.
    let strict = e.invoke_us > s.known_complete_us;
    let min = s.version.floor().max(s.known_version + u64::from(strict));
    match w {
        Some(w) if w >= min => {
            let known_complete_us =
                if w == s.known_version { s.known_complete_us.min(e.complete_us) } else { e.complete_us };
            Ok(State { value, version: Ver::Known(w), known_version: w, known_complete_us })
        }
        Some(wrote) => Err(Mismatch::Backwards { wrote, strict }),
        None => Ok(State { value, version: Ver::AtLeast(min), ..*s }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    fn run(ops: &[Op]) -> Result<State, String> {
        let (entries, values) = compile(ops, false).expect("well-formed");
        entries
            .iter()
            .try_fold(State::INITIAL, |s, e| step(&s, e, &values).map_err(|m| m.explain(e, &s, &values)))
    }

    #[test]
    fn sequential_semantics_match_the_state_machine() {
        let ok = [
            op(1, "k", 0, 1, Call::Get, absent()),
            op(1, "k", 2, 3, put_if_absent("a"), wrote(5)),
            op(1, "k", 4, 5, put_if_absent("b"), refused(5)),
            op(1, "k", 6, 7, cas("c", 4), refused(5)),
            op(1, "k", 8, 9, cas("d", 5), wrote(8)),
            op(1, "k", 10, 11, Call::Get, read("d", 8)),
            op(1, "k", 12, 13, Call::Delete { if_version: Some(7) }, not_deleted(8)),
            op(1, "k", 14, 15, del(), deleted(9)),
            op(1, "k", 16, 17, del(), not_deleted(0)),
            op(1, "k", 18, 19, cas("e", 9), refused(0)),
            op(1, "k", 20, 21, incr(5), counted(5, 12)),
            op(1, "k", 22, 23, Call::Get, read("5", 12)),
        ];
        assert!(run(&ok).is_ok(), "{:?}", run(&ok));
    }

    #[test]
    fn contradictions_are_explained() {
        let stale = [op(1, "k", 0, 1, put("a"), wrote(3)), op(1, "k", 2, 3, Call::Get, read("b", 2))];
        assert!(run(&stale).unwrap_err().contains(r#"read "b" @v2, but the key is "a" @v3"#));
        let backwards = [op(1, "k", 0, 1, put("a"), wrote(3)), op(1, "k", 2, 3, put("b"), wrote(3))];
        assert!(run(&backwards).unwrap_err().contains("completed before this one was invoked"));
        let increment = [op(1, "k", 0, 1, incr(2), counted(3, 4))];
        assert!(run(&increment).unwrap_err().contains("returned 3"));
    }

    #[test]
    fn same_batch_writes_may_share_a_version() {
        // Overlapping in time: one Raft entry may carry both.
        let ops = [op(1, "k", 0, 10, put("a"), wrote(3)), op(2, "k", 5, 12, put("b"), wrote(3))];
        assert!(run(&ops).is_ok());
    }

    #[test]
    fn an_unknown_write_in_between_does_not_let_a_later_write_reuse_a_version() {
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 5, 6, put("u"), Outcome::Unknown),
            op(3, "k", 20, 30, put("b"), wrote(3)),
        ];
        assert!(run(&ops).unwrap_err().contains("wrote v3"));
    }

    #[test]
    fn unknown_version_is_bound_by_the_first_observation() {
        let ops = [
            op(1, "k", 0, 1, put("a"), wrote(3)),
            op(1, "k", 2, 3, put("b"), Outcome::Unknown),
            op(2, "k", 4, 5, cas("c", 7), wrote(9)),
        ];
        assert_eq!(run(&ops).map(|s| s.version), Ok(Ver::Known(9)));
        let below_bound = [
            op(1, "k", 0, 1, put("a"), wrote(3)),
            op(1, "k", 2, 3, put("b"), Outcome::Unknown),
            op(2, "k", 4, 5, Call::Get, read("b", 3)),
        ];
        assert!(run(&below_bound).is_err(), "b was written after v3 completed: its version exceeds 3");
    }
}
