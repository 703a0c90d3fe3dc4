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
//!
//! Replay ([`Cursor::seek`]): the member repositions every partition it owns (`earliest`: the
//! partition's first offset; a time: `offsets_for_times`) and commits the new offset. The replay
//! generation (when it was asked, and the `evmesh.dev/replay-from` value it applies) is kept per
//! partition as the committed offset of a companion group, `<group>.evmesh-replay` (a marker, not
//! a position: Tansu, the Kafka-protocol broker of the tests, drops offset-commit metadata). A
//! member later assigned a partition whose marker predates a replay it knows of applies that
//! replay to the partition too, so a replay reaches partitions owned by another process when they
//! move, and an annotation value every process applies is applied once per partition.

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
    /// Records `text` as the error to show for `error`, reported by librdkafka's error callback
    /// (`from_client`: with a reason such as "SASL authentication error: ..." or "SSL handshake
    /// failed: ... certificate verify failed") or by a poll (only a code). The status keeps
    /// saying why: a poll's bare code and "all brokers are down", which follow the failure that
    /// brought the brokers down, do not replace an error already noted.
    fn note_error(&self, error: &rdkafka::error::KafkaError, text: String, from_client: bool) {
        let generic = !from_client
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
        self.with(|s| {
            if !(generic && s.error.is_some()) {
                s.error = Some(text);
            }
        });
    }
}

/// Bits of a replay marker that identify the annotation value a replay applied.
const TAG_BITS: u32 = 21;

/// The companion group that keeps each partition's replay marker.
fn replay_group_of(group: &str) -> String {
    format!("{group}.evmesh-replay")
}

/// A replay this process knows of: where to, when it was asked, and the `evmesh.dev/replay-from`
/// value it applies (`None`: asked through the API).
#[derive(Clone, Debug)]
struct Generation {
    from: ReplayFrom,
    at_ms: u64,
    annotation: Option<String>,
}

/// The replay a partition was last positioned by, as kept in the companion group: when it was
/// asked and which annotation value it carried (0: none), packed into one positive offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marker {
    at_ms: u64,
    tag: u32,
}

impl Marker {
    fn encode(self) -> i64 {
        // Milliseconds fit in 42 bits until the year 2109.
        let ms = self.at_ms & ((1 << (63 - TAG_BITS)) - 1);
        i64::try_from((ms << TAG_BITS) | u64::from(self.tag)).unwrap_or(i64::MAX)
    }

    fn decode(offset: &Offset) -> Option<Marker> {
        match offset {
            Offset::Offset(v) if *v > 0 => {
                let v = v.unsigned_abs();
                Some(Marker {
                    at_ms: v >> TAG_BITS,
                    tag: u32::try_from(v & ((1 << TAG_BITS) - 1)).unwrap_or(0),
                })
            }
            _ => None,
        }
    }
}

/// Partitions and the offsets a replay moves them to.
type Moved = Vec<((String, i32), i64)>;

/// A stable tag (1 ..= 2^21 - 1) of an annotation value: FNV-1a, the same in every process.
fn annotation_tag(text: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(h % ((1 << TAG_BITS) - 1)).unwrap_or(0) + 1
}

impl Generation {
    /// Whether a partition whose marker is `marker` still needs this replay: an annotation value
    /// is applied once per partition; a replay asked through the API to partitions positioned
    /// before it was asked.
    fn needed_by(&self, marker: Option<Marker>) -> bool {
        match (&self.annotation, marker) {
            (_, None) => true,
            (Some(text), Some(m)) => m.tag != annotation_tag(text),
            (None, Some(m)) => m.at_ms < self.at_ms,
        }
    }

