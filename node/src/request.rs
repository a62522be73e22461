//! What a client's KV request becomes before it reaches a shard: the checks
//! and the conversion into an [`Op`], with the clock and the limits as
//! parameters.
//!
//! `kv_service` decodes a request (unary or a `KV.Pipe` frame), calls one of
//! these, and only then looks for the key's shard; so nothing invalid is ever
//! proposed, and the whole path from bytes to op is tested against hostile
//! input without a node (`node/tests/hostile_input`).
//!
//! Invariants of everything returned `Ok`:
//! - the key (or channel) is 1 to [`MAX_KEY_BYTES`](ringkv_core::limits::MAX_KEY_BYTES)
//!   bytes, a value at most `max_value_bytes`, a request id at most
//!   [`MAX_REQUEST_ID_BYTES`](ringkv_core::limits::MAX_REQUEST_ID_BYTES);
//! - a TTL is 0 (none) to ten years, and a deadline is `now_ms + ttl_ms`
//!   saturating, so no wire value overflows the arithmetic;
//! - an enum the wire carried as an integer is a known value.

use bytes::Bytes;
use ringkv_core::limits::{check_key, check_request_id, check_ttl, check_value};
use ringkv_proto::v1::{
    Consistency, DeleteRequest, GetRequest, IncrementRequest, PublishRequest, PutRequest, TouchRequest,
    put_request,
};

use crate::command::{Condition, Op, UnixMs};
use crate::error::Error;

/// A checked client write, ready to propose on the shard of `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Picks the shard (a `Publish`'s channel).
    pub key: Bytes,
    /// Empty = none; else the write is proposed as [`Op::Once`].
    pub request_id: Bytes,
    pub op: Op,
}

impl Write {
    fn new(key: &Bytes, request_id: Bytes, op: Op) -> Result<Write, Error> {
        check_key(key)?;
        check_request_id(&request_id)?;
        Ok(Write { key: key.clone(), request_id, op })
    }

    /// The op as the leader proposes it: wrapped in `Once` when the write has
    /// a request id, remembered until `now_ms + retention_ms`.
    pub fn into_op(self, now_ms: UnixMs, retention_ms: u64) -> Op {
        if self.request_id.is_empty() {
            return self.op;
        }
        let retain_until_ms = now_ms.saturating_add(retention_ms);
        Op::Once { request_id: self.request_id, retain_until_ms, op: Box::new(self.op) }
    }
}

/// A checked `Get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub key: Bytes,
    pub consistency: Consistency,
    /// Sliding expiry (0 = none); only with a linearizable read.
    pub touch_ttl_ms: u64,
}

impl Read {
    /// The deadline a sliding-expiry read moves the key to, if it should: the
    /// key has a deadline and less than `refresh_fraction × touch_ttl_ms` is
    /// left of it (`ttl_left_ms`, 0 = no TTL).
    pub fn extend_to(
        &self,
        deadline: Option<UnixMs>,
        ttl_left_ms: u64,
        refresh_fraction: f64,
        now_ms: UnixMs,
    ) -> Option<UnixMs> {
        // A float-to-int `as` saturates (and NaN is 0), so no fraction overflows.
        let refresh_below = (self.touch_ttl_ms as f64 * refresh_fraction) as u64;
        let deadline = deadline.filter(|_| self.touch_ttl_ms > 0 && ttl_left_ms < refresh_below)?;
        Some(now_ms.saturating_add(self.touch_ttl_ms).max(deadline))
    }
}

/// `now + ttl_ms`, or no deadline for 0.
fn deadline(ttl_ms: u64, now_ms: UnixMs) -> Option<UnixMs> {
    (ttl_ms > 0).then(|| now_ms.saturating_add(ttl_ms))
}

pub fn get(req: GetRequest) -> Result<Read, Error> {
    check_key(&req.key)?;
    let consistency = Consistency::try_from(req.consistency)
        .map_err(|_| Error::InvalidArgument(format!("unknown consistency {}", req.consistency)))?;
    let touch_ttl_ms = check_ttl(req.touch_ttl_ms)?;
    if touch_ttl_ms > 0 && consistency == Consistency::Stale {
        return Err(Error::InvalidArgument("touch_ttl_ms needs a linearizable read, not STALE".into()));
    }
    Ok(Read { key: req.key, consistency, touch_ttl_ms })
}

