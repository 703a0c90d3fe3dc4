//! The broker service: brokers' logs, ingress publishing (stamp + durable append), and the
//! dispatch tasks, built from a validated [`MeshConfig`] and run until shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cloudevents::Event;
use evmesh_config::{
    Delivery, DeliveryOrder, MeshConfig, ReplayFrom, Resolver, SubscriptionConfig, Trigger,
    TriggerConfig, broker_url, channel_url,
};
use evmesh_filter::Filter;
use evmesh_store::{EventStore, LogId, Offset, Retention};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use url::Url;

/// How often [`BrokerService::wait_idle`] looks.
const IDLE_POLL: Duration = Duration::from_millis(5);

use crate::delivery::{DeliveryEngine, Plan, ReplyTo, redact};
use crate::dispatcher::{Checkpoint, Command, Router, Routes, TriggerShared, Worker};
use crate::ingress::{ARRIVAL_EXTENSION, MAX_TTL, TTL_EXTENSION};
use crate::log::{GroupSpec, Log, LogError, LogProvider, LogTarget};
use crate::metrics::{CounterSnapshot, Counters};
use crate::record::EventRecord;
use crate::replay::ReplayError;

/// Tuning of the broker service.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Deliveries a trigger has in flight at once (attempts plus scheduled retries).
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight deliveries before leaving them to the next start.
    pub drain_timeout: Duration,
    /// How long events stay in a broker's log (never deleted while a trigger still needs them).
    pub retention: Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// PEM file of a private CA trusted for https deliveries besides the web PKI roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Budget of each trigger's and subscription's queue of routed events on the embedded log,
    /// in approximate bytes of events. A route whose queue is full is no longer queued for;
    /// it reads the log itself until it has caught up (`evmesh_route_queue_bytes`). Default
    /// 1 MiB.
    pub route_queue_bytes: usize,
    /// Budget of each broker's and channel's in-memory hand-off from ingress to its router, in
    /// approximate bytes of events: what ingress stored and the router has not taken yet. An
    /// event that does not fit is read back from the log by the router
    /// (`evmesh_tail_bytes`). Default 4 MiB.
    pub tail_bytes: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            max_in_flight: 100,
            drain_timeout: Duration::from_secs(30),
            retention: Retention {
                max_age: Some(Duration::from_secs(7 * 24 * 3600)),
                max_bytes: None,
            },
            retention_interval: Duration::from_secs(60),
            ca_file: None,
            route_queue_bytes: crate::dispatcher::DEFAULT_ROUTE_QUEUE_BYTES,
            tail_bytes: crate::dispatcher::DEFAULT_TAIL_BYTES,
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No such broker or channel (the message names which).
    #[error("{0} not found")]
    NotFound(String),
    /// The broker or channel is configured but does not run yet: its log (Kafka, NATS) could
    /// not be opened and is tried again on a timer. Nothing was stored; try again later.
    #[error("{0}")]
    NotReady(String),
    /// The `knativebrokerttl` extension ran out: the event is looping.
    #[error("event dropped: knativebrokerttl reached 0 (reply loop protection)")]
    TtlExpired,
    /// The event could not be serialized.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// The store failed; nothing was accepted.
    #[error("event not stored: {0}")]
    Store(#[from] evmesh_store::StoreError),
    /// The broker's or channel's log elsewhere (JetStream, Kafka) did not take the event.
    #[error("event not stored: {0}")]
    Log(#[from] LogError),
    /// The service is shutting down.
    #[error("broker is shutting down")]
    ShuttingDown,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl StartError {
    /// A start error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        StartError(message.into())
    }
}

/// What a log serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    /// A broker: ingress stamps `knativebrokerttl` and `knativearrivaltime`; triggers filter it
    /// and their replies come back into it.
    Broker,
    /// A channel: events are stored as received and go to every subscription.
    Channel,
}

impl StreamKind {
    fn noun(self) -> &'static str {
        match self {
            StreamKind::Broker => "broker",
            StreamKind::Channel => "channel",
        }
    }
}

/// Where a broker's or channel's events live.
pub(crate) enum Backend {
    /// The embedded store: one router reads the log and fans it out to every route.
    Embedded,
    /// A log elsewhere (JetStream, Kafka): each route reads it through its own consumer group.
    External(Arc<dyn Log>),
}

/// One broker or channel at run time: its log, its router and its ingress.
pub(crate) struct BrokerRuntime {
    pub(crate) kind: StreamKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) log: LogId,
    pub(crate) url: Url,
    pub(crate) dead_letter: std::sync::RwLock<Option<Url>>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) counters: Counters,
    /// The triggers the router feeds; swapped in by the reconciler, picked up by the router.
    pub(crate) routes: Arc<Routes>,
    pub(crate) router_next: Arc<AtomicU64>,
    /// Events just stored, handed to the router in memory (embedded logs).
    pub(crate) tail: Arc<crate::dispatcher::Tail>,
    pub(crate) accepting: Arc<AtomicBool>,
    /// False once the broker is deleted: new events get 404 at once.
    pub(crate) open: AtomicBool,
    /// Set once the reconcile that started this log has added its triggers or subscriptions:
    /// before that, retention would see no route pinning anything and delete what a restored
    /// route still needs.
    pub(crate) routes_loaded: AtomicBool,
    pub(crate) store: Arc<dyn EventStore>,
    /// Where its events live.
    pub(crate) backend: Backend,
    /// The kind (channel kind or broker class) it was started as: a change restarts it.
    pub(crate) backend_kind: String,
    /// Stops the broker's router and retention tasks.
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Its ingress metrics (brokers only).
    pub(crate) metrics: Option<crate::telemetry::IngressMetrics>,
    /// Fault injection: how many more times its router panics.
    #[cfg(feature = "fault-injection")]
    pub(crate) router_panics_left: Arc<std::sync::atomic::AtomicU32>,
    /// Fault injection: how many more stored events are not handed to the router (as when an
    /// append's task is dropped between its commit and its hand-over).
    #[cfg(feature = "fault-injection")]
    pub(crate) handovers_to_lose: std::sync::atomic::AtomicU32,
}

impl BrokerRuntime {
    /// Stamps and durably appends one event.
    async fn append(&self, mut event: EventRecord) -> Result<Offset, PublishError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        if !self.open.load(Ordering::Acquire) {
            return Err(PublishError::NotFound(format!(
                "{} {}/{}",
                self.kind.noun(),
                self.namespace,
                self.name
            )));
        }
        if self.kind == StreamKind::Channel {
            // A channel keeps the event exactly as received.
            return self.write(event).await;
        }
        let ttl = match event.extension_json(TTL_EXTENSION) {
            None => MAX_TTL,
            Some(serde_json::Value::Number(n)) => {
                n.as_i64().map_or(MAX_TTL, |n| n.saturating_sub(1))
            }
            Some(serde_json::Value::String(s)) => {
                s.parse::<i64>().map(|n| n - 1).unwrap_or(MAX_TTL)
            }
            Some(_) => MAX_TTL,
        };
        if ttl <= 0 {
            return Err(PublishError::TtlExpired);
        }
        event.set_extension(TTL_EXTENSION, ttl.into());
        event.set_extension(ARRIVAL_EXTENSION, crate::ingress::arrival_time_now().into());
        self.write(event).await
    }

    /// Appends `event` and counts the outcome here, accepted or rejected (for callers that do
    /// not count a refusal themselves, as ingress does once per request).
    async fn publish_counted(&self, event: EventRecord) -> Result<Offset, PublishError> {
        let result = BrokerService::publish_to(self, event).await;
        if result.is_err() {
            self.counters.rejected();
        }
        result
    }

    /// Appends to the log; resolves once the event is durable.
    async fn write(&self, event: EventRecord) -> Result<Offset, PublishError> {
        match &self.backend {
            Backend::Embedded => {
                let stored = event.to_stored();
                let size = stored.len();
                let offset = self.store.append(&self.log, stored).await?;
                #[cfg(feature = "fault-injection")]
                if self
                    .handovers_to_lose
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Ok(offset);
                }
                if self.routes.is_empty() {
                    // Nothing to route it to: the router only moves its position, on its
                    // own time (a trigger added later reads the event from the store).
                    self.tail.skip(offset);
                } else {
                    // The router takes it from here in memory (decoded once, at ingress).
                    self.tail.push(offset, event, size);
                    self.notify.notify_one();
                }
                Ok(offset)
            }
            Backend::External(log) => {
                let offset = log.append(&event).await?.offset;
                // Its routes read the log themselves: each has new work until its cursor says
                // it is caught up again (what `is_idle` looks at).
                self.routes.new_work_all();
                Ok(offset)
            }
        }
    }
}

impl crate::delivery::LocalSink for BrokerRuntime {
    fn accept(
        &self,
        event: EventRecord,
    ) -> crate::delivery::LocalFuture<'_, Result<(), crate::delivery::LocalRefusal>> {
        Box::pin(async move {
            self.publish_counted(event).await.map(|_| ()).map_err(|e| {
                crate::delivery::LocalRefusal {
                    status: match e {
                        PublishError::NotFound(_) => 404,
                        PublishError::TtlExpired | PublishError::Encode(_) => 400,
                        PublishError::Store(_)
                        | PublishError::Log(_)
                        | PublishError::NotReady(_)
                        | PublishError::ShuttingDown => 503,
                    },
                    reason: e.to_string(),
                }
            })
        })
    }
}

/// Publishes replies back into the broker a trigger belongs to.
#[derive(Clone)]
pub(crate) struct Publisher {
    /// `None` for a route without a home broker (a source reading an external log): its plan
    /// never sends replies home.
    pub(crate) broker: Option<Arc<BrokerRuntime>>,
}

impl Publisher {
    /// Publishes `reply` with the TTL of the event it answers (so reply loops end) and its
    /// passed-through headers (the reply's own take precedence).
    pub(crate) async fn publish_reply(
        &self,
        reply: EventRecord,
        original: &EventRecord,
    ) -> Result<(), ReplyFailure> {
        let reply = reply_of(reply, original);
        let Some(broker) = &self.broker else {
            return Err(ReplyFailure {
                status: None,
                retryable: false,
                reason: "no broker to send the reply to".into(),
                local: true,
            });
        };
        match broker.append(reply).await {
            Ok(_) => Ok(()),
            Err(PublishError::TtlExpired) => {
                crate::telemetry::reply_loop_stopped(&broker.namespace, &broker.name);
                // As in Knative: the broker answers the reply with 400, so the original event
                // fails (not retryable) and goes to the dead-letter sink.
                tracing::warn!(
                    broker = %broker.log.as_str(),
                    event = %crate::delivery::describe(original),
                    "reply rejected: knativebrokerttl exhausted (reply loop); the original event is dead-lettered"
                );
                Err(ReplyFailure {
                    status: Some(400),
                    retryable: false,
                    reason: PublishError::TtlExpired.to_string(),
                    local: false,
                })
            }
            Err(e) => Err(ReplyFailure {
                status: None,
                retryable: true,
                // The store failing or shutting down is evmesh's own trouble, not the subscriber's.
                local: matches!(
                    e,
                    PublishError::Store(_) | PublishError::Log(_) | PublishError::ShuttingDown
                ),
                reason: format!("storing the reply failed: {e}"),
            }),
        }
    }
}

