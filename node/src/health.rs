//! What a node reports on `grpc.health.v1`, for load balancers and
//! readiness probes: `SERVING` for the whole server (service `""`) and for
//! `ringkv.v1.KV` only while the node is useful to clients.
//!
//! - **Not yet loaded**: until the node belongs to a cluster and every replica
//!   it hosted at start has applied the log it had on disk and knows a leader,
//!   so a restarted node is not sent requests it would answer slowly or
//!   redirect. Once loaded it stays so: a shard's election is not the node's
//!   unreadiness (clients and routers follow leaders themselves).
//! - **Draining**: while the cluster map says the node is draining, so that
//!   load balancers move away from a node being emptied.
//! - **Shutting down**: from the moment the graceful shutdown starts.
//!
//! `ringkv.v1.Admin` stays `SERVING` throughout: operators need it to watch
//! and undo a drain. The state is checked every [`CHECK_EVERY`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::ShardId;
use ringkv_proto::v1::kv_server::KvServer;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::kv_service::KvService;
use crate::node::Node;

/// How often the state is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How often the node asks the cluster whether it is draining (once loaded).
const DRAIN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Keeps the node's health statuses current until the shutdown starts, then
/// reports `NOT_SERVING`.
pub async fn run(node: Arc<Node>, reporter: HealthReporter, mut stopping: watch::Receiver<bool>) {
    report(&reporter, false).await;
    // What each replica hosted at start must have applied to count as loaded.
    let to_apply: BTreeMap<ShardId, u64> =
        node.shards().iter().map(|s| (s.id, s.status().last_log)).collect();
    let status_client =
        ringkv_client::Client::connect(vec![node.addr().to_string()], node.client_options()).ok();
    let mut loaded = false;
    let mut draining = false;
    let mut drain_checked = tokio::time::Instant::now();
    let mut serving = false;
    loop {
        if !loaded {
            loaded = node.cluster().is_some()
                && node.shards().iter().all(|shard| {
                    let status = shard.status();
                    status.leader_id != 0
                        && status.last_applied >= to_apply.get(&shard.id).copied().unwrap_or(0)
                });
            if loaded {
                tracing::info!(node = node.id(), "replicas loaded: serving");
            }
        }
        if loaded && drain_checked.elapsed() >= DRAIN_CHECK_EVERY {
            drain_checked = tokio::time::Instant::now();
            if let Some(client) = &status_client
                && let Ok(status) = client.cluster_status().await
            {
                draining = status.nodes.iter().any(|n| n.id == node.id() && n.state == "draining");
            }
        }
        let now_serving = loaded && !draining;
        if now_serving != serving {
            serving = now_serving;
            report(&reporter, serving).await;
        }
        tokio::select! {
            // A periodic check: readiness is derived from Raft metrics and
            // the cluster map, which nothing here is notified of.
            () = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stopping.wait_for(|stop| *stop) => break,
        }
    }
    report(&reporter, false).await;
}

async fn report(reporter: &HealthReporter, serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    if serving {
        reporter.set_serving::<KvServer<KvService>>().await;
    } else {
        reporter.set_not_serving::<KvServer<KvService>>().await;
    }
}
