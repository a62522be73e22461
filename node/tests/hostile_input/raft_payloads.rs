//! Raft RPC payloads: the gRPC envelopes peers exchange (unary, `Raft.Pipe`
//! frames, snapshot chunks) and the postcard encodings of openraft's messages
//! inside them, in both directions, as `raft_service` and `transport` decode
//! them. Decoded log entries are applied, as a follower would.

use std::collections::BTreeMap;

use bytes::Bytes;
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, StoredMembership};
use prost::Message;
use ringkv_core::rebalance::{Cleanup, Move, MoveLimits, MoveReason, MoveStep, Plan, PlanState};
use ringkv_core::{ClusterMap, NodeInfo, NodeState};
use ringkv_node::codec;
use ringkv_node::command::{Command, Condition, Op};
use ringkv_node::raft_types::{Entry, LogId, NodeId, SnapshotMeta, TypeConfig, Vote};
use ringkv_node::state_machine::KvState;
use ringkv_proto::v1::{RaftFrame, RaftFrameKind, RaftFrameReply, RaftReply, RaftRequest, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fuzz::fuzz;

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("n{id}:7000")))).collect();
    Membership::new(vec![[1, 2, 3].into_iter().collect(), [1, 2, 4].into_iter().collect()], nodes)
}

pub fn cluster_map() -> ClusterMap {
    let node = |id: u64| NodeInfo { id, addr: format!("10.0.0.{id}:7000"), state: NodeState::Draining };
    ClusterMap {
        cluster_id: "c-1".into(),
        epoch: 3,
        shard_count: 2,
        replication_factor: 3,
        nodes: (1..=3).map(|id| (id, node(id))).collect(),
        shards: (0..=2).map(|shard| (shard, vec![1, 2, 3])).collect(),
    }
}

pub fn plan() -> Plan {
    Plan {
        revision: 2,
        base_epoch: 3,
        state: PlanState::Running,
        limits: MoveLimits::default(),
        moves: vec![Move {
            shard: 1,
            from: Some(1),
            to: Some(4),
            reason: MoveReason::Placement,
            step: MoveStep::LearnerAdded,
            attempts: 1,
            last_error: Some("timed out".into()),
            bytes: 1 << 20,
        }],
        started_ms: 1_700_000_000_000,
        balance_leaders: true,
        cleanup: vec![Cleanup { shard: 2, node: 3, addr: "10.0.0.3:7000".into() }],
    }
}

/// A command with every kind of op.
pub fn every_op() -> Command {
    let put = Op::Put {
        key: b(b"k"),
        value: b(b"v"),
        expires_at_ms: Some(2_000),
        condition: Condition::IfVersion(1),
    };
    Command {
        now_ms: 1_000,
        ops: vec![
            put.clone(),
            Op::Delete { key: b(b"k"), if_version: None },
            Op::Touch { key: b(b"k"), expires_at_ms: None },
            Op::Increment { key: b(b"n"), delta: -3, expires_at_ms: Some(5_000) },
            Op::Expire { keys: vec![b(b"a"), b(b"b")] },
            Op::SetClusterMap { expected_epoch: Some(2), map: cluster_map() },
            Op::SetPlan { expected_revision: 1, expected_epoch: Some(3), plan: plan() },
            Op::Once { request_id: b(b"0123456789abcdef"), retain_until_ms: 61_000, op: Box::new(put) },
            Op::Extend { key: b(b"k"), expires_at_ms: 9_000 },
            Op::Publish { channel: b(b"news"), payload: b(b"hello") },
        ],
    }
}

pub fn entries() -> Vec<Entry> {
    vec![
        Entry { log_id: log_id(2, 5), payload: EntryPayload::Blank },
        Entry { log_id: log_id(2, 6), payload: EntryPayload::Normal(every_op()) },
        Entry { log_id: log_id(2, 7), payload: EntryPayload::Membership(membership()) },
        Entry {
            log_id: log_id(2, 8),
            payload: EntryPayload::Normal(Command {
                now_ms: 7,
                ops: vec![Op::Delete { key: b(b"k"), if_version: Some(3) }],
            }),
        },
    ]
}

