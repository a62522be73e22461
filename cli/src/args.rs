//! The `ringkv` command line's arguments (clap) and the parsers of its values:
//! addresses, durations, node lists. Parsing only; running is in
//! [`crate::commands`], [`crate::dev`] and the node and router crates.

use std::collections::HashMap;

use clap::{Args, Parser, Subcommand};
use ringkv_core::limits::MAX_TTL_MS;

use crate::dev::DevArgs;

/// Where client commands connect when neither `--addr` nor `RINGKV_ADDR` says: the
/// router's default listen address, as `ringkv dev` starts it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7000";

const AFTER_HELP: &str = "\
Start here:
  ringkv dev                       run a local 3-node cluster and a router (Ctrl-C stops it)
  ringkv put session:1 hello --ttl 30s
  ringkv get session:1
  ringkv status

DURATION: 30s, 1500ms, 5m, 2h, 1d, or a bare integer of milliseconds; at most ten years.

Output (stdout unless noted):
  get          the raw value, then a newline; with -v, `version=N ttl_ms=M` on stderr
               (ttl_ms=0: no expiry; after --touch, the TTL it left); a missing key
               prints `(not found)` on stderr
  put          `OK version=N`, or `(condition failed) version=N` (the current version,
               0 = absent)
  del          `OK version=N`, `(not found)`, or `(condition failed) version=N`
  touch        `OK ttl_ms=N` (0 = no expiry), or `(not found)`
  incr         the new value; with -v, `version=N` on stderr
  watch        one line per event: `PUT KEY version=N VALUE`, `DELETE KEY version=N`,
               `EXPIRED KEY version=N`
  status       a table of nodes (state, replicas, leaderships) and shards, and a line on
               a running rebalance; with --json one JSON object whose fields are
               those of the Admin.ClusterStatus response (leader_id null: no leader;
               rebalance null: none ever committed)
  cluster init `OK cluster_id=ID epoch=N shards=N replicas=N`
  admin        an `OK ...` line and what to run next; `admin rebalance --dry-run` the plan
               (moves, replicas per node before -> after, data to copy); `admin rebalance
               status` the progress, with --json one JSON object whose fields are those of
               the Admin.RebalanceStatus response (from/to null: none); `admin backup` and
               `admin restore` a line per shard, then `OK ...`

Exit status:
  0  done: found, written, deleted
  1  negative answer: key not found (get, del, touch) or condition failed (put, del)
  2  usage error or invalid argument
  3  unavailable: cannot connect, no quorum or leader, timed out
  4  failed precondition: e.g. incr of a value that is not an integer, cluster already
     initialized, a rebalance already running, removing a node that holds replicas
  5  any other error

Errors print `error: <message>` (and sometimes `hint: ...`) on stderr.
RUST_LOG=debug shows routing and retries.";

const ADMIN_AFTER_HELP: &str = "\
Grow:
  ringkv-node --id 4 --listen 10.0.0.4:7004  start the new node (with its --data-dir)
  ringkv admin add-node 4 10.0.0.4:7004      register it as joining (or start it with --join)
  ringkv admin rebalance --dry-run           review the plan
  ringkv admin rebalance --expected-epoch N  commit exactly that plan
  ringkv admin rebalance status              follow it

Shrink:
  ringkv admin drain 3                       move every replica off node 3
  ringkv admin rebalance status              wait until it says done
  ringkv admin remove-node 3                 then stop the node

Moves copy data while the cluster keeps serving; at most --max-in-flight moves run at
once, and --max-per-node per node.

Back up and restore:
  ringkv admin backup /backups/b1            every shard, consistent per shard, online
  ringkv admin restore /backups/b1 --nodes 1=10.0.1.1:7001,2=...
                                             into new, empty nodes (no `cluster init`)";

