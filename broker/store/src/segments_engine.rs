//! The `segments` engine: the logs' records in append-only segment files of evmesh's own (one
//! write and one `fdatasync` per group commit), log metadata and checkpoints in fjall.
//!
//! Layout: `<dir>/segments/<id:010>.seg`, each a header ([`MAGIC`] and a random salt, drawn
//! afresh each time the file is put to use) and a run of frames
//! `[body length u32 LE][CRC-32 of body and salt u32 LE][key length u16 LE][key][value]`, where
//! key and value are the store's record key and value (`keys::record_key`,
//! `keys::record_value`); each commit writes a seal after its frames (a frame header of body
//! length 0 whose CRC is the salt's, [`seal`]), which the next commit writes over. A segment
//! written before segments had a header has no header, seal or salt (its CRCs cover the body
//! alone): it is read and written on so, and deleted, not reused. A segment is
//! [`SEGMENT_BYTES`] long from the start (its size never changes while it is
//! written, so a commit's `fdatasync` writes no file size) and written until the next commit
//! would not fit, then the next one is started. The next one is made ready ahead, so that a
//! commit's `fdatasync` allocates no block either (on ext4 a sync into a sparse room commits the
//! file system's journal first): a segment that holds nothing any more is reused
//! ([`SegmentsEngine::reuse`]: a fresh salt makes its frames stale, and no block is freed and
//! allocated again), or else,
//! once the active segment is half full, a thread writes a spare file of zeros in synced steps;
//! the rotation renames the spare into place. The steps keep pace with
//! the active segment ([`zeros_due`]: the spare is ready once half the room left at the ask is
//! used) and go no slower than [`ZERO_MIN_RATE`], so that the zeros never take the disk from
//! the commits' syncs for long. A rotation that finds no
//! spare ready creates the segment sparse. A segment whose room is sparse (that one, a fresh
//! store's first, and the last one's room after a restart) asks for a spare once it holds
//! [`EARLY_SPARE_AT`], and is left for the spare as soon as it is ready, shortened to its
//! records. No spare is written while the file system has less than [`SPARE_NEEDS_FREE`] free:
//! the zeros must not take the room the events need; a segment whose spare was skipped or
//! failed asks again every [`SPARE_ASK_AGAIN_AFTER`] written. Which record lies where is kept
//! in memory (an index of some 24 bytes per record), rebuilt from the files at open: reading
//! stops at a seal or at the first frame that is zeros, incomplete or fails its CRC (a reused
//! segment's earlier frames fail it: their salt was another), and whatever lies past
//! that point in the last segment is dropped (the torn tail of a commit that never finished: no
//! stale frame of it can come to follow the frames written after the restart). A record whose
//! offset is not above the last one read for its log replaces that one and everything after it
//! (a failed commit's offsets are given out again). Retention drops a log's records below its
//! first offset from the index; a segment none of whose records any log still holds is reused
//! as the spare, or deleted.
//!
//! Durability: a commit writes the records to the active segment and `fdatasync`s it before the
//! metadata and checkpoints go to fjall; those are handed to the OS (they survive the process
//! being killed) and `fdatasync`ed when the batch asks for it ([`Batch::sync_all`]: a flush or a
//! retention run), when it holds no records (a checkpoint-only commit, the disk probe) and at
//! least every [`META_SYNC_EVERY`] (that one after the commit's appends are answered, or while
//! the store is idle, so no append waits for it). At open a log's metadata is reconciled with
//! its records, so metadata older than the records (a power loss) never gives an offset out
//! twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::PersistMode;

use crate::fjall_engine::{Firsts, FjallEngine};
use crate::keys::LogMeta;
use crate::kv::{Batch, KvEngine, engine_err};
use crate::{Result, StoreError, StoreOptions};

/// The folder of the segment files, inside the store's directory.
const SEGMENTS_DIR: &str = "segments";
/// A segment is closed once a commit would take it past this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Frame header: body length and CRC.
const HEADER: usize = 8;
/// The first bytes of a segment file of this format, followed by its salt (a random `u64` LE,
/// drawn afresh each time the file is put to use, which every frame's CRC covers). A segment
/// without them was written before segment files were reused: its frames' CRCs cover the body
/// alone. (As a body length, `EVSE` is far above [`SEGMENT_BYTES`]: no frame starts so.)
const MAGIC: [u8; 8] = *b"EVSEG\x002\x00";
/// The segment header: [`MAGIC`] and the salt.
const SEG_HEADER: u64 = 16;
/// The metadata and checkpoints are `fdatasync`ed at least this often under a steady load.
const META_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Reads of records of one segment closer than this are made as one read.
const COALESCE_GAP: u64 = 4096;
/// One coalesced read spans at most this many bytes.
const COALESCE_SPAN: u64 = 1024 * 1024;
/// Records copied per commit when a store written by the fjall engine is moved to segments.
const MIGRATE_CHUNK: usize = 4096;
/// The name ending of a spare (a segment zeroed ahead or kept for reuse, not yet in use).
const SPARE_SUFFIX: &str = ".spare";
/// Numbers spares' names: no two spares of a process share one (a thread left from an engine
/// dropped meanwhile never writes to the file another one takes).
static SPARE_NAMES: AtomicU64 = AtomicU64::new(0);
/// The next segment is zeroed ahead once the active one holds this many bytes.
const PREPARE_AT: u64 = SEGMENT_BYTES / 2;
/// A segment whose room is sparse (a fresh store's first one, the last one's room after a
/// restart, one created when no spare was ready) asks for a spare once it holds this many
/// bytes, and is left for it as soon as it is ready; a store written only a little (a test, a
/// quiet broker) never zeroes a segment.
const EARLY_SPARE_AT: u64 = 1024 * 1024;
/// A spare is written only while the file system has this much free space (the spare, the rest
/// of the active segment and as much again): on a nearly full disk the zeros would take the room
/// the events need, so its segments stay sparse.
const SPARE_NEEDS_FREE: u64 = 3 * SEGMENT_BYTES;
/// A segment whose spare could not be had (skipped for want of free space, or failed) asks
/// again once this many more bytes are written to it, so that room that returns is used
/// without waiting for the next segment or a restart.
const SPARE_ASK_AGAIN_AFTER: u64 = 8 * 1024 * 1024;
/// Zeros written (and synced) per step while a spare is prepared.
const ZERO_CHUNK: usize = 256 * 1024;
/// The least rate (bytes per second) at which a spare is zeroed: one asked for is ready within
/// 8 s at most, however slowly the active segment fills. It zeroes faster only as fast as the
/// active segment fills ([`zeros_due`]): the zeros share the disk with the commits' syncs, and a
/// spare written at the disk's full speed made some of them wait for tens of milliseconds.
const ZERO_MIN_RATE: u64 = 8 * 1024 * 1024;
/// How long a spare ahead of its pace waits before it looks again.
const ZERO_WAIT: Duration = Duration::from_millis(5);

/// The next segment's file, made ready ahead of the writer: zeroed, or a segment that holds
/// nothing any more, reused.
#[derive(Default)]
enum Spare {
    #[default]
    None,
    /// A thread is zeroing it; it stops once the flag is set (a reused segment took its place).
    Preparing(Arc<AtomicBool>),
    /// Written and synced: the next rotation renames it into place.
    Ready(ReadySpare),
}

/// A spare written and synced, with its header. Dropped without being taken (its engine closed
/// or reopened), it is removed from disk.
struct ReadySpare {
    path: PathBuf,
    file: Option<File>,
    salt: u64,
}

impl ReadySpare {
    /// Its path, file and salt, no longer removed on drop.
    fn take(mut self) -> Option<(PathBuf, File, u64)> {
        let file = self.file.take()?;
        Some((std::mem::take(&mut self.path), file, self.salt))
    }
}

impl Drop for ReadySpare {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where one record's value lies.
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: u64,
    seg: u32,
    /// Position of the value in the segment.
    pos: u32,
    /// Length of the value (append time and payload).
    len: u32,
}

/// One segment file and how many records in it are still held.
struct Segment {
    file: Arc<File>,
    live: u64,
    /// It has a header ([`MAGIC`]): once it holds nothing it may be reused as a spare.
    reusable: bool,
}

/// Which record lies where, per log (by its record key prefix `l/<log>\0`).
#[derive(Default)]
struct Index {
    logs: HashMap<Vec<u8>, VecDeque<Entry>>,
    segments: BTreeMap<u32, Segment>,
}

impl Index {
    /// Adds `e` to the log of `prefix`; a record at or below the log's last offset replaces
    /// that one and everything after it.
    fn push(&mut self, prefix: &[u8], e: Entry) {
        let Index { logs, segments } = self;
        let q = match logs.get_mut(prefix) {
            Some(q) => q,
            None => logs.entry(prefix.to_vec()).or_default(),
        };
        while q.back().is_some_and(|last| last.offset >= e.offset) {
            if let Some(old) = q.pop_back()
                && let Some(s) = segments.get_mut(&old.seg)
            {
                s.live = s.live.saturating_sub(1);
            }
        }
        q.push_back(e);
        if let Some(s) = segments.get_mut(&e.seg) {
            s.live += 1;
        }
    }

    /// Drops the records of `prefix` with `from <= offset < to`.
    fn remove(&mut self, prefix: &[u8], from: u64, to: u64) {
        let Index { logs, segments } = self;
        let Some(q) = logs.get_mut(prefix) else {
            return;
        };
        let start = q.partition_point(|e| e.offset < from);
        let end = q.partition_point(|e| e.offset < to);
        if start >= end {
            return;
        }
        for e in q.drain(start..end) {
            if let Some(s) = segments.get_mut(&e.seg) {
                s.live = s.live.saturating_sub(1);
            }
        }
    }

    /// Removes every segment no record is held in, except `active`; returns them.
    fn take_dead(&mut self, active: u32) -> Vec<(u32, Segment)> {
        let dead: Vec<u32> = self
            .segments
            .iter()
            .filter(|(id, s)| s.live == 0 && **id != active)
            .map(|(id, _)| *id)
            .collect();
        dead.into_iter()
            .filter_map(|id| Some((id, self.segments.remove(&id)?)))
            .collect()
    }
}

/// The segment being written.
struct Writer {
    seg: u32,
    file: Arc<File>,
    /// The salt its frames' CRCs cover; `None` for a segment written before segments had a
    /// header (its frames are written as it began them).
    salt: Option<u64>,
    /// Bytes committed to it (its header included).
    len: u64,
    /// Set after a failed `fdatasync`: what the file holds is unknown until the engine is
    /// reopened (and reads the file again).
    failed: Option<String>,
    last_meta_sync: Instant,
    /// Metadata or checkpoints were handed to the OS since the last sync.
    meta_unsynced: bool,
    /// The segment's length at which a spare is asked for next ([`EARLY_SPARE_AT`] or
    /// [`PREPARE_AT`], then every [`SPARE_ASK_AGAIN_AFTER`] while none is ready or being
    /// written).
    spare_due: u64,
    /// The segment's room is sparse (not zeroed ahead): it is left for a spare as soon as one
    /// is ready.
    sparse: bool,
}

