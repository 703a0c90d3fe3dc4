//! Validation: typed resources from YAML documents, every error and warning with file:line:field.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use evmesh_filter::Filter;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::annotations::{
    DELIVERY_ORDER_ANNOTATION, DeliveryOrder, REPLAY_FROM_ANNOTATION, ReplayFrom,
};
use crate::error::{ConfigError, ConfigErrors, Location, Warning};
use crate::loader::Document;
use crate::model::*;

/// Delivery options with durations parsed (Knative's DeliverySpec after validation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Retries after the first attempt.
    pub retry: u32,
    /// Backoff policy.
    pub backoff_policy: BackoffPolicy,
    /// Base backoff delay; `None` retries at once (as Knative's dispatcher does).
    pub backoff_delay: Option<Duration>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Cap for a subscriber's `Retry-After` on 429/503; `None` ignores Retry-After.
    pub retry_after_max: Option<Duration>,
    /// Dead-letter sink (still to be resolved).
    pub dead_letter_sink: Option<Destination>,
    /// Content mode of deliveries.
    pub format: DeliveryFormat,
}

impl Delivery {
    /// Knative's default broker delivery (`config-br-defaults`): `retry: 10`, exponential, `PT0.2S`.
    pub fn knative_default() -> Self {
        Delivery {
            retry: 10,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Some(Duration::from_millis(200)),
            timeout: None,
            retry_after_max: None,
            dead_letter_sink: None,
            format: DeliveryFormat::Binary,
        }
    }

    /// One attempt, no retries, no dead-letter sink: what a Knative channel does for a
    /// subscription when neither it nor its channel sets a delivery.
    pub fn single_attempt() -> Self {
        Delivery {
            retry: 0,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: None,
            timeout: None,
            retry_after_max: None,
            dead_letter_sink: None,
            format: DeliveryFormat::Binary,
        }
    }

    /// The wait before retry number `k` (1-based): linear `delay × k`, exponential
    /// `delay × 2^(k-1)`.
    ///
    /// ```
    /// # use evmesh_config::{Delivery, BackoffPolicy};
    /// # use std::time::Duration;
    /// let mut d = Delivery::knative_default();
    /// d.backoff_delay = Some(Duration::from_secs(1));
    /// assert_eq!(d.backoff(3), Duration::from_secs(4));
    /// d.backoff_policy = BackoffPolicy::Linear;
    /// assert_eq!(d.backoff(3), Duration::from_secs(3));
    /// ```
    pub fn backoff(&self, k: u32) -> Duration {
        let Some(delay) = self.backoff_delay else {
            return Duration::ZERO;
        };
        let k = k.max(1);
        match self.backoff_policy {
            BackoffPolicy::Linear => delay.saturating_mul(k),
            BackoffPolicy::Exponential => delay.saturating_mul(1u32 << (k - 1).min(31)),
        }
    }
}

/// A validated Broker.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The resource as written.
    pub resource: Broker,
    /// Its delivery (the Knative default when the YAML sets none).
    pub delivery: Delivery,
    /// A Kafka-class Broker's topic and Kafka, from the ConfigMap its `spec.config` names
    /// (`None`: the class's defaults, or not the Kafka class).
    pub kafka: Option<crate::kafka::KafkaBrokerConfig>,
    /// Where its YAML is.
    pub location: Option<Location>,
}

/// A validated Trigger, its filter compiled.
#[derive(Clone, Debug)]
pub struct TriggerConfig {
    /// The resource as written.
    pub resource: Trigger,
    /// The compiled filter (`filters` when non-empty, else `filter.attributes`).
    pub filter: Filter,
    /// Its own delivery, if it sets one (it then replaces the broker's entirely).
    pub delivery: Option<Delivery>,
    /// Delivery order (annotation `kafka.eventing.knative.dev/delivery.order`).
    pub order: DeliveryOrder,
    /// Replay position asked for by the annotation `evmesh.dev/replay-from`, with the
    /// annotation's text (what the trigger remembers as applied).
    pub replay_from: Option<(ReplayFrom, String)>,
    /// Where its YAML is.
    pub location: Option<Location>,
}

