//! Runs the mesh's sources (PingSource, GitHubSource): starts, restarts and stops them as the
//! resources change, routes GitHub webhooks to them, and reports their status.
//!
//! A source publishes through an [`EventSink`]. Today that sink is the in-process publish into a
//! Broker evmesh serves (durable before the publish resolves; the broker's triggers then deliver
//! with retries and dead-letter sinks). Sinks that are not a Broker wait for the per-source log
//! the runtime is getting; such a source reports `Ready: False`, reason `SinkNotSupported`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use evmesh_broker::{BrokerService, PublishError};
use evmesh_config::{MeshConfig, Resolver, SourceConfig, SourceSpec};
use evmesh_sources::{
    BoxFuture, CancellationToken, EventRecord, EventSink, GitHubSource, PingSource, SinkError,
    SinkErrorKind, Source, SourceContext, WebhookHooks, webhook_router, webhook_url,
};
use serde_json::{Value, json};
use url::Url;

/// `(kind, namespace, name)`.
type Key = (String, String, String);

/// A built source, and the same as a GitHubSource when it is one (for its webhook route).
type Built = (Arc<dyn Source>, Option<Arc<GitHubSource>>);

/// Publishes into a Broker this mesh serves.
struct BrokerSink {
    service: BrokerService,
    namespace: String,
    name: String,
}

impl EventSink for BrokerSink {
    fn publish(&self, event: EventRecord) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            match self
                .service
                .publish_record(&self.namespace, &self.name, event)
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
    base: Url,
    hooks: WebhookHooks,
    state: Arc<Mutex<State>>,
}

fn key(s: &SourceConfig) -> Key {
    (
        s.kind().to_string(),
        s.metadata.namespace.clone(),
        s.metadata.name.clone(),
    )
}

/// What the running source depends on: a change restarts it.
fn fingerprint(s: &SourceConfig, mesh: &MeshConfig, sink: &(String, String), uri: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.api_version.hash(&mut h);
    s.metadata.uid.hash(&mut h);
    format!("{:?}", s.spec).hash(&mut h);
    sink.hash(&mut h);
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
    /// Sources publishing into `service`'s brokers; webhooks served under `base`.
    pub(crate) fn new(service: BrokerService, base: Url) -> SourceRuntime {
        SourceRuntime {
            service,
            base,
            hooks: Arc::default(),
            state: Arc::default(),
        }
    }

    /// The webhook endpoints (`/webhooks/github/{namespace}/{name}`).
    pub(crate) fn router(&self) -> Router {
        webhook_router(self.hooks.clone())
    }

    /// The sink of `s`: a Broker this mesh serves, with its URL.
    fn plan(
        &self,
        s: &SourceConfig,
        resolver: &Resolver,
    ) -> Result<((String, String), String), NotRunning> {
        let ns = &s.metadata.namespace;
        let dest = s.sink();
        let uri = resolver.resolve(dest, ns).map_err(|e| NotRunning {
            reason: "NotFound".into(),
            message: format!("sink not resolved: {e}"),
            sink_uri: None,
        })?;
        let broker = dest.reference.as_ref().filter(|r| {
            let group = r.api_version.split('/').next().unwrap_or("");
            r.kind == "Broker"
                && (group.is_empty() || group == "eventing.knative.dev")
                && dest.uri.is_none()
        });
        match broker {
            Some(r) => Ok((
                (
                    r.namespace.clone().unwrap_or_else(|| ns.clone()),
                    r.name.clone(),
                ),
                uri.to_string(),
            )),
            None => Err(NotRunning {
                reason: "SinkNotSupported".into(),
                message: format!(
                    "evmesh runs sources whose sink is a Broker it serves; the sink {uri} waits for the per-source log (not done yet)"
                ),
                sink_uri: Some(uri.to_string()),
            }),
        }
    }

    fn build(
        &self,
        s: &SourceConfig,
        mesh: &MeshConfig,
        hook_id: Option<String>,
    ) -> Result<Built, NotRunning> {
        match &s.spec {
            SourceSpec::Ping(_) => {
                let p = PingSource::new(s).map_err(|e| NotRunning {
                    reason: "InvalidSpec".into(),
                    message: e.to_string(),
                    sink_uri: None,
                })?;
                Ok((Arc::new(p), None))
            }
            SourceSpec::GitHub(_) => {
                let url = webhook_url(&self.base, &s.metadata.namespace, &s.metadata.name);
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
                let g = Arc::new(g.with_hook_id(hook_id));
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
                    .map(|(sink, uri)| (fingerprint(s, mesh, &sink, &uri), sink, uri));
                let (fp, sink, uri) = match planned {
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
                match self.build(s, mesh, hook_id) {
                    Ok((source, github)) => {
                        let sink: Arc<dyn EventSink> = Arc::new(BrokerSink {
                            service: self.service.clone(),
                            namespace: sink.0,
                            name: sink.1,
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

    fn unhook(&self, k: &Key, r: &Running) {
        if r.github.is_some()
            && let Ok(mut h) = self.hooks.write()
        {
            h.remove(&(k.1.clone(), k.2.clone()));
        }
    }

    /// The `status` of source `kind` `namespace/name`.
    pub(crate) fn status(&self, kind: &str, namespace: &str, name: &str, generation: i64) -> Value {
        let k = (kind.to_string(), namespace.to_string(), name.to_string());
        let Ok(state) = self.state.lock() else {
            return json!({});
        };
        if let Some(r) = state.running.get(&k) {
            return r.source.status().to_json(generation);
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
