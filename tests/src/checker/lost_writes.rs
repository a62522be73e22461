//! Lost writes: after the cluster healed, the final read of a key must account for
//! every write that was acknowledged before that read began.
//!
//! Let `F` be the key's final read (the last successful read invoked in the final
//! phase) and `W` an acknowledged write — a successful `Put`, a `Delete` that
//! deleted, an `Increment` — that completed before `F` was invoked. `F` is
//! linearizable and began after `W` ended, so `W` is either still *visible* in `F`
//! or *superseded* by a write that took effect after it:
//!
//! - `F` found the key at version `f`: versions grow with every write to the key, so
//!   `W` must have version `<= f` (`== f`: `W` itself, or a write of its Raft batch;
//!   `< f`: the write `F` saw came later). `W.version > f` means `F` saw an older
//!   state: `W` was lost (or, for a delete, the key was resurrected).
//! - `F` found the key absent: `W` is a delete, or something may have removed the
//!   key after `W`: an acknowledged delete with version `>= W.version`, a delete with
//!   unknown outcome (it may have landed any time, matching `W`'s version if
//!   conditional), or a TTL on `W` or on a later write (it may have expired).
//!
//! Separately, the value `F` saw must come from a write that may have happened (no
//! phantom values, no effects of failed writes): a `Put` of that value or an
//! `Increment`, acknowledged at exactly version `f` or with unknown outcome.
//!
//! Each check is a pass over the key's ops: `O(ops)` per key, no search. Writes
//! that overlapped `F` may or may not be in it and are not checked.

use super::counters::final_read;
use super::history::{self, Call, Micros, Op, Outcome, Return};
use super::{Anomaly, Check, CheckSummary, Checked, KeyNote};

/// Checks every key of a history against its final read.
pub fn check_history(history: &[Op], final_phase_start_us: u64) -> CheckSummary {
    let mut summary = CheckSummary::new(Check::LostWrites);
    let mut acked = 0usize;
    for (key, ops) in history::by_key(history) {
        match check_key(&key, &ops, final_phase_start_us) {
            Ok(Checked::Passed) => summary.keys_passed += 1,
            Ok(Checked::NotApplicable) => continue,
            Ok(Checked::Skipped { reason }) => summary.skipped.push(KeyNote { key, reason }),
            Ok(Checked::Inconclusive { reason }) => summary.inconclusive.push(KeyNote { key, reason }),
            Err(anomalies) => summary.anomalies.extend(anomalies),
        }
        acked += ops.iter().filter(|op| op.acked_write_version().is_some()).count();
    }
    summary.work = format!("{acked} acknowledged writes");
    summary
}

/// Checks one key's ops (see the module docs); every lost write is its own anomaly.
pub fn check_key(key: &str, ops: &[Op], final_phase_start_us: u64) -> Result<Checked, Vec<Anomaly>> {
    if !ops.iter().any(Op::may_have_written) {
        return Ok(Checked::NotApplicable);
    }
    let Some(last) = final_read(ops, final_phase_start_us) else {
        return Ok(Checked::Skipped { reason: "no successful final read".into() });
    };
    let acked: Vec<(&Op, u64)> = ops
        .iter()
        .filter(|op| op.complete_us < last.invoke_us)
        .filter_map(|op| op.acked_write_version().map(|v| (op, v)))
        .collect();
    let anomaly = |ops: Vec<Op>, explanation: String| Anomaly {
        check: Check::LostWrites,
        key: key.to_string(),
        ops,
        explanation,
    };
    let mut anomalies = Vec::new();

    match last.read_found() {
        Some((value, f)) => {
            if !has_writer(ops, value, f) {
                let mut shown: Vec<Op> = ops.iter().filter(|op| writes_value(op, value)).cloned().collect();
                shown.push(last.clone());
                anomalies.push(anomaly(
                    shown,
                    format!(
                        "the final read sees {value:?} @v{f}, which no write that may have happened produced \
                         at that version"
                    ),
                ));
            }
            for &(w, version) in acked.iter().filter(|(_, version)| *version > f) {
                let what = if matches!(w.call, Call::Delete { .. }) {
                    "the key was resurrected: an acknowledged delete"
                } else {
                    "lost write: an acknowledged write"
                };
                anomalies.push(anomaly(
                    vec![w.clone(), last.clone()],
                    format!(
                        "{what} at v{version} (completed at {}) is neither visible nor superseded: the final \
                         read (invoked at {}) sees the older v{f}",
                        Micros(w.complete_us),
                        Micros(last.invoke_us)
                    ),
                ));
            }
        }
        None => {
            for &(w, version) in &acked {
                if matches!(w.call, Call::Delete { .. }) || may_be_removed_after(ops, w, version, last) {
                    continue;
                }
                anomalies.push(anomaly(
                    vec![w.clone(), last.clone()],
                    format!(
                        "lost write: an acknowledged write at v{version} (completed at {}) is gone: the final \
                         read (invoked at {}) finds no key, and no delete or TTL could have removed it after v{version}",
                        Micros(w.complete_us),
                        Micros(last.invoke_us)
                    ),
                ));
            }
        }
    }
    if anomalies.is_empty() { Ok(Checked::Passed) } else { Err(anomalies) }
}

