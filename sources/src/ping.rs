//! PingSource: a fixed event on a cron schedule, shaped as Knative's mtping adapter sends it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use evmesh_broker::record::{EventRecord, RecordError, classify_body};
use evmesh_config::{CronSchedule, PING_EVENT_TYPE, SourceConfig, SourceSpec};
use serde_json::json;

use crate::cloudevents_attrs::{apply_overrides, base_attributes};
use crate::kind::{BuildCx, Built, NotRunning, SourceKind, SourceModule};
use crate::{
    BoxFuture, CeAttributes, Clock, Source, SourceContext, SourceError, SourceStatus, SystemClock,
};
use evmesh_config::registry::{AGE, KindInfo, PrinterColumn, READY_COL, REASON_COL, SINK_COL};

#[derive(Default)]
struct State {
    running: bool,
    sink_uri: Option<String>,
    last_tick: Option<DateTime<Utc>>,
    next_tick: Option<DateTime<Utc>>,
    emitted: u64,
    lost: u64,
    last_error: Option<String>,
    finished: bool,
}

/// A running-or-not PingSource: emits `dev.knative.sources.ping` on its schedule.
///
/// Ticks missed while evmesh was down are not replayed (as in Knative); a tick is emitted at
/// most once by one process, even when the clock moves backwards.
pub struct PingSource {
    namespace: String,
    name: String,
    schedule: CronSchedule,
    content_type: Option<String>,
    data: Option<Bytes>,
    extensions: BTreeMap<String, String>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for PingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingSource")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("schedule", &self.schedule.text())
            .finish()
    }
}

/// The CloudEvent `source` of a PingSource: `/apis/v1/namespaces/<ns>/pingsources/<name>`.
pub(crate) fn ping_source_attr(ns: &str, name: &str) -> String {
    format!("/apis/v1/namespaces/{ns}/pingsources/{name}")
}

impl PingSource {
    /// A PingSource from its validated configuration, on the system clock.
    pub fn new(config: &SourceConfig) -> Result<PingSource, SourceError> {
        let SourceSpec::Ping(p) = &config.spec else {
            return Err(SourceError(format!(
                "{} is not a PingSource",
                config.kind()
            )));
        };
        Ok(PingSource {
            namespace: config.metadata.namespace.clone(),
            name: config.metadata.name.clone(),
            schedule: p.schedule.clone(),
            content_type: p.spec.content_type.clone().filter(|c| !c.is_empty()),
            data: p.data.clone().map(Bytes::from),
            extensions: config.extensions(),
            clock: Arc::new(SystemClock),
            state: Mutex::new(State::default()),
        })
    }

    /// The same source reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> PingSource {
        self.clock = clock;
        self
    }

    /// The event of one tick, sent at `time`: a new random id, Knative's type and source, the
    /// content type and data bytes exactly as configured, and the `ceOverrides` extensions.
    pub fn event_at(&self, time: DateTime<Utc>) -> Result<EventRecord, RecordError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut a = base_attributes(
            &id,
            &ping_source_attr(&self.namespace, &self.name),
            PING_EVENT_TYPE,
            time,
        );
        // As Knative: the content type is set together with the data only.
        let data = self.data.as_ref().map(|bytes| {
            if let Some(ct) = &self.content_type {
                a.insert("datacontenttype".into(), json!(ct));
            }
            (
                classify_body(self.content_type.as_deref(), bytes),
                bytes.clone(),
            )
        });
        apply_overrides(&mut a, &self.extensions);
        EventRecord::new(a, data, Vec::new())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    async fn tick(&self, ctx: &SourceContext, tick: DateTime<Utc>) {
        let event = match self.event_at(self.clock.now()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(namespace = %self.namespace, name = %self.name, error = %e, "PingSource event is invalid");
                self.update(|s| {
                    s.lost += 1;
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        };
        let id = event
            .attributes()
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        match ctx.sink.publish(event).await {
            Ok(()) => {
                tracing::debug!(namespace = %self.namespace, name = %self.name, %id, %tick, "PingSource tick published");
                self.update(|s| {
                    s.emitted += 1;
                    s.last_tick = Some(tick);
                    s.last_error = None;
                });
            }
            Err(e) => {
                // As Knative after its retries: this tick's event is lost (counted and logged).
                tracing::warn!(namespace = %self.namespace, name = %self.name, %id, %tick, error = %e, "PingSource tick lost: the sink did not accept it");
                self.update(|s| {
                    s.lost += 1;
                    s.last_tick = Some(tick);
                    s.last_error = Some(e.to_string());
                });
            }
        }
    }

    async fn run_loop(&self, ctx: SourceContext) {
        self.update(|s| {
            s.running = true;
            s.sink_uri = ctx.sink_uri.clone();
        });
        let mut last: Option<DateTime<Utc>> = None;
        loop {
            let now = self.clock.now();
            let from = match last {
                Some(l) if l > now => l,
                _ => now,
            };
            let Some(next) = self.schedule.next_after(from) else {
                self.update(|s| {
                    s.finished = true;
                    s.next_tick = None;
                });
                ctx.shutdown.cancelled().await;
                break;
            };
            self.update(|s| s.next_tick = Some(next));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = self.clock.sleep_until(next) => {}
            }
            if self.clock.now() < next {
                continue;
            }
            last = Some(next);
            self.tick(&ctx, next).await;
        }
        self.update(|s| s.running = false);
    }
}

