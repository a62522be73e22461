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
//! Only the meta leader drives: a driver that loses meta leadership, or sees
//! the plan paused or ended, stops its move tasks at once (steps are safe to
//! re-run), so two drivers never work on one shard for long. Recorded steps only
//! move forward.
//!
//! ## Caveats / not done yet
//! - A target that stays dead fails its move forever (retried with backoff);
//!   abort the plan (its leftovers are cleaned up) and drain the dead node.
//! - No fencing token on the node-to-node calls: a driver that lost leadership
//!   but has not noticed yet (up to one poll) may still send one step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use ringkv_core::rebalance::{self, Cleanup, Move, MoveStep, Plan, PlanState};
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

/// A move's identity within a plan.
type MoveKey = (ShardId, Option<NodeId>, Option<NodeId>);

fn key(m: &Move) -> MoveKey {
    (m.shard, m.from, m.to)
}

/// Move tasks running, by shard (one per shard at a time).
type Running = HashMap<ShardId, (MoveKey, tokio::task::JoinHandle<()>)>;

/// Runs the driver of `node` until the process ends.
pub async fn run(node: Arc<Node>) {
    let mut running: Running = HashMap::new();
    let mut cleanup: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        running.retain(|_, (_, task)| !task.is_finished());
        let state = match node.shard(META_SHARD).filter(|m| m.is_leader()) {
            Some(meta) => meta_state(&meta).await.ok().map(|(map, plan)| (meta, map, plan)),
            None => None,
        };
        let Some((meta, map, Some(plan))) = state.filter(|(_, _, plan)| plan.is_some()) else {
            // Not the meta leader (any more): whoever is resumes from the last
            // recorded steps. Stop, so two drivers never work on one shard.
            stop_all(&mut running, &mut cleanup);
            continue;
        };
        if plan.state != PlanState::Running {
            // Paused or ended: moves stop where they are (their steps are safe
            // to re-run when resumed).
            stop_all(&mut running, &mut None);
        }
        if let Some(entry) = plan.cleanup.first().cloned()
            && cleanup.as_ref().is_none_or(|task| task.is_finished())
        {
            let (meta, map) = (meta.clone(), map.clone());
            cleanup = Some(tokio::spawn(async move { cleanup_one(&meta, &map, entry).await }));
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
            let (shard, move_key) = (m.shard, key(&m));
            running
                .insert(shard, (move_key, tokio::spawn(async move { execute(&node, &meta, &map, m).await })));
        }
    }
}

fn stop_all(running: &mut Running, cleanup: &mut Option<tokio::task::JoinHandle<()>>) {
    for (_, (_, task)) in running.drain() {
        task.abort();
    }
    if let Some(task) = cleanup.take() {
        task.abort();
    }
}

