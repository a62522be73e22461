//! Randomized self-test of the checkers: histories generated from a sequential run
//! of the key's semantics are valid by construction, whatever the concurrency and
//! the unknown outcomes layered on top, so every checker must accept them; one
//! injected corruption, of a kind that no order can explain, must be rejected.
//! Deterministic seeds; a failure prints the seed and the history.
//!
//! [`bench_linearizability_search`] measures the search on large histories; it
//! is a command, not a test (`cargo run --release -p ringkv-tests --bin
//! ringkv-checker-bench`).

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::history::build::*;
use super::history::{Call, Condition, Op, Outcome, Return};
use super::linearizable::{self, KeyVerdict, SearchLimits};
#[cfg(test)]
use super::{Checked, counters, lost_writes};

/// The true sequential run behind a generated op.
#[derive(Debug, Clone)]
struct Truth {
    /// The key before the op took effect (or would have): (value, version).
    before: Option<(String, u64)>,
}

/// Shape of a generated history.
#[derive(Debug, Clone, Copy)]
struct Shape {
    ops: usize,
    /// Most µs an op's interval reaches beyond its linearization point on either
    /// side; linearization points are 100 µs apart.
    spread_us: u64,
    /// Percent of applied writes whose outcome is recorded as unknown.
    unknown_pct: u32,
    /// Allow increments (over string values they fail, as in the state machine).
    increments: bool,
    /// A counter key instead: increments and reads only.
    counter: bool,
}

/// A register history from a sequential run; returns the ops (in linearization
/// order), the truth behind each, and the key's final state.
type Generated = (Vec<Op>, Vec<Truth>, Option<(String, u64)>);

fn generate(rng: &mut StdRng, shape: Shape) -> Generated {
    let mut state: Option<(String, u64)> = None;
    // The current batch: its version, and the earliest completion of its writes
    // with a known outcome (a write invoked later cannot join it).
    let (mut last_version, mut batch_known_complete, mut next_index) = (0u64, 0u64, 0u64);
    let (mut ops, mut truth) = (Vec::new(), Vec::new());
    for i in 0..shape.ops {
        let t = 1_000 + shape.spread_us + i as u64 * 100;
        let invoke_us = t - rng.random_range(0..=shape.spread_us);
        let complete_us = t + rng.random_range(0..=shape.spread_us);
        let current = state.as_ref().map_or(0, |(_, v)| *v);
        let roll = rng.random_range(0..100);
        let call = match roll {
            _ if shape.counter => {
                if roll < 35 {
                    Call::Get
                } else {
                    incr(rng.random_range(-5..=5))
                }
            }
            0..40 => Call::Get,
            40..60 => put(&format!("v{i}")),
            60..67 => put_if_absent(&format!("v{i}")),
            67..80 => {
                let x = if current > 0 && rng.random_bool(0.6) {
                    current
                } else {
                    rng.random_range(1..=next_index + 2)
                };
                cas(&format!("v{i}"), x)
            }
            80..90 => {
                let if_version = match rng.random_range(0..10) {
                    0..6 => None,
                    6..8 if current > 0 => Some(current),
                    _ => Some(rng.random_range(1..=next_index + 2)),
                };
                Call::Delete { if_version }
            }
            _ if shape.increments => incr(rng.random_range(-5..=5)),
            _ => Call::Get,
        };
        let before = state.clone();
        // Evaluate against the state machine's rules.
        let live = state.as_ref().map(|(_, v)| *v);
        let succeeds = match &call {
            Call::Get => false,
            Call::Put { condition: Condition::None, .. } => true,
            Call::Put { condition: Condition::IfAbsent, .. } => live.is_none(),
            Call::Put { condition: Condition::IfVersion(x), .. } => live == Some(*x),
            Call::Delete { if_version: None } => live.is_some(),
            Call::Delete { if_version: Some(x) } => live == Some(*x),
            Call::Increment { .. } => state
                .as_ref()
                .is_none_or(|(value, _)| value.parse::<i64>().is_ok_and(|n| n.to_string() == *value)),
        };
        let unknown = succeeds && rng.random_range(0..100) < shape.unknown_pct;
        let version = if succeeds {
            let known_complete = if unknown { u64::MAX } else { complete_us };
            // Writes in flight together may share a Raft batch, hence a version.
            if last_version > 0 && invoke_us <= batch_known_complete && rng.random_bool(0.3) {
                batch_known_complete = batch_known_complete.min(known_complete);
                last_version
            } else {
                next_index += rng.random_range(1..=3);
                batch_known_complete = known_complete;
                next_index
            }
        } else {
            0
        };
        let outcome = match &call {
            Call::Get => match &state {
                Some((value, v)) => read(value, *v),
                None => absent(),
            },
            Call::Put { value, .. } if succeeds => {
                state = Some((value.clone(), version));
                wrote(version)
            }
            Call::Put { .. } => refused(current),
            Call::Delete { .. } if succeeds => {
                state = None;
                deleted(version)
            }
            Call::Delete { .. } => not_deleted(current),
            Call::Increment { delta } if succeeds => {
                let n = state.as_ref().map_or(0, |(value, _)| value.parse::<i64>().expect("checked")) + delta;
                state = Some((n.to_string(), version));
                counted(n, version)
            }
            // A non-integer counter: FAILED_PRECONDITION, nothing changes.
            Call::Increment { .. } => Outcome::Failed,
        };
        if succeeds {
            last_version = version;
        }
        let mut recorded = op(rng.random_range(0..8), "k", invoke_us, complete_us, call, outcome);
        if unknown {
            recorded.outcome = Outcome::Unknown;
            if rng.random_bool(0.5) {
                // The client gave up before the write landed.
                recorded.complete_us = rng.random_range(invoke_us..=t);
            }
        } else if !succeeds && rng.random_range(0..100) < 5 {
            // Reads and refused writes whose answer was lost carry no information.
            recorded.outcome = if rng.random_bool(0.5) { Outcome::Unknown } else { Outcome::Failed };
        }
        ops.push(recorded);
        truth.push(Truth { before });
        if rng.random_range(0..100) < 8 {
            // A write that never took effect.
            let ghost = match rng.random_range(0..3) {
                _ if shape.counter => incr(rng.random_range(1..=5)),
                0 => put(&format!("ghost{i}")),
                1 => Call::Delete { if_version: None },
                _ if shape.increments => incr(rng.random_range(1..=5)),
                _ => put(&format!("ghost{i}")),
            };
            let outcome = if rng.random_bool(0.5) { Outcome::Unknown } else { Outcome::Failed };
            ops.push(op(9, "k", invoke_us, complete_us + 50, ghost, outcome));
            truth.push(Truth { before: state.clone() });
        }
    }
    (ops, truth, state)
}

