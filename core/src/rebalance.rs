//! # Rebalancing: from the cluster map to a plan of moves (DESIGN §5)
//!
//! Pure functions and the plan's types. [`plan`] diffs where replicas are (the
//! cluster map) against where the ring wants them ([`placement::place_all`] over
//! the nodes that take replicas) and returns the moves that close the gap, each
//! with the reason an operator reads in `ringkv admin rebalance --dry-run`. The
//! meta shard stores the committed [`Plan`]; the placement driver on the meta
//! leader executes it move by move and records each step in it, so a new meta
//! leader resumes where the old one stopped.
//!
//! ## A move
//! A [`Move`] replaces one replica of one shard: `from` leaves, `to` joins (one
//! of them may be absent when a shard has too few or too many replicas). The
//! driver runs it as create replica on `to` → add `to` as learner → change
//! membership (joint consensus, inside openraft) → update the map → stop and
//! delete the replica on `from`; [`MoveStep`] records how far it got.
//!
//! ## Invariants
//! - A plan never asks a shard to lose a replica it does not gain back, unless
//!   the shard has more than its target: every shard keeps `R` members
//!   throughout (`R + 1` during a move).
//! - Moves are listed shard by shard; within a shard, removals of draining
//!   nodes pair with additions first, so a drain never needs the ring's help.
//! - The meta shard moves like any other; its target size is
//!   `min(meta_replicas, nodes taking replicas)`.
//!
//! ## Caveats / not done yet
//! - One move per shard at a time (openraft allows one membership change in
//!   flight per group); the driver enforces it, the plan does not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster_map::{ClusterMap, NodeState};
use crate::ids::{Epoch, META_SHARD, NodeId, ShardId};
use crate::placement::{self, PlacementNode};

/// Why a replica moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveReason {
    /// `to` joined and the ring gives it this replica.
    Joined(NodeId),
    /// `from` is draining.
    Draining(NodeId),
    /// The shard has fewer replicas than it should (a node was removed).
    UnderReplicated,
    /// The shard has more replicas than it should.
    OverReplicated,
    /// The ring places the replica elsewhere (after earlier changes).
    Placement,
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveReason::Joined(node) => write!(f, "node {node} joined"),
            MoveReason::Draining(node) => write!(f, "node {node} is draining"),
            MoveReason::UnderReplicated => write!(f, "shard under-replicated"),
            MoveReason::OverReplicated => write!(f, "shard over-replicated"),
            MoveReason::Placement => write!(f, "ring placement"),
        }
    }
}

/// How far a move got; each step is recorded before the next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MoveStep {
    /// Nothing done yet.
    Pending,
    /// The replica exists on `to` and is a learner, caught up.
    LearnerAdded,
    /// The shard's membership is the new one and the map says so.
    MembershipChanged,
    /// `from`'s replica is stopped and deleted: the move is over.
    Done,
}

/// One replica move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub shard: ShardId,
    /// The member that leaves (`None`: the shard only gains `to`).
    pub from: Option<NodeId>,
    /// The node that joins (`None`: the shard only loses `from`).
    pub to: Option<NodeId>,
    pub reason: MoveReason,
    pub step: MoveStep,
    /// Failed attempts so far, and the last error (the driver retries).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Approximate bytes copied to `to` (the shard's state size when it joined).
    pub bytes: u64,
}

impl Move {
    fn new(shard: ShardId, from: Option<NodeId>, to: Option<NodeId>, reason: MoveReason) -> Move {
        Move { shard, from, to, reason, step: MoveStep::Pending, attempts: 0, last_error: None, bytes: 0 }
    }

    /// The nodes this move loads (copying to, deleting from).
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.from.into_iter().chain(self.to)
    }
}

/// What the driver does with a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanState {
    Running,
    /// Moves stop where they are (at a step boundary or mid-step: every step
    /// is safe to re-run) and continue from their last recorded step on resume.
    Paused,
    /// Stopped by the operator: moves stop where they are, and what unfinished
    /// moves may have left behind (a replica on the target, an old replica
    /// already out of its group) goes on the cleanup list.
    Aborted,
    /// Every move is done.
    Done,
}

impl fmt::Display for PlanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanState::Running => "running",
            PlanState::Paused => "paused",
            PlanState::Aborted => "aborted",
            PlanState::Done => "done",
        })
    }
}

/// Bounds on moves in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLimits {
    /// Across the cluster.
    pub max_in_flight: u32,
    /// Per node (as source or target).
    pub max_per_node: u32,
}

