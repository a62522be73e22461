//! # ringkv-core
//!
//! The pure core shared by the node, the router and the client: the words of the
//! protocol as types, where keys and replicas are placed, the cluster map, and the
//! request limits. Nothing here knows about tokio, tonic or sled, so all of it is
//! unit- and table-tested without a runtime.
//!
//! - [`ids`]: `NodeId`, `ShardId`, `Epoch`, `Version`.
//! - [`placement`]: key → shard by hash arcs, shard → replicas on the virtual-node
//!   ring (DESIGN §2).
//! - [`cluster_map`]: the cluster map the meta shard replicates.
//! - [`rebalance`]: the moves from the map's placement to the ring's, and the
//!   committed plan the meta shard stores.
//! - [`limits`]: validation of keys, values and TTLs, shared by every entry point so
//!   that a bad request is refused the same way everywhere.
//!
//! ## Caveats / not done yet
//! - Node weights exist in the placement model but no CLI sets them yet.

pub mod cluster_map;
pub mod ids;
pub mod limits;
pub mod placement;
pub mod rebalance;

pub use cluster_map::{ClusterMap, NodeInfo, NodeState};
pub use ids::{Epoch, META_SHARD, NodeId, ShardId, Version};