pub fn put(req: PutRequest, max_value_bytes: usize, now_ms: UnixMs) -> Result<Write, Error> {
    check_value(&req.value, max_value_bytes)?;
    let ttl_ms = check_ttl(req.ttl_ms)?;
    let condition = match req.condition {
        None | Some(put_request::Condition::IfAbsent(false)) => Condition::None,
        Some(put_request::Condition::IfAbsent(true)) => Condition::IfAbsent,
        Some(put_request::Condition::IfVersion(v)) => Condition::IfVersion(v),
    };
    let op = Op::Put {
        key: req.key.clone(),
        value: req.value,
        expires_at_ms: deadline(ttl_ms, now_ms),
        condition,
    };
    Write::new(&req.key, req.request_id, op)
}

pub fn delete(req: DeleteRequest) -> Result<Write, Error> {
    let op = Op::Delete { key: req.key.clone(), if_version: req.if_version };
    Write::new(&req.key, req.request_id, op)
}

pub fn touch(req: TouchRequest, now_ms: UnixMs) -> Result<Write, Error> {
    let ttl_ms = check_ttl(req.ttl_ms)?;
    let op = Op::Touch { key: req.key.clone(), expires_at_ms: deadline(ttl_ms, now_ms) };
    Write::new(&req.key, req.request_id, op)
}

pub fn increment(req: IncrementRequest, now_ms: UnixMs) -> Result<Write, Error> {
    let ttl_ms = check_ttl(req.ttl_ms)?;
    let op =
        Op::Increment { key: req.key.clone(), delta: req.delta, expires_at_ms: deadline(ttl_ms, now_ms) };
    Write::new(&req.key, req.request_id, op)
}

pub fn publish(req: PublishRequest, max_value_bytes: usize) -> Result<Write, Error> {
    check_value(&req.payload, max_value_bytes)?;
    let op = Op::Publish { channel: req.channel.clone(), payload: req.payload };
    Write::new(&req.channel, req.request_id, op)
}

#[cfg(test)]
mod tests {
    use ringkv_core::limits::MAX_TTL_MS;

    use super::*;

    fn put_request(key: &'static [u8], ttl_ms: i64) -> PutRequest {
        PutRequest { key: Bytes::from_static(key), ttl_ms, ..Default::default() }
    }

    #[test]
    fn invalid_requests_are_refused() {
        let refused = |result: Result<Write, Error>| matches!(result, Err(Error::InvalidArgument(_)));
        assert!(refused(put(put_request(b"", 0), 10, 0)), "empty key");
        assert!(refused(put(put_request(b"k", -1), 10, 0)), "negative ttl");
        assert!(refused(put(put_request(b"k", i64::MAX), 10, 0)), "ttl over ten years");
        let value = PutRequest { value: Bytes::from_static(&[0; 11]), ..put_request(b"k", 0) };
        assert!(refused(put(value, 10, 0)), "value over the limit");
        let id =
            DeleteRequest { key: Bytes::from_static(b"k"), request_id: vec![0; 65].into(), if_version: None };
        assert!(refused(delete(id)), "request id over the limit");
        let stale_touch = GetRequest {
            key: Bytes::from_static(b"k"),
            consistency: Consistency::Stale as i32,
            touch_ttl_ms: 5,
        };
        assert!(get(stale_touch).is_err());
        assert!(get(GetRequest { key: Bytes::from_static(b"k"), consistency: 99, touch_ttl_ms: 0 }).is_err());
    }

    #[test]
    fn deadlines_saturate() {
        let write = put(put_request(b"k", MAX_TTL_MS), 10, u64::MAX - 1).expect("valid");
        assert!(matches!(write.op, Op::Put { expires_at_ms: Some(u64::MAX), .. }));
        let write = Write { request_id: Bytes::from_static(b"id"), ..write };
        assert!(matches!(write.into_op(u64::MAX, 60_000), Op::Once { retain_until_ms: u64::MAX, .. }));
    }

    #[test]
    fn sliding_expiry_extends_only_when_little_is_left() {
        let read =
            Read { key: Bytes::from_static(b"k"), consistency: Consistency::Linearizable, touch_ttl_ms: 100 };
        assert_eq!(read.extend_to(Some(1_010), 10, 0.5, 1_000), Some(1_100));
        assert_eq!(read.extend_to(Some(1_080), 80, 0.5, 1_000), None, "enough left");
        assert_eq!(read.extend_to(None, 0, 0.5, 1_000), None, "no deadline to move");
        assert_eq!(read.extend_to(Some(u64::MAX), 10, f64::MAX, u64::MAX), Some(u64::MAX));
    }
}
