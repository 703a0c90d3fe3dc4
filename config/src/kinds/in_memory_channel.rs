//! `MESSAGING_V1` InMemoryChannel: a channel evmesh runs (its log, subscriptions read it).

use serde_json::Value;

use super::{channel_addresses, remove_channel};
use crate::MeshConfig;
use crate::loader::Document;
use crate::messaging::{ChannelKind, MESSAGING_V1};
use crate::model::ObjectMeta;
use crate::registry::{
    AGE, AddrKey, Address, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs, URL_COL,
};
use crate::validate::{check_api_version, typed};

/// The InMemoryChannel kind.
pub struct InMemoryChannel;

static INFO: &[KindInfo] = &[KindInfo {
    group: "messaging.knative.dev",
    version: "v1",
    kind: "InMemoryChannel",
    plural: "inmemorychannels",
    singular: "inmemorychannel",
    short_names: &["imc"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: crate::schemas::IN_MEMORY_CHANNEL_SPEC,
    description: "InMemoryChannel is a resource representing a channel; in evmesh it keeps its events durably (Knative's is best-effort, in memory).",
}];

impl Kind for InMemoryChannel {
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
            pass.messaging.imcs.push((meta, s, doc));
        }
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        channel_addresses(mesh, ChannelKind::InMemory, out);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_channel(mesh, ChannelKind::InMemory, ns, name);
    }
}
