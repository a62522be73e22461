//! The client's error type: one enum whose variants say what the caller should do,
//! and the one place where a `tonic::Status` from a node or router becomes one.
//!
//! A failed condition, a missing key or a counter that is not an integer are not
//! all errors: the first two are *responses* (`PutResult::succeeded == false`,
//! `Ok(None)` from `get`), only the last is [`Error::FailedPrecondition`].
//!
//! For a write, every error falls in one of three classes, told apart by two
//! methods:
//!
//! | class | variants | [`Error::surely_not_applied`] | [`Error::may_have_been_applied`] |
//! | --- | --- | --- | --- |
//! | never reached a Raft log; safe to send again | `NotLeader`, `WrongShard`, `Transport` | true | false |
//! | **outcome unknown**: may or may not have been applied | `Unavailable`, `DeadlineExceeded` | false | true |
//! | a definite answer: refused, nothing applied | the others | false | false |

use std::error::Error as _;

use prost::Message;
use ringkv_core::{Epoch, NodeId, ShardId};
use ringkv_proto::v1::ErrorDetail;
use ringkv_proto::v1::error_detail::Kind;

/// What went wrong, phrased as what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request itself is bad (empty or oversized key, oversized value, bad TTL,
    /// unusable address). Sending it again cannot help; fix it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The node hosts the key's shard but does not lead it. Retry at `leader_addr`
    /// when known; without it an election is under way, so retry elsewhere after a
    /// backoff. The node did not execute the request. [`crate::Client`] does all of
    /// this itself; a caller sees this only when every attempt was redirected.
    #[error("not the leader of shard {shard}{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        shard: ShardId,
        /// `None` while no leader is known (the wire's 0).
        leader_id: Option<NodeId>,
        /// `None` when the node did not know where the leader is.
        leader_addr: Option<String>,
    },

    /// The node hosts no replica of the key's shard (its cluster map is at `epoch`).
    /// The node did not execute the request; try another node.
    #[error("node hosts no replica of shard {shard} (cluster map epoch {epoch})")]
    WrongShard { shard: ShardId, epoch: Epoch },

    /// The request is well formed but the state does not allow it (e.g. incrementing
    /// a value that is not a decimal integer). Retrying unchanged will fail again.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),

    /// The node could not serve the request now (no quorum, leader unknown, node
    /// shutting down, connection lost mid-request). A later retry may succeed.
    ///
    /// **For a write, the write may or may not have been applied**: it may have
    /// reached a Raft log before the failure, and may still commit. The client
    /// never retries such a write itself ([`Error::may_have_been_applied`]).
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The request ran out of time (the operation's deadline, or a read attempt's
    /// timeout on every address tried).
    ///
    /// **For a write, the write may or may not have been applied**: it was sent,
    /// and no answer came in time. The client never retries such a write itself
    /// ([`Error::may_have_been_applied`]).
    #[error("deadline exceeded")]
    DeadlineExceeded,

    /// The thing to create exists already (e.g. `InitCluster` on a node that is
    /// already in a cluster).
    #[error("already exists: {0}")]
    AlreadyExists(String),

    /// The thing addressed does not exist (not a missing key: that is `Ok(None)`).
    #[error("not found: {0}")]
    NotFound(String),

    /// No connection to the node could be established, so the request was never
    /// sent. Safe to retry elsewhere, writes included.
    #[error("cannot connect: {0}")]
    Transport(String),

    /// Any other status code (`PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, `INTERNAL`,
    /// ...), passed through unchanged. `INTERNAL` is a server bug; what it did to a
    /// write is not known either.
    #[error("{}: {message}", .code.description())]
    Other { code: tonic::Code, message: String },
}

fn leader_hint(leader_id: &Option<NodeId>, leader_addr: &Option<String>) -> String {
    match (leader_id, leader_addr) {
        (Some(id), Some(addr)) => format!(" (leader is node {id} at {addr})"),
        (Some(id), None) => format!(" (leader is node {id}, address unknown)"),
        (None, Some(addr)) => format!(" (leader at {addr})"),
        (None, None) => " (no leader known: election under way)".to_string(),
    }
}

