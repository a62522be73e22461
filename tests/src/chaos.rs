//! The chaos runner: a contended workload through routers while the
//! [`nemesis`](crate::nemesis) injects faults, then healing, final reads, the
//! [`checker`](crate::checker)s and a replica-convergence check.
//!
//! The workload runs many clients over a small key set so operations contend:
//! register keys get `Get`, unique-value `Put`, `Put if_version` (CAS) and
//! `Delete`; counter keys get `Increment`; TTL keys get short-TTL puts and reads.
//! Every operation is recorded with its invoke and completion time and an outcome:
//! ok, failed (surely not applied: the router refused it before anything could
//! run) or unknown (no answer, `UNAVAILABLE`, `DEADLINE_EXCEEDED`: a write may or
//! may not have happened).
//!
//! Everything random comes from the seed: the clients' choices and the nemesis
//! schedule. Timing (and so the exact history) still varies run to run; a seed
//! reproduces the same kind of run, not the same interleaving.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_core::placement::shard_for_key;
use ringkv_proto::v1::{
    DeleteRequest, GetRequest, IncrementRequest, PutRequest, ReplicaChecksumRequest, put_request,
};
use tokio::sync::Mutex;

use crate::checker::history::{Call, Condition, Op, Outcome, Return};
use crate::checker::watch::{Change, Seen, Segment, WatchReport};
use crate::checker::{CheckConfig, Report};
use crate::nemesis::{Fault, FaultKind, Nemesis};
use crate::{Cluster, KvReply, KvRequest, send};

/// One chaos run's shape.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub duration: Duration,
    pub nodes: u64,
    pub shards: u32,
    pub routers: usize,
    pub clients: u32,
    pub register_keys: usize,
    pub counter_keys: usize,
    pub ttl_keys: usize,
    pub faults: Vec<FaultKind>,
    /// Quiet time before the first fault and between a heal and the next fault.
    pub fault_gap: (Duration, Duration),
    /// How long a fault is held before it is healed.
    pub fault_hold: (Duration, Duration),
    /// Rebalance under faults: the nemesis also grows the cluster by one node and
    /// drains nodes (between `nodes` and `nodes + 1` active), leaving the plans
    /// running while the other faults hit.
    pub rebalance: bool,
}

impl ChaosConfig {
    /// A full-mix run of `duration` on `nodes` nodes.
    pub fn new(seed: u64, duration: Duration, nodes: u64) -> ChaosConfig {
        ChaosConfig {
            seed,
            duration,
            nodes,
            shards: 8,
            routers: 2,
            clients: 12,
            register_keys: 12,
            counter_keys: 3,
            ttl_keys: 2,
            faults: FaultKind::ALL.to_vec(),
            fault_gap: (Duration::from_millis(500), Duration::from_millis(2000)),
            fault_hold: (Duration::from_millis(800), Duration::from_millis(2500)),
            rebalance: false,
        }
    }

    /// The same run with membership changes mixed into the faults.
    pub fn with_rebalance(mut self) -> ChaosConfig {
        self.rebalance = true;
        self.faults = FaultKind::WITH_REBALANCE.to_vec();
        self
    }
}

/// What a run saw and what the checkers said.
pub struct ChaosReport {
    pub config: ChaosConfig,
    pub history: Vec<Op>,
    pub faults: Vec<Fault>,
    pub check: Report,
    /// Shards whose replicas did not converge to one state, with what each
    /// replica reported.
    pub divergent: Vec<(u32, Vec<ReplicaView>)>,
    /// Per group of fault kinds (leader kill, pause, partition, whole-cluster
    /// kill): time from the fault (from the restart, for a whole-cluster kill) to
    /// the first acknowledged write on each shard the hit nodes led, sorted.
    pub failovers: Vec<(&'static str, Vec<Duration>)>,
    /// When the workload started: the zero of the history's and the faults' times.
    pub start: Instant,
    /// Rebalance runs: why the last plan did not finish, if it did not.
    pub rebalance: Option<String>,
    /// What a watch of the register keys through the routers delivered.
    pub watch: WatchReport,
}

impl ChaosReport {
    /// No anomaly, no divergent replica.
    pub fn passed(&self) -> bool {
        self.check.is_valid()
            && self.divergent.is_empty()
            && self.rebalance.is_none()
            && self.watch.is_valid()
    }
}

/// One replica's state as `ReplicaChecksum` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    pub node: u64,
    pub applied_index: u64,
    pub checksum: u32,
}

fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// The keys of a run: register keys cover every shard.
struct Keys {
    registers: Vec<String>,
    counters: Vec<String>,
    ttl: Vec<String>,
}

impl Keys {
    fn new(config: &ChaosConfig) -> Keys {
        let mut registers: Vec<String> = Vec::new();
        let mut covered = std::collections::BTreeSet::new();
        for i in 0.. {
            let key = format!("reg-{i}");
            let shard = shard_for_key(key.as_bytes(), config.shards);
            if registers.len() < config.register_keys || covered.insert(shard) {
                covered.insert(shard);
                registers.push(key);
            }
            if registers.len() >= config.register_keys && covered.len() == config.shards as usize {
                break;
            }
        }
        Keys {
            registers,
            counters: (0..config.counter_keys).map(|i| format!("ctr-{i}")).collect(),
            ttl: (0..config.ttl_keys).map(|i| format!("ttl-{i}")).collect(),
        }
    }
}

/// Sends one op through a router and classifies its outcome.
async fn perform(router: &str, key: &str, call: &Call) -> Outcome {
    let bkey = Bytes::from(key.to_string());
    let request = match call {
        Call::Get => KvRequest::Get(GetRequest { key: bkey, consistency: 0, ..Default::default() }),
        Call::Put { value, condition, ttl_ms } => KvRequest::Put(PutRequest {
            key: bkey,
            value: Bytes::from(value.clone()),
            ttl_ms: *ttl_ms as i64,
            condition: match condition {
                Condition::None => None,
                Condition::IfAbsent => Some(put_request::Condition::IfAbsent(true)),
                Condition::IfVersion(v) => Some(put_request::Condition::IfVersion(*v)),
            },
            ..Default::default()
        }),
        Call::Delete { if_version } => {
            KvRequest::Delete(DeleteRequest { key: bkey, if_version: *if_version, ..Default::default() })
        }
        Call::Increment { delta } => {
            KvRequest::Increment(IncrementRequest { key: bkey, delta: *delta, ..Default::default() })
        }
    };
    match send(router, request).await {
        Ok(KvReply::Get(r)) => Outcome::Ok(Return::Get {
            found: r.found,
            value: String::from_utf8_lossy(&r.value).into_owned(),
            version: r.version,
        }),
        Ok(KvReply::Put(r)) => Outcome::Ok(Return::Put { succeeded: r.succeeded, version: r.version }),
        Ok(KvReply::Delete(r)) => Outcome::Ok(Return::Delete { deleted: r.deleted, version: r.version }),
        Ok(KvReply::Increment(r)) => Outcome::Ok(Return::Increment { value: r.value, version: r.version }),
        Ok(KvReply::Touch(_)) => Outcome::Failed,
        Err(status) => match status.code() {
            // Refused before anything was proposed.
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied => Outcome::Failed,
            // A read that failed told nothing; a write may have happened.
            _ if matches!(call, Call::Get) => Outcome::Failed,
            _ => Outcome::Unknown,
        },
    }
}

/// One client's loop until `until`.
async fn client(
    id: u32,
    seed: u64,
    routers: Vec<String>,
    keys: Arc<Keys>,
    start: Instant,
    until: Instant,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 32));
    let mut seq = 0u64;
    let mut seen_versions: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < until {
        seq += 1;
        let value = format!("c{id}-{seq}");
        let roll = rng.random_range(0..100);
        let (key, call) = if roll < 80 {
            let key = keys.registers[rng.random_range(0..keys.registers.len())].clone();
            let call = match roll {
                0..35 => Call::Get,
                35..55 => Call::Put { value, condition: Condition::None, ttl_ms: 0 },
                55..72 => match seen_versions.get(&key) {
                    Some(&v) if v > 0 => Call::Put { value, condition: Condition::IfVersion(v), ttl_ms: 0 },
                    _ => Call::Put { value, condition: Condition::IfAbsent, ttl_ms: 0 },
                },
                _ => Call::Delete {
                    if_version: if rng.random_bool(0.5) { seen_versions.get(&key).copied() } else { None },
                },
            };
            (key, call)
        } else if roll < 92 && !keys.counters.is_empty() {
            let key = keys.counters[rng.random_range(0..keys.counters.len())].clone();
            let call = if roll < 89 { Call::Increment { delta: rng.random_range(1..=5) } } else { Call::Get };
            (key, call)
        } else if !keys.ttl.is_empty() {
            let key = keys.ttl[rng.random_range(0..keys.ttl.len())].clone();
            let call = if rng.random_bool(0.5) {
                Call::Put { value, condition: Condition::None, ttl_ms: rng.random_range(200..=800) }
            } else {
                Call::Get
            };
            (key, call)
        } else {
            continue;
        };
        let router = &routers[rng.random_range(0..routers.len())];
        let invoke_us = micros_since(start);
        let outcome = perform(router, &key, &call).await;
        let complete_us = micros_since(start);
        match &outcome {
            Outcome::Ok(Return::Get { version, .. })
            | Outcome::Ok(Return::Put { version, .. })
            | Outcome::Ok(Return::Delete { version, .. }) => {
                seen_versions.insert(key.clone(), *version);
            }
            _ => {}
        }
        history.lock().await.push(Op { client: id, key, invoke_us, complete_us, call, outcome });
    }
}

