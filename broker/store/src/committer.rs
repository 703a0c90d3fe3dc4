//! The group-commit thread: drains all pending requests, writes one engine batch, syncs once,
//! then answers every waiting append.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::keys::{self, LogMeta};
use crate::kv::{Batch, EngineSlot, KvEngine};
use crate::{LogId, Offset, Result, StoreError};

/// How long checkpoint writes alone wait for more work before they are committed.
const CHECKPOINT_LINGER: Duration = Duration::from_millis(2);
/// At most this many requests go into one batch.
const MAX_BATCH_REQUESTS: usize = 8192;
/// While the store fails: how often it reopens the engine and probes the disk with a write.
const RECOVER_INTERVAL: Duration = Duration::from_millis(500);

/// While idle the committer does the engine's deferred work this often.
const IDLE_WORK_INTERVAL: Duration = Duration::from_secs(1);

/// A request to the committer.
pub(crate) enum Request {
    /// Append `payload` to the log `log`; answer with its offset once durable.
    Append {
        log: LogId,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Offset>>,
    },
    /// Checkpoint writes are waiting in [`PendingCheckpoints`]; commit them soon.
    Checkpoint,
    /// Answer once everything before it is durable.
    Flush { reply: oneshot::Sender<Result<()>> },
    /// Retention found the records `[from, to)` of a log deletable (`freed` payload bytes):
    /// move the log's first offset to `to` in the next group commit, if it still is `from`.
    /// Answers with how many records that dropped from the log (0 when `from` no longer
    /// matched). The records themselves are removed afterwards by the caller, off this thread.
    Trim {
        log: LogId,
        from: Offset,
        to: Offset,
        freed: u64,
        reply: SyncSender<Result<u64>>,
    },
}

impl Request {
    /// Requests somebody waits for: commit them without lingering.
    fn is_urgent(&self) -> bool {
        !matches!(self, Request::Checkpoint)
    }
}

/// A [`Request::Trim`] taken apart.
struct Trim {
    log: LogId,
    from: Offset,
    to: Offset,
    freed: u64,
    reply: SyncSender<Result<u64>>,
}

/// Counters shared with the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) appends: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    /// The committer waits for requests under `SCHED_BATCH` now ([`SchedPolicy`]).
    pub(crate) batch_policy: AtomicBool,
}

/// Whether the store can write, shared with the store's readers (`/readyz`).
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: Mutex<Option<String>>,
}

impl Health {
    /// The reason writes fail, `None` while they succeed.
    pub(crate) fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, reason: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// State owned by the committer thread.
pub(crate) struct Committer {
    engine: Arc<EngineSlot>,
    counters: Arc<Counters>,
    /// Metadata of the logs touched so far, as committed.
    metas: HashMap<LogId, LogMeta>,
    /// Checkpoint writes not yet committed (shared with readers, kept across a failed commit).
    pending: Arc<PendingCheckpoints>,
    /// Payload bytes of appends sent and not answered yet (the store's admission bound).
    queued: Arc<AtomicUsize>,
    health: Arc<Health>,
    /// The last commit failed; cleared by the next successful one.
    failing: bool,
    /// The engine must be opened again before it can write (set by a failed commit).
    needs_reopen: bool,
    last_reopen: Option<Instant>,
}

/// Checkpoint writes handed to the store but not yet committed, each with a sequence number so
/// the committer removes only what it committed. Readers overlay them on the engine's data.
#[derive(Debug, Default)]
pub(crate) struct PendingCheckpoints {
    inner: Mutex<PendingInner>,
}

/// Last sequence number handed out, and key → (sequence number, put or delete).
type PendingInner = (u64, BTreeMap<String, (u64, Option<Vec<u8>>)>);

impl PendingCheckpoints {
    fn lock(&self) -> MutexGuard<'_, PendingInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a put (`Some`) or delete (`None`).
    pub(crate) fn set(&self, key: &str, value: Option<Vec<u8>>) {
        let mut g = self.lock();
        g.0 += 1;
        let seq = g.0;
        g.1.insert(key.to_owned(), (seq, value));
    }

    /// The pending writes whose key starts with `prefix`.
    pub(crate) fn with_prefix(&self, prefix: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let g = self.lock();
        g.1.range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.lock().1.is_empty()
    }