    /// The marker a partition gets once this replay is applied to it.
    fn marker(&self, previous: Option<Marker>) -> Marker {
        Marker {
            at_ms: self.at_ms,
            tag: self
                .annotation
                .as_deref()
                .map(annotation_tag)
                .or(previous.map(|m| m.tag))
                .unwrap_or(0),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Records a replay by time skips on a partition: those before `until` (the partition's end when
/// it was repositioned) appended before `time_ms`, until the first one at or after it. Kafka's
/// time index answers exactly; this guards against a broker that answers too early (Tansu 0.6
/// answers offset 0 for a time after the partition's last record).
#[derive(Clone, Copy, Debug)]
struct Skip {
    until: i64,
    time_ms: i64,
}

/// What a group's members share about replays (kept across the group's runs in this process).
#[derive(Default)]
struct Replays {
    /// The last replay this process asked of the group.
    known: Mutex<Option<Generation>>,
    /// The last `evmesh.dev/replay-from` value this process applied to the group.
    applied: Mutex<Option<String>>,
    /// Per partition being replayed by time: records to skip.
    skips: Mutex<HashMap<(String, i32), Skip>>,
}

impl Replays {
    fn known(&self) -> Option<Generation> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where a replay moves the partitions of `parts` that still need it: the new offsets (to
/// commit) and the companion group's markers (to commit after them). `side` is a client of the
/// companion group.
fn reposition<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    side: &BaseConsumer,
    generation: &Generation,
    parts: &[(String, i32)],
    skips: &Mutex<HashMap<(String, i32), Skip>>,
) -> Result<(Moved, TopicPartitionList), String> {
    let mut query = TopicPartitionList::new();
    for (t, p) in parts {
        query.add_partition(t, *p);
    }
    let markers = side
        .committed_offsets(query, REQUEST_TIMEOUT)
        .map_err(|e| format!("reading replay markers: {e}"))?;
    let marks: HashMap<(String, i32), Option<Marker>> = markers
        .elements()
        .iter()
        .map(|e| {
            (
                (e.topic().to_string(), e.partition()),
                Marker::decode(&e.offset()),
            )
        })
        .collect();
    drop(markers);
    let mut moved = Vec::new();
    let mut new_marks = TopicPartitionList::new();
    for (t, p) in parts {
        let marker = marks.get(&(t.clone(), *p)).copied().flatten();
        if !generation.needed_by(marker) {
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(t, *p, REQUEST_TIMEOUT)
            .map_err(|e| format!("reading the offsets of {t}/{p}: {e}"))?;
        let target = match generation.from {
            ReplayFrom::Earliest => low,
            ReplayFrom::TimeMs(ms) => {
                let time_ms = i64::try_from(ms).unwrap_or(i64::MAX);
                let at = offset_at_time(consumer, t, *p, time_ms)
                    .map_err(|e| format!("{e} ({})", generation.from))?
                    .map_or(high, |o| o.clamp(low, high));
                let mut skips = skips.lock().unwrap_or_else(|e| e.into_inner());
                if at < high {
                    skips.insert(
                        (t.clone(), *p),
                        Skip {
                            until: high,
                            time_ms,
                        },
                    );
                } else {
                    skips.remove(&(t.clone(), *p));
                }
                at
            }
        };
        if generation.from == ReplayFrom::Earliest {
            skips
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(t.clone(), *p));
        }
        moved.push(((t.clone(), *p), target));
        new_marks
            .add_partition_offset(t, *p, Offset::Offset(generation.marker(marker).encode()))
            .map_err(|e| e.to_string())?;
    }
    Ok((moved, new_marks))
}

/// What the time index of `topic`/`partition` answers for `time_ms` (unix milliseconds): the
/// first offset appended at or after it, `None` when it knows none. Kafka answers exactly; Tansu
/// 0.6 answers offset 0 for a time after the partition's last record, so each caller guards the
/// answer (a group's start reads the last record's time first, a replay skips older records).
pub(crate) fn offset_at_time<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    time_ms: i64,
) -> Result<Option<i64>, String> {
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(topic, partition, Offset::Offset(time_ms))
        .map_err(|e| e.to_string())?;
    let found = consumer
        .offsets_for_times(q, REQUEST_TIMEOUT)
        .map_err(|e| format!("finding the offset of {topic}/{partition} by time: {e}"))?;
    let at = found.elements().first().map(|e| e.offset());
    Ok(match at {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    })
}

/// Commits `offsets` for `consumer`'s group.
fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[((String, i32), i64)],
) -> Result<(), String> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|e| e.to_string())?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| format!("committing the replay's offsets: {e}"))
}

/// A consumer group on Kafka topics: each [`open`](ConsumerGroup::open) starts a group member
/// (after the previous one of this value has closed).
pub struct KafkaGroup {
    spec: GroupSpec,
    status: Arc<GroupStatus>,
    previous: Mutex<Option<std::thread::JoinHandle<()>>>,
    replays: Arc<Replays>,
    appends: Option<Appends>,
}