impl Default for MoveLimits {
    fn default() -> Self {
        MoveLimits { max_in_flight: 4, max_per_node: 2 }
    }
}

/// A committed plan, stored in the meta shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Bumped by every update; updates name the revision they start from.
    pub revision: u64,
    /// The map epoch the plan was computed against.
    pub base_epoch: Epoch,
    pub state: PlanState,
    pub limits: MoveLimits,
    pub moves: Vec<Move>,
    /// Wall clock (Unix ms) of the commit, for the ETA.
    pub started_ms: u64,
    /// Balance leaders once every move is done.
    pub balance_leaders: bool,
    /// Replicas to delete when their node answers: old replicas whose node was
    /// down when their move finished, and what an abort left behind. Carried
    /// into later plans; the driver deletes one only once the shard's leader
    /// confirms it is no voter (dropping it as a learner first).
    pub cleanup: Vec<Cleanup>,
}

/// A replica to delete later (its node's address is kept: the node may have
/// left the map by the time it comes back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    pub shard: ShardId,
    pub node: NodeId,
    pub addr: String,
}

/// Progress counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub in_flight: usize,
    pub left: usize,
    pub bytes_copied: u64,
}

impl Plan {
    /// A plan over `moves`, computed against `base_epoch`. Running even when
    /// empty: the driver then balances leaders and marks it done.
    pub fn new(base_epoch: Epoch, moves: Vec<Move>, limits: MoveLimits, started_ms: u64) -> Plan {
        let state = PlanState::Running;
        Plan {
            revision: 1,
            base_epoch,
            state,
            limits,
            moves,
            started_ms,
            balance_leaders: true,
            cleanup: Vec::new(),
        }
    }

    pub fn progress(&self) -> Progress {
        let mut p = Progress::default();
        for m in &self.moves {
            match m.step {
                MoveStep::Done => p.done += 1,
                MoveStep::Pending => p.left += 1,
                _ => p.in_flight += 1,
            }
            p.bytes_copied += m.bytes;
        }
        p
    }

    /// Whether the plan still has work that could run.
    pub fn is_active(&self) -> bool {
        matches!(self.state, PlanState::Running | PlanState::Paused)
    }

    /// Adds a replica to delete later (once).
    pub fn defer_cleanup(&mut self, shard: ShardId, node: NodeId, addr: &str) {
        if !self.cleanup.iter().any(|c| c.shard == shard && c.node == node) {
            self.cleanup.push(Cleanup { shard, node, addr: addr.to_string() });
        }
    }

    /// Stops the plan, turning what its unfinished moves may have left behind
    /// into cleanups: a replica created or added as learner on `to` (not yet a
    /// voter), or an old replica already out of its group. `addr` gives node
    /// addresses.
    pub fn abort(&mut self, addr: impl Fn(NodeId) -> Option<String>) {
        self.state = PlanState::Aborted;
        let unfinished: Vec<Move> = self.moves.iter().filter(|m| m.step != MoveStep::Done).cloned().collect();
        for m in unfinished {
            let leftover = match m.step {
                MoveStep::MembershipChanged => m.from,
                _ => m.to,
            };
            if let Some((node, addr)) = leftover.and_then(|n| addr(n).map(|a| (n, a))) {
                self.defer_cleanup(m.shard, node, &addr);
            }
        }
    }

    /// Takes over the replicas an earlier plan left to delete, except those
    /// this plan moves back in (a move to that node and shard): deleting one
    /// of those while the move adds it as a learner would leave the shard's
    /// next membership naming a node that holds no replica.
    pub fn inherit_cleanup(&mut self, left: &[Cleanup]) {
        let wanted = |c: &Cleanup| self.wants(c.shard, c.node);
        let kept: Vec<Cleanup> = left.iter().filter(|c| !wanted(c)).cloned().collect();
        self.cleanup = kept;
    }

    /// Whether a move of this plan not done yet brings `node` into `shard`.
    pub fn wants(&self, shard: ShardId, node: NodeId) -> bool {
        self.moves.iter().any(|m| m.step != MoveStep::Done && m.shard == shard && m.to == Some(node))
    }

    /// Whether the plan names `node` in a move not done yet, or still has a
    /// replica of it to delete.
    pub fn involves(&self, node: NodeId) -> bool {
        self.cleanup.iter().any(|c| c.node == node)
            || (self.is_active()
                && self.moves.iter().any(|m| m.step != MoveStep::Done && m.nodes().any(|n| n == node)))
    }
}

