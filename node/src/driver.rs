//! The placement driver: executes the committed rebalance plan, on whichever
//! node leads the meta shard (DESIGN §5).
//!
//! Every 200 ms (`POLL`) the driver on the meta leader reads the plan (after confirming
//! leadership) and starts moves that are not done, up to the plan's limits
//! (cluster-wide and per node) and one per shard (openraft allows one membership
//! change in flight per group). A move runs as its own task, step by step:
//!
//! 1. `Pending` → create the replica on `to`, then on the shard's leader
//!    `add_learner` (blocking until it caught up) → record `LearnerAdded`.
//! 2. `LearnerAdded` → on the leader, set the voters to the old ones minus `from`
//!    plus `to` (openraft runs joint consensus), then put the new replica set in
//!    the cluster map → record `MembershipChanged`.
//! 3. `MembershipChanged` → confirm with the leader that `from` is neither voter
//!    nor learner any more, then stop `from`'s replica and delete its data →
//!    record `Done`.
//!
//! Each step is idempotent and checks the actual state first (a learner already
//! added, voters already changed, a replica already gone), and each is recorded
//! in the meta shard before the next starts, so a new meta leader resumes an
//! interrupted plan from the last recorded step. A failed step is recorded with
//! its error and retried after a backoff; the shard keeps its quorum throughout,
//! because `from` leaves only through a membership change that already includes
//! `to`. When every move is done, joining nodes become active.
//!
//! A move whose old replica's node is down when step 3 runs is recorded done,
//! with the replica in the plan's `cleanup` list: it is out of the group
//! already, and the driver deletes it once its node answers, one at a time,
//! without holding up the plan.
//!
//! ## Caveats / not done yet
//! - An aborted plan leaves a move's learner in place if it was aborted between
//!   steps 1 and 2 (it holds a copy, not a vote); the next plan reuses or removes
//!   it.
//! - A target that stays dead fails its move forever (retried with backoff);
//!   abort the plan and drain the dead node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use ringkv_core::rebalance::{self, Move, MoveStep, Plan, PlanState};
use ringkv_core::{ClusterMap, META_SHARD, NodeId, NodeState, ShardId};
use ringkv_proto::v1::{
    ChangeMembershipRequest, ChangeMembershipResponse, CreateReplicaRequest, ErrorDetail, NodeAddress,
    RemoveReplicaRequest, error_detail,
};
use tokio::time::Instant;

use crate::bootstrap::admin_client;
use crate::cluster_admin::{meta_state, update_map, update_plan};
use crate::error::Error;
use crate::leader_transfer;
use crate::node::Node;
use crate::shard::Shard;

/// How often the driver looks at the plan.
const POLL: Duration = Duration::from_millis(200);
/// Longest a learner may take to catch up (snapshot transfer included).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of the other per-step calls.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Backoff before retrying a failed move: this times its attempts, capped.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the driver of `node` until the process ends.
pub async fn run(node: Arc<Node>) {
    let mut running: HashMap<ShardId, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut cleanup: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        running.retain(|_, task| !task.is_finished());
        let Some(meta) = node.shard(META_SHARD).filter(|m| m.is_leader()) else { continue };
        let Ok((map, Some(plan))) = meta_state(&meta).await else { continue };
        if let Some(&(shard, node)) = plan.cleanup.first()
            && cleanup.as_ref().is_none_or(|task| task.is_finished())
        {
            let (meta, map) = (meta.clone(), map.clone());
            cleanup = Some(tokio::spawn(async move { cleanup_one(&meta, &map, shard, node).await }));
        }
        if plan.state != PlanState::Running {
            continue;
        }
        if plan.moves.iter().all(|m| m.step == MoveStep::Done) {
            if let Err(e) = finish(&node, &meta).await {
                tracing::warn!("finishing the rebalance: {e}");
            }
            continue;
        }
        for m in startable(&plan, &running) {
            let (node, meta, map) = (node.clone(), meta.clone(), map.clone());
            let shard = m.shard;
            running.insert(shard, tokio::spawn(async move { execute(&node, &meta, &map, m).await }));
        }
    }
}