/// Per partition (a position's partition number), the offset after the last record this
/// process appended to the log a group reads: what a cursor must have handed out to be caught up.
pub(crate) type Appends = Arc<Mutex<HashMap<u32, u64>>>;

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
            replays: Arc::default(),
            appends: None,
        }
    }

    /// Lets its cursors tell when they are caught up ([`Cursor::caught_up`]): they have handed
    /// out everything this process appended (`appends`) on the partitions they own.
    pub(crate) fn tracking_appends(mut self, appends: Appends) -> KafkaGroup {
        self.appends = Some(appends);
        self
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
                settings: self.spec.settings.clone(),
                replays: self.replays.clone(),
                side: Mutex::new(None),
                starts: Mutex::new(HashMap::new()),
            };
            let consumer = self.consumer(ctx)?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let notify = Arc::new(Notify::new());
            let stop = Arc::new(AtomicBool::new(false));
            let topics = Arc::new(self.spec.topics.clone());
            let (seek_tx, seek_rx) = std::sync::mpsc::channel();
            let poller = Poller {
                seeks: seek_rx,
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
            let applied = self
                .replays
                .applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(Box::new(KafkaCursor {
                rx,
                front: VecDeque::new(),
                seeks: seek_tx,
                replays: self.replays.clone(),
                applied,
                appends: self.appends.clone(),
                ends: HashMap::new(),
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
    /// A record a replay by time skips (appended before the time): done, not delivered.
    Skipped { pid: u32, offset: u64 },
    /// Partitions assigned, with where each starts.
    Assigned(Vec<(u32, Start)>),
    /// A replay was applied (every owned partition and where it resumes), or why not; records
    /// handed before it are of the old position.
    Sought(Result<Vec<(u32, Start)>, String>),
}

/// Where a member starts reading a partition, and the partition's end then: once it has handed
/// out everything up to that end (and what this process appended since), it is caught up.
#[derive(Clone, Copy, Debug)]
struct Start {
    offset: u64,
    end: u64,
}

/// Where each of `parts` starts for `consumer` (its committed offset) and ends now (partitions
/// without a committed offset are left out).
fn starts_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[(String, i32)],
) -> Result<Vec<(String, i32, Start)>, String> {
    let mut query = TopicPartitionList::new();
    for (t, p) in parts {
        query.add_partition(t, *p);
    }
    let committed = consumer
        .committed_offsets(query, REQUEST_TIMEOUT)
        .map_err(|e| format!("reading committed offsets: {e}"))?;
    let offsets: Vec<(String, i32, i64)> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
            _ => None,
        })
        .collect();
    drop(committed);
    let mut starts = Vec::new();
    for (t, p, o) in offsets {
        let (_, high) = consumer
            .fetch_watermarks(&t, p, REQUEST_TIMEOUT)
            .map_err(|e| format!("reading the end of {t}/{p}: {e}"))?;
        starts.push((
            t,
            p,
            Start {
                offset: u64::try_from(o).unwrap_or_default(),
                end: u64::try_from(high).unwrap_or_default(),
            },
        ));
    }
    Ok(starts)
}

struct GroupContext {
    status: Arc<GroupStatus>,
    events: Mutex<Vec<Rebalanced>>,
    stores: Stores,
    initial: InitialOffset,
    group: String,
    settings: KafkaSettings,
    replays: Arc<Replays>,
    /// A client of the companion group that keeps replay markers (made when first needed).
    side: Mutex<Option<BaseConsumer>>,
    /// Committed offsets of partitions being assigned (where they start), for the cursor.
    starts: Mutex<HashMap<(String, i32), Start>>,
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

impl GroupContext {
    fn with_side<T>(
        &self,
        f: impl FnOnce(&BaseConsumer) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut side = self.side.lock().unwrap_or_else(|e| e.into_inner());
        if side.is_none() {
            let mut c = self.settings.client_config();
            c.set("group.id", replay_group_of(&self.group))
                .set("enable.auto.commit", "false");
            *side = Some(
                c.create()
                    .map_err(|e| format!("creating the replay marker client: {e}"))?,
            );
        }
        match side.as_ref() {
            Some(s) => f(s),
            None => Err("no replay marker client".into()),
        }
    }

