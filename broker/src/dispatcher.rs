//! Dispatch: a router per broker or channel reads the durable log, finds the matching triggers
//! (every subscription, for a channel) through the filter index and queues the event for each;
//! a worker per trigger or subscription is the one delivery engine's run: it takes events from a
//! [`Cursor`](crate::log::Cursor) (the embedded one reads that queue, or the log itself after a
//! replay or a restart), delivers with bounded concurrency (per partition key in order, when
//! asked), schedules retries on a timer, dead-letters, routes replies, and saves where it stands
//! through the cursor so a restart resumes exactly where it stopped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evmesh_config::{DeliveryOrder, ReplayFrom};
use evmesh_filter::{Filter, FilterIndex};
use evmesh_store::{EventStore, LogId, Offset};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::delivery::{self, DeliveryEngine, Next, Outcome, Plan, Progress};
use crate::log::{ConsumerGroup, Cursor, Pending, Pos};
use crate::metrics::Counters;
use crate::record::EventRecord;
use crate::service::Publisher;

/// Default budget of a route's queue ([`TriggerQueue`]), in (approximate) bytes of events.
pub(crate) const DEFAULT_ROUTE_QUEUE_BYTES: usize = 1024 * 1024;
const ROUTER_BATCH: usize = 512;
/// How long the router waits for ingress to hand over an offset it stored (while later ones
/// are handed over) before it reads that offset from the store.
const TAIL_WAIT: Duration = Duration::from_millis(5);
/// How often a router stopped at a record it cannot read tries it again.
const STALL_RETRY: Duration = Duration::from_secs(5);
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);
/// How often an idle run looks whether the log has moved past its saved position.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Bytes of a failed response body kept in a checkpoint: what `knativeerrordata` needs.
const MAX_KEPT_BODY: usize = 1024;
/// The CloudEvents extension that orders deliveries of an ordered trigger.
pub(crate) const PARTITION_KEY: &str = "partitionkey";

/// What the router hands to a trigger worker: events in log order, bounded in bytes. A route
/// whose queue holds its budget is left out by the router from then on (the `gap`): its cursor
/// reads the log itself from there until it has caught up, so a route that falls behind costs
/// no memory for the events it has not taken yet.
pub(crate) struct TriggerQueue {
    items: VecDeque<(Offset, Arc<EventRecord>, usize)>,
    /// Approximate bytes of the queued events.
    bytes: usize,
    /// The budget of `bytes` (at least one event is always queued).
    budget: usize,
    /// The first matching offset the router left out; `None` while it queues everything.
    gap: Option<Offset>,
    /// One past the last matching offset the router left out since `gap` was set.
    left_out_upto: Offset,
    /// Offsets below this were left out when the route joined behind the router, without
    /// being counted as routed: the route's own reading counts their matches.
    uncounted_below: Offset,
    /// The router's counters (set when the router leaves a joining route out).
    router_counters: Option<Counters>,
}

impl Default for TriggerQueue {
    fn default() -> Self {
        TriggerQueue {
            items: VecDeque::new(),
            bytes: 0,
            budget: DEFAULT_ROUTE_QUEUE_BYTES,
            gap: None,
            left_out_upto: 0,
            uncounted_below: 0,
            router_counters: None,
        }
    }
}

impl TriggerQueue {
    /// Whether the router has handed over everything it routed: nothing queued, nothing left
    /// out.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.gap.is_none()
    }
}

/// What a route's cursor finds in its queue.
pub(crate) enum Popped {
    /// The next queued event.
    Event(Offset, Arc<EventRecord>),
    /// Nothing queued, and the router left out matching events from this offset on: read the
    /// log from there.
    Gap(Offset),
    /// Nothing queued.
    Empty,
}

/// Approximate memory of a decoded event whose stored form has `stored` bytes (its attributes,
/// data and headers, and the CloudEvents view of them).
pub(crate) fn event_cost(stored: usize) -> usize {
    stored * 2 + 512
}

/// Default budget of a log's [`Tail`], in (approximate) bytes of events
/// (`ServiceOptions::tail_bytes`).
pub(crate) const DEFAULT_TAIL_BYTES: usize = 4 * 1024 * 1024;

/// Events ingress has just stored, handed to the log's router in memory (decoded once, at
/// ingress) so that the router need not read them back from the store and decode them again.
/// Bounded in bytes: an event that does not fit is not kept, and the router reads it from the
/// store as before (it reads the store whenever the next offset is not here).
pub(crate) struct Tail {
    inner: std::sync::Mutex<TailInner>,
    budget: usize,
    /// One past the highest offset pushed since start (0: none yet), kept or not.
    head: AtomicU64,
    /// The log's next offset when its runtime started: what lies below was stored before and
    /// is never handed over (the router reads it from the store).
    low: Offset,
    /// `evmesh_tail_bytes` of its broker or channel.
    gauge: Option<metrics::Gauge>,
}

#[derive(Default)]
struct TailInner {
    events: BTreeMap<Offset, (Arc<EventRecord>, usize)>,
    bytes: usize,
    /// One past the highest offset that did not fit (it must be read from the store).
    not_kept_upto: Offset,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            inner: std::sync::Mutex::default(),
            budget: DEFAULT_TAIL_BYTES,
            head: AtomicU64::new(0),
            low: 0,
            gauge: None,
        }
    }
}

impl Tail {
    /// A tail of `budget` bytes that reports what it holds on `gauge`, for a log whose next
    /// offset is `first` (ingress hands over what it stores from there on).
    pub(crate) fn new(budget: usize, gauge: metrics::Gauge, first: Offset) -> Tail {
        Tail {
            budget,
            low: first,
            gauge: Some(gauge),
            ..Tail::default()
        }
    }

    fn report(&self, bytes: usize) {
        if let Some(g) = &self.gauge {
            g.set(bytes as f64);
        }
    }

