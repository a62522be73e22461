//! A node's Prometheus metrics (`--metrics-listen`): the KV requests it
//! served ([`ringkv_metrics::Requests`]), per shard it hosts the Raft and
//! state-machine numbers, refreshed at scrape time from openraft's metrics
//! and the state machine, and the storage flusher's group-commit batches and
//! sync latency. Leader changes are counted by [`watch_leaders`], which polls
//! each replica's leader every [`LEADER_POLL`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use ringkv_core::ShardId;
use ringkv_metrics::{Registry, Requests, ShardLabels};

use crate::node::Node;

/// How often [`watch_leaders`] looks at each replica's leader.
pub const LEADER_POLL: Duration = Duration::from_millis(250);

/// The node's metric families.
#[derive(Clone)]
pub struct NodeMetrics {
    pub requests: Requests,
    term: Family<ShardLabels, Gauge>,
    is_leader: Family<ShardLabels, Gauge>,
    applied: Family<ShardLabels, Gauge>,
    last_log: Family<ShardLabels, Gauge>,
    apply_lag: Family<ShardLabels, Gauge>,
    keys: Family<ShardLabels, Gauge>,
    bytes: Family<ShardLabels, Gauge>,
    leader_changes: Family<ShardLabels, Counter>,
    proposals: Family<ShardLabels, Counter>,
    proposed_ops: Family<ShardLabels, Counter>,
    log_entries: Family<ShardLabels, Gauge>,
    snapshot_index: Family<ShardLabels, Gauge>,
    snapshot_bytes: Family<ShardLabels, Gauge>,
    open_watches: Gauge,
    open_subscriptions: Gauge,
    /// The leader each replica had at the last poll.
    leaders: Arc<Mutex<BTreeMap<ShardId, u64>>>,
    /// Each proposer's totals at the last scrape (a recreated replica's
    /// proposer starts again from 0).
    proposed: Arc<Mutex<BTreeMap<ShardId, (u64, u64)>>>,
}

