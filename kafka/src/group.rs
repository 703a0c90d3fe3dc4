//! A Kafka consumer group as the delivery engine's [`ConsumerGroup`] and [`Cursor`].
//!
//! The consumer lives on its own thread (never on the async runtime: closing a librdkafka
//! consumer can block, rust-rdkafka #509), decodes each record into an event and hands it to the
//! cursor through a bounded queue; when the queue is full it pauses its partitions instead of
//! letting memory grow or missing its polls.
//!
//! Offsets: the delivery run tells the cursor which handed-out records are still pending
//! ([`Cursor::save`]); per partition the cursor stores the first offset not yet done (the
//! committed watermark), which the consumer thread commits (auto-commit of stored offsets, a
//! synchronous commit when partitions are revoked and when it stops). A record is therefore
//! committed only after its delivery finished, whatever order deliveries finish in.
//!
//! On a rebalance the revoked partitions' tracking is dropped: their pending deliveries still
//! finish (the new owner may deliver them again: at-least-once), but they no longer move the
//! watermark of a partition this member does not own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evmesh_broker::log::{BoxFuture, ConsumerGroup, Cursor, Pending, Pos, Restored};
use evmesh_broker::record::EventRecord;
use evmesh_config::ReplayFrom;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc};

use crate::KafkaSettings;
use crate::settings::ms;

/// Records decoded ahead of the delivery run (then the partitions are paused).
const QUEUE: usize = 1024;
/// How long one poll of the consumer thread waits.
const POLL: Duration = Duration::from_millis(50);
/// Offset and watermark requests during a rebalance.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cursor waits for the previous consumer of its group to close.
const CLOSE_WAIT: Duration = Duration::from_secs(15);
/// After this long closing a consumer, the watchdog reports it as stuck.
const CLOSE_WATCHDOG: Duration = Duration::from_secs(10);
/// librdkafka's prefetch buffer per consumer (its default is 64 MiB).
const PREFETCH_KBYTES: u32 = 4096;

/// One Kafka record as read, for a [`Decode`] function.
#[derive(Debug)]
pub struct KafkaRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// The record's timestamp (Unix ms), when it has one.
    pub timestamp_ms: Option<i64>,
}

/// Turns a record into the event to deliver; an error discards the record (logged, counted in
/// [`GroupStatus::skipped`] and in the route's `discarded` counter), as Knative's Kafka
/// dispatcher discards a record that is not a CloudEvent.
pub type Decode = Arc<dyn Fn(&KafkaRecord<'_>) -> Result<EventRecord, String> + Send + Sync>;

/// Where a group starts on a partition it has no committed offset for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialOffset {
    /// The oldest record still in the partition.
    Earliest,
    /// The end of the partition when the group first gets it (committed at once, so records
    /// produced after the group joined are never skipped).
    #[default]
    Latest,
}

/// What a consumer group reads and how.
#[derive(Clone)]
pub struct GroupSpec {
    /// The client settings.
    pub settings: KafkaSettings,
    /// `group.id`.
    pub group_id: String,
    /// Topics read (at most 65536 of them; a position's partition number is
    /// `topic_index << 16 | partition`).
    pub topics: Vec<String>,
    /// Where to start without a committed offset.
    pub initial_offset: InitialOffset,
    /// Record → event.
    pub decode: Decode,
}

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSpec")
            .field("settings", &self.settings)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("initial_offset", &self.initial_offset)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct StatusInner {
    joined: bool,
    assigned: Vec<(String, i32)>,
    error: Option<String>,
    skipped: u64,
}

/// A group's state as its member sees it (for status and readiness).
#[derive(Debug, Default)]
pub struct GroupStatus(Mutex<StatusInner>);