/// Moves to start now: not done, their shard idle, within the plan's limits
/// counting the moves already running.
fn startable(plan: &Plan, running: &Running) -> Vec<Move> {
    let mut per_node: HashMap<NodeId, u32> = HashMap::new();
    let mut in_flight = 0u32;
    let running_keys: Vec<MoveKey> = running.values().map(|(k, _)| *k).collect();
    for m in plan.moves.iter().filter(|m| running_keys.contains(&key(m))) {
        in_flight += 1;
        for n in m.nodes() {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let mut chosen = Vec::new();
    let mut shards: BTreeSet<ShardId> = running.keys().copied().collect();
    // Moves already under way first: they hold an extra replica.
    let mut candidates: Vec<&Move> =
        plan.moves.iter().filter(|m| m.step != MoveStep::Done && !shards.contains(&m.shard)).collect();
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
                    defer_cleanup(meta, map, &m).await.map(|()| (MoveStep::Done, m.bytes))
                }
                other => other.map(|()| (MoveStep::Done, m.bytes)),
            },
            MoveStep::Done => return,
        };
        match result {
            Ok((step, bytes)) => match record(meta, &m, |rec| {
                // Forward only: a slower, stale task never undoes a later step.
                rec.step = rec.step.max(step);
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
                // Retry backoff: the shard keeps this task's slot meanwhile, so a
                // failing move (a dead target) does not spin.
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
        match next.moves.iter_mut().find(|r| key(r) == key(m)) {
            Some(rec) if plan.state == PlanState::Running => change(rec),
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
        ..Default::default()
    };
    let reply = on_leader(map, m.shard, req, CATCH_UP_TIMEOUT).await?;
    Ok(reply.approx_bytes)
}

/// Step 2: voters = current − from + to, then the map says so.
async fn change_voters(node: &Node, meta: &Shard, map: &ClusterMap, m: &Move) -> Result<(), Error> {
    if let Some(to) = m.to {
        let (now, _) = meta_state(meta).await?;
        node_addr(&now, to)?;
    }
    let mut current = on_leader(map, m.shard, query(m.shard), STEP_TIMEOUT).await?;
    // Leadership leaves first: a leader that removes itself steps down only
    // after the change, and the shard then waits a whole election.
    if let Some(from) = m.from.filter(|&f| f == current.leader_id)
        && let Some(heir) = caught_up_heir(&current, from)
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
            set_voters: target.iter().copied().collect(),
            ..Default::default()
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

/// The voter other than `from` whose log is furthest along, if it is caught up
/// to within a few entries of the leader's.
fn caught_up_heir(membership: &ChangeMembershipResponse, from: NodeId) -> Option<NodeId> {
    let leader_last = membership.matched.get(&from).copied().unwrap_or(0);
    membership
        .voters
        .iter()
        .copied()
        .filter(|&v| v != from)
        .map(|v| (membership.matched.get(&v).copied().unwrap_or(0), v))
        .max()
        .filter(|&(matched, _)| matched + 16 >= leader_last)
        .map(|(_, v)| v)
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

/// Transfers every leadership `node` holds (meta shard included) to the most
/// caught-up other voter of each shard, concurrently; best effort: a shard
/// whose transfer fails hands leadership over when its move starts.
pub async fn move_leaderships_off(node: &Node, map: &ClusterMap, from: NodeId) {
    let lease = lease(node);
    let transfers = map.shards.keys().map(|&shard| async move {
        let membership = on_leader(map, shard, query(shard), STEP_TIMEOUT).await.ok()?;
        if membership.leader_id != from {
            return None;
        }
        let heir = caught_up_heir(&membership, from)?;
        Some((shard, leader_transfer::transfer(map, shard, from, heir, lease).await))
    });
    for (shard, result) in futures::future::join_all(transfers).await.into_iter().flatten() {
        if let Err(e) = result {
            tracing::warn!(shard, from, "moving leadership off a draining node: {e}");
        }
    }
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
async fn defer_cleanup(meta: &Shard, map: &ClusterMap, m: &Move) -> Result<(), Error> {
    let Some(from) = m.from else { return Ok(()) };
    let addr = node_addr(map, from)?;
    update_plan(meta, |current, _| {
        let Some(plan) = current else { return Err(Error::FailedPrecondition("no plan".into())) };
        let mut next = plan.clone();
        next.defer_cleanup(m.shard, from, &addr);
        Ok(next)
    })
    .await?;
    Ok(())
}

/// Tries to delete one replica left behind. Never a voter's: if the shard's
/// leader lists the node as a voter the entry is dropped (it is a member
/// again); a learner is first dropped from the group. Keeps the entry while
/// the leader or the node does not answer.
async fn cleanup_one(meta: &Shard, map: &ClusterMap, entry: Cleanup) {
    let Cleanup { shard, node, addr } = entry.clone();
    let done = async {
        // A plan committed since this entry was read may move the node back
        // in: then the replica is wanted, not left behind.
        if let (_, Some(plan)) = crate::cluster_admin::read_meta(meta)?
            && plan.is_active()
            && plan.wants(shard, node)
        {
            tracing::info!(shard, node, "left-behind replica is wanted by a move again: not deleting it");
            return Ok::<(), Error>(());
        }
        let membership = on_leader(map, shard, query(shard), STEP_TIMEOUT).await?;
        if membership.voters.contains(&node) {
            tracing::info!(shard, node, "left-behind replica is a voter again: not deleting it");
            return Ok(());
        }
        if membership.learners.contains(&node) {
            // The leader must stop replicating to it before its data goes:
            // a learner recreated later on that node would otherwise look like
            // a follower whose log went backwards.
            let req = ChangeMembershipRequest { shard, remove_learners: vec![node], ..Default::default() };
            on_leader(map, shard, req, STEP_TIMEOUT).await?;
        }
        admin_client(&addr)?
            .remove_replica(timed(RemoveReplicaRequest { target_node: node, shard }, STEP_TIMEOUT))
            .await
            .map_err(|s| {
                Error::Unavailable(format!("removing shard {shard} from node {node}: {}", s.message()))
            })?;
        tracing::info!(shard, node, "deleted a replica left behind by a move");
        Ok(())
    }
    .await;
    match done {
        Ok(()) => {
            let result = update_plan(meta, |current, _| {
                let Some(plan) = current else { return Err(Error::FailedPrecondition("no plan".into())) };
                let mut next = plan.clone();
                next.cleanup.retain(|c| *c != entry);
                Ok(next)
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(shard, node, "recording a replica cleanup: {e}");
            }
        }
        Err(e) => {
            tracing::debug!(shard, node, "left-behind replica not deleted yet: {e}");
            // Its node is usually down: pace the retries (the poll restarts us).
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

/// Marks joining nodes active, balances leaders, and marks the plan done.
async fn finish(node: &Node, meta: &Shard) -> Result<(), Error> {
    update_map(meta, |map| {
        // Joining nodes that got replicas; one that joined after the plan was
        // committed waits for the next.
        let holds = |id: NodeId| map.shards.values().any(|members| members.contains(&id));
        let joined: Vec<NodeId> = map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Joining && holds(n.id))
            .map(|n| n.id)
            .collect();
        if joined.is_empty() {
            return Ok(None);
        }
        let mut next = map.clone();
        for id in joined {
            next.nodes.get_mut(&id).expect("listed").state = NodeState::Active;
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
    ChangeMembershipRequest { shard, ..Default::default() }
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
        // No leader known (an election, or the node is down): a short retry
        // backoff inside the deadline.
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
