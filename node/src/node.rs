//! The multi-Raft host: one node process, one sled database, many shard replicas.
//!
//! Owns the set of hosted replicas and the node's durable identity: which cluster
//! it belongs to (`cluster` in the node metadata) and which replicas it hosts
//! (`replicas`). On start it reopens every hosted replica; a replica whose storage
//! is damaged (a snapshot failing its checksum, say) stops the node with an error
//! naming the file, rather than serving from a silently emptied state.
//!
//! Replicas are created only by an explicit admin call ([`Node::create_replica`]),
//! never by the first Raft message for an unknown shard, so a stale message can
//! never resurrect a removed replica.
//!
//! Removing a replica ([`Node::remove_replica`]) first takes it out of the
//! persisted replica set (the tombstone: from then on it is never reopened),
//! then stops its Raft group and deletes its storage. A crash in between leaves
//! storage no replica set names; [`Node::open`] deletes such orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use ringkv_core::{NodeId, ShardId, placement};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::config::NodeConfig;
use crate::error::Error;
use crate::shard::Shard;
use crate::store::{NodeStorage, StoreError};
use crate::transport::PeerPool;

const META_CLUSTER: &str = "cluster";
const META_REPLICAS: &str = "replicas";

/// The cluster this node joined, persisted when its first replica is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub shard_count: u32,
}

/// A running node.
pub struct Node {
    pub config: NodeConfig,
    storage: NodeStorage,
    pool: Arc<PeerPool>,
    shards: RwLock<BTreeMap<ShardId, Arc<Shard>>>,
    cluster: RwLock<Option<ClusterInfo>>,
    /// Serializes replica creation, so two concurrent creates cannot both start a
    /// group or race on the persisted replica set.
    create_lock: tokio::sync::Mutex<()>,
    /// Test fault (`--enable-test-faults`): how many more applied writes get
    /// `UNAVAILABLE` instead of their answer, as if the answer were lost.
    lose_write_answers: std::sync::atomic::AtomicU32,
    /// Open `Watch` and `Subscribe` streams, for the node's status.
    pub open_streams: crate::watcher::OpenStreams,
    /// Keys and values of every hosted replica, as last summed (the memory
    /// budget's measure; see `memory`).
    pub data_bytes: crate::memory::DataBytes,
}

