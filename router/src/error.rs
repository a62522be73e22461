//! The one mapping from client-library errors to the gRPC statuses a router
//! answers with. Redirects (`NotLeader`, `WrongShard`) are the router's business:
//! if one still surfaces after every retry, the shard had no reachable leader, so
//! the caller sees `UNAVAILABLE`.

use ringkv_client::Error;
use tonic::Status;

/// The status a router's caller sees for a client error.
///
/// The message is the error's own text without the kind the client's `Display`
/// puts in front ("failed precondition: ..."): the status code carries that, and
/// the caller's client adds it back once.
pub fn to_status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(message) => Status::invalid_argument(message),
        e @ (Error::NotLeader { .. } | Error::WrongShard { .. }) => {
            Status::unavailable(format!("no reachable leader: {e}"))
        }
        Error::FailedPrecondition(message) => Status::failed_precondition(message),
        Error::Unavailable(message) => Status::unavailable(message),
        e @ Error::Transport(_) => Status::unavailable(e.to_string()),
        e @ Error::DeadlineExceeded => Status::deadline_exceeded(e.to_string()),
        Error::AlreadyExists(message) => Status::already_exists(message),
        Error::NotFound(message) => Status::not_found(message),
        Error::Other { code, message } => Status::new(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// What the caller would have seen from a node directly (redirects become
    /// UNAVAILABLE at a router, so they read differently on purpose).
    fn error_via_node(e: &Error) -> String {
        match e {
            Error::NotLeader { .. } | Error::WrongShard { .. } => {
                format!("unavailable: no reachable leader: {e}")
            }
            Error::Transport(_) => format!("unavailable: {e}"),
            _ => e.to_string(),
        }
    }

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
            let status = to_status(error.clone());
            assert_eq!(status.code(), code);
            assert!(!status.message().is_empty());
            // Through a router the caller's client sees the same text as it would
            // straight from a node: the kind is not repeated.
            assert_eq!(ringkv_client::Error::from(status).to_string(), error_via_node(&error), "{error:?}");
        }
    }
}
