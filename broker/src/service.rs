//! The broker service: brokers' logs, ingress publishing (stamp + durable append), and the
//! dispatch tasks, built from a validated [`MeshConfig`] and run until shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cloudevents::Event;
use evmesh_config::{MeshConfig, Resolver, broker_url};
use evmesh_filter::FilterIndex;
use evmesh_store::{EventStore, LogId, Offset, Retention};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use url::Url;

use crate::delivery::{DeliveryEngine, Plan, redact};
use crate::dispatcher::{Checkpoint, Router, TriggerQueue, TriggerShared, Worker};
use crate::ingress::{ARRIVAL_EXTENSION, MAX_TTL, TTL_EXTENSION};
use crate::metrics::{CounterSnapshot, Counters};
use crate::record::EventRecord;

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
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No such broker.
    #[error("broker {0} not found")]
    NotFound(String),
    /// The `knativebrokerttl` extension ran out: the event is looping.
    #[error("event dropped: knativebrokerttl reached 0 (reply loop protection)")]
    TtlExpired,
    /// The event could not be serialized.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// The store failed; nothing was accepted.
    #[error("event not stored: {0}")]
    Store(#[from] evmesh_store::StoreError),
    /// The service is shutting down.
    #[error("broker is shutting down")]
    ShuttingDown,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// One broker at run time.
pub(crate) struct BrokerRuntime {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) log: LogId,
    pub(crate) url: Url,
    pub(crate) dead_letter: Option<Url>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) counters: Counters,
    pub(crate) triggers: Vec<Arc<TriggerShared>>,
    pub(crate) router_next: Arc<AtomicU64>,
    pub(crate) accepting: Arc<AtomicBool>,
    pub(crate) store: Arc<dyn EventStore>,
}

impl BrokerRuntime {
    /// Stamps and durably appends one event.
    async fn append(&self, mut event: EventRecord) -> Result<Offset, PublishError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
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
        event.set_extension(
            ARRIVAL_EXTENSION,
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .into(),
        );
        let bytes = event.to_stored();
        let offset = self.store.append(&self.log, bytes).await?;
        self.notify.notify_one();
        Ok(offset)
    }
}

/// Publishes replies back into the broker a trigger belongs to.
#[derive(Clone)]
pub(crate) struct Publisher {
    broker: Arc<BrokerRuntime>,
}

impl Publisher {
    /// Publishes `reply` with the TTL of the event it answers (so reply loops end) and its
    /// passed-through headers (the reply's own take precedence).
    pub(crate) async fn publish_reply(
        &self,
        mut reply: EventRecord,
        original: &EventRecord,
    ) -> Result<(), ReplyFailure> {
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
        match self.broker.append(reply).await {
            Ok(_) => Ok(()),
            Err(PublishError::TtlExpired) => {
                crate::telemetry::reply_loop_stopped(&self.broker.namespace, &self.broker.name);
                // As in Knative: the broker answers the reply with 400, so the original event
                // fails (not retryable) and goes to the dead-letter sink.
                tracing::warn!(
                    broker = %self.broker.log.as_str(),
                    event = %crate::delivery::describe(original),
                    "reply rejected: knativebrokerttl exhausted (reply loop); the original event is dead-lettered"
                );
                Err(ReplyFailure {
                    status: Some(400),
                    retryable: false,
                    reason: PublishError::TtlExpired.to_string(),
                })
            }
            Err(e) => Err(ReplyFailure {
                status: None,
                retryable: true,
                reason: format!("storing the reply failed: {e}"),
            }),
        }
    }
}

/// Why a reply was not stored.
pub(crate) struct ReplyFailure {
    /// The status ingress would have answered.
    pub(crate) status: Option<u16>,
    /// Whether the delivery is tried again.
    pub(crate) retryable: bool,
    /// Human-readable reason.
    pub(crate) reason: String,
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
    /// Why the trigger is not ready, if it is not.
    pub not_ready_reason: Option<String>,
    /// Counters.
    pub counters: CounterSnapshot,
}

