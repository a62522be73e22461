//! Prometheus `/metrics` on nodes and routers (`--metrics-listen`): every
//! family is there, and the numbers move under load and failover.

use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Routing};
use ringkv_tests::{Cluster, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /metrics` over HTTP/1.0; the body.
async fn scrape(addr: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics port");
    socket.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("request");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("response");
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The sum of every sample of `name` whose labels contain `filter`.
fn sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']) && line.contains(filter)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_routers_export_metrics_that_move_under_load() {
    // Frequent snapshots, so that the load below makes some.
    let mut cluster =
        Cluster::start(3, &["--snapshot-every-entries", "40", "--log-kept-after-snapshot", "10"]).await;
    let mut metrics = Vec::new();
    for node in &mut cluster.nodes {
        let addr = format!("127.0.0.1:{}", free_port());
        node.kill();
        node.add_args(&["--metrics-listen", &addr]);
        node.start().await;
        metrics.push(addr);
    }
    cluster.init(4, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(4, TIMEOUT).await;
    let router = cluster.start_router().await;
    let router_metrics = format!("127.0.0.1:{}", free_port());
    cluster.routers[router].kill();
    cluster.routers[router].add_args(&["--metrics-listen", &router_metrics]);
    cluster.routers[router].start().await;

    let before = scrape(&metrics[0]).await;
    // (Request families appear with their first request.)
    for family in [
        "ringkv_shard_term",
        "ringkv_shard_is_leader",
        "ringkv_shard_applied_index",
        "ringkv_shard_last_log_index",
        "ringkv_shard_apply_lag",
        "ringkv_shard_keys",
        "ringkv_shard_bytes",
        "ringkv_shard_log_entries",
        "ringkv_shard_snapshot_index",
        "ringkv_shard_snapshot_bytes",
        "ringkv_flush_batch_size_bucket",
        "ringkv_flush_sync_seconds_bucket",
        "ringkv_open_watches",
        "ringkv_open_subscriptions",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }
    assert_eq!(
        sum(&before, "ringkv_shard_is_leader", ""),
        leaders.values().filter(|&&n| n == 1).count() as f64
    );

    // Load through the router.
    let options = ClientOptions { routing: Routing::ViaSeeds, ..Default::default() };
    let app = Client::connect(vec![cluster.routers[router].addr.clone()], options).expect("client");
    for i in 0..200 {
        app.put(format!("key-{i}"), "value", Default::default()).await.expect("put");
    }
    let (mut puts, mut keys, mut timed, mut ops) = (0.0, 0.0, 0.0, 0.0);
    for addr in &metrics {
        let text = scrape(addr).await;
        ops += sum(&text, "ringkv_shard_proposed_ops_total", "");
        puts += sum(&text, "ringkv_requests_total", "rpc=\"put\",code=\"OK\"");
        keys += sum(&text, "ringkv_shard_keys", "");
        timed += sum(&text, "ringkv_request_duration_seconds_count", "rpc=\"put\"");
    }
    assert_eq!(puts, 200.0, "each put answered by one leader");
    assert_eq!(timed, 200.0, "and timed");
    assert!(ops >= 200.0, "every put proposed by a leader: {ops} ops");
    assert_eq!(keys, 600.0, "every key on three replicas");
    let after = scrape(&metrics[0]).await;
    assert!(
        sum(&after, "ringkv_shard_applied_index", "") > sum(&before, "ringkv_shard_applied_index", ""),
        "applied indexes moved"
    );
    assert!(
        sum(&after, "ringkv_flush_sync_seconds_count", "")
            > sum(&before, "ringkv_flush_sync_seconds_count", ""),
        "flush rounds counted"
    );
    // Snapshots are built in the background after their threshold: wait.
    let deadline = Instant::now() + TIMEOUT;
    while sum(&scrape(&metrics[0]).await, "ringkv_shard_snapshot_bytes", "") == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no snapshot size after 200 writes with a snapshot every 40 entries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sum(&scrape(&metrics[0]).await, "ringkv_shard_snapshot_index", "") > 0.0);
    let routed = scrape(&router_metrics).await;
    assert_eq!(sum(&routed, "ringkv_requests_total", "rpc=\"put\",code=\"OK\""), 200.0, "{routed}");
    assert!(routed.contains("ringkv_router_retries_total{reason=\"not_leader\"}"), "{routed}");

    // A killed leader's shards elect new leaders: the survivors count changes.
    let victim = leaders[&1];
    let survivors: Vec<&String> =
        cluster.nodes.iter().zip(&metrics).filter(|(node, _)| node.id != victim).map(|(_, m)| m).collect();
    let changes = |text: &str| sum(text, "ringkv_shard_leader_changes_total", "");
    let mut before_kill = 0.0;
    for addr in &survivors {
        before_kill += changes(&scrape(addr).await);
    }
    cluster.node(victim).kill();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut now = 0.0;
        for addr in &survivors {
            now += changes(&scrape(addr).await);
        }
        if now > before_kill {
            break;
        }
        assert!(Instant::now() < deadline, "no leader change counted after killing node {victim}");
        // Poll interval: leaders are polled every 250 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
