//! `flows.knative.dev/v1` Parallel, both halves in one module: every branch whose filter replies
//! gets the event. Validated and wired into Channels and Subscriptions as Knative's reconciler
//! wires them (`<p>-kn-parallel`, `<p>-kn-parallel-<i>`, `<p>-kn-parallel-filter-<i>`); its
//! status (Knative's shape) from the channels and subscriptions it generates.

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
use evmesh_config::{DeliverySpec, Destination, Document, MeshConfig, ObjectMeta, channel_url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{FLOWS, MESSAGING};

/// The Parallel kind: its validation and wiring ([`Kind`]) and its status ([`RuntimeKind`]).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_flows::parallel::Parallel.group_kind().1, "Parallel");
/// ```
pub struct Parallel;

/// One branch of a Parallel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParallelBranch {
    /// Decides whether the branch runs: the branch gets the event the filter replies with (none:
    /// the branch always runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Destination>,
    /// The branch's subscriber.
    pub subscriber: Destination,
    /// Where the subscriber's replies go (else the Parallel's `reply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    /// Delivery of the subscriber's subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `spec` of a `flows.knative.dev/v1` `Parallel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParallelSpec {
    /// The branches (at least one); every branch gets every event.
    #[serde(default)]
    pub branches: Vec<ParallelBranch>,
    /// The kind of the ingress and branch channels (default: the default channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Where branch replies go when the branch sets no `reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// The OpenAPI schema of a Parallel's `spec` (for discovery and kubectl).
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Parallel.",
  "properties": {
    "channelTemplate": "#,
    evmesh_config::schema_channel_template!(),
    r#",
    "branches": {"type": "array", "description": "Branches is the list of Filter/Subscribers pairs.",
      "items": {"type": "object",
        "properties": {
          "filter": "#,
    evmesh_config::schema_destination!(
        "Filter is the expression guarding the branch: the branch gets the event the filter replies with."
    ),
    r#",
          "subscriber": "#,
    evmesh_config::schema_destination!("Subscriber receiving the event when the filter passes."),
    r#",
          "reply": "#,
    evmesh_config::schema_destination!(
        "Reply is a Reference to where the result of Subscriber of this case gets sent to. If not specified, sent the result to the Parallel Reply."
    ),
    r#",
          "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#"
        }}},
    "reply": "#,
    evmesh_config::schema_destination!(
        "Reply is a Reference to where the result of a case Subscriber gets sent to when the case does not have a Reply."
    ),
    r#"
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: FLOWS,
    version: "v1",
    kind: "Parallel",
    plural: "parallels",
    singular: "parallel",
    short_names: &[],
    categories: &["all", "knative", "flows"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "Parallel defines conditional branches that will be wired in series through Channels and Subscriptions.",
}];

/// `<p>-kn-parallel`: a Parallel's ingress channel.
///
/// ```
/// assert_eq!(evmesh_flows::parallel::channel_name("p"), "p-kn-parallel");
/// ```
pub fn channel_name(parallel: &str) -> String {
    format!("{parallel}-kn-parallel")
}

/// `<p>-kn-parallel-<i>`: the channel of branch `i`, and the subscription of its subscriber.
pub fn branch_channel_name(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-{branch}")
}

/// `<p>-kn-parallel-filter-<i>`: branch `i`'s subscription on the ingress channel.
pub fn filter_subscription_name(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-filter-{branch}")
}

/// A Parallel's channels and subscriptions: ingress channel `<p>-kn-parallel`, branch channels
/// `<p>-kn-parallel-<i>`; on the ingress channel a subscription `<p>-kn-parallel-filter-<i>`
/// per branch (with a filter: subscriber = the filter, reply = the branch channel; without:
/// subscriber = the branch channel, as Knative wires it); on each branch channel a subscription
/// `<p>-kn-parallel-<i>` (subscriber = the branch's, its delivery, reply = the branch's `reply`,
/// else the Parallel's).
///
/// ```
/// use evmesh_config::{ChannelKind, ObjectMeta};
/// use evmesh_flows::parallel::{ParallelBranch, ParallelSpec, wire};
/// let spec = ParallelSpec { branches: vec![ParallelBranch::default(); 2], ..Default::default() };
/// let w = wire(&ObjectMeta::namespaced("demo", "p"), &spec, &ChannelKind::InMemory.template());
/// assert_eq!((w.channels.len(), w.subscriptions.len()), (3, 4));
/// ```
pub fn wire(meta: &ObjectMeta, spec: &ParallelSpec, template: &ChannelTemplate) -> Wiring {
    let mut w = Wiring::default();
    let ingress = channel_name(&meta.name);
    w.channels.push(generated_channel(
        FLOWS_V1, "Parallel", meta, template, &ingress,
    ));
    for (i, branch) in spec.branches.iter().enumerate() {
        let branch_channel = branch_channel_name(&meta.name, i);
        w.channels.push(generated_channel(
            FLOWS_V1,
            "Parallel",
            meta,
            template,
            &branch_channel,
        ));
        let to_branch = channel_destination(template, &meta.namespace, &branch_channel);
        let (subscriber, reply) = match &branch.filter {
            Some(filter) => (filter.clone(), Some(to_branch)),
            None => (to_branch, None),
        };
        w.subscriptions.push(generated_subscription(
            FLOWS_V1,
            "Parallel",
            meta,
            &filter_subscription_name(&meta.name, i),
            SubscriptionSpec {
                channel: channel_ref(template, &ingress),
                subscriber: Some(subscriber),
                reply,
                delivery: None,
            },
        ));
        w.subscriptions.push(generated_subscription(
            FLOWS_V1,
            "Parallel",
            meta,
            &branch_channel,
            SubscriptionSpec {
                channel: channel_ref(template, &branch_channel),
                subscriber: Some(branch.subscriber.clone()),
                reply: branch.reply.clone().or_else(|| spec.reply.clone()),
                delivery: branch.delivery.clone(),
            },
        ));
    }
    w
}

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
        pass.typed_and_deferred::<ParallelSpec>(doc, api_version, FLOWS_V1, meta, spec);
    }
    fn known(
        &self,
        meta: &ObjectMeta,
        spec: &Value,
        defaults: &ChannelDefaults,
        known: &mut Addressables<'_>,
    ) {
        let Ok(spec) = ParallelSpec::deserialize(spec) else {
            return;
        };
        let ns = &meta.namespace;
        known.add(FLOWS, "Parallel", ns, &meta.name);
        let kind = defaults
            .template_or_default(&spec.channel_template, ns)
            .kind;
        known.add(MESSAGING, &kind, ns, &channel_name(&meta.name));
        for i in 0..spec.branches.len() {
            known.add(MESSAGING, &kind, ns, &branch_channel_name(&meta.name, i));
        }
    }
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let spec = match ParallelSpec::deserialize(&spec) {
            Ok(s) => s,
            Err(e) => return cx.error(doc, "spec", e.to_string()),
        };
        let before = cx.errors();
        let ns = &meta.namespace;
        if spec.branches.is_empty() {
            cx.error(doc, "spec.branches", "at least one branch is required");
        }
        for (i, b) in spec.branches.iter().enumerate() {
            let field = format!("spec.branches[{i}]");
            if let Some(f) = &b.filter {
                cx.destination(doc, &format!("{field}.filter"), f, ns);
            }
            cx.destination(doc, &format!("{field}.subscriber"), &b.subscriber, ns);
            if let Some(r) = &b.reply {
                cx.destination(doc, &format!("{field}.reply"), r, ns);
            }
            if let Some(d) = &b.delivery {
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
        let spec: ParallelSpec = serde_json::from_value(spec).ok()?;
        let t = defaults.template_or_default(&spec.channel_template, &meta.namespace);
        Some(wire(meta, &spec, &t))
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        front_addresses(mesh, FLOWS, "Parallel", channel_name, out);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_generated(mesh, "Parallel", ns, name);
    }
}

