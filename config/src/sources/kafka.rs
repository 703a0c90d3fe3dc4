//! KafkaSource (`sources.knative.dev/v1beta1` and `v1`): its spec and validation.

use serde::{Deserialize, Serialize};

use super::{CloudEventOverrides, SecretValueFromSource, check_overrides, check_secret_ref};
use crate::loader::Document;
use crate::model::{DeliverySpec, Destination, ObjectMeta};
use crate::validate::{Ctx, Delivery, check_delivery, check_destination};

/// `sources.knative.dev/v1beta1` (KafkaSource's long-standing version).
pub const SOURCES_V1BETA1: &str = "sources.knative.dev/v1beta1";
/// The type of a record that was not a CloudEvent, wrapped by a KafkaSource.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";
/// The label that says how a KafkaSource reads record keys.
pub const KAFKA_KEY_TYPE_LABEL: &str = "kafkasources.sources.knative.dev/key-type";
/// The most consumers (`spec.consumers`) one KafkaSource runs in one process.
const MAX_CONSUMERS: i32 = 64;

/// The OpenAPI schema of a KafkaSource's `spec` (for discovery and kubectl).
pub const KAFKA_SOURCE_SPEC: &str = r#"{"type": "object", "description": "KafkaSourceSpec defines the desired state of the KafkaSource.",
  "required": ["bootstrapServers", "topics", "sink"],
  "x-kubernetes-preserve-unknown-fields": true,
  "properties": {
    "bootstrapServers": {"type": "array", "items": {"type": "string"}, "description": "Bootstrap servers are the Kafka servers the consumer will connect to."},
    "topics": {"type": "array", "items": {"type": "string"}, "description": "Topic topics to consume messages from."},
    "consumerGroup": {"type": "string", "description": "ConsumerGroupID is the consumer group ID."},
    "initialOffset": {"type": "string", "enum": ["earliest", "latest"], "description": "InitialOffset is the initial offset of a new consumer group."},
    "consumers": {"type": "integer", "format": "int32"},
    "ordering": {"type": "string", "enum": ["ordered", "unordered"], "description": "Ordering is the type of the consumer verticle."},
    "net": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    "delivery": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    "sink": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    "ceOverrides": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
  }}"#;

/// `net.sasl` of a KafkaSource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// Whether SASL is used.
    #[serde(default)]
    pub enable: bool,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretValueFromSource>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValueFromSource>,
    /// Mechanism: `PLAIN` (default), `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<SecretValueFromSource>,
}

/// `net.tls` of a KafkaSource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Whether TLS is used.
    #[serde(default)]
    pub enable: bool,
    /// Client certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretValueFromSource>,
    /// Client key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretValueFromSource>,
    /// CA certificates (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretValueFromSource>,
}

/// `net` of a KafkaSource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaNet {
    /// SASL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

/// `spec` of a KafkaSource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    /// `host:port` of Kafka brokers.
    #[serde(default)]
    pub bootstrap_servers: Vec<String>,
    /// Topics read.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Consumer group; `knative-kafka-source-<uid>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// `earliest` or `latest` (default): where a new group starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<String>,
    /// Consumers (Knative scales pods with it; evmesh runs one group member per process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<i32>,
    /// `ordered` (default) or `unordered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// SASL and TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNet>,
    /// Retries, backoff and dead-letter sink of the delivery to the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Where events go.
    #[serde(default)]
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

/// How record keys are read (the `kafkasources.sources.knative.dev/key-type` label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KafkaKeyType {
    /// UTF-8 text (default).
    #[default]
    String,
    /// A big-endian signed integer (4 or 8 bytes).
    Int,
    /// A big-endian IEEE float (4 or 8 bytes).
    Float,
    /// Bytes, base64 encoded.
    ByteArray,
}

/// A validated KafkaSource.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// The spec as written.
    pub spec: KafkaSourceSpec,
    /// The consumer group (defaulted).
    pub consumer_group: String,
    /// Whether a new group starts at the oldest record (`earliest`).
    pub earliest: bool,
    /// Whether deliveries are ordered (`ordering: ordered`, the default).
    pub ordered: bool,
    /// How keys are read.
    pub key_type: KafkaKeyType,
    /// The delivery to the sink (`None`: the default of evmesh's sources).
    pub delivery: Option<Delivery>,
}