/// Replica and leader counts per node, before and after a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTotals {
    pub node: NodeId,
    pub replicas_before: usize,
    pub replicas_after: usize,
}

/// The nodes that take replicas: every node of the map not draining.
pub fn eligible_nodes(map: &ClusterMap) -> Vec<PlacementNode> {
    map.nodes
        .values()
        .filter(|n| n.state != NodeState::Draining)
        .map(|n| PlacementNode::active(n.id))
        .collect()
}

/// Where the ring wants every shard's replicas, given the map's nodes.
pub fn desired_placement(map: &ClusterMap, meta_replicas: usize) -> BTreeMap<ShardId, Vec<NodeId>> {
    placement::place_all(
        &eligible_nodes(map),
        map.shard_count,
        map.replication_factor as usize,
        meta_replicas,
    )
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Fewer nodes take replicas than a shard needs.
    TooFewNodes { eligible: usize, replicas: u32 },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::TooFewNodes { eligible, replicas } => write!(
                f,
                "{eligible} node(s) would take replicas, but every shard needs {replicas}: add nodes or \
                 stop draining before rebalancing"
            ),
        }
    }
}

/// The moves that take the map's placement to the ring's desired placement.
pub fn plan(map: &ClusterMap, meta_replicas: usize) -> Result<Vec<Move>, PlanError> {
    let eligible = eligible_nodes(map).len();
    if eligible < map.replication_factor as usize {
        return Err(PlanError::TooFewNodes { eligible, replicas: map.replication_factor });
    }
    let desired = desired_placement(map, meta_replicas);
    let mut moves = Vec::new();
    for (&shard, want) in &desired {
        let have: &[NodeId] = map.shards.get(&shard).map_or(&[], Vec::as_slice);
        let want_set: BTreeSet<NodeId> = want.iter().copied().collect();
        let have_set: BTreeSet<NodeId> = have.iter().copied().collect();
        // Additions in ring order (a shorter list is a prefix of a longer one);
        // removals with draining nodes first, so they pair with additions.
        let adds: Vec<NodeId> = want.iter().copied().filter(|n| !have_set.contains(n)).collect();
        let mut removes: Vec<NodeId> = have.iter().copied().filter(|n| !want_set.contains(n)).collect();
        removes.sort_by_key(|n| (map.nodes.get(n).map(|i| i.state) != Some(NodeState::Draining), *n));
        let pairs = adds.len().max(removes.len());
        for i in 0..pairs {
            let (from, to) = (removes.get(i).copied(), adds.get(i).copied());
            moves.push(Move::new(shard, from, to, reason(map, from, to)));
        }
    }
    Ok(moves)
}

fn reason(map: &ClusterMap, from: Option<NodeId>, to: Option<NodeId>) -> MoveReason {
    let state = |n: NodeId| map.nodes.get(&n).map(|i| i.state);
    match (from, to) {
        (Some(f), _) if state(f) == Some(NodeState::Draining) || state(f).is_none() => {
            MoveReason::Draining(f)
        }
        (_, Some(t)) if state(t) == Some(NodeState::Joining) => MoveReason::Joined(t),
        (None, Some(_)) => MoveReason::UnderReplicated,
        (Some(_), None) => MoveReason::OverReplicated,
        _ => MoveReason::Placement,
    }
}

/// Replicas per node before (the map) and after (the map with `moves` done),
/// for every node of the map and every node the moves name.
pub fn totals(map: &ClusterMap, moves: &[Move]) -> Vec<NodeTotals> {
    let mut before: BTreeMap<NodeId, usize> = map.nodes.keys().map(|&n| (n, 0)).collect();
    for members in map.shards.values() {
        for &n in members {
            *before.entry(n).or_default() += 1;
        }
    }
    let mut after = before.clone();
    for m in moves {
        if let Some(f) = m.from {
            *after.entry(f).or_default() -= 1;
        }
        if let Some(t) = m.to {
            *after.entry(t).or_default() += 1;
        }
        before.entry(m.to.unwrap_or(0)).or_default();
    }
    before.remove(&0);
    before
        .iter()
        .map(|(&node, &b)| NodeTotals {
            node,
            replicas_before: b,
            replicas_after: after.get(&node).copied().unwrap_or(0),
        })
        .collect()
}

/// The members of `shard` once `m` is applied to `members`.
pub fn apply_move(members: &[NodeId], m: &Move) -> Vec<NodeId> {
    let mut next: Vec<NodeId> = members.iter().copied().filter(|&n| Some(n) != m.from).collect();
    if let Some(t) = m.to
        && !next.contains(&t)
    {
        next.push(t);
    }
    next
}

