//! The `ringkv` command line: its arguments (clap), running one command with the
//! client library, and printing the answer in a stable, script-friendly form.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringkv_client::{Client, ClientOptions, Condition, Consistency, Error, PutOptions, PutResult};
use ringkv_proto::v1::{ClusterStatusResponse, InitClusterResponse};

/// Where the CLI connects when neither `--addr` nor `RINGKV_ADDR` says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7001";

/// Exit status: done.
pub const EXIT_OK: u8 = 0;
/// Exit status: an error other than a bad invocation.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad usage or invalid argument (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: a negative answer, not an error: key not found, condition failed.
pub const EXIT_NEGATIVE: u8 = 3;

const AFTER_HELP: &str = "\
Output (stdout unless noted):
  get          the raw value, then a newline; with -v, `version=N ttl_ms=M` on stderr
               (ttl_ms=0: no expiry); a missing key prints `(not found)` on stderr
  put          `OK version=N`, or `(condition failed) version=N` (the current version,
               0 = absent)
  del          `OK version=N`, `(not found)`, or `(condition failed) version=N`
  touch        `OK ttl_ms=N` (0 = no expiry), or `(not found)`
  incr         the new value; with -v, `version=N` on stderr
  cluster init `OK cluster_id=ID epoch=N shards=N replicas=N`

Exit status:
  0  done
  1  error: cluster unreachable, no quorum, timeout, request refused, ...
  2  usage error or invalid argument
  3  negative answer: key not found (get, del, touch) or condition failed (put, del)

Errors print `error: <message>` on stderr. RUST_LOG=debug shows routing and retries.";

/// ringkv: a sharded, Raft-replicated in-memory key-value store.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Node or router addresses (host:port), comma-separated; redirects to shard
    /// leaders are followed [default: 127.0.0.1:7001; for `cluster init`: the first
    /// node of --nodes]
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

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Read a key (linearizable unless --stale)
    Get {
        /// The key (at most 4 KiB)
        key: String,
        /// Read from any replica's memory: faster, possibly stale
        #[arg(long)]
        stale: bool,
    },
    /// Write a key
    Put {
        /// The key (at most 4 KiB)
        key: String,
        /// The value (use `--` before a value that starts with `-`, unless it is a
        /// number)
        #[arg(allow_negative_numbers = true)]
        value: String,
        /// Time to live in milliseconds; 0 = no expiry
        #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = parse_ttl_ms)]
        ttl_ms: u64,
        /// Write only if the key is absent
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Write only if the key is at exactly this version
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
    /// Delete a key
    #[command(visible_alias = "delete")]
    Del {
        key: String,
        /// Delete only if the key is at exactly this version
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
    /// Set a key's time to live without rewriting it
    Touch {
        key: String,
        /// New time to live in milliseconds; 0 = stop expiring
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_ttl_ms)]
        ttl_ms: u64,
    },
    /// Add DELTA (default 1, may be negative) to a decimal integer; a missing key
    /// counts as 0
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// Set a new time to live in milliseconds; 0 = keep the key's TTL
        #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = parse_ttl_ms)]
        ttl_ms: u64,
    },
    /// Create a cluster or show its state
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
    /// Show nodes, and each shard's replicas and leader
    Status,
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

/// Parses a TTL in milliseconds with the same limits as the nodes.
pub fn parse_ttl_ms(s: &str) -> Result<u64, String> {
    let ttl_ms: i64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    ringkv_core::limits::check_ttl(ttl_ms).map_err(|err| err.to_string())
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

/// Why a command failed: the message for `error: ...` and the exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub exit: u8,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let exit = if matches!(err, Error::InvalidArgument(_)) { EXIT_USAGE } else { EXIT_ERROR };
        Failure { exit, message: err.to_string() }
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure { exit: EXIT_ERROR, message: format!("writing output: {err}") }
    }
}

fn usage(message: String) -> Failure {
    Failure { exit: EXIT_USAGE, message }
}

