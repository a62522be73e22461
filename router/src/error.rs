//! The one mapping from client-library errors to the gRPC statuses a router
//! answers with. Redirects (`NotLeader`, `WrongShard`) are the router's business:
//! if one still surfaces after every retry, the shard had no reachable leader, so
//! the caller sees `UNAVAILABLE`.

use ringkv_client::Error;
use tonic::Status;

/// The status a router's caller sees for a client error.
pub fn to_status(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::InvalidArgument(_) => Status::invalid_argument(message),
        Error::NotLeader { .. } | Error::WrongShard { .. } => {
            Status::unavailable(format!("no reachable leader: {message}"))
        }
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::Unavailable(_) | Error::Transport(_) => Status::unavailable(message),
        Error::DeadlineExceeded => Status::deadline_exceeded(message),
        Error::AlreadyExists(_) => Status::already_exists(message),
        Error::NotFound(_) => Status::not_found(message),
        Error::Other { code, message } => Status::new(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_kind_maps_to_a_caller_status() {
        let cases = [
            (Error::InvalidArgument("bad".into()), Code::InvalidArgument),
            (Error::NotLeader { shard: 1, leader_id: None, leader_addr: None }, Code::Unavailable),
            (Error::WrongShard { shard: 1, epoch: 3 }, Code::Unavailable),
            (Error::FailedPrecondition("not an integer".into()), Code::FailedPrecondition),
            (Error::Unavailable("no quorum".into()), Code::Unavailable),
            (Error::Transport("refused".into()), Code::Unavailable),
            (Error::DeadlineExceeded, Code::DeadlineExceeded),
            (Error::AlreadyExists("cluster".into()), Code::AlreadyExists),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::Other { code: Code::PermissionDenied, message: "no".into() }, Code::PermissionDenied),
        ];
        for (error, code) in cases {
            let status = to_status(error);
            assert_eq!(status.code(), code);
            assert!(!status.message().is_empty());
        }
    }
}
