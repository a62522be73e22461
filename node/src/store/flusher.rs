//! The node-wide group-commit flusher.
//!
//! Every write that Raft needs on disk (log appends of every shard, votes, snapshot
//! pointers, node metadata) is first applied to sled, which makes it readable at
//! once, and then handed to the one [`Flusher`] of the node as a *waiter*. A single
//! tokio task owns the receiving end of an mpsc channel and loops:
//!
//! 1. `recv_many` takes every waiter queued so far (up to [`MAX_WAITERS_PER_ROUND`]);
//! 2. one `spawn_blocking` runs the round's IO ([`DurableDb::sync`]): list sled's
//!    blob directory, `db.flush()`, fsync every blob file not synced before (then
//!    the blob directory), and finally `fdatasync` sled's data file `<sled dir>/db`
//!    (sled 0.34's `flush()` is only `sync_file_range` on Linux: it neither flushes
//!    the device cache nor persists the file size);
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
//! ## Blob files
//!
//! sled 0.34.7 writes a log message whose serialized size exceeds
//! `segment_size / 4 - 20` bytes (≈128 KiB with the default 512 KiB segments) to
//! its own file `<sled dir>/blobs/<lsn>` (`Config::blob_path`), created with
//! `create_new` and filled with plain `write_all`: crc32, kind byte, payload.
//! sled never fsyncs that file nor the `blobs` directory (`pagecache/blob_io.rs`),
//! and its log keeps only the blob's lsn. Our log entries can be that large (a
//! value may be 1 MiB, a proposal batch up to 4 MiB); sled also writes whole tree
//! nodes and its metadata as blobs (`BlobNode`, `BlobMeta`) when their encoding
//! crosses the threshold. Without help, an acknowledged entry could be lost on
//! power failure although `<sled dir>/db` was synced: at recovery sled
//! *silently skips* a log message whose blob file is missing
//! (`LogRead::DanglingBlob` in `pagecache/iterator.rs`), and stops replaying its
//! log at a blob whose checksum fails (a torn file) — dropping every later write.
//!
//! So each round also makes blob files durable:
//! - **List before flushing.** The round reads the `blobs` directory *before*
//!   `db.flush()`, and only blobs of that listing are synced and remembered as
//!   synced. sled creates a blob inside the log reservation of its message, after
//!   publishing the reservation in `max_reserved_lsn`, and `flush()` waits until
//!   everything up to the `max_reserved_lsn` it read is stable, which needs every
//!   such reservation — blob write included — to be finished. So every file in
//!   the listing is complete once `flush()` returns. A listing taken *after* the
//!   flush could contain a blob another thread is still writing; syncing it and
//!   remembering its name would leave the rest of it unsynced for good. A blob of
//!   a waiter of this round was written before the waiter was queued, hence
//!   before the listing, so it is in it. Blobs created after the listing are
//!   picked up by the next round.
//! - **Sync what is new**, then the directory: every listed name not in the
//!   tracker's set is opened and `fdatasync`ed; if at least one was, the `blobs`
//!   directory is fsynced once (that makes the new names durable). A name removed
//!   between the listing and the open (sled deletes blobs it no longer needs) is
//!   skipped: `NotFound` is not an error. Any other IO error fails the round, and
//!   its waiters get the error exactly as for a failed flush.
//! - **Blobs before the data file.** The blob fsyncs run before the data file's
//!   `fdatasync`, so this round never makes sled's log durable ahead of the blobs
//!   it points at (sled's own 1 s backstop fsync can still do so; the order
//!   matters only for a crash *during* a round, whose waiters are not yet
//!   acknowledged anyway).
//! - **Tracking.** The set of synced names lives in the flusher task
//!   ([`BlobTracker`]) and is pruned to the current listing each round, so it
//!   never outgrows the blob directory. If a round's blocking task panics, the set
//!   is reset and the next round re-syncs every blob present: extra fsyncs, never
//!   a missed one.
//! - **The `blobs` directory itself** is created by sled when it opens the
//!   database (`Config::open_file`), without syncing `<sled dir>`;
//!   `NodeStorage::open` fsyncs `<sled dir>` after every open (once per process
//!   start; unconditionally, so a crash between sled's `mkdir` and our sync is
//!   repaired at the next start).
//!
//! Cost of a round with no blob files: one `read_dir` of the (empty) `blobs`
//! directory — `openat`, `fstat`, two `getdents64`, `close`: about 4 µs measured
//! on this project's ext4 dev VM, against 70–230 µs for the round's flush and
//! `fdatasync` — and no file or directory fsync. There is no cheaper *sound*
//! signal: sled exposes no blob count or lsn; the sizes of our own writes do not
//! tell (sled decides per log message, including whole tree nodes it writes on
//! its own); the directory's mtime has coarse (jiffy) granularity, so a blob
//! created in the same tick as the previous check would be missed; inotify would
//! need a new dependency and unsafe code for a few microseconds per round.
//!
//! ## Caveats / not done yet
//! - A failed round fails every waiter of that round; openraft then stops the
//!   groups involved. There is no retry: a failed fsync leaves the page cache in an
//!   unknown state, so retrying could report durability that never happened.
//!   (A *later* round still runs for new waiters and may succeed; that holds for
//!   the data file and for a blob whose fsync failed alike — the groups that saw
//!   the error are stopped, which is what protects their entries.)
//! - Blob files are synced one after another; a round with many new blobs pays
//!   one fsync each. The first round after an open syncs every blob file present
//!   (the previous process may have died before syncing them, and sled has just
//!   replayed them as part of its log).
//! - The counters are plain totals; latency histograms are for the metrics work.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::raft_types::TypeConfig;

