//! `KV.Pipe`: the KV calls multiplexed on one stream per connection (see
//! [`crate::pipe`] for why). Both ends live here: [`call`] sends one call, on
//! the pipe when its request is small and as the plain unary call otherwise;
//! [`serve`] answers a pipe's frames with any implementation of the `KV`
//! service, so a node and a router serve pipes exactly as they serve unary
//! calls.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::kv_server::Kv;
use ringkv_proto::v1::{
    DeleteRequest, DeleteResponse, GetRequest, GetResponse, IncrementRequest, IncrementResponse, KvFrame,
    KvFrameReply, KvMethod, PutRequest, PutResponse, TouchRequest, TouchResponse,
};
use ringkv_security::Conn;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Response, Status, Streaming};

use crate::pipe::{Pipe, PipeReply};

/// A connection's KV pipe.
pub type KvPipe = Pipe<KvFrame>;

/// Requests up to this many encoded bytes go on the pipe; a larger one (a big
/// value) would hold up every call queued behind it, so it goes as its own
/// unary call.
pub const MAX_PIPED_REQUEST_BYTES: usize = 64 << 10;

/// The longest a server works on one frame when the frame names no deadline.
pub const MAX_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Frames one pipe may have in progress on the server; past it, the server
/// reads no more frames until one finishes (HTTP/2 flow control then holds the
/// client back), as a connection's stream limit bounds unary calls.
pub const MAX_FRAMES_IN_PROGRESS: usize = 1024;

impl PipeReply for KvFrameReply {
    fn id(&self) -> u64 {
        self.id
    }

    fn into_result(self) -> Result<Bytes, Status> {
        if self.code == 0 {
            Ok(self.response)
        } else {
            Err(Status::with_details(tonic::Code::from_i32(self.code), self.message, self.details))
        }
    }

    fn goodbye(&self) -> Option<u64> {
        (self.id == 0).then_some(self.last_read_id)
    }
}

/// A KV request type: which method it calls, on the pipe and as a unary call.
pub trait KvRequest: Message + Clone + Send + Sync + 'static {
    type Response: Message + Default + Send + Sync + 'static;
    const METHOD: KvMethod;
    const PATH: &'static str;
}

macro_rules! kv_request {
    ($request:ty, $response:ty, $method:ident, $path:literal) => {
        impl KvRequest for $request {
            type Response = $response;
            const METHOD: KvMethod = KvMethod::$method;
            const PATH: &'static str = $path;
        }
    };
}

kv_request!(GetRequest, GetResponse, Get, "/ringkv.v1.KV/Get");
kv_request!(PutRequest, PutResponse, Put, "/ringkv.v1.KV/Put");
kv_request!(DeleteRequest, DeleteResponse, Delete, "/ringkv.v1.KV/Delete");
kv_request!(TouchRequest, TouchResponse, Touch, "/ringkv.v1.KV/Touch");
kv_request!(IncrementRequest, IncrementResponse, Increment, "/ringkv.v1.KV/Increment");

/// Opens a KV pipe to `addr` over `channel`; replies up to
/// `max_message_bytes` are accepted.
pub fn open(channel: Conn, addr: &str, max_message_bytes: usize) -> Arc<KvPipe> {
    let mut client = KvClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    Pipe::open(format!("the KV pipe to {addr}"), move |outgoing| async move { client.pipe(outgoing).await })
}

