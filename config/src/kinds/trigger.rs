//! `eventing.knative.dev/v1` Trigger.

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::{EVENTING_V1, ObjectMeta, Trigger as TriggerResource, TriggerSpec};
use crate::registry::{AGE, Immutable, Kind, KindInfo, Pass, PrinterColumn, READY_COL, REASON_COL};
use crate::validate::{check_api_version, typed};

/// The Trigger kind.
pub struct Trigger;

static INFO: &[KindInfo] = &[KindInfo {
    group: "eventing.knative.dev",
    version: "v1",
    kind: "Trigger",
    plural: "triggers",
    singular: "trigger",
    short_names: &[],
    categories: &["all", "knative", "eventing"],
    printer_columns: &[
        PrinterColumn {
            name: "Broker",
            type_: "string",
            json_path: ".spec.broker",
            description: "",
            priority: 0,
        },
        PrinterColumn {
            name: "Subscriber_URI",
            type_: "string",
            json_path: ".status.subscriberUri",
            description: "",
            priority: 0,
        },
        AGE,
        READY_COL,
        REASON_COL,
    ],
    spec_schema: crate::schemas::TRIGGER_SPEC,
    description: "Trigger represents a request to have events delivered to a subscriber from a Broker's event pool.",
}];

impl Kind for Trigger {
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
        check_api_version(&mut pass.ctx, doc, api_version, EVENTING_V1);
        if doc.value.get("spec").is_none_or(Value::is_null) {
            pass.ctx
                .error(doc, "spec", "is required (broker and subscriber)");
            return;
        }
        if let Some(spec) = typed::<TriggerSpec>(&mut pass.ctx, doc, "spec", spec) {
            pass.triggers.push((
                TriggerResource {
                    metadata: meta,
                    spec,
                },
                doc,
            ));
        }
    }
    fn immutable(&self) -> &'static [Immutable] {
        // `spec.broker` may be dropped for `spec.brokerRef`, never changed.
        &[Immutable {
            field: "broker",
            may_set: false,
            may_unset: true,
        }]
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.triggers.retain(|t| {
            let m = &t.resource.metadata;
            !(m.namespace == ns && m.name == name)
        });
    }
}
