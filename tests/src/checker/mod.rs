//! Checkers for the histories that the chaos tests record: pure functions from a
//! list of client operations to a verdict, in the spirit of Jepsen's Knossos and
//! Porcupine. No I/O, no clocks, no runtime: the workload runner and the nemesis
//! live elsewhere and hand a finished [`history`] to [`check_all`].
//!
//! ## Contents
//!
//! | module | checks | on which keys |
//! | --- | --- | --- |
//! | [`history`] | the op, call and outcome types: the contract with the runner | — |
//! | `model` | the sequential spec of one key (private) | — |
//! | `shrink` | minimal witnesses and explanations of linearizability violations (private) | — |
//! | [`linearizable`] | one order of the key's ops, respecting real time, explains every response | keys without TTL puts |
//! | [`counters`] | final value = acknowledged increments + some subset of the uncertain ones | keys written only by `Increment` |
//! | [`lost_writes`] | every acknowledged write is visible in the final read or superseded | every key with a final read |
//! | [`ttl`] | no read long after a TTL ran out sees the value | keys with TTL puts |
//! | [`watch`] | a watch delivered every acknowledged write once, in version order (needs the watch's record, so the runner calls it itself) | watched keys |
//!
//! ## What "unknown" means
//!
//! A client that gets no answer, or `UNAVAILABLE`/`DEADLINE_EXCEEDED` after sending,
//! cannot tell whether its write happened. Such an op is [`Outcome::Unknown`]: its
//! effect may have taken place at any instant after it was invoked — also after the
//! client gave up, since a proposal in a deposed leader's log can be committed by the
//! next leader later — or never. Every checker treats unknown ops as optional with an
//! open-ended interval; none requires them to have happened, and none forbids it.
//! Reads with an unknown outcome carry no information and are dropped.
//! [`Outcome::Failed`] is only for requests that surely changed nothing; a runner
//! that files a maybe-applied write under `Failed` gets false alarms.
//!
//! ## How the checks relate
//!
//! Linearizability is the strongest property and subsumes the others where it runs:
//! a stale read, a lost or resurrected write, a double-applied increment or a CAS
//! that succeeded against the wrong version all make a key non-linearizable. The
//! other checks are cheap, local and still run where the search cannot: on TTL keys
//! (excluded from the search), on keys whose search exceeded its budget, and as a
//! plain-language second opinion ("acknowledged write `v17` at v42 is gone") next to
//! a search's witness.
//!
//! The final reads: after healing the cluster the runner reads every key once more
//! (linearizably) and records those reads like any other `Get`, invoked at or after
//! [`CheckConfig::final_phase_start_us`]. The lost-write and counter checks use, for
//! each key, the last successful such read.
//!
//! ## What the runner must do
//!
//! - Record every request as one [`Op`], with `invoke_us`/`complete_us` from one
//!   monotonic clock, and classify its end honestly (above).
//! - Write a value no other op writes with every `Put`; keep counters (only
//!   `Increment` and `Get`) and registers on separate keys; rotate keys so that each
//!   sees at most a few thousand ops (see [`linearizable`] for why).
//! - After healing, read every key once more and pass the time that phase began as
//!   [`CheckConfig::final_phase_start_us`]; pass a bound on the clock difference
//!   between the runner and the leaders as [`CheckConfig::clock_bound_ms`].
//! - Call [`check_all`], print the [`Report`] (its `Display` is the summary) and
//!   fail the run unless [`Report::is_valid`].
//!
//! ## Limits
//!
//! - Per key only: P-compositionality makes that enough for linearizability of
//!   single-key ops, but nothing here looks at cross-key atomicity (ringkv has no
//!   multi-key ops).
//! - The linearizability search is exponential in the worst case; it is bounded by
//!   [`SearchLimits`] and reports a key *inconclusive* rather than run forever.
//!   Register keys are checked fast; a violation late in a long history of a counter
//!   key with many unknown increments usually comes back inconclusive, and the
//!   counter check has to catch it (see [`linearizable`] for measurements). The
//!   search may credit an unobserved unknown-outcome put or delete more than once, a
//!   deliberate approximation that can only hide anomalies, never invent them.
//! - Versions may repeat across writes to one key only for writes in flight together
//!   (one Raft batch; `KvState::apply` gives every op of an entry its index). The
//!   checkers cannot see batches; a read that observed the intermediate state inside
//!   a batch would go unnoticed.
//! - Touch, STALE reads and increments with a TTL are not modelled; keys with TTL
//!   puts are left to the TTL and lost-write checks.
//!
//! ## Caveats / not done yet
//!
//! - The TTL check looks for values seen too late, not for values that vanished too
//!   early (that needs the same reasoning as the search, with expiry as an extra
//!   unknown write).
//! - The counter check uses the final read only; intermediate increment results are
//!   checked by the linearizability search.
//! - Mixed keys (string values and increments) with many never-applied increments
//!   can make the search inconclusive even on valid histories.
//! - No visualisation of a witness beyond the text of [`Anomaly`].