/// The most waiters one round takes from the queue. Waiters beyond it wait for
/// the next round, which starts right after.
pub const MAX_WAITERS_PER_ROUND: usize = 4096;

/// What one flush round makes durable: the sled database, its data file (for
/// the real `fdatasync`) and its blob files.
pub(crate) struct DurableDb {
    pub(crate) db: sled::Db,
    /// `<sled dir>/db`, opened read-only. `fdatasync` works per inode, so syncing
    /// this handle syncs what sled wrote through its own.
    data_file: File,
    data_file_path: PathBuf,
    /// `<sled dir>/blobs`, where sled puts messages too large for its log.
    blobs_dir: PathBuf,
}

impl DurableDb {
    pub(crate) fn new(db: sled::Db, data_file: File, sled_dir: &Path) -> Self {
        DurableDb {
            db,
            data_file,
            data_file_path: sled_dir.join(DATA_FILE),
            blobs_dir: sled_dir.join(BLOBS_DIR),
        }
    }

    /// Blocking: one round's IO. Lists the blob files, flushes sled's IO buffers,
    /// fsyncs the blob files `blobs` has not synced yet (and then their
    /// directory), then fdatasyncs the data file. See the module docs for why the
    /// listing comes first.
    fn sync(&self, blobs: &mut BlobTracker) -> io::Result<BlobsSynced> {
        let listing = list_blobs(&self.blobs_dir)?;
        self.db.flush().map_err(io::Error::other)?;
        let synced = blobs.sync_new(&self.blobs_dir, listing)?;
        self.data_file
            .sync_data()
            .map_err(|e| with_path(e, "fdatasync of sled's data file", &self.data_file_path))?;
        Ok(synced)
    }
}

/// sled 0.34.7's data file inside its db directory (`Config::db_path`).
pub(crate) const DATA_FILE: &str = "db";
/// sled 0.34.7's blob directory inside its db directory (`Config::blob_path`).
pub(crate) const BLOBS_DIR: &str = "blobs";

/// The blob files the flusher has already made durable, by file name.
#[derive(Debug, Default)]
pub(crate) struct BlobTracker {
    synced: HashSet<OsString>,
}

/// What one round did about blob files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BlobsSynced {
    /// Blob files fsynced by the round.
    pub(crate) files: u64,
    /// Whether the round fsynced the blob directory.
    pub(crate) dir: bool,
}

