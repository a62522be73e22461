//! `ringkv-ops-bench`: the operational numbers of a loaded cluster (run by
//! `scripts/bench.sh`). On three nodes with `--keys` keys of `--value-bytes` B:
//! - memory: each node's RSS before and after the load, and the bytes per key
//!   that adds (every node holds a replica of every key);
//! - restart: a node killed with SIGKILL and started again, timed until every
//!   replica it hosts follows or leads again and has re-applied everything it
//!   had applied before the kill;
//! - failover: a node leading shards is killed; for each shard it led, the time
//!   until a write to that shard is acknowledged (the client retries as an
//!   application's would);
//! - rebalance: write throughput (closed loop, `--clients`) before and while a
//!   fourth node joins and the cluster rebalances onto it.
//!
//! Prints one line per measurement, and the same as JSON with `--json`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ringkv_client::{Client, ClientOptions};
use ringkv_tests::Cluster;
use ringkv_tests::bench::{
    percentile as pct, rss_bytes, wait_rebalance_ended, wait_registered, writes_while,
};

#[derive(Debug, Parser)]
struct Args {
    /// Keys loaded before the measurements.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Data shards of the cluster.
    #[arg(long, default_value_t = 32)]
    shards: u32,
    /// Concurrent writers of the load and of the rebalance workload.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of the workload measured before the rebalance.
    #[arg(long, default_value_t = 10)]
    baseline_secs: u64,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// 16-byte keys, as in ringkv-bench.
fn key(i: usize) -> Bytes {
    Bytes::from(format!("k{i:015}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Per shard, the highest `last_applied` any running replica reports.
async fn applied(cluster: &Cluster) -> std::collections::BTreeMap<u32, u64> {
    let mut applied = std::collections::BTreeMap::new();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        if let Ok(status) = node.status().await {
            for r in status.replica_status {
                let e = applied.entry(r.shard).or_insert(0);
                *e = (*e).max(r.last_applied);
            }
        }
    }
    applied
}

/// Waits until every running replica has applied what the most advanced one
/// had when this was called (the load has settled everywhere).
async fn settle(cluster: &Cluster, timeout: Duration) {
    let target = applied(cluster).await;
    let deadline = Instant::now() + timeout;
    loop {
        let mut behind = 0;
        for node in cluster.nodes.iter().filter(|n| n.is_running()) {
            let status = node.status().await.expect("node status");
            behind += status
                .replica_status
                .iter()
                .filter(|r| r.last_applied < target.get(&r.shard).copied().unwrap_or(0))
                .count();
        }
        if behind == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{behind} replicas still behind after {timeout:?}");
        // Poll interval: nothing pushes a replica's progress.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut results = serde_json::Map::new();
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(args.shards, 3).await.expect("init");
    cluster.wait_for_leaders(args.shards, Duration::from_secs(60)).await;
    let client = Client::connect(cluster.addrs(), ClientOptions::default()).expect("client");
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid().expect("running")).collect();
    let before: Vec<u64> = pids.iter().map(|&p| rss_bytes(p)).collect();

    // Load.
    let loading = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loaders: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let (client, value, next, keys) = (client.clone(), value.clone(), next.clone(), args.keys);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        break;
                    }
                    client.put(key(i), value.clone(), Default::default()).await.expect("load");
                }
            })
        })
        .collect();
    for loader in loaders {
        loader.await.expect("loader");
    }
    let load_secs = loading.elapsed().as_secs_f64();
    settle(&cluster, Duration::from_secs(120)).await;
    println!(
        "load: {} keys of {} B in {load_secs:.1} s ({:.0} writes/s, {} clients)",
        args.keys,
        args.value_bytes,
        args.keys as f64 / load_secs,
        args.clients
    );
    results.insert("load_writes_per_sec".into(), (args.keys as f64 / load_secs).into());

    // Memory.
    let after: Vec<u64> = pids.iter().map(|&p| rss_bytes(p)).collect();
    let mut per_key = Vec::new();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let bytes_per_key = a.saturating_sub(*b) as f64 / args.keys as f64;
        per_key.push(bytes_per_key);
        println!(
            "memory: node {} RSS {:.1} MiB -> {:.1} MiB, {bytes_per_key:.0} B per key",
            i + 1,
            mib(*b),
            mib(*a)
        );
    }
    per_key.sort_by(f64::total_cmp);
    results.insert("rss_mib_after_load".into(), after.iter().map(|&a| mib(a)).collect::<Vec<_>>().into());
    results.insert("bytes_per_key_median".into(), per_key[per_key.len() / 2].into());

    // Restart of node 3.
    let had: std::collections::BTreeMap<u32, u64> = cluster.nodes[2]
        .status()
        .await
        .expect("status")
        .replica_status
        .iter()
        .map(|r| (r.shard, r.last_applied))
        .collect();
    cluster.nodes[2].kill();
    let restarting = Instant::now();
    cluster.nodes[2].start().await;
    let listening = restarting.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(status) = cluster.nodes[2].status().await {
            let caught_up = status.replica_status.len() >= had.len()
                && status.replica_status.iter().all(|r| {
                    (r.role == "leader" || r.role == "follower")
                        && r.last_applied >= had.get(&r.shard).copied().unwrap_or(0)
                });
            if caught_up {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node 3 did not serve again within 120 s");
        // Poll interval: short, since this is the measured restart time.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let serving = restarting.elapsed();
    println!(
        "restart: node 3 ({} replicas) listening after {listening:.2?}, serving after {serving:.2?}",
        had.len()
    );
    results.insert("restart_to_serving_secs".into(), serving.as_secs_f64().into());

    // Failover: kill node 1, time a write to every shard it led.
    settle(&cluster, Duration::from_secs(60)).await;
    let led: Vec<u32> =
        cluster.nodes[0].status().await.expect("status").leading.into_iter().filter(|&s| s != 0).collect();
    let keys_of: Vec<Bytes> = led
        .iter()
        .map(|&shard| {
            (0..)
                .map(|i| Bytes::from(format!("failover-{i:06}")))
                .find(|k| ringkv_core::placement::shard_for_key(k, args.shards) == shard)
                .expect("a key of every shard")
        })
        .collect();
    let killed = Instant::now();
    cluster.nodes[0].kill();
    let writes: Vec<_> = keys_of
        .into_iter()
        .map(|k| {
            let (client, value) = (client.clone(), value.clone());
            tokio::spawn(async move {
                // A write that was already on its way to the killed node fails
                // with an unknown outcome (the client never resends a write);
                // this one is idempotent, so send it again, as an application
                // that knows that would.
                let deadline = killed + Duration::from_secs(30);
                loop {
                    match client.put(k.clone(), value.clone(), Default::default()).await {
                        Ok(_) => return killed.elapsed(),
                        Err(e) => assert!(
                            Instant::now() < deadline,
                            "no write acknowledged 30 s after the kill: {e}"
                        ),
                    }
                }
            })
        })
        .collect();
    let mut windows = Vec::new();
    for w in writes {
        windows.push(w.await.expect("writer"));
    }
    windows.sort();
    println!(
        "failover: node 1 killed, {} shards it led: first write acknowledged after median {:.2?}, worst {:.2?}",
        windows.len(),
        pct(&windows, 0.5),
        windows.last().copied().unwrap_or_default()
    );
    results.insert("failover_median_secs".into(), pct(&windows, 0.5).as_secs_f64().into());
    results.insert(
        "failover_worst_secs".into(),
        windows.last().copied().unwrap_or_default().as_secs_f64().into(),
    );
    cluster.nodes[0].start().await;
    settle(&cluster, Duration::from_secs(120)).await;

    // Rebalance onto a fourth node, under write load. The baseline's window is
    // a measurement period, not a wait for anything.
    let baseline = tokio::time::sleep(Duration::from_secs(args.baseline_secs));
    let ((), before) = writes_while(&client, args.clients, args.keys, key, value.clone(), baseline).await;
    println!(
        "rebalance: before  {:>7.0} writes/s  p50 {:>8.2?}  p99 {:>8.2?}  errors {}",
        before.per_sec(),
        before.percentile(0.5),
        before.percentile(0.99),
        before.errors
    );
    let seed = cluster.nodes[0].addr.clone();
    let four = cluster.add_node(&seed, &[]).await;
    let epoch = wait_registered(&client, four, Duration::from_secs(30)).await;
    let rebalance = async {
        client.start_rebalance(epoch, 0, 0).await.expect("start rebalance");
        wait_rebalance_ended(&client, Duration::from_secs(600)).await
    };
    let (status, during) =
        writes_while(&client, args.clients, args.keys, key, value.clone(), rebalance).await;
    println!(
        "rebalance: during  {:>7.0} writes/s  p50 {:>8.2?}  p99 {:>8.2?}  errors {}  ({} moves, {}, {:.1?}, {:.1} MiB copied)",
        during.per_sec(),
        during.percentile(0.5),
        during.percentile(0.99),
        during.errors,
        status.moves.len(),
        status.state,
        during.elapsed,
        mib(status.bytes_copied)
    );
    results.insert("rebalance_before_writes_per_sec".into(), before.per_sec().into());
    results.insert("rebalance_during_writes_per_sec".into(), during.per_sec().into());
    results.insert("rebalance_secs".into(), during.elapsed.as_secs_f64().into());
    results.insert("rebalance_moves".into(), status.moves.len().into());
    results.insert("rebalance_errors".into(), during.errors.into());

    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(results)).expect("json");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