/// Records in segment files, everything else in fjall (see the module's documentation).
pub(crate) struct SegmentsEngine {
    dir: PathBuf,
    meta: FjallEngine,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    /// The id of the segment being written (trim never deletes it).
    active: AtomicU32,
    /// The next segment, zeroed ahead (shared with the thread that prepares it).
    spare: Arc<Mutex<Spare>>,
    /// A segment that holds nothing, kept for the rotation after the next while a spare is
    /// ready ([`Self::reuse`]); it becomes the spare when that one is taken.
    reserve: Mutex<Option<ReadySpare>>,
    /// Bytes written to segments since the engine opened (the spare's thread paces itself by
    /// them).
    written: Arc<AtomicU64>,
}

/// Whether `dir` holds a segment file (a store of the `segments` engine).
pub(crate) fn has_segments(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir.join(SEGMENTS_DIR)) {
        Ok(entries) => {
            for e in entries {
                if segment_id(&e.map_err(engine_err)?.path()).is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(engine_err(e)),
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}

fn segment_id(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".seg")?;
    (id.len() == 10).then(|| id.parse().ok()).flatten()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(engine_err)
}

/// Splits a record key (or a bound of a range of them) into its log prefix `l/<log>\0` and the
/// rest.
fn split_record_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    if !key.starts_with(b"l/") {
        return None;
    }
    let nul = key.get(2..)?.iter().position(|b| *b == 0)? + 2;
    Some(key.split_at(nul + 1))
}

/// The smallest offset whose 8-byte key suffix is `>= rest`; `None` when none is.
fn ceil_offset(rest: &[u8]) -> Option<u64> {
    let mut b = [0u8; 8];
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    let o = u64::from_be_bytes(b);
    if rest.len() > 8 {
        o.checked_add(1)
    } else {
        Some(o)
    }
}

/// The log prefix and the offsets `[from, to)` of the record keys in `[start, end)`; `None` when
/// the range holds no record key.
fn record_range<'a>(start: &'a [u8], end: &[u8]) -> Result<Option<(&'a [u8], u64, u64)>> {
    let Some((prefix, rest)) = split_record_key(start) else {
        return Err(StoreError::Engine(
            "the segments engine reads records of one log at a time".into(),
        ));
    };
    let Some(from) = ceil_offset(rest) else {
        return Ok(None);
    };
    let to = match end.strip_prefix(prefix) {
        Some(rest) => ceil_offset(rest).unwrap_or(u64::MAX),
        None if end > prefix => u64::MAX,
        None => 0,
    };
    Ok((from < to).then_some((prefix, from, to)))
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Appends one frame for `key` → `value` to `buf`, its CRC left for [`stamp_crc`]; returns
/// the value's position in `buf`.
fn encode_frame(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) -> Result<usize> {
    let key_len = u16::try_from(key.len())
        .map_err(|_| StoreError::Engine("record key too long for a segment".into()))?;
    let body_len = u32::try_from(2 + key.len() + value.len())
        .map_err(|_| StoreError::Engine("record too large for a segment".into()))?;
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&key_len.to_le_bytes());
    buf.extend_from_slice(key);
    let value_at = buf.len();
    buf.extend_from_slice(value);
    Ok(value_at)
}

/// The CRC of a frame's `body` in a segment with `salt` (`None`: a segment without a header).
fn frame_crc(body: &[u8], salt: Option<u64>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(body);
    if let Some(salt) = salt {
        h.update(&salt.to_le_bytes());
    }
    h.finalize()
}

/// Writes the CRC of the frame starting at `at` in `buf`, for a segment with `salt`.
fn stamp_crc(buf: &mut [u8], at: usize, salt: Option<u64>) -> Result<()> {
    let bad = || StoreError::Engine("frame outside its buffer".into());
    let len = buf.get(at..at + 4).ok_or_else(bad)?;
    let body_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let body = buf
        .get(at + HEADER..at + HEADER + body_len)
        .ok_or_else(bad)?;
    let crc = frame_crc(body, salt);
    buf[at + 4..at + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The seal written after a segment's last frame with each commit (the next one writes over
/// it): a frame header of body length 0 whose CRC is that of an empty body with the segment's
/// salt. Reading stops there without taking what follows for damage (a reused segment holds its
/// earlier frames past its own).
fn seal(salt: u64) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[4..].copy_from_slice(&frame_crc(&[], Some(salt)).to_le_bytes());
    b
}

/// A random salt for a segment put to use (std's per-process random keys, hashed with a
/// counter and the time).
fn new_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Writes a segment header with `salt` and a seal after it: the file reads as a segment that
/// holds nothing, whatever lies past them.
fn write_header(file: &File, salt: u64) -> std::io::Result<()> {
    let mut b = [0u8; SEG_HEADER as usize + HEADER];
    b[..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&salt.to_le_bytes());
    b[16..].copy_from_slice(&seal(salt));
    file.write_all_at(&b, 0)
}

/// The salt in the header of `file`; `None` for a segment without one.
fn read_header(file: &File, size: u64) -> Result<Option<u64>> {
    if size < SEG_HEADER {
        return Ok(None);
    }
    let mut b = [0u8; SEG_HEADER as usize];
    file.read_exact_at(&mut b, 0).map_err(engine_err)?;
    if b[..8] != MAGIC {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes([
        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
    ])))
}

/// `read_exact`, telling the end of the file (`Ok(false)`) from a failed read (`Err`: a segment
/// that cannot be read is not cut short).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(engine_err(e)),
    }
}

/// Whether anything but zeros lies in the (up to 8) bytes at `pos` of a file `size` long,
/// where a frame would start.
fn bytes_follow(file: &File, pos: u64, size: u64) -> Result<bool> {
    let mut b = [0u8; HEADER];
    let n = usize::try_from(size.saturating_sub(pos)).map_or(HEADER, |n| n.min(HEADER));
    file.read_exact_at(&mut b[..n], pos).map_err(engine_err)?;
    Ok(b.iter().any(|x| *x != 0))
}

/// What reading a segment found.
struct SegmentRead {
    /// The salt in its header (`None`: a segment without one).
    salt: Option<u64>,
    /// The length of its valid part: its header and whole frames.
    valid: u64,
    /// A seal follows the valid part: the last commit written there finished.
    sealed: bool,
}

/// Reads the frames of segment `id` into `index`.
fn read_segment(file: &File, id: u32, index: &mut Index) -> Result<SegmentRead> {
    let size = file.metadata().map_err(engine_err)?.len();
    let salt = read_header(file, size)?;
    let mut pos = if salt.is_some() { SEG_HEADER } else { 0 };
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek_relative(pos as i64).map_err(engine_err)?;
    let mut body = Vec::new();
    let mut sealed = false;
    let seal = salt.map(seal);
    loop {
        let mut header = [0u8; HEADER];
        if pos + HEADER as u64 > size || !read_full(&mut r, &mut header)? {
            break;
        }
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if seal == Some(header) {
            sealed = true;
            break;
        }
        if body_len < 2 || pos + HEADER as u64 + body_len > size {
            break;
        }
        body.resize(body_len as usize, 0);
        if !read_full(&mut r, &mut body)? || frame_crc(&body, salt) != crc {
            break;
        }
        let key_len = u16::from_le_bytes([body[0], body[1]]) as usize;
        let Some(key) = body.get(2..2 + key_len) else {
            break;
        };
        let Some((prefix, rest)) = split_record_key(key) else {
            break;
        };
        let Some(offset) = be_u64(rest) else {
            break;
        };
        let value_pos = pos + (HEADER + 2 + key_len) as u64;
        let (Ok(vpos), Ok(len)) = (
            u32::try_from(value_pos),
            u32::try_from(body_len as usize - 2 - key_len),
        ) else {
            break;
        };
        index.push(
            prefix,
            Entry {
                offset,
                seg: id,
                pos: vpos,
                len,
            },
        );
        pos += HEADER as u64 + body_len;
    }
    Ok(SegmentRead {
        salt,
        valid: pos,
        sealed,
    })
}