impl Error {
    /// Whether the same request may succeed if sent again later, possibly to
    /// another node. For writes this is not the whole story: after
    /// [`Error::Unavailable`] or [`Error::DeadlineExceeded`] the write may already
    /// have been applied, and retrying it blindly may apply it twice (see
    /// [`Error::surely_not_applied`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotLeader { .. }
            | Error::WrongShard { .. }
            | Error::Unavailable(_)
            | Error::DeadlineExceeded
            | Error::Transport(_) => true,
            Error::InvalidArgument(_)
            | Error::FailedPrecondition(_)
            | Error::AlreadyExists(_)
            | Error::NotFound(_)
            | Error::Other { .. } => false,
        }
    }

    /// Whether this error proves the request was not executed, so that even a
    /// non-idempotent write can be sent again: the node refused it before
    /// proposing (`NotLeader`, `WrongShard`), or it never reached a node
    /// (`Transport`: no connection). This relies on the node answering
    /// `NotLeader`/`WrongShard` only for requests it did not propose.
    pub fn surely_not_applied(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::WrongShard { .. } | Error::Transport(_))
    }

    /// Whether a *write* that returned this error may nevertheless have been
    /// applied (or may still be): its outcome is unknown. True exactly for
    /// [`Error::Unavailable`] and [`Error::DeadlineExceeded`], the two errors the
    /// client returns for a write that was sent and not answered with a verdict.
    ///
    /// Never true together with [`Error::surely_not_applied`]. Reads have no
    /// outcome to speak of; for them this only says the read failed late.
    ///
    /// What to do about an unknown outcome depends on the write: read the key
    /// back and compare its value or version, or send a conditional put
    /// (`if_version`) that succeeds only if the first one did not apply.
    pub fn may_have_been_applied(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::DeadlineExceeded)
    }

    /// Whether a watch or subscription asked for changes or messages its
    /// shard no longer retains (`OUT_OF_RANGE`): re-read what you follow and
    /// start again from now (or from the position the message names).
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, Error::Other { code: tonic::Code::OutOfRange, .. })
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(&status)
    }
}

impl From<ringkv_core::limits::InvalidArgument> for Error {
    fn from(err: ringkv_core::limits::InvalidArgument) -> Self {
        Error::InvalidArgument(err.to_string())
    }
}

impl Error {
    /// The one mapping from a gRPC status to an [`Error`] (the inverse of the
    /// node's error → status function).
    ///
    /// Besides the code, it looks at the status' source chain, which tonic fills
    /// for failures on this side of the wire: a `ConnectError` means no connection
    /// was made and nothing was sent ([`Error::Transport`]), and so does a
    /// pipe's `NotSent`; `TimeoutExpired` is
    /// the per-attempt `grpc-timeout` firing in the channel, which tonic reports
    /// as `CANCELLED` ([`Error::DeadlineExceeded`]). Any other local failure
    /// (tonic reports a connection lost mid-request as `UNKNOWN` or `CANCELLED`
    /// with the I/O error as source) is [`Error::Unavailable`]: the request may
    /// have been sent, so its outcome is unknown. Statuses a server sent carry no
    /// source and keep their code.
    fn from_status(status: &tonic::Status) -> Error {
        let message = status.message().to_string();
        if source_chain_has::<crate::pipe::NotSent>(status) {
            return Error::Transport(message);
        }
        if source_chain_has::<tonic::ConnectError>(status) {
            // tonic's message is generic ("tcp connect error"); the root cause
            // ("Connection refused") is what an operator needs.
            return match root_cause(status) {
                Some(cause) if cause != message => Error::Transport(format!("{message}: {cause}")),
                _ => Error::Transport(message),
            };
        }
        match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(message),
            tonic::Code::FailedPrecondition => match decode_detail(status.details()) {
                Some(Kind::NotLeader(not_leader)) => Error::NotLeader {
                    shard: not_leader.shard,
                    leader_id: Some(not_leader.leader_id).filter(|&id| id != 0),
                    leader_addr: Some(not_leader.leader_addr).filter(|addr| !addr.is_empty()),
                },
                Some(Kind::WrongShard(wrong_shard)) => {
                    Error::WrongShard { shard: wrong_shard.shard, epoch: wrong_shard.epoch }
                }
                None => Error::FailedPrecondition(message),
            },
            tonic::Code::Unavailable => Error::Unavailable(message),
            tonic::Code::DeadlineExceeded => Error::DeadlineExceeded,
            tonic::Code::Cancelled if source_chain_has::<tonic::TimeoutExpired>(status) => {
                Error::DeadlineExceeded
            }
            tonic::Code::Unknown | tonic::Code::Cancelled if status.source().is_some() => {
                match root_cause(status) {
                    Some(cause) if cause != message => {
                        Error::Unavailable(format!("connection lost: {message}: {cause}"))
                    }
                    _ => Error::Unavailable(format!("connection lost: {message}")),
                }
            }
            tonic::Code::AlreadyExists => Error::AlreadyExists(message),
            tonic::Code::NotFound => Error::NotFound(message),
            code => Error::Other { code, message },
        }
    }
}

