//! [`Client`]: a handle on a ringkv cluster given as a few node (or router)
//! addresses. It validates requests locally, sends each to the best address it
//! knows, and follows redirects and retries within one deadline. The decisions are
//! made in the private `route_table` and `routing` modules; this module does the
//! I/O: channels, the clock, random jitter, sleeps and map fetches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringkv_core::limits::{
    DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES, check_key, check_request_id, check_ttl, check_value,
};
use ringkv_core::{Epoch, META_SHARD, NodeId, ShardId, Version};
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_security::{Conn, Credentials};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use crate::error::Error;
use crate::follow::Opened;
use crate::kv_pipe::{self, KvPipe, KvRequest};
use crate::route_table::{ClusterView, RouteTable};
use crate::routing::{Attempts, BackoffPolicy, Step};

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
    /// Ceiling of the first backoff after a retryable error that is not a
    /// redirect; each backoff is random below its ceiling (full jitter), and the
    /// ceiling doubles per backoff up to [`ClientOptions::backoff_max`].
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The cluster's data shard count, if known; lets the client send each key
    /// straight to its shard's cached leader before it has fetched the cluster
    /// map. The map's count replaces it.
    pub shard_count: Option<u32>,
    /// Whether requests go straight to the nodes or through the given addresses;
    /// see [`Routing`].
    pub routing: Routing,
    /// TLS and the token every call carries (plain, none by default).
    pub credentials: Credentials,
}

/// Where a [`Client`] sends requests: straight to each shard's nodes, by the
/// cluster map, or to the addresses it was given (the *seeds*), which then must be
/// routers. Either way the seeds are the last resort: a router answers for every
/// shard, a node redirects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Routing {
    /// Route directly once the seeds prove to be nodes: a seed's address is
    /// listed in the cluster map, or a seed answers `NotLeader`/`WrongShard`
    /// (which routers never send). Otherwise, e.g. given router addresses,
    /// everything goes to the seeds. Right for node and router seeds alike.
    #[default]
    Auto,
    /// Always route to the nodes by the cluster map (fetched through the seeds);
    /// the seeds only while no map is known or when every replica failed. For
    /// callers that know they were given nodes, like the router.
    Direct,
    /// Always send to the seeds, which route themselves (routers, typically behind
    /// a load balancer, with nodes the caller cannot reach). The client fetches
    /// no map by itself. A `NotLeader` hint is still followed within one request,
    /// since only a node sends one.
    ViaSeeds,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 64,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            shard_count: None,
            routing: Routing::Auto,
            credentials: Credentials::default(),
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

/// A handle on a ringkv cluster. Cheap to clone; clones share connections, the
/// cluster map and the leader cache. Connections are opened lazily, one HTTP/2
/// channel per address.
///
/// Every method is bounded by one overall deadline ([`ClientOptions::request_timeout`],
/// or [`Client::with_timeout`]) and by [`ClientOptions::max_attempts`]. Reads are
/// retried freely. So are the KV writes (`put`, `delete`, `touch`, `increment`):
/// each carries a request id (fresh random bytes, or [`Client::with_request_id`]'s)
/// that the shard remembers with the result for its retention window (60 s by
/// default), so a retry after a lost answer or a timed-out attempt returns the
/// first result instead of applying again. Only when the operation gives up
/// (deadline, attempts) is a write's outcome unknown:
/// [`Error::may_have_been_applied`]. Admin writes are retried only when the
/// failed attempt surely did not run.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Overall deadline of each operation of this handle.
    request_timeout: Duration,
    /// The request id of this handle's writes, if the caller chose one
    /// ([`Client::with_request_id`]); else each write gets a fresh one.
    request_id: Option<Bytes>,
}

#[derive(Debug)]
struct Inner {
    opts: ClientOptions,
    table: Mutex<RouteTable>,
    /// One link (a lazily connecting channel and its KV pipe) per address in
    /// use: seeds, the map's nodes and redirect targets. Pruned to those
    /// whenever a map is installed.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Held by the one map refresh in flight; [`Client::refresh_map`] callers
    /// queue on it and then reuse the map it installed.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Attempts retried, by the reason of the failed one ([`RETRY_REASONS`]).
    retries: [std::sync::atomic::AtomicU64; RETRY_REASONS.len()],
}