    fn snapshot(&self) -> Vec<(String, u64, Option<Vec<u8>>)> {
        self.lock()
            .1
            .iter()
            .map(|(k, (seq, v))| (k.clone(), *seq, v.clone()))
            .collect()
    }

    /// Forgets the committed writes that were not replaced meanwhile.
    fn committed(&self, done: &[(String, u64, Option<Vec<u8>>)]) {
        let mut g = self.lock();
        for (k, seq, _) in done {
            if g.1.get(k).is_some_and(|(s, _)| s == seq) {
                g.1.remove(k);
            }
        }
    }
}

impl Committer {
    pub(crate) fn new(
        engine: Arc<EngineSlot>,
        counters: Arc<Counters>,
        pending: Arc<PendingCheckpoints>,
        queued: Arc<AtomicUsize>,
        health: Arc<Health>,
    ) -> Self {
        Committer {
            engine,
            counters,
            metas: HashMap::new(),
            pending,
            queued,
            health,
            failing: false,
            needs_reopen: false,
            last_reopen: None,
        }
    }

    /// Runs until every sender is gone, committing whatever is pending before returning.
    /// While writes fail it probes the disk every [`RECOVER_INTERVAL`], so the store recovers
    /// (and reports it) without waiting for the next request.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let mut open = true;
        let mut policy = SchedPolicy::new();
        while open {
            let first = if self.failing {
                match rx.recv_timeout(RECOVER_INTERVAL) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(IDLE_WORK_INTERVAL) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.after_commit(None);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            policy.wake();
            let mut reqs = vec![first];
            open = drain(&rx, &mut reqs);
            if open && !reqs.iter().any(Request::is_urgent) {
                open = linger(&rx, &mut reqs);
            }
            policy.commit_starts();
            let appends = self.process(reqs);
            policy.observe(appends);
            self.counters
                .batch_policy
                .store(policy.is_batch(), Ordering::Relaxed);
        }
        if !self.pending.is_empty() {
            self.commit_cycle(Vec::new(), Vec::new(), Vec::new());
        }
    }

    /// The engine's deferred work, once everybody waiting for a commit was answered (`engine`:
    /// the one that committed), or while idle.
    fn after_commit(&mut self, engine: Option<Arc<dyn KvEngine>>) {
        let done = match engine {
            Some(e) => e.after_commit(),
            None => self.engine.get().and_then(|e| e.after_commit()),
        };
        if let Err(e) = done {
            if !self.failing {
                tracing::error!(error = %e, "syncing the store's metadata failed");
            }
            self.mark_failing(&e.to_string());
        }
    }

    /// Notes a failed write: the store reports it, and an engine that can be reopened is.
    fn mark_failing(&mut self, reason: &str) {
        if !self.failing {
            tracing::error!(error = %reason, "the store cannot write; refusing events (503) until it can");
        }
        self.failing = true;
        self.needs_reopen = self.engine.can_reopen();
        self.health.set(Some(reason.to_owned()));
    }

    fn mark_healthy(&mut self) {
        if self.failing {
            tracing::info!("the store writes again");
        }
        self.failing = false;
        self.health.set(None);
    }

    /// Reopens the engine after a failure (at most every [`RECOVER_INTERVAL`]).
    fn reopen_if_due(&mut self) {
        if !self.needs_reopen
            || self
                .last_reopen
                .is_some_and(|t| t.elapsed() < RECOVER_INTERVAL)
        {
            return;
        }
        self.last_reopen = Some(Instant::now());
        match self.engine.reopen() {
            Ok(()) => {
                self.needs_reopen = false;
                // What was committed is read back from the engine.
                self.metas.clear();
            }
            Err(e) => {
                tracing::debug!(error = %e, "reopening the storage engine failed");
                self.health.set(Some(e.to_string()));
            }
        }
    }

    /// While failing: reopens the engine if needed and tries one small durable write.
    fn probe(&mut self) {
        self.reopen_if_due();
        if self.needs_reopen {
            return;
        }
        let mut batch = Batch::default();
        batch
            .writes
            .insert(keys::probe_key(), Some(now_ms().to_be_bytes().to_vec()));
        match self.engine.get().and_then(|e| e.commit(batch)) {
            Ok(()) => self.mark_healthy(),
            Err(e) => self.mark_failing(&e.to_string()),
        }
    }

