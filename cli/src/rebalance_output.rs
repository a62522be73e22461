//! What the `ringkv admin` commands print, as pure functions of the answers of
//! the meta shard's leader: the dry-run plan, a rebalance's progress (text and
//! JSON), and the answer lines of add-node, drain, remove-node and the leader
//! transfers. Golden-tested in `tests/golden.rs` like [`crate::output`].
//!
//! Tables list moves by shard, then `from`, then `to`, and nodes by id, whatever
//! order the answer came in, so the same plan always prints the same text.

use ringkv_proto::v1::{
    AddNodeResponse, BalanceLeadersResponse, NodePlanTotals, PlanRebalanceResponse, RebalanceMove,
    RebalanceStatusResponse, TransferLeaderResponse,
};
use serde_json::{Value, json};

use crate::output::{dash_if_empty, shard_name, table};

/// The step of a move that has finished (Admin.RebalanceMove.step).
const STEP_DONE: &str = "done";

/// `ringkv admin rebalance --dry-run`: the moves a rebalance would make now, the
/// replicas per node before and after, and the data to copy.
pub fn plan_text(plan: &PlanRebalanceResponse) -> String {
    if plan.moves.is_empty() {
        return format!(
            "rebalance plan for cluster map epoch {}\nnothing to move: placement already matches the ring\n",
            plan.epoch
        );
    }
    let mut text = format!(
        "rebalance plan for cluster map epoch {}: {}\n\n",
        plan.epoch,
        count(plan.moves.len(), "move")
    );
    let moves: Vec<[String; 5]> = sorted_moves(&plan.moves)
        .into_iter()
        .map(|m| {
            // A move that only removes a replica copies nothing.
            let data = if m.to == 0 { "-".to_string() } else { human_bytes(m.bytes) };
            let [shard, from, to] = move_ends(m);
            [shard, from, to, m.reason.clone(), data]
        })
        .collect();
    text.push_str(&table(["SHARD", "FROM", "TO", "WHY", "DATA"], &moves));
    text.push('\n');
    let mut totals: Vec<&NodePlanTotals> = plan.totals.iter().collect();
    totals.sort_by_key(|t| t.node);
    // Right-aligned "before" counts, so the arrows line up.
    let before_width = totals.iter().map(|t| t.replicas_before.to_string().len()).max().unwrap_or(0);
    let nodes: Vec<[String; 4]> = totals
        .iter()
        .map(|t| {
            [
                t.node.to_string(),
                dash_if_empty(&t.state),
                format!("{:>before_width$} -> {}", t.replicas_before, t.replicas_after),
                t.leaders_before.to_string(),
            ]
        })
        .collect();
    text.push_str(&table(["NODE", "STATE", "REPLICAS", "LEADERS"], &nodes));
    text.push_str("(replicas before -> after the plan; leaders now)\n");
    text.push_str(&format!("\ndata to copy: {} (approximate)\n", human_bytes(plan.bytes_to_copy)));
    text.push_str(&format!(
        "commit exactly this plan: ringkv admin rebalance --expected-epoch {}\n",
        plan.epoch
    ));
    text
}

/// `ringkv admin rebalance status` (and pause, resume, abort): the plan's state,
/// its counts, time, and every move not done yet with its step and last error.
pub fn rebalance_status_text(status: &RebalanceStatusResponse) -> String {
    if !status.has_plan {
        return "no rebalance has been committed\n".to_string();
    }
    let mut text = format!(
        "rebalance {}  (plan for cluster map epoch {}, at most {} in flight, {} per node)\n",
        status.state, status.base_epoch, status.max_in_flight, status.max_per_node
    );
    text.push_str(&format!(
        "moves: {} done, {} in flight, {} left (of {})\n",
        status.done,
        status.in_flight,
        status.left,
        status.moves.len()
    ));
    let time = match status.state.as_str() {
        "running" => {
            let eta = match status.eta_ms {
                0 => "unknown until a move finishes".to_string(),
                eta_ms => human_duration_ms(eta_ms),
            };
            format!("elapsed {}  eta {eta}", human_duration_ms(status.elapsed_ms))
        }
        "paused" => format!("elapsed {}", human_duration_ms(status.elapsed_ms)),
        // The clock keeps running after the end: it says when the plan began.
        _ => format!("committed {} ago", human_duration_ms(status.elapsed_ms)),
    };
    text.push_str(&format!("copied {}  {time}\n", human_bytes(status.bytes_copied)));
    let open: Vec<[String; 7]> = sorted_moves(&status.moves)
        .into_iter()
        .filter(|m| m.step != STEP_DONE)
        .map(|m| {
            let [shard, from, to] = move_ends(m);
            [
                shard,
                from,
                to,
                m.reason.clone(),
                dash_if_empty(&m.step),
                m.attempts.to_string(),
                dash_if_empty(&m.last_error),
            ]
        })
        .collect();
    if !open.is_empty() {
        text.push('\n');
        text.push_str(&table(["SHARD", "FROM", "TO", "WHY", "STEP", "ATTEMPTS", "LAST ERROR"], &open));
    }
    match status.state.as_str() {
        "paused" => text.push_str("\nresume it: ringkv admin rebalance resume\n"),
        "aborted" if !open.is_empty() => {
            text.push_str("\na new plan from where the map is now: ringkv admin rebalance --dry-run\n")
        }
        _ => {}
    }
    text
}

