//! Golden tests of everything `ringkv` prints for status, rebalancing and
//! errors: a fixed input is rendered and compared byte for byte with a file in
//! `tests/golden/`.
//! A change in output format shows up as a diff of that file.
//!
//! To accept new output: `RINGKV_BLESS=1 cargo test -p ringkv-cli --test golden`,
//! then review the diff of `cli/tests/golden/`.

use std::path::PathBuf;

use ringkv_cli::output::{Failure, status_json, status_json_text, status_text};
use ringkv_cli::rebalance_output::{
    plan_text, rebalance_status_json, rebalance_status_json_text, rebalance_status_text,
};
use ringkv_client::Error;
use ringkv_proto::v1::{
    ClusterStatusResponse, NodeAddress, NodePlanTotals, PlanRebalanceResponse, RebalanceMove,
    RebalanceStatusResponse, ReplicaStatus, ShardStatus,
};

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("RINGKV_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err} (RINGKV_BLESS=1 creates it)", path.display()));
    assert!(
        actual == expected,
        "{name} differs from {}\n--- expected\n{expected}\n--- actual\n{actual}\n(RINGKV_BLESS=1 accepts the actual output)",
        path.display()
    );
}

fn replica(
    shard: u32,
    node_id: u64,
    role: &str,
    term: u64,
    last_applied: u64,
    leader_id: u64,
) -> ReplicaStatus {
    ReplicaStatus {
        shard,
        node_id,
        role: role.into(),
        term,
        last_applied,
        last_log: last_applied,
        leader_id,
        approx_bytes: 0,
        keys: 0,
    }
}

/// Three nodes (one draining), the meta shard and three data shards: healthy,
/// lagging, leaderless with a silent replica, and led with a silent replica.
fn fixture() -> ClusterStatusResponse {
    let node = |id: u64, addr: &str, state: &str| NodeAddress { id, addr: addr.into(), state: state.into() };
    ClusterStatusResponse {
        cluster_id: "5f3a9c1e0b7d2468".into(),
        epoch: 7,
        shards: 3,
        replicas: 3,
        nodes: vec![
            node(1, "127.0.0.1:7001", "active"),
            node(2, "127.0.0.1:7002", "active"),
            node(3, "10.0.0.3:7003", "draining"),
        ],
        shard_status: vec![
            ShardStatus {
                shard: 0,
                replicas: vec![1, 2, 3],
                leader_id: 1,
                term: 2,
                applied_index: 17,
                max_lag: 0,
                replica_status: vec![
                    replica(0, 1, "leader", 2, 17, 1),
                    replica(0, 2, "follower", 2, 17, 1),
                    replica(0, 3, "follower", 2, 17, 1),
                ],
            },
            ShardStatus {
                shard: 1,
                replicas: vec![2, 3, 1],
                leader_id: 2,
                term: 3,
                applied_index: 1204,
                max_lag: 12,
                replica_status: vec![
                    replica(1, 2, "leader", 3, 1204, 2),
                    replica(1, 3, "follower", 3, 1192, 2),
                    replica(1, 1, "follower", 3, 1204, 2),
                ],
            },
            ShardStatus {
                shard: 2,
                replicas: vec![3, 1, 2],
                leader_id: 0,
                term: 0,
                applied_index: 0,
                max_lag: 0,
                replica_status: vec![
                    replica(2, 1, "candidate", 5, 40, 0),
                    replica(2, 2, "follower", 4, 40, 0),
                ],
            },
            ShardStatus {
                shard: 3,
                replicas: vec![1, 2, 3],
                leader_id: 3,
                term: 1,
                applied_index: 9,
                max_lag: 0,
                replica_status: vec![replica(3, 3, "leader", 1, 9, 3), replica(3, 1, "follower", 1, 9, 3)],
            },
        ],
        rebalance: None,
    }
}

#[test]
fn status_as_text() {
    check_golden("status.txt", &status_text(&fixture()));
}

#[test]
fn status_as_json() {
    let text = status_json_text(&fixture());
    check_golden("status.json", &text);
    // What scripts rely on: one object, proto field names, null for no leader.
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(parsed, status_json(&fixture()));
    assert_eq!(parsed["shard_status"][2]["leader_id"], serde_json::Value::Null);
    assert_eq!(parsed["shard_status"][1]["max_lag"], 12);
    assert_eq!(parsed["nodes"][2]["state"], "draining");
}

