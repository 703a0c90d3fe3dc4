//! `sources.knative.dev` ApiServerSource.

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::ObjectMeta;
use crate::registry::{AGE, READY_COL, REASON_COL, SINK_COL};
use crate::registry::{Kind, KindInfo, Pass};

/// The ApiServerSource kind.
pub struct ApiServerSource;

static INFO: &[KindInfo] = &[KindInfo {
    group: "sources.knative.dev",
    version: "v1",
    kind: "ApiServerSource",
    plural: "apiserversources",
    singular: "apiserversource",
    short_names: &[],
    categories: &["all", "knative", "sources"],
    printer_columns: &[SINK_COL, AGE, READY_COL, REASON_COL],
    spec_schema: crate::sources::apiserver::APISERVER_SOURCE_SPEC,
    description: "ApiServerSource is an event source that brings Kubernetes API server events into Knative.",
}];

impl Kind for ApiServerSource {
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
        if let Some(s) = crate::sources::check_source(
            &mut pass.ctx,
            doc,
            api_version,
            "ApiServerSource",
            meta,
            spec,
        ) {
            pass.sources.push((s, doc));
        }
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.sources.retain(|s| {
            !(s.kind() == "ApiServerSource"
                && s.metadata.namespace == ns
                && s.metadata.name == name)
        });
    }
}
