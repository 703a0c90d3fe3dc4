//! The runtime registry: every kind's runtime half (its status from what runs), registered
//! once. Its validation half is registered in [`evmesh_config::registry::REGISTRY`]; a kind
//! evmesh serves has one entry in each.

use evmesh_broker::kind::{RuntimeKind, StatusCx, conditions, identity};
use evmesh_config::registry::KindInfo;
use serde_json::{Value, json};

/// Every kind's runtime half, registered once.
static RUNTIME: &[&dyn RuntimeKind] = &[
    &evmesh_broker::kind::Broker,
    &evmesh_broker::kind::Trigger,
    &EventDisplay,
    &evmesh_channels::in_memory_channel::InMemoryChannel,
    &evmesh_channels::nats_jetstream_channel::NatsJetStreamChannel,
    &evmesh_kafka::kafka_channel::KafkaChannel,
    &evmesh_channels::channel::Channel,
    &evmesh_channels::subscription::Subscription,
    &evmesh_flows::sequence::Sequence,
    &evmesh_flows::parallel::Parallel,
    &evmesh_sources::kind::Source("PingSource"),
    &evmesh_sources::kind::Source("GitHubSource"),
    &evmesh_sources::kind::Source("ApiServerSource"),
    &evmesh_sources::kind::Source("KafkaSource"),
];

/// The runtime half of `kind`.
pub(crate) fn runtime(kind: &KindInfo) -> Option<&'static dyn RuntimeKind> {
    RUNTIME
        .iter()
        .copied()
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
    /// Every kind served through the API has a runtime half, and every runtime half a served
    /// kind.
    #[test]
    fn every_served_kind_has_its_runtime_half() {
        for k in evmesh_config::registry::kinds() {
            assert!(
                super::runtime(k).is_some(),
                "{} has no runtime half",
                k.kind
            );
        }
        for r in super::RUNTIME {
            let (g, k) = r.group_kind();
            assert!(
                evmesh_config::registry::by_group(g, k).is_some(),
                "{g}/{k} is not registered in evmesh_config"
            );
        }
    }
}