/// Validates a KafkaSource spec.
pub(crate) fn check_kafka(
    ctx: &mut Ctx,
    doc: &Document,
    metadata: &ObjectMeta,
    spec: KafkaSourceSpec,
) -> Option<KafkaSourceConfig> {
    let before = ctx.errors.len();
    if spec.bootstrap_servers.iter().all(|s| s.trim().is_empty()) {
        ctx.error(
            doc,
            "spec.bootstrapServers",
            "at least one bootstrap server is required",
        );
    }
    if spec.topics.is_empty() {
        ctx.error(doc, "spec.topics", "at least one topic is required");
    }
    for (i, t) in spec.topics.iter().enumerate() {
        if t.is_empty()
            || t.len() > 249
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            ctx.error(
                doc,
                &format!("spec.topics[{i}]"),
                format!("{t:?} is not a valid Kafka topic name"),
            );
        }
    }
    let earliest = match spec.initial_offset.as_deref() {
        None | Some("latest") => false,
        Some("earliest") => true,
        Some(o) => {
            ctx.error(
                doc,
                "spec.initialOffset",
                format!("{o:?} must be \"earliest\" or \"latest\""),
            );
            false
        }
    };
    let ordered = match spec.ordering.as_deref() {
        None | Some("ordered") => true,
        Some("unordered") => false,
        Some(o) => {
            ctx.error(
                doc,
                "spec.ordering",
                format!("{o:?} must be \"ordered\" or \"unordered\""),
            );
            true
        }
    };
    if let Some(c) = spec.consumers {
        if c < 1 {
            ctx.error(doc, "spec.consumers", "must be at least 1");
        } else if c > MAX_CONSUMERS {
            ctx.error(
                doc,
                "spec.consumers",
                format!("at most {MAX_CONSUMERS} consumers of the group per process"),
            );
        }
    }
    let key_type = match metadata
        .labels
        .get(KAFKA_KEY_TYPE_LABEL)
        .map(String::as_str)
    {
        None | Some("string") => KafkaKeyType::String,
        Some("int") => KafkaKeyType::Int,
        Some("float") => KafkaKeyType::Float,
        Some("byte-array") => KafkaKeyType::ByteArray,
        Some(other) => {
            ctx.error(
                doc,
                "metadata.labels",
                format!(
                    "{KAFKA_KEY_TYPE_LABEL} {other:?} must be string, int, float or byte-array"
                ),
            );
            KafkaKeyType::String
        }
    };
    if let Some(net) = &spec.net {
        if let Some(s) = net.sasl.as_ref().filter(|s| s.enable) {
            for (field, v) in [("user", &s.user), ("password", &s.password)] {
                match v {
                    Some(v) => check_secret_ref(ctx, doc, &format!("spec.net.sasl.{field}"), v),
                    None => ctx.error(
                        doc,
                        &format!("spec.net.sasl.{field}"),
                        "is required when SASL is enabled",
                    ),
                }
            }
            if let Some(t) = &s.type_ {
                check_secret_ref(ctx, doc, "spec.net.sasl.type", t);
            }
        }
        if let Some(t) = net.tls.as_ref().filter(|t| t.enable) {
            for (field, v) in [("cert", &t.cert), ("key", &t.key), ("caCert", &t.ca_cert)] {
                if let Some(v) = v {
                    check_secret_ref(ctx, doc, &format!("spec.net.tls.{field}"), v);
                }
            }
        }
    }
    let delivery = spec
        .delivery
        .as_ref()
        .and_then(|d| check_delivery(ctx, doc, "spec.delivery", d));
    check_destination(ctx, doc, "spec.sink", &spec.sink);
    check_overrides(ctx, doc, &spec.ce_overrides);
    let consumer_group = match &spec.consumer_group {
        Some(g) if !g.is_empty() => g.clone(),
        _ => match &metadata.uid {
            Some(uid) => format!("knative-kafka-source-{uid}"),
            None => format!(
                "knative-kafka-source-{}-{}",
                metadata.namespace, metadata.name
            ),
        },
    };
    (ctx.errors.len() == before).then_some(KafkaSourceConfig {
        spec,
        consumer_group,
        earliest,
        ordered,
        key_type,
        delivery,
    })
}
