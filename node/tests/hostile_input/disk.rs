//! What a node reads back from its disk: snapshot files and the state-machine
//! data inside them (the same bytes a leader streams in `InstallSnapshot`),
//! log entries, and shard and node metadata. The disk is ours, but a torn
//! write or a flipped bit must stop the node with an error naming the file or
//! key, never a panic or an allocation the file's size does not explain.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use ringkv_core::ShardId;
use ringkv_node::codec;
use ringkv_node::command::{Command, Condition, Op};
use ringkv_node::node::ClusterInfo;
use ringkv_node::raft_types::{SnapshotMeta, Vote};
use ringkv_node::state_machine::KvState;
use ringkv_node::store::decode;
use serde::Serialize;

use crate::fuzz::fuzz;
use crate::raft_payloads::{apply, entries, every_op, snapshot_meta};

const TREE: &str = "shard/0000000003/meta";

/// A state with keys (with and without deadlines), remembered request ids,
/// a cluster map and a plan.
fn state() -> KvState {
    let mut state = KvState::default();
    state.apply(1, &every_op());
    let puts = (0..20u8)
        .map(|i| Op::Put {
            key: Bytes::from(vec![b'k', i]),
            value: Bytes::from(vec![i; usize::from(i)]),
            expires_at_ms: (i % 2 == 0).then_some(10_000 + u64::from(i)),
            condition: Condition::None,
        })
        .map(|op| Op::Once {
            request_id: Bytes::from(vec![7; 16]),
            retain_until_ms: 90_000,
            op: Box::new(op),
        });
    state.apply(2, &Command { now_ms: 2_000, ops: puts.collect() });
    state
}

/// The bytes of a snapshot file, laid out as `store/snapshot_file.rs`
/// documents (written independently here, so the format is checked too).
fn snapshot_file(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let meta = codec::encode(meta).expect("encodes");
    let mut file = b"RKVSNAP\0".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    file.extend_from_slice(&meta);
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    file.extend_from_slice(&[0; 4]);
    fix_crc(&mut file);
    file
}

/// Rewrites the crc32 footer to match the content: past the checksum is
/// where the length fields and the decoders behind them can be reached.
fn fix_crc(file: &mut [u8]) {
    if file.len() < 4 {
        return;
    }
    let body = file.len() - 4;
    let crc = crc32fast::hash(&file[..body]);
    file[body..].copy_from_slice(&crc.to_le_bytes());
}

/// What opening a shard does with a snapshot file's bytes; true when it loads.
fn open_snapshot(bytes: Vec<u8>) -> bool {
    let Ok((_, data)) = decode::snapshot_file(bytes, Path::new("snap-fuzz")) else { return false };
    decode_state(&data)
}

/// Decodes state-machine data; a decoded state must re-encode to itself.
fn decode_state(data: &[u8]) -> bool {
    let Ok(state) = KvState::decode_snapshot(data) else { return false };
    let again = state.encode_snapshot();
    assert_eq!(KvState::decode_snapshot(&again).expect("a re-encoded state decodes"), state);
    true
}

fn snapshot_corpus() -> Vec<Vec<u8>> {
    vec![
        snapshot_file(&snapshot_meta(), &state().encode_snapshot()),
        snapshot_file(&SnapshotMeta::default(), &KvState::default().encode_snapshot()),
    ]
}

#[test]
fn snapshot_files() {
    fuzz("snapshot file", &snapshot_corpus(), |bytes| open_snapshot(bytes.to_vec()));
    fuzz("snapshot file, checksum fixed up", &snapshot_corpus(), |bytes| {
        let mut file = bytes.to_vec();
        fix_crc(&mut file);
        open_snapshot(file)
    });
}

#[test]
fn state_machine_data() {
    let corpus = vec![state().encode_snapshot(), KvState::default().encode_snapshot()];
    fuzz("state-machine data", &corpus, decode_state);
}

#[test]
fn log_entries() {
    // An input is the sled key (8 bytes, big-endian index) and then the value.
    let corpus: Vec<Vec<u8>> = entries()
        .iter()
        .map(|entry| {
            [&entry.log_id.index.to_be_bytes()[..], &codec::encode(entry).expect("encodes")].concat()
        })
        .collect();
    fuzz("log entry", &corpus, |bytes| {
        let (key, value) = bytes.split_at(bytes.len().min(8));
        let Ok(entry) = decode::log_entry("shard/0000000003/log", key, value) else { return false };
        apply(std::slice::from_ref(&entry));
        true
    });
}

/// The shape of the store's snapshot pointer (`store/shard.rs`), for its
/// encoding.
#[derive(Serialize)]
struct SnapshotPointer {
    file: String,
    meta: SnapshotMeta,
    crc32: u32,
    len: u64,
}

#[test]
fn metadata() {
    let pointer = SnapshotPointer {
        file: "snap-00000000000000000042-00000000000000000009".into(),
        meta: snapshot_meta(),
        crc32: 7,
        len: 900,
    };
    let cluster = ClusterInfo { cluster_id: "c-1".into(), shard_count: 32 };
    let replicas: BTreeSet<ShardId> = [0, 3, 17].into_iter().collect();
    let corpus = vec![
        codec::encode(&Vote::new_committed(3, 1)).expect("encodes"),
        codec::encode(&entries()[1].log_id).expect("encodes"),
        codec::encode(&pointer).expect("encodes"),
        codec::encode(&cluster).expect("encodes"),
        codec::encode(&replicas).expect("encodes"),
    ];
    fuzz("shard and node metadata", &corpus, |bytes| {
        // Each meta key, as the store reads it, and the node's own metadata.
        let shard = ["vote", "committed", "last_purged", "snapshot"]
            .map(|key| decode::meta_value(TREE, key, bytes).is_ok());
        let cluster = codec::decode::<ClusterInfo>(bytes).is_ok();
        let replicas = codec::decode::<BTreeSet<ShardId>>(bytes).is_ok();
        shard.iter().any(|&ok| ok) || cluster || replicas
    });
}