/// The one line `ringkv status` adds while a plan is running or paused.
pub fn running_line(status: &RebalanceStatusResponse) -> Option<String> {
    let active = status.has_plan && matches!(status.state.as_str(), "running" | "paused");
    active.then(|| {
        format!(
            "rebalance {}: {} done, {} in flight, {} left  (ringkv admin rebalance status)",
            status.state, status.done, status.in_flight, status.left
        )
    })
}

/// A rebalance's progress for programs: the fields of Admin.RebalanceStatus
/// (proto/proto/ringkv/v1/admin.proto), except that a move's absent `from` or
/// `to` is `null`, not 0.
pub fn rebalance_status_json(status: &RebalanceStatusResponse) -> Value {
    json!({
        "has_plan": status.has_plan,
        "state": status.state,
        "base_epoch": status.base_epoch,
        "moves": status.moves.iter().map(move_json).collect::<Vec<_>>(),
        "done": status.done,
        "in_flight": status.in_flight,
        "left": status.left,
        "bytes_copied": status.bytes_copied,
        "eta_ms": status.eta_ms,
        "elapsed_ms": status.elapsed_ms,
        "max_in_flight": status.max_in_flight,
        "max_per_node": status.max_per_node,
    })
}

/// [`rebalance_status_json`] as printed: pretty, keys sorted, one trailing newline.
pub fn rebalance_status_json_text(status: &RebalanceStatusResponse) -> String {
    let mut text =
        serde_json::to_string_pretty(&rebalance_status_json(status)).expect("a JSON value always serializes");
    text.push('\n');
    text
}

fn move_json(m: &RebalanceMove) -> Value {
    let node = |id: u64| if id == 0 { Value::Null } else { json!(id) };
    json!({
        "shard": m.shard,
        "from": node(m.from),
        "to": node(m.to),
        "reason": m.reason,
        "step": m.step,
        "attempts": m.attempts,
        "last_error": m.last_error,
        "bytes": m.bytes,
    })
}

/// What `ringkv admin rebalance` committed, and how to follow it.
pub fn committed_text(status: &RebalanceStatusResponse) -> String {
    format!(
        "OK rebalance committed: {} (cluster map epoch {}, at most {} in flight, {} per node)\n\
         follow it: ringkv admin rebalance status  (stop or steer it: ringkv admin rebalance pause|resume|abort)\n",
        count(status.moves.len(), "move"),
        status.base_epoch,
        status.max_in_flight,
        status.max_per_node
    )
}

/// `ringkv admin rebalance` when the plan is empty: nothing is committed.
pub fn nothing_to_move_text(epoch: u64) -> String {
    format!("nothing to move: placement already matches the ring (cluster map epoch {epoch})\n")
}

/// `ringkv admin add-node`.
pub fn add_node_text(id: u64, addr: &str, added: &AddNodeResponse) -> String {
    format!(
        "OK node {id} registered as joining at {addr} (cluster {}, map epoch {})\n\
         it takes replicas at the next rebalance: ringkv admin rebalance --dry-run, then ringkv admin rebalance\n",
        added.cluster_id, added.epoch
    )
}

/// `ringkv admin drain`: the node is draining and the plan that empties it is
/// committed.
pub fn drain_text(node: u64, status: &RebalanceStatusResponse) -> String {
    if status.moves.is_empty() {
        return format!(
            "OK node {node} is draining and holds no replicas\nremove it: ringkv admin remove-node {node}\n"
        );
    }
    format!(
        "OK node {node} is draining: {} committed (cluster map epoch {}, at most {} in flight, {} per node)\n\
         follow it: ringkv admin rebalance status; once it is done: ringkv admin remove-node {node}\n",
        count(status.moves.len(), "move"),
        status.base_epoch,
        status.max_in_flight,
        status.max_per_node
    )
}

/// `ringkv admin remove-node`.
pub fn remove_node_line(node: u64, epoch: u64) -> String {
    format!("OK node {node} removed (cluster map epoch {epoch})\n")
}

