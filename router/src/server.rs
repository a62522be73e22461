//! Serving a router: the KV and Admin services, `grpc.health.v1` and server
//! reflection on one listener until `shutdown` resolves. Takes its listener and
//! shutdown future as parameters so tests run many routers on port 0.

use std::future::Future;
use std::time::Duration;

use ringkv_client::{Client, ClientOptions, Routing};
use ringkv_proto::v1::admin_server::AdminServer;
use ringkv_proto::v1::kv_server::KvServer;
use tokio::net::TcpListener;

use crate::admin::AdminRouter;
use crate::kv::KvRouter;
use crate::metrics::RouterMetrics;

/// What a router needs to run.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Node addresses to learn the cluster from (any subset of the nodes works).
    pub seeds: Vec<String>,
    /// Deadline of each forwarded request, retries included.
    pub request_timeout: Duration,
    /// Largest value forwarded (the nodes' own limit still applies).
    pub max_value_bytes: usize,
    /// Largest request accepted (gRPC message); larger: RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// HTTP/2 streams one client connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Where to serve Prometheus `/metrics` over HTTP; `None` = not at all.
    pub metrics_listen: Option<String>,
    /// TLS, who may call what, and the router's credentials towards the nodes.
    pub security: ringkv_security::Security,
}

impl RouterConfig {
    pub fn new(seeds: Vec<String>) -> Self {
        RouterConfig {
            seeds,
            request_timeout: Duration::from_secs(10),
            max_value_bytes: ringkv_core::limits::DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: ringkv_core::limits::DEFAULT_MAX_REQUEST_BYTES,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            metrics_listen: None,
            security: ringkv_security::Security::default(),
        }
    }
}

/// Default HTTP/2 streams per client connection: an application's watches and
/// subscriptions through one router connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// Runs a router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: RouterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    if config.seeds.is_empty() {
        return Err("a router needs at least one node address (--nodes)".into());
    }
    let local = listener.local_addr().map_err(|e| format!("listener address: {e}"))?;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--metrics-listen {addr}: cannot listen there: {e}"))?,
        ),
        None => None,
    };
    let options = ClientOptions {
        request_timeout: config.request_timeout,
        max_value_bytes: config.max_value_bytes,
        // The seeds are nodes: route every request straight to its shard's leader.
        routing: Routing::Direct,
        credentials: config.security.outgoing.clone(),
        ..ClientOptions::default()
    };
    for warning in &config.security.warnings {
        tracing::warn!("security: {warning}");
    }
    let client = Client::connect(config.seeds.clone(), options).map_err(|e| e.to_string())?;
    let mut registry = ringkv_metrics::Registry::default();
    let metrics = RouterMetrics::register(&mut registry);
    let watcher = tokio::spawn(crate::watcher::run(client.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminRouter>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection service: {e}"))?;
    let max_message = config.max_request_bytes;

    // Tells the KV pipe streams to stop reading once the graceful shutdown
    // starts; the server waits for every open stream.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let health = tokio::spawn(report_health(client.clone(), health, stopping.clone()));
    let exporter = metrics_listener.map(|listener| {
        let (refreshed, exported) = (client.clone(), metrics.clone());
        ringkv_metrics::spawn_exporter(
            listener,
            registry,
            move || exported.refresh(&refreshed),
            stopping.clone(),
        )
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    tracing::info!(%local, seeds = ?config.seeds, "router serving");
    let mut server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(config.max_streams_per_connection);
    if let Some(tls) = config.security.server_tls.clone() {
        server = server.tls_config(tls).map_err(|e| format!("TLS settings: {e}"))?;
    }
    // Every call passes the guard first: a refused one reaches no handler and
    // is never forwarded.
    let served = server
        .layer(ringkv_security::Guard::new(config.security.policy.clone()))
        .layer(ringkv_security::limits::RequestLimit)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            KvServer::new(KvRouter::new(client.clone(), stopping, metrics.requests.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(AdminServer::new(AdminRouter::new(client)).max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    watcher.abort();
    health.abort();
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    tracing::info!(%local, "router stopped");
    served.map_err(|e| format!("gRPC server: {e}"))
}

/// Resolves once the graceful shutdown started (never, if its sender is gone
/// without starting it).
pub(crate) async fn until_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps `grpc.health.v1` current: the server (`""`) and `KV` are `SERVING`
/// once the router has a cluster map to route by, until the graceful
/// shutdown starts; `Admin` always.
async fn report_health(
    client: Client,
    reporter: tonic_health::server::HealthReporter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let set = |serving: bool| {
        let reporter = reporter.clone();
        async move {
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            reporter.set_service_status("ringkv.v1.KV", status).await;
        }
    };
    set(false).await;
    let mut serving = false;
    loop {
        if client.epoch().is_some() != serving {
            serving = !serving;
            set(serving).await;
        }
        tokio::select! {
            // A periodic check: the map arrives through the map watcher.
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = until_stopping(&mut stopping) => break,
        }
    }
    set(false).await;
}
