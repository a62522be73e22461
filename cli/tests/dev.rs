//! `ringkv dev` end to end, as a newcomer runs it: the built binary starts a
//! cluster in a temporary data directory on free ports, client commands work
//! against it, SIGINT stops it with status 0 and leaves no child behind, and a
//! second run on the same directory reuses the cluster and its data.
//!
//! Every wait has a deadline; the `Dev` guard kills `ringkv dev` if the test
//! fails, and its children then stop on their own (their stdin closes).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_cli::dev::Layout;

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");
/// Generous: a debug build on a loaded machine forms 33 Raft groups.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// `ringkv dev` allows its children 10 s before it kills them.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A base port such that base..=base+3 are all free now. Probed below the
/// kernel's ephemeral range (32768+ by default), so neither outgoing connections
/// nor other tests' port-0 listeners take them in between.
fn free_base_port() -> u16 {
    let seed =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) ^ std::process::id();
    for i in 0..2000u32 {
        let base = 20_000 + ((seed.wrapping_add(i * 4)) % 12_000) as u16;
        let all_free =
            (base..=base + 3).map(|port| TcpListener::bind(("127.0.0.1", port))).all(|r| r.is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no four consecutive free ports between 20000 and 32000");
}

/// A running `ringkv dev`; killed on drop if the test did not stop it.
struct Dev {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_path: PathBuf,
}

impl Dev {
    fn start(data_dir: &Path, base_port: u16, stderr_path: PathBuf) -> Dev {
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let mut child = Command::new(RINGKV)
            .arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--base-port", &base_port.to_string()])
            .env_remove("RINGKV_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ringkv dev");
        let (send, stdout) = mpsc::channel();
        let pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Dev { child, stdout, stderr_path }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the `endpoint:` line; returns it and everything printed before.
    fn wait_for_endpoint(&mut self) -> (String, String) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut printed = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    printed.push_str(&line);
                    printed.push('\n');
                    if let Some(endpoint) = line.strip_prefix("endpoint: ") {
                        return (endpoint.to_string(), printed);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no endpoint within {START_TIMEOUT:?}; stdout:\n{printed}\nstderr:\n{}",
                        self.stderr()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait for ringkv dev");
                    panic!(
                        "ringkv dev exited ({status}) before its endpoint:\n{printed}\nstderr:\n{}",
                        self.stderr()
                    )
                }
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for the exit.
    fn interrupt(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -INT {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ringkv dev still running {STOP_TIMEOUT:?} after SIGINT:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pids whose parent is `pid`, from /proc/<pid>/stat (field 4, after the
/// parenthesised command name).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Runs `ringkv --addr ADDR ARGS...`.
fn ringkv(addr: &str, args: &[&str]) -> Output {
    Command::new(RINGKV)
        .args(["--addr", addr, "--timeout-ms", "20000"])
        .args(args)
        .env_remove("RINGKV_ADDR")
        .output()
        .expect("run ringkv")
}

fn expect(output: &Output, code: i32, stdout: &str, what: &str) {
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(code), "{what}: stdout {out:?}, stderr {err:?}");
    assert!(out.starts_with(stdout), "{what}: stdout {out:?} does not start with {stdout:?}; stderr {err:?}");
}

/// The cluster id in `ringkv dev: <created|reusing> cluster ID in ...`.
fn cluster_id(printed: &str, how: &str) -> String {
    let prefix = format!("ringkv dev: {how} cluster ");
    let line = printed.lines().find_map(|line| line.strip_prefix(&prefix));
    let id = line.and_then(|rest| rest.split_whitespace().next());
    id.unwrap_or_else(|| panic!("no `{prefix}` line in:\n{printed}")).to_string()
}

/// Stops `dev` with SIGINT; asserts it exits 0 and none of `children` remains.
fn stop_and_check(dev: &mut Dev, children: &[u32]) {
    let status = dev.interrupt();
    assert_eq!(status.code(), Some(0), "ringkv dev after SIGINT: {status}\n{}", dev.stderr());
    for &pid in children {
        // `ringkv dev` waits for its children, so they are reaped, not zombies.
        // A pid reused by an unrelated process would not be running ringkv.
        if let Some(cmd) = cmdline(pid) {
            assert!(!cmd.contains(RINGKV), "child {pid} ({cmd}) outlived ringkv dev");
        }
    }
    let stderr = dev.stderr();
    assert!(stderr.contains("ringkv dev: stopped"), "{stderr}");
    assert!(!stderr.contains("had to be killed"), "a child did not stop cleanly:\n{stderr}");
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The admin commands against the fresh 3-node cluster, through the router:
/// refusals that change nothing, and a node registered and removed again
/// without a rebalance (so no data moves and the cluster is as it was).
fn admin_commands_through_the_router(addr: &str) {
    let admin = |args: &[&str]| ringkv(addr, &[&["admin"], args].concat());
    let dry_run = admin(&["rebalance", "--dry-run"]);
    expect(&dry_run, 0, "rebalance plan for cluster map epoch ", "dry run of a placed cluster");
    assert!(
        stdout_of(&dry_run).contains("nothing to move: placement already matches the ring"),
        "{dry_run:?}"
    );
    expect(&admin(&["rebalance"]), 0, "nothing to move", "rebalance of a placed cluster");
    expect(&admin(&["rebalance", "status"]), 0, "no rebalance has been committed\n", "rebalance status");
    let pause = admin(&["rebalance", "pause"]);
    expect(&pause, 4, "", "pause without a plan");
    // (Through a router the reason may carry a second "failed precondition: ".)
    let pause_err = stderr_of(&pause);
    assert!(pause_err.starts_with("error: rebalance pause refused: "), "{pause_err:?}");
    assert!(pause_err.ends_with("no rebalance is running\n"), "{pause_err:?}");
    let drain = admin(&["drain", "2"]);
    expect(&drain, 4, "", "drain below the replication factor");
    let drain_err = stderr_of(&drain);
    assert!(drain_err.starts_with("error: drain refused: "), "{drain_err:?}");
    assert!(
        drain_err.contains("cannot drain node 2: the 2 other node(s) cannot hold 3 replicas"),
        "{drain_err:?}"
    );

    // Nothing listens there: node 4 is only registered, never given replicas.
    let nowhere = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    expect(&admin(&["add-node", "4", &nowhere]), 0, "OK node 4 registered as joining", "add-node");
    let status = ringkv(addr, &["status"]);
    let row = ["4", nowhere.as_str(), "joining", "0", "0"];
    let listed = stdout_of(&status).lines().any(|line| line.split_whitespace().eq(row));
    assert!(listed, "no row {row:?} (no replicas, no leaders) in {status:?}");
    let dry_run = admin(&["rebalance", "--dry-run"]);
    expect(&dry_run, 0, "rebalance plan for cluster map epoch ", "dry run with a joining node");
    assert!(stdout_of(&dry_run).contains("node 4 joined"), "{dry_run:?}");
    let removed = admin(&["remove-node", "4"]);
    expect(&removed, 0, "OK node 4 removed (cluster map epoch ", "remove-node of a node holding nothing");
    let unknown = admin(&["remove-node", "4"]);
    expect(&unknown, 5, "", "remove-node of an unknown node");
    let unknown_err = stderr_of(&unknown);
    assert!(unknown_err.starts_with("error: remove-node refused: "), "{unknown_err:?}");
    assert!(unknown_err.ends_with("node 4 is not in the cluster map\n"), "{unknown_err:?}");
    let dry_run = admin(&["rebalance", "--dry-run"]);
    assert!(stdout_of(&dry_run).contains("nothing to move"), "{dry_run:?}");
}

#[test]
fn dev_runs_a_cluster_stops_on_sigint_and_reuses_its_data() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let base = free_base_port();

    let mut dev = Dev::start(&data_dir, base, tmp.path().join("dev-1.stderr"));
    let (endpoint, printed) = dev.wait_for_endpoint();
    let id = cluster_id(&printed, "created");
    assert_eq!(endpoint, Layout { data_dir: data_dir.clone(), base_port: base }.endpoint());

    // The one address every command below uses: the router `ringkv dev` prints
    // as its endpoint.
    let addr = format!("127.0.0.1:{base}");

    expect(&ringkv(&addr, &["put", "session:1", "hello", "--ttl", "30s"]), 0, "OK version=", "put with TTL");
    expect(&ringkv(&addr, &["put", "greeting", "hi there"]), 0, "OK version=", "put");
    expect(&ringkv(&addr, &["get", "session:1"]), 0, "hello\n", "get");
    expect(&ringkv(&addr, &["get", "no-such-key"]), 1, "", "get of a missing key");
    let incr = ringkv(&addr, &["incr", "session:1"]);
    expect(&incr, 4, "", "incr of a non-integer");
    assert!(String::from_utf8_lossy(&incr.stderr).starts_with("error: failed precondition"), "{incr:?}");
    let status = ringkv(&addr, &["status"]);
    expect(&status, 0, &format!("cluster {id}  epoch "), "status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("0 (meta)"), "{status:?}");
    let json = ringkv(&addr, &["status", "--json"]);
    expect(&json, 0, "{", "status --json");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(json["cluster_id"], id.as_str());
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["shard_status"].as_array().map(Vec::len), Some(33), "the meta shard and 32 data shards");
    assert_eq!(json["rebalance"], serde_json::Value::Null, "no rebalance was ever committed");
    assert!(json["shard_status"][0]["replica_status"][0]["approx_bytes"].is_u64(), "{json}");

    admin_commands_through_the_router(&addr);

    let children = children_of(dev.child.id());
    let expected = if ringkv_cli::router::AVAILABLE { 4 } else { 3 };
    assert_eq!(children.len(), expected, "children of ringkv dev: {children:?}");
    for &pid in &children {
        let cmd = cmdline(pid).unwrap_or_default();
        assert!(cmd.contains(" node ") || cmd.contains(" router "), "unexpected child {pid}: {cmd}");
        assert!(cmd.contains("--stop-on-stdin-eof"), "child {pid} would outlive a killed ringkv dev: {cmd}");
    }
    stop_and_check(&mut dev, &children);
    drop(dev);

    // Same directory, same ports: the cluster is reused, not created again.
    let mut dev = Dev::start(&data_dir, base, tmp.path().join("dev-2.stderr"));
    let (_, printed) = dev.wait_for_endpoint();
    assert_eq!(cluster_id(&printed, "reusing"), id, "{printed}");
    expect(&ringkv(&addr, &["get", "greeting"]), 0, "hi there\n", "get after restart");
    let children = children_of(dev.child.id());
    stop_and_check(&mut dev, &children);
}