/// A corruption that no order of the ops can explain, and its name.
fn corrupt(rng: &mut StdRng, ops: &mut [Op], truth: &[Truth]) -> Option<&'static str> {
    let acked: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].acked_write_version().is_some()).collect();
    let before = |w: usize, g: usize, ops: &[Op]| ops[w].complete_us < ops[g].invoke_us;
    let mut kinds: Vec<(&'static str, usize, usize)> = Vec::new();
    for (g, op) in ops.iter().enumerate() {
        for &w in acked.iter().filter(|&&w| before(w, g, ops)) {
            let w_version = ops[w].acked_write_version().expect("acked");
            // A read of the state before a write that completed before the read began.
            if matches!((&op.call, &op.outcome), (Call::Get, Outcome::Ok(_)))
                && truth[w].before.as_ref().is_some_and(|(_, v)| *v < w_version)
            {
                let name = if matches!(ops[w].call, Call::Delete { .. }) {
                    "resurrected delete"
                } else {
                    "stale read"
                };
                kinds.push((name, g, w));
            }
            // A write whose version is below one that completed before it began.
            if op.acked_write_version().is_some() && w_version >= 2 {
                kinds.push(("version going backwards", g, w));
                let cas = matches!(op.call, Call::Put { condition: Condition::IfVersion(_), .. })
                    || matches!(op.call, Call::Delete { if_version: Some(_) });
                if cas {
                    kinds.push(("CAS against the wrong version", g, w));
                }
            }
            // The key absent after an acknowledged put, with no delete that could land.
            let no_delete = !ops.iter().any(|d| {
                matches!(d.call, Call::Delete { .. })
                    && d.outcome != Outcome::Failed
                    && d.invoke_us <= op.complete_us
            });
            if matches!((&op.call, &op.outcome), (Call::Get, Outcome::Ok(_))) && no_delete {
                kinds.push(("lost write", g, w));
            }
        }
        if matches!(op.outcome, Outcome::Ok(Return::Increment { .. })) {
            kinds.push(("impossible increment result", g, g));
        }
    }
    // A kind first, then one of its instances: rare kinds get their turn too.
    let mut names: Vec<&str> = kinds.iter().map(|(name, _, _)| *name).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let name = *names.choose(rng)?;
    let instances: Vec<_> = kinds.iter().filter(|(n, _, _)| *n == name).collect();
    let &&(name, g, w) = instances.choose(rng)?;
    let w_version = ops[w].acked_write_version().unwrap_or(0);
    let op = &mut ops[g];
    match name {
        "stale read" | "resurrected delete" => {
            let (value, v) = truth[w].before.clone().expect("chosen with a present state");
            op.outcome = read(&value, v);
        }
        "version going backwards" => {
            let lower = rng.random_range(1..w_version);
            match &mut op.outcome {
                Outcome::Ok(Return::Put { version, .. } | Return::Delete { version, .. })
                | Outcome::Ok(Return::Increment { version, .. }) => *version = lower,
                _ => unreachable!("an acknowledged write"),
            }
        }
        "CAS against the wrong version" => {
            let lower = rng.random_range(1..w_version);
            match &mut op.call {
                Call::Put { condition: Condition::IfVersion(x), .. }
                | Call::Delete { if_version: Some(x) } => *x = lower,
                _ => unreachable!("a conditional write"),
            }
        }
        "lost write" => op.outcome = absent(),
        "impossible increment result" => {
            if let Outcome::Ok(Return::Increment { value, .. }) = &mut op.outcome {
                *value += 1_000_003;
            }
        }
        _ => unreachable!(),
    }
    Some(name)
}

