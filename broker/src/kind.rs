//! The runtime half of a kind: how a resource shows its status from what runs. Each kind crate
//! implements [`RuntimeKind`] for its kinds in one module, beside (or on the same type as) the
//! kind's validation half ([`evmesh_config::registry::Kind`]); the facade registers both by one
//! line, a [`KindModule`].

use std::sync::Arc;

use evmesh_config::{MeshConfig, Resolver};
use serde_json::{Value, json};
use url::Url;

use crate::BrokerService;

/// Why something is not ready: `(reason, message)`.
pub type NotReady = Option<(String, String)>;

/// The status of a source kind, from the runner that runs sources (the facade's).
pub trait SourceStatus: Send + Sync {
    /// The status of source `kind` `namespace/name` at `generation`.
    fn status(&self, kind: &str, namespace: &str, name: &str, generation: i64) -> Value;
}

/// What status rendering reads, built once per list.
pub struct StatusCx {
    /// The running configuration.
    pub mesh: Arc<MeshConfig>,
    /// Resolves destinations against it.
    pub resolver: Resolver,
    /// The ingress URL addresses are under.
    pub ingress: Url,
    /// The data plane: what runs, and its counters.
    pub service: BrokerService,
    /// The sources' runner.
    pub sources: Arc<dyn SourceStatus>,
}

/// A kind as the runtime sees it: registered once in the facade.
///
/// ```
/// use evmesh_broker::kind::{RuntimeKind, StatusCx};
/// struct Display;
/// impl RuntimeKind for Display {
///     fn group_kind(&self) -> (&'static str, &'static str) {
///         ("evmesh.dev", "EventDisplay")
///     }
///     fn status(&self, _cx: &StatusCx, _manifest: &serde_json::Value) -> serde_json::Value {
///         serde_json::json!({"conditions": evmesh_broker::kind::conditions(None)})
///     }
/// }
/// assert_eq!(Display.group_kind().1, "EventDisplay");
/// ```
pub trait RuntimeKind: Sync {
    /// API group and kind.
    fn group_kind(&self) -> (&'static str, &'static str);
    /// The `status` of a stored resource of this kind, from what runs.
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value;
    /// More of this kind for a runtime above the data plane, which knows its type and downcasts
    /// it (a source kind's build hooks, `evmesh_sources::kind::SourceModule`); `None` for most.
    fn extension(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }
}

/// One kind as the facade registers it, by one line: its validation half (an
/// [`evmesh_config::registry::Kind`]) and its runtime half (a [`RuntimeKind`]).
///
/// A kind that lives in one module implements both traits on one type ([`KindModule::of`]).
/// The kinds `evmesh_config` validates itself (Broker, Trigger, the sources) have their halves
/// in two crates, below and above the data plane, so a module is a pair of references rather
/// than a trait both halves would have to share a type for; a ConfigMap or Secret evmesh reads
/// but does not serve has no runtime half ([`KindModule::validation_only`]).
///
/// ```
/// use evmesh_broker::kind::{KindModule, RuntimeKind, StatusCx};
/// use evmesh_config::registry::{Kind, KindInfo, Pass};
/// struct Note;
/// impl Kind for Note {
///     fn versions(&self) -> &'static [KindInfo] { &[] }
///     fn validate<'a>(&self, _: &mut Pass<'a>, _: &'a evmesh_config::Document, _: &str,
///         _: evmesh_config::ObjectMeta, _: &serde_json::Value) {}
/// }
/// impl RuntimeKind for Note {
///     fn group_kind(&self) -> (&'static str, &'static str) { ("example.dev", "Note") }
///     fn status(&self, _: &StatusCx, _: &serde_json::Value) -> serde_json::Value {
///         serde_json::json!({})
///     }
/// }
/// static NOTE: KindModule = KindModule::of(&Note);
/// assert_eq!(NOTE.runtime().map(|r| r.group_kind().1), Some("Note"));
/// ```
#[derive(Clone, Copy)]
pub struct KindModule {
    config: &'static dyn evmesh_config::registry::Kind,
    runtime: Option<&'static dyn RuntimeKind>,
}

impl KindModule {
    /// A kind whose one type is both halves.
    pub const fn of<K: evmesh_config::registry::Kind + RuntimeKind>(kind: &'static K) -> Self {
        KindModule {
            config: kind,
            runtime: Some(kind),
        }
    }

