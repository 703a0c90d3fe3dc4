//! Knative event sources for evmesh: [`PingSource`] (a cron schedule), [`GitHubSource`]
//! (GitHub webhooks) and [`ApiServerSource`] (Kubernetes API changes, through kube-rs), behind one
//! [`Source`] contract.
//!
//! A source is started with an [`EventSink`] the runtime gives it and a shutdown token; it builds
//! each event as an [`EventRecord`] shaped as Knative's source emits it and publishes it to the
//! sink, which resolves once the event is durably accepted. The sink does durability and delivery
//! (retries, dead-letter sink): a source has no HTTP client or retry code for events of its own.
//!
//! Each kind's module also supplies the kind's runtime hooks ([`kind::SourceKind`]: how it is
//! built, its webhook routes) as a [`kind::SourceModule`] (`ping::PING_SOURCE`,
//! `github::GITHUB_SOURCE`, `apiserver::API_SERVER_SOURCE`), which the facade registers by one
//! line; its source runner names no kind.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use evmesh_broker::record::EventRecord;
//! use evmesh_config::MeshConfig;
//! use evmesh_sources::{BoxFuture, EventSink, PingSource, SinkError, Source, SourceContext};
//!
//! /// Collects events in memory (an embedder's sink; the runtime's appends to a durable log).
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<EventRecord>>);
//! impl EventSink for Collect {
//!     fn publish(&self, event: EventRecord) -> BoxFuture<'_, Result<(), SinkError>> {
//!         self.0.lock().unwrap().push(event);
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//!
//! # let mut kinds = evmesh_config::registry::BUILTIN.to_vec();
//! # kinds.push(&evmesh_sources::ping::PING_SOURCE);
//! # evmesh_config::registry::install(kinds).unwrap();
//! let mesh = MeshConfig::from_yaml("ping.yaml", r#"
//! apiVersion: sources.knative.dev/v1
//! kind: PingSource
//! metadata: {name: ping, namespace: demo}
//! spec:
//!   schedule: "* * * * * *"
//!   contentType: text/plain
//!   data: hello
//!   sink: {uri: http://127.0.0.1:9/}
//! "#).unwrap();
//! let ping = PingSource::new(&mesh.sources[0]).unwrap();
//! let event = ping.event_at(chrono::Utc::now()).unwrap();
//! assert_eq!(event.attributes()["type"], "dev.knative.sources.ping");
//! assert_eq!(event.attributes()["source"], "/apis/v1/namespaces/demo/pingsources/ping");
//! # let _ = (Collect::default(), SourceContext::new);
//! ```

pub mod apiserver;
mod clock;
pub mod github;
mod github_api;
pub mod kind;
pub mod ping;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use apiserver::{ApiServerSource, KubeApi};
pub use clock::{Clock, ManualClock, SystemClock};
pub use evmesh_broker::record::EventRecord;
pub use github::{
    GitHubSource, HookObserver, WEBHOOK_ROUTE, WebhookHooks, webhook_router, webhook_url,
};
pub use ping::PingSource;
pub use tokio_util::sync::CancellationToken;

use serde_json::{Map, Value, json};

/// A boxed, sendable future (the sink and source traits stay object safe).
pub type BoxFuture<'a, T> = futures_util::future::BoxFuture<'a, T>;

/// Why a sink did not accept an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Not accepting now (log full, stopping, not ready): try later.
    Unavailable,
    /// The event is larger than the sink accepts.
    TooLarge,
    /// The event itself was refused.
    Rejected,
}

/// A sink's refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What kind of refusal.
    pub kind: SinkErrorKind,
    /// Why, for logs and HTTP answers.
    pub message: String,
}

impl SinkError {
    /// A refusal of `kind`.
    pub fn new(kind: SinkErrorKind, message: impl Into<String>) -> Self {
        SinkError {
            kind,
            message: message.into(),
        }
    }
}

