//! `messaging.knative.dev/v1` Subscription, both halves in one module: a channel's events to a
//! subscriber and its replies onward; validated against the channels of the pass (and of the
//! running mesh), its status from the subscription the data plane runs.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::messaging::{ChannelKind, MESSAGING_V1, SubscriptionSpec, owner_of};
use evmesh_config::registry::{
    AGE, Finish, Immutable, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs, Stage,
};
use evmesh_config::{Document, MeshConfig, ObjectMeta, SubscriptionConfig};
use serde::Deserialize;
use serde_json::Value;

use crate::MESSAGING;
use crate::status::subscription_status;

/// The Subscription kind: its validation ([`Kind`]) and its status ([`RuntimeKind`]).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::subscription::Subscription.group_kind().1, "Subscription");
/// ```
pub struct Subscription;

/// The OpenAPI schema of a Subscription's `spec`.
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Subscription.",
  "required": ["channel"],
  "properties": {
    "channel": {"type": "object", "description": "Reference to a channel that will be used to create the subscription. You can specify only the following fields of the KReference: Kind, APIVersion, Name. This field is immutable.",
      "properties": {
        "apiVersion": {"type": "string", "description": "API version of the referent."},
        "kind": {"type": "string", "description": "Kind of the referent."},
        "name": {"type": "string", "description": "Name of the referent."}
      }},
    "subscriber": "#,
    evmesh_config::schema_destination!(
        "Subscriber is reference to function for processing events. Events from the Channel will be delivered here and replies are sent to a Destination as specified by the Reply."
    ),
    r#",
    "reply": "#,
    evmesh_config::schema_destination!(
        "Reply specifies (optionally) how to handle events returned from the Subscriber target."
    ),
    r#",
    "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#"
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: MESSAGING,
    version: "v1",
    kind: "Subscription",
    plural: "subscriptions",
    singular: "subscription",
    short_names: &["sub"],
    categories: &["all", "knative", "messaging"],
    printer_columns: &[AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "Subscription routes events received on a Channel to a DNS name and corresponds to the subscriptions.channels.knative.dev CRD.",
}];

/// The channel a Subscription reads: a channel of a kind evmesh runs by name, or a generic
/// Channel's backing channel (same name, the Channel's template kind).
fn channel(
    cx: &mut Finish<'_>,
    doc: &Document,
    spec: &SubscriptionSpec,
    ns: &str,
) -> Option<(ChannelKind, String)> {
    let r = &spec.channel;
    let field = "spec.channel";
    if r.name.is_empty() || r.kind.is_empty() {
        cx.error(doc, field, "`kind` and `name` are required");
        return None;
    }
    if r.namespace.as_ref().is_some_and(|n| n != ns) {
        cx.error(
            doc,
            &format!("{field}.namespace"),
            "a Subscription reads a channel of its own namespace",
        );
        return None;
    }
    let group = r.api_version.split('/').next().unwrap_or("");
    if r.kind == "Channel" {
        if !r.api_version.is_empty() && r.api_version != MESSAGING_V1 {
            cx.error(
                doc,
                &format!("{field}.apiVersion"),
                format!("Channel is served as {MESSAGING_V1:?}"),
            );
            return None;
        }
        if !cx.knows(MESSAGING, "Channel", ns, &r.name) {
            cx.warn(
                doc,
                field,
                format!(
                    "Channel {:?} does not exist in namespace {ns:?} (yet): the subscription is not ready until it does",
                    r.name
                ),
            );
        }
        let kind = cx.backing_channel_kind(ns, &r.name).or_else(|| {
            cx.running().and_then(|m: &MeshConfig| {
                m.channels
                    .iter()
                    .find(|c| {
                        c.metadata.namespace == ns
                            && c.metadata.name == r.name
                            && owner_of(&c.metadata).is_some_and(|(k, _)| k == "Channel")
                    })
                    .map(|c| c.kind)
            })
        });
        let kind = match kind {
            Some(k) => k,
            None => {
                let t = cx.defaults().template_for(ns);
                match ChannelKind::from_template(&t.api_version, &t.kind) {
                    Ok(k) => k,
                    Err(e) => {
                        cx.error(doc, field, e);
                        return None;
                    }
                }
            }
        };
        return Some((kind, r.name.clone()));
    }
    if group != MESSAGING && !group.is_empty() {
        cx.error(
            doc,
            &format!("{field}.kind"),
            format!("{} {:?} is not a channel", r.api_version, r.kind),
        );
        return None;
    }
    match ChannelKind::from_template(&r.api_version, &r.kind) {
        Ok(kind) => {
            if !cx.knows(MESSAGING, kind.kind(), ns, &r.name) {
                cx.warn(
                    doc,
                    field,
                    format!(
                        "{} {:?} does not exist in namespace {ns:?} (yet): the subscription is not ready until it does",
                        kind.kind(),
                        r.name
                    ),
                );
            }
            Some((kind, r.name.clone()))
        }
        Err(e) => {
            cx.error(doc, field, e);
            None
        }
    }
}