/// Moves to start now: not done, their shard idle, not backing off, within the
/// plan's limits counting the moves already running.
fn startable(plan: &Plan, running: &HashMap<ShardId, tokio::task::JoinHandle<()>>) -> Vec<Move> {
    let busy = |m: &Move| running.contains_key(&m.shard);
    let mut per_node: HashMap<NodeId, u32> = HashMap::new();
    let mut in_flight = 0u32;
    for m in plan.moves.iter().filter(|m| busy(m) && m.step != MoveStep::Done) {
        in_flight += 1;
        for n in m.nodes() {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let mut chosen = Vec::new();
    let mut shards: BTreeSet<ShardId> = running.keys().copied().collect();
    // Moves already under way first: they hold an extra replica.
    let mut candidates: Vec<&Move> =
        plan.moves.iter().filter(|m| m.step != MoveStep::Done && !busy(m)).collect();
    candidates.sort_by_key(|m| std::cmp::Reverse(m.step));
    for m in candidates {
        if in_flight >= plan.limits.max_in_flight.max(1) || shards.contains(&m.shard) {
            continue;
        }
        if m.nodes().any(|n| per_node.get(&n).copied().unwrap_or(0) >= plan.limits.max_per_node.max(1)) {
            continue;
        }
        in_flight += 1;
        shards.insert(m.shard);
        for n in m.nodes() {
            *per_node.entry(n).or_default() += 1;
        }
        chosen.push(m.clone());
    }
    chosen
}

/// Runs one move to the end, recording each step; on failure records the error
/// and backs off (the next poll retries it).
async fn execute(node: &Node, meta: &Shard, map: &ClusterMap, mut m: Move) {
    loop {
        let result = match m.step {
            MoveStep::Pending => {
                add_learner(node, map, &m).await.map(|bytes| (MoveStep::LearnerAdded, bytes))
            }
            MoveStep::LearnerAdded => {
                change_voters(node, meta, map, &m).await.map(|()| (MoveStep::MembershipChanged, m.bytes))
            }
            MoveStep::MembershipChanged => match remove_old(map, &m).await {
                Err(Error::Unavailable(e)) if membership_settled(map, &m).await => {
                    // `from` is down: its replica is out of the group and is
                    // deleted when it can be, without holding up the plan.
                    tracing::info!(shard = m.shard, from = ?m.from, "old replica unreachable, deleting it later: {e}");
                    defer_cleanup(meta, &m).await.map(|()| (MoveStep::Done, m.bytes))
                }
                other => other.map(|()| (MoveStep::Done, m.bytes)),
            },
            MoveStep::Done => return,
        };
        match result {
            Ok((step, bytes)) => match record(meta, &m, |rec| {
                rec.step = step;
                rec.bytes = bytes;
                rec.last_error = None;
            })
            .await
            {
                Ok(true) => {
                    tracing::info!(shard = m.shard, from = ?m.from, to = ?m.to, ?step, "move step done");
                    m.step = step;
                    m.bytes = bytes;
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(shard = m.shard, "recording a move step: {e}");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(shard = m.shard, from = ?m.from, to = ?m.to, step = ?m.step, "move step failed: {e}");
                let attempts = m.attempts + 1;
                let _ = record(meta, &m, |rec| {
                    rec.attempts = attempts;
                    rec.last_error = Some(e.to_string());
                })
                .await;
                let backoff = RETRY_BACKOFF.saturating_mul(attempts).min(MAX_RETRY_BACKOFF);
                tokio::time::sleep(backoff).await;
                return;
            }
        }
    }
}

/// Updates the plan's record of `m` (same shard, from and to). Ok(false) when
/// the plan no longer runs it (aborted, paused, replaced): stop.
async fn record(meta: &Shard, m: &Move, change: impl Fn(&mut Move)) -> Result<bool, Error> {
    let mut stopped = false;
    update_plan(meta, |current, _| {
        let Some(plan) = current else { return Err(Error::FailedPrecondition("no plan".into())) };
        let mut next = plan.clone();
        match next.moves.iter_mut().find(|r| (r.shard, r.from, r.to) == (m.shard, m.from, m.to)) {
            Some(rec) if plan.state == PlanState::Running || plan.state == PlanState::Paused => change(rec),
            _ => stopped = true,
        }
        Ok(next)
    })
    .await?;
    Ok(!stopped)
}

/// Step 1: the replica on `to`, added as a learner that caught up. Returns the
/// shard's approximate size (what was copied).
async fn add_learner(node: &Node, map: &ClusterMap, m: &Move) -> Result<u64, Error> {
    let Some(to) = m.to else { return Ok(0) };
    let addr = node_addr(map, to)?;
    let mut client = admin_client(&addr)?;
    let cluster =
        node.cluster().ok_or_else(|| Error::Internal("the meta leader has no cluster id".into()))?;
    let create = CreateReplicaRequest {
        target_node: to,
        cluster_id: cluster.cluster_id,
        shard_count: map.shard_count,
        shard: m.shard,
    };
    client.create_replica(timed(create, STEP_TIMEOUT)).await.map_err(|s| {
        Error::Unavailable(format!("creating shard {} on node {to}: {}", m.shard, s.message()))
    })?;
    let req = ChangeMembershipRequest {
        shard: m.shard,
        add_learner: Some(NodeAddress { id: to, addr, state: String::new() }),
        set_voters: Vec::new(),
    };
    let reply = on_leader(map, m.shard, req, CATCH_UP_TIMEOUT).await?;
    Ok(reply.approx_bytes)
}

/// Step 2: voters = current − from + to, then the map says so.
async fn change_voters(node: &Node, meta: &Shard, map: &ClusterMap, m: &Move) -> Result<(), Error> {
    let mut current = on_leader(map, m.shard, query(m.shard), STEP_TIMEOUT).await?;
    // Leadership leaves first: a leader that removes itself steps down only
    // after the change, and the shard then waits a whole election.
    if let Some(from) = m.from.filter(|&f| f == current.leader_id)
        && let Some(&heir) = current.voters.iter().find(|&&v| v != from)
    {
        // Best effort: if it fails, the leader removes itself and steps down.
        if let Err(e) = leader_transfer::transfer(map, m.shard, from, heir, lease(node)).await {
            tracing::warn!(shard = m.shard, from, heir, "moving leadership before the move: {e}");
        }
        current = on_leader(map, m.shard, query(m.shard), STEP_TIMEOUT).await?;
    }
    let target: BTreeSet<NodeId> = rebalance::apply_move(&current.voters, m).into_iter().collect();
    if current.voters.iter().copied().collect::<BTreeSet<_>>() != target {
        let req = ChangeMembershipRequest {
            shard: m.shard,
            add_learner: None,
            set_voters: target.iter().copied().collect(),
        };
        on_leader(map, m.shard, req, STEP_TIMEOUT).await?;
    }
    update_map(meta, |map| {
        let members = map.shards.get(&m.shard).cloned().unwrap_or_default();
        let next_members = rebalance::apply_move(&members, m);
        if next_members == members {
            return Ok(None);
        }
        let mut next = map.clone();
        next.shards.insert(m.shard, next_members);
        Ok(Some(next))
    })
    .await?;
    Ok(())
}

/// Step 3: `from`'s replica stopped and deleted, once it is surely no member.
async fn remove_old(map: &ClusterMap, m: &Move) -> Result<(), Error> {
    let Some(from) = m.from else { return Ok(()) };
    let membership = on_leader(map, m.shard, query(m.shard), STEP_TIMEOUT).await?;
    if membership.voters.contains(&from) || membership.learners.contains(&from) {
        return Err(Error::FailedPrecondition(format!(
            "node {from} is still a member of shard {}; not deleting its replica",
            m.shard
        )));
    }
    // A node no longer in the map (removed while down) has nothing to delete.
    let Ok(addr) = node_addr(map, from) else { return Ok(()) };
    admin_client(&addr)?
        .remove_replica(timed(RemoveReplicaRequest { target_node: from, shard: m.shard }, STEP_TIMEOUT))
        .await
        .map_err(|s| {
            Error::Unavailable(format!("removing shard {} from node {from}: {}", m.shard, s.message()))
        })?;
    Ok(())
}

/// The followers' leader lease plus a heartbeat of margin: how long a leader
/// transfer waits after holding the old leader.
pub(crate) fn lease(node: &Node) -> Duration {
    Duration::from_millis(node.config.election_timeout_max_ms + node.config.heartbeat_ms)
}

/// Transfers leaderships until each node that takes replicas leads ⌊S/N⌋ or
/// ⌈S/N⌉ data shards; returns the transfers made. Concurrent, one per shard.
pub async fn balance_leaders(
    node: &Node,
    map: &ClusterMap,
    leaders: &BTreeMap<ShardId, NodeId>,
) -> Vec<(ShardId, NodeId)> {
    let nodes: Vec<NodeId> =
        map.nodes.values().filter(|n| n.state != NodeState::Draining).map(|n| n.id).collect();
    let transfers = rebalance::balance_leaders(leaders, &map.shards, &nodes);
    let lease = lease(node);
    let runs = transfers.iter().map(|&(shard, to)| {
        let from = leaders.get(&shard).copied().unwrap_or(0);
        async move { (shard, to, leader_transfer::transfer(map, shard, from, to, lease).await) }
    });
    let mut done = Vec::new();
    for (shard, to, result) in futures::future::join_all(runs).await {
        match result {
            Ok(()) => done.push((shard, to)),
            Err(e) => tracing::warn!(shard, to, "leader transfer failed: {e}"),
        }
    }
    done
}

/// Each data shard's leader, as its leader reports it (shards that answer).
pub async fn current_leaders(map: &ClusterMap) -> BTreeMap<ShardId, NodeId> {
    let queries = map.shards.keys().filter(|&&s| s != META_SHARD).map(|&shard| async move {
        let reply = on_leader(map, shard, query(shard), STEP_TIMEOUT).await.ok()?;
        (reply.leader_id != 0).then_some((shard, reply.leader_id))
    });
    futures::future::join_all(queries).await.into_iter().flatten().collect()
}

/// Whether the leader confirms `m.from` is no member of the shard any more.
async fn membership_settled(map: &ClusterMap, m: &Move) -> bool {
    let Some(from) = m.from else { return true };
    match on_leader(map, m.shard, query(m.shard), STEP_TIMEOUT).await {
        Ok(membership) => !membership.voters.contains(&from) && !membership.learners.contains(&from),
        Err(_) => false,
    }
}

/// Records `m.from`'s replica of `m.shard` for deletion later.
async fn defer_cleanup(meta: &Shard, m: &Move) -> Result<(), Error> {
    let Some(from) = m.from else { return Ok(()) };
    update_plan(meta, |current, _| {
        let Some(plan) = current else { return Err(Error::FailedPrecondition("no plan".into())) };
        let mut next = plan.clone();
        if !next.cleanup.contains(&(m.shard, from)) {
            next.cleanup.push((m.shard, from));
        }
        Ok(next)
    })
    .await?;
    Ok(())
}

/// Tries to delete one deferred replica; drops the entry once deleted, or once
/// its node left the map.
async fn cleanup_one(meta: &Shard, map: &ClusterMap, shard: ShardId, node: NodeId) {
    let done = match map.addr(node) {
        None => true,
        Some(addr) => match admin_client(addr) {
            Ok(mut client) => {
                let req = timed(RemoveReplicaRequest { target_node: node, shard }, STEP_TIMEOUT);
                client.remove_replica(req).await.is_ok()
            }
            Err(_) => false,
        },
    };
    if done {
        let result = update_plan(meta, |current, _| {
            let Some(plan) = current else { return Err(Error::FailedPrecondition("no plan".into())) };
            let mut next = plan.clone();
            next.cleanup.retain(|&entry| entry != (shard, node));
            Ok(next)
        })
        .await;
        match result {
            Ok(_) => tracing::info!(shard, node, "deleted a replica left behind by a move"),
            Err(e) => tracing::warn!(shard, node, "recording a replica cleanup: {e}"),
        }
    }
}

/// Marks joining nodes active, balances leaders, and marks the plan done.
async fn finish(node: &Node, meta: &Shard) -> Result<(), Error> {
    update_map(meta, |map| {
        if !map.nodes.values().any(|n| n.state == NodeState::Joining) {
            return Ok(None);
        }
        let mut next = map.clone();
        for n in next.nodes.values_mut().filter(|n| n.state == NodeState::Joining) {
            n.state = NodeState::Active;
        }
        Ok(Some(next))
    })
    .await?;
    let (map, plan) = meta_state(meta).await?;
    if plan.as_ref().is_some_and(|p| p.balance_leaders) {
        let leaders = current_leaders(&map).await;
        let transfers = balance_leaders(node, &map, &leaders).await;
        tracing::info!(transfers = transfers.len(), "leaders balanced");
    }
    let plan = update_plan(meta, |current, _| {
        let Some(plan) = current.filter(|p| p.state == PlanState::Running) else {
            return Err(Error::FailedPrecondition("the plan is no longer running".into()));
        };
        let mut next = plan.clone();
        next.state = PlanState::Done;
        Ok(next)
    })
    .await?;
    tracing::info!(moves = plan.moves.len(), "rebalance done");
    Ok(())
}

pub(crate) fn query(shard: ShardId) -> ChangeMembershipRequest {
    ChangeMembershipRequest { shard, add_learner: None, set_voters: Vec::new() }
}

fn node_addr(map: &ClusterMap, node: NodeId) -> Result<String, Error> {
    map.addr(node)
        .map(str::to_string)
        .ok_or_else(|| Error::FailedPrecondition(format!("node {node} is not in the cluster map")))
}

fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(timeout);
    req
}

/// Sends `req` to the shard's leader: tries the map's replicas, follows
/// `NotLeader` hints, backs off while no leader is known, until `timeout`.
pub(crate) async fn on_leader(
    map: &ClusterMap,
    shard: ShardId,
    req: ChangeMembershipRequest,
    timeout: Duration,
) -> Result<ChangeMembershipResponse, Error> {
    let deadline = Instant::now() + timeout;
    let members = map.shards.get(&shard).cloned().unwrap_or_default();
    let candidates: Vec<String> = members.iter().filter_map(|&n| map.addr(n).map(str::to_string)).collect();
    if candidates.is_empty() {
        return Err(Error::FailedPrecondition(format!("shard {shard} has no replica in the cluster map")));
    }
    let (mut next, mut hint) = (0usize, None::<String>);
    let mut last = String::from("no replica answered");
    while Instant::now() < deadline {
        let addr = hint.take().unwrap_or_else(|| {
            next += 1;
            candidates[(next - 1) % candidates.len()].clone()
        });
        let left = deadline.saturating_duration_since(Instant::now());
        match admin_client(&addr)?.change_membership(timed(req.clone(), left)).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    return Err(Error::InvalidArgument(status.message().to_string()));
                }
                last = format!("{addr}: {}", status.message());
                // Follow a hint to another node at once; otherwise back off.
                if let Some(leader) = not_leader_hint(&status).filter(|leader| *leader != addr) {
                    hint = Some(leader);
                    continue;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Unavailable(format!("shard {shard}: no leader answered in time ({last})")))
}

fn not_leader_hint(status: &tonic::Status) -> Option<String> {
    match ErrorDetail::decode(status.details()).ok()?.kind? {
        error_detail::Kind::NotLeader(nl) if !nl.leader_addr.is_empty() => Some(nl.leader_addr),
        _ => None,
    }
}
