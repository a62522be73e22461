//! `ringkv dev`: a whole local cluster from one command, for newcomers and for
//! trying things out.
//!
//! It builds nothing. It starts its own executable three times as `ringkv node`
//! (ids 1–3, ports base+1..base+3, data in `DATA/n1..n3`) and once as `ringkv
//! router` (port base), each a child process with its stdout and stderr appended
//! to `DATA/<name>.log`. Then it forms the cluster and shows progress on stderr:
//!
//! 1. `waiting for nodes… k/3`: asks each node for `NodeStatus` until all answer;
//! 2. `forming cluster…`: `InitCluster` of the three nodes, only if none of them
//!    belongs to a cluster yet. A node's `NodeStatus.cluster_id` is durable, so it
//!    is the marker of "already initialized": a later run reuses the data as it is.
//!    Nodes that disagree (an interrupted first start) are reported, not repaired;
//! 3. `electing leaders… k/n`: polls `ClusterStatus` until every shard, the meta
//!    shard included, has a leader;
//! 4. `starting router…`: until the router answers `ClusterStatus` too.
//!
//! and prints the endpoint and example commands on stdout. On SIGINT or SIGTERM it
//! stops every child and exits 0; if a child exits on its own it reports which,
//! with the end of its log, stops the others and exits with an error.
//!
//! **Children never outlive it.** Each child runs with `--stop-on-stdin-eof` and
//! its stdin is a pipe only this process holds (pipes are close-on-exec, so no
//! sibling inherits it). Stopping closes the pipes and waits up to
//! [`STOP_GRACE`], then kills; and if `ringkv dev` itself is SIGKILLed the kernel
//! closes the pipes, so the children shut down anyway. Children run in their own
//! process group, so a Ctrl-C in the terminal reaches only `ringkv dev`, which
//! then stops them in order instead of racing their own signal handlers.
//!
//! ## Caveats / not done yet
//! - Three nodes and a replication factor of 3, always; `--shards` matters only
//!   on the first run. No way to add a node to a dev cluster yet.
//! - While the router is a stub ([`crate::router::AVAILABLE`] is false) no router
//!   is started and the endpoint is the three node addresses.
//! - A first run interrupted during `cluster init` may leave nodes that belong to
//!   a cluster without a complete cluster map; the fix offered is to remove the
//!   data directory.
//! - Logs grow without rotation.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;
use ringkv_client::{Client, ClientOptions};
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::{ClusterStatusResponse, NodeStatusRequest, NodeStatusResponse};
use tokio::process::{Child, ChildStdin};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use crate::args::DEFAULT_ADDR;
use crate::output::{EXIT_OTHER, Failure};
use crate::router;

/// Nodes of a dev cluster; also its replication factor.
pub const NODES: u64 = 3;
/// How long nodes may take to answer after they are started.
const NODES_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `cluster init` may take (it creates every replica and group).
const INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long every shard may take to have a leader once the cluster exists.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the router may take to answer once the cluster has its leaders.
const ROUTER_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long children get to exit after their stdin is closed before they are
/// killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between two polls of the cluster while it forms.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The arguments of `ringkv dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the nodes keep their data, and the logs (kept across runs: a later
    /// `ringkv dev` reuses the cluster)
    #[arg(long, value_name = "DIR", default_value = "./ringkv-data")]
    pub data_dir: PathBuf,
    /// The router listens on this port, nodes 1-3 on the next three
    #[arg(long, value_name = "PORT", default_value_t = 7000, value_parser = parse_base_port)]
    pub base_port: u16,
    /// Data shards of a new cluster (ignored when reusing one)
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,
}

fn parse_base_port(s: &str) -> Result<u16, String> {
    let max = u16::MAX - NODES as u16;
    match s.trim().parse::<u16>() {
        Ok(port) if (1..=max).contains(&port) => Ok(port),
        _ => Err(format!("`{s}` is not a port from 1 to {max} (the nodes use the next {NODES})")),
    }
}

/// Where the processes of one `ringkv dev` listen and keep their files.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub base_port: u16,
}

impl Layout {
    pub fn node_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", u64::from(self.base_port) + id)
    }

    pub fn node_addrs(&self) -> Vec<String> {
        (1..=NODES).map(|id| self.node_addr(id)).collect()
    }

    pub fn router_addr(&self) -> String {
        format!("127.0.0.1:{}", self.base_port)
    }

    /// What clients should dial: the router, or the nodes while there is none.
    pub fn endpoint(&self) -> String {
        if router::AVAILABLE { self.router_addr() } else { self.node_addrs().join(",") }
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("n{id}"))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{name}.log"))
    }
}