/// Everything evmesh serves, validated.
#[derive(Clone, Debug, Default)]
pub struct MeshConfig {
    /// Brokers.
    pub brokers: Vec<BrokerConfig>,
    /// Triggers.
    pub triggers: Vec<TriggerConfig>,
    /// Resources of kinds evmesh does not serve, kept for `ref` resolution.
    pub externals: Vec<ExternalResource>,
    /// Channels the data plane runs (InMemoryChannels as written, and those backing Channels,
    /// Sequences and Parallels).
    pub channels: Vec<crate::messaging::ChannelConfig>,
    /// Subscriptions the data plane runs (as written, and those wiring Sequences and Parallels).
    pub subscriptions: Vec<crate::messaging::SubscriptionConfig>,
    /// The channel kind of Channels, Sequences and Parallels that name none (Knative's
    /// `default-ch-webhook` ConfigMap, else `serve --default-channel`, else InMemoryChannel).
    pub channel_defaults: crate::messaging::ChannelDefaults,
    /// The NATS server of NatsJetStreamChannels from eventing-natss's `config-nats` ConfigMap
    /// (`knative-eventing`, key `eventing-nats`, its `url`); `None` without one.
    pub nats_url: Option<String>,
    /// The Kafka of KafkaChannels from Knative's `kafka-channel-config` ConfigMap
    /// (`knative-eventing`, key `bootstrap.servers`); `None` without one.
    pub kafka_channel_bootstrap: Option<Vec<String>>,
    /// What evmesh accepted but does not act on.
    pub warnings: Vec<Warning>,
    /// Sources (PingSource, GitHubSource).
    pub sources: Vec<crate::sources::SourceConfig>,
    /// `v1` Secrets (sources read their tokens from them).
    pub secrets: Vec<crate::sources::SecretConfig>,
}

const KNATIVE_EVENTING_GROUPS: &[&str] = &[
    "eventing.knative.dev",
    "messaging.knative.dev",
    "flows.knative.dev",
    "sources.knative.dev",
    "sinks.knative.dev",
];

/// Kinds of Knative Eventing that evmesh will serve but does not yet.
const NOT_YET_SERVED: &[&str] = &[
    "ContainerSource",
    "SinkBinding",
    "EventType",
    "KafkaSink",
    "JobSink",
    "EventTransform",
    "EventPolicy",
    "IntegrationSink",
    "IntegrationSource",
    "RequestReply",
    "RedisStreamSource",
    "RabbitmqSource",
];

#[derive(Default)]
pub(crate) struct Ctx {
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<Warning>,
}

impl Ctx {
    pub(crate) fn error(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            location: doc.locate(field),
            message: message.into(),
        });
    }
    pub(crate) fn warn(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: doc.locate(field),
            message: message.into(),
        });
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let p = ignored_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Deserializes `value` (found at `base` inside the document) into `T`, warning about every
/// field `T` does not know.
pub(crate) fn typed<T: DeserializeOwned>(
    ctx: &mut Ctx,
    doc: &Document,
    base: &str,
    value: &Value,
) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    for field in unknown {
        let full = join(base, &field);
        report_unknown_field(ctx, doc, &full);
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            let full = join(base, &inner);
            ctx.error(doc, &full, e.into_inner().to_string());
            None
        }
    }
}

/// Field names of the kinds evmesh serves, for "did you mean" suggestions.
const KNOWN_FIELDS: &[&str] = &[
    "broker",
    "brokerRef",
    "filter",
    "filters",
    "subscriber",
    "delivery",
    "config",
    "deadLetterSink",
    "retry",
    "backoffPolicy",
    "backoffDelay",
    "timeout",
    "retryAfterMax",
    "format",
    "ref",
    "uri",
    "CACerts",
    "audience",
    "apiVersion",
    "kind",
    "name",
    "namespace",
    "attributes",
    "exact",
    "prefix",
    "suffix",
    "all",
    "any",
    "not",
    "cesql",
    "labels",
    "annotations",
    "channel",
    "reply",
    "steps",
    "branches",
    "channelTemplate",
    "subscribers",
    "spec",
    "metadata",
    "status",
    "schedule",
    "timezone",
    "contentType",
    "dataBase64",
    "ceOverrides",
    "extensions",
    "sink",
    "ownerAndRepository",
    "eventTypes",
    "accessToken",
    "secretToken",
    "secretKeyRef",
    "githubAPIURL",
    "stringData",
];