/// `ringkv admin transfer-leader`.
pub fn transfer_leader_line(shard: u32, moved: &TransferLeaderResponse) -> String {
    let shard = shard_name(shard);
    match (moved.from, moved.to) {
        (from, to) if from == to => format!("OK shard {shard} is led by node {to} already\n"),
        (0, to) => format!("OK shard {shard} is now led by node {to}\n"),
        (from, to) => format!("OK shard {shard} leader: node {from} -> node {to}\n"),
    }
}

/// `ringkv admin balance-leaders`: the transfers made, by shard.
pub fn balance_leaders_text(balanced: &BalanceLeadersResponse) -> String {
    if balanced.shards.is_empty() {
        return "OK leaders already balanced: nothing to transfer\n".to_string();
    }
    let mut transfers: Vec<(u32, u64)> =
        balanced.shards.iter().copied().zip(balanced.nodes.iter().copied()).collect();
    transfers.sort_unstable();
    let rows: Vec<[String; 2]> =
        transfers.iter().map(|&(shard, node)| [shard_name(shard), node.to_string()]).collect();
    format!(
        "OK {} made\n\n{}",
        count(transfers.len(), "leader transfer"),
        table(["SHARD", "NEW LEADER"], &rows)
    )
}

/// Moves by shard, then `from`, then `to` (0, "none", first).
fn sorted_moves(moves: &[RebalanceMove]) -> Vec<&RebalanceMove> {
    let mut sorted: Vec<&RebalanceMove> = moves.iter().collect();
    sorted.sort_by_key(|m| (m.shard, m.from, m.to));
    sorted
}

/// A move's shard, `from` and `to` cells; `-` for no node.
fn move_ends(m: &RebalanceMove) -> [String; 3] {
    let node = |id: u64| if id == 0 { "-".to_string() } else { id.to_string() };
    [shard_name(m.shard), node(m.from), node(m.to)]
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Bytes in binary units with one decimal: `512 B`, `1.0 KiB`, `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Round first, so 1023.96 KiB reads 1.0 MiB and never 1024.0 KiB.
    while (value * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration for people, to the second above a second: `850ms`, `42s`,
/// `3m05s`, `2h07m` (hours drop the seconds).
pub fn human_duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1_258_291, "1.2 MiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (5 * 1024 * 1024 * 1024, "5.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_bytes(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn durations_for_people() {
        let cases = [
            (0, "0ms"),
            (850, "850ms"),
            (1000, "1s"),
            (59_999, "59s"),
            (60_000, "1m00s"),
            (185_000, "3m05s"),
            (3_600_000, "1h00m"),
            (7_620_000, "2h07m"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn status_line_only_while_a_plan_is_active() {
        let status = |has_plan: bool, state: &str| RebalanceStatusResponse {
            has_plan,
            state: state.into(),
            done: 1,
            in_flight: 2,
            left: 3,
            ..Default::default()
        };
        assert_eq!(
            running_line(&status(true, "running")).as_deref(),
            Some("rebalance running: 1 done, 2 in flight, 3 left  (ringkv admin rebalance status)")
        );
        assert!(running_line(&status(true, "paused")).is_some());
        assert_eq!(running_line(&status(true, "done")), None);
        assert_eq!(running_line(&status(true, "aborted")), None);
        assert_eq!(running_line(&status(false, "")), None);
        assert_eq!(rebalance_status_text(&status(false, "")), "no rebalance has been committed\n");
    }

    #[test]
    fn answer_lines() {
        let moved = |from, to| TransferLeaderResponse { from, to };
        assert_eq!(transfer_leader_line(5, &moved(2, 4)), "OK shard 5 leader: node 2 -> node 4\n");
        assert_eq!(transfer_leader_line(0, &moved(1, 1)), "OK shard 0 (meta) is led by node 1 already\n");
        assert_eq!(transfer_leader_line(3, &moved(0, 2)), "OK shard 3 is now led by node 2\n");
        assert_eq!(remove_node_line(3, 12), "OK node 3 removed (cluster map epoch 12)\n");
        assert_eq!(
            balance_leaders_text(&BalanceLeadersResponse::default()),
            "OK leaders already balanced: nothing to transfer\n"
        );
        let balanced = BalanceLeadersResponse { shards: vec![9, 2], nodes: vec![1, 4] };
        assert_eq!(
            balance_leaders_text(&balanced),
            "OK 2 leader transfers made\n\nSHARD  NEW LEADER\n2      4\n9      1\n"
        );
        let drained = RebalanceStatusResponse { has_plan: true, state: "done".into(), ..Default::default() };
        assert_eq!(
            drain_text(3, &drained),
            "OK node 3 is draining and holds no replicas\nremove it: ringkv admin remove-node 3\n"
        );
    }
}