/// ringkv: a sharded, Raft-replicated in-memory key-value store.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How client commands reach the cluster; global, so they may come before or
/// after the subcommand (and under their own heading in `--help`, since `dev`
/// ignores them).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// Router or node addresses (host:port), comma-separated; redirects to shard
    /// leaders are followed [default: 127.0.0.1:7000, the router of `ringkv dev`;
    /// for `cluster init`: the first node of --nodes]
    #[arg(
        long,
        global = true,
        env = "RINGKV_ADDR",
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]",
        value_parser = parse_addr
    )]
    pub addr: Vec<String>,

    /// Overall deadline of the command in milliseconds, retries included
    /// [default: 10000; 60000 for `cluster init`]
    #[arg(long, global = true, value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Also print versions and TTLs (on stderr)
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// File holding the bearer token of a cluster that requires one (its KV
    /// token, or its admin token for `admin` and `cluster` commands)
    #[arg(long, global = true, env = "RINGKV_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// CA bundle (PEM file) that signed the cluster's certificates: connect
    /// with TLS and verify them
    #[arg(long, global = true, env = "RINGKV_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// The TLS and token settings these arguments name (files read now).
    pub fn credentials(&self) -> Result<ringkv_client::Credentials, String> {
        ringkv_client::Credentials::from_files(self.token_file.as_deref(), self.tls_ca.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a key (linearizable unless --stale)
    Get {
        /// The key (at most 4 KiB)
        key: String,
        /// Read from any replica's memory: faster, possibly stale
        #[arg(long)]
        stale: bool,
        /// Sliding expiry: also move the key's deadline to at least now + this
        /// (e.g. 30m). Keys without a TTL keep none
        #[arg(long, value_name = "DURATION", conflicts_with = "stale", value_parser = parse_positive_ttl)]
        touch: Option<u64>,
    },
    /// Write a key
    Put {
        /// The key (at most 4 KiB)
        key: String,
        /// The value (use `--` before a value that starts with `-`, unless it is a
        /// number)
        #[arg(allow_negative_numbers = true)]
        value: String,
        /// Time to live, e.g. 30s; 0 or absent = no expiry
        #[arg(long = "ttl", alias = "ttl-ms", value_name = "DURATION", default_value_t = 0,
              hide_default_value = true, allow_negative_numbers = true, value_parser = parse_ttl)]
        ttl_ms: u64,
        /// Write only if the key is absent
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Write only if the key is at exactly this version
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
        /// Request id: the same write sent again with the same id (within the
        /// cluster's retention window, 60 s) applies once and returns the first
        /// result
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Delete a key
    #[command(visible_alias = "delete")]
    Del {
        /// The key
        key: String,
        /// Delete only if the key is at exactly this version
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
        /// Request id: the same write sent again with the same id (within the
        /// cluster's retention window, 60 s) applies once and returns the first
        /// result
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Set a key's time to live without rewriting it
    Touch {
        /// The key
        key: String,
        /// New time to live, e.g. 30s; 0 = stop expiring
        #[arg(long = "ttl", alias = "ttl-ms", value_name = "DURATION", required = true,
              allow_negative_numbers = true, value_parser = parse_ttl)]
        ttl_ms: u64,
        /// Request id: the same write sent again with the same id (within the
        /// cluster's retention window, 60 s) applies once and returns the first
        /// result
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Add DELTA (default 1, may be negative) to a decimal integer; a missing key
    /// counts as 0
    Incr {
        /// The key
        key: String,
        /// What to add
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// Also set a new time to live, e.g. 1m; 0 or absent = keep the key's TTL
        #[arg(long = "ttl", alias = "ttl-ms", value_name = "DURATION", default_value_t = 0,
              hide_default_value = true, allow_negative_numbers = true, value_parser = parse_ttl)]
        ttl_ms: u64,
        /// Request id: the same write sent again with the same id (within the
        /// cluster's retention window, 60 s) applies once and returns the first
        /// result
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Follow the changes to a key (or, with --prefix, to every key with a
    /// prefix, in every shard), one line per event, until interrupted. Resumes
    /// by itself across leader changes and router restarts; with -v, prints
    /// the resume token after each event to stderr (give it to --after)
    Watch {
        /// The key (omit with --prefix)
        #[arg(required_unless_present_any = ["prefix", "after"], conflicts_with = "prefix")]
        key: Option<String>,
        /// Watch the keys that start with this
        #[arg(long)]
        prefix: Option<String>,
        /// The first version to show (a previous line's version + 1 resumes a
        /// key watch); default: from now on
        #[arg(long, value_name = "VERSION", conflicts_with_all = ["prefix", "after"])]
        from: Option<u64>,
        /// Continue exactly after a resume token printed by `watch -v`
        #[arg(long, value_name = "TOKEN", conflicts_with_all = ["key", "prefix"])]
        after: Option<String>,
        /// Stop after this many events
        #[arg(long, value_name = "N")]
        count: Option<usize>,
    },
    /// Publish a message on a pub/sub channel; prints its sequence number
    Publish {
        /// The channel (named like a key)
        channel: String,
        /// The message
        message: String,
        /// Request id: the same publish sent again with the same id (within
        /// the cluster's retention window) publishes once
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Print a channel's messages, one line each ("SEQ MESSAGE"), until
    /// interrupted; resumes by itself across leader changes and restarts
    Subscribe {
        /// The channel
        channel: String,
        /// The first sequence number to show (a previous line's + 1 resumes);
        /// default: from now on
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Stop after this many messages
        #[arg(long, value_name = "N")]
        count: Option<usize>,
    },
    /// Show the cluster: nodes, and each shard's leader, term, applied index, lag and
    /// replicas
    Status(StatusArgs),
    /// Create a cluster or show its state
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Grow, shrink and rebalance the cluster: add, drain and remove nodes, move
    /// replicas and leaderships
    #[command(subcommand, after_help = ADMIN_AFTER_HELP)]
    Admin(AdminCommand),
    /// Run a local cluster for development: 3 nodes and a router, data kept in
    /// --data-dir; Ctrl-C stops it
    Dev(DevArgs),
    /// Run a node (the flags, environment and config file of `ringkv-node`,
    /// parsed by it); `ringkv dev` starts these
    #[command(hide = true, disable_help_flag = true)]
    Node(ServerArgs),
    /// Run a router (the settings of `ringkv-router`, parsed by it); `ringkv dev`
    /// starts one
    #[command(hide = true, disable_help_flag = true)]
    Router(ServerArgs),
}

/// The arguments of `ringkv node` / `ringkv router`, passed untouched to the
/// server's own parser (which also reads its environment variables and config
/// file).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServerArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct StatusArgs {
    /// Print one JSON object (the fields of Admin.ClusterStatus) instead of tables
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum ClusterCommand {
    /// Form a new cluster from empty, running nodes
    Init {
        /// The nodes, as ID=HOST:PORT,... (ids are positive and unique)
        #[arg(long, value_name = "ID=ADDR,...", value_parser = parse_nodes)]
        nodes: NodeList,
        /// Number of data shards (fixed for the cluster's life)
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
        shards: u32,
        /// Replicas per shard (at most the number of nodes)
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: u32,
    },
    /// Same as `ringkv status`
    Status(StatusArgs),
}

/// The operator commands; they go to the meta shard's leader (through the
/// router, or by following redirects), except `backup` and `restore`, which
/// talk to every shard's leader.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum AdminCommand {
    /// Register a new node as joining (`ringkv-node --join` does it itself); it
    /// takes replicas at the next rebalance
    AddNode {
        /// The new node's id (positive, unused)
        #[arg(value_parser = parse_node_id)]
        id: u64,
        /// Where the other nodes reach it (host:port)
        // Its own id: `addr` is the global --addr, and clap would merge the two.
        #[arg(id = "node_addr", value_name = "ADDR", value_parser = parse_addr)]
        addr: String,
    },
    /// Move replicas to where the ring places them (after add-node or drain);
    /// --dry-run shows the plan first
    Rebalance(RebalanceArgs),
    /// Move every replica and leadership off NODE (it keeps serving meanwhile);
    /// then `remove-node` takes it out
    Drain {
        /// The node to empty
        #[arg(value_parser = parse_node_id)]
        node: u64,
        /// Moves running at once across the cluster [default: the nodes', 4]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_in_flight: Option<u32>,
        /// Moves running at once that copy to or from one node [default: the nodes', 2]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_per_node: Option<u32>,
    },
    /// Take a drained node (one that holds no replicas) out of the cluster map
    RemoveNode {
        /// The node to remove
        #[arg(value_parser = parse_node_id)]
        node: u64,
    },
    /// Move SHARD's leadership to NODE, one of its replicas
    TransferLeader {
        /// The shard (0 is the meta shard)
        shard: u32,
        /// The node to lead it
        #[arg(value_parser = parse_node_id)]
        node: u64,
    },
    /// Transfer leaderships until every node leads about as many shards as the
    /// others
    BalanceLeaders,
    /// Write a consistent copy of every data shard (each holds every write
    /// acknowledged before its copy began) to DIR, a new or empty directory:
    /// one file per shard and a manifest with checksums, written last
    Backup {
        /// Where to write the backup (created if missing; must be empty)
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Build a new cluster from the backup in DIR: verify every file first,
    /// then `cluster init` the given empty nodes with the backup's shard
    /// layout and load every shard through Raft
    Restore {
        /// The backup directory (`admin backup` wrote it)
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
        /// The new cluster's nodes, started empty: ID=HOST:PORT,...
        #[arg(long, value_parser = parse_nodes)]
        nodes: NodeList,
        /// Replicas per shard [default: the backup's]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: Option<u32>,
    },
}

/// `admin rebalance`: either commit a plan (with its limits), print it
/// (`--dry-run`), or act on the running one (a subcommand).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RebalanceArgs {
    #[command(subcommand)]
    pub action: Option<RebalanceAction>,

    /// Print the plan (moves, per-node totals, data to copy) and change nothing
    #[arg(long, conflicts_with_all = ["max_in_flight", "max_per_node", "expected_epoch"])]
    pub dry_run: bool,

    /// Moves running at once across the cluster [default: the nodes', 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: Option<u32>,

    /// Moves running at once that copy to or from one node [default: the nodes', 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_node: Option<u32>,

    /// Commit only if the cluster map is still at this epoch, i.e. exactly the
    /// plan a --dry-run printed
    #[arg(long, value_name = "EPOCH")]
    pub expected_epoch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum RebalanceAction {
    /// Show the running (or last) rebalance: progress, and the moves not done
    Status {
        /// Print one JSON object (the fields of Admin.RebalanceStatus) instead
        #[arg(long)]
        json: bool,
    },
    /// Let the moves in flight finish and start no new ones
    Pause,
    /// Start moves again after a pause
    Resume,
    /// Stop the plan: no move starts any more, and moves in flight stop after
    /// their current step
    Abort,
}

impl RebalanceAction {
    /// The action's name in Admin.ControlRebalance (`None` for `status`).
    pub fn control(self) -> Option<&'static str> {
        match self {
            RebalanceAction::Status { .. } => None,
            RebalanceAction::Pause => Some("pause"),
            RebalanceAction::Resume => Some("resume"),
            RebalanceAction::Abort => Some("abort"),
        }
    }
}

