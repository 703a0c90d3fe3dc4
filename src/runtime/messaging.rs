//! The channels and subscriptions a Channel, Sequence or Parallel generates, listed and shown
//! beside those users wrote (with `ownerReferences`). Their status is each kind's runtime half
//! (`evmesh_channels`, `evmesh_flows`).

use std::collections::BTreeMap;

use evmesh_config::MeshConfig;
use evmesh_config::messaging::{ChannelKind, wiring};
use evmesh_config::registry::{self, KindInfo};
use serde_json::Value;

use super::{ResKey, Stored};

fn channel_kind(kind: &KindInfo) -> Option<ChannelKind> {
    ChannelKind::from_template(&kind.api_version(), kind.kind).ok()
}

/// The resources of `kind` that stored Channels, Sequences and Parallels generate (optionally
/// in one namespace), as manifests with their owner's resourceVersion.
pub(super) fn generated(
    resources: &BTreeMap<ResKey, Stored>,
    mesh: &MeshConfig,
    kind: &KindInfo,
    namespace: Option<&str>,
) -> Vec<Value> {
    let subscriptions = kind.group == "messaging.knative.dev" && kind.kind == "Subscription";
    if !subscriptions && channel_kind(kind).is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (k, s) in resources {
        let parent = registry::by_group(&k.0, &k.1).is_some_and(|k| k.generates());
        if !parent || namespace.is_some_and(|n| n != k.2) {
            continue;
        }
        let Some(w) = wiring::wire(&s.manifest, &mesh.channel_defaults) else {
            continue;
        };
        let rv = s.manifest["metadata"]["resourceVersion"].clone();
        let mut push = |mut m: Value| {
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), rv.clone());
            }
            out.push(m);
        };
        if subscriptions {
            w.subscriptions.iter().for_each(|s| push(s.manifest()));
        } else {
            w.channels
                .iter()
                .filter(|c| {
                    c.template.kind == kind.kind && c.template.api_version == kind.api_version()
                })
                .for_each(|c| push(c.manifest()));
        }
    }
    out
}

/// The resources a stored Channel, Sequence or Parallel manifest generates, by key (for watch
/// events when it changes).
pub(super) fn children(
    manifest: Option<&Value>,
    defaults: &evmesh_config::messaging::ChannelDefaults,
) -> BTreeMap<ResKey, Value> {
    let mut out = BTreeMap::new();
    let Some(w) = manifest.and_then(|m| wiring::wire(m, defaults)) else {
        return out;
    };
    let key = |group: &str, kind: &str, m: &evmesh_config::ObjectMeta| {
        (
            group.to_string(),
            kind.to_string(),
            m.namespace.clone(),
            m.name.clone(),
        )
    };
    for c in &w.channels {
        let group = c.template.api_version.split('/').next().unwrap_or_default();
        out.insert(key(group, &c.template.kind, &c.metadata), c.manifest());
    }
    for s in &w.subscriptions {
        out.insert(
            key("messaging.knative.dev", "Subscription", &s.metadata),
            s.manifest(),
        );
    }
    out
}
