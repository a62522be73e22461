//! The cluster map: which nodes exist, how keys are cut into shards, and where
//! each shard's replicas live. The meta shard replicates it; every change bumps
//! `epoch`, which is what `WrongShard` errors and router caches compare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, NodeId, ShardId};

/// A node as the cluster map knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The gRPC address (host:port) peers and clients dial.
    pub addr: String,
    pub state: NodeState,
}

/// A node's role in placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Takes replicas.
    Active,
    /// Being emptied: placement skips it.
    Draining,
    /// Registered by `--join` / `admin add-node`: placement counts it, but it
    /// holds nothing until a rebalance moves replicas to it (then it is active).
    Joining,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Joining => "joining",
        })
    }
}

/// The whole cluster's layout at one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id chosen at `cluster init`; nodes refuse requests from other clusters.
    pub cluster_id: String,
    pub epoch: Epoch,
    /// Number of data shards (`1..=shard_count`), fixed at creation.
    pub shard_count: u32,
    /// Desired replicas per data shard.
    pub replication_factor: u32,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Replicas of every shard, the meta shard (0) included.
    pub shards: BTreeMap<ShardId, Vec<NodeId>>,
}

impl ClusterMap {
    /// The address of a node, if the map knows it.
    pub fn addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.addr.as_str())
    }
}
