//! The retry policy without I/O: where an operation's first attempt goes and what
//! follows a failed one. [`crate::Client`] owns the sockets, the clock, the random
//! numbers and the sleeps; everything it decides comes from [`Attempts`], so the
//! policy is table-tested without a runtime, a clock or randomness.
//!
//! An operation walks its shard's candidate addresses ([`RouteTable::candidates`],
//! recomputed after every error so that a map installed meanwhile is used at
//! once) in rounds: each round tries every candidate once; a new round starts
//! after a backoff. `NotLeader` hints jump the queue.

use std::time::Duration;

use ringkv_core::{META_SHARD, ShardId};

use crate::error::Error;
use crate::route_table::{Prefer, RouteTable};

/// Exponential backoff with full jitter: the n-th backoff of an operation is
/// uniform in `[0, min(max, initial · 2ⁿ))`. Jitter keeps clients that failed
/// together (say, at a leader's death) from retrying in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send the request again to `addr` after waiting `after` (may be zero).
    Retry { addr: String, after: Duration },
    /// Return the error to the caller.
    GiveUp,
}

/// A [`Step`], plus whether the error showed the cluster map to be out of date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) step: Step,
    /// Refresh the map (in the background; the operation does not wait for it).
    pub(crate) refresh_map: bool,
}

/// The routing state of one operation.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// A write that would apply again if resent (no request id): retried
    /// only after errors that prove it was not applied.
    write: bool,
    prefer: Prefer,
    /// The operation's shard: from the key when the shard count is known, else
    /// learned from the first `NotLeader`/`WrongShard` detail.
    shard: Option<ShardId>,
    /// Addresses sent to in the current round.
    tried: Vec<String>,
    /// Addresses no connection could be made to during this operation. A `NotLeader` hint naming one of them is the followers' stale
    /// belief in a leader that just died: following it would bounce between a
    /// follower and a dead node until the election ends, so it counts as "no
    /// leader known", and such addresses go last in every round.
    unreachable: Vec<String>,
    policy: BackoffPolicy,
    /// Backoffs taken so far (the exponent of the next one).
    backoffs: u32,
}

impl Attempts {
    /// Starts an operation on `shard` (if known); returns it and the first
    /// address. `stale` reads take any replica, the next one in rotation first.
    pub(crate) fn start(
        table: &mut RouteTable,
        shard: Option<ShardId>,
        write: bool,
        stale: bool,
        policy: BackoffPolicy,
    ) -> (Attempts, String) {
        let prefer = if stale { Prefer::Replica(table.next_replica_rotation()) } else { Prefer::Leader };
        let candidates = table.candidates(shard, prefer);
        let first = candidates.into_iter().next().expect("candidates end with the seeds, never empty");
        let attempts = Attempts {
            write,
            prefer,
            shard,
            tried: vec![first.clone()],
            unreachable: Vec::new(),
            policy,
            backoffs: 0,
        };
        (attempts, first)
    }

    /// The operation's shard, as known now.
    pub(crate) fn shard(&self) -> Option<ShardId> {
        self.shard
    }

    /// Decides what follows `err`, the answer of `addr`, and updates `table` with
    /// what the error taught. `jitter` is a sample from `[0, 1)` that scales this
    /// step's backoff, if it takes one. The caller enforces the deadline and the
    /// attempt count.
    pub(crate) fn after_error(
        &mut self,
        table: &mut RouteTable,
        addr: &str,
        err: &Error,
        jitter: f64,
    ) -> Decision {
        let refresh_map = self.learn(table, addr, err);
        let retryable = err.is_retryable() && (!self.write || err.surely_not_applied());
        let step = if retryable { self.next_step(table, addr, err, jitter) } else { Step::GiveUp };
        Decision { step, refresh_map }
    }

    /// Updates the table from `err`; returns whether the map needs a refresh.
    fn learn(&mut self, table: &mut RouteTable, addr: &str, err: &Error) -> bool {
        match err {
            Error::NotLeader { shard, leader_addr, .. } => {
                self.shard.get_or_insert(*shard);
                table.note_node_answer();
                match leader_addr.as_deref() {
                    Some(leader) if leader != addr && !self.unreachable.iter().any(|u| u == leader) => {
                        table.note_leader(*shard, leader);
                        // A leader the map does not know: a node joined since.
                        table.epoch().is_some() && !table.knows_addr(leader)
                    }
                    _ => {
                        table.forget_leader(*shard, addr);
                        false
                    }
                }
            }
            Error::WrongShard { shard, epoch } => {
                self.shard.get_or_insert(*shard);
                table.note_node_answer();
                table.forget_leader(*shard, addr);
                // Nodes that host no meta replica refuse ClusterStatus this way;
                // that says nothing about the map.
                *shard != META_SHARD && table.is_stale(*epoch)
            }
            Error::Unavailable(_) | Error::DeadlineExceeded | Error::Transport(_) => {
                table.forget_address(addr);
                if matches!(err, Error::Transport(_)) {
                    self.note_unreachable(addr);
                }
                false
            }
            _ => false,
        }
    }

