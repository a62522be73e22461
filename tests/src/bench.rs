//! Pieces shared by the benchmark commands (`ringkv-rebalance-bench`,
//! `ringkv-ops-bench`): a closed-loop write workload measured while something
//! else happens, and bounded waits on the cluster.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::Client;
use ringkv_proto::v1::RebalanceStatusResponse;

/// What a closed-loop write workload did while it ran.
#[derive(Debug)]
pub struct Writes {
    /// Latencies of the acknowledged writes, sorted.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Writes {
    pub fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile (0..=1) of the latencies; zero when there are none.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// Runs `writers` closed-loop writers through `client` while `during` runs,
/// writer `w` cycling through keys `w, w + writers, …` modulo `keys` (named by
/// `key`); returns `during`'s output and what the writers did meanwhile.
pub async fn writes_while<T>(
    client: &Client,
    writers: usize,
    keys: usize,
    key: fn(usize) -> Bytes,
    value: Bytes,
    during: impl Future<Output = T>,
) -> (T, Writes) {
    let run = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, value, run) = (client.clone(), value.clone(), run.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut i) = (Vec::new(), 0usize, w);
                while run.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match client.put(key(i % keys), value.clone(), Default::default()).await {
                        Ok(_) => latencies.push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                    i += writers;
                }
                (latencies, errors)
            })
        })
        .collect();
    let output = during.await;
    run.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.expect("writer task");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    (output, Writes { latencies, errors, elapsed })
}

/// The `p` quantile (0..=1) of sorted latencies; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Waits (at most `timeout`, else panics) until node `id` is in the cluster
/// map; returns the map's epoch then.
pub async fn wait_registered(client: &Client, id: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(status) = client.cluster_status().await
            && status.nodes.iter().any(|n| n.id == id)
        {
            return status.epoch;
        }
        assert!(Instant::now() < deadline, "node {id} not in the cluster map after {timeout:?}");
        // Poll interval; nothing pushes map changes to a client.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `timeout`, else panics) until the rebalance plan is no
/// longer running; returns its last status.
pub async fn wait_rebalance_ended(client: &Client, timeout: Duration) -> RebalanceStatusResponse {
    let deadline = Instant::now() + timeout;
    loop {
        let status = client.rebalance_status().await.expect("rebalance status");
        if status.state != "running" {
            return status;
        }
        assert!(Instant::now() < deadline, "rebalance still running after {timeout:?}: {status:?}");
        // Poll interval, as above.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process's resident set size, from `/proc` (0 if unreadable).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
