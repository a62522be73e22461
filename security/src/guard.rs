//! The servers' side: a tower layer that checks each call's credential against
//! the service it is for, before any handler runs.
//!
//! The decision is a pure function ([`Policy::check`]) of the call's path, its
//! bearer token and whether its TLS client certificate was verified, so that
//! the table is unit-tested without a server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::token::Token;

/// Admin calls allowed with the KV token: the cheap reads a client library
/// routing by the cluster map needs (not `ReplicaChecksum`, which encodes a
/// whole replica).
pub const READ_ONLY_ADMIN_CALLS: [&str; 2] = ["ClusterStatus", "NodeStatus"];

/// Services open to every caller: probes carry no credentials, and neither
/// reveals data. Any other service not named in [`Policy::check`] is refused,
/// so a service added later is closed until it is classified.
pub const OPEN_SERVICES: [&str; 2] = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"];

/// Which credentials open which service.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Opens `KV` (and the read-only `Admin` calls).
    pub kv: Option<Token>,
    /// Opens `KV` and `Admin`.
    pub admin: Option<Token>,
    /// The cluster secret: opens everything, `Raft` included.
    pub peer: Option<Token>,
    /// A verified TLS client certificate opens `Raft` (only).
    pub peer_mtls: bool,
}

/// The caller, as its credential shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Peer,
    Admin,
    Kv,
    /// No credential at all.
    Anonymous,
    /// A token that is none of ours.
    Unknown,
}

impl Policy {
    /// Whether `KV` and `Admin` need a token.
    pub fn clients_need_tokens(&self) -> bool {
        self.kv.is_some() || self.admin.is_some()
    }

    /// Whether `Raft` needs the peer token or a peer certificate.
    pub fn peers_need_credentials(&self) -> bool {
        self.peer.is_some() || self.peer_mtls
    }

    /// Whether a call to `path` (`/package.Service/Method`) with this
    /// `authorization` header value and client certificate may run; the
    /// status to refuse it with otherwise.
    pub fn check(&self, path: &str, authorization: Option<&[u8]>, verified_cert: bool) -> Result<(), Status> {
        let (service, method) = split_path(path);
        let caller = self.caller(authorization);
        let allowed = match service {
            "ringkv.v1.Raft" => {
                if !self.peers_need_credentials() {
                    return Ok(());
                }
                // A peer certificate opens Raft only: any certificate the CA
                // signed qualifies, so it must not also open Admin and KV.
                caller == Caller::Peer || (self.peer_mtls && verified_cert)
            }
            "ringkv.v1.Admin" => {
                if !self.clients_need_tokens() {
                    return Ok(());
                }
                match caller {
                    Caller::Peer | Caller::Admin => true,
                    Caller::Kv => READ_ONLY_ADMIN_CALLS.contains(&method),
                    Caller::Anonymous | Caller::Unknown => false,
                }
            }
            "ringkv.v1.KV" => {
                if !self.clients_need_tokens() {
                    return Ok(());
                }
                matches!(caller, Caller::Peer | Caller::Admin | Caller::Kv)
            }
            open if OPEN_SERVICES.contains(&open) => return Ok(()),
            _ => {
                return Err(Status::permission_denied(format!(
                    "{service} is not a service this server opens"
                )));
            }
        };
        if allowed {
            return Ok(());
        }
        let call = format!("{}.{method}", service.rsplit('.').next().unwrap_or(service));
        Err(match caller {
            Caller::Anonymous => Status::unauthenticated(format!(
                "{call} needs credentials: send `authorization: Bearer <token>`{}",
                if service == "ringkv.v1.Raft" { " (the peer token) or a peer certificate" } else { "" }
            )),
            Caller::Unknown => Status::unauthenticated(format!("{call}: the token is not valid here")),
            Caller::Kv => {
                Status::permission_denied(format!("{call} needs the admin token; this is the KV token"))
            }
            Caller::Admin => Status::permission_denied(format!("{call} is for the cluster's nodes only")),
            Caller::Peer => Status::internal("a peer is allowed everything"),
        })
    }

    fn caller(&self, authorization: Option<&[u8]>) -> Caller {
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let presented = authorization.map(|value| match value.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"Bearer ") => token,
            _ => value,
        });
        let is =
            |token: &Option<Token>, presented: &[u8]| token.as_ref().is_some_and(|t| t.matches(presented));
        match presented {
            Some(p) if is(&self.peer, p) => Caller::Peer,
            Some(p) if is(&self.admin, p) => Caller::Admin,
            Some(p) if is(&self.kv, p) => Caller::Kv,
            Some(_) => Caller::Unknown,
            None => Caller::Anonymous,
        }
    }
}

/// `/ringkv.v1.KV/Put` → (`ringkv.v1.KV`, `Put`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// The tower layer: wraps every service of a server.
#[derive(Debug, Clone)]
pub struct Guard {
    policy: Arc<Policy>,
}

impl Guard {
    pub fn new(policy: Policy) -> Guard {
        Guard { policy: Arc::new(policy) }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, policy: self.policy.clone() }
    }
}

