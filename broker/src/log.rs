//! The log seam. Append side: a broker or channel appends its events to a log and answers 202
//! once the append resolved (durable). Read side: a delivery run reads the events it delivers
//! through a [`Cursor`] opened from a [`ConsumerGroup`], and tells the cursor what is still
//! pending; the run itself owns retries, ordering lanes and attempts.
//!
//! The embedded store is the built-in log: its routes are fed by a router that fans one read out
//! to every trigger (`EmbeddedGroup`: the router's queue, catch-up reads of the store and a
//! checkpoint blob). A log elsewhere (a JetStream stream, a Kafka topic) implements [`Log`]: each
//! route opens its own consumer group there and its cursor hands the run every record (a run of
//! a trigger filters them itself). A [`LogProvider`] registered with the service opens such logs
//! for the channel kinds or broker classes it serves.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use evmesh_config::ReplayFrom;
use evmesh_store::{EventStore, LogId, Offset};

use crate::delivery::Progress;
use crate::dispatcher::{Checkpoint, InflightEntry, Popped, TriggerShared};
use crate::record::EventRecord;

/// A boxed future, so that the seam's traits stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The position of a record: partition and offset (the embedded log has one partition, 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

impl Pos {
    /// A position in the embedded log's only partition.
    pub fn embedded(offset: u64) -> Pos {
        Pos {
            partition: 0,
            offset,
        }
    }
}

/// A delivery that has not finished, as a run hands it to [`Cursor::save`].
#[derive(Debug)]
pub struct Pending<'a> {
    /// Where the event is.
    pub pos: Pos,
    /// Its retry state.
    pub progress: &'a Progress,
    /// When its next attempt is due (Unix ms); `None` = at once or running.
    pub due_ms: Option<u64>,
}

/// A pending delivery restored from a log's saved state, to be resumed first.
#[derive(Debug)]
pub struct Restored {
    /// Where the event is.
    pub pos: Pos,
    /// Its retry state.
    pub progress: Progress,
    /// When its next attempt is due (Unix ms).
    pub due_ms: Option<u64>,
}

