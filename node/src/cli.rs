//! The `ringkv-node` command line: settings (flags, `RINGKV_*` environment
//! variables, a TOML file; see `ringkv_settings`) → [`NodeConfig`], logging
//! setup, and the process lifecycle (bind, serve, stop on SIGINT/SIGTERM).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::NodeConfig;

/// A ringkv node: hosts replicas of many shards, each a Raft group persisted to
/// sled. Starts empty; `ringkv cluster init` gives it its first replicas.
#[derive(Debug, Parser)]
#[command(name = "ringkv-node", version, after_help = ringkv_settings::HELP)]
pub struct NodeArgs {
    /// TOML file of settings: each key is a flag's name without `--`
    /// (`heartbeat-ms = 100`). A flag beats its environment variable, which
    /// beats the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with where it came
    /// from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id: unique in the cluster, never reused, greater than 0.
    #[arg(long)]
    pub id: u64,
    /// Address to listen on for clients and peers (host:port; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub listen: String,
    /// Address peers and clients dial; defaults to the bound listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for the Raft logs, votes and snapshots (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Leader heartbeat in milliseconds (also the AppendEntries timeout).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout in milliseconds.
    #[arg(long, default_value_t = 150)]
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub election_timeout_max_ms: u64,
    /// Snapshot each shard and purge its log every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot for lagging followers.
    #[arg(long, default_value_t = 1_000)]
    pub log_kept_after_snapshot: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = ringkv_core::limits::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Largest request (gRPC message) accepted from clients and routers, in
    /// bytes; larger ones are refused with RESOURCE_EXHAUSTED. At least
    /// --max-value-bytes + 8 KiB [default: the larger of 4 MiB and that]
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// HTTP/2 streams (calls, watches, subscriptions) one connection may have
    /// open at once; more wait for a free one. A router carries all its
    /// clients' streams to a node on one connection: keep this above the
    /// subscriptions and watches one router serves.
    #[arg(long, default_value_t = ringkv_core::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Bytes of keys and values this node may hold (all its replicas); at it,
    /// writes that add data are refused with RESOURCE_EXHAUSTED while reads,
    /// deletes and expiry go on. 0 = no budget. Set it below the memory the
    /// process may use: per-key overhead is not counted.
    #[arg(long, default_value_t = 0)]
    pub memory_budget_bytes: u64,
    /// How long, in ms, a shard remembers a write's request id and result, so
    /// that a client's retry within it applies once. Clients retry writes
    /// relying on it, so it cannot be turned off: 10 s (the client's default
    /// request deadline) to 1 h.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10_000..=3_600_000))]
    pub request_id_retention_ms: u64,
    /// Sliding expiry: a `Get` with `touch_ttl_ms` moves the key's deadline
    /// through Raft only when less than this fraction of `touch_ttl_ms` is left
    /// (higher: fresher deadlines, more proposals). In (0, 1].
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub touch_refresh_fraction: f64,
    /// Change events each shard keeps, so a `Watch` can resume from a version
    /// this far back (older: OUT_OF_RANGE). Memory: about 130 bytes per event
    /// beyond the values still stored.
    #[arg(long, default_value_t = crate::events::DEFAULT_RETAINED_EVENTS)]
    pub watch_retention_events: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port); off when
    /// not given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// Print the bound address as `listening on ADDR` to stdout once serving
    /// (for scripts and tests that listen on port 0).
    #[arg(long)]
    pub print_addr: bool,
    /// Shut down when standard input reaches end-of-file: lets a supervising
    /// process (`ringkv dev`, the test harness) guarantee that its nodes never
    /// outlive it.
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
    /// Register with the cluster reachable at this router or node address at
    /// start (as "joining": it hosts nothing until `ringkv admin rebalance`).
    /// Ignored once the node belongs to a cluster.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// Accept test-only fault injection (network partitions as Raft sees them,
    /// lost write answers) through the Admin service. For chaos tests; never in
    /// production.
    #[arg(long, hide = true)]
    pub enable_test_faults: bool,
    #[command(flatten)]
    pub security: ringkv_security::SecuritySettings,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if value > 0.0 && value <= 1.0 { Ok(value) } else { Err(format!("{value} is not in (0, 1]")) }
}

/// Runs `ringkv-node` with this argument list (program name first): parses the
/// settings, prints them or an error if asked or wrong, else runs the node.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let loaded = match ringkv_settings::parse_or_report::<NodeArgs, _, _>(argv) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Err(err) = loaded.settings.check() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if loaded.settings.print_config {
        print!("{}", ringkv_settings::render(&loaded.effective, SECRET_SETTINGS));
        return ExitCode::SUCCESS;
    }
    run(loaded.settings)
}

