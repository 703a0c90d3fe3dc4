//! The runtime: the resource store (every desired resource, persisted in the data dir), the
//! reconciler that makes the broker service match it, and the watch history the admin API
//! streams from. Files, the admin API and reloads all go through [`Runtime::apply`] /
//! [`Runtime::delete`] / [`Runtime::sync_declared`].

mod messaging;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use evmesh_broker::BrokerService;
use evmesh_config::messaging::ChannelKind;
use evmesh_config::registry::{self, KindInfo};
use evmesh_config::{
    ConfigError, ConfigErrors, Document, MeshConfig, Resolver, ValidationContext, Warning,
    validate_in,
};
use evmesh_store::EventStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use url::Url;

/// Where a resource came from: the declared configuration (files given to `serve`, or the YAML
/// an embedder built the mesh from), or the admin API.
pub(crate) const SOURCE_DECLARED: &str = "declared";
pub(crate) const SOURCE_API: &str = "api";

const KEY_PREFIX: &str = "r/";
const RV_KEY: &str = "r~rv";
/// Not-ready reasons that mean "waiting for another resource", not "cannot run".
const WAITING_REASONS: &[&str] = &[
    "BrokerDoesNotExist",
    "ChannelDoesNotExist",
    "DestinationNotResolved",
];
/// Watch events kept for resuming watches from a `resourceVersion`.
const HISTORY: usize = 4096;
/// How often the runtime looks for status changes no write caused (a worker that failed or is
/// back).
const STATUS_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// `(group, kind, namespace, name)`.
pub(crate) type ResKey = (String, String, String, String);

/// What readers see: the stored resources and the validated configuration built from them.
type Snapshot = (Arc<BTreeMap<ResKey, Stored>>, Arc<MeshConfig>);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    /// The resource as applied, with evmesh's metadata (uid, generation, ...), without status.
    manifest: Value,
    source: String,
}

/// One watch event.
#[derive(Clone, Debug)]
pub(crate) struct WatchEvent {
    pub(crate) rv: u64,
    pub(crate) kind: &'static KindInfo,
    pub(crate) namespace: String,
    pub(crate) event_type: &'static str,
    pub(crate) object: Value,
}

/// Why a write was refused, as the Kubernetes API answers it.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// 422 with the field causes.
    Invalid {
        kind: &'static KindInfo,
        name: String,
        causes: Vec<(String, String)>,
    },
    /// 409.
    AlreadyExists {
        kind: &'static KindInfo,
        name: String,
    },
    /// 409 on a stale resourceVersion.
    Conflict(String),
    /// 404.
    NotFound {
        kind: &'static KindInfo,
        name: String,
    },
    /// 400.
    BadRequest(String),
    /// 500 (the store failed).
    Internal(String),
    /// 401: a write without the right bearer token.
    Unauthorized,
    /// 404: a resource type evmesh does not serve.
    UnknownResource(String),
}

struct Desired {
    resources: BTreeMap<ResKey, Stored>,
    rv: u64,
}

/// A trigger write that is stored (not yet durable) and waits to be applied, in the order of
/// its resourceVersion. Concurrent writes share one flush of the store (a group commit), so
/// applying thousands of triggers does not wait for one fsync each.
struct Staged {
    kind: &'static KindInfo,
    key: ResKey,
    change: Change,
    rv: u64,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

enum Change {
    /// Created (`created`) or replaced: the stored form and its validated configuration.
    Put {
        stored: Stored,
        one: Box<MeshConfig>,
        created: bool,
    },
    /// Deleted: the object the DELETED event carries.
    Delete { object: Value },
}

struct Inner {
    service: BrokerService,
    sources: crate::sources::SourceRuntime,
    store: Arc<dyn EventStore>,
    ingress: Url,
    url_template: Option<String>,
    /// `serve --default-channel`.
    default_channel: Option<ChannelKind>,
    desired: tokio::sync::Mutex<Desired>,
    /// Held while applying changes to the running mesh (taken before `desired` by whoever
    /// takes both): applies are in resourceVersion order.
    applying: tokio::sync::Mutex<()>,
    /// Trigger writes stored but not applied yet, in resourceVersion order.
    staged: Mutex<Vec<Staged>>,
    /// The readiness last reported for each stored resource (see [`Runtime::bump_statuses`]).
    reported: Mutex<HashMap<ResKey, Value>>,
    /// Set at shutdown: the status look stops.
    stopped: std::sync::atomic::AtomicBool,
    /// Snapshot for readers: the resources and the validated configuration.
    snapshot: RwLock<Snapshot>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    history: Mutex<VecDeque<Arc<WatchEvent>>>,
    current_rv: std::sync::atomic::AtomicU64,
}

/// The resource store and reconciler of one running mesh. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Runtime {
    inner: Arc<Inner>,
}

fn key_of(kind: &KindInfo, ns: &str, name: &str) -> ResKey {
    (
        kind.group.to_string(),
        kind.kind.to_string(),
        ns.to_string(),
        name.to_string(),
    )
}