    fn next_step(&mut self, table: &RouteTable, addr: &str, err: &Error, jitter: f64) -> Step {
        let (next, after) = match err {
            // Follow a redirect at once, unless this round has already been there:
            // then leadership is moving and hints are stale, so back off first.
            Error::NotLeader { leader_addr: Some(leader), .. }
                if leader != addr && !self.unreachable.contains(leader) =>
            {
                let after = if self.tried.contains(leader) { self.backoff(jitter) } else { Duration::ZERO };
                (leader.clone(), after)
            }
            // No leader known (or a node naming itself): an election is under
            // way. Give it time, and ask another replica.
            Error::NotLeader { .. } => (self.next_candidate(table, addr), self.backoff(jitter)),
            // This node has no replica; another may: at once, unless the round is
            // over.
            Error::WrongShard { .. } => {
                let next = self.next_candidate(table, addr);
                let after = if self.tried.is_empty() { self.backoff(jitter) } else { Duration::ZERO };
                (next, after)
            }
            // Unreachable, overloaded or without quorum: another replica, after a
            // backoff.
            _ => (self.next_candidate(table, addr), self.backoff(jitter)),
        };
        self.tried.push(next.clone());
        Step::Retry { addr: next, after }
    }

    /// The first candidate not tried in this round. When there is none, a new
    /// round starts (leaving `tried` empty, which callers read as "back off") at
    /// the first candidate other than `current`, unless it is the only one.
    fn next_candidate(&mut self, table: &RouteTable, current: &str) -> String {
        let mut candidates = table.candidates(self.shard, self.prefer);
        // Reachable ones first; the order is otherwise kept (stable sort).
        candidates.sort_by_key(|addr| self.unreachable.contains(addr));
        if let Some(next) = candidates.iter().find(|addr| !self.tried.contains(addr)) {
            return next.clone();
        }
        self.tried.clear();
        // Not empty: candidates end with the seeds.
        candidates.iter().find(|addr| *addr != current).unwrap_or(&candidates[0]).clone()
    }

    fn note_unreachable(&mut self, addr: &str) {
        if !self.unreachable.iter().any(|u| u == addr) {
            self.unreachable.push(addr.to_string());
        }
    }

    /// This step's backoff: full jitter over the current ceiling, which doubles
    /// per backoff up to the cap.
    fn backoff(&mut self, jitter: f64) -> Duration {
        let ceiling = self.policy.initial.saturating_mul(1 << self.backoffs.min(16)).min(self.policy.max);
        self.backoffs += 1;
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Routing;
    use crate::route_table::tests::table;

    const POLICY: BackoffPolicy =
        BackoffPolicy { initial: Duration::from_millis(20), max: Duration::from_millis(200) };

    /// Every test's jitter sample: half of each ceiling, so the delays read
    /// 10, 20, 40, … ms.
    const HALF: f64 = 0.5;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn retry(addr: &str, after_ms: u64) -> Step {
        Step::Retry { addr: addr.into(), after: ms(after_ms) }
    }

    fn not_leader(shard: ShardId, leader: Option<&str>) -> Error {
        Error::NotLeader { shard, leader_id: leader.map(|_| 9), leader_addr: leader.map(Into::into) }
    }

    /// The kinds of operation the policy distinguishes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Read,
        Write,
    }

