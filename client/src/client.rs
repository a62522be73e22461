//! [`Client`]: a handle on a ringkv cluster given as a few node (or router)
//! addresses. It validates requests locally, sends each to the best address it
//! knows, and follows redirects and retries within one deadline. The decisions are
//! made in the private `routing` module; this module does the I/O.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::limits::{DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES, check_key, check_ttl, check_value};
use ringkv_core::{META_SHARD, NodeId, ShardId, Version};
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::routing::{Attempts, BackoffPolicy, Routes, Step};

/// Tuning of a [`Client`]. The defaults suit a client next to the cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Overall deadline of one operation, all attempts and backoffs included.
    pub request_timeout: Duration,
    /// Deadline of one attempt of a read (sent as `grpc-timeout`), so that a hung
    /// node costs a read this long before it moves on. Writes use the whole
    /// remaining deadline instead: a write that times out is not retried anyway.
    pub attempt_timeout: Duration,
    /// Deadline for opening a TCP connection to a node.
    pub connect_timeout: Duration,
    /// Most attempts per operation, redirects included.
    pub max_attempts: u32,
    /// Largest value `put` accepts; should match the nodes' limit.
    pub max_value_bytes: usize,
    /// First backoff after a retryable error that is not a redirect; doubles per
    /// backoff up to [`ClientOptions::backoff_max`].
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The cluster's data shard count, if known; lets the client send each key
    /// straight to its shard's cached leader. Learned from `ClusterStatus` when
    /// `None`.
    pub shard_count: Option<u32>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 16,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            shard_count: None,
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The shard leader confirms its leadership with a quorum before reading: the
    /// read sees every write acknowledged before it started.
    #[default]
    Linearizable,
    /// Any replica answers from its memory: may be stale, never torn.
    Stale,
}

/// The condition of a [`Client::put`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Condition {
    /// Write unconditionally.
    #[default]
    None,
    /// Write only if the key is absent (or expired).
    IfAbsent,
    /// Write only if the key exists at exactly this version.
    IfVersion(Version),
}

/// Options of a [`Client::put`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Time to live in milliseconds; 0 = the key does not expire.
    pub ttl_ms: u64,
    pub condition: Condition,
}

/// A key that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub value: Bytes,
    pub version: Version,
    /// Remaining time to live; `None` = the key does not expire.
    pub ttl_ms: Option<u64>,
}

/// The answer to a put. A failed condition is `succeeded == false`, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    pub succeeded: bool,
    /// The new version on success; the current one (0 = absent) on failure.
    pub version: Version,
}

/// The answer to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteResult {
    pub deleted: bool,
    /// The deleting write's version when deleted; else the current version
    /// (0 = absent).
    pub version: Version,
}

/// The answer to a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TouchResult {
    pub found: bool,
    /// The TTL now in force; `None` = the key does not expire.
    pub ttl_ms: Option<u64>,
}

/// The answer to an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementResult {
    pub value: i64,
    pub version: Version,
}

/// A handle on a ringkv cluster. Cheap to clone; clones share connections and the
/// leader cache. Connections are opened lazily, one HTTP/2 channel per address.
///
/// Every method is bounded by [`ClientOptions::request_timeout`] and
/// [`ClientOptions::max_attempts`]. Reads are retried freely. Writes are retried
/// only when the failed attempt surely did not execute (a `NotLeader` or
/// `WrongShard` answer, or no connection at all): a write that timed out or lost
/// its connection mid-flight returns the error, because it may have been applied
/// and a blind retry could apply it twice. Idempotent request ids will lift this.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: ClientOptions,
    routes: Mutex<Routes>,
    /// One lazily connecting channel per address ever used (seeds and redirect
    /// targets).
    channels: Mutex<HashMap<String, Channel>>,
}

