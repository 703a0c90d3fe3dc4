//! `sources.knative.dev` KafkaSource.

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::ObjectMeta;
use crate::registry::{AGE, READY_COL, REASON_COL, SINK_COL};
use crate::registry::{Kind, KindInfo, Pass};

/// The KafkaSource kind.
pub struct KafkaSource;

static INFO: &[KindInfo] = &[
    KindInfo {
        group: "sources.knative.dev",
        version: "v1beta1",
        kind: "KafkaSource",
        plural: "kafkasources",
        singular: "kafkasource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: crate::sources::KAFKA_SOURCE_SPEC,
        description: "KafkaSource reads Kafka topics as a consumer group and sends each record to its sink as a CloudEvent.",
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1",
        kind: "KafkaSource",
        plural: "kafkasources",
        singular: "kafkasource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: crate::sources::KAFKA_SOURCE_SPEC,
        description: "KafkaSource reads Kafka topics as a consumer group and sends each record to its sink as a CloudEvent.",
    },
];

impl Kind for KafkaSource {
    fn versions(&self) -> &'static [KindInfo] {
        INFO
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        if let Some(s) =
            crate::sources::check_source(&mut pass.ctx, doc, api_version, "KafkaSource", meta, spec)
        {
            pass.sources.push((s, doc));
        }
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.sources.retain(|s| {
            !(s.kind() == "KafkaSource" && s.metadata.namespace == ns && s.metadata.name == name)
        });
    }
}
