//! Operator calls that change the cluster's shape, run by the meta shard's
//! leader: add a node, plan and commit a rebalance, control it, drain and
//! remove nodes (DESIGN §5).
//!
//! Every change is a conditional proposal on the meta shard: the cluster map by
//! its epoch (`SetClusterMap { expected_epoch }`), the plan by its revision
//! (`SetPlan { expected_revision }`). A change computed from a state that moved
//! on is retried from the new state (a few times) or refused, never applied over
//! it. Reads of the meta state start with a leadership confirmation, so a
//! deposed meta leader never plans from a stale map.

use std::collections::BTreeMap;

use ringkv_core::rebalance::{self, Move, MoveLimits, MoveStep, Plan, PlanState};
use ringkv_core::{ClusterMap, Epoch, NodeId, NodeInfo, NodeState, ShardId};
use ringkv_proto::v1::{
    AddNodeResponse, NodePlanTotals, PlanRebalanceResponse, RebalanceMove, RebalanceStatusResponse,
    ShardStatus,
};

use crate::bootstrap::META_REPLICAS;
use crate::command::{Op, OpResult};
use crate::error::Error;
use crate::shard::Shard;
use crate::time::unix_now_ms;

/// Conditional updates retried this many times when another change won the race.
const UPDATE_ATTEMPTS: usize = 8;

/// The map and plan, read after confirming leadership of the meta shard.
pub async fn meta_state(meta: &Shard) -> Result<(ClusterMap, Option<Plan>), Error> {
    meta.reader.confirm().await?;
    read_meta(meta)
}

/// The map and plan as this meta replica has applied them (no confirmation:
/// callers confirm leadership first).
pub fn read_meta(meta: &Shard) -> Result<(ClusterMap, Option<Plan>), Error> {
    let state = meta.state.read().expect("shard state lock poisoned");
    let map = state
        .kv
        .cluster_map()
        .cloned()
        .ok_or_else(|| Error::Unavailable("the cluster map is not installed yet".into()))?;
    Ok((map, state.kv.rebalance().cloned()))
}

/// Proposes `map` if the current epoch is `expected`; false if it was not.
pub async fn propose_map(meta: &Shard, expected: Epoch, map: ClusterMap) -> Result<bool, Error> {
    match meta.proposer.propose(Op::SetClusterMap { expected_epoch: Some(expected), map }).await? {
        OpResult::SetClusterMap { succeeded, .. } => Ok(succeeded),
        other => Err(Error::Internal(format!("unexpected result {other:?}"))),
    }
}

/// Proposes `plan` if the current revision is `expected` (and the map epoch is
/// `epoch`, if given); false if not.
pub async fn propose_plan(
    meta: &Shard,
    expected: u64,
    epoch: Option<u64>,
    plan: Plan,
) -> Result<bool, Error> {
    let op = Op::SetPlan { expected_revision: expected, expected_epoch: epoch, plan };
    match meta.proposer.propose(op).await? {
        OpResult::SetPlan { succeeded, .. } => Ok(succeeded),
        other => Err(Error::Internal(format!("unexpected result {other:?}"))),
    }
}

/// Applies `change` to the current map and proposes it, retrying from the new
/// map when another change won. `change` returns `Ok(None)` for "nothing to do".
pub async fn update_map<F>(meta: &Shard, mut change: F) -> Result<ClusterMap, Error>
where
    F: FnMut(&ClusterMap) -> Result<Option<ClusterMap>, Error>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (map, _) = meta_state(meta).await?;
        let Some(mut next) = change(&map)? else { return Ok(map) };
        next.epoch = map.epoch + 1;
        if propose_map(meta, map.epoch, next.clone()).await? {
            return Ok(next);
        }
    }
    Err(Error::Unavailable("the cluster map kept changing; try again".into()))
}

/// Applies `change` to the current plan and proposes it, as [`update_map`].
/// The plan is installed only if the map is still the one `change` saw.
pub async fn update_plan<F>(meta: &Shard, mut change: F) -> Result<Plan, Error>
where
    F: FnMut(Option<&Plan>, &ClusterMap) -> Result<Plan, Error>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (map, current) = meta_state(meta).await?;
        let expected = current.as_ref().map_or(0, |p| p.revision);
        let mut next = change(current.as_ref(), &map)?;
        next.revision = expected + 1;
        if propose_plan(meta, expected, Some(map.epoch), next.clone()).await? {
            return Ok(next);
        }
    }
    Err(Error::Unavailable("the rebalance plan kept changing; try again".into()))
}