/// Runs one chaos run and checks it.
pub async fn run(config: ChaosConfig) -> ChaosReport {
    let flags = ["--enable-test-faults"];
    let mut cluster = Cluster::start(config.nodes, &flags).await;
    cluster.init(config.shards, 3).await.expect("cluster init");
    cluster.wait_for_leaders(config.shards, Duration::from_secs(30)).await;
    for _ in 0..config.routers {
        cluster.start_router().await;
    }
    let routers: Vec<String> = cluster.routers.iter().map(|r| r.addr.clone()).collect();
    let keys = Arc::new(Keys::new(&config));
    let history = Arc::new(Mutex::new(Vec::new()));
    // In place before the first write, so it owes every one of them.
    let (catch_up_tx, catch_up) = tokio::sync::oneshot::channel();
    let watcher = record_watch(routers.clone(), catch_up).await;
    let start = Instant::now();
    let until = start + config.duration;

    let clients: Vec<_> = (0..config.clients)
        .map(|id| {
            tokio::spawn(client(
                id,
                config.seed,
                routers.clone(),
                keys.clone(),
                start,
                until,
                history.clone(),
            ))
        })
        .collect();

    // The nemesis: quiet gap, fault, hold, heal, until the workload ends.
    let mut nemesis = Nemesis::new(config.seed, &config.faults);
    (nemesis.min_nodes, nemesis.max_nodes) = (config.nodes, config.nodes + u64::from(config.rebalance));
    let mut faults = Vec::new();
    loop {
        let gap = nemesis.pick_duration(config.fault_gap.0, config.fault_gap.1);
        let hold = nemesis.pick_duration(config.fault_hold.0, config.fault_hold.1);
        if Instant::now() + gap + hold >= until {
            break;
        }
        tokio::time::sleep(gap).await;
        assert_none_crashed(&mut cluster);
        let mut fault = nemesis.inject(&mut cluster).await;
        tokio::time::sleep(hold).await;
        nemesis.heal(&mut cluster, &fault).await;
        fault.healed = Some(Instant::now());
        faults.push(fault);
    }
    for c in clients {
        c.await.expect("client task");
    }

    // Heal everything (no-op if healed), let a running plan finish, let leaders
    // settle, read every key.
    assert_none_crashed(&mut cluster);
    crate::nemesis::heal_partitions(&cluster).await;
    let rebalance = if config.rebalance { finish_rebalance(&routers[0]).await } else { None };
    cluster.wait_for_leaders(config.shards, Duration::from_secs(60)).await;
    let final_phase_start_us = micros_since(start);
    let all_keys: Vec<&String> = keys.registers.iter().chain(&keys.counters).chain(&keys.ttl).collect();
    for key in all_keys {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let invoke_us = micros_since(start);
            let outcome = perform(&routers[0], key, &Call::Get).await;
            let complete_us = micros_since(start);
            let ok = matches!(outcome, Outcome::Ok(_));
            history.lock().await.push(Op {
                client: u32::MAX,
                key: key.clone(),
                invoke_us,
                complete_us,
                call: Call::Get,
                outcome,
            });
            if ok || Instant::now() > deadline {
                break;
            }
        }
    }
    let divergent = convergence(&cluster, config.shards).await;
    let history = std::mem::take(&mut *history.lock().await);
    let shard_of = |key: &str| shard_for_key(key.as_bytes(), config.shards);
    let mut targets: BTreeMap<u32, u64> = BTreeMap::new();
    for op in history.iter().filter(|op| op.key.starts_with(WATCHED_PREFIX)) {
        if let Outcome::Ok(Return::Put { version, .. } | Return::Delete { version, .. }) = op.outcome {
            let target = targets.entry(shard_of(&op.key)).or_default();
            *target = (*target).max(version);
        }
    }
    let _ = catch_up_tx.send(targets);
    let (segments, caught_up) = watcher.await.expect("watch recorder");
    let mut watch =
        crate::checker::watch::check(&history, &segments, |k| k.starts_with(WATCHED_PREFIX), shard_of);
    if let Err(behind) = caught_up {
        watch.anomalies.push(behind);
    }
    let check = crate::checker::check_all(
        &history,
        &CheckConfig { final_phase_start_us, clock_bound_ms: 250, search: Default::default() },
    );
    let failovers = failover_times(&history, &faults, start, config.shards);
    ChaosReport { config, history, faults, check, divergent, failovers, start, rebalance, watch }
}

