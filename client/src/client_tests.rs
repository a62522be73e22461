//! [`Client`] against in-process fake KV servers on 127.0.0.1:0: redirects,
//! retries and what is not retried. Every test is bounded by [`BOUND`]; none uses a
//! sleep for synchronization (servers are bound before the client connects).

use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
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

#[derive(Debug)]
struct FakeKv {
    mode: Mode,
    calls: Arc<AtomicUsize>,
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
    async fn get(&self, _: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        let ok =
            proto::GetResponse { found: true, value: Bytes::from_static(b"value"), version: 7, ttl_ms: 0 };
        self.answer(ok).await
    }

    async fn put(&self, _: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
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
        let delta = request.into_inner().delta;
        self.answer(proto::IncrementResponse { value: delta, version: 8 }).await
    }
}

/// A running fake node: its address and how many requests it has answered.
struct Fake {
    addr: String,
    calls: Arc<AtomicUsize>,
}

impl Fake {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Starts a fake node; it runs until the test's runtime shuts down. The listener
/// is bound before this returns, so connections queue until the server accepts.
async fn start(mode: Mode) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound listener has an address").to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = KvServer::new(FakeKv { mode, calls: calls.clone() });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Fake { addr, calls }
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
        assert_eq!(client.routes().leader(5), Some(leader.addr.as_str()));

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
async fn write_is_not_retried_after_unavailable() {
    bounded(async {
        let no_quorum = start(Mode::Unavailable).await;
        let leader = start(Mode::Serve).await;
        let client = client(&[&no_quorum.addr, &leader.addr], fast());
        let err = client.increment("c", 1, 0).await.expect_err("must not retry");
        assert_eq!(err, Error::Unavailable("no quorum".into()));
        assert_eq!((no_quorum.calls(), leader.calls()), (1, 0));
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
async fn hung_write_times_out_once() {
    bounded(async {
        let hung = start(Mode::Hang).await;
        let leader = start(Mode::Serve).await;
        let opts = ClientOptions { request_timeout: Duration::from_millis(300), ..fast() };
        let client = client(&[&hung.addr, &leader.addr], opts);
        let err = client.put("k", "v", PutOptions::default()).await.expect_err("hung");
        assert_eq!(err, Error::DeadlineExceeded);
        assert_eq!((hung.calls(), leader.calls()), (1, 0));
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
        let a = KvServer::new(FakeKv { mode: Mode::NotLeader(Some(b.addr.clone())), calls: a_calls.clone() });
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

#[test]
fn leaders_of_cluster_status() {
    let status = proto::ClusterStatusResponse {
        shards: 2,
        nodes: vec![
            proto::NodeAddress { id: 1, addr: "a:1".into(), state: String::new() },
            proto::NodeAddress { id: 2, addr: "b:1".into(), state: String::new() },
        ],
        shard_status: vec![
            proto::ShardStatus { shard: 0, replicas: vec![1, 2], leader_id: 1, ..Default::default() },
            proto::ShardStatus { shard: 1, replicas: vec![1, 2], leader_id: 0, ..Default::default() },
            proto::ShardStatus { shard: 2, replicas: vec![1, 2], leader_id: 2, ..Default::default() },
        ],
        ..Default::default()
    };
    assert_eq!(leaders_of(&status), vec![(0, "a:1".to_string()), (2, "b:1".to_string())]);
}