/// Registers a node as joining. Idempotent for the same id and address.
pub async fn add_node(meta: &Shard, id: NodeId, addr: &str) -> Result<AddNodeResponse, Error> {
    if id == 0 || addr.is_empty() {
        return Err(Error::InvalidArgument("add-node needs a node id above 0 and an address".into()));
    }
    let map = update_map(meta, |map| {
        if let Some(known) = map.nodes.get(&id) {
            if known.addr == addr {
                return Ok(None);
            }
            return Err(Error::AlreadyExists(format!("node {id} is already registered at {}", known.addr)));
        }
        if let Some(other) = map.nodes.values().find(|n| n.addr == addr) {
            return Err(Error::AlreadyExists(format!("address {addr} already belongs to node {}", other.id)));
        }
        let mut next = map.clone();
        next.nodes.insert(id, NodeInfo { id, addr: addr.to_string(), state: NodeState::Joining });
        Ok(Some(next))
    })
    .await?;
    tracing::info!(node = id, addr, epoch = map.epoch, "node registered");
    Ok(AddNodeResponse { cluster_id: map.cluster_id, epoch: map.epoch, shards: map.shard_count })
}

/// The plan a rebalance would commit now, with per-node totals and sizes.
/// `status` is the cluster status (leaders, replica sizes) of the same map.
pub fn plan_response(map: &ClusterMap, status: &[ShardStatus]) -> Result<PlanRebalanceResponse, Error> {
    let mut moves =
        rebalance::plan(map, META_REPLICAS).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    let sizes = shard_sizes(status);
    for m in &mut moves {
        m.bytes = if m.to.is_some() { sizes.get(&m.shard).copied().unwrap_or(0) } else { 0 };
    }
    let mut leaders: BTreeMap<NodeId, u32> = BTreeMap::new();
    for s in status.iter().filter(|s| s.leader_id != 0) {
        *leaders.entry(s.leader_id).or_default() += 1;
    }
    let totals = rebalance::totals(map, &moves)
        .into_iter()
        .map(|t| NodePlanTotals {
            node: t.node,
            state: map.nodes.get(&t.node).map_or("unknown".into(), |n| n.state.to_string()),
            replicas_before: t.replicas_before as u32,
            replicas_after: t.replicas_after as u32,
            leaders_before: leaders.get(&t.node).copied().unwrap_or(0),
        })
        .collect();
    Ok(PlanRebalanceResponse {
        epoch: map.epoch,
        bytes_to_copy: moves.iter().map(|m| m.bytes).sum(),
        moves: moves.iter().map(move_message).collect(),
        totals,
    })
}

/// Each shard's approximate size, as its leader (else any replica) reports it.
fn shard_sizes(status: &[ShardStatus]) -> BTreeMap<ShardId, u64> {
    status
        .iter()
        .map(|s| {
            let leader = s.replica_status.iter().find(|r| r.node_id == s.leader_id);
            let any = s.replica_status.iter().map(|r| r.approx_bytes).max();
            (s.shard, leader.map(|r| r.approx_bytes).or(any).unwrap_or(0))
        })
        .collect()
}

/// Commits the plan for the map at `expected_epoch`.
pub async fn start_rebalance(
    meta: &Shard,
    expected_epoch: Epoch,
    limits: MoveLimits,
) -> Result<RebalanceStatusResponse, Error> {
    let plan = update_plan(meta, |current, map| {
        if let Some(p) = current.filter(|p| p.is_active()) {
            let left = p.progress().left + p.progress().in_flight;
            return Err(Error::FailedPrecondition(format!(
                "a rebalance is already {} ({left} moves left): see `ringkv admin rebalance status`, or abort it",
                p.state
            )));
        }
        if map.epoch != expected_epoch {
            return Err(Error::FailedPrecondition(format!(
                "the plan was computed against cluster map epoch {expected_epoch}, but the map is at epoch {} \
                 now: run `ringkv admin rebalance --dry-run` again",
                map.epoch
            )));
        }
        new_plan(map, limits, current)
    })
    .await?;
    tracing::info!(moves = plan.moves.len(), epoch = plan.base_epoch, "rebalance committed");
    Ok(status_response(Some(&plan)))
}

/// A plan for `map`, keeping the replicas the previous plan still has to delete.
fn new_plan(map: &ClusterMap, limits: MoveLimits, previous: Option<&Plan>) -> Result<Plan, Error> {
    let moves = rebalance::plan(map, META_REPLICAS).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    let mut plan = Plan::new(map.epoch, moves, limits, unix_now_ms());
    if let Some(previous) = previous {
        plan.inherit_cleanup(&previous.cleanup);
    }
    Ok(plan)
}

/// Pause, resume or abort the running plan.
pub async fn control_rebalance(meta: &Shard, action: &str) -> Result<RebalanceStatusResponse, Error> {
    let next_state = match action {
        "pause" => PlanState::Paused,
        "resume" => PlanState::Running,
        "abort" => PlanState::Aborted,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown rebalance action {other:?} (pause, resume or abort)"
            )));
        }
    };
    let plan = update_plan(meta, |current, map| {
        let Some(p) = current.filter(|p| p.is_active()) else {
            return Err(Error::FailedPrecondition("no rebalance is running".into()));
        };
        let mut next = p.clone();
        if next_state == PlanState::Aborted {
            next.abort(|node| map.addr(node).map(str::to_string));
        } else {
            next.state = next_state;
        }
        Ok(next)
    })
    .await?;
    Ok(status_response(Some(&plan)))
}

