//! Wiring as Knative's reconcilers do it: the channels and subscriptions a Channel, Sequence or
//! Parallel stands for, named and owned as in Knative.

use serde_json::{Value, json};

use super::{
    ChannelDefaults, ChannelSpec, ChannelTemplate, FLOWS_V1, MESSAGING_V1, ParallelSpec,
    SequenceSpec, SubscriptionSpec,
};
use crate::model::{Destination, KReference, ObjectMeta};

/// A channel generated for a Channel (its backing channel), Sequence or Parallel.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedChannel {
    /// `apiVersion` and `kind` of the channel (the parent's `channelTemplate`).
    pub template: ChannelTemplate,
    /// Name, namespace and `ownerReferences` to the parent.
    pub metadata: ObjectMeta,
    /// The channel's `spec` (the template's `spec`; for a Channel's backing channel merged
    /// over the Channel's `delivery`, as Knative merges them).
    pub spec: Value,
}

/// A subscription generated for a Sequence or Parallel.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedSubscription {
    /// Name, namespace and `ownerReferences` to the parent.
    pub metadata: ObjectMeta,
    /// The subscription's `spec`.
    pub spec: SubscriptionSpec,
}

/// What a parent resource is wired into.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wiring {
    /// Channels, in Knative's order (a Parallel's ingress channel first).
    pub channels: Vec<GeneratedChannel>,
    /// Subscriptions.
    pub subscriptions: Vec<GeneratedSubscription>,
}

impl GeneratedChannel {
    /// The channel as a Knative manifest (no status).
    pub fn manifest(&self) -> Value {
        json!({
            "apiVersion": self.template.api_version,
            "kind": self.template.kind,
            "metadata": self.metadata,
            "spec": self.spec,
        })
    }
}

impl GeneratedSubscription {
    /// The subscription as a Knative manifest (no status).
    pub fn manifest(&self) -> Value {
        json!({
            "apiVersion": MESSAGING_V1,
            "kind": "Subscription",
            "metadata": self.metadata,
            "spec": self.spec,
        })
    }
}

/// `<seq>-kn-sequence-<i>`: the channel in front of step `i`, and its subscription.
pub fn sequence_channel_name(sequence: &str, step: usize) -> String {
    format!("{sequence}-kn-sequence-{step}")
}

/// `<p>-kn-parallel`: a Parallel's ingress channel.
pub fn parallel_channel_name(parallel: &str) -> String {
    format!("{parallel}-kn-parallel")
}

/// `<p>-kn-parallel-<i>`: the channel of branch `i`, and the subscription of its subscriber.
pub fn parallel_branch_channel_name(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-{branch}")
}

/// `<p>-kn-parallel-filter-<i>`: branch `i`'s subscription on the ingress channel.
pub fn parallel_filter_subscription_name(parallel: &str, branch: usize) -> String {
    format!("{parallel}-kn-parallel-filter-{branch}")
}

/// A stable uid for a generated resource: derived from its parent's uid and its own kind and
/// name (so it survives restarts and changes of the parent, and a re-created parent gives new
/// ones). Shaped like a UUID (version 8).
fn derived_uid(parent_uid: &str, kind: &str, name: &str) -> String {
    // FNV-1a, twice with different offsets: stable across builds, unlike std's hasher.
    fn fnv(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let parts = [parent_uid, kind, name];
    let hi = fnv(0xcbf2_9ce4_8422_2325, &parts);
    let lo = fnv(0x8422_2325_cbf2_9ce4, &parts);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Metadata of a resource generated for `parent` (`apiVersion`, `kind`, metadata): same
/// namespace, a controller `ownerReference` to the parent, a uid derived from the parent's.
fn child_meta(
    api_version: &str,
    kind: &str,
    parent: &ObjectMeta,
    child_kind: &str,
    name: &str,
) -> ObjectMeta {
    let mut owner = json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": parent.name,
        "controller": true,
        "blockOwnerDeletion": true,
    });
    let mut meta = ObjectMeta::namespaced(&parent.namespace, name);
    if let Some(uid) = &parent.uid {
        owner["uid"] = Value::String(uid.clone());
        meta.uid = Some(derived_uid(uid, child_kind, name));
    }
    meta.generation = parent.generation.map(|_| 1);
    meta.creation_timestamp = parent.creation_timestamp.clone();
    meta.other
        .insert("ownerReferences".into(), Value::Array(vec![owner]));
    meta
}

fn channel_ref(template: &ChannelTemplate, name: &str) -> KReference {
    KReference {
        api_version: template.api_version.clone(),
        kind: template.kind.clone(),
        name: name.to_string(),
        namespace: None,
    }
}

fn channel_destination(template: &ChannelTemplate, ns: &str, name: &str) -> Destination {
    Destination {
        reference: Some(KReference {
            namespace: Some(ns.to_string()),
            ..channel_ref(template, name)
        }),
        ..Default::default()
    }
}

fn template_spec(template: &ChannelTemplate) -> Value {
    template
        .spec
        .clone()
        .filter(|s| !s.is_null())
        .unwrap_or_else(|| json!({}))
}