impl BlobTracker {
    /// Fsyncs every file of `listing` (names inside `dir`) not synced before,
    /// then `dir` if any was; forgets names that are no longer listed. A listed
    /// file that is gone by the time it is opened is skipped. On an error nothing
    /// new is remembered, so the next round tries those files again.
    pub(crate) fn sync_new(&mut self, dir: &Path, listing: HashSet<OsString>) -> io::Result<BlobsSynced> {
        let mut new = Vec::new();
        for name in listing.iter().filter(|name| !self.synced.contains(*name)) {
            let path = dir.join(name);
            let file = match File::open(&path) {
                Ok(file) => file,
                // Deleted by sled since the listing: it no longer needs it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(with_path(e, "opening sled blob file", &path)),
            };
            file.sync_data().map_err(|e| with_path(e, "fdatasync of sled blob file", &path))?;
            new.push(name.clone());
        }
        if !new.is_empty() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| with_path(e, "fsync of sled's blob directory", dir))?;
        }
        let synced = BlobsSynced { files: new.len() as u64, dir: !new.is_empty() };
        self.synced.retain(|name| listing.contains(name));
        self.synced.extend(new);
        Ok(synced)
    }

    /// How many names are remembered as synced.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.synced.len()
    }
}

/// The names in sled's blob directory; empty if the directory does not exist.
/// With no blobs this is `openat`, `fstat`, two `getdents64` and `close`.
pub(crate) fn list_blobs(dir: &Path) -> io::Result<HashSet<OsString>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(with_path(e, "listing sled's blob directory", dir)),
    };
    entries
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| with_path(e, "listing sled's blob directory", dir))
}

/// Keeps the error's kind and says what failed on which path.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
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
    /// Completed flush rounds (each is one listing of the blob directory, one
    /// `db.flush()`, the blob fsyncs below and one `fdatasync` of the data file).
    pub rounds: u64,
    /// Waiters completed by those rounds. `waiters / rounds` is the average
    /// group-commit batch.
    pub waiters: u64,
    /// Rounds whose flush or fsync failed (their waiters got the error).
    pub failed_rounds: u64,
    /// sled blob files fsynced by successful rounds; each file is counted once,
    /// by the first round that saw it.
    pub blob_files_synced: u64,
    /// fsyncs of sled's blob directory (at most one per round, only by rounds
    /// that synced a new blob file).
    pub blob_dir_syncs: u64,
}

#[derive(Default)]
struct Counters {
    rounds: AtomicU64,
    waiters: AtomicU64,
    failed_rounds: AtomicU64,
    blob_files_synced: AtomicU64,
    blob_dir_syncs: AtomicU64,
    histograms: FlushHistograms,
}

/// Per-round distributions, for Prometheus: how many waiters a round
/// completed (the group-commit batch) and how long its sync took.
#[derive(Clone)]
pub struct FlushHistograms {
    pub batch_size: Histogram,
    pub sync_seconds: Histogram,
}

