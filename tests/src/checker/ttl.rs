//! TTLs: a value written with a TTL must not be seen after it ran out.
//!
//! A `Put` with `ttl_ms > 0` stores the deadline `now + ttl` where `now` is the
//! proposing leader's clock when it proposed the write, which is before the write
//! took effect. The write took effect no later than it was acknowledged, and no
//! later than the first read that saw it completed (that also bounds writes with
//! unknown outcome). So, with `clock_bound` bounding how far the leaders' clocks
//! may be ahead of the runner's, the value is gone for good by
//!
//! ```text
//! deadline = min(ack, first observation's completion) + ttl + clock_bound
//! ```
//!
//! and no op *invoked* after the deadline may observe it: not a read returning the
//! value, nor a failed condition reporting the write's version, nor a CAS or a
//! conditional delete that succeeded against that version. Values are unique per
//! put, so a read names its write; versions name it only when no other write of
//! the key may share the version (a write in flight at the same time could be in
//! the same Raft batch), so version observations are used only then.
//!
//! `O(ops)` per TTL write. Early expiry (a value gone before its deadline) is not
//! checked here.

use super::history::{self, Call, Condition, Micros, Op, Outcome, Return};
use super::{Anomaly, Check, CheckSummary, Checked, KeyNote};

/// Checks every key with TTL puts.
pub fn check_history(history: &[Op], clock_bound_ms: u64) -> CheckSummary {
    let mut summary = CheckSummary::new(Check::Ttl);
    let mut puts = 0usize;
    for (key, ops) in history::by_key(history) {
        match check_key(&key, &ops, clock_bound_ms) {
            Ok(Checked::Passed) => summary.keys_passed += 1,
            Ok(Checked::NotApplicable) => continue,
            Ok(Checked::Skipped { reason }) => summary.skipped.push(KeyNote { key, reason }),
            Ok(Checked::Inconclusive { reason }) => summary.inconclusive.push(KeyNote { key, reason }),
            Err(anomalies) => summary.anomalies.extend(anomalies),
        }
        puts += ops.iter().filter(|op| op.ttl_ms() > 0).count();
    }
    summary.work = format!("{puts} TTL puts, clock bound {clock_bound_ms} ms");
    summary
}

/// Checks one key's TTL puts; every late observation is its own anomaly.
pub fn check_key(key: &str, ops: &[Op], clock_bound_ms: u64) -> Result<Checked, Vec<Anomaly>> {
    if !ops.iter().any(|op| op.ttl_ms() > 0 && op.may_have_written()) {
        return Ok(Checked::NotApplicable);
    }
    let mut anomalies = Vec::new();
    for (i, put) in ops.iter().enumerate() {
        let Call::Put { value, ttl_ms, .. } = &put.call else { continue };
        let version = match &put.outcome {
            _ if *ttl_ms == 0 => continue,
            Outcome::Ok(Return::Put { succeeded: true, version }) => Some(*version),
            Outcome::Unknown => None,
            _ => continue,
        };
        let version = version.filter(|&v| !version_shared(ops, i, v));
        let observers: Vec<&Op> = ops.iter().filter(|op| observes(op, value, version)).collect();
        let acked = version.map(|_| put.complete_us);
        let Some(landed_by) = observers.iter().map(|op| op.complete_us).chain(acked).min() else { continue };
        let deadline = landed_by.saturating_add(ttl_ms.saturating_add(clock_bound_ms).saturating_mul(1000));
        for late in observers.iter().filter(|op| op.invoke_us > deadline) {
            anomalies.push(Anomaly {
                check: Check::Ttl,
                key: key.to_string(),
                ops: vec![put.clone(), (*late).clone()],
                explanation: format!(
                    "seen after its TTL ran out: the put of {value:?} with ttl {ttl_ms} ms took effect by {}, \
                     so it was gone by {} (+ ttl + clock bound {clock_bound_ms} ms), but an op invoked at {} \
                     observed it",
                    Micros(landed_by),
                    Micros(deadline),
                    Micros(late.invoke_us)
                ),
            });
        }
    }
    if anomalies.is_empty() { Ok(Checked::Passed) } else { Err(anomalies) }
}

