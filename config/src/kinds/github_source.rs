//! `sources.knative.dev` GitHubSource.

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::ObjectMeta;
use crate::registry::{AGE, READY_COL, REASON_COL, SINK_COL};
use crate::registry::{Kind, KindInfo, Pass};

/// The GitHubSource kind.
pub struct GitHubSource;

static INFO: &[KindInfo] = &[KindInfo {
    group: "sources.knative.dev",
    version: "v1alpha1",
    kind: "GitHubSource",
    plural: "githubsources",
    singular: "githubsource",
    short_names: &[],
    categories: &["all", "knative", "eventing", "sources"],
    printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
    spec_schema: crate::schemas::GITHUB_SOURCE_SPEC,
    description: "GitHubSource is the Schema for the githubsources API: it turns GitHub webhook deliveries into CloudEvents sent to its sink.",
}];

impl Kind for GitHubSource {
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
            "GitHubSource",
            meta,
            spec,
        ) {
            pass.sources.push((s, doc));
        }
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.sources.retain(|s| {
            !(s.kind() == "GitHubSource" && s.metadata.namespace == ns && s.metadata.name == name)
        });
    }
}
