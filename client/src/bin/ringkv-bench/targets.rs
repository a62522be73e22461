//! The stores the benchmark drives, behind one small interface: put (with an
//! optional TTL), get (linearizable or stale), get-and-refresh-TTL, delete.
//! Every target sends one request per round trip per worker, like ringkv's
//! clients: no pipelining, no batching in the client.

use std::time::Duration;

use ringkv_client::{Client, ClientOptions, Consistency, Credentials, PutOptions, Routing};

use crate::etcd::Etcd;

/// Where to send requests, as given on the command line.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// ringkv through a router: `ringkv-router=ADDR`.
    RingkvRouter(String),
    /// ringkv through the client library straight to the nodes:
    /// `ringkv-direct=ADDR[,ADDR...]` (node addresses).
    RingkvDirect(Vec<String>),
    /// etcd v3: `etcd=ADDR[,ADDR...]` (give the leader first to send to it).
    Etcd(Vec<String>),
    /// Redis: `redis=ADDR`.
    Redis(String),
}

impl TargetSpec {
    pub fn parse(spec: &str) -> Result<(String, TargetSpec), String> {
        let (name, addrs) =
            spec.split_once('=').ok_or_else(|| format!("target {spec:?}: want KIND=ADDR[,ADDR]"))?;
        let (label, kind) = match name.split_once(':') {
            Some((kind, label)) => (label.to_string(), kind),
            None => (name.to_string(), name),
        };
        let list: Vec<String> = addrs.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect();
        if list.is_empty() {
            return Err(format!("target {spec:?}: no address"));
        }
        let target = match kind {
            "ringkv-router" => TargetSpec::RingkvRouter(list[0].clone()),
            "ringkv-direct" => TargetSpec::RingkvDirect(list),
            "etcd" => TargetSpec::Etcd(list),
            "redis" => TargetSpec::Redis(list[0].clone()),
            other => {
                return Err(format!(
                    "unknown target kind {other:?} (ringkv-router, ringkv-direct, etcd, redis; KIND:LABEL=ADDR to name it)"
                ));
            }
        };
        Ok((label, target))
    }
}

/// One worker's connection to a target.
pub enum Conn {
    Ringkv(Client),
    Etcd { client: Etcd, lease: i64 },
    Redis(redis::aio::MultiplexedConnection),
}

/// Session TTL used by the TTL operations, in seconds.
pub const SESSION_TTL_SECS: u64 = 60;

/// HTTP/2 clients (each with its own connections) that the workers of a
/// ringkv or etcd target share, worker `w` using client `w % CLIENTS`: as the
/// anchors' load generator does for etcd ("min(clients, 8) clients"), so that
/// neither server is held to one connection's worth of its CPU.
pub const CLIENTS: usize = 8;

/// A target's shared clients: ringkv and etcd workers multiplex their requests
/// over [`CLIENTS`] HTTP/2 clients (as an application's instances would); Redis
/// gets a connection per worker (one request per round trip, no implicit
/// pipelining).
pub enum Target {
    Ringkv(Vec<Client>),
    Etcd { clients: Vec<Etcd>, lease: i64, members: Vec<String> },
    Redis(redis::Client),
}

impl Target {
    /// Brings the target to the state every run starts from, outside the
    /// measured window. etcd keeps every revision of every key until it is
    /// compacted, and its reads slow down as that history grows (reads at 64
    /// clients fell from 21k/s to 13k/s over three write runs here), so — as
    /// `shared/anchors` did, and as an etcd operator runs it — each etcd run
    /// starts compacted to the current revision and defragmented on every
    /// member. ringkv and Redis keep no history: nothing to do.
    pub async fn prepare(&self) -> Result<(), String> {
        if let Target::Etcd { clients, members, .. } = self {
            clients[0].clone().compact().await?;
            for member in members {
                Etcd::connect(std::slice::from_ref(member)).await?.defragment().await?;
            }
        }
        Ok(())
    }

