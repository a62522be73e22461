//! Request limits, checked before anything is proposed, so that a bad request
//! writes nothing and is refused the same way by every entry point.

use thiserror::Error;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Default largest value accepted, in bytes (configurable per node).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// Default largest gRPC message a server accepts (a request): tonic's and
/// gRPC's usual 4 MiB, room for a default-size value with its key.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// Default HTTP/2 streams one connection may hold open on a node: high,
/// because a router carries every watch and subscription of its clients to a
/// node on one connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100_000;

/// The smallest request limit that still admits a value of `max_value_bytes`
/// with the longest key and the message's other fields.
pub fn min_request_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes + MAX_KEY_BYTES + 4096
}

/// The request limit when none is configured: 4 MiB, or more if the value
/// limit needs it.
pub fn default_request_bytes(max_value_bytes: usize) -> usize {
    DEFAULT_MAX_REQUEST_BYTES.max(min_request_bytes(max_value_bytes))
}

/// Longest TTL accepted: ten years. Anything longer is almost certainly a unit
/// mistake (seconds or microseconds passed as milliseconds).
pub const MAX_TTL_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Longest request id accepted, in bytes (a UUID is 16).
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// Why a request was refused before it reached Raft.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidArgument {
    #[error("key is empty")]
    EmptyKey,
    #[error("key is {len} bytes, over the limit of {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("value is {len} bytes, over the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("ttl_ms {ttl_ms} is negative")]
    NegativeTtl { ttl_ms: i64 },
    #[error("ttl_ms {ttl_ms} is over the limit of {max} (ten years)")]
    TtlTooLong { ttl_ms: i64, max: i64 },
    #[error("request_id is {len} bytes, over the limit of {max}")]
    RequestIdTooLong { len: usize, max: usize },
}

/// Checks a key: not empty, at most [`MAX_KEY_BYTES`].
pub fn check_key(key: &[u8]) -> Result<(), InvalidArgument> {
    if key.is_empty() {
        return Err(InvalidArgument::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(InvalidArgument::KeyTooLong { len: key.len(), max: MAX_KEY_BYTES });
    }
    Ok(())
}

/// Checks a value against the node's configured limit.
pub fn check_value(value: &[u8], max_value_bytes: usize) -> Result<(), InvalidArgument> {
    if value.len() > max_value_bytes {
        return Err(InvalidArgument::ValueTooLarge { len: value.len(), max: max_value_bytes });
    }
    Ok(())
}

/// Checks a TTL as it arrives on the wire and returns it as unsigned milliseconds
/// (0 = none).
pub fn check_ttl(ttl_ms: i64) -> Result<u64, InvalidArgument> {
    if ttl_ms < 0 {
        return Err(InvalidArgument::NegativeTtl { ttl_ms });
    }
    if ttl_ms > MAX_TTL_MS {
        return Err(InvalidArgument::TtlTooLong { ttl_ms, max: MAX_TTL_MS });
    }
    Ok(ttl_ms as u64)
}

/// Checks a write's request id (empty = none): at most [`MAX_REQUEST_ID_BYTES`].
pub fn check_request_id(request_id: &[u8]) -> Result<(), InvalidArgument> {
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(InvalidArgument::RequestIdTooLong { len: request_id.len(), max: MAX_REQUEST_ID_BYTES });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(check_key(b""), Err(InvalidArgument::EmptyKey));
        assert!(check_key(b"k").is_ok());
        assert!(check_key(&vec![b'k'; MAX_KEY_BYTES]).is_ok());
        assert!(matches!(check_key(&vec![b'k'; MAX_KEY_BYTES + 1]), Err(InvalidArgument::KeyTooLong { .. })));
    }

    #[test]
    fn values() {
        assert!(check_value(&[0; 10], 10).is_ok());
        assert!(matches!(check_value(&[0; 11], 10), Err(InvalidArgument::ValueTooLarge { .. })));
    }

    #[test]
    fn request_ids() {
        assert_eq!(check_request_id(b""), Ok(()));
        assert_eq!(check_request_id(&[7; MAX_REQUEST_ID_BYTES]), Ok(()));
        assert_eq!(
            check_request_id(&[7; MAX_REQUEST_ID_BYTES + 1]),
            Err(InvalidArgument::RequestIdTooLong {
                len: MAX_REQUEST_ID_BYTES + 1,
                max: MAX_REQUEST_ID_BYTES
            })
        );
    }

    #[test]
    fn ttls() {
        assert_eq!(check_ttl(0), Ok(0));
        assert_eq!(check_ttl(1500), Ok(1500));
        assert_eq!(check_ttl(MAX_TTL_MS), Ok(MAX_TTL_MS as u64));
        assert!(matches!(check_ttl(-1), Err(InvalidArgument::NegativeTtl { .. })));
        assert!(matches!(check_ttl(MAX_TTL_MS + 1), Err(InvalidArgument::TtlTooLong { .. })));
        assert!(matches!(check_ttl(i64::MAX), Err(InvalidArgument::TtlTooLong { .. })));
    }
}