fn store_key(k: &ResKey) -> String {
    format!("{KEY_PREFIX}{}/{}/{}/{}", k.0, k.1, k.2, k.3)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The key and kind of a manifest, when evmesh serves its kind.
fn identify(v: &Value) -> Option<(&'static KindInfo, ResKey)> {
    let api = v.get("apiVersion")?.as_str()?;
    let kind = registry::by_kind(api, v.get("kind")?.as_str()?)?;
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Some((kind, key_of(kind, ns, name)))
}

/// The part of a manifest a change is judged by (not evmesh's own metadata).
fn user_part(v: &Value) -> Value {
    let meta = v.get("metadata");
    json!({
        "spec": v.get("spec"),
        "labels": meta.and_then(|m| m.get("labels")),
        "annotations": meta.and_then(|m| m.get("annotations")),
    })
}

fn causes(e: &ConfigErrors) -> Vec<(String, String)> {
    e.errors
        .iter()
        .map(|err| match err {
            ConfigError::Invalid { location, message }
            | ConfigError::Yaml { location, message } => (location.field.clone(), message.clone()),
            ConfigError::Io { message, .. } => (String::new(), message.clone()),
        })
        .collect()
}

impl Runtime {
    /// Loads the resources stored in the data dir, lets the declared ones (`declared`, e.g.
    /// from files) replace those of earlier runs, validates everything together and starts it.
    pub(crate) async fn start(
        service: BrokerService,
        store: Arc<dyn EventStore>,
        ingress: Url,
        url_template: Option<String>,
        default_channel: Option<ChannelKind>,
        declared: Vec<Document>,
        kube_api: evmesh_sources::KubeApi,
    ) -> Result<(Runtime, Vec<Warning>), crate::Error> {
        let s = store.clone();
        let saved = tokio::task::spawn_blocking(move || s.checkpoints(KEY_PREFIX))
            .await
            .map_err(std::io::Error::other)??;
        let mut resources = BTreeMap::new();
        for (key, bytes) in saved {
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => match identify(&stored.manifest) {
                    Some((_, k)) => {
                        resources.insert(k, stored);
                    }
                    None => {
                        tracing::warn!(key = %key, "stored resource of an unknown kind ignored")
                    }
                },
                Err(e) => {
                    return Err(crate::Error::Start(evmesh_broker::StartError::new(
                        format!("stored resource {key} is unreadable: {e}"),
                    )));
                }
            }
        }
        let s = store.clone();
        let rv = tokio::task::spawn_blocking(move || s.checkpoints(RV_KEY))
            .await
            .map_err(std::io::Error::other)??
            .into_iter()
            .find(|(k, _)| k == RV_KEY)
            .and_then(|(_, v)| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (events, _) = broadcast::channel(1024);
        let runtime = Runtime {
            inner: Arc::new(Inner {
                sources: crate::sources::SourceRuntime::new(
                    service.clone(),
                    store.clone(),
                    ingress.clone(),
                    kube_api,
                ),
                service,
                store,
                ingress,
                url_template,
                default_channel,
                desired: tokio::sync::Mutex::new(Desired { resources, rv }),
                applying: tokio::sync::Mutex::new(()),
                staged: Mutex::new(Vec::new()),
                reported: Mutex::new(HashMap::new()),
                stopped: std::sync::atomic::AtomicBool::new(false),
                snapshot: RwLock::new((Arc::default(), Arc::default())),
                events,
                history: Mutex::new(VecDeque::new()),
                current_rv: std::sync::atomic::AtomicU64::new(rv),
            }),
        };
        let warnings = runtime
            .sync_declared(declared)
            .await
            .map_err(crate::Error::Config)?;
        runtime.spawn_status_look();
        Ok((runtime, warnings))
    }

    /// The mesh's sources.
    pub(crate) fn sources(&self) -> &crate::sources::SourceRuntime {
        &self.inner.sources
    }

    /// The validated desired configuration.
    pub(crate) fn mesh(&self) -> Arc<MeshConfig> {
        self.inner
            .snapshot
            .read()
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }

    /// Validates `docs`, applied to `running` when given (one resource written through the API).
    fn validate(
        &self,
        docs: &[Document],
        running: Option<&MeshConfig>,
    ) -> Result<MeshConfig, ConfigErrors> {
        validate_in(
            docs,
            &ValidationContext {
                running,
                default_channel: self.inner.default_channel,
            },
        )
    }

    fn resolver(&self, mesh: &MeshConfig) -> Resolver {
        Resolver::new(
            mesh,
            self.inner.ingress.clone(),
            self.inner.url_template.clone(),
        )
    }

    fn docs(resources: &BTreeMap<ResKey, Stored>) -> Vec<Document> {
        resources
            .iter()
            .map(|(k, s)| {
                let origin = if s.source == SOURCE_API {
                    format!("<api {} {}/{}>", k.1, k.2, k.3)
                } else {
                    format!("<{} {}/{}>", k.1, k.2, k.3)
                };
                Document::from_value(&origin, s.manifest.clone())
            })
            .collect()
    }

    /// Makes the declared resources (files, or an embedder's YAML) those given: adds, changes
    /// and removes declared resources, leaves resources applied through the API alone (unless a
    /// declared one of the same name replaces it). Everything is validated together first;
    /// on any error nothing changes.
    pub(crate) async fn sync_declared(
        &self,
        declared: Vec<Document>,
    ) -> Result<Vec<Warning>, ConfigErrors> {
        let synced = self.sync_declared_inner(declared).await;
        if synced.is_ok() {
            self.bump_statuses().await;
        }
        synced
    }

    async fn sync_declared_inner(
        &self,
        declared: Vec<Document>,
    ) -> Result<Vec<Warning>, ConfigErrors> {
        let _applying = self.inner.applying.lock().await;
        self.commit_staged().await;
        let mut desired = self.inner.desired.lock().await;
        // Validate the declared documents as written (their own file:line errors).
        let mut first_errors = match self.validate(&declared, None) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors,
        };
        // Kinds evmesh serves are managed here; other documents (addressables of other kinds)
        // stay as declared configuration too.
        let mut next = desired.resources.clone();
        next.retain(|_, s| s.source != SOURCE_DECLARED);
        let mut externals = Vec::new();
        let mut rv = desired.rv;
        for doc in &declared {
            let Some((_, key)) = identify(&doc.value) else {
                externals.push(doc.clone());
                continue;
            };
            let manifest = self.stamp(
                doc.value.clone(),
                desired.resources.get(&key).map(|s| &s.manifest),
                &mut rv,
            );
            next.insert(
                key,
                Stored {
                    manifest,
                    source: SOURCE_DECLARED.to_string(),
                },
            );
        }
        let mut all = Self::docs(&next);
        all.extend(externals.iter().cloned());
        let mesh = match self.validate(&all, None) {
            Ok(m) => m,
            Err(e) => {
                first_errors.extend(e.errors);
                return Err(ConfigErrors {
                    errors: first_errors,
                    warnings: e.warnings,
                });
            }
        };
        if !first_errors.is_empty() {
            return Err(ConfigErrors {
                errors: first_errors,
                warnings: mesh.warnings,
            });
        }
        let warnings = self
            .validate(&declared, None)
            .map(|m| m.warnings)
            .unwrap_or_default();
        // Persist what changed, then reconcile, then tell watchers.
        let mut changes = Vec::new();
        let mut generated = Vec::new();
        for (k, s) in &next {
            match desired.resources.get(k) {
                Some(old) if old.manifest == s.manifest && old.source == s.source => {}
                Some(old) => {
                    changes.push((k.clone(), Some(s.clone()), "MODIFIED"));
                    generated.push((Some(old.manifest.clone()), Some(s.manifest.clone())));
                }
                None => {
                    changes.push((k.clone(), Some(s.clone()), "ADDED"));
                    generated.push((None, Some(s.manifest.clone())));
                }
            }
        }
        for (k, old) in &desired.resources {
            if !next.contains_key(k) {
                changes.push((k.clone(), Some(old.clone()), "DELETED"));
                generated.push((Some(old.manifest.clone()), None));
            }
        }
        for (k, s, t) in &changes {
            let result = if *t == "DELETED" {
                self.inner.store.delete_checkpoint(&store_key(k))
            } else {
                match serde_json::to_vec(s) {
                    Ok(bytes) => self.inner.store.put_checkpoint(&store_key(k), bytes),
                    Err(e) => Err(evmesh_store::StoreError::Engine(e.to_string())),
                }
            };
            if let Err(e) = result {
                return Err(ConfigErrors {
                    errors: vec![ConfigError::Io {
                        path: store_key(k),
                        message: format!("storing the resource: {e}"),
                    }],
                    warnings: vec![],
                });
            }
        }
        // New triggers and subscriptions get their start position in the same flush as their
        // resource.
        let added: HashSet<&ResKey> = changes
            .iter()
            .filter(|(_, _, t)| *t == "ADDED")
            .map(|(k, _, _)| k)
            .collect();
        if let Err(e) = self.stake_new(&mesh, |kind, ns, name| {
            added.contains(&(
                kind.0.to_string(),
                kind.1.to_string(),
                ns.to_string(),
                name.to_string(),
            ))
        }) {
            return Err(ConfigErrors {
                errors: vec![ConfigError::Io {
                    path: "store".into(),
                    message: format!("saving a new route's start position: {e}"),
                }],
                warnings: vec![],
            });
        }
        desired.rv = rv;
        self.persist_rv(rv);
        if let Err(e) = self.inner.store.flush().await {
            return Err(ConfigErrors {
                errors: vec![ConfigError::Io {
                    path: "store".into(),
                    message: e.to_string(),
                }],
                warnings: vec![],
            });
        }
        desired.resources = next;
        let mesh = Arc::new(mesh);
        self.publish_snapshot(&desired, mesh.clone());
        // The data plane also runs each source's internal channel and subscription; deleted
        // sources stop before their channels go.
        self.inner.sources.prune(&mesh).await;
        let data_plane = crate::sources::with_source_channels(&mesh);
        if let Err(e) = self
            .inner
            .service
            .reconcile(data_plane.as_ref().unwrap_or(&mesh), &self.resolver(&mesh))
            .await
        {
            tracing::error!("reconcile: {e}");
        }
        self.inner
            .sources
            .reconcile(&mesh, &self.resolver(&mesh))
            .await;
        let mut rv = desired.rv;
        for (k, s, t) in changes {
            if let Some(s) = s {
                self.emit(&k, &s.manifest, t, &mut rv);
            }
        }
        for (old, new) in generated {
            self.emit_generated(old.as_ref(), new.as_ref(), &mut rv);
        }
        desired.rv = rv;
        Ok(warnings)
    }

    /// Sets evmesh's metadata on a manifest being stored: uid and creationTimestamp kept from the
    /// previous version (or made), generation bumped when the spec changed, a new
    /// resourceVersion. Status is never stored.
    fn stamp(&self, mut manifest: Value, previous: Option<&Value>, rv: &mut u64) -> Value {
        if let Some(obj) = manifest.as_object_mut() {
            obj.remove("status");
        }
        if previous.is_some_and(|p| user_part(p) == user_part(&manifest)) {
            // Unchanged: keep it exactly as stored.
            return previous.cloned().unwrap_or(manifest);
        }
        let prev_meta = previous.and_then(|p| p.get("metadata"));
        let spec_changed = previous.is_none_or(|p| p.get("spec") != manifest.get("spec"));
        let prev_gen = prev_meta
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        *rv += 1;
        let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) else {
            return manifest;
        };
        meta.entry("namespace")
            .or_insert_with(|| Value::String("default".into()));
        let uid = prev_meta
            .and_then(|m| m.get("uid"))
            .cloned()
            .unwrap_or_else(|| Value::String(uuid::Uuid::new_v4().to_string()));
        meta.insert("uid".into(), uid);
        let created = prev_meta
            .and_then(|m| m.get("creationTimestamp"))
            .cloned()
            .unwrap_or_else(|| Value::String(now_rfc3339()));
        meta.insert("creationTimestamp".into(), created);
        let generation = if spec_changed {
            prev_gen + 1
        } else {
            prev_gen.max(1)
        };
        meta.insert("generation".into(), json!(generation));
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        manifest
    }

    fn persist_rv(&self, rv: u64) {
        if let Err(e) = self
            .inner
            .store
            .put_checkpoint(RV_KEY, rv.to_string().into_bytes())
        {
            tracing::warn!("saving the resource version: {e}");
        }
    }

    /// Makes `rv` the resourceVersion lists report. Only once what it counts is visible to
    /// readers: a list must never report a version ahead of its items, or a watch from that
    /// version would skip the change.
    fn publish_rv(&self, rv: u64) {
        self.inner
            .current_rv
            .fetch_max(rv, std::sync::atomic::Ordering::AcqRel);
    }

    /// Changes the readers' snapshot in place (no copy while no reader holds it) and returns
    /// the new configuration.
    fn update_snapshot(
        &self,
        f: impl FnOnce(&mut BTreeMap<ResKey, Stored>, &mut MeshConfig),
    ) -> Arc<MeshConfig> {
        let mut snap = self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let (resources, mesh) = &mut *snap;
        f(Arc::make_mut(resources), Arc::make_mut(mesh));
        mesh.clone()
    }

    fn publish_snapshot(&self, desired: &Desired, mesh: Arc<MeshConfig>) {
        if let Ok(mut s) = self.inner.snapshot.write() {
            *s = (Arc::new(desired.resources.clone()), mesh);
        }
        self.publish_rv(desired.rv);
    }

    fn emit(&self, key: &ResKey, manifest: &Value, event_type: &'static str, rv: &mut u64) {
        let Some((kind, _)) = identify(manifest) else {
            return;
        };
        let mut object = if event_type == "DELETED" {
            manifest.clone()
        } else {
            self.render(kind, manifest)
        };
        if event_type == "DELETED" {
            *rv += 1;
            if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            self.persist_rv(*rv);
            self.publish_rv(*rv);
        }
        let ev_rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(*rv);
        self.send_event(kind, key, object, event_type, ev_rv);
    }

    /// Records one watch event (with `rv`) in the history and sends it to the watchers.
    fn send_event(
        &self,
        kind: &'static KindInfo,
        key: &ResKey,
        object: Value,
        event_type: &'static str,
        rv: u64,
    ) {
        if let Ok(mut r) = self.inner.reported.lock() {
            if event_type == "DELETED" {
                r.remove(key);
            } else {
                r.insert(key.clone(), readiness(&object["status"]));
            }
        }
        let ev = Arc::new(WatchEvent {
            rv,
            kind,
            namespace: key.2.clone(),
            event_type,
            object,
        });
        if let Ok(mut h) = self.inner.history.lock() {
            h.push_back(ev.clone());
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        let _ = self.inner.events.send(ev);
    }

    /// Watch events for the resources a Channel, Sequence or Parallel generates, as it goes from
    /// `old` to `new` (`None`: absent); each event has a resourceVersion of its own.
    fn emit_generated(&self, old: Option<&Value>, new: Option<&Value>, rv: &mut u64) {
        let defaults = self.mesh().channel_defaults.clone();
        let before = messaging::children(old, &defaults);
        let after = messaging::children(new, &defaults);
        for (k, v) in &after {
            let t = match before.get(k) {
                Some(o) if o == v => continue,
                Some(_) => "MODIFIED",
                None => "ADDED",
            };
            *rv += 1;
            let mut v = v.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            self.persist_rv(*rv);
            self.publish_rv(*rv);
            self.emit(k, &v, t, rv);
        }
        for (k, v) in &before {
            if !after.contains_key(k) {
                let mut v = v.clone();
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
                }
                self.emit(k, &v, "DELETED", rv);
            }
        }
    }

    /// Creates (`create`), replaces or deletes one resource through the admin API.
    pub(crate) async fn write(
        &self,
        kind: &'static KindInfo,
        namespace: &str,
        name: Option<&str>,
        body: Option<Value>,
        create: bool,
    ) -> Result<(u16, Value, Vec<Warning>), WriteError> {
        // Runs to its end even when the client goes away: a write stored and not applied would
        // leave the store and the running mesh apart.
        let this = self.clone();
        let (namespace, name) = (namespace.to_string(), name.map(str::to_string));
        tokio::spawn(async move {
            let written = this
                .write_inner(kind, &namespace, name.as_deref(), body, create)
                .await;
            // A change of another kind may change the status of others (a Trigger whose
            // Broker arrives); a trigger is nobody's dependency.
            if written.is_ok() && !is_trigger(kind) {
                this.bump_statuses().await;
            }
            written
        })
        .await
        .map_err(|e| WriteError::Internal(e.to_string()))?
    }

    async fn write_inner(
        &self,
        kind: &'static KindInfo,
        namespace: &str,
        name: Option<&str>,
        body: Option<Value>,
        create: bool,
    ) -> Result<(u16, Value, Vec<Warning>), WriteError> {
        // Triggers (the kind written by the thousand) are staged and applied in batches that
        // share one flush; other kinds apply one at a time, after what is staged.
        let pipelined = is_trigger(kind);
        let applying = if pipelined {
            None
        } else {
            let guard = self.inner.applying.lock().await;
            self.commit_staged().await;
            Some(guard)
        };
        let mut desired = self.inner.desired.lock().await;
        let Some(mut manifest) = body else {
            // Delete.
            let name = name.unwrap_or_default();
            let key = key_of(kind, namespace, name);
            let Some(old) = desired.resources.get(&key).cloned() else {
                return Err(WriteError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            };
            if pipelined {
                self.inner
                    .store
                    .delete_checkpoint(&store_key(&key))
                    .map_err(|e| WriteError::Internal(e.to_string()))?;
                desired.resources.remove(&key);
                desired.rv += 1;
                let rv = desired.rv;
                self.persist_rv(rv);
                let mut deleted = old.manifest;
                if let Some(m) = deleted.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
                    m.insert("resourceVersion".into(), Value::String(rv.to_string()));
                }
                let change = Change::Delete {
                    object: deleted.clone(),
                };
                let done = self.stage(kind, key, change, rv);
                drop(desired);
                self.finish_staged(done).await?;
                return Ok((200, deleted, vec![]));
            }
            self.inner
                .store
                .delete_checkpoint(&store_key(&key))
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            self.inner
                .store
                .flush()
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            desired.resources.remove(&key);
            let next = self.update_snapshot(|resources, mesh| {
                resources.remove(&key);
                remove_from_mesh(mesh, kind, namespace, name);
            });
            self.reconcile_one(kind, namespace, name, &next).await;
            drop(next);
            let mut deleted = old.manifest.clone();
            if let Some(m) = deleted.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            }
            let mut rv = desired.rv;
            self.emit(&key, &deleted, "DELETED", &mut rv);
            self.emit_generated(Some(&old.manifest), None, &mut rv);
            desired.rv = rv;
            return Ok((200, deleted, vec![]));
        };
        // Create or replace: the body must be this kind, in this namespace.
        let Some(obj) = manifest.as_object_mut() else {
            return Err(WriteError::BadRequest(
                "the body must be a JSON or YAML object".into(),
            ));
        };
        obj.entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version()));
        obj.entry("kind")
            .or_insert_with(|| Value::String(kind.kind.to_string()));
        if obj.get("apiVersion").and_then(Value::as_str) != Some(&kind.api_version())
            || obj.get("kind").and_then(Value::as_str) != Some(kind.kind)
        {
            return Err(WriteError::BadRequest(format!(
                "the body's apiVersion/kind must be {}/{} for this URL",
                kind.api_version(),
                kind.kind
            )));
        }
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        let Some(meta) = meta.as_object_mut() else {
            return Err(WriteError::BadRequest("metadata must be an object".into()));
        };
        match meta.get("namespace").and_then(Value::as_str) {
            None => {
                meta.insert("namespace".into(), Value::String(namespace.to_string()));
            }
            Some(ns) if ns != namespace => {
                return Err(WriteError::BadRequest(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
                )));
            }
            Some(_) => {}
        }
        let body_name = meta.get("name").and_then(Value::as_str).map(str::to_string);
        let name = match (name, body_name) {
            (Some(url_name), Some(b)) if b != url_name => {
                return Err(WriteError::BadRequest(format!(
                    "the name of the object ({b}) does not match the name on the URL ({url_name})"
                )));
            }
            (Some(n), _) => n.to_string(),
            (None, Some(b)) => b,
            (None, None) => {
                return Err(WriteError::Invalid {
                    kind,
                    name: String::new(),
                    causes: vec![(
                        "metadata.name".into(),
                        "Required value: name is required".into(),
                    )],
                });
            }
        };
        meta.insert("name".into(), Value::String(name.clone()));
        let sent_rv = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        // The server owns these.
        for k in [
            "uid",
            "generation",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            meta.remove(k);
        }
        let key = key_of(kind, namespace, &name);
        let previous = desired.resources.get(&key).cloned();
        match (&previous, create) {
            (Some(_), true) => return Err(WriteError::AlreadyExists { kind, name }),
            (None, false) => return Err(WriteError::NotFound { kind, name }),
            _ => {}
        }
        if let (Some(prev), Some(sent)) = (&previous, &sent_rv)
            && prev.manifest["metadata"]["resourceVersion"].as_str() != Some(sent.as_str())
        {
            return Err(WriteError::Conflict(format!(
                "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural, kind.group
            )));
        }
        // Immutable as in Knative (a Trigger's broker, a Subscription's channel, a Channel's
        // template once set): what the kind registered.
        let rules = registry::by_group(kind.group, kind.kind).map_or(&[][..], |k| k.immutable());
        if let Some(prev) = &previous
            && let Some(rule) = rules
                .iter()
                .find(|r| r.violated(&prev.manifest["spec"][r.field], &manifest["spec"][r.field]))
        {
            return Err(WriteError::Invalid {
                kind,
                name,
                causes: vec![(
                    format!("spec.{}", rule.field),
                    "Immutable field changed (as in Knative)".into(),
                )],
            });
        }
        // Stamp first (uid kept from the previous version), then validate this resource in the
        // context of the running configuration: what runs must carry the uid, or a changed
        // trigger would look like a new one (its progress is keyed by uid) and restart at head.
        let mut rv = desired.rv;
        let stamped = self.stamp(manifest, previous.as_ref().map(|p| &p.manifest), &mut rv);
        let doc = Document::from_value(
            &format!("<api {} {namespace}/{name}>", kind.kind),
            stamped.clone(),
        );
        // Validated under the readers' lock rather than on a clone of the snapshot's `Arc`: a
        // clone held here would make the next apply copy the whole configuration.
        let validated = {
            let snapshot = self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner());
            self.validate(std::slice::from_ref(&doc), Some(&snapshot.1))
        };
        let one = validated.map_err(|e| WriteError::Invalid {
            kind,
            name: name.clone(),
            causes: causes(&e),
        })?;
        let unchanged = previous.as_ref().is_some_and(|p| p.manifest == stamped);
        let stored = Stored {
            manifest: stamped.clone(),
            source: previous
                .as_ref()
                .map(|p| p.source.clone())
                .filter(|_| unchanged)
                .unwrap_or_else(|| SOURCE_API.to_string()),
        };
        let code = if previous.is_some() { 200 } else { 201 };
        if !unchanged && previous.is_none() {
            // Its start position is durable with its resource, before anyone can see it.
            self.stake_new(&one, |_, _, _| true)
                .map_err(WriteError::Internal)?;
        }
        if !unchanged && pipelined {
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| WriteError::Internal(e.to_string()))?;
            self.inner
                .store
                .put_checkpoint(&store_key(&key), bytes)
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            self.persist_rv(rv);
            desired.rv = rv;
            desired.resources.insert(key.clone(), stored.clone());
            let warnings = one.warnings.clone();
            let change = Change::Put {
                stored,
                one: Box::new(one),
                created: previous.is_none(),
            };
            let done = self.stage(kind, key, change, rv);
            drop(desired);
            self.finish_staged(done).await?;
            return Ok((code, self.render(kind, &stamped), warnings));
        }
        if !unchanged {
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| WriteError::Internal(e.to_string()))?;
            self.inner
                .store
                .put_checkpoint(&store_key(&key), bytes)
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            self.persist_rv(rv);
            self.inner
                .store
                .flush()
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            desired.rv = rv;
            desired.resources.insert(key.clone(), stored.clone());
            let next = self.update_snapshot(|resources, mesh| {
                resources.insert(key.clone(), stored);
                splice_into_mesh(mesh, kind, namespace, &name, one.clone());
            });
            self.reconcile_one(kind, namespace, &name, &next).await;
            drop(next);
            let t = if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let mut rv = desired.rv;
            self.emit(&key, &stamped, t, &mut rv);
            self.emit_generated(
                previous.as_ref().map(|p| &p.manifest),
                Some(&stamped),
                &mut rv,
            );
            desired.rv = rv;
            self.publish_rv(rv);
        }
        drop(desired);
        drop(applying);
        Ok((code, self.render(kind, &stamped), one.warnings))
    }

    /// Saves the start position (their log's head now) of the triggers and subscriptions in
    /// `mesh` that `new` says were just created, to be flushed with their resources: an event
    /// answered 202 once they can be seen reaches them, however late their routes start.
    fn stake_new(
        &self,
        mesh: &MeshConfig,
        new: impl Fn((&str, &str), &str, &str) -> bool,
    ) -> Result<(), String> {
        let service = &self.inner.service;
        for t in &mesh.triggers {
            let m = &t.resource.metadata;
            if new(("eventing.knative.dev", "Trigger"), &m.namespace, &m.name) {
                service.stake_trigger_start(&t.resource)?;
            }
        }
        for s in &mesh.subscriptions {
            let m = &s.metadata;
            if new(
                ("messaging.knative.dev", "Subscription"),
                &m.namespace,
                &m.name,
            ) {
                service.stake_subscription_start(s)?;
            }
        }
        Ok(())
    }

    /// Queues a stored trigger write to be applied; answers once it is durable and applied.
    fn stage(
        &self,
        kind: &'static KindInfo,
        key: ResKey,
        change: Change,
        rv: u64,
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Staged {
                kind,
                key,
                change,
                rv,
                done,
            });
        rx
    }

    /// Waits until a staged write is durable and applied (by this call, or by another writer's
    /// that took it along).
    async fn finish_staged(
        &self,
        done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), WriteError> {
        {
            let _applying = self.inner.applying.lock().await;
            self.commit_staged().await;
        }
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Internal(format!(
                "storing the change failed ({e}); it is applied and kept, and written when the store recovers"
            ))),
            Err(_) => Err(WriteError::Internal("the write was dropped".into())),
        }
    }

    /// Bumps the resourceVersion of each stored resource whose readiness (its conditions'
    /// type, status and reason, its address and resolved URIs) changed since it was last
    /// reported, and sends a MODIFIED watch event with it, as Kubernetes does for a status
    /// write. A Trigger turning Ready when its Broker is applied, a sink that now resolves, a
    /// worker that failed or is back all are such changes. A resource not reported yet is only
    /// recorded. The caller holds neither `applying` nor `desired`.
    pub(crate) async fn bump_statuses(&self) {
        // What to look at, taken under the readers' lock (no clone of the snapshot is kept, or
        // the next apply would copy it); statuses are computed after.
        let looked: Vec<(ResKey, &'static KindInfo, Value)> = {
            let snap = self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner());
            snap.0
                .iter()
                .filter_map(|(k, s)| {
                    let (kind, _) = identify(&s.manifest)?;
                    let looked_at = s.manifest.clone();
                    Some((k.clone(), kind, looked_at))
                })
                .collect()
        };
        let mut cx = None;
        let mut changed = Vec::new();
        {
            let mut reported = self
                .inner
                .reported
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (k, kind, m) in looked {
                let now = readiness(&self.status_in(kind, &m, &mut cx));
                match reported.get(&k) {
                    Some(before) if *before == now => {}
                    Some(_) => changed.push(k),
                    None => {
                        reported.insert(k, now);
                    }
                }
            }
        }
        drop(cx);
        if changed.is_empty() {
            return;
        }
        // Staged writes have older versions: they go out first.
        let _applying = self.inner.applying.lock().await;
        self.commit_staged().await;
        let mut desired = self.inner.desired.lock().await;
        let mut bumped = Vec::new();
        for k in changed {
            let Some(stored) = desired.resources.get(&k).cloned() else {
                continue;
            };
            let mut stored = stored;
            let rv = desired.rv + 1;
            if let Some(m) = stored
                .manifest
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
            {
                m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            let bytes = match serde_json::to_vec(&stored) {
                Ok(b) => b,
                Err(_) => continue,
            };
            if let Err(e) = self.inner.store.put_checkpoint(&store_key(&k), bytes) {
                tracing::warn!("saving a status change: {e}");
                return;
            }
            desired.rv = rv;
            desired.resources.insert(k.clone(), stored.clone());
            bumped.push((k, stored));
        }
        if bumped.is_empty() {
            return;
        }
        self.persist_rv(desired.rv);
        // Durable before anyone sees the version: a watch resumed from it after a crash must
        // not miss the changes that would reuse it.
        if let Err(e) = self.inner.store.flush().await {
            tracing::warn!("saving status changes: {e}");
        }
        if let Ok(mut snap) = self.inner.snapshot.write() {
            let resources = Arc::make_mut(&mut snap.0);
            for (k, s) in &bumped {
                resources.insert(k.clone(), s.clone());
            }
        }
        for (k, s) in bumped {
            let mut rv = desired.rv;
            self.emit(&k, &s.manifest, "MODIFIED", &mut rv);
        }
        self.publish_rv(desired.rv);
    }

    /// Looks for status changes every [`STATUS_LOOK`] until the runtime stops or is dropped.
    fn spawn_status_look(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STATUS_LOOK).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner.stopped.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                Runtime { inner }.bump_statuses().await;
            }
        });
    }

    /// Stops looking for status changes (at shutdown, when statuses say "not running" only
    /// because everything stops).
    pub(crate) fn stop(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Makes every staged write durable with one flush, then applies them in order. The caller
    /// holds `applying`.
    async fn commit_staged(&self) {
        let batch =
            std::mem::take(&mut *self.inner.staged.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        // A failed flush leaves the writes pending in the store, which writes them when it
        // recovers: they are applied all the same, so the running mesh matches the store.
        let flushed = self.inner.store.flush().await.map_err(|e| e.to_string());
        for item in batch {
            let Staged {
                kind,
                key,
                change,
                rv,
                done,
            } = item;
            let (ns, name) = (key.2.clone(), key.3.clone());
            match change {
                Change::Put {
                    stored,
                    one,
                    created,
                } => {
                    let manifest = stored.manifest.clone();
                    let next = self.update_snapshot(|resources, mesh| {
                        resources.insert(key.clone(), stored);
                        if !created {
                            remove_from_mesh(mesh, kind, &ns, &name);
                        }
                        add_to_mesh(mesh, *one);
                    });
                    self.reconcile_one(kind, &ns, &name, &next).await;
                    drop(next);
                    let t = if created { "ADDED" } else { "MODIFIED" };
                    let mut at = rv;
                    self.emit(&key, &manifest, t, &mut at);
                }
                Change::Delete { object } => {
                    let next = self.update_snapshot(|resources, mesh| {
                        resources.remove(&key);
                        remove_from_mesh(mesh, kind, &ns, &name);
                    });
                    self.reconcile_one(kind, &ns, &name, &next).await;
                    drop(next);
                    self.send_event(kind, &key, object, "DELETED", rv);
                }
            }
            self.publish_rv(rv);
            let _ = done.send(flushed.clone());
        }
    }

    async fn reconcile_one(&self, kind: &KindInfo, namespace: &str, name: &str, mesh: &MeshConfig) {
        let resolver = self.resolver(mesh);
        let result = if kind.kind == "Trigger" {
            self.inner
                .service
                .reconcile_trigger(namespace, name, mesh, &resolver)
                .await
        } else {
            self.inner.sources.prune(mesh).await;
            let data_plane = crate::sources::with_source_channels(mesh);
            self.inner
                .service
                .reconcile(data_plane.as_ref().unwrap_or(mesh), &resolver)
                .await
        };
        if let Err(e) = result {
            tracing::error!("reconcile {} {namespace}/{name}: {e}", kind.kind);
        }
        // Sources follow every change: their sink broker may have come or gone.
        self.inner.sources.reconcile(mesh, &resolver).await;
    }

    /// The stored manifests of one kind (optionally in one namespace), and those a Channel,
    /// Sequence or Parallel generated, rendered with status.
    pub(crate) fn list(&self, kind: &'static KindInfo, namespace: Option<&str>) -> Vec<Value> {
        let (resources, mesh) = self
            .inner
            .snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut cx = None;
        let mut out: Vec<Value> = resources
            .iter()
            .filter(|(k, _)| k.0 == kind.group && k.1 == kind.kind)
            .filter(|(k, _)| namespace.is_none_or(|n| n == k.2))
            .map(|(_, s)| self.render_in(kind, &s.manifest, &mut cx))
            .collect();
        for m in messaging::generated(&resources, &mesh, kind, namespace) {
            out.push(self.render_in(kind, &m, &mut cx));
        }
        out
    }

    /// One resource (stored, or generated by a Channel, Sequence or Parallel) rendered with
    /// status.
    pub(crate) fn get(
        &self,
        kind: &'static KindInfo,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let (resources, mesh) = self
            .inner
            .snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        if let Some(s) = resources.get(&key_of(kind, namespace, name)) {
            return Some(self.render(kind, &s.manifest));
        }
        messaging::generated(&resources, &mesh, kind, Some(namespace))
            .into_iter()
            .find(|m| m["metadata"]["name"] == name)
            .map(|m| self.render(kind, &m))
    }

    /// Resources that cannot run (a worker that keeps failing, unreadable progress), with why.
    /// Resources waiting for another one (a Trigger before its Broker) are not failing.
    pub(crate) fn failing(&self) -> Vec<(String, String)> {
        let failing = |code: &Option<String>| {
            code.as_deref()
                .is_some_and(|c| !WAITING_REASONS.contains(&c))
        };
        let triggers = self
            .inner
            .service
            .triggers()
            .into_iter()
            .filter(|t| failing(&t.not_ready_code))
            .map(|t| {
                (
                    format!("trigger {}/{}", t.namespace, t.name),
                    t.not_ready_reason.unwrap_or_default(),
                )
            });
        let subscriptions = self
            .inner
            .service
            .subscriptions()
            .into_iter()
            .filter(|s| failing(&s.not_ready_code))
            .map(|s| {
                (
                    format!("subscription {}/{}", s.namespace, s.name),
                    s.not_ready_reason.unwrap_or_default(),
                )
            });
        let streams = self
            .inner
            .service
            .failing_streams()
            .into_iter()
            .map(|(what, ns, name, why)| (format!("{what} {ns}/{name}"), why));
        let sources = self.inner.sources.failing();
        streams
            .chain(triggers)
            .chain(subscriptions)
            .chain(sources)
            .collect()
    }

    /// Repositions a trigger on its broker's log (see [`BrokerService::replay`]).
    pub(crate) async fn replay(
        &self,
        namespace: &str,
        name: &str,
        from: evmesh_config::ReplayFrom,
    ) -> Result<u64, evmesh_broker::ReplayError> {
        self.inner.service.replay(namespace, name, from).await
    }

    /// The resourceVersion of the latest change.
    pub(crate) fn resource_version(&self) -> u64 {
        self.inner
            .current_rv
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Subscribes to changes, then returns the events after `from` still in history; `None`
    /// when `from` is older than the history (the client must list again: 410 Expired).
    pub(crate) fn watch_from(
        &self,
        from: u64,
    ) -> (
        broadcast::Receiver<Arc<WatchEvent>>,
        Option<Vec<Arc<WatchEvent>>>,
    ) {
        let rx = self.inner.events.subscribe();
        let current = self.resource_version();
        let history = self
            .inner
            .history
            .lock()
            .map(|h| h.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if from >= current {
            return (rx, Some(Vec::new()));
        }
        let oldest = history.first().map(|e| e.rv);
        match oldest {
            Some(o) if o <= from + 1 => (
                rx,
                Some(history.into_iter().filter(|e| e.rv > from).collect()),
            ),
            _ => (rx, None),
        }
    }

    /// A resource with its status as the service reports it.
    pub(crate) fn render(&self, kind: &KindInfo, manifest: &Value) -> Value {
        self.render_in(kind, manifest, &mut None)
    }

    /// [`render`](Self::render), with what rendering channels and flows reads built once in
    /// `cx` (for a list).
    fn render_in(
        &self,
        kind: &KindInfo,
        manifest: &Value,
        cx: &mut Option<evmesh_broker::kind::StatusCx>,
    ) -> Value {
        let status = self.status_in(kind, manifest, cx);
        let mut obj = manifest.clone();
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), status);
        }
        obj
    }

    /// The `status` of a resource, as its registered kind reports it.
    fn status_in(
        &self,
        kind: &KindInfo,
        manifest: &Value,
        cx: &mut Option<evmesh_broker::kind::StatusCx>,
    ) -> Value {
        let cx = cx.get_or_insert_with(|| {
            let mesh = self.mesh();
            evmesh_broker::kind::StatusCx {
                resolver: self.resolver(&mesh),
                mesh,
                ingress: self.inner.ingress.clone(),
                service: self.inner.service.clone(),
                sources: Arc::new(self.inner.sources.clone()),
            }
        });
        match crate::kinds::runtime(kind) {
            Some(k) => k.status(cx, manifest),
            None => json!({}),
        }
    }
}