/// What [`Client::run`] needs to know about an operation.
#[derive(Debug, Clone, Copy)]
struct Op {
    name: &'static str,
    /// The key's shard, when the shard count is known.
    shard: Option<ShardId>,
    write: bool,
    /// Whether a success proves the answering node leads `shard`.
    leader_confirmed: bool,
}

impl Client {
    /// A client for the cluster reachable at `addrs` (`host:port` each; nodes or
    /// routers). Opens no connection and needs no runtime; fails only on an empty
    /// list or an unusable address.
    pub fn connect(addrs: Vec<String>, opts: ClientOptions) -> Result<Client, Error> {
        if addrs.is_empty() {
            return Err(Error::InvalidArgument("no node address given".into()));
        }
        for addr in &addrs {
            endpoint(addr, &opts)
                .map_err(|err| Error::InvalidArgument(format!("bad address {addr:?}: {err}")))?;
        }
        let routes = Routes::new(addrs, opts.shard_count);
        Ok(Client {
            inner: Arc::new(Inner { opts, routes: Mutex::new(routes), channels: Mutex::new(HashMap::new()) }),
        })
    }

    /// Reads `key`; `Ok(None)` when it does not exist or has expired.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<GetResult>, Error> {
        let key = key.into();
        check_key(&key)?;
        let linearizable = consistency == Consistency::Linearizable;
        let consistency = match consistency {
            Consistency::Linearizable => proto::Consistency::Linearizable,
            Consistency::Stale => proto::Consistency::Stale,
        };
        let op = self.op("get", &key, false, linearizable);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |channel, timeout| {
                let request = proto::GetRequest { key: key.clone(), consistency: consistency.into() };
                async move { kv(channel, max).get(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(response.found.then(|| GetResult {
            value: response.value,
            version: response.version,
            ttl_ms: nonzero(response.ttl_ms),
        }))
    }

    /// Writes `key`, with an optional TTL and condition.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        check_value(&value, self.inner.opts.max_value_bytes)?;
        let ttl_ms = wire_ttl(opts.ttl_ms)?;
        let condition = match opts.condition {
            Condition::None => None,
            Condition::IfAbsent => Some(proto::put_request::Condition::IfAbsent(true)),
            Condition::IfVersion(version) => Some(proto::put_request::Condition::IfVersion(version)),
        };
        let op = self.op("put", &key, true, true);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |channel, timeout| {
                let request = proto::PutRequest { key: key.clone(), value: value.clone(), ttl_ms, condition };
                async move { kv(channel, max).put(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(PutResult { succeeded: response.succeeded, version: response.version })
    }

    /// Deletes `key`, only at `if_version` when given.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        if_version: Option<Version>,
    ) -> Result<DeleteResult, Error> {
        let key = key.into();
        check_key(&key)?;
        let op = self.op("delete", &key, true, true);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |channel, timeout| {
                let request = proto::DeleteRequest { key: key.clone(), if_version };
                async move { kv(channel, max).delete(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(DeleteResult { deleted: response.deleted, version: response.version })
    }

    /// Sets `key`'s TTL to `ttl_ms` (0 = stop expiring) without rewriting it.
    pub async fn touch(&self, key: impl Into<Bytes>, ttl_ms: u64) -> Result<TouchResult, Error> {
        let key = key.into();
        check_key(&key)?;
        let ttl_ms = wire_ttl(ttl_ms)?;
        let op = self.op("touch", &key, true, true);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |channel, timeout| {
                let request = proto::TouchRequest { key: key.clone(), ttl_ms };
                async move { kv(channel, max).touch(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(TouchResult { found: response.found, ttl_ms: nonzero(response.ttl_ms) })
    }

    /// Adds `delta` to the decimal integer at `key` (a missing key counts as 0).
    /// `ttl_ms` 0 keeps the key's TTL; more sets a new one. A value that is not an
    /// integer is [`Error::FailedPrecondition`].
    pub async fn increment(
        &self,
        key: impl Into<Bytes>,
        delta: i64,
        ttl_ms: u64,
    ) -> Result<IncrementResult, Error> {
        let key = key.into();
        check_key(&key)?;
        let ttl_ms = wire_ttl(ttl_ms)?;
        let op = self.op("increment", &key, true, true);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |channel, timeout| {
                let request = proto::IncrementRequest { key: key.clone(), delta, ttl_ms };
                async move { kv(channel, max).increment(with_timeout(request, timeout)).await }
            })
            .await?;
        Ok(IncrementResult { value: response.value, version: response.version })
    }

    /// Forms a new cluster of `nodes` (id, address), sent to the client's first
    /// address. `shards`/`replicas` 0 take the server defaults (32, 3). Refused with
    /// [`Error::AlreadyExists`] when a node already belongs to a cluster. Not
    /// retried once sent.
    pub async fn init_cluster(
        &self,
        nodes: Vec<(NodeId, String)>,
        shards: u32,
        replicas: u32,
    ) -> Result<proto::InitClusterResponse, Error> {
        let nodes: Vec<_> = nodes
            .into_iter()
            .map(|(id, addr)| proto::NodeAddress { id, addr, state: String::new() })
            .collect();
        let op = Op { name: "init_cluster", shard: None, write: true, leader_confirmed: false };
        self.run(op, |channel, timeout| {
            let request = proto::InitClusterRequest { nodes: nodes.clone(), shards, replicas };
            async move { AdminClient::new(channel).init_cluster(with_timeout(request, timeout)).await }
        })
        .await
    }

    /// The cluster map and each shard's current leader. Also primes the client's
    /// shard count and leader cache.
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatusResponse, Error> {
        let op =
            Op { name: "cluster_status", shard: Some(META_SHARD), write: false, leader_confirmed: false };
        let status = self
            .run(op, |channel, timeout| async move {
                let request = with_timeout(proto::ClusterStatusRequest::default(), timeout);
                AdminClient::new(channel).cluster_status(request).await
            })
            .await?;
        self.routes().record_cluster_status(status.shards, leaders_of(&status));
        Ok(status)
    }

    /// Learns the shard count and every shard's leader now, so that later requests
    /// go straight to their shard's leader. Optional: the client does this in the
    /// background after its first redirect.
    pub async fn refresh_routes(&self) -> Result<(), Error> {
        self.cluster_status().await.map(drop)
    }

    fn op(&self, name: &'static str, key: &[u8], write: bool, leader_confirmed: bool) -> Op {
        Op { name, shard: self.routes().shard_of(key), write, leader_confirmed }
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.inner.routes.lock().expect("routes lock poisoned: a panic while routing")
    }

    /// Largest message the client will decode: a full-size value plus its key and
    /// framing, and never below tonic's 4 MiB default.
    fn max_message_bytes(&self) -> usize {
        (self.inner.opts.max_value_bytes + MAX_KEY_BYTES + 4096).max(4 << 20)
    }

    /// The (lazily connecting) channel to `addr`, created on first use.
    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.inner.channels.lock().expect("channels lock poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        // A redirect target the node reported may be unusable; that is not the
        // caller's mistake, and nothing was sent, so it is a transport error.
        let channel = endpoint(addr, &self.inner.opts)
            .map_err(|err| Error::Transport(format!("bad address {addr:?}: {err}")))?
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Runs one operation: sends it by `call` (given a channel and the attempt's
    /// timeout) until it succeeds, [`Attempts`] gives up, the attempts run out or
    /// the deadline would pass. The returned error is the last attempt's.
    async fn run<T, F, Fut>(&self, op: Op, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let opts = &self.inner.opts;
        let deadline = Instant::now() + opts.request_timeout;
        let policy = BackoffPolicy { initial: opts.backoff_initial, max: opts.backoff_max };
        let (mut attempts, mut addr) = Attempts::start(&self.routes(), op.shard, op.write, policy);
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = if op.write { remaining } else { remaining.min(opts.attempt_timeout) };
            let err = match self.channel(&addr) {
                Err(err) => err,
                // Dropping the call on timeout cancels the request (RST_STREAM).
                Ok(channel) => match tokio::time::timeout(timeout, call(channel, timeout)).await {
                    Ok(Ok(response)) => {
                        self.routes().record_success(&addr, op.shard, op.leader_confirmed);
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => match Error::from(status) {
                        Error::Transport(cause) => Error::Transport(format!("{addr}: {cause}")),
                        err => err,
                    },
                    Err(_elapsed) => Error::DeadlineExceeded,
                },
            };
            if matches!(err, Error::NotLeader { .. } | Error::WrongShard { .. }) {
                self.maybe_refresh_routes(&addr);
            }
            let step = attempts.after_error(&mut self.routes(), &addr, &err);
            let Step::Retry { addr: next, after } = step else {
                tracing::debug!(op = op.name, %addr, %err, attempt, "not retried");
                return Err(err);
            };
            if attempt >= opts.max_attempts || Instant::now() + after >= deadline {
                tracing::debug!(op = op.name, %addr, %err, attempt, "out of attempts or time");
                return Err(err);
            }
            tracing::debug!(op = op.name, %addr, %err, %next, ?after, attempt, "retrying");
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            addr = next;
            attempt += 1;
        }
    }

    /// After a redirect, if the shard count is unknown, asks `addr` (a live node)
    /// for the cluster status in the background, at most once per refresh interval.
    /// Without the shard count, the leader cache cannot route a key by itself.
    fn maybe_refresh_routes(&self, addr: &str) {
        if !self.routes().should_refresh(std::time::Instant::now()) {
            return;
        }
        let (client, addr) = (self.clone(), addr.to_string());
        tokio::spawn(async move {
            if let Err(err) = client.fetch_routes_from(&addr).await {
                tracing::debug!(%addr, %err, "could not learn the shard count");
            }
        });
    }

    /// One `ClusterStatus` at `addr`, without the retry loop (which may have called
    /// this); the next redirect tries again.
    async fn fetch_routes_from(&self, addr: &str) -> Result<(), Error> {
        let timeout = self.inner.opts.attempt_timeout;
        let mut admin = AdminClient::new(self.channel(addr)?);
        let request = with_timeout(proto::ClusterStatusRequest::default(), timeout);
        let status = tokio::time::timeout(timeout, admin.cluster_status(request))
            .await
            .map_err(|_| Error::DeadlineExceeded)??
            .into_inner();
        self.routes().record_cluster_status(status.shards, leaders_of(&status));
        Ok(())
    }
}

/// The endpoint of a node address (`host:port`), plain HTTP/2.
fn endpoint(addr: &str, opts: &ClientOptions) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true))
}

fn kv(channel: Channel, max_message_bytes: usize) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// Wraps a message in a request that carries the attempt's deadline to the server.
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Checks a TTL and converts it to the wire's `int64`.
fn wire_ttl(ttl_ms: u64) -> Result<i64, Error> {
    let ttl_ms = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    check_ttl(ttl_ms)?;
    Ok(ttl_ms)
}

fn nonzero(ttl_ms: u64) -> Option<u64> {
    (ttl_ms != 0).then_some(ttl_ms)
}

/// Each shard's leader address per `ClusterStatus`, where both are known.
fn leaders_of(status: &proto::ClusterStatusResponse) -> Vec<(ShardId, String)> {
    let addrs: HashMap<NodeId, &str> =
        status.nodes.iter().map(|node| (node.id, node.addr.as_str())).collect();
    status
        .shard_status
        .iter()
        .filter_map(|shard| {
            let addr = addrs.get(&shard.leader_id).filter(|addr| !addr.is_empty())?;
            Some((shard.shard, addr.to_string()))
        })
        .collect()
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