/// Settings whose values `--print-config` never shows.
/// (The token settings are file paths, so nothing secret is printed today;
/// this keeps it so should a setting ever hold a secret itself.)
pub const SECRET_SETTINGS: &[&str] = &["-token", "-secret"];

impl NodeArgs {
    /// What no single flag's parser can see: settings that must agree.
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be greater than 0".into());
        }
        if self.heartbeat_ms == 0 {
            return Err("--heartbeat-ms must be greater than 0".into());
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(format!(
                "--election-timeout-min-ms ({}) must be less than --election-timeout-max-ms ({})",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.heartbeat_ms >= self.election_timeout_min_ms {
            return Err(format!(
                "--heartbeat-ms ({}) must be less than --election-timeout-min-ms ({}): followers \
                 would campaign between heartbeats",
                self.heartbeat_ms, self.election_timeout_min_ms
            ));
        }
        let min_request = ringkv_core::limits::min_request_bytes(self.max_value_bytes);
        if let Some(max_request) = self.max_request_bytes
            && max_request < min_request
        {
            return Err(format!(
                "--max-request-bytes ({max_request}) must be at least {min_request}: --max-value-bytes ({}) plus \
                 the longest key and framing",
                self.max_value_bytes
            ));
        }
        if self.snapshot_every_entries == 0 {
            return Err("--snapshot-every-entries must be greater than 0".into());
        }
        if self.watch_retention_events == 0 {
            return Err("--watch-retention-events must be greater than 0".into());
        }
        Ok(())
    }
}

/// Runs the node process to completion.
pub fn run(args: NodeArgs) -> ExitCode {
    init_logging(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(args));
    // Do not wait on a blocking stdin read (or any other stuck blocking task).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: NodeArgs) -> Result<(), String> {
    let security = args.security.load()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let advertise = args.advertise.clone().unwrap_or_else(|| bound.to_string());
    let mut config = NodeConfig::new(args.id, advertise, args.data_dir.clone());
    config.heartbeat_ms = args.heartbeat_ms;
    config.election_timeout_min_ms = args.election_timeout_min_ms;
    config.election_timeout_max_ms = args.election_timeout_max_ms;
    config.snapshot_every_entries = args.snapshot_every_entries;
    config.log_kept_after_snapshot = args.log_kept_after_snapshot;
    config.max_value_bytes = args.max_value_bytes;
    config.request_id_retention_ms = args.request_id_retention_ms;
    config.touch_refresh_fraction = args.touch_refresh_fraction;
    config.watch_retention_events = args.watch_retention_events.max(1);
    config.enable_test_faults = args.enable_test_faults;
    config.join = args.join.clone();
    config.metrics_listen = args.metrics_listen.clone();
    config.security = security;
    config.max_request_bytes = args
        .max_request_bytes
        .unwrap_or_else(|| ringkv_core::limits::default_request_bytes(args.max_value_bytes));
    config.max_streams_per_connection = args.max_streams_per_connection;
    config.memory_budget_bytes = args.memory_budget_bytes;
    if args.print_addr {
        println!("listening on {bound}");
    }
    let stop_on_eof = args.stop_on_stdin_eof;
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stdin_closed(), if stop_on_eof => {}
        }
    };
    crate::server::serve(listener, config, shutdown).await.map_err(|e| e.to_string())
}

/// Resolves when standard input is closed (or unreadable).
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<NodeArgs, clap::Error> {
        let base = ["ringkv-node", "--id", "1", "--listen", "127.0.0.1:0", "--data-dir", "/tmp/x"];
        NodeArgs::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn request_id_retention_cannot_be_turned_off_or_made_shorter_than_a_client_deadline() {
        assert_eq!(parse(&[]).expect("defaults").request_id_retention_ms, 60_000);
        for bad in ["0", "9999", "3600001"] {
            let err = parse(&["--request-id-retention-ms", bad]).expect_err(bad).to_string();
            assert!(err.contains("--request-id-retention-ms"), "{bad}: {err}");
        }
        assert_eq!(
            parse(&["--request-id-retention-ms", "10000"]).expect("min").request_id_retention_ms,
            10_000
        );
    }

    #[test]
    fn touch_refresh_fraction_is_in_zero_one() {
        for bad in ["0", "1.5", "x"] {
            assert!(parse(&["--touch-refresh-fraction", bad]).is_err(), "{bad}");
        }
        assert_eq!(parse(&["--touch-refresh-fraction", "1"]).expect("1").touch_refresh_fraction, 1.0);
    }
}
