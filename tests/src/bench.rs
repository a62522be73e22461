//! Pieces shared by the benchmark commands (`ringkv-rebalance-bench`,
//! `ringkv-ops-bench`): a closed-loop write workload and its percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::Client;

/// Writes with `writers` closed-loop writers through `client` until `run` is
/// cleared, writer `w` cycling through keys `w, w + writers, …` modulo `keys`
/// (named by `key`). Returns the sorted latencies of the acknowledged writes and
/// the number of errors.
pub async fn closed_loop_writes(
    client: Client,
    writers: usize,
    keys: usize,
    key: fn(usize) -> Bytes,
    value: Bytes,
    run: Arc<AtomicBool>,
) -> (Vec<Duration>, usize) {
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
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.expect("writer task");
        all.extend(latencies);
        errors += e;
    }
    all.sort();
    (all, errors)
}

/// The `p` quantile (0..=1) of sorted latencies; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}
