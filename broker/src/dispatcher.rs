//! Dispatch: a router per broker reads the durable log, finds the matching triggers through the
//! filter index and queues the event for each; a worker per trigger delivers with bounded
//! concurrency (per partition key in order, when the trigger asks for ordered delivery),
//! schedules retries on a timer, dead-letters, routes replies, and checkpoints its progress so a
//! restart resumes exactly where it stopped. A worker can also read the log itself ("catch-up"):
//! after a replay, and after it was restarted following a panic.
//!
//! Progress of a trigger is `{taken_upto, inflight}`: every matching event below `taken_upto`
//! is complete except those listed in `inflight` (being attempted, waiting for a retry, or in
//! ordered mode waiting for an earlier event of its key, with their retry state). That record
//! stays small (bounded by the in-flight limit) however far a trigger lags behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudevents::Event;
use evmesh_config::{DeliveryOrder, ReplayFrom};
use evmesh_filter::{Filter, FilterIndex};
use evmesh_store::{EventStore, LogId, Offset};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::delivery::{self, DeliveryEngine, Next, Outcome, Plan, Progress};
use crate::metrics::Counters;
use crate::record::EventRecord;
use crate::service::Publisher;

/// Above this many queued events, a trigger's queue keeps offsets only and reloads the events
/// from the log when it gets to them.
const QUEUE_KEEP_EVENTS: usize = 10_000;
const ROUTER_BATCH: usize = 512;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);
/// Bytes of a failed response body kept in a checkpoint: what `knativeerrordata` needs.
const MAX_KEPT_BODY: usize = 1024;
/// How long a catch-up read that failed waits before it is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);
/// Log batches a catch-up reads before the worker's loop takes a turn.
const CATCH_UP_READS_PER_TURN: usize = 8;
/// The CloudEvents extension that orders deliveries of an ordered trigger.
pub(crate) const PARTITION_KEY: &str = "partitionkey";

/// What the router hands to a trigger worker.
#[derive(Default)]
pub(crate) struct TriggerQueue {
    items: VecDeque<(Offset, Option<Arc<EventRecord>>)>,
}

/// A request to a running trigger worker.
pub(crate) enum Command {
    /// Position the trigger at `from` and re-deliver from there; answers with the new offset.
    /// With `annotation`, a value the trigger already applied is not applied again (what a
    /// live change of the `evmesh.dev/replay-from` annotation should send).
    Replay {
        from: ReplayFrom,
        /// The `evmesh.dev/replay-from` text this replay applies (remembered in the checkpoint).
        annotation: Option<String>,
        done: oneshot::Sender<Result<Offset, String>>,
    },
}

/// State a trigger worker shares with the router, the service and the admin API.
pub(crate) struct TriggerShared {
    pub(crate) name: String,
    pub(crate) checkpoint_key: String,
    /// Where and how it delivers; swapped in place when the trigger changes.
    plan: RwLock<Arc<Plan>>,
    /// Its filter (the router builds its index from it; catch-up reading uses it); swapped in
    /// place when the trigger changes.
    filter: RwLock<Filter>,
    pub(crate) order: DeliveryOrder,
    /// Set by the router once the trigger is in its table (and caught up): only then does
    /// "the router passed offset N" mean "every match below N is in this trigger's queue".
    attached: AtomicBool,
    pub(crate) queue: std::sync::Mutex<TriggerQueue>,
    pub(crate) notify: Notify,
    /// Offsets below this need nothing more from this trigger (published for retention).
    pub(crate) low_watermark: AtomicU64,
    /// Only offsets at or above this are routed to the trigger (where it started or resumed).
    pub(crate) start: Offset,
    pub(crate) counters: Counters,
    /// Requests to the worker (replay).
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// Why the trigger is not ready now, by the task that says so (`worker`, `router`).
    not_ready: std::sync::Mutex<BTreeMap<&'static str, String>>,
    /// Fault injection: the worker panics this many more times (at its next turn where all its
    /// progress is saved, then at each restart).
    #[cfg(feature = "fault-injection")]
    pub(crate) panics_left: std::sync::atomic::AtomicU32,
}