impl Kind for Subscription {
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
        pass.check_api_version(doc, api_version, MESSAGING_V1);
        if spec.as_object().is_none_or(|o| o.is_empty()) {
            pass.error(
                doc,
                "spec",
                "is required (channel, and subscriber or reply)",
            );
        } else if pass.typed::<SubscriptionSpec>(doc, "spec", spec).is_some() {
            pass.defer(meta, spec.clone(), doc);
        }
    }
    fn stage(&self) -> Stage {
        Stage::Readers
    }
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let spec = match SubscriptionSpec::deserialize(&spec) {
            Ok(s) => s,
            Err(e) => return cx.error(doc, "spec", e.to_string()),
        };
        let before = cx.errors();
        let ns = meta.namespace.clone();
        let channel = channel(cx, doc, &spec, &ns);
        if spec.subscriber.is_none() && spec.reply.is_none() {
            cx.error(
                doc,
                "spec",
                "a Subscription needs a subscriber, a reply or both",
            );
        }
        if let Some(s) = &spec.subscriber {
            cx.destination(doc, "spec.subscriber", s, &ns);
        }
        if let Some(r) = &spec.reply {
            cx.destination(doc, "spec.reply", r, &ns);
        }
        let delivery = spec
            .delivery
            .as_ref()
            .and_then(|d| cx.delivery(doc, "spec.delivery", d, &ns));
        if let Some(v) = meta.annotations.get(evmesh_config::REPLAY_FROM_ANNOTATION)
            && let Err(e) = evmesh_config::ReplayFrom::parse(v)
        {
            cx.error(
                doc,
                "metadata.annotations",
                format!("{} {e}", evmesh_config::REPLAY_FROM_ANNOTATION),
            );
        }
        if let (Some(channel), true) = (channel, cx.errors() == before) {
            cx.add_subscription(
                doc,
                SubscriptionConfig {
                    location: Some(doc.locate("")),
                    metadata: meta,
                    channel,
                    subscriber: spec.subscriber,
                    reply: spec.reply,
                    delivery,
                },
            );
        }
    }
    fn refs(&self) -> Refs {
        Refs::Strict
    }
    fn immutable(&self) -> &'static [Immutable] {
        &[Immutable {
            field: "channel",
            may_set: false,
            may_unset: false,
        }]
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.subscriptions.retain(|s| {
            !(s.metadata.namespace == ns
                && s.metadata.name == name
                && owner_of(&s.metadata).is_none())
        });
    }
}

impl RuntimeKind for Subscription {
    fn group_kind(&self) -> (&'static str, &'static str) {
        (MESSAGING, "Subscription")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = subscription_status(cx, ns, name);
        finish(status, generation, &not_ready)
    }
}
