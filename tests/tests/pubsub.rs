//! Pub/sub: a subscriber that reconnects from its last sequence number misses
//! nothing; subscriptions survive a killed channel leader; a router shares one
//! upstream subscription among all its subscribers of a channel; a position
//! older than the retention is OUT_OF_RANGE.

use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Routing, Subscription};
use ringkv_tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(30);

fn via_router(router: &str) -> Client {
    let options = ClientOptions { routing: Routing::ViaSeeds, ..Default::default() };
    Client::connect(vec![router.to_string()], options).expect("client")
}

/// Reads `count` messages as (seq, payload).
async fn receive(subscription: &mut Subscription, count: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages in time: {got:?}", got.len()))
            .expect("the subscription goes on")
            .expect("no error");
        got.push((message.seq, String::from_utf8_lossy(&message.payload).into_owned()));
    }
    got
}

async fn publish(client: &Client, channel: &str, range: std::ops::Range<usize>) -> Vec<(u64, String)> {
    let mut sent = Vec::new();
    for i in range {
        let payload = format!("m{i}");
        let seq = client.publish(channel.to_string(), payload.clone()).await.expect("publish");
        sent.push((seq, payload));
    }
    sent
}

/// The sum of a counter over the running nodes.
async fn open_subscriptions(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        total += node.status().await.map(|s| s.open_subscriptions).unwrap_or(0);
    }
    total
}

