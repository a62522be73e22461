//! Request semantics against a real cluster: conditions, TTLs, counters, typed
//! redirects, refusals of bad input (which must write nothing), KV pipe frames,
//! and garbage Raft RPCs (which must not hurt the node).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_core::limits::{MAX_KEY_BYTES, MAX_TTL_MS};
use ringkv_core::placement::shard_for_key;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{
    DeleteRequest, ErrorDetail, GetRequest, GetResponse, IncrementRequest, KvFrame, KvFrameReply, KvMethod,
    PutRequest, PutResponse, RaftFrame, RaftFrameKind, RaftRequest, SnapshotChunk, TouchRequest,
    error_detail, put_request,
};
use ringkv_tests::{Cluster, KvReply, KvRequest, not_leader, send};
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn single_node(args: &[&str]) -> Cluster {
    let cluster = Cluster::start(1, args).await;
    cluster.init(2, 1).await.expect("init");
    cluster.wait_for_leaders(2, TIMEOUT).await;
    cluster
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

async fn call(cluster: &Cluster, req: KvRequest) -> Result<KvReply, tonic::Status> {
    cluster.call(req, TIMEOUT).await
}

async fn get(cluster: &Cluster, key: &[u8]) -> ringkv_proto::v1::GetResponse {
    match call(
        cluster,
        KvRequest::Get(GetRequest { key: Bytes::copy_from_slice(key), consistency: 0, ..Default::default() }),
    )
    .await
    {
        Ok(KvReply::Get(r)) => r,
        other => panic!("get failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_ttls_and_counters() {
    let cluster = single_node(&[]).await;

    // if_absent: first wins, second reports the current version.
    let mut req = put_req("session", "a");
    req.condition = Some(put_request::Condition::IfAbsent(true));
    let Ok(KvReply::Put(first)) = call(&cluster, KvRequest::Put(req.clone())).await else { panic!() };
    assert!(first.succeeded);
    let Ok(KvReply::Put(second)) = call(&cluster, KvRequest::Put(req)).await else { panic!() };
    assert_eq!((second.succeeded, second.version), (false, first.version));

    // if_version: only the matching version writes.
    let mut req = put_req("session", "b");
    req.condition = Some(put_request::Condition::IfVersion(first.version + 1000));
    let Ok(KvReply::Put(stale)) = call(&cluster, KvRequest::Put(req.clone())).await else { panic!() };
    assert_eq!((stale.succeeded, stale.version), (false, first.version));
    req.condition = Some(put_request::Condition::IfVersion(first.version));
    let Ok(KvReply::Put(cas)) = call(&cluster, KvRequest::Put(req)).await else { panic!() };
    assert!(cas.succeeded && cas.version > first.version);
    let read = get(&cluster, b"session").await;
    assert_eq!((read.found, &read.value[..], read.version), (true, &b"b"[..], cas.version));

    // Delete at a wrong version changes nothing; at the right one it deletes.
    let del = |v| {
        KvRequest::Delete(DeleteRequest {
            key: Bytes::from_static(b"session"),
            if_version: Some(v),
            ..Default::default()
        })
    };
    let Ok(KvReply::Delete(d)) = call(&cluster, del(cas.version + 1)).await else { panic!() };
    assert!(!d.deleted);
    let Ok(KvReply::Delete(d)) = call(&cluster, del(cas.version)).await else { panic!() };
    assert!(d.deleted);
    assert!(!get(&cluster, b"session").await.found);

    // Counters.
    let incr = |key: &'static str, delta| {
        KvRequest::Increment(IncrementRequest {
            key: Bytes::from_static(key.as_bytes()),
            delta,
            ..Default::default()
        })
    };
    let Ok(KvReply::Increment(c)) = call(&cluster, incr("hits", 5)).await else { panic!() };
    assert_eq!(c.value, 5);
    let Ok(KvReply::Increment(c)) = call(&cluster, incr("hits", -7)).await else { panic!() };
    assert_eq!(c.value, -2);
    assert_eq!(&get(&cluster, b"hits").await.value[..], b"-2");
    call(&cluster, KvRequest::Put(put_req("name", "not a number"))).await.expect("put");
    let err = call(&cluster, incr("name", 1)).await.expect_err("non-integer");
    assert_eq!(err.code(), Code::FailedPrecondition);
    call(&cluster, KvRequest::Put(put_req("big", &i64::MAX.to_string()))).await.expect("put");
    let err = call(&cluster, incr("big", 1)).await.expect_err("overflow");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(&get(&cluster, b"big").await.value[..], i64::MAX.to_string().as_bytes());

    // TTL: visible with its remaining time, refreshed by touch, then gone.
    let mut req = put_req("presence", "online");
    req.ttl_ms = 60_000;
    call(&cluster, KvRequest::Put(req)).await.expect("put");
    let read = get(&cluster, b"presence").await;
    assert!(read.found && read.ttl_ms > 0 && read.ttl_ms <= 60_000, "{read:?}");
    let touch = |ttl_ms| {
        KvRequest::Touch(TouchRequest { key: Bytes::from_static(b"presence"), ttl_ms, ..Default::default() })
    };
    let Ok(KvReply::Touch(t)) = call(&cluster, touch(300)).await else { panic!() };
    assert!(t.found && t.ttl_ms <= 300);
    let deadline = Instant::now() + TIMEOUT;
    while get(&cluster, b"presence").await.found {
        assert!(Instant::now() < deadline, "key with a 300 ms TTL still readable after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Ok(KvReply::Touch(t)) = call(&cluster, touch(1000)).await else { panic!() };
    assert!(!t.found, "an expired key cannot be touched back to life");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_and_write_nothing() {
    let cluster = single_node(&["--max-value-bytes", "1024"]).await;
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let key = |k: &str| Bytes::from(k.to_string());
    let cases: Vec<(&str, KvRequest)> = vec![
        ("put empty key", KvRequest::Put(put_req("", "v"))),
        ("put long key", KvRequest::Put(put_req(&long_key, "v"))),
        ("put large value", KvRequest::Put(put_req("k1", &"v".repeat(1025)))),
        ("put negative ttl", KvRequest::Put(PutRequest { ttl_ms: -1, ..put_req("k2", "v") })),
        ("put absurd ttl", KvRequest::Put(PutRequest { ttl_ms: MAX_TTL_MS + 1, ..put_req("k3", "v") })),
        ("get empty key", KvRequest::Get(GetRequest { key: key(""), consistency: 0, ..Default::default() })),
        (
            "get bad consistency",
            KvRequest::Get(GetRequest { key: key("k"), consistency: 7, ..Default::default() }),
        ),
        ("delete empty key", KvRequest::Delete(DeleteRequest { key: key(""), ..Default::default() })),
        (
            "touch negative ttl",
            KvRequest::Touch(TouchRequest { key: key("k4"), ttl_ms: -5, ..Default::default() }),
        ),
        (
            "touch long key",
            KvRequest::Touch(TouchRequest { key: key(&long_key), ttl_ms: 5, ..Default::default() }),
        ),
        (
            "incr negative ttl",
            KvRequest::Increment(IncrementRequest {
                key: key("k5"),
                delta: 1,
                ttl_ms: -1,
                ..Default::default()
            }),
        ),
        (
            "incr absurd ttl",
            KvRequest::Increment(IncrementRequest {
                key: key("k6"),
                delta: 1,
                ttl_ms: i64::MAX,
                ..Default::default()
            }),
        ),
        (
            "incr empty key",
            KvRequest::Increment(IncrementRequest { key: key(""), delta: 1, ..Default::default() }),
        ),
    ];
    for (name, req) in cases {
        let err = call(&cluster, req).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(!err.message().is_empty(), "{name}: the refusal must say why");
    }
    for k in ["k1", "k2", "k3", "k4", "k5", "k6"] {
        assert!(!get(&cluster, k.as_bytes()).await.found, "{k} was written by a refused request");
    }
    // The largest allowed value still goes through.
    call(&cluster, KvRequest::Put(put_req("k1", &"v".repeat(1024)))).await.expect("1024-byte value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_and_nodes_without_the_shard_say_so() {
    let cluster = Cluster::start(4, &[]).await;
    cluster.init(4, 3).await.expect("init");
    let leaders = cluster.wait_for_leaders(4, TIMEOUT).await;

    // A write sent to a follower names the leader.
    let key = (0..).map(|i| format!("r{i}")).find(|k| shard_for_key(k.as_bytes(), 4) == 1).expect("key");
    let leader = leaders[&1];
    let mut follower = None;
    for node in &cluster.nodes {
        let status = node.status().await.expect("status");
        if node.id != leader && status.replicas.contains(&1) {
            follower = Some(node);
        }
    }
    let follower = follower.expect("shard 1 has a follower");
    let err = send(&follower.addr, KvRequest::Put(put_req(&key, "v"))).await.expect_err("follower write");
    let nl = not_leader(&err).unwrap_or_else(|| panic!("no NotLeader detail: {err:?}"));
    let leader_addr = &cluster.nodes.iter().find(|n| n.id == leader).expect("leader").addr;
    assert_eq!((nl.shard, nl.leader_id, &nl.leader_addr), (1, leader, leader_addr));

    // A node without the shard answers WrongShard.
    let mut outsider = None;
    for node in &cluster.nodes {
        if !node.status().await.expect("status").replicas.contains(&1) {
            outsider = Some(node);
        }
    }
    let outsider = outsider.expect("4 nodes, 3 replicas: one node lacks shard 1");
    let err = send(&outsider.addr, KvRequest::Put(put_req(&key, "v"))).await.expect_err("wrong shard");
    use prost::Message;
    let detail = ErrorDetail::decode(err.details()).expect("detail");
    assert!(matches!(detail.kind, Some(error_detail::Kind::WrongShard(ref w)) if w.shard == 1), "{detail:?}");

    // On a KV pipe, the same refusals carry the same typed details.
    let put = put_req(&key, "v").encode_to_vec();
    let frame = KvFrame { id: 1, method: KvMethod::Put as i32, request: put.into(), timeout_ms: 5000 };
    for (node, leader_named) in [(follower, true), (outsider, false)] {
        let (_frames, mut replies) = open_kv_pipe(&node.addr, vec![frame.clone()]).await;
        let reply = next_reply(&mut replies).await;
        assert_eq!((reply.id, Code::from_i32(reply.code)), (1, Code::FailedPrecondition), "{reply:?}");
        let detail = ErrorDetail::decode(reply.details).expect("detail").kind;
        match detail {
            Some(error_detail::Kind::NotLeader(nl)) if leader_named => {
                assert_eq!((nl.shard, nl.leader_id, &nl.leader_addr), (1, leader, leader_addr))
            }
            Some(error_detail::Kind::WrongShard(w)) if !leader_named => assert_eq!(w.shard, 1),
            other => panic!("node {}: unexpected detail {other:?}", node.id),
        }
    }
}

type FrameSender = tokio::sync::mpsc::UnboundedSender<KvFrame>;

/// Opens a `KV.Pipe` to `addr` with `frames` queued on it; more frames go
/// through the returned sender, and dropping it closes the caller's side.
async fn open_kv_pipe(addr: &str, frames: Vec<KvFrame>) -> (FrameSender, tonic::Streaming<KvFrameReply>) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for frame in frames {
        tx.send(frame).expect("queue frame");
    }
    let outgoing = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, KvClient::new(channel).pipe(outgoing).await.expect("open KV pipe").into_inner())
}

async fn next_reply(replies: &mut tonic::Streaming<KvFrameReply>) -> KvFrameReply {
    tokio::time::timeout(TIMEOUT, replies.message())
        .await
        .expect("a reply in time")
        .expect("the pipe stays open")
        .expect("a reply, not the end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_pipe_frames_are_answered_by_id_and_bad_ones_write_nothing() {
    use prost::Message;
    let cluster = single_node(&[]).await;
    let node = &cluster.nodes[0];
    let frame =
        |id, method: i32, request: Vec<u8>| KvFrame { id, method, request: request.into(), timeout_ms: 0 };
    let put = |key: &str, ttl_ms| PutRequest { ttl_ms, ..put_req(key, "piped") }.encode_to_vec();
    let get = |key: &str| {
        GetRequest { key: Bytes::from(key.to_string()), consistency: 0, ..Default::default() }.encode_to_vec()
    };
    let frames = vec![
        frame(1, KvMethod::Put as i32, put("p1", 0)),
        frame(2, 99, put("p-unknown-method", 0)),
        frame(3, KvMethod::Unspecified as i32, put("p-unspecified", 0)),
        frame(4, KvMethod::Put as i32, b"\xff\x13\x37garbage".to_vec()),
        frame(5, KvMethod::Put as i32, put("", 0)),
        frame(6, KvMethod::Put as i32, put("p-bad-ttl", -1)),
    ];
    let (tx, mut replies) = open_kv_pipe(&node.addr, frames).await;
    let mut codes = std::collections::BTreeMap::new();
    while codes.len() < 6 {
        let reply = next_reply(&mut replies).await;
        if reply.id == 1 {
            let put = PutResponse::decode(reply.response.clone()).expect("put response");
            assert!(put.succeeded && put.version > 0, "{put:?}");
        }
        assert!(codes.insert(reply.id, Code::from_i32(reply.code)).is_none(), "two replies for {}", reply.id);
    }
    let want = [
        (1, Code::Ok),
        (2, Code::Unimplemented),
        (3, Code::Unimplemented),
        (4, Code::InvalidArgument),
        (5, Code::InvalidArgument),
        (6, Code::InvalidArgument),
    ];
    assert_eq!(codes, want.into_iter().collect());

    // The stream is still open and serves the next frames; what the refused
    // frames named was not written.
    for (id, key) in [(7, "p1"), (8, "p-unknown-method"), (9, "p-unspecified"), (10, "p-bad-ttl")] {
        tx.send(frame(id, KvMethod::Get as i32, get(key))).expect("queue get");
        let reply = next_reply(&mut replies).await;
        assert_eq!((reply.id, Code::from_i32(reply.code)), (id, Code::Ok), "{reply:?}");
        let found = GetResponse::decode(reply.response).expect("get response");
        assert_eq!(found.found, key == "p1", "{key}: {found:?}");
    }
    drop(tx);
    // The caller closing its side ends the stream.
    let end = tokio::time::timeout(TIMEOUT, replies.message()).await.expect("the end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_says_goodbye_on_its_kv_pipes_and_ends_them() {
    use prost::Message;
    let mut cluster = single_node(&[]).await;
    let get =
        GetRequest { key: Bytes::from_static(b"g"), consistency: 0, ..Default::default() }.encode_to_vec();
    let frame = KvFrame { id: 1, method: KvMethod::Get as i32, request: get.into(), timeout_ms: 5000 };
    let (_frames, mut replies) = open_kv_pipe(&cluster.nodes[0].addr, vec![frame]).await;
    let reply = next_reply(&mut replies).await;
    assert_eq!((reply.id, Code::from_i32(reply.code)), (1, Code::Ok), "{reply:?}");

    // A graceful stop: the pipe (still open on our side) gets the goodbye
    // naming frame 1 as the last read, then ends, and the node exits.
    let node = &mut cluster.nodes[0];
    let ((), (goodbye, end)) = tokio::join!(node.stop(), async {
        let goodbye = next_reply(&mut replies).await;
        let end = tokio::time::timeout(TIMEOUT, replies.message()).await.expect("the end in time");
        (goodbye, end)
    });
    assert_eq!((goodbye.id, goodbye.last_read_id), (0, 1), "{goodbye:?}");
    assert!(matches!(end, Ok(None)), "the stream ends cleanly: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_larger_than_a_pipe_frame_round_trip_through_the_client_library() {
    let cluster = single_node(&[]).await;
    let addr = cluster.nodes[0].addr.clone();
    let client = ringkv_client::Client::connect(vec![addr], Default::default()).expect("client");
    // Over MAX_PIPED_REQUEST_BYTES: sent as a unary call; read back on the pipe.
    let big = Bytes::from(vec![b'x'; ringkv_client::kv_pipe::MAX_PIPED_REQUEST_BYTES + 1000]);
    let small = Bytes::from_static(b"small");
    client.put("big", big.clone(), Default::default()).await.expect("put big");
    client.put("small", small.clone(), Default::default()).await.expect("put small");
    for (key, want) in [("big", big), ("small", small)] {
        let got =
            client.get(key, ringkv_client::Consistency::Linearizable).await.expect("get").expect("found");
        assert_eq!(got.value, want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_init_twice_is_refused() {
    let cluster = single_node(&[]).await;
    let err = cluster.init(2, 1).await.expect_err("second init");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("already belongs to cluster"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_raft_rpcs_are_rejected_without_harm() {
    let cluster = single_node(&[]).await;
    let node = &cluster.nodes[0];
    let mut raft = RaftClient::new(node.channel());
    let envelope = |shard, target, format, payload: &[u8]| RaftRequest {
        shard,
        from_node: 99,
        target_node: target,
        format,
        payload: Bytes::copy_from_slice(payload),
    };
    let garbage = [0xffu8, 0x13, 0x37, 0x00, 0x42, 0x99, 0x01];

    let err = raft.append_entries(envelope(1, 1, 1, &garbage)).await.expect_err("garbage append");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raft.vote(envelope(1, 1, 1, &garbage)).await.expect_err("garbage vote");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raft.append_entries(envelope(1, 1, 1, &[])).await.expect_err("empty append");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raft.append_entries(envelope(1, 2, 1, &garbage)).await.expect_err("wrong target");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = raft.append_entries(envelope(1, 1, 77, &garbage)).await.expect_err("unknown format");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raft.vote(envelope(999, 1, 1, &garbage)).await.expect_err("unknown shard");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A well-formed vote request whose envelope names another sender.
    let vote_of_5 = openraft::raft::VoteRequest { vote: openraft::Vote::new(1, 5u64), last_log_id: None };
    let payload = ringkv_node::codec::encode(&vote_of_5).expect("encode");
    let err = raft.vote(envelope(1, 1, 1, &payload)).await.expect_err("spoofed sender");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let chunk = |vote: &[u8], meta: &[u8], data: &[u8], crc32| SnapshotChunk {
        shard: 1,
        from_node: 99,
        target_node: 1,
        format: 1,
        vote: Bytes::copy_from_slice(vote),
        meta: Bytes::copy_from_slice(meta),
        data: Bytes::copy_from_slice(data),
        crc32,
    };
    let err = raft.install_snapshot(futures::stream::iter(vec![])).await.expect_err("empty stream");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let stream = futures::stream::iter(vec![chunk(&garbage, &garbage, &[], 0)]);
    let err = raft.install_snapshot(stream).await.expect_err("garbage snapshot header");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A body that is not a RaftRequest at all (wire types clash): gRPC's parse
    // error status, and nothing else happens.
    let mut grpc = tonic::client::Grpc::new(node.channel());
    grpc.ready().await.expect("channel ready");
    let not_a_raft_request = ringkv_proto::v1::NodeStatusResponse {
        id: 1,
        addr: "definitely not a from_node".into(),
        cluster_id: "x".repeat(100),
        replicas: vec![1, 2, 3],
        leading: vec![4],
        replica_status: vec![],
        ..Default::default()
    };
    let codec =
        tonic_prost::ProstCodec::<ringkv_proto::v1::NodeStatusResponse, ringkv_proto::v1::RaftReply>::default(
        );
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/ringkv.v1.Raft/AppendEntries");
    let err =
        grpc.unary(tonic::Request::new(not_a_raft_request), path, codec).await.expect_err("garbage body");
    assert_eq!(err.code(), Code::Internal, "gRPC reports protobuf parse errors as INTERNAL: {err:?}");

    // The node is unharmed.
    call(&cluster, KvRequest::Put(put_req("still", "alive"))).await.expect("put after garbage");
    assert!(get(&cluster, b"still").await.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_raft_pipe_frames_get_their_own_errors_and_the_pipe_stays_open() {
    let cluster = single_node(&[]).await;
    let node = &cluster.nodes[0];
    let mut raft = RaftClient::new(node.channel());
    let envelope = |shard, target, payload: &[u8]| RaftRequest {
        shard,
        from_node: 99,
        target_node: target,
        format: 1,
        payload: Bytes::copy_from_slice(payload),
    };
    let garbage = [0xffu8, 0x13, 0x37, 0x00, 0x42];
    // A vote of the real leader's term but another candidate: a valid frame the
    // node answers with a vote refusal (a reply, not an error).
    let vote = openraft::raft::VoteRequest { vote: openraft::Vote::new(0, 99u64), last_log_id: None };
    let vote = ringkv_node::codec::encode(&vote).expect("encode");
    let frame = |id, kind: RaftFrameKind, request| RaftFrame { id, kind: kind as i32, request };
    let frames = vec![
        frame(10, RaftFrameKind::AppendEntries, Some(envelope(1, 1, &garbage))),
        frame(11, RaftFrameKind::Vote, Some(envelope(1, 2, &garbage))),
        frame(12, RaftFrameKind::Vote, Some(envelope(999, 1, &garbage))),
        frame(13, RaftFrameKind::Unspecified, Some(envelope(1, 1, &garbage))),
        frame(14, RaftFrameKind::AppendEntries, None),
        frame(15, RaftFrameKind::Vote, Some(envelope(1, 1, &vote))),
    ];
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for f in frames {
        tx.send(f).expect("queue frame");
    }
    let mut rx = rx;
    let outgoing = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut replies = raft.pipe(outgoing).await.expect("open pipe").into_inner();
    let mut codes = std::collections::BTreeMap::new();
    while codes.len() < 6 {
        let reply = tokio::time::timeout(TIMEOUT, replies.message())
            .await
            .expect("a reply in time")
            .expect("the pipe stays open")
            .expect("a reply, not the end");
        assert!(codes.insert(reply.id, Code::from_i32(reply.code)).is_none(), "two replies for {}", reply.id);
    }
    let want = [
        (10, Code::InvalidArgument),
        (11, Code::FailedPrecondition),
        (12, Code::NotFound),
        (13, Code::InvalidArgument),
        (14, Code::InvalidArgument),
        (15, Code::Ok),
    ];
    assert_eq!(codes, want.into_iter().collect());
    drop(tx);
    // The node is unharmed.
    call(&cluster, KvRequest::Put(put_req("still", "alive"))).await.expect("put after garbage");
}