    /// Commits what `reqs` ask for; returns how many appends they held.
    fn process(&mut self, reqs: Vec<Request>) -> usize {
        if self.failing {
            self.reopen_if_due();
        }
        let mut appends = Vec::new();
        let mut flushes = Vec::new();
        let mut trims = Vec::new();
        for r in reqs {
            match r {
                Request::Append {
                    log,
                    payload,
                    reply,
                } => appends.push((log, payload, reply)),
                Request::Checkpoint => {}
                Request::Flush { reply } => flushes.push(reply),
                Request::Trim {
                    log,
                    from,
                    to,
                    freed,
                    reply,
                } => trims.push(Trim {
                    log,
                    from,
                    to,
                    freed,
                    reply,
                }),
            }
        }
        let n = appends.len();
        if n > 0 || !flushes.is_empty() || !trims.is_empty() || !self.pending.is_empty() {
            self.commit_cycle(appends, flushes, trims);
        }
        n
    }

    /// The committed metadata of `log`, loaded from the engine on first use.
    fn meta(&mut self, log: &LogId) -> Result<LogMeta> {
        if let Some(m) = self.metas.get(log) {
            return Ok(*m);
        }
        let m = keys::load_meta(self.engine.get()?.as_ref(), log.as_str())?;
        self.metas.insert(log.clone(), m);
        Ok(m)
    }

    /// One group commit: all appends, all pending checkpoints, the log metadata retention
    /// moved, one durable engine batch.
    fn commit_cycle(
        &mut self,
        appends: Vec<(LogId, Vec<u8>, oneshot::Sender<Result<Offset>>)>,
        flushes: Vec<oneshot::Sender<Result<()>>>,
        trims: Vec<Trim>,
    ) {
        let now = now_ms();
        // Given back to the admission bound before any append is answered, so an answered
        // client finds its bytes released.
        let appended_bytes: usize = appends.iter().map(|(_, p, _)| p.len()).sum();
        let mut batch = Batch::default();
        let mut dirty: HashMap<LogId, LogMeta> = HashMap::new();
        let mut waiting = Vec::with_capacity(appends.len());
        let mut trimmed = Vec::with_capacity(trims.len());
        for t in trims {
            let meta = match dirty.get(&t.log) {
                Some(m) => Ok(*m),
                None => self.meta(&t.log),
            };
            let mut meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    let _ = t.reply.send(Err(e));
                    continue;
                }
            };
            // Only one retention run moves a log's start at a time; a stale one changes nothing.
            let n = if meta.first == t.from && t.to > t.from && t.to <= meta.next {
                meta.first = t.to;
                meta.bytes = meta.bytes.saturating_sub(t.freed);
                dirty.insert(t.log, meta);
                t.to - t.from
            } else {
                0
            };
            trimmed.push((n, t.reply));
        }
        // The log of the last append and its metadata so far: a run of appends to one log
        // (the usual batch) looks its metadata up once.
        let mut current: Option<(LogId, LogMeta)> = None;
        for (log, payload, reply) in appends {
            let meta = match current.take() {
                Some((last, m)) if last == log => Ok(m),
                other => {
                    if let Some((last, m)) = other {
                        dirty.insert(last, m);
                    }
                    match dirty.get(&log) {
                        Some(m) => Ok(*m),
                        None => self.meta(&log),
                    }
                }
            };
            let mut meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            let offset = meta.next;
            meta.next += 1;
            meta.bytes += payload.len() as u64;
            batch.writes.insert(
                keys::record_key(log.as_str(), offset),
                Some(keys::record_value(now, &payload)),
            );
            current = Some((log, meta));
            waiting.push((offset, reply));
        }
        if let Some((log, meta)) = current {
            dirty.insert(log, meta);
        }
        for (log, meta) in &dirty {
            batch
                .writes
                .insert(keys::meta_key(log.as_str()), Some(meta.encode()));
        }
        batch.sync_all = !flushes.is_empty() || !trimmed.is_empty();
        let checkpoints = self.pending.snapshot();
        for (key, _, value) in &checkpoints {
            batch
                .writes
                .insert(keys::checkpoint_key(key), value.clone());
        }
        if !waiting.is_empty() {
            metrics::histogram!("evmesh_fsync_batch_size").record(waiting.len() as f64);
        }
        // The engine that committed, for its deferred work once everybody is answered.
        let mut committed = None;
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let r = self.engine.get().and_then(|e| {
                e.commit(batch)?;
                committed = Some(e);
                Ok(())
            });
            match &r {
                Ok(()) => {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    self.mark_healthy();
                }
                Err(e) => {
                    self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                    if !self.failing {
                        tracing::error!(error = %e, appends = waiting.len(), "group commit failed");
                    }
                    self.mark_failing(&e.to_string());
                }
            }
            r
        };
        self.queued.fetch_sub(appended_bytes, Ordering::AcqRel);
        match result {
            Ok(()) => {
                self.metas.extend(dirty);
                self.pending.committed(&checkpoints);
                self.counters
                    .appends
                    .fetch_add(waiting.len() as u64, Ordering::Relaxed);
                for (offset, reply) in waiting {
                    let _ = reply.send(Ok(offset));
                }
                for reply in flushes {
                    let _ = reply.send(Ok(()));
                }
                for (n, reply) in trimmed {
                    let _ = reply.send(Ok(n));
                }
                if committed.is_some() {
                    self.after_commit(committed);
                }
            }
            Err(e) => {
                // Nothing of this batch is acknowledged; offsets are handed out again. Checkpoint
                // writes stay pending and go with the next commit.
                let msg = e.to_string();
                for (_, reply) in waiting {
                    let _ = reply.send(Err(StoreError::Engine(msg.clone())));
                }
                for reply in flushes {
                    let _ = reply.send(Err(StoreError::Engine(msg.clone())));
                }
                for (_, reply) in trimmed {
                    let _ = reply.send(Err(StoreError::Engine(msg.clone())));
                }
            }
        }
    }
}