pub fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 42)),
        last_membership: StoredMembership::new(Some(log_id(2, 7)), membership()),
        snapshot_id: "T3-N1-42-9".into(),
    }
}

fn vote() -> Vote {
    Vote::new_committed(3, 1)
}

fn append_entries(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: vote(),
        prev_log_id: Some(log_id(2, 4)),
        entries,
        leader_commit: Some(log_id(2, 4)),
    }
}

fn encoded<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("encodes")
}

/// Decodes a `T`; a decoded value must re-encode to bytes that decode to the
/// same encoding again (it is a real value, not a half-read one).
fn decodes<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = codec::decode(bytes).ok()?;
    let again = encoded(&value);
    let twice: T = codec::decode(&again).expect("a re-encoded value decodes");
    assert_eq!(encoded(&twice), again, "re-encoding is stable");
    Some(value)
}

/// Applies every command among `entries` to one state, as a follower's state
/// machine would after they commit: apply never panics on any decoded command.
pub fn apply(entries: &[Entry]) {
    let mut state = KvState::default();
    for entry in entries {
        if let EntryPayload::Normal(command) = &entry.payload {
            state.apply(entry.log_id.index, command);
        }
    }
}

#[test]
fn append_entries_payloads() {
    let corpus = vec![
        encoded(&append_entries(entries())),
        encoded(&append_entries(Vec::new())),
        encoded(&append_entries(entries()[1..2].to_vec())),
    ];
    fuzz("AppendEntries payload", &corpus, |bytes| {
        let Some(rpc) = decodes::<AppendEntriesRequest<TypeConfig>>(bytes) else { return false };
        apply(&rpc.entries);
        true
    });
}

#[test]
fn vote_and_snapshot_payloads() {
    let corpus = vec![
        encoded(&VoteRequest::<NodeId> { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 40)) }),
        encoded(&vote()),
        encoded(&snapshot_meta()),
        encoded(&SnapshotMeta::default()),
    ];
    fuzz("Vote, snapshot vote and meta payloads", &corpus, |bytes| {
        // `raft_service` decodes each as the message its envelope names.
        let vote_request = decodes::<VoteRequest<NodeId>>(bytes).is_some();
        let vote = decodes::<Vote>(bytes).is_some();
        let meta = decodes::<SnapshotMeta>(bytes).is_some();
        vote_request || vote || meta
    });
}

#[test]
fn replies_from_peers() {
    type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
    type SnapshotReply = Result<SnapshotResponse<NodeId>, Fatal<NodeId>>;
    let corpus = vec![
        encoded(&AppendReply::Ok(AppendEntriesResponse::Success)),
        encoded(&AppendReply::Ok(AppendEntriesResponse::HigherVote(Vote::new(9, 3)))),
        encoded(&AppendReply::Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 6))))),
        encoded(&VoteReply::Ok(VoteResponse::new(Vote::new(4, 2), Some(log_id(3, 40)), true))),
        encoded(&SnapshotReply::Ok(SnapshotResponse::new(vote()))),
        encoded(&SnapshotReply::Err(Fatal::Stopped)),
    ];
    fuzz("Raft replies", &corpus, |bytes| {
        // `transport` decodes the reply of the call it made.
        let append = decodes::<AppendReply>(bytes).is_some();
        let vote = decodes::<VoteReply>(bytes).is_some();
        let snapshot = decodes::<SnapshotReply>(bytes).is_some();
        append || vote || snapshot
    });
}