/// The keys the chaos watch follows: the register keys, which span every shard.
const WATCHED_PREFIX: &str = "reg-";

/// How far the watch got: per shard, the last version it covered.
fn reached(token: &ringkv_client::ResumeToken) -> BTreeMap<u32, u64> {
    token.positions().map(|(shard, next)| (shard, next - 1)).collect()
}

/// Watches the register keys through the routers (as an application would)
/// from now until told the last acknowledged version of every shard and
/// caught up with it; returns the watch's segments and whether it caught up.
/// A watch that ends with an error (OUT_OF_RANGE after a position fell out of
/// a shard's retention, or a cluster down longer than the client's deadline)
/// is replaced by one from now: a new segment.
async fn record_watch(
    routers: Vec<String>,
    catch_up: tokio::sync::oneshot::Receiver<BTreeMap<u32, u64>>,
) -> tokio::task::JoinHandle<(Vec<Segment>, Result<(), String>)> {
    use ringkv_client::{Client, ClientOptions, EventKind, Routing, WatchStart, WatchTarget};
    let options = ClientOptions { routing: Routing::ViaSeeds, ..Default::default() };
    let client = Client::connect(routers, options).expect("watch client");
    let target = WatchTarget::Prefix(Bytes::from_static(WATCHED_PREFIX.as_bytes()));
    let open = |client: Client, target: WatchTarget| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.watch(target.clone(), WatchStart::Now).await {
                Ok(watch) => return watch,
                Err(err) => assert!(Instant::now() < deadline, "the chaos watch cannot start: {err}"),
            }
            // Bounded retry pause while the cluster recovers.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut watch = open(client.clone(), target.clone()).await;
    tokio::spawn(async move {
        let mut catch_up = catch_up;
        let mut targets: Option<(BTreeMap<u32, u64>, Instant)> = None;
        let mut segments = Vec::new();
        let mut responses = 0u64;
        let start = reached(watch.token());
        let mut segment = Segment { start: bump(&start), reached: start, ..Default::default() };
        loop {
            if let Some((wanted, deadline)) = &targets {
                if wanted.iter().all(|(shard, v)| segment.reached.get(shard).is_some_and(|r| r >= v)) {
                    segments.push(segment);
                    return (segments, Ok(()));
                }
                if Instant::now() > *deadline {
                    let behind = format!(
                        "the watch did not catch up in 30 s: reached {:?}, wanted {wanted:?}",
                        segment.reached
                    );
                    segments.push(segment);
                    return (segments, Err(behind));
                }
            }
            let next = tokio::select! {
                next = watch.next() => next,
                wanted = &mut catch_up, if targets.is_none() => {
                    targets = Some((wanted.unwrap_or_default(), Instant::now() + Duration::from_secs(30)));
                    continue;
                }
                // Re-check the catch-up deadline now and then.
                () = tokio::time::sleep(Duration::from_millis(500)), if targets.is_some() => continue,
            };
            match next {
                Some(Ok(batch)) => {
                    responses += 1;
                    for event in batch.events {
                        let change = match event.kind {
                            EventKind::Put => Change::Put,
                            EventKind::Delete => Change::Delete,
                            EventKind::Expired => Change::Expired,
                        };
                        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                        segment.events.push(Seen {
                            response: responses,
                            shard: batch.shard,
                            key: text(&event.key),
                            version: event.version,
                            change,
                            value: text(&event.value),
                        });
                    }
                    segment.reached = reached(watch.token());
                }
                ended => {
                    segment.ended = Some(match ended {
                        Some(Err(err)) => err.to_string(),
                        _ => "ended".to_string(),
                    });
                    segments.push(std::mem::take(&mut segment));
                    watch = open(client.clone(), target.clone()).await;
                    let start = reached(watch.token());
                    segment = Segment { start: bump(&start), reached: start, ..Default::default() };
                }
            }
        }
    })
}

