//! Background expiry: the leader of each shard periodically proposes the deletion
//! of keys whose deadline has passed, so their memory is reclaimed on every
//! replica (and, later, watchers see an `EXPIRED` event). Reads already hide
//! expired keys at once; this task only bounds how long they linger.
//!
//! One task per node walks the shards it leads every `expiry_interval_ms`,
//! proposing at most [`MAX_KEYS_PER_ROUND`] keys per shard per round. Apply
//! re-checks every key against the entry's clock, so a key rewritten or touched
//! after the scan is left alone.
//!
//! The same round lets an idle shard forget request ids whose retention ran
//! out: ids are forgotten only when an entry applies (its clock decides), so a
//! shard that stopped taking writes proposes an empty `Expire` once its oldest
//! id is due.

use std::sync::Arc;

use crate::command::Op;
use crate::node::Node;
use crate::time::unix_now_ms;

/// Most keys one shard expires per round (one log entry).
pub const MAX_KEYS_PER_ROUND: usize = 1000;

/// Runs until the task is aborted (on node shutdown).
pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.config.expiry_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for shard in node.shards() {
            if !shard.is_leader() {
                continue;
            }
            let now = unix_now_ms();
            let (keys, ids_due) = {
                let state = shard.state.read().expect("shard state lock poisoned");
                (state.kv.expired_keys(now, MAX_KEYS_PER_ROUND), state.kv.has_requests_due(now))
            };
            if keys.is_empty() && !ids_due {
                continue;
            }
            let count = keys.len();
            if let Err(e) = shard.proposer.propose(Op::Expire { keys }).await {
                tracing::debug!(shard = shard.id, count, "expiry proposal failed: {e}");
            }
        }
    }
}