    /// Every error kind × (read, write) → the decision, for a linearizable read or
    /// a write of shard 1 that started at its leader b:1 (replicas a, b, c; seeds
    /// a, z; map epoch 5; see `route_table::tests::status`).
    #[test]
    fn decision_table() {
        use Kind::*;
        let unknown_leader = not_leader(1, None);
        let other = |code| Error::Other { code, message: "x".into() };
        #[rustfmt::skip]
        let cases: Vec<(&str, Error, Kind, Step, bool)> = vec![
            // error                                                     op     next                refresh
            ("hint, untried",        not_leader(1, Some("c:1")),          Read,  retry("c:1", 0),   false),
            ("hint, untried",        not_leader(1, Some("c:1")),          Write, retry("c:1", 0),   false),
            ("hint to itself",       not_leader(1, Some("b:1")),          Read,  retry("a:1", 10),  false),
            ("hint to itself",       not_leader(1, Some("b:1")),          Write, retry("a:1", 10),  false),
            ("hint, unknown node",   not_leader(1, Some("n:1")),          Read,  retry("n:1", 0),   true),
            ("hint, unknown node",   not_leader(1, Some("n:1")),          Write, retry("n:1", 0),   true),
            ("no hint: election",    unknown_leader.clone(),              Read,  retry("a:1", 10),  false),
            ("no hint: election",    unknown_leader,                      Write, retry("a:1", 10),  false),
            ("wrong shard, epoch ?", Error::WrongShard { shard: 1, epoch: 0 }, Read,  retry("a:1", 0), true),
            ("wrong shard, epoch ?", Error::WrongShard { shard: 1, epoch: 0 }, Write, retry("a:1", 0), true),
            ("wrong shard, newer",   Error::WrongShard { shard: 1, epoch: 6 }, Write, retry("a:1", 0), true),
            ("wrong shard, older",   Error::WrongShard { shard: 1, epoch: 4 }, Read,  retry("a:1", 0), false),
            ("wrong shard, same",    Error::WrongShard { shard: 1, epoch: 5 }, Write, retry("a:1", 0), false),
            ("unavailable",          Error::Unavailable("no quorum".into()),  Read,  retry("a:1", 10), false),
            ("unavailable: unknown", Error::Unavailable("no quorum".into()),  Write, Step::GiveUp,     false),
            ("timeout",              Error::DeadlineExceeded,             Read,  retry("a:1", 10),  false),
            ("timeout: unknown",     Error::DeadlineExceeded,             Write, Step::GiveUp,      false),
            ("connect failure",      Error::Transport("refused".into()),  Read,  retry("a:1", 10),  false),
            ("connect failure",      Error::Transport("refused".into()),  Write, retry("a:1", 10),  false),
            ("invalid argument",     Error::InvalidArgument("x".into()),  Read,  Step::GiveUp,      false),
            ("invalid argument",     Error::InvalidArgument("x".into()),  Write, Step::GiveUp,      false),
            ("failed precondition",  Error::FailedPrecondition("x".into()), Read, Step::GiveUp,     false),
            ("failed precondition",  Error::FailedPrecondition("x".into()), Write, Step::GiveUp,    false),
            ("already exists",       Error::AlreadyExists("x".into()),    Write, Step::GiveUp,      false),
            ("not found",            Error::NotFound("x".into()),         Read,  Step::GiveUp,      false),
            ("permission denied",    other(tonic::Code::PermissionDenied), Read, Step::GiveUp,      false),
            ("resource exhausted",   other(tonic::Code::ResourceExhausted), Write, Step::GiveUp,    false),
            ("internal",             other(tonic::Code::Internal),        Read,  Step::GiveUp,      false),
            ("internal",             other(tonic::Code::Internal),        Write, Step::GiveUp,      false),
        ];
        for (name, err, kind, want_step, want_refresh) in cases {
            let mut table = table(Routing::Auto);
            let (mut attempts, first) = Attempts::start(&mut table, Some(1), kind == Write, false, POLICY);
            assert_eq!(first, "b:1", "{name}: starts at the leader");
            let decision = attempts.after_error(&mut table, "b:1", &err, HALF);
            let want = Decision { step: want_step.clone(), refresh_map: want_refresh };
            assert_eq!(decision, want, "{name} ({kind:?})");
            // Giving up a write leaves its outcome unknown exactly when the error says so.
            if kind == Write && want_step == Step::GiveUp {
                let unknown = matches!(err, Error::Unavailable(_) | Error::DeadlineExceeded);
                assert_eq!(err.may_have_been_applied(), unknown, "{name}");
                assert!(!err.surely_not_applied(), "{name}");
            }
        }
    }

