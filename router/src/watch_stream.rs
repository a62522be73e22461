//! The router's `Watch`: a key, or a prefix over every shard, followed with
//! the client library's [`Client::watch`] (one stream per shard on its leader,
//! resumed across leader changes) and sent on as one stream whose responses
//! each carry the resume token of everything sent so far.
//!
//! A router holds nothing a restart would lose: the token is the caller's, so
//! a caller whose router died opens the watch again with its last token, on
//! any router, and continues exactly there.
//!
//! Responses with events go out at once. Progress-only responses (a shard
//! moved on without a matching change) are folded: at most one per
//! second (`PROGRESS_EVERY`) carries the latest token, so a prefix over 32 shards
//! does not cost its caller 32 messages a second.

use std::time::Duration;

use ringkv_client::watch::{EventKind, WatchStart, WatchTarget};
use ringkv_client::{Client, ResumeToken, Watch};
use ringkv_core::limits::check_key;
use ringkv_proto::v1::{WatchEvent, WatchEventType, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::error::to_status;

/// Most often a progress-only response is sent.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the caller asked to watch, and from where.
pub fn parse(req: WatchRequest) -> Result<(WatchTarget, WatchStart), Status> {
    let target = match (req.key.is_empty(), req.prefix.is_empty()) {
        (false, true) => WatchTarget::Key(req.key),
        (true, false) if req.shard != 0 => {
            return Err(Status::invalid_argument(
                "a router watches a prefix over every shard: leave shard 0 (or watch the shard's leader)",
            ));
        }
        (true, false) => WatchTarget::Prefix(req.prefix),
        (true, true) if !req.resume_token.is_empty() => {
            if req.start_version != 0 {
                return Err(Status::invalid_argument("give start_version or resume_token, not both"));
            }
            let token = ResumeToken::decode(&req.resume_token).map_err(to_status)?;
            return Ok((token.target().clone(), WatchStart::After(token)));
        }
        _ => return Err(Status::invalid_argument("a watch names exactly one of key and prefix")),
    };
    match &target {
        WatchTarget::Key(key) | WatchTarget::Prefix(key) => {
            check_key(key).map_err(|e| Status::invalid_argument(e.to_string()))?
        }
    }
    let start = match (req.start_version, req.resume_token.is_empty()) {
        (0, true) => WatchStart::Now,
        (version, true) => WatchStart::Version(version),
        (0, false) => {
            let token = ResumeToken::decode(&req.resume_token).map_err(to_status)?;
            if *token.target() != target {
                return Err(Status::invalid_argument("the resume token is for another key or prefix"));
            }
            WatchStart::After(token)
        }
        _ => return Err(Status::invalid_argument("give start_version or resume_token, not both")),
    };
    Ok((target, start))
}

/// Opens the watch; the stream's first response (no events) carries the
/// token of its starting point.
pub async fn open(
    client: &Client,
    req: WatchRequest,
    stopping: watch::Receiver<bool>,
) -> Result<Stream, Status> {
    let (target, start) = parse(req)?;
    let watch = client.watch(target, start).await.map_err(to_status)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(forward(watch, tx, stopping));
    Ok(Box::pin(tokio_stream_from(rx)))
}

/// The stream a caller reads.
pub type Stream = tonic::codegen::BoxStream<WatchResponse>;

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<WatchResponse, Status>>,
) -> impl futures::Stream<Item = Result<WatchResponse, Status>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends the watch's responses on until the caller goes away, the watch
/// fails or the router shuts down.
async fn forward(
    mut watch: Watch,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let token = |watch: &Watch| watch.token().encode();
    let first = WatchResponse { resume_token: token(&watch), ..Default::default() };
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    let mut progress_sent = tokio::time::Instant::now();
    let mut progress_pending = false;
    loop {
        let flush_at = progress_sent + PROGRESS_EVERY;
        let batch = tokio::select! {
            batch = watch.next() => batch,
            () = tokio::time::sleep_until(flush_at), if progress_pending => {
                progress_pending = false;
                progress_sent = tokio::time::Instant::now();
                let note = WatchResponse { resume_token: token(&watch), ..Default::default() };
                if tx.send(Ok(note)).await.is_err() {
                    return;
                }
                continue;
            }
            () = crate::server::until_stopping(&mut stopping) => {
                let shutting_down = Status::unavailable(
                    "the router is shutting down: resume the watch with its last resume_token on another router",
                );
                let _ = tx.send(Err(shutting_down)).await;
                return;
            }
            () = tx.closed() => return,
        };
        let response = match batch {
            None => return,
            Some(Err(err)) => {
                let _ = tx.send(Err(to_status(err))).await;
                return;
            }
            Some(Ok(batch)) if batch.events.is_empty() => {
                progress_pending = true;
                continue;
            }
            Some(Ok(batch)) => {
                // Its token covers any progress folded so far.
                progress_pending = false;
                WatchResponse {
                    shard: batch.shard,
                    events: batch.events.into_iter().map(to_proto).collect(),
                    version: batch.version,
                    resume_token: token(&watch),
                }
            }
        };
        if tx.send(Ok(response)).await.is_err() {
            return;
        }
    }
}

fn to_proto(event: ringkv_client::WatchEvent) -> WatchEvent {
    let kind = match event.kind {
        EventKind::Put => WatchEventType::Put,
        EventKind::Delete => WatchEventType::Delete,
        EventKind::Expired => WatchEventType::Expired,
    };
    WatchEvent { r#type: kind as i32, key: event.key, value: event.value, version: event.version }
}
