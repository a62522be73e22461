//! A harness that runs real ringkv clusters for the integration and chaos tests:
//! each node a separate `ringkv-node` process on an ephemeral loopback port with
//! its own temporary data directory.
//!
//! Cleanup is guaranteed three ways: [`Cluster`]'s `Drop` kills every process and
//! removes the data directories; every node runs with `--stop-on-stdin-eof`, so it
//! exits if the test process dies without running destructors; and every wait in
//! here has a deadline.
//!
//! Nodes keep their port across restarts, since Raft membership records addresses.

pub mod bench;
pub mod chaos;
pub mod checker;
pub mod nemesis;
pub mod workload;

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{
    InitClusterRequest, InitClusterResponse, NodeAddress, NodeStatusRequest, NodeStatusResponse,
};
use tonic::transport::{Channel, Endpoint};

/// A binary built by this package (`ringkv-test-node`, `ringkv-test-router`).
/// Cargo builds a package's binaries before its integration tests and puts them
/// one directory above the test executables (`target/<profile>/deps/..`).
/// (`ringkv-chaos` runs from `target/<profile>` itself, so its siblings are
/// looked up there too.)
pub fn test_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let beside = exe.parent().map(|dir| dir.join(&file));
    let above = exe.parent().and_then(Path::parent).map(|dir| dir.join(&file));
    [above, beside]
        .into_iter()
        .flatten()
        .find(|bin| bin.exists())
        .unwrap_or_else(|| panic!("{file} not built next to {}; build the tests package", exe.display()))
}

/// One node or router process (running or not), always on the same address.
pub struct Process {
    /// Node id; for routers, 1000 + the router's index.
    pub id: u64,
    pub addr: String,
    /// The node's data directory (unused by routers).
    pub data_dir: PathBuf,
    bin: &'static str,
    log_path: PathBuf,
    args: Vec<String>,
    /// Extra environment variables (e.g. `RUST_LOG`), set after the defaults.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// A node process.
pub type NodeProcess = Process;

/// Picks a free loopback port. The port is released before the node binds it;
/// the kernel does not hand a just-released ephemeral port out again at once.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

impl Process {
    fn node(id: u64, root: &Path, extra: &[String]) -> Process {
        let data_dir = root.join(format!("node-{id}"));
        let mut args = vec!["--id".to_string(), id.to_string(), "--data-dir".to_string()];
        args.push(data_dir.to_string_lossy().into_owned());
        args.extend_from_slice(extra);
        Process {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            log_path: root.join(format!("node-{id}.log")),
            data_dir,
            bin: "ringkv-test-node",
            args,
            env: Vec::new(),
            child: None,
        }
    }

    /// A router process that learns the cluster from `nodes`.
    pub fn router(index: u64, root: &Path, nodes: &[String]) -> Process {
        Process {
            id: 1000 + index,
            addr: format!("127.0.0.1:{}", free_port()),
            log_path: root.join(format!("router-{index}.log")),
            data_dir: PathBuf::new(),
            bin: "ringkv-test-router",
            args: vec!["--nodes".into(), nodes.join(",")],
            env: Vec::new(),
            child: None,
        }
    }

    fn spawn(&mut self) -> Child {
        let log = File::options().create(true).append(true).open(&self.log_path).expect("open node log file");
        Command::new(test_bin(self.bin))
            .args(["--listen", &self.addr, "--stop-on-stdin-eof"])
            .args(&self.args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin))
    }

