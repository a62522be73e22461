//! Serving a node: open its storage, restart its replicas, and serve the KV, Admin
//! and Raft gRPC services, `grpc.health.v1` (kept by [`crate::health`]) and
//! server reflection on one listener until `shutdown` resolves.
//!
//! Takes its listener and shutdown future as parameters, so tests start many
//! nodes on port 0 in one process.

use std::future::Future;

use ringkv_proto::v1::admin_server::AdminServer;
use ringkv_proto::v1::kv_server::KvServer;
use ringkv_proto::v1::raft_server::RaftServer;
use tokio::net::TcpListener;

use crate::admin_service::AdminService;
use crate::config::NodeConfig;
use crate::error::Error;
use crate::kv_service::KvService;
use crate::metrics::NodeMetrics;
use crate::node::Node;
use crate::raft_service::RaftService;
use crate::transport::MAX_RAFT_MESSAGE_BYTES;

/// Runs a node on `listener` until `shutdown` resolves, then stops every Raft
/// group. Fails at start when the data directory cannot be opened or a hosted
/// replica's storage is damaged.
pub async fn serve(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let local = listener.local_addr().map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let max_request = config.max_request_bytes;
    let max_streams = config.max_streams_per_connection;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::InvalidArgument(format!("--metrics-listen {addr}: cannot listen there: {e}"))
        })?),
        None => None,
    };
    for warning in &config.security.warnings {
        tracing::warn!("security: {warning}");
    }
    crate::bootstrap::set_peer_credentials(config.security.outgoing.clone());
    let server_tls = config.security.server_tls.clone();
    let guard = ringkv_security::Guard::new(config.security.policy.clone());
    let node = Node::open(config).await?;
    tracing::info!(node = node.id(), %local, advertise = node.addr(), "serving");
    let mut registry = ringkv_metrics::Registry::default();
    let metrics = NodeMetrics::register(&mut registry, &node);
    let leaders = tokio::spawn(crate::metrics::watch_leaders(node.clone(), metrics.clone()));
    let expiry = tokio::spawn(crate::expiry::run(node.clone()));
    let memory = tokio::spawn(crate::memory::run(node.clone()));
    let driver = tokio::spawn(crate::driver::run(node.clone()));
    let join = match (node.config.join.clone(), node.cluster()) {
        (Some(seed), None) => {
            Some(tokio::spawn(join(node.id(), node.addr().to_string(), seed, node.client_options())))
        }
        _ => None,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection service: {e}")))?;

    // Tells the endless pipe streams (Raft and KV) to end once the graceful
    // shutdown starts; the server waits for every open stream.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    // Turns true at the shutdown signal, before the hand-off: health reports
    // NOT_SERVING from then on.
    let (leaving_tx, leaving) = tokio::sync::watch::channel(false);
    let health = tokio::spawn(crate::health::run(node.clone(), health, leaving));
    let exporter = metrics_listener.map(|listener| {
        let (refreshed, exported) = (node.clone(), metrics.clone());
        ringkv_metrics::spawn_exporter(
            listener,
            registry,
            move || exported.refresh(&refreshed),
            stopping.clone(),
        )
    });
    // On the shutdown signal, leaderships move away first (the server still
    // serves the transfer steps and redirects), then the streams end.
    let handing_off = node.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = leaving_tx.send(true);
        crate::handoff::leaderships(&handing_off).await;
        let _ = stopping_tx.send(true);
    };
    let mut server =
        tonic::transport::Server::builder().tcp_nodelay(true).max_concurrent_streams(max_streams);
    if let Some(tls) = server_tls {
        server = server.tls_config(tls).map_err(|e| Error::InvalidArgument(format!("TLS settings: {e}")))?;
    }
    // Every call passes the guard first: a refused one reaches no handler.
    let served = server
        .layer(guard)
        .layer(ringkv_security::limits::RequestLimit)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            KvServer::new(KvService::new(node.clone(), stopping.clone(), metrics.requests.clone()))
                .max_decoding_message_size(max_request),
        )
        .add_service(
            // Restore batches carry values up to the KV limit.
            AdminServer::new(AdminService::new(node.clone())).max_decoding_message_size(max_request),
        )
        .add_service(
            RaftServer::new(RaftService::new(node.clone(), stopping))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;

    expiry.abort();
    memory.abort();
    driver.abort();
    health.abort();
    leaders.abort();
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    if let Some(join) = join {
        join.abort();
    }
    node.shutdown().await;
    tracing::info!(node = node.id(), "stopped");
    served.map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}

/// Registers this node with the cluster behind `seed` (a router or node),
/// retrying with backoff until the cluster answers.
async fn join(id: u64, addr: String, seed: String, options: ringkv_client::ClientOptions) {
    let client = match ringkv_client::Client::connect(vec![seed.clone()], options) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(%seed, "cannot join: {e}");
            return;
        }
    };
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match client.add_node(id, &addr).await {
            Ok(joined) => {
                tracing::info!(
                    cluster = joined.cluster_id,
                    epoch = joined.epoch,
                    "joined the cluster as node {id}"
                );
                return;
            }
            Err(ringkv_client::Error::AlreadyExists(message)) => {
                tracing::error!(%seed, "cannot join: {message}");
                return;
            }
            Err(e) => tracing::warn!(%seed, "joining: {e}; retrying in {backoff:?}"),
        }
        // Retry backoff: the cluster may not be reachable yet.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}