impl RuntimeKind for Parallel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        (FLOWS, "Parallel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let w = wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let mut first: NotReady = None;
        let mut keep = |nr: NotReady| {
            if first.is_none() {
                first = nr;
            }
        };
        let mut channels = w.channels.iter();
        let ingress = channels.next();
        let ingress_status = ingress.map(|c| {
            let (v, nr) = child_channel(cx, c);
            keep(nr);
            v
        });
        let subs: Vec<&wiring::GeneratedSubscription> = w.subscriptions.iter().collect();
        let branches: Vec<Value> = channels
            .enumerate()
            .map(|(i, c)| {
                let (ch, nr) = child_channel(cx, c);
                keep(nr);
                let mut sub = |n: String| {
                    subs.iter().find(|s| s.metadata.name == n).map(|s| {
                        let (v, nr) = child_subscription(cx, s);
                        keep(nr);
                        v
                    })
                };
                let filter = sub(filter_subscription_name(name, i));
                let subscriber = sub(branch_channel_name(name, i));
                json!({
                    "filterSubscriptionStatus": filter,
                    "filterChannelStatus": ch,
                    "subscriberSubscriptionStatus": subscriber,
                })
            })
            .collect();
        let url = ingress.map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
        let status = json!({"address": {"url": url}, "ingressChannelStatus": ingress_status, "branchStatuses": branches});
        finish(status, generation, &first)
    }
}