impl GroupStatus {
    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// Whether this member has joined the group and received an assignment (its start position
    /// on each partition is then fixed).
    pub fn joined(&self) -> bool {
        self.with(|s| s.joined)
    }
    /// The partitions assigned to this member now.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.with(|s| s.assigned.clone())
    }
    /// The last error the consumer reported, if any since it last read a record.
    pub fn error(&self) -> Option<String> {
        self.with(|s| s.error.clone())
    }
    /// Records skipped because they could not be decoded.
    pub fn skipped(&self) -> u64 {
        self.with(|s| s.skipped)
    }
}

/// A consumer group on Kafka topics: each [`open`](ConsumerGroup::open) starts a group member
/// (after the previous one of this value has closed).
pub struct KafkaGroup {
    spec: GroupSpec,
    status: Arc<GroupStatus>,
    previous: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaGroup")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl KafkaGroup {
    /// A group reading as `spec` says; nothing connects before [`open`](ConsumerGroup::open).
    pub fn new(spec: GroupSpec) -> KafkaGroup {
        KafkaGroup {
            spec,
            status: Arc::default(),
            previous: Mutex::new(None),
        }
    }

    /// The member's status.
    pub fn status(&self) -> Arc<GroupStatus> {
        self.status.clone()
    }

    /// Waits until the last member opened by this value has closed (bounded by a timeout).
    pub async fn closed(&self) {
        let prev = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = prev {
            let joined = tokio::task::spawn_blocking(move || h.join());
            if tokio::time::timeout(CLOSE_WAIT, joined).await.is_err() {
                tracing::warn!(group = %self.spec.group_id, "the previous consumer did not close in time; starting a new one anyway");
            }
        }
    }

    fn consumer(&self, ctx: GroupContext) -> Result<BaseConsumer<GroupContext>, String> {
        let s = &self.spec;
        let mut c = s.settings.client_config();
        let session = s.settings.session_timeout;
        c.set("group.id", &s.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match s.initial_offset {
                    InitialOffset::Earliest => "earliest",
                    InitialOffset::Latest => "latest",
                },
            )
            .set("session.timeout.ms", ms(session))
            .set("heartbeat.interval.ms", ms(session / 3))
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<GroupContext> = c
            .create_with_context(ctx)
            .map_err(|e| format!("creating the consumer of group {}: {e}", s.group_id))?;
        let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("subscribing group {} to {topics:?}: {e}", s.group_id))?;
        Ok(consumer)
    }
}

impl ConsumerGroup for KafkaGroup {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Cursor>, String>> {
        Box::pin(async move {
            self.closed().await;
            let stores: Stores = Arc::default();
            let ctx = GroupContext {
                status: self.status.clone(),
                events: Mutex::new(Vec::new()),
                stores: stores.clone(),
                initial: self.spec.initial_offset,
                group: self.spec.group_id.clone(),
            };
            let consumer = self.consumer(ctx)?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let notify = Arc::new(Notify::new());
            let stop = Arc::new(AtomicBool::new(false));
            let topics = Arc::new(self.spec.topics.clone());
            let poller = Poller {
                consumer,
                tx,
                notify: notify.clone(),
                stop: stop.clone(),
                decode: self.spec.decode.clone(),
                topics: topics.clone(),
                status: self.status.clone(),
                stores: stores.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("kafka-{}", self.spec.group_id))
                .spawn(move || poller.run())
                .map_err(|e| format!("starting the consumer thread: {e}"))?;
            *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            Ok(Box::new(KafkaCursor {
                rx,
                notify,
                topics,
                handed: HashMap::new(),
                stored: HashMap::new(),
                stores,
                stop,
                status: self.status.clone(),
                discarded: 0,
            }) as Box<dyn Cursor>)
        })
    }
}

/// Offsets to store, per (topic, partition): written by the cursor, applied by the thread.
type Stores = Arc<Mutex<HashMap<(String, i32), i64>>>;

