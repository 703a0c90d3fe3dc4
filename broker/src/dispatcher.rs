//! Dispatch: a router per broker reads the durable log, finds the matching triggers through the
//! filter index and queues the event for each; a worker per trigger delivers with bounded
//! concurrency, schedules retries on a timer, dead-letters, routes replies, and checkpoints its
//! progress so a restart resumes exactly where it stopped.
//!
//! Progress of a trigger is `{taken_upto, inflight}`: every matching event below `taken_upto`
//! is complete except those listed in `inflight` (being attempted or waiting for a retry, with
//! their retry state). That record stays small (bounded by the in-flight limit) however far a
//! trigger lags behind.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evmesh_filter::FilterIndex;
use evmesh_store::{EventStore, LogId, Offset};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::delivery::{self, DeliveryEngine, Next, Outcome, Plan, Progress};
use crate::metrics::Counters;
use crate::record::EventRecord;
use crate::service::Publisher;

/// Above this many queued events, a trigger's queue keeps offsets only and reloads the events
/// from the log when it gets to them.
const QUEUE_KEEP_EVENTS: usize = 10_000;
const ROUTER_BATCH: usize = 512;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);

/// What the router hands to a trigger worker.
#[derive(Default)]
pub(crate) struct TriggerQueue {
    items: VecDeque<(Offset, Option<Arc<EventRecord>>)>,
}

/// State a trigger worker shares with the router, the service and the admin API.
pub(crate) struct TriggerShared {
    pub(crate) name: String,
    pub(crate) checkpoint_key: String,
    pub(crate) plan: Plan,
    pub(crate) queue: std::sync::Mutex<TriggerQueue>,
    pub(crate) notify: Notify,
    /// Offsets below this need nothing more from this trigger (published for retention).
    pub(crate) low_watermark: AtomicU64,
    /// Only offsets at or above this are routed to the trigger (where it started or resumed).
    pub(crate) start: Offset,
    pub(crate) counters: Counters,
}

impl TriggerShared {
    fn push(&self, offset: Offset, event: &Arc<EventRecord>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let keep = q.items.len() < QUEUE_KEEP_EVENTS;
        q.items.push_back((offset, keep.then(|| event.clone())));
    }
    fn pop(&self) -> Option<(Offset, Option<Arc<EventRecord>>)> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .pop_front()
    }
}

/// Persisted progress of one trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Checkpoint {
    pub(crate) taken_upto: Offset,
    pub(crate) inflight: Vec<InflightEntry>,
}

/// A pending delivery in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct InflightEntry {
    pub(crate) offset: Offset,
    pub(crate) progress: Progress,
    /// When the next attempt is due (Unix ms); `None` = at once.
    pub(crate) due_ms: Option<u64>,
}

/// Routes one broker's log to its triggers.
pub(crate) struct Router {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) log: LogId,
    pub(crate) index: FilterIndex<usize>,
    pub(crate) triggers: Vec<Arc<TriggerShared>>,
    pub(crate) notify: Arc<Notify>,
    /// Next offset to route (published for retention).
    pub(crate) next: Arc<AtomicU64>,
    pub(crate) counters: Counters,
}