/// Runs `ringkv dev` to completion.
pub fn run(args: DevArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    match runtime.block_on(dev(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprint!("{}", failure.render());
            ExitCode::from(failure.exit)
        }
    }
}

/// What ended a wait on the cluster.
enum Event<T> {
    Done(T),
    /// The child at this index exited on its own.
    Exited(usize, io::Result<ExitStatus>),
    Stop,
}

async fn dev(args: DevArgs) -> Result<(), Failure> {
    // First, so that a Ctrl-C from now on is ours to handle.
    let mut stop = StopSignal::register()?;
    let layout = Layout { data_dir: args.data_dir, base_port: args.base_port };
    check_ports_free(&layout)?;
    for id in 1..=NODES {
        let dir = layout.node_dir(id);
        fs::create_dir_all(&dir)
            .map_err(|err| Failure::new(EXIT_OTHER, format!("cannot create {}: {err}", dir.display())))?;
    }
    let exe = std::env::current_exe()
        .map_err(|err| Failure::new(EXIT_OTHER, format!("cannot find the ringkv executable: {err}")))?;

    let router_part = if router::AVAILABLE { " and a router" } else { "" };
    eprintln!(
        "ringkv dev: starting {NODES} nodes{router_part}; data and logs in {}",
        layout.data_dir.display()
    );
    let mut children = Children::default();
    if let Err(failure) = start_all(&mut children, &exe, &layout) {
        children.stop().await;
        return Err(failure);
    }

    let mut progress = Progress::new();
    let event = tokio::select! {
        // Not cancel safe, and need not be: dropped only when everything stops.
        // A `cluster init` cut short this way is the caveat in the module docs.
        formed = form(&layout, args.shards, &mut progress) => Event::Done(formed),
        // Cancel safe: `Child::wait` is, and so is selecting over several.
        (index, status) = children.first_exit() => Event::Exited(index, status),
        () = stop.recv() => Event::Stop,
    };
    progress.clear();
    let outcome = match event {
        Event::Done(Ok(formed)) => {
            print_ready(&layout, &formed);
            let exited = tokio::select! {
                exited = children.first_exit() => Some(exited),
                () = stop.recv() => None,
            };
            match exited {
                Some((index, status)) => Err(children.died(index, status)),
                None => Ok(()),
            }
        }
        Event::Done(Err(failure)) => Err(failure),
        Event::Exited(index, status) => Err(children.died(index, status)),
        Event::Stop => Ok(()),
    };

    eprintln!("ringkv dev: stopping…");
    let killed = children.stop().await;
    if !killed.is_empty() {
        eprintln!(
            "warning: {} did not stop within {} s and had to be killed",
            killed.join(", "),
            STOP_GRACE.as_secs()
        );
    }
    if outcome.is_ok() {
        eprintln!("ringkv dev: stopped; data kept in {}", layout.data_dir.display());
    }
    outcome
}

/// Fails early, with a clear message, when a port is taken (instead of a node
/// dying with "address in use" in its log).
fn check_ports_free(layout: &Layout) -> Result<(), Failure> {
    let mut addrs = layout.node_addrs();
    if router::AVAILABLE {
        addrs.insert(0, layout.router_addr());
    }
    for addr in addrs {
        if let Err(err) = TcpListener::bind(&addr) {
            return Err(Failure::usage(format!("cannot listen on {addr}: {err}")).with_hint(
                "another `ringkv dev` or cluster may be running; stop it, or choose other ports with \
                 --base-port",
            ));
        }
    }
    Ok(())
}

fn start_all(children: &mut Children, exe: &Path, layout: &Layout) -> Result<(), Failure> {
    for id in 1..=NODES {
        let listen = layout.node_addr(id);
        let data_dir = layout.node_dir(id).display().to_string();
        let args = ["node", "--id", &id.to_string(), "--listen", &listen, "--data-dir", &data_dir];
        children.start(exe, format!("node {id}"), &args, layout.log(&format!("n{id}")))?;
    }
    if router::AVAILABLE {
        let (listen, nodes) = (layout.router_addr(), layout.node_addrs().join(","));
        children.start(
            exe,
            "router".into(),
            &["router", "--listen", &listen, "--nodes", &nodes],
            layout.log("router"),
        )?;
    }
    Ok(())
}

/// One started child process.
struct Process {
    name: String,
    log: PathBuf,
    child: Child,
    /// The write end of the child's stdin; dropping it asks the child to stop.
    stdin: Option<ChildStdin>,
}

