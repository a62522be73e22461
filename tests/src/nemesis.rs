//! The nemesis: faults injected into a running [`Cluster`] on a seeded,
//! reproducible schedule (Jepsen's word for it).
//!
//! Every fault keeps a quorum of every shard able to recover once it is healed:
//! at most a minority of nodes is down, paused or cut off at a time, except for
//! [`FaultKind::KillAll`], which kills every node at once and restarts them all
//! (the fsync-durability test). Partitions go through the nodes' test-only
//! `InjectFault` call, so the cluster must run with `--enable-test-faults`.
//!
//! The schedule is a pure function of the seed: the same seed picks the same
//! fault kinds and victims by position (which node id is "the busiest leader"
//! still depends on the cluster).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use ringkv_proto::v1::InjectFaultRequest;

use crate::Cluster;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a random node.
    KillRandom,
    /// SIGKILL the node leading the most shards.
    KillBusiestLeader,
    /// SIGSTOP a random node for longer than the election timeout.
    Pause,
    /// Cut one node's Raft traffic from every peer.
    IsolateNode,
    /// Cut the cluster into a minority and a majority.
    SplitMajorityMinority,
    /// SIGKILL every node at once.
    KillAll,
    /// An operator's membership change, left running while later faults hit:
    /// add a node and rebalance onto it, or drain a node (and, once it holds
    /// nothing, remove it). Only in rebalance runs ([`FaultKind::WITH_REBALANCE`]).
    Rebalance,
}

impl FaultKind {
    /// Every kind, for a full mix.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::KillRandom,
        FaultKind::KillBusiestLeader,
        FaultKind::Pause,
        FaultKind::IsolateNode,
        FaultKind::SplitMajorityMinority,
        FaultKind::KillAll,
    ];
}

impl FaultKind {
    /// The full mix plus membership changes, for rebalance-under-faults runs.
    pub const WITH_REBALANCE: [FaultKind; 8] = [
        FaultKind::KillRandom,
        FaultKind::KillBusiestLeader,
        FaultKind::Pause,
        FaultKind::IsolateNode,
        FaultKind::SplitMajorityMinority,
        FaultKind::KillAll,
        FaultKind::Rebalance,
        FaultKind::Rebalance,
    ];
}

/// A fault as injected, for the summary and for failover times.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// When it was injected.
    pub at: Instant,
    /// The nodes it hit (killed, paused, or on the minority side).
    pub nodes: Vec<u64>,
    /// Shards the hit nodes led when it was injected (leader kills and
    /// partitions): their failover time is measured from `at`.
    pub shards_led: Vec<u32>,
    /// When it was healed (restarted, resumed, reconnected).
    pub healed: Option<Instant>,
    /// What a [`FaultKind::Rebalance`] did ("added node 4", ...).
    pub action: Option<String>,
}

/// The fault injector.
pub struct Nemesis {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    /// Bounds for [`FaultKind::Rebalance`]: active nodes stay in this range.
    pub min_nodes: u64,
    pub max_nodes: u64,
}

impl Nemesis {
    /// A nemesis drawing from `kinds` with a seeded schedule.
    pub fn new(seed: u64, kinds: &[FaultKind]) -> Nemesis {
        assert!(!kinds.is_empty(), "the nemesis needs at least one fault kind");
        Nemesis { rng: StdRng::seed_from_u64(seed), kinds: kinds.to_vec(), min_nodes: 3, max_nodes: 3 }
    }

    /// A random duration in `[min, max]`, from the schedule.
    pub fn pick_duration(&mut self, min: Duration, max: Duration) -> Duration {
        let (min, max) = (min.as_millis() as u64, max.as_millis().max(min.as_millis()) as u64);
        Duration::from_millis(self.rng.random_range(min..=max))
    }

