//! Runs the mesh's sources (PingSource, GitHubSource, ApiServerSource): starts, restarts and stops them as the
//! resources change, routes GitHub webhooks to them, and reports their status.
//!
//! A source is a composition, as the design card has it: an internal channel (a durable log,
//! `_source.<kind>.<name>` in the source's namespace) with one subscription delivering to the
//! resolved `sink` through the shared delivery engine (retries; in process when the sink is one
//! of evmesh's own brokers or channels). The source's [`EventSink`] publishes into that channel
//! and resolves once the event is durable.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use evmesh_broker::{BrokerService, PublishError};
use evmesh_config::{
    BackoffPolicy, ChannelConfig, ChannelKind, Delivery, MeshConfig, ObjectMeta, Resolver,
    SourceConfig, SourceSpec, SubscriptionConfig,
};
use evmesh_sources::{
    ApiServerSource, BoxFuture, CancellationToken, EventRecord, EventSink, GitHubSource, KubeApi,
    PingSource, SinkError, SinkErrorKind, Source, SourceContext, WebhookHooks, webhook_router,
    webhook_url,
};
use evmesh_store::EventStore;
use serde_json::{Value, json};

/// Not-ready reasons of a running source that `/readyz` reports (a source waiting for a normal
/// step, such as joining its consumer group, is not failing).
const FAILING_REASONS: &[&str] = &[evmesh_kafka::source::KAFKA_UNAVAILABLE];
use url::Url;

/// Checkpoint key prefix of the GitHub webhook ids (`status.webhookIDKey`), kept across restarts
/// so a restarted evmesh updates its webhook instead of registering another.
const HOOK_KEY: &str = "src~github-hook/";

/// `(kind, namespace, name)`.
type Key = (String, String, String);

/// A built source, and the same as a GitHubSource when it is one (for its webhook route).
type Built = (Arc<dyn Source>, Option<Arc<GitHubSource>>);

/// The internal channel (and subscription) of a source: `_source.<kind>.<name>`. The `_` keeps
/// it apart from any Kubernetes name.
pub(crate) fn internal_channel(kind: &str, name: &str) -> String {
    format!("_source.{}.{name}", kind.to_ascii_lowercase())
}

/// Delivery from a source's channel to its sink: Knative's source adapters retry 5 times,
/// exponentially from 50 ms.
fn source_delivery() -> Delivery {
    Delivery {
        retry: 5,
        backoff_policy: BackoffPolicy::Exponential,
        backoff_delay: Some(Duration::from_millis(50)),
        ..Delivery::single_attempt()
    }
}

/// The mesh the data plane runs: `mesh` plus one internal channel and one subscription to the
/// sink per source (`None` when there are no sources: nothing to add).
pub(crate) fn with_source_channels(mesh: &MeshConfig) -> Option<MeshConfig> {
    if mesh.sources.is_empty() {
        return None;
    }
    let mut m = mesh.clone();
    // A KafkaSource delivers straight from its topics (the Kafka log) through the delivery engine.
    for s in mesh
        .sources
        .iter()
        .filter(|s| !matches!(s.spec, SourceSpec::Kafka(_)))
    {
        let name = internal_channel(s.kind(), &s.metadata.name);
        let metadata = ObjectMeta::namespaced(&s.metadata.namespace, &name);
        m.channels.push(ChannelConfig {
            kind: ChannelKind::InMemory,
            metadata: metadata.clone(),
            delivery: None,
            spec: serde_json::Value::Null,
            location: s.location.clone(),
        });
        m.subscriptions.push(SubscriptionConfig {
            metadata,
            channel: (ChannelKind::InMemory, name),
            subscriber: Some(s.sink().clone()),
            reply: None,
            delivery: Some(source_delivery()),
            location: s.location.clone(),
        });
    }
    Some(m)
}

/// Publishes into a source's internal channel.
struct ChannelSink {
    service: BrokerService,
    namespace: String,
    name: String,
}

impl EventSink for ChannelSink {
    fn publish(&self, event: EventRecord) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            match self
                .service
                .publish_channel(&self.namespace, &self.name, event)
                .await
            {
                Ok(_) => Ok(()),
                Err(e @ (PublishError::TtlExpired | PublishError::Encode(_))) => {
                    Err(SinkError::new(SinkErrorKind::Rejected, e.to_string()))
                }
                Err(e) => Err(SinkError::new(SinkErrorKind::Unavailable, e.to_string())),
            }
        })
    }
}