    /// Applies `generation` to the partitions of `parts` that still need it: commits their new offsets,
    /// then their markers. Returns the partitions moved and where to.
    fn apply_replay(
        &self,
        consumer: &BaseConsumer<Self>,
        generation: &Generation,
        parts: &[(String, i32)],
    ) -> Result<Moved, String> {
        self.with_side(|side| {
            let (moved, marks) = reposition(consumer, side, generation, parts, &self.replays.skips)?;
            commit_offsets(consumer, &moved)?;
            let marked = if marks.count() > 0 {
                side.commit(&marks, CommitMode::Sync)
                    .map_err(|e| format!("committing replay markers: {e}"))
            } else {
                Ok(())
            };
            drop(marks);
            marked?;
            if !moved.is_empty() {
                tracing::info!(group = %self.group, from = %generation.from, ?moved, "replay applied");
            }
            Ok(moved)
        })
    }

    /// Notes where each partition of `tpl` starts, for the cursor.
    fn record_starts(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        match starts_of(consumer, &list(tpl)) {
            Ok(found) => {
                let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
                for (t, p, start) in found {
                    starts.insert((t, p), start);
                }
            }
            Err(e) => tracing::debug!(group = %self.group, "reading where partitions start: {e}"),
        }
    }
}

impl ClientContext for GroupContext {
    /// Client-wide errors (brokers unreachable, authentication): shown in the status until the
    /// member joins or reads a record.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(group = %self.group, "kafka client: {error}: {reason}");
        self.status.note_error(&error, reason.to_string(), true);
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
                // A replay this process knows of reaches the partitions it is given too.
                if let Some(generation) = self.replays.known()
                    && let Err(e) = self.apply_replay(consumer, &generation, &list(tpl))
                {
                    tracing::warn!(group = %self.group, from = %generation.from, "replay not applied to new partitions: {e}");
                }
                self.record_starts(consumer, tpl);
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
    seeks: std::sync::mpsc::Receiver<Generation>,
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
            while let Ok(generation) = self.seeks.try_recv() {
                let result = self.seek_now(&generation, &mut held);
                held.push_back(Item::Sought(result));
            }
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
                        let starts: Vec<(u32, Start)> = {
                            let mut starts = self
                                .consumer
                                .context()
                                .starts
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            parts
                                .iter()
                                .filter_map(|(t, p)| {
                                    let start = starts.remove(&(t.clone(), *p))?;
                                    Some((pid_of(&self.topics, t, *p)?, start))
                                })
                                .collect()
                        };
                        held.push_back(Item::Assigned(starts));
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
                        {
                            let ctx = self.consumer.context();
                            let mut skips =
                                ctx.replays.skips.lock().unwrap_or_else(|e| e.into_inner());
                            for part in &parts {
                                skips.remove(part);
                            }
                        }
                        self.status
                            .with(|s| s.assigned.retain(|a| !parts.contains(a)));
                    }
                }
            }
            match polled {
                None => {}
                Some(Err(e)) => {
                    self.status.note_error(&e, e.to_string(), false);
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
                    if self.skipped_by_replay(
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis(),
                    ) {
                        held.push_back(Item::Skipped {
                            pid,
                            offset: u64::try_from(m.offset()).unwrap_or_default(),
                        });
                        continue;
                    }
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

    /// Whether a replay by time skips this record (appended before the time; see [`Skip`]).
    fn skipped_by_replay(&self, topic: &str, partition: i32, offset: i64, ts: Option<i64>) -> bool {
        let ctx = self.consumer.context();
        let mut skips = ctx.replays.skips.lock().unwrap_or_else(|e| e.into_inner());
        if skips.is_empty() {
            return false;
        }
        let key = (topic.to_string(), partition);
        match skips.get(&key) {
            None => false,
            Some(s) if offset < s.until && ts.is_some_and(|ts| ts < s.time_ms) => true,
            Some(_) => {
                // The first record at or after the time: from here on everything is delivered.
                skips.remove(&key);
                false
            }
        }
    }

    /// Applies a replay to every partition this member owns: those that need it move (see
    /// [`reposition`]), the others go back to their committed offset (the run dropped its
    /// pending deliveries: those are read again). Records read ahead are dropped.
    fn seek_now(
        &self,
        generation: &Generation,
        held: &mut VecDeque<Item>,
    ) -> Result<Vec<(u32, Start)>, String> {
        // What the run reported done is committed first.
        apply_stores(&self.consumer, &self.stores);
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!("commit before a replay: {e}");
        }
        let parts = {
            let assignment = self
                .consumer
                .assignment()
                .map_err(|e| format!("reading the assignment: {e}"))?;
            let parts = list(&assignment);
            drop(assignment);
            parts
        };
        if parts.is_empty() {
            // Nothing owned yet: partitions assigned later get the replay on assignment.
            return Ok(Vec::new());
        }
        let ctx = self.consumer.context();
        ctx.apply_replay(&self.consumer, generation, &parts)?;
        let targets = starts_of(&self.consumer, &parts)?;
        let mut store = TopicPartitionList::new();
        for (t, p, start) in &targets {
            let o = i64::try_from(start.offset).map_err(|e| e.to_string())?;
            store
                .add_partition_offset(t, *p, Offset::Offset(o))
                .map_err(|e| e.to_string())?;
        }
        // Stored offsets follow, or auto-commit would write the old position back.
        let stored = self.consumer.store_offsets(&store);
        drop(store);
        if let Err(e) = stored {
            tracing::debug!("storing the replay's offsets: {e}");
        }
        let mut sought = Vec::new();
        for (t, p, start) in targets {
            let o = i64::try_from(start.offset).map_err(|e| e.to_string())?;
            self.consumer
                .seek(&t, p, Offset::Offset(o), REQUEST_TIMEOUT)
                .map_err(|e| format!("seeking {t}/{p} to {o}: {e}"))?;
            if let Some(pid) = pid_of(&self.topics, &t, p) {
                sought.push((pid, start));
            }
        }
        held.retain(|i| matches!(i, Item::Revoked(_) | Item::Assigned(_)));
        Ok(sought)
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
    /// Items taken off `rx` and put back (a replay that failed), read before `rx`.
    front: VecDeque<Item>,
    seeks: std::sync::mpsc::Sender<Generation>,
    replays: Arc<Replays>,
    /// The `evmesh.dev/replay-from` value of the last replay this process applied to the group.
    applied: Option<String>,
    appends: Option<Appends>,
    /// Per partition: its end when this member started reading it.
    ends: HashMap<u32, u64>,
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

impl KafkaCursor {
    /// The member (re)starts reading partition `pid` at `start`.
    fn started(&mut self, pid: u32, start: Start) {
        self.handed.insert(pid, start.offset);
        self.stored.insert(pid, start.offset);
        self.ends.insert(pid, start.end);
    }

    /// Applies one item from the consumer thread; a record with an event is returned to deliver.
    fn take(&mut self, item: Item) -> Option<(Pos, Option<Arc<EventRecord>>)> {
        match item {
            Item::Record { pid, offset, event } => {
                self.handed.insert(pid, offset + 1);
                match event {
                    Some(event) => Some((
                        Pos {
                            partition: pid,
                            offset,
                        },
                        Some(event),
                    )),
                    // Not an event: discarded (its offset is committed with the next save), as
                    // Knative's Kafka dispatcher discards it.
                    None => {
                        self.discarded += 1;
                        None
                    }
                }
            }
            Item::Skipped { pid, offset } => {
                self.handed.insert(pid, offset + 1);
                None
            }
            Item::Revoked(pids) => {
                for pid in pids {
                    self.handed.remove(&pid);
                    self.stored.remove(&pid);
                    self.ends.remove(&pid);
                }
                None
            }
            Item::Assigned(starts) => {
                for (pid, start) in starts {
                    self.started(pid, start);
                }
                None
            }
            // Only a seek waits for these.
            Item::Sought(_) => None,
        }
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
                let item = match self.front.pop_front() {
                    Some(item) => item,
                    None => match self.rx.try_recv() {
                        Ok(item) => item,
                        Err(mpsc::error::TryRecvError::Empty) => return None,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            self.status
                                .with(|s| s.error = Some("the consumer thread stopped".into()));
                            return None;
                        }
                    },
                };
                if let Some(record) = self.take(item) {
                    return Some(record);
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

    fn seek(&mut self, to: ReplayFrom, tag: Option<String>) -> BoxFuture<'_, Result<Pos, String>> {
        Box::pin(async move {
            let generation = Generation {
                from: to,
                at_ms: now_ms(),
                annotation: tag.clone(),
            };
            // Known before the consumer thread applies it: a partition assigned meanwhile gets
            // it on assignment.
            *self.replays.known.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(generation.clone());
            if tag.is_some() {
                *self
                    .replays
                    .applied
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = tag.clone();
                self.applied = tag;
            }
            if self.seeks.send(generation).is_err() {
                return Err("the consumer thread stopped".into());
            }
            // Everything read before the replay is of the old position: dropped once it applied.
            let mut before = Vec::new();
            let result = loop {
                let item = match self.front.pop_front() {
                    Some(item) => item,
                    None => match self.rx.recv().await {
                        Some(item) => item,
                        None => break Err("the consumer thread stopped".to_string()),
                    },
                };
                match item {
                    Item::Sought(result) => break result,
                    other => before.push(other),
                }
            };
            match result {
                Ok(sought) => {
                    for item in before {
                        // Rebalances still count; records are of the old position.
                        if !matches!(item, Item::Record { .. } | Item::Skipped { .. }) {
                            self.take(item);
                        }
                    }
                    for (pid, start) in sought {
                        self.started(pid, start);
                    }
                    Ok(self.position())
                }
                Err(e) => {
                    // Nothing moved: what was read is still to be delivered.
                    for item in before.into_iter().rev() {
                        self.front.push_front(item);
                    }
                    Err(e)
                }
            }
        })
    }

    fn applied_tag(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    fn caught_up(&self) -> bool {
        let Some(appends) = &self.appends else {
            return false;
        };
        if !self.front.is_empty() || !self.rx.is_empty() || !self.status.joined() {
            return false;
        }
        let owned: Vec<u32> = self
            .status
            .assigned()
            .iter()
            .filter_map(|(t, p)| pid_of(&self.topics, t, *p))
            .collect();
        // Partitions another member owns are that member's to tell.
        let appends = appends.lock().unwrap_or_else(|e| e.into_inner());
        owned.iter().all(|pid| {
            let end = self
                .ends
                .get(pid)
                .copied()
                .max(appends.get(pid).copied())
                .unwrap_or(0);
            self.handed.get(pid).copied().unwrap_or(0) >= end
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(annotation: Option<&str>, at_ms: u64) -> Generation {
        Generation {
            from: ReplayFrom::Earliest,
            at_ms,
            annotation: annotation.map(str::to_string),
        }
    }

    #[test]
    fn a_replay_marker_round_trips_through_a_committed_offset() {
        let m = Marker {
            at_ms: 1_796_283_182_646,
            tag: annotation_tag("earliest"),
        };
        assert!(m.encode() > 0);
        assert_eq!(Marker::decode(&Offset::Offset(m.encode())), Some(m));
        assert_eq!(Marker::decode(&Offset::Invalid), None);
        assert_eq!(Marker::decode(&Offset::Offset(0)), None);
    }

    #[test]
    fn an_annotation_value_is_applied_once_per_partition_and_an_api_replay_to_older_positions() {
        let none = None;
        let by_annotation = replay(Some("earliest"), 2_000).marker(none);
        // An annotation value: needed until a partition carries it, whenever it was applied.
        assert!(replay(Some("earliest"), 1_000).needed_by(none));
        assert!(!replay(Some("earliest"), 9_000).needed_by(Some(by_annotation)));
        assert!(replay(Some("2026-01-01T00:00:00Z"), 1_000).needed_by(Some(by_annotation)));
        // Through the API: needed where the partition was positioned before it was asked.
        assert!(replay(None, 3_000).needed_by(Some(by_annotation)));
        assert!(!replay(None, 1_000).needed_by(Some(by_annotation)));
        // An API replay keeps the annotation value the partition carries.
        let after = replay(None, 3_000).marker(Some(by_annotation));
        assert_eq!(after.tag, by_annotation.tag);
        assert!(!replay(Some("earliest"), 9_000).needed_by(Some(after)));
    }
}