    /// Keeps the event just stored at `offset` (`stored`: its stored size) for the router, when
    /// it fits the budget.
    pub(crate) fn push(&self, offset: Offset, event: EventRecord, stored: usize) {
        let cost = event_cost(stored);
        self.head.fetch_max(offset + 1, Ordering::AcqRel);
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.bytes + cost > self.budget {
            t.not_kept_upto = t.not_kept_upto.max(offset + 1);
            return;
        }
        t.bytes += cost;
        if let Some((_, old)) = t.events.insert(offset, (Arc::new(event), cost)) {
            t.bytes -= old;
        }
        self.report(t.bytes);
    }

    /// Notes the event just stored at `offset` without keeping it (its log has no routes to
    /// hand it to; one added later reads it from the store).
    pub(crate) fn skip(&self, offset: Offset) {
        self.head.fetch_max(offset + 1, Ordering::AcqRel);
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.not_kept_upto = t.not_kept_upto.max(offset + 1);
    }

    /// One past the highest offset ingress has stored since start, `None` before the first.
    fn head(&self) -> Option<Offset> {
        match self.head.load(Ordering::Acquire) {
            0 => None,
            h => Some(h),
        }
    }

    /// Where the event at `from` is to come from, when it is not here.
    fn source_of(&self, from: Offset) -> Source {
        let t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(head) = self.head() else {
            // Nothing handed over in this run: whatever is stored came before it.
            return Source::Store;
        };
        if from < t.not_kept_upto || from < self.low {
            Source::Store
        } else if t.events.contains_key(&from) {
            Source::Handed
        } else if head > from {
            // Ingress has handed over later ones: `from` is stored and on its way.
            Source::Awaited
        } else {
            Source::Nothing
        }
    }

    /// Whether the event at `from` is stored and still to be handed over: ingress has handed
    /// over later ones, and none from `from` on was left out for the budget.
    #[cfg(test)]
    fn awaits(&self, from: Offset) -> bool {
        self.source_of(from) == Source::Awaited
    }

    /// Takes the events at `from`, `from + 1`, … (at most `max`, stopping at the first offset
    /// not here), with their cost; forgets everything below `from` (the router has passed it).
    fn take_from(&self, from: Offset, max: usize) -> Vec<(Offset, Arc<EventRecord>, usize)> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = t.events.first_entry() {
            if *entry.key() >= from {
                break;
            }
            let (_, cost) = entry.remove();
            t.bytes -= cost;
        }
        let mut out = Vec::new();
        let mut next = from;
        while out.len() < max {
            match t.events.remove(&next) {
                Some((event, cost)) => {
                    t.bytes -= cost;
                    out.push((next, event, cost));
                    next += 1;
                }
                None => break,
            }
        }
        self.report(t.bytes);
        out
    }
}

