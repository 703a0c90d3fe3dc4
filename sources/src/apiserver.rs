//! ApiServerSource: Kubernetes-shaped API changes as CloudEvents, watched through kube-rs (a real
//! cluster, or evmesh's own admin API), shaped as Knative's apiserver adapter sends them.
//!
//! As Knative's adapter (a reflector whose store only forwards `Add`/`Update`/`Delete`), the
//! objects listed when a watch starts (or restarts after a `410 Gone`) emit nothing; each object
//! added, changed or deleted afterwards emits one event.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use evmesh_broker::record::{DataKind, EventRecord, RecordError};
use evmesh_config::{ApiServerResource, ApiServerSourceSpec, SourceConfig, SourceSpec};
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Map, Value, json};
use url::Url;

use crate::cloudevents_attrs::{apply_overrides, base_attributes};
use crate::kind::{BuildCx, Built, NotRunning, SourceKind, SourceModule};
use crate::{BoxFuture, CeAttributes, Source, SourceContext, SourceError, SourceStatus};
use evmesh_config::registry::{AGE, KindInfo, READY_COL, REASON_COL, SINK_COL};

/// The Kubernetes API an ApiServerSource watches.
#[derive(Clone)]
pub enum KubeApi {
    /// evmesh's own admin API at `url`, with its admin token (when it has one).
    Evmesh {
        /// Base URL, e.g. `http://127.0.0.1:8080/`.
        url: Url,
        /// The admin bearer token.
        token: Option<String>,
    },
    /// The current context of a kubeconfig file (`--kubeconfig`, `KUBECONFIG`; several files
    /// separated as in `KUBECONFIG` are merged).
    Kubeconfig(PathBuf),
    /// The cluster evmesh runs in (service account token, `KUBERNETES_SERVICE_HOST`).
    InCluster,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeApi::Evmesh { url, token } => f
                .debug_struct("Evmesh")
                .field("url", &url.as_str())
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .finish(),
            KubeApi::Kubeconfig(p) => f.debug_tuple("Kubeconfig").field(p).finish(),
            KubeApi::InCluster => f.write_str("InCluster"),
        }
    }
}

impl KubeApi {
    /// The kube-rs client configuration.
    async fn config(&self) -> Result<kube::Config, String> {
        match self {
            KubeApi::Evmesh { url, token } => {
                let uri = url
                    .as_str()
                    .parse::<http::Uri>()
                    .map_err(|e| format!("evmesh URL {url}: {e}"))?;
                let mut c = kube::Config::new(uri);
                c.auth_info.token = token.clone().map(secrecy::SecretString::from);
                Ok(c)
            }
            KubeApi::Kubeconfig(path) => {
                // Several files separated as in `KUBECONFIG` (`a:b`) are merged, the first wins;
                // files that do not exist are skipped, as kubectl does.
                let mut merged: Option<kube::config::Kubeconfig> = None;
                for p in std::env::split_paths(path).filter(|p| p.exists()) {
                    let kc = kube::config::Kubeconfig::read_from(&p)
                        .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?;
                    merged = Some(match merged {
                        Some(m) => m
                            .merge(kc)
                            .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?,
                        None => kc,
                    });
                }
                let kc =
                    merged.ok_or_else(|| format!("no kubeconfig file at {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))
            }
            KubeApi::InCluster => {
                kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))
            }
        }
    }
}

/// Kubernetes' `meta.UnsafeGuessKindToResource`: the plural Knative's adapter puts in
/// `subject` (`Trigger` → `triggers`, `Policy` → `policies`, `Ingress` → `ingresses`).
pub fn guess_plural(kind: &str) -> String {
    let s = kind.to_ascii_lowercase();
    if s.is_empty() || s.ends_with("endpoints") {
        return s;
    }
    if s.ends_with('s') {
        format!("{s}es")
    } else if let Some(stem) = s.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{s}s")
    }
}