impl Default for FlushHistograms {
    fn default() -> Self {
        FlushHistograms {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            sync_seconds: ringkv_metrics::latency_buckets(),
        }
    }
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
            Ok(Err(e)) => Err(StoreError::io("flushing sled and syncing its files", e)),
            Err(_) => Err(StoreError::FlusherStopped),
        }
    }

    pub(crate) fn histograms(&self) -> FlushHistograms {
        self.counters.histograms.clone()
    }

    pub(crate) fn stats(&self) -> FlushStats {
        FlushStats {
            rounds: self.counters.rounds.load(Ordering::Relaxed),
            waiters: self.counters.waiters.load(Ordering::Relaxed),
            failed_rounds: self.counters.failed_rounds.load(Ordering::Relaxed),
            blob_files_synced: self.counters.blob_files_synced.load(Ordering::Relaxed),
            blob_dir_syncs: self.counters.blob_dir_syncs.load(Ordering::Relaxed),
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
    // Blob files already made durable. It moves into each round's blocking task
    // and back; a panicking round loses it, and the next round starts afresh
    // (re-syncing what is there: redundant, never unsafe).
    let mut blobs = BlobTracker::default();
    // `recv_many` returns 0 only once every sender is gone and the queue is empty.
    while rx.recv_many(&mut batch, MAX_WAITERS_PER_ROUND).await > 0 {
        let started = std::time::Instant::now();
        let result = match target.upgrade() {
            // The strong reference moves into the closure and is dropped when the
            // closure returns, i.e. before any waiter learns the result. So once a
            // caller's flush has completed, this task holds no database reference.
            Some(durable) => {
                let mut tracker = std::mem::take(&mut blobs);
                match tokio::task::spawn_blocking(move || {
                    let result = durable.sync(&mut tracker);
                    (tracker, result)
                })
                .await
                {
                    Ok((tracker, result)) => {
                        blobs = tracker;
                        result
                    }
                    Err(join_err) => Err(io::Error::other(join_err)),
                }
            }
            // Every NodeStorage handle is gone; these waiters raced with the drop.
            None => Err(stopped()),
        };
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        counters.waiters.fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters.histograms.batch_size.observe(batch.len() as f64);
        counters.histograms.sync_seconds.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(synced) => {
                counters.blob_files_synced.fetch_add(synced.files, Ordering::Relaxed);
                counters.blob_dir_syncs.fetch_add(u64::from(synced.dir), Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, waiters = batch.len(), "storage flush round failed");
            }
        }
        for waiter in batch.drain(..) {
            let r = match &result {
                Ok(_) => Ok(()),
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
        assert_eq!(
            flusher.stats(),
            FlushStats { rounds: 1, waiters: 1, failed_rounds: 1, ..FlushStats::default() }
        );
    }

    fn names(names: &[&str]) -> HashSet<OsString> {
        names.iter().map(OsString::from).collect()
    }

    #[test]
    fn blob_tracker_syncs_each_file_once_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(dir.join("100"), b"a").unwrap();
        fs::write(dir.join("200"), b"b").unwrap();
        let mut tracker = BlobTracker::default();

        let listing = list_blobs(dir).unwrap();
        assert_eq!(listing, names(&["100", "200"]));
        assert_eq!(tracker.sync_new(dir, listing).unwrap(), BlobsSynced { files: 2, dir: true });
        assert_eq!(tracker.len(), 2);

        // Nothing new: no file fsync, no directory fsync.
        assert_eq!(tracker.sync_new(dir, list_blobs(dir).unwrap()).unwrap(), BlobsSynced::default());

        // sled deleted one and wrote another: only the new one is synced, and the
        // deleted name is forgotten.
        fs::remove_file(dir.join("100")).unwrap();
        fs::write(dir.join("300"), b"c").unwrap();
        assert_eq!(
            tracker.sync_new(dir, list_blobs(dir).unwrap()).unwrap(),
            BlobsSynced { files: 1, dir: true }
        );
        assert_eq!(tracker.synced, names(&["200", "300"]));

        // Everything gone: the set empties.
        fs::remove_file(dir.join("200")).unwrap();
        fs::remove_file(dir.join("300")).unwrap();
        assert_eq!(tracker.sync_new(dir, list_blobs(dir).unwrap()).unwrap(), BlobsSynced::default());
        assert_eq!(tracker.len(), 0);
    }

    #[test]
    fn a_blob_deleted_after_the_listing_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(dir.join("7"), b"x").unwrap();
        // "5" was listed, then removed by sled before the round opened it.
        let mut tracker = BlobTracker::default();
        assert_eq!(tracker.sync_new(dir, names(&["5", "7"])).unwrap(), BlobsSynced { files: 1, dir: true });
        assert_eq!(tracker.synced, names(&["7"]));
        // Only "5" gone since: no directory fsync either.
        assert_eq!(tracker.sync_new(dir, names(&["5", "7"])).unwrap(), BlobsSynced::default());
    }

    #[test]
    fn a_blob_that_cannot_be_opened_fails_the_sync_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(dir.join("1"), b"x").unwrap();
        // A symlink to itself: opening it fails with ELOOP (not NotFound), even as root.
        std::os::unix::fs::symlink("9", dir.join("9")).unwrap();
        let mut tracker = BlobTracker::default();
        let err = tracker.sync_new(dir, list_blobs(dir).unwrap()).unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&*dir.join("9").to_string_lossy()), "{err}");
        // A failed sync remembers nothing, so the next round syncs "1" again.
        assert_eq!(tracker.len(), 0);
        fs::remove_file(dir.join("9")).unwrap();
        assert_eq!(
            tracker.sync_new(dir, list_blobs(dir).unwrap()).unwrap(),
            BlobsSynced { files: 1, dir: true }
        );
    }

    #[test]
    fn a_missing_blob_directory_lists_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_blobs(&dir.path().join(BLOBS_DIR)).unwrap().is_empty());
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        assert!(list_blobs(&file).is_err());
    }
}