#[cfg(test)]
fn dump(ops: &[Op]) -> String {
    ops.iter().enumerate().map(|(i, op)| format!("  #{i} {op}\n")).collect()
}

#[test]
fn random_valid_histories_pass_and_single_corruptions_fail() {
    let limits = SearchLimits::default();
    let mut rejected: std::collections::BTreeMap<&str, usize> = Default::default();
    for seed in 0..250u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = Shape {
            ops: rng.random_range(5..60),
            spread_us: [0, 50, 150, 400][seed as usize % 4],
            unknown_pct: [0, 10, 30][seed as usize % 3],
            increments: seed % 2 == 0,
            counter: seed % 5 == 0,
        };
        let (mut ops, truth, _) = generate(&mut rng, shape);
        match linearizable::check_key("k", &ops, &limits) {
            Ok(KeyVerdict::Linearizable(_)) => {}
            other => panic!("seed {seed}: valid history not accepted: {other:#?}\n{}", dump(&ops)),
        }
        let original = ops.clone();
        let Some(kind) = corrupt(&mut rng, &mut ops, &truth) else { continue };
        match linearizable::check_key("k", &ops, &limits) {
            Err(anomaly) => {
                assert!(anomaly.ops.len() <= ops.len());
                *rejected.entry(kind).or_default() += 1;
            }
            other => panic!(
                "seed {seed}: {kind} not rejected: {other:#?}\noriginal:\n{}corrupted:\n{}",
                dump(&original),
                dump(&ops)
            ),
        }
    }
    // Every kind of corruption was exercised.
    assert_eq!(rejected.len(), 6, "{rejected:?}");
}

#[test]
fn random_final_reads_show_lost_writes() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = Shape {
            ops: rng.random_range(5..60),
            spread_us: 150,
            unknown_pct: 20,
            increments: true,
            counter: false,
        };
        let (mut ops, truth, final_state) = generate(&mut rng, shape);
        // The final state, read in the final phase.
        let end = ops.iter().map(|op| op.complete_us).max().unwrap_or(0) + 1_000;
        ops.push(op(
            99,
            "k",
            end,
            end + 10,
            Call::Get,
            final_state.map_or_else(absent, |(v, n)| read(&v, n)),
        ));
        let verdict = lost_writes::check_key("k", &ops, end);
        assert!(
            matches!(verdict, Ok(Checked::Passed | Checked::NotApplicable)),
            "seed {seed}: {verdict:#?}\n{}",
            dump(&ops)
        );
        // Corrupt: the final read sees the state before the last acknowledged write.
        let Some(w) = (0..ops.len()).rev().find(|&i| {
            ops[i]
                .acked_write_version()
                .is_some_and(|v| truth[i].before.as_ref().is_some_and(|(_, b)| *b < v))
        }) else {
            continue;
        };
        let (value, v) = truth[w].before.clone().expect("present");
        ops.last_mut().expect("final read").outcome = read(&value, v);
        assert!(lost_writes::check_key("k", &ops, end).is_err(), "seed {seed}:\n{}", dump(&ops));
    }
}

