//! The node-wide group-commit flusher.
//!
//! Every write that Raft needs on disk (log appends of every shard, votes, snapshot
//! pointers, node metadata) is first applied to sled, which makes it readable at
//! once, and then handed to the one [`Flusher`] of the node as a *waiter*. A single
//! tokio task owns the receiving end of an mpsc channel and loops:
//!
//! 1. `recv_many` takes every waiter queued so far (up to [`MAX_WAITERS_PER_ROUND`]);
//! 2. one `spawn_blocking` runs `db.flush()` and then `fdatasync` on sled's data
//!    file `<sled dir>/db` (sled 0.34's `flush()` is only `sync_file_range` on
//!    Linux: it neither flushes the device cache nor persists the file size);
//! 3. every waiter of the round is completed, in FIFO order, with the round's
//!    result: openraft's `LogFlushed` callbacks, and oneshots for everything else.
//!
//! So all shards' appends that arrive while one fsync runs share the next one:
//! that is the design's group commit (DESIGN §4).
//!
//! Invariants:
//! - A waiter is completed only by a round that *started after it was queued*,
//!   and a round flushes everything sled had accepted when the round started. So a
//!   completed waiter means every sled write issued before it was queued is
//!   durable — in particular a vote flush also covers earlier appends, which keeps
//!   the storage-v2 ordering rule (guide §5).
//! - At most one flush runs at a time, and `flush_async` is never used (sled
//!   issues #1308/#1241: concurrent `flush_async` stalls the process).
//! - A waiter is never dropped uncompleted: if the task is gone, the submitter
//!   completes it with an error itself.
//!
//! The channel is unbounded on purpose. Its producers are bounded elsewhere:
//! openraft 0.9 awaits each append's callback before it issues the next append of
//! the same group, so there is at most one log waiter per shard in flight, plus
//! one per concurrent `save_vote` / snapshot / node-metadata write. A bounded
//! channel would only add a way to deadlock (a full queue while the sender holds
//! the sled write it wants flushed) without bounding anything real.
//!
//! The task holds only a `Weak` reference to the database: the `sled::Db` (and its
//! exclusive file lock) lives exactly as long as the [`NodeStorage`](super::NodeStorage)
//! handles do, so a test can drop every handle and reopen the same directory at
//! once. When the last handle goes, the sender goes with it and the task ends.
//!
//! ## Caveats / not done yet
//! - A failed round fails every waiter of that round; openraft then stops the
//!   groups involved. There is no retry: a failed fsync leaves the page cache in an
//!   unknown state, so retrying could report durability that never happened.
//! - sled blob files (values ≳128 KiB) are not fsynced by sled; entries that large
//!   are not covered by this flusher either (see the module docs of `store`).
//! - The counters are plain totals; latency histograms are for the metrics work.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::raft_types::TypeConfig;

/// The most waiters one round takes from the queue. Waiters beyond it wait for
/// the next round, which starts right after.
pub const MAX_WAITERS_PER_ROUND: usize = 4096;

/// What one flush round makes durable: the sled database, plus a handle on its
/// data file for the real `fdatasync`.
pub(crate) struct DurableDb {
    pub(crate) db: sled::Db,
    /// `<sled dir>/db`, opened read-only. `fdatasync` works per inode, so syncing
    /// this handle syncs what sled wrote through its own.
    data_file: File,
}

impl DurableDb {
    pub(crate) fn new(db: sled::Db, data_file: File) -> Self {
        DurableDb { db, data_file }
    }

    /// Blocking: flush sled's IO buffers, then fdatasync its data file.
    fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.data_file.sync_data()
    }
}

/// Somebody waiting for the next completed round.
enum Waiter {
    /// An openraft log append: completed through its callback.
    Log(LogFlushed<TypeConfig>),
    /// Anything else (vote, snapshot pointer, node metadata, explicit flush).
    Notify(oneshot::Sender<io::Result<()>>),
}

impl Waiter {
    fn complete(self, result: io::Result<()>) {
        match self {
            Waiter::Log(callback) => callback.log_io_completed(result),
            // The receiver may have given up (its future was dropped); nothing to do.
            Waiter::Notify(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Totals since the flusher started, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Completed flush rounds (each is one `db.flush()` + one `fdatasync`).
    pub rounds: u64,
    /// Waiters completed by those rounds. `waiters / rounds` is the average
    /// group-commit batch.
    pub waiters: u64,
    /// Rounds whose flush or fsync failed (their waiters got the error).
    pub failed_rounds: u64,
}

#[derive(Default)]
struct Counters {
    rounds: AtomicU64,
    waiters: AtomicU64,
    failed_rounds: AtomicU64,
}

/// Handle on the node's flusher task. Cheap to clone; the task ends when the last
/// clone is dropped.
#[derive(Clone)]
pub(crate) struct Flusher {
    tx: mpsc::UnboundedSender<Waiter>,
    counters: Arc<Counters>,
}

impl Flusher {
    /// Spawns the flusher task on the current tokio runtime. Panics outside a
    /// runtime; `NodeStorage::open` checks for one first.
    pub(crate) fn spawn(target: Weak<DurableDb>) -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(target, rx, counters.clone()));
        Flusher { tx, counters }
    }

    /// Hands an append's callback to the next round. Returns at once; the callback
    /// is completed once the round that covers it has finished.
    pub(crate) fn submit_log(&self, callback: LogFlushed<TypeConfig>) {
        self.submit(Waiter::Log(callback));
    }

    /// Waits until everything written to sled before this call is durable.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Waiter::Notify(tx));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::io("flushing sled and syncing its data file", e)),
            Err(_) => Err(StoreError::FlusherStopped),
        }
    }

    pub(crate) fn stats(&self) -> FlushStats {
        FlushStats {
            rounds: self.counters.rounds.load(Ordering::Relaxed),
            waiters: self.counters.waiters.load(Ordering::Relaxed),
            failed_rounds: self.counters.failed_rounds.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, waiter: Waiter) {
        if let Err(mpsc::error::SendError(waiter)) = self.tx.send(waiter) {
            waiter.complete(Err(stopped()));
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the storage flusher has stopped")
}

/// The flusher task: one blocking flush per batch of waiters, completions in order.
async fn run(target: Weak<DurableDb>, mut rx: mpsc::UnboundedReceiver<Waiter>, counters: Arc<Counters>) {
    let mut batch = Vec::with_capacity(256);
    // `recv_many` returns 0 only once every sender is gone and the queue is empty.
    while rx.recv_many(&mut batch, MAX_WAITERS_PER_ROUND).await > 0 {
        let result = match target.upgrade() {
            // The strong reference moves into the closure and is dropped when the
            // closure returns, i.e. before any waiter learns the result. So once a
            // caller's flush has completed, this task holds no database reference.
            Some(durable) => tokio::task::spawn_blocking(move || durable.sync())
                .await
                .unwrap_or_else(|join_err| Err(io::Error::other(join_err))),
            // Every NodeStorage handle is gone; these waiters raced with the drop.
            None => Err(stopped()),
        };
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        counters.waiters.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, waiters = batch.len(), "storage flush round failed");
        }
        for waiter in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            waiter.complete(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_fail_instead_of_hanging_when_the_db_is_gone() {
        let flusher = Flusher::spawn(Weak::new());
        let err = flusher.flush().await.unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert_eq!(flusher.stats(), FlushStats { rounds: 1, waiters: 1, failed_rounds: 1 });
    }
}
