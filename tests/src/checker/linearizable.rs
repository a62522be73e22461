//! Per-key linearizability: is there one order of a key's ops, consistent with their
//! real-time order, in which every response is what the register model (`model`)
//! gives?
//!
//! ## Search
//!
//! Wing & Gong's depth-first search with Lowe's memoization, as in Porcupine. A
//! node is (the ops linearized so far, the model state); a child linearizes one
//! more op. An op may go next only if it was invoked no later than the earliest
//! completion among the ops not linearized yet. Ops with unknown outcome complete at
//! +∞: they hold nothing back, may take effect anywhere after their invocation, and
//! need not take effect at all. The search succeeds once every op with a known
//! outcome is linearized. On top of that:
//!
//! - **Memo.** A node is expanded at most once (a node seen before has failed: the
//!   search stops at the first success). The key is a 128-bit Zobrist fingerprint of
//!   the known-outcome ops linearized plus the model state; per key the memo keeps
//!   the sets of unknown-outcome ops used. A collision (probability about
//!   `states² / 2¹²⁹`, below 10⁻²⁵ at the default bounds) could only produce a false
//!   violation, and every violation is re-checked while shrinking.
//! - **Dominance.** A node is also pruned when a failed node with the same key kept
//!   unknown-outcome ops at least as useful: each op it used can be matched to a
//!   distinct op of the same action used here, invoked no later (available no later,
//!   never stricter about versions). Using an unknown-outcome op never adds
//!   possibilities, so this includes "same key, subset used". Pruning against a node
//!   still on the search path is safe too: the dominating node can make every move
//!   the pruned one could, so at the end every reachable node is dominated by an
//!   expanded one — a successful one included, if any.
//! - **Pure ops first.** A read or failed condition that may go next and is valid in
//!   the current state without binding anything is linearized at once, without
//!   branching: an order that places it later can place it here instead.
//! - **Dead ends.** Versions only grow along a path, so a node where a known-outcome
//!   op that may go next needs a lower version than the state's (a read or failed
//!   condition reporting it, a CAS on it, a write acknowledged at it) is not
//!   expanded.
//!
//! ## Unknown outcomes
//!
//! Ops with unknown outcome are the expensive part. Take any valid order and a run
//! of unknown-outcome ops in it followed by a known-outcome op `z`. If `z` is valid
//! without the run and changes nothing (a read, a failed condition) or is a write,
//! the run can move after `z` or go: a `z` that changes nothing commutes with the run
//! (whose versions get less constrained), and a write valid both ways leaves the same
//! value and version both ways (an increment valid both ways found the same counter).
//! If `z` is valid without the run only by binding an unknown version, the same holds
//! except for a CAS conditional on that version, which must come first. Otherwise the
//! run's last op must make `z` valid, and an earlier op of the run matters only to a
//! later conditional or increment one (an unconditional write does not care what it
//! overwrites). So the search tries an unknown-outcome op only
//!
//! - (a) if a known-outcome op that may go next is invalid and becomes valid right
//!   after it;
//! - (b) if a conditional or increment unknown-outcome op that could serve such an
//!   op needs it first: an `if_absent` put needs the key absent, a CAS needs it
//!   present at a version not below the current one, an increment needs a counter —
//!   but only where the key holds a non-integer, or where a counter *value* is needed
//!   that the available increments can still reach (judged by the range of their
//!   sums);
//! - (c) if it is a CAS applicable here while a read or failed condition that may go
//!   next is valid only by binding the current version.
//!
//! Values that no read returned are one value to the model (nothing tells them
//! apart), so many unknown-outcome ops have the same action; of those equally strict
//! about versions at a node only the one invoked last is tried (spending it keeps
//! the more useful ones). And — a deliberate approximation — such anonymous
//! unknown-outcome writes (puts of unread values, deletes) are not used up: the
//! search may credit one more than once instead of tracking which were spent, which
//! would multiply every node by the combinations of spent ops. That only admits more
//! orders, so it never reports a violation that is not there; it can miss one that
//! needs more such writes than were in flight (the key vanishing twice while one
//! delete was in doubt). Increments and puts of values that were read stay
//! single-use, so a double-applied increment or a resurrected value is still caught.
//!
//! ## Cost and bounds
//!
//! Checking linearizability is NP-complete and the search is exponential in the
//! worst case: with `c` known-outcome ops outstanding at once, about `n · 2^c`
//! linearized sets, times the states each reaches, times the unknown-outcome ops
//! used. Every key's search stops after [`SearchLimits::max_steps`] units of work
//! (model steps and memo comparisons) or [`SearchLimits::max_states`] memo entries
//! and reports the key *inconclusive: search budget exceeded*; nothing runs
//! unbounded. Measured with `ringkv-checker-bench` (release build, one core,
//! histories generated from a sequential run, ~8% extra never-applied writes):
//!
//! - Register keys (put, CAS, if_absent, delete, get): valid histories of 1,000 to
//!   10,000 ops at concurrency 6 and 10% unknown outcomes are accepted in 1–17 ms
//!   (20k–2M steps); 2,000 ops at concurrency 15 in under 4 ms; 30% unknown
//!   outcomes in under 3 ms. One corrupted op in the last 5% of the history is
//!   found, and shrunk to a witness of 2–5 ops, in 25 ms (1,000 ops) to 0.9 s
//!   (10,000 ops).
//! - Counter keys (increment, get): valid histories of 2,000 ops are accepted in
//!   4–60 ms; but a violation late in a history with many unknown increments is
//!   usually inconclusive — telling which increments happened is subset sum. The
//!   counter check ([`super::counters`]) covers those keys.
//! - Keys that mix string values and increments, with frequent increments that
//!   never applied, can be inconclusive even when valid.
//!
//! So a workload should keep counters and registers on separate keys and rotate
//! keys so that each sees at most a few thousand ops.
//!
//! ## Witnesses
//!
//! A violation is shrunk to a small sub-history that is still not linearizable and
//! explained in words; see `shrink`.