/// Runs one parsed command, printing its answer to `out` (and `-v` details to
/// `err`); returns the exit status of an answer, or the failure.
pub async fn run(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> Result<u8, Failure> {
    let is_init = matches!(cli.command, Command::Cluster(ClusterCommand::Init { .. }));
    let default_timeout_ms = if is_init { 60_000 } else { 10_000 };
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(cli.timeout_ms.unwrap_or(default_timeout_ms)),
        ..ClientOptions::default()
    };
    let mut addrs = cli.addr;
    if addrs.is_empty() {
        addrs = match &cli.command {
            Command::Cluster(ClusterCommand::Init { nodes, .. }) => {
                nodes.0.iter().take(1).map(|(_, addr)| addr.clone()).collect()
            }
            _ => vec![DEFAULT_ADDR.to_string()],
        };
    }
    let client = Client::connect(addrs, opts)?;
    let verbose = cli.verbose;

    match cli.command {
        Command::Get { key, stale } => {
            let consistency = if stale { Consistency::Stale } else { Consistency::Linearizable };
            match client.get(key, consistency).await? {
                Some(got) => {
                    out.write_all(&got.value)?;
                    out.write_all(b"\n")?;
                    if verbose {
                        writeln!(err, "version={} ttl_ms={}", got.version, got.ttl_ms.unwrap_or(0))?;
                    }
                    Ok(EXIT_OK)
                }
                None => {
                    writeln!(err, "(not found)")?;
                    Ok(EXIT_NEGATIVE)
                }
            }
        }
        Command::Put { key, value, ttl_ms, if_absent, if_version } => {
            let condition = match (if_absent, if_version) {
                (true, _) => Condition::IfAbsent,
                (false, Some(version)) => Condition::IfVersion(version),
                (false, None) => Condition::None,
            };
            let put = client.put(key, value, PutOptions { ttl_ms, condition }).await?;
            answer(out, put_line(put))
        }
        Command::Del { key, if_version } => {
            let deleted = client.delete(key, if_version).await?;
            answer(out, delete_line(deleted.deleted, deleted.version))
        }
        Command::Touch { key, ttl_ms } => {
            let touched = client.touch(key, ttl_ms).await?;
            let line = match touched.found {
                true => (format!("OK ttl_ms={}", touched.ttl_ms.unwrap_or(0)), EXIT_OK),
                false => ("(not found)".to_string(), EXIT_NEGATIVE),
            };
            answer(out, line)
        }
        Command::Incr { key, delta, ttl_ms } => {
            let counter = client.increment(key, delta, ttl_ms).await?;
            writeln!(out, "{}", counter.value)?;
            if verbose {
                writeln!(err, "version={}", counter.version)?;
            }
            Ok(EXIT_OK)
        }
        Command::Cluster(ClusterCommand::Init { nodes, shards, replicas }) => {
            if replicas as usize > nodes.0.len() {
                let count = nodes.0.len();
                return Err(usage(format!("--replicas {replicas} is more than the {count} nodes given")));
            }
            let created = client.init_cluster(nodes.0, shards, replicas).await.map_err(|err| match err {
                Error::AlreadyExists(reason) => Failure {
                    exit: EXIT_ERROR,
                    message: format!("cluster init refused: already initialized: {reason}"),
                },
                err => Failure { message: format!("cluster init failed: {err}"), ..err.into() },
            })?;
            answer(out, (init_line(&created), EXIT_OK))
        }
        Command::Cluster(ClusterCommand::Status) => {
            let status = client.cluster_status().await?;
            out.write_all(status_table(&status).as_bytes())?;
            Ok(EXIT_OK)
        }
    }
}

fn answer(out: &mut impl Write, (line, exit): (String, u8)) -> Result<u8, Failure> {
    writeln!(out, "{line}")?;
    Ok(exit)
}

fn put_line(put: PutResult) -> (String, u8) {
    match put.succeeded {
        true => (format!("OK version={}", put.version), EXIT_OK),
        false => (format!("(condition failed) version={}", put.version), EXIT_NEGATIVE),
    }
}

/// A delete that did nothing reports the key's current version: 0 means the key
/// is absent, anything else that `--if-version` did not match.
fn delete_line(deleted: bool, version: u64) -> (String, u8) {
    match (deleted, version) {
        (true, version) => (format!("OK version={version}"), EXIT_OK),
        (false, 0) => ("(not found)".to_string(), EXIT_NEGATIVE),
        (false, version) => (format!("(condition failed) version={version}"), EXIT_NEGATIVE),
    }
}

fn init_line(created: &InitClusterResponse) -> String {
    format!(
        "OK cluster_id={} epoch={} shards={} replicas={}",
        created.cluster_id, created.epoch, created.shards, created.replicas
    )
}

