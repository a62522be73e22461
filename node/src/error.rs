//! The node's error type and its one mapping to gRPC statuses.
//!
//! Variants say what the caller should do. `NotLeader` and `WrongShard` travel as
//! `FAILED_PRECONDITION` with a prost-encoded [`ErrorDetail`] in the status details,
//! so that routers and clients branch on data, never on message text.

use prost::Message;
use ringkv_core::limits::InvalidArgument;
use ringkv_core::{Epoch, NodeId, ShardId};
use ringkv_proto::v1::{ErrorDetail, error_detail};

/// Why a node could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request itself is bad; nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
    /// This node hosts the shard but does not lead it: retry at the leader.
    #[error("node does not lead shard {shard}; leader is {}", leader.as_ref().map(|(id, addr)| format!("node {id} at {addr}")).unwrap_or_else(|| "unknown (election in progress)".into()))]
    NotLeader { shard: ShardId, leader: Option<(NodeId, String)> },
    /// This node hosts no replica of the shard: refresh the cluster map.
    #[error("node hosts no replica of shard {shard} (cluster map epoch {epoch})")]
    WrongShard { shard: ShardId, epoch: Epoch },
    /// A deterministic refusal that retrying will not change.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Try again later (no quorum, node shutting down, not yet in a cluster).
    #[error("{0}")]
    Unavailable(String),
    /// The thing asked for already exists (a second `cluster init`).
    #[error("{0}")]
    AlreadyExists(String),
    /// The thing named does not exist (an unknown node id).
    #[error("{0}")]
    NotFound(String),
    /// A limit of this node (its memory budget) refuses the request; nothing
    /// was written. Retrying helps only once the limit is no longer reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or a storage fault on our side.
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidArgument> for Error {
    fn from(e: InvalidArgument) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::NotLeader { shard, leader } => {
                let (leader_id, leader_addr) = leader.unwrap_or((0, String::new()));
                let detail = ErrorDetail {
                    kind: Some(error_detail::Kind::NotLeader(ringkv_proto::v1::NotLeader {
                        shard,
                        leader_id,
                        leader_addr,
                    })),
                };
                tonic::Status::with_details(
                    tonic::Code::FailedPrecondition,
                    message,
                    detail.encode_to_vec().into(),
                )
            }
            Error::WrongShard { shard, epoch } => {
                let detail = ErrorDetail {
                    kind: Some(error_detail::Kind::WrongShard(ringkv_proto::v1::WrongShard { shard, epoch })),
                };
                tonic::Status::with_details(
                    tonic::Code::FailedPrecondition,
                    message,
                    detail.encode_to_vec().into(),
                )
            }
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::Internal(_) => tonic::Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_a_decodable_detail() {
        let status: tonic::Status =
            Error::NotLeader { shard: 7, leader: Some((3, "127.0.0.1:9".into())) }.into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let detail = ErrorDetail::decode(status.details()).expect("detail decodes");
        match detail.kind {
            Some(error_detail::Kind::NotLeader(nl)) => {
                assert_eq!((nl.shard, nl.leader_id, nl.leader_addr.as_str()), (7, 3, "127.0.0.1:9"));
            }
            other => panic!("unexpected detail {other:?}"),
        }
    }

    #[test]
    fn wrong_shard_carries_a_decodable_detail() {
        let status: tonic::Status = Error::WrongShard { shard: 2, epoch: 5 }.into();
        let detail = ErrorDetail::decode(status.details()).expect("detail decodes");
        assert!(matches!(
            detail.kind,
            Some(error_detail::Kind::WrongShard(ringkv_proto::v1::WrongShard { shard: 2, epoch: 5 }))
        ));
    }
}
