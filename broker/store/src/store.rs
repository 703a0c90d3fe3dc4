//! [`KvEventStore`]: the [`EventStore`] on an embedded ordered key-value engine, with group
//! commit by a dedicated committer thread.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::committer::{Committer, Counters, PendingCheckpoints, Request};
use crate::keys;
use crate::kv::{EngineSlot, KvEngine, Reopen, engine_err};
use crate::{
    BoxFuture, EngineKind, EventStore, LogId, Offset, Record, Result, Retention, StoreError,
    StoreOptions,
};

/// Counters of a [`KvEventStore`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Successful durable engine commits (group commits; a retention run's move of a log's
    /// start rides on one).
    pub commits: u64,
    /// Appends acknowledged.
    pub appends: u64,
    /// Engine commits that failed (their appends got an error).
    pub failed_commits: u64,
}

/// The embedded [`EventStore`]: one engine ([`EngineKind`]) in one directory.
///
/// Appends and checkpoint writes go to a committer thread that writes everything pending as one
/// engine batch and syncs it once (group commit). Reads go straight to the engine. Dropping the
/// store commits what is pending and stops the thread.
pub struct KvEventStore {
    kind: EngineKind,
    engine: Arc<EngineSlot>,
    health: Arc<crate::committer::Health>,
    tx: RwLock<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    pending: Arc<PendingCheckpoints>,
    /// Payload bytes of appends handed to the committer and not answered yet.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// Held by the retention run in progress.
    retention: Mutex<()>,
}