struct Running {
    fingerprint: u64,
    source: Arc<dyn Source>,
    github: Option<Arc<GitHubSource>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Why a source does not run, as its status shows it.
#[derive(Clone)]
struct NotRunning {
    reason: String,
    message: String,
    sink_uri: Option<String>,
}

#[derive(Default)]
struct State {
    running: HashMap<Key, Running>,
    not_running: HashMap<Key, NotRunning>,
}

/// The sources of one running mesh. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SourceRuntime {
    service: BrokerService,
    store: Arc<dyn EventStore>,
    base: Url,
    hooks: WebhookHooks,
    state: Arc<Mutex<State>>,
    /// The Kubernetes API ApiServerSources watch.
    kube_api: KubeApi,
}

fn key(s: &SourceConfig) -> Key {
    (
        s.kind().to_string(),
        s.metadata.namespace.clone(),
        s.metadata.name.clone(),
    )
}

/// What the running source depends on: a change restarts it.
fn fingerprint(s: &SourceConfig, mesh: &MeshConfig, uri: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.api_version.hash(&mut h);
    s.metadata.uid.hash(&mut h);
    format!("{:?}", s.spec).hash(&mut h);
    uri.hash(&mut h);
    if let SourceSpec::GitHub(g) = &s.spec {
        let ns = &s.metadata.namespace;
        for v in [Some(&g.secret_token), g.access_token.as_ref()]
            .into_iter()
            .flatten()
        {
            evmesh_config::secret_value(&mesh.secrets, ns, v)
                .ok()
                .hash(&mut h);
        }
    }
    h.finish()
}

impl SourceRuntime {
    /// Sources publishing through `service`, keeping their state in `store`; webhooks served
    /// under `base`; ApiServerSources watching `kube_api`.
    pub(crate) fn new(
        service: BrokerService,
        store: Arc<dyn EventStore>,
        base: Url,
        kube_api: KubeApi,
    ) -> SourceRuntime {
        SourceRuntime {
            service,
            store,
            base,
            hooks: Arc::default(),
            state: Arc::default(),
            kube_api,
        }
    }

    /// The webhook endpoints (`/webhooks/github/{namespace}/{name}`).
    pub(crate) fn router(&self) -> Router {
        webhook_router(self.hooks.clone())
    }

    /// The resolved sink URL of `s` (shown as `status.sinkUri`).
    fn plan(&self, s: &SourceConfig, resolver: &Resolver) -> Result<String, NotRunning> {
        resolver
            .resolve(s.sink(), &s.metadata.namespace)
            .map(|u| u.to_string())
            .map_err(|e| NotRunning {
                reason: "NotFound".into(),
                message: format!("sink not resolved: {e}"),
                sink_uri: None,
            })
    }

