//! Counter keys: the final value must be the sum of the increments that surely
//! happened plus the deltas of *some* subset of those that may have happened.
//!
//! A counter key is one that is written only by `Increment`. Relative to the key's
//! final read `F` (the last successful read invoked in the final phase):
//!
//! - an acknowledged increment that completed before `F` was invoked is *required*;
//! - an increment with unknown outcome invoked before `F` completed, or an
//!   acknowledged one that overlapped `F`, is *uncertain*: it may or may not be in
//!   the value `F` saw;
//! - failed increments, and those invoked after `F` completed, are *excluded*.
//!
//! `F` must equal `sum(required) + sum(S)` for some subset `S` of the uncertain
//! deltas, and must find the key iff at least one increment is counted. A value
//! that needs an increment counted twice (a retry applied twice, a replayed log
//! entry) or an acknowledged one left out (a lost write) has no such subset, unless
//! the uncertain deltas happen to add up to the difference — workloads that want
//! every double count caught use deltas whose subset sums are distinct, such as
//! powers of four.
//!
//! ## Cost
//!
//! The reachable sums are a bitset over `[sum of negative deltas, sum of positive
//! deltas]`, one shift-or per uncertain increment: `O(k · span / 64)` word operations
//! for `k` uncertain increments. With large deltas (span over [`MAX_SPAN`]) it is a
//! set of sums instead, at most [`MAX_SUMS`] of them. Over either bound the key is
//! reported inconclusive. Intermediate increment results are not used here; the
//! linearizability search checks those.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::history::{self, Call, Micros, Op, Outcome, Return};
use super::{Anomaly, Check, CheckSummary, Checked, KeyNote};

/// Widest range of sums kept as a bitset (bits; 8 MiB).
pub const MAX_SPAN: u128 = 1 << 26;
/// Bitset word operations allowed per key.
pub const MAX_BITSET_WORK: u128 = 1 << 28;
/// Distinct sums kept when the range is too wide for a bitset.
pub const MAX_SUMS: usize = 1 << 20;

/// Checks every counter key of a history.
pub fn check_history(history: &[Op], final_phase_start_us: u64) -> CheckSummary {
    let mut summary = CheckSummary::new(Check::Counters);
    let mut increments = 0usize;
    for (key, ops) in history::by_key(history) {
        match check_key(&key, &ops, final_phase_start_us) {
            Ok(Checked::Passed) => summary.keys_passed += 1,
            Ok(Checked::NotApplicable) => continue,
            Ok(Checked::Skipped { reason }) => summary.skipped.push(KeyNote { key, reason }),
            Ok(Checked::Inconclusive { reason }) => summary.inconclusive.push(KeyNote { key, reason }),
            Err(anomaly) => summary.anomalies.push(anomaly),
        }
        increments += ops.iter().filter(|op| matches!(op.call, Call::Increment { .. })).count();
    }
    summary.work = format!("{increments} increments");
    summary
}

/// Checks one key's ops against its final read (see the module docs).
pub fn check_key(key: &str, ops: &[Op], final_phase_start_us: u64) -> Result<Checked, Anomaly> {
    let is_increment = |op: &&Op| matches!(op.call, Call::Increment { .. });
    if !ops.iter().any(|op| is_increment(&op)) || ops.iter().any(|op| op.is_write() && !is_increment(&op)) {
        return Ok(Checked::NotApplicable);
    }
    let Some(last) = final_read(ops, final_phase_start_us) else {
        return Ok(Checked::Skipped { reason: "no successful final read".into() });
    };
    let Outcome::Ok(Return::Get { found, value, .. }) = &last.outcome else {
        unreachable!("final_read returns successful reads only")
    };

    let (mut required, mut uncertain) = (Vec::new(), Vec::new());
    for op in ops.iter().filter(is_increment) {
        let surely_before = op.complete_us < last.invoke_us;
        let may_be_before = op.invoke_us <= last.complete_us;
        match &op.outcome {
            Outcome::Ok(_) if surely_before => required.push(op),
            Outcome::Ok(_) | Outcome::Unknown if may_be_before => uncertain.push(op),
            _ => {}
        }
    }
    let delta = |op: &&Op| match op.call {
        Call::Increment { delta } => i128::from(delta),
        _ => 0,
    };
    let required_sum: i128 = required.iter().map(delta).sum();
    let deltas: Vec<i128> = uncertain.iter().map(delta).collect();

    let anomaly = |explanation: String| {
        let mut shown = vec![last.clone()];
        shown.extend(uncertain.iter().map(|&op| op.clone()));
        shown.extend(required.iter().map(|&op| op.clone()));
        Anomaly { check: Check::Counters, key: key.to_string(), ops: shown, explanation }
    };
    let context = format!(
        "the final read (invoked at {}) {}; the acknowledged increments that completed before it ({}) add {}, \
         and {} more are uncertain (deltas {})",
        Micros(last.invoke_us),
        if *found { format!("saw {value:?}") } else { "found no key".to_string() },
        required.len(),
        required_sum,
        uncertain.len(),
        list(&deltas, 12),
    );

    if !*found {
        if required.is_empty() {
            return Ok(Checked::Passed);
        }
        return Err(anomaly(format!("acknowledged increments are lost: {context}")));
    }
    let Some(target) = value.parse::<i64>().ok().filter(|n| n.to_string() == *value) else {
        return Err(anomaly(format!("the counter holds a non-integer: {context}")));
    };
    let need = i128::from(target) - required_sum;
    match reachable(&deltas, need) {
        Reach::Yes => Ok(Checked::Passed),
        Reach::TooMuchWork => Ok(Checked::Inconclusive {
            reason: format!("inconclusive: subset sum over {} uncertain increments too large", deltas.len()),
        }),
        Reach::No(sums) => Err(anomaly(format!(
            "no subset of the uncertain increments adds the missing {need}: {context}; they can add {sums}"
        ))),
    }
}