/// A reply as it travels on: with the TTL of the event it answers (so reply loops end) and its
/// passed-through headers (the reply's own take precedence).
pub(crate) fn reply_of(mut reply: EventRecord, original: &EventRecord) -> EventRecord {
    if let Some(ttl) = original.extension_json(TTL_EXTENSION) {
        reply.set_extension(TTL_EXTENSION, ttl.clone());
    }
    let mut headers = reply.headers().to_vec();
    for (name, value) in original.headers() {
        if !headers.iter().any(|(n, _)| n == name) {
            headers.push((name.clone(), value.clone()));
        }
    }
    reply.set_headers(headers);
    reply
}

/// Why a reply was not stored.
pub(crate) struct ReplyFailure {
    /// The status ingress would have answered.
    pub(crate) status: Option<u16>,
    /// Whether the delivery is tried again.
    pub(crate) retryable: bool,
    /// Human-readable reason.
    pub(crate) reason: String,
    /// A failure of evmesh's own (the store): retried without spending the retry budget.
    pub(crate) local: bool,
}

/// What the admin API shows of a broker.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Ingress URL.
    pub url: String,
    /// Resolved dead-letter sink of the broker's default delivery.
    pub dead_letter_sink_uri: Option<String>,
    /// Next offset of its log.
    pub routed_offset: u64,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// What the admin API shows of a trigger.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Resolved subscriber URL; `None` when it could not be resolved.
    pub subscriber_uri: Option<String>,
    /// Resolved dead-letter sink.
    pub dead_letter_sink_uri: Option<String>,
    /// The broker it belongs to.
    pub broker: String,
    /// Why the trigger is not ready, if it is not (a message).
    pub not_ready_reason: Option<String>,
    /// The Kubernetes-style reason code when not ready (e.g. `BrokerDoesNotExist`).
    pub not_ready_code: Option<String>,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// A route from a log to a subscriber: a Trigger (filtered, replies back into its broker) or a
/// Subscription (every event of its channel, replies to its `reply`).
#[derive(Clone, Debug, PartialEq)]
enum RouteResource {
    Trigger(Trigger),
    Subscription(SubscriptionConfig),
}

impl RouteResource {
    fn metadata(&self) -> &evmesh_config::ObjectMeta {
        match self {
            RouteResource::Trigger(t) => &t.metadata,
            RouteResource::Subscription(s) => &s.metadata,
        }
    }
    /// The part whose change swaps the filter and plan of a running route.
    fn spec_changed(&self, other: &RouteResource) -> bool {
        match (self, other) {
            (RouteResource::Trigger(a), RouteResource::Trigger(b)) => a.spec != b.spec,
            (RouteResource::Subscription(a), RouteResource::Subscription(b)) => {
                (&a.channel, &a.subscriber, &a.reply, &a.delivery)
                    != (&b.channel, &b.subscriber, &b.reply, &b.delivery)
            }
            _ => true,
        }
    }
    fn replay_annotation(&self) -> Option<&String> {
        self.metadata()
            .annotations
            .get(evmesh_config::REPLAY_FROM_ANNOTATION)
    }
    fn noun(&self) -> &'static str {
        match self {
            RouteResource::Trigger(_) => "trigger",
            RouteResource::Subscription(_) => "subscription",
        }
    }
}

/// What the admin API shows of a channel.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its address (`status.address.url`).
    pub url: String,
    /// Resolved dead-letter sink of the channel's default delivery.
    pub dead_letter_sink_uri: Option<String>,
    /// Next offset of its log the router reaches.
    pub routed_offset: u64,
    /// Its running subscriptions.
    pub subscribers: Vec<SubscriptionView>,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// What the admin API shows of a subscription.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The channel it reads.
    pub channel: String,
    /// Resolved subscriber URL; `None` without a subscriber or when it could not be resolved.
    pub subscriber_uri: Option<String>,
    /// Resolved reply URL.
    pub reply_uri: Option<String>,
    /// Resolved dead-letter sink.
    pub dead_letter_sink_uri: Option<String>,
    /// Why the subscription is not ready, if it is not (a message).
    pub not_ready_reason: Option<String>,
    /// The Kubernetes-style reason code when not ready (e.g. `ChannelDoesNotExist`).
    pub not_ready_code: Option<String>,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// A configured trigger or subscription: running, or waiting (its broker or channel missing, a
/// destination unresolvable).
struct TriggerEntry {
    resource: RouteResource,
    checkpoint_key: String,
    counters: Counters,
    subscriber_uri: Option<String>,
    reply_uri: Option<String>,
    dead_letter_uri: Option<String>,
    not_ready: Option<(String, String)>,
    running: Option<RunningTrigger>,
    /// A previous run still stopping (its last checkpoint is written when it ends).
    stopping: Option<JoinHandle<()>>,
}

struct RunningTrigger {
    shared: Arc<TriggerShared>,
    broker: Arc<BrokerRuntime>,
    stop: watch::Sender<bool>,
    delete_after: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl RunningTrigger {
    /// Signals the worker to finish in-flight attempts and stop; with `delete`, its progress is
    /// dropped once it has stopped. Returns the task to await.
    fn stop(self, delete: bool) -> JoinHandle<()> {
        self.delete_after.store(delete, Ordering::Release);
        self.broker.routes.remove(&self.shared);
        let _ = self.stop.send(true);
        self.task
    }
}

/// The desired state of one route, resolved against the running configuration.
struct RouteDesired {
    resource: RouteResource,
    key: (String, String),
    label: String,
    /// The log it reads, when it runs; `Err((reason code, message))` when it cannot run now.
    stream: Option<Arc<BrokerRuntime>>,
    plan: Result<Plan, (String, String)>,
    subscriber_uri: Option<String>,
    reply_uri: Option<String>,
    dead_letter_uri: Option<String>,
    checkpoint_key: String,
    legacy_checkpoint_key: Option<String>,
    filter: Filter,
    order: DeliveryOrder,
    replay_from: Option<(ReplayFrom, String)>,
    counters: fn(&str, &str, &str) -> Counters,
    /// `(namespace, broker or channel, name)` for its counters' labels.
    labels: (String, String, String),
}

impl State {
    /// Whether some route is configured to run but could not start.
    fn routes_failing(&self) -> bool {
        self.triggers
            .values()
            .chain(self.subscriptions.values())
            .any(|e| {
                e.running.is_none()
                    && e.not_ready
                        .as_ref()
                        .is_some_and(|(code, _)| code == START_FAILED)
            })
    }
}

/// A `(namespace, name)` key of [`State`]'s stream maps, looked up from two `&str`s without
/// building the owned key (ingress does it once per request).
trait NamePair {
    fn pair(&self) -> (&str, &str);
}

impl NamePair for (String, String) {
    fn pair(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl NamePair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn NamePair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn NamePair + 'a) {
        self
    }
}

// Hashes as `(String, String)` does (each part in turn), as `Borrow` requires.
impl std::hash::Hash for dyn NamePair + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (a, b) = self.pair();
        a.hash(state);
        b.hash(state);
    }
}

impl PartialEq for dyn NamePair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn NamePair + '_ {}

#[derive(Default)]
struct State {
    brokers: HashMap<(String, String), Arc<BrokerRuntime>>,
    channels: HashMap<(String, String), Arc<BrokerRuntime>>,
    triggers: BTreeMap<(String, String), TriggerEntry>,
    subscriptions: BTreeMap<(String, String), TriggerEntry>,
    /// Brokers and channels whose log could not be opened at the last reconcile (a log
    /// elsewhere, e.g. NATS unreachable), with the reason; tried again at the next reconcile.
    stream_failures: HashMap<(StreamKind, String, String), String>,
    /// Whether the first reconcile (which drops checkpoints of routes that are gone) ran.
    started: bool,
    /// Deleted routes finishing their in-flight attempts, then dropping their progress
    /// (awaited by shutdown, so a deleted route's progress is gone once it returns).
    deleting: Vec<JoinHandle<()>>,
}

impl State {
    fn routes_mut(&mut self, kind: RouteKind) -> &mut BTreeMap<(String, String), TriggerEntry> {
        match kind {
            RouteKind::Trigger => &mut self.triggers,
            RouteKind::Subscription => &mut self.subscriptions,
        }
    }
    fn routes(&self, kind: RouteKind) -> &BTreeMap<(String, String), TriggerEntry> {
        match kind {
            RouteKind::Trigger => &self.triggers,
            RouteKind::Subscription => &self.subscriptions,
        }
    }
    fn streams(&self, kind: StreamKind) -> &HashMap<(String, String), Arc<BrokerRuntime>> {
        match kind {
            StreamKind::Broker => &self.brokers,
            StreamKind::Channel => &self.channels,
        }
    }
    fn streams_mut(
        &mut self,
        kind: StreamKind,
    ) -> &mut HashMap<(String, String), Arc<BrokerRuntime>> {
        match kind {
            StreamKind::Broker => &mut self.brokers,
            StreamKind::Channel => &mut self.channels,
        }
    }
}

/// Which map a route lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteKind {
    Trigger,
    Subscription,
}

struct Inner {
    store: Arc<dyn EventStore>,
    options: ServiceOptions,
    engine: DeliveryEngine,
    state: std::sync::RwLock<State>,
    reconcile: tokio::sync::Mutex<()>,
    accepting: Arc<AtomicBool>,
    subscribers: crate::subscriber::Subscribers,
    /// Open the logs of channel kinds and broker classes that live outside the embedded store.
    providers: std::sync::RwLock<Vec<Arc<dyn LogProvider>>>,
    /// While a broker's or channel's log cannot be opened: the configuration it was wanted by
    /// (the latest reconciled) and the task that tries again on a timer.
    retry: std::sync::Mutex<StreamRetry>,
    /// Fault injection: how many route starts still fail (see
    /// [`BrokerService::inject_route_start_failures`]).
    #[cfg(feature = "fault-injection")]
    route_starts_to_fail: std::sync::atomic::AtomicU32,
}

