//! The client's picture of the cluster, as plain data: the seed addresses, the
//! cluster map it last fetched (epoch, shard count, node addresses, each shard's
//! replicas), a leader cache, and from these the order in which an operation tries
//! addresses. No I/O and no clock of its own (callers pass `now`), so it is tested
//! without a runtime.
//!
//! Invariants:
//! - `seeds` is never empty, so every attempt order has at least one address.
//! - The installed map's epoch never goes down: an answer from a deposed meta
//!   leader cannot roll the table back.
//! - A cached leader is a hint, never a promise: it is dropped when its address
//!   fails or denies leading, and replaced by the next `NotLeader` hint or map.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ringkv_core::{Epoch, NodeId, ShardId, placement};
use ringkv_proto::v1::ClusterStatusResponse;

use crate::client::Routing;
use crate::error::Error;

/// Least time between two map refreshes that the client starts by itself (on
/// `WrongShard`, an unknown leader hint, or no map yet). Explicit refreshes are
/// not limited, only coalesced.
pub(crate) const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A cluster map as `ClusterStatus` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterView {
    pub(crate) epoch: Epoch,
    /// Data shards are `1..=shard_count`; never 0.
    pub(crate) shard_count: u32,
    /// Every node's client address (nodes without one are left out).
    pub(crate) nodes: HashMap<NodeId, String>,
    /// Each shard's replicas (meta shard included), in the map's order.
    pub(crate) replicas: HashMap<ShardId, Vec<NodeId>>,
    /// Each shard's leader when the status knew one.
    pub(crate) leaders: HashMap<ShardId, NodeId>,
}

impl ClusterView {
    /// The routing part of a `ClusterStatus` answer. A map without shards cannot
    /// route a key, so it is refused (a node answers that way only when broken).
    pub(crate) fn from_status(status: &ClusterStatusResponse) -> Result<ClusterView, Error> {
        if status.shards == 0 {
            return Err(Error::Unavailable(format!(
                "cluster map at epoch {} has no data shards",
                status.epoch
            )));
        }
        let nodes = status
            .nodes
            .iter()
            .filter(|node| node.id != 0 && !node.addr.is_empty())
            .map(|node| (node.id, node.addr.clone()))
            .collect();
        let replicas = status.shard_status.iter().map(|s| (s.shard, s.replicas.clone())).collect();
        let leaders =
            status.shard_status.iter().filter(|s| s.leader_id != 0).map(|s| (s.shard, s.leader_id)).collect();
        Ok(ClusterView { epoch: status.epoch, shard_count: status.shards, nodes, replicas, leaders })
    }

    /// The addresses of `shard`'s replicas that the map can resolve.
    fn replica_addrs(&self, shard: ShardId) -> Vec<&str> {
        let ids = self.replicas.get(&shard).map(Vec::as_slice).unwrap_or_default();
        ids.iter().filter_map(|id| self.nodes.get(id).map(String::as_str)).collect()
    }

    fn has_addr(&self, addr: &str) -> bool {
        self.nodes.values().any(|known| known == addr)
    }
}

/// Which replica an operation wants first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefer {
    /// The leader (writes, linearizable reads, the meta shard's `ClusterStatus`).
    Leader,
    /// Any replica, starting at this rotation of the replica list (stale reads:
    /// successive reads start at successive replicas, spreading the load).
    Replica(usize),
}

/// Where requests go; shared by all operations of a client.
#[derive(Debug)]
pub(crate) struct RouteTable {
    /// The addresses the client was given, deduplicated, in order. Never empty.
    seeds: Vec<String>,
    routing: Routing,
    /// Whether the seeds have shown themselves to be nodes (listed in the map, or
    /// answered `NotLeader`/`WrongShard`, which routers never send). Decides
    /// [`Routing::Auto`].
    seeds_are_nodes: bool,
    /// The newest map fetched; `None` until the first successful fetch.
    map: Option<ClusterView>,
    /// Bumped on every install, so that a refresh that waited for another one
    /// can tell it has happened.
    generation: u64,
    /// From the map, else from [`crate::ClientOptions::shard_count`].
    shard_count: Option<u32>,
    /// Last known leader address per shard, from the map, `NotLeader` hints and
    /// leader-confirmed successes; at most one per shard.
    leaders: HashMap<ShardId, String>,
    /// The address that last answered: first choice while no map routes the key.
    last_good: Option<String>,
    /// Rotation of the next stale read's replica list.
    next_replica: usize,
    /// Earliest time the client may start another refresh by itself.
    next_refresh_at: Option<Instant>,
}

