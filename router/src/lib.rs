//! # ringkv-router
//!
//! The stateless front door of a ringkv cluster (DESIGN §3). Applications talk to
//! one gRPC endpoint — any router, behind any round-robin load balancer — and never
//! learn about shards, leaders or failovers.
//!
//! A router is a [`ringkv_client::Client`] behind a gRPC server: the client holds
//! the cluster map (learned from the meta shard) and a per-shard leader cache,
//! forwards each request to its shard's leader, follows `NotLeader`, refreshes the
//! map on `WrongShard`, and retries through elections inside the request's
//! deadline. The router adds:
//!
//! - [`kv`]: the `KV` service, each RPC validated and then handed to the client;
//! - [`watch_stream`]: `Watch` of a key or a prefix over every shard, merged,
//!   with resume tokens that work on any router;
//! - [`hub`]: pub/sub, one upstream subscription per channel shared by all the
//!   router's subscribers of it;
//! - [`admin`]: the `Admin` service, forwarding `InitCluster` and `ClusterStatus`
//!   to the meta shard's leader (node-internal RPCs are refused);
//! - [`metrics`]: Prometheus `/metrics` (`--metrics-listen`): requests by rpc
//!   and code, latency, retries by reason;
//! - [`watcher`]: a task that long-polls the meta shard for a newer cluster map,
//!   so a map change reaches the router at once rather than on the next error;
//! - [`error`]: the one mapping from client errors to gRPC statuses;
//! - [`server`]: `serve(listener, config, shutdown)`, with `grpc.health.v1` and
//!   server reflection on the same port; [`cli`]: the `ringkv-router` binary.
//!
//! Invariants: the router stores nothing on disk and holds no state a restart
//! would lose — the map and the leader cache are hints rebuilt from the cluster.
//! Several routers answer identically because every read and write is decided by
//! the shard's leader, never by a router. A write whose outcome the router cannot
//! know (the leader went away mid-request) is answered `UNAVAILABLE` or
//! `DEADLINE_EXCEEDED` and never retried blindly.
//!
//! ## Caveats / not done yet
//! - The incoming request's own gRPC deadline is not propagated: every request
//!   gets the router's `--request-timeout-ms`.
//! - No TLS or bearer tokens yet (issue 8).

pub mod admin;
pub mod cli;
pub mod error;
pub mod hub;
pub mod kv;
pub mod metrics;
pub mod server;
pub mod watch_stream;
pub mod watcher;

pub use server::{RouterConfig, serve};