/// The event `subject`: Knative's `createSelfLink`, `/apis/<apiVersion>/namespaces/<ns>/<plural>/
/// <name>` (an apiVersion that is a group without a version gets `/versionUnknown`).
pub fn self_link(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    let version = if api_version.contains('.') && !api_version.contains('/') {
        format!("{api_version}/versionUnknown")
    } else {
        api_version.to_string()
    };
    format!(
        "/apis/{version}/namespaces/{namespace}/{}/{name}",
        guess_plural(kind)
    )
}

/// The events' `source`: the API server URL (`https://10.96.0.1:443`). The path `evmesh
/// kubeconfig` puts the admin token in (`/_evmesh/kube/<token>`) is left out.
fn api_server_url(uri: &http::Uri) -> String {
    let text = uri.to_string();
    let base = match text.find(KUBE_TOKEN_PATH) {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    base.trim_end_matches('/').to_string()
}

/// Where `evmesh kubeconfig` puts the admin token in the server URL.
const KUBE_TOKEN_PATH: &str = "/_evmesh/kube/";

/// A JSON value with every object's keys sorted, as Go's `encoding/json` marshals the
/// `map[string]interface{}` of an unstructured object.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Added (`ADDED`).
    Add,
    /// Changed (`MODIFIED`).
    Update,
    /// Deleted (`DELETED`).
    Delete,
}

#[derive(Default)]
struct State {
    running: bool,
    sink_uri: Option<String>,
    source_url: Option<String>,
    namespaces: Option<Vec<String>>,
    watches: usize,
    synced: usize,
    failure: Option<(String, String)>,
    emitted: u64,
    lost: u64,
    last_error: Option<String>,
}

/// `corev1.ObjectReference` as Go marshals it: fields in its order, empty ones omitted.
#[derive(serde::Serialize)]
struct ObjectReference<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "apiVersion", skip_serializing_if = "str::is_empty")]
    api_version: &'a str,
}

/// `(namespace, name)` of a watched object.
type ObjectKey = (String, String);

/// `metadata.resourceVersion` as a number (etcd's and evmesh's are).
fn rv_of(v: &Value) -> Option<u64> {
    v["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

/// What one watch has seen, to turn kube-rs's events (`Apply`, `Delete`, relists) into Knative's
/// add, update and delete: an object not seen yet is an add; a newer `resourceVersion` of a seen
/// one an update; a delete of a seen one a delete. An event whose version is not newer than what
/// was seen (evmesh's watch repeats objects with their version after a status look, and a watch
/// resumed from such an older version replays the events after it) sends nothing. Objects listed
/// when the watch (re)starts send nothing, as with Knative's adapter.
#[derive(Default)]
struct Seen {
    known: HashMap<ObjectKey, Value>,
    listing: HashMap<ObjectKey, Value>,
    /// The version each object was deleted at, since the last list.
    deleted: HashMap<ObjectKey, u64>,
}

impl Seen {
    fn init(&mut self) {
        self.listing.clear();
    }

    fn init_apply(&mut self, key: ObjectKey, object: Value) {
        self.listing.insert(key, object);
    }

    fn init_done(&mut self) {
        self.known = std::mem::take(&mut self.listing);
        self.deleted.clear();
    }

    /// The change an added or modified object makes, if any.
    fn apply(&mut self, key: ObjectKey, object: Value) -> Option<Change> {
        let rv = rv_of(&object);
        if let (Some(rv), Some(gone)) = (rv, self.deleted.get(&key))
            && rv <= *gone
        {
            return None;
        }
        let change = match self.known.get(&key) {
            None => Change::Add,
            Some(old) => match (rv, rv_of(old)) {
                (Some(new), Some(seen)) if new <= seen => return None,
                (Some(_), Some(_)) => Change::Update,
                _ if *old == object => return None,
                _ => Change::Update,
            },
        };
        self.deleted.remove(&key);
        self.known.insert(key, object);
        Some(change)
    }

    /// Whether a deleted object is one this watch had seen (else its delete was sent already).
    fn delete(&mut self, key: ObjectKey, object: &Value) -> bool {
        if self.known.remove(&key).is_none() {
            return false;
        }
        if let Some(rv) = rv_of(object) {
            self.deleted.insert(key, rv);
        }
        true
    }
}

/// A running ApiServerSource.
pub struct ApiServerSource {
    namespace: String,
    name: String,
    spec: ApiServerSourceSpec,
    extensions: BTreeMap<String, String>,
    api: KubeApi,
    state: Mutex<State>,
}

impl std::fmt::Debug for ApiServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerSource")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("api", &self.api)
            .finish()
    }
}