/// Decodes the `ErrorDetail` a node puts in a FAILED_PRECONDITION status. Empty,
/// unknown or undecodable details are `None`: the status is then a plain failed
/// precondition, never a panic.
fn decode_detail(details: &[u8]) -> Option<Kind> {
    if details.is_empty() {
        return None;
    }
    match ErrorDetail::decode(details) {
        Ok(detail) => detail.kind,
        Err(err) => {
            tracing::debug!(%err, len = details.len(), "undecodable error detail ignored");
            None
        }
    }
}

/// The innermost error of the status' source chain, as text.
fn root_cause(status: &tonic::Status) -> Option<String> {
    let mut cause = status.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

fn source_chain_has<E: std::error::Error + 'static>(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<E>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_proto::v1::{NotLeader, WrongShard};
    use tonic::{Code, Status};

    use super::*;

    fn with_detail(kind: Kind) -> Status {
        let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
        Status::with_details(Code::FailedPrecondition, "detail", details.into())
    }

    #[test]
    fn every_code() {
        use Code::*;
        let cases: Vec<(Code, Error)> = vec![
            (InvalidArgument, Error::InvalidArgument("m".into())),
            (FailedPrecondition, Error::FailedPrecondition("m".into())),
            (Unavailable, Error::Unavailable("m".into())),
            (DeadlineExceeded, Error::DeadlineExceeded),
            (AlreadyExists, Error::AlreadyExists("m".into())),
            (NotFound, Error::NotFound("m".into())),
            (Ok, Error::Other { code: Ok, message: "m".into() }),
            (Cancelled, Error::Other { code: Cancelled, message: "m".into() }),
            (Unknown, Error::Other { code: Unknown, message: "m".into() }),
            (PermissionDenied, Error::Other { code: PermissionDenied, message: "m".into() }),
            (ResourceExhausted, Error::Other { code: ResourceExhausted, message: "m".into() }),
            (Aborted, Error::Other { code: Aborted, message: "m".into() }),
            (OutOfRange, Error::Other { code: OutOfRange, message: "m".into() }),
            (Unimplemented, Error::Other { code: Unimplemented, message: "m".into() }),
            (Internal, Error::Other { code: Internal, message: "m".into() }),
            (DataLoss, Error::Other { code: DataLoss, message: "m".into() }),
            (Unauthenticated, Error::Other { code: Unauthenticated, message: "m".into() }),
        ];
        for (code, want) in cases {
            assert_eq!(Error::from(Status::new(code, "m")), want, "{code:?}");
        }
    }

    #[test]
    fn a_pipe_call_that_was_not_sent_is_a_transport_error() {
        let mut status = Status::unavailable("the KV pipe to a:1 is closed: reset");
        status.set_source(Arc::new(crate::pipe::NotSent));
        let err = Error::from(status);
        assert_eq!(err, Error::Transport("the KV pipe to a:1 is closed: reset".into()));
        assert!(err.surely_not_applied());
    }

    #[test]
    fn not_leader_with_leader() {
        let status = with_detail(Kind::NotLeader(NotLeader {
            shard: 7,
            leader_id: 2,
            leader_addr: "10.0.0.2:7001".into(),
        }));
        let err = Error::from(status);
        assert_eq!(
            err,
            Error::NotLeader { shard: 7, leader_id: Some(2), leader_addr: Some("10.0.0.2:7001".into()) }
        );
        assert!(err.is_retryable() && err.surely_not_applied());
        assert_eq!(err.to_string(), "not the leader of shard 7 (leader is node 2 at 10.0.0.2:7001)");
    }

    #[test]
    fn not_leader_during_election() {
        let status =
            with_detail(Kind::NotLeader(NotLeader { shard: 3, leader_id: 0, leader_addr: String::new() }));
        let err = Error::from(status);
        assert_eq!(err, Error::NotLeader { shard: 3, leader_id: None, leader_addr: None });
        assert!(err.to_string().contains("election"));
    }

    #[test]
    fn wrong_shard() {
        let err = Error::from(with_detail(Kind::WrongShard(WrongShard { shard: 9, epoch: 4 })));
        assert_eq!(err, Error::WrongShard { shard: 9, epoch: 4 });
        assert!(err.is_retryable() && err.surely_not_applied());
    }

    #[test]
    fn garbage_details_are_a_plain_failed_precondition() {
        for details in [
            &b"\xff\xff\xff\xff"[..],     // truncated varint tag
            &b"garbage"[..],              // invalid wire type
            &b"\x0a\x05\x08"[..],         // NotLeader claiming 5 bytes, 1 present
            &b"\x0a\x02\x1a\xff"[..],     // leader_addr with a bad length
            &b"\x0a\x03\x1a\x01\xc3"[..], // leader_addr not UTF-8
            &b""[..],                     // no detail at all
            &b"\x20\x01"[..],             // only an unknown field: decodes, no kind
        ] {
            let status = Status::with_details(
                Code::FailedPrecondition,
                "not an integer",
                bytes::Bytes::copy_from_slice(details),
            );
            assert_eq!(
                Error::from(status),
                Error::FailedPrecondition("not an integer".into()),
                "{details:?}"
            );
        }
    }

    #[test]
    fn details_on_other_codes_are_ignored() {
        let details =
            ErrorDetail { kind: Some(Kind::WrongShard(WrongShard { shard: 1, epoch: 1 })) }.encode_to_vec();
        let status = Status::with_details(Code::Unavailable, "no quorum", details.into());
        assert_eq!(Error::from(status), Error::Unavailable("no quorum".into()));
    }

    #[test]
    fn connect_failure_is_transport() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(Arc::new(tonic::ConnectError(Box::new(io))));
        let err = Error::from(status);
        let cause = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).to_string();
        assert_eq!(err, Error::Transport(format!("tcp connect error: {cause}")));
        assert!(err.is_retryable() && err.surely_not_applied());
    }

    #[test]
    fn attempt_timeout_is_deadline_exceeded() {
        let mut status = Status::cancelled("Timeout expired");
        status.set_source(Arc::new(tonic::TimeoutExpired(())));
        assert_eq!(Error::from(status), Error::DeadlineExceeded);
    }

    #[test]
    fn local_transport_failure_is_unavailable() {
        for code in [Code::Unknown, Code::Cancelled] {
            let mut status = Status::new(code, "connection closed before message completed");
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            let cause = reset.to_string();
            status.set_source(Arc::new(reset));
            let err = Error::from(status);
            let want = format!("connection lost: connection closed before message completed: {cause}");
            assert_eq!(err, Error::Unavailable(want), "{code:?}");
            assert!(err.may_have_been_applied() && !err.surely_not_applied());
        }
    }

    #[test]
    fn three_classes_of_write_errors() {
        let surely_not = [
            Error::NotLeader { shard: 1, leader_id: None, leader_addr: None },
            Error::WrongShard { shard: 1, epoch: 0 },
            Error::Transport("refused".into()),
        ];
        let unknown = [Error::Unavailable("x".into()), Error::DeadlineExceeded];
        let refused = [
            Error::InvalidArgument("x".into()),
            Error::FailedPrecondition("x".into()),
            Error::AlreadyExists("x".into()),
            Error::NotFound("x".into()),
            Error::Other { code: Code::PermissionDenied, message: "x".into() },
        ];
        for err in surely_not {
            assert!(err.surely_not_applied() && !err.may_have_been_applied(), "{err:?}");
        }
        for err in unknown {
            assert!(!err.surely_not_applied() && err.may_have_been_applied(), "{err:?}");
        }
        for err in refused {
            assert!(!err.surely_not_applied() && !err.may_have_been_applied(), "{err:?}");
        }
    }

    #[test]
    fn retry_classes() {
        assert!(Error::Unavailable("x".into()).is_retryable());
        assert!(!Error::Unavailable("x".into()).surely_not_applied());
        assert!(Error::DeadlineExceeded.is_retryable());
        assert!(!Error::DeadlineExceeded.surely_not_applied());
        for err in [
            Error::InvalidArgument("x".into()),
            Error::FailedPrecondition("x".into()),
            Error::AlreadyExists("x".into()),
            Error::NotFound("x".into()),
            Error::Other { code: Code::Internal, message: "x".into() },
        ] {
            assert!(!err.is_retryable(), "{err:?}");
        }
    }

    #[test]
    fn limits_map_to_invalid_argument() {
        let err = Error::from(ringkv_core::limits::check_key(b"").unwrap_err());
        assert_eq!(err, Error::InvalidArgument("key is empty".into()));
    }
}