/// Leader transfers that leave each node leading ⌊S/N⌋ or ⌈S/N⌉ of the data
/// shards, N being the nodes that take replicas. `leaders` maps each data shard
/// to its current leader, `members` to its replicas. Returns (shard, new
/// leader) pairs; greedy, moving a shard from the most loaded node to its least
/// loaded member while that lowers the spread. The meta shard is left alone.
pub fn balance_leaders(
    leaders: &BTreeMap<ShardId, NodeId>,
    members: &BTreeMap<ShardId, Vec<NodeId>>,
    nodes: &[NodeId],
) -> Vec<(ShardId, NodeId)> {
    let mut load: BTreeMap<NodeId, Vec<ShardId>> = nodes.iter().map(|&n| (n, Vec::new())).collect();
    for (&shard, &leader) in leaders.iter().filter(|(s, _)| **s != META_SHARD) {
        load.entry(leader).or_default().push(shard);
    }
    let shards: usize = load.values().map(Vec::len).sum();
    if nodes.is_empty() {
        return Vec::new();
    }
    let ceil = shards.div_ceil(nodes.len());
    let floor = shards / nodes.len();
    let mut transfers = Vec::new();
    // Bounded: every transfer lowers an overloaded node's count.
    for _ in 0..shards * nodes.len() {
        let count = |load: &BTreeMap<NodeId, Vec<ShardId>>, n: NodeId| load.get(&n).map_or(0, Vec::len);
        let best = load
            .iter()
            .filter(|(_, led)| led.len() > floor)
            .flat_map(|(&from, led)| led.iter().map(move |&shard| (from, shard)))
            .filter_map(|(from, shard)| {
                let to = members
                    .get(&shard)?
                    .iter()
                    .copied()
                    .filter(|&m| m != from && nodes.contains(&m))
                    .min_by_key(|&m| (count(&load, m), m))?;
                // Worth it only if it narrows the gap.
                let (f, t) = (count(&load, from), count(&load, to));
                (t + 1 < f && (f > ceil || t < floor)).then_some((f - t, from, shard, to))
            })
            .max_by_key(|&(gap, from, shard, _)| (gap, std::cmp::Reverse((from, shard))));
        let Some((_, from, shard, to)) = best else { break };
        load.get_mut(&from).expect("loaded").retain(|&s| s != shard);
        load.entry(to).or_default().push(shard);
        transfers.push((shard, to));
    }
    transfers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_map::NodeInfo;

    #[test]
    fn a_new_plan_does_not_delete_replicas_it_moves_back_in() {
        let left = |shard, node| Cleanup { shard, node, addr: format!("n{node}:1") };
        let back_in = Move::new(4, Some(2), Some(4), MoveReason::Joined(4));
        let mut done_move = Move::new(5, Some(2), Some(5), MoveReason::Joined(5));
        done_move.step = MoveStep::Done;
        let mut plan = Plan::new(7, vec![back_in, done_move], MoveLimits::default(), 0);
        plan.inherit_cleanup(&[left(4, 4), left(4, 5), left(5, 5), left(1, 4)]);
        assert_eq!(plan.cleanup, vec![left(4, 5), left(5, 5), left(1, 4)]);
        assert!(plan.wants(4, 4) && !plan.wants(5, 5) && !plan.wants(4, 5));
    }

    fn map(nodes: &[(NodeId, NodeState)], shards: u32) -> ClusterMap {
        let mut map = ClusterMap {
            cluster_id: "c".into(),
            epoch: 7,
            shard_count: shards,
            replication_factor: 3,
            nodes: nodes
                .iter()
                .map(|&(id, state)| (id, NodeInfo { id, addr: format!("n{id}:1"), state }))
                .collect(),
            shards: BTreeMap::new(),
        };
        map.shards = desired_placement(&map, 3);
        map
    }

    fn active(ids: &[NodeId]) -> Vec<(NodeId, NodeState)> {
        ids.iter().map(|&n| (n, NodeState::Active)).collect()
    }

    fn after(map: &ClusterMap, moves: &[Move]) -> BTreeMap<ShardId, BTreeSet<NodeId>> {
        let mut shards = map.shards.clone();
        for m in moves {
            let members = shards.get(&m.shard).cloned().unwrap_or_default();
            shards.insert(m.shard, apply_move(&members, m));
        }
        shards.into_iter().map(|(s, m)| (s, m.into_iter().collect())).collect()
    }

    fn as_sets(p: &BTreeMap<ShardId, Vec<NodeId>>) -> BTreeMap<ShardId, BTreeSet<NodeId>> {
        p.iter().map(|(&s, m)| (s, m.iter().copied().collect())).collect()
    }

    #[test]
    fn a_placed_cluster_needs_no_moves() {
        let m = map(&active(&[1, 2, 3, 4]), 16);
        assert_eq!(plan(&m, 3).unwrap(), Vec::new());
    }

    #[test]
    fn joining_nodes_only_receive_and_reach_the_desired_placement() {
        let mut m = map(&active(&[1, 2, 3]), 32);
        for id in [4, 5] {
            m.nodes.insert(id, NodeInfo { id, addr: format!("n{id}:1"), state: NodeState::Joining });
        }
        let moves = plan(&m, 3).unwrap();
        assert!(!moves.is_empty());
        for mv in &moves {
            assert!(matches!(mv.to, Some(4 | 5)), "{mv:?}");
            assert!(matches!(mv.from, Some(1..=3)), "{mv:?}");
            assert_eq!(mv.reason, MoveReason::Joined(mv.to.unwrap()));
        }
        assert_eq!(after(&m, &moves), as_sets(&desired_placement(&m, 3)));
        // About R·S·2/5 replica slots move: the ring's property, not a reshuffle.
        let expected = 3.0 * 33.0 * 2.0 / 5.0;
        assert!((moves.len() as f64) < expected * 1.6, "{} moves", moves.len());
    }

    #[test]
    fn draining_moves_every_replica_off_the_node_and_only_those() {
        let mut m = map(&active(&[1, 2, 3, 4, 5]), 32);
        m.nodes.get_mut(&5).unwrap().state = NodeState::Draining;
        let moves = plan(&m, 3).unwrap();
        let held: usize = m.shards.values().filter(|members| members.contains(&5)).count();
        assert_eq!(moves.len(), held);
        for mv in &moves {
            assert_eq!((mv.from, mv.reason), (Some(5), MoveReason::Draining(5)), "{mv:?}");
            assert!(mv.to.is_some());
        }
        let done = after(&m, &moves);
        assert!(done.values().all(|members| !members.contains(&5) && members.len() == 3));
    }

    #[test]
    fn too_few_nodes_is_refused() {
        let mut m = map(&active(&[1, 2, 3]), 8);
        m.nodes.get_mut(&3).unwrap().state = NodeState::Draining;
        assert_eq!(plan(&m, 3), Err(PlanError::TooFewNodes { eligible: 2, replicas: 3 }));
    }

    #[test]
    fn under_replicated_shards_gain_replicas() {
        let mut m = map(&active(&[1, 2, 3, 4]), 8);
        let shard = 1;
        let members = m.shards.get_mut(&shard).unwrap();
        let lost = members.pop().unwrap();
        let moves = plan(&m, 3).unwrap();
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].shard, moves[0].from, moves[0].to), (shard, None, Some(lost)));
        assert_eq!(moves[0].reason, MoveReason::UnderReplicated);
    }

    #[test]
    fn totals_count_replicas_before_and_after() {
        let mut m = map(&active(&[1, 2, 3]), 8);
        m.nodes.insert(4, NodeInfo { id: 4, addr: "n4:1".into(), state: NodeState::Joining });
        let moves = plan(&m, 3).unwrap();
        let totals = totals(&m, &moves);
        let sum = |f: fn(&NodeTotals) -> usize| totals.iter().map(f).sum::<usize>();
        assert_eq!(sum(|t| t.replicas_before), sum(|t| t.replicas_after));
        let four = totals.iter().find(|t| t.node == 4).unwrap();
        assert_eq!((four.replicas_before, four.replicas_after), (0, moves.len()));
    }

    #[test]
    fn leader_balance_reaches_floor_or_ceil() {
        let nodes = [1, 2, 3, 4];
        let members: BTreeMap<ShardId, Vec<NodeId>> = (1..=10).map(|s| (s, vec![1, 2, 3, 4])).collect();
        let mut leaders: BTreeMap<ShardId, NodeId> = (1..=10).map(|s| (s, 1)).collect();
        for (shard, to) in balance_leaders(&leaders, &members, &nodes) {
            leaders.insert(shard, to);
        }
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in leaders.values() {
            *counts.entry(*n).or_default() += 1;
        }
        assert!(nodes.iter().all(|n| (2..=3).contains(counts.get(n).unwrap_or(&0))), "{counts:?}");
        // Already balanced: nothing to do.
        assert_eq!(balance_leaders(&leaders, &members, &nodes), Vec::new());
    }
}