pub mod counters;
pub mod history;
pub mod linearizable;
pub mod lost_writes;
mod model;
mod shrink;
pub mod ttl;
pub mod watch;

pub mod selftest;

use std::collections::BTreeMap;
use std::fmt;

pub use history::{Call, Condition, Op, Outcome, Return, Version};
pub use linearizable::SearchLimits;

/// Which checker found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    Linearizable,
    Counters,
    LostWrites,
    Ttl,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Linearizable => "linearizable",
            Check::Counters => "counters",
            Check::LostWrites => "lost-writes",
            Check::Ttl => "ttl",
        })
    }
}

/// A violation: the ops that show it (as few as the checker could narrow them to;
/// by invocation time, except that the counter check lists the final read first)
/// and why they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub check: Check,
    pub key: String,
    pub ops: Vec<Op>,
    pub explanation: String,
}

/// Ops shown per anomaly in a report; the rest are counted.
const SHOWN_OPS: usize = 40;

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] key {:?}: {}", self.check, self.key, self.explanation)?;
        for (i, op) in self.ops.iter().enumerate().take(SHOWN_OPS) {
            writeln!(f, "    #{i:<3} {op}")?;
        }
        if self.ops.len() > SHOWN_OPS {
            writeln!(f, "    ... and {} more ops", self.ops.len() - SHOWN_OPS)?;
        }
        Ok(())
    }
}

/// The result of one key's check that found nothing wrong (the counter, lost-write
/// and TTL checks; the linearizability check has its own, with search statistics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Passed,
    /// Not a key this check is about (e.g. not a counter, no TTL puts).
    NotApplicable,
    Skipped {
        reason: String,
    },
    Inconclusive {
        reason: String,
    },
}

/// A key a checker did not (fully) check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNote {
    pub key: String,
    pub reason: String,
}

/// What one checker found over a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub check: Check,
    /// Keys checked and found fine.
    pub keys_passed: usize,
    /// Keys this checker applies to but could not check (no final read, malformed ops,
    /// left to another check).
    pub skipped: Vec<KeyNote>,
    /// Keys whose check ran out of budget.
    pub inconclusive: Vec<KeyNote>,
    pub anomalies: Vec<Anomaly>,
    /// How much work the check did, for the report.
    pub work: String,
}

impl CheckSummary {
    pub fn new(check: Check) -> CheckSummary {
        CheckSummary {
            check,
            keys_passed: 0,
            skipped: Vec::new(),
            inconclusive: Vec::new(),
            anomalies: Vec::new(),
            work: String::new(),
        }
    }
}

/// Parameters of [`check_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// When the final-read phase began (after healing), on the history's clock. Reads
    /// invoked at or after it are final reads.
    pub final_phase_start_us: u64,
    /// Bound on the difference between the runner's clock and any leader's clock (and
    /// between leaders), used by the TTL check.
    pub clock_bound_ms: u64,
    pub search: SearchLimits,
}

impl CheckConfig {
    /// With the default search limits.
    pub fn new(final_phase_start_us: u64, clock_bound_ms: u64) -> CheckConfig {
        CheckConfig { final_phase_start_us, clock_bound_ms, search: SearchLimits::default() }
    }
}

/// Every checker's summary of one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ops: usize,
    pub keys: usize,
    /// Ops the runner recorded inconsistently (see [`Op::validate`]); their keys are
    /// skipped by every check, and the report is not valid.
    pub malformed: Vec<String>,
    pub checks: Vec<CheckSummary>,
}

impl Report {
    /// No anomaly and a well-formed history. Inconclusive keys do not make it invalid.
    pub fn is_valid(&self) -> bool {
        self.malformed.is_empty() && self.anomalies().next().is_none()
    }

    /// Whether every check finished on every key it applies to.
    pub fn is_conclusive(&self) -> bool {
        self.checks.iter().all(|c| c.inconclusive.is_empty())
    }

    pub fn anomalies(&self) -> impl Iterator<Item = &Anomaly> {
        self.checks.iter().flat_map(|c| &c.anomalies)
    }
}