impl NodeMetrics {
    /// Registers every family of a node (the flusher's histograms come from
    /// `node`'s storage).
    pub fn register(registry: &mut Registry, node: &Node) -> NodeMetrics {
        let requests = Requests::register(registry);
        let metrics = NodeMetrics {
            requests,
            term: Family::default(),
            is_leader: Family::default(),
            applied: Family::default(),
            last_log: Family::default(),
            apply_lag: Family::default(),
            keys: Family::default(),
            bytes: Family::default(),
            leader_changes: Family::default(),
            proposals: Family::default(),
            proposed_ops: Family::default(),
            log_entries: Family::default(),
            snapshot_index: Family::default(),
            snapshot_bytes: Family::default(),
            open_watches: Gauge::default(),
            open_subscriptions: Gauge::default(),
            leaders: Default::default(),
            proposed: Default::default(),
        };
        let shard_gauges = [
            ("ringkv_shard_term", "The replica's Raft term", &metrics.term),
            ("ringkv_shard_is_leader", "1 if this node leads the shard", &metrics.is_leader),
            ("ringkv_shard_applied_index", "Last log index the replica applied", &metrics.applied),
            ("ringkv_shard_last_log_index", "Last index in the replica's log", &metrics.last_log),
            (
                "ringkv_shard_apply_lag",
                "Entries in the replica's log not applied yet (last log index - applied index)",
                &metrics.apply_lag,
            ),
            (
                "ringkv_shard_keys",
                "Keys in the replica's state machine (expired ones included)",
                &metrics.keys,
            ),
            ("ringkv_shard_bytes", "Approximate bytes of keys and values in the replica", &metrics.bytes),
            (
                "ringkv_shard_log_entries",
                "Entries in the replica's Raft log (last index - last purged index)",
                &metrics.log_entries,
            ),
            (
                "ringkv_shard_snapshot_index",
                "Log index of the replica's last snapshot (0: none)",
                &metrics.snapshot_index,
            ),
            (
                "ringkv_shard_snapshot_bytes",
                "Bytes of the replica's current snapshot file (0: none yet)",
                &metrics.snapshot_bytes,
            ),
        ];
        for (name, help, family) in shard_gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "ringkv_shard_leader_changes",
            "Times the replica saw its shard's leader change (polled every 250 ms)",
            metrics.leader_changes.clone(),
        );
        registry.register(
            "ringkv_shard_proposals",
            "Raft entries this node proposed for the shard as its leader",
            metrics.proposals.clone(),
        );
        registry.register(
            "ringkv_shard_proposed_ops",
            "Client operations in those entries (ops / proposals = the batching)",
            metrics.proposed_ops.clone(),
        );
        registry.register(
            "ringkv_open_watches",
            "Watch streams open on this node",
            metrics.open_watches.clone(),
        );
        registry.register(
            "ringkv_open_subscriptions",
            "Subscribe streams open on this node",
            metrics.open_subscriptions.clone(),
        );
        let flush = node.flush_histograms();
        registry.register(
            "ringkv_flush_batch_size",
            "Log appends and other waiters made durable by one storage flush round (group commit)",
            flush.batch_size,
        );
        registry.register(
            "ringkv_flush_sync_seconds",
            "Time of one storage flush round (sled flush, blob fsyncs, fdatasync)",
            flush.sync_seconds,
        );
        metrics
    }

    /// Sets the scrape-time values from the replicas the node hosts now.
    pub fn refresh(&self, node: &Node) {
        for family in [
            &self.term,
            &self.is_leader,
            &self.applied,
            &self.last_log,
            &self.apply_lag,
            &self.keys,
            &self.bytes,
        ] {
            family.clear();
        }
        let mut proposed = self.proposed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for shard in node.shards() {
            let status = shard.status();
            let labels = ShardLabels { shard: shard.id };
            let set = |family: &Family<ShardLabels, Gauge>, value: u64| {
                family.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&self.term, status.term);
            set(&self.is_leader, u64::from(status.role == "leader"));
            set(&self.applied, status.last_applied);
            set(&self.last_log, status.last_log);
            set(&self.apply_lag, status.last_log.saturating_sub(status.last_applied));
            set(&self.keys, status.keys);
            set(&self.bytes, status.approx_bytes);
            let raft = shard.raft.metrics().borrow().clone();
            let purged = raft.purged.map_or(0, |id| id.index);
            set(&self.log_entries, status.last_log.saturating_sub(purged));
            set(&self.snapshot_index, raft.snapshot.map_or(0, |id| id.index));
            set(&self.snapshot_bytes, node.snapshot_bytes(shard.id));
            let (proposals, ops) = shard.proposer.counts();
            let (seen_proposals, seen_ops) = proposed.insert(shard.id, (proposals, ops)).unwrap_or((0, 0));
            // A count below the last one is a new proposer (the replica was
            // recreated): all of it is new.
            let new = |now: u64, seen: u64| if now >= seen { now - seen } else { now };
            self.proposals.get_or_create(&labels).inc_by(new(proposals, seen_proposals));
            self.proposed_ops.get_or_create(&labels).inc_by(new(ops, seen_ops));
        }
        let open = &node.open_streams;
        self.open_watches.set(open.watches.load(Ordering::Relaxed) as i64);
        self.open_subscriptions.set(open.subscriptions.load(Ordering::Relaxed) as i64);
    }

    /// Counts the leader changes seen since the last call.
    fn poll_leaders(&self, node: &Node) {
        let mut leaders = self.leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for shard in node.shards() {
            let leader = shard.status().leader_id;
            let previous = leaders.insert(shard.id, leader);
            if previous.is_some_and(|previous| previous != leader) && leader != 0 {
                self.leader_changes.get_or_create(&ShardLabels { shard: shard.id }).inc();
            }
        }
    }
}

/// Counts leader changes until aborted: a change is a replica seeing a new
/// leader (an election with no winner yet is not one).
pub async fn watch_leaders(node: Arc<Node>, metrics: NodeMetrics) {
    loop {
        metrics.poll_leaders(&node);
        // A poll, not a wait: openraft's metrics are a watch channel per
        // shard, and one timer is cheaper than a task per replica.
        tokio::time::sleep(LEADER_POLL).await;
    }
}
