//! `evmesh_config` on its own: without an installed kind registry it validates its own kinds
//! (Broker, Trigger, Channel, Subscription, the sources, ConfigMaps, Secret) and says why a kind
//! of another crate is unknown.

use evmesh_config::MeshConfig;

fn error_text(yaml: &str) -> String {
    match MeshConfig::from_yaml("kinds.yaml", yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.render(),
    }
}

#[test]
fn without_an_installed_registry_a_flow_is_an_unknown_kind_that_says_why() {
    let text = error_text(
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec:\n  steps: [{uri: http://a.example/}]\n",
    );
    assert!(
        text.contains("unknown kind \"Sequence\" in flows.knative.dev/v1")
            && text.contains("registry::install"),
        "{text}"
    );
}

#[test]
fn without_an_installed_registry_an_in_memory_channel_is_unknown_and_a_broker_is_not() {
    let text = error_text(
        "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: c}\n",
    );
    assert!(
        text.contains("unknown kind \"InMemoryChannel\"") && text.contains("registry::install"),
        "{text}"
    );
    let mesh = MeshConfig::from_yaml(
        "kinds.yaml",
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    )
    .expect("a Broker is evmesh_config's own kind");
    assert_eq!(mesh.brokers.len(), 1);
}
