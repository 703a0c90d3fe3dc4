//! Durable, append-only event logs and delivery checkpoints behind one trait ([`EventStore`]).
//!
//! A broker owns one log (a [`LogId`]). Ingress appends every accepted event to it and answers
//! `202` only after [`EventStore::append`] resolved, which happens after the data was flushed to
//! stable storage (fsync/fdatasync). Appends from many concurrent requests share one flush
//! ("group commit"). Dispatchers read the log back and keep their progress as small opaque
//! checkpoint blobs in the same store, so a restart resumes where delivery stopped.
//!
//! The embedded implementation ([`KvEventStore`]) runs on one of four storage engines
//! ([`EngineKind`]): segments (the default: the events in segment files of evmesh's own, the
//! rest in fjall), fjall, redb or sled, each behind the cargo feature of its name (segments
//! needs `fjall`, which is on by default). A Kafka-backed broker class implements
//! [`EventStore`] itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), evmesh_store::StoreError> {
//! use evmesh_store::{open, EngineKind, EventStore, LogId};
//! let store = open(EngineKind::default(), std::path::Path::new("./data"))?;
//! let log = LogId::new("default/my-broker");
//! let offset = store.append(&log, b"event bytes".to_vec()).await?; // durable now
//! let records = store.read(&log, offset, 10)?;
//! assert_eq!(records[0].payload, b"event bytes");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod committer;
#[cfg(feature = "fjall")]
mod fjall_engine;
mod keys;
mod kv;
#[cfg(feature = "redb")]
mod redb_engine;
#[cfg(all(feature = "fjall", unix))]
mod segments_engine;
#[cfg(feature = "sled")]
mod sled_engine;
mod store;
#[cfg(test)]
mod tests;

pub use store::{KvEventStore, StoreStats};

/// Position of a record in a log. Offsets are assigned contiguously from 0 and never reused.
pub type Offset = u64;

/// Name of one log; evmesh uses `"<namespace>/<broker>"`. Cheap to clone (the name is shared).
///
/// ```
/// let log = evmesh_store::LogId::new("default/default");
/// assert_eq!(log.clone().as_str(), "default/default");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(std::sync::Arc<str>);

impl LogId {
    /// Makes a log id from its name.
    pub fn new(name: impl Into<String>) -> Self {
        LogId(std::sync::Arc::from(name.into()))
    }
    /// The log's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One record read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the log.
    pub offset: Offset,
    /// Wall-clock time of the append, milliseconds since the Unix epoch.
    pub appended_ms: u64,
    /// The bytes given to [`EventStore::append`].
    pub payload: Vec<u8>,
}

/// How long records are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete records older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest records while the log holds more payload bytes than this.
    pub max_bytes: Option<u64>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O error, corruption, ...).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The store was closed; nothing more is accepted.
    #[error("store is closed")]
    Closed,
    /// The append queue holds its limit of bytes already (the disk is not keeping up); try
    /// again shortly. Nothing was stored.
    #[error("store busy: {queued} bytes waiting to be written (limit {limit}); try again shortly")]
    Busy {
        /// Bytes of appends waiting for the committer.
        queued: usize,
        /// [`StoreOptions::max_queued_bytes`].
        limit: usize,
    },
}

/// Tuning of the embedded store: its append bound and the storage engine's memory budgets.
///
/// The engine's budgets apply to fjall: to all of a fjall store, and to the metadata and
/// checkpoints of a segments store (the default engine), whose events are read from the segment
/// files through the OS's page cache; redb and sled keep their own defaults. Most of the
/// store's memory is `cache_bytes + 2 × write_buffer_bytes` (a full write buffer is flushed
/// while the next one fills), plus, with segments, an index of about 24 bytes per event held.
///
/// ```
/// let options = evmesh_store::StoreOptions {
///     max_queued_bytes: 8 << 20,
///     cache_bytes: 8 << 20,
///     ..Default::default()
/// };
/// assert!(options.max_queued_bytes < evmesh_store::StoreOptions::default().max_queued_bytes);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most payload bytes of appends waiting to be committed; an append beyond it fails at once
    /// with [`StoreError::Busy`] instead of queueing (ingress answers 503 with `Retry-After`).
    /// One append is always admitted when nothing is queued, however large.
    pub max_queued_bytes: usize,
    /// fjall's block cache (decoded blocks of the on-disk tables, shared by all reads).
    /// Default [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: u64,
    /// fjall's write buffer: appends collect in memory (a memtable) up to this many bytes, then
    /// it is written out as a table. At least 1 MiB. Default [`DEFAULT_WRITE_BUFFER_BYTES`].
    pub write_buffer_bytes: u64,
    /// fjall's journal (write-ahead log) budget on disk: beyond it the oldest write buffers are
    /// flushed so their journal files can go. It bounds what a restart replays. At least
    /// 64 MiB. Default [`DEFAULT_JOURNAL_BYTES`].
    pub journal_bytes: u64,
}

/// Default [`StoreOptions::max_queued_bytes`]: 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Default [`StoreOptions::cache_bytes`]: 16 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Default [`StoreOptions::write_buffer_bytes`]: 8 MiB.
pub const DEFAULT_WRITE_BUFFER_BYTES: u64 = 8 * 1024 * 1024;
/// Default [`StoreOptions::journal_bytes`]: 64 MiB (fjall's least).
pub const DEFAULT_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
        }
    }
}

