//! The sled 0.34 engine: `apply_batch` then `flush()` (which writes and syncs the log).

use std::path::Path;

use crate::Result;
use crate::kv::{Batch, KvEngine, engine_err};

/// sled database in `<dir>/sled`.
pub(crate) struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    /// Opens (or creates) the database.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        // sled releases its file lock from its own flusher thread a moment after the last
        // handle is dropped: a store closed and opened again at once (a restart in the same
        // process) waits for that, up to a second, instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match sled::Config::new().path(dir.join("sled")).open() {
                Ok(db) => return Ok(SledEngine { db }),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(engine_err(e)),
            }
        }
    }
}

impl KvEngine for SledEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (start, end) in &batch.delete_ranges {
            for item in self.db.range(start.as_slice()..end.as_slice()) {
                let (k, _) = item.map_err(engine_err)?;
                b.remove(k);
            }
        }
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(engine_err)?;
        // Writes the IO buffers and waits for them to be synced (on Linux sled uses
        // sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) here, falling back to fsync).
        self.db.flush().map_err(engine_err)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(engine_err)?.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 || start >= end {
            return Ok(out);
        }
        for item in self.db.range(start..end) {
            let (k, v) = item.map_err(engine_err)?;
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
        match self.db.range(start..end).next_back() {
            Some(item) => Ok(Some(item.map_err(engine_err)?.0.to_vec())),
            None => Ok(None),
        }
    }
}
