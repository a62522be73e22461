//! Everything `ringkv` prints, as pure functions of what it has to say: answer
//! lines, the status table and its JSON form, error messages, and the exit status
//! of each outcome. Kept free of I/O so golden tests pin the exact text.

use ringkv_client::{Error, PutResult};
use ringkv_proto::v1::{ClusterStatusResponse, InitClusterResponse, ShardStatus};
use serde_json::{Value, json};

use crate::rebalance_output::{rebalance_status_json, running_line};

/// Exit status: done (found, written, deleted).
pub const EXIT_OK: u8 = 0;
/// Exit status: a negative answer, not an error: key not found, condition failed.
pub const EXIT_NEGATIVE: u8 = 1;
/// Exit status: bad usage or invalid argument (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the cluster could not answer: no connection, no quorum or leader,
/// deadline exceeded. Retrying later may help.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit status: the request is well formed but the state refuses it (incr of a
/// non-integer, cluster already initialized). Retrying unchanged will not help.
pub const EXIT_PRECONDITION: u8 = 4;
/// Exit status: any other error.
pub const EXIT_OTHER: u8 = 5;

/// Why a command failed: the `error: ...` message, an optional `hint: ...` on
/// what to try, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: u8, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into(), hint: None }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// A client error as the CLI reports it; `addrs` are the addresses the
    /// command was given, named in hints about reachability.
    pub fn from_client(err: Error, addrs: &[String]) -> Failure {
        let exit = exit_status(&err);
        let hint = match &err {
            Error::Transport(_) => Some(format!(
                "nothing answers at {}; is the cluster running? `ringkv dev` starts a local one, \
                 --addr or RINGKV_ADDR point elsewhere",
                addrs.join(",")
            )),
            Error::DeadlineExceeded => Some("--timeout-ms allows more time".to_string()),
            Error::Unavailable(_) | Error::NotLeader { .. } | Error::WrongShard { .. } => Some(
                "a shard may be electing a leader, moving, or short of a quorum; `ringkv status` shows which"
                    .into(),
            ),
            _ => None,
        };
        let message = match err {
            // tonic's descriptions are sentences ("The caller does not have
            // permission..."); the code's name reads better in one line.
            Error::Other { code, message } => format!("{}: {message}", code_name(code)),
            err => err.to_string(),
        };
        Failure { exit, message, hint }
    }

    /// The text on stderr: `error: <message>`, then `hint: <hint>` if any.
    pub fn render(&self) -> String {
        match &self.hint {
            Some(hint) => format!("error: {}\nhint: {hint}\n", self.message),
            None => format!("error: {}\n", self.message),
        }
    }
}

/// The exit status of a client error: what a script should do next.
pub fn exit_status(err: &Error) -> u8 {
    match err {
        Error::InvalidArgument(_) => EXIT_USAGE,
        // A redirect or wrong-shard answer still standing after every retry means
        // leadership or placement is moving: unavailable for now.
        Error::Unavailable(_)
        | Error::DeadlineExceeded
        | Error::Transport(_)
        | Error::NotLeader { .. }
        | Error::WrongShard { .. } => EXIT_UNAVAILABLE,
        Error::FailedPrecondition(_) | Error::AlreadyExists(_) => EXIT_PRECONDITION,
        _ => EXIT_OTHER,
    }
}

/// `PermissionDenied` → `permission denied`.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for c in format!("{code:?}").chars() {
        if c.is_ascii_uppercase() && !name.is_empty() {
            name.push(' ');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::new(EXIT_OTHER, format!("writing output: {err}"))
    }
}

/// The answer line of a put and its exit status.
pub fn put_line(put: PutResult) -> (String, u8) {
    match put.succeeded {
        true => (format!("OK version={}", put.version), EXIT_OK),
        false => (format!("(condition failed) version={}", put.version), EXIT_NEGATIVE),
    }
}

/// A delete that did nothing reports the key's current version: 0 means the key
/// is absent, anything else that `--if-version` did not match.
pub fn delete_line(deleted: bool, version: u64) -> (String, u8) {
    match (deleted, version) {
        (true, version) => (format!("OK version={version}"), EXIT_OK),
        (false, 0) => ("(not found)".to_string(), EXIT_NEGATIVE),
        (false, version) => (format!("(condition failed) version={version}"), EXIT_NEGATIVE),
    }
}

pub fn init_line(created: &InitClusterResponse) -> String {
    format!(
        "OK cluster_id={} epoch={} shards={} replicas={}",
        created.cluster_id, created.epoch, created.shards, created.replicas
    )
}

