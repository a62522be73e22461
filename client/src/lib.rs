//! # ringkv-client
//!
//! The Rust client of ringkv (DESIGN §3, §6) and, in `main.rs`/`cli.rs`, the
//! `ringkv` command line built on it.
//!
//! - [`client`]: [`Client`], a handle on a cluster given as a few node or router
//!   addresses: `get`, `put`, `delete`, `touch`, `increment`, and the admin calls
//!   `init_cluster` and `cluster_status`.
//! - [`error`]: [`Error`], whose variants say what the caller should do, and the
//!   one mapping from a gRPC status to it.
//! - `routing` (private): the routing and retry policy as plain Rust — where an
//!   attempt goes, what follows a failed one — tested without a runtime.
//!
//! ## Routing
//!
//! Every node serves the KV service, but only for the shards it leads. A node that
//! hosts a replica of the key's shard without leading it answers `NotLeader`
//! (with the leader's address when it knows one); a node that hosts no replica
//! answers `WrongShard`. The client keeps two hints, shared by all clones:
//!
//! - a **leader cache**, shard → address, filled from `NotLeader` answers, from
//!   writes and linearizable reads that succeeded, and from `ClusterStatus`;
//! - the **last good address**, the one that answered last.
//!
//! A request goes to its shard's cached leader, else to the last good address, else
//! to the first address given. Mapping a key to its shard needs the cluster's shard
//! count; the client learns it from `ClusterStatus` (in the background after its
//! first redirect, or at once with [`Client::refresh_routes`]) or takes it from
//! [`ClientOptions::shard_count`]. Until then the leader cache only serves the
//! redirect inside one operation, and the last good address does the rest.
//!
//! ## Retries
//!
//! Each operation has one overall deadline ([`ClientOptions::request_timeout`],
//! 10 s by default) and at most [`ClientOptions::max_attempts`] attempts. After a
//! failed attempt:
//!
//! | answer | next attempt |
//! | --- | --- |
//! | `NotLeader` naming a leader | that leader, at once (after a backoff if this operation already tried it: hints are stale while leadership moves) |
//! | `NotLeader` without a leader | the next address, after a backoff (an election is under way) |
//! | `WrongShard` | the next address, at once while untried ones remain |
//! | `UNAVAILABLE`, timeout, no connection | the next address, after a backoff |
//! | anything else | none: the error is returned |
//!
//! Backoff starts at 20 ms and doubles up to 500 ms. A read attempt is bounded by
//! [`ClientOptions::attempt_timeout`] (also sent as `grpc-timeout`), so a hung node
//! costs a read one attempt, not the whole deadline.
//!
//! **What is not retried.** Reads are retried freely. A write is retried only when
//! the failed attempt surely did not execute: the node answered `NotLeader` or
//! `WrongShard` (it refuses those before proposing), or no connection could be
//! made. A write that timed out, lost its connection mid-flight or met
//! `UNAVAILABLE` after reaching a node may have been applied, so its error goes back
//! to the caller; retrying it blindly could apply it twice (an increment counted
//! twice, a conditional put failing against its own earlier success).
//! [`Error::is_retryable`] and [`Error::surely_not_applied`] let a caller make the
//! same distinction.
//!
//! Requests are validated locally with `ringkv_core::limits` before anything is
//! sent, so an empty key or an oversized value fails fast and the same way as on
//! the node.
//!
//! ## Caveats / not done yet
//!
//! - No idempotent request ids yet: a write whose outcome is unknown is returned as
//!   an error instead of being retried (DESIGN §7).
//! - Backoff has no jitter; many clients retrying in step could pile onto the same
//!   node after an election.
//! - The channel cache grows with every address ever used (seeds and redirect
//!   targets) and is never pruned; fine for a cluster's handful of nodes.
//! - The leader cache is invalidated only by errors; after a rebalance, requests
//!   pay one redirect per shard until it has caught up. The cluster map epoch from
//!   `WrongShard` is not used yet.
//! - The shard count is learned once; a future shard split would need it refreshed.
//! - No TLS, no bearer tokens, no `Watch`/`Publish`/`Subscribe` yet.
//! - Mapping a key to its shard relies on `ringkv_core::placement::shard_for_key`.

pub mod client;
pub mod error;
mod routing;

pub use client::{
    Client, ClientOptions, Condition, Consistency, DeleteResult, GetResult, IncrementResult, PutOptions,
    PutResult, TouchResult,
};
pub use error::Error;

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