use std::collections::HashMap;

use super::history::{self, Op, Outcome};
use super::model::{self, Entry, Needs, State, Values};
use super::{Anomaly, Check, CheckSummary, KeyNote, shrink};

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
            max_steps: 100_000_000,
            max_states: 1_000_000,
            shrink_checks: 400,
            shrink_steps: 100_000_000,
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
    summary.work = format!("{steps} model steps, at most {states} states for one key, anomalies not counted");
    summary
}

/// Checks one key's ops (all of them of that key). Keys with a TTL put that may
/// have been applied are skipped: expiry makes values vanish at times the history
/// does not record, which the TTL check handles instead.
pub fn check_key(key: &str, ops: &[Op], limits: &SearchLimits) -> Result<KeyVerdict, Anomaly> {
    if ops.iter().any(|op| op.ttl_ms() > 0 && op.outcome != Outcome::Failed) {
        return Ok(KeyVerdict::Skipped { reason: "has TTL puts (the TTL check covers them)".into() });
    }
    let (entries, values) = match model::compile(ops, true) {
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
            let minimal = shrink::shrink(ops, limits);
            let ops: Vec<Op> = minimal.iter().map(|&i| ops[i].clone()).collect();
            let explanation = shrink::explain(&ops, limits);
            Err(Anomaly { check: Check::Linearizable, key: key.to_string(), ops, explanation })
        }
    }
}

/// Sets of linearized unknown-outcome ops remembered per (known set, state).
const MAX_UNKNOWN_VARIANTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
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
pub(super) struct Deepest {
    pub done: usize,
    /// Entries in the order linearized.
    pub order: Vec<u32>,
    pub state: State,
    /// Known-outcome ops that could have gone next, and why they could not.
    pub blocked: Vec<(u32, String)>,
}

pub(super) struct Searcher<'a> {
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
    /// Codes (see `code`) of the linearized unknown-outcome entries, sorted.
    unknowns: Vec<u32>,
    memo: HashMap<MemoKey, Vec<Box<[u32]>>>,
    states: usize,
    pub steps: u64,
    stack: Vec<Frame>,
    pub deepest: Option<Deepest>,
    explain: bool,
    /// Unknown-outcome entries with the same action form a group; `code` numbers
    /// them group by group, each group by invocation, so that sorted code lists
    /// compare group-wise (see `at_least_as_useful`).
    group: Vec<u32>,
    code: Vec<u32>,
    group_of_code: Vec<u32>,
    /// Per (group, strict here?), the node that last tried one of its ops.
    tried: Vec<u64>,
    /// Unknown-outcome writes with an anonymous effect (see the module docs),
    /// which linearizing does not use up.
    reusable: Vec<bool>,
    nodes: u64,
    /// Scratch space for `expand`.
    needs: Needs,
    enablers: Needs,
    waiting: Vec<u32>,
}