/// Whether `op` is a write of `value` (a put of that string, or any increment if
/// the value is an integer).
fn writes_value(op: &Op, value: &str) -> bool {
    match &op.call {
        Call::Put { value: v, .. } => v == value,
        Call::Increment { .. } => value.parse::<i64>().is_ok(),
        _ => false,
    }
}

/// Whether some op that may have happened wrote `value` at version `f`.
fn has_writer(ops: &[Op], value: &str, f: u64) -> bool {
    ops.iter().filter(|op| writes_value(op, value)).any(|op| match &op.outcome {
        Outcome::Unknown => true,
        Outcome::Ok(Return::Put { succeeded: true, version }) => *version == f,
        Outcome::Ok(Return::Increment { value: n, version }) => *version == f && n.to_string() == value,
        _ => false,
    })
}

/// Whether something may have removed the key after the write `w` (at `version`)
/// and before the final read `last`: a TTL on `w`, or a later delete or TTL write.
fn may_be_removed_after(ops: &[Op], w: &Op, version: u64, last: &Op) -> bool {
    if w.ttl_ms() > 0 {
        return true;
    }
    ops.iter().filter(|x| !std::ptr::eq(*x, w) && x.invoke_us <= last.complete_us).any(|x| {
        match (&x.call, &x.outcome) {
            (Call::Delete { .. }, Outcome::Ok(Return::Delete { deleted: true, version: d })) => *d >= version,
            (Call::Delete { if_version }, Outcome::Unknown) => if_version.is_none_or(|y| y >= version),
            (Call::Put { ttl_ms, .. }, Outcome::Ok(Return::Put { succeeded: true, version: v })) => {
                *ttl_ms > 0 && *v >= version
            }
            (Call::Put { ttl_ms, .. }, Outcome::Unknown) => *ttl_ms > 0,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    const FINAL: u64 = 10_000;

    fn check(ops: &[Op]) -> Result<Checked, Vec<Anomaly>> {
        check_key("k", ops, FINAL)
    }

    fn final_read(outcome: Outcome) -> Op {
        op(9, "k", FINAL, FINAL + 10, Call::Get, outcome)
    }

    #[test]
    fn accepts_visible_or_superseded_writes() {
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("b"), wrote(5)),
            op(3, "k", 40, 50, cas("x", 3), refused(5)),
            final_read(read("b", 5)),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
        // Superseded by an unknown write that was observed only at the end.
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("late"), Outcome::Unknown),
            final_read(read("late", 8)),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
        // Deleted by an unknown delete, or expired.
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, del(), Outcome::Unknown),
            final_read(absent()),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
        let ops = [op(1, "k", 0, 10, put_ttl("a", 50), wrote(3)), final_read(absent())];
        assert_eq!(check(&ops), Ok(Checked::Passed));
    }

    #[test]
    fn writes_overlapping_the_final_read_are_not_judged() {
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", FINAL - 5, FINAL + 20, put("b"), wrote(4)),
            final_read(read("a", 3)),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
    }

    #[test]
    fn rejects_a_lost_write() {
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("b"), wrote(5)),
            final_read(read("a", 3)),
        ];
        let anomalies = check(&ops).unwrap_err();
        assert_eq!(anomalies.len(), 1);
        assert!(anomalies[0].explanation.starts_with("lost write"), "{}", anomalies[0]);
        let gone = [op(1, "k", 0, 10, put("a"), wrote(3)), final_read(absent())];
        assert_eq!(check(&gone).unwrap_err().len(), 1);
    }

    #[test]
    fn rejects_a_resurrected_delete() {
        let ops = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, del(), deleted(4)),
            final_read(read("a", 3)),
        ];
        let anomalies = check(&ops).unwrap_err();
        assert!(anomalies[0].explanation.contains("resurrected"), "{}", anomalies[0]);
    }

    #[test]
    fn rejects_phantom_and_failed_values() {
        let failed = [
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("b"), Outcome::Failed),
            final_read(read("b", 4)),
        ];
        assert!(check(&failed).unwrap_err()[0].explanation.contains("no write that may have happened"));
        let wrong_version = [op(1, "k", 0, 10, put("a"), wrote(3)), final_read(read("a", 4))];
        assert!(check(&wrong_version).is_err());
    }

    #[test]
    fn counters_are_checked_by_version() {
        let ops = [
            op(1, "k", 0, 10, incr(1), counted(1, 3)),
            op(1, "k", 20, 30, incr(1), counted(2, 5)),
            final_read(read("1", 3)),
        ];
        assert_eq!(check(&ops).unwrap_err().len(), 1);
    }

    #[test]
    fn keys_without_a_final_read_are_skipped() {
        let ops = [op(1, "k", 0, 10, put("a"), wrote(3))];
        assert!(matches!(check(&ops), Ok(Checked::Skipped { .. })));
    }
}
