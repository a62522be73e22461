//! Routing decisions without I/O: where an operation's first attempt goes, and what
//! to do after an attempt fails. [`crate::Client`] owns the sockets, the clock and
//! the sleeps; everything it decides comes from here, so the policy is tested
//! without a runtime.
//!
//! Two pieces of state:
//! - [`Routes`], shared by all operations of a client: the seed addresses, the
//!   leader cache (shard → address) and the last address that answered.
//! - [`Attempts`], one per operation: which addresses it has tried, where "the next
//!   address" is, and the current backoff.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ringkv_core::ShardId;

use crate::error::Error;

/// How long to wait between two attempts to learn the shard count when the
/// cluster does not tell (e.g. `ClusterStatus` is refused).
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// What the client knows about where to send requests.
#[derive(Debug)]
pub(crate) struct Routes {
    /// The addresses the client was given, deduplicated, in order. Never empty.
    seeds: Vec<String>,
    /// Last known leader address per shard, from `NotLeader` answers, leader-
    /// confirmed successes and `ClusterStatus`. Entries are dropped when the address
    /// fails or denies leading the shard; at most one per shard.
    leaders: HashMap<ShardId, String>,
    /// The address that last answered a request successfully: where an operation
    /// whose shard leader is unknown goes first.
    last_good: Option<String>,
    /// The cluster's data shard count, needed to map a key to its shard. Unknown
    /// until configured or learned from `ClusterStatus`; until then the leader cache
    /// only serves redirects within one operation.
    shard_count: Option<u32>,
    /// When a background `ClusterStatus` may be tried again to learn the shard count.
    next_refresh_at: Option<Instant>,
}

impl Routes {
    /// `seeds` must be non-empty; duplicates are dropped.
    pub(crate) fn new(seeds: Vec<String>, shard_count: Option<u32>) -> Routes {
        assert!(!seeds.is_empty(), "a client needs at least one address");
        let mut seen = HashSet::new();
        let seeds = seeds.into_iter().filter(|addr| seen.insert(addr.clone())).collect();
        Routes {
            seeds,
            leaders: HashMap::new(),
            last_good: None,
            shard_count: shard_count.filter(|&n| n > 0),
            next_refresh_at: None,
        }
    }

    /// The key's shard, when the shard count is known.
    pub(crate) fn shard_of(&self, key: &[u8]) -> Option<ShardId> {
        self.shard_count.map(|n| ringkv_core::placement::shard_for_key(key, n))
    }

    /// Where the first attempt for `shard` goes: its cached leader, else the last
    /// address that answered, else the first seed.
    fn first_target(&self, shard: Option<ShardId>) -> String {
        shard
            .and_then(|shard| self.leaders.get(&shard))
            .or(self.last_good.as_ref())
            .unwrap_or(&self.seeds[0])
            .clone()
    }

    /// Records a successful answer from `addr`. `leader_confirmed` says whether
    /// the answer proves `addr` leads `shard` (a write or a linearizable read, not a
    /// stale read, which any replica may serve).
    pub(crate) fn record_success(&mut self, addr: &str, shard: Option<ShardId>, leader_confirmed: bool) {
        if self.last_good.as_deref() != Some(addr) {
            self.last_good = Some(addr.to_string());
        }
        if let (Some(shard), true) = (shard, leader_confirmed) {
            self.leaders.insert(shard, addr.to_string());
        }
    }

    /// Replaces the shard count and leaders with what `ClusterStatus` reported.
    pub(crate) fn record_cluster_status(
        &mut self,
        shard_count: u32,
        leaders: impl IntoIterator<Item = (ShardId, String)>,
    ) {
        if shard_count > 0 {
            self.shard_count = Some(shard_count);
        }
        self.leaders.extend(leaders);
    }

    /// Whether to start a background `ClusterStatus` now to learn the shard count;
    /// true at most once per [`REFRESH_INTERVAL`], and never once it is known.
    pub(crate) fn should_refresh(&mut self, now: Instant) -> bool {
        if self.shard_count.is_some() || self.next_refresh_at.is_some_and(|at| now < at) {
            return false;
        }
        self.next_refresh_at = Some(now + REFRESH_INTERVAL);
        true
    }

    /// Drops `shard`'s cached leader if it is `addr`.
    fn forget_leader(&mut self, shard: ShardId, addr: &str) {
        if self.leaders.get(&shard).is_some_and(|cached| cached == addr) {
            self.leaders.remove(&shard);
        }
    }

    /// Forgets everything that points at `addr`, after it failed to answer.
    fn forget_address(&mut self, addr: &str) {
        self.leaders.retain(|_, cached| cached != addr);
        if self.last_good.as_deref() == Some(addr) {
            self.last_good = None;
        }
    }

    #[cfg(test)]
    pub(crate) fn leader(&self, shard: ShardId) -> Option<&str> {
        self.leaders.get(&shard).map(String::as_str)
    }

    #[cfg(test)]
    pub(crate) fn last_good(&self) -> Option<&str> {
        self.last_good.as_deref()
    }
}

/// Exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send the request again to `addr`, after waiting `after` (may be zero).
    Retry { addr: String, after: Duration },
    /// Return the error to the caller.
    GiveUp,
}

/// The routing state of one operation.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Writes are retried only after errors that prove they were not applied.
    write: bool,
    /// Index into the seeds of the next address to fall back to.
    cursor: usize,
    /// Addresses this operation has sent to.
    tried: HashSet<String>,
    next_backoff: Duration,
    policy: BackoffPolicy,
}

impl Attempts {
    /// Starts an operation on `shard` (if known); returns it and the first address.
    pub(crate) fn start(
        routes: &Routes,
        shard: Option<ShardId>,
        write: bool,
        policy: BackoffPolicy,
    ) -> (Attempts, String) {
        let first = routes.first_target(shard);
        let cursor = routes.seeds.iter().position(|seed| *seed == first).map_or(0, |i| i + 1);
        let attempts = Attempts {
            write,
            cursor,
            tried: HashSet::from([first.clone()]),
            next_backoff: policy.initial,
            policy,
        };
        (attempts, first)
    }

    /// Decides what follows `err`, the answer of `addr`, and updates `routes` with
    /// what the error taught. The caller enforces the deadline and attempt count.
    pub(crate) fn after_error(&mut self, routes: &mut Routes, addr: &str, err: &Error) -> Step {
        if !err.is_retryable() || (self.write && !err.surely_not_applied()) {
            return Step::GiveUp;
        }
        let (next, after) = match err {
            // Follow a redirect at once, unless this operation has already been
            // at that address: then leadership is moving and hints are stale, so
            // back off before trusting the newest one.
            Error::NotLeader { shard, leader_addr: Some(leader), .. } if leader != addr => {
                routes.leaders.insert(*shard, leader.clone());
                let after = if self.tried.contains(leader) { self.backoff() } else { Duration::ZERO };
                (leader.clone(), after)
            }
            // No leader known: an election is under way; give it time.
            Error::NotLeader { shard, .. } => {
                routes.forget_leader(*shard, addr);
                (self.next_seed(routes, addr), self.backoff())
            }
            // This node has no replica; another may. Back off only once the
            // operation starts going round the seeds again.
            Error::WrongShard { shard, .. } => {
                routes.forget_leader(*shard, addr);
                let next = self.next_seed(routes, addr);
                let after = if self.tried.contains(&next) { self.backoff() } else { Duration::ZERO };
                (next, after)
            }
            // Unreachable, overloaded or without quorum: move on, and wait a little.
            _ => {
                routes.forget_address(addr);
                (self.next_seed(routes, addr), self.backoff())
            }
        };
        self.tried.insert(next.clone());
        Step::Retry { addr: next, after }
    }

    /// The next seed in round-robin order that is not `current` (unless it is the
    /// only one).
    fn next_seed(&mut self, routes: &Routes, current: &str) -> String {
        let seeds = &routes.seeds;
        for _ in 0..seeds.len() {
            let seed = &seeds[self.cursor % seeds.len()];
            self.cursor += 1;
            if seed != current {
                return seed.clone();
            }
        }
        current.to_string()
    }