struct Inner {
    store: Arc<dyn EventStore>,
    brokers: HashMap<(String, String), Arc<BrokerRuntime>>,
    triggers: Vec<TriggerView>,
    trigger_counters: HashMap<(String, String), Counters>,
    accepting: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The running brokers of a mesh. Cheap to clone.
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

fn checkpoint_key(ns: &str, broker: &str, trigger: &str) -> String {
    format!("t/{ns}/{broker}/{trigger}")
}

impl BrokerService {
    /// Opens every broker's log, restores trigger progress and starts routing and delivery.
    pub async fn start(
        mesh: &MeshConfig,
        resolver: &Resolver,
        store: Arc<dyn EventStore>,
        options: ServiceOptions,
    ) -> Result<BrokerService, StartError> {
        let s = store.clone();
        let saved: HashMap<String, Vec<u8>> =
            tokio::task::spawn_blocking(move || s.checkpoints("t/"))
                .await
                .map_err(|e| StartError(e.to_string()))?
                .map_err(|e| StartError(format!("reading checkpoints: {e}")))?
                .into_iter()
                .collect();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accepting = Arc::new(AtomicBool::new(true));
        let engine = DeliveryEngine::with_ca_file(options.ca_file.as_deref())
            .map_err(|e| StartError(e.to_string()))?;
        let mut brokers = HashMap::new();
        let mut views = Vec::new();
        let mut trigger_counters = HashMap::new();
        let mut tasks = Vec::new();
        let mut live_keys = HashSet::new();

        for b in &mesh.brokers {
            let meta = &b.resource.metadata;
            let log = LogId::new(format!("{}/{}", meta.namespace, meta.name));
            let s = store.clone();
            let l = log.clone();
            let head = tokio::task::spawn_blocking(move || s.next_offset(&l))
                .await
                .map_err(|e| StartError(e.to_string()))?
                .map_err(|e| StartError(format!("opening log {}: {e}", log.as_str())))?;
            let broker_dls = b
                .delivery
                .dead_letter_sink
                .as_ref()
                .and_then(|d| resolver.resolve(d, &meta.namespace).ok());
            let mut restored = Vec::new();
            let mut shared_triggers = Vec::new();
            let mut filters = Vec::new();
            for t in mesh.triggers.iter().filter(|t| {
                t.resource.metadata.namespace == meta.namespace
                    && t.resource.spec.broker == meta.name
            }) {
                let tm = &t.resource.metadata;
                let delivery = t.delivery.clone().unwrap_or_else(|| b.delivery.clone());
                let subscriber = resolver.resolve(&t.resource.spec.subscriber, &tm.namespace);
                let dead_letter = match &delivery.dead_letter_sink {
                    Some(d) => resolver.resolve(d, &tm.namespace).map(Some),
                    None => Ok(None),
                };
                let counters = Counters::for_trigger(&tm.namespace, &meta.name, &tm.name);
                trigger_counters.insert((tm.namespace.clone(), tm.name.clone()), counters.clone());
                let (subscriber, dead_letter) = match (subscriber, dead_letter) {
                    (Ok(s), Ok(d)) => (s, d),
                    (s, d) => {
                        let reason = [s.err(), d.err()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join("; ");
                        tracing::error!(trigger = %format!("{}/{}", tm.namespace, tm.name), "not ready: {reason}");
                        views.push(TriggerView {
                            namespace: tm.namespace.clone(),
                            name: tm.name.clone(),
                            subscriber_uri: None,
                            dead_letter_sink_uri: None,
                            not_ready_reason: Some(reason),
                            counters: CounterSnapshot::default(),
                        });
                        continue;
                    }
                };
                let key = checkpoint_key(&tm.namespace, &meta.name, &tm.name);
                live_keys.insert(key.clone());
                let checkpoint = match saved
                    .get(&key)
                    .map(|b| serde_json::from_slice::<Checkpoint>(b))
                {
                    Some(Ok(cp)) => cp,
                    Some(Err(e)) => {
                        tracing::error!(checkpoint = %key, "unreadable progress, starting at the log head: {e}");
                        Checkpoint {
                            taken_upto: head,
                            inflight: vec![],
                        }
                    }
                    None => Checkpoint {
                        taken_upto: head,
                        inflight: vec![],
                    },
                };
                tracing::info!(
                    trigger = %format!("{}/{}", tm.namespace, tm.name),
                    broker = %meta.name,
                    subscriber = %redact(&subscriber),
                    dead_letter_sink = %dead_letter.as_ref().map(redact).unwrap_or_default(),
                    "trigger ready"
                );
                tokio::spawn(crate::delivery::warn_if_unresolvable(
                    format!("{}/{}", tm.namespace, tm.name),
                    subscriber.clone(),
                ));
                views.push(TriggerView {
                    namespace: tm.namespace.clone(),
                    name: tm.name.clone(),
                    subscriber_uri: Some(redact(&subscriber)),
                    dead_letter_sink_uri: dead_letter.as_ref().map(redact),
                    not_ready_reason: None,
                    counters: CounterSnapshot::default(),
                });
                let shared = Arc::new(TriggerShared {
                    name: format!("{}/{}", tm.namespace, tm.name),
                    checkpoint_key: key,
                    plan: Plan {
                        subscriber,
                        dead_letter,
                        subscriber_ca_certs: t
                            .resource
                            .spec
                            .subscriber
                            .ca_certs
                            .as_deref()
                            .map(Arc::from),
                        dead_letter_ca_certs: delivery
                            .dead_letter_sink
                            .as_ref()
                            .and_then(|d| d.ca_certs.as_deref())
                            .map(Arc::from),
                        metrics: counters.delivery_metrics(),
                        delivery,
                        namespace: tm.namespace.clone(),
                    },
                    queue: std::sync::Mutex::new(TriggerQueue::default()),
                    notify: Notify::new(),
                    low_watermark: AtomicU64::new(checkpoint.taken_upto),
                    start: checkpoint.taken_upto,
                    counters,
                });
                filters.push((shared_triggers.len(), t.filter.clone()));
                shared_triggers.push(shared);
                restored.push(checkpoint);
            }
            let router_next = shared_triggers
                .iter()
                .map(|t| t.start)
                .min()
                .unwrap_or(head)
                .min(head);
            let runtime = Arc::new(BrokerRuntime {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                log: log.clone(),
                url: broker_url(resolver.ingress(), &meta.namespace, &meta.name),
                dead_letter: broker_dls,
                notify: Arc::new(Notify::new()),
                counters: Counters::default(),
                triggers: shared_triggers.clone(),
                router_next: Arc::new(AtomicU64::new(router_next)),
                accepting: accepting.clone(),
                store: store.clone(),
            });
            let router = Router {
                store: store.clone(),
                log: log.clone(),
                index: FilterIndex::new(filters),
                triggers: shared_triggers.clone(),
                notify: runtime.notify.clone(),
                next: runtime.router_next.clone(),
                counters: runtime.counters.clone(),
            };
            tasks.push(tokio::spawn(router.run(shutdown_rx.clone())));
            for (shared, checkpoint) in shared_triggers.into_iter().zip(restored) {
                let worker = Worker {
                    shared,
                    store: store.clone(),
                    log: log.clone(),
                    engine: engine.clone(),
                    publisher: Publisher {
                        broker: runtime.clone(),
                    },
                    router_next: runtime.router_next.clone(),
                    max_in_flight: options.max_in_flight.max(1),
                    drain_timeout: options.drain_timeout,
                };
                tasks.push(tokio::spawn(worker.run(checkpoint, shutdown_rx.clone())));
            }
            tasks.push(tokio::spawn(retention(
                runtime.clone(),
                options.clone(),
                shutdown_rx.clone(),
            )));
            brokers.insert((meta.namespace.clone(), meta.name.clone()), runtime);
        }
        for key in saved.keys().filter(|k| !live_keys.contains(*k)) {
            tracing::info!(checkpoint = %key, "trigger no longer configured: forgetting its progress");
            if let Err(e) = store.delete_checkpoint(key) {
                tracing::warn!("deleting stale checkpoint {key}: {e}");
            }
        }
        Ok(BrokerService {
            inner: Arc::new(Inner {
                store,
                brokers,
                triggers: views,
                trigger_counters,
                accepting,
                shutdown,
                tasks: tokio::sync::Mutex::new(tasks),
            }),
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

    /// Publishes an [`EventRecord`] (attributes, data bytes and passed-through headers as
    /// received), like [`BrokerService::publish`].
    pub async fn publish_record(
        &self,
        namespace: &str,
        name: &str,
        event: EventRecord,
    ) -> Result<Offset, PublishError> {
        let Some(broker) = self
            .inner
            .brokers
            .get(&(namespace.to_string(), name.to_string()))
        else {
            return Err(PublishError::NotFound(format!("{namespace}/{name}")));
        };
        let result = broker.append(event).await;
        match &result {
            Ok(_) => broker.counters.accepted(),
            Err(_) => broker.counters.rejected(),
        }
        result
    }

    /// Counts a request rejected at ingress before it became an event (bad request, too large).
    pub fn count_rejected(&self, namespace: &str, name: &str) {
        if let Some(b) = self
            .inner
            .brokers
            .get(&(namespace.to_string(), name.to_string()))
        {
            b.counters.rejected();
        }
    }

    /// Whether broker `namespace/name` exists.
    pub fn has_broker(&self, namespace: &str, name: &str) -> bool {
        self.inner
            .brokers
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The brokers, for the admin API.
    pub fn brokers(&self) -> Vec<BrokerView> {
        let mut v: Vec<_> = self
            .inner
            .brokers
            .values()
            .map(|b| BrokerView {
                namespace: b.namespace.clone(),
                name: b.name.clone(),
                url: b.url.to_string(),
                dead_letter_sink_uri: b.dead_letter.as_ref().map(redact),
                routed_offset: b.router_next.load(Ordering::Relaxed),
                counters: b.counters.snapshot(),
            })
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    /// The triggers, for the admin API.
    pub fn triggers(&self) -> Vec<TriggerView> {
        self.inner
            .triggers
            .iter()
            .map(|t| {
                let mut t = t.clone();
                if let Some(c) = self
                    .inner
                    .trigger_counters
                    .get(&(t.namespace.clone(), t.name.clone()))
                {
                    t.counters = c.snapshot();
                }
                t
            })
            .collect()
    }

    /// Stops accepting events, lets in-flight deliveries finish (up to the drain timeout), saves
    /// every trigger's progress and flushes the store. Pending retries resume on the next start.
    pub async fn shutdown(&self) {
        self.inner.accepting.store(false, Ordering::Release);
        let _ = self.inner.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().await);
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.inner.store.flush().await {
            tracing::error!("final flush failed: {e}");
        }
    }
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
        // Events some trigger still needs (or the router has not seen yet) are pinned; a broker
        // without triggers pins nothing.
        let keep_from = if broker.triggers.is_empty() {
            u64::MAX
        } else {
            broker
                .triggers
                .iter()
                .map(|t| t.low_watermark.load(Ordering::Acquire))
                .chain(std::iter::once(broker.router_next.load(Ordering::Acquire)))
                .min()
                .unwrap_or(0)
        };
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