/// The cluster status for people: a summary line (and one on a running
/// rebalance), the nodes with how many replicas and leaderships each holds
/// (meta shard included), then one row per shard. Shard 0 is the meta shard;
/// `-` stands for "no leader known" and for the numbers only a leader reports.
/// In REPLICAS, `*` marks the leader and `?` a member whose node did not report
/// on it (down, slow, or not yet created).
pub fn status_text(status: &ClusterStatusResponse) -> String {
    let mut text = format!(
        "cluster {}  epoch {}  shards {}  replicas {}\n",
        status.cluster_id, status.epoch, status.shards, status.replicas
    );
    if let Some(line) = status.rebalance.as_ref().and_then(running_line) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push('\n');
    let nodes: Vec<[String; 5]> = status
        .nodes
        .iter()
        .map(|node| {
            let hosted = status.shard_status.iter().filter(|shard| shard.replicas.contains(&node.id));
            let leading = status.shard_status.iter().filter(|shard| shard.leader_id == node.id);
            [
                node.id.to_string(),
                node.addr.clone(),
                dash_if_empty(&node.state),
                hosted.count().to_string(),
                leading.count().to_string(),
            ]
        })
        .collect();
    text.push_str(&table(["NODE", "ADDRESS", "STATE", "REPLICAS", "LEADERS"], &nodes));
    text.push('\n');
    let shards: Vec<[String; 6]> = status.shard_status.iter().map(shard_row).collect();
    text.push_str(&table(["SHARD", "LEADER", "TERM", "APPLIED", "LAG", "REPLICAS"], &shards));
    let problems = shard_problems(status);
    if problems.is_empty() {
        text.push_str("\nall shards healthy\n");
    } else {
        text.push_str(&format!("\nunhealthy shards ({} problems):\n", problems.len()));
        for problem in &problems {
            text.push_str(&format!("  {problem}\n"));
        }
    }
    text.push_str("\n* leader  ? did not report\n");
    text
}

/// Entries a replica may trail its leader's applied index before `status`
/// calls it lagging (a few batches; a healthy follower is within one).
pub const LAGGING_ENTRIES: u64 = 1000;

