//! A rolling restart of every node under load: each node is stopped
//! gracefully (it hands its leaderships off first), started again, and the
//! next one goes only once it serves. Writers through the router see no
//! error, and every acknowledged write is there afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Consistency, Routing};
use ringkv_tests::Cluster;
use tokio::sync::Mutex;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn wait_serving(cluster: &Cluster, index: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut health = HealthClient::new(cluster.nodes[index].channel());
        let status = health
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|r| r.into_inner().status());
        if status.ok() == Some(ServingStatus::Serving) {
            return;
        }
        assert!(Instant::now() < deadline, "node {} never served again", cluster.nodes[index].id);
        // Poll interval: the node re-checks its readiness every 250 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_fails_no_request() {
    let (mut cluster, _, router) = Cluster::with_router(3, 8).await;
    let options = ClientOptions { routing: Routing::ViaSeeds, ..Default::default() };
    let app = Client::connect(vec![router], options).expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (app, stop, acked, errors) = (app.clone(), stop.clone(), acked.clone(), errors.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("w{writer}-{i}"), format!("v{i}"));
                    match app.put(key.clone(), value.clone(), Default::default()).await {
                        Ok(_) => acked.lock().await.push((key, value)),
                        Err(err) => errors.lock().await.push(format!("{key}: {err}")),
                    }
                    i += 1;
                }
            })
        })
        .collect();

    for index in 0..cluster.nodes.len() {
        let before = acked.lock().await.len();
        cluster.nodes[index].stop().await;
        let log = cluster.nodes[index].log();
        assert!(!log.contains("leadership not handed off"), "node {index} kept a leadership:\n{log}");
        cluster.nodes[index].start().await;
        wait_serving(&cluster, index).await;
        // Writes went on across this node's restart.
        let deadline = Instant::now() + TIMEOUT;
        while acked.lock().await.len() < before + 20 {
            assert!(Instant::now() < deadline, "writes stalled after restarting node {index}");
            // Poll interval: the writers run on their own.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let errors = errors.lock().await;
    assert!(errors.is_empty(), "{} failed writes, e.g. {:?}", errors.len(), &errors[..errors.len().min(5)]);
    let acked = acked.lock().await;
    for (key, value) in acked.iter() {
        let got = app.get(key.clone(), Consistency::Linearizable).await.expect("read back");
        assert_eq!(got.map(|g| g.value), Some(value.clone().into()), "{key}");
    }
    println!("{} writes acknowledged across the rolling restart, none failed", acked.len());
}
