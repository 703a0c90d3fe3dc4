//! The fjall 3 engine: one `WriteBatch` per batch, committed with
//! `PersistMode::SyncData` (the journal is written and `fdatasync`ed under the journal lock
//! before `commit` returns). Its memory is bounded by [`StoreOptions`](crate::StoreOptions): the
//! block cache, the write buffer (memtable) and the journal size. Retention writes no
//! tombstones: tables wholly below a log's first offset are dropped, and compaction destroys the
//! rest of the records below it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use fjall::compaction::filter::{
    CompactionFilter, CompactionFilterResult, Context, Factory, ItemAccessor, Verdict,
};
use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::kv::{Batch, KvEngine, engine_err};
use crate::{Result, StoreOptions};

/// The one keyspace evmesh keeps its logs, metadata and checkpoints in.
const KEYSPACE: &str = "evmesh";
/// fjall refuses a journal budget below this.
const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// fjall refuses a write buffer below this.
const MIN_WRITE_BUFFER_BYTES: u64 = 1024 * 1024;

/// Per log (its record key prefix `l/<log>\0`), the first offset retention kept: compaction
/// destroys the records below it. Shared by the engine and its compaction filters, and across
/// reopens.
#[derive(Debug, Default)]
pub(crate) struct Firsts(RwLock<HashMap<Vec<u8>, u64>>);

/// fjall database in `<dir>/fjall`, one keyspace.
pub(crate) struct FjallEngine {
    db: Database,
    ks: Keyspace,
    write_buffer: u64,
    firsts: Arc<Firsts>,
}

impl FjallEngine {
    /// Opens (or creates, or recovers from the journal) the database.
    pub(crate) fn open(dir: &Path, options: &StoreOptions, firsts: Arc<Firsts>) -> Result<Self> {
        let write_buffer = options.write_buffer_bytes.max(MIN_WRITE_BUFFER_BYTES);
        let factory: Arc<dyn Factory> = Arc::new(BelowFirst(firsts.clone()));
        let db = Database::builder(dir.join("fjall"))
            .cache_size(options.cache_bytes)
            .max_journaling_size(options.journal_bytes.max(MIN_JOURNAL_BYTES))
            .with_compaction_filter_factories(Arc::new(move |name| {
                (name == KEYSPACE).then(|| factory.clone())
            }))
            .open()
            .map_err(engine_err)?;
        // The write buffer size given here only counts for a new keyspace (fjall keeps the
        // one it was created with); `commit` enforces the configured one on every keyspace.
        let ks = db
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(write_buffer)
            })
            .map_err(engine_err)?;
        Ok(FjallEngine {
            db,
            ks,
            write_buffer,
            firsts,
        })
    }
}

impl KvEngine for FjallEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        for (start, end) in &batch.delete_ranges {
            if start >= end {
                continue;
            }
            for item in self.ks.range(start.as_slice()..end.as_slice()) {
                let k = item.key().map_err(engine_err)?;
                // A key also written by this batch must get exactly one item (same seqno).
                if !batch.writes.contains_key(k.as_ref()) {
                    b.remove(&self.ks, k);
                }
            }
        }
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(&self.ks, k, v),
                None => b.remove(&self.ks, k),
            }
        }
        b.commit().map_err(engine_err)?;
        // The write buffer budget, also for a keyspace created with a larger one: a full
        // memtable is sealed and flushed to a table in the background.
        if self.ks.tree.active_memtable().size() > self.write_buffer {
            self.ks.rotate_memtable().map_err(engine_err)?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.ks.get(key).map_err(engine_err)?.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 || start >= end {
            return Ok(out);
        }
        for item in self.ks.range(start..end) {
            let (k, v) = item.into_inner().map_err(engine_err)?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn last_key(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        if start >= end {
            return Ok(None);
        }
        match self.ks.range(start..end).next_back() {
            Some(item) => Ok(Some(item.key().map_err(engine_err)?.to_vec())),
            None => Ok(None),
        }
    }

    /// No tombstones: the compaction filter learns the log's new first offset (and destroys the
    /// records below it whenever compaction rewrites them), and every table holding only such
    /// records is dropped now.
    fn trim(&self, all: &[u8], _old: &[u8], end: &[u8]) -> Result<()> {
        let Some(split) = end.len().checked_sub(8) else {
            return Ok(());
        };
        let (prefix, offset) = end.split_at(split);
        let first = u64::from_be_bytes(offset.try_into().map_err(engine_err)?);
        {
            let mut firsts = self.firsts.0.write().unwrap_or_else(|e| e.into_inner());
            let known = firsts.entry(prefix.to_vec()).or_insert(first);
            *known = (*known).max(first);
        }
        self.ks.tree.drop_range(all..end).map_err(engine_err)
    }
}

/// Makes the compaction filter that destroys records below their log's first offset.
struct BelowFirst(Arc<Firsts>);

impl Factory for BelowFirst {
    fn name(&self) -> &str {
        "evmesh-below-first"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        let firsts = self.0.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        Box::new(BelowFirstFilter(firsts))
    }
}

/// One compaction's filter, with the first offsets as they were when it started.
struct BelowFirstFilter(HashMap<Vec<u8>, u64>);

impl CompactionFilter for BelowFirstFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> CompactionFilterResult {
        let key: &[u8] = item.key();
        if self.0.is_empty() || !key.starts_with(b"l/") {
            return Ok(Verdict::Keep);
        }
        let Some(split) = key.len().checked_sub(8) else {
            return Ok(Verdict::Keep);
        };
        let (prefix, offset) = key.split_at(split);
        let below = match (self.0.get(prefix), <[u8; 8]>::try_from(offset)) {
            (Some(first), Ok(offset)) => u64::from_be_bytes(offset) < *first,
            _ => false,
        };
        // A record key is written once and never again (offsets are not reused), so no older
        // version can come back when it goes without a tombstone.
        Ok(if below {
            Verdict::Destroy
        } else {
            Verdict::Keep
        })
    }
}