/// Where the router's next event is, as its log's [`Tail`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// In the tail.
    Handed,
    /// Stored, and its hand-over still to come (appends are answered in offset order, their
    /// tasks run in any order).
    Awaited,
    /// To be read from the store: stored before this run's first hand-over, or left out for
    /// the tail's budget.
    Store,
    /// Nothing stored past what was handed over, as far as hand-overs tell: the router waits.
    /// (An append whose task was dropped between its commit and its hand-over is caught by
    /// the next hand-over, as `Awaited`, or by the router's idle read.)
    Nothing,
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
    /// Counts work handed to the route (each event the router queues, each run start, each
    /// replay); with `settled_at` it tells whether the route has nothing left to do.
    work: AtomicU64,
    /// The `work` count the worker last saw with nothing pending (no delivery in flight or
    /// waiting for a retry, nothing queued, not catching up); equal to `work` while idle.
    settled_at: AtomicU64,
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
            work: AtomicU64::new(1),
            settled_at: AtomicU64::new(0),
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

    /// Whether the route has nothing left to do with what it was handed: the router has it in
    /// its table and its worker, since the last event queued to it, had nothing pending.
    pub(crate) fn is_settled(&self) -> bool {
        self.is_attached()
            && self.settled_at.load(Ordering::Acquire) == self.work.load(Ordering::Acquire)
    }

    /// Work arrived that the worker has not seen yet.
    fn new_work(&self) {
        self.work.fetch_add(1, Ordering::AcqRel);
    }

    /// Queues a matching event (`cost`: [`event_cost`]), or leaves it out when the queue holds
    /// its budget (the route then reads the log itself).
    fn push(&self, offset: Offset, event: &Arc<EventRecord>, cost: usize) {
        self.new_work();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.gap.is_some() || (!q.items.is_empty() && q.bytes + cost > q.budget) {
            q.gap.get_or_insert(offset);
            q.left_out_upto = q.left_out_upto.max(offset + 1);
        } else {
            q.items.push_back((offset, event.clone(), cost));
            q.bytes += cost;
            self.counters.queued_bytes(q.bytes);
        }
    }

    /// Leaves the matching events of `[from, upto)` to the route's own reading of the log,
    /// which counts them as routed in `router`'s counters (the router did not read them).
    fn leave_out(&self, from: Offset, upto: Offset, router: &Counters) {
        self.new_work();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let gap = q.gap.map_or(from, |g| g.min(from));
        q.gap = Some(gap);
        q.left_out_upto = q.left_out_upto.max(upto);
        q.uncounted_below = q.uncounted_below.max(upto);
        q.router_counters = Some(router.clone());
    }

    /// Counts, as routed, the matches at `offsets` that the route's own reading found below
    /// where it joined the router (the router counts everything else it routes).
    pub(crate) fn count_own_routed(&self, offsets: impl Iterator<Item = Offset>) {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &q.router_counters {
            let n = offsets.filter(|o| *o < q.uncounted_below).count();
            if n > 0 {
                c.routed(n);
            }
        }
    }

    /// Sets the budget of the route's queue, in bytes ([`DEFAULT_ROUTE_QUEUE_BYTES`]).
    pub(crate) fn set_queue_budget(&self, bytes: usize) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).budget = bytes;
    }

    /// Whether the router has this route in its table (and caught it up).
    /// Marks a route no router feeds (it reads its log itself) as attached.
    pub(crate) fn mark_attached(&self) {
        self.attached.store(true, Ordering::Release);
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Takes the next queued event; at an empty queue, says where the router left out events.
    pub(crate) fn pop(&self) -> Popped {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match q.items.pop_front() {
            Some((offset, event, cost)) => {
                q.bytes -= cost;
                self.counters.queued_bytes(q.bytes);
                Popped::Event(offset, event)
            }
            None => q.gap.map_or(Popped::Empty, Popped::Gap),
        }
    }

    /// The route's own reading of the log reached `upto` (it read every record below it):
    /// if the router left out nothing at or above `upto`, the router queues for the route
    /// again and this returns true; otherwise the route must read on.
    pub(crate) fn rejoin(&self, upto: Offset) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.gap.is_some() && q.left_out_upto > upto {
            return false;
        }
        q.gap = None;
        true
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
/// rebuilds its filter index from it at most every [`ROUTES_DEBOUNCE`], or four times as long as
/// the last rebuild took (so applying thousands of triggers is not quadratic) and catches a new member up on what it routed in between.
#[derive(Default)]
pub(crate) struct Routes {
    members: std::sync::Mutex<Vec<Arc<TriggerShared>>>,
    /// How many members there are (read by ingress without the lock).
    count: AtomicUsize,
    dirty: AtomicBool,
    /// A member left or its filter changed: the index is built anew (members only added are
    /// appended to it).
    reindex: AtomicBool,
}

/// How often at most a router rebuilds its filter index after trigger changes.
const ROUTES_DEBOUNCE: Duration = Duration::from_millis(20);

impl Routes {
    pub(crate) fn insert(&self, t: Arc<TriggerShared>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.push(t);
        self.count.store(members.len(), Ordering::Release);
        self.dirty.store(true, Ordering::Release);
    }
    pub(crate) fn remove(&self, t: &Arc<TriggerShared>) {
        {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            members.retain(|m| !Arc::ptr_eq(m, t));
            self.count.store(members.len(), Ordering::Release);
        }
        self.changed();
    }
    /// Whether there are no members (nothing to hand an event to).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }
    /// A member's filter changed.
    pub(crate) fn changed(&self) {
        self.reindex.store(true, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
    }
    /// Every member has new work (an event appended to a log its members read themselves).
    pub(crate) fn new_work_all(&self) {
        for m in self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            m.new_work();
        }
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

/// Persisted progress of one trigger on the embedded log: its watermark. Every matching event
/// below `taken_upto` is done or parked (a retrying delivery, kept under its own key, see
/// [`crate::log`]); nothing else is written per event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Checkpoint {
    pub(crate) taken_upto: Offset,
    /// Pending deliveries: written by evmesh before parked retries (read for migration: they
    /// are parked when the trigger starts), and the parked ones once read back. Never saved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) inflight: Vec<InflightEntry>,
    /// The `evmesh.dev/replay-from` value last applied to this trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replay_applied: Option<String>,
}

/// A pending delivery: a parked one (the value of its park key), or one in a checkpoint
/// written before parked retries.
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
    /// What ingress just stored, in memory: read before the store.
    pub(crate) tail: Arc<Tail>,
    /// Fault injection: the router panics this many more times (at its next turn, where all it
    /// routed is handed out, then at each restart); shared with its broker's runtime.
    #[cfg(feature = "fault-injection")]
    pub(crate) panics_left: Arc<std::sync::atomic::AtomicU32>,
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

    /// Adds a member after the others (same as building anew with it last).
    fn push(&mut self, t: Arc<TriggerShared>) {
        if self.index.push(self.triggers.len(), t.filter()) {
            self.triggers.push(t);
        } else {
            // Not indexable any more: build anew (and the index drops what does not fit, as
            // `FilterIndex::new` does).
            let mut all = std::mem::take(&mut self.triggers);
            all.push(t);
            *self = Table::build(all);
        }
    }
}

impl Router {
    /// Queues the event at `offset` for every trigger of `table` it matches.
    fn route(
        &self,
        table: &Table,
        matched: &mut Vec<usize>,
        offset: Offset,
        event: &Arc<EventRecord>,
        cost: usize,
    ) {
        matched.clear();
        // The record gives filters its attributes and, to JSONPath filters, its data.
        table.index.matching(&**event, matched);
        for &i in matched.iter() {
            let t = &table.triggers[i];
            if offset >= t.start {
                self.counters.routed(1);
                t.push(offset, event, cost);
                t.notify.notify_one();
            }
        }
    }

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

    /// Swaps in the current members. A member new to the table whose start lies below the
    /// router's position is not caught up by the router: its matching events from its start to
    /// that position are left out of its queue, and its cursor reads them from the log itself.
    /// Members only added since the table was built are appended to its index instead of
    /// rebuilding it.
    fn refresh(&self, table: &mut Table) {
        let reindex = self.routes.reindex.swap(false, Ordering::AcqRel);
        self.routes.dirty.store(false, Ordering::Release);
        let members = self.routes.snapshot();
        let next = self.next.load(Ordering::Acquire);
        // The table's members come first, in order, when members were only added since.
        let kept = table.triggers.len();
        let appended = !reindex
            && members.len() >= kept
            && table
                .triggers
                .iter()
                .zip(&members)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let known: std::collections::HashSet<*const TriggerShared> = if appended {
            Default::default()
        } else {
            table.triggers.iter().map(Arc::as_ptr).collect()
        };
        let candidates = if appended {
            members.get(kept..).unwrap_or_default()
        } else {
            &members[..]
        };
        for m in candidates {
            // A member this router had in its table before a restart was handed everything
            // below `next` then: leaving those out again would deliver them twice.
            if !known.contains(&Arc::as_ptr(m)) && !m.is_attached() && m.start < next {
                m.leave_out(m.start, next, &self.counters);
                m.notify.notify_one();
            }
            m.attached.store(true, Ordering::Release);
        }
        if appended {
            for m in members.into_iter().skip(kept) {
                table.push(m);
            }
        } else {
            *table = Table::build(members);
        }
    }

    /// Why routing stopped at `offset`.
    fn stalled_reason(&self, offset: Offset, error: &str) -> String {
        let reason = format!(
            "record {offset} of log {} cannot be read ({error}); delivery stops there rather than skip it (a newer evmesh wrote it, or the store is damaged)",
            self.log.as_str()
        );
        tracing::error!(log = self.log.as_str(), offset, "{reason}");
        reason
    }

    /// Routes until shutdown. A panic here is caught by the supervisor, which runs it again: it
    /// resumes at `next` (members it had in its table are not caught up again), so at worst the
    /// record it was routing is queued twice (at-least-once).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        for t in self.routes.snapshot() {
            t.set_not_ready("router", None);
        }
        let mut table = Table::build(Vec::new());
        let mut last_refresh = Instant::now() - ROUTES_DEBOUNCE;
        // At least ROUTES_DEBOUNCE between rebuilds, and at least four times what the last one
        // took: with thousands of triggers arriving, rebuilding stays a fraction of the work.
        let mut debounce = ROUTES_DEBOUNCE;
        self.routes.dirty.store(true, Ordering::Release);
        let mut matched = Vec::new();
        // Since when the next offset is stored but not handed over while later ones are.
        let mut missing_since: Option<Instant> = None;
        // The last wait ended with no hand-over.
        let mut idle = false;
        // The wait's timer, kept across waits: moving its deadline later does not take the
        // timer wheel's lock as registering a new one does (a wait per hand-over).
        let idle_timer = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(idle_timer);
        loop {
            // An injected panic comes between batches, where every routed offset was handed out.
            #[cfg(feature = "fault-injection")]
            if self
                .panics_left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("fault injection: router of {} panics", self.log.as_str());
            }
            let notified = self.notify.notified();
            if self.routes.dirty.load(Ordering::Acquire) {
                // Never route with a stale table: a trigger being added must not see the router
                // pass offsets it has not been handed (`routedOffset` would then claim them).
                // Rebuilds are at most every `debounce`, so applying many triggers is not
                // quadratic; routing waits for at most that long.
                let since = last_refresh.elapsed();
                if since < debounce {
                    tokio::select! {
                        _ = tokio::time::sleep(debounce - since) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        return;
                    }
                }
                let started = Instant::now();
                self.refresh(&mut table);
                last_refresh = Instant::now();
                debounce = ROUTES_DEBOUNCE.max(4 * last_refresh.duration_since(started));
            }
            let mut progressed = false;
            let from = self.next.load(Ordering::Acquire);
            if table.triggers.is_empty() {
                // Nothing to route: skip to the head without reading (the log is only kept, for
                // retention and for triggers that start later). The head is what ingress last
                // handed over; the store is asked only before the first event of this run (a
                // blocking-pool round trip per wake-up cost more than the event itself).
                let head = match self.tail.head() {
                    Some(head) => Some(head),
                    None => {
                        let store = self.store.clone();
                        let log = self.log.clone();
                        tokio::task::spawn_blocking(move || store.next_offset(&log))
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                };
                if let Some(head) = head {
                    let head = head.max(from);
                    self.next.store(head, Ordering::Release);
                    self.tail.take_from(head, 0);
                }
            } else {
                // What ingress handed over in memory first (the usual case: nothing to read or
                // decode); from the store when the next offset is not there.
                let handed = self.tail.take_from(from, ROUTER_BATCH);
                let source = if handed.is_empty() {
                    self.tail.source_of(from)
                } else {
                    Source::Handed
                };
                if source == Source::Awaited {
                    // Ingress stored `from` but its task has not handed it over yet (appends
                    // are answered in offset order, their tasks run in any order): wait for it
                    // a moment rather than read and decode from the store what is about to
                    // come. Not for long: a client gone after the append never hands it over.
                    let since = *missing_since.get_or_insert_with(Instant::now);
                    let waited = since.elapsed();
                    if waited < TAIL_WAIT {
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep(TAIL_WAIT - waited) => {}
                            _ = shutdown.changed() => {}
                        }
                        if *shutdown.borrow() {
                            return;
                        }
                        continue;
                    }
                }
                missing_since = None;
                if !handed.is_empty() {
                    for (offset, event, cost) in &handed {
                        self.route(&table, &mut matched, *offset, event, *cost);
                        self.next.store(offset + 1, Ordering::Release);
                    }
                    if handed.len() == ROUTER_BATCH {
                        continue;
                    }
                    progressed = true;
                }
                // The store is read only for what was not handed over: nothing handed over
                // yet in this run, left out for the budget, awaited too long, or (`idle`)
                // once the router waited a while with no hand-over, for an append whose task
                // was dropped between its commit and its hand-over.
                let batch = if handed.is_empty() && (source != Source::Nothing || idle) {
                    self.read(from, ROUTER_BATCH).await
                } else {
                    Vec::new()
                };
                idle = false;
                let mut stalled = false;
                for record in &batch {
                    match EventRecord::from_stored(&record.payload) {
                        Ok(event) => {
                            let cost = event_cost(record.payload.len());
                            self.route(&table, &mut matched, record.offset, &Arc::new(event), cost);
                        }
                        Err(e) => {
                            // Never skipped: routing stops here, each trigger says why.
                            let reason = self.stalled_reason(record.offset, &e.to_string());
                            for t in &table.triggers {
                                t.set_not_ready("router", Some(reason.clone()));
                            }
                            stalled = true;
                            break;
                        }
                    }
                    self.next.store(record.offset + 1, Ordering::Release);
                    progressed = true;
                }
                if stalled {
                    tokio::select! {
                        _ = tokio::time::sleep(STALL_RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        return;
                    }
                    continue;
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
                idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + wait);
                tokio::select! {
                    _ = notified => {}
                    _ = &mut idle_timer => idle = true,
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
    /// A log partition (a Kafka topic's): ordered as Knative's Kafka dispatcher orders.
    Partition(u32),
}

fn lane_of(event: &EventRecord) -> Lane {
    // As the SDK's `ExtensionValue` writes it (a string as is, a number or boolean as text).
    match evmesh_filter::EventAttributes::attribute(event, PARTITION_KEY) {
        Some(evmesh_filter::AttrValue::Str(s)) => Lane::Key(s.into_owned()),
        Some(evmesh_filter::AttrValue::Int(i)) => Lane::Key(i.to_string()),
        Some(evmesh_filter::AttrValue::Bool(b)) => Lane::Key(b.to_string()),
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

type AttemptResult = (Pos, Option<Arc<EventRecord>>, Progress, AttemptEnd);

enum AttemptEnd {
    Next(Next),
    Gone(String),
    /// Not attempted: the worker is stopping and its in-process subscriber is not listening;
    /// the delivery stays pending (with its progress) for the next start.
    Abandoned,
}

/// A run's pending deliveries (being attempted, waiting for a retry, or in ordered mode waiting
/// for an earlier event of their key).
#[derive(Default)]
struct State {
    slots: BTreeMap<Pos, Slot>,
    /// How many slots wait for a retry (`due` set): the pending-retries gauge, kept as slots
    /// change instead of counted over every slot at each finished attempt.
    due_count: usize,
    /// Ordered mode: the slots of each lane, in log order.
    lanes: HashMap<Lane, VecDeque<Pos>>,
}

impl State {
    /// Whether the slot at `pos` may run now (in ordered mode: it is first in its lane).
    fn first_in_lane(&self, pos: Pos, lane: Option<&Lane>) -> bool {
        match lane {
            None => true,
            Some(l) => self.lanes.get(l).and_then(|q| q.front()) == Some(&pos),
        }
    }

    fn insert(&mut self, pos: Pos, slot: Slot) {
        if slot.due.is_some() {
            self.due_count += 1;
        }
        if let Some(l) = &slot.lane {
            self.lanes.entry(l.clone()).or_default().push_back(pos);
        }
        self.slots.insert(pos, slot);
    }

    fn remove(&mut self, pos: Pos) {
        let Some(slot) = self.slots.remove(&pos) else {
            return;
        };
        if slot.due.is_some() {
            self.due_count -= 1;
        }
        if let Some(l) = slot.lane
            && let Some(q) = self.lanes.get_mut(&l)
        {
            if q.front() == Some(&pos) {
                q.pop_front();
            } else {
                q.retain(|&o| o != pos);
            }
            if q.is_empty() {
                self.lanes.remove(&l);
            }
        }
    }

    fn pending(&self) -> Vec<Pending<'_>> {
        self.slots
            .iter()
            .map(|(&pos, s)| Pending {
                pos,
                progress: &s.progress,
                due_ms: s.due.map(|(_, ms)| ms),
            })
            .collect()
    }
}

/// Delivers one trigger's or subscription's events: the one delivery engine's run over a
/// [`Cursor`] (bounded concurrency, per-key order when asked, retries on a timer, dead letters,
/// replies), saving where it stands through the cursor.
#[derive(Clone)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<TriggerShared>,
    pub(crate) group: Arc<dyn ConsumerGroup>,
    pub(crate) engine: DeliveryEngine,
    pub(crate) publisher: Publisher,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    /// The trigger's `evmesh.dev/replay-from` annotation (parsed, and as written).
    pub(crate) replay_from: Option<(ReplayFrom, String)>,
    /// Whether the cursor hands out every record of the log (a log outside the embedded store,
    /// which has no router): the run applies the route's filter itself, and a record that does
    /// not match is done at once.
    pub(crate) filter_records: bool,
}

impl Worker {
    /// Runs the worker under a supervisor: a panic restarts it (with backoff) with a cursor
    /// opened again from the saved progress; meanwhile the trigger is not ready.
    pub(crate) async fn supervised(
        self,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) {
        let commands = Arc::new(tokio::sync::Mutex::new(commands));
        let shared = self.shared.clone();
        let sd = shutdown.clone();
        crate::supervise::supervise(
            format!("delivery worker of {}", self.shared.name),
            move |_restarts| {
                let worker = self.clone();
                let commands = commands.clone();
                let shutdown = sd.clone();
                async move {
                    let cursor = worker.group.open().await?;
                    let mut commands = commands.lock().await;
                    worker.run(cursor, &mut commands, shutdown).await;
                    Ok(())
                }
            },
            move |reason| shared.set_not_ready("worker", Some(reason)),
            shutdown,
        )
        .await
    }

    /// Delivers until shutdown.
    async fn run(
        self,
        mut cursor: Box<dyn Cursor>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) {
        let ordered = self.shared.order == DeliveryOrder::Ordered;
        // Ordered per partition (Kafka) rather than per partition key.
        let by_partition = ordered && cursor.orders_by_partition();
        let mut st = State::default();
        for e in cursor.restored() {
            let due = e.due_ms.map(|ms| (instant_from_unix_ms(ms), ms));
            // Ordered mode needs the key: read the event now (at most max_in_flight reads).
            let (event, lane) = if by_partition {
                (None, Some(Lane::Partition(e.pos.partition)))
            } else if ordered {
                match cursor.load(e.pos).await {
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
                e.pos,
                Slot {
                    event,
                    progress: e.progress,
                    due,
                    running: false,
                    lane,
                },
            );
        }
        // Each attempt is a task of its own, so one route's deliveries (HTTP client work, reply
        // routing) spread over the runtime's threads; this task keeps the bookkeeping. Dropping
        // the set (replay, drain timeout, end of the run) aborts the attempts still in it.
        let mut attempts: JoinSet<AttemptResult> = JoinSet::new();
        if let Some((from, text)) = self.replay_from.clone()
            && cursor.applied_tag() != Some(text.as_str())
        {
            match self
                .replay(&mut st, cursor.as_mut(), from, Some(text.clone()))
                .await
            {
                Ok(at) => {
                    tracing::info!(trigger = %self.shared.name, offset = at.offset, "positioned by {} {text}", evmesh_config::REPLAY_FROM_ANNOTATION)
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
        // A run starts with work (restored deliveries, a catch-up read) until it says otherwise.
        self.shared.new_work();
        // The timer and the wake-up are kept across turns of the loop (a turn per finished
        // attempt or new event): made again only when they fired or the time moved, not
        // registered and dropped again at every turn.
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        let mut wakeup = cursor.wakeup();
        let mut stop_signal = {
            let mut shutdown = shutdown.clone();
            Box::pin(async move {
                // Fires once shutdown was asked for (or its sender is gone).
                let _ = shutdown.changed().await;
            })
        };
        loop {
            let now = Instant::now();
            // Read before taking: work queued after this makes the "settled" below stale.
            let work = self.shared.work.load(Ordering::Acquire);
            // Start attempts that are due (restored, retry wait over, or first in their lane).
            if scan && !stopping {
                let mut start = Vec::new();
                for (&pos, slot) in st.slots.iter() {
                    if !slot.running
                        && slot.due.is_none_or(|(d, _)| d <= now)
                        && st.first_in_lane(pos, slot.lane.as_ref())
                    {
                        start.push(pos);
                    }
                }
                for pos in start {
                    if let Some(slot) = st.slots.get_mut(&pos) {
                        slot.running = true;
                        if slot.due.take().is_some() {
                            st.due_count -= 1;
                        }
                        attempts.spawn(self.attempt(
                            cursor.as_ref(),
                            pos,
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
                let next = cursor.next().await;
                let discarded = cursor.take_discarded();
                if discarded > 0 {
                    self.shared.counters.discarded(discarded);
                }
                let Some((pos, event)) = next else {
                    break;
                };
                dirty = true;
                let event = if self.filter_records {
                    let event = match event {
                        Some(e) => Some(e),
                        None => cursor.load(pos).await.ok(),
                    };
                    if event
                        .as_ref()
                        .is_some_and(|e| !e.passes(&self.shared.filter()))
                    {
                        // Not for this route: done (the next save reports it).
                        continue;
                    }
                    event
                } else {
                    event
                };
                let (event, lane) = match (ordered, event) {
                    (false, event) => (event, None),
                    (true, event) if by_partition => (event, Some(Lane::Partition(pos.partition))),
                    (true, Some(e)) => {
                        let lane = lane_of(&e);
                        (Some(e), Some(lane))
                    }
                    (true, None) => match cursor.load(pos).await {
                        Ok(e) => {
                            let lane = lane_of(&e);
                            (Some(e), Some(lane))
                        }
                        Err(_) => (None, Some(Lane::NoKey)),
                    },
                };
                let mut slot = Slot {
                    event,
                    progress: Progress::default(),
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
                    attempts.spawn(self.attempt(
                        cursor.as_ref(),
                        pos,
                        slot.event.clone(),
                        slot.progress.clone(),
                        shutdown.clone(),
                    ));
                }
                st.insert(pos, slot);
            }
            if stopping && attempts.is_empty() {
                break;
            }
            if !stopping && st.slots.is_empty() && attempts.is_empty() && cursor.caught_up() {
                self.shared.settled_at.store(work, Ordering::Release);
            }
            // Idle, and the log moved past our position (events this route does not match):
            // save the new position, so retention is not pinned at our last match.
            if !dirty && st.slots.is_empty() && cursor.passed_by() {
                dirty = true;
            }
            if dirty && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                cursor.save(&st.pending());
                dirty = false;
                last_checkpoint = Instant::now();
            }
            // An injected panic comes where all progress is saved, so a test can tell a resume
            // from the checkpoint from a re-delivery.
            #[cfg(feature = "fault-injection")]
            if !dirty {
                self.shared.injected_panic();
            }
            // Only slots not running can be due (none while every slot is running: no scan).
            let waiting = st.slots.len() > attempts.len();
            let next_due = waiting
                .then(|| {
                    st.slots
                        .values()
                        .filter(|s| !s.running)
                        .filter_map(|s| s.due.map(|(d, _)| d))
                        .min()
                })
                .flatten()
                .into_iter()
                .chain(cursor.wake_at())
                .min();
            let sleep_until = match (dirty, next_due) {
                (true, Some(d)) => d.min(last_checkpoint + CHECKPOINT_EVERY),
                (true, None) => last_checkpoint + CHECKPOINT_EVERY,
                (false, Some(d)) => d,
                (false, None) => now + IDLE_RECHECK,
            };
            let drain_deadline = drain_at.unwrap_or(now + Duration::from_secs(3600));
            let sleep_until = tokio::time::Instant::from_std(sleep_until);
            if timer.deadline() != sleep_until || timer.is_elapsed() {
                timer.as_mut().reset(sleep_until);
            }
            tokio::select! {
                Some(ended) = attempts.join_next(), if !attempts.is_empty() => {
                    dirty = true;
                    // Take every attempt that has ended, not one per turn of the loop.
                    let mut ended = Some(ended);
                    while let Some(result) = ended.take().or_else(|| attempts.try_join_next()) {
                        let (pos, event, progress, end) = match result {
                            Ok(r) => r,
                            // A panic in an attempt is the worker's: its supervisor restarts it.
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            // Aborted: only when the set is dropped, which ends its attempts.
                            Err(_) => continue,
                        };
                        if self.finish(&mut st, cursor.as_mut(), pos, event, progress, end) && ordered {
                            // The next slot of its lane may run now.
                            scan = true;
                        }
                    }
                }
                _ = &mut timer => { scan = true; }
                _ = &mut wakeup, if !stopping => { wakeup = cursor.wakeup(); }
                Some(cmd) = commands.recv(), if !stopping => {
                    match cmd {
                        Command::Replay { done, annotation: Some(text), .. }
                            if cursor.applied_tag() == Some(text.as_str()) =>
                        {
                            // This annotation value was applied before: nothing to do.
                            let _ = done.send(Ok(cursor.position().offset));
                        }
                        Command::Replay { from, annotation, done } => {
                            let result = self.replay(&mut st, cursor.as_mut(), from, annotation).await;
                            if result.is_ok() {
                                // In-flight attempts of the old position are abandoned.
                                attempts = JoinSet::new();
                                last_checkpoint = Instant::now();
                                dirty = false;
                                scan = true;
                            }
                            let _ = done.send(result.map(|p| p.offset));
                        }
                    }
                }
                _ = &mut stop_signal, if !stopping => {
                    stopping = true;
                    drain_at = Some(Instant::now() + self.drain_timeout);
                }
                _ = tokio::time::sleep_until(drain_deadline.into()), if stopping => {
                    tracing::warn!(trigger = %self.shared.name, "drain timeout: {} deliveries still in flight are resumed after restart", attempts.len());
                    break;
                }
            }
        }
        cursor.save(&st.pending());
        cursor.close().await;
    }

    /// Positions the run at `from`: drops pending deliveries and lets the cursor seek (it saves
    /// the new position before answering).
    async fn replay(
        &self,
        st: &mut State,
        cursor: &mut dyn Cursor,
        from: ReplayFrom,
        annotation: Option<String>,
    ) -> Result<Pos, String> {
        self.shared.new_work();
        let at = cursor.seek(from, annotation).await?;
        let dropped = st.slots.len();
        *st = State::default();
        self.shared
            .low_watermark
            .store(at.offset, Ordering::Release);
        tracing::info!(trigger = %self.shared.name, from = %from, offset = at.offset, dropped, "replay");
        Ok(at)
    }

    /// Applies an attempt's end; returns whether the slot is complete (and was removed). A
    /// delivery that will be retried is parked with the cursor; one that is complete unparked.
    fn finish(
        &self,
        st: &mut State,
        cursor: &mut dyn Cursor,
        pos: Pos,
        event: Option<Arc<EventRecord>>,
        mut progress: Progress,
        end: AttemptEnd,
    ) -> bool {
        let Some(slot) = st.slots.get_mut(&pos) else {
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
        // What the log lines name (made only for a dead letter or a drop).
        let id = |slot: &Slot| {
            slot.event
                .as_deref()
                .map(delivery::describe)
                .unwrap_or_default()
        };
        match end {
            AttemptEnd::Next(Next::Done { .. }) => {
                if slot.progress.phase == delivery::Phase::DeadLetter {
                    self.shared.counters.dead_lettered();
                    let plan = self.shared.plan();
                    let dls = plan.dead_letter.as_ref().map(delivery::redact);
                    self.shared.counters.log_dead_lettered(
                        &id(slot),
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
                if slot.due.replace((Instant::now() + wait, due_ms)).is_none() {
                    st.due_count += 1;
                }
                cursor.park(pos, &slot.progress, Some(due_ms));
                self.report_pending_retries(st);
                return false;
            }
            AttemptEnd::Next(Next::Dropped(f)) => {
                self.shared.counters.dropped();
                self.shared.counters.log_dropped(&id(slot), &f);
            }
            AttemptEnd::Abandoned => return false,
            AttemptEnd::Gone(reason) => {
                self.shared.counters.dropped();
                tracing::error!(trigger = %self.shared.name, offset = pos.offset, "event dropped: {reason}");
            }
        }
        st.remove(pos);
        cursor.unpark(pos);
        self.report_pending_retries(st);
        true
    }

    fn report_pending_retries(&self, st: &State) {
        self.shared.counters.pending_retries(st.due_count);
    }

    fn attempt(
        &self,
        cursor: &dyn Cursor,
        pos: Pos,
        event: Option<Arc<EventRecord>>,
        mut progress: Progress,
        stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = AttemptResult> + Send + 'static {
        let loading = event.is_none().then(|| cursor.load(pos));
        let engine = self.engine.clone();
        let shared = self.shared.clone();
        let publisher = self.publisher.clone();
        async move {
            let event = match (event, loading) {
                (Some(e), _) => e,
                (None, Some(loading)) => match loading.await {
                    Ok(e) => e,
                    Err(reason) => return (pos, None, progress, AttemptEnd::Gone(reason)),
                },
                (None, None) => {
                    return (
                        pos,
                        None,
                        progress,
                        AttemptEnd::Gone("event not available".into()),
                    );
                }
            };
            // The delivery itself (the HTTP client's state, some 3 KB) in a box of its own, so
            // the task's future stays small: tokio copies a task's cell, as large as its future,
            // when it spawns it, when it stores the output and when it hands that to the worker.
            Box::pin(async move {
                let plan = shared.plan();
                let plan = &*plan;
                let local = progress.url(plan).and_then(|u| engine.local_sinks().get(u));
                let mut outcome = match local {
                    None => engine.attempt(plan, &progress, &event).await,
                    Some(sink) => tokio::select! {
                        o = engine.attempt(plan, &progress, &event) => o,
                        _ = abandon_when_stopping(sink, stop) => {
                            return (pos, Some(event), progress, AttemptEnd::Abandoned);
                        }
                    },
                };
                if let Outcome::Delivered { reply: Some(reply) } = outcome {
                    // The reply must be stored (or handed on) before the delivery counts as done; if
                    // that fails, the whole delivery is tried again (as Knative's dispatcher does).
                    outcome = route_reply(&engine, &publisher, plan, *reply, &event).await;
                }
                if let Outcome::Failed(f) = &outcome {
                    tracing::debug!(trigger = %shared.name, offset = pos.offset, status = ?f.status, "attempt failed: {}", f.reason);
                }
                let next = progress.next(plan, outcome);
                (pos, Some(event), progress, AttemptEnd::Next(next))
            })
            .await
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
                local: e.local,
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

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn record(id: &str) -> EventRecord {
        let event = EventBuilderV10::new()
            .id(id)
            .source("test")
            .ty("t")
            .build()
            .expect("event");
        EventRecord::from_event(event).expect("record")
    }

    fn offsets(taken: &[(Offset, Arc<EventRecord>, usize)]) -> Vec<Offset> {
        taken.iter().map(|(o, _, _)| *o).collect()
    }

    #[test]
    fn tail_hands_over_consecutive_offsets_and_forgets_what_the_router_passed() {
        let tail = Tail::default();
        for o in [3, 4, 6] {
            tail.push(o, record(&o.to_string()), 100);
        }
        // 5 is not there (its append has not come back yet): 3 and 4 only, in order.
        let taken = tail.take_from(3, 10);
        assert_eq!(offsets(&taken), vec![3, 4]);
        assert_eq!(cloudevents::AttributesReader::id(taken[1].1.event()), "4");
        // Still not there: the router reads 5 from the store.
        assert!(tail.take_from(5, 10).is_empty());
        // A late push below where the router stands is forgotten, never handed over.
        tail.push(2, record("2"), 100);
        assert_eq!(offsets(&tail.take_from(6, 10)), vec![6]);
        let inner = tail.inner.lock().expect("lock");
        assert!(inner.events.is_empty());
        assert_eq!(inner.bytes, 0);
    }

    #[test]
    fn tail_takes_at_most_max_and_keeps_the_rest() {
        let tail = Tail::default();
        for o in 0..5 {
            tail.push(o, record("x"), 100);
        }
        assert_eq!(offsets(&tail.take_from(0, 2)), vec![0, 1]);
        assert_eq!(offsets(&tail.take_from(2, 10)), vec![2, 3, 4]);
    }

    #[test]
    fn tail_keeps_no_more_than_its_budget() {
        let tail = Tail {
            budget: event_cost(100) * 2,
            ..Tail::default()
        };
        for o in 0..5 {
            tail.push(o, record("x"), 100);
        }
        // What did not fit is left to the store; the head counts it all the same.
        assert_eq!(tail.head(), Some(5));
        assert_eq!(offsets(&tail.take_from(0, 10)), vec![0, 1]);
    }

    #[test]
    fn tail_awaits_an_offset_stored_before_later_ones_that_were_handed_over() {
        let tail = Tail::default();
        assert!(!tail.awaits(0), "nothing handed over yet");
        tail.push(1, record("b"), 100);
        tail.push(2, record("c"), 100);
        assert!(
            tail.awaits(0),
            "0 is stored (1 and 2 are), its task has not run yet"
        );
        assert!(!tail.awaits(3), "nothing after 3 was handed over");
        tail.push(0, record("a"), 100);
        assert!(!tail.awaits(0), "0 is here now");
        assert_eq!(offsets(&tail.take_from(0, 10)), vec![0, 1, 2]);
    }

    #[test]
    fn tail_sends_the_router_to_the_store_only_for_what_is_not_handed_over() {
        let tail = Tail {
            low: 10,
            ..Tail::default()
        };
        assert_eq!(tail.source_of(0), Source::Store, "nothing handed over yet");
        tail.push(11, record("b"), 100);
        assert_eq!(tail.source_of(3), Source::Store, "stored before the run");
        assert_eq!(
            tail.source_of(10),
            Source::Awaited,
            "stored, hand-over to come"
        );
        assert_eq!(tail.source_of(11), Source::Handed);
        assert_eq!(offsets(&tail.take_from(11, 10)), vec![11]);
        assert_eq!(
            tail.source_of(12),
            Source::Nothing,
            "past the last hand-over: nothing to read"
        );
    }

    #[test]
    fn tail_sends_the_router_to_the_store_for_what_it_skipped() {
        let tail = Tail::default();
        tail.skip(0);
        tail.skip(1);
        assert_eq!(tail.head(), Some(2), "skipped events still move the head");
        assert_eq!(tail.source_of(1), Source::Store);
        tail.push(2, record("c"), 100);
        assert_eq!(tail.source_of(0), Source::Store);
        assert_eq!(offsets(&tail.take_from(2, 10)), vec![2]);
    }

    #[test]
    fn tail_does_not_await_an_offset_it_may_have_left_out_for_its_budget() {
        let tail = Tail {
            budget: event_cost(100) * 2,
            ..Tail::default()
        };
        for o in 1..4 {
            tail.push(o, record("x"), 100);
        }
        // 3 did not fit: it, and 0 (which may be one of those too), are read from the store.
        assert!(!tail.awaits(3));
        assert!(!tail.awaits(0));
    }
}
