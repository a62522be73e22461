//! Per-key linearizability: is there one order of a key's ops, consistent with their
//! real-time order, in which every response is what the register model
//! (`super::model`) gives?
//!
//! ## Algorithm
//!
//! Wing & Gong's depth-first search with Lowe's memoization, as in Porcupine:
//!
//! - A node is (the set of ops linearized so far, the model state). Its children
//!   linearize one more op. An op may go next only if it was invoked no later than
//!   the earliest completion among the ops not linearized yet (an op that completed
//!   before another was invoked must precede it). Ops with unknown outcome complete
//!   at +∞: they never hold anything back, may be linearized anywhere after their
//!   invocation, and need not be linearized at all. The search succeeds once every
//!   op with a known outcome is linearized.
//! - **Memo.** A node is expanded at most once: a node seen before failed (the search
//!   stops at the first success). Keys are (128-bit Zobrist fingerprint of the set of
//!   *known-outcome* ops linearized, model state), each with the list of sets of
//!   unknown-outcome ops linearized. A node whose unknown set is a superset of a
//!   failed one with the same key is pruned too: linearizing an optional op never
//!   adds possibilities (the node without it could still linearize it later or
//!   never). Fingerprints instead of exact sets keep a memo entry small; a collision
//!   (probability about `states² / 2¹²⁹`, below 10⁻²⁵ at the default bounds) could
//!   only make the check report a violation that is not there, and every reported
//!   violation is re-checked while shrinking. Pruning a node dominated by one that
//!   is still on the search path is safe too: the dominating node can make every
//!   move the pruned one could, so at the end every reachable node is dominated by
//!   an expanded one — including a successful one, if any.
//! - **Unknown outcomes only when needed.** An op with unknown outcome is tried at a
//!   node only if some known-outcome op that may go next is *invalid* there, or is a
//!   read or failed condition that is valid only by binding an unknown version. This
//!   loses nothing: if a run of unknown-outcome ops is followed by an op `z` that
//!   is valid without them and either leaves the state exactly as it was or is a
//!   write, the run can move after `z` (or be dropped): a `z` that changes nothing
//!   commutes with the run, except that after the move the run's versions are
//!   less constrained; a write `z` valid both ways leaves the same value and
//!   version both ways (an increment valid both ways found the same counter), so
//!   the run's effects were overwritten anyway. Repeating this puts every run of
//!   unknown-outcome ops directly before an op that needs it. (A read that binds
//!   an unknown version is excluded because it might bind the wrong write's.)
//!   Moreover the last op of such a run must leave a state of the kind `z` needs —
//!   its value, the key absent, present, a counter — so only unknown-outcome ops
//!   that leave such a state are tried, unless one of those is itself conditional or
//!   an increment (it may need others before it), in which case all are.
//!   Without the rule, every write that never happened would stay a candidate at
//!   every later node.
//! - **Pure ops first.** A known-outcome op that leaves the state exactly as it is
//!   (a read, a failed condition, both with the current version) and may go next is
//!   linearized at once without branching: any linearization that places it later can
//!   place it here instead. This keeps read-heavy histories nearly linear.
//!
//! ## Cost and bounds
//!
//! Linearizability checking is NP-complete; the search is exponential in the worst
//! case. With a concurrency window of `c` (the most known-outcome ops outstanding at
//! once) and `u` unknown-outcome writes that are candidates at the same time, the
//! distinct linearized sets number about `n · 2^c · 2^u`, times the model states each
//! can reach. In practice, a linearizable history is accepted after a few model steps
//! per op, and a violation is found once every order around it has been tried.
//! Every key's search stops after [`SearchLimits::max_steps`] model steps or
//! [`SearchLimits::max_states`] memo entries and reports the key *inconclusive:
//! search budget exceeded*; nothing runs unbounded.
//!
//! ## Shrinking
//!
//! A violation is shrunk to a small sub-history that is still not linearizable: the
//! shortest prefix (by invocation) that fails, then delta debugging (drop halves,
//! quarters, ..., single ops while the rest still fails). A removal is refused if it
//! drops the only op that could explain what a remaining op observed (the write of a
//! value that is read, of a version that is reported), so the witness keeps its
//! cause: "read `a` after `b` was written" rather than "read `a`, which nobody
//! wrote". Shrinking has its own budget ([`SearchLimits::shrink_checks`],
//! [`SearchLimits::shrink_steps`]) and returns the smallest failing sub-history found.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::history::{self, Call, Condition, Op, Outcome, Return};
use super::model::{self, Entry, Needs, State, Values};
use super::{Anomaly, Check, CheckSummary, KeyNote};