impl SegmentsEngine {
    /// Opens (or creates) the store in `dir`: reads the segments back, moves the records of a
    /// store the fjall engine wrote into segments, and reconciles each log's metadata with its
    /// records.
    pub(crate) fn open(dir: &Path, options: &StoreOptions, firsts: Arc<Firsts>) -> Result<Self> {
        let meta = FjallEngine::open_unchecked(dir, options, firsts)?;
        let seg_dir = dir.join(SEGMENTS_DIR);
        if !seg_dir.exists() {
            std::fs::create_dir_all(&seg_dir).map_err(engine_err)?;
            sync_dir(dir)?;
        }
        remove_spares(&seg_dir)?;
        let mut ids: Vec<u32> = std::fs::read_dir(&seg_dir)
            .map_err(engine_err)?
            .filter_map(|e| e.ok().and_then(|e| segment_id(&e.path())))
            .collect();
        ids.sort_unstable();
        let mut index = Index::default();
        let mut tail = None;
        for (i, id) in ids.iter().enumerate() {
            let path = segment_path(&seg_dir, *id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(engine_err)?;
            // Counted again below, once every log's start is known.
            index.segments.insert(
                *id,
                Segment {
                    file: Arc::new(file.try_clone().map_err(engine_err)?),
                    live: 0,
                    reusable: false,
                },
            );
            let SegmentRead {
                salt,
                valid,
                sealed,
            } = read_segment(&file, *id, &mut index)?;
            if let Some(s) = index.segments.get_mut(id) {
                s.reusable = salt.is_some();
            }
            let size = file.metadata().map_err(engine_err)?.len();
            let last = i + 1 == ids.len();
            // Past the valid part: the zeros of a segment's unused room, the torn tail of a
            // commit that never finished, or (after a seal) a reused segment's earlier frames.
            let torn = !sealed && valid < size && bytes_follow(&file, valid, size)?;
            if last {
                if torn {
                    tracing::warn!(
                        segment = %path.display(),
                        kept = valid,
                        "store: cutting the torn tail of the last segment (a commit that never finished)"
                    );
                }
                // Whatever lies past the valid part is dropped (the room reads as zeros again),
                // so that no stale frame can ever follow the frames written from here on.
                if valid < size {
                    file.set_len(valid).map_err(engine_err)?;
                }
                file.set_len(SEGMENT_BYTES.max(valid)).map_err(engine_err)?;
                file.sync_all().map_err(engine_err)?;
            } else if torn {
                tracing::error!(
                    segment = %path.display(),
                    kept = valid,
                    ignored = size - valid,
                    "store: a segment holds a damaged frame; the records after it are not read"
                );
            }
            if last {
                tail = Some((*id, salt, valid));
            }
        }
        let (seg, salt, len) = match tail {
            Some(t) => t,
            None => {
                let (file, salt) = create_segment(&seg_dir, 0)?;
                index.segments.insert(
                    0,
                    Segment {
                        file: Arc::new(file),
                        live: 0,
                        reusable: true,
                    },
                );
                (0, Some(salt), SEG_HEADER)
            }
        };
        let file = index
            .segments
            .get(&seg)
            .map(|s| s.file.clone())
            .ok_or_else(|| StoreError::Engine("segment missing from the index".into()))?;
        let engine = SegmentsEngine {
            dir: seg_dir,
            meta,
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                seg,
                file,
                salt,
                len,
                failed: None,
                last_meta_sync: Instant::now(),
                meta_unsynced: false,
                // A fresh segment is created sparse, and the last one's room is cut back to
                // sparse above.
                spare_due: EARLY_SPARE_AT,
                sparse: true,
            }),
            active: AtomicU32::new(seg),
            spare: Arc::default(),
            reserve: Mutex::default(),
            written: Arc::default(),
        };
        engine.migrate()?;
        engine.reconcile()?;
        Ok(engine)
    }

    /// Copies the records of a store written by the fjall engine into segments, then empties
    /// fjall's records (a crash in between copies them again: the copies replace the first).
    fn migrate(&self) -> Result<()> {
        if !self.meta.has_records() {
            return Ok(());
        }
        let mut from = b"l/".to_vec();
        let mut moved = 0usize;
        loop {
            let chunk = self.meta.scan(&from, b"l0", MIGRATE_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            from = last.clone();
            from.push(0);
            let mut batch = Batch::default();
            moved += chunk.len();
            batch
                .writes
                .extend(chunk.into_iter().map(|(k, v)| (k, Some(v))));
            self.commit(batch)?;
        }
        self.meta.clear_records()?;
        tracing::info!(
            records = moved,
            "store: moved the records fjall held into segment files"
        );
        Ok(())
    }

    /// Brings every log's metadata in line with its records: records below the log's first
    /// offset are dropped, the next offset is above every record, the byte count is that of the
    /// records held. Segments holding nothing are deleted.
    fn reconcile(&self) -> Result<()> {
        let mut fixes = Batch {
            sync_all: true,
            ..Batch::default()
        };
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            // Every log with metadata or records.
            let mut logs: Vec<Vec<u8>> = index.logs.keys().cloned().collect();
            for (k, _) in self.meta.scan(b"m/", b"m0", usize::MAX)? {
                let mut prefix = b"l/".to_vec();
                prefix.extend_from_slice(k.get(2..).unwrap_or_default());
                prefix.push(0);
                if !index.logs.contains_key(&prefix) {
                    logs.push(prefix);
                }
            }
            for prefix in logs {
                let name = &prefix[2..prefix.len() - 1];
                let mut meta_key = b"m/".to_vec();
                meta_key.extend_from_slice(name);
                let stored = match self.meta.get(&meta_key)? {
                    Some(v) => Some(LogMeta::decode(&v)?),
                    None => None,
                };
                let (floor, stored_next) = stored.map_or((0, 0), |m| (m.first, m.next));
                index.remove(&prefix, 0, floor);
                let held = index
                    .logs
                    .get(&prefix)
                    .and_then(|q| Some((q.front()?, q.back()?, q)));
                let m = match held {
                    // The first record held (none below the stored start is left), the next
                    // offset above every record and never below the stored one.
                    Some((front, back, q)) => LogMeta {
                        first: front.offset,
                        next: (back.offset + 1).max(stored_next),
                        bytes: q.iter().map(|e| u64::from(e.len).saturating_sub(8)).sum(),
                    },
                    // Nothing held: the log is empty at its next offset.
                    None => {
                        let next = stored_next.max(floor);
                        LogMeta {
                            first: next,
                            next,
                            bytes: 0,
                        }
                    }
                };
                if stored != Some(m) {
                    fixes.writes.insert(meta_key, Some(m.encode()));
                }
            }
        }
        if !fixes.writes.is_empty() {
            tracing::info!(
                logs = fixes.writes.len(),
                "store: log metadata brought in line with the records in the segments"
            );
            self.meta.commit_with(fixes, PersistMode::SyncData)?;
        }
        self.delete_dead();
        Ok(())
    }

    /// Takes the segments that hold no record any more (never the one being written) out of
    /// the store: up to two are kept for reuse ([`Self::reuse`]), the others are deleted.
    fn delete_dead(&self) {
        let dead = {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            index.take_dead(self.active.load(Ordering::Acquire))
        };
        for (id, segment) in dead {
            let path = segment_path(&self.dir, id);
            if segment.reusable && self.reuse(id, segment.file) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "store: could not delete a segment");
            }
        }
    }

    /// Makes segment `id`, which holds nothing any more, the next segment's spare,
    /// or, while a spare is ready, the reserve (the one after), unless both are taken or a read
    /// still holds the file: its blocks are written already, so the next segment needs neither
    /// zeros nor blocks freed and allocated again (on a file system that discards freed blocks,
    /// that costs the commits' syncs for seconds). Kept in reserve, it is there when retention
    /// empties a segment after a spare was zeroed for the next: under a steady load and
    /// retention, every segment after the first few is a reused one. A fresh salt and a seal
    /// make its frames stale before it leaves its name: were it read again as a segment (a
    /// crash before the rename), it holds nothing. A spare being zeroed is stopped. Returns
    /// whether it was kept.
    fn reuse(&self, id: u32, file: Arc<File>) -> bool {
        let path = &segment_path(&self.dir, id);
        // Only a file no read holds: a read that picked its records before they were dropped
        // must find them unchanged (the index no longer lends it out).
        let Ok(file) = Arc::try_unwrap(file) else {
            return false;
        };
        if self.spare_ready()
            && self
                .reserve
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            return false;
        }
        // Only a segment whose room is written (zeroed ahead or reused): one created sparse is
        // shortened when it is left.
        match written_through(&file) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::debug!(segment = %path.display(), error = %e, "store: could not tell whether a segment's room is written; it is deleted");
                return false;
            }
        }
        let salt = new_salt();
        let n = SPARE_NAMES.fetch_add(1, Ordering::Relaxed);
        let spare = self.dir.join(format!("{id:010}-{n}{SPARE_SUFFIX}"));
        let made = write_header(&file, salt)
            .and_then(|()| file.sync_data())
            .and_then(|()| std::fs::rename(path, &spare));
        if let Err(e) = made {
            tracing::debug!(segment = %path.display(), error = %e, "store: could not keep a segment as the next one's spare");
            return false;
        }
        let ready = ReadySpare {
            path: spare,
            file: Some(file),
            salt,
        };
        let mut slot = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Spare::Ready(..) => {
                // When another one got there first, this one goes (`ReadySpare`'s drop
                // removes it).
                let mut reserve = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
                if reserve.is_none() {
                    *reserve = Some(ready);
                    tracing::debug!(segment = %path.display(), "store: a segment that holds nothing kept in reserve");
                }
                return true;
            }
            Spare::Preparing(stop) => stop.store(true, Ordering::Release),
            Spare::None => {}
        }
        *slot = Spare::Ready(ready);
        tracing::debug!(segment = %path.display(), "store: a segment that holds nothing kept as the next one's spare");
        true
    }

    /// Starts the next segment.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let seg = w
            .seg
            .checked_add(1)
            .ok_or_else(|| StoreError::Engine("segment ids used up".into()))?;
        // Where its records and (written and synced with the last commit) its seal end.
        let end = w.len + w.salt.map_or(0, |_| HEADER as u64);
        let spare = self.take_spare(seg);
        let zeroed = spare.is_some();
        let (file, salt) = match spare {
            Some(s) => s,
            None => create_segment(&self.dir, seg)?,
        };
        let file = Arc::new(file);
        if w.sparse && end < SEGMENT_BYTES {
            // A sparse segment left early ends where its records (and its seal) do, so that its
            // empty room is not read at open. Not synced: until the new size is durable the
            // room reads as zeros, which is how a segment's unused room reads anyway.
            if let Err(e) = w.file.set_len(end) {
                tracing::debug!(segment = w.seg, error = %e, "store: could not shorten a segment left early");
            }
        }
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            index.segments.insert(
                seg,
                Segment {
                    file: file.clone(),
                    live: 0,
                    reusable: true,
                },
            );
            self.active.store(seg, Ordering::Release);
        }
        w.seg = seg;
        w.file = file;
        w.salt = Some(salt);
        w.len = SEG_HEADER;
        w.sparse = !zeroed;
        w.spare_due = if zeroed { PREPARE_AT } else { EARLY_SPARE_AT };
        // The segment left may hold nothing any more.
        self.delete_dead();
        Ok(())
    }

    /// The values of the records of `prefix` with `from <= offset < to`, at most `limit`.
    fn read(&self, prefix: &[u8], from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let (picked, files) = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            let Some(q) = index.logs.get(prefix) else {
                return Ok(Vec::new());
            };
            let i = q.partition_point(|e| e.offset < from);
            let picked: Vec<Entry> = q
                .range(i..)
                .take_while(|e| e.offset < to)
                .take(limit)
                .copied()
                .collect();
            let mut files: Vec<(u32, Arc<File>)> = Vec::new();
            for e in &picked {
                if files.last().is_none_or(|(id, _)| *id != e.seg) {
                    let s = index.segments.get(&e.seg).ok_or_else(|| {
                        StoreError::Engine(format!("record in a missing segment {}", e.seg))
                    })?;
                    files.push((e.seg, s.file.clone()));
                }
            }
            (picked, files)
        };
        let mut out = Vec::with_capacity(picked.len());
        let mut files = files.into_iter();
        let mut file: Option<(u32, Arc<File>)> = None;
        let mut i = 0;
        while i < picked.len() {
            let first = picked[i];
            // The run of records of one segment read with one call.
            let mut j = i + 1;
            let mut end = u64::from(first.pos) + u64::from(first.len);
            while let Some(e) = picked.get(j) {
                let (pos, e_end) = (u64::from(e.pos), u64::from(e.pos) + u64::from(e.len));
                if e.seg != first.seg
                    || pos < end
                    || pos - end > COALESCE_GAP
                    || e_end - u64::from(first.pos) > COALESCE_SPAN
                {
                    break;
                }
                end = e_end;
                j += 1;
            }
            if file.as_ref().is_none_or(|(id, _)| *id != first.seg) {
                file = files.next();
            }
            let Some((_, f)) = file.as_ref() else {
                return Err(StoreError::Engine("segment missing for a read".into()));
            };
            let mut buf = vec![0u8; (end - u64::from(first.pos)) as usize];
            f.read_exact_at(&mut buf, u64::from(first.pos))
                .map_err(engine_err)?;
            if j == i + 1 {
                out.push((first.offset, buf));
            } else {
                for e in &picked[i..j] {
                    let at = (e.pos - first.pos) as usize;
                    let value = buf
                        .get(at..at + e.len as usize)
                        .ok_or_else(|| StoreError::Engine("record outside its read".into()))?;
                    out.push((e.offset, value.to_vec()));
                }
            }
            i = j;
        }
        Ok(out)
    }
}

/// Drops what a failed commit wrote past `len`; the room past it reads as zeros again.
fn cut_back(file: &File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.set_len(SEGMENT_BYTES.max(len))
}

/// Creates segment `id` with its room set aside: the file is [`SEGMENT_BYTES`] long from the
/// start (sparse: no block but the header's is written), so that a commit's `fdatasync` has no
/// file size to write. Returns it and its salt.
fn create_segment(dir: &Path, id: u32) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, id))
        .map_err(engine_err)?;
    file.set_len(SEGMENT_BYTES).map_err(engine_err)?;
    let salt = new_salt();
    write_header(&file, salt).map_err(engine_err)?;
    file.sync_all().map_err(engine_err)?;
    sync_dir(dir)?;
    Ok((file, salt))
}

/// Deletes the spares a previous run left (a spare is never part of the store's data).
fn remove_spares(seg_dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(seg_dir).map_err(engine_err)? {
        let path = e.map_err(engine_err)?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(SPARE_SUFFIX))
        {
            std::fs::remove_file(&path).map_err(engine_err)?;
        }
    }
    Ok(())
}

