//! Client requests: the bytes of every KV and Admin request, as the gRPC
//! codec (or a `KV.Pipe` frame) hands them to prost, then what the node does
//! with the decoded value before any shard is involved.

use bytes::Bytes;
use prost::Message;
use ringkv_core::ClusterMap;
use ringkv_core::limits::{MAX_KEY_BYTES, MAX_REQUEST_ID_BYTES};
use ringkv_node::codec;
use ringkv_node::command::{Command, Condition, Op};
use ringkv_node::request::{self, Write};
use ringkv_node::state_machine::KvState;
use ringkv_proto::v1::*;

use crate::fuzz::fuzz;
use crate::raft_payloads::cluster_map;

/// The value limit the checks run with (a node's default is 1 MiB; smaller
/// here so mutated lengths cross it).
const MAX_VALUE_BYTES: usize = 64;
/// A realistic clock and the end of time: deadlines must saturate at both.
const CLOCKS: [u64; 2] = [1_700_000_000_000, u64::MAX - 1];
const RETENTION_MS: u64 = 60_000;

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

/// A write that passed the checks must keep their promises, survive its log
/// encoding unchanged, and apply.
fn check_write(write: Write, now_ms: u64) {
    assert!(!write.key.is_empty() && write.key.len() <= MAX_KEY_BYTES, "key checked");
    assert!(write.request_id.len() <= MAX_REQUEST_ID_BYTES, "request id checked");
    let op = write.into_op(now_ms, RETENTION_MS);
    match &op {
        Op::Put { value, .. } | Op::Publish { payload: value, .. } => assert!(value.len() <= MAX_VALUE_BYTES),
        _ => {}
    }
    let command = Command { now_ms, ops: vec![op] };
    let bytes = codec::encode(&command).expect("a command encodes");
    assert_eq!(codec::decode::<Command>(&bytes).expect("an encoded command decodes"), command);
    let mut state = KvState::default();
    let seed = Command {
        now_ms,
        ops: vec![Op::Put {
            key: command_key(&command),
            value: b(b"7"),
            expires_at_ms: None,
            condition: Condition::None,
        }],
    };
    state.apply(1, &seed);
    state.apply(2, &command);
}

fn command_key(command: &Command) -> Bytes {
    match &command.ops[0] {
        Op::Once { op, .. } => command_key(&Command { now_ms: 0, ops: vec![(**op).clone()] }),
        Op::Put { key, .. } | Op::Delete { key, .. } | Op::Touch { key, .. } | Op::Increment { key, .. } => {
            key.clone()
        }
        Op::Publish { channel, .. } => channel.clone(),
        other => panic!("a client request became {other:?}"),
    }
}

/// Decodes `bytes` as a `method` request and runs it through the node's checks;
/// true when it became a valid op.
fn kv_request(method: KvMethod, bytes: &[u8]) -> bool {
    CLOCKS.iter().all(|&now_ms| {
        let write = match method {
            KvMethod::Get => {
                let Ok(req) = GetRequest::decode(bytes) else { return false };
                let Ok(read) = request::get(req) else { return false };
                assert!(!read.key.is_empty() && read.key.len() <= MAX_KEY_BYTES);
                let _ = read.extend_to(Some(now_ms), 1, 0.5, now_ms);
                return true;
            }
            KvMethod::Put => PutRequest::decode(bytes).map(|r| request::put(r, MAX_VALUE_BYTES, now_ms)),
            KvMethod::Delete => DeleteRequest::decode(bytes).map(request::delete),
            KvMethod::Touch => TouchRequest::decode(bytes).map(|r| request::touch(r, now_ms)),
            KvMethod::Increment => IncrementRequest::decode(bytes).map(|r| request::increment(r, now_ms)),
            KvMethod::Unspecified => return false,
        };
        match write {
            Ok(Ok(write)) => {
                check_write(write, now_ms);
                true
            }
            _ => false,
        }
    })
}