/// The same cluster while node 4 joins: registered, no replicas yet, and a
/// rebalance running.
fn rebalancing_fixture() -> ClusterStatusResponse {
    let mut status = fixture();
    status.epoch = 8;
    status.nodes.push(NodeAddress { id: 4, addr: "10.0.0.4:7004".into(), state: "joining".into() });
    status.rebalance = Some(running_plan());
    status
}

#[test]
fn status_while_rebalancing() {
    check_golden("status-rebalancing.txt", &status_text(&rebalancing_fixture()));
    let json = status_json(&rebalancing_fixture());
    assert_eq!(json["rebalance"], rebalance_status_json(&running_plan()));
    assert_eq!(json["nodes"][3]["state"], "joining");
    // A plan that ended is not a line of `ringkv status`; never one is null in JSON.
    let mut done = rebalancing_fixture();
    done.rebalance.as_mut().expect("fixture has a plan").state = "done".into();
    assert!(!status_text(&done).contains("rebalance"));
    assert_eq!(status_json(&fixture())["rebalance"], serde_json::Value::Null);
    let never = ClusterStatusResponse { rebalance: Some(RebalanceStatusResponse::default()), ..fixture() };
    assert_eq!(status_json(&never)["rebalance"], serde_json::Value::Null);
}

#[test]
fn empty_status() {
    let empty = ClusterStatusResponse::default();
    check_golden("status-empty.txt", &status_text(&empty));
}

#[allow(clippy::too_many_arguments)]
fn rebalance_move(
    shard: u32,
    from: u64,
    to: u64,
    reason: &str,
    step: &str,
    attempts: u32,
    last_error: &str,
    bytes: u64,
) -> RebalanceMove {
    RebalanceMove {
        shard,
        from,
        to,
        reason: reason.into(),
        step: step.into(),
        attempts,
        last_error: last_error.into(),
        bytes,
    }
}

/// Nodes 4 and 5 joined and node 3 drains: moves onto the new nodes, one that
/// only adds a replica (from = 0), one that only removes one (to = 0), listed
/// out of order to show that the output sorts them.
fn plan_fixture() -> PlanRebalanceResponse {
    let planned = |shard, from, to, reason: &str, bytes| {
        rebalance_move(shard, from, to, reason, "pending", 0, "", bytes)
    };
    let totals = |node, state: &str, replicas_before, replicas_after, leaders_before| NodePlanTotals {
        node,
        state: state.into(),
        replicas_before,
        replicas_after,
        leaders_before,
    };
    let moves = vec![
        planned(5, 3, 5, "node 3 is draining", 2_411_724),
        planned(1, 1, 4, "node 4 joined", 1_258_291),
        planned(0, 3, 4, "node 3 is draining", 12_288),
        planned(12, 2, 0, "shard over-replicated", 0),
        planned(2, 3, 4, "node 3 is draining", 838_860),
        planned(2, 0, 5, "shard under-replicated", 838_860),
        planned(17, 1, 5, "node 5 joined", 700),
    ];
    PlanRebalanceResponse {
        epoch: 12,
        bytes_to_copy: moves.iter().map(|m| m.bytes).sum(),
        moves,
        totals: vec![
            totals(3, "draining", 3, 0, 1),
            totals(1, "active", 12, 10, 5),
            totals(2, "active", 11, 10, 3),
            totals(4, "joining", 0, 3, 0),
            totals(5, "joining", 0, 3, 0),
        ],
    }
}

#[test]
fn rebalance_dry_run() {
    check_golden("rebalance-plan.txt", &plan_text(&plan_fixture()));
    let nothing = PlanRebalanceResponse { epoch: 12, ..Default::default() };
    check_golden("rebalance-plan-empty.txt", &plan_text(&nothing));
}

