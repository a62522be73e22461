//! `ringkv admin backup` and `ringkv admin restore` against real clusters,
//! run as the CLI's library calls: a round trip under concurrent writes, and
//! the refusals (non-empty directory, damaged file, initialized cluster).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_cli::backup::{self, manifest};
use ringkv_cli::output::Failure;
use ringkv_client::{Client, ClientOptions, Consistency, PutOptions};
use ringkv_tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(30);
const SHARDS: u32 = 4;
const WRITERS: usize = 3;
/// Keys per writer; writer `w` writes `w{w}-k{j}` with sequence numbers
/// `seq` where `seq % KEYS_PER_WRITER == j`, increasing.
const KEYS_PER_WRITER: u64 = 40;
const TTL_MS: u64 = 600_000;

fn client(addrs: Vec<String>) -> Client {
    Client::connect(addrs, ClientOptions::default()).expect("client")
}

fn nodes_of(cluster: &Cluster) -> Vec<(u64, String)> {
    cluster.nodes.iter().map(|n| (n.id, n.addr.clone())).collect()
}

async fn run_backup(seed: &Client, dir: &Path) -> Result<manifest::Manifest, Failure> {
    backup::backup(seed, dir, TIMEOUT, &mut Vec::new()).await
}

async fn run_restore(dir: &Path, target: &Cluster) -> Result<backup::RestoreSummary, Failure> {
    backup::restore(dir, nodes_of(target), None, TIMEOUT, &Default::default(), &mut Vec::new()).await
}

/// Keys stored by each shard's leader, summed over the shards.
async fn stored_keys(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for node in &cluster.nodes {
        let status = node.status().await.expect("node status");
        total += status
            .replica_status
            .iter()
            .filter(|r| r.role == "leader" && r.shard != 0)
            .map(|r| r.keys)
            .sum::<u64>();
    }
    total
}

async fn put(app: &Client, key: &str, value: &str, ttl_ms: u64) {
    app.put(key.to_string(), value.to_string(), PutOptions { ttl_ms, ..Default::default() })
        .await
        .expect("put");
}

