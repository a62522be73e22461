//! A write workload through a router, for tests that change the cluster under
//! load: writers put fresh keys until told to stop, recording what was
//! acknowledged and every error, so a test can check afterwards that nothing
//! acknowledged was lost and that the router only ever answered with errors an
//! application may retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_proto::v1::{GetRequest, PutRequest};
use tokio::sync::Mutex;
use tonic::Code;

use crate::{KvReply, KvRequest, send};

/// A plain put of `key = value`.
pub fn put(key: &str, value: &str) -> KvRequest {
    KvRequest::Put(PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    })
}

/// A linearizable get of `key`.
pub fn get(key: &str) -> KvRequest {
    KvRequest::Get(GetRequest { key: Bytes::from(key.to_string()), consistency: 0, ..Default::default() })
}

/// Acknowledged writes and the errors seen by a workload.
#[derive(Default)]
pub struct Outcomes {
    pub acked: BTreeMap<String, (String, u64)>,
    /// Statuses the router answered with.
    pub errors: Vec<(Code, String)>,
    /// Failures of the application's own channel to the router (refused,
    /// reset or cancelled connection): tonic made these locally, with the
    /// transport error as their source; the router never answered.
    pub transport_errors: Vec<(Code, String)>,
}

/// Writers putting fresh keys through `router` until `stop`; each key is written
/// once, so every acknowledged key must later read back exactly.
pub fn start_workload(
    router: String,
    writers: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (router, stop, outcomes) = (router.clone(), stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("w{w}-{seq}"), format!("v{seq}"));
                    seq += 1;
                    match send(&router, put(&key, &value)).await {
                        Ok(KvReply::Put(r)) if r.succeeded => {
                            outcomes.lock().await.acked.insert(key, (value, r.version));
                        }
                        Ok(other) => panic!("unexpected reply {other:?}"),
                        Err(status) => {
                            let error = (status.code(), status.message().to_string());
                            let mut outcomes = outcomes.lock().await;
                            if std::error::Error::source(&status).is_some() {
                                outcomes.transport_errors.push(error);
                            } else {
                                outcomes.errors.push(error);
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged write reads back through `router` with its value and version.
pub async fn check_acked(router: &str, acked: &BTreeMap<String, (String, u64)>, timeout: Duration) {
    for (key, (value, version)) in acked {
        let deadline = Instant::now() + timeout;
        loop {
            match send(router, get(key)).await {
                Ok(KvReply::Get(r)) => {
                    assert!(r.found, "acknowledged write {key} lost");
                    assert_eq!((&r.value[..], r.version), (value.as_bytes(), *version), "{key}");
                    break;
                }
                Ok(other) => panic!("unexpected reply {other:?}"),
                Err(e) => assert!(Instant::now() < deadline, "{key} unreadable: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Errors a router may return while leaders move: the request was not served
/// in time, or its outcome is unknown. Anything else is a bug.
pub fn assert_only_retryable(errors: &[(Code, String)]) {
    for (code, message) in errors {
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "router returned {code:?}: {message}"
        );
    }
}