/// A plan underway: two moves done, two in flight, three left of which one
/// keeps failing.
fn running_plan() -> RebalanceStatusResponse {
    let moves = vec![
        rebalance_move(0, 3, 4, "node 3 is draining", "done", 0, "", 12_288),
        rebalance_move(1, 1, 4, "node 4 joined", "done", 1, "", 1_258_291),
        rebalance_move(5, 3, 5, "node 3 is draining", "learner added", 0, "", 2_411_724),
        rebalance_move(2, 3, 4, "node 3 is draining", "membership changed", 0, "", 838_860),
        rebalance_move(
            2,
            0,
            5,
            "shard under-replicated",
            "pending",
            3,
            "unavailable: node 5 did not answer: deadline exceeded",
            0,
        ),
        rebalance_move(12, 2, 0, "shard over-replicated", "pending", 0, "", 0),
        rebalance_move(17, 1, 5, "node 5 joined", "pending", 0, "", 0),
    ];
    RebalanceStatusResponse {
        has_plan: true,
        state: "running".into(),
        base_epoch: 12,
        bytes_copied: moves.iter().map(|m| m.bytes).sum(),
        moves,
        done: 2,
        in_flight: 2,
        left: 3,
        eta_ms: 142_000,
        elapsed_ms: 95_000,
        max_in_flight: 4,
        max_per_node: 2,
    }
}

/// The progress of a plan in each state, as `rebalance status`, `pause`,
/// `resume` and `abort` print it.
#[test]
fn rebalance_status() {
    let running = running_plan();
    let with_state =
        |state: &str, eta_ms| RebalanceStatusResponse { state: state.into(), eta_ms, ..running_plan() };
    let mut done = with_state("done", 0);
    for m in &mut done.moves {
        m.step = "done".into();
    }
    (done.done, done.in_flight, done.left, done.elapsed_ms) = (7, 0, 0, 3_725_000);
    let cases = [
        ("running", running.clone()),
        ("running, no move finished yet", RebalanceStatusResponse { eta_ms: 0, ..running.clone() }),
        ("paused", with_state("paused", 0)),
        ("aborted", with_state("aborted", 0)),
        ("done", done),
        ("no plan", RebalanceStatusResponse::default()),
    ];
    let mut text = String::new();
    for (name, status) in cases {
        text.push_str(&format!("## {name}\n{}\n", rebalance_status_text(&status)));
    }
    check_golden("rebalance-status.txt", &text);

    let json = rebalance_status_json_text(&running);
    check_golden("rebalance-status.json", &json);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed, rebalance_status_json(&running));
    assert_eq!(parsed["moves"][4]["from"], serde_json::Value::Null);
    assert_eq!(parsed["moves"][5]["to"], serde_json::Value::Null);
    assert_eq!(parsed["moves"][4]["attempts"], 3);
}

/// Every kind of client error as the CLI prints it, with its exit status.
#[test]
fn errors() {
    let addrs = vec!["127.0.0.1:7000".to_string()];
    let cases: Vec<(&str, Failure)> = vec![
        ("InvalidArgument", Error::InvalidArgument("key is empty".into())),
        (
            "NotLeader, leader known",
            Error::NotLeader { shard: 7, leader_id: Some(2), leader_addr: Some("127.0.0.1:7002".into()) },
        ),
        ("NotLeader, election", Error::NotLeader { shard: 7, leader_id: None, leader_addr: None }),
        ("WrongShard", Error::WrongShard { shard: 9, epoch: 4 }),
        (
            "FailedPrecondition",
            Error::FailedPrecondition("the value at \"session:1\" is not a decimal 64-bit integer".into()),
        ),
        ("Unavailable", Error::Unavailable("no quorum for shard 3".into())),
        ("DeadlineExceeded", Error::DeadlineExceeded),
        ("AlreadyExists", Error::AlreadyExists("node 1 already belongs to cluster 5f3a".into())),
        ("NotFound", Error::NotFound("no such node 9".into())),
        (
            "Transport",
            Error::Transport("127.0.0.1:7000: tcp connect error: Connection refused (os error 111)".into()),
        ),
        ("Other", Error::Other { code: tonic::Code::PermissionDenied, message: "bad token".into() }),
    ]
    .into_iter()
    .map(|(name, err)| (name, Failure::from_client(err, &addrs)))
    .chain([
        ("usage", Failure::usage("--replicas 3 is more than the 2 nodes given")),
        ("writing output", Failure::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))),
    ])
    .collect();
    let mut text = String::new();
    for (name, failure) in cases {
        text.push_str(&format!("## {name} (exit {})\n{}\n", failure.exit, failure.render()));
    }
    check_golden("errors.txt", &text);
}
