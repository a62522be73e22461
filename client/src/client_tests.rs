//! [`Client`] against in-process fake servers on 127.0.0.1:0: single fake KV
//! nodes with a fixed behaviour (redirects, retries and what is not retried), and
//! fake clusters whose nodes answer from a shared cluster map like real ones do
//! (map fetches, direct routing, stale reads, refreshes, routers). Every test is
//! bounded by [`BOUND`]; none uses a sleep for synchronization (servers are bound
//! before the client connects).

use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
use ringkv_proto::v1::admin_server::{Admin, AdminServer};
use ringkv_proto::v1::error_detail::Kind;
use ringkv_proto::v1::kv_server::{Kv, KvServer};
use ringkv_proto::v1::{ErrorDetail, NotLeader};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::*;

/// Upper bound on any one test, so that a bug hangs nothing.
const BOUND: Duration = Duration::from_secs(10);

/// How a fake node answers every request.
#[derive(Debug, Clone)]
enum Mode {
    /// As a leader: get finds `value` at version 7, writes succeed at version 8.
    Serve,
    /// NotLeader, pointing at `Some(addr)` or nowhere.
    NotLeader(Option<String>),
    /// UNAVAILABLE, as a node without quorum.
    Unavailable,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct FakeKv {
    mode: Mode,
    calls: Arc<AtomicUsize>,
    /// The request ids of the writes it was sent, in order.
    ids: Arc<Mutex<Vec<Bytes>>>,
}

impl FakeKv {
    async fn answer<T>(&self, ok: T) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.mode {
            Mode::Serve => Ok(Response::new(ok)),
            Mode::NotLeader(leader) => {
                let kind = Kind::NotLeader(NotLeader {
                    shard: 5,
                    leader_id: if leader.is_some() { 2 } else { 0 },
                    leader_addr: leader.clone().unwrap_or_default(),
                });
                let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
                Err(Status::with_details(tonic::Code::FailedPrecondition, "not leader", details.into()))
            }
            Mode::Unavailable => Err(Status::unavailable("no quorum")),
            Mode::Hang => std::future::pending().await,
        }
    }
}

#[tonic::async_trait]
impl Kv for FakeKv {
    type WatchStream = futures::stream::Empty<Result<proto::WatchResponse, Status>>;

    async fn watch(&self, _: Request<proto::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn publish(
        &self,
        _: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type SubscribeStream = futures::stream::Empty<Result<proto::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        _: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type PipeStream = crate::kv_pipe::Replies;

    async fn pipe(
        &self,
        request: Request<tonic::Streaming<proto::KvFrame>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        Ok(Response::new(crate::kv_pipe::serve(self.clone(), request.into_inner(), never_stopping())))
    }

    async fn get(&self, _: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let ok =
            proto::GetResponse { found: true, value: Bytes::from_static(b"value"), version: 7, ttl_ms: 0 };
        self.answer(ok).await
    }

    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        self.ids.lock().expect("ids lock").push(request.into_inner().request_id);
        self.answer(proto::PutResponse { succeeded: true, version: 8 }).await
    }

    async fn delete(
        &self,
        _: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        self.answer(proto::DeleteResponse { deleted: true, version: 8 }).await
    }

    async fn touch(&self, _: Request<proto::TouchRequest>) -> Result<Response<proto::TouchResponse>, Status> {
        self.answer(proto::TouchResponse { found: true, ttl_ms: 500 }).await
    }

    async fn increment(
        &self,
        request: Request<proto::IncrementRequest>,
    ) -> Result<Response<proto::IncrementResponse>, Status> {
        let request = request.into_inner();
        self.ids.lock().expect("ids lock").push(request.request_id);
        self.answer(proto::IncrementResponse { value: request.delta, version: 8 }).await
    }
}

/// A fake server's pipes never get a graceful shutdown.
fn never_stopping() -> tokio::sync::watch::Receiver<bool> {
    static STOP: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    STOP.get_or_init(|| tokio::sync::watch::channel(false).0).subscribe()
}

/// A running fake node: its address and how many requests it has answered.
struct Fake {
    addr: String,
    calls: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<Bytes>>>,
}

impl Fake {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn ids(&self) -> Vec<Bytes> {
        self.ids.lock().expect("ids lock").clone()
    }
}

/// Starts a fake node; it runs until the test's runtime shuts down. The listener
/// is bound before this returns, so connections queue until the server accepts.
async fn start(mode: Mode) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound listener has an address").to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let service = KvServer::new(FakeKv { mode, calls: calls.clone(), ids: ids.clone() });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Fake { addr, calls, ids }
}