/// Runs every checker over `history`.
pub fn check_all(history: &[Op], config: &CheckConfig) -> Report {
    let malformed: Vec<String> = history
        .iter()
        .enumerate()
        .filter_map(|(i, op)| op.validate().err().map(|e| format!("op {i} ({op}): {e}")))
        .collect();
    let bad_keys: std::collections::BTreeSet<&str> =
        history.iter().filter(|op| op.validate().is_err()).map(|op| op.key.as_str()).collect();
    let clean: Vec<Op> = history.iter().filter(|op| !bad_keys.contains(op.key.as_str())).cloned().collect();
    let mut checks = vec![
        linearizable::check_history(&clean, &config.search),
        counters::check_history(&clean, config.final_phase_start_us),
        lost_writes::check_history(&clean, config.final_phase_start_us),
        ttl::check_history(&clean, config.clock_bound_ms),
    ];
    for check in &mut checks {
        for key in &bad_keys {
            check.skipped.push(KeyNote { key: key.to_string(), reason: "malformed ops".into() });
        }
    }
    let keys = history.iter().map(|op| op.key.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    Report { ops: history.len(), keys, malformed, checks }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "history: {} ops on {} keys", self.ops, self.keys)?;
        for check in &self.checks {
            write!(
                f,
                "  {:<13} {:>5} keys passed, {:>4} skipped, {:>3} inconclusive, {:>3} anomalies",
                check.check.to_string(),
                check.keys_passed,
                check.skipped.len(),
                check.inconclusive.len(),
                check.anomalies.len()
            )?;
            if !check.work.is_empty() {
                write!(f, "  ({})", check.work)?;
            }
            writeln!(f)?;
            // Skips grouped by reason: usually a handful of reasons over many keys.
            let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for note in &check.skipped {
                reasons.entry(&note.reason).or_default().push(&note.key);
            }
            for (reason, keys) in reasons {
                writeln!(f, "      skipped {} key(s): {reason} (e.g. {:?})", keys.len(), keys[0])?;
            }
            for note in &check.inconclusive {
                writeln!(f, "      inconclusive {:?}: {}", note.key, note.reason)?;
            }
        }
        for line in &self.malformed {
            writeln!(f, "MALFORMED {line}")?;
        }
        for anomaly in self.anomalies() {
            write!(f, "ANOMALY {anomaly}")?;
        }
        let anomalies = self.anomalies().count();
        let verdict = match (self.is_valid(), self.is_conclusive()) {
            (false, _) if !self.malformed.is_empty() => {
                format!("INVALID HISTORY ({} malformed ops, {anomalies} anomalies)", self.malformed.len())
            }
            (false, _) => format!("INVALID ({anomalies} anomalies)"),
            (true, true) => "VALID".to_string(),
            (true, false) => "VALID so far (some keys inconclusive)".to_string(),
        };
        writeln!(f, "verdict: {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::history::build::*;
    use super::*;

    fn config() -> CheckConfig {
        CheckConfig::new(1_000, 5)
    }

    #[test]
    fn report_summarizes_every_check() {
        let history = vec![
            op(1, "k", 0, 10, put("a"), wrote(3)),
            op(2, "k", 20, 30, put("b"), wrote(4)),
            op(3, "k", 40, 50, Call::Get, read("a", 3)),
            op(1, "c", 0, 10, incr(2), counted(2, 5)),
            op(1, "t", 0, 10, put_ttl("x", 100), wrote(6)),
            op(9, "k", 1_000, 1_010, Call::Get, read("b", 4)),
            op(9, "c", 1_000, 1_010, Call::Get, read("2", 5)),
            op(9, "t", 1_000, 1_010, Call::Get, absent()),
        ];
        let report = check_all(&history, &config());
        assert!(!report.is_valid());
        assert_eq!(report.anomalies().count(), 1, "{report}");
        let text = report.to_string();
        assert!(text.contains("history: 8 ops on 3 keys"), "{text}");
        assert!(text.contains("skipped 1 key(s): has TTL puts"), "{text}");
        assert!(text.contains("ANOMALY [linearizable] key \"k\""), "{text}");
        assert!(text.ends_with("verdict: INVALID (1 anomalies)\n"), "{text}");
    }

    #[test]
    fn malformed_ops_invalidate_the_history_and_skip_their_key() {
        let history = vec![op(1, "k", 0, 10, put("a"), absent()), op(1, "j", 0, 10, put("a"), wrote(1))];
        let report = check_all(&history, &config());
        assert!(!report.is_valid());
        assert_eq!(report.malformed.len(), 1);
        assert!(report.to_string().contains("verdict: INVALID HISTORY"), "{report}");
    }

    #[test]
    fn a_clean_history_is_valid() {
        let history =
            vec![op(1, "k", 0, 10, put("a"), wrote(3)), op(9, "k", 1_000, 1_010, Call::Get, read("a", 3))];
        let report = check_all(&history, &config());
        assert!(report.is_valid() && report.is_conclusive(), "{report}");
        assert!(report.to_string().ends_with("verdict: VALID\n"));
    }
}