    fn build(
        &self,
        s: &SourceConfig,
        mesh: &MeshConfig,
        resolver: &Resolver,
        hook_id: Option<String>,
    ) -> Result<Built, NotRunning> {
        match &s.spec {
            SourceSpec::Kafka(k) => {
                let ns = &s.metadata.namespace;
                let not_running = |reason: &str, message: String| NotRunning {
                    reason: reason.into(),
                    message,
                    sink_uri: None,
                };
                let sink = resolver
                    .resolve(s.sink(), ns)
                    .map_err(|e| not_running("NotFound", format!("sink not resolved: {e}")))?;
                let delivery = k.delivery.clone().unwrap_or_else(source_delivery);
                let dead_letter = match &delivery.dead_letter_sink {
                    Some(d) => Some(resolver.resolve(d, ns).map_err(|e| {
                        not_running("NotFound", format!("dead-letter sink not resolved: {e}"))
                    })?),
                    None => None,
                };
                let plan = evmesh_kafka::SinkPlan {
                    sink,
                    sink_ca_certs: s.sink().ca_certs.clone(),
                    dead_letter,
                    delivery,
                };
                let source =
                    evmesh_kafka::KafkaSource::new(s, &mesh.secrets, self.service.clone(), plan)
                        .map_err(|e| not_running("InvalidSpec", e.to_string()))?;
                Ok((Arc::new(source), None))
            }
            SourceSpec::Ping(_) => {
                let p = PingSource::new(s).map_err(|e| NotRunning {
                    reason: "InvalidSpec".into(),
                    message: e.to_string(),
                    sink_uri: None,
                })?;
                Ok((Arc::new(p), None))
            }
            SourceSpec::ApiServer(_) => {
                let a = ApiServerSource::new(s, self.kube_api.clone()).map_err(|e| NotRunning {
                    reason: "InvalidSpec".into(),
                    message: e.to_string(),
                    sink_uri: None,
                })?;
                Ok((Arc::new(a), None))
            }
            SourceSpec::GitHub(_) => {
                // Validated as an absolute URL; the listen URL when absent.
                let base = s
                    .metadata
                    .annotations
                    .get(evmesh_config::PUBLIC_URL_ANNOTATION)
                    .and_then(|u| Url::parse(u).ok())
                    .unwrap_or_else(|| self.base.clone());
                let url = webhook_url(&base, &s.metadata.namespace, &s.metadata.name);
                let g = GitHubSource::new(s, &mesh.secrets, url).map_err(|e| {
                    let reason = if e.0.starts_with("spec.accessToken") {
                        "AccessTokenNotFound"
                    } else {
                        "SecretTokenNotFound"
                    };
                    NotRunning {
                        reason: reason.into(),
                        message: e.to_string(),
                        sink_uri: None,
                    }
                })?;
                let key = format!("{HOOK_KEY}{}/{}", s.metadata.namespace, s.metadata.name);
                let hook_id = hook_id.or_else(|| {
                    let saved = self.store.checkpoints(&key).ok()?;
                    saved
                        .into_iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, v)| String::from_utf8(v).ok())
                });
                let store = self.store.clone();
                let observer: evmesh_sources::HookObserver = Arc::new(move |id: Option<&str>| {
                    let result = match id {
                        Some(id) => store.put_checkpoint(&key, id.as_bytes().to_vec()),
                        None => store.delete_checkpoint(&key),
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "storing the GitHub webhook id failed");
                    }
                    let store = store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.flush().await {
                            tracing::warn!(error = %e, "storing the GitHub webhook id failed");
                        }
                    });
                });
                let g = Arc::new(g.with_hook_id(hook_id).with_hook_observer(observer));
                Ok((g.clone(), Some(g)))
            }
        }
    }

    /// Makes the running sources those of `mesh`: starts new ones, restarts changed ones (a
    /// GitHub webhook keeps its id), stops removed ones and removes their GitHub webhooks.
    pub(crate) async fn reconcile(&self, mesh: &MeshConfig, resolver: &Resolver) {
        let mut to_stop: Vec<(Running, bool)> = Vec::new();
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let mut wanted = HashSet::new();
            for s in &mesh.sources {
                let k = key(s);
                wanted.insert(k.clone());
                let planned = self
                    .plan(s, resolver)
                    .map(|uri| (fingerprint(s, mesh, &uri), uri));
                let (fp, uri) = match planned {
                    Ok(p) => p,
                    Err(nr) => {
                        if let Some(old) = state.running.remove(&k) {
                            self.unhook(&k, &old);
                            to_stop.push((old, false));
                        }
                        state.not_running.insert(k, nr);
                        continue;
                    }
                };
                if state.running.get(&k).is_some_and(|r| r.fingerprint == fp) {
                    continue;
                }
                let old = state.running.remove(&k);
                let hook_id = old
                    .as_ref()
                    .and_then(|o| o.github.as_ref())
                    .and_then(|g| g.hook_id());
                if let Some(old) = old {
                    self.unhook(&k, &old);
                    to_stop.push((old, false));
                }
                match self.build(s, mesh, resolver, hook_id) {
                    Ok((source, github)) => {
                        let sink: Arc<dyn EventSink> = Arc::new(ChannelSink {
                            service: self.service.clone(),
                            namespace: k.1.clone(),
                            name: internal_channel(&k.0, &k.2),
                        });
                        let stop = CancellationToken::new();
                        let ctx = SourceContext::new(sink, Some(uri), stop.clone());
                        let runner = source.clone();
                        let task = tokio::spawn(async move { runner.run(ctx).await });
                        if let Some(g) = &github
                            && let Ok(mut h) = self.hooks.write()
                        {
                            h.insert((k.1.clone(), k.2.clone()), g.clone());
                        }
                        tracing::info!(kind = %k.0, namespace = %k.1, name = %k.2, "source started");
                        state.not_running.remove(&k);
                        state.running.insert(
                            k,
                            Running {
                                fingerprint: fp,
                                source,
                                github,
                                stop,
                                task,
                            },
                        );
                    }
                    Err(nr) => {
                        state.not_running.insert(k, nr);
                    }
                }
            }
            let gone: Vec<Key> = state
                .running
                .keys()
                .filter(|k| !wanted.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(old) = state.running.remove(&k) {
                    self.unhook(&k, &old);
                    tracing::info!(kind = %k.0, namespace = %k.1, name = %k.2, "source deleted");
                    to_stop.push((old, true));
                }
            }
            state.not_running.retain(|k, _| wanted.contains(k));
        }
        for (old, deleted) in to_stop {
            stop(old, deleted).await;
        }
    }

    /// Stops the sources that are no longer in `mesh` (deleted: their GitHub webhooks are
    /// removed). Runs before the data plane drops their channels, so nothing is published into
    /// a channel that is gone.
    pub(crate) async fn prune(&self, mesh: &MeshConfig) {
        let wanted: HashSet<Key> = mesh.sources.iter().map(key).collect();
        let gone: Vec<(Key, Running)> = match self.state.lock() {
            Ok(mut state) => {
                let keys: Vec<Key> = state
                    .running
                    .keys()
                    .filter(|k| !wanted.contains(*k))
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|k| state.running.remove(&k).map(|r| (k, r)))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for (k, r) in gone {
            self.unhook(&k, &r);
            tracing::info!(kind = %k.0, namespace = %k.1, name = %k.2, "source deleted");
            stop(r, true).await;
        }
    }

    fn unhook(&self, k: &Key, r: &Running) {
        if r.github.is_some()
            && let Ok(mut h) = self.hooks.write()
        {
            h.remove(&(k.1.clone(), k.2.clone()));
        }
    }

    /// Running sources that cannot do their work (e.g. a KafkaSource whose Kafka is
    /// unreachable), with why, for `/readyz`.
    pub(crate) fn failing(&self) -> Vec<(String, String)> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let mut v: Vec<(String, String)> = state
            .running
            .iter()
            .filter_map(|((kind, ns, name), r)| {
                let st = r.source.status();
                (!st.ready
                    && st
                        .reason
                        .as_deref()
                        .is_some_and(|r| FAILING_REASONS.contains(&r)))
                .then(|| {
                    (
                        format!("{kind} {ns}/{name}"),
                        st.message.unwrap_or_default(),
                    )
                })
            })
            .collect();
        v.sort();
        v
    }

    /// The `status` of source `kind` `namespace/name`.
    fn status_of(&self, kind: &str, namespace: &str, name: &str, generation: i64) -> Value {
        let k = (kind.to_string(), namespace.to_string(), name.to_string());
        let Ok(state) = self.state.lock() else {
            return json!({});
        };
        if let Some(r) = state.running.get(&k) {
            let mut st = r.source.status();
            // The subscription to the sink can be what is not ready (e.g. a sink not resolved).
            if st.ready
                && let Some(sub) = self
                    .service
                    .subscription(namespace, &internal_channel(kind, name))
                && let Some(reason) = sub.not_ready_reason
            {
                st.ready = false;
                st.reason = Some(sub.not_ready_code.unwrap_or_else(|| "NotReady".into()));
                st.message = Some(reason);
            }
            return st.to_json(generation);
        }
        let nr = state.not_running.get(&k).cloned().unwrap_or(NotRunning {
            reason: "NotRunning".into(),
            message: "the source is not running".into(),
            sink_uri: None,
        });
        let mut st = json!({
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "False", "reason": nr.reason, "message": nr.message}],
        });
        if let Some(u) = nr.sink_uri {
            st["sinkUri"] = json!(u);
        }
        st
    }

    /// Stops every source (a shutdown: GitHub webhooks stay registered).
    pub(crate) async fn shutdown(&self) {
        let all: Vec<Running> = match self.state.lock() {
            Ok(mut s) => s.running.drain().map(|(_, r)| r).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut h) = self.hooks.write() {
            h.clear();
        }
        for r in all {
            stop(r, false).await;
        }
    }
}

/// Stops a source (waiting at most 10 s for a publish in progress); a deleted one also cleans up
/// outside evmesh (its GitHub webhook), in the background.
async fn stop(r: Running, deleted: bool) {
    r.stop.cancel();
    let mut task = r.task;
    if tokio::time::timeout(Duration::from_secs(10), &mut task)
        .await
        .is_err()
    {
        tracing::warn!("a source did not stop within 10 s; aborted");
        task.abort();
    }
    if deleted {
        let source = r.source;
        tokio::spawn(async move {
            if let Err(e) = source.finalize().await {
                tracing::warn!(kind = source.kind(), error = %e, "cleaning up a deleted source failed");
            }
        });
    }
}

impl evmesh_broker::kind::SourceStatus for SourceRuntime {
    fn status(&self, kind: &str, namespace: &str, name: &str, generation: i64) -> Value {
        self.status_of(kind, namespace, name, generation)
    }
}