/// The work one key's search may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchLimits {
    /// Model transitions evaluated before giving up on a key.
    pub max_steps: u64,
    /// Memo entries (visited nodes) before giving up; about 100 bytes each.
    pub max_states: usize,
    /// Sub-histories checked while shrinking one violation.
    pub shrink_checks: usize,
    /// Model transitions for all of one violation's shrinking together.
    pub shrink_steps: u64,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_steps: 20_000_000,
            max_states: 1_000_000,
            shrink_checks: 400,
            shrink_steps: 20_000_000,
        }
    }
}

/// What one key's search did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Ops searched over (failed ops and reads with unknown outcome have no effect
    /// and are dropped first).
    pub ops: usize,
    /// Of which with unknown outcome.
    pub unknown: usize,
    /// The most known-outcome ops outstanding at one instant.
    pub concurrency: usize,
    /// Model transitions evaluated.
    pub steps: u64,
    /// Nodes expanded (memo entries).
    pub states: usize,
}

/// The result of checking one key that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable(SearchStats),
    /// Not checked here; the reason says why and what checks it instead.
    Skipped {
        reason: String,
    },
    /// The search gave up; says which budget ran out.
    Inconclusive {
        reason: String,
        stats: SearchStats,
    },
}

/// Checks every key of a history. Keys with TTL puts are skipped (see [`check_key`]).
pub fn check_history(history: &[Op], limits: &SearchLimits) -> CheckSummary {
    let mut summary = CheckSummary::new(Check::Linearizable);
    let (mut steps, mut states) = (0u64, 0usize);
    for (key, ops) in history::by_key(history) {
        let stats = match check_key(&key, &ops, limits) {
            Ok(KeyVerdict::Linearizable(stats)) => {
                summary.keys_passed += 1;
                stats
            }
            Ok(KeyVerdict::Skipped { reason }) => {
                summary.skipped.push(KeyNote { key, reason });
                continue;
            }
            Ok(KeyVerdict::Inconclusive { reason, stats }) => {
                summary.inconclusive.push(KeyNote { key, reason });
                stats
            }
            Err(anomaly) => {
                summary.anomalies.push(anomaly);
                continue;
            }
        };
        steps += stats.steps;
        states = states.max(stats.states);
    }
    summary.work = format!("{steps} model steps, at most {states} states for one key");
    summary
}

