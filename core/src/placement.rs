//! Placement (DESIGN §2). STUB: signatures only; the implementation and its table
//! tests are being written.

use std::collections::BTreeMap;

use crate::ids::{NodeId, ShardId};

/// Virtual points per unit of node weight on the replica ring.
pub const DEFAULT_VNODES: u32 = 64;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementNode {
    pub id: NodeId,
    /// Relative capacity; 1 = normal. A weight of 0 takes no replicas.
    pub weight: u32,
    /// Draining nodes are skipped.
    pub draining: bool,
}

impl PlacementNode {
    /// A normal, active node of weight 1.
    pub fn active(id: NodeId) -> Self {
        PlacementNode { id, weight: 1, draining: false }
    }
}

/// The data shard (`1..=shard_count`) that owns `key`.
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    let _ = (key, shard_count);
    todo!()
}

/// The virtual-node ring of replica placement.
#[derive(Debug, Clone)]
pub struct Ring {
    _points: Vec<(u64, NodeId)>,
}

impl Ring {
    /// Builds the ring with [`DEFAULT_VNODES`] points per unit of weight.
    pub fn new(nodes: &[PlacementNode]) -> Self {
        Self::with_vnodes(nodes, DEFAULT_VNODES)
    }

    /// Builds the ring with `vnodes` points per unit of weight.
    pub fn with_vnodes(nodes: &[PlacementNode], vnodes: u32) -> Self {
        let _ = (nodes, vnodes);
        todo!()
    }

    /// The first `replicas` distinct non-draining nodes clockwise from the shard's
    /// point; fewer when the ring has fewer nodes.
    pub fn replicas(&self, shard: ShardId, replicas: usize) -> Vec<NodeId> {
        let _ = (shard, replicas);
        todo!()
    }
}

/// Desired replicas of every shard: the meta shard (0) on up to `meta_replicas`
/// nodes, data shards `1..=shard_count` on `replicas` nodes each.
pub fn place_all(
    nodes: &[PlacementNode],
    shard_count: u32,
    replicas: usize,
    meta_replicas: usize,
) -> BTreeMap<ShardId, Vec<NodeId>> {
    let _ = (nodes, shard_count, replicas, meta_replicas);
    todo!()
}