impl Router {
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.triggers.is_empty() {
            // Nothing to route: the log is only kept (for retention and, later, replay).
            let _ = shutdown.changed().await;
            return;
        }
        let mut matched = Vec::new();
        loop {
            let notified = self.notify.notified();
            let mut progressed = false;
            let from = self.next.load(Ordering::Acquire);
            let store = self.store.clone();
            let log = self.log.clone();
            let batch =
                match tokio::task::spawn_blocking(move || store.read(&log, from, ROUTER_BATCH))
                    .await
                {
                    Ok(Ok(batch)) => batch,
                    Ok(Err(e)) => {
                        tracing::error!(log = self.log.as_str(), "reading log: {e}");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                };
            for record in &batch {
                match EventRecord::from_stored(&record.payload) {
                    Ok(event) => {
                        let event = Arc::new(event);
                        matched.clear();
                        self.index.matching(&event, &mut matched);
                        self.counters.routed(matched.len());
                        for &i in &matched {
                            let t = &self.triggers[i];
                            if record.offset >= t.start {
                                t.push(record.offset, &event);
                                t.notify.notify_one();
                            }
                        }
                    }
                    Err(e) => tracing::error!(
                        log = self.log.as_str(),
                        offset = record.offset,
                        "undecodable record skipped: {e}"
                    ),
                }
                self.next.store(record.offset + 1, Ordering::Release);
                progressed = true;
            }
            if batch.len() == ROUTER_BATCH {
                continue;
            }
            if !progressed {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

struct Slot {
    event: Option<Arc<EventRecord>>,
    progress: Progress,
    due: Option<(Instant, u64)>,
    running: bool,
}

type AttemptResult = (Offset, Option<Arc<EventRecord>>, Progress, AttemptEnd);

enum AttemptEnd {
    Next(Next),
    Gone(String),
}

/// Delivers one trigger's events.
pub(crate) struct Worker {
    pub(crate) shared: Arc<TriggerShared>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) log: LogId,
    pub(crate) engine: DeliveryEngine,
    pub(crate) publisher: Publisher,
    pub(crate) router_next: Arc<AtomicU64>,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
}

impl Worker {
    pub(crate) async fn run(self, restored: Checkpoint, mut shutdown: watch::Receiver<bool>) {
        let mut slots: BTreeMap<Offset, Slot> = BTreeMap::new();
        let mut taken_upto = restored.taken_upto;
        for e in restored.inflight {
            let due = e.due_ms.map(|ms| (instant_from_unix_ms(ms), ms));
            slots.insert(
                e.offset,
                Slot {
                    event: None,
                    progress: e.progress,
                    due,
                    running: false,
                },
            );
        }
        let mut attempts = FuturesUnordered::new();
        let mut dirty = true;
        let mut last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
        let mut stopping = false;
        let mut drain_at = None;
        let mut scan = true;
        loop {
            let now = Instant::now();
            // Start attempts that are due (restored, or whose retry wait is over).
            for (&offset, slot) in slots.iter_mut() {
                if !scan || stopping {
                    break;
                }
                if !slot.running && slot.due.is_none_or(|(d, _)| d <= now) {
                    slot.running = true;
                    slot.due = None;
                    attempts.push(self.attempt(offset, slot.event.clone(), slot.progress.clone()));
                }
            }
            scan = false;
            // Take new events while there is room.
            while !stopping && slots.len() < self.max_in_flight {
                let Some((offset, event)) = self.shared.pop() else {
                    break;
                };
                taken_upto = taken_upto.max(offset + 1);
                dirty = true;
                let progress = Progress::default();
                attempts.push(self.attempt(offset, event.clone(), progress.clone()));
                slots.insert(
                    offset,
                    Slot {
                        event,
                        progress,
                        due: None,
                        running: true,
                    },
                );
            }
            if stopping && attempts.is_empty() {
                break;
            }
            if dirty && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                // Read the router position first: everything below it that matched was queued.
                let routed = self.router_next.load(Ordering::Acquire);
                let queue_empty = self
                    .shared
                    .queue
                    .lock()
                    .map(|q| q.items.is_empty())
                    .unwrap_or(false);
                if queue_empty {
                    taken_upto = taken_upto.max(routed);
                }
                self.checkpoint(&slots, taken_upto);
                dirty = false;
                last_checkpoint = Instant::now();
            }
            let next_due = slots
                .values()
                .filter(|s| !s.running)
                .filter_map(|s| s.due.map(|(d, _)| d))
                .min();
            let sleep_until = match (dirty, next_due) {
                (true, Some(d)) => d.min(last_checkpoint + CHECKPOINT_EVERY),
                (true, None) => last_checkpoint + CHECKPOINT_EVERY,
                (false, Some(d)) => d,
                (false, None) => now + Duration::from_secs(3600),
            };
            let drain_deadline = drain_at.unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                Some((offset, event, progress, end)) = attempts.next(), if !attempts.is_empty() => {
                    dirty = true;
                    self.finish(&mut slots, offset, event, progress, end);
                }
                _ = tokio::time::sleep_until(sleep_until.into()) => { scan = true; }
                _ = self.shared.notify.notified(), if !stopping => {}
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    drain_at = Some(Instant::now() + self.drain_timeout);
                }
                _ = tokio::time::sleep_until(drain_deadline.into()), if stopping => {
                    tracing::warn!(trigger = %self.shared.name, "drain timeout: {} deliveries still in flight are resumed after restart", attempts.len());
                    break;
                }
            }
        }
        self.checkpoint(&slots, taken_upto);
    }

