//! The fjall 3 engine: records in one keyspace, metadata and checkpoints in another (so that
//! the records' tables hold nothing but keys that only grow, which compaction moves down
//! without rewriting them); one `WriteBatch` per batch, committed with
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

/// The keyspace of the logs' records (`l/…` keys). Stores written before evmesh split its
/// keyspaces kept everything here; opening one moves the rest to [`META_KEYSPACE`].
const KEYSPACE: &str = "evmesh";
/// The keyspace of everything else: log metadata (rewritten at every commit), checkpoints, the
/// disk probe. Kept apart, they would make every table of the records overlap every other
/// one, and compaction rewrite the records again and again.
const META_KEYSPACE: &str = "evmesh-meta";
/// fjall refuses a journal budget below this.
const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// fjall refuses a write buffer below this.
const MIN_WRITE_BUFFER_BYTES: u64 = 1024 * 1024;

/// Per log (its record key prefix `l/<log>\0`), the first offset retention kept: compaction
/// destroys the records below it. Shared by the engine and its compaction filters, and across
/// reopens.
#[derive(Debug, Default)]
pub(crate) struct Firsts(RwLock<HashMap<Vec<u8>, u64>>);

/// fjall database in `<dir>/fjall`: records in one keyspace, the rest in another.
pub(crate) struct FjallEngine {
    db: Database,
    ks: Keyspace,
    meta: Keyspace,
    write_buffer: u64,
    firsts: Arc<Firsts>,
}

impl FjallEngine {
    /// Opens (or creates, or recovers from the journal) the database. A store whose events the
    /// `segments` engine keeps is refused: its records are not in fjall.
    pub(crate) fn open(dir: &Path, options: &StoreOptions, firsts: Arc<Firsts>) -> Result<Self> {
        if crate::segments_engine::has_segments(dir)? {
            return Err(crate::StoreError::Engine(format!(
                "the events of the store in {} are in segment files: open it with the `segments` storage engine",
                dir.display()
            )));
        }
        Self::open_unchecked(dir, options, firsts)
    }

    /// [`open`](Self::open) without the check for segment files: the `segments` engine keeps
    /// its metadata and checkpoints here.
    pub(crate) fn open_unchecked(
        dir: &Path,
        options: &StoreOptions,
        firsts: Arc<Firsts>,
    ) -> Result<Self> {
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
        let options = || KeyspaceCreateOptions::default().max_memtable_size(write_buffer);
        let split = db.keyspace_exists(META_KEYSPACE);
        let ks = db.keyspace(KEYSPACE, options).map_err(engine_err)?;
        let meta = db.keyspace(META_KEYSPACE, options).map_err(engine_err)?;
        let engine = FjallEngine {
            db,
            ks,
            meta,
            write_buffer,
            firsts,
        };
        if !split {
            engine.move_meta_out()?;
        }
        Ok(engine)
    }

    /// Whether `key` lives in the records' keyspace.
    fn is_record(key: &[u8]) -> bool {
        key.starts_with(b"l/")
    }

    /// The keyspace of `key`.
    fn keyspace_of(&self, key: &[u8]) -> &Keyspace {
        if Self::is_record(key) {
            &self.ks
        } else {
            &self.meta
        }
    }

    /// A store written before the split keeps its metadata and checkpoints among the records:
    /// moves them to their own keyspace in one durable batch (until that batch commits, the
    /// meta keyspace is empty and the next open moves them again).
    fn move_meta_out(&self) -> Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut moved = 0usize;
        for range in [(&b""[..], &b"l/"[..]), (&b"l0"[..], &[0xffu8][..])] {
            for item in self.ks.range(range.0..range.1) {
                let (k, v) = item.into_inner().map_err(engine_err)?;
                b.insert(&self.meta, k.clone(), v);
                b.remove(&self.ks, k);
                moved += 1;
            }
        }
        if moved > 0 {
            b.commit().map_err(engine_err)?;
            tracing::info!(
                keys = moved,
                "store: moved log metadata and checkpoints to their own keyspace"
            );
        }
        Ok(())
    }

    /// Test only: writes `key` into the records' keyspace whatever it is, as stores written
    /// before the split did.
    #[cfg(test)]
    pub(crate) fn insert_unsplit(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.ks.insert(key, value).map_err(engine_err)?;
        self.db.persist(PersistMode::SyncData).map_err(engine_err)
    }
}