/// The closest known field name, when it is close enough to be a likely typo.
pub(crate) fn nearest_known_field(name: &str) -> Option<&'static str> {
    let (best, dist) = KNOWN_FIELDS
        .iter()
        .map(|k| {
            (
                *k,
                edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()),
            )
        })
        .min_by_key(|(_, d)| *d)?;
    let limit = if name.len() <= 4 { 1 } else { 2 };
    (dist > 0 && dist <= limit).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An unknown field is an error when it looks like a misspelt known field (a typo must not
/// silently change behaviour, e.g. `filtr:` matching everything), else a warning.
fn report_unknown_field(ctx: &mut Ctx, doc: &Document, full: &str) {
    let last = full.rsplit(['.', '[']).next().unwrap_or(full);
    match nearest_known_field(last) {
        Some(near) => ctx.error(
            doc,
            full,
            format!("unknown field {last:?} (did you mean {near:?}?)"),
        ),
        None => ctx.warn(doc, full, format!("unknown field {last:?} is ignored")),
    }
}

fn join(base: &str, field: &str) -> String {
    match (base.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => base.to_string(),
        _ if field.starts_with('[') => format!("{base}{field}"),
        _ => format!("{base}.{field}"),
    }
}

/// Parses an ISO-8601 duration such as `PT0.2S`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    iso8601::duration(text)
        .map(Duration::from)
        .map_err(|e| format!("{text:?} is not an ISO-8601 duration (e.g. PT0.5S, PT10S): {e}"))
}

pub(crate) fn check_destination(ctx: &mut Ctx, doc: &Document, field: &str, dest: &Destination) {
    match (&dest.reference, &dest.uri) {
        (None, None) => ctx.error(doc, field, "a destination needs `ref` or `uri`"),
        (None, Some(uri)) => match url::Url::parse(uri) {
            Ok(u) if u.has_host() => {}
            _ => ctx.error(
                doc,
                &format!("{field}.uri"),
                format!(
                    "{uri:?} must be an absolute URL (with scheme and host) when no `ref` is set"
                ),
            ),
        },
        (Some(r), uri) => {
            if let Some(uri) = uri
                && url::Url::parse(uri).is_ok()
            {
                ctx.error(
                    doc,
                    &format!("{field}.uri"),
                    "with `ref` set, `uri` must be relative (it is resolved against the ref's URL)",
                );
            }
            if r.kind.is_empty() || r.name.is_empty() || r.api_version.is_empty() {
                ctx.error(
                    doc,
                    &format!("{field}.ref"),
                    "`apiVersion`, `kind` and `name` are required (as in Knative)",
                );
            }
        }
    }
    if let Some(pem) = &dest.ca_certs {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        match CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => {}
            Ok(_) => ctx.error(
                doc,
                &format!("{field}.CACerts"),
                "no PEM CERTIFICATE block found",
            ),
            Err(e) => ctx.error(
                doc,
                &format!("{field}.CACerts"),
                format!("invalid PEM certificate: {e}"),
            ),
        }
    }
    if dest.audience.is_some() {
        ctx.warn(
            doc,
            &format!("{field}.audience"),
            "OIDC audiences are not supported yet",
        );
    }
}