impl std::fmt::Debug for KvEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvEventStore")
            .field("kind", &self.kind)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl KvEventStore {
    /// Opens (or creates) the store of engine `kind` in `dir` (created if missing) and starts
    /// its committer thread.
    pub fn open(kind: EngineKind, dir: &Path) -> Result<Self> {
        Self::open_with(kind, dir, StoreOptions::default())
    }

    /// [`open`](Self::open) with options.
    pub fn open_with(kind: EngineKind, dir: &Path, options: StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(engine_err)?;
        let path = dir.to_path_buf();
        let cache = EngineCache::default();
        let open: Reopen = Box::new(move || open_engine(kind, &path, &options, &cache));
        let engine = open()?;
        Self::start_slot(kind, EngineSlot::new(engine, Some(open)), options)
    }

    /// Starts the committer thread on an opened engine.
    #[cfg(test)]
    pub(crate) fn start(
        kind: EngineKind,
        engine: Arc<dyn KvEngine>,
        options: StoreOptions,
    ) -> Result<Self> {
        Self::start_slot(kind, EngineSlot::new(engine, None), options)
    }

    /// Whether the committer waits for requests under `SCHED_BATCH` now.
    #[cfg(test)]
    pub(crate) fn committer_batch_policy(&self) -> bool {
        self.counters.batch_policy.load(Ordering::Relaxed)
    }

    fn start_slot(kind: EngineKind, slot: EngineSlot, options: StoreOptions) -> Result<Self> {
        let engine = Arc::new(slot);
        let health = Arc::new(crate::committer::Health::default());
        let counters = Arc::new(Counters::default());
        let pending = Arc::new(PendingCheckpoints::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let committer = Committer::new(
            engine.clone(),
            counters.clone(),
            pending.clone(),
            queued.clone(),
            health.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("evmesh-store-{}", kind.as_str()))
            .spawn(move || committer.run(rx))
            .map_err(engine_err)?;
        Ok(KvEventStore {
            kind,
            engine,
            health,
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            counters,
            pending,
            queued,
            max_queued: options.max_queued_bytes,
            retention: Mutex::new(()),
        })
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> EngineKind {
        self.kind
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
            failed_commits: self.counters.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// Number of successful durable engine commits since the store was opened.
    pub fn commit_count(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Commits what is pending, stops the committer thread and waits for it. Later appends,
    /// checkpoint writes and flushes fail with [`StoreError::Closed`]; reads keep working.
    /// Dropping the store does the same.
    pub fn close(&self) {
        let tx = self.tx.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(tx);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!(
                engine = self.kind.as_str(),
                "store committer thread panicked"
            );
        }
    }

    fn send(&self, req: Request) -> Result<()> {
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(req).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    fn meta(&self, log: &LogId) -> Result<keys::LogMeta> {
        keys::check_log(log.as_str())?;
        keys::load_meta(self.engine.get()?.as_ref(), log.as_str())
    }
}

/// What an engine keeps across reopens.
#[derive(Clone, Default)]
struct EngineCache {
    /// fjall's first offsets per log, for its compaction filter.
    #[cfg(feature = "fjall")]
    firsts: Arc<crate::fjall_engine::Firsts>,
}

/// Opens engine `kind` in `path`; an engine whose cargo feature is off is an error.
fn open_engine(
    kind: EngineKind,
    path: &Path,
    options: &StoreOptions,
    cache: &EngineCache,
) -> Result<Arc<dyn KvEngine>> {
    let _ = (options, cache);
    #[allow(unreachable_patterns)]
    match kind {
        #[cfg(feature = "sled")]
        EngineKind::Sled => return Ok(Arc::new(crate::sled_engine::SledEngine::open(path)?)),
        #[cfg(feature = "redb")]
        EngineKind::Redb => return Ok(Arc::new(crate::redb_engine::RedbEngine::open(path)?)),
        #[cfg(feature = "fjall")]
        EngineKind::Fjall => {
            return Ok(Arc::new(crate::fjall_engine::FjallEngine::open(
                path,
                options,
                cache.firsts.clone(),
            )?));
        }
        #[cfg(all(feature = "fjall", unix))]
        EngineKind::Segments => {
            return Ok(Arc::new(crate::segments_engine::SegmentsEngine::open(
                path,
                options,
                cache.firsts.clone(),
            )?));
        }
        _ => {}
    }
    let _ = path;
    let feature = match kind {
        EngineKind::Segments => "fjall",
        other => other.as_str(),
    };
    Err(StoreError::Engine(format!(
        "storage engine {kind} is not built in (enable the `{feature}` cargo feature of evmesh or evmesh-store)"
    )))
}

impl Drop for KvEventStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventStore for KvEventStore {
    fn append<'a>(&'a self, log: &'a LogId, payload: Vec<u8>) -> BoxFuture<'a, Result<Offset>> {
        Box::pin(async move {
            keys::check_log(log.as_str())?;
            let n = payload.len();
            // Admit the append only while the queue holds less than its limit (always when it
            // is empty, so one large event is never refused for good). The committer gives the
            // bytes back once it answered the append.
            let before = self.queued.fetch_add(n, Ordering::AcqRel);
            if before > 0 && before.saturating_add(n) > self.max_queued {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                return Err(StoreError::Busy {
                    queued: before,
                    limit: self.max_queued,
                });
            }
            let (reply, rx) = oneshot::channel();
            if let Err(e) = self.send(Request::Append {
                log: log.clone(),
                payload,
                reply,
            }) {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                return Err(e);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn read(&self, log: &LogId, from: Offset, max: usize) -> Result<Vec<Record>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Start at the first stored record: below it an LSM engine (fjall) would wade through
        // the tombstones retention left.
        let from = from.max(self.meta(log)?.first);
        let rows = self.engine.get()?.scan(
            &keys::record_key(log.as_str(), from),
            &keys::record_end(log.as_str()),
            max,
        )?;
        rows.iter()
            .map(|(k, v)| {
                let (appended_ms, payload) = keys::decode_value(v)?;
                Ok(Record {
                    offset: keys::offset_of(k)?,
                    appended_ms,
                    payload: payload.to_vec(),
                })
            })
            .collect()
    }

    fn next_offset(&self, log: &LogId) -> Result<Offset> {
        Ok(self.meta(log)?.next)
    }

    fn first_offset(&self, log: &LogId) -> Result<Option<Offset>> {
        let m = self.meta(log)?;
        Ok((m.first < m.next).then_some(m.first))
    }

    fn put_checkpoint(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.checkpoint(key, Some(value))
    }

    fn delete_checkpoint(&self, key: &str) -> Result<()> {
        self.checkpoint(key, None)
    }

    fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let start = keys::checkpoint_key(prefix);
        let end = keys::prefix_end(&start);
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in self.engine.get()?.scan(&start, &end, usize::MAX)? {
            let key = k
                .get(2..)
                .and_then(|k| String::from_utf8(k.to_vec()).ok())
                .ok_or_else(|| StoreError::Engine("corrupt checkpoint key in store".into()))?;
            out.insert(key, v);
        }
        // Writes not committed yet win over what the engine has.
        for (k, v) in self.pending.with_prefix(prefix) {
            match v {
                Some(v) => out.insert(k, v),
                None => out.remove(&k),
            };
        }
        Ok(out.into_iter().collect())
    }

    fn apply_retention(&self, log: &LogId, retention: Retention, keep_from: Offset) -> Result<u64> {
        keys::check_log(log.as_str())?;
        if retention.max_age.is_none() && retention.max_bytes.is_none() {
            return Ok(0);
        }
        // One run per store at a time; the committer only moves the log's start (one small
        // metadata write in the next group commit), everything else happens on this thread.
        let _one = self.retention.lock().unwrap_or_else(|e| e.into_inner());
        let engine = self.engine.get()?;
        let name = log.as_str();
        let meta = keys::load_meta(engine.as_ref(), name)?;
        let (to, freed) = retention_cut(engine.as_ref(), name, meta, retention, keep_from)?;
        if to == meta.first {
            return Ok(0);
        }
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(Request::Trim {
            log: log.clone(),
            from: meta.first,
            to,
            freed,
            reply,
        })?;
        let n = rx.recv().map_err(|_| StoreError::Closed)??;
        if n > 0 {
            // Nothing reads below the log's first offset any more: the engine removes those
            // records as cheaply as it can (fjall: whole tables, no tombstones).
            engine.trim(
                &keys::record_key(name, 0),
                &keys::record_key(name, meta.first),
                &keys::record_key(name, to),
            )?;
        }
        Ok(n)
    }

    fn health(&self) -> Result<()> {
        match self.health.failing() {
            Some(reason) => Err(StoreError::Engine(reason)),
            None => Ok(()),
        }
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.send(Request::Flush { reply })?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

impl KvEventStore {
    fn checkpoint(&self, key: &str, value: Option<Vec<u8>>) -> Result<()> {
        // Refuse before recording, so a closed store does not pretend to accept it.
        if self.tx.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(StoreError::Closed);
        }
        self.pending.set(key, value);
        self.send(Request::Checkpoint)
    }
}

/// Records read per step while applying retention.
const RETENTION_SCAN_CHUNK: usize = 1024;

/// Where retention cuts `log` (whose committed metadata is `meta`): the new first offset, never
/// above `keep_from`, and the payload bytes of the records below it.
fn retention_cut(
    engine: &dyn KvEngine,
    log: &str,
    meta: keys::LogMeta,
    retention: Retention,
    keep_from: Offset,
) -> Result<(Offset, u64)> {
    let limit = keep_from.min(meta.next);
    let now = crate::committer::now_ms();
    let max_age_ms = retention
        .max_age
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut bytes = meta.bytes;
    let mut first = meta.first;
    'scan: while first < limit {
        let chunk = engine.scan(
            &keys::record_key(log, first),
            &keys::record_key(log, limit),
            RETENTION_SCAN_CHUNK,
        )?;
        if chunk.is_empty() {
            break;
        }
        for (k, v) in &chunk {
            let offset = keys::offset_of(k)?;
            let (appended_ms, payload) = keys::decode_value(v)?;
            let too_old = max_age_ms.is_some_and(|max| now.saturating_sub(appended_ms) > max);
            let too_big = retention.max_bytes.is_some_and(|max| bytes > max);
            if !(too_old || too_big) {
                break 'scan;
            }
            bytes = bytes.saturating_sub(payload.len() as u64);
            first = offset + 1;
        }
    }
    Ok((first, meta.bytes - bytes))
}
