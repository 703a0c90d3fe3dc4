//! `flows.knative.dev/v1` Sequence, both halves in one module: an event sent to its address
//! passes each step in order. Validated and wired into Channels and Subscriptions as Knative's
//! reconciler wires them (`<seq>-kn-sequence-<i>`); its status (Knative's shape) from the
//! channels and subscriptions it generates.

use evmesh_broker::kind::{NotReady, RuntimeKind, StatusCx, finish, identity};
use evmesh_channels::status::{child_channel, child_subscription};
use evmesh_config::messaging::wiring::{
    self, Wiring, channel_destination, channel_ref, generated_channel, generated_subscription,
};
use evmesh_config::messaging::{ChannelDefaults, ChannelTemplate, FLOWS_V1, SubscriptionSpec};
use evmesh_config::registry::{
    AGE, AddrKey, Address, Addressables, Finish, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs,
    URL_COL, front_addresses, remove_generated,
};
use evmesh_config::{
    DeliverySpec, Destination, Document, KReference, MeshConfig, ObjectMeta, channel_url,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{FLOWS, MESSAGING};

/// The Sequence kind: its validation and wiring ([`Kind`]) and its status ([`RuntimeKind`]).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_flows::sequence::Sequence.group_kind().1, "Sequence");
/// ```
pub struct Sequence;

/// One step of a Sequence: a destination (`ref`/`uri` inline, as Knative's `SequenceStep`)
/// plus its own delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceStep {
    /// The step's addressable.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// An absolute URL, or a URL relative to the `ref`'s address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// PEM CA certificates trusted for this step.
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// OIDC audience (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Delivery of this step's subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl SequenceStep {
    /// The step as a [`Destination`].
    pub fn destination(&self) -> Destination {
        Destination {
            reference: self.reference.clone(),
            uri: self.uri.clone(),
            ca_certs: self.ca_certs.clone(),
            audience: self.audience.clone(),
        }
    }
}

/// `spec` of a `flows.knative.dev/v1` `Sequence`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceSpec {
    /// The steps, in order (at least one).
    #[serde(default)]
    pub steps: Vec<SequenceStep>,
    /// The kind of the channels in front of each step (default: the default channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Where the last step's replies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// The OpenAPI schema of a Sequence's `spec` (for discovery and kubectl).
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Sequence.",
  "properties": {
    "channelTemplate": "#,
    evmesh_config::schema_channel_template!(),
    r#",
    "steps": {"type": "array", "description": "Steps is the list of Destinations (processors / functions) that will be called in the order provided. Each step has its own delivery options.",
      "items": {"type": "object", "description": "A Destination plus its delivery options.",
        "properties": {
          "ref": {"type": "object", "description": "Ref points to an Addressable.", "x-kubernetes-preserve-unknown-fields": true},
          "uri": {"type": "string", "description": "URI can be an absolute URL or a URL relative to the Ref's address."},
          "CACerts": {"type": "string", "description": "Certification Authority (CA) certificates in PEM format."},
          "audience": {"type": "string", "description": "Audience is the OIDC audience."},
          "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#"
        }}},
    "reply": "#,
    evmesh_config::schema_destination!(
        "Reply is a Reference to where the result of the last Subscriber gets sent to."
    ),
    r#"
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: FLOWS,
    version: "v1",
    kind: "Sequence",
    plural: "sequences",
    singular: "sequence",
    short_names: &[],
    categories: &["all", "knative", "flows"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "Sequence defines a sequence of Subscribers that will be wired in series through Channels and Subscriptions.",
}];

/// `<seq>-kn-sequence-<i>`: the channel in front of step `i`, and its subscription.
///
/// ```
/// assert_eq!(evmesh_flows::sequence::channel_name("s", 1), "s-kn-sequence-1");
/// ```
pub fn channel_name(sequence: &str, step: usize) -> String {
    format!("{sequence}-kn-sequence-{step}")
}

