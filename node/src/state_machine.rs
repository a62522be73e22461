//! STUB: the in-memory KV state machine (being written).

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_core::{ClusterMap, Version};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response, UnixMs};

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Bytes,
    pub version: Version,
    pub expires_at_ms: Option<UnixMs>,
}

/// A shard's replicated data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    map: BTreeMap<Bytes, Record>,
    cluster_map: Option<ClusterMap>,
}

impl KvState {
    /// Applies the command of the log entry at `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Response {
        let _ = (index, command);
        todo!()
    }

    /// The live record of `key` at `now_ms` (expired keys are absent).
    pub fn get(&self, key: &[u8], now_ms: UnixMs) -> Option<&Record> {
        let _ = (key, now_ms);
        todo!()
    }

    /// Up to `limit` keys expired at `now_ms`, for the leader's background expiry.
    pub fn expired_keys(&self, now_ms: UnixMs, limit: usize) -> Vec<Bytes> {
        let _ = (now_ms, limit);
        todo!()
    }

    /// The cluster map (meta shard only).
    pub fn cluster_map(&self) -> Option<&ClusterMap> {
        self.cluster_map.as_ref()
    }

    /// Number of stored keys, expired-but-not-yet-removed included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
