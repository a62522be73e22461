//! A node's configuration: identity, addresses, storage, and the Raft and request
//! tunables. Parsed by the binary, passed to [`crate::server::serve`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::NodeId;
use ringkv_core::limits::DEFAULT_MAX_VALUE_BYTES;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster and never reused (> 0).
    pub id: NodeId,
    /// The address peers and clients dial (host:port). Defaults to the listen
    /// address; differs behind NAT or when listening on 0.0.0.0.
    pub advertise_addr: String,
    /// Holds `sled/` (Raft logs, votes, node metadata) and `snapshots/`.
    pub data_dir: PathBuf,
    /// Leader heartbeat; also openraft's AppendEntries timeout, so it must exceed a
    /// follower's p99 append + fsync + round trip.
    pub heartbeat_ms: u64,
    /// A follower campaigns after a random timeout in [min, max).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Snapshot a shard and purge its log every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot so briefly lagging followers catch up
    /// without a snapshot transfer.
    pub log_kept_after_snapshot: u64,
    /// Largest value accepted by Put.
    pub max_value_bytes: usize,
    /// How often the leader looks for expired keys to delete through Raft; the
    /// bound on how late memory is reclaimed (reads hide expired keys at once).
    pub expiry_interval_ms: u64,
    /// Most client operations folded into one Raft log entry. At most 65536:
    /// a message's sequence number has 16 bits for its place in its entry
    /// (`events::message_seq`).
    pub max_batch_ops: usize,
    /// How long a shard remembers a write's request id (and result), so that a
    /// retry within it applies once. Clients retry writes relying on it, so it
    /// is never off; it must outlast their overall request deadline.
    pub request_id_retention_ms: u64,
    /// A `Get` with `touch_ttl_ms` proposes a deadline move only when less than
    /// this fraction of `touch_ttl_ms` remains; in (0, 1].
    pub touch_refresh_fraction: f64,
    /// Change events each shard keeps for `Watch` resumes.
    pub watch_retention_events: usize,
    /// Accept the test-only `InjectFault` admin call (chaos tests). Off in
    /// production: the call is refused.
    pub enable_test_faults: bool,
    /// A router or node of the cluster to register with at start (`--join`),
    /// if this node belongs to no cluster yet.
    pub join: Option<String>,
    /// Where to serve Prometheus `/metrics` over HTTP (`--metrics-listen`);
    /// `None` = not at all.
    pub metrics_listen: Option<String>,
    /// Keys and values this node may hold before its leaders refuse writes
    /// that add data (`RESOURCE_EXHAUSTED`); 0 = no budget. See `memory`.
    pub memory_budget_bytes: u64,
    /// Largest gRPC message accepted from a client or a router (a request);
    /// larger ones are refused with `RESOURCE_EXHAUSTED`.
    pub max_request_bytes: usize,
    /// HTTP/2 streams one connection may have open at once (each watch,
    /// subscription and call is one); further ones wait for a free slot.
    pub max_streams_per_connection: u32,
    /// TLS, who may call what, and this node's credentials towards its peers.
    pub security: ringkv_security::Security,
}

impl NodeConfig {
    /// Defaults from DESIGN §4: a killed leader is replaced in about a second.
    pub fn new(id: NodeId, advertise_addr: String, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            advertise_addr,
            data_dir,
            heartbeat_ms: 100,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every_entries: 10_000,
            log_kept_after_snapshot: 1_000,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            expiry_interval_ms: 250,
            max_batch_ops: 1024,
            request_id_retention_ms: 60_000,
            touch_refresh_fraction: 0.5,
            watch_retention_events: crate::events::DEFAULT_RETAINED_EVENTS,
            enable_test_faults: false,
            join: None,
            metrics_listen: None,
            memory_budget_bytes: 0,
            max_request_bytes: ringkv_core::limits::DEFAULT_MAX_REQUEST_BYTES,
            max_streams_per_connection: ringkv_core::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
            security: ringkv_security::Security::default(),
        }
    }

    /// The openraft configuration every shard on this node uses.
    /// Fails with the reason when the timing flags contradict each other.
    pub fn raft_config(&self, shard: u32) -> Result<Arc<openraft::Config>, String> {
        let config = openraft::Config {
            cluster_name: format!("shard-{shard}"),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_kept_after_snapshot,
            replication_lag_threshold: self.snapshot_every_entries.max(5000),
            max_payload_entries: 1000,
            ..Default::default()
        };
        Ok(Arc::new(config.validate().map_err(|e| e.to_string())?))
    }

    pub fn expiry_interval(&self) -> Duration {
        Duration::from_millis(self.expiry_interval_ms)
    }
}