impl RouteTable {
    /// `seeds` must be non-empty; duplicates are dropped.
    pub(crate) fn new(seeds: Vec<String>, routing: Routing, shard_count: Option<u32>) -> RouteTable {
        assert!(!seeds.is_empty(), "a client needs at least one address");
        let mut seen = HashSet::new();
        let seeds = seeds.into_iter().filter(|addr| seen.insert(addr.clone())).collect();
        RouteTable {
            seeds,
            routing,
            seeds_are_nodes: false,
            map: None,
            generation: 0,
            shard_count: shard_count.filter(|&n| n > 0),
            leaders: HashMap::new(),
            last_good: None,
            next_replica: 0,
            next_refresh_at: None,
        }
    }

    /// The installed map's epoch.
    pub(crate) fn epoch(&self) -> Option<Epoch> {
        self.map.as_ref().map(|map| map.epoch)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The data shard count, when known.
    pub(crate) fn shard_count(&self) -> Option<u32> {
        self.shard_count
    }

    /// The key's shard, when the shard count is known.
    pub(crate) fn shard_of(&self, key: &[u8]) -> Option<ShardId> {
        self.shard_count.map(|n| placement::shard_for_key(key, n))
    }

    /// Whether requests go straight to nodes by the map (else to the seeds).
    pub(crate) fn direct(&self) -> bool {
        match self.routing {
            Routing::Direct => true,
            Routing::ViaSeeds => false,
            Routing::Auto => self.seeds_are_nodes,
        }
    }

    /// Whether routing needs a map it does not have yet.
    pub(crate) fn needs_map(&self) -> bool {
        self.map.is_none() && self.routing != Routing::ViaSeeds
    }

    /// Whether a `WrongShard` from a node whose map is at `epoch` says ours is
    /// out of date: the node's is newer, or it did not say (0).
    pub(crate) fn is_stale(&self, epoch: Epoch) -> bool {
        epoch == 0 || self.epoch().is_none_or(|ours| epoch > ours)
    }

    /// Whether the map knows a node at `addr`.
    pub(crate) fn knows_addr(&self, addr: &str) -> bool {
        self.map.as_ref().is_some_and(|map| map.has_addr(addr))
    }

    /// The rotation for the next stale read; successive calls go round.
    pub(crate) fn next_replica_rotation(&mut self) -> usize {
        let rotation = self.next_replica;
        self.next_replica = self.next_replica.wrapping_add(1);
        rotation
    }

    /// The addresses an operation on `shard` tries, best first, without
    /// duplicates and never empty:
    ///
    /// - routing directly with a map and a known shard: the cached leader, then
    ///   the shard's other replicas in map order (for [`Prefer::Replica`]: the
    ///   replicas rotated, then the leader if not among them), then the seeds;
    /// - routing directly without a map that routes the key: the shard's cached
    ///   leader (from a `NotLeader` hint), the last address that answered, then
    ///   the seeds;
    /// - routing via the seeds: the seed that answered last, then the others.
    ///
    /// Seeds come last in both: when they are routers they answer for every
    /// shard, and when they are nodes they redirect.
    pub(crate) fn candidates(&self, shard: Option<ShardId>, prefer: Prefer) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |addr: &str| {
            if !out.iter().any(|have| have == addr) {
                out.push(addr.to_string());
            }
        };
        let leader = shard.and_then(|shard| self.leaders.get(&shard)).map(String::as_str);
        match (self.direct(), shard, &self.map) {
            (true, Some(shard), Some(map)) => {
                let replicas = map.replica_addrs(shard);
                match prefer {
                    Prefer::Leader => {
                        leader.into_iter().for_each(&mut push);
                        replicas.into_iter().for_each(&mut push);
                    }
                    Prefer::Replica(rotation) => {
                        let start = if replicas.is_empty() { 0 } else { rotation % replicas.len() };
                        replicas[start..].iter().chain(&replicas[..start]).for_each(|addr| push(addr));
                        leader.into_iter().for_each(&mut push);
                    }
                }
            }
            // Direct, but the map cannot route this key (yet): hints, then whoever
            // answered last.
            (true, _, _) => {
                leader.into_iter().for_each(&mut push);
                self.last_good.as_deref().into_iter().for_each(&mut push);
            }
            // Via the seeds: the cached leaders are node addresses the caller may
            // not be able to reach, so only the seed that answered last goes first.
            (false, _, _) => self.last_good.as_deref().into_iter().for_each(&mut push),
        }
        self.seeds.iter().for_each(|seed| push(seed));
        out
    }