/// Brokers and channels whose log could not be opened, tried again with backoff.
#[derive(Default)]
struct StreamRetry {
    /// The configuration of the latest reconcile, kept while some log is failing.
    latest: Option<(MeshConfig, Resolver)>,
    /// What to open, per failing broker or channel.
    targets: HashMap<(StreamKind, String, String), LogTarget>,
    /// Logs the retry task opened, taken by the next reconcile's start of that stream.
    opened: HashMap<(StreamKind, String, String), (String, Backend)>,
    /// Whether the retry task runs.
    running: bool,
}

/// Reason of a route that could not start (its progress could not be read, or its consumer
/// group on a log elsewhere could not be opened); the retry task reconciles again until it runs.
const START_FAILED: &str = "CheckpointUnreadable";

/// First wait before a failing log is opened again; doubles up to [`STREAM_RETRY_MAX`].
const STREAM_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to open a failing log.
const STREAM_RETRY_MAX: Duration = Duration::from_secs(30);

/// A broker or channel as the configuration wants it.
struct StreamDesired {
    dead_letter: Option<Url>,
    /// Channel kind or broker class.
    kind: String,
    /// The kind's own spec.
    spec: serde_json::Value,
}

/// The channel kind that lives in the embedded store.
const EMBEDDED_CHANNEL_KIND: &str = "InMemoryChannel";

/// The running brokers and triggers of a mesh. Cheap to clone.
///
/// Built empty, then driven by [`BrokerService::reconcile`] with the desired configuration: it
/// starts, changes and stops brokers and triggers while events flow, losing none.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use evmesh_broker::{BrokerService, ServiceOptions};
/// use evmesh_config::{MeshConfig, Resolver};
/// let mesh = MeshConfig::from_yaml("m.yaml", "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n")?;
/// let resolver = Resolver::new(&mesh, "http://127.0.0.1:8080".parse()?, None);
/// let store = evmesh_store::open(Default::default(), std::path::Path::new("./data"))?;
/// let service = BrokerService::start(&mesh, &resolver, store, ServiceOptions::default()).await?;
/// service.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BrokerService {
    inner: Arc<Inner>,
}

/// Checkpoint key of a trigger: by uid when it has one (a re-created trigger never inherits
/// the old one's retries), else by name (the format before uids).
fn checkpoint_key(t: &Trigger) -> String {
    let m = &t.metadata;
    match &m.uid {
        Some(uid) => format!("t/{}/{}/{}/{uid}", m.namespace, t.spec.broker, m.name),
        None => legacy_checkpoint_key(t),
    }
}

/// Checkpoint key of a subscription: by uid when it has one.
fn subscription_checkpoint_key(s: &SubscriptionConfig) -> String {
    let m = &s.metadata;
    let base = format!("s/{}/{}/{}", m.namespace, s.channel.1, m.name);
    match &m.uid {
        Some(uid) => format!("{base}/{uid}"),
        None => base,
    }
}