/// An address nothing listens on: bound, then closed, so connecting is refused.
async fn closed_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    listener.local_addr().expect("bound listener has an address").to_string()
}

fn client(addrs: &[&str], opts: ClientOptions) -> Client {
    Client::connect(addrs.iter().map(|addr| addr.to_string()).collect(), opts).expect("valid addresses")
}

fn fast() -> ClientOptions {
    ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() }
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future).await.expect("test exceeded its time bound")
}

#[tokio::test]
async fn follows_not_leader_and_remembers_the_leader() {
    bounded(async {
        let leader = start(Mode::Serve).await;
        let follower = start(Mode::NotLeader(Some(leader.addr.clone()))).await;
        let client = client(&[&follower.addr], fast());

        let got = client.get("k", Consistency::Linearizable).await.expect("get");
        let want = GetResult { value: Bytes::from_static(b"value"), version: 7, ttl_ms: None };
        assert_eq!(got, Some(want));
        assert_eq!((follower.calls(), leader.calls()), (1, 1));
        assert_eq!(client.table().leader(5), Some(leader.addr.as_str()));

        // The next request goes straight to the last good address: the leader.
        let put = client.put("k", "v", PutOptions::default()).await.expect("put");
        assert_eq!(put, PutResult { succeeded: true, version: 8 });
        assert_eq!((follower.calls(), leader.calls()), (1, 2));
    })
    .await
}

#[tokio::test]
async fn redirected_writes_and_every_kv_method() {
    bounded(async {
        let leader = start(Mode::Serve).await;
        let follower = start(Mode::NotLeader(Some(leader.addr.clone()))).await;
        let client = client(&[&follower.addr], fast());
        let opts = PutOptions { ttl_ms: 1000, condition: Condition::IfVersion(3) };
        assert!(client.put("k", "v", opts).await.expect("put").succeeded);
        let deleted = client.delete("k", Some(8)).await.expect("delete");
        assert_eq!(deleted, DeleteResult { deleted: true, version: 8 });
        let touched = client.touch("k", 500).await.expect("touch");
        assert_eq!(touched, TouchResult { found: true, ttl_ms: Some(500) });
        let counter = client.increment("c", -3, 0).await.expect("increment");
        assert_eq!(counter, IncrementResult { value: -3, version: 8 });
        assert_eq!((follower.calls(), leader.calls()), (1, 4));
    })
    .await
}

#[tokio::test]
async fn election_backs_off_and_tries_the_next_address() {
    bounded(async {
        let electing = start(Mode::NotLeader(None)).await;
        let leader = start(Mode::Serve).await;
        let client = client(&[&electing.addr, &leader.addr], fast());
        let put = client.put("k", "v", PutOptions::default()).await.expect("put");
        assert!(put.succeeded);
        assert_eq!((electing.calls(), leader.calls()), (1, 1));
    })
    .await
}

#[tokio::test]
async fn write_is_retried_after_unavailable_with_the_same_request_id() {
    bounded(async {
        let no_quorum = start(Mode::Unavailable).await;
        let leader = start(Mode::Serve).await;
        let client = client(&[&no_quorum.addr, &leader.addr], fast());
        let got = client.increment("c", 1, 0).await.expect("retried");
        assert_eq!(got.value, 1);
        assert_eq!((no_quorum.calls(), leader.calls()), (1, 1));
        let (first, second) = (no_quorum.ids(), leader.ids());
        assert_eq!(first, second, "a retry carries the first attempt's id");
        assert_eq!(first[0].len(), 16);
        // The next write is another write: a new id.
        client.increment("c", 1, 0).await.expect("second");
        let ids = leader.ids();
        assert_ne!(ids[1], ids[0]);
    })
    .await
}