/// The first versions after `reached`.
fn bump(reached: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
    reached.iter().map(|(&shard, &v)| (shard, v + 1)).collect()
}

/// Panics with its log if a node process exited on its own: faults stop
/// processes only through the harness, so an exit is a crash, and restarting
/// it at the next heal would hide it.
fn assert_none_crashed(cluster: &mut Cluster) {
    for node in &mut cluster.nodes {
        if let Some(status) = node.exited() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "node {} exited on its own ({status}); its log ends with:\n{}",
                node.id,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

/// Waits (bounded) for a running rebalance plan to finish; returns what went
/// wrong, if anything: a plan that does not finish once faults stop is a bug.
async fn finish_rebalance(router: &str) -> Option<String> {
    let opts =
        ringkv_client::ClientOptions { routing: ringkv_client::Routing::ViaSeeds, ..Default::default() };
    let client = ringkv_client::Client::connect(vec![router.to_string()], opts).expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client.rebalance_status().await {
            Ok(status) if !status.has_plan || status.state == "done" => return None,
            Ok(status) if status.state != "running" => return Some(format!("plan ended {}", status.state)),
            Ok(status) if Instant::now() > deadline => {
                return Some(format!(
                    "plan not done 120 s after the faults stopped: {} done, {} in flight, {} left; {:?}",
                    status.done,
                    status.in_flight,
                    status.left,
                    status.moves.iter().filter(|m| !m.last_error.is_empty()).collect::<Vec<_>>()
                ));
            }
            Err(e) if Instant::now() > deadline => return Some(format!("rebalance status: {e}")),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) for every shard's replicas to reach one applied index and
/// checksum; returns the shards that did not.
async fn convergence(cluster: &Cluster, shards: u32) -> Vec<(u32, Vec<ReplicaView>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<u32> = (0..=shards).collect();
    let mut last = BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for &shard in &pending {
            let mut seen = Vec::new();
            for node in &cluster.nodes {
                if let Ok(r) = node.admin().replica_checksum(ReplicaChecksumRequest { shard }).await {
                    let r = r.into_inner();
                    seen.push(ReplicaView {
                        node: r.node_id,
                        applied_index: r.applied_index,
                        checksum: r.checksum,
                    });
                }
            }
            let hosts = cluster.nodes.len().min(3);
            let agreed = seen.len() >= hosts
                && seen
                    .windows(2)
                    .all(|w| (w[0].applied_index, w[0].checksum) == (w[1].applied_index, w[1].checksum));
            if !agreed {
                still.push(shard);
                last.insert(shard, seen);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    pending.into_iter().map(|s| (s, last.remove(&s).unwrap_or_default())).collect()
}

/// For each fault that took leaders away, the time until each shard they led
/// acknowledged a write again.
/// The failover measures, one per group of fault kinds: (group, what is measured).
const FAILOVER_GROUPS: [(&str, &str); 4] = [
    ("leader kill", "kill -> first acked write per shard the node led"),
    ("pause", "SIGSTOP -> first acked write per shard the node led"),
    ("partition", "cut -> first acked write per shard the cut-off side led"),
    ("whole-cluster kill", "restart -> first acked write per shard"),
];

fn failover_group(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::KillRandom | FaultKind::KillBusiestLeader => FAILOVER_GROUPS[0].0,
        FaultKind::Pause => FAILOVER_GROUPS[1].0,
        FaultKind::IsolateNode | FaultKind::SplitMajorityMinority => FAILOVER_GROUPS[2].0,
        FaultKind::KillAll => FAILOVER_GROUPS[3].0,
        FaultKind::Rebalance => "rebalance",
    }
}

/// Per group of [`FAILOVER_GROUPS`], the sorted times from each fault to the
/// first acknowledged write on each shard the hit nodes led. A whole-cluster
/// kill is an outage for as long as it is held, so it is measured from the
/// restart instead.
fn failover_times(
    history: &[Op],
    faults: &[Fault],
    start: Instant,
    shards: u32,
) -> Vec<(&'static str, Vec<Duration>)> {
    let mut groups: Vec<(&'static str, Vec<Duration>)> =
        FAILOVER_GROUPS.iter().map(|(group, _)| (*group, Vec::new())).collect();
    for fault in faults {
        let from = if fault.kind == FaultKind::KillAll { fault.healed.unwrap_or(fault.at) } else { fault.at };
        let at_us = from.saturating_duration_since(start).as_micros() as u64;
        // Membership changes lose no leader by themselves: not measured.
        let Some((_, times)) = groups.iter_mut().find(|(g, _)| *g == failover_group(fault.kind)) else {
            continue;
        };
        for &shard in fault.shards_led.iter().filter(|&&s| s != 0) {
            let first = history
                .iter()
                .filter(|op| op.invoke_us >= at_us && op.is_write())
                .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
                .filter(|op| shard_for_key(op.key.as_bytes(), shards) == shard)
                .map(|op| op.complete_us)
                .min();
            if let Some(done) = first {
                times.push(Duration::from_micros(done - at_us));
            }
        }
    }
    for (_, times) in &mut groups {
        times.sort();
    }
    groups
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "chaos run: seed {} nodes {} shards {} duration {:?}",
            c.seed, c.nodes, c.shards, c.duration
        )?;
        let mut by_kind: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for op in &self.history {
            let kind = match &op.call {
                Call::Get => "get",
                Call::Put { condition: Condition::IfVersion(_), .. } => "cas",
                Call::Put { ttl_ms, .. } if *ttl_ms > 0 => "put-ttl",
                Call::Put { .. } => "put",
                Call::Delete { .. } => "delete",
                Call::Increment { .. } => "incr",
            };
            let outcome = match op.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed => "failed",
                Outcome::Unknown => "unknown",
            };
            *by_kind.entry((kind, outcome)).or_default() += 1;
        }
        writeln!(f, "operations ({} total):", self.history.len())?;
        for ((kind, outcome), n) in &by_kind {
            writeln!(f, "  {kind:8} {outcome:8} {n}")?;
        }
        let mut faults: BTreeMap<String, usize> = BTreeMap::new();
        for fault in &self.faults {
            *faults.entry(format!("{:?}", fault.kind)).or_default() += 1;
        }
        writeln!(f, "faults injected: {faults:?}")?;
        if !self.passed() {
            // When each fault was on, to line anomalies up with (same clock as the history).
            for fault in &self.faults {
                let secs = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64();
                let healed = fault.healed.map_or("never".to_string(), |t| format!("{:.3}s", secs(t)));
                writeln!(
                    f,
                    "  {:.3}s .. {healed}  {:?} nodes {:?} (they led shards {:?})",
                    secs(fault.at),
                    fault.kind,
                    fault.nodes,
                    fault.shards_led
                )?;
            }
        }
        let spread = |times: &[Duration]| match times {
            [] => "none measured".to_string(),
            _ => format!(
                "median {:?}, max {:?} over {} shards",
                times[times.len() / 2],
                times[times.len() - 1],
                times.len()
            ),
        };
        writeln!(f, "failover:")?;
        for ((group, times), (_, what)) in self.failovers.iter().zip(FAILOVER_GROUPS) {
            writeln!(f, "  {group:18} {}  ({what})", spread(times))?;
        }
        if c.rebalance {
            let actions: Vec<String> = self
                .faults
                .iter()
                .filter_map(|f| {
                    let at = f.at.saturating_duration_since(self.start).as_secs_f64();
                    f.action.as_ref().map(|a| format!("{at:.1}s {a}"))
                })
                .collect();
            writeln!(f, "membership changes: {}", actions.join("; "))?;
        }
        if let Some(problem) = &self.rebalance {
            writeln!(f, "rebalance: {problem}")?;
        } else if c.rebalance {
            writeln!(f, "rebalance: every plan finished")?;
        }
        writeln!(f, "divergent replicas: {}", self.divergent.len())?;
        for (shard, seen) in &self.divergent {
            writeln!(f, "  shard {shard}: {seen:?}")?;
        }
        write!(f, "{}", self.check)?;
        write!(f, "{}", self.watch)?;
        writeln!(f, "verdict: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}
