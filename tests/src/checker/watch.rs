//! The watch checker: what a chaos run's watch of the register keys delivered,
//! against what the history acknowledged.
//!
//! A watch is recorded as *segments*: one per `Client::watch`, which resumes
//! by itself across leader changes and router failures, until it ends with an
//! error (a watch whose position fell out of a shard's retention ends with
//! OUT_OF_RANGE; the runner then starts a new one from now, which is what an
//! application must do). For every segment and shard the checker knows the
//! version range the segment covered: from the position it started at to the
//! last version it reached. The rules:
//!
//! 1. No duplicate: a log entry's events come in one response (nodes never
//!    split an entry), so a version of a shard arriving in a second response
//!    is a duplicate delivery; and each written value is delivered once.
//! 2. Order: within a segment, a shard's versions never go down, nor do a
//!    key's (several writes to one key in one entry share its version).
//! 3. No gap: every acknowledged write to a watched key (a successful `Put`
//!    or `Delete`) whose version lies in a segment's covered range for its
//!    shard is delivered by that segment, as the same kind of event, with the
//!    value that was written.
//!
//! Writes with an unknown outcome may or may not appear (once, by rule 1).
//! The runner lets the last segment catch up with every acknowledged write
//! before it stops, so in a run without OUT_OF_RANGE every acknowledged write
//! is covered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::{Call, Op, Outcome, Return};

/// What happened to a key, as a watch reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Put,
    Delete,
    Expired,
}

/// One delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Which response of the segment brought it (counting from 0).
    pub response: u64,
    pub shard: u32,
    pub key: String,
    pub version: u64,
    pub change: Change,
    pub value: String,
}

/// One uninterrupted watch.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// Per shard, the first version the segment was to deliver.
    pub start: BTreeMap<u32, u64>,
    /// Per shard, the last version it reached (events or progress).
    pub reached: BTreeMap<u32, u64>,
    pub events: Vec<Seen>,
    /// The error that ended it, if one did.
    pub ended: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    pub segments: usize,
    pub events: usize,
    /// Acknowledged writes to watched keys, and how many fell in a covered range.
    pub acknowledged: usize,
    pub covered: usize,
    pub anomalies: Vec<String>,
}

impl WatchReport {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "watch: {} segments, {} events; {} of {} acknowledged writes to watched keys in covered \
             ranges, {} anomalies",
            self.segments,
            self.events,
            self.covered,
            self.acknowledged,
            self.anomalies.len()
        )?;
        for anomaly in self.anomalies.iter().take(20) {
            writeln!(f, "  {anomaly}")?;
        }
        Ok(())
    }
}