/// The `--nodes` of `cluster init`: (id, address) pairs in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<(u64, String)>);

/// Parses `HOST:PORT`; the host may be a name, an IPv4 or a bracketed IPv6 address.
pub fn parse_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` is not HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host (expected HOST:PORT)"));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(s.to_string()),
        _ => Err(format!("`{s}` has no valid port (expected HOST:PORT, port 1-65535)")),
    }
}

/// Parses a DURATION into milliseconds: an unsigned integer with an optional unit,
/// `ms`, `s`, `m`, `h` or `d`; no unit means milliseconds (what `--ttl-ms` took, so
/// the alias keeps its meaning).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    const FORM: &str = "expected e.g. 30s, 1500ms, 5m, 2h, 1d, or milliseconds";
    let text = s.trim();
    if text.starts_with('-') {
        return Err(format!("`{s}` is negative; {FORM}"));
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("`{s}` is not a duration; {FORM}"));
    }
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` has an unknown unit `{unit}`; {FORM}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses a TTL DURATION with the same limit as the nodes (ten years).
/// A TTL that must be above 0 (`get --touch`).
pub fn parse_positive_ttl(s: &str) -> Result<u64, String> {
    match parse_ttl(s)? {
        0 => Err("must be more than 0".into()),
        ttl_ms => Ok(ttl_ms),
    }
}

pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let ttl_ms = parse_duration_ms(s)?;
    match i64::try_from(ttl_ms) {
        Ok(ttl_ms) if ttl_ms <= MAX_TTL_MS => Ok(ttl_ms as u64),
        _ => Err(format!("`{s}` is over the TTL limit of ten years")),
    }
}

/// Parses a node id: a positive integer (0 means "no node" on the wire).
pub fn parse_node_id(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("node id 0 is reserved; ids start at 1".to_string()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("`{s}` is not a node id (a positive integer)")),
    }
}

/// Parses `ID=HOST:PORT[,ID=HOST:PORT...]`: ids positive and unique, addresses
/// unique.
pub fn parse_nodes(s: &str) -> Result<NodeList, String> {
    const FORM: &str = "expected ID=HOST:PORT[,ID=HOST:PORT...]";
    let mut nodes = Vec::new();
    let mut ids = HashMap::new();
    let mut addrs = HashMap::new();
    for entry in s.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!("empty entry in `{s}`; {FORM}"));
        }
        let Some((id, addr)) = entry.split_once('=') else {
            return Err(format!("`{entry}` has no `=`; {FORM}"));
        };
        let id = match id.trim().parse::<u64>() {
            Ok(0) => return Err(format!("`{entry}`: node id 0 is reserved; ids start at 1")),
            Ok(id) => id,
            Err(_) => {
                return Err(format!("`{entry}`: `{id}` is not a node id (a positive integer)"));
            }
        };
        if addr.trim().is_empty() {
            return Err(format!("`{entry}`: node {id} has no address"));
        }
        let addr = parse_addr(addr).map_err(|err| format!("node {id}: {err}"))?;
        if ids.insert(id, ()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
        if let Some(other) = addrs.insert(addr.clone(), id) {
            return Err(format!("address {addr} is listed twice (nodes {other} and {id})"));
        }
        nodes.push((id, addr));
    }
    Ok(NodeList(nodes))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringkv").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap_or_else(|err| panic!("{args:?}: {err}")).command
    }

    fn parse_error(args: &[&str]) -> String {
        match parse(args) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn get() {
        assert!(
            matches!(command(&["get", "k"]), Command::Get { key, stale: false, touch: None } if key == "k")
        );
        assert!(matches!(command(&["get", "k", "--stale"]), Command::Get { stale: true, .. }));
        assert!(matches!(
            command(&["get", "k", "--touch", "30m"]),
            Command::Get { touch: Some(1_800_000), .. }
        ));
        assert!(matches!(
            command(&["watch", "k", "--from", "7", "--count", "2"]),
            Command::Watch { key: Some(k), prefix: None, from: Some(7), count: Some(2), .. } if k == "k"
        ));
        assert!(matches!(
            command(&["watch", "--prefix", "user:"]),
            Command::Watch { key: None, prefix: Some(p), .. } if p == "user:"
        ));
        assert!(parse_error(&["watch", "--prefix", "user:", "--from", "3"]).contains("--from"));
        assert!(matches!(
            command(&["subscribe", "room", "--from", "9"]),
            Command::Subscribe { from: Some(9), .. }
        ));
        assert!(matches!(command(&["publish", "room", "hi"]), Command::Publish { .. }));
        assert!(matches!(
            command(&["incr", "n", "--request-id", "r1"]),
            Command::Incr { request_id: Some(id), .. } if id == "r1"
        ));
        assert!(parse_error(&["get"]).contains("KEY"));
    }

    #[test]
    fn global_options_and_addresses() {
        let cli = parse(&["--addr", "a:1,b:2", "-v", "get", "k", "--timeout-ms", "50"]).unwrap();
        assert_eq!(cli.client.addr, vec!["a:1", "b:2"]);
        assert!(cli.client.verbose);
        assert_eq!(cli.client.timeout_ms, Some(50));
        assert!(parse_error(&["--addr", "nohost", "get", "k"]).contains("HOST:PORT"));
        assert!(parse_error(&["--addr", "a:0", "get", "k"]).contains("port"));
        assert!(parse_error(&["--addr", "a:1,", "get", "k"]).contains("HOST:PORT"));
        assert_eq!(parse_addr("[::1]:7001"), Ok("[::1]:7001".to_string()));
    }

    #[test]
    fn durations() {
        let cases = [
            ("0", 0),
            ("1500", 1500),
            ("1500ms", 1500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            (" 7s ", 7_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration_ms(text), Ok(want), "{text:?}");
            assert_eq!(parse_ttl(text), Ok(want), "{text:?}");
        }
        let bad = [
            ("-1", "negative"),
            ("-5s", "negative"),
            ("", "not a duration"),
            ("s", "not a duration"),
            ("1.5s", "unknown unit `.5s`"),
            ("1e3", "unknown unit `e3`"),
            ("10 s", "unknown unit ` s`"),
            ("3w", "unknown unit `w`"),
            ("1S", "unknown unit `S`"),
            ("99999999999999999999", "too long"),
            ("999999999999999999d", "too long"),
        ];
        for (text, want) in bad {
            let err = parse_duration_ms(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err:?} does not say {want:?}");
        }
        assert_eq!(parse_ttl("3650d"), Ok(MAX_TTL_MS as u64));
        assert!(parse_ttl("3651d").unwrap_err().contains("ten years"));
        assert!(parse_ttl("315360000001").unwrap_err().contains("ten years"));
    }

    #[test]
    fn put() {
        assert!(matches!(
            command(&["put", "k", "v"]),
            Command::Put { key, value, ttl_ms: 0, if_absent: false, if_version: None, request_id: None }
                if key == "k" && value == "v"
        ));
        assert!(matches!(
            command(&["put", "k", "v", "--ttl", "30s", "--if-version", "7"]),
            Command::Put { ttl_ms: 30_000, if_absent: false, if_version: Some(7), .. }
        ));
        // The old flag stays as a hidden alias, still in milliseconds.
        assert!(matches!(command(&["put", "k", "v", "--ttl-ms", "1500"]), Command::Put { ttl_ms: 1500, .. }));
        assert!(matches!(
            command(&["put", "k", "v", "--if-absent"]),
            Command::Put { if_absent: true, if_version: None, .. }
        ));
        assert!(
            parse_error(&["put", "k", "v", "--if-absent", "--if-version", "1"])
                .contains("cannot be used with")
        );
        assert!(parse_error(&["put", "k"]).contains("VALUE"));
        assert!(parse_error(&["put", "k", "v", "--ttl", "-1"]).contains("negative"));
        assert!(parse_error(&["put", "k", "v", "--ttl-ms", "1e3"]).contains("unknown unit"));
        assert!(parse_error(&["touch", "k", "--ttl", "315360000001"]).contains("ten years"));
        assert!(matches!(command(&["put", "k", "-5"]), Command::Put { value, .. } if value == "-5"));
    }

    #[test]
    fn del_touch_incr() {
        assert!(matches!(command(&["del", "k"]), Command::Del { if_version: None, .. }));
        assert!(matches!(
            command(&["delete", "k", "--if-version", "3"]),
            Command::Del { if_version: Some(3), .. }
        ));
        assert!(matches!(command(&["touch", "k", "--ttl", "0"]), Command::Touch { ttl_ms: 0, .. }));
        assert!(matches!(command(&["touch", "k", "--ttl", "2h"]), Command::Touch { ttl_ms: 7_200_000, .. }));
        assert!(matches!(
            command(&["touch", "k", "--ttl-ms", "60000"]),
            Command::Touch { ttl_ms: 60_000, .. }
        ));
        assert!(parse_error(&["touch", "k"]).contains("--ttl <DURATION>"));
        assert!(matches!(command(&["incr", "c"]), Command::Incr { delta: 1, ttl_ms: 0, .. }));
        assert!(matches!(
            command(&["incr", "c", "-5", "--ttl", "1m"]),
            Command::Incr { delta: -5, ttl_ms: 60_000, .. }
        ));
        assert!(parse_error(&["incr", "c", "x"]).contains("invalid value"));
    }

    #[test]
    fn status() {
        assert!(matches!(command(&["status"]), Command::Status(StatusArgs { json: false })));
        assert!(matches!(command(&["status", "--json"]), Command::Status(StatusArgs { json: true })));
        assert!(matches!(
            command(&["cluster", "status"]),
            Command::Cluster(ClusterCommand::Status(StatusArgs { json: false }))
        ));
        assert!(matches!(
            command(&["cluster", "status", "--json"]),
            Command::Cluster(ClusterCommand::Status(StatusArgs { json: true }))
        ));
    }

    #[test]
    fn cluster_init() {
        assert_eq!(
            match command(&["cluster", "init", "--nodes", "1=127.0.0.1:7001, 2=h:7002,3=h:7003"]) {
                Command::Cluster(init) => init,
                other => panic!("{other:?}"),
            },
            ClusterCommand::Init {
                nodes: NodeList(vec![
                    (1, "127.0.0.1:7001".into()),
                    (2, "h:7002".into()),
                    (3, "h:7003".into()),
                ]),
                shards: 32,
                replicas: 3,
            }
        );
        assert!(matches!(
            command(&["cluster", "init", "--nodes", "1=a:1", "--shards", "4", "--replicas", "1"]),
            Command::Cluster(ClusterCommand::Init { shards: 4, replicas: 1, .. })
        ));
        assert!(parse_error(&["cluster", "init"]).contains("--nodes"));
        assert!(parse_error(&["cluster", "init", "--nodes", "1=a:1", "--shards", "0"]).contains("0"));
    }

    fn admin(args: &[&str]) -> AdminCommand {
        match command(&[&["admin"], args].concat()) {
            Command::Admin(admin) => admin,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn rebalance(args: &[&str]) -> RebalanceArgs {
        match admin(&[&["rebalance"], args].concat()) {
            AdminCommand::Rebalance(rebalance) => rebalance,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn admin_nodes_and_leaders() {
        assert_eq!(
            admin(&["add-node", "4", "10.0.0.4:7004"]),
            AdminCommand::AddNode { id: 4, addr: "10.0.0.4:7004".into() }
        );
        assert_eq!(
            admin(&["drain", "3"]),
            AdminCommand::Drain { node: 3, max_in_flight: None, max_per_node: None }
        );
        assert_eq!(
            admin(&["drain", "3", "--max-in-flight", "1", "--max-per-node", "1"]),
            AdminCommand::Drain { node: 3, max_in_flight: Some(1), max_per_node: Some(1) }
        );
        assert_eq!(admin(&["remove-node", "3"]), AdminCommand::RemoveNode { node: 3 });
        assert_eq!(admin(&["transfer-leader", "0", "2"]), AdminCommand::TransferLeader { shard: 0, node: 2 });
        assert_eq!(admin(&["balance-leaders"]), AdminCommand::BalanceLeaders);
        // Global client options still apply after the subcommand.
        let cli = parse(&["admin", "drain", "3", "--addr", "r:7000", "--timeout-ms", "500"]).unwrap();
        assert_eq!((cli.client.addr, cli.client.timeout_ms), (vec!["r:7000".to_string()], Some(500)));
        // The new node's address is not where the command connects.
        let cli = parse(&["--addr", "r:7000", "admin", "add-node", "4", "n4:7004"]).unwrap();
        assert_eq!(cli.client.addr, vec!["r:7000".to_string()]);
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::AddNode { id: 4, addr }) if addr == "n4:7004"
        ));
        let cli = parse(&["admin", "add-node", "4", "n4:7004"]).unwrap();
        assert!(cli.client.addr.is_empty(), "{:?}", cli.client.addr);

        assert!(parse_error(&["admin", "add-node", "0", "a:1"]).contains("node id 0 is reserved"));
        assert!(parse_error(&["admin", "add-node", "x", "a:1"]).contains("`x` is not a node id"));
        assert!(parse_error(&["admin", "add-node", "4", "nohost"]).contains("HOST:PORT"));
        assert!(parse_error(&["admin", "add-node", "4"]).contains("<ADDR>"));
        assert!(parse_error(&["admin", "drain"]).contains("<NODE>"));
        assert!(parse_error(&["admin", "remove-node", "0"]).contains("node id 0 is reserved"));
        assert!(parse_error(&["admin", "transfer-leader", "-1", "2"]).contains("unexpected argument"));
        assert!(parse_error(&["admin", "transfer-leader", "3"]).contains("<NODE>"));
        assert_eq!(
            parse(&["admin"]).unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }

    #[test]
    fn admin_backup_and_restore() {
        assert_eq!(admin(&["backup", "/tmp/b"]), AdminCommand::Backup { dir: "/tmp/b".into() });
        assert_eq!(
            admin(&["restore", "/tmp/b", "--nodes", "1=a:1,2=b:2"]),
            AdminCommand::Restore {
                dir: "/tmp/b".into(),
                nodes: NodeList(vec![(1, "a:1".into()), (2, "b:2".into())]),
                replicas: None
            }
        );
        assert!(parse_error(&["admin", "backup"]).contains("<DIR>"));
        assert!(parse_error(&["admin", "restore", "/tmp/b"]).contains("--nodes"));
        assert!(
            parse_error(&["admin", "restore", "/tmp/b", "--nodes", "1=a:1", "--replicas", "0"]).contains("0")
        );
    }

    #[test]
    fn admin_rebalance() {
        let commit = RebalanceArgs {
            action: None,
            dry_run: false,
            max_in_flight: None,
            max_per_node: None,
            expected_epoch: None,
        };
        assert_eq!(rebalance(&[]), commit);
        assert_eq!(rebalance(&["--dry-run"]), RebalanceArgs { dry_run: true, ..commit.clone() });
        assert_eq!(
            rebalance(&["--max-in-flight", "8", "--max-per-node", "1", "--expected-epoch", "9"]),
            RebalanceArgs {
                max_in_flight: Some(8),
                max_per_node: Some(1),
                expected_epoch: Some(9),
                ..commit.clone()
            }
        );
        let action = |args: &[&str]| rebalance(args).action;
        assert_eq!(action(&["status"]), Some(RebalanceAction::Status { json: false }));
        assert_eq!(action(&["status", "--json"]), Some(RebalanceAction::Status { json: true }));
        assert_eq!(action(&["pause"]), Some(RebalanceAction::Pause));
        assert_eq!(action(&["resume"]), Some(RebalanceAction::Resume));
        assert_eq!(action(&["abort"]), Some(RebalanceAction::Abort));
        let controls =
            [RebalanceAction::Status { json: true }, RebalanceAction::Pause, RebalanceAction::Abort];
        assert_eq!(controls.map(RebalanceAction::control), [None, Some("pause"), Some("abort")]);

        assert!(
            parse_error(&["admin", "rebalance", "--dry-run", "--max-in-flight", "2"])
                .contains("cannot be used with")
        );
        assert!(parse_error(&["admin", "rebalance", "--max-in-flight", "0"]).contains("0"));
        assert!(parse_error(&["admin", "rebalance", "--max-per-node", "x"]).contains("invalid value"));
        // Limits belong to a commit, not to an action on the running plan.
        assert!(
            parse_error(&["admin", "rebalance", "--max-in-flight", "2", "pause"])
                .contains("cannot be used with")
        );
        assert!(parse_error(&["admin", "rebalance", "--dry-run", "status"]).contains("cannot be used with"));
        assert!(parse_error(&["admin", "rebalance", "pause", "--json"]).contains("unexpected argument"));
        assert!(parse_error(&["admin", "rebalance", "stop"]).contains("unrecognized subcommand"));
    }

    #[test]
    fn bad_nodes_are_explained() {
        let cases = [
            ("1=", "node 1 has no address"),
            ("x=a:1", "`x` is not a node id"),
            ("0=a:1", "node id 0 is reserved"),
            ("1=a:1,1=b:1", "node id 1 is listed twice"),
            ("1=a:1,2=a:1", "address a:1 is listed twice (nodes 1 and 2)"),
            ("1=a:1,,2=b:1", "empty entry"),
            ("a:1", "has no `=`"),
            ("1=a", "node 1: `a` is not HOST:PORT"),
            ("1=a:99999", "no valid port"),
            ("", "empty entry"),
        ];
        for (nodes, want) in cases {
            let err = parse_nodes(nodes).expect_err(nodes);
            assert!(err.contains(want), "{nodes:?}: {err:?} does not say {want:?}");
            let err = parse_error(&["cluster", "init", "--nodes", nodes]);
            assert!(err.contains(want), "{nodes:?}: clap said {err:?}");
        }
    }

    #[test]
    fn dev() {
        let Command::Dev(args) = command(&["dev"]) else { panic!("not dev") };
        assert_eq!(args.data_dir, Path::new("./ringkv-data"));
        assert_eq!((args.base_port, args.shards), (7000, 32));
        let Command::Dev(args) =
            command(&["dev", "--data-dir", "/tmp/d", "--base-port", "9000", "--shards", "4"])
        else {
            panic!("not dev")
        };
        assert_eq!((args.data_dir.as_path(), args.base_port, args.shards), (Path::new("/tmp/d"), 9000, 4));
        assert!(parse_error(&["dev", "--base-port", "65533"]).contains("65532"));
        assert!(parse_error(&["dev", "--base-port", "0"]).contains("65532"));
    }

    #[test]
    fn node_and_router_are_hidden_and_take_their_arguments_untouched() {
        let Command::Node(node) =
            command(&["node", "--id", "2", "--listen", "127.0.0.1:7002", "--stop-on-stdin-eof", "--help"])
        else {
            panic!("not node")
        };
        let args: Vec<&str> = node.args.iter().map(|a| a.to_str().expect("utf-8")).collect();
        assert_eq!(args, ["--id", "2", "--listen", "127.0.0.1:7002", "--stop-on-stdin-eof", "--help"]);
        let Command::Router(router) = command(&["router", "--nodes", "a:1,b:2"]) else {
            panic!("not router")
        };
        assert_eq!(router.args.len(), 2);
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("dev") && !help.contains("Run a node"), "{help}");
    }

    #[test]
    fn help_and_usage_errors_are_not_panics() {
        assert_eq!(parse(&["--help"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse(&[]).unwrap_err().kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        assert_eq!(parse(&["frob"]).unwrap_err().kind(), ErrorKind::InvalidSubcommand);
        assert!(parse(&["--help"]).unwrap_err().to_string().contains("Exit status"));
    }
}
