//! The protocol's identifiers. Aliases rather than newtypes: they cross the wire
//! as plain integers and openraft wants `NodeId = u64`.

/// A `ringkv-node` process, unique in its cluster, never reused. 0 is never a valid
/// id (the wire uses 0 for "unknown").
pub type NodeId = u64;

/// A shard: one arc of the key-hash ring and one Raft group. Data shards are
/// `1..=shard_count`; [`META_SHARD`] holds the cluster map.
pub type ShardId = u32;

/// The cluster map's revision, bumped on every change to it.
pub type Epoch = u64;

/// A key's revision: the shard's Raft log index of the write that last changed it.
pub type Version = u64;

/// The shard that replicates the cluster map.
pub const META_SHARD: ShardId = 0;
