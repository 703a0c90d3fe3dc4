//! `messaging.knative.dev/v1` Channel, both halves in one module: a generic channel backed by a
//! channel of its `channelTemplate` kind (same name, owned by it), validated and wired as
//! Knative's reconciler wires it; its status from the backing channel.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::messaging::wiring::{self, GeneratedChannel, Wiring, generated_channel};
use evmesh_config::messaging::{
    ChannelDefaults, ChannelKind, ChannelSpec, ChannelTemplate, MESSAGING_V1,
};
use evmesh_config::registry::{
    AGE, AddrKey, Address, Addressables, Finish, Immutable, Kind, KindInfo, Pass, READY_COL,
    REASON_COL, Refs, URL_COL, front_addresses, remove_generated,
};
use evmesh_config::{Document, MeshConfig, ObjectMeta};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::MESSAGING;
use crate::status::{channel_status, child_channel};

/// The Channel kind: its validation and wiring ([`Kind`]) and its status ([`RuntimeKind`]).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::channel::Channel.group_kind().1, "Channel");
/// ```
pub struct Channel;

/// The OpenAPI schema of a Channel's `spec`.
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Channel.",
  "properties": {
    "channelTemplate": "#,
    evmesh_config::schema_channel_template!(),
    r#",
    "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#",
    "subscribers": "#,
    evmesh_config::schema_subscribers!(),
    r#"
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: MESSAGING,
    version: "v1",
    kind: "Channel",
    plural: "channels",
    singular: "channel",
    short_names: &["ch"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "Channel represents a generic Channel. It is normally used when we want a Channel, but do not care much about what the underlying implementation is.",
}];

/// The backing channel of a generic `Channel`: the template's kind, the same name, its spec
/// the Channel's `delivery` with the template's `spec` merged over it (as Knative does).
///
/// ```
/// use evmesh_config::{ChannelKind, ObjectMeta};
/// use evmesh_config::messaging::ChannelSpec;
/// let c = evmesh_channels::channel::wire(&ObjectMeta::namespaced("demo", "c"), &ChannelSpec::default(), &ChannelKind::InMemory.template());
/// assert_eq!((c.metadata.name.as_str(), c.template.kind.as_str()), ("c", "InMemoryChannel"));
/// ```
pub fn wire(meta: &ObjectMeta, spec: &ChannelSpec, template: &ChannelTemplate) -> GeneratedChannel {
    let mut c = generated_channel(MESSAGING_V1, "Channel", meta, template, &meta.name);
    let mut merged = serde_json::Map::new();
    if let Some(d) = &spec.delivery {
        merged.insert("delivery".into(), json!(d));
    }
    if let Value::Object(t) = std::mem::take(&mut c.spec) {
        merged.extend(t);
    }
    c.spec = Value::Object(merged);
    c
}

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
        pass.typed_and_deferred::<ChannelSpec>(doc, api_version, MESSAGING_V1, meta, spec);
    }
    fn known(
        &self,
        meta: &ObjectMeta,
        spec: &Value,
        defaults: &ChannelDefaults,
        known: &mut Addressables<'_>,
    ) {
        let Ok(spec) = ChannelSpec::deserialize(spec) else {
            return;
        };
        let ns = &meta.namespace;
        known.add(MESSAGING, "Channel", ns, &meta.name);
        let kind = defaults
            .template_or_default(&spec.channel_template, ns)
            .kind;
        known.add(MESSAGING, &kind, ns, &meta.name);
    }
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let spec = match ChannelSpec::deserialize(&spec) {
            Ok(s) => s,
            Err(e) => return cx.error(doc, "spec", e.to_string()),
        };
        let before = cx.errors();
        let (template, kind) = cx.channel_template(doc, &spec.channel_template, &meta);
        if let Some(d) = &spec.delivery {
            cx.delivery(doc, "spec.delivery", d, &meta.namespace);
        }
        if let (Some(kind), true) = (kind, cx.errors() == before) {
            let backing = wire(&meta, &spec, &template);
            cx.add_backing_channel(doc, kind, backing);
        }
    }
    fn generates(&self) -> bool {
        true
    }
    fn wire(&self, meta: &ObjectMeta, spec: Value, defaults: &ChannelDefaults) -> Option<Wiring> {
        let spec: ChannelSpec = serde_json::from_value(spec).ok()?;
        let t = defaults.template_or_default(&spec.channel_template, &meta.namespace);
        Some(Wiring {
            channels: vec![wire(meta, &spec, &t)],
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

impl RuntimeKind for Channel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        (MESSAGING, "Channel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let w = wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let (status, not_ready) = match w.channels.first() {
            Some(backing) => {
                let (_, nr) = child_channel(cx, backing);
                let (mut v, _) = match ChannelKind::from_template(
                    &backing.template.api_version,
                    &backing.template.kind,
                ) {
                    Ok(k) => channel_status(cx, ns, name, k),
                    Err(_) => (json!({}), None),
                };
                v["channel"] = json!({
                    "apiVersion": backing.template.api_version,
                    "kind": backing.template.kind,
                    "name": name,
                    "namespace": ns,
                });
                (v, nr)
            }
            None => (
                json!({}),
                Some((
                    "BackingChannelFailed".into(),
                    "the channel template cannot be wired".into(),
                )),
            ),
        };
        finish(status, generation, &not_ready)
    }
}
