//! The slice of etcd's v3 gRPC API the benchmark uses (KV Range / Put /
//! DeleteRange, Lease Grant), written out by hand: the `etcd-client` crate
//! compiles etcd's protos with `protoc`, which a fresh machine lacks. Field
//! numbers are etcd's (`api/etcdserverpb/rpc.proto`, `api/mvccpb/kv.proto`);
//! fields the benchmark does not need are left out (prost skips them).

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Serve from the member's local state (no ReadIndex).
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// The store's revision when the request was served.
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CompactionRequest {
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Reply only once the compaction has been applied to the backend.
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CompactionResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DefragmentRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DefragmentResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// An etcd client over one HTTP/2 channel (cheap to clone; clones multiplex).
#[derive(Clone)]
pub struct Etcd {
    grpc: tonic::client::Grpc<Channel>,
}

impl Etcd {
    /// Connects to the first address (give the leader first to send to it).
    pub async fn connect(addrs: &[String]) -> Result<Etcd, String> {
        let addr = addrs.first().ok_or("etcd: no address")?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("etcd address {addr}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("etcd at {addr}: {e}"))?;
        Ok(Etcd { grpc: tonic::client::Grpc::new(channel) })
    }

    async fn unary<Req, Resp>(&mut self, path: &'static str, req: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(|e| format!("etcd: {e}"))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.grpc
            .unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("etcd: {}: {}", s.code(), s.message()))
    }

    pub async fn range(&mut self, key: &[u8], serializable: bool) -> Result<RangeResponse, String> {
        self.unary("/etcdserverpb.KV/Range", RangeRequest { key: key.to_vec(), serializable }).await
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), String> {
        let req = PutRequest { key: key.to_vec(), value: value.to_vec(), lease };
        self.unary::<_, PutResponse>("/etcdserverpb.KV/Put", req).await.map(|_| ())
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<(), String> {
        let req = DeleteRangeRequest { key: key.to_vec() };
        self.unary::<_, DeleteRangeResponse>("/etcdserverpb.KV/DeleteRange", req).await.map(|_| ())
    }

    /// Drops every revision older than the current one and waits until the
    /// backend has dropped them.
    pub async fn compact(&mut self) -> Result<(), String> {
        let now = self.range(b"\0", true).await?.header.map_or(0, |h| h.revision);
        let req = CompactionRequest { revision: now, physical: true };
        match self.unary::<_, CompactionResponse>("/etcdserverpb.KV/Compact", req).await {
            // Nothing was written since the last compaction.
            Err(e) if e.contains("required revision has been compacted") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Rewrites this member's backend file without the space freed by compaction.
    pub async fn defragment(&mut self) -> Result<(), String> {
        self.unary::<_, DefragmentResponse>("/etcdserverpb.Maintenance/Defragment", DefragmentRequest {})
            .await
            .map(|_| ())
    }

    pub async fn lease_grant(&mut self, ttl_secs: i64) -> Result<i64, String> {
        let granted: LeaseGrantResponse =
            self.unary("/etcdserverpb.Lease/LeaseGrant", LeaseGrantRequest { ttl: ttl_secs }).await?;
        if granted.error.is_empty() { Ok(granted.id) } else { Err(format!("etcd lease: {}", granted.error)) }
    }
}
