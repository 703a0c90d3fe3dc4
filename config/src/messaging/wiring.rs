//! Wiring as Knative's reconcilers do it: the channels and subscriptions a Channel, Sequence or
//! Parallel stands for, named and owned as in Knative.

use serde_json::{Value, json};

use super::{ChannelDefaults, ChannelTemplate, MESSAGING_V1, SubscriptionSpec};
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

/// A ref to the channel `name` of `template`'s kind (in the referring resource's namespace).
pub fn channel_ref(template: &ChannelTemplate, name: &str) -> KReference {
    KReference {
        api_version: template.api_version.clone(),
        kind: template.kind.clone(),
        name: name.to_string(),
        namespace: None,
    }
}

/// A Destination that is the channel `ns/name` of `template`'s kind.
pub fn channel_destination(template: &ChannelTemplate, ns: &str, name: &str) -> Destination {
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

/// The channel `name` of `template`'s kind (its spec the template's) generated for `parent`, a
/// resource of `owner_api_version` `owner_kind`: same namespace, a controller
/// `ownerReference` to the parent, a stable uid derived from the parent's.
///
/// ```
/// use evmesh_config::{ChannelKind, ObjectMeta};
/// use evmesh_config::messaging::wiring::generated_channel;
/// let parent = ObjectMeta::namespaced("demo", "s");
/// let c = generated_channel("flows.knative.dev/v1", "Sequence", &parent, &ChannelKind::InMemory.template(), "s-kn-sequence-0");
/// assert_eq!(c.metadata.other["ownerReferences"][0]["kind"], "Sequence");
/// ```
pub fn generated_channel(
    owner_api_version: &str,
    owner_kind: &str,
    parent: &ObjectMeta,
    template: &ChannelTemplate,
    name: &str,
) -> GeneratedChannel {
    GeneratedChannel {
        template: ChannelTemplate {
            spec: None,
            ..template.clone()
        },
        metadata: child_meta(owner_api_version, owner_kind, parent, &template.kind, name),
        spec: template_spec(template),
    }
}

/// The Subscription `name` generated for `parent`, a resource of `owner_api_version`
/// `owner_kind` (owned as [`generated_channel`]'s channels are).
pub fn generated_subscription(
    owner_api_version: &str,
    owner_kind: &str,
    parent: &ObjectMeta,
    name: &str,
    spec: SubscriptionSpec,
) -> GeneratedSubscription {
    GeneratedSubscription {
        metadata: child_meta(owner_api_version, owner_kind, parent, "Subscription", name),
        spec,
    }
}

/// What a stored manifest of a kind that generates channels (Channel, Sequence, Parallel) is
/// wired into, by its registered [`Kind::wire`](crate::registry::Kind::wire) (`None` for other
/// kinds or a spec that does not parse), with `defaults` for a missing `channelTemplate`. The admin
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