/// Per writer key: the sequence numbers acknowledged, and the highest attempted.
#[derive(Default)]
struct Writes {
    acked: HashMap<String, u64>,
    attempted: HashMap<String, u64>,
    /// Writes acknowledged in all.
    acks: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_concurrent_writes_restores_every_acknowledged_write() {
    // The source stays up to the end: its TTLs are compared with the restored ones.
    let (_source, _, router) = Cluster::with_router(3, SHARDS).await;
    let app = client(vec![router.clone()]);
    for i in 0..200 {
        put(&app, &format!("pre-{i}"), &format!("p{i}"), 0).await;
    }
    for i in 0..20 {
        put(&app, &format!("ttl-{i}"), &format!("t{i}"), TTL_MS).await;
    }
    for i in 0..10 {
        put(&app, &format!("gone-{i}"), "x", 0).await;
        app.delete(format!("gone-{i}"), None).await.expect("delete");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (app, stop, writes) = (app.clone(), stop.clone(), writes.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-k{}", seq % KEYS_PER_WRITER);
                    writes.lock().expect("writes lock: a writer panicked").attempted.insert(key.clone(), seq);
                    if app.put(key.clone(), seq.to_string(), PutOptions::default()).await.is_ok() {
                        let mut writes = writes.lock().expect("writes lock: a writer panicked");
                        writes.acked.insert(key, seq);
                        writes.acks += 1;
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    // The writers are running (and acknowledged something) before the backup.
    let deadline = Instant::now() + TIMEOUT;
    while writes.lock().expect("writes lock: a writer panicked").acked.len() < WRITERS {
        assert!(Instant::now() < deadline, "writers made no progress");
        // Poll interval of this deadline-bounded wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("backup");
    let (acked_before, acks_before) = {
        let writes = writes.lock().expect("writes lock: a writer panicked");
        (writes.acked.clone(), writes.acks)
    };
    let backup_started = Instant::now();
    let manifest = run_backup(&app, &dir).await.expect("backup");
    let acked_during = writes.lock().expect("writes lock: a writer panicked").acks - acks_before;
    eprintln!("backup took {:?}; {acked_during} writes acknowledged meanwhile", backup_started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let attempted = std::mem::take(&mut writes.lock().expect("writes lock: a writer panicked").attempted);

    assert_eq!(manifest.shard_count, SHARDS);
    assert_eq!(manifest.replication_factor, 3);
    let backed_up: u64 = manifest.shards.iter().map(|s| s.keys).sum();
    let at_least = 220 + acked_before.len() as u64;
    let at_most = 220 + attempted.len() as u64;
    assert!(
        (at_least..=at_most).contains(&backed_up),
        "{backed_up} keys backed up, expected {at_least}..={at_most}"
    );

    let target = Cluster::start(3, &[]).await;
    let restored = run_restore(&dir, &target).await.expect("restore");
    assert_eq!(restored.written + restored.expired, backed_up);
    assert_eq!(restored.expired, 0);
    assert_eq!(stored_keys(&target).await, backed_up, "the new cluster holds exactly the backed-up keys");

    let restored_app = client(target.addrs());
    let get = |key: String| {
        let restored_app = restored_app.clone();
        async move { restored_app.get(key, Consistency::Linearizable).await.expect("get") }
    };
    for i in 0..200 {
        let got = get(format!("pre-{i}")).await.expect("a key written before the backup is restored");
        assert_eq!(got.value, format!("p{i}").as_bytes());
        assert_eq!(got.ttl_ms, None);
    }
    for i in 0..10 {
        assert!(get(format!("gone-{i}")).await.is_none(), "a deleted key came back");
    }
    for i in 0..20 {
        let key = format!("ttl-{i}");
        let restored_ttl = get(key.clone()).await.expect("ttl key restored").ttl_ms.expect("ttl kept");
        let source_ttl =
            app.get(key, Consistency::Linearizable).await.expect("get").expect("found").ttl_ms.expect("ttl");
        // The same absolute deadline: not reset by the restore.
        assert!(restored_ttl.abs_diff(source_ttl) < 5_000, "ttl {restored_ttl} vs the source's {source_ttl}");
    }
    for (key, max_seq) in &attempted {
        let j: u64 = key.rsplit("-k").next().and_then(|j| j.parse().ok()).expect("writer key");
        match get(key.clone()).await {
            Some(got) => {
                let seq: u64 =
                    std::str::from_utf8(&got.value).ok().and_then(|v| v.parse().ok()).expect("a seq");
                assert!(seq % KEYS_PER_WRITER == j && seq <= *max_seq, "{key} = {seq} was never written");
                if let Some(before) = acked_before.get(key) {
                    assert!(seq >= *before, "{key} = {seq}, but {before} was acknowledged before the backup");
                }
            }
            None => assert!(
                !acked_before.contains_key(key),
                "{key} was acknowledged before the backup and is lost"
            ),
        }
    }
}

/// Flips one byte in the middle of `path`.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_directories_damaged_files_and_initialized_clusters_are_refused() {
    let (source, _, router) = Cluster::with_router(3, SHARDS).await;
    let app = client(vec![router]);
    for i in 0..100 {
        put(&app, &format!("k{i}"), &format!("v{i}"), 0).await;
    }
    let root = tempfile::tempdir().expect("temp dir");

    // A non-empty directory is refused and left alone.
    let busy = root.path().join("busy");
    std::fs::create_dir(&busy).expect("create a busy dir");
    std::fs::write(busy.join("notes.txt"), "mine").expect("write into it");
    let refused = run_backup(&app, &busy).await.unwrap_err();
    assert!(refused.message.contains("is not empty"), "{refused:?}");
    assert_eq!(std::fs::read_dir(&busy).expect("list it").count(), 1);

    let good = root.path().join("good");
    let manifest = run_backup(&app, &good).await.expect("backup");
    assert_eq!(manifest.shards.iter().map(|s| s.keys).sum::<u64>(), 100);
    // A backup into the directory of a finished one is refused too.
    assert!(run_backup(&app, &good).await.unwrap_err().message.contains("is not empty"));

    // Restoring into the (initialized) source cluster is refused; its data stays.
    app.put("k0", "changed", PutOptions::default()).await.expect("put");
    let refused = run_restore(&good, &source).await.unwrap_err();
    assert!(refused.message.contains("already belongs to cluster"), "{refused:?}");
    let got = app.get("k0", Consistency::Linearizable).await.expect("get").expect("found");
    assert_eq!(got.value, "changed".as_bytes());

    // Damage: a flipped byte in a shard file, a missing manifest, a damaged
    // manifest. Each is refused naming the file, and the fresh target nodes
    // stay fresh.
    let target = Cluster::start(3, &[]).await;
    let flipped = root.path().join("flipped");
    copy_dir(&good, &flipped);
    flip_a_byte(&flipped.join(manifest::file_name(2)));
    let refused = run_restore(&flipped, &target).await.unwrap_err();
    assert!(refused.message.contains("shard-0002.rkv is damaged"), "{refused:?}");

    let incomplete = root.path().join("incomplete");
    copy_dir(&good, &incomplete);
    std::fs::remove_file(incomplete.join(manifest::FILE_NAME)).expect("remove the manifest");
    let refused = run_restore(&incomplete, &target).await.unwrap_err();
    assert!(refused.message.contains("not a complete backup"), "{refused:?}");

    let bad_manifest = root.path().join("bad-manifest");
    copy_dir(&good, &bad_manifest);
    let text = std::fs::read_to_string(bad_manifest.join(manifest::FILE_NAME)).expect("read the manifest");
    std::fs::write(
        bad_manifest.join(manifest::FILE_NAME),
        text.replace("\"shard_count\": 4", "\"shard_count\": 5"),
    )
    .expect("damage the manifest");
    let refused = run_restore(&bad_manifest, &target).await.unwrap_err();
    assert!(refused.message.contains("manifest.json is damaged"), "{refused:?}");

    for node in &target.nodes {
        let status = node.status().await.expect("status");
        assert!(status.cluster_id.is_empty() && status.replicas.is_empty(), "node {} was changed", node.id);
    }

    // The good backup restores into those same nodes.
    let restored = run_restore(&good, &target).await.expect("restore");
    assert_eq!(restored.written, 100);
    let restored_app = client(target.addrs());
    let mut values = BTreeMap::new();
    for i in 0..100 {
        let got =
            restored_app.get(format!("k{i}"), Consistency::Linearizable).await.expect("get").expect("found");
        values.insert(i, got.value);
    }
    assert!(values.iter().all(|(i, v)| *v == format!("v{i}").as_bytes()));
    // Restoring twice is refused: the nodes now belong to a cluster.
    assert!(run_restore(&good, &target).await.unwrap_err().message.contains("already belongs"));
}