/// Result type of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A boxed future, so that [`EventStore`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The one storage trait of evmesh: durable logs plus checkpoint blobs.
///
/// Methods other than [`append`](EventStore::append) and [`flush`](EventStore::flush) may block
/// on disk I/O; async callers run them in `spawn_blocking`.
pub trait EventStore: Send + Sync + 'static {
    /// Appends one payload to `log` and resolves with its offset once it is on stable storage.
    /// Many concurrent appends share one flush.
    fn append<'a>(&'a self, log: &'a LogId, payload: Vec<u8>) -> BoxFuture<'a, Result<Offset>>;

    /// Reads up to `max` records of `log` with offset `>= from`, in offset order.
    fn read(&self, log: &LogId, from: Offset, max: usize) -> Result<Vec<Record>>;

    /// The offset the next append to `log` will get (0 for a log never written).
    fn next_offset(&self, log: &LogId) -> Result<Offset>;

    /// The lowest offset still stored in `log`, `None` when it is empty.
    fn first_offset(&self, log: &LogId) -> Result<Option<Offset>>;

    /// Stores (replaces) a checkpoint blob. It becomes durable with the next group commit, at
    /// most a few milliseconds later; the call does not wait for that.
    fn put_checkpoint(&self, key: &str, value: Vec<u8>) -> Result<()>;

    /// Deletes a checkpoint blob (durable with the next group commit).
    fn delete_checkpoint(&self, key: &str) -> Result<()>;

    /// All checkpoint blobs whose key starts with `prefix`, in key order.
    fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Applies retention to `log`: deletes the oldest records that are older than
    /// `retention.max_age` or beyond `retention.max_bytes`, but never a record with offset
    /// `>= keep_from` (records still waiting for delivery are pinned). Returns how many records
    /// were deleted.
    fn apply_retention(&self, log: &LogId, retention: Retention, keep_from: Offset) -> Result<u64>;

    /// Resolves once everything handed to the store so far (appends and checkpoints) is durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;

    /// `Err` with the reason while the store cannot write (disk full, I/O error); `Ok` once it
    /// writes again. The embedded store recovers by itself, probing the disk while it fails.
    fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// The embedded storage engines evmesh can run on.
///
/// The default is the engine that lost no acknowledged append in the crash test and cost the
/// least CPU per event (see `broker/store/BENCHMARKS.md` and the top-level BENCHMARKS.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// sled 0.34 (the design card's original choice).
    Sled,
    /// redb 4.
    Redb,
    /// fjall 3.
    Fjall,
    /// The events in append-only segment files of evmesh's own (one write and one
    /// `fdatasync` per group commit, a CRC per record), log metadata and checkpoints in fjall.
    /// Needs the `fjall` feature (and a Unix).
    Segments,
}

impl EngineKind {
    /// Every engine, in declaration order.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Sled,
        EngineKind::Redb,
        EngineKind::Fjall,
        EngineKind::Segments,
    ];

    /// Whether this build has the engine (its cargo feature of `evmesh-store`, or of `evmesh`,
    /// is on): `fjall` (default; segments needs it too), `redb`, `sled`.
    ///
    /// ```
    /// use evmesh_store::EngineKind;
    /// let built: Vec<&str> = EngineKind::ALL
    ///     .into_iter()
    ///     .filter(|e| e.is_available())
    ///     .map(EngineKind::as_str)
    ///     .collect();
    /// println!("storage engines in this build: {built:?}");
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            EngineKind::Sled => cfg!(feature = "sled"),
            EngineKind::Redb => cfg!(feature = "redb"),
            EngineKind::Fjall => cfg!(feature = "fjall"),
            EngineKind::Segments => cfg!(all(feature = "fjall", unix)),
        }
    }

    /// The engine's name as [`FromStr`](std::str::FromStr) accepts it.
    ///
    /// ```
    /// use evmesh_store::EngineKind;
    /// assert_eq!(EngineKind::Redb.as_str(), "redb");
    /// assert_eq!(EngineKind::Redb.as_str().parse::<EngineKind>(), Ok(EngineKind::Redb));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sled => "sled",
            EngineKind::Redb => "redb",
            EngineKind::Fjall => "fjall",
            EngineKind::Segments => "segments",
        }
    }
}

impl Default for EngineKind {
    /// [`Segments`](EngineKind::Segments) (on Unix; fjall elsewhere): the measured winner (see
    /// `broker/store/BENCHMARKS.md` and BENCHMARKS.md §9).
    fn default() -> Self {
        if cfg!(unix) {
            EngineKind::Segments
        } else {
            EngineKind::Fjall
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sled" => Ok(EngineKind::Sled),
            "redb" => Ok(EngineKind::Redb),
            "fjall" => Ok(EngineKind::Fjall),
            "segments" => Ok(EngineKind::Segments),
            other => Err(format!(
                "unknown storage engine {other:?} (sled, redb, fjall, segments)"
            )),
        }
    }
}

/// Opens (or creates) the embedded store of the given engine in `dir`.
///
/// Use [`KvEventStore::open`] directly to keep access to its statistics.
pub fn open(kind: EngineKind, dir: &Path) -> Result<Arc<dyn EventStore>> {
    Ok(Arc::new(KvEventStore::open(kind, dir)?))
}

/// [`open`] with options.
pub fn open_with(
    kind: EngineKind,
    dir: &Path,
    options: StoreOptions,
) -> Result<Arc<dyn EventStore>> {
    Ok(Arc::new(KvEventStore::open_with(kind, dir, options)?))
}