/// Why an attempt was retried, as [`Client::retries`] counts them.
pub const RETRY_REASONS: [&str; 6] =
    ["not_leader", "wrong_shard", "unavailable", "transport", "deadline_exceeded", "other"];

fn retry_reason(err: &Error) -> usize {
    match err {
        Error::NotLeader { .. } => 0,
        Error::WrongShard { .. } => 1,
        Error::Unavailable(_) => 2,
        Error::Transport(_) => 3,
        Error::DeadlineExceeded => 4,
        _ => 5,
    }
}

/// What [`Client::run`] needs to know about an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub(crate) name: &'static str,
    /// The key's shard, when the shard count is known.
    pub(crate) shard: Option<ShardId>,
    pub(crate) write: bool,
    /// A write with a request id: the node applies it at most once, so it is
    /// retried like a read, whatever the outcome of the failed attempt.
    pub(crate) idempotent: bool,
    /// A stale read: any replica may answer, and the client spreads them.
    pub(crate) stale: bool,
    /// Whether a success proves the answering node leads `shard`.
    pub(crate) leader_confirmed: bool,
    /// Added to the deadline and to each attempt's timeout: the time the server
    /// may hold a long poll before answering.
    pub(crate) server_wait: Duration,
}

impl Op {
    pub(crate) fn kv(name: &'static str, shard: Option<ShardId>, write: bool, stale: bool) -> Op {
        Op {
            name,
            shard,
            write,
            idempotent: false,
            stale,
            leader_confirmed: !stale,
            server_wait: Duration::ZERO,
        }
    }

    /// A KV write that carries a request id.
    pub(crate) fn write_once(name: &'static str, shard: Option<ShardId>) -> Op {
        Op { idempotent: true, ..Op::kv(name, shard, true, false) }
    }

    /// Whether a failed attempt may be retried only if it surely did not run.
    fn applies_each_attempt(&self) -> bool {
        self.write && !self.idempotent
    }
}

impl Client {
    /// A client for the cluster reachable at `addrs` (`host:port` each; nodes or
    /// routers, see [`Routing`]). Opens no connection and needs no runtime; fails
    /// only on an empty list or an unusable address.
    pub fn connect(addrs: Vec<String>, opts: ClientOptions) -> Result<Client, Error> {
        if addrs.is_empty() {
            return Err(Error::InvalidArgument("no node address given".into()));
        }
        for addr in &addrs {
            endpoint(addr, &opts)
                .map_err(|err| Error::InvalidArgument(format!("bad address {addr:?}: {err}")))?;
        }
        let table = RouteTable::new(addrs, opts.routing, opts.shard_count);
        let request_timeout = opts.request_timeout;
        let inner = Inner {
            opts,
            table: Mutex::new(table),
            links: Mutex::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            retries: Default::default(),
        };
        Ok(Client { inner: Arc::new(inner), request_timeout, request_id: None })
    }

    /// A handle on the same client (connections, map, caches) whose operations
    /// each have `request_timeout` as their overall deadline; e.g. the time left
    /// of a request being served. Cheap.
    pub fn with_timeout(&self, request_timeout: Duration) -> Client {
        Client { request_timeout, ..self.clone() }
    }

    /// A handle for **one** write with the caller's request id (at most 64
    /// bytes), e.g. one an application sent to a router: a retry of that write
    /// with the same id, from here or from the application, applies once. Every
    /// write of the returned handle carries this id, so use it for that one
    /// write only: a second, different write would get the first one's result.
    /// Without it, each write gets a fresh random id.
    pub fn with_request_id(&self, request_id: Bytes) -> Client {
        Client { request_id: Some(request_id), ..self.clone() }
    }

    /// This write's request id: the handle's, or 16 fresh random bytes.
    pub(crate) fn request_id(&self) -> Result<Bytes, Error> {
        match &self.request_id {
            Some(id) => {
                check_request_id(id)?;
                Ok(id.clone())
            }
            None => Ok(Bytes::copy_from_slice(&rand::random::<[u8; 16]>())),
        }
    }