async fn wait_for_open_subscriptions(cluster: &Cluster, want: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let open = open_subscriptions(cluster).await;
        if open == want {
            return;
        }
        assert!(Instant::now() < deadline, "{open} upstream subscriptions open, want {want}");
        // Poll interval inside the deadline loop: streams close asynchronously.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_after_a_reconnect_and_a_leader_kill_with_no_loss() {
    let (mut cluster, leaders, router) = Cluster::with_router(3, 2).await;
    let publisher = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let direct = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let app = via_router(&router);
    let mut routed = app.subscribe("room", 0).await.expect("subscribe through the router");
    let mut straight = direct.subscribe("room", 0).await.expect("subscribe on the leader");

    let mut sent = publish(&publisher, "room", 0..10).await;
    assert!(sent.windows(2).all(|w| w[0].0 < w[1].0), "sequence numbers increase: {sent:?}");
    assert_eq!(receive(&mut routed, 10).await, sent);
    assert_eq!(receive(&mut straight, 10).await, sent);

    // A gateway restarts: it drops its subscription, messages go on, and it
    // subscribes again from its last position.
    let resume_at = routed.next_seq();
    drop(routed);
    sent.extend(publish(&publisher, "room", 10..20).await);
    let mut routed = app.subscribe("room", resume_at).await.expect("resubscribe");
    assert_eq!(receive(&mut routed, 10).await, sent[10..20]);
    assert_eq!(receive(&mut straight, 10).await, sent[10..20]);

    // The channel's leader dies: both subscriptions resume on the new one.
    let shard = ringkv_core::placement::shard_for_key(b"room", 2);
    cluster.node(leaders[&shard]).kill();
    sent.extend(publish(&publisher, "room", 20..30).await);
    assert_eq!(receive(&mut routed, 10).await, sent[20..30]);
    assert_eq!(receive(&mut straight, 10).await, sent[20..30]);

    // Another channel's messages never show up.
    publish(&publisher, "other-room", 0..3).await;
    sent.extend(publish(&publisher, "room", 30..31).await);
    assert_eq!(receive(&mut routed, 1).await, sent[30..31]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_coalesces_its_subscribers_of_a_channel_into_one_upstream() {
    const SUBSCRIBERS: usize = 20;
    let (cluster, _, router) = Cluster::with_router(3, 2).await;
    let publisher = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let early = publish(&publisher, "lobby", 0..3).await;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        // A client (a connection) each, as separate gateways would be.
        subscribers.push(via_router(&router).subscribe("lobby", 0).await.expect("subscribe"));
    }
    wait_for_open_subscriptions(&cluster, 1).await;

    let sent = publish(&publisher, "lobby", 3..8).await;
    for subscriber in &mut subscribers {
        assert_eq!(receive(subscriber, 5).await, sent);
    }
    // A late subscriber from an earlier position the shared upstream kept
    // joins it too, and gets exactly what it asked for.
    let mut late = via_router(&router).subscribe("lobby", sent[2].0).await.expect("subscribe from a seq");
    assert_eq!(receive(&mut late, 3).await, sent[2..]);
    wait_for_open_subscriptions(&cluster, 1).await;
    // One from before the upstream started catches up on one of its own,
    // then moves to the shared one.
    let mut older = via_router(&router).subscribe("lobby", early[0].0).await.expect("subscribe from older");
    assert_eq!(receive(&mut older, 8).await, [early.clone(), sent.clone()].concat());
    wait_for_open_subscriptions(&cluster, 1).await;

    drop(subscribers);
    drop(late);
    drop(older);
    wait_for_open_subscriptions(&cluster, 0).await;

    // With no upstream of the channel, one subscriber catching up from an old
    // position and one from now: the one from now gets only new messages.
    let mut catching_up = via_router(&router).subscribe("lobby", early[0].0).await.expect("from old");
    let mut from_now = via_router(&router).subscribe("lobby", 0).await.expect("from now");
    let fresh = publish(&publisher, "lobby", 8..9).await;
    assert_eq!(receive(&mut from_now, 1).await, fresh, "a subscriber from now gets no older message");
    assert_eq!(receive(&mut catching_up, 9).await, [early, sent, fresh].concat());
    wait_for_open_subscriptions(&cluster, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_router_restart_its_resumed_subscribers_share_one_upstream_again() {
    let (mut cluster, _, router) = Cluster::with_router(3, 2).await;
    let publisher = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        subscribers.push(via_router(&router).subscribe("hall", 0).await.expect("subscribe"));
    }
    wait_for_open_subscriptions(&cluster, 1).await;
    let mut sent = publish(&publisher, "hall", 0..3).await;
    for subscriber in &mut subscribers {
        assert_eq!(receive(subscriber, 3).await, sent);
    }
    // The router dies and comes back; messages are published meanwhile. Every
    // subscriber resumes (from its own position) and misses nothing...
    cluster.routers[0].kill();
    sent.extend(publish(&publisher, "hall", 3..6).await);
    cluster.routers[0].start().await;
    for subscriber in &mut subscribers {
        assert_eq!(receive(subscriber, 3).await, sent[3..]);
    }
    // ...and they share one upstream again.
    wait_for_open_subscriptions(&cluster, 1).await;
    sent.extend(publish(&publisher, "hall", 6..7).await);
    for subscriber in &mut subscribers {
        assert_eq!(receive(subscriber, 1).await, sent[6..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_past_the_retention_is_out_of_range_and_bad_input_is_refused() {
    let cluster = Cluster::start(1, &["--watch-retention-events", "4"]).await;
    cluster.init(1, 1).await.expect("init");
    cluster.wait_for_leaders(1, TIMEOUT).await;
    let client = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let sent = publish(&client, "c", 0..10).await;
    let err = client.subscribe("c", sent[0].0).await.err().expect("too old");
    assert!(err.is_out_of_range(), "{err:?}");
    // It names the first sequence number that works.
    let named: u64 = err.to_string().rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a seq");
    let mut from_named = client.subscribe("c", named).await.expect("from the named seq");
    let first = receive(&mut from_named, 1).await[0].0;
    assert!(first >= named && sent.iter().any(|(seq, _)| *seq == first), "{first} from {named}");
    // From a retained position it works.
    let mut subscription = client.subscribe("c", sent[8].0).await.expect("recent");
    assert_eq!(receive(&mut subscription, 2).await, sent[8..]);

    for err in [
        client.publish("", "x").await.expect_err("empty channel"),
        client.subscribe("", 0).await.err().expect("empty channel"),
        client.publish("c", vec![0u8; 2 << 20]).await.expect_err("oversized message"),
    ] {
        assert!(matches!(err, ringkv_client::Error::InvalidArgument(_)), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_batched_into_one_entry_get_distinct_numbers_and_resume_inside_it() {
    let cluster = Cluster::start(1, &[]).await;
    cluster.init(1, 1).await.expect("init");
    cluster.wait_for_leaders(1, TIMEOUT).await;
    let client = Client::connect(cluster.addrs(), Default::default()).expect("client");
    let mut subscription = client.subscribe("burst", 0).await.expect("subscribe");
    // Concurrent publishes: the shard's proposer folds them into few entries.
    let publishes = (0..64).map(|i| {
        let client = client.clone();
        async move { (client.publish("burst", format!("m{i}")).await.expect("publish"), format!("m{i}")) }
    });
    let mut sent: Vec<(u64, String)> = futures::future::join_all(publishes).await;
    sent.sort();
    let received = receive(&mut subscription, sent.len()).await;
    assert_eq!(received, sent, "each message once, in sequence order, numbered as its publish answered");
    let shared = sent.iter().filter(|(seq, _)| seq & 0xffff > 0).count();
    println!("{shared} of {} messages shared an entry with an earlier one", sent.len());
    // Resuming from any of them, also one in the middle of an entry, gives
    // exactly the messages from there on.
    for from in [sent[0].0, sent[sent.len() / 2].0, sent[sent.len() - 1].0] {
        let mut resumed = client.subscribe("burst", from).await.expect("resume");
        let expected: Vec<(u64, String)> = sent.iter().filter(|(seq, _)| *seq >= from).cloned().collect();
        assert_eq!(receive(&mut resumed, expected.len()).await, expected, "from {from}");
    }
}