/// Moves everything already queued into `reqs`. Returns false once all senders are gone.
fn drain(rx: &Receiver<Request>, reqs: &mut Vec<Request>) -> bool {
    while reqs.len() < MAX_BATCH_REQUESTS {
        match rx.try_recv() {
            Ok(r) => reqs.push(r),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Waits up to [`CHECKPOINT_LINGER`] for more requests, stopping early at an urgent one.
fn linger(rx: &Receiver<Request>, reqs: &mut Vec<Request>) -> bool {
    let deadline = Instant::now() + CHECKPOINT_LINGER;
    while reqs.len() < MAX_BATCH_REQUESTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match rx.recv_timeout(left) {
            Ok(r) => {
                let urgent = r.is_urgent();
                reqs.push(r);
                if urgent {
                    return drain(rx, reqs);
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    true
}

/// Appends in one group commit from which the committer stops preempting (see [`SchedPolicy`]).
pub(crate) const BUSY_BATCH: usize = 4;
/// Appends in one group commit (with any) at or below which it counts as a quiet one.
pub(crate) const QUIET_BATCH: usize = 1;
/// Quiet group commits in a row after which the committer preempts again.
pub(crate) const QUIET_COMMITS: usize = 8;
/// Time since the last large group commit after which the committer preempts again before its
/// next commit (a load that stopped, or a backlog drained with only checkpoints to commit).
pub(crate) const BUSY_FOR: Duration = Duration::from_millis(50);

/// The group-commit thread's scheduling policy on Linux, following the load. While group commits
/// are large (at least [`BUSY_BATCH`] appends: requests arrive faster than one commit takes)
/// the thread waits for requests under `SCHED_BATCH`: the same share of the CPU and the same
/// nice value, but waking it does not preempt a running thread. An append then waits for a
/// request thread to yield (or for its time slice to end) instead of interrupting it, more
/// appends join each commit, and fewer commits (each an `fdatasync` and several context
/// switches) cost less CPU per event. Each commit itself runs under the normal policy
/// ([`SchedPolicy::commit_starts`]), so that the end of its `fdatasync` wakes the thread at once
/// to answer the appends that waited for it (under `SCHED_BATCH` it waited for a CPU there too,
/// most of a millisecond per commit in the closed loop, while every sender of the commit
/// waited; BENCHMARKS.md §9). After [`QUIET_COMMITS`] commits in a row of one append each, or
/// when a request comes [`BUSY_FOR`] or more after the last large commit, it goes back to the
/// normal policy throughout, so that at a light load (or after a load stopped) a commit starts
/// the moment its request arrives (with `SCHED_BATCH` all the time, the 1,000 ev/s open loop's
/// p99.9 was 3.5–8.7 ms against 1.6–3.9 ms in four alternating runs; BENCHMARKS.md §9). A
/// thread that starts under another policy or a nice value other than 0 is left alone (setting
/// the policy also sets the nice value), as it is after the kernel refused once, and off Linux.
pub(crate) struct SchedPolicy {
    allowed: bool,
    /// Group commits are large: the thread waits for requests under `SCHED_BATCH`.
    batch: bool,
    /// The thread runs under `SCHED_BATCH` now (while it waits, when `batch`; never in a commit).
    os_batch: bool,
    /// Quiet commits in a row.
    quiet: usize,
    /// When the last large group commit ended.
    last_busy: Option<Instant>,
}

impl SchedPolicy {
    /// The policy of the calling thread, which is the normal one.
    pub(crate) fn new() -> Self {
        SchedPolicy {
            allowed: cfg!(target_os = "linux") && policy_and_nice() == Some((0, 0)),
            batch: false,
            os_batch: false,
            quiet: 0,
            last_busy: None,
        }
    }

    /// Whether the thread waits for requests under `SCHED_BATCH` (group commits are large).
    pub(crate) fn is_batch(&self) -> bool {
        self.batch
    }

    /// Called before a commit (on the committer's thread): the commit runs under the normal
    /// policy, so that the end of its `fdatasync` preempts whatever runs to answer the appends.
    /// [`SchedPolicy::observe`] puts the thread back under `SCHED_BATCH` after it.
    pub(crate) fn commit_starts(&mut self) {
        self.apply(false);
    }

    /// Called when the committer has a request to handle (on its thread, before the commit):
    /// back to the normal policy when the last large commit is [`BUSY_FOR`] ago or more.
    pub(crate) fn wake(&mut self) {
        if self.batch {
            self.wake_at(Instant::now());
        }
    }

    /// [`SchedPolicy::wake`] at `now`.
    pub(crate) fn wake_at(&mut self, now: Instant) {
        if self.batch
            && self
                .last_busy
                .is_some_and(|t| now.saturating_duration_since(t) >= BUSY_FOR)
        {
            self.quiet = 0;
            self.batch = false;
            self.apply(false);
        }
    }

    /// Follows a group commit of `appends` appends (called on the committer's thread), and
    /// sets the policy the thread waits under. A commit without appends (checkpoints,
    /// retention) says nothing about the load.
    pub(crate) fn observe(&mut self, appends: usize) {
        self.observe_at(appends, Instant::now());
    }

    /// [`SchedPolicy::observe`] of a commit that ended at `now`.
    pub(crate) fn observe_at(&mut self, appends: usize, now: Instant) {
        if appends > 0 {
            self.quiet = if appends <= QUIET_BATCH {
                self.quiet.saturating_add(1)
            } else {
                0
            };
            if appends >= BUSY_BATCH {
                self.last_busy = Some(now);
                self.batch = self.allowed;
            } else if self.quiet >= QUIET_COMMITS {
                self.batch = false;
            }
        }
        self.apply(self.batch);
    }

    /// Puts the thread under `SCHED_BATCH` (`true`) or the normal policy, unless it is there.
    fn apply(&mut self, batch: bool) {
        if !self.allowed || batch == self.os_batch {
            return;
        }
        match set_batch(batch) {
            Ok(()) => self.os_batch = batch,
            Err(e) => {
                self.allowed = false;
                self.batch = self.os_batch;
                tracing::debug!(error = %e, "the group-commit thread keeps its scheduling policy");
            }
        }
    }
}

/// Sets the calling thread's policy to `SCHED_BATCH` (`true`) or `SCHED_OTHER`, at nice 0.
#[cfg(target_os = "linux")]
pub(crate) fn set_batch(batch: bool) -> std::result::Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let policy = if batch {
        NormalThreadSchedulePolicy::Batch
    } else {
        NormalThreadSchedulePolicy::Other
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(policy),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_batch(_batch: bool) -> std::result::Result<(), String> {
    Err("only on Linux".into())
}

/// The calling thread's scheduling policy (0: `SCHED_OTHER`) and nice value, from
/// `/proc/thread-self/stat` (its 41st and 19th fields).
pub(crate) fn policy_and_nice() -> Option<(i64, i64)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its last ')'.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let field = |n: usize| after.split_whitespace().nth(n - 3)?.parse().ok();
    Some((field(41)?, field(19)?))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