    /// The current backoff; doubles the next one, up to the cap.
    fn backoff(&mut self) -> Duration {
        let backoff = self.next_backoff;
        self.next_backoff = (backoff * 2).min(self.policy.max);
        backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy =
        BackoffPolicy { initial: Duration::from_millis(20), max: Duration::from_millis(500) };

    fn routes() -> Routes {
        Routes::new(vec!["a:1".into(), "b:1".into(), "c:1".into(), "a:1".into()], None)
    }

    fn not_leader(shard: ShardId, addr: Option<&str>) -> Error {
        Error::NotLeader { shard, leader_id: addr.map(|_| 9), leader_addr: addr.map(Into::into) }
    }

    fn retry(addr: &str, after_ms: u64) -> Step {
        Step::Retry { addr: addr.into(), after: Duration::from_millis(after_ms) }
    }

    #[test]
    fn seeds_are_deduplicated() {
        assert_eq!(routes().seeds, vec!["a:1", "b:1", "c:1"]);
    }

    #[test]
    fn first_target_prefers_leader_then_last_good_then_first_seed() {
        let mut routes = routes();
        assert_eq!(routes.first_target(Some(4)), "a:1");
        routes.record_success("b:1", None, true);
        assert_eq!(routes.first_target(Some(4)), "b:1");
        assert_eq!(routes.first_target(None), "b:1");
        routes.record_success("c:1", Some(4), true);
        routes.record_success("a:1", Some(5), false); // a stale read: not a leader
        assert_eq!(routes.first_target(Some(4)), "c:1");
        assert_eq!(routes.first_target(Some(5)), "a:1"); // via last_good only
        assert_eq!(routes.leader(5), None);
    }

    #[test]
    fn redirect_is_followed_at_once_and_cached() {
        let mut routes = routes();
        let (mut attempts, first) = Attempts::start(&routes, None, true, POLICY);
        assert_eq!(first, "a:1");
        let step = attempts.after_error(&mut routes, "a:1", &not_leader(3, Some("z:9")));
        assert_eq!(step, retry("z:9", 0));
        assert_eq!(routes.leader(3), Some("z:9"));
        // z:9 redirects back to a:1, which this operation has tried: back off.
        let step = attempts.after_error(&mut routes, "z:9", &not_leader(3, Some("a:1")));
        assert_eq!(step, retry("a:1", 20));
        assert_eq!(routes.leader(3), Some("a:1"));
    }

    #[test]
    fn election_backs_off_and_moves_on_with_growing_backoff() {
        let mut routes = routes();
        routes.record_success("b:1", Some(3), true);
        let (mut attempts, first) = Attempts::start(&routes, Some(3), true, POLICY);
        assert_eq!(first, "b:1");
        let election = not_leader(3, None);
        assert_eq!(attempts.after_error(&mut routes, "b:1", &election), retry("c:1", 20));
        assert_eq!(routes.leader(3), None);
        assert_eq!(attempts.after_error(&mut routes, "c:1", &election), retry("a:1", 40));
        assert_eq!(attempts.after_error(&mut routes, "a:1", &election), retry("b:1", 80));
        let delays: Vec<_> = (0..5)
            .map(|_| match attempts.after_error(&mut routes, "b:1", &election) {
                Step::Retry { after, .. } => after.as_millis(),
                Step::GiveUp => panic!("gave up"),
            })
            .collect();
        assert_eq!(delays, vec![160, 320, 500, 500, 500]);
    }

    #[test]
    fn redirect_to_self_counts_as_no_leader() {
        let mut routes = routes();
        let (mut attempts, _) = Attempts::start(&routes, None, false, POLICY);
        let step = attempts.after_error(&mut routes, "a:1", &not_leader(3, Some("a:1")));
        assert_eq!(step, retry("b:1", 20));
    }

    #[test]
    fn wrong_shard_tries_untried_seeds_without_waiting() {
        let mut routes = routes();
        let (mut attempts, _) = Attempts::start(&routes, None, true, POLICY);
        let wrong = Error::WrongShard { shard: 2, epoch: 1 };
        assert_eq!(attempts.after_error(&mut routes, "a:1", &wrong), retry("b:1", 0));
        assert_eq!(attempts.after_error(&mut routes, "b:1", &wrong), retry("c:1", 0));
        assert_eq!(attempts.after_error(&mut routes, "c:1", &wrong), retry("a:1", 20));
    }

    #[test]
    fn writes_give_up_unless_surely_not_applied() {
        let mut routes = routes();
        let (mut writes, _) = Attempts::start(&routes, None, true, POLICY);
        for err in [Error::Unavailable("no quorum".into()), Error::DeadlineExceeded] {
            assert_eq!(writes.after_error(&mut routes, "a:1", &err), Step::GiveUp, "{err:?}");
        }
        let refused = Error::Transport("connection refused".into());
        assert_eq!(writes.after_error(&mut routes, "a:1", &refused), retry("b:1", 20));
    }

    #[test]
    fn reads_retry_unavailable_and_timeouts_and_forget_the_address() {
        let mut routes = routes();
        routes.record_success("a:1", Some(1), true);
        let (mut reads, first) = Attempts::start(&routes, Some(1), false, POLICY);
        assert_eq!(first, "a:1");
        let err = Error::Unavailable("no quorum".into());
        assert_eq!(reads.after_error(&mut routes, "a:1", &err), retry("b:1", 20));
        assert_eq!((routes.leader(1), routes.last_good()), (None, None));
        let step = reads.after_error(&mut routes, "b:1", &Error::DeadlineExceeded);
        assert_eq!(step, retry("c:1", 40));
    }

    #[test]
    fn permanent_errors_give_up() {
        let mut routes = routes();
        let (mut reads, _) = Attempts::start(&routes, None, false, POLICY);
        for err in [
            Error::InvalidArgument("x".into()),
            Error::FailedPrecondition("x".into()),
            Error::AlreadyExists("x".into()),
            Error::Other { code: tonic::Code::PermissionDenied, message: "x".into() },
        ] {
            assert_eq!(reads.after_error(&mut routes, "a:1", &err), Step::GiveUp, "{err:?}");
        }
    }

    #[test]
    fn single_seed_retries_itself() {
        let mut routes = Routes::new(vec!["a:1".into()], None);
        let (mut reads, _) = Attempts::start(&routes, None, false, POLICY);
        let err = Error::Unavailable("x".into());
        assert_eq!(reads.after_error(&mut routes, "a:1", &err), retry("a:1", 20));
    }

    #[test]
    fn cluster_status_refresh_is_rate_limited_and_stops_once_known() {
        let mut routes = routes();
        let now = Instant::now();
        assert!(routes.should_refresh(now));
        assert!(!routes.should_refresh(now + Duration::from_secs(1)));
        assert!(routes.should_refresh(now + REFRESH_INTERVAL));
        routes.record_cluster_status(32, [(1, "c:1".to_string())]);
        assert!(!routes.should_refresh(now + REFRESH_INTERVAL * 5));
        assert_eq!(routes.shard_count, Some(32));
        assert_eq!(routes.first_target(Some(1)), "c:1");
    }
}