/// What a status change that matters is judged by: the conditions (type, status, reason; not
/// the message, which may carry changing detail), the address and the resolved URIs; not the
/// counters.
fn readiness(status: &Value) -> Value {
    let conditions: Vec<Value> = status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| json!([c["type"], c["status"], c["reason"]]))
                .collect()
        })
        .unwrap_or_default();
    json!([
        conditions,
        status["address"],
        status["subscriberUri"],
        status["deadLetterSinkUri"],
        status["sinkUri"],
    ])
}

fn is_trigger(kind: &KindInfo) -> bool {
    kind.group == "eventing.knative.dev" && kind.kind == "Trigger"
}

/// Removes what resource `ns/name` of `kind` put into `mesh`, as its registered kind says.
fn remove_from_mesh(mesh: &mut MeshConfig, kind: &KindInfo, ns: &str, name: &str) {
    match registry::by_group(kind.group, kind.kind) {
        Some(k) => k.remove(mesh, ns, name),
        None => mesh.externals.retain(|e| {
            !(e.kind == kind.kind && e.metadata.namespace == ns && e.metadata.name == name)
        }),
    }
}

fn splice_into_mesh(mesh: &mut MeshConfig, kind: &KindInfo, ns: &str, name: &str, one: MeshConfig) {
    remove_from_mesh(mesh, kind, ns, name);
    add_to_mesh(mesh, one);
}

fn add_to_mesh(mesh: &mut MeshConfig, one: MeshConfig) {
    mesh.brokers.extend(one.brokers);
    mesh.triggers.extend(one.triggers);
    mesh.externals.extend(one.externals);
    mesh.sources.extend(one.sources);
    mesh.channels.extend(one.channels);
    mesh.subscriptions.extend(one.subscriptions);
}
