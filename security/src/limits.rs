//! The answer to a request larger than the server's limit.
//!
//! tonic refuses a message over `max_decoding_message_size` with
//! `OUT_OF_RANGE`; gRPC's convention (grpc-go, grpc-java) and our callers
//! expect `RESOURCE_EXHAUSTED` for "larger than this server accepts", which
//! also tells a client not to retry it unchanged. This layer rewrites exactly
//! that answer (recognised by tonic's message, pinned by a test on a real
//! server) and leaves every other response alone. Nothing was decoded, so
//! nothing was done.
//!
//! In a request stream tonic reports an oversized message to the handler
//! reading it; [`stream_read_failed`] gives the handler the same answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;

/// What tonic's decoder says of an oversized message.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// The tower layer (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLimit;

impl<S> tower::Layer<S> for RequestLimit {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited { inner }
    }
}

/// A service behind [`RequestLimit`].
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            rewrite_too_large(response.headers_mut());
            Ok(response)
        })
    }
}

/// `RESOURCE_EXHAUSTED` naming the setting, if `status` is tonic's refusal of
/// an oversized message; `what` names the message.
fn too_large(status: &tonic::Status, what: &str) -> Option<tonic::Status> {
    if status.code() != tonic::Code::OutOfRange || !status.message().contains(TONIC_TOO_LARGE) {
        return None;
    }
    let detail = status.message().trim_start_matches("Error, ");
    Some(tonic::Status::resource_exhausted(format!(
        "{what} too large for this server (its --max-request-bytes): {detail}"
    )))
}

/// What a server answers when the next message of a request stream could not
/// be read (`status`, from tonic's `Streaming`): an oversized message is
/// `RESOURCE_EXHAUSTED` naming the setting, as in a unary call; anything else
/// (a broken connection, a malformed message) keeps its status. `what` names
/// the message for the caller, e.g. "the KV.Pipe frame after frame 41".
pub fn stream_read_failed(status: tonic::Status, what: &str) -> tonic::Status {
    too_large(&status, what).unwrap_or(status)
}

/// Turns a trailers-only `OUT_OF_RANGE` "message too large" answer into
/// `RESOURCE_EXHAUSTED` with a message naming the setting.
fn rewrite_too_large(headers: &mut http::HeaderMap) {
    let Some(status) = tonic::Status::from_header_map(headers) else { return };
    let Some(status) = too_large(&status, "request") else { return };
    let mut rewritten = http::HeaderMap::new();
    if status.add_header(&mut rewritten).is_ok() {
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        headers.extend(rewritten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &str, message: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", status.parse().expect("valid"));
        headers.insert("grpc-message", message.parse().expect("valid"));
        headers
    }

    #[test]
    fn only_tonics_too_large_answer_is_rewritten() {
        let mut too_large = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205000000%20bytes,%20the%20limit%20is:%204194304%20bytes",
        );
        rewrite_too_large(&mut too_large);
        assert_eq!(too_large.get("grpc-status").expect("status"), "8");
        let status = tonic::Status::from_header_map(&too_large).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-request-bytes")
                && status.message().contains("found 5000000 bytes"),
            "{status:?}"
        );

        for (status, message) in
            [("11", "watch%20start%20is%20too%20old"), ("3", "decoded%20message%20length%20too%20large")]
        {
            let mut other = headers(status, message);
            rewrite_too_large(&mut other);
            assert_eq!(other.get("grpc-status").expect("status"), status);
            assert_eq!(other.get("grpc-message").expect("message"), message);
        }
    }

    #[test]
    fn an_oversized_stream_message_is_resource_exhausted_and_other_failures_keep_their_status() {
        let oversized = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 200000 bytes, the limit is: 100000 bytes",
        );
        let status = stream_read_failed(oversized, "the frame after frame 3");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().starts_with("the frame after frame 3 too large for this server")
                && status.message().contains("--max-request-bytes")
                && status.message().contains("found 200000 bytes"),
            "{status:?}"
        );
        let broken = stream_read_failed(tonic::Status::unavailable("connection reset"), "a frame");
        assert_eq!((broken.code(), broken.message()), (tonic::Code::Unavailable, "connection reset"));
    }
}
