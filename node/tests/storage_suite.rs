//! openraft's storage conformance suite against our sled-backed `LogStore` and
//! `StateMachineStore`.
//!
//! `Suite::test_all` builds its own tokio runtime for every case, so this is a
//! plain test function, not a tokio one (inside a runtime it would panic with a
//! nested-runtime error). Each case gets a fresh temp directory and its own
//! `NodeStorage`; the guard keeps both alive until the case ends.
//!
//! The suite applies only blank and membership entries (it cannot build a
//! `Command`), so it does not depend on `KvState::apply`.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use ringkv_node::raft_types::{StorageError, TypeConfig};
use ringkv_node::store::{LogStore, NodeStorage, StateMachineStore};
use tempfile::TempDir;

/// Keeps a case's storage (declared first, dropped first) and its directory alive.
type Guard = (NodeStorage, TempDir);

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Guard> for SledStoreBuilder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        // Inside the suite's runtime, so the flusher task can be spawned.
        let storage = NodeStorage::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = storage.open_shard(7).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok(((storage, dir), log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledStoreBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