    /// Injects the next fault of the schedule.
    pub async fn inject(&mut self, cluster: &mut Cluster) -> Fault {
        let kind = *self.kinds.choose(&mut self.rng).expect("kinds is not empty");
        let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
        let led = leadership(cluster).await;
        let led_by = |nodes: &[u64]| -> Vec<u32> {
            led.iter().filter(|(_, leader)| nodes.contains(leader)).map(|(shard, _)| *shard).collect()
        };
        let at = Instant::now();
        let mut action = None;
        let nodes = match kind {
            FaultKind::KillRandom => {
                let victim = *ids.choose(&mut self.rng).expect("nodes");
                cluster.node(victim).kill();
                vec![victim]
            }
            FaultKind::KillBusiestLeader => {
                let mut counts: Vec<(usize, u64)> =
                    ids.iter().map(|&id| (led.iter().filter(|(_, l)| *l == id).count(), id)).collect();
                counts.sort();
                let victim = counts.last().expect("nodes").1;
                cluster.node(victim).kill();
                vec![victim]
            }
            FaultKind::Pause => {
                let victim = *ids.choose(&mut self.rng).expect("nodes");
                cluster.node(victim).pause();
                vec![victim]
            }
            FaultKind::IsolateNode => {
                let victim = *ids.choose(&mut self.rng).expect("nodes");
                partition(cluster, &[victim]).await;
                vec![victim]
            }
            FaultKind::SplitMajorityMinority => {
                let minority_size = (ids.len() - 1) / 2;
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = self.rng.random_range(0..=i);
                    shuffled.swap(i, j);
                }
                let minority: Vec<u64> = shuffled[..minority_size.max(1)].to_vec();
                partition(cluster, &minority).await;
                minority
            }
            FaultKind::KillAll => {
                for node in &mut cluster.nodes {
                    node.kill();
                }
                ids.clone()
            }
            FaultKind::Rebalance => {
                let (nodes, did) = self.change_membership(cluster).await;
                action = Some(did);
                nodes
            }
        };
        let shards_led = led_by(&nodes);
        Fault { kind, at, nodes, shards_led, healed: None, action }
    }

    /// Undoes `fault`: restarts killed nodes, resumes paused ones, heals
    /// partitions.
    pub async fn heal(&mut self, cluster: &mut Cluster, fault: &Fault) {
        match fault.kind {
            FaultKind::KillRandom | FaultKind::KillBusiestLeader | FaultKind::KillAll => {
                for &id in &fault.nodes {
                    if !cluster.node(id).is_running() {
                        cluster.node(id).start().await;
                    }
                }
            }
            FaultKind::Pause => {
                for &id in &fault.nodes {
                    cluster.node(id).resume();
                }
            }
            FaultKind::IsolateNode | FaultKind::SplitMajorityMinority => heal_partitions(cluster).await,
            // Left running on purpose: the plan's moves meet the next faults.
            FaultKind::Rebalance => {}
        }
    }

    /// One step of an operator growing and shrinking the cluster between
    /// `min_nodes` and `max_nodes`: remove a drained node, else add a node and
    /// rebalance onto it, else drain a node. Nothing while a plan runs or the
    /// cluster does not answer. Returns the node it acted on.
    async fn change_membership(&mut self, cluster: &mut Cluster) -> (Vec<u64>, String) {
        let nothing = |why: &str| (Vec::new(), why.to_string());
        let Some(router) = cluster.routers.first().map(|r| r.addr.clone()) else {
            return nothing("no router");
        };
        let opts = ringkv_client::ClientOptions {
            routing: ringkv_client::Routing::ViaSeeds,
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let Ok(client) = ringkv_client::Client::connect(vec![router.clone()], opts) else {
            return nothing("no client");
        };
        let Ok(status) = client.cluster_status().await else { return nothing("skipped: no cluster status") };
        if status
            .rebalance
            .as_ref()
            .is_some_and(|r| r.has_plan && (r.state == "running" || r.state == "paused"))
        {
            return nothing("skipped: a plan is running");
        }
        let holds = |id: u64| status.shard_status.iter().any(|s| s.replicas.contains(&id));
        if let Some(drained) = status.nodes.iter().find(|n| n.state == "draining" && !holds(n.id)) {
            return match client.remove_node(drained.id).await {
                Ok(_) => {
                    cluster.remove_node(drained.id);
                    (vec![drained.id], format!("removed node {}", drained.id))
                }
                Err(e) => (vec![drained.id], format!("remove node {} refused: {e}", drained.id)),
            };
        }
        let active = status.nodes.iter().filter(|n| n.state != "draining").count() as u64;
        if active < self.max_nodes && self.rng.random_bool(0.6) {
            let id = cluster.add_node(&router, &["--enable-test-faults"]).await;
            // The node registers itself in the background; wait for it (bounded).
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(plan) = client.plan_rebalance().await
                    && plan.totals.iter().any(|t| t.node == id)
                {
                    return match client.start_rebalance(plan.epoch, 0, 0).await {
                        Ok(started) => (vec![id], format!("added node {id}, {} moves", started.moves.len())),
                        Err(e) => (vec![id], format!("added node {id}, rebalance refused: {e}")),
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return (vec![id], format!("added node {id}, never saw it register"));
        }
        if active > self.min_nodes {
            let victim = *status
                .nodes
                .iter()
                .filter(|n| n.state != "draining")
                .map(|n| n.id)
                .collect::<Vec<_>>()
                .choose(&mut self.rng)
                .expect("active nodes");
            return match client.drain_node(victim, 0, 0).await {
                Ok(started) => {
                    (vec![victim], format!("draining node {victim}, {} moves", started.moves.len()))
                }
                Err(e) => (vec![victim], format!("drain node {victim} refused: {e}")),
            };
        }
        nothing("skipped: nothing to do")
    }
}

/// Shard → leader as the running nodes report it (a node that believes it
/// leads but was deposed may be listed too; good enough to pick victims).
pub async fn leadership(cluster: &Cluster) -> Vec<(u32, u64)> {
    let mut led = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), node.status()).await {
            led.extend(status.leading.into_iter().map(|shard| (shard, node.id)));
        }
    }
    led
}

/// Cuts `side` from every other node, in both directions.
async fn partition(cluster: &Cluster, side: &[u64]) {
    let side: BTreeSet<u64> = side.iter().copied().collect();
    let all: BTreeSet<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let other_side: Vec<u64> = if side.contains(&node.id) {
            all.difference(&side).copied().collect()
        } else {
            side.iter().copied().collect()
        };
        let req = InjectFaultRequest { isolate_from: other_side, ..Default::default() };
        if let Err(e) = node.admin().inject_fault(req).await {
            panic!(
                "inject fault into node {}: {e:?} (is --enable-test-faults set?)\n{}",
                node.id,
                log_tail(node)
            );
        }
    }
}

/// The end of a node's log, for a failure message.
fn log_tail(node: &crate::Process) -> String {
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "--- node {} log, last lines ---\n{}",
        node.id,
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

/// Heals every partition on every running node.
pub async fn heal_partitions(cluster: &Cluster) {
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let req = InjectFaultRequest::default();
        if let Err(e) = node.admin().inject_fault(req).await {
            panic!("heal partition on node {}: {e:?}\n{}", node.id, log_tail(node));
        }
    }
}
