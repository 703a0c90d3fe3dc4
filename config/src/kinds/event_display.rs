//! `evmesh.dev/v1alpha1` EventDisplay: evmesh's built-in sink that prints what it receives.

use serde_json::Value;

use super::key;
use crate::MeshConfig;
use crate::loader::Document;
use crate::model::{ExternalResource, ObjectMeta};
use crate::registry::{AGE, AddrKey, Address, Kind, KindInfo, Pass, PrinterColumn, READY_COL};

/// The EventDisplay kind.
pub struct EventDisplay;

static INFO: &[KindInfo] = &[KindInfo {
    group: "evmesh.dev",
    version: "v1alpha1",
    kind: "EventDisplay",
    plural: "eventdisplays",
    singular: "eventdisplay",
    short_names: &[],
    categories: &["all", "evmesh"],
    printer_columns: &[
        PrinterColumn {
            name: "URL",
            type_: "string",
            json_path: ".status.address.url",
            description: "",
            priority: 0,
        },
        AGE,
        READY_COL,
    ],
    spec_schema: crate::schemas::EVENT_DISPLAY_SPEC,
    description: "EventDisplay is evmesh's built-in sink that prints the events it receives (like Knative's event_display).",
}];

impl Kind for EventDisplay {
    fn versions(&self) -> &'static [KindInfo] {
        INFO
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        _doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        _spec: &Value,
    ) {
        // Served by evmesh; kept beside the externals for `ref` resolution.
        pass.externals.push(ExternalResource {
            api_version: api_version.to_string(),
            kind: "EventDisplay".to_string(),
            metadata: meta,
            address: None,
        });
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        for e in &mesh.externals {
            if e.kind == "EventDisplay" && e.api_version.split('/').next() == Some("evmesh.dev") {
                let m = &e.metadata;
                out.push((
                    key("evmesh.dev", "EventDisplay", &m.namespace, &m.name),
                    Address::EventDisplay,
                ));
            }
        }
    }
}