/// What is wrong with the cluster's shards, one line each: a shard without a
/// leader, one with fewer replicas than the cluster's replication factor, a
/// replica that did not report (its node is down or unreachable: the shard
/// is one failure closer to losing its quorum), and a replica more than
/// [`LAGGING_ENTRIES`] behind its leader.
pub fn shard_problems(status: &ClusterStatusResponse) -> Vec<String> {
    let mut problems = Vec::new();
    for shard in &status.shard_status {
        let name = shard_name(shard.shard);
        if shard.leader_id == 0 {
            problems.push(format!("shard {name}: no leader"));
        }
        if (shard.replicas.len() as u32) < status.replicas {
            problems.push(format!(
                "shard {name}: under-replicated: {} of {} replicas",
                shard.replicas.len(),
                status.replicas
            ));
        }
        for node in &shard.replicas {
            match shard.replica_status.iter().find(|replica| replica.node_id == *node) {
                None => problems.push(format!("shard {name}: the replica on node {node} did not report")),
                Some(replica) if shard.leader_id != 0 => {
                    let behind = shard.applied_index.saturating_sub(replica.last_applied);
                    if behind > LAGGING_ENTRIES {
                        problems.push(format!(
                            "shard {name}: the replica on node {node} is {behind} entries behind its leader"
                        ));
                    }
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// A shard as tables name it: `0 (meta)` for the meta shard.
pub(crate) fn shard_name(shard: u32) -> String {
    match shard {
        0 => "0 (meta)".to_string(),
        id => id.to_string(),
    }
}

fn shard_row(shard: &ShardStatus) -> [String; 6] {
    let name = shard_name(shard.shard);
    let replicas: Vec<String> = shard
        .replicas
        .iter()
        .map(|&node| {
            let reported = shard.replica_status.iter().any(|replica| replica.node_id == node);
            let mark = match (node == shard.leader_id, reported) {
                (true, _) => "*",
                (false, true) => "",
                (false, false) => "?",
            };
            format!("{node}{mark}")
        })
        .collect();
    let replicas = replicas.join(",");
    match shard.leader_id {
        0 => [name, "-".into(), "-".into(), "-".into(), "-".into(), replicas],
        leader => [
            name,
            leader.to_string(),
            shard.term.to_string(),
            shard.applied_index.to_string(),
            shard.max_lag.to_string(),
            replicas,
        ],
    }
}

pub(crate) fn dash_if_empty(text: &str) -> String {
    if text.is_empty() { "-".to_string() } else { text.to_string() }
}

/// Left-aligned columns two spaces apart, without trailing spaces.
pub(crate) fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
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

/// The cluster status for programs: one JSON object with the field names of
/// `Admin.ClusterStatus` (proto/proto/ringkv/v1/admin.proto), so the schema is
/// documented there. The differences: "no leader" and "no node" are `null`, not
/// 0, and `rebalance` is `null` when no plan was ever committed (else as
/// `ringkv admin rebalance status --json` prints it).
pub fn status_json(status: &ClusterStatusResponse) -> Value {
    let leader = |id: u64| if id == 0 { Value::Null } else { json!(id) };
    json!({
        "cluster_id": status.cluster_id,
        "epoch": status.epoch,
        "shards": status.shards,
        "replicas": status.replicas,
        "nodes": status.nodes.iter().map(|node| json!({
            "id": node.id,
            "addr": node.addr,
            "state": node.state,
        })).collect::<Vec<_>>(),
        "shard_status": status.shard_status.iter().map(|shard| json!({
            "shard": shard.shard,
            "replicas": shard.replicas,
            "leader_id": leader(shard.leader_id),
            "term": shard.term,
            "applied_index": shard.applied_index,
            "max_lag": shard.max_lag,
            "replica_status": shard.replica_status.iter().map(|replica| json!({
                "node_id": replica.node_id,
                "role": replica.role,
                "term": replica.term,
                "last_applied": replica.last_applied,
                "last_log": replica.last_log,
                "leader_id": leader(replica.leader_id),
                "approx_bytes": replica.approx_bytes,
                "keys": replica.keys,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rebalance": status.rebalance.as_ref().filter(|plan| plan.has_plan).map(rebalance_status_json),
        "problems": shard_problems(status),
    })
}

/// [`status_json`] as printed: pretty, keys sorted, one trailing newline.
pub fn status_json_text(status: &ClusterStatusResponse) -> String {
    let mut text =
        serde_json::to_string_pretty(&status_json(status)).expect("a JSON value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flags_lagging_and_under_replicated_shards() {
        use ringkv_proto::v1::ReplicaStatus;
        let replica = |node_id, last_applied| ReplicaStatus { node_id, last_applied, ..Default::default() };
        let shard = |shard, replicas: Vec<u64>, applied, reported: Vec<ReplicaStatus>| ShardStatus {
            shard,
            replicas,
            leader_id: 1,
            applied_index: applied,
            replica_status: reported,
            ..Default::default()
        };
        let status = ClusterStatusResponse {
            replicas: 3,
            shard_status: vec![
                shard(1, vec![1, 2, 3], 5000, vec![replica(1, 5000), replica(2, 4000), replica(3, 3999)]),
                shard(2, vec![1, 2], 10, vec![replica(1, 10), replica(2, 10)]),
            ],
            ..Default::default()
        };
        assert_eq!(
            shard_problems(&status),
            [
                "shard 1: the replica on node 3 is 1001 entries behind its leader",
                "shard 2: under-replicated: 2 of 3 replicas",
            ]
        );
        assert!(status_text(&status).contains("unhealthy shards (2 problems):"));
        let mut healthy = ClusterStatusResponse { shard_status: status.shard_status[..1].to_vec(), ..status };
        healthy.shard_status[0].replica_status[2].last_applied = 4500;
        assert!(shard_problems(&healthy).is_empty());
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
    fn exit_statuses() {
        let cases = [
            (Error::InvalidArgument("x".into()), EXIT_USAGE),
            (Error::Unavailable("x".into()), EXIT_UNAVAILABLE),
            (Error::DeadlineExceeded, EXIT_UNAVAILABLE),
            (Error::Transport("x".into()), EXIT_UNAVAILABLE),
            (Error::NotLeader { shard: 1, leader_id: None, leader_addr: None }, EXIT_UNAVAILABLE),
            (Error::WrongShard { shard: 1, epoch: 2 }, EXIT_UNAVAILABLE),
            (Error::FailedPrecondition("x".into()), EXIT_PRECONDITION),
            (Error::AlreadyExists("x".into()), EXIT_PRECONDITION),
            (Error::NotFound("x".into()), EXIT_OTHER),
            (Error::Other { code: tonic::Code::Internal, message: "x".into() }, EXIT_OTHER),
        ];
        for (err, want) in cases {
            assert_eq!(exit_status(&err), want, "{err:?}");
            assert!(want >= 2, "errors never exit 0 or 1");
        }
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(tonic::Code::PermissionDenied), "permission denied");
        assert_eq!(code_name(tonic::Code::Internal), "internal");
        assert_eq!(code_name(tonic::Code::ResourceExhausted), "resource exhausted");
    }

    #[test]
    fn empty_table_is_just_headers() {
        assert_eq!(table(["A", "BB"], &[]), "A  BB\n");
    }
}