/// Marks `node` draining and commits the plan that empties it.
pub async fn drain_node(
    meta: &Shard,
    node: NodeId,
    limits: MoveLimits,
) -> Result<RebalanceStatusResponse, Error> {
    let (_, current) = meta_state(meta).await?;
    if let Some(p) = current.filter(|p| p.is_active()) {
        return Err(Error::FailedPrecondition(format!(
            "a rebalance is already {}: wait for it (`ringkv admin rebalance status`) or abort it first",
            p.state
        )));
    }
    let map = update_map(meta, |map| {
        let Some(info) = map.nodes.get(&node) else {
            return Err(Error::NotFound(format!("node {node} is not in the cluster map")));
        };
        let remaining = map.nodes.values().filter(|n| n.id != node && n.state != NodeState::Draining).count();
        if remaining < map.replication_factor as usize {
            return Err(Error::FailedPrecondition(format!(
                "cannot drain node {node}: the {remaining} other node(s) cannot hold {} replicas of every shard",
                map.replication_factor
            )));
        }
        if info.state == NodeState::Draining {
            return Ok(None);
        }
        let mut next = map.clone();
        next.nodes.get_mut(&node).expect("checked").state = NodeState::Draining;
        Ok(Some(next))
    })
    .await?;
    // The node is draining from here on: if the plan cannot be committed (a
    // commit raced this one), say so rather than pretend nothing changed.
    start_rebalance(meta, map.epoch, limits).await.map_err(|e| {
        Error::FailedPrecondition(format!(
            "node {node} is now marked draining, but its plan was not committed ({e}); run `ringkv admin \
             rebalance` to move its replicas"
        ))
    })
}

/// Removes `node` from the map; refused while it holds replicas or when the
/// rest could not hold every replica.
pub async fn remove_node(meta: &Shard, node: NodeId) -> Result<Epoch, Error> {
    // A plan commit racing this removal fails on the epoch this bumps.
    let (_, plan) = meta_state(meta).await?;
    if let Some(plan) = plan.filter(|p| p.involves(node)) {
        return Err(Error::FailedPrecondition(if plan.is_active() {
            format!(
                "the {} rebalance still moves replicas to or from node {node}: wait for it or abort it",
                plan.state
            )
        } else {
            format!(
                "node {node} still has replicas to delete (it was down when they moved): start it so they can be \
                 deleted, then remove it"
            )
        }));
    }
    let map = update_map(meta, |map| {
        if !map.nodes.contains_key(&node) {
            return Err(Error::NotFound(format!("node {node} is not in the cluster map")));
        }
        let held: Vec<ShardId> =
            map.shards.iter().filter(|(_, members)| members.contains(&node)).map(|(&s, _)| s).collect();
        if !held.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "node {node} still holds replicas of shard(s) {held:?}: drain it first (`ringkv admin drain {node}`)"
            )));
        }
        let remaining = map.nodes.values().filter(|n| n.id != node && n.state != NodeState::Draining).count();
        if remaining < map.replication_factor as usize {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove node {node}: {remaining} node(s) would be left for {} replicas per shard",
                map.replication_factor
            )));
        }
        let mut next = map.clone();
        next.nodes.remove(&node);
        Ok(Some(next))
    })
    .await?;
    tracing::info!(node, epoch = map.epoch, "node removed from the cluster map");
    Ok(map.epoch)
}

/// A plan as the API reports it.
pub fn status_response(plan: Option<&Plan>) -> RebalanceStatusResponse {
    let Some(plan) = plan else { return RebalanceStatusResponse::default() };
    let progress = plan.progress();
    let elapsed_ms = unix_now_ms().saturating_sub(plan.started_ms);
    let eta_ms = match (progress.done, progress.left + progress.in_flight) {
        (_, 0) | (0, _) => 0,
        (done, left) if plan.state == PlanState::Running => elapsed_ms / done as u64 * left as u64,
        _ => 0,
    };
    RebalanceStatusResponse {
        has_plan: true,
        state: plan.state.to_string(),
        base_epoch: plan.base_epoch,
        moves: plan.moves.iter().map(move_message).collect(),
        done: progress.done as u32,
        in_flight: progress.in_flight as u32,
        left: progress.left as u32,
        bytes_copied: progress.bytes_copied,
        eta_ms,
        elapsed_ms,
        max_in_flight: plan.limits.max_in_flight,
        max_per_node: plan.limits.max_per_node,
    }
}

fn move_message(m: &Move) -> RebalanceMove {
    RebalanceMove {
        shard: m.shard,
        from: m.from.unwrap_or(0),
        to: m.to.unwrap_or(0),
        reason: m.reason.to_string(),
        step: match m.step {
            MoveStep::Pending => "pending",
            MoveStep::LearnerAdded => "learner added",
            MoveStep::MembershipChanged => "membership changed",
            MoveStep::Done => "done",
        }
        .into(),
        attempts: m.attempts,
        last_error: m.last_error.clone().unwrap_or_default(),
        bytes: m.bytes,
    }
}
