//! `sources.knative.dev` PingSource.

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::ObjectMeta;
use crate::registry::{AGE, PrinterColumn, READY_COL, REASON_COL, SINK_COL};
use crate::registry::{Kind, KindInfo, Pass};

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
const PING_DESCRIPTION: &str = "PingSource describes an event source with a fixed payload produced on a specified cron schedule.";

/// The PingSource kind.
pub struct PingSource;

static INFO: &[KindInfo] = &[
    KindInfo {
        group: "sources.knative.dev",
        version: "v1",
        kind: "PingSource",
        plural: "pingsources",
        singular: "pingsource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: PING_COLUMNS,
        spec_schema: crate::schemas::PING_SOURCE_SPEC,
        description: PING_DESCRIPTION,
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1beta2",
        kind: "PingSource",
        plural: "pingsources",
        singular: "pingsource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: PING_COLUMNS,
        spec_schema: crate::schemas::PING_SOURCE_SPEC,
        description: PING_DESCRIPTION,
    },
];

impl Kind for PingSource {
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
            crate::sources::check_source(&mut pass.ctx, doc, api_version, "PingSource", meta, spec)
        {
            pass.sources.push((s, doc));
        }
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.sources.retain(|s| {
            !(s.kind() == "PingSource" && s.metadata.namespace == ns && s.metadata.name == name)
        });
    }
}
