//! Handing leaderships off before a graceful shutdown (SIGTERM, or stdin
//! closing under a supervisor): for every shard this node leads, the meta
//! leader moves the leadership to the voter whose log is most complete (the
//! usual `transfer-leader`, see [`crate::leader_transfer`]), so the shard
//! pauses for about one lease instead of waiting out an election timeout
//! after the node is gone, and requests held meanwhile are redirected, not
//! failed.
//!
//! Bounded by [`HANDOFF_DEADLINE`]: a node whose peers are unreachable still
//! stops. Shards whose hand-off failed simply elect a new leader once the node
//! is gone, as after a crash.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use ringkv_client::{Client, ClientOptions};
use ringkv_core::NodeId;

use crate::node::Node;
use crate::shard::Shard;

/// The longest a shutdown waits for its hand-offs.
pub const HANDOFF_DEADLINE: Duration = Duration::from_secs(10);

/// Moves every leadership of `node` to another voter, concurrently, within
/// [`HANDOFF_DEADLINE`]; logs what did not move.
pub async fn leaderships(node: &Node) {
    let led: Vec<Arc<Shard>> = node.shards().into_iter().filter(|shard| shard.is_leader()).collect();
    if led.is_empty() {
        return;
    }
    let options = ClientOptions { request_timeout: HANDOFF_DEADLINE, ..node.client_options() };
    let client = match Client::connect(vec![node.addr().to_string()], options) {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(%err, "cannot hand leaderships off");
            return;
        }
    };
    tracing::info!(node = node.id(), shards = led.len(), "handing leaderships off before stopping");
    let transfers = led.iter().map(|shard| {
        let client = client.clone();
        async move {
            let Some(target) = best_successor(shard, node.id()) else {
                return (shard.id, Err("no other voter".to_string()));
            };
            let moved = client.transfer_leader(shard.id, target).await.map_err(|err| err.to_string());
            (shard.id, moved.map(|_| ()))
        }
    });
    match tokio::time::timeout(HANDOFF_DEADLINE, futures::future::join_all(transfers)).await {
        Ok(results) => {
            for (shard, result) in results {
                if let Err(err) = result {
                    tracing::warn!(shard, %err, "leadership not handed off; the shard will elect");
                }
            }
        }
        Err(_) => tracing::warn!(?HANDOFF_DEADLINE, "leadership hand-off ran out of time; stopping anyway"),
    }
}

/// The voter other than `me` whose log matches the leader's furthest (the
/// one that catches up soonest), if this replica still leads.
fn best_successor(shard: &Shard, me: NodeId) -> Option<NodeId> {
    let metrics = shard.raft.metrics().borrow().clone();
    if metrics.state != ServerState::Leader {
        return None;
    }
    let matched = |node: &NodeId| {
        metrics.replication.as_ref().and_then(|r| r.get(node).cloned().flatten()).map_or(0, |id| id.index)
    };
    shard.voters().into_iter().filter(|&node| node != me).max_by_key(matched)
}