impl TriggerShared {
    /// A trigger's shared state and the receiving end of its commands.
    pub(crate) fn new(
        name: String,
        checkpoint_key: String,
        plan: Plan,
        filter: Filter,
        order: DeliveryOrder,
        start: Offset,
        counters: Counters,
    ) -> (Arc<TriggerShared>, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(TriggerShared {
            name,
            checkpoint_key,
            plan: RwLock::new(Arc::new(plan)),
            filter: RwLock::new(filter),
            order,
            attached: AtomicBool::new(false),
            queue: std::sync::Mutex::new(TriggerQueue::default()),
            notify: Notify::new(),
            low_watermark: AtomicU64::new(start),
            start,
            counters,
            commands,
            not_ready: std::sync::Mutex::new(BTreeMap::new()),
            #[cfg(feature = "fault-injection")]
            panics_left: std::sync::atomic::AtomicU32::new(0),
        });
        (shared, rx)
    }

    /// The current delivery plan.
    pub(crate) fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn set_plan(&self, plan: Plan) {
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(plan);
    }
    pub(crate) fn filter(&self) -> Filter {
        self.filter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub(crate) fn set_filter(&self, filter: Filter) {
        *self.filter.write().unwrap_or_else(|e| e.into_inner()) = filter;
    }

    /// Fault injection: panics when a panic was asked for.
    #[cfg(feature = "fault-injection")]
    fn injected_panic(&self) {
        if self
            .panics_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("fault injection: worker of {} panics", self.name);
        }
    }

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

    /// Marks the trigger not ready for `source`'s reason, or ready again for `source` (`None`).
    pub(crate) fn set_not_ready(&self, source: &'static str, reason: Option<String>) {
        let mut m = self.not_ready.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(r) => m.insert(source, r),
            None => m.remove(source),
        };
    }

    /// Why the trigger is not ready now (`None` when it is).
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        let m = self.not_ready.lock().unwrap_or_else(|e| e.into_inner());
        (!m.is_empty()).then(|| m.values().cloned().collect::<Vec<_>>().join("; "))
    }
}

/// The triggers one broker's router feeds. The reconciler edits the member list; the router
/// rebuilds its filter index from it at most every [`ROUTES_DEBOUNCE`] (so applying thousands of
/// triggers is not quadratic) and catches a new member up on what it routed in between.
#[derive(Default)]
pub(crate) struct Routes {
    members: std::sync::Mutex<Vec<Arc<TriggerShared>>>,
    dirty: AtomicBool,
}

/// How often at most a router rebuilds its filter index after trigger changes.
const ROUTES_DEBOUNCE: Duration = Duration::from_millis(20);

impl Routes {
    pub(crate) fn insert(&self, t: Arc<TriggerShared>) {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
        self.changed();
    }
    pub(crate) fn remove(&self, t: &Arc<TriggerShared>) {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|m| !Arc::ptr_eq(m, t));
        self.changed();
    }
    /// A member's filter changed.
    pub(crate) fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }
    pub(crate) fn snapshot(&self) -> Vec<Arc<TriggerShared>> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The lowest offset some member still needs; `None` without members.
    pub(crate) fn low_watermark(&self) -> Option<Offset> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| t.low_watermark.load(Ordering::Acquire))
            .min()
    }
}

/// Persisted progress of one trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Checkpoint {
    pub(crate) taken_upto: Offset,
    pub(crate) inflight: Vec<InflightEntry>,
    /// The `evmesh.dev/replay-from` value last applied to this trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replay_applied: Option<String>,
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
    pub(crate) routes: Arc<Routes>,
    pub(crate) notify: Arc<Notify>,
    /// Next offset to route (published for retention).
    pub(crate) next: Arc<AtomicU64>,
    pub(crate) counters: Counters,
}

/// The router's view of its triggers: the index over their filters.
struct Table {
    triggers: Vec<Arc<TriggerShared>>,
    index: FilterIndex<usize>,
}

impl Table {
    fn build(triggers: Vec<Arc<TriggerShared>>) -> Table {
        let filters = triggers
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.filter()))
            .collect();
        Table {
            index: FilterIndex::new(filters),
            triggers,
        }
    }
}

