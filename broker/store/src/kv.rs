//! The small ordered key-value engine trait the store runs on, and its batch type.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

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
    /// Everything of the batch must survive a power loss, not only its records: a flush was
    /// asked for, or retention moves a log's start. An engine that syncs its records apart
    /// from the rest (`segments`) syncs the rest too then.
    pub(crate) sync_all: bool,
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
    /// Work the engine leaves until a commit's waiters are answered, and does while the store
    /// is idle (the segments engine's periodic sync of its metadata). An error is a failed write.
    fn after_commit(&self) -> Result<()> {
        Ok(())
    }
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` pairs with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The greatest key with `start <= key < end`.
    fn last_key(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Removes the records of one log that retention gave up: `[old, end)` were given up now,
    /// `[all, end)` is everything below the log's first offset (earlier runs' included). Nothing
    /// reads below a log's first offset, so an engine may leave some of those keys for later
    /// (and need not make the removal durable at once); it never touches a key `>= end`. Runs on
    /// the retention caller's thread, never the committer's.
    fn trim(&self, all: &[u8], old: &[u8], end: &[u8]) -> Result<()> {
        let _ = all;
        let mut batch = Batch::default();
        batch.delete_ranges.push((old.to_vec(), end.to_vec()));
        self.commit(batch)
    }
}

/// Maps any engine error to [`crate::StoreError::Engine`].
pub(crate) fn engine_err(e: impl std::fmt::Display) -> crate::StoreError {
    crate::StoreError::Engine(e.to_string())
}

/// Opens the engine again (after a failure left it unusable, as fjall is after a failed
/// journal write).
pub(crate) type Reopen = Box<dyn Fn() -> crate::Result<Arc<dyn KvEngine>> + Send + Sync>;

/// The engine in use, replaceable by a fresh instance of the same files after a failure.
pub(crate) struct EngineSlot {
    current: RwLock<Option<Arc<dyn KvEngine>>>,
    reopen: Option<Reopen>,
}

impl EngineSlot {
    pub(crate) fn new(engine: Arc<dyn KvEngine>, reopen: Option<Reopen>) -> Self {
        EngineSlot {
            current: RwLock::new(Some(engine)),
            reopen,
        }
    }

    /// The engine, or an error while it is closed between a failure and a successful reopen.
    pub(crate) fn get(&self) -> crate::Result<Arc<dyn KvEngine>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                crate::StoreError::Engine(
                    "the storage engine is closed after a failure; reopening it".into(),
                )
            })
    }

    /// Whether [`reopen`](Self::reopen) can do anything.
    pub(crate) fn can_reopen(&self) -> bool {
        self.reopen.is_some()
    }

    /// Closes the engine and opens its files again. On failure the slot stays empty (reads
    /// fail) until a later call succeeds; an engine handle a reader still holds keeps the files
    /// locked until it is dropped, so a retry later succeeds.
    pub(crate) fn reopen(&self) -> crate::Result<()> {
        let Some(open) = &self.reopen else {
            return Ok(());
        };
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        drop(slot.take());
        *slot = Some(open()?);
        Ok(())
    }
}
