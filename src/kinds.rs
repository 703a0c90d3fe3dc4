//! The kinds evmesh serves, assembled once: [`KINDS`], one line per kind, each a
//! [`KindModule`] supplying the kind's validation half (`evmesh_config`'s registry) and its
//! runtime half (its status from what runs). [`install`] installs their validation halves as
//! `evmesh_config`'s registry; every facade entry point calls it before it reads any YAML. A
//! source kind is an `evmesh_sources::kind::SourceModule` (both halves), whose build hooks the
//! generic source runner finds here (`source_kind`).

use std::sync::Once;

use evmesh_broker::kind::{KindModule, RuntimeKind, StatusCx, conditions, identity};
use evmesh_config::kinds as config;
use evmesh_config::registry::{self, KindInfo};
use evmesh_sources::kind::{SourceKind, SourceModule};
use serde_json::{Value, json};

/// Every kind evmesh reads, registered once, in the order the CLI lists them.
pub static KINDS: &[KindModule] = &[
    KindModule::halves(&config::broker::Broker, &evmesh_broker::kind::Broker),
    KindModule::halves(&config::trigger::Trigger, &evmesh_broker::kind::Trigger),
    KindModule::halves(&config::event_display::EventDisplay, &EventDisplay),
    KindModule::of(&evmesh_channels::in_memory_channel::IN_MEMORY_CHANNEL),
    KindModule::of(&evmesh_channels::nats_jetstream_channel::NATS_JETSTREAM_CHANNEL),
    KindModule::of(&evmesh_kafka::kafka_channel::KAFKA_CHANNEL),
    KindModule::of(&evmesh_channels::channel::Channel),
    KindModule::of(&evmesh_channels::subscription::Subscription),
    KindModule::of(&evmesh_flows::sequence::Sequence),
    KindModule::of(&evmesh_flows::parallel::Parallel),
    KindModule::of(&evmesh_sources::ping::PING_SOURCE),
    KindModule::of(&evmesh_sources::github::GITHUB_SOURCE),
    KindModule::of(&evmesh_sources::apiserver::API_SERVER_SOURCE),
    KindModule::of(&evmesh_kafka::source::KAFKA_SOURCE),
    KindModule::validation_only(&config::config_maps::DefaultChannelConfigMap),
    KindModule::validation_only(&config::config_maps::NatsConfigMap),
    KindModule::validation_only(&config::config_maps::KafkaChannelConfigMap),
    // Any other `v1` ConfigMap (after the ones above: the first registration that reads a
    // document validates it).
    KindModule::validation_only(&config::config_maps::OtherConfigMap),
    KindModule::validation_only(&config::secret::Secret),
];

/// Installs [`KINDS`] as `evmesh_config`'s kind registry (once; later calls do nothing). When
/// an embedder installed another set first, that set stays and a warning says so.
///
/// ```
/// evmesh::kinds::install();
/// assert!(evmesh::evmesh_config::registry::by_kind("flows.knative.dev/v1", "Sequence").is_some());
/// ```
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = registry::install(KINDS.iter().map(KindModule::config).collect()) {
            tracing::warn!("{e}: evmesh's own kinds are not installed");
        }
    });
}

/// The build hooks of source kind `kind` (e.g. `PingSource`).
pub(crate) fn source_kind(kind: &str) -> Option<&'static dyn SourceKind> {
    source_kinds().find(|k| k.kind() == kind)
}

/// The build hooks of every source kind.
pub(crate) fn source_kinds() -> impl Iterator<Item = &'static dyn SourceKind> {
    KINDS
        .iter()
        .filter_map(KindModule::runtime)
        .filter_map(SourceModule::from_runtime)
        .map(SourceModule::hooks)
}

/// The runtime half of `kind`.
pub(crate) fn runtime(kind: &KindInfo) -> Option<&'static dyn RuntimeKind> {
    KINDS
        .iter()
        .filter_map(KindModule::runtime)
        .find(|k| k.group_kind() == (kind.group, kind.kind))
}

/// `evmesh.dev/v1alpha1` EventDisplay: evmesh's built-in sink (served by the facade).
struct EventDisplay;

impl RuntimeKind for EventDisplay {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("evmesh.dev", "EventDisplay")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let url = evmesh_config::event_display_url(&cx.ingress, ns, name);
        json!({
            "observedGeneration": generation,
            "conditions": conditions(None),
            "address": {"url": url.to_string()},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind served through the API has a runtime half, each module's two halves are the
    /// same kind, and the installed registry is exactly the modules' validation halves.
    #[test]
    fn every_served_kind_has_its_runtime_half() {
        install();
        for k in registry::kinds() {
            assert!(runtime(k).is_some(), "{} has no runtime half", k.kind);
        }
        for m in KINDS {
            let versions = m.config().versions();
            match m.runtime() {
                Some(r) => {
                    let (g, k) = r.group_kind();
                    assert!(
                        versions.iter().any(|v| v.group == g && v.kind == k),
                        "{g}/{k}: the runtime half of another kind"
                    );
                }
                None => assert!(versions.is_empty(), "a served kind without runtime half"),
            }
        }
        // Every source kind has its build hooks, found by its kind.
        for k in registry::kinds().filter(|k| k.group == "sources.knative.dev") {
            let hooks = source_kind(k.kind);
            assert_eq!(hooks.map(|h| h.kind()), Some(k.kind), "{}", k.kind);
        }
        assert_eq!(source_kinds().count(), 4);
        let installed = registry::all();
        assert_eq!(installed.len(), KINDS.len());
        for (m, k) in KINDS.iter().zip(installed) {
            assert!(std::ptr::addr_eq(m.config(), *k));
        }
    }
}
