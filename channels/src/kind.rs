//! One table-driven entry for every channel kind written as itself (InMemoryChannel,
//! NatsJetStreamChannel, KafkaChannel): both halves of the kind from one [`ChannelType`] value.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::messaging::ChannelKind;
use evmesh_config::registry::{
    AddrKey, Address, Addressables, Finish, Kind, KindInfo, Pass, Refs, Stage, channel_addresses,
    remove_channel,
};
use evmesh_config::{DeliverySpec, Document, MeshConfig, ObjectMeta};
use serde::Deserialize;
use serde_json::Value;

use crate::status::channel_status;

/// A channel kind evmesh runs as a log of its own: its API coordinates, how its `spec` is
/// checked and what the data plane keeps of it; validation, addresses, removal and status are
/// the same for every such kind.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// use evmesh_config::registry::Kind;
/// let imc = &evmesh_channels::in_memory_channel::IN_MEMORY_CHANNEL;
/// assert_eq!(imc.group_kind(), ("messaging.knative.dev", "InMemoryChannel"));
/// assert_eq!(imc.versions()[0].short_names, ["imc"]);
/// ```
pub struct ChannelType {
    /// The channel kind of the data plane.
    pub kind: ChannelKind,
    /// Its API coordinates (the one served version).
    pub info: &'static [KindInfo],
    /// Checks `spec` as this kind's spec type (errors and warnings at `spec...`), `true` when
    /// it parses.
    pub parse: fn(&mut Pass<'_>, &Document, &Value) -> bool,
    /// The kind's own checks of a parsed `spec` beyond its `delivery`.
    pub check: fn(&mut Finish<'_>, &Document, &Value),
    /// Whether the data plane keeps the `spec` as written (a NatsJetStreamChannel's stream
    /// settings, a KafkaChannel's topic settings); else it gets `null`.
    pub keeps_spec: bool,
}

/// No checks beyond `delivery`.
pub fn no_check(_: &mut Finish<'_>, _: &Document, _: &Value) {}

/// The `delivery` of any channel spec (Channelable).
#[derive(Deserialize)]
struct Channelable {
    #[serde(default)]
    delivery: Option<DeliverySpec>,
}

impl Kind for ChannelType {
    fn versions(&self) -> &'static [KindInfo] {
        self.info
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        pass.check_api_version(doc, api_version, self.kind.api_version());
        if (self.parse)(pass, doc, spec) {
            pass.defer(meta, spec.clone(), doc);
        }
    }
    fn stage(&self) -> Stage {
        Stage::Channels
    }
    fn known(
        &self,
        meta: &ObjectMeta,
        _spec: &Value,
        _defaults: &evmesh_config::messaging::ChannelDefaults,
        known: &mut Addressables<'_>,
    ) {
        known.add(
            crate::MESSAGING,
            self.kind.kind(),
            &meta.namespace,
            &meta.name,
        );
    }
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let before = cx.errors();
        let delivery = match Channelable::deserialize(&spec) {
            Ok(c) => c.delivery,
            Err(e) => return cx.error(doc, "spec", e.to_string()),
        };
        (self.check)(cx, doc, &spec);
        let kept = if self.keeps_spec { spec } else { Value::Null };
        cx.channel(doc, before, self.kind, meta, &delivery, kept);
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        channel_addresses(mesh, self.kind, out);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_channel(mesh, self.kind, ns, name);
    }
}

impl RuntimeKind for ChannelType {
    fn group_kind(&self) -> (&'static str, &'static str) {
        (crate::MESSAGING, self.kind.kind())
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = channel_status(cx, ns, name, self.kind);
        finish(status, generation, &not_ready)
    }
}
