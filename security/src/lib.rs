//! Who may call a ringkv port, and how callers prove it.
//!
//! A node serves three gRPC services on one port — `KV` (applications), `Admin`
//! (operators and the admin CLI) and `Raft` (the other nodes) — and a router
//! serves `KV` and `Admin`. Each can be protected two ways, separately:
//!
//! - **TLS** ([`tls`]): the port speaks TLS with the node's certificate
//!   (`--tls-cert`, `--tls-key`); callers verify it against `--tls-ca`. With
//!   `--peer-mtls` nodes also present their certificate when they call each
//!   other, and a `Raft` call is accepted from a caller whose certificate the CA
//!   signed.
//! - **Bearer tokens** ([`guard`]): `authorization: Bearer <token>` on every
//!   call. Three secrets, each read from a file so that it never sits in a
//!   command line or a unit file: the *KV token* (applications: `KV`, and the
//!   read-only `Admin` calls a client needs to route — cluster and node
//!   status), the *admin token* (everything in `KV` and `Admin`), and the *peer
//!   token*, the cluster secret the nodes and routers use among themselves
//!   (everything, `Raft` included). A call without a credential the service
//!   needs is refused before any handler runs — `UNAUTHENTICATED` for none or
//!   an unknown one, `PERMISSION_DENIED` for a valid one of too little power —
//!   so a refused call changes nothing.
//!
//! Health checks (`grpc.health.v1`) and server reflection stay open: load
//! balancers and probes carry no credentials, and neither reveals data.
//!
//! The servers' side is [`guard::Guard`], a tower layer in front of every
//! service; the callers' side is [`credentials::Credentials`], which the client
//! library, the router and the nodes use for every connection they open.
//! `settings::SecuritySettings` (feature `settings`) is the settings block
//! both servers share.
//!
//! The same front door answers a request over the size limit with
//! `RESOURCE_EXHAUSTED` ([`limits`]).
//!
//! Secrets are [`token::Token`]s: their `Debug` and `Display` print
//! `<redacted>`, so no log line or `--print-config` can show one.
//!
//! # Caveats / not done yet
//! - Certificates and tokens are read at start; rotating them needs a
//!   (rolling) restart.
//! - No per-key or per-prefix permissions, no user accounts (etcd's RBAC): a
//!   token opens a whole service.

pub mod credentials;
pub mod guard;
pub mod limits;
#[cfg(feature = "settings")]
pub mod settings;
pub mod tls;
pub mod token;

pub use credentials::{Conn, Credentials};
pub use guard::{Guard, Policy};
#[cfg(feature = "settings")]
pub use settings::{Security, SecuritySettings};
pub use token::Token;
