//! `cluster init`: forming a new cluster from empty nodes (DESIGN §5 "Create").
//!
//! Run by whichever node receives `Admin.InitCluster`:
//! 1. Validate the request, and refuse if this node already belongs to a cluster.
//! 2. Ask every listed node for its status: each must answer with the id it was
//!    listed under and belong to no cluster yet. This is what makes a second
//!    `cluster init` a clear refusal instead of a second cluster.
//! 3. Place the meta shard (up to 3 nodes) and every data shard on the ring.
//! 4. Create every replica (empty), then initialize each shard's Raft group on its
//!    first replica with all its voters.
//! 5. Install the cluster map (epoch 1) on the meta shard through its leader.
//!
//! ## Caveats / not done yet
//! - Not resumable: if a node dies half way, the nodes that already joined refuse a
//!   second init; wipe their data directories and run it again.
//! - Two concurrent inits over overlapping nodes are refused by whichever node
//!   sees the second cluster id, but may leave both half-formed.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use ringkv_core::placement::{self, PlacementNode};
use ringkv_core::{ClusterMap, META_SHARD, NodeId, NodeInfo, NodeState};
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::{
    CreateReplicaRequest, InitClusterRequest, InitClusterResponse, InitializeShardRequest, NodeAddress,
    NodeStatusRequest, PutClusterMapRequest,
};
use ringkv_security::{Conn, Credentials};

use crate::codec;
use crate::error::Error;
use crate::node::Node;

/// Shards per cluster when the request says 0.
pub const DEFAULT_SHARDS: u32 = 32;
/// Replicas per shard when the request says 0.
pub const DEFAULT_REPLICAS: u32 = 3;
/// Most shards a cluster may be created with.
pub const MAX_SHARDS: u32 = 4096;
/// Meta shard replicas (fewer when the cluster has fewer nodes).
pub const META_REPLICAS: usize = 3;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const MAP_INSTALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The credentials (TLS, peer token) of this process's calls to other nodes'
/// Admin service. Set once by `server::serve` before anything calls a peer;
/// a process-wide value because those calls are made deep in planning and
/// rebalancing code that only holds the cluster map, and a production process
/// runs one node. (Raft traffic takes its credentials from the node's
/// `PeerPool`.) Plain, without a token, until set.
static PEER_CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Sets the process-wide peer credentials; later calls (more nodes in one test process)
/// keep the first, which must then be the same.
pub fn set_peer_credentials(credentials: Credentials) {
    let _ = PEER_CREDENTIALS.set(credentials);
}

/// A lazily connecting Admin client for a peer, with this process's
/// credentials towards its peers.
pub fn admin_client(addr: &str) -> Result<AdminClient<Conn>, Error> {
    let credentials = PEER_CREDENTIALS.get_or_init(Credentials::default);
    let endpoint = credentials
        .endpoint(addr)
        .map_err(|e| Error::InvalidArgument(format!("bad node address {addr:?}: {e}")))?;
    Ok(AdminClient::new(
        credentials.connect_lazy(endpoint.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true)),
    ))
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(STEP_TIMEOUT);
    req
}

/// The checked shape of an init request.
struct Plan {
    nodes: BTreeMap<NodeId, String>,
    shards: u32,
    replicas: u32,
}

fn validate(req: &InitClusterRequest) -> Result<Plan, Error> {
    if req.nodes.is_empty() {
        return Err(Error::InvalidArgument("--nodes lists no node".into()));
    }
    let mut nodes = BTreeMap::new();
    let mut addrs = BTreeSet::new();
    for n in &req.nodes {
        if n.id == 0 {
            return Err(Error::InvalidArgument("node ids must be greater than 0".into()));
        }
        if n.addr.is_empty() {
            return Err(Error::InvalidArgument(format!("node {} has no address", n.id)));
        }
        if nodes.insert(n.id, n.addr.clone()).is_some() {
            return Err(Error::InvalidArgument(format!("node id {} is listed twice", n.id)));
        }
        if !addrs.insert(n.addr.clone()) {
            return Err(Error::InvalidArgument(format!("address {} is listed twice", n.addr)));
        }
    }
    let shards = if req.shards == 0 { DEFAULT_SHARDS } else { req.shards };
    if shards > MAX_SHARDS {
        return Err(Error::InvalidArgument(format!("{shards} shards is over the limit of {MAX_SHARDS}")));
    }
    let replicas = if req.replicas == 0 { DEFAULT_REPLICAS } else { req.replicas };
    if replicas as usize > nodes.len() {
        return Err(Error::InvalidArgument(format!(
            "{replicas} replicas per shard need at least {replicas} nodes; {} listed",
            nodes.len()
        )));
    }
    Ok(Plan { nodes, shards, replicas })
}

