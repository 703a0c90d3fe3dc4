//! KafkaSource: reads Kafka topics as a consumer group and delivers each record to the sink
//! through the shared delivery engine (a [`LogRoute`] over a [`KafkaGroup`]); a record's offset
//! is committed only after its delivery finished (accepted by the sink, or dead-lettered).
//!
//! Records that already are CloudEvents (binary `ce_` headers, or structured) are forwarded as
//! those events; any other record becomes `dev.knative.kafka.event` shaped as Knative's
//! `InvalidCloudEventInterceptor` shapes it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use evmesh_broker::record::{DataKind, EventRecord, classify_body};
use evmesh_broker::{BrokerService, LogRoute, LogRouteSpec};
use evmesh_config::{
    Delivery, DeliveryOrder, KAFKA_EVENT_TYPE, KafkaKeyType, KafkaSourceConfig, SecretConfig,
    SecretValueFromSource, SourceConfig, SourceSpec, secret_value,
};
use evmesh_sources::kind::{
    BuildCx, Built, NotRunning, SourceKind, SourceModule, default_delivery,
};
use evmesh_sources::{BoxFuture, CeAttributes, Source, SourceContext, SourceError, SourceStatus};
use serde_json::{Map, Value, json};
use url::Url;

use crate::group::{GroupStatus, InitialOffset, KafkaGroup, KafkaRecord};
use crate::{GroupSpec, KafkaSettings, Sasl, Tls, binding};
use evmesh_config::registry::{AGE, KindInfo, READY_COL, REASON_COL, SINK_COL};

/// Not-ready reason of a KafkaSource that cannot reach its Kafka (it keeps trying, and is
/// ready once its consumer group joined).
pub const KAFKA_UNAVAILABLE: &str = "KafkaUnavailable";

/// Annotation that sets the consumer group session timeout of a KafkaSource (ISO-8601, e.g.
/// `PT6S`); evmesh's default is 10 s.
pub const SESSION_TIMEOUT_ANNOTATION: &str = "evmesh.dev/kafka-session-timeout";

/// The CloudEvent `source` of a wrapped record: `/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>`.
pub fn kafka_source_attr(ns: &str, name: &str, topic: &str) -> String {
    format!("/apis/v1/namespaces/{ns}/kafkasources/{name}#{topic}")
}

/// How records become events for one KafkaSource.
#[derive(Clone, Debug)]
pub struct RecordMapper {
    namespace: String,
    name: String,
    key_type: KafkaKeyType,
    extensions: BTreeMap<String, String>,
}

impl RecordMapper {
    /// The event for `record`: a CloudEvent record as it is, anything else wrapped.
    pub fn event(&self, record: &KafkaRecord<'_>) -> Result<EventRecord, String> {
        let mut event = match binding::decode(&record.headers, record.value) {
            Some(Ok(mut e)) => {
                e.set_extension("knativekafkapartition", json!(record.partition.to_string()));
                e.set_extension("knativekafkaoffset", json!(record.offset.to_string()));
                e
            }
            Some(Err(e)) => {
                tracing::debug!(
                    topic = record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "record claims to be a CloudEvent but is not ({e}); wrapped"
                );
                self.wrap(record)?
            }
            None => self.wrap(record)?,
        };
        for (k, v) in &self.extensions {
            event.set_extension(&k.to_ascii_lowercase(), json!(v));
        }
        Ok(event)
    }

    fn key_value(&self, key: &[u8]) -> Value {
        let b64 = || json!(base64::engine::general_purpose::STANDARD.encode(key));
        match self.key_type {
            KafkaKeyType::String => json!(String::from_utf8_lossy(key)),
            KafkaKeyType::Int => match key.len() {
                4 => <[u8; 4]>::try_from(key)
                    .map_or_else(|_| b64(), |b| json!(i32::from_be_bytes(b))),
                8 => <[u8; 8]>::try_from(key)
                    .map_or_else(|_| b64(), |b| json!(i64::from_be_bytes(b))),
                _ => b64(),
            },
            KafkaKeyType::Float => match key.len() {
                4 => <[u8; 4]>::try_from(key)
                    .map_or_else(|_| b64(), |b| json!(f32::from_be_bytes(b))),
                8 => <[u8; 8]>::try_from(key)
                    .map_or_else(|_| b64(), |b| json!(f64::from_be_bytes(b))),
                _ => b64(),
            },
            KafkaKeyType::ByteArray => b64(),
        }
    }