    /// Reads `key`; `Ok(None)` when it does not exist or has expired.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<GetResult>, Error> {
        self.read(key.into(), consistency, 0).await
    }

    /// Reads `key` linearizably and slides its expiry: its deadline moves to
    /// at least now + `ttl_ms` (sessions that stay alive while used). The node
    /// proposes the move through Raft only when less than its
    /// `--touch-refresh-fraction` (half by default) of `ttl_ms` is left, so
    /// hot reads cost a read. A key without a TTL keeps none, and a deadline
    /// never moves earlier. The result's `ttl_ms` is the TTL after the touch.
    pub async fn get_and_touch(
        &self,
        key: impl Into<Bytes>,
        ttl_ms: u64,
    ) -> Result<Option<GetResult>, Error> {
        let touch_ttl_ms = wire_ttl(ttl_ms)?;
        if touch_ttl_ms == 0 {
            return Err(Error::InvalidArgument("get_and_touch needs a ttl_ms above 0".into()));
        }
        self.read(key.into(), Consistency::Linearizable, touch_ttl_ms).await
    }

    async fn read(
        &self,
        key: Bytes,
        consistency: Consistency,
        touch_ttl_ms: i64,
    ) -> Result<Option<GetResult>, Error> {
        check_key(&key)?;
        let stale = consistency == Consistency::Stale;
        let consistency = match consistency {
            Consistency::Linearizable => proto::Consistency::Linearizable,
            Consistency::Stale => proto::Consistency::Stale,
        };
        // A touch is a read that may propose an idempotent deadline move:
        // retried like any read.
        let op = Op::kv("get", self.shard_of(&key), false, stale);
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let request =
                    proto::GetRequest { key: key.clone(), consistency: consistency.into(), touch_ttl_ms };
                async move { link.call(request, timeout, max).await }
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
        let request_id = self.request_id()?;
        let op = Op::write_once("put", self.shard_of(&key));
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let (key, value, request_id) = (key.clone(), value.clone(), request_id.clone());
                let request = proto::PutRequest { key, value, ttl_ms, condition, request_id };
                async move { link.call(request, timeout, max).await }
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
        let request_id = self.request_id()?;
        let op = Op::write_once("delete", self.shard_of(&key));
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let request =
                    proto::DeleteRequest { key: key.clone(), if_version, request_id: request_id.clone() };
                async move { link.call(request, timeout, max).await }
            })
            .await?;
        Ok(DeleteResult { deleted: response.deleted, version: response.version })
    }

    /// Sets `key`'s TTL to `ttl_ms` (0 = stop expiring) without rewriting it.
    pub async fn touch(&self, key: impl Into<Bytes>, ttl_ms: u64) -> Result<TouchResult, Error> {
        let key = key.into();
        check_key(&key)?;
        let ttl_ms = wire_ttl(ttl_ms)?;
        let request_id = self.request_id()?;
        let op = Op::write_once("touch", self.shard_of(&key));
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let request =
                    proto::TouchRequest { key: key.clone(), ttl_ms, request_id: request_id.clone() };
                async move { link.call(request, timeout, max).await }
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
        let request_id = self.request_id()?;
        let op = Op::write_once("increment", self.shard_of(&key));
        let max = self.max_message_bytes();
        let response = self
            .run(op, |link, timeout| {
                let request_id = request_id.clone();
                let request = proto::IncrementRequest { key: key.clone(), delta, ttl_ms, request_id };
                async move { link.call(request, timeout, max).await }
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
        let op = Op { leader_confirmed: false, ..Op::kv("init_cluster", None, true, false) };
        self.run(op, |link, timeout| {
            let request = proto::InitClusterRequest { nodes: nodes.clone(), shards, replicas };
            async move { link.admin().init_cluster(with_timeout(request, timeout)).await }
        })
        .await
    }

    /// Sends an operator `Admin` call to the meta shard's leader (following
    /// `NotLeader`), or through a router. `write`: the call changes the cluster,
    /// so an answer lost in transit is not retried (its outcome is unknown).
    async fn meta_admin<T, F, Fut>(&self, name: &'static str, write: bool, mut call: F) -> Result<T, Error>
    where
        F: FnMut(AdminClient<Conn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let op = Op { leader_confirmed: true, ..Op::kv(name, Some(META_SHARD), write, false) };
        self.run(op, |link, timeout| call(link.admin(), timeout)).await
    }

    /// Registers node `id` at `addr` as joining (it hosts nothing until a
    /// rebalance). Idempotent for the same id and address.
    pub async fn add_node(&self, id: NodeId, addr: &str) -> Result<proto::AddNodeResponse, Error> {
        let request = proto::AddNodeRequest { id, addr: addr.to_string() };
        self.meta_admin("add_node", true, |mut admin, timeout| {
            let request = request.clone();
            async move { admin.add_node(with_timeout(request, timeout)).await }
        })
        .await
    }

    /// The moves a rebalance would make now; changes nothing.
    pub async fn plan_rebalance(&self) -> Result<proto::PlanRebalanceResponse, Error> {
        self.meta_admin("plan_rebalance", false, |mut admin, timeout| async move {
            admin.plan_rebalance(with_timeout(proto::PlanRebalanceRequest {}, timeout)).await
        })
        .await
    }

    /// Commits the plan for the map at `expected_epoch` (refused if the map has
    /// moved on or a plan is running). Limits of 0 take the defaults.
    pub async fn start_rebalance(
        &self,
        expected_epoch: Epoch,
        max_in_flight: u32,
        max_per_node: u32,
    ) -> Result<proto::RebalanceStatusResponse, Error> {
        let request = proto::StartRebalanceRequest { expected_epoch, max_in_flight, max_per_node };
        self.meta_admin("start_rebalance", true, |mut admin, timeout| async move {
            admin.start_rebalance(with_timeout(request, timeout)).await
        })
        .await
    }

    /// The running (or last) rebalance and its progress.
    pub async fn rebalance_status(&self) -> Result<proto::RebalanceStatusResponse, Error> {
        self.meta_admin("rebalance_status", false, |mut admin, timeout| async move {
            admin.rebalance_status(with_timeout(proto::RebalanceStatusRequest {}, timeout)).await
        })
        .await
    }

    /// `action`: "pause", "resume" or "abort".
    pub async fn control_rebalance(&self, action: &str) -> Result<proto::RebalanceStatusResponse, Error> {
        let request = proto::ControlRebalanceRequest { action: action.to_string() };
        self.meta_admin("control_rebalance", true, |mut admin, timeout| {
            let request = request.clone();
            async move { admin.control_rebalance(with_timeout(request, timeout)).await }
        })
        .await
    }

    /// Marks `node` draining and commits the plan that empties it.
    /// Limits of 0 take the defaults.
    pub async fn drain_node(
        &self,
        node: NodeId,
        max_in_flight: u32,
        max_per_node: u32,
    ) -> Result<proto::RebalanceStatusResponse, Error> {
        let request = proto::DrainNodeRequest { node, max_in_flight, max_per_node };
        self.meta_admin("drain_node", true, |mut admin, timeout| async move {
            admin.drain_node(with_timeout(request, timeout)).await
        })
        .await
    }

    /// Removes `node` from the map; refused while it holds replicas.
    pub async fn remove_node(&self, node: NodeId) -> Result<proto::RemoveNodeResponse, Error> {
        self.meta_admin("remove_node", true, |mut admin, timeout| async move {
            admin.remove_node(with_timeout(proto::RemoveNodeRequest { node }, timeout)).await
        })
        .await
    }

    /// Moves `shard`'s leadership to `node`, one of its voters.
    pub async fn transfer_leader(
        &self,
        shard: ShardId,
        node: NodeId,
    ) -> Result<proto::TransferLeaderResponse, Error> {
        self.meta_admin("transfer_leader", true, |mut admin, timeout| async move {
            admin.transfer_leader(with_timeout(proto::TransferLeaderRequest { shard, node }, timeout)).await
        })
        .await
    }

    /// Transfers leaderships until every node leads ⌊S/N⌋ or ⌈S/N⌉ shards.
    pub async fn balance_leaders(&self) -> Result<proto::BalanceLeadersResponse, Error> {
        self.meta_admin("balance_leaders", true, |mut admin, timeout| async move {
            admin.balance_leaders(with_timeout(proto::BalanceLeadersRequest {}, timeout)).await
        })
        .await
    }

    /// The cluster map and each shard's current leader, from the meta shard's
    /// leader (found by following `NotLeader` for shard 0) or through a router.
    /// Also installs the map for routing, unless it is older than the one known.
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatusResponse, Error> {
        let (status, installed) = self.fetch_status(None).await?;
        if let Err(err) = installed {
            tracing::debug!(%err, "cluster status not usable for routing");
        }
        Ok(status)
    }

    /// The epoch of the cluster map the client routes by; `None` until one was
    /// fetched.
    pub fn epoch(&self) -> Option<u64> {
        self.table().epoch()
    }

    /// Fetches the cluster map from the meta shard now and installs it; returns
    /// the epoch now known. Concurrent calls share one fetch: a call that finds a
    /// fetch in flight waits for it and returns its epoch (or, if it failed,
    /// fetches itself), all within one deadline. Optional: the client fetches the
    /// map by itself when it has none or finds it stale.
    pub async fn refresh_map(&self) -> Result<u64, Error> {
        let deadline = Instant::now() + self.request_timeout;
        let seen = self.table().generation();
        let _refreshing = tokio::time::timeout_at(deadline, self.inner.refresh_lock.lock())
            .await
            .map_err(|_| Error::DeadlineExceeded)?;
        if let Some(epoch) = self.epoch().filter(|_| self.table().generation() != seen) {
            return Ok(epoch);
        }
        self.with_timeout(deadline.saturating_duration_since(Instant::now())).fetch_map(None).await
    }

    /// Same as [`Client::refresh_map`], without the epoch (the older name).
    pub async fn refresh_routes(&self) -> Result<(), Error> {
        self.refresh_map().await.map(drop)
    }

    /// Waits up to `wait` for a cluster map newer than the one the client knows
    /// (any map, if it knows none), installs it, and returns the epoch now known:
    /// the same as before when nothing changed in time. One long-polling
    /// `ClusterStatus` (the node caps `wait` at 60 s); the operation's deadline is
    /// `wait` plus the usual one.
    ///
    /// Meant for a loop that keeps the map fresh (the router runs one). On an
    /// error, such a loop should pause before calling again: an unreachable
    /// cluster fails fast.
    pub async fn wait_for_map_change(&self, wait: Duration) -> Result<u64, Error> {
        let above = self.epoch().unwrap_or(0);
        self.fetch_map(Some((above, wait))).await
    }

    /// One `ClusterStatus` (a long poll when `wait` is given) whose map must be
    /// usable for routing; returns the epoch now known.
    async fn fetch_map(&self, wait: Option<(Epoch, Duration)>) -> Result<u64, Error> {
        let (_, installed) = self.fetch_status(wait).await?;
        installed
    }

    /// Sends `ClusterStatus` to the meta shard's leader, with retries; returns the
    /// answer and the outcome of installing it.
    async fn fetch_status(
        &self,
        wait: Option<(Epoch, Duration)>,
    ) -> Result<(proto::ClusterStatusResponse, Result<Epoch, Error>), Error> {
        let (wait_for_epoch_above, server_wait) = wait.unwrap_or((0, Duration::ZERO));
        let wait_ms = u32::try_from(server_wait.as_millis()).unwrap_or(u32::MAX);
        let op = Op {
            server_wait,
            leader_confirmed: true,
            ..Op::kv("cluster_status", Some(META_SHARD), false, false)
        };
        let status = self
            .run(op, |link, timeout| async move {
                let request = proto::ClusterStatusRequest { wait_for_epoch_above, wait_ms };
                link.admin().cluster_status(with_timeout(request, timeout)).await
            })
            .await?;
        let installed = ClusterView::from_status(&status).map(|view| self.install(view));
        Ok((status, installed))
    }

    /// Installs `view` (unless older than the map known) and closes channels to
    /// addresses no longer in use; returns the epoch now known.
    fn install(&self, view: ClusterView) -> Epoch {
        let mut table = self.table();
        let epoch = table.install(view);
        let in_use = table.addresses();
        self.inner.links.lock().expect("links lock poisoned").retain(|addr, _| in_use.contains(&**addr));
        tracing::debug!(epoch, "cluster map installed");
        epoch
    }

    /// Attempts retried so far (all clones of this client together), per
    /// reason: `(reason, count)` for each of [`RETRY_REASONS`].
    pub fn retries(&self) -> Vec<(&'static str, u64)> {
        let counts = self.inner.retries.iter().map(|count| count.load(std::sync::atomic::Ordering::Relaxed));
        RETRY_REASONS.iter().copied().zip(counts).collect()
    }

    /// Whether routing needs a cluster map it does not have yet.
    pub(crate) fn needs_map(&self) -> bool {
        self.table().needs_map()
    }

    /// Whether requests go straight to the nodes (else to the seeds, routers).
    pub(crate) fn routes_directly(&self) -> bool {
        self.table().direct()
    }

    /// The data shard count, once the map (or the options) gave it.
    pub(crate) fn shard_count(&self) -> Result<u32, Error> {
        self.table()
            .shard_count()
            .ok_or_else(|| Error::Unavailable("the cluster's shard count is not known yet".into()))
    }

    /// The key's shard, once the shard count is known.
    pub(crate) fn shard_for(&self, key: &[u8]) -> Result<ShardId, Error> {
        Ok(ringkv_core::placement::shard_for_key(key, self.shard_count()?))
    }

    /// Opens a server stream by `call` with [`Client::run`]'s routing and
    /// retries, and reads its first response (which only says where it
    /// starts) before calling it open. The stream has no deadline of its own:
    /// only opening it does.
    pub(crate) async fn open_stream<R, F, Fut>(&self, op: Op, mut call: F) -> Result<Opened<R>, Error>
    where
        R: Send + 'static,
        F: FnMut(KvClient<Conn>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>>,
    {
        let max = self.max_message_bytes();
        self.run(op, |link, _timeout| {
            let opening = call(link.kv(max));
            async move {
                let mut stream = opening.await?.into_inner();
                let first = stream
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::unavailable("the stream ended before it started"))?;
                Ok(tonic::Response::new((first, stream)))
            }
        })
        .await
    }

    /// The key's shard, when known. Starts a map fetch in the background if
    /// routing needs one and has none.
    pub(crate) fn shard_of(&self, key: &[u8]) -> Option<ShardId> {
        let (shard, needs_map) = {
            let table = self.table();
            (table.shard_of(key), table.needs_map())
        };
        if needs_map {
            self.refresh_in_background();
        }
        shard
    }

    /// Starts a map refresh in a task of its own, unless one ran less than
    /// `MIN_REFRESH_INTERVAL` ago, one is in flight, or no Tokio runtime is
    /// running this call.
    fn refresh_in_background(&self) {
        if !self.table().start_background_refresh(std::time::Instant::now()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // The client's own deadline: not that of a short-lived `with_timeout` handle.
        let client = self.with_timeout(self.inner.opts.request_timeout);
        runtime.spawn(async move {
            // A refresh in flight will install what this one would.
            let Ok(_refreshing) = client.inner.refresh_lock.try_lock() else { return };
            if let Err(err) = client.fetch_map(None).await {
                tracing::debug!(%err, "background cluster map refresh failed");
            }
        });
    }

    fn table(&self) -> MutexGuard<'_, RouteTable> {
        self.inner.table.lock().expect("route table lock poisoned: a panic while routing")
    }

    /// Largest message the client will decode: a full-size value plus its key and
    /// framing, and never below tonic's 4 MiB default.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.inner.opts.max_value_bytes
    }

    /// The TLS settings and token this client's connections use.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.opts.credentials
    }

    pub(crate) fn max_message_bytes(&self) -> usize {
        (self.inner.opts.max_value_bytes + MAX_KEY_BYTES + 4096).max(4 << 20)
    }

    /// The link to `addr`, created on first use.
    fn link(&self, addr: &str) -> Result<Arc<Link>, Error> {
        let mut links = self.inner.links.lock().expect("links lock poisoned");
        if let Some(link) = links.get(addr) {
            return Ok(link.clone());
        }
        // A redirect target or map address may be unusable; that is not the
        // caller's mistake, and nothing was sent, so it is a transport error.
        let endpoint = endpoint(addr, &self.inner.opts)
            .map_err(|err| Error::Transport(format!("bad address {addr:?}: {err}")))?;
        let channel = self.inner.opts.credentials.connect_lazy(endpoint);
        let link = Arc::new(Link { addr: addr.to_string(), channel, pipe: Mutex::new(None) });
        links.insert(addr.to_string(), link.clone());
        Ok(link)
    }

    /// Runs one operation: sends it by `call` (given a link and the attempt's
    /// timeout) until it succeeds, [`Attempts`] gives up, the attempts run out or
    /// the deadline would pass. The returned error is the last attempt's.
    pub(crate) async fn run<T, F, Fut>(&self, op: Op, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Arc<Link>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let opts = &self.inner.opts;
        let deadline = Instant::now() + self.request_timeout + op.server_wait;
        let policy = BackoffPolicy { initial: opts.backoff_initial, max: opts.backoff_max };
        let (mut attempts, mut addr) =
            Attempts::start(&mut self.table(), op.shard, op.applies_each_attempt(), op.stale, policy);
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A write without a request id that times out is not retried, so it
            // gets all the time left.
            let timeout = if op.applies_each_attempt() {
                remaining
            } else {
                remaining.min(opts.attempt_timeout + op.server_wait)
            };
            let err = match self.link(&addr) {
                Err(err) => err,
                // Dropping a unary call on timeout cancels the request
                // (RST_STREAM); a piped one runs to its deadline on the server.
                Ok(link) => match tokio::time::timeout(timeout, call(link, timeout)).await {
                    Ok(Ok(response)) => {
                        self.table().record_success(&addr, attempts.shard(), op.leader_confirmed);
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => match Error::from(status) {
                        Error::Transport(cause) => Error::Transport(format!("{addr}: {cause}")),
                        err => err,
                    },
                    Err(_elapsed) => Error::DeadlineExceeded,
                },
            };
            let decision = attempts.after_error(&mut self.table(), &addr, &err, rand::random::<f64>());
            if decision.refresh_map && op.shard != Some(META_SHARD) {
                self.refresh_in_background();
            }
            let Step::Retry { addr: next, after } = decision.step else {
                tracing::debug!(op = op.name, %addr, %err, attempt, "not retried");
                return Err(err);
            };
            if attempt >= opts.max_attempts || Instant::now() + after >= deadline {
                tracing::debug!(op = op.name, %addr, %err, attempt, "out of attempts or time");
                return Err(err);
            }
            tracing::debug!(op = op.name, %addr, %err, %next, ?after, attempt, "retrying");
            self.inner.retries[retry_reason(&err)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            addr = next;
            attempt += 1;
        }
    }
}

/// HTTP/2 keepalive: a node that stops answering pings for this long (a
/// paused or hung process, whose kernel still holds the TCP connection open)
/// has its connection closed, failing the requests waiting on it, so that
/// later requests go elsewhere instead of queueing behind it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The endpoint of a node address (`host:port`): HTTP/2, over TLS if the
/// credentials say so.
fn endpoint(addr: &str, opts: &ClientOptions) -> Result<Endpoint, tonic::transport::Error> {
    Ok(opts
        .credentials
        .endpoint(addr)?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// The client's connection to one address: a lazily connecting channel, and
/// the KV pipe on it, opened on first use and reopened after it closes.
#[derive(Debug)]
pub(crate) struct Link {
    addr: String,
    channel: Conn,
    pipe: Mutex<Option<Arc<KvPipe>>>,
}

impl Link {
    pub(crate) fn admin(&self) -> AdminClient<Conn> {
        AdminClient::new(self.channel.clone())
    }

    /// The KV service for calls that are not piped (streams).
    pub(crate) fn kv(&self, max_message_bytes: usize) -> KvClient<Conn> {
        KvClient::new(self.channel.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// One KV call: on the pipe if the request is small, else unary.
    async fn call<R: KvRequest>(
        &self,
        request: R,
        timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<tonic::Response<R::Response>, tonic::Status> {
        let pipe = self.pipe(max_message_bytes);
        kv_pipe::call(&pipe, self.channel.clone(), request, timeout, max_message_bytes)
            .await
            .map(tonic::Response::new)
    }

    fn pipe(&self, max_message_bytes: usize) -> Arc<KvPipe> {
        let mut pipe = self.pipe.lock().expect("pipe lock poisoned");
        match &*pipe {
            Some(open) if !open.is_closed() => open.clone(),
            _ => {
                let opened = kv_pipe::open(self.channel.clone(), &self.addr, max_message_bytes);
                *pipe = Some(opened.clone());
                opened
            }
        }
    }
}

/// Wraps a message in a request that carries the attempt's deadline to the server.
pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
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

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