pub(crate) fn check_delivery(
    ctx: &mut Ctx,
    doc: &Document,
    field: &str,
    spec: &DeliverySpec,
) -> Option<Delivery> {
    let mut ok = true;
    let mut dur = |ctx: &mut Ctx, name: &str, v: &Option<String>| -> Option<Duration> {
        let text = v.as_ref()?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(doc, &format!("{field}.{name}"), e);
                ok = false;
                None
            }
        }
    };
    let backoff_delay = dur(ctx, "backoffDelay", &spec.backoff_delay);
    let timeout = dur(ctx, "timeout", &spec.timeout);
    let retry_after_max = dur(ctx, "retryAfterMax", &spec.retry_after_max);
    if timeout == Some(Duration::ZERO) {
        ctx.error(
            doc,
            &format!("{field}.timeout"),
            "must be greater than zero",
        );
        ok = false;
    }
    let retry = match spec.retry {
        None => 0,
        Some(r) if (0..=i64::from(u32::MAX)).contains(&r) => r as u32,
        Some(r) => {
            ctx.error(
                doc,
                &format!("{field}.retry"),
                format!("must be >= 0, got {r}"),
            );
            ok = false;
            0
        }
    };
    if let Some(dls) = &spec.dead_letter_sink {
        let before = ctx.errors.len();
        check_destination(ctx, doc, &format!("{field}.deadLetterSink"), dls);
        ok &= ctx.errors.len() == before;
    }
    ok.then(|| Delivery {
        retry,
        backoff_policy: spec.backoff_policy.unwrap_or_default(),
        backoff_delay,
        timeout,
        retry_after_max: retry_after_max.filter(|d| !d.is_zero()),
        dead_letter_sink: spec.dead_letter_sink.clone(),
        format: spec.format.unwrap_or_default(),
    })
}

fn compile_filter(ctx: &mut Ctx, doc: &Document, spec: &TriggerSpec, name: &str) -> Option<Filter> {
    let result = if !spec.filters.is_empty() {
        if spec
            .filter
            .as_ref()
            .is_some_and(|f| !f.attributes.is_empty())
        {
            ctx.warn(
                doc,
                "spec.filter",
                "ignored because `spec.filters` is set (as in Knative)",
            );
        }
        Filter::from_specs(&spec.filters).map_err(|e| ("spec.filters", e))
    } else {
        let empty = BTreeMap::new();
        let attrs = spec
            .filter
            .as_ref()
            .map(|f| &f.attributes)
            .unwrap_or(&empty);
        Filter::attributes(attrs).map_err(|e| ("spec.filter.attributes", e))
    };
    match result {
        Ok(f) => Some(f.named(name)),
        Err((base, e)) => {
            let field = join(base, &e.path);
            ctx.error(doc, &field, e.message);
            None
        }
    }
}

/// Validates loaded documents into a [`MeshConfig`], collecting every error in one pass.
pub fn validate(docs: &[Document]) -> Result<MeshConfig, ConfigErrors> {
    validate_with_brokers(docs, &HashSet::new())
}

/// Like [`validate`], for documents applied to a running mesh that already has `brokers`
/// (`(namespace, name)`): a trigger naming one of them gets no "does not exist" warning.
pub fn validate_with_brokers(
    docs: &[Document],
    existing_brokers: &HashSet<(String, String)>,
) -> Result<MeshConfig, ConfigErrors> {
    validate_impl(docs, existing_brokers, &ValidationContext::default())
}

/// What a validation knows beyond its documents.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidationContext<'a> {
    /// The running mesh the documents are applied to: refs to its brokers and channels need no
    /// "does not exist" warning, Subscriptions find its Channels, its default channel applies.
    pub running: Option<&'a MeshConfig>,
    /// The cluster default channel (`serve --default-channel`); a `default-ch-webhook`
    /// ConfigMap replaces it.
    pub default_channel: Option<crate::messaging::ChannelKind>,
}