/// The last successful read invoked in the final phase (latest invocation).
pub(super) fn final_read(ops: &[Op], final_phase_start_us: u64) -> Option<&Op> {
    ops.iter()
        .filter(|op| {
            op.invoke_us >= final_phase_start_us
                && matches!((&op.call, &op.outcome), (Call::Get, Outcome::Ok(Return::Get { .. })))
        })
        .max_by_key(|op| op.invoke_us)
}

enum Reach {
    Yes,
    /// Not reachable; a description of what is.
    No(String),
    TooMuchWork,
}

/// Whether some subset of `deltas` sums to `need`.
fn reachable(deltas: &[i128], need: i128) -> Reach {
    let low: i128 = deltas.iter().filter(|&&d| d < 0).sum();
    let high: i128 = deltas.iter().filter(|&&d| d > 0).sum();
    if need < low || need > high {
        return Reach::No(format!("between {low} and {high} only"));
    }
    let span = (high - low + 1) as u128;
    let words = span.div_ceil(64);
    if span <= MAX_SPAN && words * deltas.len() as u128 <= MAX_BITSET_WORK {
        let mut bits = Bits::new(span as usize);
        bits.set((-low) as usize);
        for &d in deltas {
            bits.or_shifted(d as isize);
        }
        if bits.get((need - low) as usize) {
            return Reach::Yes;
        }
        let sums: Vec<i128> = (0..span as usize).filter(|&i| bits.get(i)).map(|i| i as i128 + low).collect();
        return Reach::No(list(&sums, 20));
    }
    let mut sums = BTreeSet::from([0i128]);
    for &d in deltas {
        let shifted: Vec<i128> = sums.iter().map(|s| s + d).collect();
        sums.extend(shifted);
        if sums.len() > MAX_SUMS {
            return Reach::TooMuchWork;
        }
    }
    if sums.contains(&need) { Reach::Yes } else { Reach::No(list(&sums.into_iter().collect::<Vec<_>>(), 20)) }
}

/// "{-2, 0, 3}" or "{-2, 0, 3, ... (17 in all)}".
fn list(xs: &[i128], max: usize) -> String {
    let mut out = String::from("{");
    for (i, x) in xs.iter().take(max).enumerate() {
        let _ = write!(out, "{}{x:+}", if i > 0 { ", " } else { "" });
    }
    if xs.len() > max {
        let _ = write!(out, ", ... ({} in all)", xs.len());
    }
    out.push('}');
    out
}

