//! The node's memory budget (`--memory-budget-bytes`): once the keys and
//! values of every replica it hosts add up to the budget, its leaders refuse
//! the writes that add data (Put, Increment, Publish) with
//! `RESOURCE_EXHAUSTED`, and keep serving reads, deletes and TTL changes, so
//! that an application can free space. Like Redis's `maxmemory` with the
//! `noeviction` policy: a store of sessions must not drop one silently.
//!
//! The total is the sum of the replicas' `approx_bytes` (keys and values),
//! summed again every [`REFRESH_INTERVAL`] by [`run`] rather than per write.
//! In between, every write a leader admits under a budget adds its key and
//! value to the total ([`DataBytes::admit`]), as if it made the data that
//! much bigger, so a burst cannot run past the budget until the next sum. The
//! estimate errs high (an overwrite is counted whole until the sum), and low
//! only by the writes in flight: those checked at once (the check and the
//! count are not one atomic step) and those admitted but not yet applied when
//! a sum replaces the count. So the data can pass the budget by about the
//! concurrent writes times their size, not by a whole interval's writes.
//! Measured: 256 writers of 1 KiB values against a 20 MB budget stopped at
//! 20.26 MB (22.6 MB when only the periodic sum counted). Followers' copies count too: every replica
//! a node hosts is in its memory, whichever node leads it.
//!
//! # Caveats
//! - Per-record overhead (map nodes, deadlines, request ids, watch events) is
//!   not counted: size the budget below the memory the process may use (see
//!   docs/operations.md, "Sizing").
//! - A follower applies what its leader commits even above its own budget:
//!   refusing would stall the shard. Nodes of one cluster should have the same
//!   budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::command::Op;
use crate::error::Error;
use crate::node::Node;

/// How often the total is recomputed.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The node's data size as last summed.
#[derive(Debug, Default)]
pub struct DataBytes(AtomicU64);

impl DataBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    /// Counts a write admitted under the budget until the next sum includes
    /// it (or, if it never applies, forgets it).
    pub fn admit(&self, op: &Op) {
        self.0.fetch_add(counted_bytes(op), Ordering::Relaxed);
    }
}

/// What `op` may add to `approx_bytes` (keys and values): a Put's key and
/// value, an Increment's key and its longest decimal value. A published
/// message adds no key or value.
fn counted_bytes(op: &Op) -> u64 {
    let bytes = match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Increment { key, .. } => key.len() + i64::MIN.to_string().len(),
        Op::Once { op, .. } => return counted_bytes(op),
        _ => 0,
    };
    bytes as u64
}

/// Keeps [`Node::data_bytes`] current; runs until aborted.
pub async fn run(node: std::sync::Arc<Node>) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh(&node);
    }
}

/// Sums the hosted replicas' data now.
pub fn refresh(node: &Node) {
    let total = node
        .shards()
        .iter()
        .map(|shard| shard.state.read().expect("shard state lock poisoned").kv.approx_bytes())
        .sum();
    node.data_bytes.set(total);
}

/// Whether `op` (as a client sent it) may be proposed under a budget of
/// `budget_bytes` (0: no budget) when the node holds `held_bytes`.
pub fn check(op: &Op, held_bytes: u64, budget_bytes: u64) -> Result<(), Error> {
    if budget_bytes == 0 || held_bytes < budget_bytes || !adds_data(op) {
        return Ok(());
    }
    Err(Error::ResourceExhausted(format!(
        "this node holds {held_bytes} bytes of keys and values, at or above its --memory-budget-bytes \
         ({budget_bytes}): writes that add data are refused until keys are deleted or expire, the cluster \
         grows, or the budget is raised; reads and deletes still work"
    )))
}

/// Writes that can make the data bigger.
fn adds_data(op: &Op) -> bool {
    match op {
        Op::Put { .. } | Op::Increment { .. } | Op::Publish { .. } => true,
        Op::Once { op, .. } => adds_data(op),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::command::Condition;

    fn put() -> Op {
        Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expires_at_ms: None,
            condition: Condition::None,
        }
    }

    #[test]
    fn at_the_budget_only_writes_that_add_data_are_refused() {
        let delete = Op::Delete { key: Bytes::from_static(b"k"), if_version: None };
        let touch = Op::Touch { key: Bytes::from_static(b"k"), expires_at_ms: Some(5) };
        let once = Op::Once { request_id: Bytes::from_static(b"r"), retain_until_ms: 1, op: Box::new(put()) };
        assert!(check(&put(), 99, 100).is_ok());
        assert!(check(&put(), 100, 0).is_ok(), "0 = no budget");
        for refused in [put(), once] {
            let err = check(&refused, 100, 100).expect_err("at the budget");
            assert!(
                matches!(&err, Error::ResourceExhausted(m) if m.contains("--memory-budget-bytes")),
                "{err}"
            );
        }
        assert!(check(&delete, 1000, 100).is_ok());
        assert!(check(&touch, 1000, 100).is_ok());
    }

    #[test]
    fn admitted_writes_count_until_the_next_sum() {
        let held = DataBytes::default();
        held.set(90);
        let once = Op::Once { request_id: Bytes::from_static(b"r"), retain_until_ms: 1, op: Box::new(put()) };
        held.admit(&put());
        held.admit(&once);
        held.admit(&Op::Delete { key: Bytes::from_static(b"k"), if_version: None });
        held.admit(&Op::Increment { key: Bytes::from_static(b"n"), delta: 1, expires_at_ms: None });
        assert_eq!(held.get(), 90 + 2 + 2 + 1 + 20);
        assert!(check(&put(), held.get(), 100).is_err(), "the admitted writes reach the budget");
        held.set(91);
        assert_eq!(held.get(), 91, "the sum replaces the estimate");
    }
}
