//! The Python example client (`client/examples/python/`) against a real cluster:
//! a program that has only the `.proto` files and stock grpcio can use ringkv,
//! `NotLeader` redirects (typed details in the status trailer) included.
//!
//! Needs `python3` (with `venv`) on PATH and PyPI reachable on the first run, which
//! installs grpcio into `~/.cache/ringkv/py-venv` (or `$RINGKV_PY_VENV`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringkv_core::placement::shard_for_key;
use ringkv_tests::Cluster;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

const SHARDS: u32 = 4;
/// All of run.sh, including the first run's `pip install`.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// What `session_example.py` prints when every step behaves as ringkv promises
/// (it checks the values itself and exits 1 otherwise).
const EXPECTED_LINES: &[&str] = &[
    "put session with ttl 60000 ms: version ",
    r#"get session: {"user": 7, "cart": []}, version "#,
    "cas update at version ",
    ": succeeded=false, current version ",
    "touch session: ttl now ",
    "increment request counter twice: 1, then 2",
    "delete session: deleted at version ",
    "session example: all steps behaved as expected",
];

fn run_sh() -> PathBuf {
    // CARGO_MANIFEST_DIR is <workspace>/tests.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let script = root.join("client/examples/python/run.sh");
    assert!(script.exists(), "{} is missing", script.display());
    script
}

fn require_python3() {
    let found = std::process::Command::new("python3").arg("--version").output();
    assert!(
        matches!(&found, Ok(out) if out.status.success()),
        "python3 is not available ({found:?}): this test runs client/examples/python/run.sh, \
         which needs Python 3 with the venv module on PATH"
    );
}

/// Echoes a child's output stream line by line (visible with --nocapture) and
/// returns all of it.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, tag: &'static str) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("run.sh {tag}| {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// Runs the example against `addr` with a fresh key prefix; returns its stdout,
/// after asserting it succeeded and printed every expected line.
async fn run_example(cluster: &Cluster, addr: &str, prefix: &str) -> String {
    let mut child = Command::new("bash")
        .arg(run_sh())
        .env("RINGKV_ADDR", addr)
        .env("RINGKV_KEY_PREFIX", prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills python and pip too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn bash");
    let stdout = collect(child.stdout.take().expect("stdout"), "out");
    let stderr = collect(child.stderr.take().expect("stderr"), "err");
    let status = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for run.sh")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            }
            let _ = child.kill().await;
            None
        }
    };
    let (stdout, stderr) = (stdout.await.expect("stdout reader"), stderr.await.expect("stderr reader"));
    let report = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("run.sh did not finish within {RUN_TIMEOUT:?}; killed\n{report}\n{}", cluster.logs());
    };
    assert!(status.success(), "run.sh against {addr} failed ({status})\n{report}\n{}", cluster.logs());
    for line in EXPECTED_LINES {
        assert!(stdout.contains(line), "run.sh output lacks {line:?}\n{report}");
    }
    stdout
}

fn fresh_prefix(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    format!("python-test-{tag}-{}-{nanos}/", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_session_example_against_a_cluster() {
    require_python3();
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.init(SHARDS, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(SHARDS, Duration::from_secs(30)).await;

    // Through the router: the way an application service uses ringkv.
    let router = cluster.start_router().await;
    let router_addr = cluster.routers[router].addr.clone();
    run_example(&cluster, &router_addr, &fresh_prefix("router")).await;

    // Straight at a node that does not lead the session key's shard: the
    // example's first Put there must follow a NotLeader redirect.
    let prefix = fresh_prefix("node");
    let shard = shard_for_key(format!("{prefix}session").as_bytes(), SHARDS);
    let follower = cluster.nodes.iter().find(|n| n.id != leaders[&shard]).expect("a non-leader");
    let addr = follower.addr.clone();
    let stdout = run_example(&cluster, &addr, &prefix).await;
    let redirect = format!("redirected: {addr} does not lead shard {shard}, node ");
    if !stdout.contains(&redirect) {
        // Only acceptable if leadership moved to that node in the meantime.
        let leading = follower.status().await.map(|s| s.leading.contains(&shard)).unwrap_or(false);
        assert!(leading, "no NotLeader redirect from {addr} for shard {shard}\n{stdout}");
    }
}