/// Makes one call with at most `timeout`: on `pipe` when the request is small,
/// else as the unary call on `channel`.
pub async fn call<R: KvRequest>(
    pipe: &KvPipe,
    channel: Conn,
    request: R,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<R::Response, Status> {
    if request.encoded_len() > MAX_PIPED_REQUEST_BYTES {
        return unary(channel, request, timeout, max_message_bytes).await;
    }
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    let request = Bytes::from(request.encode_to_vec());
    let frame = |id| KvFrame { id, method: R::METHOD as i32, request, timeout_ms };
    let response = pipe.call(frame, timeout).await?;
    R::Response::decode(response)
        .map_err(|e| Status::internal(format!("undecodable {:?} reply on a KV pipe: {e}", R::METHOD)))
}

/// The unary call of `request`, with `timeout` as its `grpc-timeout`.
async fn unary<R: KvRequest>(
    channel: Conn,
    request: R,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<R::Response, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let mut request = Request::new(request);
    request.set_timeout(timeout);
    let codec = tonic_prost::ProstCodec::<R, R::Response>::default();
    grpc.unary(request, PathAndQuery::from_static(R::PATH), codec).await.map(Response::into_inner)
}

/// The replies of one served pipe.
pub type Replies = Pin<Box<dyn futures::Stream<Item = Result<KvFrameReply, Status>> + Send>>;

/// Serves one `KV.Pipe` stream: every frame is run as the unary call of its
/// method on `service`, concurrently, and answered in the order the calls
/// finish. Once `stopping` turns true (graceful shutdown), no more frames are
/// read, the caller gets a goodbye naming the last frame read, and the reply
/// stream ends after the frames read are answered. A frame that cannot be
/// read (one over the server's `--max-request-bytes`, a malformed one) also
/// stops the reading: the frames read are answered, and the stream then ends
/// with why (`RESOURCE_EXHAUSTED` for a frame too large), naming the last
/// frame read; nothing after it was run.
pub fn serve<S: Kv + Clone>(
    service: S,
    mut frames: Streaming<KvFrame>,
    mut stopping: watch::Receiver<bool>,
) -> Replies {
    let (replies, outgoing) = mpsc::unbounded_channel::<Result<KvFrameReply, Status>>();
    let in_progress = Arc::new(Semaphore::new(MAX_FRAMES_IN_PROGRESS));
    tokio::spawn(async move {
        let mut last_read = 0;
        let unreadable = loop {
            let permit = tokio::select! {
                permit = in_progress.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = stopping.wait_for(|stop| *stop) => break None,
            };
            let frame = tokio::select! {
                frame = frames.message() => match frame {
                    Ok(Some(frame)) => frame,
                    // The caller closed its side.
                    Ok(None) => return,
                    Err(status) => break Some(status),
                },
                _ = stopping.wait_for(|stop| *stop) => break None,
            };
            last_read = frame.id;
            let (service, replies) = (service.clone(), replies.clone());
            tokio::spawn(async move {
                let reply = answer(&service, frame).await;
                // The stream may be gone (connection closed): nobody to answer.
                let _ = replies.send(Ok(reply));
                // Released only once the reply is queued: a reader waiting for
                // every permit then ends the stream after this reply.
                drop(permit);
            });
        };
        let Some(status) = unreadable else {
            let _ = replies.send(Ok(KvFrameReply { id: 0, last_read_id: last_read, ..Default::default() }));
            return;
        };
        // Every frame read is answered before the stream ends with the error
        // (on a lost connection, nobody reads either).
        let all = u32::try_from(MAX_FRAMES_IN_PROGRESS).expect("a small constant");
        let _answered = in_progress.acquire_many(all).await.expect("the semaphore is never closed");
        let what = format!("the KV.Pipe frame after frame {last_read}");
        let status = ringkv_security::limits::stream_read_failed(status, &what);
        let _ = replies.send(Err(Status::new(
            status.code(),
            format!("{}; no frame after frame {last_read} was run", status.message()),
        )));
    });
    // Ends when every sender is gone: the reader above and each frame's task.
    Box::pin(futures::stream::unfold(outgoing, |mut outgoing| async move {
        outgoing.recv().await.map(|reply| (reply, outgoing))
    }))
}

/// Runs one frame's call within its deadline.
async fn answer<S: Kv>(service: &S, frame: KvFrame) -> KvFrameReply {
    let timeout = match frame.timeout_ms {
        0 => MAX_FRAME_TIMEOUT,
        ms => Duration::from_millis(ms).min(MAX_FRAME_TIMEOUT),
    };
    let result = match tokio::time::timeout(timeout, dispatch(service, frame.method, frame.request)).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!("not answered within the call's {timeout:?}"))),
    };
    match result {
        Ok(response) => KvFrameReply { id: frame.id, response, ..Default::default() },
        Err(status) => KvFrameReply {
            id: frame.id,
            code: status.code() as i32,
            message: status.message().to_string(),
            details: Bytes::copy_from_slice(status.details()),
            ..Default::default()
        },
    }
}

async fn dispatch<S: Kv>(service: &S, method: i32, request: Bytes) -> Result<Bytes, Status> {
    match KvMethod::try_from(method) {
        Ok(KvMethod::Get) => encode(service.get(decode(request)?).await?),
        Ok(KvMethod::Put) => encode(service.put(decode(request)?).await?),
        Ok(KvMethod::Delete) => encode(service.delete(decode(request)?).await?),
        Ok(KvMethod::Touch) => encode(service.touch(decode(request)?).await?),
        Ok(KvMethod::Increment) => encode(service.increment(decode(request)?).await?),
        Ok(KvMethod::Unspecified) | Err(_) => {
            Err(Status::unimplemented(format!("KV pipe: unknown method {method}")))
        }
    }
}

fn decode<T: Message + Default>(bytes: Bytes) -> Result<Request<T>, Status> {
    T::decode(bytes)
        .map(Request::new)
        .map_err(|e| Status::invalid_argument(format!("KV pipe: undecodable request: {e}")))
}

fn encode<T: Message>(response: Response<T>) -> Result<Bytes, Status> {
    Ok(response.into_inner().encode_to_vec().into())
}
