//! A store handle that [`RunningMesh::shutdown`](crate::RunningMesh::shutdown) closes, so the
//! data directory is unlocked when shutdown returns even while other handles are alive.

use std::sync::{Arc, RwLock};

use evmesh_store::{BoxFuture, EventStore, LogId, Offset, Record, Result, Retention, StoreError};

/// Wraps the opened store; after [`close`](ClosingStore::close) every call fails with
/// [`StoreError::Closed`] and the engine is dropped (its lock released).
pub(crate) struct ClosingStore {
    inner: RwLock<Option<Arc<dyn EventStore>>>,
}

impl ClosingStore {
    pub(crate) fn new(store: Arc<dyn EventStore>) -> ClosingStore {
        ClosingStore {
            inner: RwLock::new(Some(store)),
        }
    }

    fn get(&self) -> Result<Arc<dyn EventStore>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Drops this handle's engine; it closes once calls in progress have returned.
    pub(crate) fn close(&self) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl EventStore for ClosingStore {
    fn append<'a>(&'a self, log: &'a LogId, payload: Vec<u8>) -> BoxFuture<'a, Result<Offset>> {
        let store = self.get();
        Box::pin(async move { store?.append(log, payload).await })
    }
    fn read(&self, log: &LogId, from: Offset, max: usize) -> Result<Vec<Record>> {
        self.get()?.read(log, from, max)
    }
    fn next_offset(&self, log: &LogId) -> Result<Offset> {
        self.get()?.next_offset(log)
    }
    fn first_offset(&self, log: &LogId) -> Result<Option<Offset>> {
        self.get()?.first_offset(log)
    }
    fn put_checkpoint(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.get()?.put_checkpoint(key, value)
    }
    fn delete_checkpoint(&self, key: &str) -> Result<()> {
        self.get()?.delete_checkpoint(key)
    }
    fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.get()?.checkpoints(prefix)
    }
    fn apply_retention(&self, log: &LogId, retention: Retention, keep_from: Offset) -> Result<u64> {
        self.get()?.apply_retention(log, retention, keep_from)
    }
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        let store = self.get();
        Box::pin(async move { store?.flush().await })
    }
    fn health(&self) -> Result<()> {
        self.get()?.health()
    }
}