/// The children of `ringkv dev`, nodes first, router last.
#[derive(Default)]
struct Children(Vec<Process>);

impl Children {
    /// Starts `exe args... --stop-on-stdin-eof` with stdout and stderr appended to
    /// `log`.
    fn start(&mut self, exe: &Path, name: String, args: &[&str], log: PathBuf) -> Result<(), Failure> {
        let cannot = |what: &str, err: io::Error| Failure::new(EXIT_OTHER, format!("cannot {what}: {err}"));
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|err| cannot(&format!("open {}", log.display()), err))?;
        writeln!(file, "--- ringkv dev starts {name} ---").map_err(|err| cannot("write the log", err))?;
        let stderr = file.try_clone().map_err(|err| cannot("write the log", err))?;
        let mut command = tokio::process::Command::new(exe);
        // The children are configured by these flags alone: the caller's
        // RINGKV_* variables (the CLI's RINGKV_ADDR or RINGKV_TLS_CA, a
        // production RINGKV_CONFIG) would be settings to a node.
        for (name, _) in std::env::vars_os().filter(|(name, _)| name.to_string_lossy().starts_with("RINGKV_"))
        {
            command.env_remove(name);
        }
        command
            .args(args)
            .arg("--stop-on-stdin-eof")
            // Plain text in the log files, no terminal colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(stderr)
            // Last resort if this process unwinds without stopping its children.
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|err| cannot(&format!("start {name}"), err))?;
        let stdin = child.stdin.take();
        self.0.push(Process { name, log, child, stdin });
        Ok(())
    }

    /// Resolves when any child exits: its index and exit status. Cancel safe.
    async fn first_exit(&mut self) -> (usize, io::Result<ExitStatus>) {
        assert!(!self.0.is_empty(), "ringkv dev always has children while it waits on them");
        let waits = self.0.iter_mut().map(|process| Box::pin(process.child.wait()));
        let (status, index, _) = futures::future::select_all(waits).await;
        (index, status)
    }

    /// The failure to report for a child that exited on its own.
    fn died(&self, index: usize, status: io::Result<ExitStatus>) -> Failure {
        let process = &self.0[index];
        let how = match status {
            Ok(status) => status.to_string(),
            Err(err) => format!("cannot tell how: {err}"),
        };
        let mut message = format!("{} exited unexpectedly ({how})", process.name);
        let tail = log_tail(&process.log, 12);
        if !tail.is_empty() {
            message.push_str(&format!("; the end of {}:\n{}", process.log.display(), tail.trim_end()));
        }
        Failure::new(EXIT_OTHER, message)
            .with_hint("the other processes were stopped; `ringkv dev` restarts them all")
    }

    /// Stops every child: closes all their stdins (they run with
    /// `--stop-on-stdin-eof`), waits up to [`STOP_GRACE`] for all of them, then
    /// kills the rest. Returns the names of those that had to be killed.
    async fn stop(&mut self) -> Vec<String> {
        // Router first (last in the list): it would only log errors about nodes
        // going away. Closing is instant, so all stop together.
        for process in self.0.iter_mut().rev() {
            drop(process.stdin.take());
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut killed = Vec::new();
        for process in &mut self.0 {
            if tokio::time::timeout_at(deadline, process.child.wait()).await.is_err() {
                // `kill` also waits, so no zombie is left behind.
                let _ = process.child.kill().await;
                killed.push(process.name.clone());
            }
        }
        killed
    }
}

/// The last `lines` lines of a log file, indented, reading at most its last
/// 16 KiB.
fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(16 << 10)))?;
        file.read_to_end(&mut text)
    });
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|line| format!("    {line}\n")).collect()
}

/// A cluster that is up.
struct Formed {
    status: ClusterStatusResponse,
    /// Whether the cluster existed before this run.
    reused: bool,
}