    /// Installs `view` unless it is older than the installed map; returns the
    /// epoch now known. A map at the same epoch is installed too: it carries
    /// fresher leaders.
    pub(crate) fn install(&mut self, view: ClusterView) -> Epoch {
        if let Some(current) = self.epoch().filter(|&current| view.epoch < current) {
            return current;
        }
        // Keep a hinted leader only while the new map still lists it for its shard.
        self.leaders.retain(|shard, addr| view.replica_addrs(*shard).contains(&addr.as_str()));
        for (shard, id) in &view.leaders {
            if let Some(addr) = view.nodes.get(id) {
                self.leaders.insert(*shard, addr.clone());
            }
        }
        if self.seeds.iter().any(|seed| view.has_addr(seed)) {
            self.seeds_are_nodes = true;
        }
        self.shard_count = Some(view.shard_count);
        self.generation += 1;
        let epoch = view.epoch;
        self.map = Some(view);
        epoch
    }

    /// Records a success from `addr`. `leader_confirmed` says whether the answer
    /// proves `addr` leads `shard` (a write or a linearizable read; not a stale
    /// read, which any replica may serve); it proves nothing when `addr` may be a
    /// router, so only direct routing caches it.
    pub(crate) fn record_success(&mut self, addr: &str, shard: Option<ShardId>, leader_confirmed: bool) {
        if self.last_good.as_deref() != Some(addr) {
            self.last_good = Some(addr.to_string());
        }
        if let (Some(shard), true, true) = (shard, leader_confirmed, self.direct()) {
            self.note_leader(shard, addr);
        }
    }

    pub(crate) fn note_leader(&mut self, shard: ShardId, addr: &str) {
        if self.leaders.get(&shard).is_none_or(|cached| cached != addr) {
            self.leaders.insert(shard, addr.to_string());
        }
    }

    /// Records that a node (not a router) answered: only nodes send `NotLeader`
    /// and `WrongShard`, so the seeds that led here are nodes.
    pub(crate) fn note_node_answer(&mut self) {
        self.seeds_are_nodes = true;
    }

    /// Drops `shard`'s cached leader if it is `addr`.
    pub(crate) fn forget_leader(&mut self, shard: ShardId, addr: &str) {
        if self.leaders.get(&shard).is_some_and(|cached| cached == addr) {
            self.leaders.remove(&shard);
        }
    }

    /// Forgets everything that points at `addr`, after it failed to answer.
    pub(crate) fn forget_address(&mut self, addr: &str) {
        self.leaders.retain(|_, cached| cached != addr);
        if self.last_good.as_deref() == Some(addr) {
            self.last_good = None;
        }
    }

    /// Whether to start a refresh of the map in the background now; true at most
    /// once per [`MIN_REFRESH_INTERVAL`], and never when routing via the seeds
    /// (which need no map).
    pub(crate) fn start_background_refresh(&mut self, now: Instant) -> bool {
        if self.routing == Routing::ViaSeeds || self.next_refresh_at.is_some_and(|at| now < at) {
            return false;
        }
        self.next_refresh_at = Some(now + MIN_REFRESH_INTERVAL);
        true
    }