/// One run's view of a log: the records it has to deliver, in log order per partition, and where
/// it stands. Only the run that opened it uses it.
pub trait Cursor: Send {
    /// Pending deliveries saved by an earlier run (with their retry state); taken once.
    fn restored(&mut self) -> Vec<Restored>;
    /// The next record to deliver, or `None` when none is available now (then the run waits for
    /// [`wakeup`](Cursor::wakeup) or [`wake_at`](Cursor::wake_at)). The event may be left out
    /// (`None`) when the cursor did not keep it in memory; the run then [`load`](Cursor::load)s it.
    fn next(&mut self) -> BoxFuture<'_, Option<(Pos, Option<Arc<EventRecord>>)>>;
    /// When [`next`](Cursor::next) should be called again even without a wakeup.
    fn wake_at(&self) -> Option<Instant>;
    /// Resolves when new records may be available.
    fn wakeup(&self) -> BoxFuture<'static, ()>;
    /// Reads the event at `pos`.
    fn load(&self, pos: Pos) -> BoxFuture<'static, Result<Arc<EventRecord>, String>>;
    /// Saves where the run stands: every record handed out by `next` is done except `pending`.
    /// A log with durable local state keeps the retry state of parked deliveries (see
    /// [`park`](Cursor::park)) and saves a position that only the others hold back; others keep
    /// the position.
    fn save(&mut self, pending: &[Pending<'_>]);
    /// A delivery failed and will be retried: a log with durable local state parks it (writes
    /// its retry state under its own key, durable with the next group commit), so it no longer
    /// holds the saved position back and resumes with its attempt count after a restart. Called
    /// again at each failure; a log without such state keeps retry state in memory (the default
    /// does nothing).
    fn park(&mut self, pos: Pos, progress: &Progress, due_ms: Option<u64>) {
        let _ = (pos, progress, due_ms);
    }
    /// The delivery at `pos` is finished (delivered, dead-lettered or dropped): its parked
    /// state, if any, is deleted.
    fn unpark(&mut self, pos: Pos) {
        let _ = pos;
    }
    /// Repositions the run at `to` (a replay). `tag` is remembered as applied (see
    /// [`applied_tag`](Cursor::applied_tag)). Resolves with the position it resumes from.
    fn seek(&mut self, to: ReplayFrom, tag: Option<String>) -> BoxFuture<'_, Result<Pos, String>>;
    /// The tag of the last applied [`seek`](Cursor::seek) (the `evmesh.dev/replay-from` value).
    fn applied_tag(&self) -> Option<&str>;
    /// Where the run stands: the first position not yet handed out.
    fn position(&self) -> Pos;
    /// Whether the log has moved past the run's saved position without handing it anything (the
    /// records there were not for it): a [`save`](Cursor::save) with nothing pending would then
    /// move the position, so retention is not held back by an idle run.
    fn passed_by(&self) -> bool {
        false
    }
    /// Whether [`next`](Cursor::next) has handed out everything the cursor knows of (nothing
    /// read ahead, no catch-up read left): a run with nothing pending is then idle. A cursor
    /// that cannot tell answers `false` (such a run never counts as idle).
    fn caught_up(&self) -> bool {
        false
    }
    /// Records passed over since the last call because they are not events (a Kafka record
    /// that is no CloudEvent, discarded as Knative's Kafka dispatcher discards it); the run
    /// counts them. A log that never passes a record over answers 0.
    fn take_discarded(&mut self) -> u64 {
        0
    }
    /// Whether an ordered run orders per partition of this log (one delivery in flight per
    /// partition, as Knative's Kafka dispatcher orders) rather than per `partitionkey`.
    fn orders_by_partition(&self) -> bool {
        false
    }
    /// Called once when the run ends, after its last [`save`](Cursor::save): resolves once what
    /// that save reported has reached the log (e.g. JetStream acks sent and flushed).
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A consumer group on a log: opens the cursor of a run; opened again after the run failed, it
/// resumes from the saved state.
pub trait ConsumerGroup: Send + Sync {
    /// Opens a cursor for a run.
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Cursor>, String>>;
}

/// Why a log could not append or open a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

impl LogError {
    /// A log error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        LogError(message.into())
    }
}

/// What a route asks of its consumer group on a [`Log`].
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// `trigger` or `subscription`.
    pub route_kind: &'static str,
    /// The route's namespace.
    pub namespace: String,
    /// The route's name. The log names the group after the route (not its uid): every process
    /// running the same configuration opens the same group and shares its records.
    pub name: String,
    /// Records a run holds at once (in flight and waiting for a retry): the most the log hands
    /// out before the run reports some done.
    pub max_in_flight: usize,
    /// When the route was created (unix milliseconds; its `creationTimestamp`, whole seconds). A
    /// group that does not exist yet starts with the first record the log received at or after
    /// this time, where the log keeps record times, so that events accepted between the route's
    /// creation and the start of its run (a subscriber not resolvable yet, a stream opened
    /// again) reach it. `None`: at the log's end.
    pub created_ms: Option<u64>,
}

/// A log that lives outside the embedded store (a JetStream stream, a Kafka topic).
///
/// The contract: [`append`](Log::append) resolves only once the log holds the event durably (the
/// 202 depends on it). A [`ConsumerGroup`] opened for a route hands each record to one of the
/// runs that opened the same group (in any process), until a run reports it done through
/// [`Cursor::save`] (success, dead letter or counted drop); a record handed to a run that died
/// before reporting it done is handed out again (at-least-once).
pub trait Log: Send + Sync {
    /// Appends one event as received (the log's codec decides its encoding); resolves with its
    /// position once it is durable.
    fn append<'a>(&'a self, event: &'a EventRecord) -> BoxFuture<'a, Result<Pos, LogError>>;
    /// Opens (creating it when new) the consumer group of one route. A new group starts with
    /// the first record appended since the route's creation ([`GroupSpec::created_ms`]; at the
    /// log's end when that is unknown), and that start is saved before this resolves.
    fn open_group(
        &self,
        spec: GroupSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn ConsumerGroup>, LogError>>;
    /// Deletes a route's consumer group (the route was deleted).
    fn delete_group<'a>(&'a self, spec: &'a GroupSpec) -> BoxFuture<'a, Result<(), LogError>>;
}

/// The broker or channel a [`LogProvider`] is asked to open the log of.
#[derive(Clone, Debug)]
pub struct LogTarget {
    /// `broker` or `channel`.
    pub resource: &'static str,
    /// The channel's kind (`NatsJetStreamChannel`) or the broker's class (`Kafka`).
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The kind's own spec as written (e.g. a NatsJetStreamChannel's `stream`); `Null` if none.
    pub spec: serde_json::Value,
}

/// Opens the logs of the channel kinds or broker classes that do not live in the embedded
/// store. Registered once with [`BrokerService::register_log_provider`](crate::BrokerService::register_log_provider).
pub trait LogProvider: Send + Sync {
    /// Whether this provider runs `target`'s kind.
    fn serves(&self, target: &LogTarget) -> bool;
    /// Opens (creating it when new) the log of `target`.
    fn open_log<'a>(
        &'a self,
        target: &'a LogTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Log>, LogError>>;
}

/// Records read per batch from the embedded store.
const READ_BATCH: usize = 512;
/// How long a catch-up read that failed waits before it is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);
/// Log batches a catch-up reads before the run's loop takes a turn.
const CATCH_UP_READS_PER_TURN: usize = 8;
/// Bytes of a failed response body kept in a checkpoint: what `knativeerrordata` needs.
const MAX_KEPT_BODY: usize = 1024;

/// The store key prefix of a route's parked deliveries: `p/<checkpoint key>/`.
pub(crate) fn park_prefix(route_key: &str) -> String {
    format!("p/{route_key}/")
}

/// The store key of a route's parked delivery at `offset` (zero-padded, so keys sort by
/// offset).
fn park_key(route_key: &str, offset: Offset) -> String {
    format!("p/{route_key}/{offset:020}")
}

/// A route's parked deliveries, in offset order (blocking). Keys of another route under the
/// same prefix (a longer key) are left out.
pub(crate) fn read_parked(
    store: &dyn EventStore,
    route_key: &str,
) -> Result<Vec<InflightEntry>, String> {
    let prefix = park_prefix(route_key);
    let found = store
        .checkpoints(&prefix)
        .map_err(|e| format!("could not read its parked retries: {e}"))?;
    let mut out = Vec::new();
    for (key, value) in found {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let entry: InflightEntry = serde_json::from_slice(&value)
            .map_err(|e| format!("its parked retry {key} is unreadable: {e}"))?;
        out.push(entry);
    }
    Ok(out)
}

/// Reads a route's parked deliveries into `checkpoint.inflight` (blocking). Entries of a
/// checkpoint written before parked retries (its `inflight` list) are parked now, so they
/// keep their retry state once the checkpoint is saved without them.
pub(crate) fn restore_parked(
    store: &dyn EventStore,
    route_key: &str,
    checkpoint: &mut Checkpoint,
) -> Result<(), String> {
    let mut all: std::collections::BTreeMap<Offset, InflightEntry> = read_parked(store, route_key)?
        .into_iter()
        .map(|e| (e.offset, e))
        .collect();
    for e in std::mem::take(&mut checkpoint.inflight) {
        if all.contains_key(&e.offset) {
            // Parked after that checkpoint was written: the parked state is newer.
            continue;
        }
        let bytes = serde_json::to_vec(&e).map_err(|e| e.to_string())?;
        store
            .put_checkpoint(&park_key(route_key, e.offset), bytes)
            .map_err(|e| format!("could not park its pending retries: {e}"))?;
        all.insert(e.offset, e);
    }
    checkpoint.inflight = all.into_values().collect();
    Ok(())
}

/// Deletes a route's saved progress: its checkpoint and its parked deliveries (blocking).
pub(crate) fn delete_progress(
    store: &dyn EventStore,
    route_key: &str,
) -> Result<(), evmesh_store::StoreError> {
    delete_parked(store, route_key)?;
    store.delete_checkpoint(route_key)
}

/// Deletes a route's parked deliveries (blocking).
fn delete_parked(store: &dyn EventStore, route_key: &str) -> Result<(), evmesh_store::StoreError> {
    let prefix = park_prefix(route_key);
    for (key, _) in store.checkpoints(&prefix)? {
        let own = key
            .strip_prefix(&prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        if own {
            store.delete_checkpoint(&key)?;
        }
    }
    Ok(())
}

/// A trigger's or subscription's membership in an embedded broker's or channel's log: the
/// router feeds its queue, and its progress is a checkpoint blob in the store.
pub(crate) struct EmbeddedGroup {
    pub(crate) shared: Arc<TriggerShared>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) log: LogId,
    pub(crate) router_next: Arc<AtomicU64>,
    /// The checkpoint read when the route started; the first run resumes from it (reading the
    /// router's queue), later runs from the saved one (reading the log themselves).
    pub(crate) restored: Mutex<Option<Checkpoint>>,
}

impl ConsumerGroup for EmbeddedGroup {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Cursor>, String>> {
        Box::pin(async move {
            let first = self
                .restored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let (checkpoint, catch_up) = match first {
                Some(cp) => (cp, false),
                None => (self.reload_checkpoint().await?, true),
            };
            let at = checkpoint.taken_upto;
            // Restored deliveries are parked; those at or after the position are not handed
            // out again when the run reads past them.
            let parked: std::collections::BTreeSet<Offset> =
                checkpoint.inflight.iter().map(|e| e.offset).collect();
            let skip = parked.range(at..).copied().collect();
            Ok(Box::new(EmbeddedCursor {
                shared: self.shared.clone(),
                store: self.store.clone(),
                log: self.log.clone(),
                router_next: self.router_next.clone(),
                taken_upto: at,
                skip_below: at,
                catch_up: catch_up.then_some(at),
                backlog: VecDeque::new(),
                catch_up_wait: None,
                replay_applied: checkpoint.replay_applied,
                restored: checkpoint.inflight,
                parked,
                skip,
                last_saved: None,
            }) as Box<dyn Cursor>)
        })
    }
}

impl EmbeddedGroup {
    async fn reload_checkpoint(&self) -> Result<Checkpoint, String> {
        let store = self.store.clone();
        let key = self.shared.checkpoint_key.clone();
        let saved = tokio::task::spawn_blocking(move || store.checkpoints(&key))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not read its checkpoint: {e}"))?;
        let mut checkpoint = match saved
            .into_iter()
            .find(|(k, _)| *k == self.shared.checkpoint_key)
        {
            Some((_, bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("its checkpoint is unreadable: {e}"))?,
            // It failed before its first checkpoint: it starts where it started before.
            None => Checkpoint {
                taken_upto: self.shared.start,
                ..Checkpoint::default()
            },
        };
        let store = self.store.clone();
        let key = self.shared.checkpoint_key.clone();
        tokio::task::spawn_blocking(move || {
            restore_parked(store.as_ref(), &key, &mut checkpoint).map(|()| checkpoint)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// The cursor of a run on the embedded log: events from the router's queue, or read from the
/// store itself ("catch-up": after a replay, and after the run was restarted).
///
/// Progress is a watermark (`taken_upto` in the checkpoint): every matching event below it is
/// complete or parked. A delivery that will be retried is parked: its retry state is written
/// under its own key (`p/<checkpoint key>/<offset>`) at each failure and deleted when it
/// finishes, so it does not hold the watermark back; a successful delivery writes nothing but,
/// at most every few ms, a changed watermark. Retention still keeps every parked event (the
/// route's low watermark is its oldest pending offset).
struct EmbeddedCursor {
    shared: Arc<TriggerShared>,
    store: Arc<dyn EventStore>,
    log: LogId,
    router_next: Arc<AtomicU64>,
    taken_upto: Offset,
    /// Queue entries below this were already read by catch-up.
    skip_below: Offset,
    /// Reading the log itself from this offset.
    catch_up: Option<Offset>,
    /// Matching events read by catch-up, not taken yet.
    backlog: VecDeque<(Offset, Arc<EventRecord>)>,
    catch_up_wait: Option<Instant>,
    replay_applied: Option<String>,
    restored: Vec<InflightEntry>,
    /// Offsets of the parked deliveries (those with a park key).
    parked: std::collections::BTreeSet<Offset>,
    /// Restored deliveries at or after where the run resumed reading: passed over when read.
    skip: std::collections::BTreeSet<Offset>,
    /// The checkpoint last written (an unchanged one is not written again).
    last_saved: Option<Checkpoint>,
}

impl EmbeddedCursor {
    /// Reads one batch from `from` and keeps what matches the route's filter. Returns the
    /// matches, the offset after the batch and whether the batch reached the log's end.
    async fn read_matching(
        &self,
        from: Offset,
    ) -> Result<(Vec<(Offset, Arc<EventRecord>)>, Offset, bool), String> {
        let store = self.store.clone();
        let log = self.log.clone();
        let filter = self.shared.filter();
        // Read, decode and filter on a blocking thread: the route's own task only hands out
        // what matched (a catch-up of many events does not tie it up decoding).
        let (matched, next, at_end, bad) = tokio::task::spawn_blocking(move || {
            let batch = store.read(&log, from, READ_BATCH)?;
            let at_end = batch.len() < READ_BATCH;
            let mut next = from;
            let mut matched = Vec::new();
            for record in batch {
                match EventRecord::from_stored(&record.payload) {
                    Ok(event) => {
                        next = record.offset + 1;
                        if event.passes(&filter) {
                            matched.push((record.offset, Arc::new(event)));
                        }
                    }
                    // Never skipped: the read ends at the bad record.
                    Err(e) => return Ok((matched, record.offset, false, Some(e.to_string()))),
                }
            }
            Ok::<_, evmesh_store::StoreError>((matched, next, at_end, None))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if let Some(e) = bad {
            // The catch-up stops at the bad record and retries; the route says why.
            let reason = format!(
                "record {next} of log {} cannot be read ({e}); delivery stops there rather than skip it",
                self.log.as_str()
            );
            self.shared.set_not_ready("log", Some(reason.clone()));
            if matched.is_empty() {
                return Err(reason);
            }
            // Deliver what matched before it; the next read starts at the bad record.
            return Ok((matched, next, false));
        }
        Ok((matched, next, at_end))
    }

    async fn next_event(&mut self) -> Option<(Pos, Option<Arc<EventRecord>>)> {
        let mut reads = 0;
        loop {
            if let Some((offset, event)) = self.backlog.pop_front() {
                self.taken_upto = self.taken_upto.max(offset + 1);
                if self.skip.remove(&offset) {
                    continue;
                }
                return Some((Pos::embedded(offset), Some(event)));
            }
            if let Some(cursor) = self.catch_up {
                if self.catch_up_wait.is_some_and(|w| w > Instant::now()) {
                    return None;
                }
                self.catch_up_wait = None;
                if reads == CATCH_UP_READS_PER_TURN {
                    // Let the run's loop handle completions and checkpoints, then go on at once.
                    self.catch_up_wait = Some(Instant::now());
                    return None;
                }
                reads += 1;
                match self.read_matching(cursor).await {
                    Ok((matched, next, at_end)) => {
                        self.shared.set_not_ready("log", None);
                        if matched.is_empty() {
                            self.taken_upto = self.taken_upto.max(next);
                        }
                        self.shared
                            .count_own_routed(matched.iter().map(|(offset, _)| *offset));
                        self.backlog.extend(matched);
                        if at_end && self.shared.rejoin(next) {
                            // Everything from `next` on is (or will be) queued by the router.
                            self.catch_up = None;
                            self.skip_below = next;
                        } else {
                            self.catch_up = Some(next);
                        }
                    }
                    Err(e) => {
                        tracing::error!(route = %self.shared.name, offset = cursor, "reading the log: {e}");
                        self.catch_up_wait = Some(Instant::now() + CATCH_UP_RETRY);
                        return None;
                    }
                }
                continue;
            }
            match self.shared.pop() {
                Popped::Event(offset, event) => {
                    if offset >= self.skip_below {
                        self.taken_upto = self.taken_upto.max(offset + 1);
                        if self.skip.remove(&offset) {
                            continue;
                        }
                        return Some((Pos::embedded(offset), Some(event)));
                    }
                }
                // The router left this route out (its queue held its budget, or the route
                // joined behind the router): read the log from there, without queueing.
                Popped::Gap(from) => self.catch_up = Some(from.max(self.skip_below)),
                Popped::Empty => return None,
            }
        }
    }
}

impl Cursor for EmbeddedCursor {
    fn restored(&mut self) -> Vec<Restored> {
        std::mem::take(&mut self.restored)
            .into_iter()
            .map(|e| Restored {
                pos: Pos::embedded(e.offset),
                progress: e.progress,
                due_ms: e.due_ms,
            })
            .collect()
    }

    fn next(&mut self) -> BoxFuture<'_, Option<(Pos, Option<Arc<EventRecord>>)>> {
        Box::pin(self.next_event())
    }

    fn wake_at(&self) -> Option<Instant> {
        self.catch_up_wait
    }

    fn wakeup(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.notify.notified().await })
    }

    fn load(&self, pos: Pos) -> BoxFuture<'static, Result<Arc<EventRecord>, String>> {
        Box::pin(load(self.store.clone(), self.log.clone(), pos.offset))
    }

    fn save(&mut self, pending: &[Pending<'_>]) {
        if self.catch_up.is_none() && self.backlog.is_empty() {
            // Attached first, then the router position: once the router has this route in its
            // table, everything below that position that matched was queued.
            let attached = self.shared.is_attached();
            let routed = self.router_next.load(Ordering::Acquire);
            let queue_empty = self
                .shared
                .queue
                .lock()
                .map(|q| q.is_empty())
                .unwrap_or(false);
            if queue_empty && attached {
                self.taken_upto = self.taken_upto.max(routed);
            }
        }
        // Parked deliveries do not hold the watermark back; the others (being attempted for the
        // first time, or waiting in their ordering lane) do.
        let watermark = pending
            .iter()
            .map(|p| p.pos.offset)
            .filter(|o| !self.parked.contains(o))
            .min()
            .unwrap_or(self.taken_upto)
            .min(self.taken_upto);
        let cp = Checkpoint {
            taken_upto: watermark,
            inflight: Vec::new(),
            replay_applied: self.replay_applied.clone(),
        };
        // Retention keeps every pending event, parked ones included.
        let low = pending
            .iter()
            .map(|p| p.pos.offset)
            .min()
            .unwrap_or(self.taken_upto)
            .min(self.taken_upto);
        self.shared.low_watermark.store(low, Ordering::Release);
        if self.last_saved.as_ref() == Some(&cp) {
            return;
        }
        match serde_json::to_vec(&cp) {
            Ok(bytes) => {
                if let Err(e) = self
                    .store
                    .put_checkpoint(&self.shared.checkpoint_key, bytes)
                {
                    tracing::error!(route = %self.shared.name, "saving progress: {e}");
                } else {
                    self.last_saved = Some(cp);
                }
            }
            Err(e) => tracing::error!(route = %self.shared.name, "encoding progress: {e}"),
        }
    }

    fn park(&mut self, pos: Pos, progress: &Progress, due_ms: Option<u64>) {
        let mut progress = progress.clone();
        if let Some(f) = progress.last_failure.as_mut() {
            f.body.truncate(MAX_KEPT_BODY);
        }
        let entry = InflightEntry {
            offset: pos.offset,
            progress,
            due_ms,
        };
        let key = park_key(&self.shared.checkpoint_key, pos.offset);
        match serde_json::to_vec(&entry) {
            // Not parked unless written: until then it holds the watermark back.
            Ok(bytes) => match self.store.put_checkpoint(&key, bytes) {
                Ok(()) => {
                    self.parked.insert(pos.offset);
                }
                Err(e) => tracing::error!(route = %self.shared.name, "parking a retry: {e}"),
            },
            Err(e) => tracing::error!(route = %self.shared.name, "encoding a retry: {e}"),
        }
    }

    fn unpark(&mut self, pos: Pos) {
        if self.parked.remove(&pos.offset)
            && let Err(e) = self
                .store
                .delete_checkpoint(&park_key(&self.shared.checkpoint_key, pos.offset))
        {
            tracing::error!(route = %self.shared.name, "deleting a parked retry: {e}");
        }
    }

    fn seek(&mut self, to: ReplayFrom, tag: Option<String>) -> BoxFuture<'_, Result<Pos, String>> {
        Box::pin(async move {
            let store = self.store.clone();
            let log = self.log.clone();
            let at =
                tokio::task::spawn_blocking(move || crate::replay::seek(store.as_ref(), &log, to))
                    .await
                    .map_err(|e| e.to_string())??;
            // Pending deliveries are dropped: their parked state too.
            let store = self.store.clone();
            let key = self.shared.checkpoint_key.clone();
            tokio::task::spawn_blocking(move || delete_parked(store.as_ref(), &key))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("dropping its parked retries: {e}"))?;
            self.parked.clear();
            self.skip.clear();
            self.restored.clear();
            self.taken_upto = at;
            self.skip_below = at;
            self.catch_up = Some(at);
            self.backlog.clear();
            self.catch_up_wait = None;
            if tag.is_some() {
                self.replay_applied = tag;
            }
            // Nothing is pending at the new position: saved at once.
            self.save(&[]);
            Ok(Pos::embedded(at))
        })
    }

    fn applied_tag(&self) -> Option<&str> {
        self.replay_applied.as_deref()
    }

    fn passed_by(&self) -> bool {
        self.catch_up.is_none()
            && self.backlog.is_empty()
            && self.shared.is_attached()
            && self.router_next.load(Ordering::Acquire) > self.taken_upto
            && self
                .shared
                .queue
                .lock()
                .map(|q| q.is_empty())
                .unwrap_or(false)
    }

    fn position(&self) -> Pos {
        Pos::embedded(self.taken_upto)
    }

    fn caught_up(&self) -> bool {
        self.catch_up.is_none() && self.backlog.is_empty()
    }
}

/// Reads one event of the embedded log.
pub(crate) async fn load(
    store: Arc<dyn EventStore>,
    log: LogId,
    offset: Offset,
) -> Result<Arc<EventRecord>, String> {
    let records = tokio::task::spawn_blocking(move || store.read(&log, offset, 1))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match records.into_iter().next() {
        Some(r) if r.offset == offset => EventRecord::from_stored(&r.payload)
            .map(Arc::new)
            .map_err(|e| format!("stored event at offset {offset} is undecodable: {e}")),
        _ => Err(format!(
            "event at offset {offset} is no longer in the log (retention)"
        )),
    }
}
