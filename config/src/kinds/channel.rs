//! `messaging.knative.dev/v1` Channel: a generic channel backed by a channel of its
//! `channelTemplate` kind (same name).

use serde_json::Value;

use super::template_or_default;
use super::{MESSAGING, front_addresses, remove_generated};
use crate::MeshConfig;
use crate::loader::Document;
use crate::messaging::MESSAGING_V1;
use crate::messaging::wiring::{self as wiring_fns, Wiring};
use crate::messaging::{ChannelDefaults, ChannelSpec};
use crate::model::ObjectMeta;
use crate::registry::{
    AGE, AddrKey, Address, Immutable, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs, URL_COL,
};
use crate::validate::{check_api_version, typed};

/// The Channel kind.
pub struct Channel;

static INFO: &[KindInfo] = &[KindInfo {
    group: "messaging.knative.dev",
    version: "v1",
    kind: "Channel",
    plural: "channels",
    singular: "channel",
    short_names: &["ch"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: crate::schemas::CHANNEL_SPEC,
    description: "Channel represents a generic Channel. It is normally used when we want a Channel, but do not care much about what the underlying implementation is.",
}];

impl Kind for Channel {
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
        check_api_version(&mut pass.ctx, doc, api_version, MESSAGING_V1);
        if let Some(s) = typed(&mut pass.ctx, doc, "spec", spec) {
            pass.messaging.channels.push((meta, s, doc));
        }
    }
    fn generates(&self) -> bool {
        true
    }
    fn wire(&self, meta: &ObjectMeta, spec: Value, defaults: &ChannelDefaults) -> Option<Wiring> {
        let spec: ChannelSpec = serde_json::from_value(spec).ok()?;
        let t = template_or_default(&spec.channel_template, defaults, meta);
        Some(Wiring {
            channels: vec![wiring_fns::wire_channel(meta, &spec, &t)],
            subscriptions: vec![],
        })
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        front_addresses(mesh, MESSAGING, "Channel", str::to_string, out);
    }
    fn immutable(&self) -> &'static [Immutable] {
        // Once set, as Knative's webhook: a template may be filled in by defaulting.
        &[Immutable {
            field: "channelTemplate",
            may_set: true,
            may_unset: true,
        }]
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_generated(mesh, "Channel", ns, name);
    }
}
