//! The fjall 3 engine: one `WriteBatch` per batch, committed with
//! `PersistMode::SyncData` (the journal is written and `fdatasync`ed under the journal lock
//! before `commit` returns).

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::Result;
use crate::kv::{Batch, KvEngine, engine_err};

/// fjall database in `<dir>/fjall`, one keyspace.
pub(crate) struct FjallEngine {
    db: Database,
    ks: Keyspace,
}

impl FjallEngine {
    /// Opens (or creates, or recovers from the journal) the database.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let db = Database::builder(dir.join("fjall"))
            .open()
            .map_err(engine_err)?;
        let ks = db
            .keyspace("evmesh", KeyspaceCreateOptions::default)
            .map_err(engine_err)?;
        Ok(FjallEngine { db, ks })
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
        b.commit().map_err(engine_err)
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
}