    /// `dev.knative.kafka.event` for a record that is not a CloudEvent.
    fn wrap(&self, r: &KafkaRecord<'_>) -> Result<EventRecord, String> {
        let mut a = Map::new();
        a.insert("specversion".into(), json!("1.0"));
        a.insert(
            "id".into(),
            json!(format!("partition:{}/offset:{}", r.partition, r.offset)),
        );
        a.insert(
            "source".into(),
            json!(kafka_source_attr(&self.namespace, &self.name, r.topic)),
        );
        a.insert("type".into(), json!(KAFKA_EVENT_TYPE));
        a.insert(
            "subject".into(),
            json!(format!("partition:{}#{}", r.partition, r.offset)),
        );
        if let Some(t) = r
            .timestamp_ms
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        {
            a.insert(
                "time".into(),
                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
        }
        let mut content_type = None;
        for (name, value) in &r.headers {
            if name.eq_ignore_ascii_case("content-type") {
                let ct = String::from_utf8_lossy(value).to_ascii_lowercase();
                a.insert("datacontenttype".into(), json!(ct));
                content_type = Some(ct);
                continue;
            }
            let ext: String = name
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                .collect();
            a.insert(
                format!("kafkaheader{ext}"),
                json!(String::from_utf8_lossy(value)),
            );
        }
        if let Some(key) = r.key {
            let v = self.key_value(key);
            let pk = match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            a.insert("key".into(), v);
            a.insert("partitionkey".into(), json!(pk));
        }
        let data = r.value.map(|v| {
            let kind = match content_type.as_deref() {
                Some(ct) => classify_body(Some(ct), v),
                None => DataKind::Binary,
            };
            (kind, Bytes::copy_from_slice(v))
        });
        EventRecord::new(a, data, Vec::new()).map_err(|e| e.to_string())
    }
}

/// What a KafkaSource delivers to: the resolved sink, dead-letter sink and delivery spec.
#[derive(Clone, Debug)]
pub struct SinkPlan {
    /// The resolved sink.
    pub sink: Url,
    /// The sink's `CACerts`.
    pub sink_ca_certs: Option<String>,
    /// The resolved dead-letter sink.
    pub dead_letter: Option<Url>,
    /// Retries, backoff, timeout.
    pub delivery: Delivery,
}

#[derive(Default)]
struct State {
    running: bool,
    routes: Vec<Arc<LogRoute>>,
}

/// A KafkaSource: `spec.consumers` members of its consumer group in this process (as Knative's
/// dispatcher runs that many consumers), each delivering the partitions it is assigned.
pub struct KafkaSource {
    namespace: String,
    name: String,
    config: KafkaSourceConfig,
    groups: Vec<Arc<KafkaGroup>>,
    service: BrokerService,
    plan: SinkPlan,
    state: Mutex<State>,
    /// Its `evmesh.dev/replay-from` annotation (parsed, and as written).
    replay_from: Option<(evmesh_config::ReplayFrom, String)>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("group", &self.config.consumer_group)
            .finish_non_exhaustive()
    }
}

fn secret_text(
    secrets: &[SecretConfig],
    ns: &str,
    field: &str,
    v: Option<&SecretValueFromSource>,
) -> Result<Option<String>, SourceError> {
    let Some(v) = v else { return Ok(None) };
    let bytes = secret_value(secrets, ns, v).map_err(|e| SourceError(format!("{field}: {e}")))?;
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| SourceError(format!("{field}: the secret value is not UTF-8")))
}

/// The client settings of a KafkaSource: its brokers, SASL/TLS from its Secrets, and the session
/// timeout annotation.
pub fn settings_of(
    config: &SourceConfig,
    secrets: &[SecretConfig],
) -> Result<KafkaSettings, SourceError> {
    let SourceSpec::Kafka(k) = &config.spec else {
        return Err(SourceError(format!(
            "{} is not a KafkaSource",
            config.kind()
        )));
    };
    let ns = &config.metadata.namespace;
    let servers: Vec<String> = k
        .spec
        .bootstrap_servers
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut settings = KafkaSettings::new(servers);
    if let Some(t) = config.metadata.annotations.get(SESSION_TIMEOUT_ANNOTATION) {
        settings.session_timeout = evmesh_config::parse_duration(t)
            .map_err(|e| SourceError(format!("{SESSION_TIMEOUT_ANNOTATION}: {e}")))?;
    }
    if let Some(net) = &k.spec.net {
        if let Some(s) = net.sasl.as_ref().filter(|s| s.enable) {
            settings.sasl = Some(Sasl {
                mechanism: secret_text(secrets, ns, "spec.net.sasl.type", s.type_.as_ref())?
                    .unwrap_or_else(|| "PLAIN".into()),
                user: secret_text(secrets, ns, "spec.net.sasl.user", s.user.as_ref())?
                    .unwrap_or_default(),
                password: secret_text(secrets, ns, "spec.net.sasl.password", s.password.as_ref())?
                    .unwrap_or_default(),
            });
        }
        if let Some(t) = net.tls.as_ref().filter(|t| t.enable) {
            settings.tls = Some(Tls {
                ca_pem: secret_text(secrets, ns, "spec.net.tls.caCert", t.ca_cert.as_ref())?,
                cert_pem: secret_text(secrets, ns, "spec.net.tls.cert", t.cert.as_ref())?,
                key_pem: secret_text(secrets, ns, "spec.net.tls.key", t.key.as_ref())?,
            });
        }
    }
    Ok(settings)
}

