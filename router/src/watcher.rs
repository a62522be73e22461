//! Keeps the router's cluster map fresh: long-polls the meta shard for a map
//! newer than the one the client holds, so a map change (a rebalance, a node
//! added) reaches the router as soon as the meta shard applies it. Routing errors
//! refresh the map too; this task only makes it prompt.

use std::time::Duration;

use ringkv_client::Client;

/// How long one long poll may wait on the meta shard.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Pause after a failed poll (no cluster yet, meta shard electing).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs until aborted.
pub async fn run(client: Client) {
    loop {
        match client.wait_for_map_change(POLL_WAIT).await {
            Ok(epoch) => tracing::debug!(epoch, "cluster map current"),
            Err(e) => {
                tracing::debug!("cluster map poll failed: {e}");
                // A bounded pause between failed polls, so an unreachable
                // cluster is not hammered.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
