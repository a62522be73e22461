//! # ringkv-metrics
//!
//! What nodes and routers expose to Prometheus, and the HTTP endpoint that
//! serves it (`GET /metrics`, OpenMetrics text, on the port of
//! `--metrics-listen`).
//!
//! The metric families shared by both binaries live here ([`Requests`]); each
//! binary registers its own as well (a node's per-shard Raft and storage
//! numbers, a router's retries) into the same [`Registry`]. Values that are
//! cheap to read but costly to push (a shard's term, applied index, key
//! count) are refreshed at scrape time by the `refresh` callback given to
//! [`serve`]. Label sets are bounded: rpc names and status codes are fixed
//! lists, shards are at most the cluster's shard count.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The rpc: `get`, `put`, `watch`, ...
    pub rpc: &'static str,
    /// The gRPC status code it ended with: `OK`, `UNAVAILABLE`, ...
    pub code: &'static str,
}

/// The label of one rpc.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: &'static str,
}

/// One shard's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u32,
}

/// Histogram buckets for latencies: 100 µs to ~6.5 s, doubling.
pub fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Requests served, by rpc and outcome, and their latency by rpc.
#[derive(Clone)]
pub struct Requests {
    total: Family<RequestLabels, Counter>,
    seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl Requests {
    /// Registers `ringkv_requests_total` and `ringkv_request_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Requests {
        let requests = Requests {
            total: Family::default(),
            seconds: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
        };
        registry.register(
            "ringkv_requests",
            "KV requests served (a piped call counts as its rpc), by rpc and gRPC status code",
            requests.total.clone(),
        );
        registry.register(
            "ringkv_request_duration_seconds",
            "Time to answer a KV request, by rpc (for a stream: to open it)",
            requests.seconds.clone(),
        );
        requests
    }

    /// Counts one request of `rpc` that took `elapsed` and ended with `code`.
    pub fn record(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        self.total.get_or_create(&RequestLabels { rpc, code: code_name(code) }).inc();
        self.seconds.get_or_create(&RpcLabels { rpc }).observe(elapsed.as_secs_f64());
    }

    /// Runs `call`, then records it as one request of `rpc`.
    pub async fn observe<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let started = std::time::Instant::now();
        let result = call.await;
        let code = result.as_ref().map_or_else(|status| status.code(), |_| tonic::Code::Ok);
        self.record(rpc, code, started.elapsed());
        result
    }
}

/// A status code as Prometheus labels show it (gRPC's canonical names).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What the endpoint renders: refresh the scrape-time values, then encode.
struct Exposition {
    registry: Registry,
    refresh: Box<dyn Fn() + Send + Sync>,
}

async fn metrics(State(exposition): State<Arc<Exposition>>) -> impl IntoResponse {
    (exposition.refresh)();
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &exposition.registry) {
        tracing::error!(%err, "encoding metrics");
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves: `refresh`
/// runs first on every scrape, then `registry` is encoded.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    refresh: impl Fn() + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let exposition = Arc::new(Exposition { registry, refresh: Box::new(refresh) });
    let app = Router::new().route("/metrics", get(metrics)).with_state(exposition);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// [`serve`] on a task of its own, until `stopping` turns true (a server's
/// graceful shutdown).
pub fn spawn_exporter(
    listener: TcpListener,
    registry: Registry,
    refresh: impl Fn() + Send + Sync + 'static,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let until_stopping = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tokio::spawn(serve(listener, registry, refresh, until_stopping))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_rpc_and_code_and_served_as_text() {
        let mut registry = Registry::default();
        let requests = Requests::register(&mut registry);
        requests.observe("get", async { Ok::<_, tonic::Status>(()) }).await.expect("ok");
        let failed = requests.observe("put", async { Err::<(), _>(tonic::Status::unavailable("x")) }).await;
        assert!(failed.is_err());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, || {}, async {
            let _ = stopped.await;
        }));
        // A plain HTTP/1.0 request, read to the end.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        socket.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("write");
        let mut response = String::new();
        socket.read_to_string(&mut response).await.expect("read");
        assert!(response.contains(r#"ringkv_requests_total{rpc="get",code="OK"} 1"#), "{response}");
        assert!(response.contains(r#"ringkv_requests_total{rpc="put",code="UNAVAILABLE"} 1"#), "{response}");
        assert!(response.contains(r#"ringkv_request_duration_seconds_count{rpc="get"} 1"#), "{response}");
        let _ = stop.send(());
        server.await.expect("server task").expect("served");
    }
}