#[test]
fn random_counters_catch_double_counting() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut ops, mut sum, mut applied) = (Vec::new(), 0i64, Vec::new());
        for k in 0..rng.random_range(1..25u32) {
            // Distinct powers of four: every subset has its own sum, even with one
            // delta counted twice.
            let delta = 4i64.pow(k);
            let (t, spread) = (1_000 + u64::from(k) * 100, 300);
            let (invoke, complete) = (t - rng.random_range(0..spread), t + rng.random_range(0..spread));
            let outcome = match rng.random_range(0..10) {
                0..6 => {
                    sum += delta;
                    applied.push(delta);
                    counted(sum, u64::from(k) + 1)
                }
                6..8 => {
                    if rng.random_bool(0.5) {
                        sum += delta;
                        applied.push(delta);
                    }
                    Outcome::Unknown
                }
                _ => Outcome::Failed,
            };
            ops.push(op(k, "c", invoke, complete, incr(delta), outcome));
        }
        let end = 100_000;
        let found = if applied.is_empty() { absent() } else { read(&sum.to_string(), 1) };
        ops.push(op(99, "c", end, end + 10, Call::Get, found));
        assert_eq!(counters::check_key("c", &ops, end), Ok(Checked::Passed), "seed {seed}:\n{}", dump(&ops));
        let Some(&twice) = applied.choose(&mut rng) else { continue };
        ops.last_mut().expect("final read").outcome = read(&(sum + twice).to_string(), 1);
        assert!(counters::check_key("c", &ops, end).is_err(), "seed {seed}: +{twice} twice\n{}", dump(&ops));
    }
}

/// Prints how long the linearizability search takes, and how many states it
/// visits, on generated histories of growing length, concurrency and share of
/// unknown outcomes, clean and with one corruption near the end.
pub fn bench_linearizability_search() {
    let limits = SearchLimits::default();
    println!(
        "{:>8} {:>6} {:>7} {:>5} {:>8} {:>5} {:>11} {:>9} {:>9}  verdict",
        "key", "ops", "spread", "unk%", "corrupt", "conc", "steps", "states", "ms"
    );
    // Register keys: length, then concurrency (spread), then the share of unknown
    // outcomes; then counter keys; then a key mixing both (string puts and
    // increments, with a never-applied increment every ~40 ops).
    let configs = [
        ("register", 1_000, 300, 10),
        ("register", 2_000, 300, 10),
        ("register", 5_000, 300, 10),
        ("register", 10_000, 300, 10),
        ("register", 2_000, 100, 10),
        ("register", 2_000, 600, 10),
        ("register", 2_000, 1_000, 10),
        ("register", 2_000, 300, 0),
        ("register", 2_000, 300, 30),
        ("counter", 1_000, 300, 10),
        ("counter", 2_000, 300, 10),
        ("counter", 2_000, 300, 30),
        ("mixed", 1_000, 300, 10),
        ("mixed", 2_000, 300, 10),
    ];
    for (kind_of_key, n, spread_us, unknown_pct) in configs {
        // The corruption (of the chosen kinds, see `corrupt`) hits an op in the
        // last 5%, so the search first gets through everything else.
        for corrupted in [false, true] {
            let mut rng = StdRng::seed_from_u64(n as u64 + spread_us);
            let shape = Shape {
                ops: n,
                spread_us,
                unknown_pct,
                increments: kind_of_key == "mixed",
                counter: kind_of_key == "counter",
            };
            let (mut ops, truth, _) = generate(&mut rng, shape);
            let mut kind = "-";
            if corrupted {
                let from = ops.len() - ops.len() / 20;
                match corrupt(&mut StdRng::seed_from_u64(7), &mut ops[from..], &truth[from..]) {
                    Some(k) => kind = k,
                    None => continue,
                }
            }
            let started = std::time::Instant::now();
            let verdict = linearizable::check_key("k", &ops, &limits);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let (stats, what) = match &verdict {
                Ok(KeyVerdict::Linearizable(s)) => (*s, "linearizable".to_string()),
                Ok(KeyVerdict::Inconclusive { stats, .. }) => (*stats, "INCONCLUSIVE".to_string()),
                Ok(KeyVerdict::Skipped { reason }) => panic!("{reason}"),
                Err(anomaly) => {
                    (Default::default(), format!("violation ({kind}), witness of {} ops", anomaly.ops.len()))
                }
            };
            println!(
                "{kind_of_key:>8} {n:>6} {spread_us:>7} {unknown_pct:>5} {:>8} {:>5} {:>11} {:>9} {ms:>9.1}  {what}",
                if corrupted { "yes" } else { "no" },
                stats.concurrency,
                stats.steps,
                stats.states
            );
        }
    }
}
