//! `ringkv-stream-bench`: what watches and subscriptions cost, on a 3-node
//! cluster with a router (run by `scripts/bench.sh`, or alone):
//! - idle watches: `--watches` key watches opened straight on the shard
//!   leaders (one key each), then the nodes' RSS growth per watch;
//! - idle subscriptions: `--subscriptions` subscriptions through the router
//!   over `--channels` channels, then the router's and the nodes' RSS growth
//!   per subscription (the router shares one upstream per channel);
//! - fan-out: `--fanout-subscribers` subscribers of one channel through the
//!   router while `--publishers` publish 64-byte messages closed loop for
//!   `--fanout-secs`: publishes/s, deliveries/s (every subscriber must get
//!   every message, in order) and publish-to-delivery latency.
//!
//! Streams are spread over many client connections, `--per-connection`
//! each (servers allow 200 concurrent HTTP/2 streams per connection). Prints
//! one line per measurement, and JSON with `--json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use ringkv_client::{Client, ClientOptions, Routing, WatchStart, WatchTarget};
use ringkv_tests::Cluster;
use ringkv_tests::bench::{percentile, rss_bytes};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    watches: usize,
    #[arg(long, default_value_t = 100_000)]
    subscriptions: usize,
    /// Channels the idle subscriptions are spread over.
    #[arg(long, default_value_t = 1_000)]
    channels: usize,
    #[arg(long, default_value_t = 1_000)]
    fanout_subscribers: usize,
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    #[arg(long, default_value_t = 10)]
    fanout_secs: u64,
    /// Streams per client connection.
    #[arg(long, default_value_t = 150)]
    per_connection: usize,
    #[arg(long, default_value_t = 32)]
    shards: u32,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Clients enough for `streams` streams, `per` each, to `addrs` (each client
/// has connections of its own).
fn clients(addrs: &[String], streams: usize, per: usize, routing: Routing) -> Vec<Client> {
    let options = ClientOptions { routing, ..Default::default() };
    (0..streams.div_ceil(per.max(1)))
        .map(|_| Client::connect(addrs.to_vec(), options.clone()).expect("client"))
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn total_rss(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| rss_bytes(pid)).sum()
}

/// Sums a node status counter over the nodes.
async fn node_counter(cluster: &Cluster, pick: fn(&ringkv_proto::v1::NodeStatusResponse) -> u64) -> u64 {
    let mut total = 0;
    for node in &cluster.nodes {
        total += node.status().await.map(|s| pick(&s)).unwrap_or(0);
    }
    total
}

/// Waits (bounded) until a node counter reads `want`.
async fn wait_counter(cluster: &Cluster, pick: fn(&ringkv_proto::v1::NodeStatusResponse) -> u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_counter(cluster, pick).await != want {
        assert!(Instant::now() < deadline, "node counter never reached {want}");
        // Poll interval: streams close asynchronously.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lets the processes settle (allocator, lazy work) before an RSS reading.
async fn settle() {
    // A measurement pause, not synchronization: the streams are all open.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut results = serde_json::Map::new();
    let (cluster, _, router) = Cluster::with_router(3, args.shards).await;
    let node_pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid().expect("running")).collect();
    let router_pid = cluster.routers[0].pid().expect("running");
    let addrs = cluster.addrs();
    let per = args.per_connection;
    let open_concurrency = 256;

    // Idle watches, straight on the leaders.
    settle().await;
    let nodes_before = total_rss(&node_pids);
    let watchers = clients(&addrs, args.watches, per, Routing::Auto);
    let opening = Instant::now();
    let watches: Vec<_> = futures::stream::iter(0..args.watches)
        .map(|i| {
            let client = watchers[i / per].clone();
            async move {
                let key = WatchTarget::Key(Bytes::from(format!("watched-{i:08}")));
                client.watch(key, WatchStart::Now).await.expect("watch")
            }
        })
        .buffer_unordered(open_concurrency)
        .collect()
        .await;
    let open_secs = opening.elapsed().as_secs_f64();
    wait_counter(&cluster, |s| s.open_watches, args.watches as u64).await;
    settle().await;
    let per_watch = total_rss(&node_pids).saturating_sub(nodes_before) as f64 / args.watches.max(1) as f64;
    println!(
        "idle watches: {} key watches on the leaders opened in {open_secs:.1} s; nodes' RSS +{:.1} MiB = {per_watch:.0} B per watch",
        args.watches,
        mib(total_rss(&node_pids).saturating_sub(nodes_before)),
    );
    results.insert("idle_watch_bytes".into(), per_watch.round().into());
    drop(watches);
    drop(watchers);
    wait_counter(&cluster, |s| s.open_watches, 0).await;

    // Idle subscriptions through the router.
    settle().await;
    let (nodes_before, router_before) = (total_rss(&node_pids), rss_bytes(router_pid));
    let subscribers = clients(std::slice::from_ref(&router), args.subscriptions, per, Routing::ViaSeeds);
    let channels = args.channels.max(1);
    let opening = Instant::now();
    let subscriptions: Vec<_> = futures::stream::iter(0..args.subscriptions)
        .map(|i| {
            let client = subscribers[i / per].clone();
            async move { client.subscribe(format!("channel-{}", i % channels), 0).await.expect("subscribe") }
        })
        .buffer_unordered(open_concurrency)
        .collect()
        .await;
    let open_secs = opening.elapsed().as_secs_f64();
    let upstreams = node_counter(&cluster, |s| s.open_subscriptions).await;
    settle().await;
    let router_growth = rss_bytes(router_pid).saturating_sub(router_before);
    let nodes_growth = total_rss(&node_pids).saturating_sub(nodes_before);
    let n = args.subscriptions.max(1) as f64;
    println!(
        "idle subscriptions: {} over {channels} channels through the router, opened in {open_secs:.1} s; \
         {upstreams} upstream subscriptions on the nodes; router RSS +{:.1} MiB = {:.0} B per subscription, \
         nodes +{:.1} MiB",
        args.subscriptions,
        mib(router_growth),
        router_growth as f64 / n,
        mib(nodes_growth),
    );
    results.insert("idle_subscription_router_bytes".into(), (router_growth as f64 / n).round().into());
    results.insert("idle_subscription_upstreams".into(), upstreams.into());
    drop(subscriptions);
    drop(subscribers);
    wait_counter(&cluster, |s| s.open_subscriptions, 0).await;

    // Fan-out: one channel, many subscribers through the router.
    let subscribers = clients(std::slice::from_ref(&router), args.fanout_subscribers, per, Routing::ViaSeeds);
    let mut subscriptions = Vec::new();
    for i in 0..args.fanout_subscribers {
        subscriptions.push(subscribers[i / per].subscribe("fanout", 0).await.expect("subscribe"));
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Set once every publisher returned: `published` is final.
    let done = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = Client::connect(addrs.clone(), ClientOptions::default()).expect("client");
    let publishers: Vec<_> = (0..args.publishers)
        .map(|_| {
            let (publisher, stop, published) = (publisher.clone(), stop.clone(), published.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut payload = (start.elapsed().as_micros() as u64).to_be_bytes().to_vec();
                    payload.resize(64, b'.');
                    publisher.publish("fanout", payload).await.expect("publish");
                    published.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let receivers: Vec<_> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(i, mut subscription)| {
            let (done, published) = (done.clone(), published.clone());
            tokio::spawn(async move {
                let (mut received, mut last_seq, mut latencies) = (0u64, 0u64, Vec::new());
                let mut last_message = Instant::now();
                loop {
                    if done.load(Ordering::Acquire) && received >= published.load(Ordering::Relaxed) {
                        break;
                    }
                    assert!(last_message.elapsed() < Duration::from_secs(30), "no message for 30 s");
                    let next = tokio::select! {
                        next = subscription.next() => next,
                        // Wake to re-check whether the publishers are done.
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    };
                    let message = next.expect("open").expect("no error");
                    last_message = Instant::now();
                    assert!(message.seq > last_seq, "out of order: {} after {last_seq}", message.seq);
                    last_seq = message.seq;
                    received += 1;
                    // Latency samples from a few subscribers only.
                    if i < 10 {
                        let sent = u64::from_be_bytes(message.payload[..8].try_into().expect("8 bytes"));
                        latencies.push(Duration::from_micros(start.elapsed().as_micros() as u64 - sent));
                    }
                }
                (received, latencies)
            })
        })
        .collect();
    // The measured window: publishers and subscribers run for this long.
    tokio::time::sleep(Duration::from_secs(args.fanout_secs)).await;
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    done.store(true, Ordering::Release);
    let total = published.load(Ordering::Relaxed);
    let publish_secs = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut delivered = 0;
    for receiver in receivers {
        let (received, samples) = receiver.await.expect("subscriber");
        assert_eq!(received, total, "a subscriber missed messages");
        delivered += received;
        latencies.extend(samples);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "fan-out: {} subscribers of one channel through the router, {} publishers: {total} messages in \
         {publish_secs:.1} s ({:.0} publishes/s), {delivered} deliveries in {secs:.1} s ({:.0} deliveries/s, \
         each subscriber got every message in order); latency p50 {:?} p99 {:?} max {:?}",
        args.fanout_subscribers,
        args.publishers,
        total as f64 / publish_secs,
        delivered as f64 / secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    results.insert("fanout_publishes_per_sec".into(), (total as f64 / publish_secs).round().into());
    results.insert("fanout_deliveries_per_sec".into(), (delivered as f64 / secs).round().into());
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results).expect("json")).expect("write json");
    }
}