/// The cluster status as aligned tables: a summary line, nodes, then shards (the
/// meta shard is 0; leader `-` while none is known).
fn status_table(status: &ClusterStatusResponse) -> String {
    let mut text = format!(
        "cluster {}  epoch {}  shards {}  replicas {}\n\n",
        status.cluster_id, status.epoch, status.shards, status.replicas
    );
    let nodes: Vec<[String; 2]> =
        status.nodes.iter().map(|node| [node.id.to_string(), node.addr.clone()]).collect();
    text.push_str(&table(["NODE", "ADDRESS"], &nodes));
    text.push('\n');
    let shards: Vec<[String; 3]> = status
        .shard_status
        .iter()
        .map(|shard| {
            let leader = match shard.leader_id {
                0 => "-".to_string(),
                id => id.to_string(),
            };
            let replicas: Vec<String> = shard.replicas.iter().map(u64::to_string).collect();
            [shard.shard.to_string(), leader, replicas.join(",")]
        })
        .collect();
    text.push_str(&table(["SHARD", "LEADER", "REPLICAS"], &shards));
    text
}

/// Left-aligned columns two spaces apart, without trailing spaces.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use ringkv_proto::v1::{NodeAddress, ShardStatus};

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
    fn get() {
        assert_eq!(command(&["get", "k"]), Command::Get { key: "k".into(), stale: false });
        assert_eq!(command(&["get", "k", "--stale"]), Command::Get { key: "k".into(), stale: true });
        assert!(parse_error(&["get"]).contains("KEY"));
    }

    #[test]
    fn global_options_and_addresses() {
        let cli = parse(&["--addr", "a:1,b:2", "-v", "get", "k", "--timeout-ms", "50"]).unwrap();
        assert_eq!(cli.addr, vec!["a:1", "b:2"]);
        assert!(cli.verbose);
        assert_eq!(cli.timeout_ms, Some(50));
        assert!(parse_error(&["--addr", "nohost", "get", "k"]).contains("HOST:PORT"));
        assert!(parse_error(&["--addr", "a:0", "get", "k"]).contains("port"));
        assert!(parse_error(&["--addr", "a:1,", "get", "k"]).contains("HOST:PORT"));
        assert_eq!(parse_addr("[::1]:7001"), Ok("[::1]:7001".to_string()));
    }

    #[test]
    fn put() {
        assert_eq!(
            command(&["put", "k", "v"]),
            Command::Put {
                key: "k".into(),
                value: "v".into(),
                ttl_ms: 0,
                if_absent: false,
                if_version: None
            }
        );
        assert_eq!(
            command(&["put", "k", "v", "--ttl-ms", "1500", "--if-version", "7"]),
            Command::Put {
                key: "k".into(),
                value: "v".into(),
                ttl_ms: 1500,
                if_absent: false,
                if_version: Some(7)
            }
        );
        assert!(matches!(
            command(&["put", "k", "v", "--if-absent"]),
            Command::Put { if_absent: true, if_version: None, .. }
        ));
        assert!(
            parse_error(&["put", "k", "v", "--if-absent", "--if-version", "1"])
                .contains("cannot be used with")
        );
        assert!(parse_error(&["put", "k"]).contains("VALUE"));
        assert!(parse_error(&["put", "k", "v", "--ttl-ms", "-1"]).contains("negative"));
        assert!(parse_error(&["put", "k", "v", "--ttl-ms", "1e3"]).contains("milliseconds"));
        let ten_years_and_a_bit = "315360000001";
        assert!(parse_error(&["touch", "k", "--ttl-ms", ten_years_and_a_bit]).contains("limit"));
        assert!(matches!(command(&["put", "k", "-5"]), Command::Put { value, .. } if value == "-5"));
    }

    #[test]
    fn del_touch_incr() {
        assert_eq!(command(&["del", "k"]), Command::Del { key: "k".into(), if_version: None });
        assert_eq!(
            command(&["delete", "k", "--if-version", "3"]),
            Command::Del { key: "k".into(), if_version: Some(3) }
        );
        assert_eq!(command(&["touch", "k", "--ttl-ms", "0"]), Command::Touch { key: "k".into(), ttl_ms: 0 });
        assert!(parse_error(&["touch", "k"]).contains("--ttl-ms"));
        assert_eq!(command(&["incr", "c"]), Command::Incr { key: "c".into(), delta: 1, ttl_ms: 0 });
        assert_eq!(
            command(&["incr", "c", "-5", "--ttl-ms", "60000"]),
            Command::Incr { key: "c".into(), delta: -5, ttl_ms: 60000 }
        );
        assert!(parse_error(&["incr", "c", "x"]).contains("invalid value"));
    }

    #[test]
    fn cluster_init() {
        assert_eq!(
            command(&["cluster", "init", "--nodes", "1=127.0.0.1:7001, 2=h:7002,3=h:7003"]),
            Command::Cluster(ClusterCommand::Init {
                nodes: NodeList(vec![
                    (1, "127.0.0.1:7001".into()),
                    (2, "h:7002".into()),
                    (3, "h:7003".into()),
                ]),
                shards: 32,
                replicas: 3,
            })
        );
        assert!(matches!(
            command(&["cluster", "init", "--nodes", "1=a:1", "--shards", "4", "--replicas", "1"]),
            Command::Cluster(ClusterCommand::Init { shards: 4, replicas: 1, .. })
        ));
        assert!(parse_error(&["cluster", "init"]).contains("--nodes"));
        assert!(parse_error(&["cluster", "init", "--nodes", "1=a:1", "--shards", "0"]).contains("0"));
        assert_eq!(command(&["cluster", "status"]), Command::Cluster(ClusterCommand::Status));
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
    fn help_and_usage_errors_are_not_panics() {
        assert_eq!(parse(&["--help"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse(&[]).unwrap_err().kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        assert_eq!(parse(&["frob"]).unwrap_err().kind(), ErrorKind::InvalidSubcommand);
        assert!(parse(&["--help"]).unwrap_err().to_string().contains("Exit status"));
    }

    #[test]
    fn answers() {
        assert_eq!(put_line(PutResult { succeeded: true, version: 12 }), ("OK version=12".into(), 0));
        assert_eq!(
            put_line(PutResult { succeeded: false, version: 7 }),
            ("(condition failed) version=7".into(), EXIT_NEGATIVE)
        );
        assert_eq!(delete_line(true, 9), ("OK version=9".into(), 0));
        assert_eq!(delete_line(false, 0), ("(not found)".into(), EXIT_NEGATIVE));
        assert_eq!(delete_line(false, 4), ("(condition failed) version=4".into(), EXIT_NEGATIVE));
        let created = InitClusterResponse { cluster_id: "c1".into(), epoch: 1, shards: 32, replicas: 3 };
        assert_eq!(init_line(&created), "OK cluster_id=c1 epoch=1 shards=32 replicas=3");
    }

    #[test]
    fn failures_exit_codes() {
        assert_eq!(Failure::from(Error::InvalidArgument("x".into())).exit, EXIT_USAGE);
        assert_eq!(Failure::from(Error::Unavailable("x".into())).exit, EXIT_ERROR);
        assert_eq!(Failure::from(Error::DeadlineExceeded).message, "deadline exceeded");
    }

    #[test]
    fn status_is_a_table() {
        let status = ClusterStatusResponse {
            cluster_id: "c1".into(),
            epoch: 5,
            shards: 2,
            replicas: 2,
            nodes: vec![
                NodeAddress { id: 1, addr: "127.0.0.1:7001".into(), state: String::new() },
                NodeAddress { id: 12, addr: "h:7002".into(), state: String::new() },
            ],
            shard_status: vec![
                ShardStatus { shard: 0, replicas: vec![1, 12], leader_id: 1, ..Default::default() },
                ShardStatus { shard: 1, replicas: vec![1, 12], leader_id: 0, ..Default::default() },
                ShardStatus { shard: 2, replicas: vec![12, 1], leader_id: 12, ..Default::default() },
            ],
        };
        let want = "\
cluster c1  epoch 5  shards 2  replicas 2

NODE  ADDRESS
1     127.0.0.1:7001
12    h:7002

SHARD  LEADER  REPLICAS
0      1       1,12
1      -       1,12
2      12      12,1
";
        assert_eq!(status_table(&status), want);
    }

    #[tokio::test]
    async fn invalid_arguments_fail_before_connecting() {
        // Nothing listens on the address; the empty key must be refused first.
        let cli = parse(&["--addr", "127.0.0.1:9", "get", ""]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let failure = run(cli, &mut out, &mut err).await.unwrap_err();
        assert_eq!(failure, Failure { exit: EXIT_USAGE, message: "invalid argument: key is empty".into() });
        let cli = parse(&["cluster", "init", "--nodes", "1=a:1,2=b:1"]).unwrap();
        let failure = run(cli, &mut out, &mut err).await.unwrap_err();
        assert_eq!(failure.exit, EXIT_USAGE);
        assert!(failure.message.contains("--replicas 3 is more than the 2 nodes"));
        assert!(out.is_empty());
    }
}