enum Rebalanced {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// What the consumer thread hands the cursor.
enum Item {
    /// A record: its position, and its event (`None`: undecodable, skipped).
    Record {
        pid: u32,
        offset: u64,
        event: Option<Arc<EventRecord>>,
    },
    /// Partitions given up: their tracking is dropped.
    Revoked(Vec<u32>),
}

struct GroupContext {
    status: Arc<GroupStatus>,
    events: Mutex<Vec<Rebalanced>>,
    stores: Stores,
    initial: InitialOffset,
    group: String,
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Stores the watermarks the cursor asked for: each is the next offset to read, as
/// `rd_kafka_offsets_store` takes it (errors: the partition is not assigned any more).
fn apply_stores<C: ConsumerContext>(consumer: &BaseConsumer<C>, stores: &Stores) {
    let pending: Vec<((String, i32), i64)> = stores
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    if pending.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &pending {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::debug!(topic, partition, offset, "offset not stored: {e}");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Typically a partition that was revoked meanwhile; the rest are stored one by one.
        tracing::debug!("storing offsets: {e}");
        for ((topic, partition), offset) in pending {
            let mut one = TopicPartitionList::new();
            if one
                .add_partition_offset(&topic, partition, Offset::Offset(offset))
                .is_ok()
                && let Err(e) = consumer.store_offsets(&one)
            {
                tracing::debug!(topic, partition, offset, "offset not stored: {e}");
            }
        }
    }
}

impl GroupContext {
    /// For `Latest`: commits the end of each newly assigned partition that has no committed
    /// offset, before the assignment takes effect, so the group's start is fixed at the join.
    fn start_at_end(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Result<(), String> {
        let committed = consumer
            .committed_offsets(tpl.clone(), REQUEST_TIMEOUT)
            .map_err(|e| format!("reading committed offsets: {e}"))?;
        let mut commit = TopicPartitionList::new();
        for e in committed.elements() {
            if matches!(
                e.offset(),
                Offset::Invalid | Offset::End | Offset::Beginning
            ) {
                let (_, high) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), REQUEST_TIMEOUT)
                    .map_err(|err| {
                        format!("reading the end of {}/{}: {err}", e.topic(), e.partition())
                    })?;
                commit
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(high))
                    .map_err(|err| err.to_string())?;
            }
        }
        if commit.count() > 0 {
            consumer
                .commit(&commit, CommitMode::Sync)
                .map_err(|e| format!("committing the start offsets: {e}"))?;
        }
        Ok(())
    }
}

impl ClientContext for GroupContext {
    /// Client-wide errors (brokers unreachable, authentication): shown in the status until the
    /// member joins or reads a record.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(group = %self.group, "kafka client: {error}: {reason}");
        self.status.with(|s| s.error = Some(reason.to_string()));
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if self.initial == InitialOffset::Latest
                    && let Err(e) = self.start_at_end(consumer, tpl)
                {
                    tracing::warn!(group = %self.group, "fixing the start at the end of new partitions: {e}");
                }
            }
            Rebalance::Revoke(tpl) => {
                // Commit what is done before the partitions go to another member.
                apply_stores(consumer, &self.stores);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(group = %self.group, "commit on revoke: {e}");
                }
                self.events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Rebalanced::Revoked(list(tpl)));
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, "rebalance error: {e}");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Rebalanced::Assigned(list(tpl)));
        }
    }
}

/// The consumer thread.
struct Poller {
    consumer: BaseConsumer<GroupContext>,
    tx: mpsc::Sender<Item>,
    notify: Arc<Notify>,
    stop: Arc<AtomicBool>,
    decode: Decode,
    topics: Arc<Vec<String>>,
    status: Arc<GroupStatus>,
    stores: Stores,
}

fn pid_of(topics: &[String], topic: &str, partition: i32) -> Option<u32> {
    let t = topics.iter().position(|t| t == topic)?;
    let p = u32::try_from(partition).ok().filter(|p| *p < 1 << 16)?;
    Some((u32::try_from(t).ok()? << 16) | p)
}