    /// What each error does to the routing table.
    #[test]
    fn errors_update_the_table() {
        let mut table = table(Routing::Auto);
        let (mut attempts, _) = Attempts::start(&mut table, Some(1), true, false, POLICY);
        attempts.after_error(&mut table, "b:1", &not_leader(1, Some("c:1")), HALF);
        assert_eq!(table.leader(1), Some("c:1"), "hint cached");
        attempts.after_error(&mut table, "c:1", &not_leader(1, None), HALF);
        assert_eq!(table.leader(1), None, "denial forgets the leader");

        table.note_leader(1, "a:1");
        table.note_leader(2, "a:1");
        table.record_success("a:1", None, false);
        let (mut reads, first) = Attempts::start(&mut table, Some(1), false, false, POLICY);
        assert_eq!(first, "a:1");
        reads.after_error(&mut table, "a:1", &Error::Unavailable("x".into()), HALF);
        assert_eq!((table.leader(1), table.leader(2), table.last_good()), (None, None, None));
    }

    /// The leader b:1 died: it refuses connections while a and c still name it
    /// until their election ends. The operation must not bounce back to b:1 on
    /// their hints; it polls the live replicas until one names a new leader.
    #[test]
    fn hints_naming_a_node_that_refused_are_not_followed() {
        let mut table = table(Routing::Auto);
        let (mut attempts, first) = Attempts::start(&mut table, Some(1), true, false, POLICY);
        assert_eq!(first, "b:1");
        let refused = Error::Transport("refused".into());
        let d = attempts.after_error(&mut table, "b:1", &refused, HALF);
        assert_eq!(d.step, retry("a:1", 10));
        let d = attempts.after_error(&mut table, "a:1", &not_leader(1, Some("b:1")), HALF);
        assert_eq!(d.step, retry("c:1", 20), "stale hint treated as no leader");
        assert_eq!(table.leader(1), None, "stale hint not cached");
        let d = attempts.after_error(&mut table, "c:1", &not_leader(1, Some("b:1")), HALF);
        // c:1 was the last live replica; the seeds come next, the dead node last.
        assert_eq!(d.step, retry("z:1", 40));
        let d = attempts.after_error(&mut table, "z:1", &not_leader(1, Some("b:1")), HALF);
        assert_eq!(d.step, retry("a:1", 80), "a new round starts with the live replicas");
        // The election is over: a names c, which is followed at once.
        let d = attempts.after_error(&mut table, "a:1", &not_leader(1, Some("c:1")), HALF);
        assert_eq!(d.step, retry("c:1", 0));
        assert_eq!(table.leader(1), Some("c:1"));
    }

    #[test]
    fn the_shard_is_learned_from_the_first_detail() {
        let mut table = table(Routing::Auto);
        let (mut attempts, first) = Attempts::start(&mut table, None, true, false, POLICY);
        assert_eq!((first.as_str(), attempts.shard()), ("a:1", None));
        // a:1 hosts no replica of shard 3 (c, d): the next try is among its replicas.
        let decision =
            attempts.after_error(&mut table, "a:1", &Error::WrongShard { shard: 3, epoch: 0 }, HALF);
        assert_eq!(decision.step, retry("d:1", 0));
        assert_eq!(attempts.shard(), Some(3));
    }

    #[test]
    fn auto_switches_to_direct_on_the_first_node_answer() {
        let mut table =
            crate::route_table::RouteTable::new(vec!["r:1".into(), "s:1".into()], Routing::Auto, None);
        table.install(
            crate::route_table::ClusterView::from_status(&crate::route_table::tests::status()).unwrap(),
        );
        assert!(!table.direct());
        let (mut attempts, first) = Attempts::start(&mut table, Some(1), true, false, POLICY);
        assert_eq!(first, "r:1");
        let decision = attempts.after_error(&mut table, "r:1", &not_leader(1, None), HALF);
        assert!(table.direct());
        assert_eq!(decision.step, retry("b:1", 10), "the map's leader of shard 1");
    }

    #[test]
    fn rounds_back_off_and_the_backoff_grows_to_its_cap() {
        let mut table = table(Routing::Auto);
        let (mut reads, _) = Attempts::start(&mut table, Some(1), false, false, POLICY);
        let err = Error::Unavailable("x".into());
        // Candidates for shard 1 once b:1 is forgotten: a, c, z (b: still a replica).
        let mut addr = "b:1".to_string();
        let mut steps = Vec::new();
        for _ in 0..8 {
            let Step::Retry { addr: next, after } = reads.after_error(&mut table, &addr, &err, 1.0).step
            else {
                panic!("a read gives up on unavailable");
            };
            steps.push((next.clone(), after.as_millis()));
            addr = next;
        }
        let want = [("a:1", 20), ("c:1", 40), ("z:1", 80), ("a:1", 160), ("b:1", 200), ("c:1", 200)];
        let got: Vec<_> = steps.iter().take(6).map(|(a, ms)| (a.as_str(), *ms)).collect();
        assert_eq!(got, want);
        assert_eq!(steps[7].1, 200, "capped");
    }