    /// Every address the table may still send to: the channels worth keeping.
    pub(crate) fn addresses(&self) -> HashSet<&str> {
        let mut addrs: HashSet<&str> = self.seeds.iter().map(String::as_str).collect();
        addrs.extend(self.leaders.values().map(String::as_str));
        addrs.extend(self.last_good.as_deref());
        if let Some(map) = &self.map {
            addrs.extend(map.nodes.values().map(String::as_str));
        }
        addrs
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

#[cfg(test)]
pub(crate) mod tests {
    use ringkv_proto::v1::{NodeAddress, ShardStatus};

    use super::*;

    fn node(id: NodeId, addr: &str) -> NodeAddress {
        NodeAddress { id, addr: addr.into(), state: "active".into() }
    }

    fn shard(shard: ShardId, replicas: &[NodeId], leader_id: NodeId) -> ShardStatus {
        ShardStatus { shard, replicas: replicas.to_vec(), leader_id, ..Default::default() }
    }

    /// Epoch 5, 4 data shards, nodes 1–4 at a:1…d:1. Meta on 1,2,3 led by 1;
    /// shard 1 on 1,2,3 led by 2; shard 2 on 2,3,4 without a leader; shard 3 on
    /// 3,4,9 (node 9 has no address) led by 4; shard 4 missing from the status.
    pub(crate) fn status() -> ClusterStatusResponse {
        ClusterStatusResponse {
            cluster_id: "c".into(),
            epoch: 5,
            shards: 4,
            replicas: 3,
            nodes: vec![node(1, "a:1"), node(2, "b:1"), node(3, "c:1"), node(4, "d:1"), node(9, "")],
            shard_status: vec![
                shard(0, &[1, 2, 3], 1),
                shard(1, &[1, 2, 3], 2),
                shard(2, &[2, 3, 4], 0),
                shard(3, &[3, 4, 9], 4),
            ],
            rebalance: None,
        }
    }

    fn view() -> ClusterView {
        ClusterView::from_status(&status()).expect("valid status")
    }

    /// A table on node seeds a:1 and z:1 (z is not in the map) with [`status`].
    pub(crate) fn table(routing: Routing) -> RouteTable {
        let mut table = RouteTable::new(vec!["a:1".into(), "z:1".into(), "a:1".into()], routing, None);
        table.install(view());
        table
    }

    #[test]
    fn view_from_status() {
        let view = view();
        assert_eq!((view.epoch, view.shard_count), (5, 4));
        assert_eq!(view.nodes.len(), 4, "node 9 has no address");
        assert_eq!(view.nodes[&3], "c:1");
        assert_eq!(view.replicas[&2], vec![2, 3, 4]);
        assert_eq!(view.replicas[&0], vec![1, 2, 3]);
        assert_eq!(view.leaders, HashMap::from([(0, 1), (1, 2), (3, 4)]));
        assert_eq!(view.replica_addrs(3), vec!["c:1", "d:1"]);
        assert_eq!(view.replica_addrs(4), Vec::<&str>::new());
    }

    #[test]
    fn a_map_without_shards_is_refused() {
        let status = ClusterStatusResponse { shards: 0, ..status() };
        assert!(matches!(ClusterView::from_status(&status), Err(Error::Unavailable(_))));
    }

    #[test]
    fn install_sets_leaders_shard_count_and_generation() {
        let table = table(Routing::Auto);
        assert_eq!(table.epoch(), Some(5));
        assert_eq!(table.generation(), 1);
        assert_eq!(table.shard_of(b"k"), Some(placement::shard_for_key(b"k", 4)));
        assert_eq!((table.leader(0), table.leader(1), table.leader(2)), (Some("a:1"), Some("b:1"), None));
        assert_eq!(table.leader(3), Some("d:1"));
        assert!(table.direct(), "seed a:1 is node 1");
    }

    #[test]
    fn leader_first_then_replicas_then_seeds() {
        let table = table(Routing::Auto);
        assert_eq!(table.candidates(Some(1), Prefer::Leader), ["b:1", "a:1", "c:1", "z:1"]);
        assert_eq!(table.candidates(Some(2), Prefer::Leader), ["b:1", "c:1", "d:1", "a:1", "z:1"]);
        assert_eq!(table.candidates(Some(0), Prefer::Leader), ["a:1", "b:1", "c:1", "z:1"]);
        // Unknown shard, or shard not in the map: the seeds (after last_good).
        assert_eq!(table.candidates(None, Prefer::Leader), ["a:1", "z:1"]);
        assert_eq!(table.candidates(Some(4), Prefer::Leader), ["a:1", "z:1"]);
    }

    #[test]
    fn a_hinted_leader_outside_the_map_goes_first() {
        let mut table = table(Routing::Auto);
        table.note_leader(2, "n:1");
        assert_eq!(table.candidates(Some(2), Prefer::Leader), ["n:1", "b:1", "c:1", "d:1", "a:1", "z:1"]);
    }

    #[test]
    fn stale_reads_rotate_over_replicas() {
        let mut table = table(Routing::Auto);
        let firsts: Vec<String> = (0..6)
            .map(|_| {
                let rotation = table.next_replica_rotation();
                table.candidates(Some(1), Prefer::Replica(rotation)).remove(0)
            })
            .collect();
        assert_eq!(firsts, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
        assert_eq!(table.candidates(Some(1), Prefer::Replica(2)), ["c:1", "a:1", "b:1", "z:1"]);
        // A hinted leader that is not a listed replica still gets tried, after them.
        table.note_leader(3, "n:1");
        assert_eq!(table.candidates(Some(3), Prefer::Replica(1)), ["d:1", "c:1", "n:1", "a:1", "z:1"]);
    }

    #[test]
    fn router_seeds_get_everything_in_auto_mode() {
        let mut table = RouteTable::new(vec!["r1:1".into(), "r2:1".into()], Routing::Auto, None);
        table.install(view());
        assert!(!table.direct(), "no seed is a node of the map");
        assert_eq!(table.candidates(Some(1), Prefer::Leader), ["r1:1", "r2:1"]);
        table.record_success("r2:1", Some(1), true);
        assert_eq!(table.candidates(Some(2), Prefer::Replica(1)), ["r2:1", "r1:1"]);
        // A NotLeader or WrongShard answer proves the seeds are nodes after all.
        table.note_node_answer();
        assert!(table.direct());
        assert_eq!(table.candidates(Some(2), Prefer::Leader), ["b:1", "c:1", "d:1", "r1:1", "r2:1"]);
    }

    #[test]
    fn forced_modes() {
        let table = table(Routing::ViaSeeds);
        assert!(!table.direct() && !table.needs_map());
        assert_eq!(table.candidates(Some(1), Prefer::Leader), ["a:1", "z:1"], "never a node of the map");
        let mut direct = RouteTable::new(vec!["r:1".into()], Routing::Direct, None);
        assert!(direct.direct() && direct.needs_map());
        assert_eq!(direct.candidates(Some(1), Prefer::Leader), ["r:1"], "no map yet: the seeds");
        direct.install(view());
        assert_eq!(direct.candidates(Some(1), Prefer::Leader), ["b:1", "a:1", "c:1", "r:1"]);
    }

    #[test]
    fn without_a_map_leader_then_last_good_then_seeds() {
        let mut table =
            RouteTable::new(vec!["a:1".into(), "b:1".into(), "c:1".into()], Routing::Direct, Some(8));
        assert!(table.needs_map());
        assert_eq!(table.shard_of(b"k"), Some(placement::shard_for_key(b"k", 8)));
        assert_eq!(table.candidates(Some(4), Prefer::Leader), ["a:1", "b:1", "c:1"]);
        table.record_success("c:1", None, true);
        assert_eq!(table.candidates(Some(4), Prefer::Leader), ["c:1", "a:1", "b:1"]);
        table.note_leader(4, "x:1");
        assert_eq!(table.candidates(Some(4), Prefer::Leader), ["x:1", "c:1", "a:1", "b:1"]);
        table.forget_address("c:1");
        table.forget_leader(4, "x:1");
        assert_eq!(table.candidates(Some(4), Prefer::Leader), ["a:1", "b:1", "c:1"]);
    }

    #[test]
    fn older_maps_are_not_installed_and_newer_ones_replace_leaders() {
        let mut table = table(Routing::Auto);
        let older = ClusterView { epoch: 4, ..view() };
        assert_eq!(table.install(older), 5);
        assert_eq!(table.generation(), 1);

        table.note_leader(2, "c:1"); // a hint, still a replica in the next map
        table.note_leader(1, "c:1"); // a hint the next map contradicts (shard 1 moved off c)
        let mut newer = view();
        newer.epoch = 6;
        newer.replicas.insert(1, vec![1, 2, 4]);
        newer.leaders.remove(&1);
        assert_eq!(table.install(newer), 6);
        assert_eq!(table.generation(), 2);
        assert_eq!((table.leader(1), table.leader(2)), (None, Some("c:1")));
        assert_eq!(table.candidates(Some(1), Prefer::Leader), ["a:1", "b:1", "d:1", "z:1"]);
    }

    #[test]
    fn staleness_of_a_wrong_shard_epoch() {
        let table = table(Routing::Auto);
        assert!(table.is_stale(0), "a node that does not say: refresh");
        assert!(!table.is_stale(4) && !table.is_stale(5));
        assert!(table.is_stale(6));
        assert!(RouteTable::new(vec!["a:1".into()], Routing::Auto, None).is_stale(1));
    }

    #[test]
    fn background_refreshes_are_rate_limited() {
        let mut table = table(Routing::Auto);
        let now = Instant::now();
        assert!(table.start_background_refresh(now));
        assert!(!table.start_background_refresh(now + MIN_REFRESH_INTERVAL / 2));
        assert!(table.start_background_refresh(now + MIN_REFRESH_INTERVAL));
        assert!(!table.start_background_refresh(now + MIN_REFRESH_INTERVAL));
        let mut via_seeds = RouteTable::new(vec!["r:1".into()], Routing::ViaSeeds, None);
        assert!(!via_seeds.start_background_refresh(now));
    }

    #[test]
    fn addresses_in_use() {
        let mut table = table(Routing::Auto);
        table.note_leader(2, "n:1");
        let mut addrs: Vec<_> = table.addresses().into_iter().collect();
        addrs.sort();
        assert_eq!(addrs, ["a:1", "b:1", "c:1", "d:1", "n:1", "z:1"]);
    }
}