    /// Adds command-line flags for the next start (e.g. restart a stopped
    /// node with `--metrics-listen`).
    pub fn add_args(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|arg| arg.to_string()));
    }

    /// Sets an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Starts the process and waits (up to 30 s) until it accepts connections.
    /// Panics with the node's log if it exits or never listens.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let mut child = self.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node {} exited during start ({status}):\n{}", self.id, self.log());
            }
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not listen on {} within 30 s:\n{}", self.id, self.addr, self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    /// Starts the process expecting it to fail; returns its exit status and log.
    pub async fn start_expecting_failure(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} kept running; expected it to fail:\n{}", self.id, self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the process gets no chance to flush or hand anything off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process dies of SIGKILL too; no SIGCONT needed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: closes the node's stdin (it runs with `--stop-on-stdin-eof`)
    /// and waits up to 20 s, then kills.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process was started and has exited on its own
    /// (a crash: nothing in the harness stops a process without forgetting it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// SIGSTOP: the process freezes (timers, sockets and all) until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill").args([signal, &child.id().to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill {signal} {} failed", child.id());
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A lazily connecting channel to this node.
    pub fn channel(&self) -> Channel {
        cached_channel(&self.addr).expect("valid endpoint")
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel())
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel())
    }

    pub async fn status(&self) -> Result<NodeStatusResponse, tonic::Status> {
        self.admin().node_status(NodeStatusRequest {}).await.map(|r| r.into_inner())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A set of node processes sharing one temporary directory.
pub struct Cluster {
    pub nodes: Vec<Process>,
    pub routers: Vec<Process>,
    // Dropped after the processes (field order), so they die before their files go.
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` empty nodes (ids 1..=n) with extra `ringkv-node` flags.
    pub async fn start(n: u64, args: &[&str]) -> Cluster {
        Cluster::start_with_env(n, args, &[]).await
    }

    /// Starts `n` empty nodes (ids 1..=n) with extra flags and environment
    /// variables.
    pub async fn start_with_env(n: u64, args: &[&str], env: &[(&str, &str)]) -> Cluster {
        let root = tempfile::Builder::new().prefix("ringkv-test-").tempdir().expect("temp dir");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut nodes: Vec<Process> = (1..=n).map(|id| Process::node(id, root.path(), &args)).collect();
        for node in &mut nodes {
            for (name, value) in env {
                node.set_env(name, value);
            }
            node.start().await;
        }
        Cluster { nodes, routers: Vec::new(), root }
    }

    /// `nodes` empty nodes formed into a cluster of `shards` shards, 3 replicas
    /// each, every shard led, and one router; returns the cluster, the shard
    /// leaders and the router's address.
    pub async fn with_router(
        nodes: u64,
        shards: u32,
    ) -> (Cluster, std::collections::BTreeMap<u32, u64>, String) {
        let mut cluster = Cluster::start(nodes, &[]).await;
        cluster.init(shards, 3).await.expect("cluster init");
        let leaders = cluster.wait_for_leaders(shards, Duration::from_secs(30)).await;
        let index = cluster.start_router().await;
        let router = cluster.routers[index].addr.clone();
        (cluster, leaders, router)
    }

    /// `cluster init` over every node, sent to node 1.
    pub async fn init(&self, shards: u32, replicas: u32) -> Result<InitClusterResponse, tonic::Status> {
        let req = InitClusterRequest {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeAddress { id: n.id, addr: n.addr.clone(), state: String::new() })
                .collect(),
            shards,
            replicas,
        };
        self.nodes[0].admin().init_cluster(req).await.map(|r| r.into_inner())
    }

    /// Starts a router over every node; returns its index in `routers`.
    pub async fn start_router(&mut self) -> usize {
        self.start_router_with(&[], &[]).await
    }

    /// Starts a router over every node with extra flags and environment
    /// variables; returns its index in `routers`.
    pub async fn start_router_with(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        let mut router = Process::router(self.routers.len() as u64, self.root.path(), &self.addrs());
        router.add_args(args);
        for (name, value) in env {
            router.set_env(name, value);
        }
        router.start().await;
        self.routers.push(router);
        self.routers.len() - 1
    }

    /// Starts a new empty node (the next id) with `--join seed` and extra
    /// flags; returns its id. It registers itself as joining.
    pub async fn add_node(&mut self, seed: &str, args: &[&str]) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let mut extra: Vec<String> = vec!["--join".into(), seed.into()];
        extra.extend(args.iter().map(|s| s.to_string()));
        let mut node = Process::node(id, self.root.path(), &extra);
        node.start().await;
        self.nodes.push(node);
        id
    }

    /// Stops node `id` for good and forgets it (after it left the cluster).
    pub fn remove_node(&mut self, id: u64) {
        self.nodes.retain(|n| n.id != id);
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn node(&mut self, id: u64) -> &mut Process {
        self.nodes.iter_mut().find(|n| n.id == id).expect("no such node")
    }

    /// Waits until every shard in `0..=shards` has a leader among the running
    /// nodes; returns shard → leader node id.
    pub async fn wait_for_leaders(
        &self,
        shards: u32,
        timeout: Duration,
    ) -> std::collections::BTreeMap<u32, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = std::collections::BTreeMap::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Ok(status) = node.status().await {
                    for shard in status.leading {
                        leaders.insert(shard, node.id);
                    }
                }
            }
            if (0..=shards).all(|s| leaders.contains_key(&s)) {
                return leaders;
            }
            assert!(
                Instant::now() < deadline,
                "shards without a leader after {timeout:?}: {:?}",
                (0..=shards).filter(|s| !leaders.contains_key(s)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs of every node, for failure messages.
    pub fn logs(&self) -> String {
        let nodes = self.nodes.iter().map(|n| format!("--- node {} ---\n{}\n", n.id, n.log()));
        let routers = self.routers.iter().map(|r| format!("--- router {} ---\n{}\n", r.id, r.log()));
        nodes.chain(routers).collect()
    }
}

/// A KV request for [`Cluster::call`].
#[derive(Debug, Clone)]
pub enum KvRequest {
    Get(ringkv_proto::v1::GetRequest),
    Put(ringkv_proto::v1::PutRequest),
    Delete(ringkv_proto::v1::DeleteRequest),
    Touch(ringkv_proto::v1::TouchRequest),
    Increment(ringkv_proto::v1::IncrementRequest),
}

/// The reply to a [`KvRequest`].
#[derive(Debug, Clone)]
pub enum KvReply {
    Get(ringkv_proto::v1::GetResponse),
    Put(ringkv_proto::v1::PutResponse),
    Delete(ringkv_proto::v1::DeleteResponse),
    Touch(ringkv_proto::v1::TouchResponse),
    Increment(ringkv_proto::v1::IncrementResponse),
}

/// A cached lazy channel per address (channels reconnect by themselves after a
/// node restarts).
fn cached_channel(addr: &str) -> Result<Channel, tonic::Status> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let mut channels = CHANNELS.get_or_init(Default::default).lock().expect("channel cache lock");
    if let Some(channel) = channels.get(addr) {
        return Ok(channel.clone());
    }
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        // Above the router's own 10 s request deadline, so that its answer, not
        // this channel's timeout, is what a test sees.
        .timeout(Duration::from_secs(15))
        .connect_lazy();
    channels.insert(addr.to_string(), channel.clone());
    Ok(channel)
}

/// Sends one KV request to the node at `addr`.
pub async fn send(addr: &str, req: KvRequest) -> Result<KvReply, tonic::Status> {
    let mut kv = KvClient::new(cached_channel(addr)?);
    Ok(match req {
        KvRequest::Get(r) => KvReply::Get(kv.get(r).await?.into_inner()),
        KvRequest::Put(r) => KvReply::Put(kv.put(r).await?.into_inner()),
        KvRequest::Delete(r) => KvReply::Delete(kv.delete(r).await?.into_inner()),
        KvRequest::Touch(r) => KvReply::Touch(kv.touch(r).await?.into_inner()),
        KvRequest::Increment(r) => KvReply::Increment(kv.increment(r).await?.into_inner()),
    })
}

/// The `NotLeader` detail of a status, if it carries one.
pub fn not_leader(status: &tonic::Status) -> Option<ringkv_proto::v1::NotLeader> {
    use prost::Message;
    match ringkv_proto::v1::ErrorDetail::decode(status.details()).ok()?.kind? {
        ringkv_proto::v1::error_detail::Kind::NotLeader(nl) => Some(nl),
        _ => None,
    }
}

impl Cluster {
    /// Sends `req` to the running nodes, following `NotLeader` hints and retrying
    /// through elections and dead nodes, until it gets an answer that is not a
    /// redirect or `UNAVAILABLE`, or `timeout` passes. The harness's own router:
    /// deliberately independent of the client library under test.
    ///
    /// Retrying a write after `UNAVAILABLE` is safe here only because the tests
    /// that use it tolerate a write applied twice (same key, same value).
    pub async fn call(&self, req: KvRequest, timeout: Duration) -> Result<KvReply, tonic::Status> {
        let deadline = Instant::now() + timeout;
        let running: Vec<String> =
            self.nodes.iter().filter(|n| n.is_running()).map(|n| n.addr.clone()).collect();
        let mut target = running.first().cloned().expect("no running node");
        let mut next = 0usize;
        loop {
            let result = send(&target, req.clone()).await;
            let retry_at = match &result {
                Err(status) if status.code() == tonic::Code::FailedPrecondition => match not_leader(status) {
                    Some(nl) if !nl.leader_addr.is_empty() && running.contains(&nl.leader_addr) => {
                        Some(nl.leader_addr)
                    }
                    Some(_) => None,
                    None => return result,
                },
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                    ) =>
                {
                    None
                }
                _ => return result,
            };
            if Instant::now() > deadline {
                return result;
            }
            target = match retry_at {
                Some(addr) => addr,
                None => {
                    // Election under way or node down: try the next node shortly.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    next = (next + 1) % running.len();
                    running[next].clone()
                }
            };
        }
    }
}
