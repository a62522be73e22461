//! The router's `KV` service: validate, hand to the client library, translate the
//! answer. Validation happens here too (not only on the node) so that a bad
//! request is refused before any routing work and with the same message.

use ringkv_client::{Client, Condition, Consistency, PutOptions};
use ringkv_core::limits::{check_key, check_request_id, check_ttl};
use ringkv_metrics::Requests;
use ringkv_proto::v1::kv_server::Kv;
use ringkv_proto::v1::{
    DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest, IncrementResponse, KvFrame,
    PublishRequest, PublishResponse, PutRequest, PutResponse, SubscribeRequest, TouchRequest, TouchResponse,
    put_request,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::error::to_status;
use crate::hub::{self, Hub};
use crate::watch_stream;

/// The router's KV service.
#[derive(Clone)]
pub struct KvRouter {
    client: Client,
    /// Turns true when the graceful shutdown starts: KV pipes stop reading,
    /// watches and subscriptions end.
    stopping: watch::Receiver<bool>,
    hub: Hub,
    /// Counts and times every call (piped ones too: the pipe calls these).
    requests: Requests,
}

impl KvRouter {
    pub fn new(client: Client, stopping: watch::Receiver<bool>, requests: Requests) -> Self {
        let hub = Hub::new(client.clone(), stopping.clone());
        KvRouter { client, stopping, hub, requests }
    }

    /// The pub/sub hub (for its counters).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

fn invalid(e: ringkv_core::limits::InvalidArgument) -> Status {
    Status::invalid_argument(e.to_string())
}

impl KvRouter {
    /// The client for one write: with the caller's request id if it sent one
    /// (so its own retries and ours apply once), else the client library picks
    /// a fresh id.
    fn for_write(&self, request_id: bytes::Bytes) -> Result<Client, Status> {
        check_request_id(&request_id).map_err(invalid)?;
        Ok(if request_id.is_empty() { self.client.clone() } else { self.client.with_request_id(request_id) })
    }
}

/// Validates a wire TTL (negative or over ten years is refused).
fn ttl(ttl_ms: i64) -> Result<u64, Status> {
    check_ttl(ttl_ms).map_err(invalid)
}

#[tonic::async_trait]
impl Kv for KvRouter {
    type WatchStream = watch_stream::Stream;

    async fn watch(
        &self,
        request: Request<ringkv_proto::v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.requests
            .observe("watch", async move {
                let stream =
                    watch_stream::open(&self.client, request.into_inner(), self.stopping.clone()).await?;
                Ok(Response::new(stream))
            })
            .await
    }

    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        self.requests
            .observe("publish", async move {
                let req = request.into_inner();
                check_key(&req.channel).map_err(invalid)?;
                let client = self.for_write(req.request_id)?;
                let seq = client.publish(req.channel, req.payload).await.map_err(to_status)?;
                Ok(Response::new(PublishResponse { seq }))
            })
            .await
    }

    type SubscribeStream = hub::Stream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.requests
            .observe("subscribe", async move {
                let req = request.into_inner();
                Ok(Response::new(self.hub.subscribe(req.channel, req.from_seq).await?))
            })
            .await
    }

    type PipeStream = ringkv_client::kv_pipe::Replies;

    async fn pipe(&self, request: Request<Streaming<KvFrame>>) -> Result<Response<Self::PipeStream>, Status> {
        let replies =
            ringkv_client::kv_pipe::serve(self.clone(), request.into_inner(), self.stopping.clone());
        Ok(Response::new(replies))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.requests
            .observe("get", async move {
                let req = request.into_inner();
                check_key(&req.key).map_err(invalid)?;
                let consistency = match ringkv_proto::v1::Consistency::try_from(req.consistency) {
                    Ok(ringkv_proto::v1::Consistency::Linearizable) => Consistency::Linearizable,
                    Ok(ringkv_proto::v1::Consistency::Stale) => Consistency::Stale,
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "unknown consistency {}",
                            req.consistency
                        )));
                    }
                };
                let touch_ttl_ms = ttl(req.touch_ttl_ms)?;
                let found = if touch_ttl_ms == 0 {
                    self.client.get(req.key, consistency).await
                } else if consistency == Consistency::Stale {
                    return Err(Status::invalid_argument(
                        "touch_ttl_ms needs a linearizable read, not STALE",
                    ));
                } else {
                    self.client.get_and_touch(req.key, touch_ttl_ms).await
                };
                let found = found.map_err(to_status)?;
                Ok(Response::new(match found {
                    Some(r) => GetResponse {
                        found: true,
                        value: r.value,
                        version: r.version,
                        ttl_ms: r.ttl_ms.unwrap_or(0),
                    },
                    None => GetResponse::default(),
                }))
            })
            .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.requests
            .observe("put", async move {
                let req = request.into_inner();
                let condition = match req.condition {
                    None | Some(put_request::Condition::IfAbsent(false)) => Condition::None,
                    Some(put_request::Condition::IfAbsent(true)) => Condition::IfAbsent,
                    Some(put_request::Condition::IfVersion(v)) => Condition::IfVersion(v),
                };
                let options = PutOptions { ttl_ms: ttl(req.ttl_ms)?, condition };
                let client = self.for_write(req.request_id)?;
                let r = client.put(req.key, req.value, options).await.map_err(to_status)?;
                Ok(Response::new(PutResponse { succeeded: r.succeeded, version: r.version }))
            })
            .await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.requests
            .observe("delete", async move {
                let req = request.into_inner();
                let client = self.for_write(req.request_id)?;
                let r = client.delete(req.key, req.if_version).await.map_err(to_status)?;
                Ok(Response::new(DeleteResponse { deleted: r.deleted, version: r.version }))
            })
            .await
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        self.requests
            .observe("touch", async move {
                let req = request.into_inner();
                let client = self.for_write(req.request_id)?;
                let r = client.touch(req.key, ttl(req.ttl_ms)?).await.map_err(to_status)?;
                Ok(Response::new(TouchResponse { found: r.found, ttl_ms: r.ttl_ms.unwrap_or(0) }))
            })
            .await
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        self.requests
            .observe("increment", async move {
                let req = request.into_inner();
                let client = self.for_write(req.request_id)?;
                let r = client.increment(req.key, req.delta, ttl(req.ttl_ms)?).await.map_err(to_status)?;
                Ok(Response::new(IncrementResponse { value: r.value, version: r.version }))
            })
            .await
    }
}