fn kv_corpus(method: KvMethod) -> Vec<Vec<u8>> {
    let id = b(b"0123456789abcdef");
    match method {
        KvMethod::Get => vec![
            GetRequest { key: b(b"k"), consistency: Consistency::Linearizable as i32, touch_ttl_ms: 0 }
                .encode_to_vec(),
            GetRequest {
                key: b(b"session:1"),
                consistency: Consistency::Linearizable as i32,
                touch_ttl_ms: 30_000,
            }
            .encode_to_vec(),
            GetRequest { key: b(b"k"), consistency: Consistency::Stale as i32, touch_ttl_ms: 0 }
                .encode_to_vec(),
        ],
        KvMethod::Put => vec![
            PutRequest { key: b(b"k"), value: b(b"v"), ..Default::default() }.encode_to_vec(),
            PutRequest {
                key: b(b"key"),
                value: b(b"value"),
                ttl_ms: 1_000,
                condition: Some(put_request::Condition::IfVersion(7)),
                request_id: id.clone(),
            }
            .encode_to_vec(),
            PutRequest {
                key: b(b"k"),
                value: Bytes::new(),
                ttl_ms: 0,
                condition: Some(put_request::Condition::IfAbsent(true)),
                request_id: id.clone(),
            }
            .encode_to_vec(),
        ],
        KvMethod::Delete => vec![
            DeleteRequest { key: b(b"k"), if_version: None, request_id: Bytes::new() }.encode_to_vec(),
            DeleteRequest { key: b(b"k"), if_version: Some(1), request_id: id.clone() }.encode_to_vec(),
        ],
        KvMethod::Touch => vec![
            TouchRequest { key: b(b"k"), ttl_ms: 5_000, request_id: id.clone() }.encode_to_vec(),
            TouchRequest { key: b(b"k"), ttl_ms: 0, request_id: Bytes::new() }.encode_to_vec(),
        ],
        KvMethod::Increment => vec![
            IncrementRequest { key: b(b"n"), delta: 1, ttl_ms: 0, request_id: Bytes::new() }.encode_to_vec(),
            IncrementRequest { key: b(b"n"), delta: i64::MIN, ttl_ms: 10, request_id: id }.encode_to_vec(),
        ],
        KvMethod::Unspecified => vec![],
    }
}

const KV_METHODS: [KvMethod; 5] =
    [KvMethod::Get, KvMethod::Put, KvMethod::Delete, KvMethod::Touch, KvMethod::Increment];

#[test]
fn kv_requests() {
    for method in KV_METHODS {
        fuzz(&format!("KV {method:?}"), &kv_corpus(method), |bytes| kv_request(method, bytes));
    }
}

#[test]
fn kv_pipe_frames() {
    let corpus: Vec<Vec<u8>> = KV_METHODS
        .iter()
        .flat_map(|&method| {
            kv_corpus(method).into_iter().map(move |request| {
                KvFrame { id: 7, method: method as i32, request: request.into(), timeout_ms: 500 }
                    .encode_to_vec()
            })
        })
        .collect();
    fuzz("KV.Pipe frame", &corpus, |bytes| {
        // As `kv_pipe::serve` reads a frame and dispatches it.
        let Ok(frame) = KvFrame::decode(bytes) else { return false };
        match KvMethod::try_from(frame.method) {
            Ok(KvMethod::Unspecified) | Err(_) => false,
            Ok(method) => kv_request(method, &frame.request),
        }
    });
}