    /// A kind whose halves are two types (in two crates).
    pub const fn halves(
        config: &'static dyn evmesh_config::registry::Kind,
        runtime: &'static dyn RuntimeKind,
    ) -> Self {
        KindModule {
            config,
            runtime: Some(runtime),
        }
    }

    /// An input read but not served (no status): a ConfigMap or Secret.
    pub const fn validation_only(config: &'static dyn evmesh_config::registry::Kind) -> Self {
        KindModule {
            config,
            runtime: None,
        }
    }

    /// The validation half.
    pub fn config(&self) -> &'static dyn evmesh_config::registry::Kind {
        self.config
    }

    /// The runtime half (`None` for an input that is not served).
    pub fn runtime(&self) -> Option<&'static dyn RuntimeKind> {
        self.runtime
    }
}

/// `namespace`, `name` and `generation` of a manifest.
pub fn identity(manifest: &Value) -> (&str, &str, i64) {
    let meta = &manifest["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or_default(),
        meta["generation"].as_i64().unwrap_or(1),
    )
}

/// Knative's `conditions`: one `Ready` condition, with a reason and message when not ready.
///
/// ```
/// let c = evmesh_broker::kind::conditions(Some(("NotRunning", "broker is not running")));
/// assert_eq!(c[0]["status"], "False");
/// ```
pub fn conditions(not_ready: Option<(&str, &str)>) -> Value {
    match not_ready {
        None => json!([{"type": "Ready", "status": "True"}]),
        Some((reason, message)) => {
            json!([{"type": "Ready", "status": "False", "reason": reason, "message": message}])
        }
    }
}

/// `observedGeneration` and `conditions` added to a status object.
pub fn finish(mut status: Value, generation: i64, not_ready: &NotReady) -> Value {
    if let Some(o) = status.as_object_mut() {
        o.insert("observedGeneration".into(), json!(generation));
        o.insert(
            "conditions".into(),
            conditions(not_ready.as_ref().map(|(r, m)| (r.as_str(), m.as_str()))),
        );
    }
    status
}

/// `eventing.knative.dev/v1` Broker.
pub struct Broker;

impl RuntimeKind for Broker {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("eventing.knative.dev", "Broker")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let v = cx
            .service
            .brokers()
            .into_iter()
            .find(|v| v.namespace == ns && v.name == name);
        let failure = cx.service.broker_not_ready(ns, name);
        let not_ready = match (&v, &failure) {
            (Some(_), _) => None,
            // Its log (Kafka) cannot be opened yet; tried again on a timer.
            (None, Some(why)) => Some(("LogUnavailable", why.as_str())),
            (None, None) => Some(("NotRunning", "broker is not running")),
        };
        json!({
            "observedGeneration": generation,
            "conditions": conditions(not_ready),
            "address": {"url": v.as_ref().map(|v| v.url.clone())},
            "deadLetterSinkUri": v.as_ref().and_then(|v| v.dead_letter_sink_uri.clone()),
            "evmesh": v.map(|v| json!({"routedOffset": v.routed_offset, "counters": v.counters})),
        })
    }
}

/// `eventing.knative.dev/v1` Trigger.
pub struct Trigger;

impl RuntimeKind for Trigger {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("eventing.knative.dev", "Trigger")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let v = cx.service.trigger(ns, name);
        let reason = match &v {
            None => Some((
                "NotRunning".to_string(),
                "trigger is not running".to_string(),
            )),
            Some(v) => v.not_ready_reason.clone().map(|r| {
                (
                    v.not_ready_code
                        .clone()
                        .unwrap_or_else(|| "NotReady".into()),
                    r,
                )
            }),
        };
        json!({
            "observedGeneration": generation,
            "conditions": conditions(reason.as_ref().map(|(c, r)| (c.as_str(), r.as_str()))),
            "subscriberUri": v.as_ref().and_then(|v| v.subscriber_uri.clone()).unwrap_or_default(),
            "deadLetterSinkUri": v.as_ref().and_then(|v| v.dead_letter_sink_uri.clone()),
            "evmesh": v.map(|v| json!({"counters": v.counters})),
        })
    }
}
