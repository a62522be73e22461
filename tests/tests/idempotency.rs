//! Idempotent writes against real nodes: a write whose answer is lost (a
//! test fault: the node applies it, then answers UNAVAILABLE) is retried by
//! the client with the same request id and applies once; a caller's own id
//! works the same through the router.

use std::time::Duration;

use bytes::Bytes;
use ringkv_client::{Client, Condition, Consistency, PutOptions};
use ringkv_proto::v1::{IncrementRequest, InjectFaultRequest, PutRequest};
use ringkv_tests::Cluster;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn lose_next_write_answers(cluster: &Cluster, count: u32) {
    for node in &cluster.nodes {
        let fault = InjectFaultRequest { isolate_from: Vec::new(), lose_write_answers: count };
        node.admin().inject_fault(fault).await.expect("inject fault");
    }
}

async fn value(client: &Client, key: &str) -> Option<String> {
    let got = client.get(key.to_string(), Consistency::Linearizable).await.expect("get");
    got.map(|r| String::from_utf8_lossy(&r.value).into_owned())
}

fn increment(key: &str, delta: i64, request_id: &[u8]) -> IncrementRequest {
    IncrementRequest {
        key: Bytes::from(key.to_string()),
        delta,
        ttl_ms: 0,
        request_id: Bytes::copy_from_slice(request_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_and_the_clients_retry_apply_once() {
    let cluster = Cluster::start(1, &["--enable-test-faults"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, TIMEOUT).await;
    let client = Client::connect(vec![cluster.nodes[0].addr.clone()], Default::default()).expect("client");

    // The answer of the first attempt is lost; the retry gets the first result.
    lose_next_write_answers(&cluster, 1).await;
    let incremented = client.increment("counter", 5, 0).await.expect("retried");
    assert_eq!(incremented.value, 5);
    assert_eq!(value(&client, "counter").await.as_deref(), Some("5"), "applied exactly once");

    // A conditional put: the retry reports the first attempt's success, not
    // the "already exists" a second application would give.
    lose_next_write_answers(&cluster, 1).await;
    let if_absent = PutOptions { condition: Condition::IfAbsent, ..Default::default() };
    let put = client.put("session", "alice", if_absent).await.expect("retried");
    assert!(put.succeeded, "{put:?}");

    // Without a request id, the same fault loses the answer of an applied
    // write, and the caller cannot know: this is what the ids prevent.
    lose_next_write_answers(&cluster, 1).await;
    let mut kv = cluster.nodes[0].kv();
    let err = kv.increment(increment("counter", 1, b"")).await.expect_err("answer lost");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(value(&client, "counter").await.as_deref(), Some("6"), "it was applied");

    // A caller's id, sent twice by hand: one application, the same answer.
    let first = kv.increment(increment("counter", 10, b"by-hand-1")).await.expect("first").into_inner();
    let again = kv.increment(increment("counter", 10, b"by-hand-1")).await.expect("again").into_inner();
    assert_eq!((first.value, first.version), (again.value, again.version));
    assert_eq!(value(&client, "counter").await.as_deref(), Some("16"));

    // An over-long id is refused and writes nothing.
    let put = PutRequest {
        key: Bytes::from_static(b"long-id"),
        value: Bytes::from_static(b"v"),
        request_id: Bytes::from(vec![b'x'; ringkv_core::limits::MAX_REQUEST_ID_BYTES + 1]),
        ..Default::default()
    };
    let err = kv.put(put).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(value(&client, "long-id").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_request_id_applies_once_through_the_router() {
    let (cluster, _leaders, router) = Cluster::with_router(3, 2).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{router}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the router");
    let mut kv = ringkv_proto::v1::kv_client::KvClient::new(channel);
    let first = kv.increment(increment("visits", 3, b"app-7")).await.expect("first").into_inner();
    let again = kv.increment(increment("visits", 3, b"app-7")).await.expect("again").into_inner();
    assert_eq!((first.value, first.version), (3, again.version));
    assert_eq!(again.value, 3);
    let other = kv.increment(increment("visits", 3, b"app-8")).await.expect("other").into_inner();
    assert_eq!(other.value, 6);
    drop(cluster);
}