impl Poller {
    fn run(self) {
        let group = self.consumer.context().group.clone();
        let mut held: VecDeque<Item> = VecDeque::new();
        let mut paused = false;
        let mut last_error_log: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            apply_stores(&self.consumer, &self.stores);
            if !self.forward(&mut held) {
                break;
            }
            if !held.is_empty() && !paused {
                paused = self.set_paused(true);
            } else if held.is_empty() && paused {
                paused = !self.set_paused(false);
            }
            let polled = self.consumer.poll(POLL);
            let events: Vec<Rebalanced> = std::mem::take(
                &mut *self
                    .consumer
                    .context()
                    .events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for ev in events {
                match ev {
                    Rebalanced::Assigned(parts) => {
                        tracing::info!(group = %group, ?parts, "partitions assigned");
                        self.status.with(|s| {
                            s.joined = true;
                            s.error = None;
                            s.assigned.extend(parts);
                        });
                        if paused {
                            // A new assignment starts unpaused; pause it again below if needed.
                            paused = false;
                        }
                    }
                    Rebalanced::Revoked(parts) => {
                        tracing::info!(group = %group, ?parts, "partitions revoked");
                        let pids: Vec<u32> = parts
                            .iter()
                            .filter_map(|(t, p)| pid_of(&self.topics, t, *p))
                            .collect();
                        held.retain(
                            |i| !matches!(i, Item::Record { pid, .. } if pids.contains(pid)),
                        );
                        held.push_back(Item::Revoked(pids));
                        self.status
                            .with(|s| s.assigned.retain(|a| !parts.contains(a)));
                    }
                }
            }
            match polled {
                None => {}
                Some(Err(e)) => {
                    self.status.with(|s| s.error = Some(e.to_string()));
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(group = %group, "consumer: {e}");
                        last_error_log = Some(Instant::now());
                    }
                }
                Some(Ok(m)) => {
                    tracing::trace!(group = %group, topic = m.topic(), partition = m.partition(), offset = m.offset(), "record");
                    let Some(pid) = pid_of(&self.topics, m.topic(), m.partition()) else {
                        continue;
                    };
                    let headers: Vec<(&str, &[u8])> = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key, h.value.unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let record = KafkaRecord {
                        topic: m.topic(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key(),
                        headers,
                        value: m.payload(),
                        timestamp_ms: m.timestamp().to_millis(),
                    };
                    let event = match (self.decode)(&record) {
                        Ok(e) => Some(Arc::new(e)),
                        Err(e) => {
                            tracing::error!(group = %group, topic = m.topic(), partition = m.partition(), offset = m.offset(), "invalid record discarded: {e}");
                            self.status.with(|s| s.skipped += 1);
                            None
                        }
                    };
                    self.status.with(|s| s.error = None);
                    held.push_back(Item::Record {
                        pid,
                        offset: u64::try_from(m.offset()).unwrap_or_default(),
                        event,
                    });
                }
            }
            if !self.forward(&mut held) {
                break;
            }
        }
        // Stopping: commit what is done, then close off the runtime under a watchdog.
        apply_stores(&self.consumer, &self.stores);
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(group = %group, "final commit: {e}");
        }
        drop(held);
        let closed = Arc::new(AtomicBool::new(false));
        let watch = closed.clone();
        let g = group.clone();
        let _ = std::thread::Builder::new()
            .name("kafka-close-watchdog".into())
            .spawn(move || {
                std::thread::sleep(CLOSE_WATCHDOG);
                if !watch.load(Ordering::Acquire) {
                    tracing::error!(group = %g, "closing the consumer is stuck (rust-rdkafka #509); its thread is left behind");
                }
            });
        drop(self.consumer);
        closed.store(true, Ordering::Release);
        tracing::debug!(group = %group, "consumer closed");
    }

    /// Hands held items to the cursor while its queue has room; `false` when the cursor is gone.
    fn forward(&self, held: &mut VecDeque<Item>) -> bool {
        let mut sent = false;
        while let Some(item) = held.pop_front() {
            match self.tx.try_send(item) {
                Ok(()) => sent = true,
                Err(mpsc::error::TrySendError::Full(item)) => {
                    held.push_front(item);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        if sent {
            self.notify.notify_one();
        }
        true
    }

    /// Pauses or resumes the whole assignment; returns whether it worked.
    fn set_paused(&self, pause: bool) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let r = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        drop(assignment);
        r.is_ok()
    }
}

/// A delivery run's view of its group member.
struct KafkaCursor {
    rx: mpsc::Receiver<Item>,
    notify: Arc<Notify>,
    topics: Arc<Vec<String>>,
    /// Per partition: the offset after the last record handed out.
    handed: HashMap<u32, u64>,
    /// Per partition: the watermark last stored.
    stored: HashMap<u32, u64>,
    stores: Stores,
    stop: Arc<AtomicBool>,
    status: Arc<GroupStatus>,
    /// Undecodable records passed over since the run last asked.
    discarded: u64,
}

impl Drop for KafkaCursor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Cursor for KafkaCursor {
    fn restored(&mut self) -> Vec<Restored> {
        // Retry state is in memory (as in Knative's Kafka dispatcher): a restart redelivers
        // from the committed watermark.
        Vec::new()
    }

    fn next(&mut self) -> BoxFuture<'_, Option<(Pos, Option<Arc<EventRecord>>)>> {
        Box::pin(async move {
            loop {
                match self.rx.try_recv() {
                    Ok(Item::Record { pid, offset, event }) => {
                        self.handed.insert(pid, offset + 1);
                        match event {
                            Some(event) => {
                                return Some((
                                    Pos {
                                        partition: pid,
                                        offset,
                                    },
                                    Some(event),
                                ));
                            }
                            // Not an event: discarded (its offset is committed with the next
                            // save), as Knative's Kafka dispatcher discards it.
                            None => self.discarded += 1,
                        }
                    }
                    Ok(Item::Revoked(pids)) => {
                        for pid in pids {
                            self.handed.remove(&pid);
                            self.stored.remove(&pid);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return None,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.status
                            .with(|s| s.error = Some("the consumer thread stopped".into()));
                        return None;
                    }
                }
            }
        })
    }

    fn wake_at(&self) -> Option<Instant> {
        None
    }

    fn wakeup(&self) -> BoxFuture<'static, ()> {
        let notify = self.notify.clone();
        Box::pin(async move { notify.notified().await })
    }

    fn load(&self, pos: Pos) -> BoxFuture<'static, Result<Arc<EventRecord>, String>> {
        Box::pin(async move {
            Err(format!(
                "record {}/{} is not kept by the Kafka cursor",
                pos.partition, pos.offset
            ))
        })
    }

    fn save(&mut self, pending: &[Pending<'_>]) {
        let mut low = self.handed.clone();
        for p in pending {
            if let Some(w) = low.get_mut(&p.pos.partition) {
                *w = (*w).min(p.pos.offset);
            }
        }
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        for (pid, offset) in low {
            if self.stored.get(&pid) == Some(&offset) {
                continue;
            }
            let topic = self.topics.get((pid >> 16) as usize);
            let (Some(topic), Ok(off)) = (topic, i64::try_from(offset)) else {
                continue;
            };
            self.stored.insert(pid, offset);
            stores.insert((topic.clone(), (pid & 0xffff) as i32), off);
        }
    }

    fn seek(&mut self, to: ReplayFrom, _tag: Option<String>) -> BoxFuture<'_, Result<Pos, String>> {
        Box::pin(async move {
            Err(format!(
                "replay ({to}) is not supported on a Kafka consumer group yet"
            ))
        })
    }

    fn applied_tag(&self) -> Option<&str> {
        None
    }

    fn orders_by_partition(&self) -> bool {
        true
    }

    fn take_discarded(&mut self) -> u64 {
        std::mem::take(&mut self.discarded)
    }

    fn position(&self) -> Pos {
        let (partition, offset) = self
            .handed
            .iter()
            .min()
            .map(|(p, o)| (*p, *o))
            .unwrap_or((0, 0));
        Pos { partition, offset }
    }
}