/// One watch: a kind in one namespace (or in all).
struct WatchTarget {
    resource: ApiResource,
    namespace: Option<String>,
    selector: Option<String>,
}

impl ApiServerSource {
    /// The source of `config` (an ApiServerSource), watching `api`.
    ///
    /// # Errors
    /// When `config` is another kind.
    pub fn new(config: &SourceConfig, api: KubeApi) -> Result<ApiServerSource, SourceError> {
        let SourceSpec::ApiServer(spec) = &config.spec else {
            return Err(SourceError(format!(
                "{} is not an ApiServerSource",
                config.kind()
            )));
        };
        Ok(ApiServerSource {
            namespace: config.metadata.namespace.clone(),
            name: config.metadata.name.clone(),
            spec: spec.clone(),
            extensions: config.extensions(),
            api,
            state: Mutex::new(State::default()),
        })
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// The event Knative's adapter sends for `change` of `object`, with `source` the API
    /// server URL.
    ///
    /// # Errors
    /// When the event cannot be encoded.
    pub fn event(
        &self,
        source: &str,
        change: Change,
        object: &Value,
    ) -> Result<EventRecord, RecordError> {
        let [add, update, delete] = self.spec.event_types();
        let type_ = match change {
            Change::Add => add,
            Change::Update => update,
            Change::Delete => delete,
        };
        let meta = &object["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (api_version, kind) = (text(&object["apiVersion"]), text(&object["kind"]));
        let (name, namespace) = (text(&meta["name"]), text(&meta["namespace"]));
        let id = uuid::Uuid::new_v4().to_string();
        let mut a = base_attributes(&id, source, type_, chrono::Utc::now());
        a.insert(
            "subject".into(),
            json!(self_link(&api_version, &kind, &namespace, &name)),
        );
        a.insert("datacontenttype".into(), json!("application/json"));
        a.insert("kind".into(), json!(kind));
        a.insert("apiversion".into(), json!(api_version));
        a.insert("name".into(), json!(name));
        a.insert("namespace".into(), json!(namespace));
        let body = if self.spec.resource_mode() {
            sorted(object.clone()).to_string()
        } else {
            serde_json::to_string(&ObjectReference {
                kind: &kind,
                namespace: &namespace,
                name: &name,
                api_version: &api_version,
            })
            .map_err(|e| RecordError(e.to_string()))?
        };
        apply_overrides(&mut a, &self.extensions);
        let body = Bytes::from(body);
        EventRecord::new(a, Some((DataKind::Json, body)), Vec::new())
    }

    /// Whether `owner` lets `object` through: its controller (`ownerReferences` entry with
    /// `controller: true`) has the owner's apiVersion and kind (Knative's `controllerFilter`).
    fn owner_allows(&self, object: &Value) -> bool {
        let Some(owner) = &self.spec.owner else {
            return true;
        };
        let controller = object["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["controller"] == json!(true)));
        let Some(c) = controller else {
            return false;
        };
        (owner.api_version.is_empty() || c["apiVersion"] == json!(owner.api_version))
            && (owner.kind.is_empty() || c["kind"] == json!(owner.kind))
    }

    async fn publish(&self, ctx: &SourceContext, source: &str, change: Change, object: &Value) {
        if !self.owner_allows(object) {
            return;
        }
        let event = match self.event(source, change, object) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(namespace = %self.namespace, name = %self.name, error = %e, "ApiServerSource event is invalid");
                self.update(|s| {
                    s.lost += 1;
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        };
        match ctx.sink.publish(event).await {
            Ok(()) => self.update(|s| {
                s.emitted += 1;
                s.last_error = None;
            }),
            Err(e) => {
                tracing::warn!(namespace = %self.namespace, name = %self.name, error = %e, "ApiServerSource event lost: the sink did not accept it");
                self.update(|s| {
                    s.lost += 1;
                    s.last_error = Some(e.to_string());
                });
            }
        }
    }

    /// The namespaces to watch: `None` for all.
    async fn namespaces(&self, client: &kube::Client) -> Result<Option<Vec<String>>, String> {
        let Some(sel) = &self.spec.namespace_selector else {
            return Ok(Some(vec![self.namespace.clone()]));
        };
        if sel.is_empty() {
            return Ok(None);
        }
        let ar = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = api
            .list(&ListParams::default().labels(&sel.to_query()))
            .await
            .map_err(|e| format!("listing namespaces: {e}"))?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        names.sort();
        Ok(Some(names))
    }

    /// The watches: every resource in every namespace (discovery says which kinds are
    /// namespaced).
    async fn targets(&self, client: &kube::Client) -> Result<Vec<WatchTarget>, (String, String)> {
        let namespaces = self
            .namespaces(client)
            .await
            .map_err(|e| ("NamespacesNotListed".to_string(), e))?;
        self.update(|s| s.namespaces = namespaces.clone());
        let mut out = Vec::new();
        for r in &self.spec.resources {
            let ar = discover(client, r).await?;
            let selector = r
                .selector
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_query());
            match (&ar.1, &namespaces) {
                (Scope::Namespaced, Some(list)) => {
                    for ns in list {
                        out.push(WatchTarget {
                            resource: ar.0.clone(),
                            namespace: Some(ns.clone()),
                            selector: selector.clone(),
                        });
                    }
                }
                _ => out.push(WatchTarget {
                    resource: ar.0.clone(),
                    namespace: None,
                    selector,
                }),
            }
        }
        Ok(out)
    }

    /// Watches one target until `ctx.shutdown`, publishing each change.
    async fn watch(&self, ctx: &SourceContext, client: kube::Client, source: &str, t: WatchTarget) {
        let api: Api<DynamicObject> = match &t.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &t.resource),
            None => Api::all_with(client, &t.resource),
        };
        let mut config = watcher::Config::default();
        if let Some(sel) = &t.selector {
            config = config.labels(sel);
        }
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let key = |o: &DynamicObject| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )
        };
        let as_json = |o: &DynamicObject| {
            let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
            // List items may lack apiVersion and kind; watch events carry them.
            if v.get("apiVersion").is_none_or(|a| a.as_str().is_none()) {
                v["apiVersion"] = json!(t.resource.api_version);
            }
            if v.get("kind").is_none_or(|a| a.as_str().is_none()) {
                v["kind"] = json!(t.resource.kind);
            }
            v
        };
        let mut seen = Seen::default();
        let mut synced = false;
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            let Some(next) = next else { return };
            match next {
                Ok(Event::Init) => seen.init(),
                Ok(Event::InitApply(o)) => seen.init_apply(key(&o), as_json(&o)),
                Ok(Event::InitDone) => {
                    seen.init_done();
                    if !synced {
                        synced = true;
                        self.update(|s| s.synced += 1);
                    }
                    self.update(|s| s.last_error = None);
                }
                Ok(Event::Apply(o)) => {
                    let v = as_json(&o);
                    if let Some(change) = seen.apply(key(&o), v.clone()) {
                        self.publish(ctx, source, change, &v).await;
                    }
                }
                Ok(Event::Delete(o)) => {
                    let v = as_json(&o);
                    if seen.delete(key(&o), &v) {
                        self.publish(ctx, source, Change::Delete, &v).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, name = %self.name, error = %e, "ApiServerSource watch failed; retrying");
                    self.update(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
    }

    async fn run_loop(&self, ctx: SourceContext) {
        self.update(|s| {
            s.running = true;
            s.sink_uri = ctx.sink_uri.clone();
        });
        // As Knative's adapter pod restarts until it can watch: try again with backoff (1 s,
        // doubling, at most 30 s) while the API cannot be reached or a kind is not served.
        let mut wait = std::time::Duration::from_secs(1);
        let started = loop {
            let attempt = async {
                let config = self
                    .api
                    .config()
                    .await
                    .map_err(|e| ("ClusterNotConfigured".to_string(), e))?;
                let source = api_server_url(&config.cluster_url);
                let client = kube::Client::try_from(config)
                    .map_err(|e| ("ClusterNotConfigured".to_string(), e.to_string()))?;
                let targets = self.targets(&client).await?;
                Ok::<_, (String, String)>((client, source, targets))
            };
            let result = tokio::select! {
                _ = ctx.shutdown.cancelled() => return self.update(|s| s.running = false),
                r = attempt => r,
            };
            match result {
                Ok(started) => break started,
                Err(failure) => {
                    tracing::warn!(namespace = %self.namespace, name = %self.name, reason = %failure.0, error = %failure.1, retry_in = ?wait, "ApiServerSource cannot watch");
                    self.update(|s| s.failure = Some(failure));
                }
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return self.update(|s| s.running = false),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        };
        let (client, source, targets) = started;
        self.update(|s| {
            s.failure = None;
            s.source_url = Some(source.clone());
            s.watches = targets.len();
        });
        let watches = targets
            .into_iter()
            .map(|t| self.watch(&ctx, client.clone(), &source, t));
        futures_util::future::join_all(watches).await;
        self.update(|s| s.running = false);
    }
}

/// The API resource (plural, scope) of a configured kind, by discovery as Knative's adapter
/// finds it.
async fn discover(
    client: &kube::Client,
    r: &ApiServerResource,
) -> Result<(ApiResource, Scope), (String, String)> {
    let (group, version) = r
        .api_version
        .split_once('/')
        .unwrap_or(("", r.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &r.kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .map(|(ar, caps)| (ar, caps.scope))
        .map_err(|e| {
            // Not served (no such kind, or no such group/version) or not reachable at all.
            let reason = match &e {
                kube::Error::Discovery(_) => "ResourceNotFound",
                kube::Error::Api(s) if s.code == 404 => "ResourceNotFound",
                _ => "ApiServerUnreachable",
            };
            let message = format!(
                "could not retrieve information about resource {}/{}: {e}",
                r.api_version, r.kind
            );
            (reason.to_string(), message)
        })
}

impl Source for ApiServerSource {
    fn kind(&self) -> &'static str {
        "ApiServerSource"
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, ()> {
        Box::pin(self.run_loop(ctx))
    }

    fn status(&self) -> SourceStatus {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (ready, reason, message) = if let Some((reason, message)) = &s.failure {
            (false, Some(reason.clone()), Some(message.clone()))
        } else if !s.running {
            (
                false,
                Some("NotRunning".to_string()),
                Some("the source is not running".to_string()),
            )
        } else if s.source_url.is_none() || s.synced < s.watches {
            (
                false,
                Some("Watching".to_string()),
                Some(format!("{} of {} watches started", s.synced, s.watches)),
            )
        } else {
            (true, None, None)
        };
        let source = s.source_url.clone().unwrap_or_default();
        let ce_attributes = if source.is_empty() {
            Vec::new()
        } else {
            self.spec
                .event_types()
                .iter()
                .map(|t| CeAttributes {
                    type_: t.to_string(),
                    source: source.clone(),
                })
                .collect()
        };
        let mut extra = Map::new();
        if let Some(ns) = &s.namespaces {
            extra.insert("namespaces".into(), json!(ns));
        }
        extra.insert(
            "evmesh".into(),
            json!({"emitted": s.emitted, "lost": s.lost, "lastError": s.last_error}),
        );
        SourceStatus {
            ready,
            reason,
            message,
            sink_uri: s.sink_uri.clone(),
            ce_attributes,
            extra,
        }
    }
}

/// The ApiServerSource kind's runtime hooks.
struct ApiServerKind;

impl SourceKind for ApiServerKind {
    fn kind(&self) -> &'static str {
        "ApiServerSource"
    }
    fn build(&self, source: &SourceConfig, cx: &BuildCx<'_>) -> Result<Built, NotRunning> {
        let a = ApiServerSource::new(source, cx.kube_api.clone())
            .map_err(|e| NotRunning::new("InvalidSpec", e.0))?;
        Ok(Built::source(std::sync::Arc::new(a)))
    }
}

/// The API versions it is served in.
static VERSIONS: &[KindInfo] = &[KindInfo {
    group: "sources.knative.dev",
    version: "v1",
    kind: "ApiServerSource",
    plural: "apiserversources",
    singular: "apiserversource",
    short_names: &[],
    categories: &["all", "knative", "sources"],
    printer_columns: &[SINK_COL, AGE, READY_COL, REASON_COL],
    spec_schema: evmesh_config::APISERVER_SOURCE_SPEC,
    description: "ApiServerSource is an event source that brings Kubernetes API server events into Knative.",
}];

/// `sources.knative.dev/v1` ApiServerSource, both halves (its validation and its runtime),
/// registered once.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_sources::apiserver::API_SERVER_SOURCE.group_kind().1, "ApiServerSource");
/// ```
pub static API_SERVER_SOURCE: SourceModule = SourceModule::new(&ApiServerKind, VERSIONS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_guessed_as_kubernetes_does() {
        assert_eq!(guess_plural("Trigger"), "triggers");
        assert_eq!(guess_plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(guess_plural("Ingress"), "ingresses");
        assert_eq!(guess_plural("Endpoints"), "endpoints");
    }

    #[test]
    fn self_links_match_knatives() {
        assert_eq!(
            self_link("v1", "Pod", "default", "p"),
            "/apis/v1/namespaces/default/pods/p"
        );
        assert_eq!(
            self_link("eventing.knative.dev/v1", "Trigger", "demo", "t"),
            "/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t"
        );
        assert_eq!(
            self_link("serving.knative.dev", "Revision", "d", "r"),
            "/apis/serving.knative.dev/versionUnknown/namespaces/d/revisions/r"
        );
    }

    #[test]
    fn source_url_never_carries_an_evmesh_token() {
        let uri: http::Uri = "http://127.0.0.1:8080/_evmesh/kube/s3cret"
            .parse()
            .expect("uri");
        assert_eq!(api_server_url(&uri), "http://127.0.0.1:8080");
        let uri: http::Uri = "https://10.96.0.1:443/".parse().expect("uri");
        assert_eq!(api_server_url(&uri), "https://10.96.0.1:443");
    }

    fn obj(name: &str, rv: u64, status: &str) -> (ObjectKey, Value) {
        (
            ("demo".into(), name.into()),
            json!({"metadata": {"name": name, "resourceVersion": rv.to_string()}, "status": status}),
        )
    }

    #[test]
    fn changes_follow_resource_versions_and_replays_send_nothing() {
        let mut s = Seen::default();
        s.init();
        let (k, a1) = obj("a", 1, "x");
        s.init_apply(k.clone(), a1);
        s.init_done();
        // Listed: a repeat of the listed version (a status look) is no change.
        let (_, a1_ready) = obj("a", 1, "ready");
        assert_eq!(s.apply(k.clone(), a1_ready), None);
        let (_, a2) = obj("a", 2, "x");
        assert_eq!(s.apply(k.clone(), a2.clone()), Some(Change::Update));
        let (kb, b3) = obj("b", 3, "x");
        assert_eq!(s.apply(kb.clone(), b3.clone()), Some(Change::Add));
        let (_, b4) = obj("b", 4, "x");
        assert!(s.delete(kb.clone(), &b4));
        // A watch resumed from version 1 replays 2, 3 and 4: nothing is sent again.
        assert_eq!(s.apply(k.clone(), a2), None);
        assert_eq!(s.apply(kb.clone(), b3), None);
        assert!(!s.delete(kb.clone(), &b4));
        // Created again later: an add.
        let (_, b5) = obj("b", 5, "x");
        assert_eq!(s.apply(kb, b5), Some(Change::Add));
    }

    #[test]
    fn resource_data_keys_are_sorted_as_go_marshals_them() {
        let v = sorted(json!({"b": {"z": 1, "a": 2}, "a": [{"y": 1, "x": 2}]}));
        assert_eq!(v.to_string(), r#"{"a":[{"x":2,"y":1}],"b":{"a":2,"z":1}}"#);
    }
}