impl FjallEngine {
    /// Commits `batch` with the given durability: `SyncData` (`fdatasync` before returning) or
    /// `Buffer` (handed to the OS: it survives the process being killed, not a power loss).
    pub(crate) fn commit_with(&self, batch: Batch, mode: PersistMode) -> Result<()> {
        let mut b = self.db.batch().durability(Some(mode));
        for (start, end) in &batch.delete_ranges {
            if start >= end {
                continue;
            }
            let ks = self.keyspace_of(start);
            for item in ks.range(start.as_slice()..end.as_slice()) {
                let k = item.key().map_err(engine_err)?;
                // A key also written by this batch must get exactly one item (same seqno).
                if !batch.writes.contains_key(k.as_ref()) {
                    b.remove(ks, k);
                }
            }
        }
        for (k, v) in batch.writes {
            let ks = self.keyspace_of(&k);
            match v {
                Some(v) => b.insert(ks, k, v),
                None => b.remove(ks, k),
            }
        }
        b.commit().map_err(engine_err)?;
        // The write buffer budget, also for a keyspace created with a larger one: a full
        // memtable is sealed and flushed to a table in the background.
        for ks in [&self.ks, &self.meta] {
            if ks.tree.active_memtable().size() > self.write_buffer {
                ks.rotate_memtable().map_err(engine_err)?;
            }
        }
        Ok(())
    }

    /// `fdatasync`s what was committed with `PersistMode::Buffer`.
    pub(crate) fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData).map_err(engine_err)
    }

    /// Whether the records' keyspace holds anything (a store written by this engine).
    pub(crate) fn has_records(&self) -> bool {
        self.ks.first_key_value().is_some()
    }

    /// Empties the records' keyspace, durably (once the `segments` engine has copied them).
    pub(crate) fn clear_records(&self) -> Result<()> {
        self.ks.clear().map_err(engine_err)?;
        self.db.persist(PersistMode::SyncData).map_err(engine_err)
    }
}

impl KvEngine for FjallEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        self.commit_with(batch, PersistMode::SyncData)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace_of(key)
            .get(key)
            .map_err(engine_err)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 || start >= end {
            return Ok(out);
        }
        // A range lies within one tag (`l/`, `m/`, `c/`): in one keyspace.
        for item in self.keyspace_of(start).range(start..end) {
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
        match self.keyspace_of(start).range(start..end).next_back() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Batch;

    fn open(dir: &Path) -> FjallEngine {
        FjallEngine::open(dir, &StoreOptions::default(), Arc::default()).expect("open")
    }

    #[test]
    fn records_and_the_rest_go_to_their_own_keyspaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let mut batch = Batch::default();
        batch
            .writes
            .insert(b"l/a\0\0\0\0\0\0\0\0\x01".to_vec(), Some(b"r".to_vec()));
        batch.writes.insert(b"m/a".to_vec(), Some(b"m".to_vec()));
        batch.writes.insert(b"c/t".to_vec(), Some(b"c".to_vec()));
        e.commit(batch).expect("commit");
        assert_eq!(e.ks.iter().count(), 1, "only the record among the records");
        assert_eq!(e.meta.iter().count(), 2);
        assert_eq!(e.get(b"m/a").expect("get"), Some(b"m".to_vec()));
        assert_eq!(
            e.scan(b"c/", b"c0", 10).expect("scan"),
            vec![(b"c/t".to_vec(), b"c".to_vec())]
        );
    }

    #[test]
    fn a_store_written_before_the_split_has_its_metadata_and_checkpoints_moved_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            for (k, v) in [
                (&b"c/trigger"[..], &b"checkpoint"[..]),
                (b"h/probe", b""),
                (b"l/a\0\0\0\0\0\0\0\0\x07", b"record"),
                (b"m/a", b"meta"),
            ] {
                e.insert_unsplit(k, v).expect("insert");
            }
            // What such a store looked like: no meta keyspace at all.
            let meta = e.meta.clone();
            e.db.delete_keyspace(meta).expect("delete keyspace");
        }
        let e = open(dir.path());
        assert_eq!(e.get(b"m/a").expect("get"), Some(b"meta".to_vec()));
        assert_eq!(
            e.get(b"c/trigger").expect("get"),
            Some(b"checkpoint".to_vec())
        );
        assert_eq!(
            e.get(b"l/a\0\0\0\0\0\0\0\0\x07").expect("get"),
            Some(b"record".to_vec())
        );
        let left: Vec<Vec<u8>> =
            e.ks.iter()
                .map(|i| i.key().expect("key").to_vec())
                .collect();
        assert_eq!(
            left,
            vec![b"l/a\0\0\0\0\0\0\0\0\x07".to_vec()],
            "records only"
        );
        drop(e);
        // Moved for good: opening again finds the same.
        let e = open(dir.path());
        assert_eq!(e.get(b"m/a").expect("get"), Some(b"meta".to_vec()));
        assert_eq!(e.ks.iter().count(), 1);
    }
}