/// Checks `segments` of a watch of the keys `watched` accepts against
/// `history`; `shard_of` maps a key to its shard.
pub fn check(
    history: &[Op],
    segments: &[Segment],
    watched: impl Fn(&str) -> bool,
    shard_of: impl Fn(&str) -> u32,
) -> WatchReport {
    let mut report = WatchReport { segments: segments.len(), ..Default::default() };
    for (n, segment) in segments.iter().enumerate() {
        report.events += segment.events.len();
        let mut values: BTreeSet<(&str, &str)> = BTreeSet::new();
        // Per shard: the last version seen, and the response that brought it.
        let mut last_of_shard: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut last_of_key: BTreeMap<&str, u64> = BTreeMap::new();
        for seen in &segment.events {
            if seen.change == Change::Put && !values.insert((&seen.key, &seen.value)) {
                report.anomalies.push(format!("segment {n}: {seen:?} delivered twice"));
            }
            if let Some((last, response)) = last_of_shard.insert(seen.shard, (seen.version, seen.response)) {
                if seen.version < last {
                    report
                        .anomalies
                        .push(format!("segment {n}: shard {} went back from {last} to {seen:?}", seen.shard));
                } else if seen.version == last && seen.response != response {
                    report.anomalies.push(format!(
                        "segment {n}: shard {}'s entry {last} arrived again in a later response: {seen:?}",
                        seen.shard
                    ));
                }
            }
            if let Some(last) = last_of_key.insert(&seen.key, seen.version)
                && seen.version < last
            {
                report.anomalies.push(format!("segment {n}: key went back from {last} to {seen:?}"));
            }
        }
    }
    for op in history {
        let expected = match (&op.call, &op.outcome) {
            (Call::Put { value, .. }, Outcome::Ok(Return::Put { succeeded: true, version })) => {
                (Change::Put, *version, value.as_str())
            }
            (Call::Delete { .. }, Outcome::Ok(Return::Delete { deleted: true, version })) => {
                (Change::Delete, *version, "")
            }
            _ => continue,
        };
        if !watched(&op.key) {
            continue;
        }
        report.acknowledged += 1;
        let (change, version, value) = expected;
        let shard = shard_of(&op.key);
        for (n, segment) in segments.iter().enumerate() {
            let covered = segment.start.get(&shard).is_some_and(|&start| start <= version)
                && segment.reached.get(&shard).is_some_and(|&reached| version <= reached);
            if !covered {
                continue;
            }
            report.covered += 1;
            let found = segment
                .events
                .iter()
                .filter(|s| s.key == op.key && s.version == version && s.change == change)
                .find(|s| s.value == value)
                .or_else(|| segment.events.iter().find(|s| s.key == op.key && s.version == version));
            match found {
                Some(seen) if seen.change == change && seen.value == value => {}
                Some(seen) => report.anomalies.push(format!(
                    "segment {n}: acknowledged {change:?} {} = {value:?} at {version} was delivered as {seen:?}",
                    op.key
                )),
                None => report.anomalies.push(format!(
                    "segment {n}: acknowledged {change:?} {} at version {version} (shard {shard}) is missing",
                    op.key
                )),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::Condition;

    fn put(key: &str, value: &str, version: u64) -> Op {
        Op {
            client: 0,
            key: key.into(),
            invoke_us: 0,
            complete_us: 1,
            call: Call::Put { value: value.into(), condition: Condition::None, ttl_ms: 0 },
            outcome: Outcome::Ok(Return::Put { succeeded: true, version }),
        }
    }

    fn seen(key: &str, version: u64, value: &str) -> Seen {
        Seen {
            response: version,
            shard: 1,
            key: key.into(),
            version,
            change: Change::Put,
            value: value.into(),
        }
    }

    fn segment(events: Vec<Seen>, start: u64, reached: u64) -> Segment {
        Segment { start: [(1, start)].into(), reached: [(1, reached)].into(), events, ended: None }
    }

    fn run(history: &[Op], segments: &[Segment]) -> WatchReport {
        check(history, segments, |k| k.starts_with("reg-"), |_| 1)
    }

    #[test]
    fn a_complete_watch_passes_and_every_rule_catches_its_anomaly() {
        let history = vec![put("reg-a", "1", 5), put("reg-b", "2", 6), put("other", "x", 7)];
        let good = segment(vec![seen("reg-a", 5, "1"), seen("reg-b", 6, "2")], 1, 9);
        let report = run(&history, &[good]);
        assert!(report.is_valid(), "{report}");
        assert_eq!((report.acknowledged, report.covered), (2, 2));

        let gap = segment(vec![seen("reg-a", 5, "1")], 1, 9);
        assert!(run(&history, &[gap]).anomalies[0].contains("missing"));
        let twice = segment(vec![seen("reg-a", 5, "1"), seen("reg-a", 5, "1"), seen("reg-b", 6, "2")], 1, 9);
        assert!(run(&history, &[twice]).anomalies.iter().any(|a| a.contains("twice")));
        // An entry re-sent in a later response is a duplicate, whatever it holds.
        let mut deleted = seen("reg-c", 6, "");
        deleted.change = Change::Delete;
        let mut again = deleted.clone();
        again.response += 1;
        let resent =
            segment(vec![seen("reg-a", 5, "1"), seen("reg-b", 6, "2"), deleted.clone(), again], 1, 9);
        assert!(run(&history, &[resent]).anomalies.iter().any(|a| a.contains("arrived again")));
        // Two writes to one key in one entry share its version: not an anomaly.
        let history_same_entry = vec![put("reg-a", "1", 5), put("reg-a", "2", 5)];
        let shared = segment(vec![seen("reg-a", 5, "1"), seen("reg-a", 5, "2")], 1, 9);
        assert!(run(&history_same_entry, &[shared]).is_valid());
        let backwards = segment(vec![seen("reg-b", 6, "2"), seen("reg-a", 5, "1")], 1, 9);
        assert!(run(&history, &[backwards]).anomalies.iter().any(|a| a.contains("went back")));
        let wrong = segment(vec![seen("reg-a", 5, "9"), seen("reg-b", 6, "2")], 1, 9);
        assert!(run(&history, &[wrong]).anomalies[0].contains("delivered as"));
        // Outside the covered range nothing is expected.
        let later = segment(vec![], 7, 9);
        assert!(run(&history, &[later]).is_valid());
    }
}