impl KafkaSource {
    /// A KafkaSource from its validated configuration (Secrets read now), delivering through
    /// `service`'s delivery engine as `plan` says.
    pub fn new(
        config: &SourceConfig,
        secrets: &[SecretConfig],
        service: BrokerService,
        plan: SinkPlan,
    ) -> Result<KafkaSource, SourceError> {
        let settings = settings_of(config, secrets)?;
        let replay_from = match config
            .metadata
            .annotations
            .get(evmesh_config::REPLAY_FROM_ANNOTATION)
        {
            None => None,
            Some(v) => Some((
                evmesh_config::ReplayFrom::parse(v).map_err(|e| {
                    SourceError(format!("{} {e}", evmesh_config::REPLAY_FROM_ANNOTATION))
                })?,
                v.clone(),
            )),
        };
        let SourceSpec::Kafka(k) = &config.spec else {
            return Err(SourceError(format!(
                "{} is not a KafkaSource",
                config.kind()
            )));
        };
        let mapper = RecordMapper {
            namespace: config.metadata.namespace.clone(),
            name: config.metadata.name.clone(),
            key_type: k.key_type,
            extensions: config.extensions(),
        };
        let spec = GroupSpec {
            settings,
            group_id: k.consumer_group.clone(),
            topics: k.spec.topics.clone(),
            initial_offset: if k.earliest {
                InitialOffset::Earliest
            } else {
                InitialOffset::Latest
            },
            decode: Arc::new(move |r| mapper.event(r)),
        };
        let consumers = k
            .spec
            .consumers
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1)
            .max(1);
        let groups = (0..consumers)
            .map(|_| Arc::new(KafkaGroup::new(spec.clone())))
            .collect();
        Ok(KafkaSource {
            namespace: config.metadata.namespace.clone(),
            name: config.metadata.name.clone(),
            config: (**k).clone(),
            groups,
            service,
            plan,
            state: Mutex::new(State::default()),
            replay_from,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn statuses(&self) -> impl Iterator<Item = Arc<GroupStatus>> + '_ {
        self.groups.iter().map(|g| g.status())
    }
}

impl Source for KafkaSource {
    fn kind(&self) -> &'static str {
        "KafkaSource"
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let routes: Vec<Arc<LogRoute>> = self
                .groups
                .iter()
                .enumerate()
                .map(|(i, group)| {
                    Arc::new(self.service.start_log_route(LogRouteSpec {
                        label: if self.groups.len() == 1 {
                            format!("kafkasource/{}/{}", self.namespace, self.name)
                        } else {
                            format!("kafkasource/{}/{}#{i}", self.namespace, self.name)
                        },
                        namespace: self.namespace.clone(),
                        subscriber: self.plan.sink.clone(),
                        subscriber_ca_certs: self.plan.sink_ca_certs.clone(),
                        dead_letter: self.plan.dead_letter.clone(),
                        delivery: self.plan.delivery.clone(),
                        order: if self.config.ordered {
                            DeliveryOrder::Ordered
                        } else {
                            DeliveryOrder::Unordered
                        },
                        group: group.clone(),
                        replay_from: self.replay_from.clone(),
                    }))
                })
                .collect();
            {
                let mut st = self.state();
                st.running = true;
                st.routes = routes;
            }
            ctx.shutdown.cancelled().await;
            let routes = {
                let mut st = self.state();
                st.running = false;
                std::mem::take(&mut st.routes)
            };
            for route in &routes {
                route.stop().await;
            }
            // The consumers commit what is done and leave the group before new ones start.
            for group in &self.groups {
                group.closed().await;
            }
        })
    }

    fn status(&self) -> SourceStatus {
        let st = self.state();
        let not_ready = if !st.running {
            Some(("NotRunning", "the source is not running".to_string()))
        } else if let Some(reason) = st.routes.iter().find_map(|r| r.not_ready_reason()) {
            Some(("DeliveryNotReady", reason))
        } else if !self.statuses().all(|s| s.joined()) {
            let error = self.statuses().find_map(|s| s.error());
            Some(match error {
                Some(e) => (
                    KAFKA_UNAVAILABLE,
                    format!("joining consumer group {}: {e}", self.config.consumer_group),
                ),
                None => (
                    "ConsumerGroupNotJoined",
                    format!("joining consumer group {}", self.config.consumer_group),
                ),
            })
        } else {
            None
        };
        let mut extra = Map::new();
        extra.insert("consumers".into(), json!(self.groups.len()));
        let mut assigned: Vec<String> = self
            .statuses()
            .flat_map(|s| s.assigned())
            .map(|(t, p)| format!("{t}/{p}"))
            .collect();
        assigned.sort();
        let mut ev = Map::new();
        ev.insert("consumerGroup".into(), json!(self.config.consumer_group));
        ev.insert("assigned".into(), json!(assigned));
        // Per consumer of this process: the partitions it is assigned.
        ev.insert(
            "members".into(),
            json!(
                self.statuses()
                    .map(|s| s
                        .assigned()
                        .iter()
                        .map(|(t, p)| format!("{t}/{p}"))
                        .collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            ),
        );
        ev.insert(
            "skipped".into(),
            json!(self.statuses().map(|s| s.skipped()).sum::<u64>()),
        );
        if !st.routes.is_empty() {
            let mut sum = serde_json::Map::new();
            for r in &st.routes {
                if let Value::Object(c) = json!(r.counters()) {
                    for (k, v) in c {
                        let n = sum.get(&k).and_then(Value::as_u64).unwrap_or(0)
                            + v.as_u64().unwrap_or(0);
                        sum.insert(k, json!(n));
                    }
                }
            }
            ev.insert("counters".into(), Value::Object(sum));
        }
        extra.insert("evmesh".into(), Value::Object(ev));
        SourceStatus {
            ready: not_ready.is_none(),
            reason: not_ready.as_ref().map(|(r, _)| r.to_string()),
            message: not_ready.map(|(_, m)| m),
            sink_uri: Some(self.plan.sink.to_string()),
            ce_attributes: self
                .config
                .spec
                .topics
                .iter()
                .map(|t| CeAttributes {
                    type_: KAFKA_EVENT_TYPE.into(),
                    source: kafka_source_attr(&self.namespace, &self.name, t),
                })
                .collect(),
            extra,
        }
    }
}

