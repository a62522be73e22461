//! Operators growing, shrinking and rebalancing a live cluster through the
//! router's Admin service, while a workload writes through the same router.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Routing};
use ringkv_proto::v1::{ChangeMembershipRequest, ClusterStatusResponse, CreateReplicaRequest, NodeAddress};
use ringkv_tests::Cluster;
use ringkv_tests::workload::{Outcomes, assert_only_retryable, check_acked, start_workload};
use tokio::sync::Mutex;

const SHARDS: u32 = 8;
const TIMEOUT: Duration = Duration::from_secs(60);

/// An operator's client: everything through the router.
fn admin(router: &str) -> Client {
    let opts = ClientOptions { routing: Routing::ViaSeeds, ..ClientOptions::default() };
    Client::connect(vec![router.to_string()], opts).expect("client")
}

/// Waits until the map (through the router) satisfies `ok`.
async fn wait_map(
    client: &Client,
    what: &str,
    ok: impl Fn(&ClusterStatusResponse) -> bool,
) -> ClusterStatusResponse {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(status) = client.cluster_status().await
            && ok(&status)
        {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: not reached in {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plans (dry run) and commits a rebalance; returns the number of moves.
async fn rebalance(client: &Client, cluster: &Cluster) -> usize {
    let plan = client.plan_rebalance().await.expect("dry run");
    let moves = plan.moves.len();
    let started = client.start_rebalance(plan.epoch, 0, 0).await.expect("start rebalance");
    assert_eq!(started.moves.len(), moves, "the committed plan is the dry run's");
    wait_plan_done(client, cluster).await;
    moves
}

/// Every node that takes replicas leads ⌊S/N⌋ or ⌈S/N⌉ of the data shards.
fn assert_leaders_balanced(status: &ClusterStatusResponse) {
    let nodes: Vec<u64> = status.nodes.iter().filter(|n| n.state != "draining").map(|n| n.id).collect();
    let mut led: std::collections::BTreeMap<u64, u32> = nodes.iter().map(|&n| (n, 0)).collect();
    for s in status.shard_status.iter().filter(|s| s.shard != 0) {
        *led.entry(s.leader_id).or_default() += 1;
    }
    let shards = status.shards;
    let (floor, ceil) = (shards / nodes.len() as u32, shards.div_ceil(nodes.len() as u32));
    assert!(
        led.values().all(|&n| (floor..=ceil).contains(&n)),
        "leaders per node {led:?}, want {floor}..={ceil}"
    );
}

/// The map's placement is the ring's: a new dry run plans nothing.
async fn assert_placed(client: &Client) {
    let plan = client.plan_rebalance().await.expect("dry run");
    assert!(plan.moves.is_empty(), "moves left after the rebalance: {:?}", plan.moves);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_drain_back_to_three_under_load() {
    let (mut cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    let client = admin(&router);
    wait_map(&client, "router ready", |s| s.nodes.len() == 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers = start_workload(router.clone(), 4, stop.clone(), outcomes.clone());

    // Grow: two nodes join through the router and hold nothing until the plan.
    let four = cluster.add_node(&router, &[]).await;
    let five = cluster.add_node(&router, &[]).await;
    let status = wait_map(&client, "both nodes joining", |s| s.nodes.len() == 5).await;
    for id in [four, five] {
        let node = status.nodes.iter().find(|n| n.id == id).expect("listed");
        assert_eq!(node.state, "joining");
        assert!(status.shard_status.iter().all(|s| !s.replicas.contains(&id)), "node {id} holds replicas");
    }
    let moves = rebalance(&client, &cluster).await;
    assert!(moves > 0, "growing to five nodes moved nothing");
    assert_placed(&client).await;
    let status = client.cluster_status().await.expect("status");
    assert!(status.nodes.iter().all(|n| n.state == "active"), "{:?}", status.nodes);
    assert_leaders_balanced(&status);
    for id in [four, five] {
        assert!(status.shard_status.iter().any(|s| s.replicas.contains(&id)), "node {id} got no replica");
    }

    // Shrink: drain both new nodes, then remove them.
    for id in [five, four] {
        let drained = client.drain_node(id, 0, 0).await.expect("drain");
        assert!(!drained.moves.is_empty());
        wait_plan_done(&client, &cluster).await;
        let status = client.cluster_status().await.expect("status");
        assert!(
            status.shard_status.iter().all(|s| !s.replicas.contains(&id)),
            "node {id} still holds replicas"
        );
        client.remove_node(id).await.expect("remove node");
        cluster.node(id).stop().await;
    }
    assert_placed(&client).await;
    let status = wait_map(&client, "three nodes", |s| s.nodes.len() == 3).await;
    assert!(status.shard_status.iter().all(|s| s.replicas.len() == 3));
    assert_leaders_balanced(&status);

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let outcomes = outcomes.lock().await;
    assert!(outcomes.acked.len() > 50, "workload made no progress: {} acked", outcomes.acked.len());
    assert_only_retryable(&outcomes.errors);
    assert!(outcomes.transport_errors.is_empty(), "{:?}", outcomes.transport_errors);
    check_acked(&router, &outcomes.acked, TIMEOUT).await;
    println!(
        "{} acked writes, {} retryable errors during grow + shrink",
        outcomes.acked.len(),
        outcomes.errors.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() {
    let (mut cluster, _, router) = Cluster::with_router(3, 4).await;
    let client = admin(&router);
    wait_map(&client, "router ready", |s| s.nodes.len() == 3).await;

    let err = client.remove_node(2).await.expect_err("node 2 holds replicas");
    assert!(err.to_string().contains("still holds replicas"), "{err}");
    let err = client.drain_node(2, 0, 0).await.expect_err("two nodes cannot hold three replicas");
    assert!(err.to_string().contains("cannot hold 3 replicas"), "{err}");
    let err = client.remove_node(9).await.expect_err("unknown node");
    assert!(err.to_string().contains("not in the cluster map"), "{err}");

    // A plan computed against an older epoch is refused.
    let plan = client.plan_rebalance().await.expect("dry run");
    assert!(plan.moves.is_empty());
    cluster.add_node(&router, &[]).await;
    wait_map(&client, "node joined", |s| s.nodes.len() == 4).await;
    let err = client.start_rebalance(plan.epoch, 0, 0).await.expect_err("stale plan");
    assert!(err.to_string().contains("run `ringkv admin rebalance --dry-run` again"), "{err}");

    // A node id or address already in use is refused.
    let taken = cluster.nodes[0].addr.clone();
    let err = client.add_node(10, &taken).await.expect_err("address in use");
    assert!(err.to_string().contains("already belongs to node 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_where_the_operator_says() {
    let (_cluster, leaders, router) = Cluster::with_router(3, 4).await;
    let client = admin(&router);
    wait_map(&client, "router ready", |s| s.nodes.len() == 3).await;

    for shard in 1..=4u32 {
        let target = leaders[&shard] % 3 + 1;
        let moved = client.transfer_leader(shard, target).await.expect("transfer");
        assert_eq!((moved.from, moved.to), (leaders[&shard], target));
        let status = wait_map(&client, "new leader reported", |s| {
            s.shard_status.iter().any(|st| st.shard == shard && st.leader_id == target)
        })
        .await;
        assert!(status.shard_status.iter().any(|st| st.shard == shard && st.leader_id == target));
    }
    let err = client.transfer_leader(1, 9).await.expect_err("not a replica");
    assert!(err.to_string().contains("holds no replica"), "{err}");

    // Pile every leadership on node 1, then balance.
    for shard in 1..=4u32 {
        client.transfer_leader(shard, 1).await.expect("transfer to 1");
    }
    let balanced = client.balance_leaders().await.expect("balance");
    assert!(!balanced.shards.is_empty());
    let status = client.cluster_status().await.expect("status");
    assert_leaders_balanced(&status);
}

/// Starts a 3-node cluster with a router, writes some data, adds two nodes and
/// commits a rebalance that runs one move at a time. Returns the cluster, the
/// router's address and the admin client.
async fn growing_cluster() -> (Cluster, String, Client) {
    let (mut cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    let client = admin(&router);
    wait_map(&client, "router ready", |s| s.nodes.len() == 3).await;
    for i in 0..400 {
        let value = "x".repeat(256);
        client.put(format!("seed-{i}"), value, Default::default()).await.expect("seed put");
    }
    cluster.add_node(&router, &[]).await;
    cluster.add_node(&router, &[]).await;
    wait_map(&client, "both nodes joining", |s| s.nodes.len() == 5).await;
    let plan = client.plan_rebalance().await.expect("dry run");
    assert!(plan.moves.len() > 3, "too few moves to interrupt: {}", plan.moves.len());
    client.start_rebalance(plan.epoch, 1, 1).await.expect("start");
    (cluster, router, client)
}

/// Waits until the plan has finished some moves but not all.
async fn wait_mid_plan(client: &Client) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = client.rebalance_status().await.expect("status");
        if status.done >= 1 && status.left >= 1 {
            return;
        }
        assert_eq!(status.state, "running", "the plan ended before it could be interrupted: {status:?}");
        assert!(Instant::now() < deadline, "no move finished in {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every seeded key reads back through the router.
async fn assert_seed_data(client: &Client) {
    for i in 0..400 {
        let got = client.get(format!("seed-{i}"), Default::default()).await.expect("seed get");
        assert_eq!(got.map(|r| r.value.len()), Some(256), "seed-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_meta_leader_finishes_an_interrupted_plan() {
    let (mut cluster, _router, client) = growing_cluster().await;
    wait_mid_plan(&client).await;
    let meta_leader = cluster.wait_for_leaders(SHARDS, TIMEOUT).await[&0];
    cluster.node(meta_leader).kill();
    wait_plan_done(&client, &cluster).await;
    cluster.node(meta_leader).start().await;
    assert_placed(&client).await;
    assert_seed_data(&client).await;
    // Replicas it lost while down are deleted once it is back.
    wait_hosts_what_the_map_says(&client, &cluster, meta_leader).await;
}

/// Waits until `node` hosts exactly the replicas the map gives it.
async fn wait_hosts_what_the_map_says(client: &Client, cluster: &Cluster, node: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let map = client.cluster_status().await.expect("status");
        let want: Vec<u32> =
            map.shard_status.iter().filter(|s| s.replicas.contains(&node)).map(|s| s.shard).collect();
        let process = cluster.nodes.iter().find(|n| n.id == node).expect("node");
        let mut hosted = process.status().await.map(|s| s.replicas).unwrap_or_default();
        hosted.sort_unstable();
        if hosted == want {
            return;
        }
        assert!(Instant::now() < deadline, "node {node} hosts {hosted:?}, the map gives it {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no shard's group keeps a learner: a learner whose replica was
/// deleted would still be replicated to, and a replica created on its node
/// later would look to the leader like a follower whose log went backwards.
async fn wait_no_learners(client: &Client, cluster: &Cluster) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let map = client.cluster_status().await.expect("status");
        let mut learners = Vec::new();
        for shard in &map.shard_status {
            let leader = cluster.nodes.iter().find(|n| n.id == shard.leader_id && n.is_running());
            let membership = match leader {
                Some(leader) => leader
                    .admin()
                    .change_membership(ChangeMembershipRequest { shard: shard.shard, ..Default::default() })
                    .await
                    .map(|r| r.into_inner()),
                None => Err(tonic::Status::unavailable("no leader")),
            };
            match membership {
                Ok(m) if m.learners.is_empty() => {}
                Ok(m) => learners.push((shard.shard, m.learners)),
                Err(e) => learners.push((shard.shard, vec![u64::from(e.code() as u32)])),
            }
        }
        if learners.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "(shard, learners or error code) left: {learners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_left_by_a_move_is_dropped_from_its_group_before_it_is_deleted() {
    let (mut cluster, _, router) = Cluster::with_router(3, SHARDS).await;
    let client = admin(&router);
    let four = cluster.add_node(&router, &[]).await;
    let map = wait_map(&client, "node 4 joining", |s| s.nodes.iter().any(|n| n.id == four)).await;
    let shard = &map.shard_status[1];
    let four_addr = cluster.node(four).addr.clone();
    let create = CreateReplicaRequest {
        target_node: four,
        cluster_id: map.cluster_id.clone(),
        shard_count: map.shards,
        shard: shard.shard,
    };
    cluster.node(four).admin().create_replica(create).await.expect("create replica");
    let leader = cluster.nodes.iter().find(|n| n.id == shard.leader_id).expect("shard 1 leader");
    let change = |req: ChangeMembershipRequest| {
        let mut admin = leader.admin();
        async move { admin.change_membership(req).await.map(|r| r.into_inner()) }
    };
    let added = change(ChangeMembershipRequest {
        shard: shard.shard,
        add_learner: Some(NodeAddress { id: four, addr: four_addr, state: String::new() }),
        ..Default::default()
    })
    .await
    .expect("add learner");
    assert_eq!(added.learners, vec![four]);
    // Setting the voters to what they are keeps the learner (openraft keeps
    // learners that are not voters): this is why cleanups must remove it.
    let same = ChangeMembershipRequest {
        shard: shard.shard,
        set_voters: added.voters.clone(),
        ..Default::default()
    };
    assert_eq!(change(same).await.expect("set voters").learners, vec![four]);
    // A voter cannot be removed as a learner.
    let voter = added.voters[0];
    let refused = change(ChangeMembershipRequest {
        shard: shard.shard,
        remove_learners: vec![voter],
        ..Default::default()
    })
    .await
    .expect_err("a voter is no learner");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    let removed = change(ChangeMembershipRequest {
        shard: shard.shard,
        remove_learners: vec![four],
        ..Default::default()
    })
    .await
    .expect("remove learner");
    assert!(removed.learners.is_empty(), "{removed:?}");
    assert_eq!(removed.voters, added.voters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_moves_target_delays_it_without_losing_a_quorum() {
    let (mut cluster, router, client) = growing_cluster().await;
    wait_mid_plan(&client).await;
    // The target of a move still in flight, else of the next one.
    let status = client.rebalance_status().await.expect("status");
    let target = status
        .moves
        .iter()
        .find(|m| m.step != "done" && m.step != "pending" && m.to != 0)
        .or_else(|| status.moves.iter().find(|m| m.step == "pending" && m.to != 0))
        .expect("a move with a target")
        .to;
    cluster.node(target).kill();
    // Every shard still takes writes: no move leaves a shard without a quorum.
    let writer = admin(&router);
    for i in 0..64 {
        writer
            .put(format!("during-{i}"), "v", Default::default())
            .await
            .expect("write while a target is down");
    }
    cluster.node(target).start().await;
    wait_plan_done(&client, &cluster).await;
    assert_placed(&client).await;
    assert_seed_data(&client).await;
    wait_hosts_what_the_map_says(&client, &cluster, target).await;
}

/// Waits until the running plan is done; panics with its state on timeout or if
/// it ends otherwise. Status calls may fail for a while (a meta leader killed).
async fn wait_plan_done(client: &Client, cluster: &Cluster) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = client.rebalance_status().await;
        if let Ok(status) = &last {
            match status.state.as_str() {
                "done" => return,
                "running" => {}
                other => panic!("plan {other}: {status:?}"),
            }
        }
        assert!(Instant::now() < deadline, "plan not done in {TIMEOUT:?}: {last:#?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_plan_cleans_up_after_itself() {
    let (mut cluster, _router, client) = growing_cluster().await;
    let joining = cluster.nodes.iter().map(|n| n.id).max().expect("nodes");
    // A node the plan still moves replicas to cannot be removed.
    let err = client.remove_node(joining).await.expect_err("plan involves it");
    assert!(err.to_string().contains("still moves replicas"), "{err}");
    wait_mid_plan(&client).await;
    let aborted = client.control_rebalance("abort").await.expect("abort");
    assert_eq!(aborted.state, "aborted");
    // Whatever the unfinished moves left on the nodes is deleted: every node
    // hosts exactly what the map gives it.
    for node in cluster.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        wait_hosts_what_the_map_says(&client, &cluster, node).await;
    }
    wait_no_learners(&client, &cluster).await;
    assert_seed_data(&client).await;
    // A later plan finishes the job.
    let plan = client.plan_rebalance().await.expect("dry run");
    client.start_rebalance(plan.epoch, 0, 0).await.expect("start");
    wait_plan_done(&client, &cluster).await;
    assert_placed(&client).await;
    cluster.node(joining).stop().await;
}