impl Node {
    /// Opens the data directory and restarts every hosted replica.
    pub async fn open(config: NodeConfig) -> Result<Arc<Node>, Error> {
        if config.id == 0 {
            return Err(Error::InvalidArgument("node id must be greater than 0".into()));
        }
        let storage = NodeStorage::open(&config.data_dir).map_err(|e| {
            Error::Internal(format!("cannot open data dir {}: {e}", config.data_dir.display()))
        })?;
        let cluster: Option<ClusterInfo> = read_meta(&storage, META_CLUSTER)?;
        let hosted: BTreeSet<ShardId> = read_meta(&storage, META_REPLICAS)?.unwrap_or_default();
        for orphan in storage.stored_shards().into_iter().filter(|s| !hosted.contains(s)) {
            tracing::info!(node = config.id, shard = orphan, "deleting the storage of a removed replica");
            storage
                .drop_shard(orphan)
                .await
                .map_err(|e| Error::Internal(format!("deleting removed replica {orphan}: {e}")))?;
        }
        let pool = Arc::new(PeerPool::new(config.id, config.security.outgoing.clone()));
        let mut shards = BTreeMap::new();
        for id in hosted {
            let shard = Shard::open(id, &config, &storage, pool.clone()).await?;
            shards.insert(id, Arc::new(shard));
        }
        tracing::info!(node = config.id, replicas = shards.len(), "node opened");
        Ok(Arc::new(Node {
            config,
            storage,
            pool,
            shards: RwLock::new(shards),
            cluster: RwLock::new(cluster),
            create_lock: tokio::sync::Mutex::new(()),
            lose_write_answers: std::sync::atomic::AtomicU32::new(0),
            open_streams: Default::default(),
            data_bytes: Default::default(),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn addr(&self) -> &str {
        &self.config.advertise_addr
    }

    /// Options for a `ringkv_client::Client` this node uses itself (health
    /// checks, joining, hand-off): its own credentials towards the cluster.
    pub fn client_options(&self) -> ringkv_client::ClientOptions {
        ringkv_client::ClientOptions {
            credentials: self.config.security.outgoing.clone(),
            ..ringkv_client::ClientOptions::default()
        }
    }

    /// The node's shared Raft channels (and their test-only fault switch).
    pub fn peers(&self) -> &PeerPool {
        &self.pool
    }

    /// Test fault: the answers of the next `count` applied writes are lost.
    pub fn lose_write_answers(&self, count: u32) {
        self.lose_write_answers.store(count, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this applied write's answer is to be lost (test fault); counts it.
    pub fn take_lost_write_answer(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.lose_write_answers.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<ClusterInfo> {
        self.cluster.read().expect("cluster lock poisoned").clone()
    }

    /// The hosted replica of `shard`.
    pub fn shard(&self, shard: ShardId) -> Option<Arc<Shard>> {
        self.shards.read().expect("shards lock poisoned").get(&shard).cloned()
    }

    /// The storage flusher's batch-size and sync-latency histograms.
    pub fn flush_histograms(&self) -> crate::store::FlushHistograms {
        self.storage.flush_histograms()
    }

    /// Bytes of `shard`'s current snapshot file (0 before its first, or when
    /// its pointer cannot be read).
    pub fn snapshot_bytes(&self, shard: ShardId) -> u64 {
        self.storage.snapshot_bytes(shard).ok().flatten().unwrap_or(0)
    }

    /// Every hosted replica.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards.read().expect("shards lock poisoned").values().cloned().collect()
    }

    /// The replica that owns `key`: `WrongShard` when this node hosts none of it,
    /// `Unavailable` before the node joined a cluster.
    pub fn shard_for_key(&self, key: &[u8]) -> Result<Arc<Shard>, Error> {
        let cluster = self.cluster().ok_or_else(|| {
            Error::Unavailable(format!(
                "node {} is not part of a cluster yet (run `ringkv cluster init`)",
                self.id()
            ))
        })?;
        let id = placement::shard_for_key(key, cluster.shard_count);
        self.shard(id).ok_or(Error::WrongShard { shard: id, epoch: 0 })
    }

    /// Creates an empty replica of `shard` (idempotent). The first call binds the
    /// node to `cluster_id`; a different cluster id is refused.
    pub async fn create_replica(
        &self,
        cluster_id: &str,
        shard_count: u32,
        shard: ShardId,
    ) -> Result<(), Error> {
        if cluster_id.is_empty() || shard_count == 0 || shard > shard_count {
            return Err(Error::InvalidArgument(format!(
                "bad replica spec: cluster id {cluster_id:?}, shard {shard} of {shard_count}"
            )));
        }
        let _guard = self.create_lock.lock().await;
        let wanted = ClusterInfo { cluster_id: cluster_id.to_string(), shard_count };
        match self.cluster() {
            Some(current) if current != wanted => {
                return Err(Error::AlreadyExists(format!(
                    "node {} already belongs to cluster {} ({} shards)",
                    self.id(),
                    current.cluster_id,
                    current.shard_count
                )));
            }
            Some(_) => {}
            None => {
                write_meta(&self.storage, META_CLUSTER, &wanted).await?;
                *self.cluster.write().expect("cluster lock poisoned") = Some(wanted);
            }
        }
        if self.shard(shard).is_some() {
            return Ok(());
        }
        let opened = Shard::open(shard, &self.config, &self.storage, self.pool.clone()).await?;
        let mut hosted: BTreeSet<ShardId> =
            self.shards.read().expect("shards lock poisoned").keys().copied().collect();
        hosted.insert(shard);
        write_meta(&self.storage, META_REPLICAS, &hosted).await?;
        self.shards.write().expect("shards lock poisoned").insert(shard, Arc::new(opened));
        tracing::info!(node = self.id(), shard, "replica created");
        Ok(())
    }

    /// Stops this node's replica of `shard` and deletes its data (idempotent).
    /// The caller must have made sure it is no longer a member of the shard's
    /// group: erasing a member's log can lose committed writes.
    pub async fn remove_replica(&self, shard: ShardId) -> Result<(), Error> {
        let _guard = self.create_lock.lock().await;
        let removed = self.shards.read().expect("shards lock poisoned").get(&shard).cloned();
        if let Some(replica) = removed {
            let hosted: BTreeSet<ShardId> = self
                .shards
                .read()
                .expect("shards lock poisoned")
                .keys()
                .copied()
                .filter(|&s| s != shard)
                .collect();
            write_meta(&self.storage, META_REPLICAS, &hosted).await?;
            self.shards.write().expect("shards lock poisoned").remove(&shard);
            if let Err(e) = replica.raft.shutdown().await {
                tracing::warn!(shard, "raft shutdown: {e}");
            }
            drop(replica);
        }
        // Requests still holding the replica release it shortly; its storage can
        // be dropped once they have.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.storage.drop_shard(shard).await {
                Ok(()) => break,
                Err(StoreError::ShardInUse { .. }) if tokio::time::Instant::now() < deadline => {
                    // Nothing signals the last handle's release: poll, bounded.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(Error::Internal(format!("deleting replica {shard}: {e}"))),
            }
        }
        tracing::info!(node = self.id(), shard, "replica removed");
        Ok(())
    }

    /// Stops every Raft group. Storage is released when the last handle drops.
    pub async fn shutdown(&self) {
        let shards: Vec<Arc<Shard>> =
            std::mem::take(&mut *self.shards.write().expect("shards lock poisoned")).into_values().collect();
        for shard in shards {
            if let Err(e) = shard.raft.shutdown().await {
                tracing::warn!(shard = shard.id, "raft shutdown: {e}");
            }
        }
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(storage: &NodeStorage, key: &str) -> Result<Option<T>, Error> {
    let Some(bytes) =
        storage.get_node_meta(key).map_err(|e| Error::Internal(format!("node metadata {key}: {e}")))?
    else {
        return Ok(None);
    };
    codec::decode(&bytes)
        .map(Some)
        .map_err(|e| Error::Internal(format!("node metadata {key} is corrupt: {e}")))
}

/// Writes node metadata durably (it is flushed before this returns).
async fn write_meta<T: Serialize>(storage: &NodeStorage, key: &str, value: &T) -> Result<(), Error> {
    let bytes = codec::encode(value).map_err(|e| Error::Internal(format!("encode {key}: {e}")))?;
    storage.put_node_meta(key, &bytes).await.map_err(|e| Error::Internal(format!("node metadata {key}: {e}")))
}
