//! `KV.Watch` on nodes: ordered PUT / DELETE / EXPIRED events, exact resume
//! from a version (also on the new leader after the old one is killed), prefix
//! watches within a shard, and OUT_OF_RANGE past the retention.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, PutOptions};
use ringkv_core::placement::shard_for_key;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{WatchEventType, WatchRequest};
use ringkv_tests::Cluster;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(20);

/// (type, key, value, version)
type Seen = (WatchEventType, String, String, u64);

async fn open(
    addr: &str,
    request: WatchRequest,
) -> Result<tonic::Streaming<ringkv_proto::v1::WatchResponse>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    KvClient::new(channel).watch(request).await.map(tonic::Response::into_inner)
}

fn key_watch(key: &str, start_version: u64) -> WatchRequest {
    WatchRequest { key: Bytes::from(key.to_string()), start_version, ..Default::default() }
}

/// Reads events until `count` have arrived (progress-only responses skipped).
async fn collect(stream: &mut tonic::Streaming<ringkv_proto::v1::WatchResponse>, count: usize) -> Vec<Seen> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events in time: {seen:?}", seen.len()))
            .expect("the watch stays open")
            .expect("a response, not the end");
        for event in response.events {
            assert!(event.version <= response.version, "{event:?} after the response's version");
            let kind = WatchEventType::try_from(event.r#type).expect("known type");
            let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            seen.push((kind, text(&event.key), text(&event.value), event.version));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_and_a_watch_resumes_exactly() {
    let cluster = Cluster::start(1, &[]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, TIMEOUT).await;
    let addr = cluster.nodes[0].addr.clone();
    let client = Client::connect(vec![addr.clone()], Default::default()).expect("client");

    let mut watch = open(&addr, key_watch("k", 0)).await.expect("watch");
    let v1 = client.put("k", "one", PutOptions::default()).await.expect("put").version;
    let v2 = client.put("k", "two", PutOptions::default()).await.expect("put").version;
    let v3 = client.delete("k", None).await.expect("delete").version;
    let v4 = client
        .put("k", "short", PutOptions { ttl_ms: 300, ..Default::default() })
        .await
        .expect("put")
        .version;
    let expires_at = Instant::now() + Duration::from_millis(300);
    let seen = collect(&mut watch, 5).await;
    let expired_after = Instant::now().saturating_duration_since(expires_at);
    use WatchEventType::{Delete, Expired, Put};
    let want: Vec<(WatchEventType, &str, &str)> = vec![
        (Put, "k", "one"),
        (Put, "k", "two"),
        (Delete, "k", ""),
        (Put, "k", "short"),
        (Expired, "k", ""),
    ];
    let got: Vec<(WatchEventType, &str, &str)> =
        seen.iter().map(|(t, k, v, _)| (*t, k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
    let versions: Vec<u64> = seen.iter().map(|s| s.3).collect();
    assert_eq!(&versions[..4], &[v1, v2, v3, v4], "events carry the writes' versions");
    assert!(versions[4] > v4);
    // The stated bound: the expiry round (250 ms) plus one commit; generous here.
    assert!(expired_after < Duration::from_secs(3), "EXPIRED came {expired_after:?} after the deadline");

    // Resume from the second event: exactly the same events from there on.
    let mut resumed = open(&addr, key_watch("k", v2)).await.expect("resume");
    assert_eq!(collect(&mut resumed, 4).await, seen[1..].to_vec());

    // A prefix watch within one shard sees only its prefix.
    let shard = shard_for_key(b"user:1", 2);
    let same_shard = |prefix: &str| {
        (0..).map(|i| format!("{prefix}{i}")).find(|k| shard_for_key(k.as_bytes(), 2) == shard).expect("key")
    };
    let request = WatchRequest { prefix: Bytes::from_static(b"user:"), shard, ..Default::default() };
    let mut users = open(&addr, request).await.expect("prefix watch");
    let (other, user) = (same_shard("other:"), same_shard("user:"));
    client.put(other.clone(), "x", PutOptions::default()).await.expect("put");
    client.put(user.clone(), "alice", PutOptions::default()).await.expect("put");
    let seen = collect(&mut users, 1).await;
    assert_eq!((seen[0].0, seen[0].1.as_str(), seen[0].2.as_str()), (Put, user.as_str(), "alice"));

    // Malformed watches are refused.
    for bad in [
        WatchRequest::default(),
        WatchRequest {
            key: Bytes::from_static(b"a"),
            prefix: Bytes::from_static(b"a"),
            ..Default::default()
        },
    ] {
        let err = open(&addr, bad).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // A position beyond the log (another cluster's, or a wiped one's) is
    // refused rather than waited for.
    let err = open(&addr, key_watch("k", 1 << 40)).await.expect_err("from the future");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("beyond the end"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_replica_that_steps_down_ends_so_the_caller_resumes() {
    let cluster = Cluster::start(3, &[]).await;
    cluster.init(1, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(1, TIMEOUT).await;
    let leader = leaders[&1];
    let leader_addr = cluster.nodes.iter().find(|n| n.id == leader).expect("leader").addr.clone();
    let mut watch = open(&leader_addr, key_watch("s", 0)).await.expect("watch");
    let target = cluster.nodes.iter().find(|n| n.id != leader).expect("another node").id;
    let client = Client::connect(cluster.addrs(), Default::default()).expect("client");
    client.transfer_leader(1, target).await.expect("transfer");
    let deadline = Instant::now() + TIMEOUT;
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.message()).await.expect("the stream ends in time") {
            Ok(Some(_)) => continue, // the first response, progress
            Ok(None) => panic!("ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("no longer leads"), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_past_the_retention_is_out_of_range() {
    let cluster = Cluster::start(1, &["--watch-retention-events", "4"]).await;
    cluster.init(1, 1).await.expect("init");
    cluster.wait_for_leaders(1, TIMEOUT).await;
    let addr = cluster.nodes[0].addr.clone();
    let client = Client::connect(vec![addr.clone()], Default::default()).expect("client");
    let mut first = 0;
    for i in 0..10 {
        let version = client.put("o", format!("{i}"), PutOptions::default()).await.expect("put").version;
        if i == 0 {
            first = version;
        }
    }
    let err = open(&addr, key_watch("o", first)).await.expect_err("too old");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("re-read"), "{err:?}");
    // The message names a version that works.
    let from: u64 = err.message().rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a version");
    let mut watch = open(&addr, key_watch("o", from)).await.expect("watch from the named version");
    let seen = collect(&mut watch, 1).await;
    assert!(seen[0].3 >= from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_the_new_leader_with_no_gap_and_no_duplicate() {
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(1, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(1, TIMEOUT).await;
    let client = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let leader = leaders[&1];
    let leader_addr = cluster.nodes.iter().find(|n| n.id == leader).expect("leader").addr.clone();

    let mut acked = Vec::new();
    let mut watch = open(&leader_addr, key_watch("w", 0)).await.expect("watch");
    for i in 0..5 {
        acked.push(client.put("w", format!("{i}"), PutOptions::default()).await.expect("put").version);
    }
    let before = collect(&mut watch, 5).await;
    let token = before.last().expect("events").3;
    drop(watch);

    cluster.node(leader).kill();
    for i in 5..10 {
        acked.push(
            client.put("w", format!("{i}"), PutOptions::default()).await.expect("put after failover").version,
        );
    }
    // Resume on whichever node leads now.
    let deadline = Instant::now() + TIMEOUT;
    let mut resumed = loop {
        let mut found = None;
        for node in cluster.nodes.iter().filter(|n| n.id != leader) {
            if let Ok(stream) = open(&node.addr, key_watch("w", token + 1)).await {
                found = Some(stream);
                break;
            }
        }
        if let Some(stream) = found {
            break stream;
        }
        assert!(Instant::now() < deadline, "no new leader accepted the watch");
        // Poll interval inside the deadline loop: the election is under way.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = collect(&mut resumed, 5).await;
    let versions: Vec<u64> = before.iter().chain(&after).map(|s| s.3).collect();
    assert_eq!(versions, acked, "every acknowledged write exactly once, in version order");
    let values: Vec<String> = before.iter().chain(&after).map(|s| s.2.clone()).collect();
    assert_eq!(values, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}