/// Waits for the nodes, creates the cluster if it is new, waits for every shard's
/// leader and for the router.
async fn form(layout: &Layout, shards: u32, progress: &mut Progress) -> Result<Formed, Failure> {
    let nodes = wait_for_nodes(layout, progress).await?;
    let clusters: BTreeSet<&str> = nodes.iter().map(|node| node.cluster_id.as_str()).collect();
    let reused = match clusters.into_iter().collect::<Vec<_>>()[..] {
        [""] => false,
        [_] => true,
        _ => {
            let each: Vec<String> = nodes
                .iter()
                .map(|node| match node.cluster_id.as_str() {
                    "" => format!("node {} in none", node.id),
                    id => format!("node {} in {id}", node.id),
                })
                .collect();
            return Err(Failure::new(
                EXIT_OTHER,
                format!(
                    "the nodes in {} belong to different clusters ({})",
                    layout.data_dir.display(),
                    each.join(", ")
                ),
            )
            .with_hint(format!(
                "an earlier first start was probably interrupted; remove {} to start over",
                layout.data_dir.display()
            )));
        }
    };
    if !reused {
        progress.show("forming cluster…");
        let opts = ClientOptions { request_timeout: INIT_TIMEOUT, ..ClientOptions::default() };
        let addrs = layout.node_addrs();
        let client = Client::connect(addrs.clone(), opts).map_err(|err| Failure::from_client(err, &addrs))?;
        let members = (1..=NODES).map(|id| (id, layout.node_addr(id))).collect();
        client.init_cluster(members, shards, NODES as u32).await.map_err(|err| {
            let failure = Failure::from_client(err, &addrs);
            Failure { message: format!("cluster init failed: {}", failure.message), ..failure }
        })?;
    }
    let status = wait_for_leaders(layout, progress).await?;
    if router::AVAILABLE {
        wait_for_router(layout, progress).await?;
    }
    Ok(Formed { status, reused })
}

/// Polls every node's `NodeStatus` until all answer; checks each is the node
/// this layout expects on its port.
async fn wait_for_nodes(
    layout: &Layout,
    progress: &mut Progress,
) -> Result<Vec<NodeStatusResponse>, Failure> {
    let deadline = Instant::now() + NODES_UP_TIMEOUT;
    loop {
        let probes = (1..=NODES).map(|id| node_status(layout.node_addr(id)));
        let answers: Vec<NodeStatusResponse> =
            futures::future::join_all(probes).await.into_iter().flatten().collect();
        progress.show(format!("waiting for nodes… {}/{NODES}", answers.len()));
        if answers.len() == NODES as usize {
            for (id, node) in (1..=NODES).zip(&answers) {
                if node.id != id {
                    return Err(Failure::new(
                        EXIT_OTHER,
                        format!("{} is served by node {}, not node {id}", layout.node_addr(id), node.id),
                    )
                    .with_hint("another cluster uses these ports; choose others with --base-port"));
                }
            }
            return Ok(answers);
        }
        if Instant::now() >= deadline {
            return Err(timed_out(layout, "the nodes did not all answer", NODES_UP_TIMEOUT));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One `NodeStatus` call on a fresh connection; `None` if the node does not
/// answer (yet).
async fn node_status(addr: String) -> Option<NodeStatusResponse> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1));
    let channel = endpoint.connect().await.ok()?;
    AdminClient::new(channel).node_status(NodeStatusRequest {}).await.ok().map(tonic::Response::into_inner)
}