#[tokio::test]
async fn a_write_that_gives_up_may_have_been_applied() {
    bounded(async {
        let no_quorum = start(Mode::Unavailable).await;
        let opts = ClientOptions { max_attempts: 3, ..fast() };
        let err = client(&[&no_quorum.addr], opts).increment("c", 1, 0).await.expect_err("no quorum");
        assert_eq!(err, Error::Unavailable("no quorum".into()));
        assert!(err.may_have_been_applied());
        assert_eq!(no_quorum.calls(), 3);
    })
    .await
}

#[tokio::test]
async fn a_callers_request_id_is_sent_and_checked() {
    bounded(async {
        let leader = start(Mode::Serve).await;
        let client = client(&[&leader.addr], fast());
        let id = Bytes::from_static(b"app-request-42");
        client.with_request_id(id.clone()).put("k", "v", PutOptions::default()).await.expect("put");
        assert_eq!(leader.ids(), vec![id]);
        let too_long = Bytes::from(vec![b'x'; ringkv_core::limits::MAX_REQUEST_ID_BYTES + 1]);
        let err =
            client.with_request_id(too_long).put("k", "v", PutOptions::default()).await.expect_err("long");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(leader.calls(), 1, "a refused id is not sent");
    })
    .await
}

#[tokio::test]
async fn read_is_retried_after_unavailable() {
    bounded(async {
        let no_quorum = start(Mode::Unavailable).await;
        let leader = start(Mode::Serve).await;
        let client = client(&[&no_quorum.addr, &leader.addr], fast());
        let got = client.get("k", Consistency::Stale).await.expect("get");
        assert!(got.is_some());
        assert_eq!((no_quorum.calls(), leader.calls()), (1, 1));
    })
    .await
}

#[tokio::test]
async fn write_is_retried_when_the_connection_is_refused() {
    bounded(async {
        let down = closed_addr().await;
        let leader = start(Mode::Serve).await;
        let client = client(&[&down, &leader.addr], fast());
        let put = client.put("k", "v", PutOptions::default()).await.expect("put");
        assert!(put.succeeded);
        assert_eq!(leader.calls(), 1);
    })
    .await
}

