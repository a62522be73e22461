//! Witnesses for linearizability violations: a small sub-history that is still not
//! linearizable, and an explanation of why.
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

use super::history::{Call, Condition, Op, Outcome, Return};
use super::linearizable::{SearchLimits, Searcher, Verdict};
use super::model;

/// The search verdict for a sub-history, within a step budget.
fn verdict(ops: &[Op], max_steps: u64, max_states: usize) -> (Verdict, u64) {
    let Ok((entries, values)) = model::compile(ops, true) else { return (Verdict::Exhausted, 0) };
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
pub(super) fn shrink(ops: &[Op], limits: &SearchLimits) -> Vec<usize> {
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
pub(super) fn explain(ops: &[Op], limits: &SearchLimits) -> String {
    let Ok((entries, values)) = model::compile(ops, false) else { return "malformed sub-history".into() };
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