/// A fixed-size bitset with a shift-or.
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Bits {
        Bits { words: vec![0; len.div_ceil(64)], len }
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// `self |= self << by` (toward higher indices for `by > 0`), clipped to `len`.
    fn or_shifted(&mut self, by: isize) {
        let (word, bit) = (by.unsigned_abs() / 64, by.unsigned_abs() % 64);
        let n = self.words.len();
        if by >= 0 {
            for i in (word..n).rev() {
                let src = i - word;
                let mut v = self.words[src] << bit;
                if bit > 0 && src > 0 {
                    v |= self.words[src - 1] >> (64 - bit);
                }
                self.words[i] |= v;
            }
        } else {
            for i in 0..n.saturating_sub(word) {
                let src = i + word;
                let mut v = self.words[src] >> bit;
                if bit > 0 && src + 1 < n {
                    v |= self.words[src + 1] << (64 - bit);
                }
                self.words[i] |= v;
            }
        }
        let extra = n * 64 - self.len;
        if extra > 0 {
            self.words[n - 1] &= u64::MAX >> extra;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    const FINAL: u64 = 10_000;

    fn check(ops: &[Op]) -> Result<Checked, Anomaly> {
        check_key("c", ops, FINAL)
    }

    fn final_read_of(value: &str) -> Op {
        op(9, "c", FINAL, FINAL + 10, Call::Get, read(value, 99))
    }

    #[test]
    fn accepts_any_subset_of_unknown_increments() {
        let base = [
            op(1, "c", 0, 10, incr(1), counted(1, 2)),
            op(2, "c", 5, 15, incr(2), counted(3, 3)),
            op(3, "c", 20, 30, incr(10), Outcome::Unknown),
            op(4, "c", 20, 30, incr(100), Outcome::Unknown),
            op(5, "c", 20, 30, incr(7), Outcome::Failed),
        ];
        for (value, expect_ok) in [("3", true), ("13", true), ("103", true), ("113", true), ("10", false)] {
            let mut ops = base.to_vec();
            ops.push(final_read_of(value));
            assert_eq!(check(&ops).is_ok(), expect_ok, "final {value}");
        }
    }

    #[test]
    fn an_increment_overlapping_the_final_read_may_or_may_not_count() {
        let ops = [
            op(1, "c", 0, 10, incr(1), counted(1, 2)),
            op(2, "c", FINAL - 5, FINAL + 5, incr(4), counted(5, 3)),
            final_read_of("1"),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
    }

    #[test]
    fn rejects_an_unknown_increment_counted_twice() {
        let ops = [
            op(1, "c", 0, 10, incr(1), counted(1, 2)),
            op(2, "c", 20, 30, incr(2), counted(3, 3)),
            op(3, "c", 40, 50, incr(10), Outcome::Unknown),
            op(4, "c", 40, 50, incr(30), Outcome::Unknown),
            final_read_of("23"),
        ];
        let anomaly = check(&ops).unwrap_err();
        assert!(anomaly.explanation.contains("missing 20"), "{anomaly}");
        assert!(anomaly.explanation.contains("they can add {+0, +10, +30, +40}"), "{anomaly}");
    }

    #[test]
    fn rejects_an_acknowledged_increment_counted_twice() {
        let ops = [
            op(1, "c", 0, 10, incr(5), counted(5, 2)),
            op(2, "c", 20, 30, incr(1), counted(6, 3)),
            op(3, "c", 40, 50, incr(10), Outcome::Unknown),
            final_read_of("11"),
        ];
        assert!(check(&ops).is_err());
    }

    #[test]
    fn rejects_lost_increments() {
        let lost = [op(1, "c", 0, 10, incr(5), counted(5, 2)), final_read_of("0")];
        assert!(check(&lost).is_err());
        let absent = [
            op(1, "c", 0, 10, incr(5), counted(5, 2)),
            op(9, "c", FINAL, FINAL + 10, Call::Get, super::super::history::build::absent()),
        ];
        assert!(check(&absent).unwrap_err().explanation.contains("lost"));
    }

    #[test]
    fn only_counter_keys_with_a_final_read_are_checked() {
        let register = [op(1, "c", 0, 10, put("a"), wrote(1)), final_read_of("a")];
        assert_eq!(check(&register), Ok(Checked::NotApplicable));
        let no_final = [op(1, "c", 0, 10, incr(1), counted(1, 1))];
        assert!(matches!(check(&no_final), Ok(Checked::Skipped { .. })));
    }

    #[test]
    fn negative_and_huge_deltas() {
        let mut ops = vec![
            op(1, "c", 0, 10, incr(-3), Outcome::Unknown),
            op(1, "c", 20, 30, incr(1 << 40), Outcome::Unknown),
            op(1, "c", 40, 50, incr(-(1 << 41)), Outcome::Unknown),
        ];
        ops.push(final_read_of(&((1i64 << 40) - (1 << 41) - 3).to_string()));
        assert_eq!(check(&ops), Ok(Checked::Passed));
        ops.pop();
        ops.push(final_read_of("-4"));
        assert!(check(&ops).is_err());
    }

    #[test]
    fn bitset_shifts_match_a_set_of_sums() {
        let deltas: [i128; 9] = [1, 64, -65, 3, 130, -1, 0, 127, -200];
        let low: i128 = deltas.iter().filter(|&&d| d < 0).sum();
        let high: i128 = deltas.iter().filter(|&&d| d > 0).sum();
        let mut sums = BTreeSet::from([0i128]);
        for &d in &deltas {
            let shifted: Vec<i128> = sums.iter().map(|s| s + d).collect();
            sums.extend(shifted);
        }
        for need in low - 2..=high + 2 {
            assert_eq!(matches!(reachable(&deltas, need), Reach::Yes), sums.contains(&need), "{need}");
        }
    }
}