    /// Connects to `spec`; ringkv targets present `credentials`.
    pub async fn connect(spec: &TargetSpec, credentials: &Credentials) -> Result<Target, String> {
        Ok(match spec {
            TargetSpec::RingkvRouter(addr) => Target::Ringkv(
                (0..CLIENTS)
                    .map(|_| ringkv(vec![addr.clone()], Routing::ViaSeeds, credentials))
                    .collect::<Result<_, _>>()?,
            ),
            TargetSpec::RingkvDirect(addrs) => Target::Ringkv(
                (0..CLIENTS)
                    .map(|_| ringkv(addrs.clone(), Routing::Direct, credentials))
                    .collect::<Result<_, _>>()?,
            ),
            TargetSpec::Etcd(addrs) => {
                let mut clients = Vec::new();
                for _ in 0..CLIENTS {
                    clients.push(Etcd::connect(addrs).await?);
                }
                // One lease for the TTL operations: granting one per put would
                // measure lease grants, not writes.
                let lease = clients[0].lease_grant(3600).await?;
                Target::Etcd { clients, lease, members: addrs.clone() }
            }
            TargetSpec::Redis(addr) => Target::Redis(
                redis::Client::open(format!("redis://{addr}/")).map_err(|e| format!("redis: {e}"))?,
            ),
        })
    }

    /// A connection for worker `worker`.
    pub async fn conn(&self, worker: usize) -> Result<Conn, String> {
        Ok(match self {
            Target::Ringkv(clients) => Conn::Ringkv(clients[worker % clients.len()].clone()),
            Target::Etcd { clients, lease, .. } => {
                Conn::Etcd { client: clients[worker % clients.len()].clone(), lease: *lease }
            }
            Target::Redis(client) => Conn::Redis(
                client.get_multiplexed_async_connection().await.map_err(|e| format!("redis: {e}"))?,
            ),
        })
    }
}

impl Conn {
    pub async fn put(&mut self, key: &[u8], value: &[u8], ttl: bool) -> Result<(), String> {
        match self {
            Conn::Ringkv(client) => {
                let ttl_ms = if ttl { SESSION_TTL_SECS * 1000 } else { 0 };
                let opts = PutOptions { ttl_ms, ..Default::default() };
                client.put(key.to_vec(), value.to_vec(), opts).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Conn::Etcd { client, lease } => client.put(key, value, if ttl { *lease } else { 0 }).await,
            Conn::Redis(conn) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value);
                if ttl {
                    cmd.arg("EX").arg(SESSION_TTL_SECS);
                }
                cmd.query_async::<()>(conn).await.map_err(|e| e.to_string())
            }
        }
    }

    pub async fn get(&mut self, key: &[u8], stale: bool) -> Result<(), String> {
        match self {
            Conn::Ringkv(client) => {
                let consistency = if stale { Consistency::Stale } else { Consistency::Linearizable };
                client.get(key.to_vec(), consistency).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Conn::Etcd { client, .. } => client.range(key, stale).await.map(|_| ()),
            Conn::Redis(conn) => redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Reads a session and extends its TTL: ringkv `get_and_touch` (a
    /// linearizable read that proposes the move only when half the TTL is
    /// gone), etcd `get` + `put` on the shared lease, Redis `GETEX`.
    pub async fn get_refresh(&mut self, key: &[u8]) -> Result<(), String> {
        match self {
            Conn::Ringkv(client) => client
                .get_and_touch(key.to_vec(), SESSION_TTL_SECS * 1000)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Etcd { client, lease } => {
                let got = client.range(key, false).await?;
                if let Some(found) = got.kvs.first() {
                    client.put(key, &found.value, *lease).await?;
                }
                Ok(())
            }
            Conn::Redis(conn) => redis::cmd("GETEX")
                .arg(key)
                .arg("EX")
                .arg(SESSION_TTL_SECS)
                .query_async::<Option<Vec<u8>>>(conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<(), String> {
        match self {
            Conn::Ringkv(client) => {
                client.delete(key.to_vec(), None).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Conn::Etcd { client, .. } => client.delete(key).await,
            Conn::Redis(conn) => redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

fn ringkv(addrs: Vec<String>, routing: Routing, credentials: &Credentials) -> Result<Client, String> {
    let opts = ClientOptions {
        routing,
        request_timeout: Duration::from_secs(10),
        credentials: credentials.clone(),
        ..ClientOptions::default()
    };
    Client::connect(addrs, opts).map_err(|e| e.to_string())
}