/// Where a source publishes: the runtime's durable log for that source (its delivery engine then
/// delivers to the resolved `sink` with retries and a dead-letter sink).
pub trait EventSink: Send + Sync {
    /// Publishes one event; resolves once it is durably accepted.
    fn publish(&self, event: EventRecord) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// Why a source could not be built from its configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// One `status.ceAttributes` entry: the type and source of events a source emits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CeAttributes {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `source`.
    pub source: String,
}

/// A source's status as Knative shows it: Ready (or why not), `sinkUri`, `ceAttributes`, and
/// per-kind fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceStatus {
    /// Whether it emits events now.
    pub ready: bool,
    /// Why not (a CamelCase reason), when not ready.
    pub reason: Option<String>,
    /// A human-readable message, when not ready.
    pub message: Option<String>,
    /// The resolved sink URI.
    pub sink_uri: Option<String>,
    /// The types and sources of its events.
    pub ce_attributes: Vec<CeAttributes>,
    /// Per-kind status fields (`webhookIDKey`, `address`, counters under `evmesh`).
    pub extra: Map<String, Value>,
}

impl SourceStatus {
    /// The `status` object, as Knative renders a source's status.
    pub fn to_json(&self, observed_generation: i64) -> Value {
        let ready = if self.ready {
            json!({"type": "Ready", "status": "True"})
        } else {
            json!({"type": "Ready", "status": "False",
                   "reason": self.reason.clone().unwrap_or_else(|| "NotReady".into()),
                   "message": self.message.clone().unwrap_or_default()})
        };
        let mut out = Map::new();
        out.insert("observedGeneration".into(), json!(observed_generation));
        out.insert("conditions".into(), json!([ready]));
        if let Some(u) = &self.sink_uri {
            out.insert("sinkUri".into(), json!(u));
        }
        out.insert("ceAttributes".into(), json!(self.ce_attributes));
        for (k, v) in &self.extra {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }
}

/// What a running source gets from the runtime.
#[derive(Clone)]
pub struct SourceContext {
    /// Where to publish.
    pub sink: Arc<dyn EventSink>,
    /// The resolved sink URI (shown as `status.sinkUri`).
    pub sink_uri: Option<String>,
    /// Fires when the source must stop.
    pub shutdown: CancellationToken,
}

impl SourceContext {
    /// A context publishing to `sink`.
    pub fn new(
        sink: Arc<dyn EventSink>,
        sink_uri: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        SourceContext {
            sink,
            sink_uri,
            shutdown,
        }
    }
}

/// The one contract of every source kind.
pub trait Source: Send + Sync {
    /// The kind, e.g. `PingSource`.
    fn kind(&self) -> &'static str;
    /// Runs until `ctx.shutdown` fires, publishing to `ctx.sink`; returns once stopped (a tick or
    /// webhook delivery in progress finishes its publish first).
    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, ()>;
    /// The status now.
    fn status(&self) -> SourceStatus;
    /// Cleans up outside evmesh when the resource is deleted (a GitHub webhook is removed);
    /// not called on a plain shutdown.
    fn finalize(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

mod cloudevents_attrs {
    use super::*;

    /// Attributes every source event starts with.
    pub(crate) fn base_attributes(
        id: &str,
        source: &str,
        type_: &str,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Map<String, Value> {
        let mut a = Map::new();
        a.insert("specversion".into(), json!("1.0"));
        a.insert("id".into(), json!(id));
        a.insert("source".into(), json!(source));
        a.insert("type".into(), json!(type_));
        a.insert(
            "time".into(),
            json!(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
        a
    }

    /// Adds `ceOverrides.extensions` (names lower-cased, as the CloudEvents SDK sets them).
    pub(crate) fn apply_overrides(a: &mut Map<String, Value>, ext: &BTreeMap<String, String>) {
        for (k, v) in ext {
            a.insert(k.to_ascii_lowercase(), json!(v));
        }
    }
}
