//! # ringkv-client
//!
//! The Rust client of ringkv (DESIGN §3, §6) and, in `main.rs`/`cli.rs`, the
//! `ringkv` command line built on it. Give it a few node or router addresses; it
//! finds each key's shard leader, follows redirects, refreshes its cluster map and
//! retries, all inside one deadline per call, and returns one error enum whose
//! variants say what to do.
//!
//! ```no_run
//! use ringkv_client::{Client, ClientOptions, Consistency, PutOptions};
//!
//! # async fn example() -> Result<(), ringkv_client::Error> {
//! let addrs = vec!["10.0.0.1:7001".to_string(), "10.0.0.2:7001".to_string()];
//! let client = Client::connect(addrs, ClientOptions::default())?;
//!
//! let session = PutOptions { ttl_ms: 30_000, ..PutOptions::default() };
//! client.put("session:42", "alice", session).await?;
//! if let Some(got) = client.get("session:42", Consistency::Linearizable).await? {
//!     println!("{:?} at version {}, {:?} ms to live", got.value, got.version, got.ttl_ms);
//! }
//! let hits = client.increment("hits:42", 1, 0).await?;
//! println!("hit number {}", hits.value);
//! # Ok(())
//! # }
//! ```
//!
//! ## Contents
//!
//! - [`client`]: [`Client`] (`get`, `put`, `delete`, `touch`, `increment`; the
//!   admin calls `init_cluster`, `cluster_status`; the map calls `epoch`,
//!   `refresh_map`, `wait_for_map_change`), [`ClientOptions`] and [`Routing`].
//! - [`error`]: [`Error`], and the one mapping from a gRPC status to it.
//! - [`backup`]: `backup_shard` / `restore_shard`, one shard's half of
//!   `ringkv admin backup` / `restore`, on the shard's leader.
//! - `route_table` (private): the cluster map as the client routes by it, the
//!   leader cache, and the order in which a request tries addresses.
//! - `routing` (private): the retry policy, a pure function from (operation,
//!   error, table) to the next step, table-tested without a runtime or a clock.
//!
//! ## Routing a request
//!
//! 1. The request is checked with `ringkv_core::limits` first, so an empty key or
//!    an oversized value fails at once, the same way as on a node.
//! 2. The key's shard is `ringkv_core::placement::shard_for_key(key, shard_count)`,
//!    with the shard count from the cluster map (or
//!    [`ClientOptions::shard_count`] before the first map).
//! 3. The shard's *candidates*, best first: its cached leader, its other replicas
//!    (in the map's order), then the seed addresses the client was given. A
//!    stale read takes the replicas in rotation instead, so successive stale
//!    reads spread over a shard's replicas, and falls back to the others.
//! 4. The request goes to the first candidate; what follows a failure is in
//!    [Retries](#retries).
//!
//! The **leader cache** (shard → address) is filled from the map, from
//! `NotLeader` hints and from writes and linearizable reads that succeeded; an
//! entry is dropped when its address fails or denies leading.
//!
//! ### Nodes or routers
//!
//! A node serves the KV service for the shards it leads and redirects the rest; a
//! router (`ringkv-router`) serves every shard. The client works with either as
//! seeds; [`ClientOptions::routing`] says how:
//!
//! - [`Routing::Auto`] (default): route directly to the nodes once the seeds
//!   prove to be nodes — a seed's address is listed in the cluster map, or a
//!   seed answered `NotLeader`/`WrongShard`, which routers never send. Until then,
//!   and for good when the seeds are routers, every request goes to the seeds
//!   (the one that answered last first). So an application given router
//!   addresses talks only to routers, even if the nodes are unreachable from it,
//!   and one given node addresses talks to each shard's leader.
//! - [`Routing::Direct`]: always route by the map; seeds only while there is no
//!   map or when every replica failed. The router uses this with node seeds.
//! - [`Routing::ViaSeeds`]: always send to the seeds; no map is fetched unless
//!   asked for.
//!
//! Sending to a router is always correct: it routes and retries itself. The
//! seeds therefore end every candidate list.
//!
//! ### The cluster map
//!
//! The map (epoch, shard count, node addresses, each shard's replicas and
//! leader) comes from `ClusterStatus`, which only the meta shard's leader answers:
//! the client sends it like a request for shard 0, following `NotLeader` to the
//! meta leader and moving on from nodes that answer `WrongShard` (they host no
//! meta replica). Routers forward it. The client fetches the map
//!
//! - in the background when routing needs one and has none (on the first
//!   request), when a node answers `WrongShard` with an epoch newer than the map's
//!   (or none), and when a `NotLeader` hint names a node the map does not know —
//!   at most once a second, and never more than one fetch at a time; requests do
//!   not wait for it;
//! - on [`Client::refresh_map`]: concurrent calls share one fetch;
//! - on [`Client::wait_for_map_change`], a long poll that answers as soon as the
//!   map's epoch passes the client's (the router runs it in a loop).
//!
//! The installed epoch ([`Client::epoch`]) never goes down: a map older than the
//! one known is ignored.
//!
//! ## Retries
//!
//! Each call has one overall deadline ([`ClientOptions::request_timeout`], 10 s by
//! default, or per handle with [`Client::with_timeout`]) and at most
//! [`ClientOptions::max_attempts`] attempts. A read attempt is also bounded by
//! [`ClientOptions::attempt_timeout`] (sent as `grpc-timeout`), so a hung node
//! costs a read one attempt, not the whole deadline. So is an attempt of a KV
//! write: every write carries a request id (see below), so it is retried like a
//! read. After a failed attempt:
//!
//! | answer | did the node execute it? | next attempt | map |
//! | --- | --- | --- | --- |
//! | `NotLeader` naming another node | no | that node, at once (after a backoff if this round already tried it) | refreshed if the map does not know that node |
//! | `NotLeader` without a leader, naming itself, or naming a node this call could not connect to | no | the next candidate, after a backoff (an election is under way; the hint is the followers' stale belief in a dead leader) | |
//! | `WrongShard` | no | the next candidate, at once; after a backoff once every candidate was tried | refreshed unless the node's map is not newer |
//! | no connection (refused, connect timeout) | not sent | the next candidate, after a backoff — writes too; that node goes last in later rounds of the call | |
//! | `UNAVAILABLE`, timeout, connection lost | maybe | the next candidate, after a backoff; a write with the same request id, so it applies at most once | |
//! | anything else | no | none: the error is returned | |
//!
//! Backoffs use *full jitter*: the n-th backoff of a call is uniform in
//! `[0, min(backoff_max, backoff_initial · 2ⁿ))` (20 ms and 200 ms by default: an
//! election takes about half a second, and a longer cap would add most of a cap
//! to every failover), so
//! clients that failed together do not come back together. A backoff that would
//! end past the deadline ends the call instead, with the last attempt's error.
//!
//! ## Request ids, and writes whose outcome is unknown
//!
//! Every `put`, `delete`, `touch` and `increment` carries a request id: 16
//! random bytes, or the caller's ([`Client::with_request_id`], e.g. the id an
//! application sent to a router). The shard remembers each id with the write's
//! result for the node's retention window (`--request-id-retention-ms`, 60 s)
//! and answers a write whose id it remembers with that result, changing
//! nothing. So when an attempt gets no verdict — it timed out, lost its
//! connection, or the node answered `UNAVAILABLE` — the client sends the same
//! write again with the same id: an increment counts once, and a conditional put
//! reports its own success rather than failing against it.
//!
//! Only when the call gives up (deadline, attempts) is a write's outcome
//! unknown: it **may or may not have been applied**, and may still be. It
//! returns [`Error::DeadlineExceeded`] or [`Error::Unavailable`], and
//! [`Error::may_have_been_applied`] is true exactly for those two. Sending it
//! again later is safe only within the retention window and with the same id
//! (a handle from [`Client::with_request_id`]). Errors for which
//! [`Error::surely_not_applied`] is true (`NotLeader`, `WrongShard`,
//! `Transport`) never reached a Raft log; every other error is a definite
//! refusal.
//!
//! ```no_run
//! use ringkv_client::{Client, Error};
//!
//! # async fn count_hit(client: &Client) -> Result<(), Error> {
//! match client.increment("hits", 1, 0).await {
//!     Ok(counter) => println!("hits = {}", counter.value),
//!     // The client's own retries ran out: the hit may have been counted. A new
//!     // call (a new request id) could count it twice; for a hit counter,
//!     // dropping it is the lesser evil.
//!     Err(err) if err.may_have_been_applied() => eprintln!("hit maybe counted: {err}"),
//!     // Never reached a Raft log (every attempt redirected, or no connection):
//!     // safe to send again later.
//!     Err(err) if err.surely_not_applied() => eprintln!("hit not counted: {err}"),
//!     // A definite refusal, e.g. FailedPrecondition: "hits" is not an integer.
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors
//!
//! One enum, [`Error`]; a failed condition (`succeeded == false`) and a missing
//! key (`Ok(None)`) are answers, not errors.
//!
//! | variant | what happened | what to do | a write was |
//! | --- | --- | --- | --- |
//! | [`Error::InvalidArgument`] | empty or oversized key, oversized value, bad TTL, bad address (checked before sending) | fix the request | not applied |
//! | [`Error::NotLeader`] | every attempt was redirected (leadership moving longer than the deadline) | retry later | not applied |
//! | [`Error::WrongShard`] | every attempt reached nodes without the shard (replicas moving) | retry later | not applied |
//! | [`Error::Transport`] | no connection could be made | check addresses and nodes; retry later | not applied |
//! | [`Error::FailedPrecondition`] | the state forbids it (incrementing a non-integer) | do not retry unchanged | not applied |
//! | [`Error::Unavailable`] | no quorum, node shutting down, connection lost mid-request | reads: retry later; writes: reconcile (read back) | **unknown** |
//! | [`Error::DeadlineExceeded`] | out of time | as `Unavailable` | **unknown** |
//! | [`Error::AlreadyExists`] | `init_cluster` on nodes already in a cluster | nothing | not applied |
//! | [`Error::NotFound`] | an admin object does not exist (never a missing key) | fix the request | not applied |
//! | [`Error::Other`] | any other code: `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, ... | by code | not applied, except after `INTERNAL` (a server bug): unknown |
//!
//! [`Error::is_retryable`] says whether sending the same request again later may
//! succeed at all.
//!
//! ## Compare-and-set
//!
//! Every key has a version (the Raft log index of the write that last changed
//! it). A put with [`Condition::IfVersion`] succeeds only if the key is still at
//! that version, [`Condition::IfAbsent`] only if there is no key: optimistic
//! concurrency without locks.
//!
//! ```no_run
//! use ringkv_client::{Client, Condition, Consistency, Error, PutOptions};
//!
//! /// Adds `item` to the comma-separated set at `key`; returns the key's version.
//! async fn add_to_set(client: &Client, key: &str, item: &str) -> Result<u64, Error> {
//!     loop {
//!         let (value, condition) = match client.get(key.to_string(), Consistency::Linearizable).await? {
//!             Some(got) => {
//!                 let set = String::from_utf8_lossy(&got.value);
//!                 if set.split(',').any(|member| member == item) {
//!                     return Ok(got.version);
//!                 }
//!                 (format!("{set},{item}"), Condition::IfVersion(got.version))
//!             }
//!             None => (item.to_string(), Condition::IfAbsent),
//!         };
//!         let put = client.put(key.to_string(), value, PutOptions { condition, ..PutOptions::default() });
//!         match put.await {
//!             Ok(put) if put.succeeded => return Ok(put.version),
//!             // Someone wrote in between (`put.version` is theirs): read again.
//!             Ok(_) => continue,
//!             // No verdict: read again. If the put landed, the read finds the
//!             // item and returns; if not, the next round adds it. Reading back
//!             // is what makes the retry safe, not the condition.
//!             Err(err) if err.may_have_been_applied() => continue,
//!             Err(err) => return Err(err),
//!         }
//!     }
//! }
//! ```
//!
//! (A real loop should bound its rounds; each call has its own deadline.)
//!
//! ## Keeping a map fresh
//!
//! ```no_run
//! use std::time::Duration;
//! use ringkv_client::{Client, ClientOptions, Routing};
//!
//! # async fn example() -> Result<(), ringkv_client::Error> {
//! let opts = ClientOptions { routing: Routing::Direct, ..ClientOptions::default() };
//! let client = Client::connect(vec!["10.0.0.1:7001".into()], opts)?;
//! client.refresh_map().await?; // route directly from the first request on
//! let watcher = client.clone();
//! tokio::spawn(async move {
//!     loop {
//!         match watcher.wait_for_map_change(Duration::from_secs(30)).await {
//!             Ok(epoch) => println!("cluster map at epoch {epoch}"),
//!             // The cluster is unreachable; do not spin.
//!             Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
//!         }
//!     }
//! });
//! # Ok(())
//! # }
//! ```
//!
//! ## Caveats / not done yet
//!
//! - A request id protects a retry only within the node's retention window and
//!   while the shard remembers fewer than 100k ids; admin calls carry none (an
//!   admin write whose outcome is unknown is not retried).
//! - Nodes send `WrongShard` with epoch 0 today, so every `WrongShard` asks for a
//!   map refresh (at most one a second per client).
//! - A `ClusterStatus` makes the meta leader probe every node for its leaders,
//!   which takes up to a second while a node is down; refreshes therefore run in
//!   the background and requests never wait for them.
//! - The first requests of a new client go to the seeds, which redirect, until the
//!   background fetch of the map lands; call [`Client::refresh_map`] first to
//!   route directly from the start.
//! - [`Routing::Auto`] compares seed addresses with the map's as strings: a node
//!   given under another name (hostname vs IP) is recognised only when it first
//!   answers `NotLeader` or `WrongShard`; until then requests go to the seeds.
//! - [`Routing::Direct`] with router seeds and unreachable nodes pays one failed
//!   connection per replica before it reaches a seed; use `Auto` or `ViaSeeds`.
//! - Seeds are tried in the order given, so clients with the same list all start
//!   at the first one; shuffle the list (or use a load balancer) to spread them.
//! - Stale reads rotate per client, not per shard.
//! - No mapping from [`Error`] back to a `tonic::Status` yet (the router will need
//!   one). TLS and a bearer token: [`ClientOptions::credentials`].

pub mod backup;
pub mod client;
pub mod error;
mod follow;
pub mod kv_pipe;
pub mod pipe;
pub mod pubsub;
mod route_table;
mod routing;
pub mod watch;

pub use backup::ShardBackup;
pub use client::{
    Client, ClientOptions, Condition, Consistency, DeleteResult, GetResult, IncrementResult, PutOptions,
    PutResult, Routing, TouchResult,
};
pub use error::Error;
pub use pubsub::{Message, MessageBatch, Subscription};
/// TLS and token settings of [`ClientOptions::credentials`].
pub use ringkv_security::{Credentials, Token, tls};
pub use watch::{EventKind, ResumeToken, Watch, WatchBatch, WatchEvent, WatchStart, WatchTarget};

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
