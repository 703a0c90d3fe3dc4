//! `flows.knative.dev/v1` Parallel: wired into Channels and Subscriptions as Knative's
//! reconciler wires it.

use serde_json::Value;

use super::template_or_default;
use super::{FLOWS, front_addresses, remove_generated};
use crate::MeshConfig;
use crate::loader::Document;
use crate::messaging::wiring::{self as wiring_fns, Wiring};
use crate::messaging::{ChannelDefaults, ParallelSpec};
use crate::messaging::{FLOWS_V1, wiring};
use crate::model::ObjectMeta;
use crate::registry::{
    AGE, AddrKey, Address, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs, URL_COL,
};
use crate::validate::{check_api_version, typed};

/// The Parallel kind.
pub(crate) struct Parallel;

static INFO: &[KindInfo] = &[KindInfo {
    group: "flows.knative.dev",
    version: "v1",
    kind: "Parallel",
    plural: "parallels",
    singular: "parallel",
    short_names: &[],
    categories: &["all", "knative", "flows"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: crate::schemas::PARALLEL_SPEC,
    description: "Parallel defines conditional branches that will be wired in series through Channels and Subscriptions.",
}];

impl Kind for Parallel {
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
        check_api_version(&mut pass.ctx, doc, api_version, FLOWS_V1);
        if let Some(s) = typed(&mut pass.ctx, doc, "spec", spec) {
            pass.messaging.parallels.push((meta, s, doc));
        }
    }
    fn generates(&self) -> bool {
        true
    }
    fn wire(&self, meta: &ObjectMeta, spec: Value, defaults: &ChannelDefaults) -> Option<Wiring> {
        let spec: ParallelSpec = serde_json::from_value(spec).ok()?;
        let t = template_or_default(&spec.channel_template, defaults, meta);
        Some(wiring_fns::wire_parallel(meta, &spec, &t))
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        front_addresses(mesh, FLOWS, "Parallel", wiring::parallel_channel_name, out);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_generated(mesh, "Parallel", ns, name);
    }
}
