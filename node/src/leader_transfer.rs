//! Moving a shard's leadership to a chosen voter, which openraft 0.9 has no API
//! for (guide §10). The coordinator (the meta leader, for `transfer-leader`,
//! `balance-leaders` and the placement driver) runs:
//!
//! 1. `HOLD` on every member but the target: the leader stops proposing,
//!    confirming reads and heartbeating (any AppendEntries would renew the
//!    followers' lease on it); the other followers stop campaigning.
//! 2. Wait one leader lease (`election_timeout_max`) plus a margin, so the
//!    followers stop refusing votes on the old leader's behalf.
//! 3. `CAMPAIGN` on the target: it starts an election now and wins it (its log
//!    is as long as anyone's: the leader held its proposals).
//! 4. `RELEASE` everywhere, whatever happened. Requests held on the old leader
//!    then fail with `NotLeader` (never proposed) and clients follow the hint.
//!
//! Cost: the shard takes no writes or linearizable reads for about one lease
//! (300 ms by default). Every `HOLD` also ends by itself after `hold_ms`, so a
//! coordinator that dies mid-transfer leaves no replica held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use ringkv_core::{ClusterMap, NodeId, ShardId};
use ringkv_proto::v1::leader_transfer_step_request::Step;
use ringkv_proto::v1::{LeaderTransferStepRequest, LeaderTransferStepResponse};

use crate::bootstrap::admin_client;
use crate::error::Error;
use crate::shard::Shard;

/// How long a `HOLD` lasts at most (the coordinator releases it sooner).
const HOLD_MS: u32 = 5_000;
/// How long the target's campaign may take.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(3);
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Generations of holds, so that an old hold's timer does not end a newer one.
static HOLDS: AtomicU64 = AtomicU64::new(0);

/// Runs one step on this node's replica of the shard.
pub async fn step(shard: &Arc<Shard>, step: Step, hold_ms: u32) -> Result<LeaderTransferStepResponse, Error> {
    match step {
        Step::Hold => {
            let generation = HOLDS.fetch_add(1, Ordering::Relaxed) + 1;
            shard.elect.hold_generation.store(generation, Ordering::SeqCst);
            shard.elect.refresh();
            if shard.is_leader() {
                shard.hold.send_replace(true);
                shard.raft.runtime_config().heartbeat(false);
            }
            let (held, ms) =
                (shard.clone(), u64::from(if hold_ms == 0 { HOLD_MS } else { hold_ms.min(HOLD_MS) }));
            // The hold's expiry: a timer by design (the safety net if the
            // coordinator never releases it).
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if held.elect.hold_generation.load(Ordering::SeqCst) == generation {
                    release(&held);
                }
            });
        }
        Step::Campaign => {
            shard
                .raft
                .trigger()
                .elect()
                .await
                .map_err(|e| Error::Unavailable(format!("shard {}: cannot campaign: {e}", shard.id)))?;
            shard
                .raft
                .wait(Some(CAMPAIGN_TIMEOUT))
                .state(ServerState::Leader, "leader transfer")
                .await
                .map_err(|e| Error::Unavailable(format!("shard {}: campaign did not win: {e}", shard.id)))?;
        }
        Step::Release => release(shard),
    }
    let status = shard.status();
    Ok(LeaderTransferStepResponse { role: status.role, term: status.term })
}

fn release(shard: &Shard) {
    shard.elect.hold_generation.store(0, Ordering::SeqCst);
    shard.elect.refresh();
    shard.raft.runtime_config().heartbeat(true);
    shard.hold.send_replace(false);
}

/// Makes `to` the leader of `shard`; returns the leader before. `leader` is the
/// current leader (known by the caller), `lease` the followers' leader lease.
pub async fn transfer(
    map: &ClusterMap,
    shard: ShardId,
    leader: NodeId,
    to: NodeId,
    lease: Duration,
) -> Result<(), Error> {
    let members = map.shards.get(&shard).cloned().unwrap_or_default();
    if !members.contains(&to) {
        return Err(Error::FailedPrecondition(format!("node {to} holds no replica of shard {shard}")));
    }
    if leader == to {
        return Ok(());
    }
    let others: Vec<NodeId> = members.iter().copied().filter(|&m| m != to).collect();
    let held = futures::future::join_all(
        others.iter().map(|&m| async move { (m, send(map, shard, m, Step::Hold).await) }),
    )
    .await;
    // The leader must be held (its heartbeats would keep its lease alive). A
    // follower that cannot be reached is most likely down and cannot campaign;
    // if it is only cut off from us and wins instead, the transfer reports
    // failure and nothing is lost.
    let leader_held = held.iter().find(|(m, _)| *m == leader).map(|(_, r)| r.as_ref().map(|_| ()));
    for (m, e) in held.iter().filter_map(|(m, r)| r.as_ref().err().map(|e| (m, e))) {
        tracing::warn!(shard, node = m, "leader transfer: could not hold: {e}");
    }
    let result = match leader_held {
        Some(Err(e)) => Err(e.clone()),
        _ => {
            // The followers' lease is a span of time since they last heard the
            // leader; nothing signals its end, so wait it out.
            tokio::time::sleep(lease).await;
            send(map, shard, to, Step::Campaign).await.map(|_| ())
        }
    };
    // Release everyone, the target included (it may have been held by an
    // earlier, failed transfer).
    let released =
        futures::future::join_all(members.iter().map(|&m| send(map, shard, m, Step::Release))).await;
    for e in released.into_iter().filter_map(Result::err) {
        tracing::warn!(shard, "releasing a leader-transfer hold: {e} (it expires by itself)");
    }
    result
}

async fn send(
    map: &ClusterMap,
    shard: ShardId,
    node: NodeId,
    step: Step,
) -> Result<LeaderTransferStepResponse, Error> {
    let addr =
        map.addr(node).ok_or_else(|| Error::FailedPrecondition(format!("node {node} is not in the map")))?;
    let mut req = tonic::Request::new(LeaderTransferStepRequest {
        target_node: node,
        shard,
        step: step as i32,
        hold_ms: HOLD_MS,
    });
    req.set_timeout(STEP_TIMEOUT);
    admin_client(addr)?
        .leader_transfer_step(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Error::Unavailable(format!("shard {shard}, node {node}: {:?}: {}", step, s.message())))
}