/// How many bytes of zeros a spare asked for `elapsed` ago may have written, while the active
/// segment took `appended` bytes of the `room` it had left then: enough to be ready once half
/// that room is used, and never less than `min_rate` (bytes per second) allows.
fn zeros_due(elapsed: Duration, appended: u64, room: u64, min_rate: u64) -> u64 {
    // f64 to u64 saturates: an unbounded rate allows everything.
    let by_time = (elapsed.as_secs_f64() * min_rate as f64) as u64;
    let half = u128::from((room / 2).max(1));
    let by_use = u128::from(SEGMENT_BYTES) * u128::from(appended) / half;
    by_time.max(u64::try_from(by_use).unwrap_or(u64::MAX))
}

/// The least rate a spare of `seg_dir` is zeroed at ([`ZERO_MIN_RATE`]; a test may set its own,
/// and unit tests run unpaced unless they do).
fn zero_min_rate(seg_dir: &Path) -> u64 {
    #[cfg(test)]
    {
        test_faults::zero_min_rate(seg_dir).unwrap_or(u64::MAX)
    }
    #[cfg(not(test))]
    {
        let _ = seg_dir;
        ZERO_MIN_RATE
    }
}

/// Writes a spare at `path`: [`SEGMENT_BYTES`] of zeros and a header with `salt`, synced with
/// its size, so that a rotation can rename it into place. A step is written once `due` (bytes
/// of zeros allowed so far, [`zeros_due`]) allows it. Stops between two steps once `wanted` says no (its engine
/// was dropped): `None`, the file left for the caller to remove.
fn write_spare(
    path: &Path,
    salt: u64,
    wanted: impl Fn() -> bool,
    due: impl Fn() -> u64,
) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    #[cfg(test)]
    if path.parent().is_some_and(test_faults::spare_fails) {
        return Err(std::io::Error::other("injected spare failure"));
    }
    // A chunk at a time, each synced before the next: the disk never holds more than one
    // chunk of zeros in front of a commit's `fdatasync`.
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = 0;
    while at < SEGMENT_BYTES {
        if !wanted() {
            return Ok(None);
        }
        if at + ZERO_CHUNK as u64 > due() {
            std::thread::sleep(ZERO_WAIT);
            continue;
        }
        #[cfg(test)]
        if let Some(dir) = path.parent() {
            test_faults::spare_step(dir);
        }
        file.write_all_at(&zeros, at)?;
        file.sync_data()?;
        at += ZERO_CHUNK as u64;
    }
    write_header(&file, salt)?;
    file.sync_all()?;
    Ok(Some(file))
}

/// Whether `file` is a segment of full length whose room is written (allocated) to its end.
fn written_through(file: &File) -> std::io::Result<bool> {
    Ok(file.metadata()?.len() == SEGMENT_BYTES && first_hole(file)? >= SEGMENT_BYTES)
}

/// Where the first unwritten (sparse) part of `file` begins; its length when there is none.
/// Where the system cannot tell, a file with fewer blocks than bytes reads as unwritten from
/// its start.
fn first_hole(file: &File) -> std::io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0))?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(if m.blocks() * 512 >= m.len() {
            m.len()
        } else {
            0
        })
    }
}

/// Whether `slot` is the spare being zeroed with the flag `stop`.
fn is_preparing(slot: &Spare, stop: &Arc<AtomicBool>) -> bool {
    matches!(slot, Spare::Preparing(s) if Arc::ptr_eq(s, stop))
}

/// Whether the file system of `seg_dir` has [`SPARE_NEEDS_FREE`] bytes free for unprivileged
/// use (no when that cannot be told: the segment is then created sparse, as without spares).
fn room_for_a_spare(seg_dir: &Path) -> bool {
    #[cfg(test)]
    if let Some(free) = test_faults::free_space(seg_dir) {
        return free >= SPARE_NEEDS_FREE;
    }
    match rustix::fs::statvfs(seg_dir) {
        Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) >= SPARE_NEEDS_FREE,
        Err(e) => {
            tracing::debug!(error = %e, "store: could not read the free space; the next segment is not zeroed ahead");
            false
        }
    }
}

