//! Sliding expiry (`Get` with `touch_ttl_ms`, `Client::get_and_touch`) against
//! real nodes: the deadline moves only below the refresh fraction, never
//! earlier and never onto a key without a TTL; it survives a leader kill; an
//! untouched session still expires.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, Consistency, PutOptions};
use ringkv_core::placement::shard_for_key;
use ringkv_proto::v1::GetRequest;
use ringkv_tests::Cluster;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(20);

fn ttl(ttl_ms: u64) -> PutOptions {
    PutOptions { ttl_ms, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_moves_only_when_below_the_refresh_fraction() {
    let cluster = Cluster::start(1, &["--touch-refresh-fraction", "0.5"]).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, TIMEOUT).await;
    let client = Client::connect(vec![cluster.nodes[0].addr.clone()], Default::default()).expect("client");

    client.put("session", "alice", ttl(8_000)).await.expect("put");
    // 8 s left of a 10 s touch: above half, so nothing is proposed.
    let got = client.get_and_touch("session", 10_000).await.expect("touch").expect("found");
    let left = got.ttl_ms.expect("has a ttl");
    assert!(left <= 8_000, "not moved: {left}");
    assert_eq!(got.value, Bytes::from_static(b"alice"));
    // 8 s left of a 20 s touch: below half, so the deadline moves to ~20 s.
    let got = client.get_and_touch("session", 20_000).await.expect("touch").expect("found");
    let left = got.ttl_ms.expect("has a ttl");
    assert!(left > 19_000 && left <= 20_000, "moved: {left}");
    // ... and a plain read sees the new deadline (it is in the log).
    let read = client.get("session", Consistency::Linearizable).await.expect("get").expect("found");
    assert!(read.ttl_ms.expect("ttl") > 19_000);
    assert_eq!(read.version, got.version, "a touch does not change the version");

    // A key without a TTL keeps none; a missing key stays missing.
    client.put("forever", "x", PutOptions::default()).await.expect("put");
    let got = client.get_and_touch("forever", 1_000).await.expect("touch").expect("found");
    assert_eq!(got.ttl_ms, None);
    assert_eq!(client.get_and_touch("nobody", 1_000).await.expect("touch"), None);

    // A touch with a STALE read, or a negative TTL, is refused.
    let mut kv = cluster.nodes[0].kv();
    let key = Bytes::from_static(b"session");
    for (consistency, touch_ttl_ms) in [(1, 5_000), (0, -1)] {
        let req = GetRequest { key: key.clone(), consistency, touch_ttl_ms };
        let err = kv.get(req).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_deadline_survives_a_leader_kill_and_an_untouched_session_expires() {
    let (mut cluster, leaders, router) = Cluster::with_router(3, 2).await;
    let client = Client::connect(vec![router], Default::default()).expect("client");

    client.put("touched", "alice", ttl(2_000)).await.expect("put");
    client.put("untouched", "bob", ttl(2_000)).await.expect("put");
    let got = client.get_and_touch("touched", 60_000).await.expect("touch").expect("found");
    assert!(got.ttl_ms.expect("ttl") > 59_000);

    // Kill the leader of the touched key's shard: the new leader has the
    // moved deadline from the log.
    let leader = leaders[&shard_for_key(b"touched", 2)];
    cluster.node(leader).kill();
    let read = client.get("touched", Consistency::Linearizable).await.expect("get").expect("found");
    assert!(read.ttl_ms.expect("ttl") > 50_000, "{read:?}");

    // The untouched session expires on schedule (reads hide it at once).
    let deadline = Instant::now() + TIMEOUT;
    while client.get("untouched", Consistency::Linearizable).await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the untouched session never expired");
        // Poll interval inside the deadline loop: expiry is time-driven, and
        // nothing pushes it to a plain reader.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.get("touched", Consistency::Linearizable).await.expect("get").is_some());
}