fn legacy_checkpoint_key(t: &Trigger) -> String {
    let m = &t.metadata;
    format!("t/{}/{}/{}", m.namespace, t.spec.broker, m.name)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, evmesh_store::StoreError> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

impl BrokerService {
    /// The delivery engine (for routes started outside this module).
    pub(crate) fn engine(&self) -> &DeliveryEngine {
        &self.inner.engine
    }

    /// The in-flight limit and drain timeout every route runs with.
    pub(crate) fn route_limits(&self) -> (usize, Duration) {
        (
            self.inner.options.max_in_flight,
            self.inner.options.drain_timeout,
        )
    }

    /// A service with no brokers yet; [`reconcile`](Self::reconcile) gives it its configuration.
    ///
    /// # Errors
    /// When `options.ca_file` cannot be read or holds no certificate.
    pub fn new(
        store: Arc<dyn EventStore>,
        options: ServiceOptions,
    ) -> Result<BrokerService, StartError> {
        let engine = DeliveryEngine::with_ca_file(options.ca_file.as_deref())
            .map_err(|e| StartError(e.to_string()))?;
        Ok(BrokerService {
            inner: Arc::new(Inner {
                store,
                options,
                engine,
                state: std::sync::RwLock::new(State::default()),
                reconcile: tokio::sync::Mutex::new(()),
                accepting: Arc::new(AtomicBool::new(true)),
                subscribers: crate::subscriber::Subscribers::default(),
                providers: std::sync::RwLock::new(Vec::new()),
                retry: std::sync::Mutex::new(StreamRetry::default()),
                #[cfg(feature = "fault-injection")]
                route_starts_to_fail: std::sync::atomic::AtomicU32::new(0),
            }),
        })
    }

    /// Registers a provider of logs outside the embedded store (e.g. NATS JetStream for
    /// `NatsJetStreamChannel`). Register before the first [`reconcile`](Self::reconcile): a
    /// channel whose kind no provider serves does not start.
    pub fn register_log_provider(&self, provider: Arc<dyn LogProvider>) {
        self.inner
            .providers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(provider);
    }

    /// Opens every broker's log, restores trigger progress and starts routing and delivery.
    pub async fn start(
        mesh: &MeshConfig,
        resolver: &Resolver,
        store: Arc<dyn EventStore>,
        options: ServiceOptions,
    ) -> Result<BrokerService, StartError> {
        let service = BrokerService::new(store, options)?;
        service.reconcile(mesh, resolver).await?;
        Ok(service)
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the running brokers, channels, triggers and subscriptions match `mesh`: starts what
    /// is new, updates what changed in place (a changed trigger or subscription keeps its
    /// position and pending retries), stops what is gone (a deleted route finishes its in-flight
    /// attempts, then its progress is dropped; a deleted broker or channel answers 404 at once
    /// and keeps its log). Routes whose broker or channel does not exist wait, not ready, and
    /// start when it appears.
    pub async fn reconcile(
        &self,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> Result<(), StartError> {
        let _guard = self.inner.reconcile.lock().await;
        self.reconcile_locked(mesh, resolver).await
    }

    fn retry_state(&self) -> std::sync::MutexGuard<'_, StreamRetry> {
        self.inner.retry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `mesh` for the retry task while some log is failing (a retry reconciles the latest
    /// configuration, never an older one), and starts that task when it is not running.
    fn note_failures(&self, mesh: &MeshConfig, resolver: &Resolver) {
        let failing = {
            let state = self.state();
            !state.stream_failures.is_empty() || state.routes_failing()
        };
        let mut retry = self.retry_state();
        if !failing {
            retry.latest = None;
            retry.targets.clear();
            return;
        }
        retry.latest = Some((mesh.clone(), resolver.clone()));
        if !retry.running {
            retry.running = true;
            let service = self.clone();
            tokio::spawn(async move { service.retry_streams().await });
        }
    }

    /// Opens the failing brokers' and channels' logs again with backoff (outside the reconcile
    /// lock: an unreachable Kafka or NATS does not hold up other changes), and reconciles the
    /// latest configuration once one opened, so that the stream and its routes start.
    async fn retry_streams(self) {
        let mut wait = STREAM_RETRY_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(STREAM_RETRY_MAX);
            if !self.inner.accepting.load(Ordering::Acquire) {
                break;
            }
            let targets: Vec<_> = self
                .retry_state()
                .targets
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect();
            let mut opened = false;
            for (key, target) in targets {
                match self.open_backend(&target).await {
                    Ok(backend) => {
                        tracing::info!(
                            "{} {}/{}: its log opened",
                            target.resource,
                            target.namespace,
                            target.name
                        );
                        self.retry_state()
                            .opened
                            .insert(key, (target.kind.clone(), backend));
                        opened = true;
                    }
                    Err(e) => {
                        tracing::debug!(
                            "{} {}/{} still not started: {e}",
                            target.resource,
                            target.namespace,
                            target.name
                        );
                        if let Some(reason) = self.state_mut().stream_failures.get_mut(&key) {
                            *reason = e.to_string();
                        }
                    }
                }
            }
            // A route that could not start (say its consumer group could not be opened) is
            // started again by reconciling, on the same backoff.
            let routes_failing = self.state().routes_failing();
            if opened || routes_failing {
                let _guard = self.inner.reconcile.lock().await;
                let latest = self.retry_state().latest.clone();
                if let Some((mesh, resolver)) = latest
                    && let Err(e) = self.reconcile_locked(&mesh, &resolver).await
                {
                    tracing::warn!("reconciling after a log opened: {e}");
                }
                if opened {
                    wait = STREAM_RETRY_FIRST;
                }
            }
            let routes_failing = self.state().routes_failing();
            let mut retry = self.retry_state();
            if (retry.targets.is_empty() && !routes_failing) || retry.latest.is_none() {
                retry.running = false;
                retry.opened.clear();
                break;
            }
        }
    }

    async fn reconcile_locked(
        &self,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> Result<(), StartError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Ok(());
        }
        let result = self.reconcile_inner(mesh, resolver).await;
        self.note_failures(mesh, resolver);
        result
    }

    async fn reconcile_inner(
        &self,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> Result<(), StartError> {
        let first = !self.state().started;
        self.serve_subscribers(resolver.ingress());
        // Brokers and channels: add new ones, update changed ones, remove deleted ones.
        let brokers: HashMap<(String, String), StreamDesired> = mesh
            .brokers
            .iter()
            .map(|b| {
                let m = &b.resource.metadata;
                let dls = b
                    .delivery
                    .dead_letter_sink
                    .as_ref()
                    .and_then(|d| resolver.resolve(d, &m.namespace).ok());
                let class = m
                    .annotations
                    .get("eventing.knative.dev/broker.class")
                    .cloned()
                    .unwrap_or_default();
                let desired = StreamDesired {
                    dead_letter: dls,
                    kind: class,
                    // A Kafka-class Broker's topic and Kafka (its `spec.config` ConfigMap).
                    spec: b
                        .kafka
                        .as_ref()
                        .and_then(|k| serde_json::to_value(k).ok())
                        .unwrap_or(serde_json::Value::Null),
                };
                ((m.namespace.clone(), m.name.clone()), desired)
            })
            .collect();
        self.reconcile_streams(StreamKind::Broker, brokers, resolver)
            .await?;
        let channels: HashMap<(String, String), StreamDesired> = mesh
            .channels
            .iter()
            .map(|c| {
                let m = &c.metadata;
                let dls = c
                    .delivery
                    .as_ref()
                    .and_then(|d| d.dead_letter_sink.as_ref())
                    .and_then(|d| resolver.resolve(d, &m.namespace).ok());
                let desired = StreamDesired {
                    dead_letter: dls,
                    kind: c.kind.kind().to_string(),
                    spec: c.spec.clone(),
                };
                ((m.namespace.clone(), m.name.clone()), desired)
            })
            .collect();
        self.reconcile_streams(StreamKind::Channel, channels, resolver)
            .await?;
        // Triggers and subscriptions.
        let mut saved: HashMap<String, Vec<u8>> = HashMap::new();
        if first {
            for prefix in ["t/", "s/"] {
                let store = self.inner.store.clone();
                saved.extend(
                    blocking(move || store.checkpoints(prefix))
                        .await
                        .map_err(|e| StartError(format!("reading checkpoints: {e}")))?,
                );
            }
        }
        let desired: Vec<RouteDesired> = mesh
            .triggers
            .iter()
            .map(|t| self.trigger_desired(t, mesh, resolver))
            .chain(
                mesh.subscriptions
                    .iter()
                    .map(|s| self.subscription_desired(s, mesh, resolver)),
            )
            .collect();
        for kind in [RouteKind::Trigger, RouteKind::Subscription] {
            let wanted: HashSet<&(String, String)> = desired
                .iter()
                .filter(|d| d.kind() == kind)
                .map(|d| &d.key)
                .collect();
            let gone: Vec<(String, String)> = self
                .state()
                .routes(kind)
                .keys()
                .filter(|k| !wanted.contains(k))
                .cloned()
                .collect();
            for key in gone {
                self.delete_route(kind, &key);
            }
        }
        let mut live_keys = HashSet::new();
        for d in desired {
            live_keys.insert(d.checkpoint_key.clone());
            live_keys.extend(d.legacy_checkpoint_key.clone());
            self.apply_route(d, first.then_some(&saved)).await?;
        }
        {
            let state = self.state();
            for b in state.brokers.values().chain(state.channels.values()) {
                b.routes_loaded.store(true, Ordering::Release);
            }
        }
        if first {
            for key in saved.keys().filter(|k| !live_keys.contains(*k)) {
                tracing::info!(checkpoint = %key, "route no longer configured: forgetting its progress");
                if let Err(e) = self.inner.store.delete_checkpoint(key) {
                    tracing::warn!("deleting stale checkpoint {key}: {e}");
                }
            }
            // Parked retries of routes no longer configured (`p/<route key>/<offset>`).
            let store = self.inner.store.clone();
            let parked = blocking(move || store.checkpoints("p/"))
                .await
                .map_err(|e| StartError(format!("reading parked retries: {e}")))?;
            for (key, _) in parked {
                let route = key
                    .strip_prefix("p/")
                    .and_then(|k| k.rsplit_once('/'))
                    .map(|(route, _)| route);
                if route.is_some_and(|r| !live_keys.contains(r))
                    && let Err(e) = self.inner.store.delete_checkpoint(&key)
                {
                    tracing::warn!("deleting stale parked retry {key}: {e}");
                }
            }
            self.state_mut().started = true;
        }
        Ok(())
    }

    /// Starts, updates (dead-letter sink shown in status) and removes the brokers or channels
    /// so that they are `desired`.
    async fn reconcile_streams(
        &self,
        kind: StreamKind,
        desired: HashMap<(String, String), StreamDesired>,
        resolver: &Resolver,
    ) -> Result<(), StartError> {
        self.state_mut()
            .stream_failures
            .retain(|(k, ns, n), _| *k != kind || desired.contains_key(&(ns.clone(), n.clone())));
        self.retry_state()
            .targets
            .retain(|(k, ns, n), _| *k != kind || desired.contains_key(&(ns.clone(), n.clone())));
        // Gone, or now of another kind (its log is elsewhere): stopped (and started again).
        let removed: Vec<(String, String)> = self
            .state()
            .streams(kind)
            .iter()
            .filter(|(k, b)| desired.get(*k).is_none_or(|d| d.kind != b.backend_kind))
            .map(|(k, _)| k.clone())
            .collect();
        for key in removed {
            let gone = self.state_mut().streams_mut(kind).remove(&key);
            if let Some(b) = gone {
                b.open.store(false, Ordering::Release);
                self.inner.engine.local_sinks().remove(&b.url);
                let _ = b.stop.send(true);
                tracing::info!(stream = %format!("{}/{}", key.0, key.1), "{} deleted; its log is kept", kind.noun());
            }
        }
        for (key, d) in desired {
            let existing = self.state().streams(kind).get(&key).cloned();
            match existing {
                Some(runtime) => {
                    *runtime
                        .dead_letter
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = d.dead_letter;
                }
                None => {
                    let failure_key = (kind, key.0.clone(), key.1.clone());
                    match self.start_stream(kind, &key.0, &key.1, resolver, d).await {
                        Ok(runtime) => {
                            self.retry_state().targets.remove(&failure_key);
                            let mut state = self.state_mut();
                            state.stream_failures.remove(&failure_key);
                            state.streams_mut(kind).insert(key.clone(), runtime);
                        }
                        // Its routes wait, not ready with this reason; the rest goes on, and
                        // the log is tried again on a timer.
                        Err((e, target)) => {
                            tracing::error!("{} {}/{} not started: {e}", kind.noun(), key.0, key.1);
                            self.retry_state()
                                .targets
                                .insert(failure_key.clone(), target);
                            self.state_mut()
                                .stream_failures
                                .insert(failure_key, e.to_string());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reconciles one trigger only (faster than [`reconcile`](Self::reconcile) when a single
    /// trigger was applied or deleted): `mesh` is the whole desired configuration.
    pub async fn reconcile_trigger(
        &self,
        namespace: &str,
        name: &str,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> Result<(), StartError> {
        let _guard = self.inner.reconcile.lock().await;
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Ok(());
        }
        // A later retry of a failing log reconciles this configuration, not an older one.
        self.note_failures(mesh, resolver);
        // From the end: a trigger just applied is the last one (applying many stays linear).
        let found = mesh.triggers.iter().rev().find(|t| {
            t.resource.metadata.namespace == namespace && t.resource.metadata.name == name
        });
        let result = match found {
            Some(t) => {
                let d = self.trigger_desired(t, mesh, resolver);
                self.apply_route(d, None).await
            }
            None => {
                self.delete_route(
                    RouteKind::Trigger,
                    &(namespace.to_string(), name.to_string()),
                );
                Ok(())
            }
        };
        // A trigger that could not start is tried again by the retry task.
        self.note_failures(mesh, resolver);
        result
    }

    /// Saves a newly created trigger's start position, its broker log's head now, so that it
    /// becomes durable in the same flush as the trigger's resource. Call it before the trigger
    /// is visible (to GET, watch or the caller of an apply): every event answered 202 after
    /// that is delivered to the trigger, even when its route starts a little later or the
    /// process crashes before then. Nothing is saved when the trigger has no uid, when its
    /// broker does not run here yet (the trigger starts at the head once the broker runs), when
    /// that broker's log is Kafka or JetStream (their consumer groups keep their own start), or
    /// when a position is already saved for it.
    ///
    /// # Errors
    /// The store's error, as text, when it cannot read the head or save the position.
    pub fn stake_trigger_start(&self, t: &Trigger) -> Result<(), String> {
        if t.metadata.uid.is_none() {
            return Ok(());
        }
        let log = self.embedded_log(StreamKind::Broker, &t.metadata.namespace, &t.spec.broker);
        self.stake_start(log, checkpoint_key(t))
    }

    /// [`stake_trigger_start`](Self::stake_trigger_start) for a Subscription and its channel.
    ///
    /// # Errors
    /// The store's error, as text, when it cannot read the head or save the position.
    pub fn stake_subscription_start(&self, s: &SubscriptionConfig) -> Result<(), String> {
        if s.metadata.uid.is_none() {
            return Ok(());
        }
        let log = self.embedded_log(StreamKind::Channel, &s.metadata.namespace, &s.channel.1);
        self.stake_start(log, subscription_checkpoint_key(s))
    }

    /// The embedded log of a broker or channel running here (`None` when it does not run or
    /// its log is elsewhere).
    fn embedded_log(&self, kind: StreamKind, namespace: &str, name: &str) -> Option<LogId> {
        let state = self.state();
        let streams = match kind {
            StreamKind::Broker => &state.brokers,
            StreamKind::Channel => &state.channels,
        };
        match streams.get(&(namespace.to_string(), name.to_string())) {
            Some(b) if matches!(b.backend, Backend::Embedded) => Some(b.log.clone()),
            _ => None,
        }
    }

    fn stake_start(&self, log: Option<LogId>, key: String) -> Result<(), String> {
        let Some(log) = log else {
            return Ok(());
        };
        let store = &self.inner.store;
        if store
            .checkpoints(&key)
            .map_err(|e| e.to_string())?
            .iter()
            .any(|(k, _)| *k == key)
        {
            return Ok(());
        }
        let head = store.next_offset(&log).map_err(|e| e.to_string())?;
        let cp = Checkpoint {
            taken_upto: head,
            ..Checkpoint::default()
        };
        let bytes = serde_json::to_vec(&cp).map_err(|e| e.to_string())?;
        store.put_checkpoint(&key, bytes).map_err(|e| e.to_string())
    }

    /// Serves the in-process subscriber addresses under `ingress` (see [`Self::subscribers`]).
    fn serve_subscribers(&self, ingress: &Url) {
        let mut prefix = ingress.clone();
        prefix.set_path(evmesh_config::SUBSCRIBERS_PATH);
        let subscribers = self.inner.subscribers.clone();
        self.inner
            .engine
            .local_sinks()
            .insert_prefix(&prefix, Arc::new(move |rest| subscribers.sink(rest)));
    }

    /// The in-process subscribers: deliveries to `{ingress}/_evmesh/subscribers/{ns}/{name}`
    /// (a Destination `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name}`) go to
    /// the [`Subscription`](crate::subscriber::Subscription)s made here, in memory.
    pub fn subscribers(&self) -> &crate::subscriber::Subscribers {
        &self.inner.subscribers
    }

    fn delete_route(&self, kind: RouteKind, key: &(String, String)) {
        let Some(mut entry) = self.state_mut().routes_mut(kind).remove(key) else {
            return;
        };
        tracing::info!(route = %format!("{}/{}", key.0, key.1), "{} deleted: finishing its in-flight deliveries", entry.resource.noun());
        let task = if let Some(run) = entry.running.take() {
            run.stop(true)
        } else {
            // Not running: nothing in flight, drop its progress now.
            let store = self.inner.store.clone();
            let ck = entry.checkpoint_key.clone();
            let stopping = entry.stopping.take();
            tokio::spawn(async move {
                if let Some(t) = stopping {
                    let _ = t.await;
                }
                let k = ck.clone();
                if let Err(e) =
                    blocking(move || crate::log::delete_progress(store.as_ref(), &k)).await
                {
                    tracing::warn!("deleting checkpoint {ck}: {e}");
                }
            })
        };
        let mut state = self.state_mut();
        state.deleting.retain(|t| !t.is_finished());
        state.deleting.push(task);
    }

    async fn start_stream(
        &self,
        kind: StreamKind,
        namespace: &str,
        name: &str,
        resolver: &Resolver,
        desired: StreamDesired,
    ) -> Result<Arc<BrokerRuntime>, (StartError, LogTarget)> {
        let StreamDesired {
            dead_letter,
            kind: backend_kind,
            spec,
        } = desired;
        let (log, url) = match kind {
            StreamKind::Broker => (
                LogId::new(format!("{namespace}/{name}")),
                broker_url(resolver.ingress(), namespace, name),
            ),
            StreamKind::Channel => (
                // `:` never appears in a Kubernetes name, so no broker's log is named so.
                LogId::new(format!("imc:{namespace}/{name}")),
                channel_url(resolver.ingress(), namespace, name),
            ),
        };
        let target = LogTarget {
            resource: kind.noun(),
            kind: backend_kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            spec,
        };
        let retried = self
            .retry_state()
            .opened
            .remove(&(kind, namespace.to_string(), name.to_string()))
            .filter(|(k, _)| *k == target.kind)
            .map(|(_, b)| b);
        let backend = match retried {
            Some(b) => b,
            None => match self.open_backend(&target).await {
                Ok(b) => b,
                Err(e) => return Err((e, target)),
            },
        };
        let head = match &backend {
            Backend::Embedded => {
                let s = self.inner.store.clone();
                let l = log.clone();
                match blocking(move || s.next_offset(&l)).await {
                    Ok(h) => h,
                    Err(e) => {
                        return Err((
                            StartError(format!("opening log {}: {e}", log.as_str())),
                            target,
                        ));
                    }
                }
            }
            Backend::External(_) => 0,
        };
        let external = matches!(backend, Backend::External(_));
        let (stop, stop_rx) = watch::channel(false);
        let runtime = Arc::new(BrokerRuntime {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            log: log.clone(),
            url,
            dead_letter: std::sync::RwLock::new(dead_letter),
            notify: Arc::new(Notify::new()),
            counters: Counters::default(),
            routes: Arc::new(Routes::default()),
            router_next: Arc::new(AtomicU64::new(head)),
            tail: Arc::new(crate::dispatcher::Tail::new(
                self.inner.options.tail_bytes,
                crate::telemetry::tail_gauge(kind.noun(), namespace, name),
                head,
            )),
            accepting: self.inner.accepting.clone(),
            open: AtomicBool::new(true),
            routes_loaded: AtomicBool::new(false),
            store: self.inner.store.clone(),
            backend,
            backend_kind,
            stop,
            tasks: std::sync::Mutex::new(Vec::new()),
            metrics: (kind == StreamKind::Broker)
                .then(|| crate::telemetry::IngressMetrics::new(namespace, name)),
            #[cfg(feature = "fault-injection")]
            router_panics_left: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            #[cfg(feature = "fault-injection")]
            handovers_to_lose: std::sync::atomic::AtomicU32::new(0),
        });
        if external {
            // Its routes read the log themselves; retention is the log's own.
            self.inner
                .engine
                .local_sinks()
                .insert(&runtime.url, runtime.clone());
            tracing::info!(stream = %format!("{namespace}/{name}"), url = %runtime.url, kind = %runtime.backend_kind, "{} ready", kind.noun());
            return Ok(runtime);
        }
        let router = Arc::new(Router {
            store: self.inner.store.clone(),
            log,
            routes: runtime.routes.clone(),
            notify: runtime.notify.clone(),
            next: runtime.router_next.clone(),
            counters: runtime.counters.clone(),
            tail: runtime.tail.clone(),
            #[cfg(feature = "fault-injection")]
            panics_left: runtime.router_panics_left.clone(),
        });
        let router_task = tokio::spawn(supervised_router(router, stop_rx.clone()));
        let retention_task = tokio::spawn(retention(
            runtime.clone(),
            self.inner.options.clone(),
            stop_rx,
        ));
        if let Ok(mut t) = runtime.tasks.lock() {
            t.push(router_task);
            t.push(retention_task);
        }
        self.inner
            .engine
            .local_sinks()
            .insert(&runtime.url, runtime.clone());
        tracing::info!(stream = %format!("{namespace}/{name}"), url = %runtime.url, "{} ready", kind.noun());
        Ok(runtime)
    }

    /// The log of a broker or channel: the embedded store for InMemoryChannel and the embedded
    /// broker classes, else the log of the provider that serves the kind.
    async fn open_backend(&self, target: &LogTarget) -> Result<Backend, StartError> {
        let provider = self
            .inner
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.serves(target))
            .cloned();
        let id = format!(
            "{} {} {}/{}",
            target.kind, target.resource, target.namespace, target.name
        );
        match provider {
            Some(p) => match p.open_log(target).await {
                Ok(log) => Ok(Backend::External(log)),
                Err(e) => Err(StartError(format!("opening the log of {id}: {e}"))),
            },
            None if target.resource == "channel" && target.kind != EMBEDDED_CHANNEL_KIND => {
                Err(StartError(format!(
                    "{id}: this evmesh has no log provider for that kind"
                )))
            }
            None => Ok(Backend::Embedded),
        }
    }

    /// Why broker or channel `namespace/name` did not start at the last reconcile, if it did not.
    fn stream_failure(&self, kind: StreamKind, namespace: &str, name: &str) -> Option<String> {
        self.state()
            .stream_failures
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// What a trigger should be, resolved against the running brokers.
    fn trigger_desired(
        &self,
        t: &TriggerConfig,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> RouteDesired {
        let tm = &t.resource.metadata;
        let broker_name = &t.resource.spec.broker;
        let stream = self
            .state()
            .brokers
            .get(&(tm.namespace.clone(), broker_name.clone()))
            .cloned();
        let broker_cfg = mesh.broker(&tm.namespace, broker_name);
        let mut d = RouteDesired {
            resource: RouteResource::Trigger(t.resource.clone()),
            key: (tm.namespace.clone(), tm.name.clone()),
            label: format!("{}/{}", tm.namespace, tm.name),
            stream: None,
            plan: Err((String::new(), String::new())),
            subscriber_uri: None,
            reply_uri: None,
            dead_letter_uri: None,
            checkpoint_key: checkpoint_key(&t.resource),
            legacy_checkpoint_key: Some(legacy_checkpoint_key(&t.resource)),
            filter: t.filter.clone(),
            order: t.order,
            replay_from: t.replay_from.clone(),
            counters: Counters::for_trigger,
            labels: (tm.namespace.clone(), broker_name.clone(), tm.name.clone()),
        };
        match (stream, broker_cfg) {
            (Some(stream), Some(bc)) => {
                let delivery = t.delivery.clone().unwrap_or_else(|| bc.delivery.clone());
                d.plan = build_plan(
                    &mut d,
                    resolver,
                    &tm.namespace,
                    Some(&t.resource.spec.subscriber),
                    delivery,
                    ReplyTo::Home,
                );
                d.stream = Some(stream);
            }
            _ if let Some(reason) =
                self.stream_failure(StreamKind::Broker, &tm.namespace, broker_name) =>
            {
                d.plan = Err(("BrokerNotReady".to_string(), reason));
            }
            _ => {
                d.plan = Err((
                    "BrokerDoesNotExist".to_string(),
                    format!(
                        "broker {broker_name:?} does not exist in namespace {:?}",
                        tm.namespace
                    ),
                ));
            }
        }
        d
    }

    /// What a subscription should be, resolved against the running channels.
    fn subscription_desired(
        &self,
        s: &SubscriptionConfig,
        mesh: &MeshConfig,
        resolver: &Resolver,
    ) -> RouteDesired {
        let m = &s.metadata;
        let channel = &s.channel.1;
        let stream = self
            .state()
            .channels
            .get(&(m.namespace.clone(), channel.clone()))
            .cloned();
        let channel_cfg = mesh
            .channels
            .iter()
            .find(|c| c.metadata.namespace == m.namespace && c.metadata.name == *channel);
        let mut d = RouteDesired {
            resource: RouteResource::Subscription(s.clone()),
            key: (m.namespace.clone(), m.name.clone()),
            label: format!("{}/{}", m.namespace, m.name),
            stream: None,
            plan: Err((String::new(), String::new())),
            subscriber_uri: None,
            reply_uri: None,
            dead_letter_uri: None,
            checkpoint_key: subscription_checkpoint_key(s),
            legacy_checkpoint_key: None,
            filter: Filter::match_all(),
            order: DeliveryOrder::Unordered,
            // Validated with the configuration: a value that does not parse never gets here.
            replay_from: m
                .annotations
                .get(evmesh_config::REPLAY_FROM_ANNOTATION)
                .and_then(|v| ReplayFrom::parse(v).ok().map(|r| (r, v.clone()))),
            counters: Counters::for_subscription,
            labels: (m.namespace.clone(), channel.clone(), m.name.clone()),
        };
        match (stream, channel_cfg) {
            (Some(stream), Some(cc)) => {
                // A Subscription's delivery replaces the channel's; without either, one attempt
                // and no dead-letter sink (as a Knative channel dispatcher).
                let delivery = s
                    .delivery
                    .clone()
                    .or_else(|| cc.delivery.clone())
                    .unwrap_or_else(Delivery::single_attempt);
                let reply = match &s.reply {
                    None => Ok(ReplyTo::Discard),
                    Some(r) => resolver.resolve(r, &m.namespace).map(|url| ReplyTo::Url {
                        url,
                        ca_certs: r.ca_certs.as_deref().map(Arc::from),
                    }),
                };
                d.plan = match reply {
                    Ok(reply) => build_plan(
                        &mut d,
                        resolver,
                        &m.namespace,
                        s.subscriber.as_ref(),
                        delivery,
                        reply,
                    ),
                    Err(e) => Err(("DestinationNotResolved".to_string(), format!("reply: {e}"))),
                };
                d.stream = Some(stream);
            }
            _ if let Some(reason) =
                self.stream_failure(StreamKind::Channel, &m.namespace, channel) =>
            {
                d.plan = Err(("ChannelNotReady".to_string(), reason));
            }
            _ => {
                d.plan = Err((
                    "ChannelDoesNotExist".to_string(),
                    format!(
                        "channel {channel:?} does not exist in namespace {:?}",
                        m.namespace
                    ),
                ));
            }
        }
        d
    }

    /// Starts, updates or parks one trigger or subscription so that it matches `d`.
    async fn apply_route(
        &self,
        mut d: RouteDesired,
        saved: Option<&HashMap<String, Vec<u8>>>,
    ) -> Result<(), StartError> {
        let kind = d.kind();
        let label = d.label.clone();
        let noun = d.resource.noun();
        // Take the current entry out (or make one).
        let (ns, stream_name, name) = d.labels.clone();
        let (ns, stream_name, name) = (&ns, &stream_name, &name);
        let mut entry = self
            .state_mut()
            .routes_mut(kind)
            .remove(&d.key)
            .unwrap_or_else(|| TriggerEntry {
                resource: d.resource.clone(),
                checkpoint_key: d.checkpoint_key.clone(),
                counters: (d.counters)(ns, stream_name, name),
                subscriber_uri: None,
                reply_uri: None,
                dead_letter_uri: None,
                not_ready: None,
                running: None,
                stopping: None,
            });
        // A route moved to another broker or channel (or re-created under a new uid) starts
        // afresh.
        if entry.checkpoint_key != d.checkpoint_key {
            if let Some(run) = entry.running.take() {
                entry.stopping = Some(run.stop(true));
            } else {
                let store = self.inner.store.clone();
                let key = entry.checkpoint_key.clone();
                let _ = blocking(move || crate::log::delete_progress(store.as_ref(), &key)).await;
            }
            entry.checkpoint_key = d.checkpoint_key.clone();
            entry.counters = (d.counters)(ns, stream_name, name);
        }
        let spec_changed = entry.resource.spec_changed(&d.resource);
        let replay_changed = entry.resource.replay_annotation() != d.resource.replay_annotation();
        entry.resource = d.resource.clone();
        entry.subscriber_uri = d.subscriber_uri.clone();
        entry.reply_uri = d.reply_uri.clone();
        entry.dead_letter_uri = d.dead_letter_uri.clone();
        let (plan, not_ready) = match std::mem::replace(&mut d.plan, Err(Default::default())) {
            Ok(p) => (Some(p), None),
            Err(nr) => (None, Some(nr)),
        };
        if let Some((code, msg)) = &not_ready {
            tracing::warn!(route = %label, reason = %code, "{noun} not ready: {msg}");
        }
        entry.not_ready = not_ready;
        match (plan, d.stream.clone()) {
            (Some(mut plan), Some(broker)) => {
                plan.metrics = entry.counters.delivery_metrics();
                // Kept running (updated in place) unless its log or its delivery order changed.
                let same_broker = entry
                    .running
                    .as_ref()
                    .is_some_and(|r| Arc::ptr_eq(&r.broker, &broker) && r.shared.order == d.order);
                if same_broker {
                    if let Some(run) = &entry.running {
                        run.shared.set_plan(plan);
                        if spec_changed {
                            run.shared.set_filter(d.filter.clone());
                            broker.routes.changed();
                        }
                        if replay_changed && let Some((from, text)) = d.replay_from.clone() {
                            // A changed `evmesh.dev/replay-from` repositions the running trigger
                            // (the worker skips a value it already applied).
                            let (done, answer) = tokio::sync::oneshot::channel();
                            let cmd = Command::Replay {
                                from,
                                annotation: Some(text),
                                done,
                            };
                            if run.shared.commands.send(cmd).is_ok() {
                                match answer.await {
                                    Ok(Ok(at)) => {
                                        tracing::info!(trigger = %label, offset = at, "replay-from applied")
                                    }
                                    Ok(Err(e)) => {
                                        tracing::warn!(trigger = %label, "replay-from not applied: {e}")
                                    }
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                } else {
                    if let Some(run) = entry.running.take() {
                        entry.stopping = Some(run.stop(false));
                    }
                    if let Some(prev) = entry.stopping.take() {
                        let _ = prev.await;
                    }
                    match self
                        .start_route(&d, &entry, plan, broker.clone(), saved)
                        .await
                    {
                        Ok(run) => {
                            let plan = run.shared.plan();
                            tracing::info!(
                                route = %label,
                                stream = %stream_name,
                                subscriber = %plan.subscriber.as_ref().map(redact).unwrap_or_default(),
                                dead_letter_sink = %plan.dead_letter.as_ref().map(redact).unwrap_or_default(),
                                "{noun} ready"
                            );
                            if let Some(url) = plan.subscriber.clone() {
                                tokio::spawn(crate::delivery::warn_if_unresolvable(
                                    label.clone(),
                                    url,
                                ));
                            }
                            entry.running = Some(run);
                        }
                        Err(reason) => {
                            // Tried again by the retry task (see `note_failures`).
                            tracing::error!(route = %label, "{noun} not ready: {reason}");
                            entry.not_ready = Some((START_FAILED.to_string(), reason));
                        }
                    }
                }
            }
            _ => {
                if let Some(run) = entry.running.take() {
                    entry.stopping = Some(run.stop(false));
                }
            }
        }
        self.state_mut()
            .routes_mut(kind)
            .insert(d.key.clone(), entry);
        Ok(())
    }

    async fn start_route(
        &self,
        d: &RouteDesired,
        entry: &TriggerEntry,
        plan: Plan,
        broker: Arc<BrokerRuntime>,
        saved: Option<&HashMap<String, Vec<u8>>>,
    ) -> Result<RunningTrigger, String> {
        #[cfg(feature = "fault-injection")]
        if self
            .inner
            .route_starts_to_fail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("injected: the route could not start".into());
        }
        if let Backend::External(log) = &broker.backend {
            return self
                .start_external_route(d, entry, plan, broker.clone(), log.clone())
                .await;
        }
        let key = entry.checkpoint_key.clone();
        let legacy = d
            .legacy_checkpoint_key
            .clone()
            .unwrap_or_else(|| key.clone());
        let (stored, from_legacy) = match saved {
            Some(saved) => match saved.get(&key) {
                Some(v) => (Some(v.clone()), false),
                None if key != legacy => (saved.get(&legacy).cloned(), true),
                None => (None, false),
            },
            None => {
                let store = self.inner.store.clone();
                let prefix = key.clone();
                let found = blocking(move || store.checkpoints(&prefix)).await?;
                let exact = found.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                (exact, false)
            }
        };
        let mut checkpoint = match stored {
            Some(bytes) => serde_json::from_slice::<Checkpoint>(&bytes)
                .map_err(|e| format!("its saved progress ({key}) is unreadable: {e}"))?,
            None => {
                // A new route starts at its log's head; that position is saved at once, so a
                // crash before its first checkpoint does not skip events accepted in between.
                let s = self.inner.store.clone();
                let l = broker.log.clone();
                let head = blocking(move || s.next_offset(&l)).await?;
                let cp = Checkpoint {
                    taken_upto: head,
                    ..Checkpoint::default()
                };
                let bytes = serde_json::to_vec(&cp).map_err(|e| e.to_string())?;
                self.inner
                    .store
                    .put_checkpoint(&key, bytes)
                    .map_err(|e| e.to_string())?;
                cp
            }
        };
        if from_legacy {
            // Adopt the progress saved before triggers had uids.
            if let Ok(bytes) = serde_json::to_vec(&checkpoint) {
                let _ = self.inner.store.put_checkpoint(&key, bytes);
                let _ = self.inner.store.delete_checkpoint(&legacy);
            }
        }
        // Its parked retries (and, from a checkpoint written before retries were parked, its
        // in-flight list, parked now).
        checkpoint = {
            let store = self.inner.store.clone();
            let key = key.clone();
            tokio::task::spawn_blocking(move || {
                crate::log::restore_parked(store.as_ref(), &key, &mut checkpoint)
                    .map(|()| checkpoint)
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let (shared, commands) = TriggerShared::new(
            d.label.clone(),
            key.clone(),
            plan,
            d.filter.clone(),
            d.order,
            checkpoint.taken_upto,
            entry.counters.clone(),
        );
        shared.set_queue_budget(self.inner.options.route_queue_bytes);
        // Retention must keep the restored in-flight events from the start, not only once the
        // worker has saved its first progress.
        if let Some(low) = checkpoint.inflight.iter().map(|e| e.offset).min() {
            shared
                .low_watermark
                .fetch_min(low, std::sync::atomic::Ordering::AcqRel);
        }
        broker.routes.insert(shared.clone());
        broker.notify.notify_one();
        let (stop, stop_rx) = watch::channel(false);
        let delete_after = Arc::new(AtomicBool::new(false));
        let group = Arc::new(crate::log::EmbeddedGroup {
            shared: shared.clone(),
            store: self.inner.store.clone(),
            log: broker.log.clone(),
            router_next: broker.router_next.clone(),
            restored: std::sync::Mutex::new(Some(checkpoint)),
        });
        let worker = Worker {
            shared: shared.clone(),
            group,
            engine: self.inner.engine.clone(),
            publisher: Publisher {
                broker: Some(broker.clone()),
            },
            max_in_flight: self.inner.options.max_in_flight.max(1),
            drain_timeout: self.inner.options.drain_timeout,
            replay_from: d.replay_from.clone(),
            filter_records: false,
        };
        let store = self.inner.store.clone();
        let del = delete_after.clone();
        let task = tokio::spawn(async move {
            worker.supervised(commands, stop_rx).await;
            if del.load(Ordering::Acquire) {
                let k = key.clone();
                let deleted =
                    blocking(move || crate::log::delete_progress(store.as_ref(), &k)).await;
                if let Err(e) = deleted {
                    tracing::warn!("deleting checkpoint {key}: {e}");
                }
            }
        });
        Ok(RunningTrigger {
            shared,
            broker,
            stop,
            delete_after,
            task,
        })
    }

    /// Starts a route on a log outside the embedded store: its own consumer group there (named
    /// by its checkpoint key, which carries its uid), no router, no checkpoint in the store.
    async fn start_external_route(
        &self,
        d: &RouteDesired,
        entry: &TriggerEntry,
        plan: Plan,
        broker: Arc<BrokerRuntime>,
        log: Arc<dyn Log>,
    ) -> Result<RunningTrigger, String> {
        let name = entry.checkpoint_key.clone();
        let spec = GroupSpec {
            route_kind: d.resource.noun(),
            namespace: d.key.0.clone(),
            name: d.key.1.clone(),
            max_in_flight: self.inner.options.max_in_flight.max(1),
            created_ms: d
                .resource
                .metadata()
                .creation_timestamp
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok()),
        };
        let group = log
            .open_group(spec.clone())
            .await
            .map_err(|e| format!("opening its consumer group: {e}"))?;
        let (shared, commands) = TriggerShared::new(
            d.label.clone(),
            name.clone(),
            plan,
            d.filter.clone(),
            d.order,
            0,
            entry.counters.clone(),
        );
        // No router feeds it: it is a member of the broker's routes only for `is_idle` (and is
        // settled whenever its cursor is caught up with nothing pending).
        shared.mark_attached();
        broker.routes.insert(shared.clone());
        let (stop, stop_rx) = watch::channel(false);
        let delete_after = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            shared: shared.clone(),
            group,
            engine: self.inner.engine.clone(),
            publisher: Publisher {
                broker: Some(broker.clone()),
            },
            max_in_flight: self.inner.options.max_in_flight.max(1),
            drain_timeout: self.inner.options.drain_timeout,
            replay_from: d.replay_from.clone(),
            // Its cursor hands it every record of the log: a trigger's filter applies here.
            filter_records: true,
        };
        let del = delete_after.clone();
        let label = d.label.clone();
        let task = tokio::spawn(async move {
            worker.supervised(commands, stop_rx).await;
            if del.load(Ordering::Acquire)
                && let Err(e) = log.delete_group(&spec).await
            {
                tracing::warn!(route = %label, "deleting its consumer group: {e}");
            }
        });
        Ok(RunningTrigger {
            shared,
            broker,
            stop,
            delete_after,
            task,
        })
    }

    /// Publishes an event into broker `namespace/name`: stamps `knativearrivaltime` and the TTL,
    /// and resolves with its offset once it is durably stored.
    pub async fn publish(
        &self,
        namespace: &str,
        name: &str,
        event: Event,
    ) -> Result<Offset, PublishError> {
        let record = EventRecord::from_event(event).map_err(|e| PublishError::Encode(e.0))?;
        self.publish_record(namespace, name, record).await
    }

    /// The running broker or channel `namespace/name` (one lookup for ingress to publish to),
    /// or why there is none: [`PublishError::NotReady`] when it is configured but its log does
    /// not run yet, [`PublishError::NotFound`] otherwise.
    pub(crate) fn stream(
        &self,
        kind: StreamKind,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<BrokerRuntime>, PublishError> {
        let found = {
            let state = self.state();
            let streams = match kind {
                StreamKind::Broker => &state.brokers,
                StreamKind::Channel => &state.channels,
            };
            streams.get(&(namespace, name) as &dyn NamePair).cloned()
        };
        if let Some(stream) = found {
            return Ok(stream);
        }
        let noun = kind.noun();
        match self.stream_failure(kind, namespace, name) {
            Some(why) => Err(PublishError::NotReady(format!(
                "{noun} {namespace}/{name} is not ready: {why}"
            ))),
            None => Err(PublishError::NotFound(format!("{noun} {namespace}/{name}"))),
        }
    }

    /// Publishes `event` to a running broker or channel (from [`BrokerService::stream`]) and
    /// counts it there as accepted. A refusal is counted by the caller, once per request
    /// whatever refused it (ingress: decoding or the append).
    pub(crate) async fn publish_to(
        stream: &BrokerRuntime,
        event: EventRecord,
    ) -> Result<Offset, PublishError> {
        let offset = stream.append(event).await?;
        stream.counters.accepted();
        Ok(offset)
    }

    /// Publishes an [`EventRecord`] (attributes, data bytes and passed-through headers as
    /// received), like [`BrokerService::publish`].
    pub async fn publish_record(
        &self,
        namespace: &str,
        name: &str,
        event: EventRecord,
    ) -> Result<Offset, PublishError> {
        self.publish_named(StreamKind::Broker, namespace, name, event)
            .await
    }

    /// Publishes to the broker or channel `namespace/name` and counts the outcome there.
    async fn publish_named(
        &self,
        kind: StreamKind,
        namespace: &str,
        name: &str,
        event: EventRecord,
    ) -> Result<Offset, PublishError> {
        let stream = self.stream(kind, namespace, name)?;
        stream.publish_counted(event).await
    }

    /// Whether broker `namespace/name` exists.
    pub fn has_broker(&self, namespace: &str, name: &str) -> bool {
        self.state()
            .brokers
            .contains_key(&(namespace, name) as &dyn NamePair)
    }

    /// Why broker `namespace/name` is configured but does not run (its log could not be
    /// opened, e.g. its Kafka is unreachable; tried again on a timer), or `None`.
    ///
    /// ```no_run
    /// # fn demo(service: &evmesh_broker::BrokerService) {
    /// if let Some(why) = service.broker_not_ready("default", "orders") {
    ///     eprintln!("broker default/orders is not ready: {why}");
    /// }
    /// # }
    /// ```
    pub fn broker_not_ready(&self, namespace: &str, name: &str) -> Option<String> {
        self.stream_failure(StreamKind::Broker, namespace, name)
    }

    /// Why channel `namespace/name` is configured but does not run, or `None` (see
    /// [`broker_not_ready`](Self::broker_not_ready)).
    pub fn channel_not_ready(&self, namespace: &str, name: &str) -> Option<String> {
        self.stream_failure(StreamKind::Channel, namespace, name)
    }

    /// The brokers and channels configured that do not run, with why: `(resource, namespace,
    /// name, reason)`, sorted.
    pub fn failing_streams(&self) -> Vec<(&'static str, String, String, String)> {
        let mut v: Vec<_> = self
            .state()
            .stream_failures
            .iter()
            .map(|((k, ns, n), why)| (k.noun(), ns.clone(), n.clone(), why.clone()))
            .collect();
        v.sort();
        v
    }

    /// The brokers, for the admin API.
    pub fn brokers(&self) -> Vec<BrokerView> {
        let mut v: Vec<_> = self
            .state()
            .brokers
            .values()
            .map(|b| BrokerView {
                namespace: b.namespace.clone(),
                name: b.name.clone(),
                url: b.url.to_string(),
                dead_letter_sink_uri: b
                    .dead_letter
                    .read()
                    .ok()
                    .and_then(|d| d.as_ref().map(redact)),
                routed_offset: b.router_next.load(Ordering::Relaxed),
                counters: b.counters.snapshot(),
            })
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    /// The not-ready `(code, reason)` of a route, if it is not ready.
    fn not_ready(&self, entry: &TriggerEntry) -> (Option<String>, Option<String>) {
        let running_reason = entry
            .running
            .as_ref()
            .and_then(|r| r.shared.not_ready_reason());
        match (&entry.not_ready, running_reason) {
            (Some((c, r)), _) => (Some(c.clone()), Some(r.clone())),
            (None, Some(r)) => (Some("WorkerFailed".to_string()), Some(r)),
            (None, None) => {
                // An in-process subscriber nobody listens on: its deliveries wait.
                let waiting = entry.running.as_ref().and_then(|r| {
                    let plan = r.shared.plan();
                    let url = plan.subscriber.as_ref()?;
                    self.inner.engine.local_sinks().get(url)?.not_ready()
                });
                match waiting {
                    Some(r) => (Some("SubscriberNotReady".to_string()), Some(r)),
                    None => (None, None),
                }
            }
        }
    }

    fn view(&self, entry: &TriggerEntry) -> TriggerView {
        let m = entry.resource.metadata();
        let (code, reason) = self.not_ready(entry);
        let broker = match &entry.resource {
            RouteResource::Trigger(t) => t.spec.broker.clone(),
            RouteResource::Subscription(s) => s.channel.1.clone(),
        };
        TriggerView {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            broker,
            subscriber_uri: entry.subscriber_uri.clone(),
            dead_letter_sink_uri: entry.dead_letter_uri.clone(),
            not_ready_reason: reason,
            not_ready_code: code,
            counters: entry.counters.snapshot(),
        }
    }

    fn subscription_view(&self, entry: &TriggerEntry) -> SubscriptionView {
        let m = entry.resource.metadata();
        let (code, reason) = self.not_ready(entry);
        let channel = match &entry.resource {
            RouteResource::Subscription(s) => s.channel.1.clone(),
            RouteResource::Trigger(t) => t.spec.broker.clone(),
        };
        SubscriptionView {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            channel,
            subscriber_uri: entry.subscriber_uri.clone(),
            reply_uri: entry.reply_uri.clone(),
            dead_letter_sink_uri: entry.dead_letter_uri.clone(),
            not_ready_reason: reason,
            not_ready_code: code,
            counters: entry.counters.snapshot(),
        }
    }

    /// The subscriptions (sorted by namespace and name), for the admin API.
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        self.state()
            .subscriptions
            .values()
            .map(|e| self.subscription_view(e))
            .collect()
    }

    /// One subscription's status.
    pub fn subscription(&self, namespace: &str, name: &str) -> Option<SubscriptionView> {
        self.state()
            .subscriptions
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| self.subscription_view(e))
    }

    /// The channels, for the admin API.
    pub fn channels(&self) -> Vec<ChannelView> {
        let state = self.state();
        let mut v: Vec<_> = state
            .channels
            .values()
            .map(|c| self.channel_view(&state, c))
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    /// One channel's status (`None` when it does not run).
    pub fn channel(&self, namespace: &str, name: &str) -> Option<ChannelView> {
        let state = self.state();
        state
            .channels
            .get(&(namespace.to_string(), name.to_string()))
            .map(|c| self.channel_view(&state, c))
    }

    fn channel_view(&self, state: &State, c: &BrokerRuntime) -> ChannelView {
        ChannelView {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            url: c.url.to_string(),
            dead_letter_sink_uri: c
                .dead_letter
                .read()
                .ok()
                .and_then(|d| d.as_ref().map(redact)),
            routed_offset: c.router_next.load(Ordering::Relaxed),
            subscribers: state
                .subscriptions
                .values()
                .filter(|e| {
                    matches!(&e.resource, RouteResource::Subscription(s)
                        if s.metadata.namespace == c.namespace && s.channel.1 == c.name)
                })
                .map(|e| self.subscription_view(e))
                .collect(),
            counters: c.counters.snapshot(),
        }
    }

    /// Publishes an [`EventRecord`] into channel `namespace/name` (stored as received; resolves
    /// once it is durable).
    pub async fn publish_channel(
        &self,
        namespace: &str,
        name: &str,
        event: EventRecord,
    ) -> Result<Offset, PublishError> {
        self.publish_named(StreamKind::Channel, namespace, name, event)
            .await
    }

    /// Whether channel `namespace/name` runs.
    pub fn has_channel(&self, namespace: &str, name: &str) -> bool {
        self.state()
            .channels
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The triggers (sorted by namespace and name), for the admin API.
    pub fn triggers(&self) -> Vec<TriggerView> {
        self.state()
            .triggers
            .values()
            .map(|e| self.view(e))
            .collect()
    }

    /// One trigger's status.
    pub fn trigger(&self, namespace: &str, name: &str) -> Option<TriggerView> {
        self.state()
            .triggers
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| self.view(e))
    }

    /// Positions trigger `namespace/name` on its broker's log at `from` (`earliest`, or the first
    /// event appended at or after a time) and re-delivers from there through its filter, to it
    /// only. Its pending deliveries and retries are dropped and the new position is saved before
    /// this returns the offset it resumes from.
    pub async fn replay(
        &self,
        namespace: &str,
        name: &str,
        from: ReplayFrom,
    ) -> Result<Offset, ReplayError> {
        let id = format!("{namespace}/{name}");
        let shared = {
            let state = self.state();
            match state
                .triggers
                .get(&(namespace.to_string(), name.to_string()))
            {
                None => return Err(ReplayError::NotFound(id)),
                Some(entry) => match &entry.running {
                    Some(run) => run.shared.clone(),
                    None => {
                        let reason = entry
                            .not_ready
                            .as_ref()
                            .map(|(_, r)| r.clone())
                            .unwrap_or_default();
                        return Err(ReplayError::NotReady(id, reason));
                    }
                },
            }
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let cmd = Command::Replay {
            from,
            annotation: None,
            done,
        };
        if shared.commands.send(cmd).is_err() {
            return Err(ReplayError::Failed(id, "the trigger has stopped".into()));
        }
        match answer.await {
            Ok(Ok(offset)) => Ok(offset),
            Ok(Err(e)) => Err(ReplayError::Failed(id, e)),
            Err(_) => Err(ReplayError::Failed(
                id,
                "the trigger stopped before replaying".into(),
            )),
        }
    }

    /// Fault injection for tests (cargo feature `fault-injection`): the delivery worker of
    /// trigger `namespace/name` panics at its next turn and then at each of its next `times - 1`
    /// restarts. Returns whether the trigger runs.
    #[cfg(feature = "fault-injection")]
    pub fn inject_worker_panic(&self, namespace: &str, name: &str, times: u32) -> bool {
        let state = self.state();
        match state
            .triggers
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|e| e.running.as_ref())
        {
            Some(run) => {
                run.shared.panics_left.store(times, Ordering::Release);
                run.shared.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Fault injection for tests (cargo feature `fault-injection`): the router of broker
    /// `namespace/name` panics at its next turn and then at each of its next `times - 1`
    /// restarts. Returns whether the broker runs a router (one on the embedded store).
    #[cfg(feature = "fault-injection")]
    pub fn inject_router_panic(&self, namespace: &str, name: &str, times: u32) -> bool {
        let state = self.state();
        match state
            .brokers
            .get(&(namespace.to_string(), name.to_string()))
        {
            Some(b) if matches!(b.backend, Backend::Embedded) => {
                b.router_panics_left.store(times, Ordering::Release);
                b.notify.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Fault injection for tests (cargo feature `fault-injection`): the next `times` starts of
    /// a trigger's or subscription's route fail, as when its progress cannot be read or its
    /// consumer group on a log elsewhere cannot be opened; the route is not ready meanwhile and
    /// the retry task starts it again.
    #[cfg(feature = "fault-injection")]
    pub fn inject_route_start_failures(&self, times: u32) {
        self.inner
            .route_starts_to_fail
            .store(times, Ordering::Release);
    }

    /// Fault injection for tests (cargo feature `fault-injection`): the next `times` events
    /// broker `namespace/name` stores are not handed to its router in memory, as when an
    /// append's task is dropped between its commit and its hand-over (a client gone at that
    /// instant); the router must find them in the log. Returns whether the broker runs a router
    /// (one on the embedded store).
    #[cfg(feature = "fault-injection")]
    pub fn inject_lost_handovers(&self, namespace: &str, name: &str, times: u32) -> bool {
        let state = self.state();
        match state
            .brokers
            .get(&(namespace.to_string(), name.to_string()))
        {
            Some(b) if matches!(b.backend, Backend::Embedded) => {
                b.handovers_to_lose.store(times, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Whether the mesh is idle now: every event stored in a broker or channel so far has been
    /// routed, and every running trigger and subscription has finished with what it was handed
    /// (delivered, replied or dead-lettered; nothing in flight, waiting for a retry or for an
    /// in-process subscriber). Routes that cannot run (not ready) are not counted.
    pub fn is_idle(&self) -> bool {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return false;
        }
        let logs: Vec<Arc<BrokerRuntime>> = {
            let state = self.state();
            state
                .brokers
                .values()
                .chain(state.channels.values())
                .cloned()
                .collect()
        };
        // A log outside the store has no router: its routes tell for themselves.
        let heads = || {
            logs.iter()
                .map(|b| match b.backend {
                    Backend::Embedded => b.store.next_offset(&b.log).ok(),
                    Backend::External(_) => Some(0),
                })
                .collect::<Option<Vec<Offset>>>()
        };
        let Some(before) = heads() else {
            return false;
        };
        for (b, &head) in logs.iter().zip(&before) {
            if (matches!(b.backend, Backend::Embedded)
                && b.router_next.load(Ordering::Acquire) < head)
                || !b.routes.snapshot().iter().all(|t| t.is_settled())
            {
                return false;
            }
        }
        // A route that finished during the pass may have stored a reply in a log checked
        // earlier: idle only if no log grew meanwhile.
        heads().is_some_and(|after| after == before)
    }

    /// Resolves once the mesh [is idle](Self::is_idle) (checked every few milliseconds).
    ///
    /// # Errors
    /// [`PublishError::ShuttingDown`] when the service shuts down first.
    pub async fn wait_idle(&self) -> Result<(), PublishError> {
        loop {
            if !self.inner.accepting.load(Ordering::Acquire) {
                return Err(PublishError::ShuttingDown);
            }
            if self.is_idle() {
                return Ok(());
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    /// Stops accepting events, lets in-flight deliveries finish (up to the drain timeout), saves
    /// every trigger's progress and flushes the store. Pending retries resume on the next start.
    pub async fn shutdown(&self) {
        let _guard = self.inner.reconcile.lock().await;
        self.inner.accepting.store(false, Ordering::Release);
        let mut tasks = Vec::new();
        {
            let mut state = self.state_mut();
            let state = &mut *state;
            // Brokers and channels first: their retention must not see the triggers leave (a
            // log without readers pins nothing) while those still hold pending events.
            for b in state.brokers.values().chain(state.channels.values()) {
                let _ = b.stop.send(true);
                if let Ok(mut t) = b.tasks.lock() {
                    tasks.append(&mut t);
                }
            }
            for entry in state
                .triggers
                .values_mut()
                .chain(state.subscriptions.values_mut())
            {
                if let Some(run) = entry.running.take() {
                    tasks.push(run.stop(false));
                }
                tasks.extend(entry.stopping.take());
            }
            tasks.append(&mut state.deleting);
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.inner.store.flush().await {
            tracing::error!("final flush failed: {e}");
        }
    }

    /// Resolves once everything handed to the store so far (events, progress) is durable.
    pub async fn flush(&self) -> Result<(), evmesh_store::StoreError> {
        self.inner.store.flush().await
    }
}

impl RouteDesired {
    fn kind(&self) -> RouteKind {
        match self.resource {
            RouteResource::Trigger(_) => RouteKind::Trigger,
            RouteResource::Subscription(_) => RouteKind::Subscription,
        }
    }
}

/// Resolves a route's subscriber and dead-letter sink into a plan (recording the URIs its status
/// shows), or the reason it cannot run.
fn build_plan(
    d: &mut RouteDesired,
    resolver: &Resolver,
    namespace: &str,
    subscriber: Option<&evmesh_config::Destination>,
    delivery: Delivery,
    reply: ReplyTo,
) -> Result<Plan, (String, String)> {
    let sub = subscriber
        .map(|s| resolver.resolve(s, namespace))
        .transpose();
    let dead_letter = match &delivery.dead_letter_sink {
        Some(dls) => resolver.resolve(dls, namespace).map(Some),
        None => Ok(None),
    };
    match (sub, dead_letter) {
        (Ok(s), Ok(dl)) => {
            d.subscriber_uri = s.as_ref().map(redact);
            d.dead_letter_uri = dl.as_ref().map(redact);
            d.reply_uri = match &reply {
                ReplyTo::Url { url, .. } => Some(redact(url)),
                _ => None,
            };
            Ok(Plan {
                subscriber: s,
                reply,
                dead_letter: dl,
                subscriber_ca_certs: subscriber
                    .and_then(|s| s.ca_certs.as_deref())
                    .map(Arc::from),
                dead_letter_ca_certs: delivery
                    .dead_letter_sink
                    .as_ref()
                    .and_then(|d| d.ca_certs.as_deref())
                    .map(Arc::from),
                metrics: None,
                delivery,
                namespace: namespace.to_string(),
            })
        }
        (s, dl) => {
            let reason = [s.err(), dl.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            Err(("DestinationNotResolved".to_string(), reason))
        }
    }
}

/// Runs a broker's router under a supervisor: after a panic it restarts (with backoff) at the
/// offset it had reached, and meanwhile the broker's triggers are not ready.
async fn supervised_router(router: Arc<Router>, shutdown: watch::Receiver<bool>) {
    let routes = router.routes.clone();
    let sd = shutdown.clone();
    crate::supervise::supervise(
        format!("router of broker {}", router.log.as_str()),
        move |_| {
            let router = router.clone();
            let shutdown = sd.clone();
            async move {
                router.run(shutdown).await;
                Ok(())
            }
        },
        move |reason| {
            for t in routes.snapshot() {
                t.set_not_ready("router", Some(reason.clone()));
            }
        },
        shutdown,
    )
    .await
}

async fn retention(
    broker: Arc<BrokerRuntime>,
    options: ServiceOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(options.retention_interval) => {}
            _ = shutdown.changed() => return,
        }
        if !broker.routes_loaded.load(Ordering::Acquire) {
            // Its triggers are not added yet: nothing is known to be unneeded.
            continue;
        }
        // Events some trigger still needs (or the router has not seen yet) are pinned; a broker
        // without triggers pins nothing.
        let keep_from = broker
            .routes
            .low_watermark()
            .map(|low| low.min(broker.router_next.load(Ordering::Acquire)))
            .unwrap_or(u64::MAX);
        // Shutdown signals the broker before its triggers leave `routes`: once they may have
        // left, this sees the signal, and the position read above is not used.
        if *shutdown.borrow() {
            return;
        }
        let store = broker.store.clone();
        let log = broker.log.clone();
        let retention = options.retention;
        match tokio::task::spawn_blocking(move || store.apply_retention(&log, retention, keep_from))
            .await
        {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(broker = %broker.log.as_str(), deleted = n, "retention")
            }
            Ok(Err(e)) => tracing::warn!(broker = %broker.log.as_str(), "retention failed: {e}"),
            _ => {}
        }
    }
}