#[tokio::test]
async fn refused_everywhere_is_a_transport_error() {
    bounded(async {
        let down = closed_addr().await;
        let opts = ClientOptions { max_attempts: 3, ..fast() };
        let err = client(&[&down], opts).get("k", Consistency::Linearizable).await.unwrap_err();
        assert!(matches!(err, Error::Transport(_)), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn hung_write_moves_on_after_the_attempt_timeout_with_the_same_request_id() {
    bounded(async {
        let hung = start(Mode::Hang).await;
        let leader = start(Mode::Serve).await;
        let opts = ClientOptions { attempt_timeout: Duration::from_millis(200), ..fast() };
        let client = client(&[&hung.addr, &leader.addr], opts);
        let put = client.put("k", "v", PutOptions::default()).await.expect("moved on");
        assert!(put.succeeded);
        assert_eq!((hung.calls(), leader.calls()), (1, 1));
        assert_eq!(hung.ids(), leader.ids());
    })
    .await
}

#[tokio::test]
async fn hung_write_times_out_when_the_deadline_passes() {
    bounded(async {
        let hung = start(Mode::Hang).await;
        let opts = ClientOptions { request_timeout: Duration::from_millis(300), ..fast() };
        let err = client(&[&hung.addr], opts).put("k", "v", PutOptions::default()).await.expect_err("hung");
        assert_eq!(err, Error::DeadlineExceeded);
        assert!(err.may_have_been_applied());
    })
    .await
}

#[tokio::test]
async fn hung_read_moves_on_after_the_attempt_timeout() {
    bounded(async {
        let hung = start(Mode::Hang).await;
        let leader = start(Mode::Serve).await;
        let opts = ClientOptions { attempt_timeout: Duration::from_millis(200), ..fast() };
        let client = client(&[&hung.addr, &leader.addr], opts);
        let got = client.get("k", Consistency::Linearizable).await.expect("get");
        assert!(got.is_some());
        assert_eq!((hung.calls(), leader.calls()), (1, 1));
    })
    .await
}

#[tokio::test]
async fn redirect_loop_ends_after_max_attempts() {
    bounded(async {
        // Two nodes that each name the other as leader.
        let a_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a_addr = a_listener.local_addr().expect("addr").to_string();
        let b = start(Mode::NotLeader(Some(a_addr.clone()))).await;
        let a_calls = Arc::new(AtomicUsize::new(0));
        let a = KvServer::new(FakeKv {
            mode: Mode::NotLeader(Some(b.addr.clone())),
            calls: a_calls.clone(),
            ids: Default::default(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(a)
                .serve_with_incoming(TcpIncoming::from(a_listener)),
        );
        let opts = ClientOptions { max_attempts: 5, ..fast() };
        let err = client(&[&a_addr], opts).get("k", Consistency::Linearizable).await.unwrap_err();
        assert!(matches!(err, Error::NotLeader { shard: 5, .. }), "{err:?}");
        assert_eq!(a_calls.load(Ordering::SeqCst) + b.calls(), 5);
    })
    .await
}

#[tokio::test]
async fn invalid_requests_are_refused_locally() {
    bounded(async {
        let leader = start(Mode::Serve).await;
        let opts = ClientOptions { max_value_bytes: 4, ..fast() };
        let client = client(&[&leader.addr], opts);
        let invalid = |result: Result<_, Error>| matches!(result, Err(Error::InvalidArgument(_)));
        assert!(invalid(client.get("", Consistency::Linearizable).await.map(drop)));
        assert!(invalid(client.put("k", "12345", PutOptions::default()).await.map(drop)));
        let long_ttl = PutOptions { ttl_ms: u64::MAX, ..PutOptions::default() };
        assert!(invalid(client.put("k", "v", long_ttl).await.map(drop)));
        assert!(invalid(client.touch(vec![b'k'; MAX_KEY_BYTES + 1], 1).await.map(drop)));
        assert!(invalid(client.increment("k", 1, u64::MAX).await.map(drop)));
        assert_eq!(leader.calls(), 0);
    })
    .await
}

#[test]
fn connect_checks_addresses_without_a_runtime() {
    let err = Client::connect(vec![], ClientOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    let err = Client::connect(vec!["bad host:1".into()], ClientOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(Client::connect(vec!["127.0.0.1:7001".into()], ClientOptions::default()).is_ok());
}

#[tokio::test]
async fn with_timeout_shortens_the_deadline() {
    bounded(async {
        let hung = start(Mode::Hang).await;
        let client = client(&[&hung.addr], ClientOptions { request_timeout: BOUND * 2, ..fast() });
        let short = client.with_timeout(Duration::from_millis(200));
        let put = tokio::time::timeout(BOUND / 2, short.put("k", "v", PutOptions::default()));
        let err = put.await.expect("the handle's 200 ms deadline, not the client's").expect_err("hung");
        assert_eq!(err, Error::DeadlineExceeded);
    })
    .await
}

// ---- Fake clusters: nodes that answer from a shared cluster map. ----

/// What a fake cluster's servers answer from.
struct Shared {
    /// The cluster map (with leaders) the nodes act on; bumping it wakes long polls.
    map: tokio::sync::watch::Sender<proto::ClusterStatusResponse>,
    /// `ClusterStatus` answers wait while this is false.
    open: tokio::sync::watch::Sender<bool>,
}

/// Who a fake server is.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Node `id`: serves the shards it leads (any it hosts, for stale reads),
    /// answers `NotLeader`/`WrongShard` otherwise, `ClusterStatus` only as the
    /// meta shard's leader.
    Node(NodeId),
    /// A router: serves every request.
    Router,
}

#[derive(Clone)]
struct FakeServer {
    role: Role,
    shared: Arc<Shared>,
    kv_calls: Arc<AtomicUsize>,
    status_calls: Arc<AtomicUsize>,
}

fn failed_precondition(kind: Kind) -> Status {
    let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
    Status::with_details(tonic::Code::FailedPrecondition, "refused", details.into())
}

impl FakeServer {
    /// Whether this server may serve `shard` (for a leader-only request unless
    /// `stale`), else the refusal a real node would send.
    fn admit(&self, shard: ShardId, stale: bool) -> Result<(), Status> {
        let Role::Node(id) = self.role else { return Ok(()) };
        let map = self.shared.map.borrow();
        let status = map.shard_status.iter().find(|s| s.shard == shard);
        let Some(status) = status.filter(|s| s.replicas.contains(&id)) else {
            return Err(failed_precondition(Kind::WrongShard(proto::WrongShard { shard, epoch: map.epoch })));
        };
        if stale || status.leader_id == id {
            return Ok(());
        }
        let leader_addr = map.nodes.iter().find(|n| n.id == status.leader_id).map(|n| n.addr.clone());
        Err(failed_precondition(Kind::NotLeader(NotLeader {
            shard,
            leader_id: status.leader_id,
            leader_addr: leader_addr.unwrap_or_default(),
        })))
    }

    fn admit_key(&self, key: &[u8], stale: bool) -> Result<(), Status> {
        self.kv_calls.fetch_add(1, Ordering::SeqCst);
        let shards = self.shared.map.borrow().shards;
        self.admit(ringkv_core::placement::shard_for_key(key, shards), stale)
    }
}

#[tonic::async_trait]
impl Kv for FakeServer {
    type WatchStream = futures::stream::Empty<Result<proto::WatchResponse, Status>>;

    async fn watch(&self, _: Request<proto::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn publish(
        &self,
        _: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type SubscribeStream = futures::stream::Empty<Result<proto::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        _: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type PipeStream = crate::kv_pipe::Replies;

    async fn pipe(
        &self,
        request: Request<tonic::Streaming<proto::KvFrame>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        Ok(Response::new(crate::kv_pipe::serve(self.clone(), request.into_inner(), never_stopping())))
    }

    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let request = request.into_inner();
        let stale = request.consistency == i32::from(proto::Consistency::Stale);
        self.admit_key(&request.key, stale)?;
        Ok(Response::new(proto::GetResponse { found: true, value: request.key, version: 1, ttl_ms: 0 }))
    }

    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        self.admit_key(&request.into_inner().key, false)?;
        Ok(Response::new(proto::PutResponse { succeeded: true, version: 2 }))
    }

    async fn delete(
        &self,
        _: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn touch(&self, _: Request<proto::TouchRequest>) -> Result<Response<proto::TouchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn increment(
        &self,
        _: Request<proto::IncrementRequest>,
    ) -> Result<Response<proto::IncrementResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl Admin for FakeServer {
    type BackupShardStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::BackupShardChunk, Status>> + Send>>;

    async fn backup_shard(
        &self,
        _: Request<proto::BackupShardRequest>,
    ) -> Result<Response<Self::BackupShardStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn restore_shard(
        &self,
        _: Request<proto::RestoreShardRequest>,
    ) -> Result<Response<proto::RestoreShardResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        self.status_calls.fetch_add(1, Ordering::SeqCst);
        self.admit(META_SHARD, false)?;
        let request = request.into_inner();
        let mut open = self.shared.open.subscribe();
        open.wait_for(|open| *open).await.map_err(|_| Status::internal("gate dropped"))?;
        if request.wait_ms > 0 {
            let mut map = self.shared.map.subscribe();
            let newer = map.wait_for(|map| map.epoch > request.wait_for_epoch_above);
            let _timed_out = tokio::time::timeout(Duration::from_millis(request.wait_ms.into()), newer).await;
        }
        Ok(Response::new(self.shared.map.borrow().clone()))
    }

    async fn init_cluster(
        &self,
        _: Request<proto::InitClusterRequest>,
    ) -> Result<Response<proto::InitClusterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn node_status(
        &self,
        _: Request<proto::NodeStatusRequest>,
    ) -> Result<Response<proto::NodeStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_replica(
        &self,
        _: Request<proto::CreateReplicaRequest>,
    ) -> Result<Response<proto::CreateReplicaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn initialize_shard(
        &self,
        _: Request<proto::InitializeShardRequest>,
    ) -> Result<Response<proto::InitializeShardResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn put_cluster_map(
        &self,
        _: Request<proto::PutClusterMapRequest>,
    ) -> Result<Response<proto::PutClusterMapResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn replica_checksum(
        &self,
        _: Request<proto::ReplicaChecksumRequest>,
    ) -> Result<Response<proto::ReplicaChecksumResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn inject_fault(
        &self,
        _: Request<proto::InjectFaultRequest>,
    ) -> Result<Response<proto::InjectFaultResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_node(
        &self,
        _: Request<proto::AddNodeRequest>,
    ) -> Result<Response<proto::AddNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn plan_rebalance(
        &self,
        _: Request<proto::PlanRebalanceRequest>,
    ) -> Result<Response<proto::PlanRebalanceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn start_rebalance(
        &self,
        _: Request<proto::StartRebalanceRequest>,
    ) -> Result<Response<proto::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebalance_status(
        &self,
        _: Request<proto::RebalanceStatusRequest>,
    ) -> Result<Response<proto::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn control_rebalance(
        &self,
        _: Request<proto::ControlRebalanceRequest>,
    ) -> Result<Response<proto::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drain_node(
        &self,
        _: Request<proto::DrainNodeRequest>,
    ) -> Result<Response<proto::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn remove_node(
        &self,
        _: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn transfer_leader(
        &self,
        _: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn balance_leaders(
        &self,
        _: Request<proto::BalanceLeadersRequest>,
    ) -> Result<Response<proto::BalanceLeadersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn change_membership(
        &self,
        _: Request<proto::ChangeMembershipRequest>,
    ) -> Result<Response<proto::ChangeMembershipResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn remove_replica(
        &self,
        _: Request<proto::RemoveReplicaRequest>,
    ) -> Result<Response<proto::RemoveReplicaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn leader_transfer_step(
        &self,
        _: Request<proto::LeaderTransferStepRequest>,
    ) -> Result<Response<proto::LeaderTransferStepResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A running fake cluster: its servers (index i is node i + 1, or the router)
/// and the map they share.
struct FakeCluster {
    servers: Vec<FakeServer>,
    addrs: Vec<String>,
    shared: Arc<Shared>,
}

impl FakeCluster {
    /// Starts one server per role; `map` builds the cluster map from their
    /// addresses.
    async fn start(
        roles: &[Role],
        map: impl FnOnce(&[String]) -> proto::ClusterStatusResponse,
    ) -> FakeCluster {
        let mut listeners = Vec::new();
        for _ in roles {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0"));
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().expect("bound listener has an address").to_string())
            .collect();
        let shared = Arc::new(Shared {
            map: tokio::sync::watch::Sender::new(map(&addrs)),
            open: tokio::sync::watch::Sender::new(true),
        });
        let mut servers = Vec::new();
        for (listener, role) in listeners.into_iter().zip(roles) {
            let server = FakeServer {
                role: *role,
                shared: shared.clone(),
                kv_calls: Arc::new(AtomicUsize::new(0)),
                status_calls: Arc::new(AtomicUsize::new(0)),
            };
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(KvServer::new(server.clone()))
                    .add_service(AdminServer::new(server.clone()))
                    .serve_with_incoming(TcpIncoming::from(listener)),
            );
            servers.push(server);
        }
        FakeCluster { servers, addrs, shared }
    }

    fn kv_calls(&self) -> Vec<usize> {
        self.servers.iter().map(|s| s.kv_calls.load(Ordering::SeqCst)).collect()
    }

    fn status_calls(&self) -> Vec<usize> {
        self.servers.iter().map(|s| s.status_calls.load(Ordering::SeqCst)).collect()
    }

    fn set_map(&self, map: proto::ClusterStatusResponse) {
        self.shared.map.send_replace(map);
    }
}

/// A cluster map at `epoch` over nodes 1..=n at `addrs`, with `shards` as
/// (shard, replicas, leader) — shard 0 (meta) included; the data shard count is
/// the number of the others.
fn map_of(
    epoch: u64,
    addrs: &[String],
    shards: &[(ShardId, &[NodeId], NodeId)],
) -> proto::ClusterStatusResponse {
    proto::ClusterStatusResponse {
        cluster_id: "fake".into(),
        epoch,
        shards: shards.iter().filter(|(shard, ..)| *shard != META_SHARD).count() as u32,
        replicas: 3,
        nodes: (1..)
            .zip(addrs)
            .map(|(id, addr)| proto::NodeAddress { id, addr: addr.clone(), state: "active".into() })
            .collect(),
        shard_status: shards
            .iter()
            .map(|&(shard, replicas, leader_id)| proto::ShardStatus {
                shard,
                replicas: replicas.to_vec(),
                leader_id,
                ..Default::default()
            })
            .collect(),
        rebalance: None,
    }
}

const NODES: [Role; 3] = [Role::Node(1), Role::Node(2), Role::Node(3)];
const ALL: &[NodeId] = &[1, 2, 3];

/// Meta led by node 2; data shards 1–4 on every node, led by 1, 2, 3, 1.
fn four_shards(addrs: &[String]) -> proto::ClusterStatusResponse {
    map_of(1, addrs, &[(0, ALL, 2), (1, ALL, 1), (2, ALL, 2), (3, ALL, 3), (4, ALL, 1)])
}

#[tokio::test]
async fn fetches_the_map_from_the_meta_leader_and_routes_by_it() {
    bounded(async {
        let cluster = FakeCluster::start(&NODES, four_shards).await;
        // Seed: node 1, which redirects ClusterStatus to node 2, the meta leader.
        let client = client(&[&cluster.addrs[0]], fast());
        assert_eq!(client.epoch(), None);
        assert_eq!(client.refresh_map().await.expect("map"), 1);
        assert_eq!(client.epoch(), Some(1));
        assert_eq!(cluster.status_calls(), [1, 1, 0]);

        // Every put goes straight to its shard's leader: no redirects.
        let leader_of = [1, 2, 3, 1];
        let mut want = [0; 3];
        for i in 0..24 {
            let key = format!("key-{i}");
            let shard = ringkv_core::placement::shard_for_key(key.as_bytes(), 4);
            want[leader_of[shard as usize - 1] - 1] += 1;
            assert!(client.put(key, "v", PutOptions::default()).await.expect("put").succeeded);
        }
        assert_eq!(cluster.kv_calls(), want);
        // The old name still works.
        client.refresh_routes().await.expect("refresh");
    })
    .await
}

#[tokio::test]
async fn stale_reads_spread_over_the_replicas() {
    bounded(async {
        let cluster = FakeCluster::start(&NODES, four_shards).await;
        let client = client(&[&cluster.addrs[0]], fast());
        client.refresh_map().await.expect("map");
        for _ in 0..6 {
            let got = client.get("k", Consistency::Stale).await.expect("get");
            assert_eq!(got.map(|got| got.value), Some(Bytes::from_static(b"k")));
        }
        assert_eq!(cluster.kv_calls(), [2, 2, 2]);
    })
    .await
}

#[tokio::test]
async fn wrong_shard_refreshes_the_map() {
    bounded(async {
        // One data shard, on node 2 only; then it moves to node 3 (epoch 2).
        let cluster =
            FakeCluster::start(&NODES, |addrs| map_of(1, addrs, &[(0, &[1], 1), (1, &[2], 2)])).await;
        let client = client(&[&cluster.addrs[0]], fast());
        assert_eq!(client.refresh_map().await.expect("map"), 1);
        client.put("k", "v", PutOptions::default()).await.expect("put");
        assert_eq!(cluster.kv_calls(), [0, 1, 0]);

        cluster.set_map(map_of(2, &cluster.addrs, &[(0, &[1], 1), (1, &[3], 3)]));
        client.put("k", "v", PutOptions::default()).await.expect("put after the move");
        assert_eq!(client.epoch(), Some(2));
        assert_eq!(cluster.kv_calls()[2], 1, "served by the new replica");
        // The next write goes straight there.
        client.put("k", "v", PutOptions::default()).await.expect("put");
        assert_eq!(cluster.kv_calls()[2], 2);
    })
    .await
}

#[tokio::test]
async fn wait_for_map_change_long_polls() {
    bounded(async {
        let cluster = FakeCluster::start(&NODES, four_shards).await;
        let client = client(&[&cluster.addrs[1]], fast());
        // No map known: any map is news.
        assert_eq!(client.wait_for_map_change(Duration::from_secs(30)).await.expect("first map"), 1);
        // Nothing changes: the epoch stays once the wait is over.
        assert_eq!(client.wait_for_map_change(Duration::from_millis(50)).await.expect("no change"), 1);

        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.wait_for_map_change(Duration::from_secs(30)).await }
        });
        let mut next = four_shards(&cluster.addrs);
        next.epoch = 2;
        cluster.set_map(next);
        assert_eq!(waiting.await.expect("task").expect("changed map"), 2);
        assert_eq!(client.epoch(), Some(2));
    })
    .await
}

#[tokio::test]
async fn concurrent_refreshes_share_one_fetch() {
    bounded(async {
        let cluster = FakeCluster::start(&NODES, four_shards).await;
        let client = client(&[&cluster.addrs[1]], fast());
        cluster.shared.open.send_replace(false);
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.refresh_map().await }
        });
        // Wait until the first fetch is held at the meta leader ...
        while cluster.status_calls()[1] == 0 {
            tokio::task::yield_now().await;
        }
        // ... start more, and let them reach the refresh lock (on this
        // single-threaded runtime, each runs until it waits on the lock).
        let others: Vec<_> = (0..7)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.refresh_map().await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        cluster.shared.open.send_replace(true);
        assert_eq!(first.await.expect("task").expect("refresh"), 1);
        for other in others {
            assert_eq!(other.await.expect("task").expect("refresh"), 1);
        }
        assert_eq!(cluster.status_calls(), [0, 1, 0], "one ClusterStatus for eight refreshes");
    })
    .await
}

#[tokio::test]
async fn router_seeds_get_every_request() {
    bounded(async {
        // A router whose map names nodes this client cannot reach.
        let (down1, down2) = (closed_addr().await, closed_addr().await);
        let cluster = FakeCluster::start(&[Role::Router], |_| {
            map_of(1, &[down1.clone(), down2.clone()], &[(0, &[1, 2], 1), (1, &[1, 2], 1), (2, &[1, 2], 2)])
        })
        .await;
        let router = &cluster.addrs[0];
        let client = client(&[router], fast());
        assert_eq!(client.refresh_map().await.expect("map through the router"), 1);
        for i in 0..5 {
            client.put(format!("k{i}"), "v", PutOptions::default()).await.expect("put");
            client.get(format!("k{i}"), Consistency::Stale).await.expect("get");
        }
        assert_eq!(cluster.kv_calls(), [10]);

        // Forced direct routing tries the map's nodes first, and falls back to
        // the seed when none answers.
        let opts = ClientOptions { routing: Routing::Direct, ..fast() };
        let direct = Client::connect(vec![router.clone()], opts).expect("valid address");
        direct.refresh_map().await.expect("map");
        direct.put("k", "v", PutOptions::default()).await.expect("put via the seed");
        assert_eq!(cluster.kv_calls(), [11]);
    })
    .await
}

#[tokio::test]
async fn via_seeds_never_fetches_a_map_by_itself() {
    bounded(async {
        let cluster = FakeCluster::start(&[Role::Router], four_shards).await;
        let opts = ClientOptions { routing: Routing::ViaSeeds, ..fast() };
        let client = client(&[&cluster.addrs[0]], opts);
        client.put("k", "v", PutOptions::default()).await.expect("put");
        assert_eq!((client.epoch(), cluster.status_calls()), (None, vec![0]));
    })
    .await
}