/// A service behind the [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    policy: Arc<Policy>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let authorization = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let verified_cert = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .is_some_and(|certs| !certs.is_empty());
        match self.policy.check(request.uri().path(), authorization, verified_cert) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => {
                tracing::debug!(path = request.uri().path(), code = ?status.code(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    const KV: &str = "kv-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";
    const PEER: &str = "peer-token-0123456789";

    fn policy(peer_mtls: bool) -> Policy {
        let token = |t: &str| Some(Token::new(t).expect("valid"));
        Policy { kv: token(KV), admin: token(ADMIN), peer: token(PEER), peer_mtls }
    }

    fn code(policy: &Policy, path: &str, token: Option<&str>, cert: bool) -> Option<Code> {
        let header = token.map(|t| format!("Bearer {t}"));
        policy.check(path, header.as_deref().map(str::as_bytes), cert).err().map(|s| s.code())
    }

    #[test]
    fn each_token_opens_what_it_should_and_nothing_more() {
        let p = policy(false);
        let (put, init, status, append) = (
            "/ringkv.v1.KV/Put",
            "/ringkv.v1.Admin/InitCluster",
            "/ringkv.v1.Admin/ClusterStatus",
            "/ringkv.v1.Raft/Vote",
        );
        let denied = Some(Code::PermissionDenied);
        let unauth = Some(Code::Unauthenticated);
        // (path, token, expected refusal)
        for (path, token, expected) in [
            (put, Some(KV), None),
            (put, Some(ADMIN), None),
            (put, Some(PEER), None),
            (put, None, unauth),
            (put, Some("kv-token-012345678X"), unauth),
            (status, Some(KV), None),
            (init, Some(KV), denied),
            (init, Some(ADMIN), None),
            (init, Some(PEER), None),
            (init, None, unauth),
            (append, Some(PEER), None),
            (append, Some(ADMIN), denied),
            (append, Some(KV), denied),
            (append, None, unauth),
            ("/grpc.health.v1.Health/Check", None, None),
            ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None, None),
        ] {
            assert_eq!(code(&p, path, token, false), expected, "{path} with {token:?}");
        }
    }

    #[test]
    fn a_verified_certificate_opens_raft_only_and_only_with_peer_mtls() {
        assert_eq!(code(&policy(true), "/ringkv.v1.Raft/AppendEntries", None, true), None);
        assert_eq!(
            code(&policy(false), "/ringkv.v1.Raft/AppendEntries", None, true),
            Some(Code::Unauthenticated)
        );
        // An application with a certificate from the same CA gains nothing.
        assert_eq!(
            code(&policy(true), "/ringkv.v1.Admin/DrainNode", Some(KV), true),
            Some(Code::PermissionDenied)
        );
        assert_eq!(code(&policy(true), "/ringkv.v1.KV/Put", None, true), Some(Code::Unauthenticated));
    }

    #[test]
    fn the_kv_token_reads_status_only_and_unknown_services_are_closed() {
        let p = policy(false);
        for read in ["ClusterStatus", "NodeStatus"] {
            assert_eq!(code(&p, &format!("/ringkv.v1.Admin/{read}"), Some(KV), false), None, "{read}");
        }
        for costly in ["ReplicaChecksum", "PlanRebalance", "RebalanceStatus", "BackupShard"] {
            let path = format!("/ringkv.v1.Admin/{costly}");
            assert_eq!(code(&p, &path, Some(KV), false), Some(Code::PermissionDenied), "{costly}");
        }
        let open = Policy::default();
        assert_eq!(code(&open, "/ringkv.v2.Future/Call", Some(ADMIN), false), Some(Code::PermissionDenied));
    }

    #[test]
    fn nothing_configured_is_open_and_a_peer_secret_alone_guards_only_raft() {
        let open = Policy::default();
        for path in ["/ringkv.v1.KV/Put", "/ringkv.v1.Admin/InitCluster", "/ringkv.v1.Raft/Vote"] {
            assert_eq!(code(&open, path, None, false), None, "{path}");
        }
        let peers_only = Policy { peer: Some(Token::new(PEER).expect("valid")), ..Policy::default() };
        assert_eq!(code(&peers_only, "/ringkv.v1.KV/Put", None, false), None);
        assert_eq!(code(&peers_only, "/ringkv.v1.Raft/Vote", None, false), Some(Code::Unauthenticated));
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_is_not() {
        let p = policy(false);
        assert!(p.check("/ringkv.v1.KV/Put", Some(format!("bearer {KV}").as_bytes()), false).is_ok());
        let upper = format!("Bearer {}", KV.to_uppercase());
        assert!(p.check("/ringkv.v1.KV/Put", Some(upper.as_bytes()), false).is_err());
    }

    #[test]
    fn refusals_never_echo_the_token() {
        let err = policy(false).check("/ringkv.v1.KV/Put", Some(b"Bearer not-a-real-token-at-all"), false);
        assert!(!err.expect_err("refused").message().contains("not-a-real-token"));
    }
}
