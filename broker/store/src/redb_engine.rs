//! The redb 4 engine: one write transaction per batch, committed with `Durability::Immediate`
//! (redb's default, which fsyncs via `File::sync_data` before `commit` returns).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::Result;
use crate::kv::{Batch, KvEngine, engine_err};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("evmesh");

/// redb database in the file `<dir>/evmesh.redb`.
pub(crate) struct RedbEngine {
    db: Database,
}

impl RedbEngine {
    /// Opens (or creates, or repairs after a crash) the database and makes sure the table exists.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let db = Database::create(dir.join("evmesh.redb")).map_err(engine_err)?;
        let txn = db.begin_write().map_err(engine_err)?;
        txn.open_table(TABLE).map_err(engine_err)?;
        txn.commit().map_err(engine_err)?;
        Ok(RedbEngine { db })
    }
}

impl KvEngine for RedbEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(engine_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(engine_err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(engine_err)?;
            for (start, end) in &batch.delete_ranges {
                if start < end {
                    table
                        .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)
                        .map_err(engine_err)?;
                }
            }
            for (k, v) in &batch.writes {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(engine_err)?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(engine_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(engine_err)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(engine_err)?;
        let table = txn.open_table(TABLE).map_err(engine_err)?;
        Ok(table
            .get(key)
            .map_err(engine_err)?
            .map(|v| v.value().to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 || start >= end {
            return Ok(out);
        }
        let txn = self.db.begin_read().map_err(engine_err)?;
        let table = txn.open_table(TABLE).map_err(engine_err)?;
        for item in table.range::<&[u8]>(start..end).map_err(engine_err)? {
            let (k, v) = item.map_err(engine_err)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
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
        let txn = self.db.begin_read().map_err(engine_err)?;
        let table = txn.open_table(TABLE).map_err(engine_err)?;
        let mut range = table.range::<&[u8]>(start..end).map_err(engine_err)?;
        match range.next_back() {
            Some(item) => Ok(Some(item.map_err(engine_err)?.0.value().to_vec())),
            None => Ok(None),
        }
    }
}