/// Polls `ClusterStatus` until every shard has a leader.
async fn wait_for_leaders(
    layout: &Layout,
    progress: &mut Progress,
) -> Result<ClusterStatusResponse, Failure> {
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    let opts = ClientOptions { request_timeout: Duration::from_secs(2), ..ClientOptions::default() };
    let addrs = layout.node_addrs();
    let client = Client::connect(addrs.clone(), opts).map_err(|err| Failure::from_client(err, &addrs))?;
    loop {
        match client.cluster_status().await {
            Ok(status) => {
                let total = status.shard_status.len();
                let led = status.shard_status.iter().filter(|shard| shard.leader_id != 0).count();
                progress.show(format!("electing leaders… {led}/{total}"));
                if total > 0 && led == total {
                    return Ok(status);
                }
            }
            // The meta shard has no leader yet, or the map is not installed.
            Err(_) => progress.show("electing leaders… (meta shard)"),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(layout, "not every shard elected a leader", LEADERS_TIMEOUT).with_hint(
                format!(
                    "if an earlier first start was interrupted, remove {} to start over",
                    layout.data_dir.display()
                ),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `ClusterStatus` through the router until it answers.
async fn wait_for_router(layout: &Layout, progress: &mut Progress) -> Result<(), Failure> {
    progress.show("starting router…");
    let deadline = Instant::now() + ROUTER_UP_TIMEOUT;
    let opts = ClientOptions { request_timeout: Duration::from_secs(2), ..ClientOptions::default() };
    let addrs = vec![layout.router_addr()];
    let client = Client::connect(addrs.clone(), opts).map_err(|err| Failure::from_client(err, &addrs))?;
    while client.cluster_status().await.is_err() {
        if Instant::now() >= deadline {
            return Err(timed_out(layout, "the router did not answer", ROUTER_UP_TIMEOUT));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

fn timed_out(layout: &Layout, what: &str, after: Duration) -> Failure {
    Failure::new(
        EXIT_OTHER,
        format!("{what} within {} s; the logs are in {}", after.as_secs(), layout.data_dir.display()),
    )
}

/// The lines a newcomer needs once the cluster is up, on stdout. The `endpoint:`
/// line is stable: tests and scripts wait for it.
fn print_ready(layout: &Layout, formed: &Formed) {
    let status = &formed.status;
    let dir = layout.data_dir.display();
    let how = if formed.reused { "reusing cluster" } else { "created cluster" };
    let endpoint = layout.endpoint();
    let mut text = format!(
        "ringkv dev: {how} {} in {dir} ({} nodes, {} shards, {} replicas)\n",
        status.cluster_id,
        status.nodes.len(),
        status.shards,
        status.replicas
    );
    text.push_str(&format!("endpoint: {endpoint}\n"));
    if !router::AVAILABLE {
        text.push_str("  (the nodes themselves: this ringkv has no router yet; clients follow redirects)\n");
    }
    let logs: Vec<String> = (1..=NODES)
        .map(|id| format!("n{id}.log"))
        .chain(router::AVAILABLE.then(|| "router.log".to_string()))
        .collect();
    text.push_str(&format!("logs: {dir}/{{{}}}\n\nTry, in another terminal:\n", logs.join(",")));
    if endpoint != DEFAULT_ADDR {
        text.push_str(&format!("  export RINGKV_ADDR={endpoint}\n"));
    }
    text.push_str("  ringkv put session:1 hello --ttl 30s\n  ringkv get session:1\n  ringkv status\n\n");
    text.push_str(&format!("Ctrl-C stops the cluster; its data stays in {dir} for the next `ringkv dev`.\n"));
    print!("{text}");
    let _ = io::stdout().flush();
}

/// The one-line progress display on stderr: rewritten in place on a terminal,
/// one line per change otherwise (logs, tests).
struct Progress {
    tty: bool,
    shown: String,
}

impl Progress {
    fn new() -> Progress {
        Progress { tty: io::stderr().is_terminal(), shown: String::new() }
    }

    fn show(&mut self, line: impl Into<String>) {
        let line = line.into();
        if line == self.shown {
            return;
        }
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        self.shown = line;
    }

    fn clear(&mut self) {
        if self.tty && !self.shown.is_empty() {
            eprint!("\r\x1b[2K");
            let _ = io::stderr().flush();
        }
        self.shown.clear();
    }
}

/// SIGINT (Ctrl-C) or SIGTERM: the request to stop the cluster.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Installs the handlers; from now on those signals no longer kill the
    /// process.
    fn register() -> Result<StopSignal, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let cannot = |err: io::Error| Failure::new(EXIT_OTHER, format!("cannot handle signals: {err}"));
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt()).map_err(cannot)?,
                terminate: signal(SignalKind::terminate()).map_err(cannot)?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    /// Resolves on the next signal. Cancel safe: `Signal::recv` is.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::EXIT_USAGE;

    #[test]
    fn layout() {
        let layout = Layout { data_dir: "d".into(), base_port: 9000 };
        assert_eq!(layout.node_addrs(), ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
        assert_eq!(layout.router_addr(), "127.0.0.1:9000");
        assert_eq!(layout.node_dir(2), Path::new("d/n2"));
        assert_eq!(layout.log("router"), Path::new("d/router.log"));
        let want =
            if router::AVAILABLE { "127.0.0.1:9000" } else { "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003" };
        assert_eq!(layout.endpoint(), want);
    }

    #[test]
    fn base_ports() {
        assert_eq!(parse_base_port("7000"), Ok(7000));
        assert_eq!(parse_base_port("65532"), Ok(65532));
        for bad in ["0", "65533", "-1", "x", ""] {
            assert!(parse_base_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tail_of_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.log");
        assert_eq!(log_tail(&path, 3), "", "a missing log has no tail");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 3), "    line 18\n    line 19\n    line 20\n");
    }

    #[test]
    fn taken_port_is_a_usage_error_with_a_hint() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        // Node 1 listens on base + 1.
        let layout = Layout { data_dir: "d".into(), base_port: port - 1 };
        let failure = check_ports_free(&layout).unwrap_err();
        assert_eq!(failure.exit, EXIT_USAGE);
        assert!(failure.message.starts_with("cannot listen on 127.0.0.1:"), "{failure:?}");
        assert!(failure.render().contains("--base-port"), "{failure:?}");
    }
}