#[test]
fn streaming_kv_requests() {
    let corpus = vec![
        PublishRequest { channel: b(b"news"), payload: b(b"hello"), request_id: b(b"id") }.encode_to_vec(),
        PublishRequest { channel: b(b"c"), payload: Bytes::new(), request_id: Bytes::new() }.encode_to_vec(),
    ];
    fuzz("KV Publish", &corpus, |bytes| {
        let Ok(req) = PublishRequest::decode(bytes) else { return false };
        CLOCKS.iter().all(|&now_ms| match request::publish(req.clone(), MAX_VALUE_BYTES) {
            Ok(write) => {
                check_write(write, now_ms);
                true
            }
            Err(_) => false,
        })
    });
    let corpus = vec![
        SubscribeRequest { channel: b(b"news"), from_seq: 1 << 20 }.encode_to_vec(),
        WatchRequest { key: b(b"k"), start_version: 3, ..Default::default() }.encode_to_vec(),
        WatchRequest { prefix: b(b"user/"), shard: 2, ..Default::default() }.encode_to_vec(),
    ];
    fuzz("KV Watch and Subscribe", &corpus, |bytes| {
        let watch = WatchRequest::decode(bytes).is_ok();
        let subscribe = SubscribeRequest::decode(bytes).is_ok();
        // A router resumes a watch from a client's token.
        if let Ok(req) = WatchRequest::decode(bytes) {
            let _ = ringkv_client::ResumeToken::decode(&req.resume_token);
        }
        watch || subscribe
    });
}

/// Generic protobuf shapes: each field number 1..=6 with each wire type, and
/// all of them at once, so the mutations start from something every
/// message type reads at least in part.
fn protobuf_shapes() -> Vec<Vec<u8>> {
    let mut shapes = Vec::new();
    let mut all = Vec::new();
    for field in 1u8..=6 {
        for shape in [
            vec![field << 3, 0x96, 0x01],                      // varint 150
            vec![(field << 3) | 2, 3, b'a', b':', b'1'],       // bytes / string
            vec![(field << 3) | 2, 4, 0x08, 0x01, 0x12, 0x00], // nested message
            vec![(field << 3) | 5, 1, 0, 0, 0],                // fixed32
            vec![(field << 3) | 1, 1, 0, 0, 0, 0, 0, 0, 0],    // fixed64
        ] {
            all.extend_from_slice(&shape);
            shapes.push(shape);
        }
    }
    shapes.push(all);
    shapes
}

#[test]
fn admin_requests() {
    let mut corpus = protobuf_shapes();
    corpus.push(
        PutClusterMapRequest {
            map: codec::encode(&cluster_map()).expect("encodes").into(),
            expected_epoch: Some(2),
        }
        .encode_to_vec(),
    );
    corpus.push(
        InitClusterRequest {
            nodes: (1..=3)
                .map(|id| NodeAddress { id, addr: format!("n{id}:7000"), state: String::new() })
                .collect(),
            shards: 8,
            replicas: 3,
        }
        .encode_to_vec(),
    );
    fuzz("Admin requests", &corpus, |bytes| {
        macro_rules! decodes {
            ($($request:ty),* $(,)?) => { [$(<$request>::decode(bytes).is_ok()),*] };
        }
        let decoded = decodes!(
            InitClusterRequest,
            ClusterStatusRequest,
            NodeStatusRequest,
            CreateReplicaRequest,
            InitializeShardRequest,
            ReplicaChecksumRequest,
            InjectFaultRequest,
            AddNodeRequest,
            PlanRebalanceRequest,
            StartRebalanceRequest,
            RebalanceStatusRequest,
            ControlRebalanceRequest,
            DrainNodeRequest,
            RemoveNodeRequest,
            TransferLeaderRequest,
            BalanceLeadersRequest,
            ChangeMembershipRequest,
            RemoveReplicaRequest,
            LeaderTransferStepRequest,
        );
        if let Ok(req) = LeaderTransferStepRequest::decode(bytes) {
            let _ = req.step(); // an unknown enum value falls back, never panics
        }
        // What `PutClusterMap` does with its payload before proposing it.
        let map =
            PutClusterMapRequest::decode(bytes).ok().map(|req| codec::decode::<ClusterMap>(&req.map).is_ok());
        decoded.iter().any(|&ok| ok) || map == Some(true)
    });
}
