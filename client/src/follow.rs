//! Following a server stream that can be resumed: `Watch` and `Subscribe`
//! streams end when their server's replica stops, the node or router shuts
//! down or the connection fails, and each response says how far the stream
//! got. [`follow`] reads one such stream on a task of its own and, after a
//! retryable failure, opens it again from that position, so its reader sees
//! one stream with no gap and no duplicate; a failure that cannot be resumed
//! (the position is past the server's retention, a bad request, or reopening
//! ran out of its deadline) is passed on, and ends it.

use std::future::Future;

use tokio::sync::mpsc;
use tonic::Streaming;

use crate::error::Error;

/// A stream opened at some position: its first response (which only says
/// where it starts) and the rest.
pub(crate) type Opened<R> = (R, Streaming<R>);

/// Reads `stream` into `out` until the receiver is dropped or an error that
/// cannot be resumed; after a retryable one (or the stream's end), reopens it
/// with `open(&position)`. `advance` moves the position past a response.
/// The first response of a reopened stream is not passed on: it says nothing
/// new.
pub(crate) async fn follow<R, P, O, Fut>(
    mut stream: Streaming<R>,
    mut position: P,
    mut open: O,
    advance: impl Fn(&mut P, &R),
    out: mpsc::Sender<Result<R, Error>>,
) where
    O: FnMut(&P) -> Fut,
    Fut: Future<Output = Result<Opened<R>, Error>>,
{
    loop {
        let failure = match stream.message().await {
            Ok(Some(response)) => {
                advance(&mut position, &response);
                if out.send(Ok(response)).await.is_err() {
                    return; // nobody reads any more
                }
                continue;
            }
            Ok(None) => Error::Unavailable("the server ended the stream".into()),
            Err(status) => Error::from(status),
        };
        if !failure.is_retryable() {
            let _ = out.send(Err(failure)).await;
            return;
        }
        tracing::debug!(%failure, "stream broke; resuming it");
        match open(&position).await {
            Ok((first, reopened)) => {
                advance(&mut position, &first);
                stream = reopened;
            }
            Err(err) => {
                let _ = out.send(Err(err)).await;
                return;
            }
        }
        if out.is_closed() {
            return;
        }
    }
}
