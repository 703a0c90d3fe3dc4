//! A source kind, both halves: how one is built from its configuration ([`SourceKind`]),
//! registered once as a [`SourceModule`] with its API versions (validated by the source model's
//! checks in `evmesh_config`), and its status from the runner that runs it.
//!
//! The facade's generic source runner (internal channel, sink resolution, start, restart, stop,
//! status) names no source kind: it finds each kind's [`SourceKind`] through its registration
//! (one `KINDS` line) and calls its hooks.

use std::any::Any;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use evmesh_broker::BrokerService;
use evmesh_broker::kind::{RuntimeKind, StatusCx, identity};
use evmesh_config::registry::{Kind, KindInfo, Pass};
use evmesh_config::{
    BackoffPolicy, Delivery, Document, MeshConfig, ObjectMeta, Resolver, SourceConfig,
};
use evmesh_store::EventStore;
use serde_json::Value;
use url::Url;

use crate::{KubeApi, Source};

/// Why a source does not run, as its status shows it.
///
/// ```
/// let nr = evmesh_sources::kind::NotRunning::new("InvalidSpec", "bad schedule");
/// assert_eq!(nr.reason, "InvalidSpec");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRunning {
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
    /// The resolved sink URI, when it was resolved.
    pub sink_uri: Option<String>,
}

impl NotRunning {
    /// Not running for `reason`, saying `message`.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        NotRunning {
            reason: reason.into(),
            message: message.into(),
            sink_uri: None,
        }
    }
}

/// A built source, and what the runner serves of it.
#[derive(Clone)]
pub struct Built {
    /// The source to run.
    pub source: Arc<dyn Source>,
    /// Its webhook receiver, when its kind serves webhooks ([`SourceKind::routes`]): the runner
    /// keeps it in its [`Webhooks`] while the source runs; the kind's routes find it there (and
    /// its next build finds it in [`BuildCx::previous`]).
    pub webhook: Option<Arc<dyn Any + Send + Sync>>,
}

impl Built {
    /// A source without webhook.
    pub fn source(source: Arc<dyn Source>) -> Self {
        Built {
            source,
            webhook: None,
        }
    }
}

/// `(kind, namespace, name)` of a source.
pub type SourceKey = (String, String, String);

/// The webhook receivers of the running sources, by [`SourceKey`]; the runner adds and removes
/// them, a kind's routes look them up. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// let hooks = evmesh_sources::kind::Webhooks::default();
/// hooks.insert(("K".into(), "ns".into(), "n".into()), Arc::new(7u32));
/// assert_eq!(hooks.get::<u32>("K", "ns", "n").as_deref(), Some(&7));
/// assert!(hooks.get::<u64>("K", "ns", "n").is_none());
/// ```
#[derive(Clone, Default)]
pub struct Webhooks(Arc<RwLock<HashMap<SourceKey, Arc<dyn Any + Send + Sync>>>>);

impl Webhooks {
    /// Serves `receiver` for source `key`.
    pub fn insert(&self, key: SourceKey, receiver: Arc<dyn Any + Send + Sync>) {
        if let Ok(mut m) = self.0.write() {
            m.insert(key, receiver);
        }
    }

    /// Stops serving source `key`.
    pub fn remove(&self, key: &SourceKey) {
        if let Ok(mut m) = self.0.write() {
            m.remove(key);
        }
    }

    /// Stops serving every source.
    pub fn clear(&self) {
        if let Ok(mut m) = self.0.write() {
            m.clear();
        }
    }

    /// The receiver of source `kind` `namespace/name`, when it is a `T`.
    pub fn get<T: Any + Send + Sync>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<T>> {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let r = self.0.read().ok()?.get(&key).cloned()?;
        r.downcast::<T>().ok()
    }
}

/// What a source kind's [`SourceKind::build`] reads.
pub struct BuildCx<'a> {
    /// The running configuration (its Secrets).
    pub mesh: &'a MeshConfig,
    /// Resolves destinations against it.
    pub resolver: &'a Resolver,
    /// The data plane (a source delivering from its own log runs its route there).
    pub service: &'a BrokerService,
    /// Where a source keeps state across restarts (checkpoints).
    pub store: &'a Arc<dyn EventStore>,
    /// The URL evmesh listens on (webhook URLs are under it unless the source says otherwise).
    pub base: &'a Url,
    /// The Kubernetes API ApiServerSources watch.
    pub kube_api: &'a KubeApi,
    /// The running instance this build replaces (a changed source), if any.
    pub previous: Option<&'a Built>,
}