/// Whether another write of the key may carry version `v` as well (an acknowledged
/// one at `v`, or one with unknown outcome that overlapped the write at `i`).
fn version_shared(ops: &[Op], i: usize, v: u64) -> bool {
    let put = &ops[i];
    ops.iter().enumerate().any(|(j, op)| {
        j != i
            && (op.acked_write_version() == Some(v)
                || (op.is_write()
                    && op.outcome == Outcome::Unknown
                    && op.invoke_us <= put.complete_us
                    && put.invoke_us <= op.complete_us))
    })
}

/// Whether `op` saw the put of `value` (at `version`, when usable) in effect.
fn observes(op: &Op, value: &str, version: Option<u64>) -> bool {
    if op.read_found().is_some_and(|(v, _)| v == value) {
        return true;
    }
    let Some(version) = version else { return false };
    match (&op.call, &op.outcome) {
        (_, Outcome::Ok(Return::Put { succeeded: false, version: y }))
        | (_, Outcome::Ok(Return::Delete { deleted: false, version: y })) => *y == version,
        (
            Call::Put { condition: Condition::IfVersion(x), .. },
            Outcome::Ok(Return::Put { succeeded: true, .. }),
        )
        | (Call::Delete { if_version: Some(x) }, Outcome::Ok(Return::Delete { deleted: true, .. })) => {
            *x == version
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    const MS: u64 = 1000;

    fn check(ops: &[Op]) -> Result<Checked, Vec<Anomaly>> {
        check_key("t", ops, 10)
    }

    #[test]
    fn reads_before_the_deadline_may_see_the_value() {
        // Acked at 10 ms with ttl 100 ms and bound 10 ms: gone by 120 ms.
        let ops = [
            op(1, "t", 0, 10 * MS, put_ttl("a", 100), wrote(3)),
            op(2, "t", 50 * MS, 51 * MS, Call::Get, read("a", 3)),
            op(2, "t", 119 * MS, 125 * MS, Call::Get, read("a", 3)),
            op(2, "t", 130 * MS, 131 * MS, Call::Get, absent()),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
    }

    #[test]
    fn rejects_a_read_after_the_deadline() {
        let ops = [
            op(1, "t", 0, 10 * MS, put_ttl("a", 100), wrote(3)),
            op(2, "t", 121 * MS, 122 * MS, Call::Get, read("a", 3)),
            op(3, "t", 200 * MS, 201 * MS, put_if_absent("b"), refused(3)),
        ];
        let anomalies = check(&ops).unwrap_err();
        assert_eq!(anomalies.len(), 2, "the late read and the late failed if_absent");
        assert!(anomalies[0].explanation.contains("gone by 0.120000s"), "{}", anomalies[0]);
    }

    #[test]
    fn unknown_puts_are_bounded_by_their_first_observation() {
        let ops = [
            op(1, "t", 0, 10 * MS, put_ttl("a", 100), Outcome::Unknown),
            op(2, "t", 500 * MS, 510 * MS, Call::Get, read("a", 3)),
            op(2, "t", 600 * MS, 601 * MS, Call::Get, read("a", 3)),
            op(2, "t", 700 * MS, 701 * MS, Call::Get, read("a", 3)),
        ];
        let anomalies = check(&ops).unwrap_err();
        assert_eq!(anomalies.len(), 1, "only the read after 510 + 110 ms");
        assert_eq!(anomalies[0].ops[1].invoke_us, 700 * MS);
    }

    #[test]
    fn shared_versions_are_not_used_as_observations() {
        let ops = [
            op(1, "t", 0, 10 * MS, put_ttl("a", 100), wrote(3)),
            op(2, "t", 5 * MS, 15 * MS, put("b"), wrote(3)),
            op(3, "t", 200 * MS, 201 * MS, put_if_absent("c"), refused(3)),
        ];
        assert_eq!(check(&ops), Ok(Checked::Passed));
    }
}