#[test]
fn raft_envelopes() {
    let request = |payload: Vec<u8>| RaftRequest {
        shard: 3,
        from_node: 1,
        target_node: 2,
        format: codec::FORMAT,
        payload: payload.into(),
    };
    let append = encoded(&append_entries(entries()));
    let corpus = vec![
        request(append.clone()).encode_to_vec(),
        RaftFrame { id: 9, kind: RaftFrameKind::AppendEntries as i32, request: Some(request(append)) }
            .encode_to_vec(),
        RaftFrame { id: 10, kind: RaftFrameKind::Vote as i32, request: Some(request(encoded(&vote()))) }
            .encode_to_vec(),
        SnapshotChunk {
            shard: 3,
            from_node: 1,
            target_node: 2,
            format: codec::FORMAT,
            vote: encoded(&vote()).into(),
            meta: encoded(&snapshot_meta()).into(),
            data: b(b"\x03\x00"),
            crc32: crc32fast::hash(b"\x03\x00"),
        }
        .encode_to_vec(),
        RaftFrameReply { id: 9, code: 0, message: String::new(), payload: encoded(&vote()).into() }
            .encode_to_vec(),
    ];
    fuzz("Raft envelopes", &corpus, |bytes| {
        // As `raft_service` reads them: the envelope, then what it carries.
        let mut accepted = false;
        if let Ok(frame) = RaftFrame::decode(bytes) {
            accepted = true;
            let kind = RaftFrameKind::try_from(frame.kind);
            if let (Ok(RaftFrameKind::AppendEntries), Some(req)) = (kind, frame.request)
                && let Some(rpc) = decodes::<AppendEntriesRequest<TypeConfig>>(&req.payload)
            {
                apply(&rpc.entries);
            }
        }
        if let Ok(req) = RaftRequest::decode(bytes) {
            accepted = true;
            let _ = decodes::<VoteRequest<NodeId>>(&req.payload);
        }
        if let Ok(chunk) = SnapshotChunk::decode(bytes) {
            accepted = true;
            let _ = decodes::<Vote>(&chunk.vote);
            let _ = decodes::<SnapshotMeta>(&chunk.meta);
            if crc32fast::hash(&chunk.data) == chunk.crc32 {
                let _ = KvState::decode_snapshot(&chunk.data);
            }
        }
        // The sender's side: the replies it decodes.
        accepted |= RaftReply::decode(bytes).is_ok();
        accepted |= RaftFrameReply::decode(bytes).is_ok();
        accepted
    });
}

/// Found by the fuzzer (seed 14148817039465929376, before the seed was fixed):
/// postcard let serde preallocate a sequence's claimed count whenever it fit
/// in the bytes left, at `size_of` of an element per claimed element (serde
/// caps that at 1 MiB a sequence). A 10 KB AppendEntries held 1 MB. `codec`
/// now preallocates only counts backed by 16 bytes each.
#[test]
fn a_claimed_sequence_count_is_not_preallocated_at_element_size() {
    // Large enough to be over the bound at element size, small enough to stay
    // under serde's 1 MiB cap (else the cap, not the codec, would bound it).
    const CLAIMED: usize = 8_000;
    let count = encoded(&CLAIMED)[..].to_vec();
    // A command: `now_ms`, then CLAIMED ops of which none decodes (0xff is no
    // op's tag), so the decoder fails after the claim, having held the most.
    let command: Vec<u8> = [&encoded(&7u64)[..], &count, &[0xff; CLAIMED]].concat();
    // A list of log entries: CLAIMED of them, none of which decodes.
    let entries: Vec<u8> = [&count[..], &[0xff; CLAIMED]].concat();
    // AppendEntries: a vote, no previous log id, then that list.
    let append: Vec<u8> = [&encoded(&Vote::new(1, 1))[..], &[0], &entries].concat();
    for (what, bytes, element, decode) in [
        (
            "Command",
            &command,
            size_of::<Op>(),
            (|b| codec::decode::<Command>(b).is_ok()) as fn(&[u8]) -> bool,
        ),
        ("log entries", &entries, size_of::<Entry>(), |b| codec::decode::<Vec<Entry>>(b).is_ok()),
        ("AppendEntries", &append, size_of::<Entry>(), |b| {
            codec::decode::<AppendEntriesRequest<TypeConfig>>(b).is_ok()
        }),
    ] {
        let bound = crate::fuzz::bound_bytes(bytes.len());
        let preallocated = CLAIMED * element;
        assert!(
            preallocated > bound && preallocated < 1 << 20,
            "{what}: elements of {element} bytes; choose CLAIMED so that the case tests something"
        );
        let (accepted, usage) = crate::alloc::measure(|| decode(bytes));
        assert!(!accepted, "{what}: the hostile input decoded");
        assert!(
            usage.peak_bytes <= bound,
            "{what}: {} input bytes held {} at once (bound {bound})",
            bytes.len(),
            usage.peak_bytes
        );
    }
}