/// A source kind's runtime hooks: one implementation per kind, in the kind's module, registered
/// once ([`SourceModule`]).
///
/// ```
/// use std::sync::Arc;
/// use evmesh_sources::kind::{BuildCx, Built, NotRunning, SourceKind, SourceModule};
/// struct Ping;
/// impl SourceKind for Ping {
///     fn kind(&self) -> &'static str { "PingSource" }
///     fn build(&self, s: &evmesh_config::SourceConfig, _: &BuildCx<'_>) -> Result<Built, NotRunning> {
///         let p = evmesh_sources::PingSource::new(s)
///             .map_err(|e| NotRunning::new("InvalidSpec", e.to_string()))?;
///         Ok(Built::source(Arc::new(p)))
///     }
/// }
/// static PING: SourceModule = SourceModule::new(&Ping, &[]);
/// assert!(PING.hooks().internal_channel());
/// ```
pub trait SourceKind: Sync {
    /// The kind, e.g. `PingSource` (API group `sources.knative.dev`).
    fn kind(&self) -> &'static str;

    /// Whether the source publishes into an internal channel the runner adds (delivering to its
    /// sink); `false` for a kind delivering from its own log (KafkaSource).
    fn internal_channel(&self) -> bool {
        true
    }

    /// What else a running source depends on besides its spec and resolved sink (e.g. Secret
    /// values): a change restarts it.
    fn fingerprint(&self, _source: &SourceConfig, _mesh: &MeshConfig) -> u64 {
        0
    }

    /// Builds the source (not yet running).
    fn build(&self, source: &SourceConfig, cx: &BuildCx<'_>) -> Result<Built, NotRunning>;

    /// The HTTP routes of its webhooks, finding the receivers in `webhooks` (`None`: it serves
    /// none).
    fn routes(&self, _webhooks: Webhooks) -> Option<Router> {
        None
    }

    /// Not-ready reasons of a running source of this kind that `/readyz` reports as failing (a
    /// source waiting for a normal step is not failing).
    fn failing_reasons(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A source kind as registered, both halves: its validation (its API versions; the checks
/// are the source model's, `evmesh_config`'s) and its runtime half (its [`SourceKind`] hooks,
/// its status from the sources' runner). Found again from the registration by
/// [`SourceModule::from_runtime`].
pub struct SourceModule {
    hooks: &'static dyn SourceKind,
    versions: &'static [KindInfo],
}

impl SourceModule {
    /// The module of the kind `hooks` implements, served in `versions`.
    pub const fn new(hooks: &'static dyn SourceKind, versions: &'static [KindInfo]) -> Self {
        SourceModule { hooks, versions }
    }

    /// Its hooks.
    pub fn hooks(&self) -> &'static dyn SourceKind {
        self.hooks
    }

    /// The source kind a registered runtime half is, if it is one.
    ///
    /// ```
    /// use evmesh_broker::kind::RuntimeKind;
    /// use evmesh_sources::kind::SourceModule;
    /// let r: &dyn RuntimeKind = &evmesh_sources::ping::PING_SOURCE;
    /// assert_eq!(SourceModule::from_runtime(r).map(|m| m.hooks().kind()), Some("PingSource"));
    /// ```
    pub fn from_runtime(runtime: &dyn RuntimeKind) -> Option<&SourceModule> {
        runtime.extension()?.downcast_ref::<SourceModule>()
    }
}

impl Kind for SourceModule {
    fn versions(&self) -> &'static [KindInfo] {
        self.versions
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        pass.source(doc, api_version, self.hooks.kind(), meta, spec);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        let kind = self.hooks.kind();
        mesh.sources.retain(|s| {
            !(s.kind() == kind && s.metadata.namespace == ns && s.metadata.name == name)
        });
    }
}

impl RuntimeKind for SourceModule {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("sources.knative.dev", self.hooks.kind())
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        cx.sources.status(self.hooks.kind(), ns, name, generation)
    }
    fn extension(&self) -> Option<&(dyn Any + Send + Sync)> {
        Some(self)
    }
}

/// Delivery from a source to its sink unless it says otherwise: Knative's source adapters retry
/// 5 times, exponentially from 50 ms.
///
/// ```
/// assert_eq!(evmesh_sources::kind::default_delivery().retry, 5);
/// ```
pub fn default_delivery() -> Delivery {
    Delivery {
        retry: 5,
        backoff_policy: BackoffPolicy::Exponential,
        backoff_delay: Some(Duration::from_millis(50)),
        ..Delivery::single_attempt()
    }
}

/// A hash of `values` (for [`SourceKind::fingerprint`]).
///
/// ```
/// use evmesh_sources::kind::digest;
/// assert_eq!(digest(&["a"]), digest(&["a"]));
/// ```
pub fn digest<T: Hash + ?Sized>(values: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    values.hash(&mut h);
    h.finish()
}
