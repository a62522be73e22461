//! `grpc.health.v1` on nodes: NOT_SERVING until the node has loaded its
//! replicas (and before it belongs to a cluster), SERVING once loaded, again
//! after a restart, and NOT_SERVING while it is drained. `Admin` always
//! answers SERVING. A router serves once it has the cluster map.

use std::time::{Duration, Instant};

use ringkv_client::Client;
use ringkv_tests::{Cluster, Process};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn health(cluster: &Cluster, node: usize, service: &str) -> ServingStatus {
    health_of(&cluster.nodes[node], service).await
}

async fn health_of(process: &Process, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(process.channel());
    let reply = client
        .check(HealthCheckRequest { service: service.into() })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"));
    reply.into_inner().status()
}

/// Waits until node `node` reports `want` for the server and for `KV`.
async fn wait_for(cluster: &Cluster, node: usize, want: ServingStatus) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (server, kv) = (health(cluster, node, "").await, health(cluster, node, "ringkv.v1.KV").await);
        if server == want && kv == want {
            return;
        }
        assert!(Instant::now() < deadline, "node {node}: server {server:?}, KV {kv:?}; want {want:?}");
        // Poll interval: the node re-checks its state every 250 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_loading_restart_and_draining() {
    let mut cluster = Cluster::start(4, &[]).await;
    // No cluster yet: nothing to serve, but Admin answers (to be initialized).
    for node in 0..4 {
        wait_for(&cluster, node, ServingStatus::NotServing).await;
        assert_eq!(health(&cluster, node, "ringkv.v1.Admin").await, ServingStatus::Serving);
    }
    cluster.init(4, 3).await.expect("init");
    for node in 0..4 {
        wait_for(&cluster, node, ServingStatus::Serving).await;
    }
    // A router serves once it has the cluster map.
    let router = cluster.start_router().await;
    let deadline = Instant::now() + TIMEOUT;
    while health_of(&cluster.routers[router], "ringkv.v1.KV").await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "the router never reported SERVING");
        // Poll interval: the router re-checks every 250 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health_of(&cluster.routers[router], "").await, ServingStatus::Serving);

    // A restarted node serves again once it has replayed its log.
    let client = Client::connect(cluster.addrs(), Default::default()).expect("client");
    for i in 0..50 {
        client.put(format!("k{i}"), "v", Default::default()).await.expect("put");
    }
    cluster.nodes[2].kill();
    cluster.nodes[2].start().await;
    wait_for(&cluster, 2, ServingStatus::Serving).await;

    // Draining node 4 turns it NOT_SERVING, and only it.
    client.drain_node(4, 0, 0).await.expect("drain");
    wait_for(&cluster, 3, ServingStatus::NotServing).await;
    assert_eq!(health(&cluster, 3, "ringkv.v1.Admin").await, ServingStatus::Serving);
    for node in 0..3 {
        assert_eq!(health(&cluster, node, "").await, ServingStatus::Serving, "node {node}");
    }
}
