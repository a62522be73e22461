//! A node's limits on real processes: the memory budget refuses writes that
//! add data (and nothing else) with RESOURCE_EXHAUSTED until space is freed; a
//! request over --max-request-bytes is refused with RESOURCE_EXHAUSTED on
//! nodes and routers (a `KV.Pipe` frame over it ends the pipe with it, after
//! the frames before it are answered); --max-streams-per-connection holds further streams back
//! until one closes. A refused request writes nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use ringkv_client::{Client, ClientOptions, Consistency, Error, PutOptions};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{KvFrame, KvMethod, PutRequest, WatchRequest};
use ringkv_tests::Cluster;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(20);

fn client(addrs: Vec<String>) -> Client {
    let options = ClientOptions { request_timeout: Duration::from_secs(10), ..ClientOptions::default() };
    Client::connect(addrs, options).expect("client")
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_refuses_writes_that_add_data_until_space_is_freed() {
    let budget = 64 * 1024;
    let cluster = Cluster::start(1, &["--memory-budget-bytes", &budget.to_string()]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, DEADLINE).await;
    let kv = client(cluster.addrs());
    let value = vec![b'v'; 1024];
    // Fill: each write adds ~1 KiB; the budget must stop it well before 4x.
    let mut written = Vec::new();
    let refused = loop {
        assert!(
            written.len() < 4 * budget / 1024,
            "{} KiB written past a {budget}-byte budget",
            written.len()
        );
        let key = format!("fill-{}", written.len());
        match kv.put(key.clone(), value.clone(), PutOptions::default()).await {
            Ok(_) => written.push(key),
            Err(err) => break (key, err),
        }
    };
    let (refused_key, err) = refused;
    assert!(
        matches!(&err, Error::Other { code: Code::ResourceExhausted, message } if message.contains("--memory-budget-bytes")),
        "{err}"
    );
    assert!(written.len() * 1024 >= budget / 2, "refused after only {} writes", written.len());
    assert!(
        kv.get(refused_key.clone(), Consistency::Linearizable).await.expect("read").is_none(),
        "a refused write landed"
    );
    let err = kv.increment("counter", 1, 0).await.expect_err("increment adds data");
    assert!(matches!(err, Error::Other { code: Code::ResourceExhausted, .. }), "{err}");
    // Reads, TTL changes and deletes still work, and free the space.
    assert!(kv.get(written[0].clone(), Consistency::Linearizable).await.expect("read").is_some());
    kv.touch(written[0].clone(), 60_000).await.expect("touch is allowed");
    for key in &written {
        kv.delete(key.clone(), None).await.expect("deletes are allowed");
    }
    let start = Instant::now();
    loop {
        match kv.put(refused_key.clone(), value.clone(), PutOptions::default()).await {
            Ok(_) => break,
            Err(Error::Other { code: Code::ResourceExhausted, .. }) if start.elapsed() < DEADLINE => {
                // The node re-sums its data every 100 ms.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("writes did not resume after deleting everything: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_resource_exhausted_on_nodes_and_routers() {
    let mut cluster =
        Cluster::start(1, &["--max-value-bytes", "65536", "--max-request-bytes", "100000"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, DEADLINE).await;
    let index = cluster
        .start_router_with(&["--max-value-bytes", "65536", "--max-request-bytes", "100000"], &[])
        .await;
    let router = cluster.routers[index].addr.clone();
    for addr in [cluster.addrs()[0].clone(), router] {
        let mut kv = KvClient::new(channel(&addr).await).max_encoding_message_size(1 << 20);
        let request = PutRequest {
            key: Bytes::from("big"),
            value: Bytes::from(vec![7u8; 200_000]),
            ..Default::default()
        };
        let status = kv.put(request).await.expect_err("over the limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{addr}: {status:?}");
        assert!(status.message().contains("--max-request-bytes"), "{addr}: {status:?}");
        // Just under the request limit but over the value limit: the value
        // check answers, as before.
        let request = PutRequest {
            key: Bytes::from("big"),
            value: Bytes::from(vec![7u8; 90_000]),
            ..Default::default()
        };
        assert_eq!(
            kv.put(request).await.expect_err("value too large").code(),
            Code::InvalidArgument,
            "{addr}"
        );
        an_oversized_pipe_frame_ends_the_pipe(&mut kv, &addr).await;
    }
    let kv = client(cluster.addrs());
    for key in ["big", "big-piped"] {
        assert!(kv.get(key, Consistency::Linearizable).await.expect("read").is_none(), "{key}");
    }
    assert!(kv.get("small-piped", Consistency::Linearizable).await.expect("read").is_some());
}

/// Through the client library, whose pipe carries requests up to 64 KiB: a
/// piped request over a smaller server limit fails with RESOURCE_EXHAUSTED,
/// and the calls sharing its pipe still succeed (those behind it were not
/// run, and are sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_request_over_the_size_limit_fails_alone() {
    let cluster = Cluster::start(1, &["--max-value-bytes", "16384", "--max-request-bytes", "32768"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, DEADLINE).await;
    let kv = client(cluster.addrs());
    kv.put("warm", "up", PutOptions::default()).await.expect("the pipe opens");
    let small = (0..32).map(|i| {
        let kv = kv.clone();
        tokio::spawn(async move { kv.put(format!("small-{i}"), "v", PutOptions::default()).await })
    });
    let small: Vec<_> = small.collect();
    let err =
        kv.put("piped-big", vec![7u8; 40_000], PutOptions::default()).await.expect_err("over the limit");
    assert!(
        matches!(&err, Error::Other { code: Code::ResourceExhausted, message } if message.contains("--max-request-bytes")),
        "{err}"
    );
    for (i, call) in small.into_iter().enumerate() {
        call.await.expect("task").unwrap_or_else(|e| panic!("small-{i} failed beside the big one: {e}"));
    }
    assert!(kv.get("piped-big", Consistency::Linearizable).await.expect("read").is_none());
}

/// On `KV.Pipe`, a frame over the limit is answered by the end of the stream:
/// the frame before it is answered first, then RESOURCE_EXHAUSTED naming the
/// setting and the last frame read.
async fn an_oversized_pipe_frame_ends_the_pipe(kv: &mut KvClient<tonic::transport::Channel>, addr: &str) {
    let put = |key: &'static str, value_bytes: usize| {
        let request = PutRequest {
            key: Bytes::from(key),
            value: Bytes::from(vec![7u8; value_bytes]),
            ..Default::default()
        };
        Bytes::from(request.encode_to_vec())
    };
    let frames = [
        KvFrame { id: 1, method: KvMethod::Put as i32, request: put("small-piped", 10), timeout_ms: 10_000 },
        KvFrame {
            id: 2,
            method: KvMethod::Put as i32,
            request: put("big-piped", 200_000),
            timeout_ms: 10_000,
        },
    ];
    let mut replies = kv
        .pipe(futures::stream::iter(frames).chain(futures::stream::pending()))
        .await
        .expect("a pipe")
        .into_inner();
    let first = replies.message().await.expect("the first frame's reply").expect("a reply before the end");
    assert_eq!((first.id, first.code), (1, 0), "{addr}: {first:?}");
    let status = replies.message().await.expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{addr}: {status:?}");
    assert!(
        status.message().contains("--max-request-bytes") && status.message().contains("after frame 1"),
        "{addr}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_per_connection_limit_wait_for_a_free_one() {
    let cluster = Cluster::start(1, &["--max-streams-per-connection", "2"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, DEADLINE).await;
    let kv = KvClient::new(channel(&cluster.addrs()[0]).await);
    let watch = |key: &str| {
        let mut kv = kv.clone();
        let request = WatchRequest { key: Bytes::from(key.to_string()), ..Default::default() };
        async move { kv.watch(request).await.map(tonic::Response::into_inner) }
    };
    let first = watch("a").await.expect("first watch");
    let _second = watch("b").await.expect("second watch");
    let mut third = Box::pin(watch("c"));
    // Held back, not refused: with two streams open, it cannot start.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third).await.is_err(),
        "a third stream opened on a connection limited to two"
    );
    drop(first);
    tokio::time::timeout(DEADLINE, third)
        .await
        .expect("the third stream starts once one closes")
        .expect("watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_budget_a_retry_of_an_applied_write_gets_its_answer() {
    let budget = 16 * 1024;
    let cluster =
        Cluster::start(1, &["--memory-budget-bytes", &budget.to_string(), "--enable-test-faults"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, DEADLINE).await;
    let node = cluster.addrs()[0].clone();
    let mut raw = KvClient::new(channel(&node).await);
    let first = PutRequest {
        key: Bytes::from("retried"),
        value: Bytes::from("v"),
        request_id: Bytes::from_static(b"request-0001"),
        ..Default::default()
    };
    // Applied, but its answer is lost.
    let fault = ringkv_proto::v1::InjectFaultRequest { isolate_from: Vec::new(), lose_write_answers: 1 };
    cluster.nodes[0].admin().inject_fault(fault).await.expect("inject the fault");
    let lost = raw.put(first.clone()).await.expect_err("the answer is lost");
    assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
    // Fill the node past its budget; wait until new writes are refused.
    let kv = client(cluster.addrs());
    let value = vec![b'v'; 1024];
    let start = Instant::now();
    for i in 0.. {
        assert!(start.elapsed() < DEADLINE, "the budget never refused a write");
        match kv.put(format!("fill-{i}"), value.clone(), PutOptions::default()).await {
            Ok(_) => {}
            Err(Error::Other { code: Code::ResourceExhausted, .. }) => break,
            Err(err) => panic!("{err}"),
        }
    }
    // The retry of the applied write is answered as applied, not refused.
    let answer = raw.put(first).await.expect("the retry gets the first answer").into_inner();
    assert!(answer.succeeded, "{answer:?}");
    let fresh = PutRequest { key: Bytes::from("fresh"), value: Bytes::from("v"), ..Default::default() };
    assert_eq!(raw.put(fresh).await.expect_err("a new write is refused").code(), Code::ResourceExhausted);
}
