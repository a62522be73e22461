//! # ringkv-node
//!
//! One `ringkv-node` process hosts replicas of many shards. Each replica is an
//! openraft group; all groups share one tokio runtime, one sled database, one
//! group-commit flusher and one HTTP/2 channel per peer.
//!
//! ```text
//!  gRPC (one port) ─┬─ KV     ── kv_service ─▶ Shard { proposer ─▶ Raft::client_write,
//!                   │                                  reader   ─▶ Raft::ensure_linearizable,
//!                   │                                  state (in-memory KvState) }
//!                   ├─ Admin  ── admin_service / bootstrap (cluster init)
//!                   └─ Raft   ── raft_service ─▶ the addressed shard's Raft
//!  Raft ─▶ transport (PeerPool: one channel per peer) ─▶ peers' Raft service
//!  Raft ─▶ store (sled log + vote, snapshot files, Flusher: one fsync per round)
//! ```
//!
//! Modules:
//! - [`command`]: what a log entry carries; [`state_machine`]: the pure KV state
//!   machine that applies it.
//! - [`store`]: sled log store, group-commit flusher, snapshot files, openraft
//!   state-machine adapter.
//! - [`transport`] (with its per-peer pipe) / [`raft_service`]: the
//!   two ends of node-to-node Raft RPCs.
//! - [`shard`], [`proposer`], [`reader`]: a hosted replica and the batching in
//!   front of its Raft group.
//! - [`node`]: the set of hosted replicas and the node's durable identity.
//! - [`kv_service`], [`admin_service`], [`bootstrap`]: the gRPC services;
//!   [`request`]: the checks and conversion of a KV request into an op;
//!   [`backup`]: a shard's half of backup and restore.
//! - [`expiry`]: the leader's background deletion of expired keys.
//! - [`memory`]: the node's memory budget (writes that add data refused at it).
//! - [`server`], [`cli`], [`config`]: running a node.
//!
//! Invariants the whole crate keeps:
//! - A write is acknowledged only after a quorum has it durably in its log and the
//!   leader applied it.
//! - Apply is deterministic: its only clock is the one the leader put in the entry.
//! - Nothing from the network or the disk is unwrapped; a damaged snapshot stops
//!   the node with an error naming the file.
//!
//! ## Caveats / not done yet
//! - No rebalancing, leader transfer or replica removal yet (later issues).
//! - `WrongShard` carries epoch 0: nodes do not track the cluster map's epoch yet.

pub mod admin_service;
pub mod backup;
pub mod bootstrap;
pub mod cli;
pub mod cluster_admin;
pub mod codec;
pub mod command;
pub mod config;
pub mod driver;
pub mod error;
pub mod events;
pub mod expiry;
pub mod handoff;
pub mod health;
pub mod kv_service;
pub mod leader_transfer;
pub mod membership;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod proposer;
pub mod raft_service;
pub mod raft_types;
pub mod reader;
pub mod request;
pub mod server;
pub mod shard;
pub mod state_machine;
pub mod store;
pub mod time;
pub mod transport;
pub mod watcher;