/// Like [`validate`], with what the caller knows beyond the documents.
///
/// ```
/// use evmesh_config::{ValidationContext, load_str, validate_in};
/// let running = evmesh_config::MeshConfig::from_yaml("a.yaml",
///     "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: orders}\n").unwrap();
/// let docs = load_str("b.yaml", "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: orders\n  subscriber: {uri: http://127.0.0.1:9000/}\n").unwrap();
/// let mesh = validate_in(&docs, &ValidationContext { running: Some(&running), ..Default::default() }).unwrap();
/// assert!(mesh.warnings.is_empty(), "the running mesh has the broker");
/// assert_eq!(mesh.triggers[0].resource.spec.broker, "orders");
/// ```
pub fn validate_in(
    docs: &[Document],
    context: &ValidationContext<'_>,
) -> Result<MeshConfig, ConfigErrors> {
    let brokers = context
        .running
        .map(|m| {
            m.brokers
                .iter()
                .map(|b| {
                    let m = &b.resource.metadata;
                    (m.namespace.clone(), m.name.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    validate_impl(docs, &brokers, context)
}

/// Addressables evmesh serves that a `ref` may name: brokers `(namespace, name)` and channels,
/// generic Channels, Sequences and Parallels `(group, kind, namespace, name)`.
#[derive(Default)]
pub(crate) struct Known {
    pub(crate) brokers: HashSet<(String, String)>,
    pub(crate) channels: HashSet<(String, String, String, String)>,
}

fn validate_impl(
    docs: &[Document],
    existing_brokers: &HashSet<(String, String)>,
    context: &ValidationContext<'_>,
) -> Result<MeshConfig, ConfigErrors> {
    let mut pass = crate::registry::Pass::new();
    let mut seen = HashSet::new();

    for doc in docs {
        let Some(obj) = doc.value.as_object() else {
            pass.ctx.error(
                doc,
                "",
                "a resource must be a mapping with apiVersion, kind and metadata",
            );
            continue;
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version.is_empty() {
            pass.ctx.error(doc, "apiVersion", "is required");
        }
        if kind.is_empty() {
            pass.ctx.error(doc, "kind", "is required");
            continue;
        }
        let name = obj
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.is_empty() {
            pass.ctx.error(doc, "metadata.name", "is required");
            continue;
        }
        let Some(meta) = typed::<ObjectMeta>(&mut pass.ctx, doc, "metadata", &obj["metadata"])
        else {
            continue;
        };
        // Names become URL paths and store keys: checked as Kubernetes checks them.
        let bad_name = crate::names::dns1123_subdomain(&meta.name)
            .map_err(|e| ("metadata.name", e))
            .and_then(|()| {
                crate::names::dns1123_label(&meta.namespace).map_err(|e| ("metadata.namespace", e))
            });
        if let Err((field, e)) = bad_name {
            pass.ctx.error(doc, field, e);
            continue;
        }
        if !seen.insert((kind.to_string(), meta.namespace.clone(), meta.name.clone())) {
            pass.ctx.error(
                doc,
                "metadata.name",
                format!("duplicate {kind} {}/{}", meta.namespace, meta.name),
            );
            continue;
        }
        let group = api_version.split('/').next().unwrap_or("");
        for key in obj.keys() {
            if ![
                "apiVersion",
                "kind",
                "metadata",
                "spec",
                "status",
                "data",
                "stringData",
                "type",
                "immutable",
            ]
            .contains(&key.as_str())
            {
                report_unknown_field(&mut pass.ctx, doc, key);
            }
        }
        // `spec:` left empty (null) is an empty spec, as Kubernetes reads it.
        let spec = match obj.get("spec") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v) => v.clone(),
        };
        if let Some(registered) = crate::registry::reader(api_version, kind, &meta) {
            pass.current = Some(registered);
            registered.validate(&mut pass, doc, api_version, meta, &spec);
            pass.current = None;
            continue;
        }
        let ctx = &mut pass.ctx;
        match (group, kind) {
            (g, k) if KNATIVE_EVENTING_GROUPS.contains(&g) && NOT_YET_SERVED.contains(&k) => {
                ctx.warn(
                    doc,
                    "kind",
                    format!("{k} is not supported by evmesh yet; this resource is ignored"),
                );
            }
            (g, k) if KNATIVE_EVENTING_GROUPS.contains(&g) => {
                // Without an installed registry only this crate's own kinds are known.
                let hint = if crate::registry::installed() {
                    ""
                } else {
                    " (no kind registry is installed: evmesh_config alone knows its own kinds; evmesh installs the rest, e.g. Sequence and Parallel, see registry::install)"
                };
                ctx.error(
                    doc,
                    "kind",
                    format!("unknown kind {k:?} in {api_version}{hint}"),
                );
            }
            (_, k) => {
                let status = obj.get("status");
                let address = status
                    .and_then(|s| s.get("address"))
                    .and_then(|a| a.get("url"))
                    .or_else(|| status.and_then(|s| s.get("url")))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if address.is_none() {
                    ctx.warn(
                        doc,
                        "kind",
                        format!("{k} is not served by evmesh; refs to it resolve through the URL template (it declares no status.address.url)"),
                    );
                }
                pass.externals.push(ExternalResource {
                    api_version: api_version.to_string(),
                    kind: k.to_string(),
                    metadata: meta,
                    address,
                });
            }
        }
    }

    let crate::registry::Pass {
        mut ctx,
        messaging,
        brokers,
        triggers,
        externals,
        nats_url,
        kafka_channel_bootstrap,
        config_maps,
        sources,
        secrets,
        current: _,
        mut deferred,
    } = pass;
    let mut mesh = MeshConfig {
        nats_url,
        kafka_channel_bootstrap,
        ..MeshConfig::default()
    };
    let mut broker_names: HashSet<(String, String)> = brokers
        .iter()
        .map(|(b, _)| (b.metadata.namespace.clone(), b.metadata.name.clone()))
        .collect();
    broker_names.extend(existing_brokers.iter().cloned());
    let channel_defaults = messaging.defaults(&mut ctx, context);
    let mut known = Known {
        brokers: broker_names.clone(),
        channels: HashSet::new(),
    };
    if let Some(running) = context.running {
        known.channels.extend(
            crate::registry::addresses(running)
                .into_iter()
                .filter(|((g, k, _, _), _)| {
                    crate::registry::refs_of(g, k) == crate::registry::Refs::Channel
                })
                .map(|(k, _)| k),
        );
    }
    // Deferred resources are finished stage by stage, kind by kind in registration order.
    let rank = |k: &'static dyn crate::registry::Kind| {
        crate::registry::all()
            .iter()
            .position(|r| std::ptr::addr_eq(*r as *const _, k as *const _))
    };
    deferred.sort_by_key(|(k, ..)| (k.stage(), rank(*k)));
    for (k, meta, spec, _) in &deferred {
        let mut add = crate::registry::Addressables { known: &mut known };
        k.known(meta, spec, &channel_defaults, &mut add);
    }

    let mut used_config_maps: HashSet<(String, String)> = HashSet::new();
    for (broker, doc) in brokers {
        let class = broker
            .metadata
            .annotations
            .get("eventing.knative.dev/broker.class");
        // The Kafka class runs on Kafka (evmesh-kafka's log provider).
        let kafka = class.is_some_and(|c| c == "Kafka");
        if let Some(class) = class.filter(|_| !kafka) {
            ctx.warn(
                doc,
                "metadata.annotations",
                format!("broker class {class:?} is served by evmesh's embedded durable broker"),
            );
        }
        let mut kafka_config = None;
        match &broker.spec.config {
            Some(r) if kafka => {
                let ns = r.namespace.as_deref().unwrap_or(&broker.metadata.namespace);
                let key = (ns.to_string(), r.name.clone());
                if !r.kind.eq_ignore_ascii_case("ConfigMap") {
                    ctx.error(
                        doc,
                        "spec.config.kind",
                        format!("the Kafka class reads a ConfigMap, got {:?}", r.kind),
                    );
                } else if let Some((data, _)) = config_maps.get(&key) {
                    used_config_maps.insert(key.clone());
                    match data
                        .as_object()
                        .ok_or_else(|| "data is required".to_string())
                        .and_then(crate::kafka::KafkaBrokerConfig::from_data)
                    {
                        Ok(c) => {
                            // Knative's SASL/TLS for a Kafka-class broker: not read (yet).
                            if data.get(crate::kafka::AUTH_SECRET_REF_KEY).is_some() {
                                ctx.warn(
                                    doc,
                                    "spec.config",
                                    format!(
                                        "ConfigMap {}/{}: {} is not supported: evmesh connects to this Kafka without SASL or TLS",
                                        key.0,
                                        key.1,
                                        crate::kafka::AUTH_SECRET_REF_KEY
                                    ),
                                );
                            }
                            kafka_config = Some(c);
                        }
                        Err(e) => ctx.error(
                            doc,
                            "spec.config",
                            format!("ConfigMap {}/{}: {e}", key.0, key.1),
                        ),
                    }
                } else {
                    ctx.error(
                        doc,
                        "spec.config",
                        format!(
                            "ConfigMap {}/{} is not in the configuration (a v1 ConfigMap with bootstrap.servers, default.topic.partitions, default.topic.replication.factor)",
                            key.0, key.1
                        ),
                    );
                }
            }
            Some(_) => ctx.warn(
                doc,
                "spec.config",
                "is not used by evmesh's embedded broker class",
            ),
            None => {}
        }
        let delivery = match &broker.spec.delivery {
            Some(d) => check_delivery(&mut ctx, doc, "spec.delivery", d),
            None => Some(Delivery::knative_default()),
        };
        if let Some(delivery) = delivery {
            mesh.brokers.push(BrokerConfig {
                resource: broker,
                delivery,
                kafka: kafka_config,
                location: Some(doc.locate("")),
            });
        }
    }

    for (key, (_, doc)) in &config_maps {
        if !used_config_maps.contains(key) {
            ctx.warn(
                doc,
                "kind",
                format!(
                    "ConfigMap {}/{} is not read by evmesh (it reads a Kafka-class Broker's spec.config, default-ch-webhook, config-nats and kafka-channel-config)",
                    key.0, key.1
                ),
            );
        }
    }

    for (mut trigger, doc) in triggers {
        let ns = trigger.metadata.namespace.clone();
        let errors_before = ctx.errors.len();
        if let Some(r) = trigger.spec.broker_ref.clone() {
            if !r.kind.is_empty() && r.kind != "Broker" {
                ctx.error(
                    doc,
                    "spec.brokerRef.kind",
                    format!("must be Broker, got {:?}", r.kind),
                );
            }
            if r.namespace.as_ref().is_some_and(|n| *n != ns) {
                ctx.error(
                    doc,
                    "spec.brokerRef.namespace",
                    "a broker in another namespace is not supported (Knative's cross-namespace feature is off by default)",
                );
            }
            if !trigger.spec.broker.is_empty() && trigger.spec.broker != r.name {
                ctx.error(
                    doc,
                    "spec.brokerRef",
                    "names another broker than spec.broker",
                );
            }
            trigger.spec.broker = r.name;
        }
        if trigger.spec.broker.is_empty() {
            ctx.error(doc, "spec.broker", "is required (or spec.brokerRef)");
        } else if !broker_names.contains(&(ns.clone(), trigger.spec.broker.clone())) {
            ctx.warn(
                doc,
                "spec.broker",
                format!(
                    "broker {:?} does not exist in namespace {ns:?} (yet): the trigger is not ready until it does",
                    trigger.spec.broker
                ),
            );
        }
        check_destination(&mut ctx, doc, "spec.subscriber", &trigger.spec.subscriber);
        check_ref_target(
            &mut ctx,
            doc,
            "spec.subscriber.ref",
            &trigger.spec.subscriber,
            &ns,
            &known,
        );
        let delivery = trigger
            .spec
            .delivery
            .as_ref()
            .and_then(|d| check_delivery(&mut ctx, doc, "spec.delivery", d));
        if let Some(dls) = trigger
            .spec
            .delivery
            .as_ref()
            .and_then(|d| d.dead_letter_sink.as_ref())
        {
            check_ref_target(
                &mut ctx,
                doc,
                "spec.delivery.deadLetterSink.ref",
                dls,
                &ns,
                &known,
            );
        }
        let name = format!("{ns}/{}", trigger.metadata.name);
        let filter = compile_filter(&mut ctx, doc, &trigger.spec, &name);
        let annotations = &trigger.metadata.annotations;
        warn_unused_annotations(
            &mut ctx,
            doc,
            annotations,
            &[DELIVERY_ORDER_ANNOTATION, REPLAY_FROM_ANNOTATION],
        );
        let order = match annotations.get(DELIVERY_ORDER_ANNOTATION) {
            None => DeliveryOrder::Unordered,
            Some(v) => DeliveryOrder::parse(v).unwrap_or_else(|e| {
                ctx.error(doc, "metadata.annotations", e);
                DeliveryOrder::Unordered
            }),
        };
        let replay_from =
            annotations
                .get(REPLAY_FROM_ANNOTATION)
                .and_then(|v| match ReplayFrom::parse(v) {
                    Ok(r) => Some((r, v.clone())),
                    Err(e) => {
                        ctx.error(
                            doc,
                            "metadata.annotations",
                            format!("{REPLAY_FROM_ANNOTATION} {e}"),
                        );
                        None
                    }
                });
        if ctx.errors.len() == errors_before
            && let Some(filter) = filter
        {
            mesh.triggers.push(TriggerConfig {
                resource: trigger,
                filter,
                delivery,
                order,
                replay_from,
                location: Some(doc.locate("")),
            });
        }
    }
    messaging.finish(
        &mut ctx,
        context,
        channel_defaults,
        &known,
        deferred,
        &mut mesh,
    );
    mesh.externals = externals;
    let secret_names: HashSet<(String, String)> = secrets
        .iter()
        .map(|s: &crate::sources::SecretConfig| {
            (s.metadata.namespace.clone(), s.metadata.name.clone())
        })
        .collect();
    for (source, doc) in sources {
        crate::sources::check_source_refs(&mut ctx, doc, &source, &known, &secret_names);
        mesh.sources.push(source);
    }
    mesh.secrets = secrets;
    if ctx.errors.is_empty() {
        mesh.warnings = ctx.warnings;
        Ok(mesh)
    } else {
        Err(ConfigErrors {
            errors: ctx.errors,
            warnings: ctx.warnings,
        })
    }
}

/// Warns about each Knative or evmesh annotation (a key in a `knative.dev` or `evmesh.dev`
/// domain) that evmesh does not act on for this kind: such an annotation changes behaviour in
/// Knative, so ignoring it silently would mislead. Other annotations are the user's own.
fn warn_unused_annotations(
    ctx: &mut Ctx,
    doc: &Document,
    annotations: &BTreeMap<String, String>,
    acted_on: &[&str],
) {
    for key in annotations.keys() {
        let domain = key.split_once('/').map(|(d, _)| d).unwrap_or("");
        let ours = domain == "knative.dev"
            || domain.ends_with(".knative.dev")
            || domain == "evmesh.dev"
            || domain.ends_with(".evmesh.dev");
        if ours && !acted_on.contains(&key.as_str()) {
            ctx.warn(
                doc,
                "metadata.annotations",
                format!("annotation {key:?} is not acted on by evmesh (ignored)"),
            );
        }
    }
}

pub(crate) fn check_api_version(ctx: &mut Ctx, doc: &Document, got: &str, want: &str) {
    if got != want {
        ctx.error(
            doc,
            "apiVersion",
            format!("{got:?} is not supported, use {want:?}"),
        );
    }
}

/// A ref to a kind evmesh serves must name an existing resource.
pub(crate) fn check_ref_target(
    ctx: &mut Ctx,
    doc: &Document,
    field: &str,
    dest: &Destination,
    ns: &str,
    known: &Known,
) {
    let Some(r) = &dest.reference else { return };
    let group = r.api_version.split('/').next().unwrap_or("");
    let rns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
    let refs = crate::registry::refs_of(group, &r.kind);
    if refs == crate::registry::Refs::Channel {
        let key = (
            group.to_string(),
            r.kind.clone(),
            rns.clone(),
            r.name.clone(),
        );
        if !known.channels.contains(&key) {
            ctx.warn(
                doc,
                field,
                format!(
                    "{} {:?} does not exist in namespace {rns:?} (yet): not ready until it does",
                    r.kind, r.name
                ),
            );
        }
    }
    if refs == crate::registry::Refs::Broker
        && !known.brokers.contains(&(rns.clone(), r.name.clone()))
    {
        ctx.warn(
            doc,
            field,
            format!(
                "broker {:?} does not exist in namespace {rns:?} (yet): not ready until it does",
                r.name
            ),
        );
    }
}
