//! `ringkv-rebalance-bench`: what moving a shard costs (see
//! `scripts/rebalance-bench.sh`). Loads one data shard with `--keys` keys on
//! three nodes, measures a closed-loop write workload through the router, then
//! adds a fourth node and drains the third while the same workload runs, and
//! prints how long the plan took, how many bytes it copied, and the client
//! latencies before and during it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ringkv_client::{Client, ClientOptions, Routing};
use ringkv_tests::Cluster;
use ringkv_tests::bench::{Writes, wait_rebalance_ended, wait_registered, writes_while};

#[derive(Debug, Parser)]
struct Args {
    /// Keys in the shard that moves.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Concurrent writers of the measured workload.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long the workload is measured before the rebalance.
    #[arg(long, default_value_t = 10)]
    baseline_secs: u64,
}

fn client(router: &str) -> Client {
    let opts = ClientOptions { routing: Routing::ViaSeeds, ..ClientOptions::default() };
    Client::connect(vec![router.to_string()], opts).expect("client")
}

/// The workload's keys.
fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i}"))
}

fn summary(name: &str, writes: &Writes) {
    println!(
        "{name:8} {:>7.0} writes/s  p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  errors {}",
        writes.per_sec(),
        writes.percentile(0.50),
        writes.percentile(0.99),
        writes.latencies.last().copied().unwrap_or_default(),
        writes.errors,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(1, 3).await.expect("init");
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let index = cluster.start_router().await;
    let router = cluster.routers[index].addr.clone();
    let value = "v".repeat(args.value_bytes);

    // Load.
    let loading = Instant::now();
    let loaders: Vec<_> = (0..64)
        .map(|l| {
            let (client, value, keys) = (client(&router), value.clone(), args.keys);
            tokio::spawn(async move {
                for i in (l..keys).step_by(64) {
                    client.put(format!("key-{i}"), value.clone(), Default::default()).await.expect("load");
                }
            })
        })
        .collect();
    for loader in loaders {
        loader.await.expect("loader");
    }
    println!("loaded {} keys of {} B in {:.1?}", args.keys, args.value_bytes, loading.elapsed());

    // Before: the window is a measurement period, not a wait for anything.
    let writer = client(&router);
    let value = Bytes::from(value);
    let baseline = tokio::time::sleep(Duration::from_secs(args.baseline_secs));
    let ((), before) = writes_while(&writer, args.clients, args.keys, key, value.clone(), baseline).await;
    summary("before", &before);

    // During: a fourth node joins, the third drains; the data shard moves 3 -> 4.
    let admin = client(&router);
    let four = cluster.add_node(&router, &[]).await;
    wait_registered(&admin, four, Duration::from_secs(30)).await;
    let drain = async {
        let drained = admin.drain_node(3, 0, 0).await.expect("drain node 3");
        (drained, wait_rebalance_ended(&admin, Duration::from_secs(600)).await)
    };
    let ((drained, status), during) = writes_while(&writer, args.clients, args.keys, key, value, drain).await;
    summary("during", &during);
    let took = during.elapsed;
    println!(
        "rebalance {}: {} moves (data shard and meta shard) in {took:.2?}, {} bytes copied ({:.1} MiB/s)",
        status.state,
        drained.moves.len(),
        status.bytes_copied,
        status.bytes_copied as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
}