fn flow_channel(
    kind: &str,
    parent: &ObjectMeta,
    template: &ChannelTemplate,
    name: &str,
) -> GeneratedChannel {
    GeneratedChannel {
        template: ChannelTemplate {
            spec: None,
            ..template.clone()
        },
        metadata: child_meta(FLOWS_V1, kind, parent, &template.kind, name),
        spec: template_spec(template),
    }
}

fn subscription(
    kind: &str,
    parent: &ObjectMeta,
    name: &str,
    spec: SubscriptionSpec,
) -> GeneratedSubscription {
    GeneratedSubscription {
        metadata: child_meta(FLOWS_V1, kind, parent, "Subscription", name),
        spec,
    }
}

/// The backing channel of a generic `Channel`: the template's kind, the same name, its spec
/// the Channel's `delivery` with the template's `spec` merged over it (as Knative does).
pub fn wire_channel(
    meta: &ObjectMeta,
    spec: &ChannelSpec,
    template: &ChannelTemplate,
) -> GeneratedChannel {
    let mut merged = serde_json::Map::new();
    if let Some(d) = &spec.delivery {
        merged.insert("delivery".into(), json!(d));
    }
    if let Value::Object(t) = template_spec(template) {
        merged.extend(t);
    }
    GeneratedChannel {
        template: ChannelTemplate {
            spec: None,
            ..template.clone()
        },
        metadata: child_meta(MESSAGING_V1, "Channel", meta, &template.kind, &meta.name),
        spec: Value::Object(merged),
    }
}

/// A Sequence's channels and subscriptions: for step `i`, channel `<seq>-kn-sequence-<i>` and a
/// subscription of the same name on it with the step as subscriber, the step's delivery, and
/// as reply the next step's channel (the last step: the Sequence's `reply`, if any).
pub fn wire_sequence(meta: &ObjectMeta, spec: &SequenceSpec, template: &ChannelTemplate) -> Wiring {
    let mut w = Wiring::default();
    let n = spec.steps.len();
    for (i, step) in spec.steps.iter().enumerate() {
        let name = sequence_channel_name(&meta.name, i);
        w.channels
            .push(flow_channel("Sequence", meta, template, &name));
        let reply = if i + 1 < n {
            Some(channel_destination(
                template,
                &meta.namespace,
                &sequence_channel_name(&meta.name, i + 1),
            ))
        } else {
            spec.reply.clone()
        };
        w.subscriptions.push(subscription(
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

/// A Parallel's channels and subscriptions: ingress channel `<p>-kn-parallel`, branch channels
/// `<p>-kn-parallel-<i>`; on the ingress channel a subscription `<p>-kn-parallel-filter-<i>`
/// per branch (with a filter: subscriber = the filter, reply = the branch channel; without:
/// subscriber = the branch channel, as Knative wires it); on each branch channel a subscription
/// `<p>-kn-parallel-<i>` (subscriber = the branch's, its delivery, reply = the branch's `reply`,
/// else the Parallel's).
pub fn wire_parallel(meta: &ObjectMeta, spec: &ParallelSpec, template: &ChannelTemplate) -> Wiring {
    let mut w = Wiring::default();
    let ingress = parallel_channel_name(&meta.name);
    w.channels
        .push(flow_channel("Parallel", meta, template, &ingress));
    for (i, branch) in spec.branches.iter().enumerate() {
        let branch_channel = parallel_branch_channel_name(&meta.name, i);
        w.channels
            .push(flow_channel("Parallel", meta, template, &branch_channel));
        let to_branch = channel_destination(template, &meta.namespace, &branch_channel);
        let (subscriber, reply) = match &branch.filter {
            Some(filter) => (filter.clone(), Some(to_branch)),
            None => (to_branch, None),
        };
        w.subscriptions.push(subscription(
            "Parallel",
            meta,
            &parallel_filter_subscription_name(&meta.name, i),
            SubscriptionSpec {
                channel: channel_ref(template, &ingress),
                subscriber: Some(subscriber),
                reply,
                delivery: None,
            },
        ));
        w.subscriptions.push(subscription(
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

/// What a stored Channel, Sequence or Parallel manifest is wired into (`None` for other kinds
/// or a spec that does not parse), with `defaults` for a missing `channelTemplate`. The admin
/// API shows these generated resources next to those users wrote.
pub fn wire(manifest: &Value, defaults: &ChannelDefaults) -> Option<Wiring> {
    let api = manifest.get("apiVersion")?.as_str()?;
    let kind = manifest.get("kind")?.as_str()?;
    let registered = crate::registry::generator(api, kind)?;
    let meta: ObjectMeta = serde_json::from_value(manifest.get("metadata")?.clone()).ok()?;
    let spec = manifest.get("spec").cloned().filter(|s| !s.is_null());
    let spec = spec.unwrap_or_else(|| json!({}));
    registered.wire(&meta, spec, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uids_are_stable_uuid_shaped_and_distinct() {
        let a = derived_uid("u1", "Subscription", "s-kn-sequence-0");
        assert_eq!(a, derived_uid("u1", "Subscription", "s-kn-sequence-0"));
        assert_ne!(a, derived_uid("u2", "Subscription", "s-kn-sequence-0"));
        assert_ne!(a, derived_uid("u1", "InMemoryChannel", "s-kn-sequence-0"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