    #[test]
    fn jitter_scales_the_backoff() {
        for (jitter, want_ms) in [(0.0, 0), (0.25, 5), (0.999, 19), (7.0, 20), (-1.0, 0)] {
            let mut table = table(Routing::Auto);
            let (mut reads, _) = Attempts::start(&mut table, Some(1), false, false, POLICY);
            let step = reads.after_error(&mut table, "b:1", &Error::DeadlineExceeded, jitter).step;
            let Step::Retry { after, .. } = step else { panic!("gave up") };
            assert_eq!(after.as_millis(), want_ms, "jitter {jitter}");
        }
    }

    #[test]
    fn a_redirect_loop_backs_off() {
        let mut table = table(Routing::Auto);
        let (mut attempts, _) = Attempts::start(&mut table, Some(1), true, false, POLICY);
        let to_c = attempts.after_error(&mut table, "b:1", &not_leader(1, Some("c:1")), HALF);
        assert_eq!(to_c.step, retry("c:1", 0));
        let back_to_b = attempts.after_error(&mut table, "c:1", &not_leader(1, Some("b:1")), HALF);
        assert_eq!(back_to_b.step, retry("b:1", 10), "b:1 was tried this round");
        assert_eq!(table.leader(1), Some("b:1"));
    }

    #[test]
    fn wrong_shard_walks_the_round_then_backs_off() {
        let mut table = table(Routing::Auto);
        let (mut attempts, _) = Attempts::start(&mut table, Some(1), true, false, POLICY);
        let wrong = Error::WrongShard { shard: 1, epoch: 5 };
        let mut addr = "b:1".to_string();
        let mut got = Vec::new();
        for _ in 0..4 {
            let Step::Retry { addr: next, after } =
                attempts.after_error(&mut table, &addr, &wrong, HALF).step
            else {
                panic!("WrongShard is retried");
            };
            got.push((next.clone(), after.as_millis()));
            addr = next;
        }
        // b denies, so the leader cache drops it: a, c, z, then a new round.
        let got: Vec<_> = got.iter().map(|(a, ms)| (a.as_str(), *ms)).collect();
        assert_eq!(got, [("a:1", 0), ("c:1", 0), ("z:1", 0), ("a:1", 10)]);
    }

    #[test]
    fn stale_reads_start_at_successive_replicas_and_fall_back() {
        let mut table = table(Routing::Auto);
        let firsts: Vec<String> =
            (0..4).map(|_| Attempts::start(&mut table, Some(1), false, true, POLICY).1).collect();
        assert_eq!(firsts, ["a:1", "b:1", "c:1", "a:1"]);
        let (mut stale, first) = Attempts::start(&mut table, Some(1), false, true, POLICY);
        assert_eq!(first, "b:1");
        let step = stale.after_error(&mut table, "b:1", &Error::Transport("refused".into()), HALF).step;
        assert_eq!(step, retry("c:1", 10), "the next replica in rotation");
    }

    #[test]
    fn a_single_seed_without_a_map_retries_itself() {
        let mut table = crate::route_table::RouteTable::new(vec!["a:1".into()], Routing::Auto, None);
        let (mut reads, first) = Attempts::start(&mut table, None, false, false, POLICY);
        assert_eq!(first, "a:1");
        let step = reads.after_error(&mut table, "a:1", &Error::Unavailable("x".into()), HALF).step;
        assert_eq!(step, retry("a:1", 10));
    }

    #[test]
    fn meta_shard_wrong_shard_does_not_refresh() {
        let mut table = table(Routing::Auto);
        let (mut status, first) = Attempts::start(&mut table, Some(META_SHARD), false, false, POLICY);
        assert_eq!(first, "a:1", "the meta leader");
        let decision =
            status.after_error(&mut table, "a:1", &Error::WrongShard { shard: META_SHARD, epoch: 0 }, HALF);
        assert_eq!(decision, Decision { step: retry("b:1", 0), refresh_map: false });
        let decision = status.after_error(&mut table, "b:1", &not_leader(META_SHARD, Some("c:1")), HALF);
        assert_eq!(decision, Decision { step: retry("c:1", 0), refresh_map: false });
    }
}
