//! The small ordered key-value engine trait the store runs on, and its batch type.

use std::collections::BTreeMap;

use crate::Result;

/// One atomic, durable unit of writes.
///
/// Range deletions are applied first, then `writes` (where `None` deletes the key), so a key
/// written in the same batch survives a range deletion that covers it. Keys in `writes` are
/// unique by construction, which the engines rely on (fjall gives all items of one batch the
/// same sequence number).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Half-open key ranges `[start, end)` to delete.
    pub(crate) delete_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Puts (`Some`) and deletes (`None`), keyed by key.
    pub(crate) writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    /// True when the batch changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.delete_ranges.is_empty() && self.writes.is_empty()
    }
}

/// An embedded ordered key-value engine.
///
/// `commit` must not return before the batch is on stable storage (fsync/fdatasync or the
/// engine's equivalent); all reads see every committed batch.
pub(crate) trait KvEngine: Send + Sync + 'static {
    /// Applies `batch` atomically and makes it durable.
    fn commit(&self, batch: Batch) -> Result<()>;
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` pairs with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The greatest key with `start <= key < end`.
    fn last_key(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// Maps any engine error to [`crate::StoreError::Engine`].
pub(crate) fn engine_err(e: impl std::fmt::Display) -> crate::StoreError {
    crate::StoreError::Engine(e.to_string())
}