    fn checkpoint(&self, slots: &BTreeMap<Offset, Slot>, taken_upto: Offset) {
        let cp = Checkpoint {
            taken_upto,
            inflight: slots
                .iter()
                .map(|(&offset, s)| InflightEntry {
                    offset,
                    progress: s.progress.clone(),
                    due_ms: s.due.map(|(_, ms)| ms),
                })
                .collect(),
        };
        let low = slots
            .keys()
            .next()
            .copied()
            .unwrap_or(taken_upto)
            .min(taken_upto);
        self.shared.low_watermark.store(low, Ordering::Release);
        match serde_json::to_vec(&cp) {
            Ok(bytes) => {
                if let Err(e) = self
                    .store
                    .put_checkpoint(&self.shared.checkpoint_key, bytes)
                {
                    tracing::error!(trigger = %self.shared.name, "saving progress: {e}");
                }
            }
            Err(e) => tracing::error!(trigger = %self.shared.name, "encoding progress: {e}"),
        }
    }

    fn finish(
        &self,
        slots: &mut BTreeMap<Offset, Slot>,
        offset: Offset,
        event: Option<Arc<EventRecord>>,
        progress: Progress,
        end: AttemptEnd,
    ) {
        let Some(slot) = slots.get_mut(&offset) else {
            return;
        };
        slot.running = false;
        slot.progress = progress;
        if event.is_some() {
            slot.event = event;
        }
        let id = slot
            .event
            .as_deref()
            .map(delivery::describe)
            .unwrap_or_default();
        match end {
            AttemptEnd::Next(Next::Done { .. }) => {
                if slot.progress.phase == delivery::Phase::DeadLetter {
                    self.shared.counters.dead_lettered();
                    let dls = self.shared.plan.dead_letter.as_ref().map(delivery::redact);
                    self.shared.counters.log_dead_lettered(
                        &id,
                        slot.progress.last_failure.as_ref(),
                        dls.as_deref().unwrap_or(""),
                    );
                } else {
                    self.shared.counters.delivered();
                }
                slots.remove(&offset);
            }
            AttemptEnd::Next(Next::Retry(wait)) => {
                self.shared.counters.retried();
                let due_ms = unix_ms() + wait.as_millis() as u64;
                slot.due = Some((Instant::now() + wait, due_ms));
            }
            AttemptEnd::Next(Next::Dropped(f)) => {
                self.shared.counters.dropped();
                self.shared.counters.log_dropped(&id, &f);
                slots.remove(&offset);
            }
            AttemptEnd::Gone(reason) => {
                self.shared.counters.dropped();
                tracing::error!(trigger = %self.shared.name, offset, "event dropped: {reason}");
                slots.remove(&offset);
            }
        }
        let pending = slots.values().filter(|s| s.due.is_some()).count();
        self.shared.counters.pending_retries(pending);
    }

    fn attempt(
        &self,
        offset: Offset,
        event: Option<Arc<EventRecord>>,
        mut progress: Progress,
    ) -> impl std::future::Future<Output = AttemptResult> + Send + 'static {
        let store = self.store.clone();
        let log = self.log.clone();
        let engine = self.engine.clone();
        let shared = self.shared.clone();
        let publisher = self.publisher.clone();
        async move {
            let event = match event {
                Some(e) => e,
                None => match load(store, log, offset).await {
                    Ok(e) => e,
                    Err(reason) => return (offset, None, progress, AttemptEnd::Gone(reason)),
                },
            };
            let plan = &shared.plan;
            let mut outcome = engine.attempt(plan, &progress, &event).await;
            if let Outcome::Delivered { reply: Some(reply) } = outcome {
                // The reply must be stored before the delivery counts as done.
                outcome = match publisher.publish_reply(*reply, &event).await {
                    Ok(()) => Outcome::Delivered { reply: None },
                    Err(e) => Outcome::Failed(delivery::Failure {
                        dest: plan.subscriber.to_string(),
                        status: e.status,
                        body: Vec::new(),
                        retryable: e.retryable,
                        retry_after: None,
                        reason: e.reason,
                    }),
                };
            }
            if let Outcome::Failed(f) = &outcome {
                tracing::debug!(trigger = %shared.name, offset, status = ?f.status, "attempt failed: {}", f.reason);
            }
            let next = progress.next(plan, outcome);
            (offset, Some(event), progress, AttemptEnd::Next(next))
        }
    }
}

async fn load(
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn instant_from_unix_ms(ms: u64) -> Instant {
    let now = unix_ms();
    Instant::now() + Duration::from_millis(ms.saturating_sub(now))
}