/// Checks one key's ops (all of them of that key). Keys with a TTL put that may
/// have been applied are skipped: expiry makes values vanish at times the history
/// does not record, which the TTL check handles instead.
pub fn check_key(key: &str, ops: &[Op], limits: &SearchLimits) -> Result<KeyVerdict, Anomaly> {
    if ops.iter().any(|op| op.ttl_ms() > 0 && op.outcome != Outcome::Failed) {
        return Ok(KeyVerdict::Skipped { reason: "has TTL puts (the TTL check covers them)".into() });
    }
    let (entries, values) = match model::compile(ops) {
        Ok(compiled) => compiled,
        Err(why) => return Ok(KeyVerdict::Skipped { reason: format!("malformed history: {why}") }),
    };
    let mut search = Searcher::new(&entries, &values, limits.max_steps, limits.max_states, false);
    let verdict = search.run();
    let stats = search.stats();
    match verdict {
        Verdict::Linearizable => Ok(KeyVerdict::Linearizable(stats)),
        Verdict::Exhausted => Ok(KeyVerdict::Inconclusive {
            reason: format!(
                "inconclusive: search budget exceeded ({} steps, {} states; {} ops, {} unknown, concurrency {})",
                stats.steps, stats.states, stats.ops, stats.unknown, stats.concurrency
            ),
            stats,
        }),
        Verdict::Violation => {
            let minimal = shrink(ops, limits);
            let ops: Vec<Op> = minimal.iter().map(|&i| ops[i].clone()).collect();
            let explanation = explain(&ops, limits);
            Err(Anomaly { check: Check::Linearizable, key: key.to_string(), ops, explanation })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    Violation,
    Exhausted,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MemoKey {
    fingerprint: [u64; 2],
    state: State,
}

/// A node on the search path.
struct Frame {
    state: State,
    /// The op whose linearization led here (`None` at the root).
    via: Option<u32>,
    /// Pure ops linearized on arrival, in order.
    greedy: Vec<u32>,
    /// Ops that may go next, with the state after each.
    children: Vec<(u32, State)>,
    next: usize,
    /// Index into `Searcher::finite` of the first op not linearized (monotone on a path).
    lo: usize,
    /// Index into `Searcher::by_complete` of the first op not linearized.
    mc: usize,
}

/// The node that got furthest, for explanations.
struct Deepest {
    done: usize,
    order: Vec<u32>,
    state: State,
    blocked: Vec<(u32, String)>,
}

struct Searcher<'a> {
    entries: &'a [Entry],
    values: &'a Values,
    max_steps: u64,
    max_states: usize,
    /// Known-outcome entries, by invocation.
    finite: Vec<u32>,
    /// Known-outcome entries, by completion.
    by_complete: Vec<u32>,
    /// Unknown-outcome entries, by invocation.
    optional: Vec<u32>,
    zobrist: Vec<[u64; 2]>,
    linearized: Vec<bool>,
    /// XOR of the Zobrist keys of the linearized known-outcome entries.
    fingerprint: [u64; 2],
    /// Known-outcome entries linearized.
    done: usize,
    /// Linearized unknown-outcome entries, sorted.
    unknowns: Vec<u32>,
    memo: HashMap<MemoKey, Vec<Box<[u32]>>>,
    states: usize,
    steps: u64,
    stack: Vec<Frame>,
    deepest: Option<Deepest>,
    explain: bool,
    /// Scratch space for `expand`.
    needs: Needs,
}

impl<'a> Searcher<'a> {
    fn new(
        entries: &'a [Entry],
        values: &'a Values,
        max_steps: u64,
        max_states: usize,
        explain: bool,
    ) -> Self {
        let mut finite: Vec<u32> =
            (0..entries.len() as u32).filter(|&i| !entries[i as usize].optional()).collect();
        let mut optional: Vec<u32> =
            (0..entries.len() as u32).filter(|&i| entries[i as usize].optional()).collect();
        finite.sort_by_key(|&i| (entries[i as usize].invoke_us, i));
        optional.sort_by_key(|&i| (entries[i as usize].invoke_us, i));
        let mut by_complete = finite.clone();
        by_complete.sort_by_key(|&i| (entries[i as usize].complete_us, i));
        let mut seed = 0x5eed_u64;
        let zobrist = (0..entries.len()).map(|_| [splitmix64(&mut seed), splitmix64(&mut seed)]).collect();
        Searcher {
            entries,
            values,
            max_steps,
            max_states,
            finite,
            by_complete,
            optional,
            zobrist,
            linearized: vec![false; entries.len()],
            fingerprint: [0, 0],
            done: 0,
            unknowns: Vec::new(),
            memo: HashMap::new(),
            states: 0,
            steps: 0,
            stack: Vec::new(),
            deepest: None,
            explain,
            needs: Needs::default(),
        }
    }

    fn stats(&self) -> SearchStats {
        SearchStats {
            ops: self.entries.len(),
            unknown: self.optional.len(),
            concurrency: concurrency(self.entries),
            steps: self.steps,
            states: self.states,
        }
    }

    fn run(&mut self) -> Verdict {
        match self.expand(State::INITIAL, 0, 0, None) {
            None => return Verdict::Linearizable,
            Some(root) => self.stack.push(root),
        }
        while let Some(top) = self.stack.last_mut() {
            if self.steps > self.max_steps || self.states > self.max_states {
                return Verdict::Exhausted;
            }
            if let Some(&(idx, state)) = top.children.get(top.next) {
                top.next += 1;
                let (lo, mc) = (top.lo, top.mc);
                self.mark(idx);
                match self.expand(state, lo, mc, Some(idx)) {
                    None => return Verdict::Linearizable,
                    Some(child) => self.stack.push(child),
                }
            } else {
                let frame = self.stack.pop().expect("the loop runs while the stack is not empty");
                for &idx in frame.greedy.iter().rev() {
                    self.unmark(idx);
                }
                if let Some(idx) = frame.via {
                    self.unmark(idx);
                }
            }
        }
        Verdict::Violation
    }

    /// Arrives at a node (with `via` already linearized): linearizes the pure ops,
    /// consults the memo and lists the children. `None` means success.
    fn expand(&mut self, state: State, lo: usize, mc: usize, via: Option<u32>) -> Option<Frame> {
        // Copies of the shared references, so that entries stay borrowed across `mark`.
        let (entries, values) = (self.entries, self.values);
        let mut frame = Frame { state, via, greedy: Vec::new(), children: Vec::new(), next: 0, lo, mc };
        let min_complete = loop {
            while frame.lo < self.finite.len() && self.linearized[self.finite[frame.lo] as usize] {
                frame.lo += 1;
            }
            while frame.mc < self.by_complete.len() && self.linearized[self.by_complete[frame.mc] as usize] {
                frame.mc += 1;
            }
            let &first = self.by_complete.get(frame.mc)?;
            let min_complete = entries[first as usize].complete_us;
            let mut progressed = false;
            for i in frame.lo..self.finite.len() {
                let idx = self.finite[i];
                let entry = &entries[idx as usize];
                if entry.invoke_us > min_complete {
                    break;
                }
                if self.linearized[idx as usize] {
                    continue;
                }
                self.steps += 1;
                if model::step(&frame.state, entry, values).is_ok_and(|next| next == frame.state) {
                    self.mark(idx);
                    frame.greedy.push(idx);
                    progressed = true;
                }
            }
            if !progressed {
                break min_complete;
            }
        };

        let seen =
            self.memo.entry(MemoKey { fingerprint: self.fingerprint, state: frame.state }).or_default();
        if seen.iter().any(|failed| is_subset(failed, &self.unknowns)) {
            return Some(frame);
        }
        seen.push(self.unknowns.clone().into_boxed_slice());
        self.states += 1;

        let mut blocked = Vec::new();
        let mut needs = std::mem::take(&mut self.needs);
        needs.clear();
        let mut any_blocked = false;
        for &idx in &self.finite[frame.lo..] {
            let entry = &self.entries[idx as usize];
            if entry.invoke_us > min_complete {
                break;
            }
            if self.linearized[idx as usize] {
                continue;
            }
            self.steps += 1;
            match model::step(&frame.state, entry, self.values) {
                Ok(next) => {
                    // A pure op that changes the state only binds an unknown version:
                    // it may be the version of an unknown-outcome write still to come.
                    if entry.is_pure() {
                        any_blocked = true;
                        needs.add(entry);
                    }
                    frame.children.push((idx, next));
                }
                Err(why) => {
                    any_blocked = true;
                    needs.add(entry);
                    if self.explain {
                        blocked.push((idx, why.explain(entry, &frame.state, self.values)));
                    }
                }
            }
        }
        // Unknown-outcome ops only where some known-outcome op that may go next
        // cannot, or can only by binding a version, and only those that leave a
        // state it needs (or all, if one of those may need others first): see the
        // module docs.
        let optional: &[u32] = if any_blocked { &self.optional } else { &[] };
        let available = |idx: &&u32| -> bool {
            let entry = &entries[**idx as usize];
            entry.invoke_us <= min_complete && !self.linearized[**idx as usize]
        };
        let all = optional.iter().filter(available).any(|&idx| {
            needs.met_by(&entries[idx as usize], values) && entries[idx as usize].needs_enablers()
        });
        for &idx in optional {
            let entry = &self.entries[idx as usize];
            if entry.invoke_us > min_complete {
                break;
            }
            if self.linearized[idx as usize] || !(all || needs.met_by(entry, values)) {
                continue;
            }
            self.steps += 1;
            if let Ok(next) = model::step(&frame.state, entry, self.values)
                && next != frame.state
            {
                frame.children.push((idx, next));
            }
        }
        if self.explain && self.deepest.as_ref().is_none_or(|d| self.done > d.done) {
            let mut order: Vec<u32> = Vec::new();
            for f in self.stack.iter().chain(std::iter::once(&frame)) {
                order.extend(f.via.iter().chain(&f.greedy));
            }
            self.deepest = Some(Deepest { done: self.done, order, state: frame.state, blocked });
        }
        self.needs = needs;
        Some(frame)
    }

    fn mark(&mut self, idx: u32) {
        let i = idx as usize;
        self.linearized[i] = true;
        if self.entries[i].optional() {
            let at = self.unknowns.binary_search(&idx).expect_err("marked twice");
            self.unknowns.insert(at, idx);
        } else {
            self.fingerprint[0] ^= self.zobrist[i][0];
            self.fingerprint[1] ^= self.zobrist[i][1];
            self.done += 1;
        }
    }

    fn unmark(&mut self, idx: u32) {
        let i = idx as usize;
        self.linearized[i] = false;
        if self.entries[i].optional() {
            let at = self.unknowns.binary_search(&idx).expect("unmarking a marked op");
            self.unknowns.remove(at);
        } else {
            self.fingerprint[0] ^= self.zobrist[i][0];
            self.fingerprint[1] ^= self.zobrist[i][1];
            self.done -= 1;
        }
    }
}

/// Whether sorted `a` is a subset of sorted `b`.
fn is_subset(a: &[u32], b: &[u32]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.by_ref().any(|y| y == x))
}

/// The most known-outcome entries outstanding at one instant.
fn concurrency(entries: &[Entry]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::new();
    for e in entries.iter().filter(|e| !e.optional()) {
        events.push((e.invoke_us, 1));
        events.push((e.complete_us, -1));
    }
    // At equal times, invocations first: equal timestamps count as concurrent.
    events.sort_by_key(|&(t, d)| (t, -d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The search verdict for a sub-history, within a step budget.
fn verdict(ops: &[Op], max_steps: u64, max_states: usize) -> (Verdict, u64) {
    let Ok((entries, values)) = model::compile(ops) else { return (Verdict::Exhausted, 0) };
    let mut search = Searcher::new(&entries, &values, max_steps, max_states, false);
    let verdict = search.run();
    (verdict, search.steps)
}

/// For each op, what must stay for it to keep its cause in a sub-history: groups
/// of other ops, at least one of each group. The groups: the writes of the value it
/// read, of the version it reported or matched, of the counter value it built on
/// (each when the history has any); when it saw the key present and nothing more
/// specific names a cause, any write that may have created the key before it
/// completed; when it saw the key absent, any delete that may have removed it
/// before it completed (if the history has deletes).
fn justifiers(ops: &[Op]) -> Vec<Vec<Vec<usize>>> {
    let mut by_value: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_version: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_count: HashMap<i64, Vec<usize>> = HashMap::new();
    let (mut creators, mut deleters) = (Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        let version = op.acked_write_version();
        if version.is_none() && op.outcome != Outcome::Unknown {
            continue; // surely wrote nothing
        }
        if let Some(v) = version {
            by_version.entry(v).or_default().push(i);
        }
        match (&op.call, &op.outcome) {
            (Call::Put { value, .. }, _) => by_value.entry(value).or_default().push(i),
            (_, Outcome::Ok(Return::Increment { value, .. })) => by_count.entry(*value).or_default().push(i),
            _ => {}
        }
        match op.call {
            Call::Put { .. } | Call::Increment { .. } => creators.push(i),
            Call::Delete { .. } => deleters.push(i),
            Call::Get => {}
        }
    }
    fn get<K: std::hash::Hash + Eq>(map: &HashMap<K, Vec<usize>>, k: &K) -> Vec<usize> {
        map.get(k).cloned().unwrap_or_default()
    }
    let counter = |n: i64| [get(&by_count, &n), get(&by_value, &n.to_string().as_str())].concat();
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let absent = matches!(
                op.outcome,
                Outcome::Ok(
                    Return::Get { found: false, .. }
                        | Return::Put { succeeded: false, version: 0 }
                        | Return::Delete { deleted: false, version: 0 }
                )
            ) || matches!(
                (&op.call, &op.outcome),
                (
                    Call::Put { condition: Condition::IfAbsent, .. },
                    Outcome::Ok(Return::Put { succeeded: true, .. })
                )
            );
            let (groups, present) = match (&op.call, &op.outcome) {
                (_, Outcome::Ok(Return::Get { found: true, value, version })) => {
                    let by_text = match value.parse::<i64>().ok().filter(|n| n.to_string() == *value) {
                        Some(n) => counter(n),
                        None => get(&by_value, &value.as_str()),
                    };
                    (vec![by_text, get(&by_version, version)], true)
                }
                (_, Outcome::Ok(Return::Put { succeeded: false, version: v }))
                | (_, Outcome::Ok(Return::Delete { deleted: false, version: v }))
                    if *v > 0 =>
                {
                    (vec![get(&by_version, v)], true)
                }
                (
                    Call::Put { condition: Condition::IfVersion(x), .. }
                    | Call::Delete { if_version: Some(x) },
                    Outcome::Ok(Return::Put { succeeded: true, .. } | Return::Delete { deleted: true, .. }),
                ) => (vec![get(&by_version, x)], true),
                (Call::Delete { if_version: None }, Outcome::Ok(Return::Delete { deleted: true, .. })) => {
                    (Vec::new(), true)
                }
                (Call::Increment { delta }, Outcome::Ok(Return::Increment { value, .. })) => {
                    match value.checked_sub(*delta).filter(|&p| p != 0) {
                        Some(prev) => (vec![counter(prev)], true),
                        None => (Vec::new(), false),
                    }
                }
                _ => (Vec::new(), false),
            };
            let mut groups: Vec<Vec<usize>> = groups
                .into_iter()
                .map(|mut g| {
                    g.retain(|&j| j != i);
                    g
                })
                .filter(|g| !g.is_empty())
                .collect();
            let before = |candidates: &[usize]| -> Vec<usize> {
                candidates.iter().copied().filter(|&j| j != i && ops[j].invoke_us <= op.complete_us).collect()
            };
            if groups.is_empty() && present {
                groups.push(before(&creators));
            }
            if absent {
                groups.push(before(&deleters));
            }
            groups.retain(|g| !g.is_empty());
            groups
        })
        .collect()
}

/// A small sub-history of `ops` (indices, by invocation) that is still not
/// linearizable. See the module docs.
fn shrink(ops: &[Op], limits: &SearchLimits) -> Vec<usize> {
    let justifiers = justifiers(ops);
    let mut keep: Vec<usize> = (0..ops.len()).collect();
    keep.sort_by_key(|&i| (ops[i].invoke_us, i));
    let (mut checks, mut steps_left) = (0usize, limits.shrink_steps);
    let mut fails = |subset: &[usize]| -> bool {
        if checks >= limits.shrink_checks || steps_left == 0 {
            return false;
        }
        let mut kept = vec![false; ops.len()];
        subset.iter().for_each(|&i| kept[i] = true);
        let justified =
            subset.iter().all(|&i| justifiers[i].iter().all(|group| group.iter().any(|&j| kept[j])));
        if !justified {
            return false;
        }
        checks += 1;
        let sub: Vec<Op> = subset.iter().map(|&i| ops[i].clone()).collect();
        let (verdict, steps) = verdict(&sub, steps_left, limits.max_states);
        steps_left = steps_left.saturating_sub(steps);
        verdict == Verdict::Violation
    };

    // The shortest failing prefix (not monotone in general; a good first cut).
    let (mut lo, mut hi) = (1, keep.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(&keep[..mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // `hi` moved only to prefixes that were seen to fail.
    keep.truncate(hi);

    // Delta debugging: drop ever smaller chunks while the rest still fails; single
    // ops until nothing more can go.
    let mut chunk = keep.len().div_ceil(2);
    loop {
        let before = keep.len();
        let mut start = 0;
        while start < keep.len() && keep.len() > 1 {
            let end = (start + chunk).min(keep.len());
            let candidate: Vec<usize> = keep[..start].iter().chain(&keep[end..]).copied().collect();
            if fails(&candidate) {
                keep = candidate;
            } else {
                start = end;
            }
        }
        if chunk > 1 {
            chunk = chunk.div_ceil(2);
        } else if keep.len() == before {
            break;
        }
    }
    keep
}

/// Why `ops` (a non-linearizable sub-history, by invocation) cannot be ordered.
fn explain(ops: &[Op], limits: &SearchLimits) -> String {
    let Ok((entries, values)) = model::compile(ops) else { return "malformed sub-history".into() };
    let mut search = Searcher::new(&entries, &values, limits.max_steps, limits.max_states, true);
    let verdict = search.run();
    let mut out = format!(
        "no order of {} is consistent with both their real-time order and the key's semantics \
         (versioned register with CAS, delete and increment)",
        if ops.len() == 1 { "this op".to_string() } else { format!("these {} ops", ops.len()) }
    );
    if verdict != Verdict::Violation {
        let _ = write!(out, " [re-check was not conclusive: {verdict:?}]");
    }
    let name = |idx: u32| format!("#{}", entries[idx as usize].op);
    if let Some(deepest) = &search.deepest {
        if deepest.order.is_empty() {
            let _ = write!(out, ". No op can take effect first.");
        } else {
            let order: Vec<String> = deepest.order.iter().map(|&i| name(i)).collect();
            let _ = write!(
                out,
                ". The furthest any order gets is {}, leaving the key {}. Then:",
                order.join(" "),
                values.describe_state(&deepest.state)
            );
        }
        for (idx, why) in &deepest.blocked {
            let _ = write!(out, "\n  {} cannot take effect: {why}", name(*idx));
        }
        let pending: Vec<String> = entries
            .iter()
            .enumerate()
            .filter(|(i, e)| !e.optional() && !deepest.order.contains(&(*i as u32)))
            .map(|(_, e)| format!("#{}", e.op))
            .collect();
        if !pending.is_empty() {
            let _ = write!(out, "\n  (still to take effect, in some order: {})", pending.join(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    fn check(ops: &[Op]) -> Result<KeyVerdict, Anomaly> {
        check_key("k", ops, &SearchLimits::default())
    }

    fn accepts(ops: &[Op]) {
        match check(ops) {
            Ok(KeyVerdict::Linearizable(_)) => {}
            other => panic!("expected linearizable, got {other:#?}"),
        }
    }

    /// Rejects, and the minimal witness has exactly `witness` ops.
    fn rejects(ops: &[Op], witness: usize) -> Anomaly {
        match check(ops) {
            Err(anomaly) => {
                assert_eq!(anomaly.ops.len(), witness, "witness not minimal:\n{anomaly}");
                anomaly
            }
            other => panic!("expected a violation, got {other:#?}"),
        }
    }

    #[test]
    fn accepts_concurrent_writes_read_in_either_order() {
        // Two overlapping puts; reads see b then a: a landed last.
        accepts(&[
            op(1, "k", 0, 100, put("a"), wrote(7)),
            op(2, "k", 10, 90, put("b"), wrote(6)),
            op(3, "k", 20, 30, Call::Get, read("b", 6)),
            op(3, "k", 110, 120, Call::Get, read("a", 7)),
        ]);
    }

    #[test]
    fn accepts_unknown_writes_that_did_or_did_not_happen() {
        accepts(&[
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("ghost"), Outcome::Unknown),
            op(3, "k", 40, 50, Call::Get, read("a", 3)),
            op(4, "k", 60, 70, put("late"), Outcome::Unknown),
            op(3, "k", 80, 90, Call::Get, read("a", 3)),
            // The unknown write lands long after its client gave up on it.
            op(3, "k", 500, 510, Call::Get, read("late", 9)),
            op(3, "k", 600, 610, cas("c", 9), wrote(12)),
        ]);
    }

    #[test]
    fn accepts_cas_against_an_unknown_version() {
        accepts(&[
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("b"), Outcome::Unknown),
            // The CAS client learned v8 from somewhere (e.g. a read we lost): only
            // possible if b landed with version 8.
            op(3, "k", 40, 50, cas("c", 8), wrote(10)),
            op(3, "k", 60, 70, Call::Get, read("c", 10)),
        ]);
    }

    #[test]
    fn accepts_cas_races_with_one_winner() {
        accepts(&[
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(1, "k", 20, 80, cas("x", 3), wrote(5)),
            op(2, "k", 25, 75, cas("y", 3), refused(5)),
            op(3, "k", 30, 70, Call::Get, read("a", 3)),
            op(3, "k", 90, 95, Call::Get, read("x", 5)),
            op(2, "k", 100, 110, Call::Delete { if_version: Some(5) }, deleted(6)),
            op(1, "k", 120, 130, put_if_absent("z"), wrote(8)),
            op(2, "k", 125, 135, put_if_absent("w"), refused(8)),
        ]);
    }

    #[test]
    fn accepts_increments_with_unknown_outcomes() {
        accepts(&[
            op(1, "c", 0, 10, incr(1), counted(1, 2)),
            op(2, "c", 5, 15, incr(10), Outcome::Unknown),
            op(3, "c", 20, 30, incr(100), Outcome::Unknown),
            op(1, "c", 40, 50, incr(1000), counted(1111, 9)),
            op(1, "c", 60, 70, Call::Get, read("1111", 9)),
        ]);
    }

    #[test]
    fn rejects_stale_read() {
        let a = rejects(
            &[
                op(1, "k", 0, 10, put("a"), wrote(3)),
                op(1, "k", 20, 30, put("b"), wrote(4)),
                op(2, "k", 5, 6, Call::Get, absent()),
                op(2, "k", 40, 50, Call::Get, read("a", 3)),
                op(2, "k", 60, 70, Call::Get, read("b", 4)),
            ],
            3,
        );
        assert!(a.explanation.contains(r#"read "a" @v3, but the key is "b" @v4"#), "{a}");
    }

    #[test]
    fn rejects_resurrected_delete() {
        rejects(
            &[
                op(1, "k", 0, 10, put("a"), wrote(3)),
                op(1, "k", 20, 30, del(), deleted(5)),
                op(2, "k", 40, 50, Call::Get, read("a", 3)),
            ],
            3,
        );
    }

    #[test]
    fn rejects_cas_against_the_wrong_version() {
        rejects(
            &[
                op(1, "k", 0, 10, put("a"), wrote(3)),
                op(1, "k", 20, 30, put("b"), wrote(4)),
                op(2, "k", 40, 50, cas("c", 3), wrote(6)),
            ],
            3,
        );
    }

    #[test]
    fn rejects_version_going_backwards() {
        rejects(&[op(1, "k", 0, 10, put("a"), wrote(5)), op(1, "k", 20, 30, put("b"), wrote(4))], 2);
        // Also when the earlier write's version is only revealed later.
        rejects(
            &[
                op(1, "k", 0, 10, put("a"), Outcome::Unknown),
                op(2, "k", 20, 30, Call::Get, read("a", 9)),
                op(1, "k", 40, 50, put("b"), wrote(8)),
            ],
            3,
        );
    }

    #[test]
    fn rejects_double_applied_increment() {
        rejects(&[op(1, "c", 0, 10, incr(5), counted(5, 2)), op(1, "c", 20, 30, incr(1), counted(11, 4))], 2);
    }

    #[test]
    fn rejects_lost_acknowledged_write() {
        rejects(
            &[
                op(1, "k", 0, 10, put("a"), wrote(3)),
                op(2, "k", 20, 30, put("b"), wrote(4)),
                op(3, "k", 40, 50, Call::Get, absent()),
            ],
            2,
        );
    }

    #[test]
    fn skips_ttl_keys_and_reports_malformed_ones() {
        let ttl = [op(1, "k", 0, 10, put_ttl("a", 100), wrote(3))];
        assert!(matches!(check(&ttl), Ok(KeyVerdict::Skipped { .. })));
        let malformed = [op(1, "k", 0, 10, put("a"), absent())];
        assert!(
            matches!(check(&malformed), Ok(KeyVerdict::Skipped { reason }) if reason.contains("malformed"))
        );
    }

    #[test]
    fn gives_up_with_a_clear_reason_when_over_budget() {
        let ops: Vec<Op> = (0..20)
            .map(|i| op(i, "k", 0, 1000, put(&format!("v{i}")), wrote(20 - u64::from(i))))
            .chain([op(99, "k", 2000, 2001, Call::Get, read("v0", 1))])
            .collect();
        let tiny = SearchLimits { max_steps: 50, ..SearchLimits::default() };
        match check_key("k", &ops, &tiny) {
            Ok(KeyVerdict::Inconclusive { reason, .. }) => {
                assert!(reason.contains("inconclusive: search budget exceeded"))
            }
            other => panic!("{other:#?}"),
        }
    }
}
