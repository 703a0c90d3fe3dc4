//! `eventing.knative.dev/v1` Broker.

use serde_json::Value;

use super::key;
use crate::MeshConfig;
use crate::loader::Document;
use crate::model::{Broker as BrokerResource, BrokerSpec, EVENTING_V1, ObjectMeta};
use crate::registry::{
    AGE, AddrKey, Address, Kind, KindInfo, Pass, PrinterColumn, READY_COL, REASON_COL, Refs,
};
use crate::validate::{check_api_version, typed};

/// The Broker kind.
pub struct Broker;

static INFO: &[KindInfo] = &[KindInfo {
    group: "eventing.knative.dev",
    version: "v1",
    kind: "Broker",
    plural: "brokers",
    singular: "broker",
    short_names: &[],
    categories: &["all", "knative", "eventing"],
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
        REASON_COL,
    ],
    spec_schema: crate::schemas::BROKER_SPEC,
    description: "Broker collects a pool of events that are consumable using Triggers. Brokers provide a well-known endpoint for event delivery that senders can use with minimal knowledge of the event routing strategy. Subscribers use Triggers to request delivery of events from a Broker's pool to a specific URL or Addressable endpoint.",
}];

impl Kind for Broker {
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
        if let Some(spec) = typed::<BrokerSpec>(&mut pass.ctx, doc, "spec", spec) {
            pass.brokers.push((
                BrokerResource {
                    metadata: meta,
                    spec,
                },
                doc,
            ));
        }
    }
    fn refs(&self) -> Refs {
        Refs::Broker
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        for b in &mesh.brokers {
            let m = &b.resource.metadata;
            out.push((
                key("eventing.knative.dev", "Broker", &m.namespace, &m.name),
                Address::Broker,
            ));
        }
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.brokers.retain(|b| {
            let m = &b.resource.metadata;
            !(m.namespace == ns && m.name == name)
        });
    }
}