impl<'a> Searcher<'a> {
    pub fn new(
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
        let mut groups: HashMap<&model::Action, u32> = HashMap::new();
        let group: Vec<u32> = entries
            .iter()
            .map(|e| {
                let next = groups.len() as u32;
                *groups.entry(&e.action).or_insert(next)
            })
            .collect();
        let mut by_group = optional.clone();
        by_group.sort_by_key(|&i| (group[i as usize], entries[i as usize].invoke_us, i));
        let mut code = vec![u32::MAX; entries.len()];
        for (c, &i) in by_group.iter().enumerate() {
            code[i as usize] = c as u32;
        }
        let group_of_code = by_group.iter().map(|&i| group[i as usize]).collect();
        let reusable = entries
            .iter()
            .map(|e| {
                e.optional()
                    && match e.action {
                        model::Action::Write { value: None, .. } => true,
                        model::Action::Write { value: Some(id), .. } => values.is_unread(id),
                        _ => false,
                    }
            })
            .collect();
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
            tried: vec![0; 2 * groups.len()],
            reusable,
            group,
            code,
            group_of_code,
            nodes: 0,
            needs: Needs::default(),
            enablers: Needs::default(),
            waiting: Vec::new(),
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

    pub fn run(&mut self) -> Verdict {
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
            // No known-outcome op left to linearize: success.
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
                // Only reads and failed conditions: a write that happens to leave
                // this state as it is would not leave others so.
                if entry.is_pure()
                    && model::step(&frame.state, entry, values).is_ok_and(|next| next == frame.state)
                {
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
        self.steps += seen.len() as u64;
        if seen.iter().any(|failed| at_least_as_useful(failed, &self.unknowns, &self.group_of_code)) {
            return Some(frame);
        }
        // Past a few variants per key, stop recording: pruning gets weaker, but the
        // lookups stay cheap.
        if seen.len() < MAX_UNKNOWN_VARIANTS {
            seen.push(self.unknowns.clone().into_boxed_slice());
        }
        self.states += 1;

        // Known-outcome ops that may go next but are invalid here: the ops an
        // unknown-outcome op may be needed for. And whether one is valid only by
        // binding an unknown version (it may be the version a CAS needs).
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.clear();
        let mut binding = false;
        let mut dead = false;
        let mut blocked = Vec::new();
        for &idx in &self.finite[frame.lo..] {
            let entry = &entries[idx as usize];
            if entry.invoke_us > min_complete {
                break;
            }
            if self.linearized[idx as usize] {
                continue;
            }
            self.steps += 1;
            match model::step(&frame.state, entry, values) {
                Ok(next) => {
                    binding |= entry.is_pure();
                    frame.children.push((idx, next));
                }
                Err(why) => {
                    waiting.push(idx);
                    if self.explain {
                        blocked.push((idx, why.explain(entry, &frame.state, values)));
                    }
                    if entry.needs_version_below(frame.state.version.floor()) {
                        dead = true;
                    }
                }
            }
        }
        if dead {
            // A known-outcome op that must still take effect needs a version this
            // path has passed: nothing below this node can succeed.
            frame.children.clear();
            waiting.clear();
            binding = false;
        }
        // Unknown-outcome ops: those after which a waiting op can take effect, and
        // those that a conditional or increment one (which might, after them) needs
        // first; of equal ones, the last invoked. See the module docs.
        let optional: &[u32] = if waiting.is_empty() && !binding { &[] } else { &self.optional };
        let optional =
            &optional[..optional.partition_point(|&i| entries[i as usize].invoke_us <= min_complete)];
        let (mut needs, mut enablers) = (std::mem::take(&mut self.needs), std::mem::take(&mut self.enablers));
        needs.clear();
        enablers.clear();
        if !optional.is_empty() {
            for &z in &waiting {
                needs.add(&entries[z as usize], &frame.state);
            }
            let available: Vec<&Entry> = optional
                .iter()
                .filter(|&&i| !self.linearized[i as usize])
                .map(|&i| &entries[i as usize])
                .collect();
            needs.drop_unreachable_counters(&frame.state, values, &available);
            loop {
                self.steps += optional.len() as u64;
                let mut grew = false;
                for &idx in optional {
                    let u = &entries[idx as usize];
                    if !self.linearized[idx as usize]
                        && (needs.met_by(u, values) || enablers.met_by(u, values))
                    {
                        grew |= enablers.add_enablers(u, &frame.state, &needs, values);
                    }
                }
                if !grew {
                    break;
                }
            }
        }
        self.nodes += 1;
        for &idx in optional.iter().rev() {
            let u = &entries[idx as usize];
            let strict = u.invoke_us > frame.state.known_complete_us;
            let slot = 2 * self.group[idx as usize] as usize + usize::from(strict);
            if self.linearized[idx as usize] || self.tried[slot] == self.nodes {
                continue;
            }
            self.tried[slot] = self.nodes;
            self.steps += 1;
            let Ok(next) = model::step(&frame.state, u, values) else { continue };
            if next == frame.state {
                continue;
            }
            let enabling = (binding && u.is_version_conditional())
                || enablers.met_by(u, values)
                || waiting.iter().any(|&z| {
                    self.steps += 1;
                    model::step(&next, &entries[z as usize], values).is_ok()
                });
            if enabling {
                frame.children.push((idx, next));
            }
        }
        (self.needs, self.enablers, self.waiting) = (needs, enablers, waiting);
        if self.explain && self.deepest.as_ref().is_none_or(|d| self.done > d.done) {
            let mut order: Vec<u32> = Vec::new();
            for f in self.stack.iter().chain(std::iter::once(&frame)) {
                order.extend(f.via.iter().chain(&f.greedy));
            }
            self.deepest = Some(Deepest { done: self.done, order, state: frame.state, blocked });
        }
        Some(frame)
    }

    fn mark(&mut self, idx: u32) {
        let i = idx as usize;
        if self.reusable[i] {
            return;
        }
        self.linearized[i] = true;
        if self.entries[i].optional() {
            let at = self.unknowns.binary_search(&self.code[i]).expect_err("marked twice");
            self.unknowns.insert(at, self.code[i]);
        } else {
            self.fingerprint[0] ^= self.zobrist[i][0];
            self.fingerprint[1] ^= self.zobrist[i][1];
            self.done += 1;
        }
    }

    fn unmark(&mut self, idx: u32) {
        let i = idx as usize;
        if self.reusable[i] {
            return;
        }
        self.linearized[i] = false;
        if self.entries[i].optional() {
            let at = self.unknowns.binary_search(&self.code[i]).expect("unmarking a marked op");
            self.unknowns.remove(at);
        } else {
            self.fingerprint[0] ^= self.zobrist[i][0];
            self.fingerprint[1] ^= self.zobrist[i][1];
            self.done -= 1;
        }
    }
}

/// Whether a node that used the unknown-outcome ops `failed` (sorted codes) kept
/// ones at least as useful as a node that used `current`: every op of `failed`
/// can be matched to a distinct op of `current` of its group invoked no later.
/// Then the remaining ops of the `failed` node can stand in for those of the
/// `current` one (same action, invoked no later: available no later, never
/// stricter), so whatever the `current` node can still do, the `failed` one
/// could. With equal sets this is plain equality; a subset also qualifies.
fn at_least_as_useful(failed: &[u32], current: &[u32], group_of_code: &[u32]) -> bool {
    let (mut i, mut j, mut credit, mut group) = (0, 0, 0usize, u32::MAX);
    while i < failed.len() {
        let from_current = j < current.len() && current[j] <= failed[i];
        let code = if from_current { current[j] } else { failed[i] };
        if group_of_code[code as usize] != group {
            (group, credit) = (group_of_code[code as usize], 0);
        }
        if from_current {
            credit += 1;
            j += 1;
        } else if credit == 0 {
            return false;
        } else {
            credit -= 1;
            i += 1;
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::super::history::Call;
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