/// A Sequence's channels and subscriptions: for step `i`, channel `<seq>-kn-sequence-<i>` and a
/// subscription of the same name on it with the step as subscriber, the step's delivery, and
/// as reply the next step's channel (the last step: the Sequence's `reply`, if any).
///
/// ```
/// use evmesh_config::{ChannelKind, ObjectMeta};
/// use evmesh_flows::sequence::{SequenceSpec, SequenceStep, wire};
/// let spec = SequenceSpec { steps: vec![SequenceStep::default(); 2], ..Default::default() };
/// let w = wire(&ObjectMeta::namespaced("demo", "s"), &spec, &ChannelKind::InMemory.template());
/// assert_eq!(w.channels.len(), 2);
/// assert_eq!(w.subscriptions[0].spec.reply.as_ref().and_then(|r| r.reference.as_ref()).map(|r| r.name.as_str()), Some("s-kn-sequence-1"));
/// ```
pub fn wire(meta: &ObjectMeta, spec: &SequenceSpec, template: &ChannelTemplate) -> Wiring {
    let mut w = Wiring::default();
    let n = spec.steps.len();
    for (i, step) in spec.steps.iter().enumerate() {
        let name = channel_name(&meta.name, i);
        w.channels.push(generated_channel(
            FLOWS_V1, "Sequence", meta, template, &name,
        ));
        let reply = if i + 1 < n {
            Some(channel_destination(
                template,
                &meta.namespace,
                &channel_name(&meta.name, i + 1),
            ))
        } else {
            spec.reply.clone()
        };
        w.subscriptions.push(generated_subscription(
            FLOWS_V1,
            "Sequence",
            meta,
            &name,
            SubscriptionSpec {
                channel: channel_ref(template, &name),
                subscriber: Some(step.destination()),
                reply,
                delivery: step.delivery.clone(),
            },
        ));
    }
    w
}

impl Kind for Sequence {
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
        pass.typed_and_deferred::<SequenceSpec>(doc, api_version, FLOWS_V1, meta, spec);
    }
    fn known(
        &self,
        meta: &ObjectMeta,
        spec: &Value,
        defaults: &ChannelDefaults,
        known: &mut Addressables<'_>,
    ) {
        let Ok(spec) = SequenceSpec::deserialize(spec) else {
            return;
        };
        let ns = &meta.namespace;
        known.add(FLOWS, "Sequence", ns, &meta.name);
        let kind = defaults
            .template_or_default(&spec.channel_template, ns)
            .kind;
        for i in 0..spec.steps.len() {
            known.add(MESSAGING, &kind, ns, &channel_name(&meta.name, i));
        }
    }
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let spec = match SequenceSpec::deserialize(&spec) {
            Ok(s) => s,
            Err(e) => return cx.error(doc, "spec", e.to_string()),
        };
        let before = cx.errors();
        let ns = &meta.namespace;
        if spec.steps.is_empty() {
            cx.error(doc, "spec.steps", "at least one step is required");
        }
        for (i, step) in spec.steps.iter().enumerate() {
            let field = format!("spec.steps[{i}]");
            cx.destination(doc, &field, &step.destination(), ns);
            if let Some(d) = &step.delivery {
                cx.delivery(doc, &format!("{field}.delivery"), d, ns);
            }
        }
        if let Some(r) = &spec.reply {
            cx.destination(doc, "spec.reply", r, ns);
        }
        let (template, kind) = cx.channel_template(doc, &spec.channel_template, &meta);
        if let (Some(kind), true) = (kind, cx.errors() == before) {
            let w = wire(&meta, &spec, &template);
            cx.add_wiring(doc, kind, w);
        }
    }
    fn generates(&self) -> bool {
        true
    }
    fn wire(&self, meta: &ObjectMeta, spec: Value, defaults: &ChannelDefaults) -> Option<Wiring> {
        let spec: SequenceSpec = serde_json::from_value(spec).ok()?;
        let t = defaults.template_or_default(&spec.channel_template, &meta.namespace);
        Some(wire(meta, &spec, &t))
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        front_addresses(
            mesh,
            FLOWS,
            "Sequence",
            |owner: &str| channel_name(owner, 0),
            out,
        );
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_generated(mesh, "Sequence", ns, name);
    }
}

impl RuntimeKind for Sequence {
    fn group_kind(&self) -> (&'static str, &'static str) {
        (FLOWS, "Sequence")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, _, generation) = identity(manifest);
        let w = wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let mut first: NotReady = None;
        let mut keep = |nr: NotReady| {
            if first.is_none() {
                first = nr;
            }
        };
        let channels: Vec<Value> = w
            .channels
            .iter()
            .map(|c| {
                let (v, nr) = child_channel(cx, c);
                keep(nr);
                v
            })
            .collect();
        let subs: Vec<Value> = w
            .subscriptions
            .iter()
            .map(|s| {
                let (v, nr) = child_subscription(cx, s);
                keep(nr);
                v
            })
            .collect();
        let url = w
            .channels
            .first()
            .map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
        let status = json!({"address": {"url": url}, "channelStatuses": channels, "subscriptionStatuses": subs});
        finish(status, generation, &first)
    }
}
