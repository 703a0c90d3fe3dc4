//! `messaging.knative.dev/v1beta1` KafkaChannel (Knative's eventing-kafka-broker), both halves:
//! a channel evmesh runs on a Kafka topic; its status from the channel the data plane runs.

use evmesh_channels::kind::ChannelType;
use evmesh_config::Document;
use evmesh_config::messaging::{ChannelKind, KafkaChannelSpec};
use evmesh_config::registry::{AGE, Finish, KindInfo, Pass, READY_COL, REASON_COL, URL_COL};
use serde::Deserialize;
use serde_json::Value;

/// The KafkaChannel kind (its topic settings kept for the data plane).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_kafka::kafka_channel::KAFKA_CHANNEL.group_kind().1, "KafkaChannel");
/// ```
pub static KAFKA_CHANNEL: ChannelType = ChannelType {
    kind: ChannelKind::Kafka,
    info: INFO,
    parse,
    check,
    keeps_spec: true,
};

/// The OpenAPI schema of a KafkaChannel's `spec` (for discovery and kubectl).
const SPEC_SCHEMA: &str = r#"{"type": "object", "description": "KafkaChannelSpec defines the specification for a KafkaChannel.",
  "x-kubernetes-preserve-unknown-fields": true,
  "properties": {
    "numPartitions": {"type": "integer", "format": "int32", "description": "NumPartitions is the number of partitions of a Kafka topic. By default, it is set to 1."},
    "replicationFactor": {"type": "integer", "format": "int16", "description": "ReplicationFactor is the replication factor of a Kafka topic. By default, it is set to 1."},
    "retentionDuration": {"type": "string", "description": "RetentionDuration is the duration for which events will be retained in the Kafka Topic (ISO-8601, default PT168H)."},
    "delivery": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    "subscribers": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
  }}"#;

static INFO: &[KindInfo] = &[KindInfo {
    group: "messaging.knative.dev",
    version: "v1beta1",
    kind: "KafkaChannel",
    plural: "kafkachannels",
    singular: "kafkachannel",
    short_names: &["kc"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "KafkaChannel is a channel backed by a Kafka topic (Knative's eventing-kafka-broker); in evmesh the dispatcher runs in-process.",
}];

fn parse(pass: &mut Pass<'_>, doc: &Document, spec: &Value) -> bool {
    pass.typed::<KafkaChannelSpec>(doc, "spec", spec).is_some()
}

/// Partitions and replication factor of at least 1, a retention that is an ISO-8601 duration.
fn check(cx: &mut Finish<'_>, doc: &Document, spec: &Value) {
    let Ok(spec) = KafkaChannelSpec::deserialize(spec) else {
        return;
    };
    for (field, v) in [
        ("spec.numPartitions", spec.num_partitions),
        ("spec.replicationFactor", spec.replication_factor),
    ] {
        if v.is_some_and(|v| v < 1) {
            cx.error(doc, field, "must be at least 1");
        }
    }
    if let Some(r) = &spec.retention_duration
        && let Err(e) = evmesh_config::parse_duration(r)
    {
        cx.error(doc, "spec.retentionDuration", e);
    }
}
