//! Runs the mesh's sources, of whatever source kind is registered: starts, restarts and stops
//! them as the resources change, serves their kinds' webhook routes, and reports their status.
//! It names no source kind: each kind's module supplies its build hooks
//! ([`evmesh_sources::kind::SourceKind`]), found through its one `KINDS` line.
//!
//! A source is a composition, as the design card has it: an internal channel (a durable log,
//! `_source.<kind>.<name>` in the source's namespace) with one subscription delivering to the
//! resolved `sink` through the shared delivery engine (retries; in process when the sink is one
//! of evmesh's own brokers or channels). The source's [`EventSink`] publishes into that channel
//! and resolves once the event is durable. A kind that delivers from its own log (KafkaSource)
//! has no internal channel.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use evmesh_broker::{BrokerService, PublishError};
use evmesh_config::{
    ChannelConfig, ChannelKind, MeshConfig, ObjectMeta, Resolver, SourceConfig, SubscriptionConfig,
};
use evmesh_sources::kind::{
    BuildCx, Built, NotRunning, SourceKey as Key, SourceKind, Webhooks, default_delivery,
};
use evmesh_sources::{
    BoxFuture, CancellationToken, EventRecord, EventSink, KubeApi, SinkError, SinkErrorKind,
    SourceContext,
};
use evmesh_store::EventStore;
use serde_json::{Value, json};
use url::Url;

use crate::kinds::{source_kind, source_kinds};

/// The internal channel (and subscription) of a source: `_source.<kind>.<name>`. The `_` keeps
/// it apart from any Kubernetes name.
pub(crate) fn internal_channel(kind: &str, name: &str) -> String {
    format!("_source.{}.{name}", kind.to_ascii_lowercase())
}

/// Whether source `s` publishes into an internal channel (its kind says; an unknown kind does
/// not run).
fn uses_internal_channel(s: &SourceConfig) -> bool {
    source_kind(s.kind()).is_some_and(|k| k.internal_channel())
}

/// The mesh the data plane runs: `mesh` plus one internal channel and one subscription to the
/// sink per source (`None` when there are no sources: nothing to add).
pub(crate) fn with_source_channels(mesh: &MeshConfig) -> Option<MeshConfig> {
    if mesh.sources.is_empty() {
        return None;
    }
    let mut m = mesh.clone();
    // A kind delivering from its own log (KafkaSource) has no internal channel.
    for s in mesh.sources.iter().filter(|s| uses_internal_channel(s)) {
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
            delivery: Some(default_delivery()),
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
    kind: &'static dyn SourceKind,
    built: Built,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
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
    hooks: Webhooks,
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
fn fingerprint(kind: &dyn SourceKind, s: &SourceConfig, mesh: &MeshConfig, uri: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.api_version.hash(&mut h);
    s.metadata.uid.hash(&mut h);
    format!("{:?}", s.spec).hash(&mut h);
    uri.hash(&mut h);
    kind.fingerprint(s, mesh).hash(&mut h);
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
            hooks: Webhooks::default(),
            state: Arc::default(),
            kube_api,
        }
    }

    /// The webhook endpoints of every source kind serving webhooks (GitHubSource's
    /// `/webhooks/github/{namespace}/{name}`).
    pub(crate) fn router(&self) -> Router {
        source_kinds()
            .filter_map(|k| k.routes(self.hooks.clone()))
            .fold(Router::new(), Router::merge)
    }

    /// The resolved sink URL of `s` (shown as `status.sinkUri`).
    fn plan(&self, s: &SourceConfig, resolver: &Resolver) -> Result<String, NotRunning> {
        resolver
            .resolve(s.sink(), &s.metadata.namespace)
            .map(|u| u.to_string())
            .map_err(|e| NotRunning::new("NotFound", format!("sink not resolved: {e}")))
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
                let Some(kind) = source_kind(s.kind()) else {
                    // Validation accepts only registered kinds; nothing to run otherwise.
                    if let Some(old) = state.running.remove(&k) {
                        self.unhook(&k, &old);
                        to_stop.push((old, false));
                    }
                    let why = format!("no source kind {} is registered", s.kind());
                    state
                        .not_running
                        .insert(k, NotRunning::new("UnknownKind", why));
                    continue;
                };
                let planned = self
                    .plan(s, resolver)
                    .map(|uri| (fingerprint(kind, s, mesh, &uri), uri));
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
                let cx = BuildCx {
                    mesh,
                    resolver,
                    service: &self.service,
                    store: &self.store,
                    base: &self.base,
                    kube_api: &self.kube_api,
                    previous: old.as_ref().map(|o| &o.built),
                };
                let built = kind.build(s, &cx);
                if let Some(old) = old {
                    self.unhook(&k, &old);
                    to_stop.push((old, false));
                }
                match built {
                    Ok(built) => {
                        let sink: Arc<dyn EventSink> = Arc::new(ChannelSink {
                            service: self.service.clone(),
                            namespace: k.1.clone(),
                            name: internal_channel(&k.0, &k.2),
                        });
                        let stop = CancellationToken::new();
                        let ctx = SourceContext::new(sink, Some(uri), stop.clone());
                        let runner = built.source.clone();
                        let task = tokio::spawn(async move { runner.run(ctx).await });
                        if let Some(w) = &built.webhook {
                            self.hooks.insert(k.clone(), w.clone());
                        }
                        tracing::info!(kind = %k.0, namespace = %k.1, name = %k.2, "source started");
                        state.not_running.remove(&k);
                        state.running.insert(
                            k,
                            Running {
                                fingerprint: fp,
                                kind,
                                built,
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
        if r.built.webhook.is_some() {
            self.hooks.remove(k);
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
                let st = r.built.source.status();
                (!st.ready
                    && st
                        .reason
                        .as_deref()
                        .is_some_and(|why| r.kind.failing_reasons().contains(&why)))
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
            let mut st = r.built.source.status();
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
        let nr = state
            .not_running
            .get(&k)
            .cloned()
            .unwrap_or_else(|| NotRunning::new("NotRunning", "the source is not running"));
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
        self.hooks.clear();
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
        let source = r.built.source;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner adds an internal channel and a subscription to the sink (Knative's source
    /// delivery) for a kind that publishes into one (PingSource), none for a kind delivering from
    /// its own log (KafkaSource): the kinds' hooks say which, the runner names neither.
    #[test]
    fn internal_channels_are_what_the_kinds_say() {
        crate::kinds::install();
        let mesh = MeshConfig::from_yaml(
            "sources.yaml",
            r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick, namespace: demo}
spec:
  schedule: "* * * * *"
  sink: {uri: "http://127.0.0.1:9/ping"}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: orders, namespace: demo}
spec:
  bootstrapServers: ["127.0.0.1:9"]
  topics: [orders]
  sink: {uri: "http://127.0.0.1:9/kafka"}
"#,
        )
        .expect("valid sources");
        let plane = with_source_channels(&mesh).expect("sources add channels");
        let added: Vec<_> = plane
            .channels
            .iter()
            .filter(|c| c.metadata.name.starts_with("_source."))
            .map(|c| (c.metadata.namespace.as_str(), c.metadata.name.as_str()))
            .collect();
        assert_eq!(added, [("demo", "_source.pingsource.tick")]);
        let subs: Vec<_> = plane
            .subscriptions
            .iter()
            .filter(|s| s.metadata.name.starts_with("_source."))
            .collect();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].channel.1, "_source.pingsource.tick");
        assert_eq!(subs[0].delivery.as_ref().map(|d| d.retry), Some(5));
        assert!(with_source_channels(&MeshConfig::default()).is_none());
    }
}