impl Source for PingSource {
    fn kind(&self) -> &'static str {
        "PingSource"
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, ()> {
        Box::pin(self.run_loop(ctx))
    }

    fn status(&self) -> SourceStatus {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (ready, reason, message) = if s.finished {
            (
                false,
                Some("ScheduleExhausted".to_string()),
                Some(format!(
                    "schedule {:?} has no further ticks",
                    self.schedule.text()
                )),
            )
        } else if !s.running {
            (
                false,
                Some("NotRunning".to_string()),
                Some("the source is not running".to_string()),
            )
        } else {
            (true, None, None)
        };
        let fmt = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        let mut extra = serde_json::Map::new();
        extra.insert(
            "evmesh".into(),
            json!({
                "lastTick": fmt(&s.last_tick),
                "nextTick": fmt(&s.next_tick),
                "emitted": s.emitted,
                "lost": s.lost,
                "lastError": s.last_error,
            }),
        );
        SourceStatus {
            ready,
            reason,
            message,
            sink_uri: s.sink_uri.clone(),
            ce_attributes: vec![CeAttributes {
                type_: PING_EVENT_TYPE.to_string(),
                source: ping_source_attr(&self.namespace, &self.name),
            }],
            extra,
        }
    }
}

/// The PingSource kind's runtime hooks.
struct PingKind;

impl SourceKind for PingKind {
    fn kind(&self) -> &'static str {
        "PingSource"
    }
    fn build(&self, source: &SourceConfig, _cx: &BuildCx<'_>) -> Result<Built, NotRunning> {
        let p = PingSource::new(source).map_err(|e| NotRunning::new("InvalidSpec", e.0))?;
        Ok(Built::source(Arc::new(p)))
    }
}

/// The columns `kubectl get pingsources` prints.
const PING_COLUMNS: &[PrinterColumn] = &[
    SINK_COL,
    PrinterColumn {
        name: "Schedule",
        type_: "string",
        json_path: ".spec.schedule",
        description: "",
        priority: 0,
    },
    AGE,
    READY_COL,
    REASON_COL,
];

/// Its API coordinates in `version`.
const fn version(version: &'static str) -> KindInfo {
    KindInfo {
        group: "sources.knative.dev",
        version,
        kind: "PingSource",
        plural: "pingsources",
        singular: "pingsource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: PING_COLUMNS,
        spec_schema: evmesh_config::PING_SOURCE_SPEC,
        description: "PingSource describes an event source with a fixed payload produced on a specified cron schedule.",
    }
}

/// The API versions it is served in.
static VERSIONS: &[KindInfo] = &[version("v1"), version("v1beta2")];

/// `sources.knative.dev/v1` PingSource, both halves (its validation and its runtime),
/// registered once.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_sources::ping::PING_SOURCE.group_kind().1, "PingSource");
/// ```
pub static PING_SOURCE: SourceModule = SourceModule::new(&PingKind, VERSIONS);