fn record_key_of(prefix: &[u8], offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

impl SegmentsEngine {
    /// Whether metadata or checkpoints handed to the OS wait for their sync.
    #[cfg(test)]
    pub(crate) fn meta_unsynced(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .meta_unsynced
    }

    /// Starts zeroing the segment after `active` on a thread of its own, unless a spare is
    /// ready or being written or the file system is short of room ([`SPARE_NEEDS_FREE`]). A
    /// spare that cannot be written (a full disk) is removed: the rotation then creates the
    /// segment sparse, unless the active segment's next ask ([`SPARE_ASK_AGAIN_AFTER`]) gets
    /// one first.
    fn prepare_spare(&self, active: u32, room: u64) {
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if !matches!(*spare, Spare::None) {
                return;
            }
            if !room_for_a_spare(&self.dir) {
                return;
            }
            *spare = Spare::Preparing(stop.clone());
        }
        let n = SPARE_NAMES.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{:010}-{n}{SPARE_SUFFIX}", u64::from(active) + 1));
        // The thread holds the engine's state weakly: a spare finished after the engine was
        // dropped (closed, or reopened after a failure) is removed, never handed to another;
        // one ready when it is dropped goes with it (`ReadySpare`).
        let state = Arc::downgrade(&self.spare);
        let (written, asked_at, asked) = (
            self.written.clone(),
            self.written.load(Ordering::Relaxed),
            Instant::now(),
        );
        let min_rate = zero_min_rate(&self.dir);
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("evmesh-segment-spare".into())
            .spawn(move || {
                let due = || {
                    let appended = written.load(Ordering::Relaxed).saturating_sub(asked_at);
                    zeros_due(asked.elapsed(), appended, room, min_rate)
                };
                let wanted = || state.strong_count() > 0 && !stopped.load(Ordering::Acquire);
                let salt = new_salt();
                let result = write_spare(&path, salt, wanted, due);
                #[cfg(test)]
                let _finished = test_faults::SpareFinished(path.parent().map(Path::to_path_buf));
                // The engine is gone (dropped, or reopened after a failure): the file goes.
                let Some(state) = state.upgrade() else {
                    let _ = std::fs::remove_file(&path);
                    return;
                };
                let mut slot = state.lock().unwrap_or_else(|e| e.into_inner());
                // Stopped for a reused segment (`write_spare` stops early only then, or when
                // the engine is gone): the slot is that one's now.
                if !is_preparing(&slot, &stopped) || stopped.load(Ordering::Acquire) {
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                *slot = match result {
                    Ok(Some(file)) => Spare::Ready(ReadySpare {
                        path,
                        file: Some(file),
                        salt,
                    }),
                    Ok(None) => {
                        let _ = std::fs::remove_file(&path);
                        Spare::None
                    }
                    Err(e) => {
                        tracing::warn!(spare = %path.display(), error = %e, "store: could not zero the next segment ahead; it will be created sparse");
                        let _ = std::fs::remove_file(&path);
                        Spare::None
                    }
                };
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "store: could not start zeroing the next segment");
            let mut slot = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if is_preparing(&slot, &stop) {
                *slot = Spare::None;
            }
        }
    }

    /// Whether a spare is ready to be taken.
    fn spare_ready(&self) -> bool {
        matches!(
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()),
            Spare::Ready(..)
        )
    }

    /// The spare renamed into place as segment `seg`, with its salt, when one is ready.
    fn take_spare(&self, seg: u32) -> Option<(File, u64)> {
        let (path, file, salt) = {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::take(&mut *spare) {
                Spare::Ready(ready) => {
                    // The reserve is the next one's spare.
                    if let Some(r) = self
                        .reserve
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                    {
                        *spare = Spare::Ready(r);
                    }
                    ready.take()?
                }
                other => {
                    *spare = other;
                    return None;
                }
            }
        };
        match std::fs::rename(&path, segment_path(&self.dir, seg)).map_err(engine_err) {
            Ok(()) => match sync_dir(&self.dir) {
                Ok(()) => Some((file, salt)),
                Err(e) => {
                    // Not known to be in place: it is created afresh instead.
                    tracing::warn!(error = %e, "store: could not sync the segments' folder after taking the spare");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(spare = %path.display(), error = %e, "store: could not take the segment zeroed ahead");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// What the spare is doing: `none`, `preparing` or `ready`.
    #[cfg(test)]
    fn spare_state(&self) -> &'static str {
        match *self.spare.lock().unwrap_or_else(|e| e.into_inner()) {
            Spare::None => "none",
            Spare::Preparing(..) => "preparing",
            Spare::Ready(..) => "ready",
        }
    }

    fn sync_segment(&self, file: &File) -> std::io::Result<()> {
        #[cfg(test)]
        if test_faults::sync_fails(&self.dir) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        file.sync_data()
    }
}

/// Faults and probes for tests, per store directory.
#[cfg(test)]
pub(crate) mod test_faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// A value per segments folder.
    type PerDir<T> = Mutex<Vec<(PathBuf, T)>>;

    fn seg_dir(dir: &Path) -> PathBuf {
        dir.join(super::SEGMENTS_DIR)
    }

    fn set<T>(list: &PerDir<T>, seg_dir: PathBuf, value: T) {
        let mut l = list.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|(d, _)| *d != seg_dir);
        l.push((seg_dir, value));
    }

    /// Applies `f` to the value of `seg_dir` (`None` when it has none) and returns what it gives.
    fn with<T, R>(list: &PerDir<T>, seg_dir: &Path, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        let mut l = list.lock().unwrap_or_else(|e| e.into_inner());
        f(l.iter_mut().find(|(d, _)| d == seg_dir).map(|(_, v)| v))
    }

    static SYNC_FAILS: PerDir<usize> = Mutex::new(Vec::new());
    static SPARE_FAILS: PerDir<bool> = Mutex::new(Vec::new());
    static FREE_SPACE: PerDir<u64> = Mutex::new(Vec::new());
    static SLOW_SPARES: PerDir<bool> = Mutex::new(Vec::new());
    static ZERO_MIN_RATE: PerDir<u64> = Mutex::new(Vec::new());
    /// Steps of zeros written to spares, and spare threads finished.
    static SPARE_PROGRESS: PerDir<(usize, usize)> = Mutex::new(Vec::new());

    /// The next `n` segment syncs of the store in `dir` fail.
    pub(crate) fn fail_syncs(dir: &Path, n: usize) {
        set(&SYNC_FAILS, seg_dir(dir), n);
    }

    pub(super) fn sync_fails(seg_dir: &Path) -> bool {
        with(&SYNC_FAILS, seg_dir, |n| match n {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
    }

    /// Every spare of the store in `dir` fails to be written (after its file is created).
    pub(crate) fn fail_spares(dir: &Path) {
        set(&SPARE_FAILS, seg_dir(dir), true);
    }

    /// The spares of the store in `dir` can be written again.
    pub(crate) fn heal_spares(dir: &Path) {
        set(&SPARE_FAILS, seg_dir(dir), false);
    }

    pub(super) fn spare_fails(seg_dir: &Path) -> bool {
        with(&SPARE_FAILS, seg_dir, |f| f.is_some_and(|f| *f))
    }

    /// The file system of the store in `dir` reads as having `bytes` free.
    pub(crate) fn set_free_space(dir: &Path, bytes: u64) {
        set(&FREE_SPACE, seg_dir(dir), bytes);
    }

    pub(super) fn free_space(seg_dir: &Path) -> Option<u64> {
        with(&FREE_SPACE, seg_dir, |f| f.map(|f| *f))
    }

    /// The spares of the store in `dir` are paced with this least rate (bytes per second), as
    /// outside tests; unit tests otherwise write them unpaced.
    pub(crate) fn pace_spares(dir: &Path, min_rate: u64) {
        set(&ZERO_MIN_RATE, seg_dir(dir), min_rate);
    }

    pub(super) fn zero_min_rate(seg_dir: &Path) -> Option<u64> {
        with(&ZERO_MIN_RATE, seg_dir, |r| r.copied())
    }

    /// Each step of a spare of the store in `dir` takes 20 ms more.
    pub(crate) fn slow_spares(dir: &Path) {
        set(&SLOW_SPARES, seg_dir(dir), true);
    }

    fn progress(seg_dir: &Path, steps: usize, finished: usize) {
        let added = with(&SPARE_PROGRESS, seg_dir, |p| {
            p.map(|(s, f)| {
                *s += steps;
                *f += finished;
            })
        });
        if added.is_none() {
            set(&SPARE_PROGRESS, seg_dir.to_path_buf(), (steps, finished));
        }
    }

    pub(super) fn spare_step(seg_dir: &Path) {
        progress(seg_dir, 1, 0);
        if with(&SLOW_SPARES, seg_dir, |s| s.is_some_and(|s| *s)) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Marks a spare's thread finished (with everything it removes removed) when dropped.
    pub(super) struct SpareFinished(pub(super) Option<PathBuf>);

    impl Drop for SpareFinished {
        fn drop(&mut self) {
            if let Some(d) = &self.0 {
                progress(d, 0, 1);
            }
        }
    }

    /// Steps of zeros written to the spares of the store in `dir`, and spare threads finished.
    pub(crate) fn spare_progress(dir: &Path) -> (usize, usize) {
        with(&SPARE_PROGRESS, &seg_dir(dir), |p| p.map_or((0, 0), |p| *p))
    }
}

impl KvEngine for SegmentsEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        let Batch {
            delete_ranges,
            writes,
            sync_all,
        } = batch;
        let mut rest = Batch::default();
        let mut removals: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for (start, end) in delete_ranges {
            if split_record_key(&start).is_some() {
                if let Some((prefix, from, to)) = record_range(&start, &end)? {
                    removals.push((prefix.to_vec(), from, to));
                }
            } else {
                rest.delete_ranges.push((start, end));
            }
        }
        let mut frames = Vec::new();
        // Where each frame starts in `frames` (its CRC is written once the segment is known).
        let mut starts = Vec::new();
        // (key, position of its value in `frames`, value length)
        let mut added: Vec<(Vec<u8>, usize, usize)> = Vec::new();
        for (k, v) in writes {
            if !k.starts_with(b"l/") {
                rest.writes.insert(k, v);
                continue;
            }
            let Some((prefix, rest_key)) = split_record_key(&k) else {
                return Err(StoreError::Engine("malformed record key".into()));
            };
            let Some(offset) = be_u64(rest_key) else {
                return Err(StoreError::Engine("malformed record key".into()));
            };
            match v {
                Some(v) => {
                    starts.push(frames.len());
                    let at = encode_frame(&mut frames, &k, &v)?;
                    added.push((k, at, v.len()));
                }
                None => removals.push((prefix.to_vec(), offset, offset + 1)),
            }
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &w.failed {
            return Err(StoreError::Engine(format!(
                "the segment file failed to sync earlier ({reason}); reopening the store"
            )));
        }
        let mut base = 0;
        if !frames.is_empty() {
            // Room is left for the seal.
            let full = w.len + (frames.len() + HEADER) as u64 > SEGMENT_BYTES;
            let holds_records = w.len > w.salt.map_or(0, |_| SEG_HEADER);
            if holds_records && (full || (w.sparse && self.spare_ready())) {
                self.rotate(&mut w)?;
            }
            for at in &starts {
                stamp_crc(&mut frames, *at, w.salt)?;
            }
            // The seal after the last frame, written and synced with them (the next commit
            // writes over it): reading at open stops there, and tells a segment whose last
            // commit finished from one whose tail is torn.
            let records = frames.len() as u64;
            if let Some(salt) = w.salt {
                frames.extend_from_slice(&seal(salt));
            }
            base = w.len;
            if base + frames.len() as u64 > u64::from(u32::MAX) {
                return Err(StoreError::Engine(
                    "group commit too large for a segment".into(),
                ));
            }
            if let Err(e) = w.file.write_all_at(&frames, base) {
                // Back to the committed length, so that no part of this batch is read back.
                if let Err(t) = cut_back(&w.file, base) {
                    w.failed = Some(t.to_string());
                }
                return Err(engine_err(e));
            }
            if let Err(e) = self.sync_segment(&w.file) {
                // After a failed sync the kernel may have dropped the pages: read the file again.
                w.failed = Some(e.to_string());
                let _ = cut_back(&w.file, base);
                return Err(engine_err(e));
            }
            w.len = base + records;
            self.written.fetch_add(records, Ordering::Relaxed);
            if w.len >= w.spare_due {
                w.spare_due = w.len.saturating_add(SPARE_ASK_AGAIN_AFTER);
                self.prepare_spare(w.seg, SEGMENT_BYTES.saturating_sub(w.len));
            }
        }
        if !rest.is_empty() {
            // The periodic sync of the rest is left to `after_commit`, off the answers' path.
            let sync = sync_all || frames.is_empty();
            let mode = if sync {
                PersistMode::SyncData
            } else {
                PersistMode::Buffer
            };
            self.meta.commit_with(rest, mode)?;
            if sync {
                w.last_meta_sync = Instant::now();
                w.meta_unsynced = false;
            } else {
                w.meta_unsynced = true;
            }
        }
        // The index is updated under the writer's lock, so that commits enter it in the order
        // they were written.
        let seg = w.seg;
        if !added.is_empty() || !removals.is_empty() {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            for (prefix, from, to) in &removals {
                index.remove(prefix, *from, *to);
            }
            for (k, at, len) in &added {
                let (Some((prefix, rest_key)), Ok(pos), Ok(len)) = (
                    split_record_key(k),
                    u32::try_from(base + *at as u64),
                    u32::try_from(*len),
                ) else {
                    continue;
                };
                let Some(offset) = be_u64(rest_key) else {
                    continue;
                };
                index.push(
                    prefix,
                    Entry {
                        offset,
                        seg,
                        pos,
                        len,
                    },
                );
            }
        }
        drop(w);
        if !removals.is_empty() {
            self.delete_dead();
        }
        Ok(())
    }

    /// Syncs the metadata and checkpoints handed to the OS when the last sync is
    /// [`META_SYNC_EVERY`] old: after the commit's appends were answered, or while idle.
    fn after_commit(&self) -> Result<()> {
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if !w.meta_unsynced || w.last_meta_sync.elapsed() < META_SYNC_EVERY {
                return Ok(());
            }
            w.last_meta_sync = Instant::now();
            w.meta_unsynced = false;
        }
        self.meta.sync()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !key.starts_with(b"l/") {
            return self.meta.get(key);
        }
        let Some((prefix, rest)) = split_record_key(key) else {
            return Ok(None);
        };
        let Some(offset) = be_u64(rest) else {
            return Ok(None);
        };
        Ok(self
            .read(prefix, offset, offset.saturating_add(1), 1)?
            .into_iter()
            .next()
            .map(|(_, v)| v))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if !start.starts_with(b"l/") {
            return self.meta.scan(start, end, limit);
        }
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let Some((prefix, from, to)) = record_range(start, end)? else {
            return Ok(Vec::new());
        };
        Ok(self
            .read(prefix, from, to, limit)?
            .into_iter()
            .map(|(offset, v)| (record_key_of(prefix, offset), v))
            .collect())
    }

    fn last_key(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        if !start.starts_with(b"l/") {
            return self.meta.last_key(start, end);
        }
        if start >= end {
            return Ok(None);
        }
        let Some((prefix, from, to)) = record_range(start, end)? else {
            return Ok(None);
        };
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let Some(q) = index.logs.get(prefix) else {
            return Ok(None);
        };
        let i = q.partition_point(|e| e.offset < to);
        Ok(i.checked_sub(1)
            .and_then(|i| q.get(i))
            .filter(|e| e.offset >= from)
            .map(|e| record_key_of(prefix, e.offset)))
    }

    /// Drops the log's records below its new first offset from the index and deletes the
    /// segments that hold nothing any more.
    fn trim(&self, _all: &[u8], _old: &[u8], end: &[u8]) -> Result<()> {
        let Some((prefix, rest)) = split_record_key(end) else {
            return Ok(());
        };
        let Some(first) = ceil_offset(rest) else {
            return Ok(());
        };
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(prefix, 0, first);
        self.delete_dead();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    fn open(dir: &Path) -> SegmentsEngine {
        SegmentsEngine::open(dir, &StoreOptions::default(), Arc::default()).expect("open")
    }

    /// A batch of records of `log` at `offsets`, each holding `value` (appended at its offset).
    fn records(log: &str, offsets: std::ops::Range<u64>, value: &[u8]) -> Batch {
        let mut batch = Batch::default();
        for o in offsets {
            batch
                .writes
                .insert(keys::record_key(log, o), Some(keys::record_value(o, value)));
        }
        batch
    }

    fn put(e: &SegmentsEngine, log: &str, offsets: std::ops::Range<u64>, value: &[u8]) {
        e.commit(records(log, offsets, value)).expect("commit");
    }

    fn offsets(e: &SegmentsEngine, log: &str) -> Vec<u64> {
        e.scan(
            &keys::record_key(log, 0),
            &keys::record_end(log),
            usize::MAX,
        )
        .expect("scan")
        .iter()
        .map(|(k, _)| keys::offset_of(k).expect("offset"))
        .collect()
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let mut ids: Vec<u32> = std::fs::read_dir(dir.join(SEGMENTS_DIR))
            .expect("read dir")
            .filter_map(|e| segment_id(&e.expect("entry").path()))
            .collect();
        ids.sort_unstable();
        segment_path(&dir.join(SEGMENTS_DIR), *ids.last().expect("a segment"))
    }

    #[test]
    fn records_go_to_segments_and_the_rest_to_fjall() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let mut batch = Batch::default();
        batch.writes.insert(
            keys::record_key("a", 0),
            Some(keys::record_value(7, b"event")),
        );
        batch
            .writes
            .insert(b"c/t".to_vec(), Some(b"checkpoint".to_vec()));
        e.commit(batch).expect("commit");
        assert!(!e.meta.has_records(), "no record in fjall");
        assert_eq!(
            e.get(&keys::record_key("a", 0)).expect("get"),
            Some(keys::record_value(7, b"event"))
        );
        assert_eq!(e.get(b"c/t").expect("get"), Some(b"checkpoint".to_vec()));
        let size = std::fs::metadata(last_segment(dir.path()))
            .expect("segment")
            .len();
        assert!(size > 5, "the record is in the segment file");
    }

    #[test]
    fn scans_read_runs_of_records_of_interleaved_logs_in_offset_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        for i in 0..10 {
            put(&e, "a", i * 3..i * 3 + 3, format!("a{i}").as_bytes());
            put(&e, "b", i..i + 1, b"b");
        }
        assert_eq!(offsets(&e, "a"), (0..30).collect::<Vec<_>>());
        assert_eq!(offsets(&e, "b"), (0..10).collect::<Vec<_>>());
        let some = e
            .scan(&keys::record_key("a", 4), &keys::record_key("a", 9), 3)
            .expect("scan");
        let got: Vec<(u64, Vec<u8>)> = some
            .into_iter()
            .map(|(k, v)| (keys::offset_of(&k).expect("offset"), v))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, keys::record_value(4, b"a1")),
                (5, keys::record_value(5, b"a1")),
                (6, keys::record_value(6, b"a2")),
            ]
        );
        assert_eq!(
            e.last_key(&keys::record_key("a", 0), &keys::record_key("a", 17))
                .expect("last"),
            Some(keys::record_key("a", 16))
        );
        // The key a store builds to scan on from after a key (`key + \0`).
        let mut after = keys::record_key("b", 3);
        after.push(0);
        assert_eq!(
            e.scan(&after, &keys::record_end("b"), 1).expect("scan")[0].0,
            keys::record_key("b", 4)
        );
    }

    /// The bytes of one frame of `log` at offset `o` holding `payload` (appended at `o` ms), for
    /// a segment with `salt` (`None`: one without a header).
    fn frame_salted(log: &str, o: u64, payload: &[u8], salt: Option<u64>) -> Vec<u8> {
        let mut f = Vec::new();
        encode_frame(
            &mut f,
            &keys::record_key(log, o),
            &keys::record_value(o, payload),
        )
        .expect("frame");
        stamp_crc(&mut f, 0, salt).expect("crc");
        f
    }

    /// The salt in the header of the segment at `path`.
    fn salt_of(path: &Path) -> u64 {
        let f = File::open(path).expect("open");
        let size = f.metadata().expect("metadata").len();
        read_header(&f, size).expect("read").expect("a header")
    }

    /// One frame of `log` at offset `o` holding `payload`, as the segment at `path` writes it.
    fn frame(path: &Path, log: &str, o: u64, payload: &[u8]) -> Vec<u8> {
        frame_salted(log, o, payload, Some(salt_of(path)))
    }

    /// Where frames of `lens` bytes, written from the start of a segment, end.
    fn end_of(lens: impl IntoIterator<Item = usize>) -> u64 {
        SEG_HEADER + lens.into_iter().map(|l| l as u64).sum::<u64>()
    }

    fn write_at(path: &Path, bytes: &[u8], at: u64) {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(bytes, at).expect("write");
    }

    fn read_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
        let f = File::open(path).expect("open");
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, at).expect("read");
        b
    }

    #[test]
    fn reopening_reads_the_records_back_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..5, b"whole");
        }
        let path = last_segment(dir.path());
        let end = end_of((0..5).map(|o| frame(&path, "a", o, b"whole").len()));
        // Half a frame after the last one, as a commit killed while writing leaves it.
        let mut half = frame(&path, "a", 5, b"torn");
        half.truncate(half.len() - 3);
        write_at(&path, &half, end);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            read_at(&path, end, half.len()),
            vec![0; half.len()],
            "the torn frame is cut"
        );
        // The next record goes where the torn one was, and reads back after a reopen.
        put(&e, "a", 5..6, b"next");
        drop(e);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), (0..6).collect::<Vec<_>>());
        assert_eq!(
            e.get(&keys::record_key("a", 5)).expect("get"),
            Some(keys::record_value(5, b"next"))
        );
    }

    #[test]
    fn a_whole_stale_frame_past_a_torn_one_never_comes_back_behind_later_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..5, b"whole");
        }
        let path = last_segment(dir.path());
        let end = end_of((0..5).map(|o| frame(&path, "a", o, b"whole").len()));
        // A commit torn by a power loss: its first frame damaged, a later one whole (offset 2,
        // given out again after an earlier failed commit). The damaged part is exactly as long
        // as the next record written after the restart, so that, were it left, the stale frame
        // would follow that record directly and replace offsets 2 and on when read.
        let next = frame(&path, "a", 5, b"next");
        write_at(&path, &vec![0xab; next.len()], end);
        write_at(
            &path,
            &frame(&path, "a", 2, b"stale"),
            end + next.len() as u64,
        );
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2, 3, 4]);
        put(&e, "a", 5..6, b"next");
        drop(e);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), (0..6).collect::<Vec<_>>());
        assert_eq!(
            e.get(&keys::record_key("a", 2)).expect("get"),
            Some(keys::record_value(2, b"whole"))
        );
    }

    #[test]
    fn a_frame_failing_its_crc_ends_the_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..3, b"abc");
            put(&e, "a", 3..4, b"xyz");
        }
        let path = last_segment(dir.path());
        let end = end_of(
            (0..3)
                .map(|o| frame(&path, "a", o, b"abc").len())
                .chain([frame(&path, "a", 3, b"xyz").len()]),
        );
        // Flip the last byte of the last record's payload.
        write_at(&path, b"Z", end - 1);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2]);
    }

    #[test]
    fn a_record_at_an_offset_already_read_replaces_it_and_everything_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..4, b"first");
            // A failed commit's offsets given out again.
            put(&e, "a", 2..3, b"again");
        }
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2]);
        assert_eq!(
            e.get(&keys::record_key("a", 2)).expect("get"),
            Some(keys::record_value(2, b"again"))
        );
    }

    #[test]
    fn metadata_behind_the_records_is_brought_forward_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            let mut batch = Batch::default();
            for o in 0..3 {
                batch
                    .writes
                    .insert(keys::record_key("a", o), Some(keys::record_value(o, b"x")));
            }
            // The metadata says two records: the third one's metadata was lost.
            let stale = LogMeta {
                first: 0,
                next: 2,
                bytes: 2,
            };
            batch
                .writes
                .insert(keys::meta_key("a"), Some(stale.encode()));
            e.commit(batch).expect("commit");
        }
        let e = open(dir.path());
        assert_eq!(
            keys::load_meta(&e, "a").expect("meta"),
            LogMeta {
                first: 0,
                next: 3,
                bytes: 3
            }
        );
    }

    /// The segment files of the store in `dir` (spares not counted).
    fn segment_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(SEGMENTS_DIR))
            .expect("read dir")
            .filter(|e| segment_id(&e.as_ref().expect("entry").path()).is_some())
            .count()
    }

    /// Log `a` starts at `first` and ends before `next`, its metadata synced as a retention run
    /// leaves it, and the records below `first` are trimmed.
    fn start_at(e: &SegmentsEngine, first: u64, next: u64) {
        let mut batch = Batch {
            sync_all: true,
            ..Batch::default()
        };
        let meta = LogMeta {
            first,
            next,
            bytes: 0,
        };
        batch
            .writes
            .insert(keys::meta_key("a"), Some(meta.encode()));
        e.commit(batch).expect("commit");
        e.trim(
            &keys::record_key("a", 0),
            &keys::record_key("a", 0),
            &keys::record_key("a", first),
        )
        .expect("trim");
    }

    /// 1 MiB records of log `a` from `from`, one commit each, until one goes to the next
    /// segment; returns the offset of that one (the first of the next segment).
    fn fill_segment(e: &SegmentsEngine, from: u64) -> u64 {
        let seg = e.active.load(Ordering::Acquire);
        let mut o = from;
        while e.active.load(Ordering::Acquire) == seg {
            assert!(o < from + 2 * PER_SEGMENT, "no rotation");
            put_big(e, o..o + 1);
            o += 1;
        }
        o - 1
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("metadata").ino()
    }

    #[test]
    fn trimmed_records_are_gone_and_a_segment_holding_none_leaves_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        // No zeroed spares: when one is ready the first segment would be left early, and how
        // many segments there are would depend on the moment.
        test_faults::set_free_space(dir.path(), 0);
        let first = fill_segment(&e, 0);
        put_big(&e, first + 1..first + 2);
        assert_eq!(segment_count(dir.path()), 2);
        start_at(&e, first, first + 2);
        assert_eq!(segment_count(dir.path()), 1, "the first segment is gone");
        assert_eq!(offsets(&e, "a"), vec![first, first + 1]);
        drop(e);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![first, first + 1]);
    }

    /// A fresh store's segments 0 (sparse, left early) and 1 (zeroed ahead, all 1 MiB records of
    /// log `a` from offset 1), and segment 2 (zeroed ahead) holding one record; returns that
    /// record's offset (the first one segment 1 does not hold).
    fn a_zeroed_segment_full(e: &SegmentsEngine) -> u64 {
        put_big(e, 0..1);
        assert_eq!(settled_spare(e), "ready");
        put_big(e, 1..2);
        assert_eq!(e.active.load(Ordering::Acquire), 1);
        let at = fill_past_half(e, 2);
        assert_eq!(settled_spare(e), "ready");
        let first = fill_segment(e, at);
        assert_eq!(e.active.load(Ordering::Acquire), 2);
        first
    }

    #[test]
    fn a_segment_that_holds_nothing_is_reused_as_the_next_one_without_zeros() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        let reused = inode(&segment_path(&dir.path().join(SEGMENTS_DIR), 1));
        let zeros = test_faults::spare_progress(dir.path()).0;
        start_at(&e, first, first + 1);
        assert_eq!(e.spare_state(), "ready");
        let kept = spares(dir.path());
        assert_eq!(kept.len(), 1, "segment 0, left early, is deleted");
        assert_eq!(inode(&kept[0]), reused, "segment 1 kept as the spare");
        let next = fill_segment(&e, first + 1);
        let last = last_segment(dir.path());
        assert_eq!(segment_id(&last), Some(3));
        assert_eq!(inode(&last), reused, "segment 3 is segment 1's file");
        assert!(allocated(&last) >= SEGMENT_BYTES, "its blocks are written");
        assert_eq!(test_faults::spare_progress(dir.path()).0, zeros, "no zeros");
        assert!(spares(dir.path()).is_empty());
        reopened_from(e, dir.path(), first, next + 1);
    }

    #[test]
    fn the_records_a_reused_segment_held_never_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        start_at(&e, first, first + 1);
        // Segment 3, segment 1 reused, gets 1 MiB records as segment 1 did: the first two end
        // where segment 1's third began.
        let frame_len = frame_salted("a", 0, &[7u8; 1024 * 1024], None).len() as u64;
        let third = SEG_HEADER + 2 * frame_len;
        let kept = spares(dir.path());
        assert_eq!(kept.len(), 1);
        let (stale, reused) = (read_at(&kept[0], third, HEADER), inode(&kept[0]));
        let next = fill_segment(&e, first + 1);
        put_big(&e, next + 1..next + 2);
        let seg3 = last_segment(dir.path());
        assert_eq!(inode(&seg3), reused, "segment 3 is segment 1's file");
        drop(e);
        let read = read_segment(&File::open(&seg3).expect("open"), 3, &mut Index::default());
        assert!(
            read.expect("read").sealed,
            "the last commit's seal follows its records"
        );
        // As if the last commit's seal never reached the disk (a commit torn after its
        // frames): segment 1's third frame, whole, follows the new records.
        write_at(&seg3, &stale, third);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), (first..next + 2).collect::<Vec<_>>());
        // Left for the next one, it is read to its seal.
        let after = fill_segment(&e, next + 2);
        drop(e);
        let read = read_segment(&File::open(&seg3).expect("open"), 3, &mut Index::default());
        assert!(read.expect("read").sealed, "segment 3 ends in a seal");
        reopened_from(open(dir.path()), dir.path(), first, after + 1);
    }

    #[test]
    fn a_segment_that_holds_nothing_while_a_spare_is_ready_is_kept_for_the_one_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        let at = fill_past_half(&e, first + 1);
        assert_eq!(settled_spare(&e), "ready", "segment 3 zeroed ahead");
        let reused = inode(&segment_path(&dir.path().join(SEGMENTS_DIR), 1));
        start_at(&e, first, at);
        assert_eq!(spares(dir.path()).len(), 2, "segment 1 kept in reserve");
        let next = fill_segment(&e, at);
        // Segment 3 is the zeroed one; the reserve is the spare now, and none is zeroed.
        assert_ne!(inode(&last_segment(dir.path())), reused);
        let kept = spares(dir.path());
        assert_eq!(kept.len(), 1);
        assert_eq!(inode(&kept[0]), reused);
        let zeros = test_faults::spare_progress(dir.path()).0;
        let after = fill_segment(&e, next + 1);
        assert_eq!(
            inode(&last_segment(dir.path())),
            reused,
            "segment 4 is segment 1's file"
        );
        assert_eq!(test_faults::spare_progress(dir.path()).0, zeros, "no zeros");
        reopened_from(e, dir.path(), first, after + 1);
    }

    #[test]
    fn a_segment_being_reused_when_the_process_dies_reads_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        start_at(&e, first, first + 1);
        let kept = spares(dir.path());
        assert_eq!(kept.len(), 1);
        // As a crash after its new header's sync and before its rename leaves it: segment 1
        // under its own name, its 1 MiB records behind a header with another salt.
        let seg1 = segment_path(&dir.path().join(SEGMENTS_DIR), 1);
        std::fs::copy(&kept[0], &seg1).expect("copy");
        drop(e);
        let read = read_segment(&File::open(&seg1).expect("open"), 1, &mut Index::default());
        let read = read.expect("read");
        assert!(
            read.sealed && read.valid == SEG_HEADER,
            "read as an empty sealed segment"
        );
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![first]);
        assert!(
            !seg1.exists(),
            "found empty at open and taken out of the store"
        );
        assert_eq!(e.spare_state(), "ready", "reused");
    }

    #[test]
    fn a_segment_left_early_is_deleted_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        // Segment 0, sparse, is left for the zeroed one once that is ready: shortened.
        let next = leave_the_sparse_segment(&e, 0);
        zeroed_last_segment(dir.path(), 1);
        start_at(&e, next - 1, next);
        assert_eq!(e.spare_state(), "none");
        assert!(spares(dir.path()).is_empty());
        assert_eq!(segment_count(dir.path()), 1, "segment 0 is deleted");
    }

    #[test]
    fn a_segment_a_read_still_holds_is_deleted_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        // As a read that picked segment 1's records before they were trimmed holds it.
        let held = e
            .index
            .read()
            .expect("index")
            .segments
            .get(&1)
            .map(|s| s.file.clone())
            .expect("segment 1");
        start_at(&e, first, first + 1);
        assert_eq!(e.spare_state(), "none");
        assert!(spares(dir.path()).is_empty());
        assert_eq!(segment_count(dir.path()), 1, "segments 0 and 1 are deleted");
        drop(held);
    }

    #[test]
    fn a_segment_that_holds_nothing_stops_a_spare_being_zeroed_and_takes_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let first = a_zeroed_segment_full(&e);
        // Past half of segment 2 a spare is asked for; paced at 1 B/s it writes nothing until
        // more is appended.
        test_faults::pace_spares(dir.path(), 1);
        let at = fill_past_half(&e, first + 1);
        assert_eq!(e.spare_state(), "preparing");
        let (_, finished) = test_faults::spare_progress(dir.path());
        let reused = inode(&segment_path(&dir.path().join(SEGMENTS_DIR), 1));
        start_at(&e, first, at);
        assert_eq!(e.spare_state(), "ready");
        let until = Instant::now() + Duration::from_secs(60);
        while test_faults::spare_progress(dir.path()).1 == finished && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let kept = spares(dir.path());
        assert_eq!(kept.len(), 1, "the zeroed spare is removed: {kept:?}");
        assert_eq!(inode(&kept[0]), reused);
        let next = fill_segment(&e, at);
        assert_eq!(inode(&last_segment(dir.path())), reused);
        reopened_from(e, dir.path(), first, next + 1);
    }

    /// A segment of log `a`'s records at `offsets`, as written before segments had a header
    /// (frames whose CRC covers the body alone, no seal), as segment `id` of the store in `dir`;
    /// `zeroed`: its room written with zeros (allocated), else sparse.
    fn segment_without_header(dir: &Path, id: u32, offsets: std::ops::Range<u64>, zeroed: bool) {
        let seg_dir = dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&seg_dir).expect("segments dir");
        let mut bytes = Vec::new();
        for o in offsets {
            bytes.extend(frame_salted("a", o, b"old", None));
        }
        if zeroed {
            bytes.resize(SEGMENT_BYTES as usize, 0);
        }
        let path = segment_path(&seg_dir, id);
        std::fs::write(&path, &bytes).expect("write");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(SEGMENT_BYTES))
            .expect("size");
    }

    #[test]
    fn a_segment_without_a_header_is_read_and_written_on_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment_without_header(dir.path(), 0, 0..3, false);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2]);
        put(&e, "a", 3..4, b"new");
        drop(e);
        let path = last_segment(dir.path());
        assert_eq!(segment_id(&path), Some(0));
        assert_ne!(
            read_at(&path, 0, 8),
            MAGIC.to_vec(),
            "still without a header"
        );
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2, 3]);
        assert_eq!(
            e.get(&keys::record_key("a", 3)).expect("get"),
            Some(keys::record_value(3, b"new"))
        );
    }

    #[test]
    fn a_segment_without_a_header_that_holds_nothing_is_deleted_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Segment 0 full length and zeroed: but for its missing header, it could be reused.
        segment_without_header(dir.path(), 0, 0..3, true);
        segment_without_header(dir.path(), 1, 3..4, false);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2, 3]);
        start_at(&e, 3, 4);
        assert_eq!(e.spare_state(), "none");
        assert!(spares(dir.path()).is_empty());
        assert_eq!(segment_count(dir.path()), 1, "segment 0 is deleted");
        reopened_from(e, dir.path(), 3, 4);
    }

    /// Waits (at most a minute) until the spare is no longer being prepared; returns its state.
    fn settled_spare(e: &SegmentsEngine) -> &'static str {
        let until = Instant::now() + Duration::from_secs(60);
        while e.spare_state() == "preparing" && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        e.spare_state()
    }

    fn spares(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join(SEGMENTS_DIR))
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(SPARE_SUFFIX))
            .collect()
    }

    /// Bytes the file system allocated to `path` (a sparse room has none).
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("metadata").blocks() * 512
    }

    /// One 1 MiB record of log `a` at each offset of `offsets`, one commit each.
    fn put_big(e: &SegmentsEngine, offsets: std::ops::Range<u64>) {
        let big = vec![7u8; 1024 * 1024];
        for o in offsets {
            put(e, "a", o..o + 1, &big);
        }
    }

    /// A segment's size in MiB (it holds one 1 MiB record fewer, with their frames).
    const PER_SEGMENT: u64 = SEGMENT_BYTES / (1024 * 1024);

    /// From a sparse active segment: one 1 MiB record at `from` (the segment then holds
    /// [`EARLY_SPARE_AT`]), waits for the spare, and commits one small record, which goes to
    /// the zeroed segment. Returns the next offset.
    fn leave_the_sparse_segment(e: &SegmentsEngine, from: u64) -> u64 {
        put_big(e, from..from + 1);
        assert_eq!(settled_spare(e), "ready");
        put(e, "a", from + 1..from + 2, b"next");
        from + 2
    }

    /// From an active segment whose spare was skipped or failed: 1 MiB records from `from`
    /// until it asks for a spare again (after at most [`SPARE_ASK_AGAIN_AFTER`] and one more
    /// record), then waits for the spare and commits one small record, which goes to the
    /// zeroed segment. Returns the next offset.
    fn ask_again_and_leave(e: &SegmentsEngine, from: u64) -> u64 {
        let most = SPARE_ASK_AGAIN_AFTER / (1024 * 1024) + 1;
        let mut next = from;
        while e.spare_state() == "none" {
            assert!(next < from + most, "no spare asked for after {most} MiB");
            put_big(e, next..next + 1);
            next += 1;
        }
        assert_eq!(settled_spare(e), "ready");
        put(e, "a", next..next + 1, b"next");
        next + 1
    }

    /// Fills the active segment, which holds little, just past [`PREPARE_AT`] from offset
    /// `from`; returns the next offset.
    fn fill_past_half(e: &SegmentsEngine, from: u64) -> u64 {
        let half = PREPARE_AT / (1024 * 1024) + 1;
        put_big(e, from..from + half);
        from + half
    }

    /// The last segment is segment `id`, and its blocks are written (zeroed ahead).
    fn zeroed_last_segment(dir: &Path, id: u32) {
        let last = last_segment(dir);
        assert_eq!(segment_id(&last), Some(id));
        assert!(allocated(&last) >= SEGMENT_BYTES, "segment {id} is zeroed");
    }

    /// The last segment is segment `id`, created sparse.
    fn sparse_last_segment(dir: &Path, id: u32) {
        let last = last_segment(dir);
        assert_eq!(segment_id(&last), Some(id));
        assert!(allocated(&last) < SEGMENT_BYTES, "segment {id} is sparse");
    }

    /// A fresh store whose first spare fails, as on a full disk (the spare's file is created,
    /// its zeros cannot be written), after one 1 MiB record at offset 0.
    fn first_spare_failed(dir: &Path) -> SegmentsEngine {
        let e = open(dir);
        test_faults::fail_spares(dir);
        put_big(&e, 0..1);
        assert_eq!(settled_spare(&e), "none");
        e
    }

    /// Reopened, the store in `dir` holds log `a`'s offsets `from..next`.
    fn reopened_from(e: SegmentsEngine, dir: &Path, from: u64, next: u64) {
        drop(e);
        let e = open(dir);
        assert_eq!(offsets(&e, "a"), (from..next).collect::<Vec<_>>());
    }

    /// Reopened, the store in `dir` holds log `a`'s offsets `0..next`.
    fn reopened_holds(e: SegmentsEngine, dir: &Path, next: u64) {
        drop(e);
        let e = open(dir);
        assert_eq!(offsets(&e, "a"), (0..next).collect::<Vec<_>>());
    }

    #[test]
    fn a_fresh_store_leaves_its_sparse_first_segment_for_a_zeroed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        put(&e, "a", 0..10, b"small");
        assert_eq!(
            e.spare_state(),
            "none",
            "a store written a little zeroes nothing"
        );
        assert!(spares(dir.path()).is_empty());
        let next = leave_the_sparse_segment(&e, 10);
        assert!(spares(dir.path()).is_empty(), "the commit took the spare");
        zeroed_last_segment(dir.path(), 1);
        let first = segment_path(&dir.path().join(SEGMENTS_DIR), 0);
        let first_len = std::fs::metadata(&first).expect("metadata").len();
        assert!(
            first_len < 2 * 1024 * 1024,
            "the first segment ends where its records do: {first_len}"
        );
        reopened_holds(e, dir.path(), next);
    }

    #[test]
    fn after_a_restart_the_rest_of_the_last_segment_is_left_for_a_zeroed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..10, b"before");
        }
        let e = open(dir.path());
        let next = leave_the_sparse_segment(&e, 10);
        zeroed_last_segment(dir.path(), 1);
        reopened_holds(e, dir.path(), next);
    }

    #[test]
    fn the_next_segment_is_zeroed_ahead_and_the_rotation_takes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let start = leave_the_sparse_segment(&e, 0);
        let next = fill_past_half(&e, start);
        assert_eq!(settled_spare(&e), "ready");
        let spare = spares(dir.path());
        assert_eq!(spare.len(), 1, "one spare: {spare:?}");
        assert!(
            allocated(&spare[0]) >= SEGMENT_BYTES,
            "the spare's blocks are written"
        );
        assert_eq!(
            segment_id(&last_segment(dir.path())),
            Some(1),
            "not left early"
        );
        put_big(&e, next..start + PER_SEGMENT + 2);
        assert!(spares(dir.path()).is_empty(), "the rotation took the spare");
        zeroed_last_segment(dir.path(), 2);
        reopened_holds(e, dir.path(), start + PER_SEGMENT + 2);
    }

    #[test]
    fn a_spare_that_cannot_be_written_leaves_the_next_segment_sparse_and_nothing_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = first_spare_failed(dir.path());
        assert!(spares(dir.path()).is_empty(), "the failed spare is removed");
        put_big(&e, 1..PER_SEGMENT + 2);
        sparse_last_segment(dir.path(), 1);
        assert_eq!(offsets(&e, "a"), (0..PER_SEGMENT + 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_whose_spare_failed_asks_again_and_is_left_for_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = first_spare_failed(dir.path());
        test_faults::heal_spares(dir.path());
        let next = ask_again_and_leave(&e, 1);
        zeroed_last_segment(dir.path(), 1);
        reopened_holds(e, dir.path(), next);
    }

    #[test]
    fn a_segment_created_sparse_for_want_of_a_spare_is_left_for_one_once_it_is_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = first_spare_failed(dir.path());
        // Every spare of the first segment fails: the rotation finds none.
        put_big(&e, 1..PER_SEGMENT);
        assert_eq!(settled_spare(&e), "none");
        sparse_last_segment(dir.path(), 1);
        test_faults::heal_spares(dir.path());
        let next = ask_again_and_leave(&e, PER_SEGMENT);
        zeroed_last_segment(dir.path(), 2);
        reopened_holds(e, dir.path(), next);
    }

    #[test]
    fn a_disk_short_of_room_for_a_spare_keeps_its_segments_sparse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        test_faults::set_free_space(dir.path(), SPARE_NEEDS_FREE - 1);
        put_big(&e, 0..PER_SEGMENT + 1);
        assert_eq!(e.spare_state(), "none", "no spare was started");
        assert!(spares(dir.path()).is_empty());
        sparse_last_segment(dir.path(), 1);
        // With room again, the active segment asks again and is left for the spare.
        test_faults::set_free_space(dir.path(), SPARE_NEEDS_FREE);
        let next = ask_again_and_leave(&e, PER_SEGMENT + 1);
        zeroed_last_segment(dir.path(), 2);
        reopened_holds(e, dir.path(), next);
    }

    #[test]
    fn a_spare_being_written_when_the_engine_closes_stops_and_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        test_faults::slow_spares(dir.path());
        put_big(&e, 0..1);
        assert_eq!(e.spare_state(), "preparing");
        drop(e);
        let until = Instant::now() + Duration::from_secs(60);
        while test_faults::spare_progress(dir.path()).1 == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (steps, finished) = test_faults::spare_progress(dir.path());
        assert_eq!(finished, 1, "the spare's thread ended");
        let all = SEGMENT_BYTES / ZERO_CHUNK as u64;
        assert!((steps as u64) < all, "stopped after {steps} of {all} steps");
        assert!(spares(dir.path()).is_empty(), "its file is removed");
    }

    #[test]
    fn a_spare_is_due_in_full_once_half_the_room_it_was_asked_with_is_used() {
        let room = 32 * 1024 * 1024;
        assert_eq!(zeros_due(Duration::ZERO, 0, room, 0), 0);
        assert_eq!(
            zeros_due(Duration::ZERO, room / 4, room, 0),
            SEGMENT_BYTES / 2
        );
        assert_eq!(zeros_due(Duration::ZERO, room / 2, room, 0), SEGMENT_BYTES);
    }

    #[test]
    fn a_spare_of_an_idle_segment_is_due_at_the_least_rate() {
        let rate = ZERO_MIN_RATE;
        assert_eq!(zeros_due(Duration::from_secs(1), 0, 1 << 20, rate), rate);
        assert_eq!(
            zeros_due(Duration::from_secs(8), 0, 1 << 20, rate),
            SEGMENT_BYTES
        );
        // Unpaced (unit tests): everything at once.
        assert!(zeros_due(Duration::from_millis(1), 0, 1 << 20, u64::MAX) > SEGMENT_BYTES);
    }

    #[test]
    fn a_spare_keeps_pace_with_the_segment_it_is_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        test_faults::pace_spares(dir.path(), 1);
        let e = open(dir.path());
        // The first MiB asks for a spare (the room is sparse); nothing more is written yet.
        put_big(&e, 0..1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(test_faults::spare_progress(dir.path()).0, 0, "no zeros yet");
        assert_eq!(e.spare_state(), "preparing");
        // A quarter of the room used: half the spare, and no more. (Every 1 MiB record's frame
        // has the first one's length.)
        let len = e.writer.lock().expect("writer").len;
        let frame = len - SEG_HEADER;
        let room = SEGMENT_BYTES - len;
        let quarter = room / 4 / frame;
        put_big(&e, 1..1 + quarter);
        let due = zeros_due(Duration::ZERO, quarter * frame, room, 0);
        let steps = (due / ZERO_CHUNK as u64) as usize;
        let until = Instant::now() + Duration::from_secs(60);
        while test_faults::spare_progress(dir.path()).0 < steps && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        let (written, _) = test_faults::spare_progress(dir.path());
        assert!(
            (steps..=steps + 1).contains(&written),
            "{written} steps written, {steps} due"
        );
        assert_eq!(e.spare_state(), "preparing");
        // Half the room used: the spare is finished.
        let half = room / 2 / frame + 1;
        put_big(&e, 1 + quarter..1 + half);
        assert_eq!(settled_spare(&e), "ready");
    }

    #[test]
    fn a_spare_of_an_idle_segment_is_written_no_faster_than_the_least_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rate = 4 * 1024 * 1024;
        test_faults::pace_spares(dir.path(), rate);
        let e = open(dir.path());
        let asked = Instant::now();
        put_big(&e, 0..1);
        let until = Instant::now() + Duration::from_secs(60);
        while test_faults::spare_progress(dir.path()).0 < 4 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = asked.elapsed();
        assert!(
            test_faults::spare_progress(dir.path()).0 >= 4,
            "the spare advances"
        );
        // The 4th step is due 4 steps' worth of the least rate after the ask, not before.
        let least = Duration::from_secs_f64(4.0 * ZERO_CHUNK as f64 / rate as f64);
        assert!(
            took >= least,
            "4 steps in {took:?}, at the least rate {least:?}"
        );
    }

    #[test]
    fn a_spare_ready_when_the_engine_closes_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        put_big(&e, 0..1);
        assert_eq!(settled_spare(&e), "ready");
        assert_eq!(spares(dir.path()).len(), 1);
        drop(e);
        assert!(
            spares(dir.path()).is_empty(),
            "the spare went with its engine"
        );
    }

    #[test]
    fn a_spare_left_by_an_earlier_run_is_removed_and_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..2, b"kept");
        }
        // A spare holding a valid frame (it never does; it must not be read even so).
        let spare = dir
            .path()
            .join(SEGMENTS_DIR)
            .join(format!("{:010}{SPARE_SUFFIX}", 1));
        std::fs::write(&spare, frame_salted("a", 9, b"stray", None)).expect("write");
        let e = open(dir.path());
        assert!(spares(dir.path()).is_empty(), "the spare is removed");
        assert_eq!(offsets(&e, "a"), vec![0, 1]);
    }

    #[test]
    fn a_failed_sync_fails_the_commit_and_none_of_its_records_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = open(dir.path());
            put(&e, "a", 0..2, b"durable");
            test_faults::fail_syncs(dir.path(), 1);
            let err = e
                .commit(records("a", 2..4, b"lost"))
                .expect_err("the sync fails");
            assert!(err.to_string().contains("injected"), "{err}");
            assert_eq!(
                offsets(&e, "a"),
                vec![0, 1],
                "no record of the failed commit is read"
            );
            let err = e
                .commit(records("a", 2..3, b"next"))
                .expect_err("no write before the engine is reopened");
            assert!(err.to_string().contains("reopening"), "{err}");
        }
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1], "the failed commit was cut");
        put(&e, "a", 2..3, b"next");
        assert_eq!(
            e.get(&keys::record_key("a", 2)).expect("get"),
            Some(keys::record_value(2, b"next"))
        );
    }

    #[test]
    fn metadata_handed_to_the_os_is_synced_after_the_commit_once_it_is_a_second_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path());
        let unsynced = || e.meta_unsynced();
        let mut batch = records("a", 0..1, b"event");
        batch.writes.insert(
            keys::meta_key("a"),
            Some(
                LogMeta {
                    first: 0,
                    next: 1,
                    bytes: 5,
                }
                .encode(),
            ),
        );
        e.commit(batch).expect("commit");
        assert!(unsynced(), "the commit itself does not sync the metadata");
        e.after_commit().expect("after commit");
        assert!(unsynced(), "not before a second since the last sync");
        {
            let mut w = e.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.last_meta_sync = Instant::now()
                .checked_sub(META_SYNC_EVERY * 2)
                .expect("an instant in the past");
        }
        e.after_commit().expect("after commit");
        assert!(!unsynced(), "synced once due");
        let mut flush = Batch {
            sync_all: true,
            ..Batch::default()
        };
        flush
            .writes
            .insert(b"c/t".to_vec(), Some(b"checkpoint".to_vec()));
        e.commit(flush).expect("commit");
        assert!(
            !unsynced(),
            "a batch that asks for it is synced in the commit"
        );
    }

    #[test]
    fn a_store_the_fjall_engine_wrote_has_its_records_moved_to_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let f = FjallEngine::open(dir.path(), &StoreOptions::default(), Arc::default())
                .expect("fjall");
            let mut batch = Batch::default();
            for o in 0..3 {
                batch.writes.insert(
                    keys::record_key("a", o),
                    Some(keys::record_value(o, b"old")),
                );
            }
            batch.writes.insert(
                keys::meta_key("a"),
                Some(
                    LogMeta {
                        first: 0,
                        next: 3,
                        bytes: 9,
                    }
                    .encode(),
                ),
            );
            f.commit(batch).expect("commit");
        }
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2]);
        assert!(!e.meta.has_records());
        drop(e);
        let e = open(dir.path());
        assert_eq!(offsets(&e, "a"), vec![0, 1, 2]);
        drop(e);
        let refused = FjallEngine::open(dir.path(), &StoreOptions::default(), Arc::default());
        assert!(
            refused.is_err(),
            "the fjall engine refuses a store whose events are in segments"
        );
    }
}