impl Router {
    async fn read(&self, from: Offset, max: usize) -> Vec<evmesh_store::Record> {
        let store = self.store.clone();
        let log = self.log.clone();
        match tokio::task::spawn_blocking(move || store.read(&log, from, max)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(log = self.log.as_str(), "reading log: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Swaps in the current members; a member new to the table is caught up on the offsets
    /// routed since its start (it was created while the old table was in use).
    async fn refresh(&self, table: &mut Table) {
        self.routes.dirty.store(false, Ordering::Release);
        let members = self.routes.snapshot();
        let next = self.next.load(Ordering::Acquire);
        // Members by address (a `usize`, so the set may live across the awaits below).
        let known: std::collections::HashSet<usize> = table
            .triggers
            .iter()
            .map(|t| Arc::as_ptr(t) as usize)
            .collect();
        let fresh: Vec<Arc<TriggerShared>> = members
            .iter()
            .filter(|m| !known.contains(&(Arc::as_ptr(m) as usize)))
            .filter(|m| m.start < next)
            .cloned()
            .collect();
        if let Some(from) = fresh.iter().map(|t| t.start).min() {
            let filters: Vec<Filter> = fresh.iter().map(|t| t.filter()).collect();
            let mut at = from;
            while at < next {
                let batch = self.read(at, ROUTER_BATCH).await;
                if batch.is_empty() {
                    break;
                }
                for record in batch.iter().take_while(|r| r.offset < next) {
                    if let Ok(event) = EventRecord::from_stored(&record.payload) {
                        let event = Arc::new(event);
                        for (t, f) in fresh.iter().zip(&filters) {
                            if record.offset >= t.start && f.matches(&event) {
                                self.counters.routed(1);
                                t.push(record.offset, &event);
                                t.notify.notify_one();
                            }
                        }
                    }
                    at = record.offset + 1;
                }
                if batch.last().is_some_and(|r| r.offset + 1 >= next) {
                    break;
                }
            }
        }
        for m in &members {
            m.attached.store(true, Ordering::Release);
        }
        *table = Table::build(members);
    }

    /// Routes until shutdown. A panic here is caught by the supervisor, which runs it again: it
    /// resumes at `next`, so at worst the record it was routing is queued twice (at-least-once).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        for t in self.routes.snapshot() {
            t.set_not_ready("router", None);
        }
        let mut table = Table::build(Vec::new());
        let mut last_refresh = Instant::now() - ROUTES_DEBOUNCE;
        self.routes.dirty.store(true, Ordering::Release);
        let mut matched = Vec::new();
        loop {
            let notified = self.notify.notified();
            if self.routes.dirty.load(Ordering::Acquire) {
                // Never route with a stale table: a trigger being added must not see the router
                // pass offsets it has not been handed (`routedOffset` would then claim them).
                // Rebuilds are at most every ROUTES_DEBOUNCE, so applying many triggers is not
                // quadratic; routing waits for at most that long.
                let since = last_refresh.elapsed();
                if since < ROUTES_DEBOUNCE {
                    tokio::select! {
                        _ = tokio::time::sleep(ROUTES_DEBOUNCE - since) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        return;
                    }
                }
                self.refresh(&mut table).await;
                last_refresh = Instant::now();
            }
            let mut progressed = false;
            let from = self.next.load(Ordering::Acquire);
            if table.triggers.is_empty() {
                // Nothing to route: skip to the head without reading (the log is only kept, for
                // retention and for triggers that start later).
                let store = self.store.clone();
                let log = self.log.clone();
                if let Ok(Ok(head)) =
                    tokio::task::spawn_blocking(move || store.next_offset(&log)).await
                {
                    self.next.store(head.max(from), Ordering::Release);
                }
            } else {
                let batch = self.read(from, ROUTER_BATCH).await;
                for record in &batch {
                    match EventRecord::from_stored(&record.payload) {
                        Ok(event) => {
                            let event = Arc::new(event);
                            matched.clear();
                            table.index.matching(&event, &mut matched);
                            for &i in &matched {
                                let t = &table.triggers[i];
                                if record.offset >= t.start {
                                    self.counters.routed(1);
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
            }
            if !progressed {
                let wait = if self.routes.dirty.load(Ordering::Acquire) {
                    ROUTES_DEBOUNCE
                } else {
                    Duration::from_millis(100)
                };
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// The ordering lane of an event in ordered mode: its partition key, or none (one lane).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Lane {
    Key(String),
    NoKey,
}

fn lane_of(event: &Event) -> Lane {
    match event.extension(PARTITION_KEY) {
        Some(v) => Lane::Key(v.to_string()),
        None => Lane::NoKey,
    }
}

struct Slot {
    event: Option<Arc<EventRecord>>,
    progress: Progress,
    due: Option<(Instant, u64)>,
    running: bool,
    /// Ordered mode: its lane (only the lane's first slot may run).
    lane: Option<Lane>,
}

type AttemptResult = (Offset, Option<Arc<EventRecord>>, Progress, AttemptEnd);

enum AttemptEnd {
    Next(Next),
    Gone(String),
    /// Not attempted: the worker is stopping and its in-process subscriber is not listening;
    /// the delivery stays pending (with its progress) for the next start.
    Abandoned,
}

/// A worker's pending deliveries and where it reads next.
#[derive(Default)]
struct State {
    slots: BTreeMap<Offset, Slot>,
    /// Ordered mode: the slots of each lane, in log order.
    lanes: HashMap<Lane, VecDeque<Offset>>,
    taken_upto: Offset,
    /// Reading the log itself from this offset (after a replay or a restart).
    catch_up: Option<Offset>,
    /// Matching events read by catch-up, not taken yet.
    backlog: VecDeque<(Offset, Arc<EventRecord>)>,
    /// Queue entries below this were already read by catch-up.
    skip_below: Offset,
    catch_up_wait: Option<Instant>,
    replay_applied: Option<String>,
}

impl State {
    /// Whether the slot at `offset` may run now (in ordered mode: it is first in its lane).
    fn first_in_lane(&self, offset: Offset, lane: Option<&Lane>) -> bool {
        match lane {
            None => true,
            Some(l) => self.lanes.get(l).and_then(|q| q.front()) == Some(&offset),
        }
    }

    fn insert(&mut self, offset: Offset, slot: Slot) {
        if let Some(l) = &slot.lane {
            self.lanes.entry(l.clone()).or_default().push_back(offset);
        }
        self.slots.insert(offset, slot);
    }

    fn remove(&mut self, offset: Offset) {
        let Some(slot) = self.slots.remove(&offset) else {
            return;
        };
        if let Some(l) = slot.lane
            && let Some(q) = self.lanes.get_mut(&l)
        {
            if q.front() == Some(&offset) {
                q.pop_front();
            } else {
                q.retain(|&o| o != offset);
            }
            if q.is_empty() {
                self.lanes.remove(&l);
            }
        }
    }
}

/// Delivers one trigger's events.
#[derive(Clone)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<TriggerShared>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) log: LogId,
    pub(crate) engine: DeliveryEngine,
    pub(crate) publisher: Publisher,
    pub(crate) router_next: Arc<AtomicU64>,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    /// The trigger's `evmesh.dev/replay-from` annotation (parsed, and as written).
    pub(crate) replay_from: Option<(ReplayFrom, String)>,
}

impl Worker {
    /// Runs the worker under a supervisor: a panic restarts it (with backoff) from its saved
    /// checkpoint, reading the log itself from there; meanwhile the trigger is not ready.
    pub(crate) async fn supervised(
        self,
        restored: Checkpoint,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) {
        let commands = Arc::new(tokio::sync::Mutex::new(commands));
        let mut first = Some(restored);
        let shared = self.shared.clone();
        let sd = shutdown.clone();
        crate::supervise::supervise(
            format!("delivery worker of trigger {}", self.shared.name),
            move |_restarts| {
                let worker = self.clone();
                let restored = first.take();
                let commands = commands.clone();
                let shutdown = sd.clone();
                async move {
                    let (checkpoint, catch_up) = match restored {
                        Some(cp) => (cp, false),
                        None => (worker.reload_checkpoint().await?, true),
                    };
                    let mut commands = commands.lock().await;
                    worker
                        .run(checkpoint, catch_up, &mut commands, shutdown)
                        .await;
                    Ok(())
                }
            },
            move |reason| shared.set_not_ready("worker", Some(reason)),
            shutdown,
        )
        .await
    }

    async fn reload_checkpoint(&self) -> Result<Checkpoint, String> {
        let store = self.store.clone();
        let key = self.shared.checkpoint_key.clone();
        let saved = tokio::task::spawn_blocking(move || store.checkpoints(&key))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not read its checkpoint: {e}"))?;
        match saved
            .into_iter()
            .find(|(k, _)| *k == self.shared.checkpoint_key)
        {
            Some((_, bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("its checkpoint is unreadable: {e}")),
            // It failed before its first checkpoint: it starts where it started before.
            None => Ok(Checkpoint {
                taken_upto: self.shared.start,
                ..Checkpoint::default()
            }),
        }
    }

    /// Delivers until shutdown. With `catch_up`, everything from the checkpoint's `taken_upto`
    /// is read from the log with the trigger's own filter (queue entries below are skipped).
    async fn run(
        self,
        restored: Checkpoint,
        catch_up: bool,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let ordered = self.shared.order == DeliveryOrder::Ordered;
        let mut st = State {
            taken_upto: restored.taken_upto,
            skip_below: restored.taken_upto,
            catch_up: catch_up.then_some(restored.taken_upto),
            replay_applied: restored.replay_applied,
            ..State::default()
        };
        for e in restored.inflight {
            let due = e.due_ms.map(|ms| (instant_from_unix_ms(ms), ms));
            // Ordered mode needs the key: read the event now (at most max_in_flight reads).
            let (event, lane) = if ordered {
                match load(self.store.clone(), self.log.clone(), e.offset).await {
                    Ok(ev) => {
                        let lane = lane_of(&ev);
                        (Some(ev), Some(lane))
                    }
                    // Its attempt reports it gone; until then it holds the keyless lane.
                    Err(_) => (None, Some(Lane::NoKey)),
                }
            } else {
                (None, None)
            };
            st.insert(
                e.offset,
                Slot {
                    event,
                    progress: e.progress,
                    due,
                    running: false,
                    lane,
                },
            );
        }
        let mut attempts = FuturesUnordered::new();
        if let Some((from, text)) = self.replay_from.clone()
            && st.replay_applied.as_deref() != Some(text.as_str())
        {
            match self.replay(&mut st, from, Some(text.clone())).await {
                Ok(at) => {
                    tracing::info!(trigger = %self.shared.name, offset = at, "positioned by {} {text}", evmesh_config::REPLAY_FROM_ANNOTATION)
                }
                Err(e) => {
                    tracing::error!(trigger = %self.shared.name, "applying {} {text}: {e}", evmesh_config::REPLAY_FROM_ANNOTATION)
                }
            }
        }
        #[cfg(feature = "fault-injection")]
        self.shared.injected_panic();
        self.shared.set_not_ready("worker", None);
        let mut dirty = true;
        let mut last_checkpoint = Instant::now() - CHECKPOINT_EVERY;
        let mut stopping = false;
        let mut drain_at = None;
        let mut scan = true;
        loop {
            let now = Instant::now();
            // Start attempts that are due (restored, retry wait over, or first in their lane).
            if scan && !stopping {
                let mut start = Vec::new();
                for (&offset, slot) in st.slots.iter() {
                    if !slot.running
                        && slot.due.is_none_or(|(d, _)| d <= now)
                        && st.first_in_lane(offset, slot.lane.as_ref())
                    {
                        start.push(offset);
                    }
                }
                for offset in start {
                    if let Some(slot) = st.slots.get_mut(&offset) {
                        slot.running = true;
                        slot.due = None;
                        attempts.push(self.attempt(
                            offset,
                            slot.event.clone(),
                            slot.progress.clone(),
                            shutdown.clone(),
                        ));
                    }
                }
            }
            scan = false;
            // Take new events while there is room.
            while !stopping && st.slots.len() < self.max_in_flight {
                let Some((offset, event)) = self.next_event(&mut st).await else {
                    break;
                };
                st.taken_upto = st.taken_upto.max(offset + 1);
                dirty = true;
                let (event, lane) = match (ordered, event) {
                    (false, event) => (event, None),
                    (true, Some(e)) => {
                        let lane = lane_of(&e);
                        (Some(e), Some(lane))
                    }
                    (true, None) => {
                        match load(self.store.clone(), self.log.clone(), offset).await {
                            Ok(e) => {
                                let lane = lane_of(&e);
                                (Some(e), Some(lane))
                            }
                            Err(_) => (None, Some(Lane::NoKey)),
                        }
                    }
                };
                let progress = Progress::default();
                let mut slot = Slot {
                    event,
                    progress,
                    due: None,
                    running: false,
                    lane,
                };
                let lane = slot.lane.clone();
                let first = lane
                    .as_ref()
                    .is_none_or(|l| st.lanes.get(l).is_none_or(VecDeque::is_empty));
                if first {
                    slot.running = true;
                    attempts.push(self.attempt(
                        offset,
                        slot.event.clone(),
                        slot.progress.clone(),
                        shutdown.clone(),
                    ));
                }
                st.insert(offset, slot);
            }
            if stopping && attempts.is_empty() {
                break;
            }
            if dirty && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                if st.catch_up.is_none() && st.backlog.is_empty() {
                    // Attached first, then the router position: once the router has this trigger
                    // in its table, everything below that position that matched was queued.
                    let attached = self.shared.attached.load(Ordering::Acquire);
                    let routed = self.router_next.load(Ordering::Acquire);
                    let queue_empty = self
                        .shared
                        .queue
                        .lock()
                        .map(|q| q.items.is_empty())
                        .unwrap_or(false);
                    if queue_empty && attached {
                        st.taken_upto = st.taken_upto.max(routed);
                    }
                }
                self.checkpoint(&st);
                dirty = false;
                last_checkpoint = Instant::now();
            }
            // An injected panic comes where all progress is saved, so a test can tell a resume
            // from the checkpoint from a re-delivery.
            #[cfg(feature = "fault-injection")]
            if !dirty {
                self.shared.injected_panic();
            }
            let next_due = st
                .slots
                .values()
                .filter(|s| !s.running)
                .filter_map(|s| s.due.map(|(d, _)| d))
                .chain(st.catch_up_wait)
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
                    if self.finish(&mut st, offset, event, progress, end) && ordered {
                        // The next slot of its lane may run now.
                        scan = true;
                    }
                }
                _ = tokio::time::sleep_until(sleep_until.into()) => { scan = true; }
                _ = self.shared.notify.notified(), if !stopping => {}
                Some(cmd) = commands.recv(), if !stopping => {
                    match cmd {
                        Command::Replay { done, annotation: Some(text), .. }
                            if st.replay_applied.as_deref() == Some(text.as_str()) =>
                        {
                            // This annotation value was applied before: nothing to do.
                            let _ = done.send(Ok(st.taken_upto));
                        }
                        Command::Replay { from, annotation, done } => {
                            let result = self.replay(&mut st, from, annotation).await;
                            if result.is_ok() {
                                // In-flight attempts of the old position are abandoned.
                                attempts = FuturesUnordered::new();
                                last_checkpoint = Instant::now();
                                dirty = false;
                                scan = true;
                            }
                            let _ = done.send(result);
                        }
                    }
                }
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
        self.checkpoint(&st);
    }

    /// The next event to take: from catch-up (reading the log) while it runs, else from the
    /// router's queue.
    async fn next_event(&self, st: &mut State) -> Option<(Offset, Option<Arc<EventRecord>>)> {
        let mut reads = 0;
        loop {
            if let Some((offset, event)) = st.backlog.pop_front() {
                return Some((offset, Some(event)));
            }
            let Some(cursor) = st.catch_up else {
                break;
            };
            if st.catch_up_wait.is_some_and(|w| w > Instant::now()) {
                return None;
            }
            st.catch_up_wait = None;
            if reads == CATCH_UP_READS_PER_TURN {
                // Let the worker's loop handle completions and checkpoints, then go on at once.
                st.catch_up_wait = Some(Instant::now());
                return None;
            }
            reads += 1;
            match self.read_matching(cursor).await {
                Ok((matched, next, at_end)) => {
                    if matched.is_empty() {
                        st.taken_upto = st.taken_upto.max(next);
                    }
                    st.backlog.extend(matched);
                    if at_end {
                        // Everything from `next` on is (or will be) queued by the router.
                        st.catch_up = None;
                        st.skip_below = next;
                    } else {
                        st.catch_up = Some(next);
                    }
                }
                Err(e) => {
                    tracing::error!(trigger = %self.shared.name, offset = cursor, "reading the log: {e}");
                    st.catch_up_wait = Some(Instant::now() + CATCH_UP_RETRY);
                    return None;
                }
            }
        }
        while let Some((offset, event)) = self.shared.pop() {
            if offset >= st.skip_below {
                return Some((offset, event));
            }
        }
        None
    }

    /// Reads one batch from `from` and keeps what matches the trigger's filter. Returns the
    /// matches, the offset after the batch and whether the batch reached the log's end.
    async fn read_matching(
        &self,
        from: Offset,
    ) -> Result<(Vec<(Offset, Arc<EventRecord>)>, Offset, bool), String> {
        let store = self.store.clone();
        let log = self.log.clone();
        let batch = tokio::task::spawn_blocking(move || store.read(&log, from, ROUTER_BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let at_end = batch.len() < ROUTER_BATCH;
        let mut next = from;
        let mut matched = Vec::new();
        let filter = self.shared.filter();
        for record in batch {
            next = record.offset + 1;
            match EventRecord::from_stored(&record.payload) {
                Ok(event) if filter.matches(&event) => {
                    matched.push((record.offset, Arc::new(event)));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(
                    trigger = %self.shared.name,
                    offset = record.offset,
                    "undecodable record skipped: {e}"
                ),
            }
        }
        Ok((matched, next, at_end))
    }

    /// Positions the trigger at `from`: drops pending deliveries, persists the new position and
    /// starts reading the log from there.
    async fn replay(
        &self,
        st: &mut State,
        from: ReplayFrom,
        annotation: Option<String>,
    ) -> Result<Offset, String> {
        let store = self.store.clone();
        let log = self.log.clone();
        let at =
            tokio::task::spawn_blocking(move || crate::replay::seek(store.as_ref(), &log, from))
                .await
                .map_err(|e| e.to_string())??;
        let dropped = st.slots.len();
        *st = State {
            taken_upto: at,
            skip_below: at,
            catch_up: Some(at),
            replay_applied: annotation.or(st.replay_applied.take()),
            ..State::default()
        };
        tracing::info!(trigger = %self.shared.name, from = %from, offset = at, dropped, "replay");
        self.checkpoint(st);
        Ok(at)
    }

    fn checkpoint(&self, st: &State) {
        let cp = Checkpoint {
            taken_upto: st.taken_upto,
            inflight: st
                .slots
                .iter()
                .map(|(&offset, s)| InflightEntry {
                    offset,
                    progress: s.progress.clone(),
                    due_ms: s.due.map(|(_, ms)| ms),
                })
                .collect(),
            replay_applied: st.replay_applied.clone(),
        };
        let low = st
            .slots
            .keys()
            .next()
            .copied()
            .unwrap_or(st.taken_upto)
            .min(st.taken_upto);
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

    /// Applies an attempt's end; returns whether the slot is complete (and was removed).
    fn finish(
        &self,
        st: &mut State,
        offset: Offset,
        event: Option<Arc<EventRecord>>,
        mut progress: Progress,
        end: AttemptEnd,
    ) -> bool {
        let Some(slot) = st.slots.get_mut(&offset) else {
            return false;
        };
        if let Some(f) = progress.last_failure.as_mut() {
            f.body.truncate(MAX_KEPT_BODY);
        }
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
                    let plan = self.shared.plan();
                    let dls = plan.dead_letter.as_ref().map(delivery::redact);
                    self.shared.counters.log_dead_lettered(
                        &id,
                        slot.progress.last_failure.as_ref(),
                        dls.as_deref().unwrap_or(""),
                    );
                } else {
                    self.shared.counters.delivered();
                }
            }
            AttemptEnd::Next(Next::Retry(wait)) => {
                // The switch to the dead-letter sink (failures reset to 0) is not a retry.
                if slot.progress.failures > 0 {
                    self.shared.counters.retried();
                }
                let due_ms = unix_ms() + wait.as_millis() as u64;
                slot.due = Some((Instant::now() + wait, due_ms));
                self.report_pending_retries(st);
                return false;
            }
            AttemptEnd::Next(Next::Dropped(f)) => {
                self.shared.counters.dropped();
                self.shared.counters.log_dropped(&id, &f);
            }
            AttemptEnd::Abandoned => return false,
            AttemptEnd::Gone(reason) => {
                self.shared.counters.dropped();
                tracing::error!(trigger = %self.shared.name, offset, "event dropped: {reason}");
            }
        }
        st.remove(offset);
        self.report_pending_retries(st);
        true
    }

    fn report_pending_retries(&self, st: &State) {
        let pending = st.slots.values().filter(|s| s.due.is_some()).count();
        self.shared.counters.pending_retries(pending);
    }

    fn attempt(
        &self,
        offset: Offset,
        event: Option<Arc<EventRecord>>,
        mut progress: Progress,
        stop: watch::Receiver<bool>,
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
            let plan = shared.plan();
            let plan = &*plan;
            let local = progress.url(plan).and_then(|u| engine.local_sinks().get(u));
            let mut outcome = match local {
                None => engine.attempt(plan, &progress, &event).await,
                Some(sink) => tokio::select! {
                    o = engine.attempt(plan, &progress, &event) => o,
                    _ = abandon_when_stopping(sink, stop) => {
                        return (offset, Some(event), progress, AttemptEnd::Abandoned);
                    }
                },
            };
            if let Outcome::Delivered { reply: Some(reply) } = outcome {
                // The reply must be stored (or handed on) before the delivery counts as done; if
                // that fails, the whole delivery is tried again (as Knative's dispatcher does).
                outcome = route_reply(&engine, &publisher, plan, *reply, &event).await;
            }
            if let Outcome::Failed(f) = &outcome {
                tracing::debug!(trigger = %shared.name, offset, status = ?f.status, "attempt failed: {}", f.reason);
            }
            let next = progress.next(plan, outcome);
            (offset, Some(event), progress, AttemptEnd::Next(next))
        }
    }
}

/// Resolves once the worker is stopping while `sink` is not ready (an in-process subscriber
/// nobody listens on): an attempt waiting for it then gives way instead of holding shutdown up
/// for the drain timeout. Checked every 25 ms while stopping only.
async fn abandon_when_stopping(
    sink: Arc<dyn delivery::LocalSink>,
    mut stop: watch::Receiver<bool>,
) {
    if stop.wait_for(|s| *s).await.is_err() {
        // No stop signal will come: the attempt runs to its end.
        std::future::pending::<()>().await;
    }
    while sink.not_ready().is_none() {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends a subscriber's reply where the plan says: back into the home broker, on to a
/// Destination, or nowhere.
async fn route_reply(
    engine: &DeliveryEngine,
    publisher: &Publisher,
    plan: &Plan,
    reply: EventRecord,
    original: &EventRecord,
) -> Outcome {
    let dest = plan
        .subscriber
        .as_ref()
        .map(delivery::redact)
        .unwrap_or_default();
    match &plan.reply {
        delivery::ReplyTo::Discard => Outcome::Delivered { reply: None },
        delivery::ReplyTo::Home => match publisher.publish_reply(reply, original).await {
            Ok(()) => Outcome::Delivered { reply: None },
            Err(e) => Outcome::Failed(delivery::Failure {
                dest,
                status: e.status,
                body: Vec::new(),
                retryable: e.retryable,
                retry_after: None,
                reason: e.reason,
            }),
        },
        delivery::ReplyTo::Url { url, ca_certs } => {
            let reply = crate::service::reply_of(reply, original);
            match engine
                .send_to(url, ca_certs.as_deref(), &reply, plan, false)
                .await
            {
                Outcome::Failed(mut f) => {
                    f.reason = format!("sending the reply to {}: {}", f.dest, f.reason);
                    Outcome::Failed(f)
                }
                ok => ok,
            }
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
