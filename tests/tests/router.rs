//! Applications' view: one router endpoint in front of a cluster of node
//! processes, while leaders are killed, the router restarts, and a second router
//! answers beside the first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_core::placement::shard_for_key;
use ringkv_tests::workload::{Outcomes, assert_only_retryable, check_acked, get, put, start_workload};
use ringkv_tests::{Cluster, KvReply, send};
use tokio::sync::Mutex;

const SHARDS: u32 = 8;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until a put through `router` succeeds (the router has learned the map).
async fn wait_router_ready(router: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send(router, put("ready", "1")).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "router never became ready: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_every_shard_through_leader_kills() {
    let kills: usize = std::env::var("RINGKV_FAILOVER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (mut cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    wait_router_ready(&router).await;

    // One probe key per shard, to see when each shard is served again.
    let mut probes = BTreeMap::new();
    for i in 0.. {
        let key = format!("probe-{i}");
        probes.entry(shard_for_key(key.as_bytes(), SHARDS)).or_insert(key);
        if probes.len() == SHARDS as usize {
            break;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers = start_workload(router.clone(), 8, stop.clone(), outcomes.clone());

    let mut windows = Vec::new();
    for round in 0..kills {
        let leaders = cluster.wait_for_leaders(SHARDS, TIMEOUT).await;
        let mut led: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (&shard, &node) in &leaders {
            led.entry(node).or_default().push(shard);
        }
        let (&victim, victim_shards) = led.iter().max_by_key(|(_, s)| s.len()).expect("a leader");
        let victim_shards: Vec<u32> = victim_shards.iter().copied().filter(|&s| s != 0).collect();
        cluster.node(victim).kill();
        let killed = Instant::now();
        for shard in &victim_shards {
            let key = &probes[shard];
            loop {
                match send(&router, put(key, "probe")).await {
                    Ok(_) => break,
                    Err(e) => assert!(killed.elapsed() < TIMEOUT, "shard {shard} unserved: {e:?}"),
                }
            }
        }
        let window = killed.elapsed();
        println!(
            "kill {round}: node {victim} led shards {victim_shards:?}; all served again through the router after {window:?}"
        );
        windows.push(window);
        cluster.node(victim).start().await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }

    let outcomes = outcomes.lock().await;
    assert!(outcomes.acked.len() > 50, "workload made no progress: {} acked", outcomes.acked.len());
    assert_only_retryable(&outcomes.errors);
    assert!(
        outcomes.transport_errors.is_empty(),
        "the router's connection failed: {:?}",
        outcomes.transport_errors
    );
    check_acked(&router, &outcomes.acked, TIMEOUT).await;
    windows.sort();
    println!(
        "{} acked writes, {} errors; failover window through the router: median {:?}, worst {:?} over {} kills",
        outcomes.acked.len(),
        outcomes.errors.len(),
        windows[windows.len() / 2],
        windows[windows.len() - 1],
        windows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_router_mid_workload_loses_nothing() {
    let (mut cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    wait_router_ready(&router).await;

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers = start_workload(router.clone(), 4, stop.clone(), outcomes.clone());
    let acked_before = || async { outcomes.lock().await.acked.len() };
    let deadline = Instant::now() + TIMEOUT;
    while acked_before().await < 20 {
        assert!(Instant::now() < deadline, "no progress before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.routers[0].kill();
    cluster.routers[0].start().await;
    let resumed_from = acked_before().await;
    let deadline = Instant::now() + TIMEOUT;
    while acked_before().await < resumed_from + 20 {
        assert!(Instant::now() < deadline, "clients did not continue after the router restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let outcomes = outcomes.lock().await;
    // While the router is down the application's own channel fails: the
    // connection is refused, reset or cancelled mid-request (tonic reports
    // `UNKNOWN: transport error` or `CANCELLED: operation was canceled`). Those
    // writes' outcome is unknown; everything the router itself answered must
    // still be retryable.
    assert_only_retryable(&outcomes.errors);
    check_acked(&router, &outcomes.acked, TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_answer_identically() {
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(SHARDS, 3).await.expect("init");
    cluster.wait_for_leaders(SHARDS, TIMEOUT).await;
    let (first, second) = (cluster.start_router().await, cluster.start_router().await);
    let (a, b) = (cluster.routers[first].addr.clone(), cluster.routers[second].addr.clone());
    wait_router_ready(&a).await;
    wait_router_ready(&b).await;
    for i in 0..40 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let key = format!("alt-{}", i / 4);
        let value = format!("value-{i}");
        let Ok(KvReply::Put(written)) = send(writer, put(&key, &value)).await else { panic!("put {key}") };
        assert!(written.succeeded);
        for router in [reader, writer] {
            let Ok(KvReply::Get(read)) = send(router, get(&key)).await else { panic!("get {key}") };
            assert_eq!(
                (&read.value[..], read.version),
                (value.as_bytes(), written.version),
                "{key} via {router}"
            );
        }
    }
}
