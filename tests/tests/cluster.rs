//! A real cluster of `ringkv-node` processes over gRPC on loopback: replication,
//! failover, restart and recovery, damaged snapshots, and bad input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_core::placement::shard_for_key;
use ringkv_proto::v1::{GetRequest, PutRequest};
use ringkv_tests::{Cluster, KvReply, KvRequest, send};

const TIMEOUT: Duration = Duration::from_secs(20);

/// One key per shard `1..=shards`.
fn key_per_shard(shards: u32) -> BTreeMap<u32, Bytes> {
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let key = format!("key-{i}");
        keys.entry(shard_for_key(key.as_bytes(), shards)).or_insert_with(|| Bytes::from(key));
        if keys.len() == shards as usize {
            break;
        }
    }
    keys
}

fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> KvRequest {
    KvRequest::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

fn get(key: impl Into<Bytes>) -> KvRequest {
    KvRequest::Get(GetRequest { key: key.into(), consistency: 0, ..Default::default() })
}

fn stale_get(key: impl Into<Bytes>) -> KvRequest {
    KvRequest::Get(GetRequest { key: key.into(), consistency: 1, ..Default::default() })
}

/// Puts `key=value` through the cluster and returns the acknowledged version.
async fn put_ok(cluster: &Cluster, key: &str, value: &str) -> u64 {
    match cluster.call(put(key.to_string(), value.to_string()), TIMEOUT).await {
        Ok(KvReply::Put(r)) if r.succeeded => r.version,
        other => panic!("put {key} failed: {other:?}\n{}", cluster.logs()),
    }
}

/// Reads `key` linearizably through the cluster.
async fn get_value(cluster: &Cluster, key: &str) -> Option<(Bytes, u64)> {
    match cluster.call(get(key.to_string()), TIMEOUT).await {
        Ok(KvReply::Get(r)) => r.found.then_some((r.value, r.version)),
        other => panic!("get {key} failed: {other:?}\n{}", cluster.logs()),
    }
}

/// Waits until every key reads back, STALE, from the node at `addr` with the
/// acknowledged value and version.
async fn wait_replicated(addr: &str, acked: &BTreeMap<String, (String, u64)>) {
    let deadline = Instant::now() + TIMEOUT;
    for (key, (value, version)) in acked {
        loop {
            let reply = send(addr, stale_get(key.clone())).await;
            if let Ok(KvReply::Get(r)) = &reply
                && r.found
                && r.value == value.as_bytes()
                && r.version == *version
            {
                break;
            }
            assert!(Instant::now() < deadline, "{key} never replicated to {addr}: last reply {reply:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_every_shard_replicate_to_every_replica() {
    let cluster = Cluster::start(3, &[]).await;
    cluster.init(8, 3).await.expect("init");
    cluster.wait_for_leaders(8, TIMEOUT).await;
    let mut acked = BTreeMap::new();
    for (shard, key) in key_per_shard(8) {
        let key = String::from_utf8(key.to_vec()).expect("utf8");
        let value = format!("value-of-shard-{shard}");
        let version = put_ok(&cluster, &key, &value).await;
        acked.insert(key, (value, version));
    }
    for node in &cluster.nodes {
        wait_replicated(&node.addr, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_shard_leader_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(4, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(4, TIMEOUT).await;
    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let version = put_ok(&cluster, &key, &value).await;
        acked.insert(key, (value, version));
    }

    // Kill the leader of shard 1, then time until a write to shard 1 succeeds.
    let victim = leaders[&1];
    let shard1_key = key_per_shard(4)[&1].clone();
    cluster.node(victim).kill();
    let killed_at = Instant::now();
    let key = String::from_utf8(shard1_key.to_vec()).expect("utf8");
    let version = put_ok(&cluster, &key, "after-failover").await;
    let failover = killed_at.elapsed();
    println!("shard 1 accepted a write {failover:?} after its leader (node {victim}) was killed");
    assert!(failover < TIMEOUT, "no new leader for shard 1");
    acked.insert(key, ("after-failover".into(), version));

    for (key, (value, version)) in &acked {
        let got = get_value(&cluster, key).await;
        assert_eq!(got, Some((Bytes::from(value.clone()), *version)), "{key} lost after failover");
    }

    // The killed node comes back and catches up.
    cluster.node(victim).start().await;
    let addr = cluster.node(victim).addr.clone();
    wait_replicated(&addr, &acked).await;
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_recovers_all_data_after_snapshots_and_purges() {
    let args = ["--snapshot-every-entries", "20", "--log-kept-after-snapshot", "5"];
    let mut cluster = Cluster::start(3, &args).await;
    cluster.init(4, 3).await.expect("init");
    cluster.wait_for_leaders(4, TIMEOUT).await;
    let mut acked = BTreeMap::new();
    for i in 0..300 {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let version = put_ok(&cluster, &key, &value).await;
        acked.insert(key, (value, version));
    }
    for node in &cluster.nodes {
        wait_replicated(&node.addr, &acked).await;
        let snapshots = files_under(&node.data_dir.join("snapshots"));
        assert!(!snapshots.is_empty(), "node {} wrote no snapshot file", node.id);
    }

    // Crash every node at once, then bring them all back.
    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start().await;
    }
    for (key, (value, version)) in &acked {
        let got = get_value(&cluster, key).await;
        assert_eq!(got, Some((Bytes::from(value.clone()), *version)), "{key} lost after crash");
    }

    // And once more with a graceful stop.
    for node in &mut cluster.nodes {
        node.stop().await;
    }
    for node in &mut cluster.nodes {
        node.start().await;
    }
    for node in &cluster.nodes {
        wait_replicated(&node.addr, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_file_is_detected_and_reported() {
    let args = ["--snapshot-every-entries", "10", "--log-kept-after-snapshot", "2"];
    let mut cluster = Cluster::start(1, &args).await;
    cluster.init(1, 1).await.expect("init");
    cluster.wait_for_leaders(1, TIMEOUT).await;
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let version = put_ok(&cluster, &key, &value).await;
        acked.insert(key, (value, version));
    }
    let node = cluster.node(1);
    node.stop().await;
    // A stop can catch a snapshot half made: its file written, the pointer to it
    // not yet. The next start deletes such a file, so after one more start and
    // stop, shard 1's only snapshot file is the one the node relies on.
    node.start().await;
    cluster.wait_for_leaders(1, TIMEOUT).await;
    let node = cluster.node(1);
    node.stop().await;
    let shard_dir = node.data_dir.join("snapshots").join("shard-0000000001");
    let snapshots = files_under(&shard_dir);
    assert_eq!(snapshots.len(), 1, "shard 1 keeps exactly its current snapshot: {snapshots:?}");
    let data_snapshot = snapshots[0].clone();
    let original = std::fs::read(&data_snapshot).expect("read snapshot");

    // One flipped byte in the middle of the file.
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&data_snapshot, &damaged).expect("write damaged snapshot");
    let (status, log) = node.start_expecting_failure().await;
    assert!(!status.success());
    assert!(
        log.contains("checksum")
            && log.contains(&*data_snapshot.file_name().expect("name").to_string_lossy()),
        "the error must name the check and the file:\n{log}"
    );

    // A missing (wiped) snapshot file.
    std::fs::remove_file(&data_snapshot).expect("remove snapshot");
    let (status, log) = node.start_expecting_failure().await;
    assert!(!status.success());
    assert!(
        log.contains(&*data_snapshot.file_name().expect("name").to_string_lossy()),
        "the error must name the missing file:\n{log}"
    );

    // Restored, the node starts and every write is there.
    std::fs::write(&data_snapshot, &original).expect("restore snapshot");
    node.start().await;
    cluster.wait_for_leaders(1, TIMEOUT).await;
    for (key, (value, version)) in &acked {
        assert_eq!(get_value(&cluster, key).await, Some((Bytes::from(value.clone()), *version)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_purged_log_catches_up_by_snapshot() {
    let args = ["--snapshot-every-entries", "10", "--log-kept-after-snapshot", "2"];
    let mut cluster = Cluster::start(3, &args).await;
    cluster.init(2, 3).await.expect("init");
    cluster.wait_for_leaders(2, TIMEOUT).await;
    cluster.node(3).kill();
    let mut acked = BTreeMap::new();
    for i in 0..200 {
        let (key, value) = (format!("behind-{i}"), format!("value-{i}"));
        let version = put_ok(&cluster, &key, &value).await;
        acked.insert(key, (value, version));
    }
    // The leaders purged their logs far past where node 3 stopped, so it can
    // only catch up through a streamed snapshot.
    cluster.node(3).start().await;
    let addr = cluster.node(3).addr.clone();
    wait_replicated(&addr, &acked).await;
    let snapshots = files_under(&cluster.node(3).data_dir.join("snapshots"));
    assert!(!snapshots.is_empty(), "node 3 holds no snapshot after catching up");
}

/// Every replica of `shard` reports the same applied index and state checksum.
async fn wait_converged(cluster: &Cluster, shard: u32) -> (u64, u32) {
    use ringkv_proto::v1::ReplicaChecksumRequest;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut seen = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(r) = node.admin().replica_checksum(ReplicaChecksumRequest { shard }).await {
                let r = r.into_inner();
                seen.push((r.applied_index, r.checksum));
            }
        }
        if seen.len() == cluster.nodes.len() && seen.windows(2).all(|w| w[0] == w[1]) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "shard {shard} replicas never converged: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_converges_after_healing() {
    use ringkv_proto::v1::InjectFaultRequest;
    let mut cluster = Cluster::start(3, &["--enable-test-faults"]).await;
    cluster.init(2, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(2, TIMEOUT).await;
    let key = String::from_utf8(key_per_shard(2)[&1].to_vec()).expect("utf8");
    put_ok(&cluster, &key, "before").await;

    // Cut the leader of shard 1 off from its peers' Raft traffic (clients still
    // reach it).
    let victim = leaders[&1];
    let peers: Vec<u64> = cluster.nodes.iter().map(|n| n.id).filter(|&id| id != victim).collect();
    let victim_addr = cluster.node(victim).addr.clone();
    cluster
        .node(victim)
        .admin()
        .inject_fault(InjectFaultRequest { isolate_from: peers.clone(), ..Default::default() })
        .await
        .expect("isolate");

    // The majority elects a new leader and takes the write.
    let others: Vec<String> =
        cluster.nodes.iter().filter(|n| n.id != victim).map(|n| n.addr.clone()).collect();
    let deadline = Instant::now() + TIMEOUT;
    let version = 'written: loop {
        for addr in &others {
            if let Ok(KvReply::Put(r)) = send(addr, put(key.clone(), "after")).await {
                break 'written r.version;
            }
        }
        assert!(Instant::now() < deadline, "the majority never took the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The isolated ex-leader must not serve the old value as linearizable.
    let read = tokio::time::timeout(Duration::from_secs(5), send(&victim_addr, get(key.clone()))).await;
    if let Ok(Ok(KvReply::Get(r))) = &read {
        assert!(
            !r.found || &r.value[..] == b"after",
            "stale linearizable read from an isolated leader: {r:?}"
        );
    }

    // Heal: everyone converges on the same state, with the new value.
    cluster.node(victim).admin().inject_fault(InjectFaultRequest::default()).await.expect("heal");
    for shard in 0..=2 {
        wait_converged(&cluster, shard).await;
    }
    assert_eq!(get_value(&cluster, &key).await, Some((Bytes::from("after"), version)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_refused_without_the_test_flag() {
    use ringkv_proto::v1::InjectFaultRequest;
    let cluster = Cluster::start(1, &[]).await;
    let err = cluster.nodes[0]
        .admin()
        .inject_fault(InjectFaultRequest { isolate_from: vec![2], ..Default::default() })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// After a whole-cluster crash a shard's old leader comes back still leading
/// (openraft restores it), with a state machine that may not have applied every
/// entry it had acknowledged: the commit index it persisted lags by a round. Its
/// first linearizable reads must wait for those entries, not read around them.
/// (Found by the chaos run, seed 11: a read right after a restart missed the
/// last acknowledged write.) Reads hammer the old leader from the moment it is
/// back, while its followers restart, to hit that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restored_after_a_crash_serves_no_stale_read() {
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(1, 3).await.expect("init");
    let mut served_by_restored = 0;
    for round in 0..3 {
        let leader = cluster.wait_for_leaders(1, TIMEOUT).await[&1];
        let writers = (0..8).map(|w| {
            let cluster = &cluster;
            async move {
                let value = format!("round-{round}-writer-{w}");
                let version = put_ok(cluster, &format!("k{w}"), &value).await;
                (format!("k{w}"), (value, version))
            }
        });
        let acked: BTreeMap<String, (String, u64)> =
            futures::future::join_all(writers).await.into_iter().collect();
        // Crash right after the acknowledgements; the old leader comes back first.
        for node in &mut cluster.nodes {
            node.kill();
        }
        cluster.node(leader).start().await;
        let addr = cluster.node(leader).addr.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = acked
            .iter()
            .map(|(key, expected)| {
                let (addr, key, expected, stop) = (addr.clone(), key.clone(), expected.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut served = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(KvReply::Get(r)) = send(&addr, get(key.clone())).await {
                            let got = (String::from_utf8_lossy(&r.value).into_owned(), r.version);
                            assert_eq!(
                                got, expected,
                                "round {round}: stale read of {key} from the restored leader"
                            );
                            served += 1;
                        }
                    }
                    served
                })
            })
            .collect();
        for node in &mut cluster.nodes {
            if !node.is_running() {
                node.start().await;
            }
        }
        // Every key must be served again (by whichever node leads now).
        for (key, (value, version)) in &acked {
            let got = get_value(&cluster, key).await;
            assert_eq!(got, Some((Bytes::from(value.clone()), *version)), "round {round}: {key}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            served_by_restored += reader.await.expect("reader");
        }
    }
    // Otherwise the window was never hit and the test checked nothing.
    assert!(served_by_restored > 0, "the restored leader served no read in three rounds");
}