/// The KafkaSource kind's runtime hooks: it delivers straight from its topics (the Kafka log)
/// through the delivery engine, so it has no internal channel; its sink plan is resolved here.
struct KafkaSourceKind;

impl SourceKind for KafkaSourceKind {
    fn kind(&self) -> &'static str {
        "KafkaSource"
    }

    fn internal_channel(&self) -> bool {
        false
    }

    fn build(&self, s: &SourceConfig, cx: &BuildCx<'_>) -> Result<Built, NotRunning> {
        let SourceSpec::Kafka(k) = &s.spec else {
            return Err(NotRunning::new(
                "InvalidSpec",
                format!("{} is not a KafkaSource", s.kind()),
            ));
        };
        let ns = &s.metadata.namespace;
        let sink = cx
            .resolver
            .resolve(s.sink(), ns)
            .map_err(|e| NotRunning::new("NotFound", format!("sink not resolved: {e}")))?;
        let delivery = k.delivery.clone().unwrap_or_else(default_delivery);
        let dead_letter = match &delivery.dead_letter_sink {
            Some(d) => Some(cx.resolver.resolve(d, ns).map_err(|e| {
                NotRunning::new("NotFound", format!("dead-letter sink not resolved: {e}"))
            })?),
            None => None,
        };
        let plan = SinkPlan {
            sink,
            sink_ca_certs: s.sink().ca_certs.clone(),
            dead_letter,
            delivery,
        };
        let source = KafkaSource::new(s, &cx.mesh.secrets, cx.service.clone(), plan)
            .map_err(|e| NotRunning::new("InvalidSpec", e.0))?;
        Ok(Built::source(Arc::new(source)))
    }

    fn failing_reasons(&self) -> &'static [&'static str] {
        &[KAFKA_UNAVAILABLE]
    }
}

/// Its API coordinates in `version`.
const fn version(version: &'static str) -> KindInfo {
    KindInfo {
        group: "sources.knative.dev",
        version,
        kind: "KafkaSource",
        plural: "kafkasources",
        singular: "kafkasource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: evmesh_config::KAFKA_SOURCE_SPEC,
        description: "KafkaSource reads Kafka topics as a consumer group and sends each record to its sink as a CloudEvent.",
    }
}

/// The API versions it is served in.
static VERSIONS: &[KindInfo] = &[version("v1beta1"), version("v1")];

/// `sources.knative.dev/v1beta1` KafkaSource, both halves (its validation and its runtime),
/// registered once.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_kafka::source::KAFKA_SOURCE.group_kind().1, "KafkaSource");
/// assert!(!evmesh_kafka::source::KAFKA_SOURCE.hooks().internal_channel());
/// ```
pub static KAFKA_SOURCE: SourceModule = SourceModule::new(&KafkaSourceKind, VERSIONS);
