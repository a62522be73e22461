//! Watches through the client library and the router: a prefix spans every
//! shard; the stream survives a router restart and a killed shard leader with
//! no gap and no duplicate; a resume token continues exactly, on any router.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, ClientOptions, EventKind, PutOptions, Routing, Watch, WatchStart, WatchTarget};
use ringkv_core::placement::shard_for_key;
use ringkv_tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(30);
const SHARDS: u32 = 4;

/// (key, version, value) of a delivered PUT.
type Put = (String, u64, String);

/// An application's client of the router only.
fn via_router(router: &str) -> Client {
    let options = ClientOptions { routing: Routing::ViaSeeds, ..Default::default() };
    Client::connect(vec![router.to_string()], options).expect("client")
}

/// Reads PUT events until `count` arrived, checking per shard that versions
/// only grow.
async fn collect(watch: &mut Watch, count: usize, last: &mut BTreeMap<u32, u64>) -> Vec<Put> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, watch.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events in time: {seen:?}", seen.len()))
            .expect("the watch goes on")
            .expect("no error");
        for event in batch.events {
            assert_eq!(event.kind, EventKind::Put, "{event:?}");
            let previous = last.insert(batch.shard, event.version).unwrap_or(0);
            assert!(event.version > previous, "shard {} went from {previous} to {event:?}", batch.shard);
            let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            seen.push((text(&event.key), event.version, text(&event.value)));
        }
    }
    seen
}

/// Writes `s:{i}` for `range` (and a key outside the prefix each time);
/// returns the acknowledged PUTs of the prefix.
async fn write(client: &Client, range: std::ops::Range<usize>) -> Vec<Put> {
    let mut acked = Vec::new();
    for i in range {
        let (key, value) = (format!("s:{i}"), format!("v{i}"));
        let put = client.put(key.clone(), value.clone(), PutOptions::default()).await.expect("put");
        acked.push((key, put.version, value));
        client.put(format!("t:{i}"), "other", PutOptions::default()).await.expect("put outside the prefix");
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_survives_a_router_restart_and_a_leader_kill_exactly() {
    let (mut cluster, leaders, router) = Cluster::with_router(3, SHARDS).await;
    let writer = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let app = via_router(&router);
    let prefix = WatchTarget::Prefix(Bytes::from_static(b"s:"));
    let mut watch = app.watch(prefix.clone(), WatchStart::Now).await.expect("watch through the router");
    let mut last = BTreeMap::new();

    let mut acked = write(&writer, 0..20).await;
    let mut seen = collect(&mut watch, 20, &mut last).await;
    let shards: BTreeSet<u32> = seen.iter().map(|(k, ..)| shard_for_key(k.as_bytes(), SHARDS)).collect();
    assert!(shards.len() > 1, "the prefix's keys span shards: {shards:?}");
    let token = watch.token().clone();

    // The router dies; writes go on; a new router process takes its port.
    cluster.routers[0].kill();
    acked.extend(write(&writer, 20..40).await);
    cluster.routers[0].start().await;
    seen.extend(collect(&mut watch, 20, &mut last).await);

    // The leader of the most shards is killed.
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for node in leaders.values() {
        *led.entry(*node).or_default() += 1;
    }
    let victim = led.iter().max_by_key(|(_, n)| **n).map(|(node, _)| *node).expect("a leader");
    cluster.node(victim).kill();
    acked.extend(write(&writer, 40..60).await);
    seen.extend(collect(&mut watch, 20, &mut last).await);

    let sorted = |mut puts: Vec<Put>| {
        puts.sort();
        puts
    };
    assert_eq!(sorted(seen), sorted(acked.clone()), "every acknowledged write exactly once");

    // The token saved after the first 20 continues exactly there, on the
    // restarted router, long after the stream it came from.
    let mut resumed = app.watch(prefix, WatchStart::After(token)).await.expect("resume from the token");
    let again = collect(&mut resumed, 40, &mut BTreeMap::new()).await;
    assert_eq!(sorted(again), sorted(acked[20..].to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_routed_key_watches_agree_and_bad_requests_are_refused() {
    let (cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    let direct = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let app = via_router(&router);
    let key = WatchTarget::Key(Bytes::from_static(b"k"));
    let mut routed = app.watch(key.clone(), WatchStart::Now).await.expect("routed watch");
    let mut straight = direct.watch(key.clone(), WatchStart::Now).await.expect("direct watch");
    let acked = [
        direct.put("k", "1", PutOptions::default()).await.expect("put").version,
        direct.put("k", "2", PutOptions::default()).await.expect("put").version,
    ];
    for watch in [&mut routed, &mut straight] {
        let seen = collect(watch, 2, &mut BTreeMap::new()).await;
        assert_eq!(seen.iter().map(|p| p.1).collect::<Vec<_>>(), acked);
    }
    // A key watch from a version replays from there.
    let mut replay = app.watch(key.clone(), WatchStart::Version(acked[1])).await.expect("from a version");
    assert_eq!(collect(&mut replay, 1, &mut BTreeMap::new()).await[0].1, acked[1]);
    // A direct token resumes through the router and the other way round.
    let mut from_direct =
        app.watch(key.clone(), WatchStart::After(straight.token().clone())).await.expect("direct token");
    let mut from_routed =
        direct.watch(key, WatchStart::After(routed.token().clone())).await.expect("routed token");
    let v3 = direct.put("k", "3", PutOptions::default()).await.expect("put").version;
    for watch in [&mut from_direct, &mut from_routed] {
        assert_eq!(collect(watch, 1, &mut BTreeMap::new()).await[0].1, v3);
    }

    // Refused with a clear error, nothing opened.
    let prefix = WatchTarget::Prefix(Bytes::from_static(b"p"));
    let err = app.watch(prefix, WatchStart::Version(3)).await.err().expect("a prefix has no one version");
    assert!(matches!(err, ringkv_client::Error::InvalidArgument(_)), "{err:?}");
    let empty = WatchTarget::Prefix(Bytes::new());
    assert!(matches!(
        app.watch(empty, WatchStart::Now).await.err().expect("empty prefix"),
        ringkv_client::Error::InvalidArgument(_)
    ));
    assert!(ringkv_client::ResumeToken::decode(b"not a token").is_err());
    let raw = ringkv_proto::v1::WatchRequest {
        resume_token: Bytes::from_static(b"\x01\x02garbage"),
        ..Default::default()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{router}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let err = ringkv_proto::v1::kv_client::KvClient::new(channel).watch(raw).await.expect_err("bad token");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