/// A fresh random cluster id (64 bits from the std hasher's random keys, the
/// clock and the pid: no extra dependency for something this small).
fn new_cluster_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Forms a new cluster; see the module docs for the steps.
pub async fn init_cluster(node: &Node, req: InitClusterRequest) -> Result<InitClusterResponse, Error> {
    let plan = validate(&req)?;
    if let Some(cluster) = node.cluster() {
        return Err(Error::AlreadyExists(format!(
            "node {} already belongs to cluster {}; `cluster init` runs once per cluster",
            node.id(),
            cluster.cluster_id
        )));
    }
    let mut clients = BTreeMap::new();
    for (&id, addr) in &plan.nodes {
        clients.insert(id, admin_client(addr)?);
    }

    // Every node must be reachable, be who it is listed as, and be empty.
    let probes = clients.iter().map(|(&id, client)| {
        let mut client = client.clone();
        let addr = plan.nodes[&id].clone();
        async move {
            let status = client
                .node_status(timed(NodeStatusRequest {}))
                .await
                .map_err(|s| {
                    Error::Unavailable(format!("node {id} at {addr} did not answer: {}", s.message()))
                })?
                .into_inner();
            if status.id != id {
                return Err(Error::FailedPrecondition(format!(
                    "the node at {addr} is node {}, not node {id}",
                    status.id
                )));
            }
            if !status.cluster_id.is_empty() {
                return Err(Error::AlreadyExists(format!(
                    "node {id} at {addr} already belongs to cluster {}; `cluster init` runs once per cluster",
                    status.cluster_id
                )));
            }
            Ok(())
        }
    });
    for result in futures::future::join_all(probes).await {
        result?;
    }

    let cluster_id = new_cluster_id();
    let placement_nodes: Vec<PlacementNode> =
        plan.nodes.keys().map(|&id| PlacementNode::active(id)).collect();
    let placed = placement::place_all(&placement_nodes, plan.shards, plan.replicas as usize, META_REPLICAS);
    tracing::info!(%cluster_id, shards = plan.shards, replicas = plan.replicas, "forming cluster");

    // Create every replica (one RPC per replica; each node serializes its own).
    let creates =
        placed.iter().flat_map(|(&shard, members)| members.iter().map(move |&member| (shard, member)));
    let creates = creates.map(|(shard, member)| {
        let mut client = clients[&member].clone();
        let req = CreateReplicaRequest {
            target_node: member,
            cluster_id: cluster_id.clone(),
            shard_count: plan.shards,
            shard,
        };
        async move {
            client.create_replica(timed(req)).await.map_err(|s| {
                Error::Unavailable(format!("creating shard {shard} on node {member}: {}", s.message()))
            })
        }
    });
    for result in futures::future::join_all(creates).await {
        result?;
    }

    // Initialize every group on its first replica.
    let inits = placed.iter().map(|(&shard, members)| {
        let first = members[0];
        let mut client = clients[&first].clone();
        let req = InitializeShardRequest {
            target_node: first,
            shard,
            members: members
                .iter()
                .map(|&id| NodeAddress { id, addr: plan.nodes[&id].clone(), state: String::new() })
                .collect(),
        };
        async move {
            client.initialize_shard(timed(req)).await.map_err(|s| {
                Error::Unavailable(format!("initializing shard {shard} on node {first}: {}", s.message()))
            })
        }
    });
    for result in futures::future::join_all(inits).await {
        result?;
    }

    let map = ClusterMap {
        cluster_id: cluster_id.clone(),
        epoch: 1,
        shard_count: plan.shards,
        replication_factor: plan.replicas,
        nodes: plan
            .nodes
            .iter()
            .map(|(&id, addr)| (id, NodeInfo { id, addr: addr.clone(), state: NodeState::Active }))
            .collect(),
        shards: placed.clone(),
    };
    install_map(&clients, &placed[&META_SHARD], &map).await?;
    Ok(InitClusterResponse { cluster_id, epoch: map.epoch, shards: plan.shards, replicas: plan.replicas })
}

/// Proposes the first cluster map through whichever meta replica leads, waiting
/// for the meta shard's first election.
async fn install_map(
    clients: &BTreeMap<NodeId, AdminClient<Conn>>,
    meta_members: &[NodeId],
    map: &ClusterMap,
) -> Result<(), Error> {
    let bytes = codec::encode(map).map_err(|e| Error::Internal(format!("encode cluster map: {e}")))?;
    let deadline = Instant::now() + MAP_INSTALL_TIMEOUT;
    let mut last_error = String::from("no meta replica answered");
    loop {
        for member in meta_members {
            let mut client = clients[member].clone();
            let req = PutClusterMapRequest { map: bytes.clone().into(), expected_epoch: None };
            match client.put_cluster_map(timed(req)).await {
                Ok(reply) if reply.get_ref().succeeded => return Ok(()),
                Ok(reply) => {
                    return Err(Error::AlreadyExists(format!(
                        "the meta shard already holds a cluster map (epoch {})",
                        reply.get_ref().epoch
                    )));
                }
                Err(status) => last_error = format!("node {member}: {}", status.message()),
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!("could not install the cluster map: {last_error}")));
        }
        // Waiting for the meta shard's first election; a bounded poll.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(nodes: &[(u64, &str)], shards: u32, replicas: u32) -> InitClusterRequest {
        InitClusterRequest {
            nodes: nodes
                .iter()
                .map(|&(id, addr)| NodeAddress { id, addr: addr.into(), state: String::new() })
                .collect(),
            shards,
            replicas,
        }
    }

    #[test]
    fn validation_refuses_bad_requests() {
        let bad = [
            req(&[], 0, 0),
            req(&[(0, "a:1")], 0, 1),
            req(&[(1, "")], 0, 1),
            req(&[(1, "a:1"), (1, "a:2")], 0, 1),
            req(&[(1, "a:1"), (2, "a:1")], 0, 1),
            req(&[(1, "a:1"), (2, "a:2")], 0, 3),
            req(&[(1, "a:1")], MAX_SHARDS + 1, 1),
        ];
        for r in bad {
            assert!(matches!(validate(&r), Err(Error::InvalidArgument(_))), "{r:?} accepted");
        }
    }

    #[test]
    fn validation_fills_defaults() {
        let plan = validate(&req(&[(1, "a:1"), (2, "a:2"), (3, "a:3")], 0, 0)).expect("valid");
        assert_eq!((plan.shards, plan.replicas, plan.nodes.len()), (DEFAULT_SHARDS, DEFAULT_REPLICAS, 3));
    }

    #[test]
    fn cluster_ids_differ() {
        assert_ne!(new_cluster_id(), new_cluster_id());
    }
}
